"""``hcc-exp check`` on many problems: time and memory of validating and reporting N patients without images.

Issue 13, item 3: printing the problem report grew about quadratically (800 problems 6 s and
229 MB, 1,600 problems 15 s and 867 MB, 10,000 reached 15.5 GB). The report now shows at most
``CHECK_ROWS_PER_PROBLEM`` rows per problem class and writes the full list to a CSV file.

Compared in one process on the same tables: the bounded report (validate + render + problem
list) against the former full Rich table of every problem and the former refusal message
listing every problem through Rich (rendered here as they were, for the smaller sizes only). Headline ratio: seconds per problem at the largest size over seconds per
problem at the smallest (1 = linear). Peak Python memory (``tracemalloc``) is measured in a
second, untimed pass.

    python benchmarks/bench_check.py [--sizes 800 1600 10000] [--repeats 3]
"""

from __future__ import annotations

import io
import sys
import time
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import WORK_DIR, Target, base_parser, fresh_dir, report_result, summary

NAME = "check"
TARGET = Target(2.0, "seconds per problem at the largest size <= 2x that at the smallest (linear)", op="<=")
FULL_TABLE_MAX = 1600
"""The former full-table rendering is timed up to this size only."""
FULL_MESSAGE_MAX = 800
"""The former full refusal message is timed up to this size only (it grows quadratically: 20 s at 800)."""


def _cohort(n_patients: int) -> Path:
    from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR
    from tests.factories import tiny_clinical_table

    root = fresh_dir(WORK_DIR / f"check-{n_patients}")
    (root / IMAGES_DIR).mkdir()
    tiny_clinical_table(n_patients).to_csv(root / COHORT_CSV, index=False)
    return root


def _bounded(cohort: Path) -> int:
    from rich.console import Console
    from rich.text import Text

    from hcc_exp.data.validate import validate_cohort
    from hcc_exp.errors import CohortValidationError
    from hcc_exp.reporting.console import render_validation_report

    report = validate_cohort(cohort, progress=False)
    out = cohort.parent / f"{cohort.name}-problems.csv"
    report.write_problem_list(out)
    console = Console(file=io.StringIO(), width=200)
    render_validation_report(report, console, problem_list=out)
    console.print(Text(str(CohortValidationError(cohort, report.errors))))  # what `main` prints on refusal
    return len(report.errors)


def _full_message(cohort: Path) -> int:
    """The former refusal message: every problem on its own line, printed through Rich (quadratic wrapping)."""
    from rich.console import Console

    from hcc_exp.data.validate import validate_cohort

    report = validate_cohort(cohort, progress=False)
    lines = "\n".join(f"  - {type(p).__name__}: {p.describe()}" for p in report.errors)
    Console(file=io.StringIO(), width=200).print(f"[bold red]error:[/bold red] cohort has {len(report.errors)}:\n{lines}")
    return len(report.errors)


def _full_table(cohort: Path) -> int:
    """The former rendering: one Rich table row per problem."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hcc_exp.data.validate import validate_cohort

    report = validate_cohort(cohort, progress=False)
    table = Table(title=f"{len(report.errors)} problem(s)")
    for column in ("problem", "patient", "column / file", "what is wrong"):
        table.add_column(column)
    for p in report.errors:
        table.add_row(Text(type(p).__name__), Text(p.patient_id or ""), Text(p.path or ""), Text(p.message))
    Console(file=io.StringIO(), width=200).print(table)
    return len(report.errors)


def _peak_mib(fn, cohort: Path) -> float:
    tracemalloc.start()
    fn(cohort)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> dict:
    started = time.perf_counter()
    parser = base_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 800, 1600, 10_000])
    args = parser.parse_args()
    timings, results = {}, {}
    per_problem = {}
    _bounded(_cohort(50))  # warm-up: imports (scikit-survival, nibabel) are not part of any size
    _full_table(_cohort(50))
    for n in args.sizes:
        cohort = _cohort(n)
        variants = {"bounded": _bounded} | ({"full_table": _full_table} if n <= FULL_TABLE_MAX else {})
        variants |= {"full_message": _full_message} if n <= FULL_MESSAGE_MAX else {}
        for label, fn in variants.items():
            seconds = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                problems = fn(cohort)
                seconds.append(time.perf_counter() - t0)
            timings[f"{label}_{n}"] = summary(seconds, "s", 3)
            results[f"{label}_{n}_peak_python_mib"] = round(_peak_mib(fn, cohort), 1)
            results[f"{label}_{n}_problems"] = problems
            if label == "bounded":
                per_problem[n] = sorted(seconds)[len(seconds) // 2] / problems
    small, large = min(per_problem), max(per_problem)
    ratio = per_problem[large] / per_problem[small]
    return report_result(
        NAME,
        title="check on many problems",
        compares="bounded report and message (20 rows per class + CSV list) vs the former full table / message",
        ratio_label=f"s/problem at {large} / s/problem at {small} (bounded)",
        ratio_value=ratio,
        target=TARGET,
        sizes={"patients": args.sizes, "repeats": args.repeats},
        timings=timings,
        results=results,
        notes=["every patient lacks its image folder: one MissingFileError each"],
        started=started,
    )


if __name__ == "__main__":
    main()
