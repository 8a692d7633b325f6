"""Synthetic "shapes" classification task with ground-truth object masks.

Every image shows exactly one *object* on a noisy background together with a
few *distractor* shapes.  The class of the image is the object's
``colour family x texture``:

======  ====================
label   class name
======  ====================
0       ``warm striped``
1       ``warm checkered``
2       ``cool striped``
3       ``cool checkered``
======  ====================

The object's outline (disk, square or equilateral triangle, randomly rotated)
is drawn at random and does not decide the class.

Why this task
-------------
It is meant for a two-branch CrossViT (fine patches on the full image, coarse
patches on a downsampled copy) and for checking explanation maps, so the class
evidence sits only on the object and no global statistic of the image gives
the class: a model has to find the object and read it.

* **Texture is fine-grained.**  The object is filled with a two-colour
  texture: parallel stripes (period 3.5-4.5 px at 96 px) running along one of
  the image axes (which one is random), or an axis-aligned checkerboard (cells
  2.5-3.5 px, i.e. period 5-7 px); both are tilted by a random angle of at
  most 10 degrees and have a random phase.  Both textures have about the same
  dominant spatial frequency, so they differ in structure, not in coarseness:
  stripes put their spectral energy near the axes, a checkerboard (a sum of
  two diagonal waves) near the diagonals.  The 8 flips and transposes of the
  square map each texture class onto itself.  A 12 px patch of the full image
  holds about three periods; after a 96 -> 80 px resize the periods shrink to
  ~2.9-3.8 px (stripes) and ~4.2-5.8 px (checker), so the texture is best read
  at full resolution.  (Textures at *any* orientation, tried first, made the
  two classes differ only in whether one or two perpendicular orientations are
  present; no small CrossViT learned that within the 10-minute training budget,
  while the axis / diagonal contrast is learned within a few hundred steps.)
* **Colour is read on the object only.**  The texture's two colours are a
  light tint and a dark shade of one colour whose hue lies in the class's
  family (warm: red to orange-yellow; cool: cyan to blue).  The first
  distractor is the object's *decoy*: the same outline and size, in the other
  colour family (where no room is left for it, at 0.7 of the size, and in rare
  crowded images not at all).  So the image shows about as much warm as cool
  colour, and counting colours over the whole image says nothing about the
  label (``tests/test_data.py`` checks it); the colour must be read where the
  fine texture is.
* **Distractors are vivid and textured, never with the class texture.**
  Distractors (disk, square or triangle, about as large as the object, any hue
  but the decoy's) use the object's light-tint / dark-shade colouring and one
  of the fills in :data:`DISTRACTOR_TEXTURES`: flat (the mean of the two
  colours), coarse stripes (period 9-14 px), a coarse checkerboard (cells
  5.5-8 px) or dots on a lattice (spacing 8-11 px), at any orientation.  Both
  the coarse structure (stripes vs checker) and vivid colour of both families
  appear off the object, so "find the *fine* texture" is the only way to the
  object; the coarse fills are readable by the large patches too.
* **The object's location is known.**  ``masks[i]`` is ``True`` exactly on
  the object's pixels.  Distractors never overlap the object's bounding
  circle (they may overlap each other; the decoy is drawn after the others,
  the object last), so all of the object's pixels are visible.  A distractor
  for which no free spot is found is left out, so an image has *up to*
  ``num_distractors[1]`` distractors.

Geometry scales with ``image_size``: every length above (object size,
distractor size, texture period, gaps) is given for 96 px and multiplied by
``image_size / 96``.

Pixel values
------------
Images are ``float32`` RGB in ``[0, 1]`` (clamped), shape ``(n, 3, H, W)``,
not normalised.  The background is a smooth greyish colour field (a cubic
B-spline surface through a random 6x6 control grid of grey levels in
``[0.3, 0.7]`` with a small colour tint) plus Gaussian pixel noise of std
``noise`` over the whole image.

Determinism
-----------
All randomness comes from a private ``torch.Generator`` seeded with ``seed``
(:func:`crossvit.utils.seeded_generator`: every bit of a seed counts, so the
seeds of :data:`crossvit.utils.SEED_RANGE` give distinct images): the same
``(n, seed, image_size, kwargs)`` always gives bit-identical tensors,
independent of the global RNG state.  Labels are exactly balanced
(round-robin over the classes, then shuffled).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch.utils.data import Dataset

from .utils import check_bool, check_int, check_seed, progress_bar, seeded_generator

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "SHAPES", "COLOURS", "TEXTURES", "make_shapes", "ShapesDataset"]

SHAPES: tuple[str, ...] = ("disk", "square", "triangle")
"""Object outlines, drawn at random: the outline does not decide the class."""

COLOURS: tuple[str, ...] = ("warm", "cool")
"""Object colour families; ``label // len(TEXTURES)`` indexes this. Distractors take any hue."""

