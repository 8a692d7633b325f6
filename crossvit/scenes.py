"""Two-object scenes: the shapes task with two class-textured objects of different classes in one image.

An explanation answers "why *this* class?": on a picture holding a warm striped object and a cool checkered one,
the map for "warm striped" should light the first object and the map for "cool checkered" the second (Chefer,
Gur and Wolf, CVPR 2021, Fig. 1). The single-object task of :mod:`crossvit.data` cannot show it, since every image
holds one class-textured object. Here every image holds two, of two different classes, each with its own mask, so
a class-specific explanation can be scored per class: the map for object k's class should point at object k.

The pieces are those of :func:`crossvit.data.make_shapes` (same background, textures, colours, outlines and
distractors; see its module docstring), arranged differently:

* **two objects** of classes ``labels[i, 0] != labels[i, 1]``: each filled with its class texture in a colour of
  its class's colour family, with a random outline, size (radius 11-17 px at 96 px, a little smaller than a single
  object so that two fit) and rotation; their bounding circles keep at least 4 px apart, so neither hides the other;
* **distractors** (by default 1 or 2, non-class fills, any hue) drawn first, never touching either object's
  bounding circle; no decoy (two objects of different classes already hold more than one colour family or texture);
* **pairs are balanced**: the 12 ordered pairs of different classes take turns (round-robin, then shuffled), so
  each class is object 0 and object 1 equally often.

``masks[i, k]`` is True exactly on object k's pixels (the two masks never overlap). Deterministic by ``seed`` as
:func:`crossvit.data.make_shapes` is: the same arguments give bit-identical tensors, whatever the global RNG.
The bundled model was trained on single-object images only; on these scenes its two largest logits are the two
objects' classes in most images (``benchmarks/explanations.py`` reports how often).
"""

from __future__ import annotations

import math

import torch

from . import data
from .data import (
    _BG_GREY,
    _BG_GRID,
    _BG_TINT,
    _CHECKER_CELL,
    _DIS_SIZE,
    _EXTENT,
    _PLACEMENT_TRIES,
    _REF_SIZE,
    _SHADE,
    _STRIPE_PERIOD,
    _TEXTURE_JITTER,
    _bspline_matrix,
    _distractor_weight,
    _paste,
    _shape_mask,
    _texture_weight,
    _uniform,
    _vivid,
    _window,
)

__all__ = ["OBJECTS", "PAIRS", "make_two_object_shapes"]

OBJECTS = 2
"""Objects per scene."""

PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b) for a in range(data.NUM_CLASSES) for b in range(data.NUM_CLASSES) if a != b)
"""The ordered class pairs a scene can hold (object 0's class, object 1's class), each equally often."""

_SCENE_OBJ_SIZE = (11.0, 17.0)  # object "radius" r at 96 px: smaller than a single object's 13-22, so two fit
_OBJECT_GAP = 4.0  # min free space between the two objects' bounding circles (px at 96)
_DISTRACTOR_GAP = 2.0


def _place_apart(g: torch.Generator, extent: torch.Tensor, image_size: int, circles: list, gap: float):
    """Centres for B shapes of bounding radius ``extent`` inside the image, keeping ``gap`` px from every circle
    ``(cx, cy, radius)`` in ``circles``: the first of ``_PLACEMENT_TRIES`` random candidates that fits.
    Returns ``(cx, cy, ok)``; ``ok`` is False where none fits."""
    b = extent.shape[0]
    u = torch.rand((b, _PLACEMENT_TRIES, 2), generator=g)
    span = ((image_size - 1) - 2.0 * extent).clamp(min=0.0)[:, None]
    cx = extent[:, None] + u[..., 0] * span
    cy = extent[:, None] + u[..., 1] * span
    valid = torch.ones_like(cx, dtype=torch.bool)
    for ax, ay, ar in circles:
        valid &= torch.hypot(cx - ax[:, None], cy - ay[:, None]) >= ar[:, None] + extent[:, None] + gap
    first = valid.to(torch.uint8).argmax(dim=1)
    rows = torch.arange(b)
    return cx[rows, first], cy[rows, first], valid.any(dim=1)


