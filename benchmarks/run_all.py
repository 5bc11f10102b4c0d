"""Run every benchmark in order (``make bench``), then print the summary table.

Each benchmark runs as its own process (``python benchmarks/bench_<name>.py``) so that
thread settings, worker pools and peak-memory counters of one do not leak into the next;
its output goes to ``benchmarks/results/tmp/logs/<name>.log`` and its result to
``benchmarks/results/<name>.json``. A Rich progress display shows the running benchmark
and the elapsed time. ``benchmarks/results/run_all.json`` records the start, the wall time
and the exit status of each script. A missed target never fails the run; a script that
crashes does (exit status 1, after the others have run).

    python benchmarks/run_all.py [--only preprocess model ...] [--skip oracle ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BENCHMARKS, REPO_ROOT, RESULTS_DIR, SUMMARY_JSON, WORK_DIR
from benchmarks.render_table import load_results, load_summary, markdown_table, rich_table

BENCH_DIR = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    names = [name for name, _ in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=names, default=None, help="run only these benchmarks")
    parser.add_argument("--skip", nargs="+", choices=names, default=[], help="skip these benchmarks")
    args = parser.parse_args(argv)
    selected = [(n, s) for n, s in BENCHMARKS if (args.only is None or n in args.only) and n not in args.skip]

    console = Console()
    logs = WORK_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started_utc = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    status: dict[str, dict] = {}
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("benchmarks", total=len(selected))
        for name, script in selected:
            progress.update(overall, description=f"{name} ({script})")
            log_path = logs / f"{name}.log"
            t0 = time.perf_counter()
            with log_path.open("w", encoding="utf-8") as log:
                rc = subprocess.run(
                    [sys.executable, str(BENCH_DIR / script)], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
                ).returncode
            seconds = time.perf_counter() - t0
            status[name] = {
                "script": script,
                "returncode": rc,
                "wall_s": round(seconds, 1),
                "log": str(log_path.relative_to(REPO_ROOT)),
            }
            result_path = RESULTS_DIR / f"{name}.json"
            if rc == 0 and result_path.is_file():
                result = json.loads(result_path.read_text(encoding="utf-8"))
                met = {True: "[green]target met[/]", False: "[red]target missed[/]", None: "n/a"}[result["target_met"]]
                progress.console.print(
                    f"[bold]{name}[/] {seconds:6.0f} s  {result.get('ratio_text') or result.get('ratio')}  {met}"
                )
            else:
                progress.console.print(f"[bold red]{name} failed[/] (exit {rc}) after {seconds:.0f} s; see {log_path}")
            progress.advance(overall)

    wall = time.perf_counter() - started
    summary = {"started_utc": started_utc, "wall_s": round(wall, 1), "benchmarks": status}
    if args.only is None and not args.skip:
        (RESULTS_DIR / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    else:  # a partial run: the table's total stays that of the last full run
        summary = load_summary()
    results = load_results()
    if results:
        console.print(rich_table(results))
        console.print(
            "Markdown for README.md (`python benchmarks/render_table.py --write README.md`):\n", style="dim"
        )
        console.print(markdown_table(results, summary), markup=False, highlight=False)
    console.print(f"All benchmarks: {wall / 60:.1f} min")
    return 0 if all(s["returncode"] == 0 for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
