"""Faithfulness metrics for pixel explanation maps: the pointing game and deletion/insertion curves.

Every explanation method in this project produces ``maps`` of shape (B, H, W), higher = more relevant, for
images of shape (B, C, H, W). These metrics *measure* how well a map agrees with the ground truth or with the
model; they do not assume it does.

* :func:`pointing_game` (Zhang et al. 2016, "Top-down neural attention by excitation backprop"): does the
  map's most relevant point land on the object? By default "most of the maximal pixels lie on the object", since a
  patch-level map's maximum is a whole patch (``rule="first"`` keeps the single first maximum);
* :func:`mass_inside_mask`: the share of a map's (positive) mass that lies on the object;
* :func:`deletion_insertion` (Petsiuk et al. 2018, "RISE"): how fast does the model's confidence fall when
  the most relevant pixels are removed first (deletion, lower AUC = more faithful), and how fast does it rise
  when they are put back first into a blurred image (insertion, higher AUC = more faithful)?

Non-finite maps: NaN has no rank and is refused by every metric (a ValueError that names the images). The pointing
game and deletion / insertion only rank the pixels, so +inf is a most relevant pixel and -inf a least relevant
one; the share of mass is undefined for an infinite value, so :func:`mass_inside_mask` refuses +-inf and names the
images.

>>> result = pointing_game(maps, masks, tolerance=3)
>>> result.score, result.hits                  # float, (B,) bool
>>> curves = deletion_insertion(model, images, maps, labels)
>>> curves.mean_deletion_auc, curves.mean_insertion_auc
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .recording import leaves_recordings_alone
from .utils import check_bool, check_finite_images, eval_mode, progress_bar

__all__ = [
    "DEFAULT_BLUR_SIGMA",
    "DeletionInsertionResult",
    "PointingGameResult",
    "argmax_points",
    "deletion_insertion",
    "gaussian_blur",
    "mass_inside_mask",
    "maximal_pixels",
    "pixel_counts",
    "pointing_game",
]

SCORES: tuple[str, ...] = ("probability", "logit")
"""What :func:`deletion_insertion`'s curves can record: the class's softmax probability, or its logit."""

DEFAULT_BLUR_SIGMA: float = 5.0
"""Standard deviation, in pixels, of the Gaussian blur that makes the insertion substrate.

At 96 px the class texture of the synthetic data has a period of about 4-7 px; the (31-tap, truncated at
3 sigma) kernel with sigma = 5 px attenuates such periods to 1e-3 of their amplitude or less, so the blurred
image keeps only the coarse colour layout and the texture (the class evidence) must be inserted back. Petsiuk
et al. used a much weaker blur (sigma about 1 px at 224 px); pass ``blur_sigma`` to match them."""


# ----------------------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------------------


def _check_maps(maps: object, name: str = "maps") -> torch.Tensor:
    """``maps`` as a real (B, H, W) tensor with no NaN, or a TypeError/ValueError that names the problem."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, W), got {type(maps).__name__}")
    if maps.dtype == torch.bool or maps.is_complex():
        raise TypeError(f"{name} must be a real-valued (float or integer) tensor, got dtype {maps.dtype}")
    if maps.ndim != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got {maps.ndim} dimensions {tuple(maps.shape)}")
    if maps.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"{name} has no pixels: shape {tuple(maps.shape)}")
    if maps.is_floating_point():
        nan_images = torch.isnan(maps).flatten(1).any(dim=1).nonzero().flatten().tolist()
        if nan_images:
            raise ValueError(f"{name} contains NaN in image(s) {nan_images}; a NaN has no rank")
    return maps


