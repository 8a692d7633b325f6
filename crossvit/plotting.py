"""Matplotlib helpers shared by the notebooks: images, patch grids, attention maps, explanation grids, curves.

Every ``plot_*`` function builds and returns a new :class:`matplotlib.figure.Figure` (through pyplot, so Jupyter
shows it); :func:`save_figure` writes it as a PNG into the figures directory::

    fig = plot_cls_attention(model, images[0], rec.self_attention("small")[-1][0], "small")
    save_figure(fig, "02_cls_attention_heads")   # -> $CROSSVIT_FIGURES_DIR/02_cls_attention_heads.png

Inputs may be torch tensors (on any device) or numpy arrays; images are (3, H, W) or (H, W, 3) in [0, 1].
Nothing here draws at random, so the same inputs give the same pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .model import CrossViT

FIGURES_ENV = "CROSSVIT_FIGURES_DIR"
"""Environment variable naming the directory figures are written to (default: ``<repo>/figures``)."""

DEFAULT_FIGURES_DIR = Path(__file__).resolve().parent.parent / "figures"
DPI = 120
HEAT_CMAP = "inferno"
MASK_COLOR = "#00e5ff"  # cyan: visible on the inferno colour map and on most shapes images
GRID_COLORS = {"small": "#ffffff", "large": "#ffd400"}  # white for the 12 px grid, yellow for the 16 px one

ArrayLike = torch.Tensor | np.ndarray


# ----------------------------------------------------------------------------------------------------------------
# Saving


def figures_dir() -> Path:
    """The directory figures go to: ``$CROSSVIT_FIGURES_DIR`` if set, else ``<repo>/figures``."""
    env = os.environ.get(FIGURES_ENV)
    return Path(env) if env else DEFAULT_FIGURES_DIR


def figure_path(name: str) -> Path:
    """Path of the PNG called ``name`` (``.png`` is appended if missing) in :func:`figures_dir`, which is created.

    ``name`` is a plain file name such as ``"01_patch_grids"``; directories are refused so that every figure
    lands in the one figures directory.
    """
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"figure name must be a plain file name such as '01_patch_grids', got {name!r}")
    if not name.endswith(".png"):
        name += ".png"
    directory = figures_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def save_figure(fig: Figure, name: str, dpi: int = DPI) -> Path:
    """Write ``fig`` as ``figure_path(name)`` (PNG, tight bounding box); returns the path. The figure stays open."""
    path = figure_path(name)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Conversions


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A detached CPU float numpy copy of a tensor (any device), or the array itself as float."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def to_hwc(image: ArrayLike) -> np.ndarray:
    """(3, H, W) or (H, W, 3) or (H, W) -> (H, W, C) or (H, W) float array clipped to [0, 1], ready for imshow."""
    array = to_numpy(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an image (3, H, W) or (H, W, 3), got shape {array.shape}")
    return np.clip(array, 0.0, 1.0)


def normalize_map(heat: ArrayLike) -> np.ndarray:
    """Min-max scale a map to [0, 1] (a constant map becomes all zeros). Display only: ranks are unchanged."""
    array = to_numpy(heat)
    lo, hi = float(array.min()), float(array.max())
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)


def cls_row(attention: ArrayLike, index: int = 0) -> np.ndarray:
    """The CLS token's row of a self-attention map: (heads, N) from (B, heads, N, N) (image ``index``) or
    (heads, N, N). Entry 0 is the CLS's weight on itself, entries 1: the patches in row-major grid order."""
    array = to_numpy(attention)
    if array.ndim == 4:
        array = array[index]
    if array.ndim != 3:
        raise ValueError(f"expected a self-attention map (B, heads, N, N) or (heads, N, N), got {array.shape}")
    return array[:, 0, :]


