"""``torch.compile`` on the ``sdpa`` and ``flex`` paths of the ``Attention`` module (CPU, small)."""

from __future__ import annotations

import pytest
import torch

from longseq.core.attention.layer import Attention
from longseq.core.attention.masks import sliding_window_mask
from longseq.kernels.testing import assert_close


@pytest.mark.slow
def test_compile_sdpa_path_fullgraph():
    torch._dynamo.reset()
    layer = Attention(32, 4, num_kv_heads=2, causal=True, positions="rope", backend="sdpa", strict_backend=True)
    x = torch.randn(2, 11, 32, requires_grad=True)
    dy = torch.randn(2, 11, 32)
    eager = layer(x)
    g_eager = torch.autograd.grad(eager, [x, *layer.parameters()], dy)
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x)
    g_comp = torch.autograd.grad(out, [x, *layer.parameters()], dy)
    assert_close(out, eager, name="compiled sdpa output")
    for i, (a, b) in enumerate(zip(g_comp, g_eager)):
        assert_close(a, b, name=f"compiled sdpa grad {i}")


@pytest.mark.slow
def test_compile_flex_path_forward():
    torch._dynamo.reset()
    layer = Attention(
        32, 4, causal=True, positions="alibi", backend="flex", strict_backend=True, mask_mod=sliding_window_mask(3, 0)
    ).eval()
    x = torch.randn(1, 19, 32)
    with torch.no_grad():
        eager = layer(x)
        reference = Attention(32, 4, causal=True, positions="alibi", backend="math", window=(3, 0)).eval()
        reference.load_state_dict(layer.state_dict())
        out = torch.compile(layer, fullgraph=True)(x)
        assert_close(out, eager, name="compiled flex vs eager flex")
        assert_close(out, reference(x), name="compiled flex vs math")
