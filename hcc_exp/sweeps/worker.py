"""Worker process of an Optuna sweep: ``python -m hcc_exp.sweeps.worker --sweep-dir DIR --study NAME``.

:func:`hcc_exp.sweeps.runner.run_sweep` starts these (one process per worker, so a
killed worker is a real process death that the others recover from). The storage
comes from ``$HCC_EXP_SWEEP_STORAGE`` (a URL or a journal path), which keeps a
database password out of the process list; ``--storage`` is accepted too.

A worker started by a supervisor (``$HCC_EXP_SWEEP_PARENT`` = its pid) dies with it:
Linux's parent-death signal plus a watchdog thread on the parent's pid
(:func:`hcc_exp.sweeps.liveness.die_with_parent`); the SIGTERM this sends fails and
re-queues the running trial like any other SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

STORAGE_ENV = "HCC_EXP_SWEEP_STORAGE"
PARENT_ENV = "HCC_EXP_SWEEP_PARENT"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hcc_exp.sweeps.worker", description=__doc__)
    parser.add_argument("--sweep-dir", type=Path, required=True, help="this machine's sweep folder")
    parser.add_argument("--study", required=True, help="sweep (study) name")
    parser.add_argument("--storage", default=None, help=f"storage URL or journal path (default ${STORAGE_ENV})")
    parser.add_argument("--train-fn", default=None, help="module:function (default hcc_exp.training.train:train)")
    parser.add_argument("--worker-index", type=int, default=0)
    parser.add_argument("--max-trials", type=int, default=None)
    return parser.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: the running trial is failed and re-queued, not left RUNNING.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    # First of all: a supervisor killed while this process imports torch must not leave it behind.
    signal.signal(signal.SIGTERM, _terminate)
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        from hcc_exp.sweeps.liveness import die_with_parent

        die_with_parent(int(parent))
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s worker-{args.worker_index}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import optuna

    from hcc_exp.errors import HccExpError
    from hcc_exp.sweeps.optuna_backend import run_worker
    from hcc_exp.sweeps.storage import resolve_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = args.storage or os.environ.get(STORAGE_ENV)
    try:
        target = resolve_storage(storage, args.sweep_dir)
        ran = run_worker(
            target,
            args.study,
            sweep_dir=args.sweep_dir,
            train_fn=args.train_fn,
            worker_index=args.worker_index,
            max_trials=args.max_trials,
        )
    except HccExpError as exc:
        logging.getLogger("hcc_exp.sweeps.worker").error("%s", exc)
        return 2
    logging.getLogger("hcc_exp.sweeps.worker").info("no more trials to claim; ran %d", ran)
    return 0


if __name__ == "__main__":
    sys.exit(main())
