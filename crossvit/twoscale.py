"""The two-scale shapes task: a class that needs a fine texture *and* a large arrangement.

The shapes task of :mod:`crossvit.data` is solved by either branch of a CrossViT alone, so it cannot show what the
second branch adds. Here the class has two halves, each readable at one scale only:

* **a fine texture** (the first half): one *object* (disk, square or triangle, radius 11-15 px at 96 px) is filled
  with parallel stripes (period 2.4-3.0 px) or an axis-aligned checkerboard (cells 1.5-1.9 px, period 3-3.8 px), in
  a light tint and a dark shade of a random vivid hue, as in :mod:`crossvit.data` but about 1.4x finer. A branch
  that sees the image at full resolution reads it. A copy at half resolution holds it only as an artefact: the
  texture lies above that copy's Nyquist frequency (0.25 cycles per original pixel), so a plain bicubic resize
  folds it into coarser waves (which a ViT learns to read), while an anti-aliased one
  (``PaperConfig.resize_antialias``) flattens it to about a sixth of its contrast, near the object's mean colour
  (``tests/test_twoscale.py``; how well ViTs on either copy read it: ``benchmarks/two_scales.py``);
* **a large arrangement** (the second half): three dark *beads* (disks of one radius, 6.5-8 px) lie either in a
  row (the middle bead within 1.5 px of the line through the outer two, which are 44-64 px apart) or bent (the
  middle bead 30-45 % of that distance off the line). It spans most of the image: at half resolution it is three
  dark spots on a 6 x 6 grid of tokens, cheap to compare; on a 12 x 12 grid of fine tokens the same comparison
  costs attention over four times as many tokens.

Classes (:data:`CLASS_NAMES`): ``label = 2 * arrangement + texture``, i.e. 0 "striped, row", 1 "checkered, row",
2 "striped, bent", 3 "checkered, bent". Besides the object and the beads, 1-2 *distractors* (the fills of
:data:`crossvit.data.DISTRACTOR_TEXTURES`: flat, coarse stripes, coarse checker, dots; any vivid hue) make "find
the finely textured shape" the only way to the object. No global statistic gives the class: the object's hue is
random (so colour says nothing), the beads have the same size and darkness in every class (so the amount of dark
pixels says nothing), and both textures have the same mean: a nearest-class-mean classifier on such statistics is at
chance (``tests/test_twoscale.py``).

The flips and transposes of the square keep every class (stripes stay stripes, a row stays a row), so the
trainer's augmentation applies. ``masks[i, 0]`` is the object's pixels, ``masks[i, 1]`` the beads' pixels; the
class evidence is their union. Shapes never overlap: beads, object and distractors keep clear of each other's
bounding circles (a distractor that finds no room is left out). Deterministic by ``seed`` as
:func:`crossvit.data.make_shapes` is (every bit of the seed counts).
"""

from __future__ import annotations

import math

import torch

from . import data
from .data import (
    _EXTENT,
    _REF_SIZE,
    _chunk_ranges,
    _chunk_size,
    _draw_background,
    _draw_class_texture,
    _draw_distractor,
    _paint_object,
    _paste,
    _place,
    _shape_mask,
    _uniform,
    _window,
)
from .utils import seeded_generator

__all__ = ["ARRANGEMENTS", "CLASS_NAMES", "NUM_CLASSES", "TEXTURES", "make_two_scale_shapes"]

TEXTURES: tuple[str, ...] = ("striped", "checkered")
"""The object's fine texture; ``label % 2`` indexes this."""

ARRANGEMENTS: tuple[str, ...] = ("row", "bent")
"""How the three beads lie; ``label // 2`` indexes this."""

CLASS_NAMES: tuple[str, ...] = tuple(f"{t}, {a}" for a in ARRANGEMENTS for t in TEXTURES)
"""Class names, indexed by label."""

NUM_CLASSES: int = len(CLASS_NAMES)

BEADS = 3
"""Beads per image."""

