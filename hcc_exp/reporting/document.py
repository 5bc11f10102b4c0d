"""The document model now lives in :mod:`hcc_exp.document` (evaluation writes its tables with it too)."""

from hcc_exp.document import (  # noqa: F401  (re-exported for existing imports)
    Block,
    BulletList,
    Heading,
    Image,
    Paragraph,
    Table,
    table_from_frame,
    to_html,
    to_markdown,
    write_markdown,
)
