"""Dataset registry: what data the apps use, where it comes from, and whether it is present and intact.

Every dataset is a :class:`Dataset` of :class:`DataFile` entries (and :class:`Collection` folders
with a ``FILES.tsv`` index) pinned by size and sha256, registered in
:mod:`longseq.core.data.entries`. Files live under a data root (:func:`resolve_root`: explicit
argument, ``$LONGSEQ_DATA``, then ``~/.cache/longseq``) at the same relative paths as in
``shared/data/MANIFEST.md``.

Typical use in an app::

    from longseq.core import data

    root = data.require("etth1")  # raises MissingDataError / CorruptDataError with the fix
    frame = load_csv(root / "timeseries/ETTh1.csv")

Command line: ``longseq data list``, ``longseq data verify [NAME ...]``, ``longseq data download NAME``.
"""

from __future__ import annotations

from longseq.core.data import entries as _entries  # noqa: F401  (registers the datasets)
from longseq.core.data.download import DownloadReport, download
from longseq.core.data.errors import CorruptDataError, DataError, MissingDataError
from longseq.core.data.registry import (
    Collection,
    DataFile,
    Dataset,
    get_dataset,
    list_datasets,
    register_dataset,
)
from longseq.core.data.root import resolve_root
from longseq.core.data.verify import VerifyReport, require, verify

__all__ = [
    "Collection",
    "CorruptDataError",
    "DataError",
    "DataFile",
    "Dataset",
    "DownloadReport",
    "MissingDataError",
    "VerifyReport",
    "download",
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "require",
    "resolve_root",
    "verify",
]
