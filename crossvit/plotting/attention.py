"""Attention maps over the image: CLS rows per head, cross-attention rows, per-block overviews and the branch
logits (notebooks 02 and 03)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..model import CrossViT, check_crossvit
from ..utils import renamed_argument
from .base import (
    MAX_COLUMNS,
    ArrayLike,
    _check_scale,
    _grid_of_axes,
    add_colorbar,
    balanced_columns,
    check_image_index,
    cls_row,
    cross_row,
    draw_patch_grid,
    fuse,
    leaves_no_figure_on_error,
    overlay_heatmap,
    patch_pixels,
    to_numpy,
)

# ----------------------------------------------------------------------------------------------------------------
# Attention (notebooks 02 and 03)


def _other(model: CrossViT, branch: str) -> str:
    return next(b for b in model.branch_names if b != branch)


def attention_direction(model: CrossViT, query: str, keys: str) -> str:
    """The unambiguous name of an attention direction, e.g. ``"large CLS -> small patches (8x8 grid)"``: the CLS
    token of branch ``query`` attends to the patch tokens of branch ``keys``."""
    check_crossvit(model, "attention_direction")
    rows, cols = model.patch_grid(keys)
    return f"{query} CLS -> {keys} patches ({rows}x{cols} grid)"


def _with_direction(title: str | None, direction: str) -> str:
    return direction if not title else f"{title}\n{direction}"


def _attention_panel(ax: Axes, model: CrossViT, image: ArrayLike, branch: str, values: np.ndarray,
                     title: str, alpha: float, grid: bool, vmax: float | None = None) -> Any:
    """Patch weights ``values`` of ``branch`` over the image: on [0, vmax] (a shared scale), or min-max scaled
    when ``vmax`` is None."""
    pixels = patch_pixels(model, branch, values)
    if vmax is None:
        shown = overlay_heatmap(ax, image, pixels, alpha=alpha, title=title)
    else:
        shown = overlay_heatmap(ax, image, pixels, alpha=alpha, title=title, normalize=False, vmin=0.0, vmax=vmax)
    ax.title.set_fontsize(8)
    if grid:
        draw_patch_grid(ax, model, branch, linewidth=0.4, alpha=0.5)
    return shown


def _attention_colorbar(fig: Figure, axes: Sequence[Axes], vmax: float | None, what: str) -> Colorbar:
    """The colour bar of attention panels: ``what`` on a shared [0, vmax] scale, or each panel min-max scaled
    when ``vmax`` is None."""
    if vmax is None:
        return add_colorbar(fig, axes, f"{what}\n(each panel min-max scaled)", ticks=[0.0, 1.0],
                            ticklabels=["min", "max"])
    return add_colorbar(fig, axes, f"{what}\n(one scale for all panels)", vmin=0.0, vmax=vmax)


def _shared_vmax(rows: Sequence[np.ndarray], scale: str) -> float | None:
    """The top of the shared colour scale over the patch parts of ``rows``; None for per-panel scaling."""
    _check_scale(scale)
    if scale == "panel":
        return None
    top = max(float(np.max(r)) for r in rows)
    return top if top > 0 else 1.0


def _grid_scales(panels: Sequence[tuple[str, np.ndarray]], scale: str) -> dict[str, float | None]:
    """Shared scale per grid: panels of ``(grid branch, patch weights)`` on the same grid share one [0, vmax].

    Weights on grids of different sizes are not comparable (uniform attention is 1/64 on an 8x8 grid, 1/25 on a
    5x5 one), so a figure that mixes grids gets one scale and one colour bar per grid."""
    grids = dict.fromkeys(branch for branch, _ in panels)
    return {g: _shared_vmax([v for b, v in panels if b == g], scale) for g in grids}


def _grid_colorbars(fig: Figure, panels: Sequence[tuple[Axes, str]], scales: dict[str, float | None],
                    what: str) -> None:
    """Colour bars of a figure whose ``panels`` are ``(axes, grid branch)``: one on the right when every panel
    shares one scale (or each is min-max scaled), else one under each grid's panels."""
    axes = [ax for ax, _ in panels]
    if len(scales) == 1 or None in scales.values():
        _attention_colorbar(fig, axes, next(iter(scales.values())), what)
        return
    for grid_branch, vmax in scales.items():
        own = [ax for ax, b in panels if b == grid_branch]
        bar = add_colorbar(fig, own, f"{what}\non the {grid_branch} grid (shared)", vmax=vmax, location="bottom",
                           shrink=0.9)
        bar.locator = MaxNLocator(4)
        bar.update_ticks()