def _check_masks(masks: object, shape: torch.Size) -> torch.Tensor:
    """``masks`` as a bool (B, H, W) tensor of the maps' ``shape``; 0/1-valued numbers are converted."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor of shape (B, H, W), got {type(masks).__name__}")
    if masks.shape != shape:
        raise ValueError(f"maps and masks must have the same shape (B, H, W), got maps {tuple(shape)} "
                         f"and masks {tuple(masks.shape)}")
    if masks.dtype == torch.bool:
        return masks
    if masks.is_complex():
        raise TypeError(f"masks must be a bool (or 0/1-valued) tensor, got dtype {masks.dtype}")
    if not ((masks == 0) | (masks == 1)).all():
        bad = masks[(masks != 0) & (masks != 1)]
        raise ValueError(f"masks must be bool or 0/1-valued, got dtype {masks.dtype} with other values, "
                         f"e.g. {bad[:3].tolist()}")
    return masks == 1


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# ----------------------------------------------------------------------------------------------------------
# pointing game
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointingGameResult:
    """Outcome of :func:`pointing_game` for a batch.

    ``hits`` (B,) bool: the map's maximum is on the (dilated) mask; ``points`` (B, 2) long: the (row, col) of
    each map's first maximum; ``score``: mean hit rate in [0, 1]; ``tolerance``: the radius used, in pixels;
    ``rule``: ``"majority"`` or ``"first"``; ``inside_share``: per image, the share of maximal pixels counted as
    inside.
    """

    hits: torch.Tensor    # (B,) bool
    points: torch.Tensor  # (B, 2) long, (row, col)
    score: float
    tolerance: int
    rule: str = "first"
    # (B,) float: share of the maximal pixels within ``tolerance`` of the mask (rule "majority"; 0/1 for "first")
    inside_share: torch.Tensor | None = None


def argmax_points(maps: torch.Tensor) -> torch.Tensor:
    """(row, col) of each map's maximum, shape (B, 2) long; ties go to the first maximum in row-major order.

    The tie rule is explicit (smallest flat index among the maxima), not left to ``argmax``'s implementation.
    A constant map therefore points at pixel (0, 0).
    """
    maps = _check_maps(maps)
    B, H, W = maps.shape
    flat = maps.reshape(B, H * W)                                       # (B, H*W)
    is_max = flat == flat.max(dim=1, keepdim=True).values               # (B, H*W)
    index = torch.arange(H * W, device=maps.device).expand(B, -1)       # (B, H*W)
    first = torch.where(is_max, index, H * W).min(dim=1).values         # (B,)
    return torch.stack([first // W, first % W], dim=1)                  # (B, 2)


POINTING_RULES: tuple[str, ...] = ("majority", "first")
MAXIMAL_RELATIVE_TOLERANCE = 1e-6
"""A pixel is *maximal* when it lies within this share of its map's maximum (float noise must not split a patch)."""


