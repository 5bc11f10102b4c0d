"""The bad-input and fault corpus: one parametrised case (or a few) per defect class of issue 13.

Each case builds its own copy of a small cohort, breaks one thing, runs the command a user would
run (the real console entry point, in a subprocess) and checks what ``docs/BAD_INPUT.md``
guarantees: a refusal is exit status 2 with a message naming the patient / file / column / key
the case planted, no Python traceback, and nothing half-written; an accepted input loses no
patient. The expected names come from the case itself, never from the code under test.

Classes (issue 13): 1 normalised table, 2 located messages, 3 many problems, 4 small splits in
evaluate, 5 corrupt / non-CT images, 6 DICOM gaps, 7 cohorts train cannot use, 8 orphaned
workers, 9 environment errors, 10 impossible settings, 11 minor (NA ids, predict exit code,
--join URL, folder permissions, labels.csv columns).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from tests.factories import edit_cohort_csv, write_tiny_cohort

REAL_DICOM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-ct" / "dicom"

# A CPU run of seconds (as tests/conftest.py's tiny_run_overrides).
TINY = {
    "tracking.wandb": "false",
    "preprocess.crop_size_vox": "[24,24,24]",
    "preprocess.spacing_mm": "[2.0,2.0,2.0]",
    "preprocess.workers": "1",
    "trainer.max_epochs": "1",
    "trainer.batch_size": "4",
    "trainer.accelerator": "cpu",
    "augment_copies": "1",
    "momentum.steps": "2",
}


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """stdout + stderr with Rich's line wrapping undone."""
        return " ".join((self.stdout + " " + self.stderr).split())


def cli(*args: str, cwd: Path, timeout: float = 600) -> Outcome:
    env = dict(os.environ, COLUMNS="200", WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", "from hcc_exp.cli import main; main()", *args],
        capture_output=True, text=True, check=False, cwd=cwd, env=env, timeout=timeout,
    )  # fmt: skip
    return Outcome(done.returncode, done.stdout, done.stderr)


def tiny_sets(cohort: Path, root: Path, **extra: str) -> list[str]:
    values = {**TINY, "data.cohort_dir": str(cohort), "data.cache_dir": str(root / "cache"),
              "tracking.runs_dir": str(root / "runs"), **extra}  # fmt: skip
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def assert_refused(outcome: Outcome, *names: str) -> None:
    """Exit 2, an ``error:`` line naming every one of ``names``, no traceback."""
    assert "Traceback" not in outcome.stdout + outcome.stderr, outcome.stderr
    assert outcome.returncode == 2, (outcome.returncode, outcome.stdout[-2000:], outcome.stderr[-2000:])
    assert "error" in outcome.text.lower()
    for name in names:
        assert name in outcome.text, f"{name!r} not named in: {outcome.text[-3000:]}"


def cohort_of(tmp: Path, n: int = 6, **kwargs) -> Path:
    return write_tiny_cohort(tmp / "cohort", n_patients=n, **kwargs)


def rewrite_csv(cohort: Path, edit) -> None:
    path = cohort / "cohort.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table).to_csv(path, index=False)


