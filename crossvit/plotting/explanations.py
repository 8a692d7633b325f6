"""Rollouts and attributions (notebooks 04 and 05), training curves and tables (notebook 06)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from ..metrics import maximal_pixels
from ..model import CrossViT, check_crossvit
from .attention import _attention_panel, _grid_colorbars, _grid_scales
from .base import (
    HEAT_CMAP,
    MAX_COLUMNS,
    SIGNED_CLIP_PERCENTILE,
    SIGNED_CMAP,
    ArrayLike,
    add_colorbar,
    balanced_columns,
    check_image_index,
    draw_mask_contour,
    is_signed,
    leaves_no_figure_on_error,
    overlay_heatmap,
    show_image,
    to_numpy,
)

# ----------------------------------------------------------------------------------------------------------------
# Rollout and attributions (notebooks 04 and 05)


@leaves_no_figure_on_error
def plot_joint_rollout(model: CrossViT, image: ArrayLike, joint: Mapping[str, Mapping[str, ArrayLike]], *,
                       index: int = 0, alpha: float = 0.6, size: float = 2.6, scale: str = "shared") -> Figure:
    """The joint rollout ``out[query][patch_branch]`` (from :func:`crossvit.joint_rollout`) as a grid of panels:
    rows = the query CLS, columns = the branch whose patches it ends up on. Titles give the share of the CLS's
    total patch mass that lands on that branch; one colour bar (``scale`` as in :func:`plot_cls_attention`)."""
    check_crossvit(model, "plot_joint_rollout")
    branches = list(model.branch_names)
    fig, axes = plt.subplots(len(branches), len(branches), figsize=(size * len(branches), size * len(branches)),
                             squeeze=False, layout="constrained")
    arrays = {q: {p: to_numpy(joint[q][p]) for p in branches} for q in branches}
    rows = {q: {p: a[check_image_index(index, len(a))] for p, a in arrays[q].items()} for q in branches}
    scales = _grid_scales([(p, rows[q][p]) for q in branches for p in branches], scale)
    for i, query in enumerate(branches):
        total = sum(float(r.sum()) for r in rows[query].values())
        for j, patch_branch in enumerate(branches):
            share = float(rows[query][patch_branch].sum()) / total if total > 0 else 0.0
            _attention_panel(axes[i, j], model, image, patch_branch, rows[query][patch_branch],
                             f"{query} CLS -> {patch_branch} patches\n{share:.0%} of its patch mass", alpha, True,
                             scales[patch_branch])
    fig.suptitle("joint rollout through both branches and the fusion layers", fontsize=11)
    _grid_colorbars(fig, [(axes[i, j], p) for i in range(len(branches)) for j, p in enumerate(branches)], scales,
                    "rollout weight of a patch")
    return fig


@leaves_no_figure_on_error
def plot_method_grid(images: ArrayLike, maps_by_method: Mapping[str, ArrayLike], masks: ArrayLike | None = None,
                     *, titles: Sequence[str] | None = None, alpha: float = 0.55, cmap: str | None = None,
                     size: float = 1.9, show_input: bool = True, signed: bool | Sequence[str] | None = None,
                     max_columns: int = MAX_COLUMNS, clip_percentile: float = SIGNED_CLIP_PERCENTILE) -> Figure:
    """Rows = images, columns = methods (an optional first column shows the plain image).

    ``maps_by_method``: method name -> (B, H, W) pixel maps (as :func:`crossvit.explain` returns). Each panel is
    scaled on its own, and the colour bars say how:

    * an unsigned map is min-max scaled (``cmap``, default :data:`HEAT_CMAP`);
    * a signed map keeps its sign: diverging :data:`SIGNED_CMAP` centred at 0, symmetric, +-1 = the
      ``clip_percentile`` percentile of |value| (see :func:`overlay_heatmap`); its column title says "signed".

    ``signed``: None decides per method with :func:`is_signed` (:data:`SIGNED_METHODS`, or negative values);
    True / False applies to every method; a list names the signed methods. ``masks`` (B, H, W) outline the
    ground-truth object in every panel; ``titles`` label the rows (shown on the input column). With more than
    ``max_columns`` columns the methods wrap into bands of rows, each band repeating the input column.
    """
    methods = list(maps_by_method)
    if not methods:
        raise ValueError("maps_by_method is empty: give at least one method's maps")
    n = len(images)
    arrays = {m: to_numpy(maps_by_method[m]) for m in methods}
    for m, array in arrays.items():
        if array.ndim != 3 or array.shape[0] != n:
            raise ValueError(f"maps of {m!r} must be (B, H, W) with B = {n} images, got {array.shape}")
    if masks is not None and (to_numpy(masks).ndim != 3 or len(masks) != n):
        raise ValueError(f"masks must be (B, H, W) with B = {n} images, one per image, got "
                         f"{tuple(to_numpy(masks).shape)}")
    if signed is None:
        signed_methods = {m for m in methods if is_signed(m, arrays[m])}
    elif isinstance(signed, bool):
        signed_methods = set(methods) if signed else set()
    elif isinstance(signed, str) or not isinstance(signed, Iterable) or not all(isinstance(m, str) for m in signed):
        raise ValueError(f"signed must be None, True, False or a list of method names (of {methods}), got "
                         f"{signed!r:.60}")
    else:
        signed_methods = set(signed)
    per_band = balanced_columns(len(methods), max(1, max_columns - int(show_input)))
    bands = [methods[k:k + per_band] for k in range(0, len(methods), per_band)]
    ncols = per_band + int(show_input)
    fig, axes = plt.subplots(n * len(bands), ncols, figsize=(size * ncols + 1.2, size * n * len(bands) + 0.2),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    drawn: dict[bool, list[Axes]] = {False: [], True: []}  # panels by signedness
    for b, band in enumerate(bands):
        for i in range(n):
            row = b * n + i
            if show_input:
                ax = axes[row, 0]
                ax.axis("on")
                show_image(ax, images[i], titles[i] if titles is not None else ("input" if i == 0 else None))
                if masks is not None:
                    draw_mask_contour(ax, masks[i])
            for j, method in enumerate(band):
                ax = axes[row, int(show_input) + j]
                ax.axis("on")
                is_signed_map = method in signed_methods
                label = f"{method}\n(signed)" if is_signed_map else method
                overlay_heatmap(ax, images[i], arrays[method][i], alpha=alpha,
                                cmap=None if is_signed_map else cmap, title=label if i == 0 else None,
                                signed=is_signed_map, clip_percentile=clip_percentile)
                ax.title.set_fontsize(8)
                drawn[is_signed_map].append(ax)
                if masks is not None:
                    draw_mask_contour(ax, masks[i])
    everything = list(axes.flat)  # the bars stand right of the whole grid, not between columns
    if drawn[False]:
        add_colorbar(fig, everything, "unsigned maps:\neach panel min-max scaled", cmap=cmap or HEAT_CMAP,
                     ticks=[0.0, 1.0], ticklabels=["min", "max"], shrink=0.6)
    if drawn[True]:
        add_colorbar(fig, everything, f"signed maps (per panel): 0 = no colour,\n"
                                       f"+-1 = {clip_percentile:g}th percentile of |value|",
                     vmin=-1.0, vmax=1.0, cmap=SIGNED_CMAP, ticks=[-1.0, 0.0, 1.0],
                     ticklabels=["-1\nagainst", "0", "+1\nfor"], shrink=0.6)
    return fig


MAXIMAL_COLOUR = "#39ff14"  # the marks of the maximal pixels: a green no heat map or object colour uses


def mark_maximal_pixels(ax: Axes, heat: ArrayLike) -> None:
    """Outline the *maximal pixels* of one (H, W) map on ``ax`` (green) and mark their centre with a +: the pixels
    the pointing game scores (:func:`crossvit.metrics.maximal_pixels`), of the map as it is, signs included."""
    maximal = to_numpy(maximal_pixels(torch.as_tensor(to_numpy(heat))[None])[0])  # (H, W) bool
    rows, cols = np.nonzero(maximal)
    if maximal.all():  # a constant map: every pixel is maximal, and an outline would only frame the panel
        return
    padded = np.pad(maximal, 1).astype(float)  # so that a region at the border gets a closed outline
    ax.contour(np.arange(-1, maximal.shape[1] + 1), np.arange(-1, maximal.shape[0] + 1), padded, levels=[0.5],
               colors=[MAXIMAL_COLOUR], linewidths=1.2)
    ax.plot(cols.mean(), rows.mean(), marker="+", color=MAXIMAL_COLOUR, markersize=9, markeredgewidth=2)


@leaves_no_figure_on_error
def plot_class_maps(image: ArrayLike, maps_by_method: Mapping[str, ArrayLike], masks: ArrayLike,
                    class_names: Sequence[str], *, hits: Mapping[str, Sequence[bool]] | None = None,
                    alpha: float = 0.6, size: float = 1.9, mark_maximal: bool = True) -> Figure:
    """"Why this class?" on one image holding several objects: one row per object's class, one column per method.

    ``maps_by_method``: method -> (K, H, W), the method's map of ``image`` for each of the K classes in turn;
    ``masks`` (K, H, W): object k's mask (k's class is ``class_names[k]``); ``hits``: method -> K bools, whether
    the map for class k points at object k (shown in the title). In row k, object k is outlined solid and the other
    objects dashed; each panel is min-max scaled on its own (signed maps by their magnitude). ``mark_maximal``
    outlines each map's maximal pixels in green, with a + at their centre: what the pointing game scored (of the
    signed map itself, so the mark can sit elsewhere than the strongest colour of a signed map's magnitude).
    """
    methods = list(maps_by_method)
    masks = to_numpy(masks).astype(bool)
    k_count = len(masks)
    if not methods:
        raise ValueError("maps_by_method is empty: give at least one method's maps")
    if len(class_names) != k_count:
        raise ValueError(f"class_names must name the {k_count} objects of masks, got {len(class_names)}")
    arrays = {m: to_numpy(maps_by_method[m]) for m in methods}
    for m, array in arrays.items():
        if array.shape != masks.shape:
            raise ValueError(f"maps of {m!r} must be (K, H, W) = {masks.shape}, one per object's class, "
                             f"got {array.shape}")
    if hits is not None and (not isinstance(hits, Mapping) or any(
            m not in hits or len(hits[m]) != k_count for m in methods)):
        raise ValueError(f"hits must map every method ({methods}) to {k_count} bools, one per object, got "
                         f"{hits!r:.80}")
    fig, axes = plt.subplots(k_count, len(methods) + 1, figsize=(size * (len(methods) + 1) + 1.0,
                                                                size * k_count + 0.5),
                             squeeze=False, layout="constrained")
    for k in range(k_count):
        show_image(axes[k, 0], image, f"explain: {class_names[k]}")
        axes[k, 0].title.set_fontsize(8)
        for j, method in enumerate(methods, start=1):
            heat = np.abs(arrays[method][k])  # the magnitude: where the map says most, whatever its sign
            verdict = ""
            if hits is not None:
                verdict = "\npoints at it" if hits[method][k] else "\nmisses it"
            overlay_heatmap(axes[k, j], image, heat, alpha=alpha, title=(method if k == 0 else "") + verdict)
            axes[k, j].title.set_fontsize(8)
            if mark_maximal:
                mark_maximal_pixels(axes[k, j], arrays[method][k])
        for ax in axes[k]:
            for other in range(k_count):
                ax.contour(masks[other].astype(float), levels=[0.5], colors=["#00e5ff" if other == k else "white"],
                           linewidths=1.4 if other == k else 0.9, linestyles="solid" if other == k else "dashed")
    label = "each panel min-max scaled\n(signed maps: |value|)" + ("\ngreen: maximal pixels, + their centre"
                                                                   if mark_maximal else "")
    add_colorbar(fig, list(axes.flat), label, cmap=HEAT_CMAP,
                 ticks=[0.0, 1.0], ticklabels=["min", "max"], shrink=0.6)
    return fig


@leaves_no_figure_on_error
def plot_deletion_insertion(result_by_method: Mapping[str, Any], size: tuple[float, float] = (10.0, 3.8),
                            log_x: bool = False) -> Figure:
    """Mean deletion and insertion curves (Petsiuk et al. 2018) per method, AUC in the legend.

    ``result_by_method``: method name -> :class:`crossvit.metrics.DeletionInsertionResult` (all of one
    ``score``: probability or logit curves). A method called ``"random"`` is drawn as a dashed grey baseline.
    ``log_x`` draws the fraction of pixels on a logarithmic axis (linear below the first non-zero point, so that
    0 stays on it): for curves taken at geometric fractions, where the first few percent are what tells methods
    apart.
    """
    scores = {getattr(result, "score", "probability") for result in result_by_method.values()}
    if len(scores) != 1:
        raise ValueError(f"the results mix curves of different scores: {sorted(scores)}")
    score = scores.pop()
    fig, (ax_del, ax_ins) = plt.subplots(1, 2, figsize=size, layout="constrained")
    # the dashed grey of the random baseline is for it alone: no method is drawn in grey
    cycle = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]
             if to_hex(c) not in (to_hex("grey"), "#7f7f7f")] + ["black"]  # ten colours; past them, new dashes
    k = 0
    for method, result in result_by_method.items():
        fractions = to_numpy(result.fractions)
        if method == "random":
            style: dict[str, Any] = dict(color="grey", linestyle="--", linewidth=1.6)
        else:
            style = dict(color=cycle[k % len(cycle)], linewidth=1.4, linestyle=("-", "-.", ":")[k // len(cycle) % 3])
            k += 1
        ax_del.plot(fractions, to_numpy(result.deletion).mean(axis=0),
                    label=f"{method} ({result.mean_deletion_auc:.3f})", **style)
        ax_ins.plot(fractions, to_numpy(result.insertion).mean(axis=0),
                    label=f"{method} ({result.mean_insertion_auc:.3f})", **style)
    if log_x:  # the axis is linear below the first point after 0
        first = float(min(f for f in to_numpy(next(iter(result_by_method.values())).fractions) if f > 0))
        ticks = [0.0] + [10.0 ** k for k in range(math.ceil(math.log10(first)), 1)]
    for ax, name, better in ((ax_del, "deletion", "lower"), (ax_ins, "insertion", "higher")):
        ax.set_xlabel("fraction of pixels " + ("removed (set to 0)" if name == "deletion" else
                                               "restored into the blurred image"))
        ax.set_ylabel(f"{score} of the explained class")
        ax.set_title(f"{name} (AUC in legend, {better} is better)", fontsize=10)
        ax.set_xlim(0, 1)
        if log_x:
            ax.set_xscale("symlog", linthresh=first, linscale=0.5)
            ax.set_xlim(0, 1)
            ax.set_xticks(ticks, ["0"] + [f"{100 * t:g} %" for t in ticks[1:]])
            ax.xaxis.set_minor_locator(NullLocator())
        if score == "probability":
            ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Training (notebook 06) and tables


@leaves_no_figure_on_error
def plot_training_curve(record: Mapping[str, Any], window: int = 10, size: tuple[float, float] = (7.0, 3.2)
                        ) -> Figure:
    """Training loss per step (and its running mean over ``window`` steps) from a :func:`crossvit.train.train`
    record, with the held-out evaluations on a second axis."""
    if not isinstance(record, Mapping) or "loss_history" not in record:
        raise ValueError("record must be the record train() returns (it has a 'loss_history'); got "
                         f"{type(record).__name__}{' without loss_history' if isinstance(record, Mapping) else ''}")
    losses = np.asarray(record["loss_history"], dtype=np.float64)
    steps = np.arange(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    ax.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="loss per step")
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="#08519c", linewidth=1.6, label=f"mean of {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (every term)")
    ax.grid(alpha=0.3)
    history = record.get("eval_history") or []
    if history:
        acc = ax.twinx()
        acc.plot([h["step"] for h in history], [h["accuracy"] for h in history], "o-", color="#d62728",
                 label="held-out accuracy")
        acc.set_ylim(0, 1)
        acc.set_ylabel("held-out accuracy", color="#d62728")
        acc.legend(loc="upper center", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".3f") -> str:
    """A Markdown table (also readable as plain text); floats are formatted with ``floatfmt``."""
    def cell(value: Any) -> str:
        return format(value, floatfmt) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