def maximal_pixels(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: each map's *maximal pixels*, those within a relative ``1e-6`` of its maximum, the pixels
    the pointing game scores (a whole patch on a patch map; an infinite maximum keeps only the infinite pixels)."""
    maps = _check_maps(maps)
    values = maps.double()
    top = values.flatten(1).max(dim=1).values[:, None, None]            # (B, 1, 1)
    floor = torch.where(torch.isfinite(top), top - MAXIMAL_RELATIVE_TOLERANCE * top.abs(), top)
    return values >= floor                                              # (B, H, W)


def _near_mask(points: torch.Tensor, mask: torch.Tensor, tolerance: int) -> torch.Tensor:
    """(K,) bool: is each (row, col) of ``points`` (K, 2) within Euclidean distance ``tolerance`` of a pixel of the
    (H, W) bool ``mask``? Compares squared integer distances to every mask pixel, in chunks of points."""
    if tolerance == 0:
        return mask[points[:, 0], points[:, 1]]
    targets = mask.nonzero().to(torch.float64)                          # (M, 2)
    out = torch.empty(points.shape[0], dtype=torch.bool, device=mask.device)
    chunk = max(1, 2**22 // max(1, targets.shape[0]))                  # bounds the (chunk, M) distance matrix
    for start in range(0, points.shape[0], chunk):
        p = points[start:start + chunk].to(torch.float64)              # (k, 2)
        d2 = ((p[:, None, :] - targets[None, :, :]) ** 2).sum(-1)       # (k, M), exact in float64
        out[start:start + chunk] = d2.min(dim=1).values <= tolerance * tolerance
    return out


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, *, tolerance: int = 0, rule: str = "majority"
                  ) -> PointingGameResult:
    """The pointing game (Zhang et al. 2016): does each map's maximum fall on the object?

    Definition. The *maximal pixels* of ``maps[i]`` are those within a relative ``1e-6`` of its maximum (so float
    noise does not split one patch's value). A pixel counts as *inside* if some mask pixel ``q`` has Euclidean
    distance ``|p - q| <= tolerance``, i.e. it lies in the mask dilated by a **disk** of radius ``tolerance``
    pixels; with ``tolerance = 0`` it must be a mask pixel itself. The paper uses 15 px at 224 px resolution.

    * ``rule="majority"`` (default): image ``i`` is a *hit* if more than half of its maximal pixels are inside.
      A map over patches has a whole patch (or the intersection of two grids' patches) as its maximum; this rule
      asks that most of it lies on the object and does not favour any corner.
    * ``rule="first"``: only the first maximal pixel in row-major order counts (the classic single-point game;
      it favours the top-left pixel of a maximal patch, and a constant map points at (0, 0)).

    ``score`` is the fraction of hits.

    Args:
        maps: (B, H, W) real tensor, higher = more relevant; NaN is rejected.
        masks: (B, H, W) ground-truth object masks, bool (0/1-valued numbers are converted); every image
            needs a non-empty mask, since a pointing game without an object is undefined.
        tolerance: dilation radius in pixels, >= 0 (radii beyond the image diagonal all mean "anywhere").
        rule: ``"majority"`` or ``"first"``.
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps.shape).to(maps.device)
    tolerance = _check_int(tolerance, "tolerance", 0)
    if rule not in POINTING_RULES:
        raise ValueError(f"rule must be one of {POINTING_RULES}, got {rule!r}")
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"masks of image(s) {empty} are empty; "
                         "the pointing game needs an object in every image")

    B, H, W = maps.shape
    radius = min(tolerance, math.isqrt(H * H + W * W) + 1)             # farther is the same as anywhere
    points = argmax_points(maps)                                        # (B, 2)
    maximal = maximal_pixels(maps) if rule == "majority" else None      # (B, H, W)
    shares = torch.empty(B, dtype=torch.float64, device=maps.device)
    for i in range(B):
        if rule == "first":
            candidates = points[i:i + 1]                                # (1, 2)
        else:
            candidates = maximal[i].nonzero()                           # (K, 2) maximal pixels
        shares[i] = _near_mask(candidates, masks[i], radius).double().mean()
    hits = shares > 0.5
    return PointingGameResult(hits=hits, points=points, score=hits.float().mean().item(), tolerance=tolerance,
                              rule=rule, inside_share=shares.float())


def mass_inside_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of each map's positive mass that lies on the object: ``sum(relu(map) * mask) / sum(relu(map))``, (B,).

    A map that spreads its mass evenly scores the mask's share of the image (its area fraction); a map with all
    its mass on the object scores 1. Negative values (signed attributions) do not count; a map with no positive
    mass scores 0. NaN or an infinite value (+inf or -inf) is a ValueError that names the image(s); finite values
    of any size are fine (each map is scaled by its largest value first, so float64 sums never overflow).
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps.shape).to(maps.device)
    if maps.is_floating_point():
        infinite = torch.isinf(maps).flatten(1).any(dim=1).nonzero().flatten().tolist()
        if infinite:
            raise ValueError(f"maps contains an infinite value in image(s) {infinite}; a share of the mass needs "
                             "finite values (the pointing game and deletion/insertion, which only rank pixels, "
                             "take them)")
    positive = maps.double().clamp(min=0).flatten(1)                   # (B, H*W)
    positive = positive / positive.amax(dim=1, keepdim=True).clamp(min=1e-300)  # in [0, 1]: sums stay finite
    total = positive.sum(dim=1)
    inside = (positive * masks.flatten(1)).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp(min=1e-300), torch.zeros_like(total)).float()


# ----------------------------------------------------------------------------------------------------------
# deletion / insertion
# ----------------------------------------------------------------------------------------------------------


