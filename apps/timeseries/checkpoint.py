"""Checkpoints of forecasters: config + weights + what is needed to forecast a new CSV.

Everything stored is plain data (str, int, float, list, dict, tensors), so every file loads with
``torch.load(path, weights_only=True)``. Two files are understood:

* a Lightning checkpoint of :class:`~longseq.apps.timeseries.module.ForecastModule` (``*.ckpt``): the
  module writes a ``"longseq_forecaster"`` entry (model class, config, :class:`DataInfo`) beside
  Lightning's ``state_dict``;
* a :func:`save_pretrained` file: ``{"format": "longseq-forecaster", "model": ..., "config": ...,
  "data": ..., "state_dict": ...}``.

:func:`from_pretrained` reads either and returns ``(model, data_info)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from longseq.apps.timeseries.models import FORECASTERS, Forecaster

__all__ = ["CHECKPOINT_KEY", "FORMAT", "DataInfo", "from_pretrained", "model_entry", "save_pretrained"]

FORMAT = "longseq-forecaster"
CHECKPOINT_KEY = "longseq_forecaster"


@dataclass(frozen=True)
class DataInfo:
    """How the model's training data looked: enough to prepare a new series the same way.

    Attributes:
        columns: input channel names, target last (the model's channel order).
        target: the target column.
        features: ``"M"``, ``"S"`` or ``"MS"``.
        mean, scale: the training z-score per channel (empty lists when ``scale=False``).
        freq: frequency alias of the calendar features.
        timeenc: 1 scaled features, 0 integer fields.
        dataset: where the training data came from (name or path; informational).
    """

    columns: list[str]
    target: str
    features: str
    mean: list[float]
    scale: list[float]
    freq: str
    timeenc: int
    dataset: str = ""

    @property
    def scaled(self) -> bool:
        """Whether the model works on z-scored values."""
        return bool(self.mean)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_datamodule(cls, dm: Any) -> DataInfo:
        """Read a set-up :class:`~longseq.apps.timeseries.data.ForecastDataModule`."""
        dm.setup()
        scaler = dm.scaler
        return cls(
            columns=list(dm.columns),
            target=dm.table.target,
            features=dm.features,
            mean=[] if scaler is None else [float(v) for v in scaler.mean],
            scale=[] if scaler is None else [float(v) for v in scaler.scale],
            freq=dm.time_freq,
            timeenc=int(dm.timeenc),
            dataset=str(dm.dataset),
        )


def model_entry(model: Forecaster, data: DataInfo | None) -> dict[str, Any]:
    """The plain-data description of ``model`` (class name and config) and its data."""
    name = next((key for key, cls in FORECASTERS.items() if type(model) is cls), None)
    if name is None:
        raise TypeError(f"{type(model).__name__} is not a registered forecaster ({', '.join(FORECASTERS)})")
    return {"model": name, "config": model.config.to_dict(), "data": None if data is None else data.to_dict()}


def save_pretrained(model: Forecaster, path: str | Path, data: DataInfo | None = None) -> Path:
    """Write ``model`` (config + weights) and ``data`` to ``path`` (one file); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, **model_entry(model, data), "state_dict": state}, path)
    return path


def _build(entry: dict[str, Any]) -> Forecaster:
    name = entry.get("model")
    if name not in FORECASTERS:
        raise ValueError(f"checkpoint names model {name!r}; known: {', '.join(FORECASTERS)}")
    cls = FORECASTERS[name]
    return cls(cls.config_class(**entry["config"]))


def from_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Forecaster, DataInfo | None]:
    """Load a :func:`save_pretrained` file or a ForecastModule Lightning checkpoint (``weights_only=True``).

    Returns:
        ``(model in eval mode, data info or None)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is neither format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        entry, state = blob, blob["state_dict"]
    elif isinstance(blob, dict) and CHECKPOINT_KEY in blob:
        entry = blob[CHECKPOINT_KEY]
        state = {k[len("net.") :]: v for k, v in blob["state_dict"].items() if k.startswith("net.")}
    else:
        raise ValueError(
            f"{path} is not a longseq forecaster: expected a save_pretrained file or a ForecastModule checkpoint"
        )
    model = _build(entry)
    model.load_state_dict(state)
    data = None if entry.get("data") is None else DataInfo(**entry["data"])
    return model.eval(), data
