# longseq developer commands. Every target reuses .venv and reinstalls only when the
# dependency files change (the stamp file below), so running them twice is cheap.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.longseq-installed
LOCK := requirements/lock.txt
# Kernels run compiled on an NVIDIA GPU. The CPU test-suite runs them in Triton's interpreter
# (tests/conftest.py sets TRITON_INTERPRET=1 when there is no GPU); the demo and the apps do not, since
# without a GPU the kernels take their PyTorch reference paths, which are much faster than interpreting.
PYTEST_ARGS ?=
# gpu-test and bench run on the device machine, which has torch/triton but no network: they use the
# venv when there is one and the system python3 otherwise (see CONTRIBUTING.md, "GPU runs").
PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

.PHONY: install demo test lint format gpu-test bench lock clean data-verify

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) "setuptools>=69,<82" wheel
	$(BIN)/python -m pip install -q -c $(LOCK) --no-build-isolation -e ".[dev]"
	@touch $(STAMP)

# The genomics quickstart: fetch E. coli if needed, pretrain a tiny HyenaDNA on CPU, score a FASTA.
demo: install
	$(BIN)/longseq-genomics quickstart

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n 2 --durations=15 -m "not gpu" $(PYTEST_ARGS)

# On the device machine (an H100/H200): the `gpu` tests plus the kernel grid compiled for CUDA.
# The GPU tests spend most of their time compiling Triton kernel variants on one CPU core each (7-15 s per
# fftconv feature set, seen on an H100 host), so several pytest workers share the GPU.
GPU_TEST_WORKERS ?= 3
gpu-test:
	TRITON_INTERPRET=0 $(PY) -m pytest -n $(GPU_TEST_WORKERS) --durations=15 tests/kernels $(PYTEST_ARGS)
	TRITON_INTERPRET=0 $(PY) -m pytest -n $(GPU_TEST_WORKERS) --durations=15 tests -m gpu --ignore=tests/kernels $(PYTEST_ARGS) \
		|| [ $$? -eq 5 ]

# Benchmarks on the device machine; writes benchmarks/results/<topic>-<device>.{json,md,png}.
BENCH ?= rmsnorm
bench:
	TRITON_INTERPRET=0 $(PY) -m benchmarks.run $(BENCH)

data-verify: install
	$(BIN)/longseq data verify

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate the universal lock after editing dependencies in pyproject.toml (needs uv).
lock:
	$(PYTHON) -m pip install -q uv
	$(PYTHON) -m uv pip compile pyproject.toml requirements/build.in --extra dev --universal \
		--python-version 3.10 -o $(LOCK)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