def _check_image_batch(images: object) -> None:
    """TypeError/ValueError naming the problem unless ``images`` is a float (B, C, H, W) tensor."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), "
                         f"got {images.ndim} dimensions {tuple(images.shape)}")
    check_finite_images(images)


def gaussian_blur(images: torch.Tensor, sigma: float = DEFAULT_BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images, each channel on its own; the insertion substrate.

    Kernel: ``exp(-d^2 / (2 sigma^2))`` sampled at integer offsets ``d`` in ``[-r, r]`` with
    ``r = ceil(3 sigma)``, normalised to sum 1, applied along rows then columns with ``torch`` ``conv2d`` and
    **reflect** padding (so a constant image stays constant and no dark border appears). Reflect padding needs
    ``r < size``, so along a side of ``n`` pixels the kernel is truncated to ``r = min(ceil(3 sigma), n - 1)``
    and renormalised. ``sigma = 0`` returns a copy of the images.
    """
    _check_image_batch(images)
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma (the blur's, in pixels) must be a number, got {type(sigma).__name__} {sigma!r:.40}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma (the blur's, in pixels) must be a finite number >= 0, got {sigma!r}")
    B, C, H, W = images.shape
    if sigma == 0 or images.numel() == 0:
        return images.clone()

    def kernel(size: int) -> tuple[torch.Tensor, int]:
        radius = min(math.ceil(3 * sigma), size - 1)
        d = torch.arange(-radius, radius + 1, dtype=torch.float64, device=images.device)
        k = torch.exp(-0.5 * (d / sigma) ** 2)  # (d / sigma first: sigma * sigma underflows to 0 below 1e-162)
        return (k / k.sum()).to(images.dtype), radius

    x = images.reshape(B * C, 1, H, W)                                  # (B*C, 1, H, W)
    k_w, r_w = kernel(W)
    if r_w > 0:
        x = F.conv2d(F.pad(x, (r_w, r_w, 0, 0), mode="reflect"), k_w.view(1, 1, 1, -1))
    k_h, r_h = kernel(H)
    if r_h > 0:
        x = F.conv2d(F.pad(x, (0, 0, r_h, r_h), mode="reflect"), k_h.view(1, 1, -1, 1))
    return x.reshape(B, C, H, W) if r_w or r_h else images.clone()  # 1 x 1 images: a copy, as sigma = 0


def pixel_counts(num_pixels: int, steps: int) -> torch.Tensor:
    """How many pixels are changed at each step, shape (steps + 1,) long.

    ``counts[i] = round(i * num_pixels / steps)`` with halves rounded **up**, computed exactly in integers as
    ``(2 * i * num_pixels + steps) // (2 * steps)``; so ``counts[0] = 0``, ``counts[steps] = num_pixels`` and
    the counts never decrease.
    """
    num_pixels = _check_int(num_pixels, "num_pixels", 1)
    steps = _check_int(steps, "steps", 1)
    if 2 * steps * num_pixels + steps > 2**63 - 1:  # the exact integer formula must fit torch's int64
        raise ValueError(f"num_pixels x steps is too large to count exactly in 64 bits: {num_pixels} x {steps}")
    i = torch.arange(steps + 1, dtype=torch.long)
    return (2 * i * num_pixels + steps) // (2 * steps)


