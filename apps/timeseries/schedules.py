"""Learning-rate schedules of the reference forecasting code (``utils/tools.py: adjust_learning_rate``).

The reference sets the rate *after* epoch ``e`` (1-based) for the next one; written per 0-based epoch
index ``i`` of the epoch being trained, with base rate ``lr``:

* ``"type1"`` (Informer, Autoformer, DLinear, Time-Series-Library): ``lr * 0.5 ** max(i - 1, 0)``
  (the first two epochs at ``lr``, then halved every epoch);
* ``"type3"`` (PatchTST's default): ``lr * 0.9 ** max(i - 3, 0)``;
* ``"constant"``: ``lr``;
* ``"TST"`` (PatchTST's scripts for the larger datasets): ``torch.optim.lr_scheduler.OneCycleLR`` with
  ``max_lr = lr`` and ``pct_start``, stepped every batch (cosine annealing, div_factor 25).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

__all__ = ["LR_SCHEDULES", "LrSchedule", "build_scheduler", "epoch_factor"]

LrSchedule = Literal["type1", "type3", "constant", "TST"]
LR_SCHEDULES: tuple[str, ...] = ("type1", "type3", "constant", "TST")


def epoch_factor(schedule: str, epoch: int) -> float:
    """Multiplier of the base rate for 0-based ``epoch`` under a per-epoch ``schedule``."""
    if schedule == "type1":
        return 0.5 ** max(epoch - 1, 0)
    if schedule == "type3":
        return 0.9 ** max(epoch - 3, 0)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"{schedule!r} is not a per-epoch schedule; expected 'type1', 'type3' or 'constant'")


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, *, total_steps: int, pct_start: float = 0.3
) -> dict[str, Any]:
    """A Lightning ``lr_scheduler`` config for ``schedule`` (see the module docstring).

    Args:
        optimizer: the optimizer (its ``lr`` is the base / maximum rate).
        schedule: one of :data:`LR_SCHEDULES`.
        total_steps: optimizer steps of the whole run (``TST`` only).
        pct_start: share of the steps spent warming up (``TST`` only).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")
    if schedule == "TST":
        if total_steps < 1 or not 0.0 < pct_start < 1.0:
            raise ValueError(f"TST needs total_steps >= 1 and 0 < pct_start < 1, got {total_steps}, {pct_start}")
        max_lr = [group["lr"] for group in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start
        )
        return {"scheduler": scheduler, "interval": "step"}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: epoch_factor(schedule, epoch))
    return {"scheduler": scheduler, "interval": "epoch"}
