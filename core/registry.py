"""Name -> constructor registries with ``create_*`` factories (timm-style).

Mixers (the token-mixing layer of a ``Block``: attention, mamba, mamba2, hyena, ...) and whole models
are registered by name, so hybrids and app models are configuration::

    @register_mixer("attention")
    class Attention(nn.Module): ...

    mixer = create_mixer("attention", dim=256, num_heads=4)

    @register_model
    def hyena_dna_tiny(**overrides) -> nn.Module: ...

    model = create_model("hyena_dna_tiny", vocab_size=16)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["create_mixer", "create_model", "list_mixers", "list_models", "register_mixer", "register_model"]

T = TypeVar("T", bound=Callable[..., Any])

_MIXERS: dict[str, Callable[..., nn.Module]] = {}
_MODELS: dict[str, Callable[..., nn.Module]] = {}


def _register(table: dict[str, Callable[..., nn.Module]], kind: str, name: str, fn: T) -> T:
    if name in table and table[name] is not fn:
        raise ValueError(f"{kind} {name!r} is already registered (by {table[name].__module__})")
    table[name] = fn
    return fn


def _lookup(table: dict[str, Callable[..., nn.Module]], kind: str, name: str) -> Callable[..., nn.Module]:
    _import_builtins()
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r}; registered: {', '.join(sorted(table)) or '(none)'}") from None


def register_mixer(name: str) -> Callable[[T], T]:
    """Class/function decorator registering a mixer constructor under ``name``."""
    return lambda fn: _register(_MIXERS, "mixer", name, fn)


def create_mixer(name: str, **kwargs: Any) -> nn.Module:
    """Build the mixer registered as ``name`` with ``kwargs`` (``dim`` is always among them)."""
    return _lookup(_MIXERS, "mixer", name)(**kwargs)


def list_mixers() -> list[str]:
    """Sorted names of every registered mixer."""
    _import_builtins()
    return sorted(_MIXERS)


def register_model(fn: T) -> T:
    """Function decorator registering a model constructor under its function name."""
    return _register(_MODELS, "model", fn.__name__, fn)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the model registered as ``name``; keyword ``overrides`` replace config defaults."""
    return _lookup(_MODELS, "model", name)(**overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching the glob ``pattern``."""
    import fnmatch

    _import_builtins()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


#: Modules whose import registers the built-in mixers and models. A module that is not part of this
#: install (an optional app) is skipped; one that exists but fails to import raises.
BUILTIN_MODULES: tuple[str, ...] = (
    "longseq.core.attention.layer",
    "longseq.core.mixers.mamba",
    "longseq.core.mixers.mamba2",
    "longseq.core.mixers.hyena",
    "longseq.core.models",
)


def _import_builtins() -> None:
    import importlib
    import importlib.util

    for mod in BUILTIN_MODULES:
        try:
            present = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:  # its parent package is not in this install
            present = False
        if present:
            importlib.import_module(mod)
