"""Where the data lives: :func:`resolve_root`."""

from __future__ import annotations

import os
from pathlib import Path

from longseq.core.data.errors import DataError

__all__ = ["DEFAULT_ROOT", "ENV_VAR", "resolve_root"]

ENV_VAR = "LONGSEQ_DATA"
"""Environment variable naming the data root when none is given explicitly."""

DEFAULT_ROOT = "~/.cache/longseq"
"""Data root used when neither an explicit root nor ``$LONGSEQ_DATA`` is given."""


def resolve_root(root: str | Path | None = None, *, origin: str = "root argument") -> Path:
    """Return the data root as an absolute path.

    Order: the explicit ``root``, then the environment variable ``LONGSEQ_DATA``, then
    ``~/.cache/longseq``; ``~`` is expanded. An explicit or environment root must be an existing
    folder (a typo should not silently point at an empty place); the default folder need not exist
    yet (:func:`longseq.core.data.download` creates it).

    Args:
        root: explicit data root, or None.
        origin: how ``root`` was given, used in the error message (the CLI passes ``"--root"``).

    Raises:
        DataError: the explicit or environment root does not exist or is not a folder.
    """
    if root is not None and str(root) != "":
        path, source = Path(root), origin
    elif os.environ.get(ENV_VAR):
        path, source = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        return Path(DEFAULT_ROOT).expanduser().absolute()
    path = path.expanduser().absolute()
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DataError(
            f"data root {path} {state} (from {source}); expected a folder holding e.g. timeseries/ETTh1.csv"
        )
    return path
