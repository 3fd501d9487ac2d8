"""Portable checkpoints of the genomics models: a folder with ``config.json`` + ``weights.pt``.

``config.json`` holds the model kind (``"lm"`` or ``"classifier"``), the full
:class:`~longseq.core.backbone.BackboneConfig` as plain JSON, the registry name the model came from
and, for classifiers, the class names. ``weights.pt`` is the ``state_dict`` saved with
``torch.save`` and read back with ``torch.load(..., weights_only=True)``: loading never runs
pickled code. Lightning ``.ckpt`` files written by this app's modules carry the same config under
the ``"longseq"`` key, so :func:`load_pretrained` reads either.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from longseq.core.backbone import BackboneConfig, SequenceBackbone
from longseq.core.models import LanguageModel

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "PretrainedInfo", "load_pretrained", "model_meta", "save_pretrained"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
FORMAT_VERSION = 1
ModelKind = Literal["lm", "classifier"]


@dataclasses.dataclass
class PretrainedInfo:
    """What :func:`load_pretrained` found besides the weights.

    Attributes:
        kind: ``"lm"`` (a :class:`LanguageModel`) or ``"classifier"`` (a :class:`SequenceBackbone` with a head).
        name: registry name the model was built from (informative).
        class_names: classifier class names, index = class.
        extra: any other entries of the config (training window, tokenizer, ...).
        source: the file or folder read.
    """

    kind: ModelKind
    name: str
    class_names: list[str]
    extra: dict[str, Any]
    source: str


def model_meta(
    model: nn.Module, *, name: str = "", class_names: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON-able description of ``model`` that :func:`load_pretrained` rebuilds it from."""
    if isinstance(model, LanguageModel):
        kind, cfg = "lm", model.cfg
        extra.setdefault("tie_embeddings", model.lm_head.proj.weight is model.backbone.embed.weight)
    elif isinstance(model, SequenceBackbone):
        kind, cfg = "classifier", model.cfg
        if cfg.num_classes < 1:
            raise ValueError("a SequenceBackbone saved as a classifier needs num_classes >= 1")
    else:
        raise TypeError(f"expected a LanguageModel or SequenceBackbone, got {type(model).__name__}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(cfg.num_classes)]
    if kind == "classifier" and len(names) != cfg.num_classes:
        raise ValueError(f"class_names has {len(names)} entries for {cfg.num_classes} classes")
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "backbone": dataclasses.asdict(cfg),
        "class_names": names if kind == "classifier" else [],
        "extra": extra,
    }


def save_pretrained(model: nn.Module, directory: str | Path, **meta: Any) -> Path:
    """Write ``config.json`` (see :func:`model_meta`, ``meta`` passed on) and ``weights.pt`` into ``directory``
    (created if needed); returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model_meta(model, **meta)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, directory / WEIGHTS_FILE)
    return directory


def _build(config: dict[str, Any], source: str) -> nn.Module:
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{source}: unsupported checkpoint format {config.get('format_version')!r}, expected 1")
    cfg = BackboneConfig(**config["backbone"])
    if config["kind"] == "lm":
        return LanguageModel(cfg, tie_embeddings=config.get("extra", {}).get("tie_embeddings", True))
    if config["kind"] == "classifier":
        return SequenceBackbone(cfg)
    raise ValueError(f"{source}: unknown model kind {config['kind']!r}; expected 'lm' or 'classifier'")


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, PretrainedInfo]:
    """Rebuild a model from a :func:`save_pretrained` folder (or its ``config.json``/``weights.pt``) or a
    Lightning ``.ckpt`` of this app; weights are read with ``weights_only=True``.

    Returns:
        ``(model in eval mode, info)``.

    Raises:
        FileNotFoundError: nothing at ``path`` or the folder lacks ``config.json``/``weights.pt``.
        ValueError: a ``.ckpt`` that was not written by a genomics module, or weights that do not fit.
    """
    path = Path(path).expanduser()
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if path.is_dir():
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{path} is not a pretrained folder: missing {', '.join(missing)} (written by save_pretrained)"
            )
        config = json.loads((path / CONFIG_FILE).read_text())
        state = torch.load(path / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    elif path.is_file():
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(ckpt, dict) or "longseq" not in ckpt or "state_dict" not in ckpt:
            raise ValueError(
                f"{path}: not a Lightning checkpoint of a genomics module (no 'longseq' model config); "
                "expected a .ckpt written by CausalLMModule/ClassificationModule or a save_pretrained folder"
            )
        config = ckpt["longseq"]
        prefix = "model."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    else:
        raise FileNotFoundError(f"no checkpoint at {path}; expected a save_pretrained folder or a Lightning .ckpt")
    model = _build(config, str(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match the config: {str(exc).splitlines()[0]}") from None
    info = PretrainedInfo(
        kind=config["kind"],
        name=config.get("name", ""),
        class_names=list(config.get("class_names", [])),
        extra=dict(config.get("extra", {})),
        source=str(path),
    )
    return model.eval(), info
