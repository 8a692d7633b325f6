"""Matplotlib helpers shared by the notebooks: images, patch grids, attention maps, explanation grids, curves, and
a diagram of the model's own architecture.

Every ``plot_*`` function builds and returns a new :class:`matplotlib.figure.Figure` (through pyplot, so Jupyter
shows it); :func:`save_figure` writes it as a PNG into the figures directory::

    fig = plot_cls_attention(model, images[0], rec.self_attention("small")[-1][0], "small")
    save_figure(fig, "02_cls_attention_heads")   # -> $CROSSVIT_FIGURES_DIR/02_cls_attention_heads.png

Inputs may be torch tensors (on any device) or numpy arrays; images are (3, H, W) or (H, W, 3) in [0, 1].
Nothing here draws at random, so the same inputs give the same pixels.

How the figures read at a glance:

* every heat map carries a colour bar that says what its colours mean. Attention figures share one scale over
  all their panels by default (``scale="shared"``: raw attention weights, 0 to the largest weight shown), so
  panels can be compared; ``scale="panel"`` min-max scales each panel on its own and the colour bar says so;
* signed attributions (:data:`SIGNED_METHODS`, or any map with negative values) use a diverging colour map
  centred at 0 (:data:`SIGNED_CMAP`: red = for the class, blue = against it, no colour = 0), symmetric around 0;
* titles name the query and the keys: ``"large CLS -> small patches"`` reads "the large branch's CLS token
  attends to the small branch's patch tokens";
* a figure has at most :data:`MAX_COLUMNS` columns of panels; more panels wrap into further rows.
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
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from .explain import REGISTRY
from .model import CrossViT, count_parameters
from .rollout import HEAD_FUSIONS, fuse_heads
from .utils import renamed_keywords

FIGURES_ENV = "CROSSVIT_FIGURES_DIR"
"""Environment variable naming the directory figures are written to (default: ``<repo>/figures``)."""

DEFAULT_FIGURES_DIR = Path(__file__).resolve().parent.parent / "figures"
DPI = 120
HEAT_CMAP = "inferno"
SIGNED_CMAP = "RdBu_r"  # diverging: blue < 0, white at 0, red > 0
MAX_COLUMNS = 6
"""Most columns of panels in one figure; wider layouts wrap into more rows (see :func:`balanced_columns`)."""
SIGNED_METHODS = frozenset(name for name, method in REGISTRY.items() if method.signed)
"""Explanation methods whose sign means something (their registry records say ``signed``), drawn with :data:`SIGNED_CMAP` centred at 0: integrated
gradients (per-pixel contributions that add up to the score difference from the black baseline; negative =
against the class) and occlusion (the score drop when a window is blanked; negative = blanking it raised the
score). The rollouts, saliency (an absolute gradient) and ``random`` are never negative. A map of any other
method that holds negative values is drawn as signed too."""
SIGNED_CLIP_PERCENTILE = 99.0
"""Signed maps are scaled per panel so that +-1 is this percentile of |value| (larger values saturate): a few
extreme pixels, common in gradient attributions, would otherwise wash every other pixel out."""
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


def signed_scale(heat: ArrayLike, percentile: float = SIGNED_CLIP_PERCENTILE) -> float:
    """The |value| a signed map is scaled by for display: the ``percentile`` percentile of |heat| (the maximum if
    that is 0, and 1 for an all-zero map)."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    magnitude = np.abs(to_numpy(heat))
    scale = float(np.percentile(magnitude, percentile))
    if scale <= 0.0:
        scale = float(magnitude.max())
    return scale if scale > 0.0 else 1.0


def is_signed(method: str, maps: ArrayLike | None = None) -> bool:
    """Whether explanation ``method`` is drawn as a signed map: it is in :data:`SIGNED_METHODS`, or ``maps``
    holds a negative value."""
    if method in REGISTRY and REGISTRY[method].signed:
        return True
    return maps is not None and bool((to_numpy(maps) < 0).any())


def balanced_columns(n: int, max_columns: int = MAX_COLUMNS) -> int:
    """Columns for ``n`` panels: one row up to ``max_columns``, else the fewest rows, filled evenly
    (8 panels -> 2 rows of 4, 7 -> 4 + 3, 13 -> 3 rows of 5)."""
    if max_columns < 1:
        raise ValueError(f"max_columns must be >= 1, got {max_columns}")
    if n <= max_columns:
        return max(1, n)
    return math.ceil(n / math.ceil(n / max_columns))


