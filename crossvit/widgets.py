"""ipywidgets explorers for the notebooks, where moving a slider teaches more than one static figure.

* :func:`attention_explorer`: image, block, branch, kind (self / cross), layer, head (or head fusion) and the
  query token (the CLS, or any patch by grid row and column or by a click on the picture, through ``ipyevents``);
  shows the query's attention row over the grid it attends to.
* :func:`rollout_explorer`: image, method (per-branch, joint or gradient rollout), head fusion, discard ratio and
  the target class of the gradient rollout.

Each explorer runs the model ONCE when it is built, keeps the recorded maps, and on every change only slices them
(and, for rollout, multiplies a few small matrices), so redraws are cheap. The figure is rendered to PNG bytes
inside an :class:`ipywidgets.Image`, which works in any front end and without a display (tests drive the
controls directly and read ``explorer.last_map``)::

    explorer = attention_explorer(model, images, class_names=CLASS_NAMES)
    explorer          # last expression of a cell: shows the widget
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .explain import REGISTRY, explain, joint_rollout_pixels, patch_map_to_pixels
from .metrics import pointing_game
from .model import CrossViT
from .plotting import (
    GRID_COLORS,
    HEAT_CMAP,
    cross_row,
    draw_mask_contour,
    draw_patch_grid,
    fuse,
    grid_edges,
    overlay_heatmap,
    show_image,
    to_numpy,
)
from .recording import AttentionRecorder, record_attention, release_attention_memory
from .rollout import HEAD_FUSIONS, joint_rollout, rollout_from_maps
from .utils import check_int, eval_mode

_DPI = 90
QUERY_COLOR = "#00ff66"  # outline of the query patch
_STYLE = {"description_width": "90px"}


def _render(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` at :data:`_DPI`, the whole figure (no tight crop), so that a pixel of the PNG maps
    back onto the figure's own layout."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def _model_device(model: CrossViT) -> torch.device:
    return next(model.parameters()).device


def _record(model: CrossViT, images: torch.Tensor) -> tuple[AttentionRecorder, torch.Tensor]:
    """One recorded forward of ``images`` in eval mode: the recorder and the logits (on the CPU). The model keeps
    no attention memory afterwards (the explorer holds the maps it needs)."""
    with eval_mode(model), record_attention(model) as rec, torch.no_grad():
        logits = model(images.to(_model_device(model)))
    release_attention_memory(model)
    return rec, logits.cpu()


class _BoundedCache(OrderedDict):
    """A dict that keeps only its ``size`` most recently used entries (least recently used go first)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or_compute(self, key: Hashable, compute) -> torch.Tensor:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = compute()
        while len(self) > self.size:
            self.popitem(last=False)
        return value


def _class_label(class_names: Sequence[str] | None, k: int) -> str:
    return class_names[k] if class_names is not None and k < len(class_names) else f"class {k}"


def attention_bytes_per_image(model: CrossViT) -> int:
    """Bytes of every attention map of one image's forward (float32): what an explorer keeps per image."""
    from .recording import attention_sites

    total = 0
    for site in attention_sites(model):
        spec = model.arch.branch(site.branch)
        n = 1 + model.num_patches(site.branch)
        if site.kind == "self":
            total += spec.heads * n * n
        else:
            total += spec.cross_heads * (1 + model.num_patches("large" if site.branch == "small" else "small"))
    return 4 * total


