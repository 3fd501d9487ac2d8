"""The forecasting LightningModule: :class:`ForecastModule`.

It takes a built forecaster (LightningCLI ``--model.net``), trains it with the MSE on the normalised
scale (the z-score of the training rows), and logs ``val/loss``, ``val/mse``, ``val/mae``,
``test/mse``, ``test/mae``.

Metrics are computed as the papers compute them: the mean of the squared (absolute) error over every
test window, every horizon step and every target channel, accumulated exactly over batches (sums and
counts, so a last partial batch weighs by its size). Every test window is scored: the test loader
does not drop its last partial batch (``drop_last=False``). The official PatchTST code and older
Time-Series-Library versions used ``drop_last=True`` for the test loader, which leaves out up to
``batch_size - 1`` windows at the end of the test split, so their numbers are over slightly fewer,
earlier windows. On several devices Lightning's distributed sampler pads the last batch with repeated
windows: test on one device for exact numbers.

With ``features="MS"`` the loss and metrics use only the target channel (the last one), as the
reference does (``f_dim = -1``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from longseq.apps.timeseries.checkpoint import CHECKPOINT_KEY, DataInfo, model_entry
from longseq.apps.timeseries.models import Forecaster
from longseq.apps.timeseries.schedules import LrSchedule, build_scheduler

__all__ = ["ForecastModule"]


class ForecastModule(LightningModule):
    """Trains and evaluates a :class:`~longseq.apps.timeseries.models.Forecaster`.

    Args:
        net: the forecaster (its ``seq_len``/``pred_len``/``enc_in`` must match the data).
        learning_rate: Adam's (base or, for ``TST``, maximum) rate.
        lradj: ``"type1"``, ``"type3"``, ``"constant"`` or ``"TST"`` (:mod:`~longseq.apps.timeseries.schedules`).
        pct_start: warm-up share of ``TST``.
        weight_decay: Adam's weight decay (0 in the references).
        features: ``"M"``, ``"S"`` or ``"MS"``; linked from the data module by the CLI. None: take it
            from the attached data module.
    """

    def __init__(
        self,
        net: Forecaster,
        learning_rate: float = 1e-4,
        lradj: LrSchedule = "type1",
        pct_start: float = 0.3,
        weight_decay: float = 0.0,
        features: Literal["M", "S", "MS"] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, Forecaster):
            raise TypeError(f"net must be a longseq Forecaster, got {type(net).__name__}")
        if learning_rate <= 0 or weight_decay < 0:
            raise ValueError(f"need learning_rate > 0 and weight_decay >= 0, got {learning_rate}, {weight_decay}")
        if features not in (None, "M", "S", "MS"):
            raise ValueError(f"features must be 'M', 'S', 'MS' or None, got {features!r}")
        if lradj not in ("type1", "type3", "constant", "TST"):
            raise ValueError(f"lradj must be 'type1', 'type3', 'constant' or 'TST', got {lradj!r}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.learning_rate, self.lradj, self.pct_start, self.weight_decay = (
            learning_rate,
            lradj,
            pct_start,
            weight_decay,
        )
        self.features = features
        self.data_info: DataInfo | None = None
        self.val_mse, self.val_mae = MeanSquaredError(), MeanAbsoluteError()
        self.test_mse, self.test_mae = MeanSquaredError(), MeanAbsoluteError()

    # ------------------------------------------------------------------ wiring to the data
    def setup(self, stage: str) -> None:
        """Check the model against the attached data module and remember its :class:`DataInfo`."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        dm.setup(stage)
        net = self.net
        want = {"seq_len": dm.seq_len, "pred_len": dm.pred_len, "enc_in": dm.n_channels}
        got = {"seq_len": net.seq_len, "pred_len": net.pred_len, "enc_in": net.enc_in}
        if net.label_len:
            want["label_len"], got["label_len"] = dm.label_len, net.label_len
        if want != got:
            raise ValueError(f"model {type(net).__name__} has {got} but the data has {want}; make them agree")
        marks = dm.n_time_features
        n_time = getattr(net.config, "n_time_features", None)
        if (net.uses_x_mark or net.uses_y_mark) and n_time != marks:
            raise ValueError(
                f"model expects n_time_features={n_time} calendar columns, the data gives {marks} "
                f"(freq={dm.time_freq!r}, timeenc={dm.timeenc})"
            )
        if self.features is None:
            self.features = dm.features
        elif self.features != dm.features:
            raise ValueError(f"module features {self.features!r} differ from the data's {dm.features!r}")
        if net.n_outputs not in (dm.n_channels, dm.n_targets):
            raise ValueError(f"model predicts {net.n_outputs} channels; the data has {dm.n_channels} ({dm.features})")
        self.data_info = DataInfo.from_datamodule(dm)

    # ------------------------------------------------------------------ forward and loss
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The forecast (B, H, n_outputs) for a batch of windows."""
        return self.net(batch["x"], batch.get("x_mark"), batch.get("y_mark"))

    def _pair(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prediction, target)`` on the channels that count (all, or the target for ``MS``)."""
        pred = self(batch)
        target = batch["y"][:, -self.net.pred_len :]  # (B, H, C)
        if self.features == "MS":
            target = target[..., -1:]
            if pred.shape[-1] != 1:
                pred = pred[..., -1:]
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        return pred, target

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred, target = self._pair(batch)
        loss = torch.nn.functional.mse_loss(pred, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=target.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        # fresh states in this loop's grad mode (validate() runs under inference mode, fit's validation not)
        self.val_mse.reset()
        self.val_mae.reset()

    def on_test_epoch_start(self) -> None:
        self.test_mse.reset()
        self.test_mae.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred, target = self._pair(batch)
        pred, target = pred.reshape(-1), target.reshape(-1)  # every window, step and channel
        self.val_mse.update(pred, target)
        self.val_mae.update(pred, target)
        self.log("val/loss", self.val_mse, prog_bar=True)
        self.log("val/mse", self.val_mse)
        self.log("val/mae", self.val_mae)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred, target = self._pair(batch)
        pred, target = pred.reshape(-1), target.reshape(-1)  # every window, step and channel
        self.test_mse.update(pred, target)
        self.test_mae.update(pred, target)
        self.log("test/mse", self.test_mse)
        self.log("test/mae", self.test_mae)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Normalised ``prediction`` and ``target`` (B, H, channels) of each window."""
        pred, target = self._pair(batch)
        return {"prediction": pred, "target": target}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        total = int(self.trainer.estimated_stepping_batches) if self.lradj == "TST" else 0
        return {
            "optimizer": optimizer,
            "lr_scheduler": build_scheduler(optimizer, self.lradj, total_steps=total, pct_start=self.pct_start),
        }

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the model class, its config and the data info (plain data) for :func:`from_pretrained`."""
        checkpoint[CHECKPOINT_KEY] = model_entry(self.net, self.data_info)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        entry = checkpoint.get(CHECKPOINT_KEY) or {}
        if entry.get("data"):
            self.data_info = DataInfo(**entry["data"])
