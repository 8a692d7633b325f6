"""crossvit.flops.count_flops against the FLOPs of a tiny CrossViT written out by hand."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import crossvit
from crossvit.ablation import SingleBranchViT
from crossvit.config import PaperConfig
from crossvit.flops import count_flops

TINY = PaperConfig(img_size=32, img_scale=(1.0, 0.75), patch_size=(8, 8), embed_dim=(16, 24),
                   depth=((1, 2, 0), (1, 1, 0)), num_heads=(2, 3), mlp_ratio=(2.0, 2.0, 1.0), num_classes=5)


def layer_flops(n: int, d: int, mlp: int) -> int:
    """One transformer layer on n tokens of width d: q/k/v projections, q k^T and A v (all heads together: n * n *
    d multiply-adds each), the output projection, and the two MLP layers; 2 FLOPs per multiply-add."""
    return 2 * (n * d * 3 * d + n * n * d + n * n * d + n * d * d + n * d * mlp + n * mlp * d)


def fusion_flops(d_query: int, d_other: int, n_other: int) -> int:
    """One fusion direction: the CLS projected into the other width, its query, keys and values of [CLS, other
    patches], the two attention products of one query, the output projection and the projection back."""
    keys = 1 + n_other
    return 2 * (d_query * d_other + d_other * d_other + keys * d_other * 2 * d_other + 2 * keys * d_other
                + d_other * d_other + d_other * d_query)


def test_count_flops_of_a_tiny_crossvit_equals_the_hand_count():
    model = crossvit.CrossViT(TINY)
    small, large = (16, 16, 32, 16), (24, 9, 48, 24)  # (width, patches, mlp width, branch image side)
    expected = 2 * (16 * 3 * 8 * 8 * 16) + 2 * (9 * 3 * 8 * 8 * 24)  # the two patch convolutions
    for depth_small, depth_large, _ in TINY.depth:
        expected += depth_small * layer_flops(1 + small[1], small[0], small[2])
        expected += depth_large * layer_flops(1 + large[1], large[0], large[2])
        expected += fusion_flops(small[0], large[0], large[1]) + fusion_flops(large[0], small[0], small[1])
    expected += 2 * (16 * 5 + 24 * 5)  # the two heads
    assert count_flops(model) == expected


def test_count_flops_counts_the_attention_the_fused_kernel_hides():
    """On the CPU, FlopCounterMode counts 0 for scaled_dot_product_attention: a plain count misses the attention
    products, which count_flops includes; and it leaves no hook behind."""
    model = crossvit.CrossViT(TINY).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        model(torch.zeros(1, 3, 32, 32))
    ours = count_flops(model)
    attention = 0
    for depth_small, depth_large, _ in TINY.depth:
        attention += 2 * 2 * (depth_small * 17 * 17 * 16 + depth_large * 10 * 10 * 24 + 10 * 24 + 17 * 16)
    assert ours - plain.get_total_flops() == attention
    assert not [n for n, m in model.named_modules() if m._forward_hooks]


def test_count_flops_of_a_single_branch_vit_per_image():
    arch = crossvit.CrossViT(TINY).arch
    vit = SingleBranchViT(arch, "large")
    expected = 2 * (9 * 3 * 8 * 8 * 24) + 3 * layer_flops(10, 24, 48) + 2 * 24 * 5
    assert count_flops(vit, image_size=32) == expected
    with pytest.raises(ValueError, match="image_size"):
        count_flops(torch.nn.Linear(2, 2))