def _counts_at(fractions: Sequence[float] | torch.Tensor, num_pixels: int) -> torch.Tensor:
    """Pixels changed at each of the given fractions, ``round(f * num_pixels)`` (halves up), as (points,) long."""
    if isinstance(fractions, (str, bytes)) or getattr(fractions, "dtype", None) in (torch.bool, np.bool_):
        raise TypeError(f"fractions must be a sequence of numbers, got {fractions!r:.60}")
    try:
        fractions = fractions if isinstance(fractions, torch.Tensor) else list(fractions)  # (a generator once)
    except TypeError:
        raise TypeError(f"fractions must be a sequence of numbers, got {type(fractions).__name__}") from None
    if not isinstance(fractions, torch.Tensor) and any(isinstance(v, bool) for v in fractions):
        raise TypeError(f"fractions must be numbers, not True/False: got {fractions!r:.60}")
    try:
        f = torch.as_tensor(fractions, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"fractions must be a 1-D sequence of numbers: {err}") from None
    if f.ndim != 1 or len(f) < 2:
        raise ValueError(f"fractions must be a 1-D sequence of at least 2 points, got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all() or f[0] != 0 or f[-1] != 1 or not (f[1:] > f[:-1]).all():
        raise ValueError(f"fractions must increase strictly from 0 to 1, got {f.tolist()}")
    return torch.floor(f * num_pixels + 0.5).long()


@dataclass(frozen=True)
class DeletionInsertionResult:
    """Deletion and insertion curves (Petsiuk et al. 2018) for a batch.

    All tensors are on the images' device. ``counts`` (steps+1,) long: pixels changed at each step;
    ``fractions`` (steps+1,) = counts / (H*W), from 0 to 1, the x-axis; ``deletion`` and ``insertion``
    (B, steps+1): the ``score`` of the target class at each step (``"probability"``: softmax, or ``"logit"``);
    ``deletion_auc`` and ``insertion_auc`` (B,): trapezoid-rule area under each curve over ``fractions`` (in
    [0, 1] for probabilities). Lower deletion AUC and higher insertion AUC = more faithful map.
    """

    counts: torch.Tensor         # (steps+1,) long
    fractions: torch.Tensor      # (steps+1,)
    deletion: torch.Tensor       # (B, steps+1)
    insertion: torch.Tensor      # (B, steps+1)
    deletion_auc: torch.Tensor   # (B,)
    insertion_auc: torch.Tensor  # (B,)
    score: str = "probability"   # what the curves record: "probability" or "logit"

    @property
    def mean_deletion_auc(self) -> float:
        """Deletion AUC averaged over the batch (lower = more faithful)."""
        return self.deletion_auc.mean().item()

    @property
    def mean_insertion_auc(self) -> float:
        """Insertion AUC averaged over the batch (higher = more faithful)."""
        return self.insertion_auc.mean().item()


def _check_target(target: object, batch: int, device: torch.device) -> torch.Tensor:
    """``target`` (an int, or a (B,) tensor, list or numpy array of ints, as :func:`crossvit.explain` takes it) as a
    (B,) long tensor of non-negative class indices on ``device``."""
    if isinstance(target, (list, tuple)) or (hasattr(target, "__array__") and not isinstance(target, torch.Tensor)):
        try:
            target = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"target must be an int or a (B,) integer tensor of class indices, got "
                            f"{type(target).__name__} {target!r:.60}") from None
    if isinstance(target, bool):
        raise TypeError("target must be an int or a (B,) integer tensor of class indices, got bool")
    if isinstance(target, numbers.Integral):
        target = torch.full((batch,), int(target), dtype=torch.long)
    elif isinstance(target, torch.Tensor):
        if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
            raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
        if target.ndim == 0:
            target = target.expand(batch)
        if tuple(target.shape) != (batch,):
            raise ValueError(f"target must be an int or have shape (B,) = ({batch},), "
                             f"got {tuple(target.shape)}")
        target = target.long()
    else:
        raise TypeError(f"target must be an int or a (B,) integer tensor of class indices, "
                        f"got {type(target).__name__}")
    negative = (target < 0).nonzero().flatten()
    if len(negative):
        raise ValueError(f"target must be non-negative class indices, got {target[negative].tolist()} "
                         f"for image(s) {negative.tolist()}")
    return target.to(device)


