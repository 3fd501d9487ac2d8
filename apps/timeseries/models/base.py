"""What every forecaster of this app shares: :class:`ForecasterConfig` and :class:`Forecaster`.

A forecaster maps a look-back window to a horizon::

    y_hat = model(x, x_mark, y_mark)   # x (B, L, C), x_mark (B, L, F), y_mark (B, label_len + H, F)
    y_hat.shape == (B, H, model.n_outputs)

``x_mark``/``y_mark`` are the calendar features of the input and decoder rows
(:func:`~longseq.apps.timeseries.data.time_features`); models that do not use them
(``uses_x_mark``/``uses_y_mark`` False) accept and ignore ``None``. The model never sees the future values:
a decoder's start tokens are the last ``label_len`` rows of ``x`` itself.

Each model is configured by a dataclass subclass of :class:`ForecasterConfig` (validated on
creation) and built as ``Model(config)``; ``save_pretrained``/``from_pretrained``
(:mod:`longseq.apps.timeseries.checkpoint`) store the class name, the config and the weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Forecaster", "ForecasterConfig"]


@dataclass
class ForecasterConfig:
    """Fields every forecaster has.

    Attributes:
        seq_len: look-back L.
        pred_len: horizon H.
        enc_in: input channels C (the official scripts' ``--enc_in``).
    """

    seq_len: int = 96
    pred_len: int = 96
    enc_in: int = 7

    def __post_init__(self) -> None:
        for name in ("seq_len", "pred_len", "enc_in"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be an int >= 1, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (for checkpoints and YAML)."""
        return dataclasses.asdict(self)


class Forecaster(nn.Module):
    """Base class: holds ``config``, checks inputs, and names the output channels.

    Subclasses implement :meth:`forecast` on validated input.
    """

    config_class: ClassVar[type[ForecasterConfig]] = ForecasterConfig
    #: Whether the model reads ``x_mark`` / ``y_mark`` (they must then be given); instances may override.
    uses_x_mark: bool = False
    uses_y_mark: bool = False

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @property
    def seq_len(self) -> int:
        """Look-back L."""
        return self.config.seq_len

    @property
    def pred_len(self) -> int:
        """Horizon H."""
        return self.config.pred_len

    @property
    def enc_in(self) -> int:
        """Input channels C."""
        return self.config.enc_in

    @property
    def n_outputs(self) -> int:
        """Channels of the forecast (C unless the model has its own ``c_out``)."""
        return getattr(self.config, "c_out", self.config.enc_in)

    @property
    def label_len(self) -> int:
        """Decoder start tokens taken from the end of ``x`` (0 for models without a decoder)."""
        return getattr(self.config, "label_len", 0)

    def forward(
        self, x: torch.Tensor, x_mark: torch.Tensor | None = None, y_mark: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forecast ``(B, H, n_outputs)`` from ``x`` (B, L, C) (and the calendar features if the model uses them)."""
        cfg = self.config
        if x.dim() != 3 or x.shape[1:] != (cfg.seq_len, cfg.enc_in):
            raise ValueError(
                f"{type(self).__name__} expects x of shape (B, seq_len={cfg.seq_len}, enc_in={cfg.enc_in}), "
                f"got {tuple(x.shape)}"
            )
        checks = (
            ("x_mark", x_mark, cfg.seq_len, self.uses_x_mark),
            ("y_mark", y_mark, self.label_len + cfg.pred_len, self.uses_y_mark),
        )
        for name, mark, length, used in checks:
            if used:
                if mark is None:
                    raise ValueError(f"{type(self).__name__} uses calendar features: pass {name}")
                if mark.dim() != 3 or mark.shape[0] != x.shape[0] or mark.shape[1] != length:
                    raise ValueError(f"{name} must be (B={x.shape[0]}, {length}, F), got {tuple(mark.shape)}")
        return self.forecast(x, x_mark, y_mark)

    def forecast(
        self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"seq_len={self.seq_len}, pred_len={self.pred_len}, enc_in={self.enc_in}"
