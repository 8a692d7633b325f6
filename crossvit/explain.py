"""One entry point for every explanation method: ``explain(model, images, method) -> (B, H, W)`` pixel maps.

Every method ends on the pixels of the input image, so methods can be compared on the same ground:

* attention methods give a value per patch of a branch's grid; :func:`patch_map_to_pixels` spreads it over the
  input pixels that patch covers, taking the branch's resize (or crop) into account;
* captum methods give a value per input pixel and channel; channels are reduced as documented per method.

**The registry.** Each method is one :class:`Method` record, made by the :func:`register_method` decorator on its
function: the function's keyword-only parameters are the method's options and their defaults are the method's
defaults; the record adds what the rest of the package needs to know (signed map? class-specific? needs gradients?
needs captum? drawn on one branch's grid?). :func:`explain`, :data:`METHOD_OPTIONS`, the explorers, the plotting and
the benchmarks all read the registry, so adding a method is one function and its decorator. Every option value is
checked in one place (:data:`OPTION_CHECKS`) before the method runs.

=========================  ==================================================================================
``random``                 a seeded baseline (``seed``)
``small_rollout`` /        per-branch rollout of that branch's self-attention (``start_block``, ``head_fusion``,
``large_rollout``          ``discard_ratio``)
``joint_rollout``          both branches through the fusion layers (``start_block``, ``head_fusion``)
``gradient_rollout``       the class-specific joint rollout of Chefer et al. (``start_block``)
``coattention_relevancy``  Chefer et al.'s relevancy rules for co-attention (ICCV 2021), the fusion layers taken as
                           cross-attention between the branches (``start_block``, ``normalize_self``,
                           ``self_in_cross``; see :mod:`crossvit.relevancy`)
``attnlrp`` / ``cp_lrp``    conserved relevance of the target logit (AttnLRP, Achtibat et al. 2024; CP-LRP, Ali
                           et al. 2022; see :mod:`crossvit.lrp`), read at each branch's patch tokens or at the pixels
                           (``readout``, ``epsilon``, ``gamma``)
``cls_attention``          the raw CLS -> patch row of one self-attention layer, heads averaged (``block``,
                           ``layer``, ``query``: whose CLS asks, "small", "large" or "both")
``cross_attention``        one fusion layer's cross-attention row of a CLS token over the *other* branch's patches,
                           heads averaged (``fusion``: index over all fusion layers in forward order, ``query``:
                           "small" = the small CLS reading the large patches, "large" = the large CLS reading the
                           small patches, or "both")
``integrated_gradients``,  through captum (``n_steps`` for integrated gradients, ``internal_batch_size``)
``saliency``, ``occlusion``
=========================  ==================================================================================

**Where a rollout starts** (one rule): the functions of :mod:`crossvit.rollout` implement the definitions and start
at block 0; ``explain``'s methods start where their record's ``start_block`` default says, chosen on held-out
validation images of the bundled model: the class-agnostic rollouts at the last block (their first blocks attend
broadly and blur the product), the gradient rollout at block 0 (its gradient weighting already keeps only what
matters for the class). The explorers use the same defaults.

Old names (``rollout_small``, ``rollout_large``, ``grad_rollout``, the options ``ig_steps`` and ``branch``) still
work for one release, with a FutureWarning.

Where both CLS tokens (or both grids) contribute, the model-level map is their mean, since the head averages the two
branches' logits; each grid's values are spread as mass per pixel (``density=True``) so that the two grids can be
added. The defaults were chosen on held-out images of the bundled model (see ``benchmarks/explanations.py`` and its
table in ``figures/explanation_faithfulness.md``, which also lists the textbook settings, e.g. rollout from the first
block).
"""

from __future__ import annotations

