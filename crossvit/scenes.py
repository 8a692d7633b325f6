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
    _DIS_SIZE,
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
from .utils import check_bool, check_int, progress_bar, seeded_generator

__all__ = ["OBJECTS", "PAIRS", "make_composites", "make_two_object_shapes"]

OBJECTS = 2
"""Objects per scene."""

PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b) for a in range(data.NUM_CLASSES) for b in range(data.NUM_CLASSES) if a != b)
"""The ordered class pairs a scene can hold (object 0's class, object 1's class), each equally often."""

_SCENE_OBJ_SIZE = (11.0, 17.0)  # object "radius" r at 96 px: smaller than a single object's 13-22, so two fit
_OBJECT_GAP = 4.0  # min free space between the two objects' bounding circles (px at 96)
_DISTRACTOR_GAP = 2.0


def _objects(g: torch.Generator, b: int, size: int, s: float):
    """Outline, radius, bounding radius and centre of both objects of ``b`` scenes; the second object is redrawn
    (size and place) until it keeps clear of the first."""
    ext_table = torch.tensor(_EXTENT)
    shape = torch.randint(0, len(data.SHAPES), (b, OBJECTS), generator=g)
    r = _uniform(g, (b, OBJECTS), _SCENE_OBJ_SIZE[0] * s, _SCENE_OBJ_SIZE[1] * s)
    ext = ext_table[shape] * r
    cx0, cy0, _ = _place(g, b, ext[:, 0], size, avoid=[])
    cx1, cy1, ok = _place(g, b, ext[:, 1], size, avoid=[(cx0, cy0, ext[:, 0])], gap=_OBJECT_GAP * s)
    while not bool(ok.all()):  # rare: redraw the second object smaller where it found no room
        redo = (~ok).nonzero().squeeze(1)
        r[redo, 1] = _uniform(g, (redo.numel(),), _SCENE_OBJ_SIZE[0] * s, _SCENE_OBJ_SIZE[0] * s * 1.2)
        ext[redo, 1] = ext_table[shape[redo, 1]] * r[redo, 1]
        x, y, ok_redo = _place(g, redo.numel(), ext[redo, 1], size, avoid=[(cx0[redo], cy0[redo], ext[redo, 0])],
                                  gap=_OBJECT_GAP * s)
        cx1[redo], cy1[redo], ok[redo] = x, y, ok_redo
    return shape, r, ext, torch.stack([cx0, cx1], 1), torch.stack([cy0, cy1], 1)


def _render(g: torch.Generator, labels: torch.Tensor, size: int, num_distractors: tuple[int, int], noise: float,
            images: torch.Tensor, masks: torch.Tensor) -> None:
    """Render ``b`` scenes for ``labels`` ``(b, 2)`` into ``images`` ``(b, 3, H, W)`` and ``masks`` ``(b, 2, H, W)``."""
    b = labels.shape[0]
    s = size / _REF_SIZE
    _draw_background(g, size, images)

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
        dcx, dcy, ok = _place(g, b, ext_table[dshape] * dr, size, avoid=circles, gap=_DISTRACTOR_GAP * s)
        shown = (ok & (j < count)).nonzero().squeeze(1)
        _draw_distractor(g, images, shown, dshape, dcx, dcy, dr, None, dmax_ext, s)

    # the two objects, each with its class's texture and colour family
    flat_masks = masks.view(b * OBJECTS, -1)
    pixels = size * size
    for k in range(OBJECTS):
        angle = _uniform(g, (b,), 0.0, 2.0 * math.pi)
        look = _draw_class_texture(g, labels[:, k], s)
        written = _paint_object(images, shape[:, k], cx[:, k], cy[:, k], r[:, k], angle,
                                max(_EXTENT) * _SCENE_OBJ_SIZE[1] * s, **look)
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
        seed: int in ``[0, 2**64)``; the output is a deterministic function of all arguments but ``progress``,
            and distinct seeds give distinct scenes.
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
    g = seeded_generator(seed)
    pairs = torch.tensor(PAIRS)
    labels = pairs[torch.arange(n) % len(PAIRS)][torch.randperm(n, generator=g)]
    images = torch.empty((n, 3, image_size, image_size), dtype=torch.float32)
    masks = torch.zeros((n, OBJECTS, image_size, image_size), dtype=torch.bool)
    for i, j in _chunk_ranges(n, _chunk_size(image_size), progress, "scenes"):
        _render(g, labels[i:j], image_size, num_distractors, noise, images[i:j], masks[i:j])
    return images, labels, masks