class _Explorer(widgets.VBox):
    """What both explorers share: their inputs kept on the CPU, one recorded forward, and the image slider."""

    MAX_IMAGES = 32
    """The most images an explorer takes (``max_images=`` raises it): it keeps every attention map of every image,
    :func:`attention_bytes_per_image` bytes each (0.4 MB for the bundled model, about 11 MB for crossvit_15_240)."""

    @property
    def memory_bytes(self) -> int:
        """Bytes of tensors the explorer holds: its images, masks, recorded maps and cached results."""
        seen: set[int] = set()
        total = 0
        tensors = [self.images, self.masks, *getattr(self, "maps", {}).values()]
        recorder = getattr(self, "recorder", None)
        if recorder is not None:
            tensors += list(recorder.sites.values())
        for cache in ("_joint", "_grad"):
            tensors += list(getattr(self, cache, {}).values())
        for t in tensors:
            if t is not None and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.untyped_storage().nbytes()
        return total

    def _take_inputs(self, model: CrossViT, images: torch.Tensor, masks: torch.Tensor | None,
                     class_names: Sequence[str] | None, index: int, max_images: int | None = None
                     ) -> tuple[AttentionRecorder, widgets.IntSlider]:
        """Store the inputs and the predicted classes; return the recorder of the forward and the image slider."""
        limit = self.MAX_IMAGES if max_images is None else check_int("max_images", max_images, 1)
        if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[0] > limit:
            per_image = attention_bytes_per_image(model) if isinstance(model, CrossViT) else 0
            raise ValueError(
                f"the explorer keeps every attention map of every image ({per_image / 2**20:.1f} MB per image for "
                f"this model), so it takes at most {limit} images; got {images.shape[0]}. Pass fewer images, or "
                f"max_images={images.shape[0]} to take them all ({images.shape[0] * per_image / 2**20:.0f} MB)")
        if masks is not None:  # checked now, not at the slider position of the first bad mask
            if not isinstance(masks, torch.Tensor):
                raise TypeError(f"masks must be a (B, H, W) torch.Tensor, got {type(masks).__name__}")
            expected = (images.shape[0], *images.shape[-2:]) if isinstance(images, torch.Tensor) else None
            if expected is not None and tuple(masks.shape) != expected:
                raise ValueError(f"masks must be (B, H, W) = {expected} to match the images "
                                 f"{tuple(images.shape)}, got {tuple(masks.shape)}")
        self.model = model
        self.images = images.detach().cpu()
        self.masks = None if masks is None else masks.detach().cpu()
        self.class_names = class_names
        rec, logits = _record(model, images)
        self.predictions = logits.argmax(dim=1)
        n = self.images.shape[0]
        slider = widgets.IntSlider(value=min(index, n - 1), min=0, max=n - 1, description="image", style=_STYLE,
                                   continuous_update=False)
        return rec, slider


