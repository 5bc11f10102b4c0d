"""TrackingCallback forwards each epoch's metrics once, including those computed at validation epoch end."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from hcc_exp.tracking import Tracker, TrackingCallback


class _Regression(pl.LightningModule):
    """y = 2x; logs a per-step loss and an epoch-end metric like the C-index of the real module."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self._val_errors: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        error = (self.layer(x) - y).abs()
        self._val_errors.append(error)
        self.log("val/loss", error.pow(2).mean(), on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        # Computed over the whole epoch, after the callbacks' on_validation_epoch_end.
        self.log("val/mae_epoch", torch.cat(self._val_errors).mean())
        self._val_errors.clear()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_logs_epoch_metrics_once_per_epoch(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, generator=generator)
    loader = DataLoader(TensorDataset(x, 2 * x), batch_size=8)
    tracker = Tracker()
    tracker.start(run_id="cb", run_dir=tmp_path, config={})
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=2,
        callbacks=[TrackingCallback(tracker)],
    )
    trainer.fit(_Regression(), loader, loader)
    tracker.finish()

    rows = [json.loads(line) for line in (tmp_path / "tracking" / "history.jsonl").read_text().splitlines()]
    by_epoch: dict[int, dict] = {}
    for row in rows:
        for key in row:
            if key not in ("step", "time"):
                assert key not in by_epoch.get(row["step"], {}), f"{key} sent twice for epoch {row['step']}"
        by_epoch.setdefault(row["step"], {}).update(row)
    assert sorted(by_epoch) == [0, 1, 2]  # the sanity check is not an epoch
    for epoch in range(3):
        assert {"train/loss", "val/loss", "val/mae_epoch"} <= set(by_epoch[epoch])
    # Training on y = 2x reduces the validation loss.
    assert by_epoch[2]["val/loss"] < by_epoch[0]["val/loss"]