import contextvars
import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from .lrp import READOUTS, patch_relevance, pixel_relevance, rules_suspended
from .model import CrossViT, check_crossvit, check_images
from .recording import attention_sites, leaves_recordings_alone, record_attention, release_attention_memory
from .relevancy import coattention_relevancy
from .rollout import (
    HEAD_FUSIONS,
    attention_rollout,
    check_index,
    check_start_block,
    gradient_rollout,
    joint_rollout,
)
from .utils import (
    BRANCHES,
    check_bool,
    check_choice,
    check_finite_images,
    check_int,
    check_number,
    check_seed,
    class_indices,
    eval_mode,
    other_branch,
    progress_bar,
    renamed_keywords,
    seeded_generator,
)

QUERIES: tuple[str, ...] = ("small", "large", "both")
"""Values of the ``query`` option: whose CLS token asks (both: the mean of the two maps)."""



# ----------------------------------------------------------------------------------------------------------------
# the registry


OPTION_CHECKS: dict[str, Callable[[CrossViT, object], object]] = {
    "start_block": check_start_block,
    "head_fusion": lambda model, v: check_choice("head_fusion", v, HEAD_FUSIONS),
    "discard_ratio": lambda model, v: check_number("discard_ratio", v, 0.0, 1.0, high_open=True),
    "block": lambda model, v: check_int("block", v),
    "layer": lambda model, v: check_int("layer", v),
    "fusion": lambda model, v: check_int("fusion", v),
    "query": lambda model, v: check_choice("query", v, QUERIES),
    "seed": lambda model, v: check_seed("seed", v),
    "n_steps": lambda model, v: check_int("n_steps", v, 1),
    "internal_batch_size": lambda model, v: check_int("internal_batch_size", v, 1),
    "normalize_self": lambda model, v: check_bool("normalize_self", v),
    "self_in_cross": lambda model, v: check_bool("self_in_cross", v),
    "readout": lambda model, v: check_choice("readout", v, READOUTS),
    "epsilon": lambda model, v: check_number("epsilon", v, 0.0, float("inf"), high_open=True),
    "gamma": lambda model, v: check_number("gamma", v, 0.0, float("inf"), high_open=True),
}
"""How each option's value is checked (and normalised, e.g. a numpy integer to an int), by option name: a
TypeError or ValueError that names the option, raised before the model runs."""

SHARED_OPTIONS: tuple[str, ...] = ("seed", "n_steps", "internal_batch_size")
"""Options :func:`explain` accepts for every method, so that one loop can pass them to all; a method uses those
among its own options and ignores the rest (they are still checked)."""

_OPTION_RENAMES = {"ig_steps": "n_steps", "branch": "query"}  # deprecated option names -> current ones


@dataclass(frozen=True)
class Method:
    """One explanation method: its function and what the package needs to know about it.

    ``function(model, images, target, **options) -> (B, H, W)`` gets a model in eval mode, images checked against
    it, ``target`` as a (B,) long tensor of class indices (None when no target was given and the method is not
    class-specific, or says ``own_prediction``: it then explains the prediction of its own forward, which spares a
    forward pass), and every option (the defaults filled in, each value checked by :data:`OPTION_CHECKS`).
    """

    name: str
    function: Callable[..., torch.Tensor]
    summary: str
    defaults: Mapping[str, object]  # option -> default, from the function's keyword-only parameters
    signed: bool = False  # values of both signs (draw on a zero-centred diverging scale)
    class_specific: bool = False  # the map depends on the target class
    needs_gradients: bool = False  # a backward pass
    needs_captum: bool = False
    branch: str | None = None  # the map lies on this branch's patch grid only (per-branch rollouts)
    aliases: tuple[str, ...] = field(default=())  # deprecated names
    own_prediction: bool = False  # with target None, the function explains the prediction of its own forward
    per_image: bool = True  # an image's map does not depend on the rest of the batch (explain(progress=True) splits)

    def resolve(self, model: CrossViT, given: Mapping[str, object]) -> dict[str, object]:
        """The options the function gets: defaults overridden by ``given`` (own or shared options), each checked;
        an unknown option is a TypeError that lists the method's options."""
        renames = {old: new for old, new in _OPTION_RENAMES.items() if new in self.defaults or new in SHARED_OPTIONS}
        given = renamed_keywords(f"explain({self.name!r})", dict(given), renames, stacklevel=4)
        unknown = sorted(set(given) - set(self.defaults) - set(SHARED_OPTIONS))
        if unknown:
            valid = ", ".join(self.defaults) or "none"
            shared = ", ".join(o for o in SHARED_OPTIONS if o not in self.defaults)
            raise TypeError(f"method {self.name!r} has no option {unknown[0]!r}; its options: {valid} "
                            f"(besides {shared}, which every method accepts)")
        chosen = {**self.defaults, **given}
        checked = {name: OPTION_CHECKS[name](model, value) for name, value in chosen.items()}
        return {name: value for name, value in checked.items() if name in self.defaults}