TEXTURES: tuple[str, ...] = ("striped", "checkered")
"""Object textures; ``label % len(TEXTURES)`` indexes this."""

DISTRACTOR_TEXTURES: tuple[str, ...] = ("flat", "coarse stripes", "coarse checker", "dots")
"""Fills of the distractor shapes: none of them is a class texture (see the module docstring)."""

CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {t}" for c in COLOURS for t in TEXTURES)
"""Human-readable class names, indexed by label."""

HELD_OUT_SEED_BASE = 2**40
"""Training data seeds lie in ``[0, 2**32)``, below ``HELD_OUT_SEED_BASE``; evaluation uses ``HELD_OUT_SEED_BASE +
seed`` for a trainer seed in ``[0, 2**32)``. Seeds at or above ``UNUSED_SEED_BASE`` are never touched by the trainer:
tests and benchmarks draw their images there."""

UNUSED_SEED_BASE = HELD_OUT_SEED_BASE + 2**32
"""The first data seed that no training run uses, for training or for evaluation."""

NUM_CLASSES: int = len(CLASS_NAMES)

# Lengths in pixels at the reference size of 96 px (scaled by image_size / 96).
_REF_SIZE = 96
_OBJ_SIZE = (13.0, 22.0)  # object "radius" r
# HSV hue ranges (in sixths of the colour circle) of the object's colour, per entry of COLOURS:
# warm = red to orange-yellow (-24..48 degrees), cool = cyan to blue (180..252 degrees)
_COLOUR_HUES = ((-0.4, 0.8), (3.0, 4.2))
_DIS_SIZE = (10.0, 17.0)  # distractor "radius" r: about as large as the object
_STRIPE_PERIOD = (3.5, 4.5)
_CHECKER_CELL = (2.5, 3.5)
_TEXTURE_JITTER = math.radians(10.0)  # max deviation of the texture orientation from the axes
_BG_GRID = 6  # background control grid (cubic B-spline)
_BG_GREY = (0.3, 0.7)  # grey level of the background control values
_BG_TINT = 0.08  # +- per-channel colour tint of the background control values
_SATURATION = (0.7, 1.0)  # HSV saturation of object / distractor colours (value 1, any hue)
_SHADE = (0.1, 0.3)  # dark texture colour = vivid colour * shade
# Distractor fills (never the class texture), with their scale range at 96 px: the stripe period, the checker cell,
# the dot spacing; all at least ~1.5x coarser than the class textures and at a random orientation.
_DIS_STRIPE_PERIOD = (9.0, 14.0)
_DIS_CHECKER_CELL = (5.5, 8.0)
_DIS_DOT_SPACING = (8.0, 11.0)
_GAP = 2.0  # min free space between object's and distractor's bounding circles
# Bounding-circle radius relative to r, per shape (disk, square, triangle):
# square half-side = 0.85 r, triangle circumradius = 1.25 r.
_SQUARE_HALF = 0.85
_TRIANGLE_CIRCUM = 1.25
_EXTENT = (1.0, _SQUARE_HALF * math.sqrt(2.0), _TRIANGLE_CIRCUM)
_PLACEMENT_TRIES = 64
_DECOY_SHRINK = 0.7  # relative size of a decoy where one as large as the object does not fit
_CHUNK = 256  # images rendered per vectorised batch at <= 96 px (fewer for larger images)
_MAX_DISTRACTORS = 8


