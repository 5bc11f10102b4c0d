"""The bad-cohort corpus of ``hcc-exp check`` (issue 13): one case per class, each refused by name.

Every case breaks one thing in a copy of a valid 6-patient cohort and names the error class, and
the patient / column / file it must name; ``docs/BAD_INPUT.md`` lists the same classes as what is
guaranteed. Cases that must be *accepted* (a padded id, a patient called ``NA``) are here too:
what ``check`` accepts is exactly what every later step sees (``test_no_patient_is_lost``).
"""

from __future__ import annotations

import gzip
import shutil
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from rich.console import Console
from typer.testing import CliRunner

from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR, read_cohort_table
from hcc_exp.data.io import image_from_array, write_nifti
from hcc_exp.data.validate import default_problem_list_path, load_cohort_table, validate_cohort
from hcc_exp.data.volume_checks import ct_problem, modality_problem, verify_volume_file
from hcc_exp.errors import (
    CohortError,
    CohortValidationError,
    ConstantVolumeError,
    CorruptVolumeError,
    EmptyCohortError,
    ImplausibleTimeError,
    MissingSplitError,
    NonFiniteVoxelError,
    NotComputedTomographyError,
    NoTrainingEventsError,
    NotVolumetricError,
    UnreadableTableError,
    UnsafePatientIdError,
)
from hcc_exp.reporting.console import CHECK_ROWS_PER_PROBLEM, render_validation_report
from tests.factories import write_tiny_cohort


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("bad-cohorts") / "cohort")


@pytest.fixture
def cohort(_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(_template, tmp_path / "cohort"))


def _text_table(cohort: Path) -> pd.DataFrame:
    return pd.read_csv(cohort / COHORT_CSV, dtype=str, keep_default_na=False)


def _write_text_table(cohort: Path, table: pd.DataFrame) -> None:
    table.to_csv(cohort / COHORT_CSV, index=False)


def _set(cohort: Path, column: str, values: dict[str, str]) -> None:
    table = _text_table(cohort)
    for pid, value in values.items():
        table.loc[table["patient_id"] == pid, column] = value
    _write_text_table(cohort, table)


def _image(cohort: Path, pid: str, name: str) -> Path:
    return cohort / IMAGES_DIR / pid / name


def _rewrite_image(cohort: Path, pid: str, phase: str, array: np.ndarray) -> Path:
    path = _image(cohort, pid, f"{phase}.nii.gz")
    reference = sitk.ReadImage(str(path))
    write_nifti(image_from_array(array, reference.GetSpacing(), reference.GetOrigin(), reference.GetDirection()), path)
    return path


def _array(cohort: Path, pid: str, phase: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(_image(cohort, pid, f"{phase}.nii.gz"))))


