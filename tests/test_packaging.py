"""The install maps core/, kernels/, apps/ into one ``longseq`` namespace, editable and as a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"core": "longseq/core", "kernels": "longseq/kernels", "apps": "longseq/apps"}


def _source_packages() -> list[str]:
    """Every package folder (with ``__init__.py``) under the mapped roots, as a wheel path."""
    out = []
    for folder, prefix in ROOTS.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO / folder).as_posix()
            out.append(prefix if rel == "." else f"{prefix}/{rel}")
    return out


def test_no_init_at_repo_root():
    assert not (REPO / "__init__.py").exists()


def test_editable_install_maps_every_package():
    import importlib

    for path in _source_packages():
        mod = importlib.import_module(path.replace("/", "."))
        folder = path.split("/", 1)[1]
        assert Path(mod.__file__).resolve().parent == (REPO / folder).resolve(), path


@pytest.mark.slow
def test_wheel_contains_and_imports_every_package(tmp_path):
    """Build the wheel, then import each package from it with the editable finder removed."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("longseq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _source_packages()
    missing = [p for p in expected if f"{p}/__init__.py" not in names]
    assert not missing, f"packages missing from the wheel: {missing}"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "longseq/__init__.py" not in names  # a namespace, no root __init__
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    modules = [p.replace("/", ".") for p in expected]
    code = (
        "import sys, importlib\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "sys.path[:] = [p for p in sys.path if '__editable__' not in p]\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        f"for name in {modules!r}:\n"
        "    mod = importlib.import_module(name)\n"
        f"    assert mod.__file__.startswith({str(site)!r}), (name, mod.__file__)\n"
        "print('ok', len(sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")
