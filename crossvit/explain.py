"""One entry point for every explanation method: ``explain(model, images, method) -> (B, H, W)`` pixel maps.

Every method ends on the pixels of the input image, so methods can be compared on the same ground:

* attention methods give a value per patch of a branch's grid; :func:`patch_map_to_pixels` spreads it over the
  input pixels that patch covers, taking the branch's resize (or crop) into account;
* captum methods give a value per input pixel and channel; channels are reduced as documented per method.

Methods (``METHODS``) and the options :func:`explain` passes on to them (``METHOD_OPTIONS`` holds the defaults):

=========================  ==================================================================================
``random``                 a seeded baseline (``seed``)
``rollout_small`` /        per-branch rollout of that branch's self-attention (``start_block``, ``head_fusion``,
``rollout_large``          ``discard_ratio``)
``joint_rollout``          both branches through the fusion layers (``start_block``, ``head_fusion``)
``grad_rollout``           the class-specific joint rollout of Chefer et al. (``start_block``)
``cls_attention``          the raw CLS -> patch row of one self-attention layer, heads averaged (``block``,
                           ``layer``, ``branch``: "small", "large" or "both")
``cross_attention``        one fusion layer's cross-attention row of a CLS token over the *other* branch's patches,
                           heads averaged (``fusion``: index over all fusion layers in forward order, ``query``:
                           "small" = the small CLS reading the large patches, "large" = the large CLS reading the
                           small patches, or "both")
``integrated_gradients``,  through captum (``ig_steps``, ``internal_batch_size``)
``saliency``, ``occlusion``
=========================  ==================================================================================

Where both CLS tokens (or both grids) contribute, the model-level map is their mean, since the head averages the two
branches' logits; each grid's values are spread as mass per pixel (``density=True``) so that the two grids can be
added. The defaults in ``METHOD_OPTIONS`` were chosen on held-out images of the bundled model (see
``benchmarks/explanations.py`` and its table in ``figures/explanation_faithfulness.md``, which also lists the
textbook settings, e.g. rollout from the first block).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .model import CrossViT, check_images
from .recording import attention_sites, record_attention
from .rollout import (
    HEAD_FUSIONS,
    attention_rollout,
    check_index,
    check_start_block,
    gradient_rollout,
    joint_rollout,
)

METHODS: tuple[str, ...] = (
    "random", "rollout_small", "rollout_large", "joint_rollout", "grad_rollout", "cls_attention", "cross_attention",
    "integrated_gradients", "saliency", "occlusion",
)

METHOD_OPTIONS: dict[str, dict[str, object]] = {
    "random": {},
    "rollout_small": {"start_block": -1, "head_fusion": "mean", "discard_ratio": 0.0},
    "rollout_large": {"start_block": -1, "head_fusion": "mean", "discard_ratio": 0.0},
    "joint_rollout": {"start_block": -1, "head_fusion": "mean"},
    "grad_rollout": {"start_block": 0},
    "cls_attention": {"block": -1, "layer": 0, "branch": "both"},
    "cross_attention": {"fusion": -1, "query": "both"},
    "integrated_gradients": {},
    "saliency": {},
    "occlusion": {},
}
"""Each method's own options and their defaults: :func:`explain` accepts these keywords for that method (besides
``seed``, ``ig_steps`` and ``internal_batch_size``, which every method takes and uses where they apply)."""


def patch_map_to_pixels(model: CrossViT, branch: str, patch_map: torch.Tensor, density: bool = False
                        ) -> torch.Tensor:
    """Spread a per-patch map (B, N_patches, row-major over the branch's grid) over the input pixels: (B, H, W).

    Each input pixel takes the value of the patch that covers it. The branch saw the input resized to its own
    size (or centre-cropped); resizing keeps the grid over the whole image, so patch (i, j) of a g x g grid covers
    input rows ``[i * H / g, (i + 1) * H / g)``; a crop leaves the pixels outside the crop at 0.
    With ``density=True`` each value is divided by the number of input pixels its patch covers, so that maps of
    the two grids carry mass per pixel and can be added.
    """
    rows, cols = model.patch_grid(branch)
    if patch_map.ndim != 2 or patch_map.shape[1] != rows * cols:
        raise ValueError(f"the {branch} branch has a {rows}x{cols} grid, so the patch map must be (B, {rows * cols}); "
                         f"got {tuple(patch_map.shape)}")
    size, side = model.image_size, model.branch_image_size(branch)
    grid = patch_map.reshape(-1, 1, rows, cols)  # (B, 1, g, g)
    if model.arch.resize == "crop" and side < size:
        canvas = grid.new_zeros(grid.shape[0], 1, size, size)
        top, left = int(round((size - side) / 2.0)), int(round((size - side) / 2.0))
        canvas[:, :, top:top + side, left:left + side] = F.interpolate(grid, size=(side, side), mode="nearest")
        pixels, covered = canvas[:, 0], (side / rows) * (side / cols)
    else:
        pixels, covered = F.interpolate(grid, size=(size, size), mode="nearest")[:, 0], (size / rows) * (size / cols)
    return pixels / covered if density else pixels


def _resolve_target(model: CrossViT, images: torch.Tensor, target: int | torch.Tensor | None) -> torch.Tensor:
    b = images.shape[0]
    if target is None:
        with torch.no_grad():
            return model(images).argmax(dim=1)
    # class indices only: a float (2.7) or bool target is refused, not cast to some class
    try:
        as_tensor = None if isinstance(target, (str, bytes, bool)) else torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        as_tensor = None
    if as_tensor is None or as_tensor.dtype == torch.bool or as_tensor.is_floating_point() or as_tensor.is_complex():
        raise TypeError(f"target must be an int or a (B,) = ({b},) integer tensor of class indices, got "
                        f"{type(target).__name__} {target!r:.80}")
    target = as_tensor.to(device=images.device, dtype=torch.long)
    if target.ndim == 0:
        target = target.expand(b)
    if target.shape != (b,):
        raise ValueError(f"target must be an int or a (B,) = ({b},) tensor of class indices, got shape "
                         f"{tuple(target.shape)}")
    if (target < 0).any() or (target >= model.num_classes).any():
        raise ValueError(f"target class indices must be in [0, {model.num_classes}), got {target.tolist()}")
    return target


def joint_rollout_pixels(model: CrossViT, rollout: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """Model-level (B, H, W) map from a joint (or gradient) rollout: for each query CLS, add the two grids' mass
    per pixel; then average over the two CLS tokens (the head averages their logits)."""
    maps = [
        sum(patch_map_to_pixels(model, p, rollout[q][p], density=True) for p in model.branch_names)
        for q in model.branch_names
    ]
    return (maps[0] + maps[1]) / 2


def _rollout_branch(branch: str) -> Callable:
    def method(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, start_block: int, head_fusion: str,
               discard_ratio: float) -> torch.Tensor:
        with record_attention(model, sites="self") as rec, torch.no_grad():
            model(images)
        rollout = attention_rollout(rec, branch, head_fusion, discard_ratio, start_block=start_block)
        return patch_map_to_pixels(model, branch, rollout)

    return method


def _joint(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, start_block: int, head_fusion: str
           ) -> torch.Tensor:
    with record_attention(model) as rec, torch.no_grad():
        model(images)
    return joint_rollout_pixels(model, joint_rollout(rec, head_fusion, start_block=start_block))


def _grad_rollout(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, start_block: int) -> torch.Tensor:
    # input that requires grad, so that the maps do too when no parameter does (a frozen model)
    images = images.detach().clone().requires_grad_(True)  # clone: an inference-mode tensor cannot require grad
    with record_attention(model, grads=True) as rec, torch.enable_grad():
        score = model(images).gather(1, target[:, None]).sum()
        maps = list(rec.sites.values())
        score.backward(inputs=maps)  # gradients reach the maps only, never the model's parameters
    return joint_rollout_pixels(model, gradient_rollout(rec, start_block=start_block))


def _branch_choice(name: str, value: object) -> tuple[str, ...]:
    if value not in ("small", "large", "both"):
        raise ValueError(f"{name} must be 'small', 'large' or 'both', got {value!r}")
    return ("small", "large") if value == "both" else (value,)  # type: ignore[return-value]


def _mean_density(model: CrossViT, rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the given grids of their patch rows spread as mass per pixel: (B, H, W)."""
    maps = [patch_map_to_pixels(model, grid, row, density=True) for grid, row in rows.items()]
    return sum(maps) / len(maps)


def _recorded_cls_rows(model: CrossViT, images: torch.Tensor, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Record only the sites named in ``names`` (key -> site name) in one forward; per key, the site's CLS row over
    its keys after the first (the patches), heads averaged: (B, N_keys - 1) in float32."""
    with record_attention(model, sites=lambda name: name in names.values()) as rec, torch.no_grad():
        model(images)
    maps = rec.sites
    return {key: maps[name].float().mean(dim=1)[:, 0, 1:] for key, name in names.items()}


def _cls_attention(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, block: int, layer: int,
                   branch: str) -> torch.Tensor:
    branches = _branch_choice("branch", branch)
    k = check_index("block", block, model.arch.num_blocks, "blocks")
    names = {}
    for b in branches:
        j = check_index("layer", layer, model.arch.branch(b).depth[k], f"{b}-branch layers in block {k}")
        names[b] = f"blocks.{k}.{b}.self.{j}"
    rows = _recorded_cls_rows(model, images, names)  # (B, N_b): the CLS row over its own branch's patches
    return _mean_density(model, rows)


def _cross_attention(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, fusion: int, query: str
                     ) -> torch.Tensor:
    queries = _branch_choice("query", query)
    fusions = sorted({(s.block, s.index) for s in attention_sites(model) if s.kind == "cross"})
    k, f = fusions[check_index("fusion", fusion, len(fusions), "fusion layers")]
    names = {q: f"blocks.{k}.{q}.cross.{f}" for q in queries}
    other = {"small": "large", "large": "small"}
    # the query CLS's row over [its own projected CLS, the other branch's patches]: keep the patches
    rows = {other[q]: row for q, row in _recorded_cls_rows(model, images, names).items()}
    return _mean_density(model, rows)


def _random(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    b, _, h, w = images.shape
    return torch.rand(b, h, w, generator=generator).to(images.device)


def occlusion_window(model: CrossViT) -> int:
    """Side of the occlusion window: the input pixels covered by one small-branch patch when that is a whole
    number (12 px for the ``*_240`` models), else by one large-branch patch, else 1/8 of the image."""
    for branch in model.branch_names:
        rows, _ = model.patch_grid(branch)
        if model.image_size % rows == 0 and model.arch.resize != "crop":
            return model.image_size // rows
    return max(1, model.image_size // 8)


def _captum(name: str) -> Callable:
    def method(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, ig_steps: int,
               internal_batch_size: int) -> torch.Tensor:
        try:
            from captum import attr
        except ImportError as err:  # captum is a run-time dependency, but say so if it is missing
            raise ImportError(f"method {name!r} needs captum: pip install captum") from err

        def attribute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = x.detach().clone().requires_grad_(True)  # captum needs an input that requires grad
            with torch.enable_grad():
                if name == "saliency":
                    # |d score / d pixel|, the largest over the channels
                    return attr.Saliency(model).attribute(x, target=t, abs=True).amax(dim=1)
                if name == "integrated_gradients":
                    # path integral from a black image; the attributions of a pixel's channels are summed
                    ig = attr.IntegratedGradients(model)
                    out = ig.attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=ig_steps,
                                       internal_batch_size=max(internal_batch_size, x.shape[0]))
                    return out.sum(dim=1)
                # occlusion: score drop when a patch-aligned window is set to 0, same value on every channel
                window = occlusion_window(model)
                c = x.shape[1]
                out = attr.Occlusion(model).attribute(
                    x, sliding_window_shapes=(c, window, window), strides=(c, window, window), baselines=0.0,
                    target=t, perturbations_per_eval=max(1, internal_batch_size // x.shape[0]),
                )
                return out.mean(dim=1)

        # at most internal_batch_size images per model call: explain them in chunks of that many
        chunk = max(1, internal_batch_size)
        return torch.cat([attribute(images[i:i + chunk], target[i:i + chunk])
                          for i in range(0, images.shape[0], chunk)])

    return method


_METHODS: dict[str, Callable] = {
    "random": _random,
    "rollout_small": _rollout_branch("small"),
    "rollout_large": _rollout_branch("large"),
    "joint_rollout": _joint,
    "grad_rollout": _grad_rollout,
    "cls_attention": _cls_attention,
    "cross_attention": _cross_attention,
    "integrated_gradients": _captum("integrated_gradients"),
    "saliency": _captum("saliency"),
    "occlusion": _captum("occlusion"),
}


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Within the block the model is in eval mode; its previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def explain(model: CrossViT, images: torch.Tensor, method: str, target: int | torch.Tensor | None = None, *,
            seed: int = 0, ig_steps: int = 32, internal_batch_size: int = 16, **options: object) -> torch.Tensor:
    """Explain ``model``'s score for ``target`` on ``images`` (B, C, H, W): returns (B, H, W), higher = more
    relevant.

    Args:
        method: one of :data:`METHODS`.
        target: class index (int or (B,) tensor); ``None`` explains each image's predicted class.
        seed: seed of the ``random`` baseline.
        ig_steps: integration steps of ``integrated_gradients``.
        internal_batch_size: images per model call inside integrated gradients and occlusion (bounds memory).
        options: the method's own options (``METHOD_OPTIONS[method]`` lists them with their defaults), e.g.
            ``explain(model, images, "joint_rollout", start_block=0)`` or
            ``explain(model, images, "cross_attention", query="large")``.

    The model runs in eval mode (restored afterwards); its parameters' ``.grad`` and ``requires_grad`` flags are
    left untouched, and the gradient methods work on a frozen model (no parameter requiring grad) too: gradients
    flow from an input that requires grad. ``target`` must hold class indices (a float or string is a
    TypeError, never cast); the images' dtype must be the model's (see :func:`crossvit.model.check_images`);
    rollouts are computed in float32 whatever the model's dtype.
    """
    if not isinstance(model, CrossViT):
        raise TypeError(f"explain needs a crossvit.CrossViT, got {type(model).__name__}")
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(METHOD_OPTIONS[method]))
    if unknown:
        valid = ", ".join(METHOD_OPTIONS[method]) or "none"
        raise TypeError(f"method {method!r} has no option {unknown[0]!r}; its options: {valid}")
    chosen = {**METHOD_OPTIONS[method], **options}
    if method in ("rollout_small", "rollout_large", "joint_rollout", "grad_rollout"):
        check_start_block(model, chosen["start_block"])
    if "head_fusion" in chosen and chosen["head_fusion"] not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {chosen['head_fusion']!r}")
    if method == "random":
        chosen["seed"] = seed
    elif method in ("integrated_gradients", "saliency", "occlusion"):
        chosen.update(ig_steps=ig_steps, internal_batch_size=internal_batch_size)
    check_images(images, model)
    # inference_mode(False): gradient methods must work inside a caller's torch.inference_mode() too
    with _eval_mode(model), torch.inference_mode(False):
        target = _resolve_target(model, images, target)
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.grad for p in params]
        try:
            maps = _METHODS[method](model, images, target, **chosen)
        finally:
            for p, g in zip(params, saved):
                p.grad = g
    return maps.detach()
