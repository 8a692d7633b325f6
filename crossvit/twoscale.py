"""The two-scale shapes task: a class that needs a fine texture *and* a tile that only a coarse patch sees whole.

The shapes task of :mod:`crossvit.data` is solved by either branch of a CrossViT alone, so it cannot show what the
second branch adds. Here the class has two halves, each readable at one scale only:

* **a fine texture** (the first half): one *object* (disk, square or triangle, radius 11-15 px at 96 px) is filled
  with parallel stripes (period 2.4-3.0 px) or an axis-aligned checkerboard (cells 1.5-1.9 px, period 3-3.8 px), in
  a light tint and a dark shade of a random vivid hue, as in :mod:`crossvit.data` but finer (about 1.5x for the
  stripes, 1.8x for the checkers). A branch that sees the image at full resolution reads it. A copy at half
  resolution holds it only as an artefact: the texture lies above that copy's Nyquist frequency (0.25 cycles per
  original pixel), so a plain bicubic resize folds it into coarser waves (which a ViT learns to read), while an
  anti-aliased one (``PaperConfig.resize_antialias``) flattens it to about a sixth of its contrast, near the
  object's mean colour (``tests/test_twoscale.py``; how well ViTs on either copy read it:
  ``benchmarks/two_scales.py``);
* **a tile** (the second half): a grey square of :data:`TILE` px (16 at 96 px) made of four flat quadrants, two
  dark and two light, with the dark ones side by side (*halved*) or on a diagonal (*diagonal*). The tile sits on a
  grid of :data:`TILE` px cells, which is the patch grid of the coarse branch of the models in
  ``benchmarks/two_scales.py`` (8 px patches on the half-resolution copy), so one coarse patch holds all of it and
  its patch embedding can tell the two apart. Fine patches (8 px at full resolution) are the quadrants: each one
  is a flat dark or light square in both classes, so a fine branch reads the class only by comparing four
  neighbouring tokens through attention.

Classes (:data:`CLASS_NAMES`): ``label = 2 * arrangement + texture``, i.e. 0 "striped, halved", 1 "checkered,
halved", 2 "striped, diagonal", 3 "checkered, diagonal". Besides the object and the tile, 1-2 *distractors* (the
fills of :data:`crossvit.data.DISTRACTOR_TEXTURES`: flat, coarse stripes, coarse checker, dots; any vivid hue) make
"find the finely textured shape" the only way to the object. No global statistic gives the class: the object's
hue is random (so colour says nothing), every tile has two dark and two light quadrants of the same size (so the
amount of dark or light pixels says nothing), and both textures have the same mean: a nearest-class-mean
classifier on such statistics is at chance (``tests/test_twoscale.py``).

The flips and transposes of the square keep every class (stripes stay stripes, a diagonal stays a diagonal) and map
the tile grid onto itself, so the trainer's augmentation applies. ``masks[i, 0]`` is the object's pixels,
``masks[i, 1]`` the tile's; the class evidence is their union. Shapes never overlap: tile, object and distractors
keep clear of each other's bounding circles (a distractor that finds no room is left out). Deterministic by
``seed`` as :func:`crossvit.data.make_shapes` is (every bit of the seed counts).

An earlier version of the second half, three dark beads in a row or bent across most of the image, was not learned
by the coarse ViT that reads today's tile in 300 steps: 53 % (chance 50 %) after 3 000 steps
(``figures/two_scales_probe.json`` keeps that probe; no fine ViT was tried on it). A relation between distant parts
is hard to learn from scratch.
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
    _place,
    _uniform,
)
from .utils import seeded_generator

__all__ = ["ARRANGEMENTS", "CLASS_NAMES", "NUM_CLASSES", "TEXTURES", "TILE", "make_two_scale_shapes"]

TEXTURES: tuple[str, ...] = ("striped", "checkered")
"""The object's fine texture; ``label % 2`` indexes this."""

ARRANGEMENTS: tuple[str, ...] = ("halved", "diagonal")
"""How the tile's two dark quadrants lie; ``label // 2`` indexes this."""

CLASS_NAMES: tuple[str, ...] = tuple(f"{t}, {a}" for a in ARRANGEMENTS for t in TEXTURES)
"""Class names, indexed by label."""

