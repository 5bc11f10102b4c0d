"""train(config): complete run folder, reproducible metrics, loaders and checkpoint format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hcc_exp.config import build_config
from hcc_exp.data.datamodule import CachedPatientDataset, HccDataModule
from hcc_exp.training.train import train
from tests.conftest import tiny_run_overrides

SPLITS = ("train", "internal", "external")


def test_run_folder_is_complete(trained_run):
    run = trained_run.run_dir
    for name in ("config.yaml", "meta.json", "metrics.json", "predictions.csv", "logs/metrics.csv",
                 "checkpoints/best.ckpt", "checkpoints/risk_model.json"):
        assert (run / name).is_file(), name

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 2
    meta = json.loads((run / "meta.json").read_text())
    for key in ("git_commit", "cache_key", "input_hash", "cohort_dir", "cache_dir", "best_epoch", "finished"):
        assert key in meta, key

    predictions = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
    cohort = pd.read_csv(trained_run.cohort_dir / "cohort.csv", dtype={"patient_id": str})
    assert sorted(predictions["patient_id"]) == sorted(cohort["patient_id"])
    merged = predictions.merge(cohort[["patient_id", "split"]], on="patient_id", suffixes=("", "_cohort"))
    assert (merged["split"] == merged["split_cohort"]).all()
    assert np.isfinite(predictions[["os_risk", "rfs_risk", "mvi_prob"]].to_numpy()).all()
    assert predictions["mvi_prob"].between(0, 1).all()

    metrics = json.loads((run / "metrics.json").read_text())
    for split in SPLITS:
        for key in ("os/c_index", "rfs/c_index", "mvi/f1", "mvi/accuracy", "mvi/auc"):
            assert f"{split}/{key}" in metrics
    assert 0.0 <= metrics["train/os/c_index"] <= 1.0
    assert metrics["epochs_trained"] == 2

    log = pd.read_csv(run / "logs" / "metrics.csv")
    # DWA weights and every loss component are logged each epoch; DWA starts at 1.
    for column in ("weights/os", "weights/rfs", "weights/mvi", "train/loss_os", "train/loss_rfs",
                   "train/loss_mvi", "val/loss", "val/os_c_index"):
        assert column in log.columns, column
    assert log["weights/os"].dropna().iloc[0] == pytest.approx(1.0)


def test_checkpoint_loads_with_weights_only(trained_run):
    checkpoint = torch.load(trained_run.checkpoint, map_location="cpu", weights_only=True)
    assert "state_dict" in checkpoint
    config = checkpoint["hyper_parameters"]["config"]
    assert config["model"]["preset"] == "tiny"
    assert all(torch.is_tensor(v) for v in checkpoint["state_dict"].values())


def test_predictions_reproduce_from_checkpoint(trained_run):
    """The saved weights give back the run's own predictions (no hidden state outside the checkpoint)."""
    from hcc_exp.data.cache import PreprocessedCohort
    from hcc_exp.training.module import MultiTaskModule

    module = MultiTaskModule.load_from_checkpoint(trained_run.checkpoint)
    module.eval()
    meta = json.loads((trained_run.run_dir / "meta.json").read_text())
    cohort = PreprocessedCohort.open(meta["cache_dir"])
    predictions = pd.read_csv(trained_run.run_dir / "predictions.csv", dtype={"patient_id": str})
    pid = predictions["patient_id"].iloc[0]
    image, masks = cohort.load(pid)
    with torch.no_grad():
        out = module(torch.from_numpy(image.astype(np.float32))[None], torch.from_numpy(masks)[None])
    assert float(out.os_risk[0]) == pytest.approx(predictions["os_risk"].iloc[0], rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from tests.factories import write_tiny_cohort

    root = tmp_path_factory.mktemp("train-unit")
    cohort = write_tiny_cohort(root / "cohort", n_patients=9, shape_zyx=(16, 32, 32))
    return root, cohort


def _config(root, cohort, **extra):
    overrides = tiny_run_overrides(root, cohort)
    overrides.update(extra)
    return build_config({}, overrides)


def test_same_seed_same_metrics(tiny_setup, tmp_path):
    root, cohort = tiny_setup
    config = _config(root, cohort, **{"trainer.max_epochs": 2, "augment_copies": 2})
    first = train(config, run_dir=tmp_path / "a", progress=False).metrics
    second = train(config, run_dir=tmp_path / "b", progress=False).metrics
    # What the DVC train stage outputs is byte-identical for identical inputs, wherever the run folder is.
    for name in ("checkpoints/best.ckpt", "checkpoints/risk_model.json", "predictions.csv", "config.yaml",
                 "logs/metrics.csv", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for key, value in first.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(second[key]), key
        else:
            assert second[key] == pytest.approx(value, abs=1e-6), key


def test_train_loader_yields_copies_of_cached_crops(tiny_setup):
    root, cohort_dir = tiny_setup
    config = _config(root, cohort_dir, **{"augment_copies": 3, "augment.rotation_range_deg": 30.0})
    from hcc_exp.training.train import prepare_cohort

    cohort = prepare_cohort(config, progress=False)
    datamodule = HccDataModule(cohort, config)
    datamodule.setup()
    n_train = len(cohort.patient_ids("train"))
    assert len(datamodule.datasets["train_augmented"]) == 3 * n_train
    samples = sum(batch["image"].shape[0] for batch in datamodule.train_dataloader())
    # drop_last keeps every batch >= 2 for BatchNorm and the Cox loss
    assert samples == (3 * n_train // config.trainer.batch_size) * config.trainer.batch_size or samples == 3 * n_train

    augmented = datamodule.datasets["train_augmented"]
    plain = datamodule.datasets["train"]
    # The loader only reads cached crops: copies of one patient are identical here, each gets its own
    # rotation / jitter per batch on the model's device (tests/training/test_datamodule.py).
    first, second = augmented[0], augmented[n_train]
    assert torch.equal(first["image"], second["image"])
    image, masks = cohort.load(plain.patient_ids[0])
    np.testing.assert_array_equal(plain[0]["image"].numpy(), image.astype(np.float32))
    np.testing.assert_array_equal(plain[0]["masks"].numpy(), masks)
    internal = datamodule.datasets["internal"]
    assert internal.augment is None and internal.copies == 1
    # jitter stays within the configured days and keeps RFS <= OS
    labels = augmented.labels
    for item in range(len(augmented)):
        sample = augmented[item]
        index = int(sample["index"])
        assert abs(float(sample["os_time"]) - labels.os_time_days[index]) <= config.augment.time_jitter_days
        assert float(sample["rfs_time"]) <= float(sample["os_time"])


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny_setup):
    root, cohort_dir = tiny_setup
    config = _config(root, cohort_dir)
    from hcc_exp.training.train import prepare_cohort

    cohort = prepare_cohort(config, progress=False)
    ids = cohort.patient_ids("train")
    make = lambda: CachedPatientDataset(cohort, ids, config.phases, augment=config.augment, copies=2, seed=5)  # noqa: E731
    a, b = make(), make()
    assert torch.equal(a[1]["image"], b[1]["image"])
    b.set_epoch(1)
    assert not torch.equal(a[1]["image"], b[1]["image"])


def test_a_passed_validation_is_remembered_until_the_cohort_changes(tmp_path, monkeypatch):
    from hcc_exp.data import validate
    from hcc_exp.errors import CohortValidationError
    from hcc_exp.training.train import prepare_cohort, validation_memo_dir
    from tests.factories import write_tiny_cohort

    monkeypatch.delenv("HCC_EXP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=6, shape_zyx=(12, 24, 24))
    config = _config(tmp_path, cohort, **{"data.cache_dir": str(tmp_path / "cache")})
    calls = []
    real = validate.validate_cohort
    monkeypatch.setattr(validate, "validate_cohort", lambda *a, **k: calls.append(1) or real(*a, **k))

    first = prepare_cohort(config, progress=False)
    second = prepare_cohort(config, progress=False)
    assert len(calls) == 1 and first.root == second.root
    assert validation_memo_dir() == tmp_path / "xdg" / "hcc-exp" / "validated"
    assert len(list(validation_memo_dir().iterdir())) == 1
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"current.json", first.root.name}  # DVC output untouched

    # Any change to the cohort's bytes validates again, and an invalid cohort still fails.
    table = pd.read_csv(cohort / "cohort.csv", dtype={"patient_id": str})
    table.loc[0, "os_event"] = 7
    table.to_csv(cohort / "cohort.csv", index=False)
    with pytest.raises(CohortValidationError, match="os_event"):
        prepare_cohort(config, progress=False)
    assert len(calls) == 2


def test_validation_memo_dir_prefers_hcc_exp_cache_dir(tmp_path, monkeypatch):
    from hcc_exp.training.train import validation_memo_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HCC_EXP_CACHE_DIR", str(tmp_path / "mine"))
    assert validation_memo_dir() == tmp_path / "mine" / "validated"
    monkeypatch.delenv("HCC_EXP_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert validation_memo_dir() == Path.home() / ".cache" / "hcc-exp" / "validated"


# --------------------------------------------------------------------------- run folder contract
def test_checkpoint_holds_no_machine_path_and_is_byte_stable(trained_run):
    """checkpoints/ is a DVC output: no absolute path (ModelCheckpoint state) may be in it."""
    raw = trained_run.checkpoint.read_bytes()
    # The stored config keeps the data paths as the user gave them (relative in params.yaml); the
    # run folder's own location (and its staging sibling) must not be in the file.
    for where in (str(trained_run.run_dir), str(trained_run.run_dir.resolve()), ".staging-"):
        assert where.encode() not in raw, where
    checkpoint = torch.load(trained_run.checkpoint, map_location="cpu", weights_only=True)
    assert not any(key.startswith("ModelCheckpoint") for key in checkpoint.get("callbacks", {}))
    assert any(key.startswith("EarlyStopping") for key in checkpoint["callbacks"])
    # The zip archive is named "archive", not after a temporary file.
    assert b"archive/data.pkl" in raw
    assert not list(trained_run.checkpoint.parent.glob(".*.tmp"))


def test_portable_checkpoint_drops_only_model_checkpoint_state():
    from hcc_exp.training.train import portable_checkpoint

    payload = {"state_dict": {}, "callbacks": {"ModelCheckpoint{'monitor': 'val/loss'}": {"dirpath": "/abs"},
                                                "EarlyStopping{'monitor': 'val/loss'}": {"wait_count": 1}}}
    assert portable_checkpoint(payload)["callbacks"] == {"EarlyStopping{'monitor': 'val/loss'}": {"wait_count": 1}}
    assert "ModelCheckpoint{'monitor': 'val/loss'}" in payload["callbacks"]  # input untouched


def test_atomic_checkpoint_io_leaves_the_previous_file_when_writing_fails(tmp_path, monkeypatch):
    from hcc_exp.training.train import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "best.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"epoch": 2, "state_dict": {"w": torch.zeros(3)}}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["best.ckpt"]
    assert torch.load(target, weights_only=True)["epoch"] == 1


def test_a_failed_run_leaves_no_run_folder(tiny_setup, tmp_path, monkeypatch):
    from hcc_exp.training import train as train_module

    root, cohort = tiny_setup
    config = _config(root, cohort, **{"trainer.max_epochs": 1})

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in the middle of training")

    monkeypatch.setattr(train_module, "_fit_and_predict", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, run_dir=tmp_path / "runs" / "crashed", progress=False)
    # neither the run folder nor its staging sibling, nor the runs/ folder the run created
    assert not (tmp_path / "runs").exists()


def test_a_failed_rerun_keeps_the_previous_run_folder(tiny_setup, tmp_path, monkeypatch):
    from hcc_exp.training import train as train_module

    root, cohort = tiny_setup
    config = _config(root, cohort, **{"trainer.max_epochs": 1})
    run_dir = tmp_path / "runs" / "demo"
    first = train(config, run_dir=run_dir, progress=False)
    (run_dir / "evaluation").mkdir()
    (run_dir / "evaluation" / "metrics.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    monkeypatch.setattr(train_module, "_fit_and_predict", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        train(config, run_dir=run_dir, progress=False)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert first.run_dir == run_dir and (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["demo"]
    monkeypatch.undo()
    # A successful re-run replaces the run's files and keeps what other commands wrote beside them.
    again = train(config, run_dir=run_dir, progress=False)
    assert again.run_dir == run_dir and (run_dir / "evaluation" / "metrics.json").read_text() == "{}"
    assert json.loads((run_dir / "meta.json").read_text())["run_id"] == "demo"
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["demo"]


def test_bad_run_dir_and_missing_cohort_are_named_before_any_work(tiny_setup, tmp_path):
    from hcc_exp.errors import MissingFileError, OutputFolderError

    root, cohort = tiny_setup
    config = _config(root, cohort)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        train(config, run_dir=blocker, progress=False)
    with pytest.raises(OutputFolderError, match="lies under the file"):
        train(config, run_dir=blocker / "run", progress=False)
    assert blocker.read_text() == "x"
    missing = _config(root, tmp_path / "no-such-cohort")
    with pytest.raises(MissingFileError, match="cohort folder does not exist"):
        train(missing, run_dir=tmp_path / "runs" / "r", progress=False)
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_cli_train_refusals_exit_2_without_traceback(tiny_setup, tmp_path):
    import subprocess
    import sys

    root, cohort = tiny_setup
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sets = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in tiny_run_overrides(root, cohort).items()]
    cases = {
        "is a file": ["--run-dir", str(blocker)],
        "cohort folder does not exist": ["--run-dir", str(tmp_path / "r"), "--set", f"data.cohort_dir={tmp_path / 'nope'}"],
    }
    for expected, extra in cases.items():
        args = ["train", "--quiet", *[a for s in sets for a in ("--set", s)], *extra]
        result = subprocess.run([sys.executable, "-c", "from hcc_exp.cli import main; main()", *args],
                                capture_output=True, text=True, check=False)
        message = " ".join(result.stderr.split())
        assert result.returncode == 2, result.stderr
        assert expected in message and "Traceback" not in message