# lengths in px at 96 px (scaled by image_size / 96)
_OBJ_SIZE = (11.0, 15.0)  # object radius r
_STRIPE_PERIOD = (2.4, 3.0)  # class textures, ~1.4x finer than crossvit.data's
_CHECKER_CELL = (1.5, 1.9)
_BEAD_RADIUS = (6.5, 8.0)
_BEAD_SPAN = (44.0, 64.0)  # distance between the outer two beads
_ROW_OFFSET = 1.5  # a row: the middle bead at most this far from the line through the outer two
_BENT_OFFSET = (0.30, 0.45)  # bent: the middle bead this share of the span off the line
_BEAD_SHADE = (0.06, 0.16)  # the beads' grey level (a small tint is added per channel)
_DIS_SIZE = (8.0, 12.0)  # distractor radius
_GAP = 3.0  # min free space between the bounding circles of any two shapes
_TRIES = 64


def _beads(g: torch.Generator, arrangement: torch.Tensor, size: int, s: float
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres (b, 3) x (b, 3) and radius (b,) of the beads; each image draws ``_TRIES`` candidate layouts and
    keeps the first that fits inside the image with the beads apart (one always does at these sizes; a layout that
    fails every try keeps its last one, checked by the caller)."""
    b = arrangement.shape[0]
    radius = _uniform(g, (b,), _BEAD_RADIUS[0] * s, _BEAD_RADIUS[1] * s)
    u = torch.rand((b, _TRIES, 6), generator=g)
    span = (_BEAD_SPAN[0] + (_BEAD_SPAN[1] - _BEAD_SPAN[0]) * u[..., 0]) * s
    angle = u[..., 1] * 2.0 * math.pi
    along = 0.4 + 0.2 * u[..., 2]  # where the middle bead sits between the outer two
    row = (2.0 * u[..., 3] - 1.0) * _ROW_OFFSET * s
    bent = (_BENT_OFFSET[0] + (_BENT_OFFSET[1] - _BENT_OFFSET[0]) * u[..., 3]) * span
    off = torch.where(arrangement[:, None] == 0, row, bent * torch.where(u[..., 4] < 0.5, -1.0, 1.0))
    cx, cy = u[..., 5] * (size - 1), torch.rand((b, _TRIES), generator=g) * (size - 1)  # the middle of the span
    dx, dy = torch.cos(angle), torch.sin(angle)
    first = torch.stack([cx - along * span * dx, cy - along * span * dy], -1)
    last = torch.stack([cx + (1 - along) * span * dx, cy + (1 - along) * span * dy], -1)
    middle = torch.stack([cx - off * dy, cy + off * dx], -1)
    centres = torch.stack([first, middle, last], 2)  # (b, tries, 3, 2)
    r = radius[:, None, None]
    inside = ((centres >= r[..., None]) & (centres <= size - 1 - r[..., None])).all(-1).all(-1)
    gaps = [torch.linalg.vector_norm(centres[:, :, i] - centres[:, :, j], dim=-1) for i, j in ((0, 1), (1, 2), (0, 2))]
    apart = torch.stack(gaps, -1).min(-1).values >= 2 * radius[:, None] + _GAP * s
    ok = inside & apart
    pick = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), _TRIES - 1))
    chosen = centres[torch.arange(b), pick]  # (b, 3, 2)
    return chosen[..., 0], chosen[..., 1], radius


def _render(g: torch.Generator, labels: torch.Tensor, size: int, num_distractors: tuple[int, int], noise: float,
            images: torch.Tensor, masks: torch.Tensor) -> None:
    """Render ``b`` images for ``labels`` (b,) into ``images`` (b, 3, H, W) and ``masks`` (b, 2, H, W)."""
    b = labels.shape[0]
    s = size / _REF_SIZE
    _draw_background(g, size, images)
    texture, arrangement = labels % 2, labels // 2

    # the beads: dark, one radius per image, drawn first (nothing overlaps them)
    bx, by, br = _beads(g, arrangement, size, s)
    grey = _uniform(g, (b, 1), *_BEAD_SHADE) + _uniform(g, (b, 3), -0.03, 0.03)
    flat_masks = masks.view(b * 2, -1)
    pixels = size * size
    circles = []
    for k in range(BEADS):
        xs, ys = _window(bx[:, k], by[:, k], float(_BEAD_RADIUS[1] * s), size)
        disk = _shape_mask(xs, ys, torch.zeros(b, dtype=torch.long), bx[:, k], by[:, k], br, torch.zeros(b))
        fill = grey.clamp(0.0, 1.0)[:, None, None, :].expand(-1, xs.shape[1], xs.shape[1], -1)
        written = _paste(images, torch.arange(b), xs, ys, disk, fill)
        flat_masks[(written // pixels) * 2 + 1, written % pixels] = True
        circles.append((bx[:, k], by[:, k], br))

    # the object, clear of the beads
    ext_table = torch.tensor(_EXTENT)
    shape = torch.randint(0, len(data.SHAPES), (b,), generator=g)
    r = _uniform(g, (b,), _OBJ_SIZE[0] * s, _OBJ_SIZE[1] * s)
    ext = ext_table[shape] * r
    ox, oy, ok = _place(g, b, ext, size, avoid=circles, gap=_GAP * s)
    while not bool(ok.all()):  # rare: a smaller object where the first found no room
        redo = (~ok).nonzero().squeeze(1)
        r[redo] = _uniform(g, (redo.numel(),), _OBJ_SIZE[0] * s * 0.8, _OBJ_SIZE[0] * s)
        ext[redo] = ext_table[shape[redo]] * r[redo]
        x, y, ok_redo = _place(g, redo.numel(), ext[redo], size,
                               avoid=[(cx[redo], cy[redo], cr[redo]) for cx, cy, cr in circles], gap=_GAP * s)
        ox[redo], oy[redo], ok[redo] = x, y, ok_redo
    circles.append((ox, oy, ext))
    angle = _uniform(g, (b,), 0.0, 2.0 * math.pi)
    look = _draw_class_texture(g, labels, s, texture=texture, family=None, stripe_period=_STRIPE_PERIOD,
                               checker_cell=_CHECKER_CELL)
    written = _paint_object(images, shape, ox, oy, r, angle, max(_EXTENT) * _OBJ_SIZE[1] * s, **look)
    flat_masks[(written // pixels) * 2, written % pixels] = True

    # distractors, clear of everything drawn so far
    lo, hi = num_distractors
    count = torch.randint(lo, hi + 1, (b,), generator=g)
    dmax_ext = max(_EXTENT) * _DIS_SIZE[1] * s
    for j in range(hi):
        dshape = torch.randint(0, len(data.SHAPES), (b,), generator=g)
        dr = _uniform(g, (b,), _DIS_SIZE[0] * s, _DIS_SIZE[1] * s)
        dext = ext_table[dshape] * dr
        dx, dy, placed = _place(g, b, dext, size, avoid=circles, gap=_GAP * s)
        shown = (placed & (j < count)).nonzero().squeeze(1)
        _draw_distractor(g, images, shown, dshape, dx, dy, dr, None, dmax_ext, s)
        circles.append((dx, dy, torch.where(placed & (j < count), dext, torch.zeros_like(dext))))

    if noise > 0:
        images += torch.randn(images.shape, generator=g) * noise
    images.clamp_(0.0, 1.0)


def make_two_scale_shapes(
    n: int,
    seed: int,
    image_size: int = 96,
    *,
    num_distractors: tuple[int, int] = (1, 2),
    noise: float = 0.03,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` images of the two-scale shapes task (see the module docstring).

    Args:
        n: number of images (>= 1).
        seed: int in ``[0, 2**64)``; the output is a deterministic function of all arguments but ``progress``,
            and distinct seeds give distinct images.
        image_size: side length in pixels (>= 32); the geometry scales with ``image_size / 96``.
        num_distractors: inclusive ``(min, max)`` number of distractors (max <= 8); one that finds no room is left
            out.
        noise: std of the Gaussian pixel noise (0 disables it).
        progress: show a tqdm progress bar.

    Returns:
        ``images`` ``(n, 3, H, W)`` float32 in ``[0, 1]``; ``labels`` ``(n,)`` int64 indexing :data:`CLASS_NAMES`
        (exactly balanced up to ``n % 4``); ``masks`` ``(n, 2, H, W)`` bool: the object's pixels, the beads'.
    """
    n, seed, image_size, num_distractors, noise = data._validate(n, seed, image_size, num_distractors, noise)
    g = seeded_generator(seed)
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    images = torch.empty((n, 3, image_size, image_size), dtype=torch.float32)
    masks = torch.zeros((n, 2, image_size, image_size), dtype=torch.bool)
    for i, j in _chunk_ranges(n, _chunk_size(image_size), progress, "two-scale shapes"):
        _render(g, labels[i:j], image_size, num_distractors, noise, images[i:j], masks[i:j])
    return images, labels, masks