def cross_row(attention: ArrayLike, index: int = 0) -> np.ndarray:
    """The query CLS's row of a cross-attention map: (heads, 1 + N_other) from (B, heads, 1, 1 + N_other) (image
    ``index``) or (heads, 1, 1 + N_other). Entry 0 is the weight on the query's own (projected) CLS."""
    array = to_numpy(attention)
    if array.ndim == 4:
        array = array[index]
    if array.ndim != 3 or array.shape[1] != 1:
        raise ValueError(f"expected a cross-attention map (B, heads, 1, 1 + N) or (heads, 1, 1 + N), got "
                         f"{array.shape}")
    return array[:, 0, :]


def fuse(rows: np.ndarray, head: int | str) -> np.ndarray:
    """Pick one head (an int) of ``rows`` (heads, ...) or fuse them: ``"mean"``, ``"max"`` or ``"min"``."""
    if isinstance(head, str):
        if head not in ("mean", "max", "min"):
            raise ValueError(f"head must be an index or 'mean', 'max', 'min'; got {head!r}")
        return getattr(rows, head)(axis=0)
    return rows[head]


def patch_pixels(model: CrossViT, branch: str, values: ArrayLike) -> np.ndarray:
    """A per-patch vector (N_patches,) of ``branch`` spread over the input image's pixels, (H, W).

    Same rule as :func:`crossvit.patch_map_to_pixels` (it is used), so the per-branch resize or crop is honoured.
    """
    from .explain import patch_map_to_pixels  # local import: explain pulls in captum lazily, keep this light

    tensor = torch.as_tensor(to_numpy(values)).reshape(1, -1)
    return patch_map_to_pixels(model, branch, tensor)[0].numpy()


# ----------------------------------------------------------------------------------------------------------------
# Axes-level drawing


def show_image(ax: Axes, image: ArrayLike, title: str | None = None) -> Any:
    """Draw an image (3, H, W) or (H, W, 3) in [0, 1] on ``ax`` without ticks; returns the AxesImage."""
    shown = ax.imshow(to_hwc(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return shown


def overlay_heatmap(ax: Axes, image: ArrayLike, heat: ArrayLike, alpha: float = 0.55, cmap: str = HEAT_CMAP,
                    normalize: bool = True, title: str | None = None) -> Any:
    """Draw ``image`` with a heat map (h, w) on top; returns the heat's AxesImage.

    The heat map is stretched over the whole image (a coarser map, e.g. a patch grid, gets equal cells over the
    full image), min-max scaled to [0, 1] unless ``normalize=False``, and drawn with nearest-neighbour cells.
    """
    base = to_hwc(image)
    show_image(ax, base, title)
    h, w = base.shape[:2]
    values = normalize_map(heat) if normalize else to_numpy(heat)
    vmin, vmax = (0.0, 1.0) if normalize else (None, None)
    return ax.imshow(values, cmap=cmap, alpha=alpha, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
                     interpolation="nearest", vmin=vmin, vmax=vmax)


def draw_mask_contour(ax: Axes, mask: ArrayLike, color: str = MASK_COLOR, linewidth: float = 1.2) -> None:
    """Outline a boolean mask (H, W) on ``ax`` (the ground-truth object of a shapes image)."""
    ax.contour(to_numpy(mask), levels=[0.5], colors=[color], linewidths=linewidth)


def grid_edges(model: CrossViT, branch: str) -> np.ndarray:
    """Pixel positions, on the model's INPUT image, of the edges of ``branch``'s patches (rows and columns alike).

    With a resize the grid still spans the whole input, so the ``g + 1`` edges of a g x g grid lie at
    ``i * image_size / g`` (the 5 x 5 grid of 16 px patches on an 80 px resize of a 96 px input: every 19.2
    input pixels). With a centre crop (``crop_scale``) they lie at ``offset + i * patch_size``.
    """
    rows, cols = model.patch_grid(branch)
    if rows != cols:
        raise ValueError(f"only square patch grids are supported, got {rows}x{cols}")
    size, side = model.image_size, model.branch_image_size(branch)
    if model.arch.resize == "crop" and side < size:
        offset = int(round((size - side) / 2.0))
        return offset + np.arange(rows + 1) * model.patch_size(branch)
    return np.arange(rows + 1) * (size / rows)


def draw_patch_grid(ax: Axes, model: CrossViT, branch: str, color: str | None = None, linewidth: float = 0.8,
                    alpha: float = 0.9) -> list:
    """Draw ``branch``'s patch grid over the input image shown on ``ax``; returns the Line2D objects.

    Edges come from :func:`grid_edges` and are shifted by -0.5 because imshow centres pixel ``i`` on ``i``
    (its left edge is at ``i - 0.5``).
    """
    color = color or GRID_COLORS.get(branch, "white")
    lines = []
    for edge in grid_edges(model, branch) - 0.5:
        lines.append(ax.axvline(edge, color=color, linewidth=linewidth, alpha=alpha))
        lines.append(ax.axhline(edge, color=color, linewidth=linewidth, alpha=alpha))
    return lines


def _grid_of_axes(n: int, ncols: int, size: float = 2.2, title: str | None = None) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if title else 0.0)),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig, axes.flat[:n]