def _objects(g: torch.Generator, b: int, size: int, s: float):
    """Outline, radius, bounding radius and centre of both objects of ``b`` scenes; the second object is redrawn
    (size and place) until it keeps clear of the first."""
    ext_table = torch.tensor(_EXTENT)
    shape = torch.randint(0, len(data.SHAPES), (b, OBJECTS), generator=g)
    r = _uniform(g, (b, OBJECTS), _SCENE_OBJ_SIZE[0] * s, _SCENE_OBJ_SIZE[1] * s)
    ext = ext_table[shape] * r
    cx0, cy0, _ = _place_apart(g, ext[:, 0], size, [], 0.0)
    cx1, cy1, ok = _place_apart(g, ext[:, 1], size, [(cx0, cy0, ext[:, 0])], _OBJECT_GAP * s)
    while not bool(ok.all()):  # rare: redraw the second object smaller where it found no room
        redo = (~ok).nonzero().squeeze(1)
        r[redo, 1] = _uniform(g, (redo.numel(),), _SCENE_OBJ_SIZE[0] * s, _SCENE_OBJ_SIZE[0] * s * 1.2)
        ext[redo, 1] = ext_table[shape[redo, 1]] * r[redo, 1]
        x, y, ok_redo = _place_apart(g, ext[redo, 1], size, [(cx0[redo], cy0[redo], ext[redo, 0])], _OBJECT_GAP * s)
        cx1[redo], cy1[redo], ok[redo] = x, y, ok_redo
    return shape, r, ext, torch.stack([cx0, cx1], 1), torch.stack([cy0, cy1], 1)


