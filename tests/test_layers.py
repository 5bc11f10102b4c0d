"""The package's layers: no module imports from a layer above its own, and no import cycle.

Every module under ``hcc_exp/`` is parsed with :mod:`ast`; every ``import`` counts, at module
level, inside functions and under ``if TYPE_CHECKING`` (a function-level import must not hide an
upward dependency or a cycle). The layers, bottom first (a module may import its own layer and
those below)::

    base         config, errors, vocabulary, progress, paths, formatting (table cells), document
                 (Markdown / HTML model), processes, the package __init__
    data         cohort contract, IO, validation, preprocessing and its cache, data module
    run_folder   the run-folder layout (opens a run's preprocessed cache, writes through data.io)
    models       the networks
    evaluation   statistics: arrays in, numbers out (and the run's risk model)
    tracking     run records (local files, W&B): what training logs to
    training     losses, Lightning module, ``train(config)`` writing a run folder
    inference    restoring a trained network, ``predict``
    interpretability   Grad-CAM and region shares of a restored network
    sweeps       Optuna / W&B sweeps of ``train``
    reporting    ablation tables, reports, console rendering
    pipeline     the DVC demo driver (``hcc-exp demo``)
    cli          parses and delegates

This is the data flow of docs/ARCHITECTURE.md (data -> models -> training -> evaluation ->
inference / interpretability -> tracking / sweeps -> reporting -> cli) with two modules placed
where their imports put them: ``evaluation`` is pure statistics that imports no model or
training code, and training's end of run fits the run's risk model with evaluation's one fitting
path, so evaluation sits below training (predictions still flow from training to evaluation);
``tracking`` receives what training logs (a Lightning callback, as a logger would), so it sits
below training too. ``inference`` sits below ``interpretability``: Grad-CAM explains the
network inference restores, and ``predict`` takes the explanation as a function (the CLI passes
Grad-CAM) instead of importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "hcc_exp"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "hcc_exp", "hcc_exp.config", "hcc_exp.errors", "hcc_exp.vocabulary", "hcc_exp.progress", "hcc_exp.paths",
            "hcc_exp.formatting", "hcc_exp.document", "hcc_exp.processes",
        ),
    ),
    ("data", ("hcc_exp.data",)),
    ("run_folder", ("hcc_exp.run_folder",)),
    ("models", ("hcc_exp.models",)),
    ("evaluation", ("hcc_exp.evaluation",)),
    ("tracking", ("hcc_exp.tracking",)),
    ("training", ("hcc_exp.training",)),
    ("inference", ("hcc_exp.inference",)),
    ("interpretability", ("hcc_exp.interpretability",)),
    ("sweeps", ("hcc_exp.sweeps",)),
    ("reporting", ("hcc_exp.reporting",)),
    ("pipeline", ("hcc_exp.pipeline",)),
    ("cli", ("hcc_exp.cli",)),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the most specific prefix owning ``module``."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            owns = module == prefix or (prefix != "hcc_exp" and module.startswith(prefix + "."))
            if owns and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise KeyError(module)
    return best


def imports_of(path: Path) -> list[tuple[str, int]]:
    """``(imported hcc_exp module, line)`` for every import in the file, at any depth.

    ``from hcc_exp.x import y`` counts as an import of ``hcc_exp.x.y`` when that is a module,
    else of ``hcc_exp.x``; relative imports are resolved against the file's package.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "hcc_exp"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "hcc_exp":
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.append((child if child in MODULES else target, node.lineno))
    return found


def test_every_module_has_a_layer():
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_no_module_imports_from_a_layer_above_its_own():
    violations = []
    for module, path in MODULES.items():
        own = layer_of(module)
        for imported, line in imports_of(path):
            if layer_of(imported) > own:
                violations.append(
                    f"{path.relative_to(PACKAGE_ROOT.parent)}:{line}: {module} ({LAYERS[own][0]}) imports "
                    f"{imported} ({LAYERS[layer_of(imported)][0]})"
                )
    assert not violations, "imports running back up the layers:\n" + "\n".join(dict.fromkeys(violations))


def test_no_import_cycle_between_modules():
    graph = {m: sorted({i for i, _ in imports_of(p) if i in MODULES and i != m}) for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in graph:
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from hcc_exp.training.module import MultiTaskModule\n", "hcc_exp.data.fake", ["hcc_exp.training.module"]),
        ("def f():\n    from hcc_exp import cli\n", "hcc_exp.models.fake", ["hcc_exp.cli"]),
        ("from .. import cli\n", "hcc_exp.data.fake", ["hcc_exp.cli"]),
        ("from ..training import train\n", "hcc_exp.evaluation.fake", ["hcc_exp.training.train"]),
        ("import numpy\nimport hcc_exp.tracking\n", "hcc_exp.evaluation.fake", ["hcc_exp.tracking"]),
    ],
)
def test_the_parser_sees_every_kind_of_import(tmp_path, monkeypatch, source, module, expected):
    """The checker itself: module-level, function-level and relative imports are all found."""
    fake_root = tmp_path / "hcc_exp"
    path = fake_root.joinpath(*module.split(".")[1:]).with_suffix(".py")
    path.parent.mkdir(parents=True)
    path.write_text(source)
    monkeypatch.setitem(globals(), "PACKAGE_ROOT", fake_root)
    found = [name for name, _ in imports_of(path)]
    assert found == expected
    assert layer_of(found[0]) > layer_of(module)  # each of these would be reported
