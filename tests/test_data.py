"""Tests for crossvit.data: the synthetic shapes task with ground-truth masks."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossvit import data
from crossvit.data import CLASS_NAMES, NUM_CLASSES, ShapesDataset, make_shapes

N = 600


@pytest.fixture(scope="module")
def draw():
    """600 default images (96 px), shared by the read-only tests."""
    return make_shapes(N, seed=123)


# ---------------------------------------------------------------- helpers (independent of data.py)


def _erode(masks: torch.Tensor, k: int) -> torch.Tensor:
    """Binary erosion of (n, H, W) bool masks by a (2k+1)^2 square."""
    m = masks[:, None].float()
    return (-F.max_pool2d(-m, 2 * k + 1, stride=1, padding=k))[:, 0] > 0.5


def _dilate(masks: torch.Tensor, k: int) -> torch.Tensor:
    m = masks[:, None].float()
    return F.max_pool2d(m, 2 * k + 1, stride=1, padding=k)[:, 0] > 0.5


def _connected(mask: torch.Tensor) -> bool:
    """True iff the (H, W) bool mask is one 8-connected component (flood fill by repeated dilation)."""
    start = mask.flatten().nonzero()[0, 0]
    reach = torch.zeros_like(mask).flatten()
    reach[start] = True
    reach = reach.view_as(mask)
    while True:
        grown = _dilate(reach[None], 1)[0] & mask
        if torch.equal(grown, reach):
            return bool(torch.equal(reach, mask))
        reach = grown


def _texture_spectrum(image: torch.Tensor, mask: torch.Tensor, band: tuple[float, float] = (0.15, 0.4)
                      ) -> tuple[torch.Tensor, int, int]:
    """Power spectrum of the grey values inside the (eroded) object mask, and the grid index (ky, kx) of its
    strongest frequency in the texture band (by default 0.15 .. 0.4 cycles per pixel)."""
    size = image.shape[-1]
    inner = _erode(mask[None], 2)[0]
    grey = image.mean(0)
    x = torch.where(inner, grey - grey[inner].mean(), torch.zeros(()))
    power = torch.fft.fft2(x.double()).abs() ** 2
    f = torch.fft.fftfreq(size, dtype=torch.float64)
    radius = torch.hypot(f[:, None], f[None, :])
    inside = (radius > band[0]) & (radius < band[1])
    peak = torch.where(inside, power, torch.zeros(())).argmax()
    return power, int(peak // size), int(peak % size)


def _peak_angle(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Direction of the texture's strongest wave vector, folded into [0, 90) degrees."""
    size = image.shape[-1]
    _, ky, kx = _texture_spectrum(image, mask)
    fy, fx = (ky + size // 2) % size - size // 2, (kx + size // 2) % size - size // 2  # signed frequencies
    return math.degrees(math.atan2(fy, fx)) % 90.0


def _is_checkered(image: torch.Tensor, mask: torch.Tensor, band: tuple[float, float] = (0.15, 0.4)) -> bool:
    """Spectral texture test: a checkerboard has two orthogonal dominant frequencies, stripes one.

    Finds the strongest spatial frequency p in the texture band and compares
    the power near the orthogonal frequency rot90(p) with the power at p.
    """
    size = image.shape[-1]
    power, ky, kx = _texture_spectrum(image, mask, band)
    qy, qx = (-kx) % size, ky % size  # rot90 of (ky, kx) on the frequency grid
    ys = [(qy + d) % size for d in (-1, 0, 1)]
    xs = [(qx + d) % size for d in (-1, 0, 1)]
    ortho = power[ys][:, xs].max()
    return bool(ortho / power[ky, kx] > 0.25)


def _shape_from_mask(mask: torch.Tensor) -> int:
    """Classify an (H, W) mask as disk (0), square (1) or triangle (2) from its fill ratio:
    area / (pi R^2), R = max distance from the centroid: disk ~1, square 2/pi ~0.64, triangle ~0.41."""
    ys, xs = mask.nonzero(as_tuple=True)
    cy, cx = ys.double().mean(), xs.double().mean()
    r = torch.hypot(ys - cy, xs - cx).max() + 0.5
    ratio = mask.sum().item() / (math.pi * r.item() ** 2)
    return 0 if ratio > 0.8 else (1 if ratio > 0.52 else 2)


def _laplacian(images: torch.Tensor) -> torch.Tensor:
    """|4-neighbour Laplacian| summed over channels, (n, H-2, W-2)."""
    c = images[:, :, 1:-1, 1:-1]
    lap = images[:, :, :-2, 1:-1] + images[:, :, 2:, 1:-1] + images[:, :, 1:-1, :-2] + images[:, :, 1:-1, 2:] - 4 * c
    return lap.abs().sum(1)


# ---------------------------------------------------------------- basic contract


def test_class_names():
    assert NUM_CLASSES == len(CLASS_NAMES) == 4
    assert len(set(CLASS_NAMES)) == NUM_CLASSES
    for i, name in enumerate(CLASS_NAMES):
        colour, texture = name.split(" ")
        assert texture == data.TEXTURES[i % len(data.TEXTURES)]
        assert colour == data.COLOURS[i // len(data.TEXTURES)]


def test_shapes_dtypes_range(draw):
    images, labels, masks = draw
    assert images.shape == (N, 3, 96, 96) and images.dtype == torch.float32
    assert labels.shape == (N,) and labels.dtype == torch.int64
    assert masks.shape == (N, 96, 96) and masks.dtype == torch.bool
    assert images.is_contiguous() and masks.is_contiguous()
    assert torch.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.1  # not a constant image
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES


def test_other_sizes_and_n():
    for size, n in ((32, 1), (48, 7), (130, 300)):  # 300 > one 256-image chunk
        images, labels, masks = make_shapes(n, 5, size)
        assert images.shape == (n, 3, size, size)
        assert labels.shape == (n,) and masks.shape == (n, size, size)
        assert masks.flatten(1).any(1).all()
        assert images.min() >= 0.0 and images.max() <= 1.0


def test_labels_balanced_all_classes(draw):
    counts = torch.bincount(draw[1], minlength=NUM_CLASSES)
    assert counts.tolist() == [N // NUM_CLASSES] * NUM_CLASSES
    counts = torch.bincount(make_shapes(301, 9, 32)[1], minlength=NUM_CLASSES)
    assert counts.max() - counts.min() <= 1


def test_labels_shuffled(draw):
    labels = draw[1]
    assert not torch.equal(labels, torch.arange(N) % NUM_CLASSES)
    # no long runs of the round-robin pattern
    assert (labels[1:] == (labels[:-1] + 1) % NUM_CLASSES).float().mean() < 0.4


# ---------------------------------------------------------------- determinism


def test_deterministic_bit_identical(draw):
    torch.manual_seed(999)
    torch.rand(10)
    np.random.seed(7)
    again = make_shapes(N, seed=123)
    for a, b in zip(draw, again):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_independent_of_global_rng():
    torch.manual_seed(0)
    a = make_shapes(20, 4, 64)
    torch.manual_seed(1)
    torch.randn(1000)
    b = make_shapes(20, 4, 64)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_different_seed_differs(draw):
    other = make_shapes(N, seed=124)
    assert not torch.equal(draw[0], other[0])
    assert not torch.equal(draw[2], other[2])
    assert not torch.equal(draw[1], other[1])
    # every image differs, not just some
    assert ((draw[0] - other[0]).abs().flatten(1).max(1).values > 0.1).all()


def test_kwargs_change_output():
    base = make_shapes(16, 1, 64)
    quiet = make_shapes(16, 1, 64, noise=0.0)
    assert not torch.equal(base[0], quiet[0])


def test_progress_bar_same_output(capsys):
    a = make_shapes(40, 3, 48)
    b = make_shapes(40, 3, 48, progress=True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


# ---------------------------------------------------------------- masks


def test_masks_nonempty_plausible_area(draw):
    area = draw[2].flatten(1).sum(1).float()
    # geometry at 96 px: smallest object = triangle of circumradius 1.25 * 13 (~343 px),
    # largest = disk of radius 22 (~1521 px)
    assert area.min() >= 300 and area.max() <= 1600
    assert area.std() > 150  # random scale
    small = make_shapes(200, 1, 48)[2].flatten(1).sum(1).float()
    assert 0.2 < small.mean() / area.mean() < 0.3  # area scales with (48 / 96) ** 2


def test_masks_connected_and_compact(draw):
    masks = draw[2][:120]
    for m in masks:
        assert _connected(m)
        ys, xs = m.nonzero(as_tuple=True)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert m.sum() / box > 0.35


def test_object_positions_vary(draw):
    masks = draw[2].float()
    grid = torch.arange(96, dtype=torch.float32)
    area = masks.sum((1, 2))
    cy = (masks.sum(2) * grid).sum(1) / area
    cx = (masks.sum(1) * grid).sum(1) / area
    assert cx.std() > 8 and cy.std() > 8
    assert cx.min() < 35 and cx.max() > 61 and cy.min() < 35 and cy.max() > 61


def test_all_outlines_occur(draw):
    """The outline is drawn at random (it is not the class): every shape shows up for every class."""
    _, labels, masks = draw
    outline = torch.tensor([_shape_from_mask(m) for m in masks])
    for c in range(NUM_CLASSES):
        assert set(outline[labels == c].tolist()) == {0, 1, 2}


def _hue_degrees(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Hue of the brightest half of the object's pixels (the vivid texture colour), in degrees."""
    pixels = image[:, mask].T  # (n, 3)
    bright = pixels[pixels.sum(1) >= pixels.sum(1).median()].mean(0).tolist()
    return 360.0 * colorsys.rgb_to_hsv(*bright)[0]


def test_object_colour_matches_label(draw):
    images, labels, masks = draw
    hues = torch.tensor([_hue_degrees(im, m) for im, m in zip(images, masks)])
    warm = (hues < 60) | (hues > 330)
    cool = (hues > 170) & (hues < 260)
    assert data.COLOURS == ("warm", "cool")
    truth_cool = labels // len(data.TEXTURES) == 1
    agree = torch.where(truth_cool, cool, warm).float().mean()
    assert agree >= 0.97, agree


def test_texture_inside_mask_matches_label(draw):
    images, labels, masks = draw
    pred = torch.tensor([_is_checkered(im, m) for im, m in zip(images, masks)], dtype=torch.long)
    truth = labels % len(data.TEXTURES)  # 0 striped, 1 checkered
    assert data.TEXTURES[1] == "checkered"
    agree = (pred == truth).float().mean()
    assert agree >= 0.95, agree


def test_stripes_run_along_the_axes_and_checkers_are_axis_aligned():
    """Documented orientations: a stripe's wave vector lies within 10 degrees of an image axis; a checkerboard's
    strongest waves (the sum of two diagonal waves that makes it) lie within 10 degrees of a diagonal."""
    images, labels, masks = make_shapes(120, 5, num_distractors=(0, 0), noise=0.0)
    tolerance = 10.0 + 4.0  # the documented jitter plus the frequency grid's resolution at 96 px
    for image, label, mask in zip(images, labels, masks):
        angle = _peak_angle(image, mask)
        off_axis = min(angle, 90.0 - angle)
        if data.TEXTURES[label % len(data.TEXTURES)] == "striped":
            assert off_axis <= tolerance, angle
        else:
            assert abs(angle - 45.0) <= tolerance, angle


def test_texture_only_on_object_without_distractors():
    """With no noise and no distractors, the only sharp structure is the object, exactly under its mask."""
    images, labels, masks = make_shapes(100, 2, num_distractors=(0, 0), noise=0.0)
    lap = _laplacian(images)
    inner = _erode(masks, 2)[:, 1:-1, 1:-1]
    outer = ~_dilate(masks, 2)[:, 1:-1, 1:-1]
    assert lap[outer].max() < 0.02  # smooth background only
    mean_inner = (lap * inner).flatten(1).sum(1) / inner.flatten(1).sum(1)
    assert (mean_inner > 0.3).all()  # every object is strongly textured


def _hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel HSV hue (degrees) and saturation of (n, 3, H, W) RGB images, written out from the definition."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    high, low = images.max(1).values, images.min(1).values
    span = (high - low).clamp(min=1e-6)
    hue = torch.where(high == r, ((g - b) / span) % 6, torch.where(high == g, (b - r) / span + 2, (r - g) / span + 4))
    return hue * 60.0, (high - low) / high.clamp(min=1e-6)


def _family_pixels(images: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the number of vivid warm and vivid cool pixels inside ``where`` (n, H, W)."""
    hue, sat = _hsv(images)
    vivid = (sat > 0.35) & where
    warm = vivid & ((hue < 48) | (hue > 336))
    cool = vivid & (hue > 180) & (hue < 252)
    return warm.flatten(1).sum(1), cool.flatten(1).sum(1)


def test_no_global_colour_statistic_gives_the_colour_family():
    """The decoy (same outline and size as the object, other colour family) balances the image's colours: counting
    vivid warm vs cool pixels over the whole image says little about the label's colour family, while the same count
    over the object's pixels says it every time."""
    images, labels, masks = make_shapes(1000, 31)
    truth_cool = labels // len(data.TEXTURES) == data.COLOURS.index("cool")
    warm, cool = _family_pixels(images, torch.ones_like(masks))
    global_accuracy = ((cool > warm) == truth_cool).float().mean()
    warm_obj, cool_obj = _family_pixels(images, masks)
    object_accuracy = ((cool_obj > warm_obj) == truth_cool).float().mean()
    assert object_accuracy > 0.97, object_accuracy
    assert global_accuracy < 0.6, global_accuracy  # chance is 0.5; without the decoy this statistic gave 0.90


def test_the_other_colour_family_is_present_outside_the_object():
    images, labels, masks = make_shapes(300, 32)
    outside = ~_dilate(masks, 2)
    warm, cool = _family_pixels(images, outside)
    truth_cool = labels // len(data.TEXTURES) == 1
    other = torch.where(truth_cool, warm, cool)
    assert (other > 100).float().mean() > 0.9  # the decoy (a shape of >= 300 px, about half vivid pixels)


def _peak_frequency(image: torch.Tensor, region: torch.Tensor) -> float:
    """Radius (cycles per pixel) of the strongest non-constant spatial frequency of the grey values in ``region``."""
    grey = image.mean(0)
    x = torch.where(region, grey - grey[region].mean(), torch.zeros(()))
    power = torch.fft.fft2(x.double()).abs() ** 2
    f = torch.fft.fftfreq(image.shape[-1], dtype=torch.float64)
    radius = torch.hypot(f[:, None], f[None, :])
    power[radius < 0.03] = 0  # ignore the region's outline and slow shading
    return float(radius.flatten()[power.argmax()])


def test_distractors_are_vivid_and_never_carry_the_class_texture():
    """The class textures peak at 0.2-0.3 cycles per pixel (periods 3.5-4.5 px, checker waves of 3.5-5 px); every
    textured distractor peaks below 0.16 (coarse stripes, coarse checker and dots: periods of 6 px and more)."""
    images, labels, masks = make_shapes(120, 2, num_distractors=(1, 1), noise=0.0)
    background = make_shapes(120, 2, num_distractors=(0, 0), noise=0.0)[0]  # same draws, no distractor
    decoy = _erode(((images - background).abs().sum(1) > 0.1) & ~_dilate(masks, 2), 2)
    assert (decoy.flatten(1).sum(1) > 100).float().mean() > 0.95  # the decoy is there
    textured = 0
    for image, object_mask, decoy_mask in zip(images, masks, decoy):
        assert 0.18 < _peak_frequency(image, _erode(object_mask[None], 2)[0]) < 0.33
        grey = image.mean(0)[decoy_mask]
        if decoy_mask.sum() > 100 and grey.std() > 0.05:  # a textured decoy (flat ones have no peak)
            textured += 1
            assert _peak_frequency(image, decoy_mask) < 0.16
    assert textured > 60
    _, sat = _hsv(images)
    assert (sat[decoy] > 0.35).float().mean() > 0.4  # vivid, like the object (the background is grey)


def test_every_distractor_texture_occurs():
    """All four distractor fills show up: flat fills have no band-pass or edge energy inside, textured ones do."""
    assert data.DISTRACTOR_TEXTURES == ("flat", "coarse stripes", "coarse checker", "dots")
    images, _, masks = make_shapes(100, 3, num_distractors=(1, 1), noise=0.0)
    background = make_shapes(100, 3, num_distractors=(0, 0), noise=0.0)[0]
    decoy = _erode(((images - background).abs().sum(1) > 0.1) & ~_dilate(masks, 2), 2)
    lap = _laplacian(images)[:, None]
    lap = F.pad(lap, (1, 1, 1, 1))[:, 0]
    busy = ((lap > 0.1) & decoy).flatten(1).sum(1) / decoy.flatten(1).sum(1).clamp(min=1)
    assert (busy < 0.02).sum() >= 10   # flat decoys
    assert (busy > 0.1).sum() >= 40    # textured decoys


def test_windowed_drawing_matches_full_image(monkeypatch):
    """The fast path draws shapes only inside small windows; drawing on the full grid must give the same result."""
    fast = make_shapes(64, 8, 57, num_distractors=(2, 4))

    def full_window(cx, cy, max_extent, size):
        grid = torch.arange(size).expand(cx.shape[0], size)
        return grid, grid

    monkeypatch.setattr(data, "_window", full_window)
    slow = make_shapes(64, 8, 57, num_distractors=(2, 4))
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- Dataset wrapper


def test_dataset_wrapper():
    images, labels, masks = make_shapes(30, 11, 64, noise=0.05)
    ds = ShapesDataset(30, 11, 64, noise=0.05)
    assert len(ds) == 30
    assert torch.equal(ds.images, images) and torch.equal(ds.labels, labels) and torch.equal(ds.masks, masks)
    assert ds.class_names == CLASS_NAMES
    img, lab, m = ds[7]
    assert torch.equal(img, images[7]) and int(lab) == int(labels[7]) and torch.equal(m, masks[7])
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    xb, yb, mb = next(iter(loader))
    assert xb.shape == (8, 3, 64, 64) and yb.shape == (8,) and mb.shape == (8, 64, 64)
    assert torch.equal(xb, images[:8])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(n=0, seed=0), ValueError, "n"),
        (dict(n=-3, seed=0), ValueError, "n"),
        (dict(n=2.0, seed=0), TypeError, "n"),
        (dict(n="4", seed=0), TypeError, "n"),
        (dict(n=True, seed=0), TypeError, "n"),
        (dict(n=4, seed=1.5), TypeError, "seed"),
        (dict(n=4, seed=None), TypeError, "seed"),
        (dict(n=4, seed=-1), ValueError, "seed"),
        (dict(n=4, seed=0, image_size=31), ValueError, "image_size"),
        (dict(n=4, seed=0, image_size=64.0), TypeError, "image_size"),
        (dict(n=4, seed=0, num_distractors=(3, 1)), ValueError, "num_distractors"),
        (dict(n=4, seed=0, num_distractors=(0, 99)), ValueError, "num_distractors"),
        (dict(n=4, seed=0, num_distractors=2), TypeError, "num_distractors"),
        (dict(n=4, seed=0, num_distractors=(1.0, 2)), TypeError, "num_distractors"),
        (dict(n=4, seed=0, noise=-0.1), ValueError, "noise"),
        (dict(n=4, seed=0, noise=float("nan")), ValueError, "noise"),
        (dict(n=4, seed=0, noise="high"), TypeError, "noise"),
    ],
)
def test_bad_input(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        make_shapes(**kwargs)


def test_bad_input_dataset():
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(4, 0, image_size=16)


def test_numpy_integers_accepted():
    a = make_shapes(np.int64(3), np.int32(5), np.int64(40))
    b = make_shapes(3, 5, 40)
    assert torch.equal(a[0], b[0])
