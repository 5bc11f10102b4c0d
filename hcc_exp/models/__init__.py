"""ROI-enhancement stem, phase-shared DenseNet backbone and the multi-task heads."""

from hcc_exp.models.multitask import HCCMultiTaskNet, MultiTaskOutput, build_model

__all__ = ["HCCMultiTaskNet", "MultiTaskOutput", "build_model"]