# ----------------------------------------------------------------------------------------------------------------
# Images and patches (notebook 01)


def plot_images(images: ArrayLike, titles: Sequence[str] | None = None, masks: ArrayLike | None = None,
                ncols: int = 8, size: float = 1.8) -> Figure:
    """A row (or rows) of images (B, 3, H, W) with optional titles and mask outlines."""
    n = len(images)
    fig, axes = _grid_of_axes(n, ncols, size)
    for i, ax in enumerate(axes):
        show_image(ax, images[i], titles[i] if titles is not None else None)
        if masks is not None:
            draw_mask_contour(ax, masks[i])
    return fig


def plot_branch_views(model: CrossViT, image: ArrayLike, size: float = 3.2) -> Figure:
    """How each branch sees one image: each branch's own (resized) image with its patch grid in that image's
    pixels, then both grids mapped back onto the input image."""
    x = torch.as_tensor(to_numpy(image))[None]  # (1, 3, H, W) on the CPU
    views = model.branch_images(x.to(next(model.parameters()).device))
    panels = len(model.branch_names) + 1
    fig, axes = plt.subplots(1, panels, figsize=(size * panels, size + 0.5), layout="constrained")
    for ax, branch in zip(axes, model.branch_names):
        view = views[branch][0]
        side, patch = view.shape[-1], model.patch_size(branch)
        rows, cols = model.patch_grid(branch)
        show_image(ax, view, f"{branch} branch: {side} px image,\n{rows}x{cols} patches of {patch} px")
        for edge in np.arange(rows + 1) * patch - 0.5:
            ax.axvline(edge, color=GRID_COLORS[branch], linewidth=0.8)
            ax.axhline(edge, color=GRID_COLORS[branch], linewidth=0.8)
    ax = axes[-1]
    show_image(ax, image, f"both grids on the {model.image_size} px input\n"
                          + ", ".join(f"{b}: {model.image_size / model.patch_grid(b)[0]:.4g} px" for b in
                                      model.branch_names))
    for branch in model.branch_names:
        draw_patch_grid(ax, model, branch, linewidth=1.0 if branch == "large" else 0.6)
    return fig


def plot_patch_filters(model: CrossViT, branch: str, count: int = 32, ncols: int = 8) -> Figure:
    """The first ``count`` filters of a branch's convolutional patch embedding (paper flavour, single-conv stem),
    each min-max scaled to [0, 1] as an RGB patch: what each embedding dimension responds to."""
    proj = getattr(model.embed[branch].patch_embed, "proj", None)
    if not isinstance(proj, torch.nn.Conv2d):
        raise ValueError("plot_patch_filters needs the paper flavour's single convolution patch embedding")
    weight = proj.weight[:count]  # (count, 3, p, p)
    fig, axes = _grid_of_axes(len(weight), ncols, 1.0,
                              title=f"{branch} branch: first {len(weight)} of {proj.out_channels} patch filters "
                                    f"({proj.kernel_size[0]}x{proj.kernel_size[1]} px)")
    for ax, w in zip(axes, weight):
        show_image(ax, normalize_map(w))
    return fig


