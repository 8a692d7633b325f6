"""The two-scale task: its classes are what the docstring says (a fine texture times a tile's layout), the
half-resolution copy a coarse branch sees holds no trace of the texture, and no colour or darkness statistic of the
whole image gives the class."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_data import _erode, _is_checkered

from crossvit import twoscale
from crossvit.config import PaperConfig, architecture_of
from crossvit.data import UNUSED_SEED_BASE
from crossvit.model import branch_image
from crossvit.twoscale import CLASS_NAMES, make_two_scale_shapes

SEED = UNUSED_SEED_BASE + 2**36 + 11
TEXTURE_BAND = (0.25, 0.5)  # cycles per pixel: stripes of period 2.4-3.0 px, checker waves at 1 / (2 sqrt(2) cell)


@pytest.fixture(scope="module")
def draw():
    return make_two_scale_shapes(400, SEED)


def test_contract(draw):
    images, labels, masks = draw
    assert images.shape == (400, 3, 96, 96) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert masks.shape == (400, 2, 96, 96) and masks.dtype == torch.bool
    assert torch.bincount(labels, minlength=4).tolist() == [100] * 4
    assert CLASS_NAMES == ("striped, halved", "checkered, halved", "striped, diagonal", "checkered, diagonal")
    assert not (masks[:, 0] & masks[:, 1]).any()  # the object and the tile never overlap
    assert masks.flatten(2).any(-1).all()
    first, again = make_two_scale_shapes(5, SEED), make_two_scale_shapes(5, SEED)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(make_two_scale_shapes(5, SEED + 2**32)[0], first[0])


def test_the_tile_sits_on_the_coarse_patch_grid_and_its_dark_quadrants_lie_as_the_label_says(draw):
    """Written out from the docstring: the tile's mask is one 16 x 16 square on the 16 px grid (one coarse patch of
    the benchmark's models: 8 px patches on the half-resolution copy); each of its 8 x 8 quadrants (one fine patch)
    is flat, two dark and two light; the dark two share a side for "halved" and a corner only for "diagonal"."""
    images, labels, masks = draw
    for image, label, tile in zip(images[:120], labels[:120], masks[:120, 1]):
        rows, cols = tile.any(1).nonzero().squeeze(1), tile.any(0).nonzero().squeeze(1)
        top, left = int(rows[0]), int(cols[0])
        assert (len(rows), len(cols), top % 16, left % 16) == (16, 16, 0, 0)
        assert tile.sum() == 256
        quadrants = [image[:, top + dy:top + dy + 8, left + dx:left + dx + 8] for dy in (0, 8) for dx in (0, 8)]
        assert all(q.std((1, 2)).max() < 0.1 for q in quadrants)  # flat up to the pixel noise (0.03)
        dark = [i for i, q in enumerate(quadrants) if q.mean() < 0.3]
        assert len(dark) == 2 and all(quadrants[i].mean() > 0.7 for i in set(range(4)) - set(dark))
        side_by_side = dark in ([0, 1], [2, 3], [0, 2], [1, 3])
        assert side_by_side == (twoscale.ARRANGEMENTS[label // 2] == "halved")


def test_the_object_carries_the_labels_texture_which_the_anti_aliased_half_copy_flattens():
    """A spectral test of stripes vs checker on the object's pixels finds the label's texture at full resolution.
    On the half-resolution copy a coarse branch sees (the model's own resize, anti-aliased) the texture's local
    contrast falls to under a fifth of the full image's and to under half of what a resize without anti-aliasing
    keeps (that one folds the texture into coarser waves that a ViT reads: benchmarks/two_scales.py)."""
    images, labels, masks = make_two_scale_shapes(200, SEED + 3, noise=0.0)
    config = dict(img_size=96, img_scale=(1.0, 0.5), patch_size=(8, 8), embed_dim=(16, 16), depth=((1, 1, 0),),
                  num_heads=(2, 2), num_classes=4)
    smooth, plain = (architecture_of(PaperConfig(**config, resize_antialias=a)) for a in (True, False))
    half = branch_image(images, smooth.branch("large"), smooth)
    aliased = branch_image(images, plain.branch("large"), plain)
    inner = _erode(masks[:, 0], 1)
    full = torch.tensor([_is_checkered(im, m, TEXTURE_BAND) for im, m in zip(images, inner)])
    assert (full == (labels % 2 == 1)).float().mean() >= 0.95

    def contrast(x: torch.Tensor, where: torch.Tensor) -> float:  # mean |pixel - its 3x3 mean|, over channels
        local = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
        return local.abs().sum(1)[where].mean().item()

    half_inner = inner[:, ::2, ::2]
    assert contrast(half, half_inner) < 0.2 * contrast(images, inner)
    assert contrast(half, half_inner) < 0.5 * contrast(aliased, half_inner)


def test_no_colour_or_darkness_statistic_gives_the_class():
    """Per-image statistics of the whole image (mean and spread of each channel, the share of dark pixels, of light
    pixels, of vivid warm and of vivid cool pixels) fed to a nearest-class-mean classifier fitted on other images predict the class
    at chance (0.25)."""
    train_x, train_y, _ = make_two_scale_shapes(800, SEED + 1)
    test_x, test_y, _ = make_two_scale_shapes(800, SEED + 2)

    def stats(images: torch.Tensor) -> torch.Tensor:
        grey = images.mean(1)
        return torch.cat([images.mean((2, 3)), images.std((2, 3)), (grey < 0.2).float().mean((1, 2))[:, None],
                          (grey > 0.8).float().mean((1, 2))[:, None],
                          (images[:, 0] - images[:, 2] > 0.3).float().mean((1, 2))[:, None],
                          (images[:, 2] - images[:, 0] > 0.3).float().mean((1, 2))[:, None]], dim=1)

    a, b = stats(train_x), stats(test_x)
    mean, std = a.mean(0), a.std(0)
    centres = torch.stack([((a - mean) / std)[train_y == c].mean(0) for c in range(4)])
    predicted = torch.cdist((b - mean) / std, centres).argmin(1)
    accuracy = (predicted == test_y).float().mean().item()
    assert accuracy < 0.33, accuracy
