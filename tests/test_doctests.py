"""The docstring examples of the small numeric and formatting functions run as tests.

Each listed module's examples are hand-derived (pairs counted, intervals worked out) in the
style of torchsurv's ``loss/cox.py``; a module added here must keep its examples true.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "hcc_exp.vocabulary",
    "hcc_exp.formatting",
    "hcc_exp.document",
    "hcc_exp.data.io",
    "hcc_exp.evaluation.baselines",
    "hcc_exp.evaluation.classification",
    "hcc_exp.evaluation.common",
    "hcc_exp.evaluation.concordance",
    "hcc_exp.evaluation.endpoint",
    "hcc_exp.evaluation.oracle",
    "hcc_exp.evaluation.record",
    "hcc_exp.evaluation.risk_groups",
    "hcc_exp.reporting.ablation",
    "hcc_exp.reporting.agreement",
    "hcc_exp.reporting.console",
    "hcc_exp.reporting.stats",
    "hcc_exp.reporting.tables",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see output)"
