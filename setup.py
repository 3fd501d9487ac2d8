"""Maps the repository's top-level folders into the single ``longseq`` namespace.

``core/`` -> ``longseq.core``, ``kernels/`` -> ``longseq.kernels``, ``apps/`` -> ``longseq.apps``.
Subpackages are discovered, so a new folder with an ``__init__.py`` needs no edit here.
Everything else (metadata, dependencies) is in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {"core": "longseq.core", "kernels": "longseq.kernels", "apps": "longseq.apps"}

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder, name in ROOTS.items():
    packages.append(name)
    package_dir[name] = folder
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
