"""longseq.kernels: Triton kernels, each beside a readable fp32 PyTorch reference.

One folder per op: ``reference.py`` (the spec), ``triton.py`` (kernels and launchers) and
``__init__.py`` (autograd function, ``torch.library`` custom op and the validated public function).
"""