def _check_scale(scale: str) -> None:
    if scale not in ("shared", "panel"):
        raise ValueError(f"scale must be 'shared' (one colour scale for all panels) or 'panel' (each panel "
                         f"min-max scaled), got {scale!r}")


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
        if head not in HEAD_FUSIONS:
            raise ValueError(f"head must be an index or one of the head fusions {HEAD_FUSIONS}; got {head!r}")
        return fuse_heads(torch.as_tensor(rows)[None], head)[0].numpy()  # (heads, ...) -> (...)
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


def overlay_heatmap(ax: Axes, image: ArrayLike, heat: ArrayLike, alpha: float = 0.55, cmap: str | None = None,
                    normalize: bool = True, title: str | None = None, *, signed: bool = False,
                    vmin: float | None = None, vmax: float | None = None,
                    clip_percentile: float = SIGNED_CLIP_PERCENTILE, signed_alpha: float = 0.9) -> Any:
    """Draw ``image`` with a heat map (h, w) on top; returns the heat's AxesImage (its ``norm`` holds the scale).

    The heat map is stretched over the whole image (a coarser map, e.g. a patch grid, gets equal cells over the
    full image) and drawn with nearest-neighbour cells.

    * unsigned (default): min-max scaled to [0, 1] unless ``normalize=False``, in which case the raw values are
      drawn on ``[vmin, vmax]`` (a shared scale; matplotlib's own limits where they are None);
    * ``signed=True``: a diverging map (:data:`SIGNED_CMAP` unless ``cmap`` is given) symmetric around 0 over
      the image in grey; its opacity grows with |value| (``signed_alpha * sqrt(|value| / limit)``) so that 0
      leaves the image untouched. With ``normalize`` the values are divided by the ``clip_percentile``
      percentile of |heat| (the scale is [-1, 1]); otherwise the scale is [-vmax, vmax] (``vmax`` defaults to
      max |heat|).
    """
    base = to_hwc(image)
    if signed and base.ndim == 3:  # grey underneath, so that red and blue read on any coloured object
        base = np.repeat((base @ np.array([0.299, 0.587, 0.114], dtype=base.dtype))[..., None], 3, axis=-1)
    show_image(ax, base, title)
    h, w = base.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    if signed:
        values = to_numpy(heat)
        if normalize:
            values = values / signed_scale(values, clip_percentile)
            limit = 1.0
        else:
            limit = float(vmax) if vmax is not None else float(np.abs(values).max())
            limit = limit if limit > 0 else 1.0
        opacity = signed_alpha * np.sqrt(np.clip(np.abs(values) / limit, 0.0, 1.0))
        return ax.imshow(values, cmap=cmap or SIGNED_CMAP, alpha=opacity, extent=extent, interpolation="nearest",
                         vmin=-limit, vmax=limit)
    values = normalize_map(heat) if normalize else to_numpy(heat)
    if normalize:
        vmin, vmax = 0.0, 1.0
    return ax.imshow(values, cmap=cmap or HEAT_CMAP, alpha=alpha, extent=extent, interpolation="nearest",
                     vmin=vmin, vmax=vmax)


def add_colorbar(fig: Figure, axes: Sequence[Axes] | Axes, label: str, *, vmin: float = 0.0, vmax: float = 1.0,
                 cmap: str = HEAT_CMAP, ticks: Sequence[float] | None = None,
                 ticklabels: Sequence[str] | None = None, location: str = "right", shrink: float = 0.85
                 ) -> Colorbar:
    """One colour bar for ``axes`` (one or several panels drawn with ``cmap`` on ``[vmin, vmax]``), labelled.

    The bar shows the colour map at full opacity (overlays are drawn semi-transparent over the image).
    """
    axes_list = [axes] if isinstance(axes, Axes) else list(axes)
    mappable = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes_list, location=location, shrink=shrink,
                       aspect=25 if location in ("right", "left") else 30)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if ticks is not None:
        bar.set_ticks(list(ticks), labels=None if ticklabels is None else list(ticklabels))
    return bar


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
    """A figure of ``n`` panels in at most ``ncols`` columns (rows filled evenly); unused cells are hidden."""
    ncols = balanced_columns(n, max(1, ncols))
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
                ncols: int = MAX_COLUMNS, size: float = 1.8) -> Figure:
    """A row (or rows, at most ``ncols`` columns) of images (B, 3, H, W) with optional titles and mask outlines."""
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


