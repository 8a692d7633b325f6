"""explain(): every method gives (B, H, W) pixel maps; patch maps land on the pixels their patches cover."""

import pytest
import torch

import crossvit
from crossvit.explain import occlusion_window


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return crossvit.create_model("crossvit_tiny_240", num_classes=4, img_size=96, img_scale=(1.0, 80 / 96)).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def test_patch_map_to_pixels_by_hand(model):
    # small branch: 8x8 grid of 12 px patches on the 96 px image; large: 5x5 grid of 16 px on the 80 px resize,
    # i.e. 19.2 input pixels per patch
    small = torch.arange(64.0)[None]
    pixels = crossvit.patch_map_to_pixels(model, "small", small)
    assert pixels.shape == (1, 96, 96)
    assert pixels[0, 0, 0] == 0 and pixels[0, 11, 11] == 0 and pixels[0, 12, 0] == 8 and pixels[0, 95, 95] == 63
    large = torch.arange(25.0)[None]
    pixels = crossvit.patch_map_to_pixels(model, "large", large)
    for row in range(96):
        assert pixels[0, row, 0] == 5 * int(row // 19.2)  # patch row i covers [19.2 i, 19.2 (i + 1))
    density = crossvit.patch_map_to_pixels(model, "large", torch.ones(1, 25), density=True)
    torch.testing.assert_close(density.sum(), torch.tensor(25.0))  # mass per patch is preserved over the image


def test_patch_map_to_pixels_crop_leaves_border_empty():
    model = crossvit.create_model("crossvit_tiny_240", num_classes=2, img_size=96, img_scale=(1.0, 80 / 96),
                                  crop_scale=True)
    pixels = crossvit.patch_map_to_pixels(model, "large", torch.ones(1, 25))
    assert pixels[0, :8].abs().sum() == 0 and pixels[0, 8:88, 8:88].min() == 1 and pixels[0, 88:].abs().sum() == 0


@pytest.mark.parametrize("method", crossvit.METHODS)
def test_every_method_gives_pixel_maps(model, images, method):
    maps = crossvit.explain(model, images, method, n_steps=8)
    assert maps.shape == (2, 96, 96)
    assert torch.isfinite(maps).all()
    assert maps.abs().sum() > 0
    assert not maps.requires_grad


def test_rollout_methods_equal_the_rollout_functions(model, images):
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    # the methods' defaults start at the last block (crossvit.METHOD_OPTIONS)
    expected = crossvit.patch_map_to_pixels(model, "large", crossvit.attention_rollout(rec, "large", start_block=2))
    torch.testing.assert_close(crossvit.explain(model, images, "large_rollout"), expected)
    expected = crossvit.patch_map_to_pixels(model, "large", crossvit.attention_rollout(rec, "large"))
    torch.testing.assert_close(crossvit.explain(model, images, "large_rollout", start_block=0), expected)
    joint = crossvit.joint_rollout(rec, start_block=-1)
    by_query = [
        sum(crossvit.patch_map_to_pixels(model, p, joint[q][p], density=True) for p in ("small", "large"))
        for q in ("small", "large")
    ]
    torch.testing.assert_close(crossvit.explain(model, images, "joint_rollout"), (by_query[0] + by_query[1]) / 2)


def _spread(values: torch.Tensor, grid: int, size: int = 96) -> torch.Tensor:
    """Independent nearest-patch spreading of (B, grid*grid) values as mass per pixel over a size x size image."""
    index = (torch.arange(size) * grid) // size  # patch row (or column) of each pixel
    cells = values.reshape(-1, grid, grid)[:, index][:, :, index]
    return cells / (size / grid) ** 2


def test_cls_attention_is_the_recorded_cls_row(model, images):
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    maps = rec.sites
    small = maps["blocks.2.small.self.0"].mean(1)[:, 0, 1:]   # (B, 64): small CLS over the small patches
    large = maps["blocks.2.large.self.0"].mean(1)[:, 0, 1:]   # (B, 25)
    torch.testing.assert_close(crossvit.explain(model, images, "cls_attention", block=2, layer=0),
                               (_spread(small, 8) + _spread(large, 5)) / 2)
    torch.testing.assert_close(crossvit.explain(model, images, "cls_attention", block=-1, layer=0, query="small"),
                               _spread(small, 8))
    last_large = maps["blocks.1.large.self.3"].mean(1)[:, 0, 1:]  # crossvit_tiny: 4 large layers per block
    torch.testing.assert_close(crossvit.explain(model, images, "cls_attention", block=1, layer=-1, query="large"),
                               _spread(last_large, 5))


def test_cross_attention_is_the_recorded_fusion_row(model, images):
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    maps = rec.sites
    # the large CLS reads the small patches (keys: [its own projected CLS, 64 small patches]) and vice versa
    large_reads_small = maps["blocks.2.large.cross.0"].mean(1)[:, 0, 1:]  # (B, 64)
    small_reads_large = maps["blocks.2.small.cross.0"].mean(1)[:, 0, 1:]  # (B, 25)
    torch.testing.assert_close(crossvit.explain(model, images, "cross_attention", query="large"),
                               _spread(large_reads_small, 8))
    torch.testing.assert_close(crossvit.explain(model, images, "cross_attention", query="small"),
                               _spread(small_reads_large, 5))
    first = maps["blocks.0.large.cross.0"].mean(1)[:, 0, 1:]
    torch.testing.assert_close(crossvit.explain(model, images, "cross_attention", fusion=0, query="large"),
                               _spread(first, 8))
    both = crossvit.explain(model, images, "cross_attention", query="both")
    torch.testing.assert_close(both, (_spread(large_reads_small, 8) + _spread(small_reads_large, 5)) / 2)


def test_method_options_are_checked(model, images):
    with pytest.raises(TypeError, match="has no option 'start_block'; its options: block, layer, query"):
        crossvit.explain(model, images, "cls_attention", start_block=1)
    with pytest.raises(TypeError, match="its options: internal_batch_size"):
        crossvit.explain(model, images, "saliency", block=1)
    with pytest.raises(ValueError, match=r"block must be in \[-3, 3\)"):
        crossvit.explain(model, images, "cls_attention", block=3)
    with pytest.raises(ValueError, match="'small', 'large', 'both'"):
        crossvit.explain(model, images, "cross_attention", query="cls")
    with pytest.raises(ValueError, match=r"fusion must be in \[-3, 3\)"):
        crossvit.explain(model, images, "cross_attention", fusion=5)
    with pytest.raises(ValueError, match=r"start_block must be in \[-3, 3\)"):
        crossvit.explain(model, images, "joint_rollout", start_block=7)
    with pytest.raises(ValueError, match="head_fusion"):
        crossvit.explain(model, images, "small_rollout", head_fusion="median")


def test_rollout_options_reach_the_rollout_functions(model, images):
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    expected = crossvit.patch_map_to_pixels(model, "small", crossvit.attention_rollout(
        rec, "small", head_fusion="max", discard_ratio=0.5, start_block=1))
    got = crossvit.explain(model, images, "small_rollout", start_block=1, head_fusion="max", discard_ratio=0.5)
    torch.testing.assert_close(got, expected)
    joint = crossvit.joint_rollout(rec, start_block=2)
    torch.testing.assert_close(crossvit.explain(model, images, "joint_rollout", start_block=2),
                               crossvit.joint_rollout_pixels(model, joint))


def test_target_none_explains_the_predicted_class(model, images):
    predicted = model(images).argmax(1)
    torch.testing.assert_close(crossvit.explain(model, images, "saliency"),
                               crossvit.explain(model, images, "saliency", target=predicted))
    other = (predicted + 1) % 4
    assert not torch.allclose(crossvit.explain(model, images, "gradient_rollout", target=predicted),
                              crossvit.explain(model, images, "gradient_rollout", target=other))


def test_occlusion_windows_are_patch_aligned(model, images):
    assert occlusion_window(model) == 12
    maps = crossvit.explain(model, images, "occlusion", target=0)
    blocks = maps.reshape(2, 8, 12, 8, 12)  # constant inside each 12 px window
    assert torch.allclose(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))


