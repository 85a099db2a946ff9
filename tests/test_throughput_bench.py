"""benchmarks/throughput.py: what its FLOP count (the MFU and the fidelity issue's cost gate) includes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import load_script


def test_flop_count_includes_attention_on_the_cpu():
    """PyTorch's counter has no formula for the CPU attention kernel (it counted 0); the benchmark registers one."""
    bench = load_script("benchmarks/throughput.py", "throughput_under_test")
    q, k = torch.randn(2, 4, 16, 32), torch.randn(2, 4, 96, 32)
    mask = torch.zeros(2, 4, 16, 96)
    flops = bench.count_flops(lambda: F.scaled_dot_product_attention(q, k, k, attn_mask=mask))
    assert flops == 2 * (2 * 2 * 4 * 16 * 96 * 32)  # q·kᵀ and p·v, 2 FLOPs per multiply-add
    linear = torch.nn.Linear(32, 8)
    assert bench.count_flops(lambda: linear(q)) == 2 * (2 * 4 * 16) * 32 * 8
