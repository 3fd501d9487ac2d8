"""Pins the exported names of each public module: adding or removing one is a deliberate edit here."""

from __future__ import annotations

import importlib

import pytest

PUBLIC_API = {
    "longseq.kernels.rmsnorm": ["rms_norm", "rms_norm_ref"],
    "longseq.kernels.testing": [
        "EPSILON",
        "assert_close",
        "compile_backend",
        "empty_poisoned",
        "kernel_device",
        "max_abs_error",
        "poison",
    ],
    "longseq.core.data": [
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
    ],
    "longseq.core.registry": [
        "create_mixer",
        "create_model",
        "list_mixers",
        "list_models",
        "register_mixer",
        "register_model",
    ],
    "longseq.core.mixers": ["MixerProtocol"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_exported_names_are_pinned(module):
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} must define __all__"
    assert sorted(exported) == sorted(PUBLIC_API[module])


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_exported_names_exist_and_are_documented(module):
    mod = importlib.import_module(module)
    assert mod.__doc__, f"{module} has no module docstring"
    for name in mod.__all__:
        obj = getattr(mod, name)
        if callable(obj):
            assert obj.__doc__, f"{module}.{name} has no docstring"
