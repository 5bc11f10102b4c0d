"""``hcc-exp report RUN_DIR``: a TRIPOD+AI report of one run, item by item.

The items and their order are those of the TRIPOD+AI checklist (Collins GS, Moons KGM, Dhiman P,
et al. TRIPOD+AI statement: updated guidance for reporting clinical prediction models that use
regression or machine learning methods. BMJ 2024;385:e078378, Table 1; https://www.tripod-statement.org).
Each item is filled from the run's own records where they exist:

* ``config.yaml`` / ``meta.json`` (preprocessing, model, training, code commit, data version),
* ``checkpoints/best.ckpt`` (parameter count), ``metrics.json`` and ``evaluation/`` (metrics,
  tables, figures, subgroup / calibration / Brier / baselines from :mod:`hcc_exp.evaluation.extended`),
* the cache's ``labels.csv`` (participants, events, missing data, Table 1 by
  :mod:`hcc_exp.reporting.cohort_table`), ``cam/regions_summary.csv`` (CAM shares),
* an agreement folder (``hcc-exp agreement``) if given, and the sweep spec when the run belongs
  to a sweep (``runs/<sweep>/runs/<trial>``),

and otherwise marked "to be completed by the authors". The document ends with the open items.
The checklist is :mod:`~hcc_exp.reporting.tripod_items`, the records :mod:`~hcc_exp.reporting.tripod_records`,
the per-item text :mod:`~hcc_exp.reporting.tripod_fillers`; this module assembles and writes the document.
No patient identifier appears in it (counts and summaries only).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hcc_exp.reporting import document as doc
from hcc_exp.reporting.tripod_fillers import FIGURES, FILLERS, OPEN
from hcc_exp.reporting.tripod_items import ITEMS, Item
from hcc_exp.reporting.tripod_records import RunRecords, is_run_folder, read_run

__all__ = [
    "FIGURES",
    "FILLERS",
    "ITEMS",
    "OPEN",
    "TRIPOD_DIR",
    "Item",
    "RunRecords",
    "is_run_folder",
    "read_run",
    "tripod_blocks",
    "write_tripod_report",
]

TRIPOD_DIR = "tripod"


def _text_of(blocks: list[doc.Block]) -> str:
    return " ".join(b.text for b in blocks if isinstance(b, doc.Paragraph)) + " ".join(
        " ".join(b.items) for b in blocks if isinstance(b, doc.BulletList)
    )


def tripod_blocks(records: RunRecords, out_dir: Path) -> tuple[list[doc.Block], list[Item], list[Item]]:
    """The report's blocks, and the items left open / only partly filled."""
    figures_dir = out_dir / "figures"
    blocks: list[doc.Block] = [
        doc.Heading(f"TRIPOD+AI report: run {records.meta.get('run_id', records.run_dir.name)}", 1),
        doc.Paragraph("Items and order: TRIPOD+AI checklist (Collins et al., BMJ 2024;385:e078378). Each item is filled "
                      "from this run's records or marked as open."),  # fmt: skip
    ]
    open_items, partial_items = [], []
    section = None
    for item in ITEMS:
        if item.section != section:
            section = item.section
            blocks.append(doc.Heading(section, 2))
        blocks.append(doc.Heading(f"{item.number}. {item.topic}: {item.requirement}", 3))
        filler = FILLERS.get(item.number)
        content = filler(records) if filler is not None else None
        if not content:
            blocks.append(doc.Paragraph(OPEN))
            open_items.append(item)
            continue
        for block in content:
            if isinstance(block, doc.Image):
                figures_dir.mkdir(parents=True, exist_ok=True)
                target = figures_dir / block.path.name
                shutil.copyfile(block.path, target)
                block = doc.Image(target, block.caption)
            blocks.append(block)
        if OPEN.rstrip(".") in _text_of(content):
            partial_items.append(item)
    blocks.append(doc.Heading("Open items", 2))
    blocks.append(doc.BulletList(tuple(f"{i.number} {i.topic}: {i.requirement}" for i in open_items)
                                 + tuple(f"{i.number} {i.topic} (partly filled): {i.requirement}" for i in partial_items)))  # fmt: skip
    return blocks, open_items, partial_items


def write_tripod_report(
    run_dir: Path | str, out_dir: Path | str | None = None, *, agreement_dir: Path | str | None = None
) -> dict[str, Path]:
    """Write ``report.md`` (+ ``figures/``) and a self-contained ``report.html`` (default ``RUN_DIR/tripod``)."""
    records = read_run(run_dir, agreement_dir)
    out = Path(out_dir) if out_dir is not None else records.run_dir / TRIPOD_DIR
    out.mkdir(parents=True, exist_ok=True)
    blocks, _, _ = tripod_blocks(records, out)
    title = f"TRIPOD+AI report: {records.run_dir.name}"
    paths = {"markdown": out / "report.md", "html": out / "report.html"}
    paths["markdown"].write_text(doc.to_markdown(blocks, out), encoding="utf-8")
    paths["html"].write_text(doc.to_html(blocks, title), encoding="utf-8")
    return paths
