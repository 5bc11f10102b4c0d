"""The mapping format's one written example (``hcc_exp.data.importing.mapping``'s docstring) is a valid mapping."""

from __future__ import annotations

from pathlib import Path

import yaml

from hcc_exp.data import importer
from hcc_exp.data.importing import mapping as mapping_module
from hcc_exp.data.importing.mapping import ImportMapping


def _blocks(doc: str) -> list[str]:
    """The literal blocks (after ``::``) of a docstring, dedented by their 4 spaces."""
    blocks = []
    for part in doc.split("::\n\n")[1:]:
        lines = []
        for line in part.splitlines():
            if line and not line.startswith("    "):
                break
            lines.append(line[4:])
        blocks.append("\n".join(lines).strip("\n"))
    return blocks


def test_the_docstring_example_is_a_valid_mapping(tmp_path: Path):
    full, masks = _blocks(mapping_module.__doc__)
    path = tmp_path / "mapping.yaml"
    path.write_text(full)
    mapping = ImportMapping.from_yaml(path)
    assert mapping.clinical == Path("clinical.xlsx") and mapping.sheet == 0
    assert mapping.columns["os_time_days"] == "OS_days" and mapping.columns["afp_ng_ml"] == "AFP"
    assert mapping.values["os_event"] == {"yes": 1, "no": 0}
    assert mapping.values["split"]["test"] == "external"
    assert {p: s.folder for p, s in mapping.phases.items()} == {
        "arterial": "ART",
        "portal": "CT",
        "delayed": "DEL",
    }
    assert mapping.phases["portal"].choice.description == "*portal*"
    assert mapping.phases["delayed"].resample and not mapping.phases["arterial"].resample
    assert mapping.masks.stem("tumour", "arterial", "ART") == "ART_tumour"
    assert mapping.masks.per_phase("tumour") and not mapping.masks.per_phase("liver")
    assert mapping.folder_column == "Folder" and mapping.drop_columns == ["Name", "DOB"]

    # the second block: mask formats and registration, on top of the first
    with_masks = {**yaml.safe_load(full), **yaml.safe_load(masks)}
    parsed = ImportMapping.model_validate(with_masks)
    assert parsed.masks.liver.labels == [1, 2] and parsed.masks.liver.segment is None
    assert parsed.masks.tumour.segment == "Mass" and parsed.masks.tumour.file == "seg.dcm"
    assert parsed.registration.min_correlation == 0.6 and not parsed.registration.bspline


def test_the_importer_points_to_the_one_example():
    assert "hcc_exp.data.importing.mapping" in importer.__doc__
    assert "columns:" not in importer.__doc__  # no second copy to drift
