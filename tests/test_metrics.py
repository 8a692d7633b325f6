"""Faithfulness metrics against hand computations: the pointing game and deletion/insertion curves."""

import math

import pytest
import torch
from torch import nn

from crossvit import metrics as crossvit_metrics
from crossvit.metrics import (
    DEFAULT_BLUR_SIGMA,
    argmax_points,
    deletion_insertion,
    gaussian_blur,
    pixel_counts,
    pointing_game,
)

# ----------------------------------------------------------------------------------------------------------
# pointing game
# ----------------------------------------------------------------------------------------------------------


def _mask(h: int, w: int, *pixels: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    for r, c in pixels:
        m[r, c] = True
    return m


def test_pointing_game_hits_and_misses():
    maps = torch.zeros(3, 5, 6)
    masks = torch.zeros(3, 5, 6, dtype=torch.bool)
    maps[0, 2, 3] = 1.0                                 # image 0: max inside the square: hit
    masks[0, 1:4, 2:5] = True
    maps[1, 0, 0] = 1.0                                 # image 1: max in the corner: miss
    masks[1, 1:4, 2:5] = True
    maps[2, 4, 5] = 5.0                                 # image 2: max exactly on a one-pixel mask: hit
    maps[2, 0, 0] = 4.9
    masks[2, 4, 5] = True
    result = pointing_game(maps, masks)
    assert result.hits.tolist() == [True, False, True]
    assert result.hits.dtype == torch.bool
    assert result.points.tolist() == [[2, 3], [0, 0], [4, 5]]
    assert result.score == pytest.approx(2 / 3)
    assert result.tolerance == 0


def test_tolerance_is_a_euclidean_disk():
    maps = torch.zeros(1, 9, 9)
    maps[0, 4, 4] = 1.0
    # A mask pixel 2 rows and 2 cols away: Euclidean distance sqrt(8) = 2.83, Chebyshev distance 2.
    masks = _mask(9, 9, (6, 6))[None]
    assert not pointing_game(maps, masks).hits.item()
    assert not pointing_game(maps, masks, tolerance=2).hits.item()  # a square of radius 2 would hit
    assert pointing_game(maps, masks, tolerance=3).hits.item()
    # Straight offsets: distance exactly equal to the tolerance counts as a hit.
    straight = _mask(9, 9, (4, 7))[None]
    assert not pointing_game(maps, straight, tolerance=2).hits.item()
    assert pointing_game(maps, straight, tolerance=3).hits.item()


def test_tolerance_turns_a_near_miss_into_a_hit_at_the_border():
    maps = torch.zeros(1, 4, 4)
    maps[0, 0, 0] = 1.0                                   # the disk around (0, 0) is clipped by the image
    masks = _mask(4, 4, (1, 0))[None]
    assert pointing_game(maps, masks, tolerance=0).score == 0.0
    assert pointing_game(maps, masks, tolerance=1).score == 1.0


def test_ties_go_to_the_first_maximum_in_row_major_order():
    maps = torch.zeros(2, 4, 5)
    maps[0, 1, 3] = maps[0, 2, 0] = maps[0, 3, 4] = 7.0   # three tied maxima: (1, 3) comes first
    masks = torch.zeros(2, 4, 5, dtype=torch.bool)
    masks[0, 1, 3] = True
    masks[1, 0, 0] = True                                 # the constant map points at (0, 0)
    result = pointing_game(maps, masks, rule="first")
    assert result.points.tolist() == [[1, 3], [0, 0]]
    assert result.hits.tolist() == [True, True]
    # the default rule counts all three maxima (one of three inside: miss) and all 20 pixels of the constant map
    assert pointing_game(maps, masks).hits.tolist() == [False, False]
    assert argmax_points(torch.full((1, 3, 3), -2.0)).tolist() == [[0, 0]]


def test_majority_rule_asks_most_maximal_pixels_to_be_inside():
    # a 3x3 maximal "patch" (9 pixels) whose top-left pixel is on the mask
    maps = torch.zeros(2, 6, 6)
    maps[:, 1:4, 1:4] = 2.0
    masks = torch.zeros(2, 6, 6, dtype=torch.bool)
    masks[0, 1, 1:4] = True                               # 3 of 9 maximal pixels inside: miss
    masks[0, 2, 1] = True                                 # ... 4 of 9
    masks[1, 1:3, 1:4] = True                             # 6 of 9 inside: hit
    result = pointing_game(maps, masks)
    assert result.rule == "majority"
    assert result.hits.tolist() == [False, True]
    torch.testing.assert_close(result.inside_share, torch.tensor([4 / 9, 6 / 9]))
    assert pointing_game(maps, masks, rule="first").hits.tolist() == [True, True]  # the corner decides
    masks[0, 2, 2] = True                                 # 5 of 9: now most of the patch is on the object
    assert pointing_game(maps, masks).hits.tolist() == [True, True]


def test_majority_rule_with_tolerance_and_float_noise():
    maps = torch.zeros(1, 5, 7)
    maps[0, 0, 0:4] = 1.0
    maps[0, 0, 1] = 1.0 - 1e-9                            # float noise inside one patch does not split it
    masks = _mask(5, 7, (2, 0), (2, 1))[None]
    assert not pointing_game(maps, masks, tolerance=1).hits.item()   # none of the 4 within distance 1
    # distance 2: (0, 0) and (0, 1) are within 2 of the mask; (0, 2) is sqrt(5) away; 2 of 4 is not a majority
    assert not pointing_game(maps, masks, tolerance=2).hits.item()
    assert pointing_game(maps, masks, tolerance=3).hits.item()       # (0, 2), (0, 3) at sqrt(5), sqrt(8)


def test_huge_tolerance_means_anywhere_and_stays_cheap():
    maps = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[:, 63, 63] = True
    result = pointing_game(maps, masks, tolerance=10**9)
    assert result.hits.all() and result.tolerance == 10**9


def test_mass_inside_mask_by_hand():
    maps = torch.tensor([[[1.0, 3.0], [0.0, -2.0]], [[0.0, 0.0], [0.0, -1.0]]])
    masks = torch.tensor([[[False, True], [False, True]], [[True, False], [False, False]]])
    # image 0: positive mass 4, of which 3 inside; the negative pixel counts for nothing. image 1: no mass.
    torch.testing.assert_close(crossvit_metrics.mass_inside_mask(maps, masks), torch.tensor([0.75, 0.0]))
    uniform = torch.ones(1, 10, 10)
    object_ = torch.zeros(1, 10, 10, dtype=torch.bool)
    object_[0, :3, :4] = True
    torch.testing.assert_close(crossvit_metrics.mass_inside_mask(uniform, object_), torch.tensor([0.12]))
    with pytest.raises(ValueError, match="same shape"):
        crossvit_metrics.mass_inside_mask(uniform, object_[:, :5])


def test_infinite_values_are_valid_scores():
    maps = torch.zeros(1, 3, 3)
    maps[0, 2, 1] = math.inf
    maps[0, 0, 0] = -math.inf
    assert argmax_points(maps).tolist() == [[2, 1]]


def test_zero_one_masks_are_converted():
    maps = torch.zeros(2, 3, 3)
    maps[:, 1, 1] = 1.0
    masks = torch.zeros(2, 3, 3, dtype=torch.uint8)
    masks[0, 1, 1] = 1
    masks[1, 0, 0] = 1
    assert pointing_game(maps, masks).hits.tolist() == [True, False]
    assert pointing_game(maps, masks.float()).hits.tolist() == [True, False]


def test_pointing_game_errors_name_the_problem():
    maps, masks = torch.rand(2, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        pointing_game(maps, torch.ones(2, 4, 5, dtype=torch.bool))
    empty = masks.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"image\(s\) \[1\] are empty"):
        pointing_game(maps, empty)
    nan = maps.clone()
    nan[1, 2, 2] = math.nan
    with pytest.raises(ValueError, match=r"NaN in image\(s\) \[1\]"):
        pointing_game(nan, masks)
    with pytest.raises(ValueError, match="0/1"):
        pointing_game(maps, masks.float() * 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        pointing_game(maps.tolist(), masks)
    with pytest.raises(TypeError, match="masks must be a torch.Tensor"):
        pointing_game(maps, masks.numpy())
    with pytest.raises(ValueError, match="3 dimensions|got 2 dimensions"):
        pointing_game(maps[0], masks[0])
    with pytest.raises(TypeError, match="real-valued"):
        pointing_game(masks, masks)
    with pytest.raises(ValueError, match=">= 0"):
        pointing_game(maps, masks, tolerance=-1)
    with pytest.raises(TypeError, match="tolerance must be an int"):
        pointing_game(maps, masks, tolerance=1.5)


# ----------------------------------------------------------------------------------------------------------
# substrates and step counts
# ----------------------------------------------------------------------------------------------------------


def test_pixel_counts_round_halves_up_exactly():
    assert pixel_counts(4, 8).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]      # i/2: 0.5 -> 1, 1.5 -> 2, ...
    assert pixel_counts(64, 10).tolist() == [0, 6, 13, 19, 26, 32, 38, 45, 51, 58, 64]
    assert pixel_counts(3, 1).tolist() == [0, 3]
    counts = pixel_counts(7, 100)                                           # more steps than pixels
    assert counts[0] == 0 and counts[-1] == 7 and (counts.diff() >= 0).all()


def test_blur_keeps_constants_and_spreads_an_impulse():
    constant = torch.full((1, 2, 10, 13), 0.37)
    assert torch.allclose(gaussian_blur(constant, 2.0), constant, atol=1e-6)
    impulse = torch.zeros(1, 1, 41, 41)
    impulse[0, 0, 20, 20] = 1.0
    blurred = gaussian_blur(impulse, 2.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 20, 20] < 0.05                                     # the peak spread out
    assert blurred[0, 0].argmax().item() == 20 * 41 + 20
    # Equal to the 2D Gaussian, computed here directly (not separably), truncated at radius ceil(3 sigma) = 6.
    d = torch.arange(-20, 21, dtype=torch.float64)
    r2 = d[:, None] ** 2 + d[None, :] ** 2
    g = torch.exp(-r2 / (2 * 2.0**2)) * ((d.abs() <= 6)[:, None] & (d.abs() <= 6)[None, :])
    assert torch.allclose(blurred[0, 0].double(), g / g.sum(), atol=1e-6)
    # Symmetric spread: it does not depend on the direction.
    assert torch.allclose(blurred[0, 0], blurred[0, 0].T, atol=1e-7)
    assert torch.allclose(blurred[0, 0], blurred[0, 0].flip(0), atol=1e-7)


def test_blur_edge_cases():
    images = torch.rand(2, 3, 5, 4)
    assert torch.equal(gaussian_blur(images, 0.0), images)
    huge = gaussian_blur(images, 50.0)                  # radius truncated to the image; still an average
    assert huge.shape == images.shape
    assert torch.all(huge >= images.amin(dim=(2, 3), keepdim=True) - 1e-6)
    assert torch.all(huge <= images.amax(dim=(2, 3), keepdim=True) + 1e-6)
    assert gaussian_blur(torch.rand(1, 1, 1, 1), 3.0).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(images, -1.0)
    with pytest.raises(TypeError, match="floating-point"):
        gaussian_blur(images.long(), 1.0)
    assert DEFAULT_BLUR_SIGMA > 0


# ----------------------------------------------------------------------------------------------------------
# deletion / insertion
# ----------------------------------------------------------------------------------------------------------


class LinearScore(nn.Module):
    """logits = [w . x, 0]: the target-0 probability is sigmoid(w . x), a known function of the pixels."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)          # (C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != self.weight.shape:            # like a model that insists on its input size
            raise ValueError(f"expected (N, {tuple(self.weight.shape)}), got {tuple(x.shape)}")
        score = (x * self.weight).sum(dim=(1, 2, 3))    # (N,)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


class Recorder(LinearScore):
    """LinearScore that keeps every batch it sees and the mode it was called in."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight)
        self.batches: list[torch.Tensor] = []
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        self.modes.append((self.training, torch.is_grad_enabled()))
        return super().forward(x)


def _setup(b: int = 3, c: int = 2, h: int = 8, w: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c, h, w, generator=g) * 0.3
    images = torch.rand(b, c, h, w, generator=g) * 0.9 + 0.1   # no exact zeros
    return weight, images, g


def _hand_deletion(weight, image, relevance, steps):
    """Deletion curve of sigmoid(w . x), by hand: sort pixels, zero the top n, evaluate."""
    c, h, w = image.shape
    order = torch.argsort(relevance.flatten(), descending=True)
    curve = []
    for i in range(steps + 1):
        n = math.floor(i * h * w / steps + 0.5)
        x = image.clone().reshape(c, h * w)
        x[:, order[:n]] = 0.0
        curve.append(torch.sigmoid((x * weight.reshape(c, h * w)).sum()).item())
    return torch.tensor(curve)


def test_deletion_curve_matches_the_hand_computation_and_is_optimal():
    weight, images, g = _setup()
    model = LinearScore(weight)
    contribution = (images * weight).sum(dim=1)                    # (B, H, W): what each pixel adds to w . x
    steps = 10
    best = deletion_insertion(model, images, contribution, 0, steps=steps)
    for b in range(len(images)):
        hand = _hand_deletion(weight, images[b], contribution[b], steps)
        assert torch.allclose(best.deletion[b], hand, atol=1e-6)
    # Removing the most positive contributions first is the fastest way down: below any other order,
    # in particular the reverse (least relevant first) and a random map, at every step.
    worst = deletion_insertion(model, images, -contribution, 0, steps=steps)
    rand = deletion_insertion(model, images, torch.rand(contribution.shape, generator=g), 0, steps=steps)
    assert torch.all(best.deletion <= worst.deletion + 1e-6)
    assert torch.all(best.deletion <= rand.deletion + 1e-6)
    assert torch.all(best.deletion_auc < worst.deletion_auc)
    assert torch.all(best.deletion_auc < rand.deletion_auc)
    # Both ends: the untouched image and the all-zero image (w . 0 = 0, so probability 1/2).
    start = torch.sigmoid((images * weight).sum(dim=(1, 2, 3)))
    assert torch.allclose(best.deletion[:, 0], start, atol=1e-6)
    assert torch.allclose(best.deletion[:, -1], torch.full((3,), 0.5), atol=1e-6)


def test_insertion_with_the_right_map_beats_a_random_map():
    weight, images, g = _setup(seed=1)
    model = LinearScore(weight)
    sigma = 1.5
    blurred = gaussian_blur(images, sigma)
    gain = (weight * (images - blurred)).sum(dim=1)                # (B, H, W): what inserting each pixel adds
    right = deletion_insertion(model, images, gain, 0, steps=16, blur_sigma=sigma)
    wrong = deletion_insertion(model, images, -gain, 0, steps=16, blur_sigma=sigma)
    for _ in range(3):
        random_map = torch.rand(gain.shape, generator=g)
        rand = deletion_insertion(model, images, random_map, 0, steps=16, blur_sigma=sigma)
        assert torch.all(right.insertion >= rand.insertion - 1e-6)
        assert torch.all(right.insertion_auc > rand.insertion_auc)
    assert torch.all(right.insertion_auc > wrong.insertion_auc)
    # Both ends: the blurred image and the original image.
    blurred_p = torch.sigmoid((blurred * weight).sum(dim=(1, 2, 3)))
    image_p = torch.sigmoid((images * weight).sum(dim=(1, 2, 3)))
    assert torch.allclose(right.insertion[:, 0], blurred_p, atol=1e-6)
    assert torch.allclose(right.insertion[:, -1], image_p, atol=1e-6)


def test_logit_curves_are_the_class_logit_by_hand_and_order_maps_as_probability_curves_do():
    """score="logit": each point is w . x of the changed image (LinearScore's logit for class 0), the logit of
    the same images the probability curves are the sigmoid of; the AUC is the same trapezoid rule."""
    weight, images, g = _setup(seed=3)
    model = LinearScore(weight)
    contribution = (images * weight).sum(dim=1)
    probability = deletion_insertion(model, images, contribution, 0, steps=8)
    logit = deletion_insertion(model, images, contribution, 0, steps=8, score="logit")
    assert probability.score == "probability" and logit.score == "logit"
    for curve in ("deletion", "insertion"):
        assert torch.allclose(torch.sigmoid(getattr(logit, curve)), getattr(probability, curve), atol=1e-6)
        assert torch.allclose(getattr(logit, f"{curve}_auc"),
                              torch.trapezoid(getattr(logit, curve), logit.fractions, dim=1), atol=1e-6)
    assert torch.allclose(logit.deletion[:, 0], (images * weight).sum(dim=(1, 2, 3)), atol=1e-5)
    assert torch.allclose(logit.deletion[:, -1], torch.zeros(3), atol=1e-6)  # w . 0
    with pytest.raises(ValueError, match="score must be one of"):
        deletion_insertion(model, images, contribution, 0, score="softmax")


def test_curves_at_given_fractions_are_the_even_curves_at_those_points():
    """fractions=[0, 1/8, 1/4, 1/2, 1] on 8 x 8 pixels changes 0, 8, 16, 32, 64 pixels: the points of the evenly
    spaced 8-step curve at steps 0, 1, 2, 4, 8, and the AUC is the trapezoid rule on the uneven points."""
    weight, images, g = _setup(seed=4)
    model = LinearScore(weight)
    maps = torch.rand(3, 8, 8, generator=g)
    even = deletion_insertion(model, images, maps, 0, steps=8)
    picked = deletion_insertion(model, images, maps, 0, fractions=[0, 1 / 8, 1 / 4, 1 / 2, 1])
    assert picked.counts.tolist() == [0, 8, 16, 32, 64]
    for curve in ("deletion", "insertion"):
        assert torch.allclose(getattr(picked, curve), getattr(even, curve)[:, [0, 1, 2, 4, 8]], atol=1e-6)
    assert torch.allclose(picked.deletion_auc, torch.trapezoid(picked.deletion, picked.fractions, dim=1))
    for bad in ([0, 0.5], [0.1, 1], [0, 0.6, 0.5, 1], [0, float("nan"), 1], [[0, 1]]):
        with pytest.raises(ValueError, match="fractions must"):
            deletion_insertion(model, images, maps, 0, fractions=bad)


def test_auc_is_the_trapezoid_rule_on_the_fractions():
    weight, images, g = _setup(h=5, w=7)                           # 35 pixels, 8 steps: uneven fractions
    maps = torch.randn(3, 5, 7, generator=g)
    result = deletion_insertion(LinearScore(weight), images, maps, torch.tensor([0, 1, 0]), steps=8)
    counts = torch.tensor([math.floor(i * 35 / 8 + 0.5) for i in range(9)])
    assert torch.equal(result.counts, counts)
    assert torch.allclose(result.fractions, counts / 35)
    assert result.fractions[0] == 0 and result.fractions[-1] == 1
    for curve, auc in ((result.deletion, result.deletion_auc), (result.insertion, result.insertion_auc)):
        x, y = result.fractions.tolist(), curve.tolist()
        for b in range(3):
            hand = sum((x[i + 1] - x[i]) * (y[b][i] + y[b][i + 1]) / 2 for i in range(8))
            assert auc[b].item() == pytest.approx(hand, abs=1e-6)
        assert torch.all((auc >= 0) & (auc <= 1))
        assert torch.all((curve >= 0) & (curve <= 1))
    # Target 1 is the other class of the two-class model: its curve is 1 - the class-0 curve.
    class0 = deletion_insertion(LinearScore(weight), images, maps, 0, steps=8)
    assert torch.allclose(result.deletion[1], 1 - class0.deletion[1], atol=1e-6)
    assert result.mean_deletion_auc == pytest.approx(result.deletion_auc.mean().item())
    assert result.mean_insertion_auc == pytest.approx(result.insertion_auc.mean().item())


def test_exact_pixels_change_at_each_step_in_eval_mode_without_grad():
    weight, images, g = _setup(b=2, c=3, h=2, w=2)                 # 4 pixels, 8 steps: counts 0,1,1,2,...,4,4
    maps = torch.randn(2, 2, 2, generator=g)
    model = Recorder(weight).train()
    result = deletion_insertion(model, images, maps, 0, steps=8, batch_size=5, blur_sigma=1.0)
    assert model.training                                          # mode restored
    assert all(mode == (False, False) for mode in model.modes)     # eval mode, no grad
    assert all(len(batch) <= 5 for batch in model.batches)         # never more than batch_size at once
    seen = torch.cat(model.batches)                                # (2 curves * B * 9 steps, C, H, W)
    assert seen.shape == (2 * 2 * 9, 3, 2, 2)
    deleted, inserted = seen[:18].view(2, 9, 3, 2, 2), seen[18:].view(2, 9, 3, 2, 2)
    blurred = gaussian_blur(images, 1.0)
    expected = [0, 1, 1, 2, 2, 3, 3, 4, 4]
    for b in range(2):
        order = torch.argsort(maps[b].flatten(), descending=True)
        for s, n in enumerate(expected):
            zero = (deleted[b, s] == 0).all(dim=0).flatten()                  # (H*W,) whole pixels zeroed
            assert ((deleted[b, s] == 0).any(dim=0).flatten() == zero).all()  # all channels together
            assert zero.sum().item() == n
            assert set(zero.nonzero().flatten().tolist()) == set(order[:n].tolist())
            kept = (inserted[b, s] == images[b]).all(dim=0).flatten()
            still_blurred = (inserted[b, s] == blurred[b]).all(dim=0).flatten()
            assert (kept ^ still_blurred).all()                    # every pixel is one or the other
            assert set(kept.nonzero().flatten().tolist()) == set(order[:n].tolist())
    assert result.counts.tolist() == expected


def test_ties_are_broken_in_row_major_order():
    weight, images, _ = _setup(b=1, c=1, h=3, w=3)
    model = Recorder(weight)
    deletion_insertion(model, images, torch.zeros(1, 3, 3), 0, steps=9)   # constant map, one pixel per step
    deleted = torch.cat(model.batches)[:10, 0].flatten(1)                  # (10, 9)
    for s in range(10):
        assert (deleted[s] == 0).nonzero().flatten().tolist() == list(range(s))


def test_chunking_does_not_change_the_result():
    weight, images, g = _setup(b=4)
    maps = torch.randn(4, 8, 8, generator=g)
    one = deletion_insertion(LinearScore(weight), images, maps, 0, steps=6, batch_size=1)
    many = deletion_insertion(LinearScore(weight), images, maps, 0, steps=6, batch_size=64)
    odd = deletion_insertion(LinearScore(weight), images, maps, 0, steps=6, batch_size=13, progress=True)
    for field in ("deletion", "insertion", "deletion_auc", "insertion_auc"):
        assert torch.equal(getattr(one, field), getattr(many, field))
        assert torch.equal(getattr(one, field), getattr(odd, field))


def test_works_with_a_crossvit():
    import crossvit

    config = crossvit.PaperConfig(
        img_size=48, img_scale=(1.0, 32 / 48), patch_size=(12, 16), embed_dim=(16, 32), depth=((1, 1, 0),),
        num_heads=(2, 2), mlp_ratio=(2.0, 2.0, 1.0), num_classes=6,
    )
    with torch.random.fork_rng():                      # deterministic weights, global RNG left alone
        torch.manual_seed(0)
        model = crossvit.CrossViT(config)
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    maps = images.mean(dim=1)
    result = deletion_insertion(model, images, maps, torch.tensor([1, 4]), steps=4)
    assert result.deletion.shape == result.insertion.shape == (2, 5)
    assert torch.all((result.deletion_auc >= 0) & (result.deletion_auc <= 1))


def test_deletion_insertion_errors_name_the_problem():
    weight, images, _ = _setup(b=2, c=2, h=4, w=4)
    model, maps = LinearScore(weight), torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match=r"maps \(2, 4, 5\) and images \(2, 2, 4, 4\)"):
        deletion_insertion(model, images, torch.rand(2, 4, 5), 0)
    with pytest.raises(ValueError, match=r"maps \(3, 4, 4\) and images \(2, 2, 4, 4\)"):
        deletion_insertion(model, images, torch.rand(3, 4, 4), 0)
    with pytest.raises(ValueError, match=r"target must be in \[0, 2\).*got \[5, 5\] for image\(s\) \[0, 1\]"):
        deletion_insertion(model, images, maps, 5)
    with pytest.raises(ValueError, match=r"target must be in \[0, 2\).*got \[2\] for image\(s\) \[1\]"):
        deletion_insertion(model, images, maps, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"non-negative.*got \[-1, -1\]"):
        deletion_insertion(model, images, maps, -1)
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(2,\), got \(3,\)"):
        deletion_insertion(model, images, maps, torch.tensor([0, 1, 0]))
    with pytest.raises(TypeError, match="integer class indices"):
        deletion_insertion(model, images, maps, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        deletion_insertion(model, images, maps, 0, steps=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        deletion_insertion(model, images, maps, 0, batch_size=0)
    with pytest.raises(ValueError, match="sigma"):
        deletion_insertion(model, images, maps, 0, blur_sigma=-2.0)
    nan = maps.clone()
    nan[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"NaN in image\(s\) \[0\]"):
        deletion_insertion(model, images, nan, 0)
    with pytest.raises(TypeError, match="nn.Module"):
        deletion_insertion(lambda x: x, images, maps, 0)
    with pytest.raises(TypeError, match="floating-point"):
        deletion_insertion(model, (images * 255).long(), maps, 0)
    with pytest.raises(ValueError, match=r"logits of shape \(N, K\)"):
        deletion_insertion(nn.Flatten(0), images, maps, 0)
