"""A tiny document model rendered to Markdown and to self-contained HTML.

Reports are built once as a list of blocks (headings, paragraphs, tables,
bullet lists, images) and written twice, so the Markdown and HTML reports
cannot drift apart. The HTML embeds every image as a base64 ``data:`` URI and
carries its CSS inline: it opens offline and can be mailed as one file.

Every Markdown file of the package is written from these blocks (evaluation tables,
ablation tables, sweep reports). The module sits at the bottom of the package (it imports
nothing from ``hcc_exp``) so that evaluation, which writes its own tables, and reporting
both use it without an import running back up the flow.

>>> print(to_markdown([Heading("T", 2), Table(("arm", "C"), (("full", "0.812"),))], Path(".")), end="")
## T
<BLANKLINE>
| arm | C |
| --- | ---: |
| full | 0.812 |
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class BulletList:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align_right_from: int = 1
    """Columns from this index on are right-aligned (numbers)."""


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str


Block = Heading | Paragraph | BulletList | Table | Image


def table_from_frame(frame, align_right_from: int = 1) -> Table:
    """A :class:`Table` of a ``pandas.DataFrame`` whose cells are already formatted (``str(cell)``).

    >>> import pandas as pd
    >>> table_from_frame(pd.DataFrame({"arm": ["full"], "n": [3]})).rows
    (('full', '3'),)
    """
    return Table(
        tuple(str(c) for c in frame.columns),
        tuple(tuple(str(v) for v in row) for row in frame.itertuples(index=False)),
        align_right_from,
    )


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def to_markdown(blocks: Sequence[Block], base_dir: Path) -> str:
    """Markdown text; image paths are written relative to ``base_dir`` (where the .md file lives)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, BulletList):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            align = ["---" if i < block.align_right_from else "---:" for i in range(len(block.header))]
            lines = [
                "| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                "| " + " | ".join(align) + " |",
            ]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Image):
            relative = Path(os.path.relpath(block.path, base_dir)).as_posix()
            out.append(f"![{block.caption}]({relative})\n\n*{block.caption}*")
    return "\n\n".join(out) + "\n"


def write_markdown(blocks: Sequence[Block], path: Path) -> Path:
    """Write ``blocks`` as Markdown to ``path`` (image links relative to its folder); returns ``path``."""
    path = Path(path)
    path.write_text(to_markdown(blocks, path.parent), encoding="utf-8")
    return path


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _data_uri(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    mime = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif"}.get(suffix)
    if mime is None:
        raise ValueError(f"cannot embed {path}: only PNG, JPEG and GIF images are supported")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained HTML page: inline CSS, images as data URIs, no external references."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            body.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, BulletList):
            items = "".join(f"<li>{html.escape(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = []
            for row in block.rows:
                cells = []
                for i, cell in enumerate(row):
                    klass = ' class="num"' if i >= block.align_right_from else ""
                    cells.append(f"<td{klass}>{html.escape(str(cell)).replace(chr(10), '<br>')}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif isinstance(block, Image):
            caption = html.escape(block.caption)
            body.append(
                f'<figure><img src="{_data_uri(block.path)}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'
            )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
