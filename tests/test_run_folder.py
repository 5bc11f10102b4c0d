"""The run-folder owner: path resolution of meta.json, readers, staged publishing, output-folder refusals."""

from __future__ import annotations

import doctest
import json
import os

import pandas as pd
import pytest

from hcc_exp import run_folder
from hcc_exp.errors import OutputFolderError, RunFolderError
from hcc_exp.run_folder import (
    RunFolder,
    StagedRunFolder,
    check_output_folder,
    iter_run_folders,
    resolve_recorded_path,
)


def test_doctests() -> None:
    result = doctest.testmod(run_folder)
    assert result.failed == 0 and result.attempted >= 1


def test_relative_paths_resolve_against_the_nearest_ancestor_holding_them(tmp_path, monkeypatch):
    project = tmp_path / "project"
    run = project / "runs" / "sweep" / "runs" / "0001"
    run.mkdir(parents=True)
    (project / "data" / "preprocessed").mkdir(parents=True)
    (project / "runs" / "sweep" / "data" / "preprocessed").mkdir(parents=True)  # nearer: wins
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data" / "preprocessed").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # the working directory's data/ must not shadow the run's
    assert resolve_recorded_path("data/preprocessed", run) == project / "runs" / "sweep" / "data" / "preprocessed"
    assert resolve_recorded_path("data/raw", run) == run_folder.Path("data/raw")  # nowhere: as written
    assert resolve_recorded_path(str(tmp_path / "abs"), run) == tmp_path / "abs"


def test_read_meta_resolves_recorded_paths_and_names_bad_files(tmp_path):
    (tmp_path / "cache").mkdir()
    run = RunFolder(tmp_path / "runs" / "r1")
    with pytest.raises(RunFolderError, match="not a run folder: meta.json missing"):
        run.read_meta()
    run.root.mkdir(parents=True)
    run.meta_json.write_text(json.dumps({"run_id": "r1", "cache_dir": "cache", "cohort_dir": "/somewhere/raw"}))
    meta = run.read_meta()
    assert meta == {"run_id": "r1", "cache_dir": str(tmp_path / "cache"), "cohort_dir": "/somewhere/raw"}
    assert run.cache_dir() == tmp_path / "cache"
    run.meta_json.write_text("{not json")
    with pytest.raises(RunFolderError, match="meta.json: cannot read JSON"):
        run.read_meta()
    run.meta_json.write_text("[1, 2]")
    with pytest.raises(RunFolderError, match="expected a JSON object"):
        run.read_meta()
    run.meta_json.write_text("{}")
    with pytest.raises(RunFolderError, match="no 'cache_dir' key"):
        run.cache_dir()


def test_predictions_keep_a_patient_called_na(tmp_path):
    run = RunFolder(tmp_path)
    run.write_csv(run.predictions_csv, pd.DataFrame({"patient_id": ["NA", "007"], "split": ["train", "internal"],
                                                     "os_risk": [0.5, float("nan")]}))
    frame = run.read_predictions()
    assert frame["patient_id"].tolist() == ["NA", "007"]
    assert frame["os_risk"].isna().tolist() == [False, True]
    with pytest.raises(RunFolderError, match=r"missing column\(s\) \['mvi_prob'\]"):
        run.read_predictions(("patient_id", "mvi_prob"))


