"""Callbacks of the genomics app.

* :class:`SequenceLengthWarmup`: HyenaDNA's sequence-length warm-up (window doubles from
  ``start_window`` every ``epochs_per_stage`` epochs up to the data module's window, batch size scaled
  so tokens per batch stay constant).
* :class:`ExportPretrained`: writes :meth:`~longseq.apps.genomics.module.GenomicsModule.save_pretrained`
  at the end of ``fit``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["ExportPretrained", "SequenceLengthWarmup"]


class SequenceLengthWarmup(Callback):
    """HyenaDNA's sequence-length warm-up: train on windows of ``start_window``, doubled every
    ``epochs_per_stage`` epochs until the data module's ``window``; with ``scale_batch_size`` the batch
    size grows as the window shrinks (``batch * window / current``, so tokens per batch stay constant).

    Needs a data module with ``set_window(window, batch_size)``, ``target_window`` and
    ``base_batch_size`` (:class:`~longseq.apps.genomics.datamodule.GenomeLMDataModule`); sets the
    trainer to reload the training DataLoader every epoch. Validation keeps the full window.
    """

    def __init__(
        self,
        start_window: int = 64,
        epochs_per_stage: int = 1,
        scale_batch_size: bool = True,
        max_batch_size: int | None = None,
    ) -> None:
        if start_window < 1 or epochs_per_stage < 1:
            raise ValueError(f"start_window and epochs_per_stage must be >= 1, got {start_window}, {epochs_per_stage}")
        self.start_window, self.epochs_per_stage = start_window, epochs_per_stage
        self.scale_batch_size, self.max_batch_size = scale_batch_size, max_batch_size
        self._dm: Any = None

    def schedule(self, epoch: int, target_window: int, base_batch_size: int) -> tuple[int, int]:
        """``(window, batch size)`` of ``epoch``."""
        window = min(target_window, self.start_window * 2 ** (epoch // self.epochs_per_stage))
        batch = base_batch_size * target_window // window if self.scale_batch_size else base_batch_size
        if self.max_batch_size is not None:
            batch = min(batch, self.max_batch_size)
        return window, max(1, batch)

    def _apply(self, epoch: int) -> None:
        dm = self._dm
        dm.set_window(*self.schedule(epoch, dm.target_window, dm.base_batch_size))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if dm is None or not all(hasattr(dm, a) for a in ("set_window", "target_window", "base_batch_size")):
            raise TypeError(
                "SequenceLengthWarmup needs a data module with set_window/target_window/base_batch_size "
                f"(GenomeLMDataModule), got {type(dm).__name__}"
            )
        self._dm = dm
        if not trainer.reload_dataloaders_every_n_epochs:
            trainer.reload_dataloaders_every_n_epochs = 1
        self._apply(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._dm is not None:
            self._apply(trainer.current_epoch + 1)


class ExportPretrained(Callback):
    """Write ``pl_module.save_pretrained(dirpath)`` at the end of ``fit`` (rank 0), so the pipelines
    (``longseq-genomics score|embed|classify --checkpoint DIRPATH``) can load the model. A relative
    ``dirpath`` is taken under the trainer's ``default_root_dir``."""

    def __init__(self, dirpath: str = "pretrained") -> None:
        self.dirpath = dirpath
        self.last_path: Path | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        path = Path(self.dirpath)
        if not path.is_absolute():
            path = Path(trainer.default_root_dir) / path
        self.last_path = pl_module.save_pretrained(path)
        print(f"saved the pretrained model to {self.last_path}")