def _head_panels(model: CrossViT, image: ArrayLike, grid_branch: str, rows: np.ndarray,
                 heads: Sequence[int | str] | None, key0: str, alpha: float, grid: bool, size: float,
                 title: str | None, scale: str = "shared", max_columns: int = MAX_COLUMNS) -> Figure:
    """One panel per head (or head fusion) of CLS rows (heads, 1 + N): the patch part drawn over
    ``grid_branch``'s grid, the weight of key 0 written in the title as ``key0``; at most ``max_columns``
    columns, one colour bar."""
    heads = list(range(rows.shape[0])) + ["mean"] if heads is None else list(heads)
    fused = [fuse(rows, head) for head in heads]
    vmax = _shared_vmax([row[1:] for row in fused], scale)
    fig, axes = _grid_of_axes(len(heads), max_columns, size, title)
    for ax, head, row in zip(axes, heads, fused):
        name = f"head {head}" if isinstance(head, int) else f"{head} of heads"
        _attention_panel(ax, model, image, grid_branch, row[1:], f"{name}\n{key0} {row[0]:.2f}", alpha, grid,
                         vmax)
    _attention_colorbar(fig, list(axes), vmax, "attention weight of a patch")
    return fig


@leaves_no_figure_on_error
def plot_cls_attention(model: CrossViT, image: ArrayLike, attention: ArrayLike, branch: str, *, index: int = 0,
                       heads: Sequence[int | str] | None = None, alpha: float = 0.6, grid: bool = True,
                       title: str | None = None, size: float = 2.3, scale: str = "shared",
                       max_columns: int = MAX_COLUMNS) -> Figure:
    """A branch's CLS row of a self-attention map, reshaped to the branch's grid over the input image, per head.

    ``attention`` is a recorded self-attention map of ``branch``, (B, heads, N, N) (image ``index``) or
    (heads, N, N). ``heads`` chooses the panels: head indices and/or ``"mean"``/``"max"``/``"min"``; default:
    every head, then their mean. ``scale="shared"`` draws every panel on one colour scale (the colour bar's),
    ``"panel"`` min-max scales each. Each title gives the CLS's weight on itself, which the grid cannot show;
    the figure title names the direction (``"small CLS -> small patches (8x8 grid)"``) under ``title``.
    """
    check_crossvit(model, "plot_cls_attention")
    rows = cls_row(attention, index)  # (heads, 1 + N)
    if rows.shape[1] != 1 + model.num_patches(branch):
        raise ValueError(f"the {branch} branch has {model.num_patches(branch)} patches, but this map has "
                         f"{rows.shape[1] - 1} keys besides the CLS: is it the {branch} branch's self-attention?")
    direction = f"{attention_direction(model, branch, branch)}: self-attention"
    return _head_panels(model, image, branch, rows, heads, "CLS->CLS", alpha, grid, size,
                        _with_direction(title, direction), scale, max_columns)


@leaves_no_figure_on_error
def plot_cross_attention(model: CrossViT, image: ArrayLike, attention: ArrayLike, query: str | None = None, *,
                         index: int = 0, heads: Sequence[int | str] | None = None, alpha: float = 0.6,
                         grid: bool = True, title: str | None = None, size: float = 2.3, scale: str = "shared",
                         max_columns: int = MAX_COLUMNS, **deprecated: Any) -> Figure:
    """What ``query``'s CLS reads in the OTHER branch: a cross-attention row over the other branch's grid.

    ``attention`` is (B, heads, 1, 1 + N_other) (image ``index``) or (heads, 1, 1 + N_other). Key 0 is the query's
    own projected CLS; its weight is written in each panel's title, the patches are drawn on the other grid.
    The figure title names the direction, e.g. ``"large CLS -> small patches (8x8 grid)"``, under ``title``.
    (``query_branch=`` is the deprecated name of ``query``.)
    """
    check_crossvit(model, "plot_cross_attention")
    query = renamed_argument("plot_cross_attention", deprecated, "query_branch", "query", query, None)
    if query is None:
        raise TypeError("plot_cross_attention needs query: the branch whose CLS reads ('small' or 'large')")
    query_branch = query
    other = _other(model, query_branch)
    rows = cross_row(attention, index)  # (heads, 1 + N_other)
    if rows.shape[1] != 1 + model.num_patches(other):
        raise ValueError(f"the {query_branch} CLS reads the {other} branch ({model.num_patches(other)} patches), "
                         f"but this map has {rows.shape[1] - 1} patch keys")
    direction = f"{attention_direction(model, query_branch, other)}: cross-attention"
    return _head_panels(model, image, other, rows, heads, "own CLS", alpha, grid, size,
                        _with_direction(title, direction), scale, max_columns)


