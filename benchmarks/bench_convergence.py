"""Convergence of one training run per (schedule, seed): epochs to the best checkpoint and the C-index it reaches.

Not part of ``run_all.py`` (it trains): one process per arm and seed, each on one thread.
Every epoch, a callback predicts the internal (validation) and external (test) splits and
records OS / RFS C-index and MVI AUC beside the validation loss, so that both checkpoint
choices (``trainer.monitor``: ``val/loss``, the paper's, or ``val/os_c_index``) are read from
the SAME run: the epoch each would pick and the external C-index at that epoch. Oracle
shares are ``(C - 0.5) / (oracle C - 0.5)`` with the cohort's ``oracle.csv``
(:func:`hcc_exp.evaluation.oracle.oracle_metrics`, shares by :func:`hcc_exp.evaluation.oracle.oracle_share`).

    python benchmarks/bench_convergence.py --cohort COHORT --cache CACHE --arm warmup_cosine --seed 1 \
        --epochs 10 --out results/tmp/convergence
    python benchmarks/bench_convergence.py --summarise results/tmp/convergence   # table + convergence.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS_DIR, machine_info

ARMS = {
    "constant": {"optim.schedule": "constant"},
    "warmup_cosine": {"optim.schedule": "warmup_cosine"},
    "onecycle": {"optim.schedule": "onecycle"},
}
MONITORS = {"val/loss": "min", "val/os_c_index": "max"}


def run_one(args: argparse.Namespace) -> None:
    import lightning.pytorch as pl
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import roc_auc_score

    from hcc_exp.config import load_config
    from hcc_exp.data.cache import PreprocessedCohort
    from hcc_exp.evaluation.oracle import oracle_metrics
    from hcc_exp.training.module import c_index, concat_outputs
    from hcc_exp.training.train import train

    torch.set_num_threads(1)
    overrides: dict[str, Any] = {
        "data.cohort_dir": str(args.cohort),
        "data.cache_dir": str(args.cache),
        "tracking.runs_dir": str(args.out / "runs"),
        "tracking.wandb": False,
        "trainer.accelerator": "cpu",
        "trainer.max_epochs": args.epochs,
        "trainer.patience": args.epochs,
        "seed": args.seed,
        **ARMS[args.arm],
    }
    for item in args.set or []:
        key, value = item.split("=", 1)
        import yaml

        overrides[key] = yaml.safe_load(value)
    config = load_config(Path(__file__).resolve().parents[1] / "params.yaml", overrides)
    cohort = PreprocessedCohort.open(next(p for p in Path(args.cache).iterdir() if p.is_dir()))
    epochs: list[dict[str, float]] = []

    class Probe(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            row: dict[str, float] = {"epoch": trainer.current_epoch, "seconds": time.perf_counter() - started}
            for key in ("val/loss", "val/os_c_index", "val/rfs_c_index"):
                value = trainer.callback_metrics.get(key)
                row[key] = float(value) if value is not None else float("nan")
            was_training = pl_module.training
            pl_module.eval()
            for split in ("internal", "external"):
                loader = trainer.datamodule.split_loader(split)
                out = concat_outputs([pl_module.predict_batch({k: v.to(pl_module.device) for k, v in b.items()}) for b in loader])
                row[f"{split}/os/c_index"] = c_index(out["os_risk"], out["os_event"], out["os_time"])
                row[f"{split}/rfs/c_index"] = c_index(out["rfs_risk"], out["rfs_event"], out["rfs_time"])
                prob = torch.softmax(out["mvi_logits"], 1)[:, 1].numpy()
                row[f"{split}/mvi/auc"] = float(roc_auc_score(out["mvi"].numpy(), prob))
            pl_module.train(was_training)
            epochs.append(row)

    started = time.perf_counter()
    result = train(config, callbacks=[Probe()], cohort=cohort, progress=False,
                   run_dir=args.out / "runs" / f"{args.arm}-seed{args.seed}")
    oracle = oracle_metrics(pd.read_csv(Path(args.cohort) / "oracle.csv", dtype={"patient_id": str}), cohort.labels)
    payload = {
        "arm": args.arm,
        "seed": args.seed,
        "epochs": args.epochs,
        "overrides": overrides,
        "seconds": round(time.perf_counter() - started, 1),
        "best_epoch_by_run": result.best_epoch,
        "per_epoch": epochs,
        "oracle": oracle,
        "seconds_per_epoch": round(float(np.diff([0.0] + [r["seconds"] for r in epochs]).mean()), 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.arm}-seed{args.seed}.json").write_text(json.dumps(payload, indent=1, default=float))


def _share(c: float, oracle: float | None) -> float:
    """The package's one oracle-share rule; NaN (in this benchmark's table) where not estimable."""
    from hcc_exp.evaluation.oracle import oracle_share

    value = math.nan if oracle is None else oracle_share(c, oracle)
    return value if isinstance(value, float) else math.nan


def pick(per_epoch: list[dict[str, float]], monitor: str) -> dict[str, float]:
    """The epoch ``monitor`` selects (first best, NaN never best) and its metrics."""
    mode = MONITORS[monitor]
    finite = [r for r in per_epoch if math.isfinite(r[monitor])]
    best = (min if mode == "min" else max)(finite, key=lambda r: r[monitor])
    return best


def summarise(folder: Path) -> dict[str, Any]:
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*-seed*.json"))]
    rows = []
    for run in runs:
        for monitor in MONITORS:
            best = pick(run["per_epoch"], monitor)
            row = {"arm": run["arm"], "seed": run["seed"], "monitor": monitor, "epoch_of_best": int(best["epoch"]) + 1}
            for split in ("internal", "external"):
                for task, metric in (("os", "c_index"), ("rfs", "c_index"), ("mvi", "auc")):
                    key = f"{split}/{task}/{metric}"
                    row[key] = best[key]
                    row[f"{split}/{task}/oracle_share"] = _share(best[key], run["oracle"].get(f"{split}/{task}/oracle_{metric}"))
            row["seconds_per_epoch"] = run["seconds_per_epoch"]
            rows.append(row)
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["arm"], row["monitor"]), []).append(row)
    table = []
    for (arm, monitor), members in sorted(groups.items()):
        means = {}
        for key in members[0]:
            if ("/" in key and key != "monitor") or key == "seconds_per_epoch":
                values = [m[key] for m in members if math.isfinite(m[key])]
                means[key] = round(statistics.mean(values), 3) if values else float("nan")
        table.append({
            "arm": arm, "monitor": monitor, "seeds": len(members),
            "epoch_of_best": [m["epoch_of_best"] for m in members],
            **means,
        })
    payload = {"benchmark": "convergence", "machine": machine_info("cpu"), "runs": rows, "table": table}
    (RESULTS_DIR / "convergence.json").write_text(json.dumps(payload, indent=1, default=float))
    cols = ["internal/os/c_index", "internal/os/oracle_share", "external/os/c_index", "external/os/oracle_share",
            "external/rfs/c_index", "external/mvi/auc"]
    print("| schedule | monitor | seeds | epoch of best (per seed) | " + " | ".join(cols) + " |")
    print("|" + " --- |" * (4 + len(cols)))
    for t in table:
        print(f"| {t['arm']} | {t['monitor']} | {t['seeds']} | {t['epoch_of_best']} | " + " | ".join(f"{t[c]:.3f}" for c in cols) + " |")
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--arm", choices=sorted(ARMS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "tmp" / "convergence")
    parser.add_argument("--set", action="append", help="extra config override key=value")
    parser.add_argument("--summarise", type=Path, default=None, help="folder of per-run JSON files to tabulate")
    args = parser.parse_args(argv)
    if args.summarise is not None:
        summarise(args.summarise)
    else:
        run_one(args)


if __name__ == "__main__":
    main()
