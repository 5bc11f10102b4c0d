"""Benchmark helpers: interleaved timing, ratios, targets, the result JSON and the README table.

No test here looks at a timing: targets are reported by the benchmark scripts, never asserted.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.common import Target, Timing, interleaved, ratio, report_result, summary, write_result
from benchmarks.render_table import BEGIN, END, markdown_table, replace_between_markers


def test_interleaved_rotates_the_order_and_times_only_the_repeats():
    calls: list[str] = []
    prepared: list[str] = []
    timings = interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        repeats=3,
        warmup=1,
        before_each=prepared.append,
    )
    # warm-up a, b; then repeat 0: a, b; repeat 1: b, a; repeat 2: a, b
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert prepared == calls
    assert [len(t.values) for t in timings.values()] == [3, 3]
    assert all(v >= 0 for t in timings.values() for v in t.values)


def test_interleaved_per_alternative_warmup():
    calls: list[str] = []
    interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 1, warmup={"a": 2, "b": 0})
    assert calls == ["a", "a", "a", "b"]


def test_ratio_of_medians_and_per_repeat():
    slow, fast = Timing([2.0, 4.0, 6.0]), Timing([1.0, 2.0, 2.0])
    r = ratio(slow, fast)
    assert r["of_medians"] == pytest.approx(2.0)
    assert r["per_repeat"]["min"] == pytest.approx(2.0)
    assert r["per_repeat"]["median"] == pytest.approx(2.0)
    assert r["per_repeat"]["max"] == pytest.approx(3.0)
    t = Timing([3.0, 1.0, 2.0]).to_dict()
    assert (t["min"], t["median"], t["max"], t["repeats"]) == (1.0, 2.0, 3.0, 3)
    assert Timing([2.0, 4.0]).scaled(0.5).values == [1.0, 2.0]
    assert summary([5.0, 1.0, 3.0], "samples/s")["median"] == 3.0


def test_target_direction_and_missing_values():
    at_least = Target(2.0, ">= 2x")
    assert at_least.met(2.0) is True and at_least.met(1.99) is False
    assert at_least.met(None) is None and at_least.met(math.nan) is None
    assert Target(0.5, "<= 0.5", op="<=").met(0.4) is True


def test_write_result_is_strict_json_with_target_and_machine(tmp_path):
    payload = write_result(
        "demo",
        title="Demo",
        compares="a vs b",
        ratio_label="b / a",
        ratio_value=2.5,
        target=Target(2.0, ">= 2x"),
        sizes={"n": 3},
        timings={"a": Timing([1.0, 2.0, 3.0]).to_dict()},
        results={"undefined": math.nan},
        results_dir=tmp_path,
    )
    text = (tmp_path / "demo.json").read_text()

    def refuse(constant):
        raise ValueError(constant)

    stored = json.loads(text, parse_constant=refuse)  # no NaN / Infinity tokens
    assert stored == payload
    assert stored["target_met"] is True and stored["ratio"] == 2.5
    assert stored["results"]["undefined"] is None
    assert stored["machine"]["device"] == "cpu" and stored["machine"]["cpu_count"] >= 1
    assert stored["timings"]["a"]["median"] == 2.0


def test_report_result_writes_then_prints_into_the_given_folder(tmp_path, capsys):
    payload = report_result(
        "closing",
        title="Closing",
        compares="a vs b",
        ratio_label="b / a",
        ratio_value=0.5,
        target=Target(2.0, ">= 2x"),
        sizes={},
        timings={"a": Timing([1.0, 3.0]).to_dict()},
        notes=["a note"],
        results_dir=tmp_path,
    )
    assert json.loads((tmp_path / "closing.json").read_text()) == payload
    assert payload["target_met"] is False
    out = capsys.readouterr().out
    unwrapped = "".join(out.split())  # Rich wraps a long path at the console width
    assert "b / a: 0.5" in out and "a note" in out and str(tmp_path / "closing.json") in unwrapped


def _result(name: str, title: str, met, ratio_text: str, device: str = "cpu") -> dict:
    return {
        "benchmark": name,
        "title": title,
        "compares": "x | y",
        "target": {"op": ">=", "value": 2.0, "text": ">= 2x"},
        "ratio": 1.0,
        "ratio_text": ratio_text,
        "target_met": met,
        "machine": {"device": device, "cpu_count": 2, "cpu_model": "CPU", "torch": "2.x", "torch_threads": 1},
        "created_utc": "2025-01-02T03:04:05+00:00",
    }


def test_markdown_table_rows_and_replacement():
    results = [_result("preprocess", "Preprocessing", True, "2.5x"), _result("model", "Model", False, "0.9x")]
    table = markdown_table(results, {"wall_s": 600})
    lines = table.splitlines()
    assert lines[0] == "| benchmark | what vs what | target | measured | met? |"
    assert lines[2] == "| Preprocessing (`preprocess`) | x \\| y | >= 2x | 2.5x | yes |"
    assert lines[3] == "| Model (`model`) | x \\| y | >= 2x | 0.9x | no (CPU; GPU run pending) |"
    assert "took 10.0 min" in lines[-1] and "2 CPU cores" in lines[-1]

    readme = f"# Title\n\nintro\n\n## Benchmarks\n\ntext\n\n{BEGIN}\nold table\n{END}\n\nafter\n"
    updated = replace_between_markers(readme, table)
    assert "old table" not in updated and table in updated
    assert updated.startswith("# Title\n\nintro\n\n## Benchmarks\n\ntext\n\n" + BEGIN)
    assert updated.endswith(END + "\n\nafter\n")
    with pytest.raises(ValueError):
        replace_between_markers("no markers here", table)