# --------------------------------------------------------------------------- how each case breaks a cohort
def _flip_a_voxel_bit(cohort: Path) -> None:
    # A stored (level-0) deflate block holds the bytes verbatim, so the flipped bit leaves a
    # decodable stream of the right length: only the CRC can tell.
    path = _image(cohort, "P001", "portal.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    assert len(raw) < 65535  # one stored block: 10-byte gzip header, 5-byte block header, the bytes
    stored = bytearray(gzip.compress(raw, compresslevel=0, mtime=0))
    k = len(raw) - 100
    assert stored[15 + k] == raw[k]
    stored[15 + k] ^= 0x04
    path.write_bytes(bytes(stored))
    inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(bytes(stored[10:-8]))
    assert len(inflated) == len(raw) and inflated != raw  # the stream inflates in full, one bit off


def _truncate_keeping_trailer(cohort: Path) -> None:
    path = _image(cohort, "P001", "portal.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + data[-8:])  # the trailer still states the full size


def _nan_voxels(cohort: Path) -> None:
    array = _array(cohort, "P001", "portal").astype(np.float32)
    array[3, 5, 7] = np.nan
    array[4, 5, 7] = np.inf
    _rewrite_image(cohort, "P001", "portal", array)


def _blank_phase(cohort: Path) -> None:
    _rewrite_image(cohort, "P001", "portal", np.full_like(_array(cohort, "P001", "portal"), -1000))


def _int8_phase(cohort: Path) -> None:
    array = np.clip(_array(cohort, "P001", "portal"), -128, 127).astype(np.int8)
    _rewrite_image(cohort, "P001", "portal", array)


def _normalised_phase(cohort: Path) -> None:
    array = _array(cohort, "P001", "portal").astype(np.float32)
    _rewrite_image(cohort, "P001", "portal", (array - array.min()) / (array.max() - array.min()))


def _two_dimensional_phase(cohort: Path) -> None:
    path = _image(cohort, "P001", "portal.nii.gz")
    slice_2d = sitk.GetImageFromArray(_array(cohort, "P001", "portal")[5])
    slice_2d.SetSpacing((0.8, 0.8))
    sitk.WriteImage(slice_2d, str(path))


def _only_train(cohort: Path) -> None:
    _set(cohort, "split", {pid: "train" for pid in _text_table(cohort)["patient_id"]})


def _no_train(cohort: Path) -> None:
    _set(cohort, "split", {pid: "internal" for pid in _text_table(cohort)["patient_id"]})


def _no_training_death(cohort: Path) -> None:
    # train = P000 (died, relapsed) and P003 (relapsed, censored for OS): P000 now survives, relapse kept.
    _set(cohort, "os_event", {"P000": "0"})


def _absurd_time(cohort: Path) -> None:
    _set(cohort, "os_time_days", {"P001": "1e300"})
    _set(cohort, "rfs_time_days", {"P001": "1e300"})


def _header_only(cohort: Path) -> None:
    _write_text_table(cohort, _text_table(cohort).iloc[0:0])


def _path_in_id(cohort: Path) -> None:
    _set(cohort, "patient_id", {"P001": "P0:01"})


def _case_only_twins(cohort: Path) -> None:
    _set(cohort, "patient_id", {"P001": "p002"})
    (cohort / IMAGES_DIR / "P001").rename(cohort / IMAGES_DIR / "p002")  # both folders exist on Linux


def _duplicate_column_once_stripped(cohort: Path) -> None:
    text = (cohort / COHORT_CSV).read_text()
    header, rest = text.split("\n", 1)
    (cohort / COHORT_CSV).write_text(header + ", split \n" + "\n".join(r + ",train" for r in rest.splitlines()) + "\n")


@dataclass(frozen=True)
class Case:
    name: str
    breaks: Callable[[Path], None]
    error: type[CohortError]
    patient_id: str | None = None
    column: str | None = None
    file_endswith: str | None = None
    words: str = ""


CASES = [
    # item 5: corrupt or non-CT images
    Case("bit flip", _flip_a_voxel_bit, CorruptVolumeError, "P001", None, "P001/portal.nii.gz", "CRC"),
    Case("truncated, trailer kept", _truncate_keeping_trailer, CorruptVolumeError, "P001", None, "portal.nii.gz"),
    Case("NaN voxels", _nan_voxels, NonFiniteVoxelError, "P001", None, "portal.nii.gz", "2 voxel(s)"),
    Case("blank phase", _blank_phase, ConstantVolumeError, "P001", None, "portal.nii.gz", "-1000"),
    Case("int8 phase", _int8_phase, NotComputedTomographyError, "P001", None, "portal.nii.gz", "8 bits"),
    Case("[0, 1] phase", _normalised_phase, NotComputedTomographyError, "P001", None, "portal.nii.gz", "normalised"),
    Case("2D phase", _two_dimensional_phase, NotVolumetricError, "P001", None, "portal.nii.gz", "2 dimensions"),
    # item 7: what training needs
    Case("only the train split", _only_train, MissingSplitError, None, "split", "cohort.csv", "'internal'"),
    Case("no train split", _no_train, MissingSplitError, None, "split", "cohort.csv", "'train'"),
    Case("no OS event in train", _no_training_death, NoTrainingEventsError, None, "os_event", "cohort.csv", "OS"),
    Case("OS time 1e300 days", _absurd_time, ImplausibleTimeError, "P001", "os_time_days", "cohort.csv", "100 years"),
    Case("header-only table", _header_only, EmptyCohortError, None, None, "cohort.csv", "no patient"),
    # item 1: identifiers that check would have to alter
    Case("reserved character in id", _path_in_id, UnsafePatientIdError, "P0:01", "patient_id", "cohort.csv"),
    Case("ids differing in case", _case_only_twins, UnsafePatientIdError, "p002", "patient_id", "cohort.csv", "case"),
    Case("column twice once stripped", _duplicate_column_once_stripped, UnreadableTableError, None, None, "cohort.csv"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_cohort_is_refused_by_name(cohort: Path, case: Case):
    case.breaks(cohort)
    report = validate_cohort(cohort, progress=False)
    assert not report.ok
    hits = [e for e in report.errors if type(e) is case.error]
    assert hits, [f"{type(e).__name__}: {e}" for e in report.errors]
    hit = hits[0]
    assert hit.patient_id == case.patient_id and hit.column == case.column, str(hit)
    if case.file_endswith:
        assert (hit.path or "").endswith(case.file_endswith), hit.path
    assert case.words in hit.message, hit.message
    # and only this class of problem: nothing cascades from it
    kinds = {type(e) for e in report.errors}
    assert kinds == {case.error} or (case.error is UnsafePatientIdError and kinds <= {UnsafePatientIdError}), kinds


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.error in (CorruptVolumeError, EmptyCohortError)], ids=lambda c: c.name
)
def test_cli_check_exits_2_with_a_named_message(cohort: Path, case: Case):
    from hcc_exp.cli import app

    case.breaks(cohort)
    result = CliRunner().invoke(app, ["check", str(cohort), "--quiet"])
    assert result.exit_code == 2, result.output
    assert case.error.__name__ in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- accepted, and normalised once
def test_padded_ids_splits_and_a_patient_called_na_are_read_the_same_everywhere(cohort: Path):
    table = _text_table(cohort)
    table.loc[table["patient_id"] == "P002", "patient_id"] = "NA"
    (cohort / IMAGES_DIR / "P002").rename(cohort / IMAGES_DIR / "NA")
    table["patient_id"] = " " + table["patient_id"] + "  "
    table["split"] = " " + table["split"].str.capitalize() + " "
    table["sex"] = table["sex"].str.lower()
    table.columns = [f" {c}" if c in ("split", "mvi") else c for c in table.columns]
    (cohort / COHORT_CSV).write_text("\ufeff" + table.to_csv(index=False), encoding="utf-8")

    report = validate_cohort(cohort, progress=False)
    assert report.ok, [str(e) for e in report.errors]
    assert report.summary.overall.n_patients == 6
    assert report.summary.patients_per_split == {"train": 2, "internal": 2, "external": 2}
    loaded = load_cohort_table(cohort)
    assert loaded["patient_id"].tolist() == ["P000", "P001", "NA", "P003", "P004", "P005"]
    assert set(loaded["split"]) == {"train", "internal", "external"} and set(loaded["sex"]) == {"F", "M"}
    # the reader every command uses gives the same identifiers
    assert read_cohort_table(cohort)["patient_id"].tolist() == loaded["patient_id"].tolist()


def test_no_patient_is_lost_between_check_and_predictions(cohort: Path, tmp_path: Path):
    """check -> preprocess -> train (1 epoch) -> predictions.csv on a padded, NA-named cohort."""
    from hcc_exp.cli import app
    from hcc_exp.config import build_config
    from hcc_exp.data.cache import current_cache
    from hcc_exp.training.train import train
    from tests.conftest import tiny_run_overrides

    table = _text_table(cohort)
    table.loc[table["patient_id"] == "P004", "patient_id"] = "NA"
    (cohort / IMAGES_DIR / "P004").rename(cohort / IMAGES_DIR / "NA")
    table.loc[table["split"] == "train", "split"] = " train "  # P000, P003
    table.loc[table["patient_id"] == "P001", "split"] = " internal"
    table["patient_id"] = table["patient_id"].map(lambda pid: f" {pid}")
    _write_text_table(cohort, table)
    expected = {"P000": "train", "P001": "internal", "P002": "external", "P003": "train", "NA": "internal",
                "P005": "external"}  # fmt: skip

    runner = CliRunner()
    checked = runner.invoke(app, ["check", str(cohort), "--quiet"])
    assert checked.exit_code == 0, checked.output
    assert "6" in checked.output and "OK" in checked.output

    overrides = {**tiny_run_overrides(tmp_path, cohort), "trainer.max_epochs": 1, "momentum.steps": 1}
    config = build_config({}, overrides)
    preprocessed = runner.invoke(app, ["preprocess", str(cohort), str(tmp_path / "cache"), "--quiet",
                                       *[a for k, v in overrides.items() if k.startswith("preprocess.")
                                         for a in ("--set", f"{k}={v}")]])  # fmt: skip
    assert preprocessed.exit_code == 0, preprocessed.output
    labels = current_cache(tmp_path / "cache").labels
    assert dict(zip(labels["patient_id"], labels["split"], strict=True)) == expected

    result = train(config, run_dir=tmp_path / "runs" / "padded", progress=False)
    predictions = pd.read_csv(result.run_dir / "predictions.csv", dtype=str, keep_default_na=False)
    assert dict(zip(predictions["patient_id"], predictions["split"], strict=True)) == expected


# --------------------------------------------------------------------------- integrity cache
def test_a_verified_file_is_not_read_again_until_it_changes(cohort: Path, monkeypatch, tmp_path: Path):
    from hcc_exp.data import volume_checks

    monkeypatch.setenv("HCC_EXP_CACHE_DIR", str(tmp_path / "user-cache"))
    path = _image(cohort, "P001", "arterial.nii.gz")
    opened: list[Path] = []
    real_open = gzip.open
    monkeypatch.setattr(volume_checks.gzip, "open", lambda p, *a, **k: opened.append(Path(p)) or real_open(p, *a, **k))
    verify_volume_file(path)
    verify_volume_file(path)
    assert opened == [path]  # the second call found the file in the cache
    assert not list(cohort.rglob("*.sqlite3*")) and list((tmp_path / "user-cache").glob("*.sqlite3"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptVolumeError):
        verify_volume_file(path)
    assert opened == [path, path]


def test_ct_rule_is_the_one_predict_uses():
    from hcc_exp.inference import predict

    assert predict.modality_problem is modality_problem
    unit = sitk.GetImageFromArray(np.linspace(0, 1, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))
    assert isinstance(ct_problem(unit), NotComputedTomographyError)
    hu = sitk.GetImageFromArray(np.linspace(-1000, 1500, 4 * 5 * 6).astype(np.int16).reshape(4, 5, 6))
    assert ct_problem(hu) is None


# --------------------------------------------------------------------------- many problems
def test_ten_thousand_patients_without_images_give_a_bounded_report(tmp_path: Path):
    from tests.factories import tiny_clinical_table

    cohort = tmp_path / "big"
    (cohort / IMAGES_DIR).mkdir(parents=True)
    tiny_clinical_table(10_000).to_csv(cohort / COHORT_CSV, index=False)
    tracemalloc.start()
    report = validate_cohort(cohort, progress=False)
    console = Console(record=True, width=200, file=open(tmp_path / "console.txt", "w"))  # noqa: SIM115
    render_validation_report(report, console, problem_list=tmp_path / "problems.csv")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(report.errors) == 10_000
    text = console.export_text()
    assert text.count("does not exist") == CHECK_ROWS_PER_PROBLEM  # 20 rows, then one "... and N more"
    assert "... and 9,980 more MissingFileError" in text
    assert peak < 200 * 2**20, peak  # linear structures only (was 15.5 GB)

    written = report.write_problem_list(tmp_path / "problems.csv")
    listed = pd.read_csv(written, dtype=str, keep_default_na=False)
    assert len(listed) == 10_000 and set(listed["problem"]) == {"MissingFileError"}
    assert listed["patient_id"].tolist() == [f"P{i:03d}" for i in range(10_000)]
    with pytest.raises(CohortValidationError) as info:
        report.raise_for_errors()
    assert str(info.value).count("\n") == CohortValidationError.MAX_LISTED + 1 and "9,980 more" in str(info.value)


def test_cli_check_writes_the_full_list_outside_the_cohort(tmp_path: Path, monkeypatch):
    from hcc_exp import cli
    from hcc_exp.cli import app
    from tests.factories import tiny_clinical_table

    cohort = tmp_path / "cohort"
    (cohort / IMAGES_DIR).mkdir(parents=True)
    tiny_clinical_table(30).to_csv(cohort / COHORT_CSV, index=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(cli.console, "width", 300)
    result = CliRunner().invoke(app, ["check", str(cohort), "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    listed = work / "hcc-exp-check-cohort-problems.csv"
    assert len(pd.read_csv(listed)) == 30 and "... and 10 more MissingFileError" in result.output
    assert str(listed) in result.output.replace("\n", "")
    # from inside the cohort, or a DVC-tracked folder, the list goes to the user cache instead
    monkeypatch.setenv("HCC_EXP_CACHE_DIR", str(tmp_path / "user-cache"))
    assert default_problem_list_path(cohort, cwd=cohort / IMAGES_DIR).parent == tmp_path / "user-cache" / "reports"
    (tmp_path / "data").mkdir()
    (tmp_path / "data.dvc").write_text("outs:\n- path: data\n")
    assert default_problem_list_path(cohort, cwd=tmp_path / "data").parent == tmp_path / "user-cache" / "reports"
    assert default_problem_list_path(cohort, cwd=work).parent == work


def test_markup_in_data_is_printed_as_written(cohort: Path):
    _set(cohort, "institution", {"P001": "[/bold] [red]II"})
    _set(cohort, "bclc", {"P001": "[/x]"})
    report = validate_cohort(cohort, progress=False, check_images=False)
    console = Console(record=True, width=200)  # markup on, as a library caller's console may be
    render_validation_report(report, console)
    text = console.export_text()
    assert "'[/X]'" in text and "P001" in text  # canonical (upper) case, printed as written
    assert [type(e).__name__ for e in report.errors] == ["InvalidValueError"]
