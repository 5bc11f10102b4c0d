"""Compatibility name of :mod:`hcc_exp.data.preprocessing` (the preprocessing package); import from there.

Kept so that ``from hcc_exp.data.preprocess import preprocess_cohort`` (scripts, notebooks,
older code) keeps working; it re-exports the package's public names and nothing else.
"""

from hcc_exp.data.preprocessing import *  # noqa: F403
from hcc_exp.data.preprocessing import __all__  # noqa: F401