# --------------------------------------------------------------------------- class 1
def test_class1_what_check_accepts_reaches_predictions(tmp_path: Path) -> None:
    """Padded text cells pass check, and every patient check counted is in predictions.csv."""
    cohort = cohort_of(tmp_path, n=12, shape_zyx=(24, 40, 40))

    def pad(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[table["split"] == "train", "split"] = " train "
        table.loc[0, "patient_id"] = " " + table.loc[0, "patient_id"]
        table.loc[1, "sex"] = table.loc[1, "sex"] + "  "
        return table

    rewrite_csv(cohort, pad)
    checked = cli("check", str(cohort), "--quiet", cwd=tmp_path)
    assert checked.returncode == 0, checked.text
    run = tmp_path / "runs" / "padded"
    trained = cli("train", "--run-dir", str(run), "--quiet", *tiny_sets(cohort, tmp_path), cwd=tmp_path)
    assert trained.returncode == 0, trained.text
    predictions = pd.read_csv(run / "predictions.csv", dtype=str, keep_default_na=False)
    expected = sorted(p.name for p in (cohort / "images").iterdir())
    assert sorted(predictions["patient_id"]) == expected
    assert (predictions.loc[predictions["patient_id"].isin(["P000", "P003"]), "split"] == "train").all()


# --------------------------------------------------------------------------- class 2
@pytest.mark.parametrize("command", ["check", "preprocess"])
def test_class2_refusal_names_patient_and_file(command: str, tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    (cohort / "images" / "P002" / "portal.nii.gz").unlink()
    args = [str(cohort), "--quiet"] if command == "check" else [str(cohort), str(tmp_path / "cache"), "--quiet"]
    assert_refused(cli(command, *args, cwd=tmp_path), "P002", "portal")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_class2_markup_like_data_is_printed_as_written(tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    edit_cohort_csv(cohort, "P001", bclc="[/red]X")
    outcome = cli("check", str(cohort), "--quiet", cwd=tmp_path)
    assert_refused(outcome, "P001", "bclc")
    # Categories are compared case-blind (and shown canonical), so look for the value case-blind too.
    assert "[/red]x" in outcome.text.lower()


# --------------------------------------------------------------------------- class 3
def test_class3_ten_thousand_patients_without_images_in_bounded_memory(tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path, n=3)
    table = pd.read_csv(cohort / "cohort.csv", dtype=str)
    big = pd.concat([table.iloc[[i % 3]] for i in range(10_000)], ignore_index=True)
    big["patient_id"] = [f"X{i:05d}" for i in range(10_000)]
    big.to_csv(cohort / "cohort.csv", index=False)
    shutil.rmtree(cohort / "images")
    (cohort / "images").mkdir()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    outcome = cli("check", str(cohort), "--quiet", cwd=tmp_path, timeout=300)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert_refused(outcome, "X00000")
    # Summarised, not 30,000 rows: the terminal report stays short and names how many were left out.
    assert len((outcome.stdout + outcome.stderr).splitlines()) < 400
    assert "X09999" not in outcome.stdout + outcome.stderr or "more" in outcome.text
    assert max(peak_kib, before) < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


# --------------------------------------------------------------------------- class 4 (and a trained run)
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run folder, cohort, root) of a 1-epoch tiny run on 12 patients."""
    root = tmp_path_factory.mktemp("corpus-run")
    cohort = write_tiny_cohort(root / "cohort", n_patients=12, shape_zyx=(24, 40, 40))
    run = root / "runs" / "tiny"
    trained = cli("train", "--run-dir", str(run), "--quiet", *tiny_sets(cohort, root), cwd=root)
    assert trained.returncode == 0, trained.text
    return run, cohort, root


def test_class4_evaluate_on_a_split_with_c_index_exactly_one(tiny_run, tmp_path: Path) -> None:
    run, cohort, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    predictions = pd.read_csv(copy / "predictions.csv", dtype={"patient_id": str})
    labels = pd.read_csv(cohort / "cohort.csv", dtype={"patient_id": str}).set_index("patient_id")
    external = predictions["split"] == "external"
    # Risk = minus follow-up: every comparable pair concordant, so the external OS C-index is exactly 1.
    predictions.loc[external, "os_risk"] = -labels.loc[predictions.loc[external, "patient_id"], "os_time_days"].to_numpy()
    predictions.to_csv(copy / "predictions.csv", index=False)
    outcome = cli("evaluate", str(copy), cwd=tmp_path)
    assert outcome.returncode == 0 and "Traceback" not in outcome.stderr, outcome.text
    metrics = json.loads((copy / "evaluation" / "metrics.json").read_text())
    assert metrics["external/os/c_index"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- class 5
def _flip_one_bit_inside(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def _truncate_keep_trailer(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] + raw[-8:])


def _write_like(path: Path, array_zyx: np.ndarray) -> None:
    reference = sitk.ReadImage(str(path))
    image = sitk.GetImageFromArray(array_zyx)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))


def _nan_voxels(path: Path) -> None:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
    array[3, 5, 5:9] = np.nan
    _write_like(path, array)


def _constant(path: Path) -> None:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    _write_like(path, np.full_like(array, 40))


def _normalised(path: Path) -> None:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
    _write_like(path, (array - array.min()) / (array.max() - array.min()))


def _two_d(path: Path) -> None:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    sitk.WriteImage(sitk.GetImageFromArray(array[array.shape[0] // 2]), str(path))


@pytest.mark.parametrize(
    "damage", [_flip_one_bit_inside, _truncate_keep_trailer, _nan_voxels, _constant, _normalised, _two_d],
    ids=["bit_flip", "truncated_trailer_kept", "nan_voxels", "constant", "normalised_0_1", "two_d"],
)  # fmt: skip
def test_class5_corrupt_or_non_ct_phase_is_refused(damage, tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    target = cohort / "images" / "P004" / "delayed.nii.gz"
    damage(target)
    if damage is _flip_one_bit_inside:
        with pytest.raises((OSError, EOFError, gzip.BadGzipFile, Exception)):
            gzip.decompress(target.read_bytes())  # the planted damage is real
    assert_refused(cli("check", str(cohort), "--quiet", cwd=tmp_path), "P004", "delayed")


# --------------------------------------------------------------------------- class 6
def test_class6_dicom_series_with_a_missing_slice_is_refused(tmp_path: Path) -> None:
    if not REAL_DICOM.is_dir():
        pytest.skip(f"real DICOM sample not found at {REAL_DICOM}")
    cohort = cohort_of(tmp_path, n=6)
    folder = cohort / "images" / "P000"
    for phase in ("arterial", "portal", "delayed"):
        (folder / f"{phase}.nii.gz").unlink()
        shutil.copytree(REAL_DICOM, folder / phase)
    reader = sitk.ImageSeriesReader()
    reference = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(folder / "portal")))
    shape = sitk.GetArrayFromImage(reference).shape
    liver = np.zeros(shape, np.uint8)
    liver[4:16, 150:350, 150:350] = 1
    tumour = np.zeros(shape, np.uint8)
    tumour[8:12, 230:270, 230:270] = 1
    for name, array in [("liver", liver)] + [(f"{p}_tumour", tumour) for p in ("arterial", "portal", "delayed")]:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(reference)
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    assert cli("check", str(cohort), "--quiet", cwd=tmp_path).returncode == 0  # the intact series passes
    slices = sorted(reader.GetGDCMSeriesFileNames(str(folder / "portal")))
    Path(slices[len(slices) // 2]).unlink()
    outcome = cli("check", str(cohort), "--quiet", cwd=tmp_path)
    assert_refused(outcome, "P000", "portal")
    assert "slice" in outcome.text.lower()


# --------------------------------------------------------------------------- class 7
@pytest.mark.parametrize("case", ["only_train_split", "os_time_1e300", "header_only", "no_train_events"])
def test_class7_cohort_train_cannot_use_is_refused_by_check(case: str, tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    named = "split"
    if case == "only_train_split":
        rewrite_csv(cohort, lambda t: t.assign(split="train"))
    elif case == "os_time_1e300":
        edit_cohort_csv(cohort, "P003", os_time_days="1e300", rfs_time_days="100")
        named = "os_time_days"
    elif case == "header_only":
        rewrite_csv(cohort, lambda t: t.iloc[0:0])
        named = "cohort.csv"
    else:
        rewrite_csv(cohort, lambda t: t.assign(os_event=np.where(t["split"] == "train", "0", t["os_event"]),
                                               rfs_event=np.where(t["split"] == "train", "0", t["rfs_event"])))  # fmt: skip
        named = "train"
    assert_refused(cli("check", str(cohort), "--quiet", cwd=tmp_path), named)


def test_class7_failed_train_leaves_no_run_folder(tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    rewrite_csv(cohort, lambda t: t.assign(split="train"))
    run = tmp_path / "runs" / "never"
    outcome = cli("train", "--run-dir", str(run), "--quiet", *tiny_sets(cohort, tmp_path), cwd=tmp_path)
    assert_refused(outcome, "split")
    assert not run.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --------------------------------------------------------------------------- class 8
def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_class8_preprocess_workers_die_with_their_parent(sig: signal.Signals, tmp_path: Path) -> None:
    pytest.importorskip("psutil")
    cohort = cohort_of(tmp_path, n=24, shape_zyx=(40, 96, 96))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    parent = subprocess.Popen(
        [sys.executable, "-c", "from hcc_exp.cli import main; main()", "preprocess", str(cohort),
         str(tmp_path / "cache"), "--quiet", "--set", "preprocess.workers=2"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    children: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and parent.poll() is None:
        children = _descendants(parent.pid)
        if len(children) >= 2:
            break
        time.sleep(0.2)
    if parent.poll() is not None:
        pytest.skip("preprocessing finished before its workers could be observed")
    time.sleep(1.0)
    children = _descendants(parent.pid) or children
    parent.send_signal(sig)
    parent.wait(timeout=60)
    deadline = time.monotonic() + 20
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(children) == [], "worker processes outlived their parent"


# --------------------------------------------------------------------------- class 9
def test_class9_run_dir_that_is_a_file(tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    target = tmp_path / "run-is-a-file"
    target.write_text("keep me\n")
    outcome = cli("train", "--run-dir", str(target), "--quiet", *tiny_sets(cohort, tmp_path), cwd=tmp_path)
    assert_refused(outcome, "run-is-a-file")
    assert target.read_text() == "keep me\n"


@pytest.mark.skipif(os.geteuid() == 0 and sys.platform == "linux", reason="root ignores folder permissions")
def test_class9_output_folder_not_writable(tmp_path: Path) -> None:  # pragma: no cover - CI runs as root
    cohort = cohort_of(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert_refused(cli("preprocess", str(cohort), str(locked / "cache"), "--quiet", cwd=tmp_path), "locked")


# --------------------------------------------------------------------------- class 10
@pytest.mark.parametrize(
    "key,value",
    [("preprocess.spacing_mm", "[0,2,2]"), ("preprocess.spacing_mm", "[-1,2,2]"), ("preprocess.crop_size_vox", "[0,48,48]"),
     ("preprocess.margin_mm", "-2"), ("trainer.batch_size", "0")],
)  # fmt: skip
def test_class10_impossible_settings_refused_by_key(key: str, value: str, tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    outcome = cli("preprocess", str(cohort), str(tmp_path / "cache"), "--quiet", "--set", f"{key}={value}", cwd=tmp_path)
    assert_refused(outcome, key)
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- class 11
def test_class11_patient_called_na_is_a_patient(tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    (cohort / "images" / "P005").rename(cohort / "images" / "NA")
    rewrite_csv(cohort, lambda t: t.assign(patient_id=t["patient_id"].replace("P005", "NA")))
    outcome = cli("check", str(cohort), "--quiet", cwd=tmp_path)
    assert outcome.returncode == 0, outcome.text
    assert "6" in outcome.text


def test_class11_predict_cohort_with_a_failing_patient_exits_non_zero(tiny_run, tmp_path: Path) -> None:
    run, cohort, _ = tiny_run
    copy = tmp_path / "cohort"
    shutil.copytree(cohort, copy)
    (copy / "images" / "P007" / "arterial.nii.gz").unlink()
    outcome = cli("predict", str(run / "checkpoints" / "best.ckpt"), "--cohort", str(copy),
                  "--out", str(tmp_path / "pred"), cwd=tmp_path)  # fmt: skip
    assert outcome.returncode == 2, outcome.text
    assert "P007" in outcome.text and "Traceback" not in outcome.stderr


def test_class11_join_not_a_url_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "join.yaml"
    spec.write_text(
        "name: join\nmethod: grid\nmetric: {name: internal/os/c_index, goal: maximize}\nbase: null\n"
        "seeds: [0]\narms: [{name: full, set: {}}]\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    assert_refused(cli("sweep", str(spec), "--join", "not-a-url", cwd=work), "not-a-url")
    assert list(work.iterdir()) == []


def test_class11_imported_cohort_folder_follows_the_umask(tmp_path: Path) -> None:
    src = cohort_of(tmp_path)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "clinical: cohort.csv\nphases: {arterial: arterial, portal: portal, delayed: delayed}\n"
        "masks: {tumour: '{phase}_tumour', liver: liver}\n"
    )
    shutil.move(str(src / "images"), str(tmp_path / "flat"))
    for patient in (tmp_path / "flat").iterdir():
        shutil.move(str(patient), str(src / patient.name))
    outcome = cli("import", str(src), str(tmp_path / "imported"), "--mapping", str(mapping), "--quiet", cwd=tmp_path)
    assert outcome.returncode == 0, outcome.text
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "imported").stat().st_mode) == 0o777 & ~umask


def test_class11_extra_columns_stay_out_of_the_cache(tmp_path: Path) -> None:
    cohort = cohort_of(tmp_path)
    rewrite_csv(cohort, lambda t: t.assign(patient_name=[f"Name {i}" for i in range(len(t))]))
    outcome = cli("preprocess", str(cohort), str(tmp_path / "cache"), "--quiet", cwd=tmp_path)
    assert outcome.returncode == 0, outcome.text
    labels = list((tmp_path / "cache").rglob("labels.csv"))
    assert labels, "no labels.csv in the cache"
    for path in labels:
        text = path.read_text()
        assert "patient_name" not in text and "Name 1" not in text