def position_similarity(pos_embed: ArrayLike, grid: tuple[int, int]) -> np.ndarray:
    """Cosine similarity of every patch's position embedding with every other: (rows, cols, rows, cols).

    ``pos_embed`` is (1, 1 + N, D) or (1 + N, D); the CLS position (index 0) is left out.
    """
    array = to_numpy(pos_embed)
    pos = torch.as_tensor(array.reshape(-1, array.shape[-1])[1:])  # (N, D), the CLS position dropped
    pos = torch.nn.functional.normalize(pos, dim=-1)
    rows, cols = grid
    return (pos @ pos.T).reshape(rows, cols, rows, cols).numpy()


def plot_position_similarity(model: CrossViT, branch: str, size: float = 4.0) -> Figure:
    """ViT-paper-style picture of learned positions: for every patch (i, j), a small map of the cosine similarity
    of its position embedding with every other patch's, laid out on the grid."""
    rows, cols = model.patch_grid(branch)
    sim = position_similarity(model.embed[branch].pos_embed, (rows, cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size, size + 0.3), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.imshow(sim[i, j], cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{branch} branch: cosine similarity of position embeddings ({rows}x{cols} grid)", fontsize=10)
    fig.subplots_adjust(wspace=0.08, hspace=0.08, top=0.93)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Attention (notebooks 02 and 03)


def _attention_panel(ax: Axes, model: CrossViT, image: ArrayLike, branch: str, values: np.ndarray,
                     title: str, alpha: float, grid: bool) -> Any:
    shown = overlay_heatmap(ax, image, patch_pixels(model, branch, values), alpha=alpha, title=title)
    if grid:
        draw_patch_grid(ax, model, branch, linewidth=0.4, alpha=0.5)
    return shown


def _head_panels(model: CrossViT, image: ArrayLike, grid_branch: str, rows: torch.Tensor,
                 heads: Sequence[int | str] | None, key0: str, alpha: float, grid: bool, size: float,
                 title: str | None) -> Figure:
    """One panel per head (or head fusion) of CLS rows (heads, 1 + N): the patch part drawn over
    ``grid_branch``'s grid, the weight of key 0 written in the title as ``key0``."""
    heads = list(range(rows.shape[0])) + ["mean"] if heads is None else list(heads)
    fig, axes = _grid_of_axes(len(heads), len(heads), size, title)
    for ax, head in zip(axes, heads):
        row = fuse(rows, head)
        name = f"head {head}" if isinstance(head, int) else f"{head} of heads"
        _attention_panel(ax, model, image, grid_branch, row[1:], f"{name}\n{key0} {row[0]:.2f}", alpha, grid)
    return fig


def plot_cls_attention(model: CrossViT, image: ArrayLike, attention: ArrayLike, branch: str, *, index: int = 0,
                       heads: Sequence[int | str] | None = None, alpha: float = 0.6, grid: bool = True,
                       title: str | None = None, size: float = 2.3) -> Figure:
    """A branch's CLS row of a self-attention map, reshaped to the branch's grid over the input image, per head.

    ``attention`` is a recorded self-attention map of ``branch``, (B, heads, N, N) (image ``index``) or
    (heads, N, N). ``heads`` chooses the panels: head indices and/or ``"mean"``/``"max"``/``"min"``; default:
    every head, then their mean. Each panel is scaled on its own; its title gives the CLS's weight on itself,
    which the grid cannot show.
    """
    rows = cls_row(attention, index)  # (heads, 1 + N)
    if rows.shape[1] != 1 + model.num_patches(branch):
        raise ValueError(f"the {branch} branch has {model.num_patches(branch)} patches, but this map has "
                         f"{rows.shape[1] - 1} keys besides the CLS: is it the {branch} branch's self-attention?")
    return _head_panels(model, image, branch, rows, heads, "CLS->CLS", alpha, grid, size, title)


def plot_cross_attention(model: CrossViT, image: ArrayLike, attention: ArrayLike, query_branch: str, *,
                         index: int = 0, heads: Sequence[int | str] | None = None, alpha: float = 0.6,
                         grid: bool = True, title: str | None = None, size: float = 2.3) -> Figure:
    """What ``query_branch``'s CLS reads in the OTHER branch: a cross-attention row over the other branch's grid.

    ``attention`` is (B, heads, 1, 1 + N_other) (image ``index``) or (heads, 1, 1 + N_other). Key 0 is the query's
    own projected CLS; its weight is written in each panel's title, the patches are drawn on the other grid.
    """
    other = next(b for b in model.branch_names if b != query_branch)
    rows = cross_row(attention, index)  # (heads, 1 + N_other)
    if rows.shape[1] != 1 + model.num_patches(other):
        raise ValueError(f"the {query_branch} CLS reads the {other} branch ({model.num_patches(other)} patches), "
                         f"but this map has {rows.shape[1] - 1} patch keys")
    return _head_panels(model, image, other, rows, heads, "own CLS", alpha, grid, size, title)


def plot_attention_by_block(model: CrossViT, image: ArrayLike, maps: Mapping[str, ArrayLike], *, index: int = 0,
                            kind: str = "self", head: int | str = "mean", alpha: float = 0.6,
                            size: float = 2.3) -> Figure:
    """One panel per recorded site of ``kind``, rows = multi-scale blocks, the CLS row with heads fused by ``head``.

    ``maps`` is ``rec.sites`` (site name -> map). For ``kind="self"`` a panel shows a branch CLS's attention over
    its own grid (columns: the small branch's layers, then the large branch's); for ``kind="cross"`` it shows
    what each CLS reads on the other branch's grid (columns: small CLS, large CLS, per fusion layer).
    """
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
    column_of = {key: i for i, key in enumerate(columns)}
    blocks = max(s[0] for s in sites) + 1
    fig, axes = plt.subplots(blocks, len(columns), figsize=(size * len(columns), size * blocks + 0.3),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for block, branch, layer, attention in sites:
        ax = axes[block, column_of[(branch, layer)]]
        ax.axis("on")
        if kind == "self":
            row = fuse(cls_row(attention, index), head)
            _attention_panel(ax, model, image, branch, row[1:],
                             f"block {block}, {branch} layer {layer}\nCLS->CLS {row[0]:.2f}", alpha, True)
        else:
            other = next(b for b in model.branch_names if b != branch)
            row = fuse(cross_row(attention, index), head)
            _attention_panel(ax, model, image, other, row[1:],
                             f"block {block}: {branch} CLS reads {other}\nown CLS {row[0]:.2f}", alpha, True)
    what = "CLS self-attention" if kind == "self" else "cross-attention of each CLS"
    fig.suptitle(f"{what} ({head if isinstance(head, str) else f'head {head}'} of heads)", fontsize=11)
    return fig


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
        values = values[index] if values.ndim == 2 else values
        ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name,
               color=colors.get(name, "#444444"))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [f"{c}\n(true)" if i == label else c for i, c in enumerate(class_names)], fontsize=8)
    ax.set_ylabel("logit")
    ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Rollout and attributions (notebooks 04 and 05)


def plot_joint_rollout(model: CrossViT, image: ArrayLike, joint: Mapping[str, Mapping[str, ArrayLike]], *,
                       index: int = 0, alpha: float = 0.6, size: float = 2.6) -> Figure:
    """The joint rollout ``out[query][patch_branch]`` (from :func:`crossvit.joint_rollout`) as a grid of panels:
    rows = the query CLS, columns = the branch whose patches it ends up on. Titles give the share of the CLS's
    total patch mass that lands on that branch."""
    branches = list(model.branch_names)
    fig, axes = plt.subplots(len(branches), len(branches), figsize=(size * len(branches), size * len(branches)),
                             squeeze=False, layout="constrained")
    for i, query in enumerate(branches):
        rows = {p: to_numpy(joint[query][p])[index] for p in branches}
        total = sum(float(r.sum()) for r in rows.values())
        for j, patch_branch in enumerate(branches):
            share = float(rows[patch_branch].sum()) / total if total > 0 else 0.0
            _attention_panel(axes[i, j], model, image, patch_branch, rows[patch_branch],
                             f"{query} CLS -> {patch_branch} patches\n{share:.0%} of its patch mass", alpha, True)
    fig.suptitle("joint rollout through both branches and the fusion layers", fontsize=11)
    return fig


def plot_method_grid(images: ArrayLike, maps_by_method: Mapping[str, ArrayLike], masks: ArrayLike | None = None,
                     *, titles: Sequence[str] | None = None, alpha: float = 0.55, cmap: str = HEAT_CMAP,
                     size: float = 1.9, show_input: bool = True) -> Figure:
    """Rows = images, columns = methods (an optional first column shows the plain image).

    ``maps_by_method``: method name -> (B, H, W) pixel maps (as :func:`crossvit.explain` returns); every map is
    min-max scaled on its own for display. ``masks`` (B, H, W) outline the ground-truth object in every panel;
    ``titles`` label the rows (shown on the input column).
    """
    methods = list(maps_by_method)
    n = len(images)
    ncols = len(methods) + int(show_input)
    fig, axes = plt.subplots(n, ncols, figsize=(size * ncols, size * n + 0.2), squeeze=False, layout="constrained")
    for i in range(n):
        col = 0
        if show_input:
            show_image(axes[i, 0], images[i], titles[i] if titles is not None else ("input" if i == 0 else None))
            if masks is not None:
                draw_mask_contour(axes[i, 0], masks[i])
            col = 1
        for j, method in enumerate(methods):
            ax = axes[i, col + j]
            overlay_heatmap(ax, images[i], to_numpy(maps_by_method[method])[i], alpha=alpha, cmap=cmap,
                            title=method if i == 0 else None)
            if masks is not None:
                draw_mask_contour(ax, masks[i])
    return fig


def plot_deletion_insertion(result_by_method: Mapping[str, Any], size: tuple[float, float] = (10.0, 3.8)
                            ) -> Figure:
    """Mean deletion and insertion curves (Petsiuk et al. 2018) per method, AUC in the legend.

    ``result_by_method``: method name -> :class:`crossvit.metrics.DeletionInsertionResult`. A method called
    ``"random"`` is drawn as a dashed grey baseline.
    """
    fig, (ax_del, ax_ins) = plt.subplots(1, 2, figsize=size, layout="constrained")
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    k = 0
    for method, result in result_by_method.items():
        fractions = to_numpy(result.fractions)
        if method == "random":
            style: dict[str, Any] = dict(color="grey", linestyle="--", linewidth=1.6)
        else:
            style = dict(color=cycle[k % len(cycle)], linewidth=1.4)
            k += 1
        ax_del.plot(fractions, to_numpy(result.deletion).mean(axis=0),
                    label=f"{method} ({result.mean_deletion_auc:.3f})", **style)
        ax_ins.plot(fractions, to_numpy(result.insertion).mean(axis=0),
                    label=f"{method} ({result.mean_insertion_auc:.3f})", **style)
    for ax, name, better in ((ax_del, "deletion", "lower"), (ax_ins, "insertion", "higher")):
        ax.set_xlabel("fraction of pixels " + ("removed (set to 0)" if name == "deletion" else
                                               "restored into the blurred image"))
        ax.set_ylabel("probability of the explained class")
        ax.set_title(f"{name} (AUC in legend, {better} is better)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Training (notebook 06) and tables


def plot_training_curve(record: Mapping[str, Any], window: int = 10, size: tuple[float, float] = (7.0, 3.2)
                        ) -> Figure:
    """Training loss per step (and its running mean over ``window`` steps) from a :func:`crossvit.train.train`
    record, with the held-out evaluations on a second axis."""
    losses = np.asarray(record["loss_history"], dtype=np.float64)
    steps = np.arange(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    ax.plot(steps, losses, color="#9ecae1", linewidth=0.8, label="loss per step")
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="#08519c", linewidth=1.6, label=f"mean of {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("training cross-entropy")
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