def _chunks(total: int, size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Consecutive index ranges ``[start, start + size)`` covering ``range(total)``, as long tensors."""
    for start in range(0, total, size):
        yield torch.arange(start, min(start + size, total), device=device)


@leaves_recordings_alone
def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    target: int | torch.Tensor,
    *,
    steps: int = 32,
    batch_size: int = 64,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    score: str = "probability",
    fractions: Sequence[float] | torch.Tensor | None = None,
    progress: bool = False,
) -> DeletionInsertionResult:
    """Deletion and insertion curves and their AUCs (Petsiuk et al. 2018, "RISE").

    Definition. The ``H*W`` pixels of image ``i`` are ranked by ``maps[i]``, most relevant first; ties keep
    row-major order (a stable sort), so a constant map changes pixels in reading order. At step
    ``s = 0..steps`` exactly ``n_s = round(s * H*W / steps)`` pixels (see :func:`pixel_counts`) are changed,
    the ``n_s`` top-ranked ones, all channels of a pixel together:

    * **deletion** starts from the image and sets the changed pixels to the deletion substrate, **zero**;
    * **insertion** starts from the insertion substrate, :func:`gaussian_blur` of the image with sigma
      ``blur_sigma`` (pixels), and puts the changed pixels back to their original values.

    Each curve is the model's softmax probability of class ``target[i]`` at each step (``score="probability"``,
    RISE's definition), or its logit for that class (``score="logit"``: a confident model's probability sits at
    1 long before its logit stops growing, so logit curves still tell maps apart where probability curves are all
    flat); each AUC is ``torch.trapezoid(curve, fractions)`` with ``fractions = n_s / (H*W)`` running from 0 to 1.

    The model is called in eval mode (every submodule's training flag is restored afterwards,
    :func:`crossvit.utils.eval_mode`) under ``torch.no_grad``, on
    the images' device, on at most ``batch_size`` perturbed images at a time; only one chunk of perturbed
    images exists at once. Images are never resized, so models that insist on an exact size work.

    Args:
        model: any ``nn.Module`` mapping (N, C, H, W) float images to (N, K) logits.
        images: (B, C, H, W) floating-point images.
        maps: (B, H, W) relevance maps, higher = more relevant; moved to the images' device; NaN is rejected.
        target: class index for every image (int) or per image ((B,) integer tensor), in ``[0, K)``.
        steps: number of steps, >= 1; each curve has ``steps + 1`` points.
        batch_size: most images per model call, >= 1.
        blur_sigma: sigma of the insertion substrate's Gaussian blur, in pixels, >= 0.
        score: ``"probability"`` (softmax, the default) or ``"logit"``: what the curves record.
        fractions: the points of the curves as fractions of the pixels changed, increasing from 0 to 1 (e.g.
            geometric, to look at the first few percent closely); then ``n_s = round(fractions[s] * H*W)`` and
            ``steps`` is not used. Default: ``steps + 1`` evenly spaced points.
        progress: show a tqdm progress bar over the model calls.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_image_batch(images)
    check_bool("progress", progress)
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps must be a torch.Tensor of shape (B, H, W), got {type(maps).__name__}")
    if maps.ndim != 3 or maps.shape[0] != images.shape[0] or maps.shape[1:] != images.shape[2:]:
        raise ValueError(f"maps must have shape (B, H, W) matching images (B, C, H, W), got maps "
                         f"{tuple(maps.shape)} and images {tuple(images.shape)}")
    maps = _check_maps(maps).to(images.device)
    steps = _check_int(steps, "steps", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    B, C, H, W = images.shape
    target = _check_target(target, B, images.device)                    # (B,)
    device = images.device

    if fractions is None:
        counts = pixel_counts(H * W, steps).to(device)                  # (steps+1,)
    else:
        counts = _counts_at(fractions, H * W).to(device)                # (points,)
    steps = len(counts) - 1
    fractions = counts.to(torch.float32) / (H * W)                      # (steps+1,)
    # Rank of each pixel, 0 = most relevant; the stable descending sort keeps row-major order among ties.
    order = torch.sort(maps.reshape(B, H * W), dim=1, descending=True, stable=True).indices  # (B, H*W)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(H * W, device=device).expand(B, -1))              # (B, H*W)
    blurred = gaussian_blur(images, blur_sigma)                         # (B, C, H, W)

    points = steps + 1
    total = 2 * B * points  # deletion images first, then insertion images; one (image, step) per item
    probs = torch.empty(total, dtype=torch.float32, device=device)

    with eval_mode(model), torch.no_grad():
        chunks = _chunks(total, batch_size, device)
        for items in progress_bar(chunks, total=math.ceil(total / batch_size), desc="deletion/insertion",
                                  progress=progress):               # items: (N,) long
            insert = items >= B * points                            # (N,) bool
            k = items % (B * points)
            b, s = k // points, k % points                          # (N,), (N,)
            changed = (rank[b] < counts[s][:, None]).view(-1, 1, H, W)  # (N, 1, H, W)
            original = images[b]                                    # (N, C, H, W)
            deleted = original.masked_fill(changed, 0.0)
            inserted = torch.where(changed, original, blurred[b])
            batch = torch.where(insert.view(-1, 1, 1, 1), inserted, deleted)  # (N, C, H, W)
            logits = model(batch)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != len(items):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"model must return logits of shape (N, K) = ({len(items)}, K), "
                                 f"got {shape}")
            num_classes = logits.shape[1]
            out_of_range = (target >= num_classes).nonzero().flatten()
            if len(out_of_range):
                raise ValueError(
                    f"target must be in [0, {num_classes}) for this model with {num_classes} outputs, "
                    f"got {target[out_of_range].tolist()} for image(s) {out_of_range.tolist()}"
                )
            p = logits.float().softmax(dim=1) if score == "probability" else logits.float()  # (N, K)
            probs[items] = p.gather(1, target[b][:, None]).squeeze(1)

    deletion = probs[: B * points].view(B, points)                      # (B, steps+1)
    insertion = probs[B * points:].view(B, points)                      # (B, steps+1)
    return DeletionInsertionResult(
        counts=counts,
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=torch.trapezoid(deletion, fractions, dim=1),
        insertion_auc=torch.trapezoid(insertion, fractions, dim=1),
        score=score,
    )