def make_composites(n: int, seed: int, image_size: int = 96, *, gap: int = 2, progress: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` composites: the object of one :func:`crossvit.data.make_shapes` image pasted into another shapes image
    whose object has a different class, where it touches no object.

    Unlike :func:`make_two_object_shapes`, every piece comes from the single-object task the bundled model was
    trained on, so a composite differs from its training images only by holding a second object. The donor's object
    (its pixels under its mask) is moved to a random place in the host image where it lies fully inside and keeps
    at least ``gap`` px (0 to ``image_size // 2``) from the host's object (it may cover the host's decoy or
    distractors); a host for which no such place exists is skipped, and the images come from a longer draw until
    ``n`` composites are made (a ValueError when that draw has too few places, at gaps far above the default).

    Returns ``images`` (n, 3, H, W); ``labels`` (n, 2), the host object's class and the pasted object's class
    (always different); ``masks`` (n, 2, H, W), each object's pixels (they never overlap). Deterministic by
    ``seed`` (every bit counts). ``progress`` shows tqdm bars: over the shapes drawn, then over the composites.
    """
    n, seed, image_size, _, _ = data._validate(n, seed, image_size, (0, 0), 0.0)
    gap = check_int("gap", gap, 0, image_size // 2)
    progress = check_bool("progress", progress)
    g = seeded_generator(seed)
    pool = 2 * n + 16  # hosts and donors
    images, labels, masks = data.make_shapes(pool, int(torch.randint(0, 2**62, (1,), generator=g)), image_size,
                                             progress=progress)
    grow = torch.nn.functional.max_pool2d(masks[:, None].float(), 2 * gap + 1, stride=1, padding=gap)[:, 0] > 0
    out_images, out_labels, out_masks = [], [], []
    donors = torch.randperm(pool, generator=g).tolist()
    bar = progress_bar(total=n, desc="composites", unit="image", progress=progress)
    for host in range(pool):
        if len(out_images) == n:
            break
        donor = next((d for d in donors if d != host and labels[d] != labels[host]), None)
        if donor is None:
            continue
        ys, xs = masks[donor].nonzero(as_tuple=True)
        top, left, height, width = int(ys.min()), int(xs.min()), int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1
        shape = masks[donor, top:top + height, left:left + width]
        free = None
        for k in torch.randperm((image_size - height + 1) * (image_size - width + 1), generator=g).tolist():
            y, x = divmod(k, image_size - width + 1)
            if not (grow[host, y:y + height, x:x + width] & shape).any():
                free = (y, x)
                break
        if free is None:
            continue
        donors.remove(donor)
        y, x = free
        image, pasted = images[host].clone(), torch.zeros_like(masks[host])
        pasted[y:y + height, x:x + width] = shape
        region = image[:, y:y + height, x:x + width]
        region[:, shape] = images[donor, :, top:top + height, left:left + width][:, shape]
        out_images.append(image)
        out_labels.append(torch.stack([labels[host], labels[donor]]))
        out_masks.append(torch.stack([masks[host], pasted]))
        bar.update()
    bar.close()
    if len(out_images) < n:  # at the default gap a place is found for almost every host
        raise ValueError(f"only {len(out_images)} of {n} composites found room {gap} px from the host's object; "
                         "ask for a smaller gap or fewer composites")
    return torch.stack(out_images), torch.stack(out_labels), torch.stack(out_masks)
