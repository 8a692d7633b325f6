"""Images, patches, position embeddings (notebook 01) and the diagram of a model's architecture drawn from its
own configuration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..model import CrossViT, check_crossvit, count_parameters
from .base import (
    GRID_COLORS,
    MAX_COLUMNS,
    ArrayLike,
    _grid_of_axes,
    draw_mask_contour,
    draw_patch_grid,
    leaves_no_figure_on_error,
    normalize_map,
    show_image,
    to_numpy,
)

# ----------------------------------------------------------------------------------------------------------------
# Images and patches (notebook 01)


@leaves_no_figure_on_error
def plot_images(images: ArrayLike, titles: Sequence[str] | None = None, masks: ArrayLike | None = None,
                ncols: int = MAX_COLUMNS, size: float = 1.8) -> Figure:
    """A row (or rows, at most ``ncols`` columns) of images (B, 3, H, W) with optional titles and mask outlines."""
    n = len(images)
    for name, given in (("titles", titles), ("masks", masks)):
        if given is not None and len(given) != n:
            raise ValueError(f"{name} must have one entry per image ({n}), got {len(given)}")
    fig, axes = _grid_of_axes(n, ncols, size)
    for i, ax in enumerate(axes):
        show_image(ax, images[i], titles[i] if titles is not None else None)
        if masks is not None:
            draw_mask_contour(ax, masks[i])
    return fig


@leaves_no_figure_on_error
def plot_branch_views(model: CrossViT, image: ArrayLike, size: float = 3.2) -> Figure:
    """How each branch sees one image: each branch's own (resized) image with its patch grid in that image's
    pixels, then both grids mapped back onto the input image."""
    check_crossvit(model, "plot_branch_views")
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


@leaves_no_figure_on_error
def plot_patch_filters(model: CrossViT, branch: str, count: int = 32, ncols: int = 8) -> Figure:
    """The first ``count`` filters of a branch's convolutional patch embedding (paper flavour, single-conv stem),
    each min-max scaled to [0, 1] as an RGB patch: what each embedding dimension responds to."""
    check_crossvit(model, "plot_patch_filters")
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


@leaves_no_figure_on_error
def plot_position_similarity(model: CrossViT, branch: str, size: float = 4.0) -> Figure:
    """ViT-paper-style picture of learned positions: for every patch (i, j), a small map of the cosine similarity
    of its position embedding with every other patch's, laid out on the grid."""
    check_crossvit(model, "plot_position_similarity")
    rows, cols = model.patch_grid(branch)
    sim = position_similarity(model.embed[branch].pos_embed, (rows, cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size + 0.9, size + 0.3), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            shown = ax.imshow(sim[i, j], cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{branch} branch: cosine similarity of position embeddings ({rows}x{cols} grid)", fontsize=10)
    fig.subplots_adjust(wspace=0.08, hspace=0.08, top=0.93, right=0.8)
    bar = fig.colorbar(shown, cax=fig.add_axes((0.84, 0.15, 0.03, 0.7)), ticks=[-1, 0, 1])
    bar.set_label("cosine similarity", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# The architecture, drawn from the model's own configuration (notebook 01)

_LANE_X = {"small": 2.55, "large": 7.45}  # lane centres on a 10-unit-wide canvas
_LANE_W = 4.3
_LANE_COLORS = {"small": "#deebf7", "large": "#fde0c5"}
_SHARED_COLOR = "#eeeeee"


def _diagram_box(ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str,
                 fontsize: float = 8) -> None:
    """A rounded box centred at (x, y) with centred text."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=color, edgecolor="#555555", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _diagram_arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], color: str = "#555555",
                   width: float = 1.0) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=color, linewidth=width,
                                 shrinkA=0, shrinkB=0))


def _branch_view_text(model: CrossViT, branch: str) -> str:
    """How the input becomes this branch's image, in words."""
    size, side = model.image_size, model.branch_image_size(branch)
    if model.arch.resize == "none" or side == size:
        how = "the input as it is"
    elif model.arch.resize == "crop" and side < size:
        how = "centre crop of the input"
    else:
        how = f"input resized (bicubic) {size} -> {side} px"
    return f"{branch} branch: {side}x{side} px image\n({how})"


def _stem_text(spec: Any) -> str:
    if spec.stem == "linear":
        return "LayerNorm -> Linear -> LayerNorm"
    if spec.stem == "conv3":
        return "3-convolution stem"
    return f"{spec.patch_size}x{spec.patch_size} convolution, stride {spec.patch_size}"


@leaves_no_figure_on_error
def plot_architecture(model: CrossViT, size: tuple[float, float] | None = None) -> Figure:
    """A diagram of ``model`` drawn from its own configuration (``model.arch``), top to bottom.

    Per branch (small patches left, large patches right): the image it sees, its patch size and grid, the token
    count 1 + N (CLS + patches) and width; then every multi-scale block with each branch's transformer layers
    (depth, heads, feed-forward width) and the fusion arrows in both directions (each CLS reads the other
    branch's patches: 1 query, 1 + N_other keys); then the two classifier heads and how their logits combine
    (sum in the seed flavour, mean in the paper flavour). Every number is read from the model, so the diagram
    of a timm preset, the seed flavour or the bundled model each shows that model.
    """
    check_crossvit(model, "plot_architecture")
    arch = model.arch
    specs = {spec.name: spec for spec in arch.branches}
    box_h, gap = 0.95, 0.5
    fig, ax = plt.subplots(figsize=size or (9.0, 10.0), layout="constrained")
    ax.axis("off")
    flavour = {"paper": "paper (IBM / timm)", "seed": "seed (lucidrains vit-pytorch)"}[arch.flavour]
    ax.set_title(f"CrossViT, {flavour} flavour: {count_parameters(model) / 1e6:.2f} M parameters, "
                 f"{arch.num_classes} classes", fontsize=11)

    # drawn from y = 0 downwards; the limits and the height are set at the end
    y = -box_h / 2
    norm = "; normalised per channel inside the model" if arch.input_norm is not None else ""
    _diagram_box(ax, 5.0, y, 5.6, box_h * 0.7, f"input image: {arch.image_size}x{arch.image_size} px, "
                                                f"{arch.in_chans} channels{norm}", _SHARED_COLOR)
    previous = {b: (5.0, y - box_h * 0.35) for b in specs}  # where each lane's next arrow starts

    def lane_row(y: float, texts: dict[str, str]) -> None:
        for b, text in texts.items():
            x = _LANE_X[b]
            _diagram_arrow(ax, previous[b], (x, y + box_h / 2))
            _diagram_box(ax, x, y, _LANE_W, box_h, text, _LANE_COLORS[b])
            previous[b] = (x, y - box_h / 2)

    y -= box_h + gap
    lane_row(y, {b: _branch_view_text(model, b) for b in specs})
    y -= box_h + gap
    lane_row(y, {b: f"{s.patch_size} px patches -> {s.grid[0]}x{s.grid[1]} grid = {s.num_patches} patches\n"
                    f"{_stem_text(s)} -> width {s.dim}" for b, s in specs.items()})
    y -= box_h + gap
    lane_row(y, {b: f"+ CLS token, + position embeddings:\n1 + {s.num_patches} = {1 + s.num_patches} tokens "
                    f"x width {s.dim}" for b, s in specs.items()})

    small, large = specs["small"], specs["large"]
    fusion_colors = {"small": "#1f77b4", "large": "#d62728"}
    for k in range(arch.num_blocks):
        top = y - box_h / 2 - 0.6 * gap
        ax.text(0.3, top - 0.08, f"multi-scale block {k}", ha="left", va="top", fontsize=8, style="italic")
        y = top - 0.4 - box_h / 2
        texts = {}
        for b, s in specs.items():
            layers = s.depth[k]
            closing = ", then LayerNorm" if arch.encoder_norm else ""
            texts[b] = (f"{layers} transformer layer{'s' if layers != 1 else ''} (self-attention){closing}\n"
                        f"{s.heads} heads x {s.dim_head}, MLP {s.mlp_dim}; {1 + s.num_patches} tokens x {s.dim}")
        lane_row(y, texts)
        # the fusion: each CLS reads the other branch's patches; an arrow points where the information flows
        upper, lower = y - box_h / 2 - 0.6, y - box_h / 2 - 1.3
        layers = arch.fusion_layers
        ax.text(5.0, (upper + lower) / 2, f"{layers} fusion layers, each:" if layers > 1 else "fusion layer:",
                ha="center", va="center", fontsize=8, weight="bold")
        for b, s, other, arrow_y, va, offset in (("small", small, large, upper, "bottom", 0.07),
                                                  ("large", large, small, lower, "top", -0.07)):
            _diagram_arrow(ax, (_LANE_X[other.name], arrow_y), (_LANE_X[b], arrow_y), color=fusion_colors[b],
                           width=1.6)
            ax.text(5.0, arrow_y + offset, f"{b} CLS reads {other.name} patches: 1 query, 1 + {other.num_patches} "
                                           f"keys, {s.cross_heads} heads", ha="center", va=va, fontsize=7.5,
                    color=fusion_colors[b])
        bottom = lower - 0.45
        for b in specs:  # lanes run through the fusion: only the CLS token changes there
            ax.plot([_LANE_X[b], _LANE_X[b]], [y - box_h / 2, bottom], color="#555555", linewidth=1.0)
            previous[b] = (_LANE_X[b], bottom)
        ax.add_patch(FancyBboxPatch((0.15, bottom), 9.7, top - bottom, boxstyle="round,pad=0.02,rounding_size=0.2",
                                    facecolor="none", edgecolor="#999999", linewidth=0.9, linestyle="--"))
        y = bottom + box_h / 2 - 0.4 * gap  # so that the next row's top sits 0.6 gap below the frame

    y -= box_h + gap
    pool = "mean of the patch tokens" if arch.global_pool == "avg" else "the CLS token"
    lane_row(y, {b: f"LayerNorm -> {pool} -> Linear\n{b} head: {arch.num_classes} logits" for b in specs})
    y -= box_h + gap
    if arch.logit_reduction == "sum":
        combine = "logits = small head + large head  (sum of the two heads)"
    else:
        combine = "logits = (small head + large head) / 2  (mean of the two heads)"
    for b in specs:
        _diagram_arrow(ax, previous[b], (5.0 + (-1.5 if b == "small" else 1.5), y + box_h * 0.35))
    _diagram_box(ax, 5.0, y, 6.6, box_h * 0.7, combine, _SHARED_COLOR)
    lowest = y - box_h / 2 - 0.2
    ax.set_xlim(0, 10)
    ax.set_ylim(lowest, 0.2)
    if size is None:
        fig.set_size_inches(9.0, 0.42 * (0.2 - lowest) + 0.5)
    return fig
