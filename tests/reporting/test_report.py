"""Sweep report: self-contained HTML and Markdown with tables, forest plot and best runs."""

from __future__ import annotations

import base64
import re

import pytest

from hcc_exp.reporting.report import run_metric_table, write_report
from tests.reporting.fake_sweep import write_fake_sweep


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sweep = write_fake_sweep(tmp_path_factory.mktemp("report") / "ablation-demo")
    files = write_report(sweep.root, n_bootstrap=200, seed=1)
    return sweep, files


def test_report_files_are_written_in_the_sweep_folder(report):
    sweep, files = report
    assert set(files) == {"html", "markdown", "table_markdown", "csv", "forest_plot"}
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0
        assert path.parent == sweep.root / "report"


def test_html_is_self_contained(report):
    _, files = report
    html = files["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, flags=re.IGNORECASE)
    assert "http" not in html.lower()
    assert "<link" not in html and "<script" not in html
    sources = re.findall(r'src="([^"]+)"', html)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    # forest plot + one evaluation figure of each arm's best run
    assert len(sources) == 1 + 3
    forest = base64.b64decode(sources[0].split(",", 1)[1])
    assert forest == files["forest_plot"].read_bytes()


def test_report_content(report):
    sweep, files = report
    html = files["html"].read_text()
    markdown = files["markdown"].read_text()
    for text in (html, markdown):
        assert "Sweep report: ablation-demo" in text
        assert "Best run per arm" in text and "Trials" in text
        for arm in ("full", "no_jitter", "no_venous"):
            assert f"Arm &#x27;{arm}&#x27;" in text or f"Arm '{arm}'" in text
        assert "OS C-index" in text and "Δ bootstrap" in text
    # Trial counts row of no_jitter: 3 seeds used, 3 complete, 1 failed, 0 pruned, 0 running, 0 waiting, 4 total
    assert "| no_jitter | 3 | 3 | 1 | 0 | 0 | 0 | 4 |" in markdown
    assert "| all | 9 | 9 | 1 | 1 | 0 | 0 | 11 |" in markdown
    # Markdown images point at files next to the report
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert "ablation_forest.png" in images
    for relative in images:
        assert (files["markdown"].parent / relative).is_file()
    # best run of "full" is the seed with the highest internal OS C-index
    best_seed = max((0, 1, 2), key=lambda s: sweep.metrics[("full", s)]["internal/os/c_index"])
    assert f"seed {best_seed}, internal/os/c_index = {sweep.metrics[('full', best_seed)]['internal/os/c_index']:.4f}" in markdown


def test_run_metric_table_pivots_flat_keys():
    table, others = run_metric_table(
        {"internal/os/c_index": 0.81, "external/os/c_index": 0.77, "internal/mvi/f1": 0.7, "best_epoch": 12.0}
    )
    assert table.header == ("metric", "internal", "external")
    assert ("OS C-index", "0.810", "0.770") in table.rows
    assert ("MVI F1", "0.700", "n/e") in table.rows
    assert others == ["best_epoch: 12.0000"]