REGISTRY: dict[str, Method] = {}
"""Every explanation method by name, in the order they were registered."""
_ALIASES: dict[str, str] = {}


def register_method(name: str, *, summary: str, signed: bool = False, class_specific: bool = False,
                    needs_gradients: bool = False, needs_captum: bool = False, branch: str | None = None,
                    aliases: tuple[str, ...] = (), own_prediction: bool = False, per_image: bool = True
                    ) -> Callable[[Callable], Callable]:
    """Decorator: register ``function`` as explanation method ``name`` (see :class:`Method`). Its keyword-only
    parameters, all with defaults, are the method's options; each needs an entry in :data:`OPTION_CHECKS`."""
    def decorate(function: Callable) -> Callable:
        if name in REGISTRY or name in _ALIASES:
            raise ValueError(f"explanation method {name!r} is already registered")
        params = inspect.signature(function).parameters.values()
        options = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        if any(v is inspect.Parameter.empty for v in options.values()):
            raise TypeError(f"every option of method {name!r} needs a default")
        unchecked = sorted(set(options) - set(OPTION_CHECKS))
        if unchecked:
            raise TypeError(f"method {name!r}: add a check for option(s) {unchecked} to OPTION_CHECKS")
        REGISTRY[name] = Method(name, function, summary, MappingProxyType(options), signed, class_specific,
                                needs_gradients, needs_captum, branch, aliases, own_prediction, per_image)
        for alias in aliases:
            _ALIASES[alias] = name
        return function

    return decorate


def get_method(name: object) -> Method:
    """The registered :class:`Method` called ``name`` (a deprecated alias gives a FutureWarning); a ValueError that
    lists the methods otherwise."""
    if isinstance(name, str) and name in _ALIASES:
        warnings.warn(f"explanation method {name!r} is now called {_ALIASES[name]!r}; the old name will be removed "
                      "in the next release", FutureWarning, stacklevel=3)
        name = _ALIASES[name]
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# ----------------------------------------------------------------------------------------------------------------
# from patches to pixels


def patch_map_to_pixels(model: CrossViT, branch: str, patch_map: torch.Tensor, density: bool = False
                        ) -> torch.Tensor:
    """Spread a per-patch map (B, N_patches, row-major over the branch's grid) over the input pixels: (B, H, W).

    Each input pixel takes the value of the patch that covers it. The branch saw the input resized to its own
    size (or centre-cropped); resizing keeps the grid over the whole image, so patch (i, j) of a g x g grid covers
    input rows ``[i * H / g, (i + 1) * H / g)``; a crop leaves the pixels outside the crop at 0.
    With ``density=True`` each value is divided by its patch's area in input pixels, ``(H / rows) * (W / cols)``
    (the resized or cropped side for a crop), so that maps of the two grids carry mass per pixel and can be added.
    That is the patch's exact area in the continuous image; where the grid does not divide the image, the
    nearest-pixel spreading gives a patch a whole number of pixels a side (19 or 20 for a 5 x 5 grid over 96 px), so
    a density map's sum differs from the patch map's by up to that rounding (a few per cent), not exactly.
    """
    check_crossvit(model, "patch_map_to_pixels (model first, then branch and patch_map)")
    density = check_bool("density", density)
    if not isinstance(patch_map, torch.Tensor) or not patch_map.is_floating_point():
        raise TypeError(f"patch_map must be a floating-point (B, N_patches) tensor, got "
                        f"{patch_map.dtype if isinstance(patch_map, torch.Tensor) else type(patch_map).__name__}")
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
    if target is None:
        with torch.no_grad():
            return model(images).argmax(dim=1)
    return class_indices("explain", target, images.shape[0], model.num_classes).to(images.device)


