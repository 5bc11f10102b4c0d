"""The train function a sweep calls: ``"module:function"`` resolved the same way in every worker process."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from hcc_exp.errors import SweepError

DEFAULT_TRAIN_FN = "hcc_exp.training.train:train"

TrainFn = Callable[..., Any]


def import_train_fn(spec: str | TrainFn | None) -> TrainFn:
    """Resolve ``"module:function"`` (or a callable, or None for the real ``train``).

    Raises:
        SweepError: the module or function cannot be imported.
    """
    if spec is None:
        spec = DEFAULT_TRAIN_FN
    if callable(spec):
        return spec
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise SweepError(f"train_fn {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
        fn = module
        for part in attr.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError) as exc:
        raise SweepError(f"train_fn {spec!r} cannot be imported: {exc}") from exc
    if not callable(fn):
        raise SweepError(f"train_fn {spec!r} is not callable")
    return fn


def train_fn_path(fn: str | TrainFn | None) -> str:
    """Dotted ``module:function`` path of ``fn`` that a worker process can import.

    Raises:
        SweepError: ``fn`` is a lambda, a local function or otherwise not importable by path.
    """
    if fn is None:
        return DEFAULT_TRAIN_FN
    if isinstance(fn, str):
        import_train_fn(fn)  # fail here, not in every worker
        return fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in qualname or module == "__main__":
        raise SweepError(
            f"train_fn {fn!r} cannot be imported by worker processes; pass a 'module:function' string "
            "of a module on the import path (or workers=0 to run in this process)"
        )
    path = f"{module}:{qualname}"
    if import_train_fn(path) is not fn:
        raise SweepError(f"train_fn {fn!r} is not reachable as {path}")
    return path


def accepts(fn: TrainFn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
