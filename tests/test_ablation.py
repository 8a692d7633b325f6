"""crossvit.ablation: switching the fusion's cross-attention off, per-head accuracy, single-branch baselines."""

import pytest
import torch

import crossvit
from crossvit.ablation import SingleBranchViT, head_accuracies, zero_cross_attention


def test_zeroed_fusion_keeps_only_the_cls_own_path(model):
    fusion = model.blocks[1].fusions[0].small  # the small CLS reading the large patches
    cls, other = torch.randn(2, 1, 64), torch.randn(2, 25, 128)
    with torch.no_grad():
        normal = fusion(cls, other)
        with zero_cross_attention(model, ("small",)):
            # paper flavour: revert(proj(cls) + attn(...)) with the attention term gone
            torch.testing.assert_close(fusion(cls, other), fusion.project_out(fusion.project_in(cls)))
            untouched = model.blocks[1].fusions[0].large  # the other direction still reads
            large_cls, small_patches = torch.randn(2, 1, 128), torch.randn(2, 64, 64)
            assert not torch.allclose(untouched(large_cls, small_patches),
                                      untouched.project_out(untouched.project_in(large_cls)))
        torch.testing.assert_close(fusion(cls, other), normal)  # hooks removed on exit


def test_zeroing_changes_the_logits_and_is_undone(model):
    images = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        before = model(images)
        with zero_cross_attention(model):
            during = model(images)
        after = model(images)
    assert not torch.allclose(before, during)
    torch.testing.assert_close(before, after)
    with pytest.raises(ValueError, match="query must be one of 'small', 'large', 'both'"):
        with zero_cross_attention(model, "tiny"):
            pass


def test_head_accuracies_by_hand(model):
    images, labels = torch.rand(10, 3, 96, 96), torch.arange(10) % 4
    scores = head_accuracies(model, images, labels, batch_size=3)
    with torch.no_grad():
        tokens = model.forward_features(images)
        small, large = model.heads["small"](tokens["small"]), model.heads["large"](tokens["large"])
    assert scores["small head"] == pytest.approx((small.argmax(1) == labels).float().mean().item())
    assert scores["large head"] == pytest.approx((large.argmax(1) == labels).float().mean().item())
    assert scores["model"] == pytest.approx((model(images).argmax(1) == labels).float().mean().item())


@pytest.mark.parametrize(("branch", "size", "patch", "dim", "depth"), [("small", 96, 12, 64, 6), ("large", 80, 16, 128, 6)])
def test_single_branch_vit_is_a_plain_vit_of_that_branch(model, branch, size, patch, dim, depth):
    timm = pytest.importorskip("timm")
    baseline = SingleBranchViT(model.arch, branch)
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=size, patch_size=patch, embed_dim=dim, depth=depth, num_heads=4, mlp_ratio=3.0, num_classes=4)
    assert crossvit.count_parameters(baseline) == crossvit.count_parameters(reference)
    logits = baseline(torch.rand(2, 3, 96, 96))  # takes the CrossViT's input and resizes it itself
    assert logits.shape == (2, 4)
    with pytest.raises(ValueError, match="'small' and 'large'"):
        SingleBranchViT(model.arch, "medium")


def test_cross_attention_ablations_are_head_accuracies_under_each_zeroing(model):
    """Written out: for each set of directions, the scores of head_accuracies inside zero_cross_attention."""
    from crossvit.ablation import CROSS_ATTENTION_ABLATIONS, cross_attention_ablations

    images, labels = torch.rand(6, 3, 96, 96), torch.arange(6) % 4
    scores = cross_attention_ablations(model, images, labels, batch_size=4)
    assert list(scores) == list(CROSS_ATTENTION_ABLATIONS) == [(), ("small",), ("large",), ("small", "large")]
    for queries, got in scores.items():
        with zero_cross_attention(model, queries):
            assert got == head_accuracies(model, images, labels)
    with torch.no_grad():
        with zero_cross_attention(model):
            both = model(images).argmax(1)
    assert scores[("small", "large")]["model"] == pytest.approx((both == labels).float().mean().item())
