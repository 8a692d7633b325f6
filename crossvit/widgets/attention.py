"""The attention explorer: browse every recorded attention map, one site and one query token at a time."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FormatStrFormatter

from ..explain import patch_map_to_pixels
from ..model import CrossViT
from ..plotting import (
    HEAT_CMAP,
    cross_row,
    draw_patch_grid,
    fuse,
    grid_edges,
    overlay_heatmap,
    to_hwc,
    to_numpy,
)
from .base import _STYLE, QUERY_COLOR, _class_label, _Explorer, _new_figure, _render, _show_only


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
        self._notice = ""  # one sentence for the next caption: what a click changed besides the query

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

    def select_patch(self, row: int, col: int, branch: str | None = None) -> None:
        """Make patch (``row``, ``col``) of ``branch``'s grid (default: the current branch) the query and show its
        self-attention row (a patch has no cross-attention row). Redraws once; when this changes the kind or the
        branch, the caption says so."""
        c = self.controls
        branch = c["branch"].value if branch is None else branch
        if branch not in self.model.branch_names:
            raise ValueError(f"branch must be one of {self.model.branch_names}, got {branch!r}")
        rows, cols = self.model.patch_grid(branch)
        if not (0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"the {branch} branch has a {rows}x{cols} grid; patch ({row}, {col}) is outside it")
        changed = [f"kind {c['kind'].value} -> self"] if c["kind"].value != "self" else []
        if branch != c["branch"].value:
            changed.append(f"branch {c['branch'].value} -> {branch}")
        self._syncing = True
        try:
            c["branch"].value = branch
            c["query"].value, c["kind"].value = "patch", "self"
            c["patch_row"].value, c["patch_col"].value = row, col
            self._sync_ranges()
        finally:
            self._syncing = False
        self._notice = (f"You picked {branch} patch ({row}, {col}); a patch has no cross-attention row, so this "
                        f"is its self-attention ({', '.join(changed)}). " if changed else "")
        self.redraw()

    def point_to_patch(self, x: float, y: float) -> tuple[int, int] | None:
        """The patch under pixel (``x``, ``y``) of the picture (PNG pixels, from the top left), on the grid the
        picture shows (:meth:`shown_grid`: the current branch's for self-attention, the other branch's for
        cross-attention), on the image panel or the grid panel; None elsewhere."""
        if self.figure is None:
            return None
        branch = self.shown_grid()
        rows, cols = self.model.patch_grid(branch)
        display = (x, self.figure.bbox.height - y)  # PNG rows go down, matplotlib's display y goes up
        ax_image, ax_grid = self.figure.axes[:2]
        if ax_image.bbox.contains(*display):
            px, py = ax_image.transData.inverted().transform(display)  # input-image pixel coordinates
            edges = grid_edges(self.model, branch) - 0.5
            col, row = (int(np.searchsorted(edges, v, side="right")) - 1 for v in (px, py))
        elif ax_grid.bbox.contains(*display) and self.last_row is not None:  # the grid panel, when it shows a grid
            gx, gy = ax_grid.transData.inverted().transform(display)  # cell (i, j) is centred on (j, i)
            col, row = int(round(gx)), int(round(gy))
        else:
            return None
        return (row, col) if 0 <= row < rows and 0 <= col < cols else None

    def shown_grid(self) -> str:
        """The branch whose patch grid the picture shows: the keys' grid, or the query's own when a patch is the
        query of a cross-attention site (which has no row: the picture shows the query on its own grid)."""
        c = self.controls
        if c["kind"].value == "cross" and c["query"].value != "CLS":
            return c["branch"].value
        return self._grid_branch()

    def select_point(self, x: float, y: float) -> tuple[int, int] | None:
        """A click at pixel (``x``, ``y``) of the picture: select the patch there (see :meth:`point_to_patch`);
        returns it, or None (and changes nothing) when the point is on no patch of the current branch."""
        patch = self.point_to_patch(x, y)
        if patch is not None:
            self.select_patch(*patch, branch=self.shown_grid())
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
            c["layer"].disabled = layers <= 1  # one layer here: nothing to choose
            c["layer"].tooltip = f"this {c['kind'].value}-attention site has a single layer" if layers <= 1 else ""
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
    def _build_picture(self) -> None:
        """Draw the picture's figure once: the image with its heat overlay, each branch's patch grid, the grid
        panel with its colour bar, the query outlines and the note shown for a patch query in cross mode. A redraw
        only changes their data, titles and visibility."""
        fig = _new_figure((7.6, 3.6))
        ax_image, ax_grid = fig.subplots(1, 2)
        h, w = self.images.shape[-2:]
        heat = overlay_heatmap(ax_image, self.images[0], np.zeros((h, w)), alpha=0.6, normalize=False, vmin=0.0,
                               vmax=1.0, title=" ")
        grid = ax_grid.imshow(np.zeros((1, 1)), cmap=HEAT_CMAP, interpolation="nearest", vmin=0.0, vmax=1.0)
        ax_grid.set_title(" ", fontsize=9)
        ax_grid.set_xticks([])
        ax_grid.set_yticks([])
        colorbar = fig.colorbar(grid, ax=ax_grid, shrink=0.85, label="attention weight",
                                format=FormatStrFormatter("%.3f"))  # fixed width: the layout is kept
        outline = {"edgecolor": QUERY_COLOR, "linewidth": 2.0, "fill": False, "visible": False}
        self._view = {
            "image": ax_image.images[0], "heat": heat, "grid": grid, "colorbar": colorbar,
            "lines": {b: draw_patch_grid(ax_image, self.model, b, linewidth=0.5, alpha=0.6)
                      for b in self.model.branch_names},
            "contours": {},  # image index -> its mask outline (_show_mask)
            "query": ax_image.add_patch(Rectangle((0, 0), 1, 1, **outline)),
            "query_cell": ax_grid.add_patch(Rectangle((0, 0), 1, 1, **outline)),
            "note": ax_grid.text(0.5, 0.5, "A patch token has no cross-attention row:\nonly the two CLS tokens "
                                 "are fusion\nqueries (each reads the other branch's\npatches). Pick query CLS, or "
                                 "kind self.", ha="center", va="center", fontsize=9, transform=ax_grid.transAxes,
                                 visible=False),
            "title": fig.suptitle(" ", fontsize=10),
        }
        self.figure = fig

    def _show_base(self, i: int, grid_branch: str | None) -> None:
        """The image, its mask outline and ``grid_branch``'s patch lines (none when None) on the image panel."""
        v = self._view
        v["image"].set_data(to_hwc(self.images[i]))
        self._show_mask(i, self.figure.axes[:1])
        _show_only(v["lines"], grid_branch)

    def _mark_query(self, on_grid: bool) -> None:
        """Outline the query patch on the image (and on its grid panel when ``on_grid``); hide both for a CLS."""
        c, v = self.controls, self._view
        patch = c["query"].value != "CLS"
        v["query"].set_visible(patch)
        v["query_cell"].set_visible(patch and on_grid)
        if patch:
            r, col = c["patch_row"].value, c["patch_col"].value
            edges = grid_edges(self.model, c["branch"].value) - 0.5
            v["query"].set_bounds(edges[col], edges[r], edges[col + 1] - edges[col], edges[r + 1] - edges[r])
            v["query_cell"].set_bounds(col - 0.5, r - 0.5, 1, 1)

    def _show_panel(self, visible: bool) -> None:
        """Show the grid panel and its colour bar (or, when not ``visible``, the note in their place)."""
        v = self._view
        ax_grid = self.figure.axes[1]
        ax_grid.set_axis_on() if visible else ax_grid.set_axis_off()
        for artist in (v["grid"], v["heat"], v["colorbar"].ax, ax_grid.title):
            artist.set_visible(visible)
        v["note"].set_visible(not visible)

    def redraw(self) -> None:
        """Slice the recorded map the controls select and redraw the picture."""
        c = self.controls
        i, branch, kind, head = c["image"].value, c["branch"].value, c["kind"].value, c["head"].value
        name = self.site_name()
        attention = self.maps[name]
        token, query = self.query_token(), self.query_label()
        grid_branch = self._grid_branch()
        head_text = head if isinstance(head, str) else f"head {head}"
        if self.figure is None:
            self._build_picture()
        v, (ax_image, ax_grid) = self._view, self.figure.axes[:2]
        predicted = _class_label(self.class_names, int(self.predictions[i]))

        if kind == "cross" and token != 0:  # only the CLS tokens are fusion queries
            self.last_site, self.last_row, self.last_map = name, None, None
            self._show_base(i, branch)
            self._show_panel(False)
            ax_image.set_title(f"query: {query}", fontsize=9)
            self._mark_query(on_grid=False)
            v["title"].set_text(f"{name}: {query} has no cross-attention row")
            self._show()
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
        self._show_base(i, grid_branch)
        self._show_panel(True)
        v["heat"].set_data(to_numpy(pixels))
        v["grid"].set_data(self.last_map)
        v["grid"].set_extent((-0.5, cols - 0.5, rows - 0.5, -0.5))
        ax_grid.set_xlim(-0.5, cols - 0.5)
        ax_grid.set_ylim(rows - 0.5, -0.5)
        for shown in (v["heat"], v["grid"]):
            shown.set_clim(0.0, top)
        ax_image.set_title(f"{query} -> {grid_branch} patches", fontsize=9)
        ax_grid.set_title(f"attention weights on the {rows}x{cols} {grid_branch} grid", fontsize=9)
        self._mark_query(on_grid=grid_branch == branch)
        v["title"].set_text(f"{name} ({head_text}): {query} -> {grid_branch} patches")
        self._show()
        self.caption.value = f"{self._notice}<b>image {i}</b> (predicted: {predicted}). {what}. Patch weights " \
                             f"sum to {row[1:].sum():.3f}."
        self._notice = ""

    def _show(self) -> None:
        """Render the figure into the picture (:attr:`figure` keeps its layout, so that clicks can be mapped onto
        its panels)."""
        self.picture.value = _render(self.figure)


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
