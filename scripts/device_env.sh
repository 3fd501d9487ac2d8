#!/usr/bin/env bash
# Source this on a GPU machine without network: exposes the checkout as the `longseq` namespace on
# PYTHONPATH (no install needed) and installs any wheels carried in .whl/.
#   source scripts/device_env.sh && make gpu-test
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
site=$(mktemp -d)/site
mkdir -p "$site/longseq"
for pkg in core kernels apps; do ln -sfn "$top/$pkg" "$site/longseq/$pkg"; done
if compgen -G "$top/.whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$top"/.whl/*.whl
fi
export PYTHONPATH="$site:$top${PYTHONPATH:+:$PYTHONPATH}"
