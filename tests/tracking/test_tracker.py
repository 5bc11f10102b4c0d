"""Local tracker files, offline W&B runs read back from their .wandb file, the tracker factory."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hcc_exp.config import ExperimentConfig, TrackingConfig  # noqa: E402
from hcc_exp.tracking import (  # noqa: E402
    Tracker,
    TrackingError,
    WandbTracker,
    find_offline_runs,
    make_tracker,
    read_offline_run,
    sync_offline_runs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _png(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
    return path


def _checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * 256)
    return path


def _log_a_run(tracker: Tracker, run_dir: Path, tmp_path: Path) -> dict[str, float]:
    config = ExperimentConfig().to_flat_dict()
    tracker.start(
        run_id="0003-full-s1", run_dir=run_dir, config=config, group=None, job_type="train", tags=["git:abc1234"]
    )
    for epoch in range(3):
        tracker.log_metrics({"val/loss": 1.0 / (epoch + 1), "val/os_c_index": 0.5 + 0.1 * epoch}, step=epoch)
    tracker.log_images({"km/os": _png(tmp_path / "km.png")}, step=2)
    summary = {"internal/os/c_index": 0.71, "internal/mvi/f1": 0.64, "best_epoch": 2.0, "external/rfs/c_index": math.nan}
    tracker.log_summary(summary)
    tracker.log_checkpoint(_checkpoint(run_dir / "checkpoints" / "best.ckpt"), name="model-0003", metadata={"best_epoch": 2})
    tracker.log_table("predictions", pd.DataFrame({"patient_id": ["P1", "P2"], "os_risk": [0.1, 0.9]}))
    tracker.finish(exit_code=0)
    return summary


def test_local_tracker_writes_every_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tracker = Tracker(group="ablation", tags=["arm:full"])
    _log_a_run(tracker, run_dir, tmp_path)
    folder = run_dir / "tracking"

    record = json.loads((folder / "config.json").read_text())
    assert record["group"] == "ablation"  # the preset wins over start(group=None)
    assert record["tags"] == ["arm:full", "git:abc1234"]
    assert record["exit_code"] == 0 and record["finished"]
    assert record["config"]["optim.lr"] == pytest.approx(1e-3)
    assert record["config"]["model.dims"] == "3d"

    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [0, 1, 2]
    assert [row["val/loss"] for row in history] == pytest.approx([1.0, 0.5, 1 / 3])

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["internal/os/c_index"] == pytest.approx(0.71)
    assert summary["external/rfs/c_index"] is None  # NaN -> null (strict JSON)

    artifacts = json.loads((folder / "artifacts.json").read_text())
    assert artifacts["checkpoints"][0]["metadata"] == {"best_epoch": 2}
    assert artifacts["checkpoints"][0]["size_bytes"] == 256
    image = run_dir / artifacts["images"][0]["path"]
    assert image.name == "km-os_step2.png" and image.read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(run_dir / artifacts["tables"][0]["path"])
    assert list(table["patient_id"]) == ["P1", "P2"]


def test_tracker_refuses_misuse(tmp_path: Path) -> None:
    tracker = Tracker()
    with pytest.raises(TrackingError, match="not started"):
        tracker.log_metrics({"val/loss": 1.0})
    tracker.start(run_id="r", run_dir=tmp_path / "r", config={})
    with pytest.raises(TrackingError, match="metric 'val/loss' must be a number"):
        tracker.log_metrics({"val/loss": "high"})
    with pytest.raises(TrackingError, match=r"image 'cam'.*does not exist"):
        tracker.log_images({"cam": tmp_path / "missing.png"})
    with pytest.raises(TrackingError, match="already started"):
        tracker.start(run_id="r2", run_dir=tmp_path / "r2", config={})
    tracker.finish(1)
    tracker.finish(0)  # second finish is a no-op
    assert json.loads((tmp_path / "r" / "tracking" / "config.json").read_text())["exit_code"] == 1


def test_offline_wandb_run_holds_config_summary_images_and_model(tmp_path: Path, wandb_offline_env: Path) -> None:
    run_dir = tmp_path / "run"
    tracker = WandbTracker(project="hcc-exp-test", mode="offline", group="ablation", job_type="sweep", tags=["arm:full"])
    summary = _log_a_run(tracker, run_dir, tmp_path)

    runs = find_offline_runs(run_dir)
    assert len(runs) == 1 and runs[0].parent == run_dir / "wandb"
    run = read_offline_run(runs[0])

    # Config: flat dotted keys, exactly the resolved ExperimentConfig.
    assert run.config == ExperimentConfig().to_flat_dict()
    assert run.group == "ablation" and run.job_type == "sweep" and run.display_name == "0003-full-s1"
    assert run.tags == ["arm:full", "git:abc1234"]
    assert run.project == "hcc-exp-test"
    assert run.exit_code == 0

    # Summary: the final metrics with the same keys (W&B stores NaN as null).
    for key, value in summary.items():
        if math.isnan(value):
            assert run.summary[key] is None
        else:
            assert run.summary[key] == pytest.approx(value)

    # Per-epoch metrics against "epoch".
    epochs = [row for row in run.history if "val/loss" in row]
    assert [row["epoch"] for row in epochs] == [0, 1, 2]
    assert [row["val/os_c_index"] for row in epochs] == pytest.approx([0.5, 0.6, 0.7])

    # The image as a wandb.Image media file on disk.
    images = [f for f in run.files if f.startswith("media/images/")]
    assert len(images) == 1 and re.match(r"media/images/km/os_\d+_[0-9a-f]+\.png", images[0])
    assert (runs[0] / "files" / images[0]).read_bytes()[:4] == b"\x89PNG"
    assert run.summary["km/os"]["_type"] == "image-file"

    # The best checkpoint as a "model" artifact, the table as a W&B table.
    models = [a for a in run.artifacts if a["type"] == "model"]
    assert len(models) == 1
    assert set(models[0].pop("aliases")) == {"latest", "best"}
    assert models[0] == {"name": "model-0003", "type": "model", "metadata": {"best_epoch": 2}, "files": ["best.ckpt"]}
    assert run.summary["predictions"]["_type"] == "table-file"
    # The local record is written too.
    assert json.loads((run_dir / "tracking" / "summary.json").read_text())["internal/mvi/f1"] == pytest.approx(0.64)


def test_wandb_dir_can_be_a_shared_sweep_folder(tmp_path: Path, wandb_offline_env: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    tracker = WandbTracker(mode="offline", wandb_dir=sweep_dir, group="search")
    tracker.start(run_id="0000-search-s0", run_dir=sweep_dir / "runs" / "0000-search-s0", config={"optim.lr": 0.01})
    tracker.log_summary({"internal/os/c_index": 0.6})
    tracker.finish()
    (run,) = find_offline_runs(sweep_dir / "wandb")
    offline = read_offline_run(run)
    assert offline.group == "search" and offline.config == {"optim.lr": 0.01}
    assert offline.summary["internal/os/c_index"] == pytest.approx(0.6)


def test_make_tracker_picks_backend(monkeypatch: pytest.MonkeyPatch, wandb_offline_env: Path) -> None:
    assert type(make_tracker(TrackingConfig(wandb=False))) is Tracker
    assert type(make_tracker(TrackingConfig(wandb_mode="disabled"))) is Tracker
    tracker = make_tracker(TrackingConfig(), group="g", tags=["arm:x"], wandb_dir=Path("/tmp/x"))
    assert isinstance(tracker, WandbTracker) and tracker.wandb_dir == Path("/tmp/x")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert type(make_tracker(TrackingConfig(wandb_mode="online"))) is Tracker


def test_online_without_credentials_falls_back_to_offline(tmp_path: Path, monkeypatch, wandb_offline_env) -> None:
    from hcc_exp.tracking import resolve_wandb_mode

    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode("online") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("online") == "online"


def test_sync_needs_login(tmp_path: Path, wandb_offline_env: Path) -> None:
    assert sync_offline_runs(tmp_path) == []  # nothing to sync is not an error
    tracker = WandbTracker(mode="offline")
    tracker.start(run_id="r", run_dir=tmp_path / "r", config={})
    tracker.finish()
    with pytest.raises(TrackingError, match=r"not logged in to W&B.*wandb login"):
        sync_offline_runs(tmp_path)
    with pytest.raises(TrackingError, match="does not exist"):
        sync_offline_runs(tmp_path / "nope")


def test_only_tracking_imports_wandb() -> None:
    pattern = re.compile(r"^\s*(import wandb|from wandb\b)", re.MULTILINE)
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "hcc_exp").rglob("*.py")
        if "tracking" not in path.relative_to(REPO_ROOT / "hcc_exp").parts and pattern.search(path.read_text())
    ]
    assert offenders == []