def joint_rollout_pixels(model: CrossViT, rollout: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
    """Model-level (B, H, W) map from a joint (or gradient) rollout: for each query CLS, add the two grids' mass
    per pixel; then average over the two CLS tokens (the head averages their logits). ``rollout[query][patches]``
    is the (B, N_patches) row of query CLS ``query`` over branch ``patches``'s patch tokens, for all four pairs."""
    if not isinstance(rollout, Mapping):
        raise TypeError(f"rollout must be a dict of dicts (query -> patch branch -> rows), got "
                        f"{type(rollout).__name__}")
    for q in model.branch_names:
        if not isinstance(rollout.get(q), Mapping) or any(p not in rollout[q] for p in model.branch_names):
            raise ValueError(f"rollout must hold rollout[{q!r}][patch branch] for both branches "
                             f"{model.branch_names}; it has keys {list(rollout)!r:.80}")
    batches = {len(rollout[q][p]) for q in model.branch_names for p in model.branch_names
               if isinstance(rollout[q][p], torch.Tensor)}
    if len(batches) > 1:
        raise ValueError(f"the four rollout rows must have one batch size, got {sorted(batches)}")
    maps = [
        sum(patch_map_to_pixels(model, p, rollout[q][p], density=True) for p in model.branch_names)
        for q in model.branch_names
    ]
    return (maps[0] + maps[1]) / 2




# ----------------------------------------------------------------------------------------------------------------
# the methods, each a function and its record


@register_method("random", summary="a seeded uniform-noise baseline", per_image=False)  # one draw for the batch
def random_map(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    generator = seeded_generator(seed)
    b, _, h, w = images.shape
    return torch.rand(b, h, w, generator=generator).to(images.device)


def _branch_rollout(model: CrossViT, images: torch.Tensor, branch: str, start_block: int, head_fusion: str,
                    discard_ratio: float) -> torch.Tensor:
    with record_attention(model, sites="self") as rec, torch.no_grad():
        model(images)
    rollout = attention_rollout(rec, branch, head_fusion, discard_ratio, start_block=start_block)
    return patch_map_to_pixels(model, branch, rollout)


@register_method("small_rollout", summary="rollout of the small branch's self-attention", branch="small",
                 aliases=("rollout_small",))
def small_rollout(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, start_block: int = -1,
                  head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    return _branch_rollout(model, images, "small", start_block, head_fusion, discard_ratio)


@register_method("large_rollout", summary="rollout of the large branch's self-attention", branch="large",
                 aliases=("rollout_large",))
def large_rollout(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, start_block: int = -1,
                  head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    return _branch_rollout(model, images, "large", start_block, head_fusion, discard_ratio)


@register_method("joint_rollout", summary="rollout of both branches through the fusion layers")
def joint_rollout_map(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, start_block: int = -1,
                      head_fusion: str = "mean") -> torch.Tensor:
    with record_attention(model) as rec, torch.no_grad():
        model(images)
    return joint_rollout_pixels(model, joint_rollout(rec, head_fusion, start_block=start_block))


def _backward_to_maps(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None):
    """A forward that records every attention map and a backward from the target logits (the predicted class of
    this forward where ``target`` is None) to the maps only; returns the recorder (maps and their gradients)."""
    # input that requires grad, so that the maps do too when no parameter does (a frozen model)
    images = images.detach().clone().requires_grad_(True)  # clone: an inference-mode tensor cannot require grad
    with record_attention(model, grads=True) as rec, torch.enable_grad():
        logits = model(images)
        if target is None:  # the predicted class, from this very forward
            target = logits.detach().argmax(dim=1)
        score = logits.gather(1, target[:, None]).sum()
        maps = list(rec.sites.values())
        score.backward(inputs=maps)  # gradients reach the maps only, never the model's parameters
    return rec


@register_method("gradient_rollout", summary="class-specific joint rollout of gradient-weighted attention "
                 "(Chefer et al. 2021)", class_specific=True, needs_gradients=True, aliases=("grad_rollout",),
                 own_prediction=True)
def gradient_rollout_map(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None, *,
                         start_block: int = 0) -> torch.Tensor:
    rec = _backward_to_maps(model, images, target)
    rows = gradient_rollout(rec, start_block=start_block)
    rec.clear()  # the maps and their graph go now, not when the recorder is collected
    return joint_rollout_pixels(model, rows)


@register_method("coattention_relevancy", summary="Chefer et al.'s ICCV 2021 relevancy rules for co-attention, "
                 "with the fusion layers as cross-attention between the branches", class_specific=True,
                 needs_gradients=True, own_prediction=True)
def coattention_relevancy_map(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None, *,
                              start_block: int = 0, normalize_self: bool = True,
                              self_in_cross: bool = True) -> torch.Tensor:
    rec = _backward_to_maps(model, images, target)
    rows = coattention_relevancy(rec, normalize_self=normalize_self, self_in_cross=self_in_cross,
                                 start_block=start_block)
    rec.clear()
    return joint_rollout_pixels(model, rows)


def _lrp_map(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None, rule: str, readout: str,
             epsilon: float, gamma: float) -> torch.Tensor:
    if readout == "pixels":
        return pixel_relevance(model, images, target, rule, epsilon=epsilon, gamma=gamma)
    rows = patch_relevance(model, images, target, rule, epsilon=epsilon, gamma=gamma)
    # mass per pixel, so that the two grids' relevance adds up (and the map sums to the patch tokens' relevance)
    return sum(patch_map_to_pixels(model, b, rows[b], density=True) for b in model.branch_names)


@register_method("attnlrp", summary="AttnLRP (Achtibat et al. 2024): the target logit's conserved relevance, one "
                 "modified backward pass read as gradient x input", signed=True, class_specific=True,
                 needs_gradients=True, own_prediction=True)
def attnlrp(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None, *, readout: str = "tokens",
            epsilon: float = 0.0, gamma: float = 0.0) -> torch.Tensor:
    return _lrp_map(model, images, target, "attnlrp", readout, epsilon, gamma)


@register_method("cp_lrp", summary="CP-LRP (Ali et al. 2022): conserved relevance with the attention weights held "
                 "constant", signed=True, class_specific=True, needs_gradients=True, own_prediction=True)
def cp_lrp(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None, *, readout: str = "tokens",
           epsilon: float = 0.0, gamma: float = 0.0) -> torch.Tensor:
    return _lrp_map(model, images, target, "cp_lrp", readout, epsilon, gamma)


def _queries(query: str) -> tuple[str, ...]:
    return BRANCHES if query == "both" else (query,)


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


@register_method("cls_attention", summary="the raw CLS row of one self-attention layer, heads averaged")
def cls_attention(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, block: int = -1, layer: int = 0,
                  query: str = "both") -> torch.Tensor:
    k = check_index("block", block, model.arch.num_blocks, "blocks")
    names = {}
    for b in _queries(query):
        j = check_index("layer", layer, model.arch.branch(b).depth[k], f"{b}-branch layers in block {k}")
        names[b] = f"blocks.{k}.{b}.self.{j}"
    rows = _recorded_cls_rows(model, images, names)  # (B, N_b): the CLS row over its own branch's patches
    return _mean_density(model, rows)


@register_method("cross_attention", summary="one fusion layer's CLS row over the other branch's patches")
def cross_attention(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, fusion: int = -1,
                    query: str = "both") -> torch.Tensor:
    fusions = sorted({(s.block, s.index) for s in attention_sites(model) if s.kind == "cross"})
    k, f = fusions[check_index("fusion", fusion, len(fusions), "fusion layers")]
    names = {q: f"blocks.{k}.{q}.cross.{f}" for q in _queries(query)}
    # the query CLS's row over [its own projected CLS, the other branch's patches]: keep the patches
    rows = {other_branch(q): row for q, row in _recorded_cls_rows(model, images, names).items()}
    return _mean_density(model, rows)


def occlusion_window(model: CrossViT) -> int:
    """Side of the occlusion window: the input pixels covered by one small-branch patch when that is a whole
    number (12 px for the ``*_240`` models), else by one large-branch patch, else 1/8 of the image."""
    check_crossvit(model, "occlusion_window")
    for branch in model.branch_names:
        rows, _ = model.patch_grid(branch)
        if model.image_size % rows == 0 and model.arch.resize != "crop":
            return model.image_size // rows
    return max(1, model.image_size // 8)


# set by explain(progress=True) while a method runs: occlusion, the slowest, then shows captum's bar over its windows
_SHOW_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("show_progress", default=False)


def _captum_attr() -> Any:
    try:
        from captum import attr
    except ImportError as err:  # captum is a run-time dependency, but say so if it is missing
        raise ImportError("the captum methods need captum: pip install captum") from err
    return attr


def _in_chunks(images: torch.Tensor, target: torch.Tensor, chunk: int,
               attribute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``attribute`` on at most ``chunk`` images at a time, each chunk an input that requires grad (as captum
    needs); the results concatenated."""
    outs = []
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            outs.append(attribute(x, target[i:i + chunk]))
    return torch.cat(outs)


@register_method("integrated_gradients", summary="integrated gradients from a black image (captum)", signed=True,
                 class_specific=True, needs_gradients=True, needs_captum=True)
def integrated_gradients(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, n_steps: int = 32,
                         internal_batch_size: int = 16) -> torch.Tensor:
    attr = _captum_attr()

    def attribute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # path integral from a black image; the attributions of a pixel's channels are summed
        out = attr.IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=t, n_steps=n_steps,
            internal_batch_size=max(internal_batch_size, x.shape[0]))
        return out.sum(dim=1)

    return _in_chunks(images, target, internal_batch_size, attribute)


@register_method("saliency", summary="|d score / d pixel|, the largest over the channels (captum)",
                 class_specific=True, needs_gradients=True, needs_captum=True)
def saliency(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, internal_batch_size: int = 16
             ) -> torch.Tensor:
    attr = _captum_attr()
    return _in_chunks(images, target, internal_batch_size,
                      lambda x, t: attr.Saliency(model).attribute(x, target=t, abs=True).amax(dim=1))


@register_method("occlusion", summary="score drop when a patch-sized window is set to 0 (captum)", signed=True,
                 class_specific=True, needs_captum=True)
def occlusion(model: CrossViT, images: torch.Tensor, target: torch.Tensor, *, internal_batch_size: int = 16
              ) -> torch.Tensor:
    attr = _captum_attr()
    window = occlusion_window(model)

    def attribute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # the same value on every channel; windows aligned with the patches
        c = x.shape[1]
        out = attr.Occlusion(model).attribute(
            x, sliding_window_shapes=(c, window, window), strides=(c, window, window), baselines=0.0, target=t,
            perturbations_per_eval=max(1, internal_batch_size // x.shape[0]),
            show_progress=_SHOW_PROGRESS.get())  # a bar over the windows: ~20 s an image on a 240 px model
        return out.mean(dim=1)

    return _in_chunks(images, target, internal_batch_size, attribute)


class _MethodNames(Sequence):
    """The registry's method names, in registration order: a live view (a method registered later appears)."""

    def __getitem__(self, index):  # noqa: ANN001 - Sequence's signature
        return tuple(REGISTRY)[index]

    def __len__(self) -> int:
        return len(REGISTRY)

    def __contains__(self, name: object) -> bool:
        return name in REGISTRY

    def __repr__(self) -> str:
        return repr(tuple(REGISTRY))


class _MethodOptions(Mapping):
    """Each registered method's options and defaults, read from the registry (a live, read-only view)."""

    def __getitem__(self, name: str) -> Mapping[str, object]:
        return REGISTRY[name].defaults

    def __iter__(self):  # noqa: ANN204
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)

    def __repr__(self) -> str:
        return repr({name: dict(m.defaults) for name, m in REGISTRY.items()})


METHODS: Sequence[str] = _MethodNames()
"""Names of the explanation methods (the registry, :data:`REGISTRY`), in a teaching order."""

METHOD_OPTIONS: Mapping[str, Mapping[str, object]] = _MethodOptions()
"""Each method's own options and their defaults (read from the registry): :func:`explain` accepts these keywords
for that method, besides the :data:`SHARED_OPTIONS` every method accepts."""


# ----------------------------------------------------------------------------------------------------------------
# the entry point


@leaves_recordings_alone
def explain(model: CrossViT, images: torch.Tensor, method: str, target: int | torch.Tensor | None = None, *,
            progress: bool = False, **options: object) -> torch.Tensor:
    """Explain ``model``'s score for ``target`` on ``images`` (B, C, H, W): returns (B, H, W), higher = more
    relevant.

    Args:
        method: a name in :data:`METHODS` (the registry).
        target: class index (int or (B,) tensor); ``None`` explains each image's predicted class.
        options: the method's own options (``METHOD_OPTIONS[method]`` lists them with their defaults), e.g.
            ``explain(model, images, "joint_rollout", start_block=0)`` or
            ``explain(model, images, "cross_attention", query="large")``, plus the shared options every method
            accepts and uses where they apply: ``seed`` (of ``random``, in [0, 2**64)), ``n_steps`` (integration
            steps of ``integrated_gradients``), ``internal_batch_size`` (images per model call inside the captum
            methods; bounds memory). Every value is checked before the model runs.
        progress: show a tqdm bar. The batch is then explained a few images at a time (at most 50 steps), which
            gives the same maps up to floating-point rounding (a method registered with ``per_image=False``, such
            as ``random``, runs on the whole batch at once); occlusion also shows captum's bar over its windows.

    The model runs in eval mode (every submodule's train/eval flag is restored afterwards, also when several
    threads explain one model: :func:`crossvit.utils.eval_mode`); its parameters' ``.grad`` and ``requires_grad`` flags are
    left untouched, and the gradient methods work on a frozen model (no parameter requiring grad) too: gradients
    flow from an input that requires grad. ``target`` must hold class indices (a float or string is a
    TypeError, never cast); the images' dtype must be the model's (see :func:`crossvit.model.check_images`);
    rollouts are computed in float32 whatever the model's dtype. Inside a caller's :func:`crossvit.lrp.lrp_rules`
    block each method still gives its own map (:func:`crossvit.lrp.rules_suspended`). The call leaves nothing
    behind on the model: the attention memory its recording used is released at the end.
    """
    record = get_method(method)
    chosen = record.resolve(check_crossvit(model, "explain"), options)
    check_images(images, model)
    check_finite_images(images)
    step = -(-len(images) // 50) if check_bool("progress", progress) and record.per_image else len(images)
    # gradient methods work inside a caller's torch.inference_mode() and lrp_rules block (it changes gradients) too
    with eval_mode(model), torch.inference_mode(False), rules_suspended(model):
        if target is not None or (record.class_specific and not record.own_prediction):
            target = _resolve_target(model, images, target)  # a class-agnostic method needs no prediction
        params = [p for p in model.parameters() if p.requires_grad]
        saved, token = [p.grad for p in params], _SHOW_PROGRESS.set(progress and not os.environ.get("TQDM_DISABLE"))
        try:
            maps = torch.cat([
                record.function(model, images[i:i + step], None if target is None else target[i:i + step], **chosen)
                for i in progress_bar(range(0, len(images), step), desc=f"explain ({record.name})", unit="chunk",
                                      progress=progress)])
        finally:
            _SHOW_PROGRESS.reset(token)
            for p, g in zip(params, saved):
                p.grad = g
            release_attention_memory(model)
    return maps.detach()