def _render(g: torch.Generator, labels: torch.Tensor, size: int, num_distractors: tuple[int, int], noise: float,
            images: torch.Tensor, masks: torch.Tensor) -> None:
    """Render ``b`` scenes for ``labels`` ``(b, 2)`` into ``images`` ``(b, 3, H, W)`` and ``masks`` ``(b, 2, H, W)``."""
    b = labels.shape[0]
    s = size / _REF_SIZE
    rows = torch.arange(b)
    grey = _uniform(g, (b, 1, _BG_GRID, _BG_GRID), _BG_GREY[0], _BG_GREY[1])
    low = grey + _uniform(g, (b, 3, _BG_GRID, _BG_GRID), -_BG_TINT, _BG_TINT)
    basis = _bspline_matrix(size, _BG_GRID)
    torch.matmul(torch.matmul(basis, low), basis.t(), out=images)

    shape, r, ext, cx, cy = _objects(g, b, size, s)
    circles = [(cx[:, k], cy[:, k], ext[:, k]) for k in range(OBJECTS)]

    # distractors first (under the objects), clear of both objects
    lo, hi = num_distractors
    count = torch.randint(lo, hi + 1, (b,), generator=g)
    ext_table = torch.tensor(_EXTENT)
    dmax_ext = max(_EXTENT) * _DIS_SIZE[1] * s
    for j in range(hi):
        dshape = torch.randint(0, len(data.SHAPES), (b,), generator=g)
        dr = _uniform(g, (b,), _DIS_SIZE[0] * s * 0.8, _DIS_SIZE[1] * s * 0.8)
        dcx, dcy, ok = _place_apart(g, ext_table[dshape] * dr, size, circles, _DISTRACTOR_GAP * s)
        dangle = _uniform(g, (b,), 0.0, 2.0 * math.pi)
        dvivid = _vivid(g, b)
        dcol_a, dcol_b = 0.65 + 0.35 * dvivid, dvivid * _uniform(g, (b, 1), _SHADE[0], _SHADE[1])
        pattern = torch.randint(0, len(data.DISTRACTOR_TEXTURES), (b,), generator=g)
        pscale, pangle = _uniform(g, (b,), 0.0, 1.0), _uniform(g, (b,), 0.0, math.pi)
        pphase = _uniform(g, (b, 2), 0.0, 2.0 * math.pi)
        idx = (ok & (j < count)).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        xs, ys = _window(dcx[idx], dcy[idx], dmax_ext, size)
        m = _shape_mask(xs, ys, dshape[idx], dcx[idx], dcy[idx], dr[idx], dangle[idx])
        w = _distractor_weight(xs, ys, pattern[idx], dcx[idx], dcy[idx], pscale[idx], pangle[idx], pphase[idx],
                               s)[..., None]
        _paste(images, idx, xs, ys, m, dcol_b[idx, None, None, :] + (dcol_a - dcol_b)[idx, None, None, :] * w)

    # the two objects, each with its class's texture and colour family
    flat_masks = masks.view(b * OBJECTS, -1)
    for k in range(OBJECTS):
        texture = labels[:, k] % len(data.TEXTURES)
        colour = labels[:, k] // len(data.TEXTURES)
        angle = _uniform(g, (b,), 0.0, 2.0 * math.pi)
        tangle = (torch.randint(0, 2, (b,), generator=g) * (math.pi / 2)) * (texture == 0)
        tangle = tangle + _uniform(g, (b,), -_TEXTURE_JITTER, _TEXTURE_JITTER)
        tphase = _uniform(g, (b, 2), 0.0, 2.0 * math.pi)
        period = torch.where(texture == 0, _uniform(g, (b,), _STRIPE_PERIOD[0] * s, _STRIPE_PERIOD[1] * s),
                             _uniform(g, (b,), _CHECKER_CELL[0] * s, _CHECKER_CELL[1] * s))
        vivid = _vivid(g, b, colour)
        col_a, col_b = 0.65 + 0.35 * vivid, vivid * _uniform(g, (b, 1), _SHADE[0], _SHADE[1])
        xs, ys = _window(cx[:, k], cy[:, k], max(_EXTENT) * _SCENE_OBJ_SIZE[1] * s, size)
        m = _shape_mask(xs, ys, shape[:, k], cx[:, k], cy[:, k], r[:, k], angle)
        w = _texture_weight(xs, ys, texture, cx[:, k], cy[:, k], period, tangle, tphase)[..., None]
        written = _paste(images, rows, xs, ys, m, col_b[:, None, None, :] + (col_a - col_b)[:, None, None, :] * w)
        pixels = size * size
        flat_masks[(written // pixels) * OBJECTS + k, written % pixels] = True

    if noise > 0:
        images += torch.randn(images.shape, generator=g) * noise
    images.clamp_(0.0, 1.0)


def make_two_object_shapes(
    n: int,
    seed: int,
    image_size: int = 96,
    *,
    num_distractors: tuple[int, int] = (1, 2),
    noise: float = 0.03,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` scenes with two class-textured objects of different classes each (see the module docstring).

    Args:
        n: number of images (>= 1).
        seed: int in ``[0, 2**63)``; the output is a deterministic function of all arguments but ``progress``.
        image_size: side length in pixels (>= 32); the geometry scales with ``image_size / 96``.
        num_distractors: inclusive ``(min, max)`` number of distractors per image (max <= 8); one that finds no
            room clear of both objects is left out.
        noise: std of the Gaussian pixel noise (0 disables it).
        progress: show a tqdm progress bar.

    Returns:
        ``images`` ``(n, 3, H, W)`` float32 in ``[0, 1]``; ``labels`` ``(n, 2)`` int64, the classes of object 0
        and object 1 (always different); ``masks`` ``(n, 2, H, W)`` bool, ``masks[i, k]`` True exactly on object
        k's pixels.
    """
    n, seed, image_size, num_distractors, noise = data._validate(n, seed, image_size, num_distractors, noise)
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    pairs = torch.tensor(PAIRS)
    labels = pairs[torch.arange(n) % len(PAIRS)][torch.randperm(n, generator=g)]
    images = torch.empty((n, 3, image_size, image_size), dtype=torch.float32)
    masks = torch.zeros((n, OBJECTS, image_size, image_size), dtype=torch.bool)
    chunk = max(1, (256 * _REF_SIZE**2) // image_size**2)
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=math.ceil(n / chunk), desc="scenes", unit="chunk")
    for i in starts:
        j = min(i + chunk, n)
        _render(g, labels[i:j], image_size, num_distractors, noise, images[i:j], masks[i:j])
    return images, labels, masks
