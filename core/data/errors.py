"""Exceptions raised by the dataset registry, verification and download."""

from __future__ import annotations

__all__ = ["CorruptDataError", "DataError", "MissingDataError"]


class DataError(Exception):
    """Base class of every data-registry error; its message is one line meant for the user."""


class MissingDataError(DataError):
    """A registered file (or a collection's FILES.tsv index) is absent under the data root."""


class CorruptDataError(DataError):
    """A file is present but its size or sha256 differs from the registry (or a download did)."""
