"""GPU benchmark harness for longseq kernels; run with ``python -m benchmarks.run``, never imported."""