@leaves_no_figure_on_error
def plot_attention_by_block(model: CrossViT, image: ArrayLike, maps: Mapping[str, ArrayLike], *, index: int = 0,
                            kind: str = "self", head_fusion: int | str = "mean", alpha: float = 0.6,
                            size: float = 2.3, scale: str = "shared", max_columns: int = MAX_COLUMNS,
                            **deprecated: Any) -> Figure:
    """One panel per recorded site of ``kind``, rows = multi-scale blocks, the CLS row with heads fused by
    ``head_fusion`` ("mean", "max", "min", or one head's index; ``head=`` is its deprecated name).

    ``maps`` is ``rec.sites`` (site name -> map). For ``kind="self"`` a panel shows a branch CLS's attention over
    its own grid (columns: the small branch's layers, then the large branch's); for ``kind="cross"`` it shows
    what each CLS reads on the other branch's grid (columns: small CLS, large CLS, per fusion layer). With more
    than ``max_columns`` columns the columns wrap: a second band of rows holds the rest. One colour bar
    (``scale`` as in :func:`plot_cls_attention`).
    """
    check_crossvit(model, "plot_attention_by_block")
    head = renamed_argument("plot_attention_by_block", deprecated, "head", "head_fusion", head_fusion, "mean")
    if kind not in ("self", "cross"):
        raise ValueError(f"kind must be 'self' or 'cross', got {kind!r}")
    sites = []
    for name, attention in maps.items():
        _, block, branch, site_kind, layer = name.split(".")
        if site_kind == kind:
            sites.append((int(block), branch, int(layer), attention))
    if not sites:
        raise ValueError(f"no {kind}-attention site among the maps ({', '.join(maps)})")
    keys = {(branch, layer) for _, branch, layer, _ in sites}
    if kind == "self":  # the small branch's layers, then the large branch's
        columns = sorted(keys, key=lambda k: (k[0] != "small", k[1]))
    else:  # per fusion layer: the small CLS, then the large CLS
        columns = sorted(keys, key=lambda k: (k[1], k[0] != "small"))
    per_band = balanced_columns(len(columns), max_columns)
    blocks = max(s[0] for s in sites) + 1
    bands = math.ceil(len(columns) / per_band)
    fig, axes = plt.subplots(blocks * bands, per_band, figsize=(size * per_band, size * blocks * bands + 0.5),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    panels = []
    for block, branch, layer, attention in sites:
        if kind == "self":
            row, grid_branch = fuse(cls_row(attention, index), head), branch
            label = f"block {block}, {branch} layer {layer}\n{branch} CLS -> {branch} patches\nCLS->CLS {row[0]:.2f}"
        else:
            row, grid_branch = fuse(cross_row(attention, index), head), _other(model, branch)
            fusion = f", fusion {layer}" if model.arch.fusion_layers > 1 else ""
            label = f"block {block}{fusion}\n{branch} CLS -> {grid_branch} patches\nown CLS {row[0]:.2f}"
        position = columns.index((branch, layer))
        panels.append((axes[(position // per_band) * blocks + block, position % per_band], grid_branch, row, label))
    scales = _grid_scales([(grid_branch, row[1:]) for _, grid_branch, row, _ in panels], scale)
    for ax, grid_branch, row, label in panels:
        ax.axis("on")
        _attention_panel(ax, model, image, grid_branch, row[1:], label, alpha, True, scales[grid_branch])
    what = "each branch's CLS -> its own patches\n(self-attention" if kind == "self" else \
        "each CLS -> the other branch's patches\n(cross-attention"
    fused = f"{head} of heads" if isinstance(head, str) else f"head {head}"
    fig.suptitle(f"{what}, {fused})\nrows: multi-scale blocks", fontsize=10)
    _grid_colorbars(fig, [(ax, grid_branch) for ax, grid_branch, _, _ in panels], scales,
                    "attention weight of a patch")
    return fig


@leaves_no_figure_on_error
def plot_branch_logits(logits: Mapping[str, ArrayLike], class_names: Sequence[str], *, index: int = 0,
                       label: int | None = None, size: tuple[float, float] = (7.5, 3.0)) -> Figure:
    """Grouped bars of each head's logits for image ``index``: e.g. ``{"small": ..., "large": ..., "model": ...}``,
    each (B, num_classes) or (num_classes,). The true class, if given, is marked on the x axis."""
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    names = list(logits)
    width = 0.8 / len(names)
    x = np.arange(len(class_names))
    colors = {"small": "#1f77b4", "large": "#ff7f0e"}
    for k, name in enumerate(names):
        values = to_numpy(logits[name])
        values = values[check_image_index(index, len(values))] if values.ndim == 2 else values
        ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name,
               color=colors.get(name, "#444444"))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [f"{c}\n(true)" if i == label else c for i, c in enumerate(class_names)], fontsize=8)
    ax.set_ylabel("logit")
    ax.legend(fontsize=8)
    return fig
