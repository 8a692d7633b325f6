"""The plotting basics: constants, saving, conversions and axes-level drawing (heat maps, colour bars, masks,
patch grids)."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
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

from ..explain import REGISTRY
from ..model import CrossViT, check_crossvit
from ..rollout import HEAD_FUSIONS, fuse_heads
from ..utils import check_int

FIGURES_ENV = "CROSSVIT_FIGURES_DIR"
"""Environment variable naming the directory figures are written to. ``make figures`` sets it to the repository's
``figures/``; unset, figures go to :data:`LOCAL_FIGURES_DIRNAME` in the working directory (see :func:`figures_dir`)."""

LOCAL_FIGURES_DIRNAME = "crossvit-figures"
"""The folder, in the current working directory (a notebook's own folder under Jupyter), that figures go to when
:data:`FIGURES_ENV` is not set: a learner's run never writes into the repository's tracked ``figures/`` nor into
the installed package's folder."""

RESULTS_DIR = Path(__file__).resolve().parent.parent.parent / "figures"
"""Where committed results are *read* from (``ablations.json`` and the like): the repository's ``figures/`` in a
checkout. Reading only: figures are written to :func:`figures_dir`, never here unless ``CROSSVIT_FIGURES_DIR``
names it (as ``make figures`` does). In an installed wheel this folder does not exist."""
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
    """The directory figures go to: ``$CROSSVIT_FIGURES_DIR`` if set (``make figures`` sets it to the repository's
    ``figures/``), else ``./crossvit-figures`` in the current working directory, which under Jupyter is the
    notebook's own folder. Worked out at each call, so a ``%env`` or ``os.chdir`` takes effect at once."""
    env = os.environ.get(FIGURES_ENV)
    return Path(env) if env else Path.cwd() / LOCAL_FIGURES_DIRNAME


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
    """A CPU float32 numpy array of a tensor (any device) or array-like: a view where no conversion is needed (a
    CPU float32 tensor shares its memory, a float32 array comes back itself), so read it, never write into it."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


IMAGE_RANGE_SLACK = 0.5  # how far outside [0, 1] an image to draw may go (bicubic overshoot reaches 0.28), see to_hwc


def to_hwc(image: ArrayLike) -> np.ndarray:
    """(3, H, W) or (H, W, 3) or (H, W) -> (H, W, C) or (H, W) float array clipped to [0, 1], ready for imshow.

    The clipping is for the small overshoot of a resize (bicubic rings a little at sharp edges); an image with
    values far outside [0, 1] (below -0.5 or above 1.5, or NaN) is a ValueError: a batch normalised for the model
    (``preprocess``'s output) would be drawn in wrong colours. ``crossvit.display_images`` undoes that."""
    array = to_numpy(image)
    low, high = (float(np.min(array)), float(np.max(array))) if array.size else (0.0, 0.0)
    if not (low >= -IMAGE_RANGE_SLACK and high <= 1 + IMAGE_RANGE_SLACK):  # also NaN
        raise ValueError(f"the image holds values in [{low:.3g}, {high:.3g}], not in [0, 1]: a batch normalised for "
                         "the model (crossvit.preprocess) must be undone first, with "
                         "crossvit.display_images(model, batch)")
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
        array = array[check_image_index(index, array.shape[0])]
    if array.ndim != 3:
        raise ValueError(f"expected a self-attention map (B, heads, N, N) or (heads, N, N), got {array.shape}")
    return array[:, 0, :]


def check_image_index(index: object, batch: int) -> int:
    """``index`` as an image of a batch of ``batch``; a ValueError / TypeError naming it otherwise."""
    return check_int("index", index, -batch, batch - 1)


def cross_row(attention: ArrayLike, index: int = 0) -> np.ndarray:
    """The query CLS's row of a cross-attention map: (heads, 1 + N_other) from (B, heads, 1, 1 + N_other) (image
    ``index``) or (heads, 1, 1 + N_other). Entry 0 is the weight on the query's own (projected) CLS."""
    array = to_numpy(attention)
    if array.ndim == 4:
        array = array[check_image_index(index, array.shape[0])]
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
    return rows[check_int("head", head, -rows.shape[0], rows.shape[0] - 1)]


def patch_pixels(model: CrossViT, branch: str, values: ArrayLike) -> np.ndarray:
    """A per-patch vector (N_patches,) of ``branch`` spread over the input image's pixels, (H, W).

    Same rule as :func:`crossvit.patch_map_to_pixels` (it is used), so the per-branch resize or crop is honoured.
    """
    check_crossvit(model, "patch_pixels")
    from ..explain import patch_map_to_pixels  # local import: explain pulls in captum lazily, keep this light

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


def leaves_no_figure_on_error(function: Callable) -> Callable:
    """Decorator for the plotting functions: pyplot keeps every figure it makes until it is closed, so a call that
    fails after making its figure (a bad argument found while drawing) closes what it made before it raises."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = set(plt.get_fignums())
        try:
            return function(*args, **kwargs)
        except BaseException:
            for number in set(plt.get_fignums()) - before:
                plt.close(number)
            raise

    return wrapper


def draw_mask_contour(ax: Axes, mask: ArrayLike, color: str = MASK_COLOR, linewidth: float = 1.2) -> Any:
    """Outline a boolean mask (H, W) on ``ax`` (the ground-truth object of a shapes image); returns the
    ContourSet."""
    return ax.contour(to_numpy(mask), levels=[0.5], colors=[color], linewidths=linewidth)


def grid_edges(model: CrossViT, branch: str) -> np.ndarray:
    """Pixel positions, on the model's INPUT image, of the edges of ``branch``'s patches (rows and columns alike).

    With a resize the grid still spans the whole input, so the ``g + 1`` edges of a g x g grid lie at
    ``i * image_size / g`` (the 5 x 5 grid of 16 px patches on an 80 px resize of a 96 px input: every 19.2
    input pixels). With a centre crop (``crop_scale``) they lie at ``offset + i * patch_size``.
    """
    check_crossvit(model, "grid_edges")
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
