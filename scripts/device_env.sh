#!/usr/bin/env bash
# Source this on a GPU machine without network: exposes the checkout as the `longseq` namespace on
# PYTHONPATH (no install needed) and installs any wheels carried in .whl/.
#   source scripts/device_env.sh && make gpu-test
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
site=$(mktemp -d)/site
mkdir -p "$site/longseq"
for pkg in core kernels apps; do ln -sfn "$top/$pkg" "$site/longseq/$pkg"; done
# Wheels in .whl/ fill in what the machine lacks (pip keeps every package already installed there).
if compgen -G "$top/.whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-cache-dir --find-links "$top/.whl" \
    hypothesis biopython "jsonargparse[signatures]" matplotlib rich 2>&1 | grep -v "^WARNING" || true
  # Optional baselines, each on its own (a missing wheel must not stop the others): fla-core for the SSD.
  python3 -m pip install -q --no-index --no-cache-dir --find-links "$top/.whl" fla-core 2>&1 | grep -v "^WARNING" || true
fi
export PYTHONPATH="$site:$top${PYTHONPATH:+:$PYTHONPATH}"