def test_json_writes_are_atomic_and_keep_nan(tmp_path, monkeypatch):
    run = RunFolder(tmp_path)
    run.write_json(run.metrics_json, {"b": 1.0, "a": float("nan")})
    assert run.metrics_json.read_text() == '{\n  "a": NaN,\n  "b": 1.0\n}'

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        run.write_json(run.metrics_json, {"c": 2.0})
    assert json.loads(run.metrics_json.read_text().replace("NaN", "null")) == {"a": None, "b": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_iter_run_folders_skips_staging_and_non_runs(tmp_path):
    for name in ("0001-full-s0", ".0002-full-s1.staging-abcd1234", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "0001-full-s0" / "meta.json").write_text("{}")
    (tmp_path / ".0002-full-s1.staging-abcd1234" / "meta.json").write_text("{}")
    assert [run.name for run in iter_run_folders(tmp_path)] == ["0001-full-s0"]
    assert list(iter_run_folders(tmp_path / "missing")) == []


def test_a_staged_run_appears_only_when_published(tmp_path):
    target = tmp_path / "runs" / "r1"
    with StagedRunFolder(target) as staged:
        staged.stage.write_json(staged.stage.metrics_json, {"x": 1.0})
        staged.stage.write_text(staged.stage.best_checkpoint, "weights")
        assert not target.exists() and staged.stage.root.name.startswith(".r1.staging-")
        run = staged.publish()
    assert run.root == target and json.loads(run.metrics_json.read_text()) == {"x": 1.0}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r1"]


def test_a_failed_staged_run_leaves_nothing_and_an_old_run_untouched(tmp_path):
    target = tmp_path / "runs" / "r1"
    with pytest.raises(RuntimeError), StagedRunFolder(target) as staged:
        staged.stage.write_json(staged.stage.metrics_json, {"x": 1.0})
        (target / "tracking").mkdir(parents=True)  # what a tracker writes in the final folder
        raise RuntimeError("crash")
    assert not (tmp_path / "runs").exists()  # the parent it created is removed too

    old = RunFolder(target)
    old.write_json(old.metrics_json, {"old": 1.0})
    old.write_text(old.best_checkpoint, "old weights")
    old.write_json(old.evaluation_metrics_json, {"evaluated": 1.0})
    with pytest.raises(RuntimeError), StagedRunFolder(target) as staged:
        staged.stage.write_json(staged.stage.metrics_json, {"new": 1.0})
        raise RuntimeError("crash")
    assert json.loads(old.metrics_json.read_text()) == {"old": 1.0}
    with StagedRunFolder(target) as staged:
        staged.stage.write_json(staged.stage.metrics_json, {"new": 1.0})
        staged.stage.write_text(staged.stage.best_checkpoint, "new weights")
        staged.publish()
    assert json.loads(old.metrics_json.read_text()) == {"new": 1.0}
    assert old.best_checkpoint.read_text() == "new weights"
    assert json.loads(old.evaluation_metrics_json.read_text()) == {"evaluated": 1.0}  # another command's output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r1"]
    assert sorted(p.name for p in target.iterdir()) == ["checkpoints", "evaluation", "metrics.json"]


def test_output_folders_that_cannot_be_written_are_refused_without_creating_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        check_output_folder(blocker, "run folder")
    with pytest.raises(OutputFolderError, match=f"lies under the file {blocker}"):
        StagedRunFolder(blocker / "deeper" / "run")
    assert check_output_folder(tmp_path / "new" / "deep", "run folder") == tmp_path / "new" / "deep"
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent_is_refused(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(OutputFolderError, match="not writable"):
            StagedRunFolder(parent / "run")
    finally:
        parent.chmod(0o700)


def test_a_filesystem_refusal_while_creating_the_run_becomes_a_named_error(tmp_path, monkeypatch):
    """As root the permission bits do not stop a write; the refusal itself (EACCES, EROFS) is what is named."""
    real_mkdir = run_folder.Path.mkdir

    def refuse(self, *args, **kwargs):
        if ".staging-" in self.name:
            raise PermissionError(13, "Permission denied")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(run_folder.Path, "mkdir", refuse)
    with pytest.raises(OutputFolderError, match="cannot be written: Permission denied"):
        StagedRunFolder(tmp_path / "runs" / "r1")


def test_a_failure_mid_publish_leaves_the_old_run_as_it_was(tmp_path, monkeypatch):
    from hcc_exp.data import io

    target = tmp_path / "runs" / "r1"
    old = RunFolder(target)
    old.write_json(old.metrics_json, {"old": 1.0})
    old.write_text(old.best_checkpoint, "old weights")
    old.write_json(old.evaluation_metrics_json, {"evaluated": 1.0})
    before = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    real_replace = os.replace

    def replace(a, b):  # the last entry (meta.json, published last) cannot move in
        if os.path.basename(b) == "meta.json" and ".staging-" in os.fspath(a):
            raise OSError("disk gone")
        return real_replace(a, b)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"), StagedRunFolder(target) as staged:
        staged.stage.write_json(staged.stage.metrics_json, {"new": 1.0})
        staged.stage.write_text(staged.stage.best_checkpoint, "new weights")
        staged.stage.write_json(staged.stage.meta_json, {"run_id": "r1"})
        staged.publish()
    after = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before  # old metrics and weights back, evaluation kept, no meta.json
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r1"]  # staging removed
    assert not [p for p in target.iterdir() if p.name.startswith(".")]
