"""Render the latest benchmark results (``benchmarks/results/*.json``) as a Markdown table.

    python benchmarks/render_table.py                 # print the table
    python benchmarks/render_table.py --write README.md   # replace the table in README.md

``--write`` replaces the text between the markers ``<!-- benchmarks:begin -->`` and
``<!-- benchmarks:end -->`` of the file (its ``## Benchmarks`` section) and nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BENCHMARKS, RESULTS_DIR, SUMMARY_JSON

BEGIN = "<!-- benchmarks:begin -->"
END = "<!-- benchmarks:end -->"


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """The result JSON of every benchmark that has one, in :data:`BENCHMARKS` order."""
    out = []
    for name, _ in BENCHMARKS:
        path = Path(results_dir) / f"{name}.json"
        if path.is_file():
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def measured_text(result: dict[str, Any]) -> str:
    if result.get("ratio_text"):
        return str(result["ratio_text"])
    value = result.get("ratio")
    return "n/a" if value is None else f"{value:.3g}"


def met_text(result: dict[str, Any]) -> str:
    text = {True: "yes", False: "no", None: "n/a"}[result.get("target_met")]
    device = (result.get("machine") or {}).get("device", "cpu")
    if result.get("benchmark") == "model" and not str(device).startswith("cuda"):
        text += " (CPU; GPU run pending)"
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(results: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> str:
    """``| benchmark | what vs what | target | measured | met? |`` plus a line on the machine and run."""
    lines = [
        "| benchmark | what vs what | target | measured | met? |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    f"{r['title']} (`{r['benchmark']}`)",
                    r["compares"],
                    r["target"]["text"],
                    measured_text(r),
                    met_text(r),
                )
            )
            + " |"
        )
    if results:
        machine = results[0].get("machine") or {}
        dates = sorted(r.get("created_utc", "") for r in results)
        where = (
            f"{machine.get('cpu_count')} CPU cores ({machine.get('cpu_model') or 'unknown CPU'}), "
            f"torch {machine.get('torch')}, device {machine.get('device')}, "
            f"{machine.get('torch_threads')} torch thread(s) per process"
        )
        line = f"Measured {dates[0][:10]}" + (f" to {dates[-1][:10]}" if dates[-1][:10] != dates[0][:10] else "")
        line += f" on {where}"
        if summary and summary.get("wall_s") is not None:
            line += f"; `make bench` took {summary['wall_s'] / 60:.1f} min"
        lines += ["", line + "."]
    return "\n".join(lines) + "\n"


def load_summary(results_dir: Path = RESULTS_DIR) -> dict[str, Any] | None:
    path = Path(results_dir) / SUMMARY_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with the part between :data:`BEGIN` and :data:`END` replaced by ``block``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"markers {BEGIN} ... {END} not found (add them where the table goes)")
    return text[: start + len(BEGIN)] + "\n" + block + text[stop:]


def rich_table(results: list[dict[str, Any]]):
    """The same table for the terminal (``run_all.py``'s summary)."""
    from rich.table import Table

    table = Table(title="Benchmarks (benchmarks/results/*.json)")
    for column in ("benchmark", "what vs what", "target", "measured", "met?"):
        table.add_column(column, overflow="fold")
    for r in results:
        met = r.get("target_met")
        style = {True: "green", False: "red"}.get(met, "")
        table.add_row(
            r["title"], r["compares"], r["target"]["text"], measured_text(r), f"[{style}]{met_text(r)}[/]" if style else met_text(r)
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the result JSON files")
    parser.add_argument("--write", type=Path, default=None, help="replace the table between the markers of this file")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    if not results:
        print(f"no results in {args.results}: run `make bench` first", file=sys.stderr)
        return 1
    block = markdown_table(results, load_summary(args.results))
    if args.write is None:
        print(block, end="")
        return 0
    try:
        updated = replace_between_markers(args.write.read_text(encoding="utf-8"), block)
    except ValueError as exc:
        print(f"{args.write}: {exc}", file=sys.stderr)
        return 1
    args.write.write_text(updated, encoding="utf-8")
    print(f"updated the benchmark table in {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