def test_saliency_matches_autograd(model, images):
    x = images.clone().requires_grad_(True)
    model(x)[:, 2].sum().backward()
    expected = x.grad.abs().amax(dim=1)
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(crossvit.explain(model, images, "saliency", target=2), expected)


def test_random_baseline_is_seeded(model, images):
    a = crossvit.explain(model, images, "random", seed=3)
    assert torch.equal(a, crossvit.explain(model, images, "random", seed=3))
    assert not torch.equal(a, crossvit.explain(model, images, "random", seed=4))


def test_explain_leaves_model_state_alone(model, images):
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        crossvit.explain(model, images, "gradient_rollout")
        assert model.training
        assert all(p.grad is None for p in model.parameters())
        assert not images.requires_grad
    finally:
        model.eval()


def test_explain_errors(model, images):
    with pytest.raises(ValueError) as info:
        crossvit.explain(model, images, "lime")
    assert all(m in str(info.value) for m in crossvit.METHODS)
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        crossvit.explain(model, images, "saliency", target=7)
    with pytest.raises(ValueError, match=r"\(B,\) = \(2,\)"):
        crossvit.explain(model, images, "saliency", target=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="crossvit.CrossViT"):
        crossvit.explain(torch.nn.Linear(2, 2), images, "saliency")
    with pytest.raises(ValueError, match="96x96"):
        crossvit.explain(model, images[:, :, :80, :80], "saliency")


@pytest.mark.slow  # deletion curves of the trained model: seconds on 2 cores, so `make test` runs it, not test-fast
def test_deletion_of_relevant_pixels_first_beats_random_order_on_the_trained_model():
    """Faithfulness on the bundled model: deleting the pixels integrated gradients ranks highest lowers the
    true-class probability faster (smaller deletion AUC) than deleting them in random order."""
    from crossvit import data, metrics

    model = crossvit.load_pretrained()
    images, labels, _ = data.make_shapes(24, seed=900_123, image_size=model.image_size)
    relevant = crossvit.explain(model, images, "integrated_gradients", target=labels, n_steps=16)
    random = crossvit.explain(model, images, "random", target=labels, seed=0)
    ours = metrics.deletion_insertion(model, images, relevant, labels, steps=12)
    baseline = metrics.deletion_insertion(model, images, random, labels, steps=12)
    assert ours.mean_deletion_auc < baseline.mean_deletion_auc - 0.05, (ours.mean_deletion_auc,
                                                                        baseline.mean_deletion_auc)


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_captum_methods_chunk_the_batch_without_changing_the_maps(model, images, method):
    whole = crossvit.explain(model, images, method, target=1, n_steps=4, internal_batch_size=16)
    chunked = crossvit.explain(model, images, method, target=1, n_steps=4, internal_batch_size=1)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)
