"""Loading a trained network from a run's ``best.ckpt`` (for prediction and Grad-CAM).

A Lightning checkpoint written by :func:`hcc_exp.training.train.train` holds the resolved
experiment config in ``hyper_parameters["config"]``, so the network (phases, ROI strategy,
architecture) and the preprocessing recipe are rebuilt from the checkpoint alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hcc_exp.config import ExperimentConfig
from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.errors import ConfigError, RunFolderError
from hcc_exp.models import HCCMultiTaskNet
from hcc_exp.training.module import MultiTaskModule


@dataclass(frozen=True)
class TrainedNetwork:
    """A network restored from a checkpoint, in eval mode on CPU.

    Attributes:
        config: the experiment config it was trained with (its ``preprocess`` section is
            the recipe new patients must go through).
        network: the inference network (the online network when the momentum bank was on).
        checkpoint: the checkpoint file it came from.
    """

    config: ExperimentConfig
    network: HCCMultiTaskNet
    checkpoint: Path


def load_trained_network(checkpoint: Path | str) -> TrainedNetwork:
    """Rebuild the network of a ``best.ckpt`` and load its weights.

    Raises:
        RunFolderError: the file is missing or is not a checkpoint of this project.
        ConfigError: its stored config is not valid for this version.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise RunFolderError(f"checkpoint {checkpoint} does not exist")
    try:
        payload: dict[str, Any] = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise RunFolderError(f"{checkpoint} cannot be loaded as a checkpoint: {exc}") from exc
    try:
        raw_config = payload["hyper_parameters"]["config"]
        state_dict = payload["state_dict"]
    except (KeyError, TypeError) as exc:
        raise RunFolderError(f"{checkpoint} lacks {exc} (not an hcc-exp checkpoint)") from exc
    try:
        config = ExperimentConfig.model_validate(raw_config)
    except ValueError as exc:
        raise ConfigError(f"config stored in {checkpoint} is invalid: {exc}") from exc
    module = MultiTaskModule.from_config(config)
    module.load_state_dict(state_dict)
    network = module.inference_network
    network.eval()
    return TrainedNetwork(config=config, network=network, checkpoint=checkpoint)


def cache_spacing_zyx_mm(cohort: PreprocessedCohort, config: ExperimentConfig) -> tuple[float, float, float]:
    """Voxel spacing (z, y, x) in mm of the cached arrays.

    Read from the cache manifest; caches whose manifest does not record it were resampled to
    ``config.preprocess.spacing_mm`` by construction.
    """
    manifest = cohort.manifest
    for key in ("spacing_zyx_mm", "spacing_mm"):
        if key in manifest:
            return tuple(float(s) for s in manifest[key])  # type: ignore[return-value]
    params = manifest.get("params", {})
    if isinstance(params, dict) and "spacing_mm" in params:
        return tuple(float(s) for s in params["spacing_mm"])  # type: ignore[return-value]
    return tuple(float(s) for s in config.preprocess.spacing_mm)  # type: ignore[return-value]