def _validate(n: object, seed: object, image_size: object, num_distractors: object, noise: object) -> tuple[int, int, int, tuple[int, int], float]:
    """Check the arguments of :func:`make_shapes`; raise TypeError/ValueError naming the problem."""
    n = check_int("n", n, 1)
    seed = check_seed("seed", seed)
    image_size = check_int("image_size", image_size, 32)
    if not isinstance(num_distractors, (tuple, list)) or len(num_distractors) != 2:
        raise TypeError(f"num_distractors must be a (min, max) pair of ints, got {num_distractors!r}")
    lo = check_int("num_distractors[0]", num_distractors[0])
    hi = check_int("num_distractors[1]", num_distractors[1])
    if not 0 <= lo <= hi <= _MAX_DISTRACTORS:
        raise ValueError(f"num_distractors must satisfy 0 <= min <= max <= {_MAX_DISTRACTORS}, got {(lo, hi)}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise must be a float, got {type(noise).__name__} ({noise!r})")
    noise = float(noise)
    if not (math.isfinite(noise) and noise >= 0.0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    return n, seed, image_size, (lo, hi), noise


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    """Uniform samples in ``[lo, hi)`` from generator ``g``."""
    return torch.rand(shape, generator=g) * (hi - lo) + lo


def _shape_mask(
    xs: torch.Tensor, ys: torch.Tensor, kind: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, angle: torch.Tensor
) -> torch.Tensor:
    """Boolean masks ``(B, Hw, Ww)`` of B shapes on per-image pixel grids.

    ``xs`` ``(B, Ww)`` and ``ys`` ``(B, Hw)`` are the pixel coordinates of each
    image's drawing window; ``kind`` indexes :data:`SHAPES`; ``(cx, cy)`` is the
    centre, ``r`` the size parameter and ``angle`` the rotation (radians), all
    ``(B,)``.  Each shape kind is computed only on its own subset of the batch.
    """
    b = kind.shape[0]
    out = torch.zeros((b, ys.shape[1], xs.shape[1]), dtype=torch.bool)
    for k in range(len(SHAPES)):
        idx = (kind == k).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        dx = xs[idx, None, :] - cx[idx, None, None]  # (b, 1, W)
        dy = ys[idx, :, None] - cy[idx, None, None]  # (b, H, 1)
        rk = r[idx, None, None]
        if k == 0:  # disk of radius r
            m = dx * dx + dy * dy <= rk * rk
        else:
            a = angle[idx, None, None]
            c, s = torch.cos(a), torch.sin(a)
            if k == 1:  # square, half-side 0.85 r
                u = dx * c + dy * s
                v = dy * c - dx * s
                m = torch.maximum(u.abs(), v.abs()) <= _SQUARE_HALF * rk
            else:  # equilateral triangle, circumradius 1.25 r -> inradius 0.625 r
                inr = 0.5 * _TRIANGLE_CIRCUM * rk
                m = None
                for j in range(3):  # outward edge normals at angle + 270, 30, 150 degrees
                    phi = 1.5 * math.pi + j * (2.0 * math.pi / 3.0)
                    cj = c * math.cos(phi) - s * math.sin(phi)  # cos(angle + phi)
                    sj = s * math.cos(phi) + c * math.sin(phi)  # sin(angle + phi)
                    mj = dx * cj + dy * sj <= inr
                    m = mj if m is None else m & mj
        out[idx] = m
    return out


def _texture_weight(
    xs: torch.Tensor, ys: torch.Tensor, texture: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, scale: torch.Tensor,
    angle: torch.Tensor, phase: torch.Tensor,
) -> torch.Tensor:
    """Per-pixel mixing weight ``(B, Hw, Ww)`` in [0, 1] between the two texture colours.

    Grids as in :func:`_shape_mask`; ``texture`` indexes :data:`TEXTURES`;
    ``scale`` is the stripe period or the checker cell size in pixels;
    ``phase`` is ``(B, 2)`` in radians.  Edges are slightly softened (a steep
    clamp of a sinusoid) to limit aliasing.
    """
    b = texture.shape[0]
    out = torch.empty((b, ys.shape[1], xs.shape[1]))
    for t in range(len(TEXTURES)):
        idx = (texture == t).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        dx = xs[idx, None, :] - cx[idx, None, None]
        dy = ys[idx, :, None] - cy[idx, None, None]
        a = angle[idx, None, None]
        c, s = torch.cos(a), torch.sin(a)
        sc = scale[idx, None, None]
        p0 = phase[idx, 0, None, None]
        if t == 0:  # stripes of period `sc` across direction `angle`
            f = torch.sin((dx * c + dy * s) * (2.0 * math.pi / sc) + p0)
            w = 0.5 + 1.5 * f
        else:  # checkerboard with cells of `sc` px (period 2 sc), rotated by `angle`
            p1 = phase[idx, 1, None, None]
            f = torch.sin((dx * c + dy * s) * (math.pi / sc) + p0) * torch.sin((dy * c - dx * s) * (math.pi / sc) + p1)
            w = 0.5 + 3.0 * f
        out[idx] = w.clamp_(0.0, 1.0)
    return out


def _distractor_weight(
    xs: torch.Tensor, ys: torch.Tensor, pattern: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, u: torch.Tensor,
    angle: torch.Tensor, phase: torch.Tensor, s: float,
) -> torch.Tensor:
    """Per-pixel mixing weight ``(B, Hw, Ww)`` in [0, 1] of a distractor fill (indexes :data:`DISTRACTOR_TEXTURES`).

    ``u`` in ``[0, 1)`` picks the fill's scale within its range (lengths at 96 px, times ``s = image_size / 96``);
    ``angle`` rotates it; ``phase`` is ``(B, 2)``. A flat fill has weight 0.5 everywhere (the mean of the two
    colours).
    """
    b = pattern.shape[0]
    out = torch.full((b, ys.shape[1], xs.shape[1]), 0.5)
    dx = xs[:, None, :] - cx[:, None, None]
    dy = ys[:, :, None] - cy[:, None, None]
    c, sn = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    along, across = dx * c + dy * sn, dy * c - dx * sn
    p0, p1 = phase[:, 0, None, None], phase[:, 1, None, None]
    for k, (lo, hi) in ((1, _DIS_STRIPE_PERIOD), (2, _DIS_CHECKER_CELL), (3, _DIS_DOT_SPACING)):
        idx = (pattern == k).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        sc = ((lo + (hi - lo) * u[idx]) * s)[:, None, None]
        a, r = along[idx], across[idx]
        if k == 1:  # coarse stripes
            w = 0.5 + 1.5 * torch.sin(a * (2.0 * math.pi / sc) + p0[idx])
        elif k == 2:  # coarse checker
            w = 0.5 + 3.0 * torch.sin(a * (math.pi / sc) + p0[idx]) * torch.sin(r * (math.pi / sc) + p1[idx])
        else:  # dots on a square lattice: bright where both cosines are near their maximum
            f = torch.cos(a * (2.0 * math.pi / sc) + p0[idx]) + torch.cos(r * (2.0 * math.pi / sc) + p1[idx])
            w = (f - 1.0) * 2.5
        out[idx] = w.clamp_(0.0, 1.0)
    return out


def _place(
    g: torch.Generator, b: int, extent: torch.Tensor, image_size: int,
    avoid: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None, gap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random centres for B shapes with bounding radius ``extent`` that lie fully inside the image.

    If ``avoid`` is given (a list of circles ``(cx, cy, radius)``, possibly empty), the bounding circles must keep
    at least ``gap`` px away from every one of them; ``_PLACEMENT_TRIES`` candidates are drawn and the first valid
    one is used.  Returns ``(cx, cy, ok)`` where ``ok`` is False where no valid candidate was found.
    """
    tries = 1 if avoid is None else _PLACEMENT_TRIES
    u = torch.rand((b, tries, 2), generator=g)
    span = ((image_size - 1) - 2.0 * extent).clamp(min=0.0)[:, None]  # centre in [extent, size - 1 - extent]
    cx = extent[:, None] + u[..., 0] * span
    cy = extent[:, None] + u[..., 1] * span
    if avoid is None:
        return cx[:, 0], cy[:, 0], torch.ones(b, dtype=torch.bool)
    valid = torch.ones_like(cx, dtype=torch.bool)
    for ax, ay, ar in avoid:
        valid &= torch.hypot(cx - ax[:, None], cy - ay[:, None]) >= ar[:, None] + extent[:, None] + gap
    first = valid.to(torch.uint8).argmax(dim=1)  # index of the first valid try (0 if none)
    rows = torch.arange(b)
    return cx[rows, first], cy[rows, first], valid.any(dim=1)


def _vivid(g: torch.Generator, b: int, colour: torch.Tensor | None = None) -> torch.Tensor:
    """``(b, 3)`` saturated RGB colours: random hue (within ``_COLOUR_HUES[colour]`` when ``colour`` is given),
    saturation in ``_SATURATION``, HSV value 1."""
    hue = torch.rand((b, 1), generator=g) * 6.0
    if colour is not None:
        lo = torch.tensor([h[0] for h in _COLOUR_HUES])[colour][:, None]
        hi = torch.tensor([h[1] for h in _COLOUR_HUES])[colour][:, None]
        hue = (lo + (hi - lo) * hue / 6.0) % 6.0
    sat = _uniform(g, (b, 1), _SATURATION[0], _SATURATION[1])
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue) % 6.0  # standard HSV -> RGB, channels R, G, B
    return 1.0 - sat * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def _bspline_matrix(size: int, k: int) -> torch.Tensor:
    """``(size, k)`` uniform cubic B-spline basis: ``k`` control points spread over ``size`` pixels.

    Rows are non-negative and sum to 1, so a spline through control values in
    ``[lo, hi]`` stays in ``[lo, hi]``; the result is twice differentiable
    (no visible kinks, unlike bilinear interpolation).
    """
    t = torch.linspace(0.0, k - 3.0, size, dtype=torch.float64)
    seg = torch.floor(t).clamp_(max=k - 4)
    u = t - seg
    basis = torch.stack([(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3], dim=1) / 6.0
    cols = seg.long()[:, None] + torch.arange(4)
    return torch.zeros(size, k, dtype=torch.float64).scatter_(1, cols, basis).float()


def _window(cx: torch.Tensor, cy: torch.Tensor, max_extent: float, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer pixel coordinates ``(xs (B, w), ys (B, w))`` of square windows, inside the image,
    that contain every shape of bounding radius <= ``max_extent`` centred at ``(cx, cy)``.

    Drawing only inside these windows instead of the whole image is what makes
    generation fast.
    """
    w = min(int(math.ceil(2.0 * max_extent)) + 4, image_size)
    ar = torch.arange(w)
    x0 = torch.floor(cx - w / 2).long().clamp(0, image_size - w)
    y0 = torch.floor(cy - w / 2).long().clamp(0, image_size - w)
    return x0[:, None] + ar, y0[:, None] + ar


def _paste(img: torch.Tensor, idx: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """In place on a contiguous ``(B, 3, H, W)`` batch: for each window ``k`` (image ``idx[k]``, pixel
    coordinates ``xs[k]``, ``ys[k]``) set the pixels where ``mask[k]`` to ``fill[k]`` (``(h, w, 3)``).

    Returns the flat ``(H * W)``-based pixel indices ``idx * H * W + y * W + x`` that were written.
    """
    _, _, h, w = img.shape
    lin = (idx[:, None, None] * (3 * h) + ys[:, :, None]) * w + xs[:, None, :]  # channel 0 of each pixel
    sel = lin[mask]
    sel3 = (sel[None, :] + torch.arange(3)[:, None] * (h * w)).view(-1)  # (3 * npix,) channel-major
    img.view(-1).index_copy_(0, sel3, fill[mask].t().reshape(-1))
    return sel - (sel // (3 * h * w)) * (2 * h * w)  # idx * h * w + y * w + x


def _chunk_size(image_size: int) -> int:
    """Images rendered per vectorised batch: _CHUNK at <= 96 px, fewer for larger images (same pixel count)."""
    return max(1, min(_CHUNK, (_CHUNK * _REF_SIZE**2) // image_size**2))


def _chunk_ranges(n: int, chunk: int, progress: bool, desc: str):
    """``(start, stop)`` of each chunk of ``n`` images, with a tqdm bar over the chunks when ``progress``."""
    starts = range(0, n, chunk)
    if check_bool("progress", progress):
        starts = progress_bar(starts, total=math.ceil(n / chunk), desc=desc, unit="chunk", progress=True)
    return ((i, min(i + chunk, n)) for i in starts)


def _draw_background(g: torch.Generator, size: int, img: torch.Tensor) -> None:
    """The smooth low-frequency colour field into ``img`` (b, 3, H, W) (pixel noise comes at the end): a cubic
    B-spline surface through a random 6x6 control grid, as two small matmuls, basis @ low @ basis^T."""
    b = img.shape[0]
    grey = _uniform(g, (b, 1, _BG_GRID, _BG_GRID), _BG_GREY[0], _BG_GREY[1])
    low = grey + _uniform(g, (b, 3, _BG_GRID, _BG_GRID), -_BG_TINT, _BG_TINT)
    basis = _bspline_matrix(size, _BG_GRID)
    torch.matmul(torch.matmul(basis, low), basis.t(), out=img)


def _tint_and_shade(g: torch.Generator, b: int, colour: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two colours of a textured shape: a light tint and a dark shade of one vivid colour (of family
    ``colour`` when given), each (b, 3)."""
    vivid = _vivid(g, b, colour)
    return 0.65 + 0.35 * vivid, vivid * _uniform(g, (b, 1), _SHADE[0], _SHADE[1])


def _draw_class_texture(g: torch.Generator, labels: torch.Tensor, s: float, *,
                        texture: torch.Tensor | None = None, family: torch.Tensor | None = None,
                        stripe_period: tuple[float, float] = _STRIPE_PERIOD,
                        checker_cell: tuple[float, float] = _CHECKER_CELL) -> dict[str, torch.Tensor]:
    """The class texture of objects of class ``labels`` (b,): texture kind, orientation, phase, period and its
    two colours (see the module docstring), as the keyword arguments of :func:`_paint_object`.

    By default the texture is ``labels % 2`` and the colour family ``labels // 2``, as :data:`CLASS_NAMES` says;
    another task passes its own ``texture`` (and ``family``, or None for any hue) and its period ranges (px at 96).
    """
    b = labels.shape[0]
    if texture is None:
        texture, family = labels % len(TEXTURES), labels // len(TEXTURES)
    # Texture orientation: stripes run along one of the image axes (which one is random), checker cells are
    # axis-aligned; both are jittered by up to _TEXTURE_JITTER.  So stripes put their energy near the axes of the
    # 2-D spectrum and checkers (a sum of two diagonal waves) near the diagonals; the 8 flips/transposes keep this.
    tangle = (torch.randint(0, 2, (b,), generator=g) * (math.pi / 2)) * (texture == 0)
    tangle = tangle + _uniform(g, (b,), -_TEXTURE_JITTER, _TEXTURE_JITTER)
    tphase = _uniform(g, (b, 2), 0.0, 2.0 * math.pi)
    period = torch.where(
        texture == 0,
        _uniform(g, (b,), stripe_period[0] * s, stripe_period[1] * s),
        _uniform(g, (b,), checker_cell[0] * s, checker_cell[1] * s),
    )
    # Texture colours: a light tint and a dark shade of one colour of the class's family, so the texture has
    # strong contrast in every channel (what a small ViT picks up first) and its mean still reads warm or cool.
    col_a, col_b = _tint_and_shade(g, b, family)
    return {"texture": texture, "tangle": tangle, "tphase": tphase, "period": period, "col_a": col_a,
            "col_b": col_b}


def _paint_object(img: torch.Tensor, shape: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor,
                  angle: torch.Tensor, max_extent: float, *, texture: torch.Tensor, tangle: torch.Tensor,
                  tphase: torch.Tensor, period: torch.Tensor, col_a: torch.Tensor, col_b: torch.Tensor
                  ) -> torch.Tensor:
    """Paint one textured object on every image of ``img``; returns the flat pixel indices written (see
    :func:`_paste`): exactly the object's pixels."""
    xs, ys = _window(cx, cy, max_extent, img.shape[-1])
    m = _shape_mask(xs, ys, shape, cx, cy, r, angle)
    w = _texture_weight(xs, ys, texture, cx, cy, period, tangle, tphase)[..., None]
    fill = col_b[:, None, None, :] + (col_a - col_b)[:, None, None, :] * w
    return _paste(img, torch.arange(img.shape[0]), xs, ys, m, fill)


def _draw_distractor(g: torch.Generator, img: torch.Tensor, shown: torch.Tensor, shape: torch.Tensor,
                     cx: torch.Tensor, cy: torch.Tensor, r: torch.Tensor, colour: torch.Tensor | None,
                     max_extent: float, s: float) -> None:
    """Draw the look of one distractor per image (rotation, colours of family ``colour`` or any hue, fill, its
    scale, angle and phase) and paint it on the images ``shown`` (indices; the draws are made for every image)."""
    b = img.shape[0]
    angle = _uniform(g, (b,), 0.0, 2.0 * math.pi)
    col_a, col_b = _tint_and_shade(g, b, colour)
    pattern = torch.randint(0, len(DISTRACTOR_TEXTURES), (b,), generator=g)
    pscale = _uniform(g, (b,), 0.0, 1.0)
    pangle = _uniform(g, (b,), 0.0, math.pi)
    pphase = _uniform(g, (b, 2), 0.0, 2.0 * math.pi)
    if shown.numel() == 0:
        return
    xs, ys = _window(cx[shown], cy[shown], max_extent, img.shape[-1])
    m = _shape_mask(xs, ys, shape[shown], cx[shown], cy[shown], r[shown], angle[shown])
    w = _distractor_weight(xs, ys, pattern[shown], cx[shown], cy[shown], pscale[shown], pangle[shown],
                           pphase[shown], s)[..., None]
    _paste(img, shown, xs, ys, m, col_b[shown, None, None, :] + (col_a - col_b)[shown, None, None, :] * w)


def _render_chunk(
    g: torch.Generator, labels: torch.Tensor, image_size: int, num_distractors: tuple[int, int], noise_bank: torch.Tensor | None,
    img: torch.Tensor, masks: torch.Tensor,
) -> None:
    """Render one batch of images for the given labels into ``img`` ``(b, 3, H, W)`` (contiguous) and
    ``masks`` ``(b, H, W)`` (contiguous, all False on entry)."""
    b = labels.shape[0]
    size = image_size
    s = size / _REF_SIZE
    ext_table = torch.tensor(_EXTENT)
    _draw_background(g, size, img)

    # Object parameters (drawn first so that they do not depend on the distractors).
    colour = labels // len(TEXTURES)  # index into COLOURS
    shape = torch.randint(0, len(SHAPES), (b,), generator=g)  # the outline is a nuisance, not the class
    r = _uniform(g, (b,), _OBJ_SIZE[0] * s, _OBJ_SIZE[1] * s)
    ext = ext_table[shape] * r
    ocx, ocy, _ = _place(g, b, ext, size)
    oangle = _uniform(g, (b,), 0.0, 2.0 * math.pi)
    look = _draw_class_texture(g, labels, s)

    # Distractors: as vivid as the object, filled with a texture that is never the class texture (flat, coarse
    # stripes, coarse checker or dots), never overlapping the object's bounding circle.  The first one is the
    # object's *decoy*: same outline and size, the other colour family; so the image holds as much of the other
    # family's colour as of the object's, and only the texture says which of the two shapes to read the colour from.
    # The others take any hue and size, and are drawn first.
    lo, hi = num_distractors
    count = torch.randint(lo, hi + 1, (b,), generator=g)
    dmax_ext = max(_EXTENT) * max(_DIS_SIZE[1], _OBJ_SIZE[1]) * s
    for j in reversed(range(hi)):  # the decoy (j = 0) last, so that no other distractor hides it
        dshape = torch.randint(0, len(SHAPES), (b,), generator=g)
        dr = _uniform(g, (b,), _DIS_SIZE[0] * s, _DIS_SIZE[1] * s)
        if j == 0:  # the decoy
            dshape, dr = shape, r
        dext = ext_table[dshape] * dr
        dcx, dcy, ok = _place(g, b, dext, size, avoid=[(ocx, ocy, ext)], gap=_GAP * s)
        if j == 0:  # where a decoy as large as the object finds no room, try one at _DECOY_SHRINK of its size
            small_r = dr * _DECOY_SHRINK
            scx, scy, sok = _place(g, b, ext_table[dshape] * small_r, size, avoid=[(ocx, ocy, ext)],
                                   gap=_GAP * s)
            dr, dcx, dcy = torch.where(ok, dr, small_r), torch.where(ok, dcx, scx), torch.where(ok, dcy, scy)
            ok = ok | sok
        shown = (ok & (j < count)).nonzero().squeeze(1)
        _draw_distractor(g, img, shown, dshape, dcx, dcy, dr, (1 - colour) if j == 0 else None, dmax_ext, s)

    # The object, drawn last (on top): masks are exactly its pixels.
    masks.view(-1)[_paint_object(img, shape, ocx, ocy, r, oangle, max(_EXTENT) * _OBJ_SIZE[1] * s, **look)] = True

    if noise_bank is not None:
        # Pixel noise: consecutive fields of the per-call bank from a random offset (a cheap contiguous slice).
        off = int(torch.randint(0, noise_bank.shape[0] - b + 1, (1,), generator=g))
        img += noise_bank[off:off + b]
    img.clamp_(0.0, 1.0)


def make_shapes(
    n: int,
    seed: int,
    image_size: int = 96,
    *,
    num_distractors: tuple[int, int] = (2, 4),
    noise: float = 0.03,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` synthetic shape images with labels and object masks.

    Args:
        n: number of images (>= 1).
        seed: int in ``[0, 2**64)`` (:data:`crossvit.utils.SEED_RANGE`); the
            output is a deterministic function of all arguments (except
            ``progress``) and ignores the global RNG; distinct seeds give
            distinct images.
        image_size: side length H = W in pixels (>= 32); all geometry scales
            with ``image_size / 96``.
        num_distractors: inclusive ``(min, max)`` number of distractor
            shapes per image, the decoy included (max <= 8; with 0 there is
            no decoy and the image's colours give the class away).
        noise: std of the Gaussian pixel noise added to the whole image (0
            disables it).  For speed, each call draws a bank of at most 512
            noise fields (fewer for images above 96 px) and every image gets
            one of them (images rendered in the same chunk get different
            ones); the noise is independent of the label, so the reuse is
            harmless.
        progress: show a tqdm progress bar.

    Returns:
        ``images`` ``(n, 3, H, W)`` float32 in ``[0, 1]``; ``labels`` ``(n,)``
        int64 indexing :data:`CLASS_NAMES` (exactly balanced up to
        ``n % NUM_CLASSES``); ``masks`` ``(n, H, W)`` bool, True exactly on
        the object's pixels.
    """
    n, seed, image_size, num_distractors, noise = _validate(n, seed, image_size, num_distractors, noise)
    g = seeded_generator(seed)
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    # Chunks of about 256 * 96 * 96 pixels; the noise bank holds two chunks' worth of fields.
    chunk = _chunk_size(image_size)
    noise_bank = None
    if noise > 0:
        noise_bank = torch.randn((min(n, 2 * chunk), 3, image_size, image_size), generator=g).mul_(noise)
    images = torch.empty((n, 3, image_size, image_size), dtype=torch.float32)
    masks = torch.zeros((n, image_size, image_size), dtype=torch.bool)
    for i, j in _chunk_ranges(n, chunk, progress, "shapes"):
        _render_chunk(g, labels[i:j], image_size, num_distractors, noise_bank, images[i:j], masks[i:j])
    return images, labels, masks


class ShapesDataset(Dataset):
    """Map-style dataset wrapping :func:`make_shapes` (all images are generated up front).

    ``dataset[i]`` returns ``(image (3, H, W) float32, label () int64, mask (H, W) bool)``.
    Attributes ``images``, ``labels``, ``masks`` hold the full tensors and
    ``class_names`` the class names (:data:`CLASS_NAMES`).
    """

    class_names: tuple[str, ...] = CLASS_NAMES
    num_classes: int = NUM_CLASSES

    def __init__(self, n: int, seed: int, image_size: int = 96, **kwargs) -> None:
        """Generate the data; ``kwargs`` are passed to :func:`make_shapes`."""
        self.image_size = image_size
        self.images, self.labels, self.masks = make_shapes(n, seed, image_size, **kwargs)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index], self.masks[index]