def plot_architecture(model: CrossViT, size: tuple[float, float] | None = None) -> Figure:
    """A diagram of ``model`` drawn from its own configuration (``model.arch``), top to bottom.

    Per branch (small patches left, large patches right): the image it sees, its patch size and grid, the token
    count 1 + N (CLS + patches) and width; then every multi-scale block with each branch's transformer layers
    (depth, heads, feed-forward width) and the fusion arrows in both directions (each CLS reads the other
    branch's patches: 1 query, 1 + N_other keys); then the two classifier heads and how their logits combine
    (sum in the seed flavour, mean in the paper flavour). Every number is read from the model, so the diagram
    of a timm preset, the seed flavour or the bundled model each shows that model.
    """
    if not isinstance(model, CrossViT):
        raise TypeError(f"plot_architecture needs a crossvit.CrossViT, got {type(model).__name__}")
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


# ----------------------------------------------------------------------------------------------------------------
# Attention (notebooks 02 and 03)


def _other(model: CrossViT, branch: str) -> str:
    return next(b for b in model.branch_names if b != branch)


def attention_direction(model: CrossViT, query: str, keys: str) -> str:
    """The unambiguous name of an attention direction, e.g. ``"large CLS -> small patches (8x8 grid)"``: the CLS
    token of branch ``query`` attends to the patch tokens of branch ``keys``."""
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
    rows = cls_row(attention, index)  # (heads, 1 + N)
    if rows.shape[1] != 1 + model.num_patches(branch):
        raise ValueError(f"the {branch} branch has {model.num_patches(branch)} patches, but this map has "
                         f"{rows.shape[1] - 1} keys besides the CLS: is it the {branch} branch's self-attention?")
    direction = f"{attention_direction(model, branch, branch)}: self-attention"
    return _head_panels(model, image, branch, rows, heads, "CLS->CLS", alpha, grid, size,
                        _with_direction(title, direction), scale, max_columns)


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
    renamed = renamed_keywords("plot_cross_attention", deprecated, {"query_branch": "query"})
    if set(renamed) - {"query"}:
        raise TypeError(f"plot_cross_attention got unexpected keyword argument(s) {sorted(set(renamed) - {'query'})}")
    if "query" in renamed:
        if query is not None:
            raise TypeError("plot_cross_attention got both 'query' and its old name 'query_branch'")
        query = renamed["query"]
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


def plot_attention_by_block(model: CrossViT, image: ArrayLike, maps: Mapping[str, ArrayLike], *, index: int = 0,
                            kind: str = "self", head: int | str = "mean", alpha: float = 0.6,
                            size: float = 2.3, scale: str = "shared", max_columns: int = MAX_COLUMNS) -> Figure:
    """One panel per recorded site of ``kind``, rows = multi-scale blocks, the CLS row with heads fused by ``head``.

    ``maps`` is ``rec.sites`` (site name -> map). For ``kind="self"`` a panel shows a branch CLS's attention over
    its own grid (columns: the small branch's layers, then the large branch's); for ``kind="cross"`` it shows
    what each CLS reads on the other branch's grid (columns: small CLS, large CLS, per fusion layer). With more
    than ``max_columns`` columns the columns wrap: a second band of rows holds the rest. One colour bar
    (``scale`` as in :func:`plot_cls_attention`).
    """
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
                       index: int = 0, alpha: float = 0.6, size: float = 2.6, scale: str = "shared") -> Figure:
    """The joint rollout ``out[query][patch_branch]`` (from :func:`crossvit.joint_rollout`) as a grid of panels:
    rows = the query CLS, columns = the branch whose patches it ends up on. Titles give the share of the CLS's
    total patch mass that lands on that branch; one colour bar (``scale`` as in :func:`plot_cls_attention`)."""
    branches = list(model.branch_names)
    fig, axes = plt.subplots(len(branches), len(branches), figsize=(size * len(branches), size * len(branches)),
                             squeeze=False, layout="constrained")
    rows = {q: {p: to_numpy(joint[q][p])[index] for p in branches} for q in branches}
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
    if signed is None:
        signed_methods = {m for m in methods if is_signed(m, arrays[m])}
    elif isinstance(signed, bool):
        signed_methods = set(methods) if signed else set()
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