class AttentionExplorer(_Explorer):
    """Controls + picture of one recorded attention site and one query token. Build it with
    :func:`attention_explorer`.

    ``controls`` maps a name (``image``, ``block``, ``branch``, ``kind``, ``layer``, ``head``, ``query``,
    ``patch_row``, ``patch_col``) to its widget; ``maps`` holds every recorded map on the CPU (site name ->
    tensor). The query is the branch's CLS token or one of its patches (``query="patch"``, chosen by grid row and
    column, or by clicking it on the picture). After each redraw ``last_site`` names the shown site, ``last_row``
    is the query's fused attention row (1 + N keys: the CLS, then the patches) and ``last_map`` its patch part as
    a grid. A patch token has no cross-attention row (only the CLS tokens are fusion queries): then ``last_row``
    and ``last_map`` are None and the picture says why.
    """

    def __init__(self, model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, index: int = 0, max_images: int | None = None) -> None:
        rec, image_slider = self._take_inputs(model, images, masks, class_names, index, max_images)
        self.maps: dict[str, torch.Tensor] = {name: m.cpu() for name, m in rec.sites.items()}
        self.last_site: str | None = None
        self.last_row: np.ndarray | None = None
        self.last_map: np.ndarray | None = None
        self.figure: Figure | None = None  # the figure of the picture, with its layout (for clicks)
        self._syncing = False

        arch = model.arch
        first_grid = model.patch_grid(model.branch_names[0])
        self.controls = {
            "image": image_slider,
            "block": widgets.IntSlider(value=0, min=0, max=arch.num_blocks - 1, description="block",
                                       style=_STYLE, continuous_update=False),
            "branch": widgets.Dropdown(options=list(model.branch_names), value=model.branch_names[0],
                                       description="branch", style=_STYLE),
            "kind": widgets.ToggleButtons(options=["self", "cross"], value="self", description="kind",
                                          style=_STYLE),
            "layer": widgets.IntSlider(value=0, min=0, max=0, description="layer", style=_STYLE,
                                       continuous_update=False),
            "head": widgets.Dropdown(options=[("mean of heads", "mean")], value="mean", description="head",
                                     style=_STYLE),
            **self._query_controls(first_grid),
        }
        self.picture = widgets.Image(format="png")
        self.caption = widgets.HTML()
        self._clicks = self._watch_clicks(self.picture)
        c = self.controls
        column_a = widgets.VBox([c["image"], c["block"], c["layer"]])
        column_b = widgets.VBox([c["branch"], c["kind"], c["head"]])
        column_c = widgets.VBox([c["query"], c["patch_row"], c["patch_col"]])
        hint = widgets.Label("Click a patch on the picture to make it the query." if self._clicks else "")
        super().__init__([widgets.HBox([column_a, column_b, column_c]), hint, self.caption, self.picture])
        self._sync_ranges()
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    # -- the query token ------------------------------------------------------------------------------------
    @staticmethod
    def _query_controls(grid: tuple[int, int]) -> dict[str, widgets.Widget]:
        """The query picker: the CLS token, or a patch by its grid row and column."""
        rows, cols = grid
        return {
            "query": widgets.ToggleButtons(options=["CLS", "patch"], value="CLS", description="query",
                                           style=_STYLE),
            "patch_row": widgets.IntSlider(value=rows // 2, min=0, max=rows - 1, description="patch row",
                                           style=_STYLE, continuous_update=False, disabled=True),
            "patch_col": widgets.IntSlider(value=cols // 2, min=0, max=cols - 1, description="patch column",
                                           style=_STYLE, continuous_update=False, disabled=True),
        }

    def _watch_clicks(self, picture: widgets.Image) -> object | None:
        """Report clicks on the picture to :meth:`select_point` (needs ipyevents; without it, no clicks)."""
        try:
            from ipyevents import Event
        except ImportError:  # the sliders still pick any patch
            return None
        events = Event(source=picture, watched_events=["click"])
        events.on_dom_event(self._on_dom_event)
        return events

    def _on_dom_event(self, event: dict) -> None:
        if event.get("type") == "click" and "dataX" in event:
            self.select_point(float(event["dataX"]), float(event["dataY"]))

    def query_token(self) -> int:
        """Index of the query token in its branch's sequence: 0 for the CLS, ``1 + row * cols + col`` for a
        patch."""
        c = self.controls
        if c["query"].value == "CLS":
            return 0
        _, cols = self.model.patch_grid(c["branch"].value)
        return 1 + c["patch_row"].value * cols + c["patch_col"].value

    def query_label(self) -> str:
        """The query in words, e.g. ``"small CLS"`` or ``"small patch (2, 5)"`` (grid row, column)."""
        c = self.controls
        if c["query"].value == "CLS":
            return f"{c['branch'].value} CLS"
        return f"{c['branch'].value} patch ({c['patch_row'].value}, {c['patch_col'].value})"

    def select_patch(self, row: int, col: int) -> None:
        """Make patch (``row``, ``col``) of the current branch's grid the query and show its self-attention row
        (a patch has no cross-attention row). Redraws once."""
        rows, cols = self.model.patch_grid(self.controls["branch"].value)
        if not (0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"the {self.controls['branch'].value} branch has a {rows}x{cols} grid; patch ({row}, "
                             f"{col}) is outside it")
        c = self.controls
        self._syncing = True
        try:
            c["query"].value, c["kind"].value = "patch", "self"
            c["patch_row"].value, c["patch_col"].value = row, col
            self._sync_ranges()
        finally:
            self._syncing = False
        self.redraw()

    def point_to_patch(self, x: float, y: float) -> tuple[int, int] | None:
        """The patch of the current branch under pixel (``x``, ``y``) of the picture (PNG pixels, from the top
        left), on the image panel or on the grid panel when it shows that branch's grid; None elsewhere."""
        if self.figure is None:
            return None
        branch = self.controls["branch"].value
        rows, cols = self.model.patch_grid(branch)
        display = (x, self.figure.bbox.height - y)  # PNG rows go down, matplotlib's display y goes up
        ax_image, ax_grid = self.figure.axes[:2]
        if ax_image.bbox.contains(*display):
            px, py = ax_image.transData.inverted().transform(display)  # input-image pixel coordinates
            edges = grid_edges(self.model, branch) - 0.5
            col, row = (int(np.searchsorted(edges, v, side="right")) - 1 for v in (px, py))
        elif ax_grid.bbox.contains(*display) and self._grid_branch() == branch:
            gx, gy = ax_grid.transData.inverted().transform(display)  # cell (i, j) is centred on (j, i)
            col, row = int(round(gx)), int(round(gy))
        else:
            return None
        return (row, col) if 0 <= row < rows and 0 <= col < cols else None

    def select_point(self, x: float, y: float) -> tuple[int, int] | None:
        """A click at pixel (``x``, ``y``) of the picture: select the patch there (see :meth:`point_to_patch`);
        returns it, or None (and changes nothing) when the point is on no patch of the current branch."""
        patch = self.point_to_patch(x, y)
        if patch is not None:
            self.select_patch(*patch)
        return patch

    # -- state ----------------------------------------------------------------------------------------------
    def _sync_ranges(self) -> None:
        """Fit the layer slider, the head options and the patch sliders to the chosen block, branch and kind."""
        c = self.controls
        spec = self.model.arch.branch(c["branch"].value)
        if c["kind"].value == "self":
            layers, heads = spec.depth[c["block"].value], spec.heads
        else:
            layers, heads = self.model.arch.fusion_layers, spec.cross_heads
        syncing, self._syncing = self._syncing, True
        try:
            c["layer"].max = max(0, layers - 1)
            c["layer"].value = min(c["layer"].value, layers - 1)
            options = [("mean of heads", "mean"), ("max of heads", "max"), ("min of heads", "min")]
            options += [(f"head {h}", h) for h in range(heads)]
            current = c["head"].value
            if [v for _, v in c["head"].options] != [v for _, v in options]:
                c["head"].options = options
            c["head"].value = current if current in [v for _, v in options] else "mean"
            rows, cols = spec.grid
            for name, size in (("patch_row", rows), ("patch_col", cols)):
                c[name].max = size - 1
                c[name].value = min(c[name].value, size - 1)
                c[name].disabled = c["query"].value == "CLS"
        finally:
            self._syncing = syncing

    def _on_change(self, change: dict) -> None:
        if self._syncing:
            return
        if change["owner"] in (self.controls["block"], self.controls["branch"], self.controls["kind"],
                               self.controls["query"]):
            self._sync_ranges()
        self.redraw()

    def site_name(self) -> str:
        """Name of the site the controls select, e.g. ``blocks.1.large.cross.0``."""
        c = self.controls
        return f"blocks.{c['block'].value}.{c['branch'].value}.{c['kind'].value}.{c['layer'].value}"

    def _grid_branch(self) -> str:
        """The branch whose patches are the keys: the query's own for self-attention, the other for cross."""
        branch = self.controls["branch"].value
        if self.controls["kind"].value == "self":
            return branch
        return next(b for b in self.model.branch_names if b != branch)

    # -- drawing --------------------------------------------------------------------------------------------
    def _mark_query(self, ax_image: object, ax_grid: object | None) -> None:
        """Outline the query patch on the image (and on its grid, when shown)."""
        c = self.controls
        if c["query"].value == "CLS":
            return
        r, col = c["patch_row"].value, c["patch_col"].value
        edges = grid_edges(self.model, c["branch"].value) - 0.5
        ax_image.add_patch(Rectangle((edges[col], edges[r]), edges[col + 1] - edges[col], edges[r + 1] - edges[r],
                                     fill=False, edgecolor=QUERY_COLOR, linewidth=2.0))
        if ax_grid is not None:
            ax_grid.add_patch(Rectangle((col - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=QUERY_COLOR,
                                        linewidth=2.0))

    def redraw(self) -> None:
        """Slice the recorded map the controls select and redraw the picture."""
        c = self.controls
        i, branch, kind, head = c["image"].value, c["branch"].value, c["kind"].value, c["head"].value
        name = self.site_name()
        attention = self.maps[name]
        token, query = self.query_token(), self.query_label()
        grid_branch = self._grid_branch()
        label = "mean" if head == "mean" else head
        head_text = label if isinstance(label, str) else f"head {label}"
        fig = Figure(figsize=(7.6, 3.6), dpi=_DPI, layout="constrained")
        ax_image, ax_grid = fig.subplots(1, 2)
        predicted = _class_label(self.class_names, int(self.predictions[i]))

        if kind == "cross" and token != 0:  # only the CLS tokens are fusion queries
            self.last_site, self.last_row, self.last_map = name, None, None
            show_image(ax_image, self.images[i], f"query: {query}")
            draw_patch_grid(ax_image, self.model, branch, linewidth=0.5, alpha=0.6)
            if self.masks is not None:
                draw_mask_contour(ax_image, self.masks[i])
            self._mark_query(ax_image, None)
            ax_grid.axis("off")
            ax_grid.text(0.5, 0.5, "A patch token has no cross-attention row:\nonly the two CLS tokens are fusion\n"
                                   "queries (each reads the other branch's\npatches). Pick query CLS, or kind self.",
                         ha="center", va="center", fontsize=9, transform=ax_grid.transAxes)
            fig.suptitle(f"{name}: {query} has no cross-attention row", fontsize=10)
            self._show(fig)
            self.caption.value = f"<b>image {i}</b> (predicted: {predicted}). <b>{query}</b> is a patch token: a " \
                                 f"patch has no cross-attention row, because only the CLS tokens attend to the " \
                                 f"other branch in a fusion layer. Choose query <i>CLS</i> to see what the " \
                                 f"{branch} CLS reads in the {grid_branch} branch, or kind <i>self</i> for this " \
                                 f"patch's self-attention row."
            return

        if kind == "self":
            row = fuse(to_numpy(attention[i, :, token, :]), head)  # (1 + N,): the query's row
            own = "CLS->CLS" if token == 0 else f"{query} -> {branch} CLS"
            what = f"{query} over the {branch} patches (self-attention); weight on the {branch} CLS ({own}) " \
                   f"{row[0]:.3f}"
        else:
            row = fuse(cross_row(attention, i), head)
            what = f"{branch} CLS reads the {grid_branch} patches (cross-attention); weight on its own CLS " \
                   f"{row[0]:.3f}"
        rows, cols = self.model.patch_grid(grid_branch)
        self.last_site, self.last_row, self.last_map = name, row, row[1:].reshape(rows, cols)

        top = float(row[1:].max()) if row[1:].max() > 0 else 1.0  # one scale for both panels: the colour bar's
        pixels = patch_map_to_pixels(self.model, grid_branch, torch.as_tensor(row[1:])[None])[0]
        overlay_heatmap(ax_image, self.images[i], pixels, alpha=0.6, normalize=False, vmin=0.0, vmax=top,
                        title=f"{query} -> {grid_branch} patches")
        draw_patch_grid(ax_image, self.model, grid_branch, linewidth=0.5, alpha=0.6)
        if self.masks is not None:
            draw_mask_contour(ax_image, self.masks[i])
        shown = ax_grid.imshow(self.last_map, cmap=HEAT_CMAP, interpolation="nearest", vmin=0.0, vmax=top)
        ax_grid.set_title(f"attention weights on the {rows}x{cols} {grid_branch} grid", fontsize=9)
        ax_grid.set_xticks([])
        ax_grid.set_yticks([])
        self._mark_query(ax_image, ax_grid if grid_branch == branch else None)
        fig.colorbar(shown, ax=ax_grid, shrink=0.85, label="attention weight")
        fig.suptitle(f"{name} ({head_text}): {query} -> {grid_branch} patches", fontsize=10)
        self._show(fig)
        self.caption.value = f"<b>image {i}</b> (predicted: {predicted}). {what}. Patch weights sum to " \
                             f"{row[1:].sum():.3f}."

    def _show(self, fig: Figure) -> None:
        """Render ``fig`` into the picture and keep it, so that clicks can be mapped onto its panels."""
        self.picture.value = _render(fig)
        self.figure = fig


def attention_explorer(model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                       class_names: Sequence[str] | None = None, index: int = 0, max_images: int | None = None
                       ) -> AttentionExplorer:
    """A widget to browse every recorded attention map of ``model`` on ``images`` (B, 3, H, W).

    Sliders and menus pick the image, block, branch, kind (``self``: a row of the branch's self-attention;
    ``cross``: what the branch CLS reads in the other branch), layer, head (or the mean / max / min over heads)
    and the query token: the branch's CLS, or any patch by its grid row and column or by clicking it on the
    picture. A patch token has a self-attention row over its own branch only; the picture says so for
    ``cross``. The model runs once, here; changing a control only slices the recorded maps.

    Memory: the explorer keeps every attention map of every image (:func:`attention_bytes_per_image`: 0.4 MB per
    image for the bundled model, about 11 MB for crossvit_15_240), so it takes at most ``max_images`` images
    (default :data:`AttentionExplorer.MAX_IMAGES`); ``explorer.memory_bytes`` says what it holds.
    """
    return AttentionExplorer(model, images, masks=masks, class_names=class_names, index=index, max_images=max_images)


class RolloutExplorer(_Explorer):
    """Controls + picture of one rollout map. Build it with :func:`rollout_explorer`.

    ``controls``: ``image``, ``method``, ``head_fusion``, ``discard_ratio``, ``start_block`` (the first
    multi-scale block whose attention enters the product; the last block by default, as ``explain``'s rollouts)
    and ``target`` (the class whose score the gradient rollout back-propagates: :data:`PREDICTED`, each image's
    predicted class, or a class index). After each redraw ``last_map`` is the (H, W) pixel map shown (before
    display scaling).
    """

    METHODS: tuple[str, ...] = tuple(name for name, m in REGISTRY.items() if "start_block" in m.defaults)
    """The rollouts of the method registry (every method with a ``start_block`` option)."""
    PREDICTED = -1
    """Value of the ``target`` control that explains each image's predicted class."""
    GRADIENT_CACHE = 8
    """How many gradient-rollout results (one per (target class, start block), each (B, H, W) float32) the explorer
    keeps; older ones are recomputed (one backward pass) when shown again."""

    def __init__(self, model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, index: int = 0, max_images: int | None = None) -> None:
        self.recorder, image_slider = self._take_inputs(model, images, masks, class_names, index, max_images)
        maps = self.recorder.sites
        # per branch, (block, map) of every self-attention layer in forward order
        self.self_maps = {b: [(s.block, maps[s.name].cpu()) for s in self.recorder.recorded_sites
                              if s.branch == b and s.kind == "self"] for b in model.branch_names}
        # (head fusion, start) -> (B, H, W), on first use; at most every combination
        self._joint = _BoundedCache(len(HEAD_FUSIONS) * model.arch.num_blocks)
        # class-specific, so it needs a backward pass: kept for the GRADIENT_CACHE most recent (target, start block)
        self._grad = _BoundedCache(self.GRADIENT_CACHE)  # (class or PREDICTED, start) -> (B, H, W)
        last_block = model.arch.num_blocks - 1
        first = self.METHODS[0]
        self.grad_maps = self.gradient_maps(self.PREDICTED, self._default_start("gradient_rollout"))
        self._start_chosen = False  # set once the reader picks a start block; until then each method's default
        self.last_map: np.ndarray | None = None

        self.controls = {
            "image": image_slider,
            "method": widgets.Dropdown(options=list(self.METHODS), value=first, description="method",
                                       style=_STYLE),
            "head_fusion": widgets.Dropdown(options=list(HEAD_FUSIONS), value="mean", description="head fusion",
                                            style=_STYLE),
            "discard_ratio": widgets.FloatSlider(value=0.0, min=0.0, max=0.95, step=0.05,
                                                 description="discard ratio", style=_STYLE,
                                                 continuous_update=False, readout_format=".2f"),
            "start_block": widgets.Dropdown(options=[(f"block {k}", k) for k in range(last_block + 1)],
                                            value=self._default_start(first), description="start block",
                                            style=_STYLE),
            "target": widgets.Dropdown(options=self._target_options(), value=self.PREDICTED,
                                       description="target class", style=_STYLE),
        }
        self.picture = widgets.Image(format="png")
        self.caption = widgets.HTML()
        c = self.controls
        super().__init__([widgets.HBox([widgets.VBox([c["image"], c["method"]]),
                                        widgets.VBox([c["head_fusion"], c["discard_ratio"]]),
                                        widgets.VBox([c["start_block"], c["target"]])]),
                          self.caption, self.picture])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    def _on_change(self, change: dict) -> None:
        start = self.controls["start_block"]
        if change["owner"] is start:
            self._start_chosen = True
        elif change["owner"] is self.controls["method"] and not self._start_chosen:
            # each method starts where explain starts it, until the reader chooses a start block
            start.unobserve(self._on_change, names="value")
            try:
                start.value = self._default_start(change["new"])
            finally:
                start.observe(self._on_change, names="value")
        self.redraw()

    def _default_start(self, method: str) -> int:
        """The method's default start block (its registry record's, as ``explain`` uses), as a block index."""
        return int(REGISTRY[method].defaults["start_block"]) % self.model.arch.num_blocks

    def _target_options(self) -> list[tuple[str, int]]:
        classes = [(f"{k}: {_class_label(self.class_names, k)}", k) for k in range(self.model.num_classes)]
        return [("predicted class", self.PREDICTED), *classes]

    def gradient_maps(self, target: int, start_block: int = 0) -> torch.Tensor:
        """Gradient rollout maps (B, H, W) of every image for class ``target`` (:data:`PREDICTED`: each image's
        predicted class), as ``explain(..., "gradient_rollout", target=..., start_block=...)`` computes them; one
        backward per (target, start block), the :data:`GRADIENT_CACHE` most recent kept for later."""
        if target != self.PREDICTED and not 0 <= target < self.model.num_classes:
            raise ValueError(f"target must be RolloutExplorer.PREDICTED or a class in [0, "
                             f"{self.model.num_classes}), got {target}")
        def compute() -> torch.Tensor:
            images = self.images.to(_model_device(self.model))
            classes = self.predictions if target == self.PREDICTED else torch.full_like(self.predictions, target)
            return explain(self.model, images, "gradient_rollout", target=classes.to(images.device),
                           start_block=start_block).cpu()

        return self._grad.get_or_compute((target, start_block), compute)

    def _joint_pixels(self, head_fusion: str, start_block: int) -> torch.Tensor:
        """The model-level joint rollout map (B, H, W) as ``explain(..., "joint_rollout")`` defines it: per query
        CLS, both grids' mass per pixel added; then the mean over the two CLS tokens."""
        return self._joint.get_or_compute(
            (head_fusion, start_block),
            lambda: joint_rollout_pixels(self.model, joint_rollout(self.recorder, head_fusion,
                                                                   start_block=start_block)).cpu())

    def current_map(self) -> np.ndarray:
        """The (H, W) pixel map the controls select."""
        c = self.controls
        i, method, start = c["image"].value, c["method"].value, c["start_block"].value
        branch = REGISTRY[method].branch
        if branch is not None:
            # this image only, blocks >= start: (1, heads, N, N) each
            maps = [m[i:i + 1] for block, m in self.self_maps[branch] if block >= start]
            patches = rollout_from_maps(maps, c["head_fusion"].value, c["discard_ratio"].value)  # (1, N)
            return patch_map_to_pixels(self.model, branch, patches)[0].numpy()
        if method == "joint_rollout":
            return self._joint_pixels(c["head_fusion"].value, start)[i].numpy()
        return self.gradient_maps(c["target"].value, start)[i].numpy()

    def redraw(self) -> None:
        """Recompute the selected map from the recorded attention and redraw the picture."""
        c = self.controls
        i, method = c["image"].value, c["method"].value
        record = REGISTRY[method]
        per_branch = record.branch is not None
        c["head_fusion"].disabled = "head_fusion" not in record.defaults
        c["discard_ratio"].disabled = "discard_ratio" not in record.defaults
        c["target"].disabled = not record.class_specific
        self.last_map = self.current_map()

        fig = Figure(figsize=(6.4, 3.4), layout="constrained")
        ax_image, ax_map = fig.subplots(1, 2)
        show_image(ax_image, self.images[i], "input")
        overlay_heatmap(ax_map, self.images[i], self.last_map, alpha=0.6, title=method)
        if per_branch:
            branch = record.branch
            draw_patch_grid(ax_map, self.model, branch, color=GRID_COLORS[branch], linewidth=0.4, alpha=0.5)
        heat = torch.as_tensor(self.last_map, dtype=torch.float64)
        top = heat.max()
        maximal = (heat >= top - 1e-6 * top.abs()).nonzero().double()  # the maximal pixels (a patch, or a part of one)
        centre = maximal.mean(dim=0).tolist()
        ax_map.plot(centre[1], centre[0], marker="+", color="#00ff66", markersize=14, markeredgewidth=2.5)
        verdict = ""
        if self.masks is not None:
            for ax in (ax_image, ax_map):
                draw_mask_contour(ax, self.masks[i])
            game = pointing_game(heat[None].float(), self.masks[i][None])  # the default ("majority") rule
            share = float(game.inside_share[0])
            verdict = (f" {share:.0%} of the maximal pixels (+ marks their centre) lie on the object: the pointing "
                       f"game counts a {'hit' if bool(game.hits[0]) else 'miss'}.")
        self.picture.value = _render(fig)
        settings = []
        if not c["head_fusion"].disabled:
            settings.append(f"head fusion {c['head_fusion'].value}")
        if per_branch:
            settings.append(f"discard ratio {c['discard_ratio'].value:.2f}")
        settings.append(f"from block {c['start_block'].value}")
        predicted = _class_label(self.class_names, int(self.predictions[i]))
        if record.class_specific:
            target = c["target"].value
            settings.append(f"gradients of the predicted class, {predicted}" if target == self.PREDICTED else
                            f"gradients of class {_class_label(self.class_names, target)}")
        self.caption.value = f"<b>image {i}</b> (predicted: {predicted}); {method}" + \
                             (f" ({', '.join(settings)})" if settings else "") + "." + verdict


def rollout_explorer(model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                     class_names: Sequence[str] | None = None, index: int = 0, max_images: int | None = None
                     ) -> RolloutExplorer:
    """A widget to compare rollout maps of ``model`` on ``images`` (B, 3, H, W): per-branch rollout (head fusion
    and discard ratio adjustable), the joint rollout through the fusion layers (head fusion adjustable), and the
    gradient rollout of a target class (each image's predicted class, or one chosen in the ``target`` menu).
    ``masks`` (B, H, W) outline the objects and say whether the map's maximum lands on one. The model runs once
    here, plus one backward per gradient-rollout target when it is first shown.

    Memory: the recorded maps of every image (as :func:`attention_explorer`, at most ``max_images`` images), plus
    at most :data:`RolloutExplorer.GRADIENT_CACHE` gradient-rollout results and one joint-rollout result per (head
    fusion, start block), each (B, H, W) float32; ``explorer.memory_bytes`` says what it holds.
    """
    return RolloutExplorer(model, images, masks=masks, class_names=class_names, index=index, max_images=max_images)


__all__ = ["AttentionExplorer", "RolloutExplorer", "attention_explorer", "rollout_explorer"]