NUM_CLASSES: int = len(CLASS_NAMES)

TILE = 16
"""The tile's side and the cell of the grid it sits on, in px at 96 px (scaled by image_size / 96)."""

# lengths in px at 96 px (scaled by image_size / 96)
_OBJ_SIZE = (11.0, 15.0)  # object radius r
_STRIPE_PERIOD = (2.4, 3.0)  # class textures, stripes ~1.5x, checkers ~1.8x finer than crossvit.data's
_CHECKER_CELL = (1.5, 1.9)
_DARK = (0.06, 0.16)  # grey level of the tile's dark quadrants (a small tint is added per channel)
_LIGHT = (0.84, 0.94)  # and of its light ones
_DIS_SIZE = (8.0, 12.0)  # distractor radius
_GAP = 3.0  # min free space between the bounding circles of any two shapes
# the dark quadrants (top left, top right, bottom left, bottom right) of each tile layout
_HALVED = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
_DIAGONAL = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)


def _tile(g: torch.Generator, arrangement: torch.Tensor, size: int, s: float, images: torch.Tensor,
          masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paint one tile per image (``arrangement`` (b,): 0 halved, 1 diagonal) into ``images`` (b, 3, H, W), mark it
    in ``masks`` (b, H, W) and return its bounding circle ``(cx, cy, radius)``, each (b,)."""
    b = arrangement.shape[0]
    side = max(2, round(TILE * s)) // 2 * 2
    cells = size // side
    col, row = (torch.randint(0, cells, (b,), generator=g) * side for _ in range(2))
    layout = torch.where(arrangement[:, None] == 0, _HALVED[torch.randint(0, 4, (b,), generator=g)],
                         _DIAGONAL[torch.randint(0, 2, (b,), generator=g)])  # (b, 4)
    dark = _uniform(g, (b, 1), *_DARK) + _uniform(g, (b, 3), -0.03, 0.03)
    light = _uniform(g, (b, 1), *_LIGHT) + _uniform(g, (b, 3), -0.03, 0.03)
    offset = torch.arange(side)
    quadrant = (offset[:, None] >= side // 2).long() * 2 + (offset[None, :] >= side // 2).long()  # (side, side)
    is_dark = layout[:, quadrant]  # (b, side, side)
    colour = torch.where(is_dark[..., None], dark[:, None, None], light[:, None, None]).clamp(0.0, 1.0)
    ys, xs = row[:, None, None] + offset[None, :, None], col[:, None, None] + offset[None, None, :]
    index = torch.arange(b)[:, None, None]
    images.permute(0, 2, 3, 1)[index, ys, xs] = colour
    masks[index, ys, xs] = True
    centre = (side - 1) / 2
    return col + centre, row + centre, torch.full((b,), side / math.sqrt(2))


def _render(g: torch.Generator, labels: torch.Tensor, size: int, num_distractors: tuple[int, int], noise: float,
            images: torch.Tensor, masks: torch.Tensor) -> None:
    """Render ``b`` images for ``labels`` (b,) into ``images`` (b, 3, H, W) and ``masks`` (b, 2, H, W)."""
    b = labels.shape[0]
    s = size / _REF_SIZE
    _draw_background(g, size, images)
    texture, arrangement = labels % 2, labels // 2

    circles = [_tile(g, arrangement, size, s, images, masks[:, 1])]
    flat_masks = masks.view(b * 2, -1)
    pixels = size * size

    # the object, clear of the tile
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
        (exactly balanced up to ``n % 4``); ``masks`` ``(n, 2, H, W)`` bool: the object's pixels, the tile's.
    """
    n, seed, image_size, num_distractors, noise = data._validate(n, seed, image_size, num_distractors, noise)
    g = seeded_generator(seed)
    labels = (torch.arange(n) % NUM_CLASSES)[torch.randperm(n, generator=g)]
    images = torch.empty((n, 3, image_size, image_size), dtype=torch.float32)
    masks = torch.zeros((n, 2, image_size, image_size), dtype=torch.bool)
    for i, j in _chunk_ranges(n, _chunk_size(image_size), progress, "two-scale shapes"):
        _render(g, labels[i:j], image_size, num_distractors, noise, images[i:j], masks[i:j])
    return images, labels, masks
