"""The attention explorer: browse every recorded attention map, one site and one query token at a time."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import traitlets

from ..model import CrossViT
from ..plotting import cross_row, fuse, to_numpy
from ..utils import check_int
from .base import _Explorer, class_label, image_label, menu, slider

HEAD_FUSION_LABELS = (("mean of heads", "mean"), ("max of heads", "max"), ("min of heads", "min"))
NO_CROSS_ROW_NOTE = ("A patch token has no cross-attention row: only the two CLS tokens are fusion queries (each "
                     "reads the other branch's patches). Pick query CLS, or kind self.")


class AttentionExplorer(_Explorer):
    """Controls + picture of one recorded attention site and one query token. Build it with
    :func:`attention_explorer`.

    ``controls`` maps a name (``image``, ``block``, ``branch``, ``kind``, ``layer``, ``head``, ``query``,
    ``patch_row``, ``patch_col``) to its :class:`~crossvit.widgets.base.Control`; ``maps`` holds every recorded map
    on the CPU (site name -> tensor). The query is the branch's CLS token or one of its patches (``query="patch"``,
    chosen by grid row and column, or by clicking it on the picture). :meth:`view` says what the picture shows;
    ``last_site`` names the shown site, ``last_row`` is the query's fused attention row (1 + N keys: the CLS, then
    the patches) and ``last_map`` its patch part as a grid. A patch token has no cross-attention row (only the CLS
    tokens are fusion queries): then ``last_row`` and ``last_map`` are None and the picture says why.
    """

    KIND = "attention"
    CONTROLS = ("image", "block", "branch", "kind", "layer", "head", "query", "patch_row", "patch_col")
    block = traitlets.Int(0).tag(sync=True)
    branch = traitlets.Unicode("small").tag(sync=True)
    kind = traitlets.Unicode("self").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Union([traitlets.Unicode(), traitlets.Int()], default_value="mean").tag(sync=True)
    query = traitlets.Unicode("CLS").tag(sync=True)
    patch_row = traitlets.Int(0).tag(sync=True)
    patch_col = traitlets.Int(0).tag(sync=True)
    notice = traitlets.Unicode("").tag(sync=True)  # what a click changed besides the query, for the next caption

    def __init__(self, model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, index: int = 0, max_images: int | None = None,
                 image_names: Sequence[str] | None = None) -> None:
        rec = self._take_inputs(model, images, masks, class_names, max_images, image_names)
        self.maps: dict[str, torch.Tensor] = rec.sites  # on the CPU already (_record)
        first = model.branch_names[0]
        rows, cols = model.patch_grid(first)
        super().__init__(image=self._check_index(index), branch=first, patch_row=rows // 2, patch_col=cols // 2,
                         _data=self.packet())

    # -- the packet -----------------------------------------------------------------------------------------
    def packet(self, dtype: str = "float16") -> dict[str, Any]:
        arch = self.model.arch
        return {**self._common_packet(), "sites": self._encode_sites(self.maps, dtype),
                "depth": {b: list(arch.branch(b).depth) for b in self.model.branch_names},
                "heads": {b: arch.branch(b).heads for b in self.model.branch_names},
                "cross_heads": {b: arch.branch(b).cross_heads for b in self.model.branch_names},
                "fusion_layers": arch.fusion_layers}

    # -- controls -------------------------------------------------------------------------------------------
    def _site_size(self) -> tuple[int, int]:
        """(layers, heads) of the sites the block, branch and kind select."""
        spec = self.model.arch.branch(self.branch)
        if self.kind == "self":
            return spec.depth[self.block], spec.heads
        return self.model.arch.fusion_layers, spec.cross_heads

    def control_specs(self) -> dict[str, dict[str, Any]]:
        layers, heads = self._site_size()
        rows, cols = self.model.patch_grid(self.branch)
        patch_off = self.query == "CLS"
        patch_tip = "the query is the CLS token: choose query patch to pick a patch" if patch_off else ""
        return {
            "image": slider("image", 0, self.num_images - 1),
            "block": slider("block", 0, self.model.arch.num_blocks - 1),
            "branch": menu("branch", [(b, b) for b in self.model.branch_names]),
            "kind": menu("kind", [("self", "self"), ("cross", "cross")], buttons=True),
            "layer": slider("layer", 0, max(0, layers - 1), disabled=layers <= 1,
                            tooltip=f"this {self.kind}-attention site has a single layer" if layers <= 1 else ""),
            "head": menu("head", [*HEAD_FUSION_LABELS, *((f"head {h}", h) for h in range(heads))]),
            "query": menu("query", [("CLS", "CLS"), ("patch", "patch")], buttons=True),
            "patch_row": slider("patch row", 0, rows - 1, disabled=patch_off, tooltip=patch_tip),
            "patch_col": slider("patch column", 0, cols - 1, disabled=patch_off, tooltip=patch_tip),
        }

    def state_keys(self) -> tuple[str, ...]:
        return (*self.CONTROLS, "notice")

    def set_control(self, name: str, value: Any) -> None:
        spec = self.control_specs().get(name)
        if spec is None:
            raise ValueError(f"no control {name!r}; the controls are {', '.join(self.CONTROLS)}")
        if spec["type"] == "slider":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
                    not spec["min"] <= value <= spec["max"]:
                raise ValueError(f"{name} must be an int in [{spec['min']}, {spec['max']}], got {value!r}")
            value = int(value)
        elif value not in [v for _, v in spec["options"]] or isinstance(value, bool):
            raise ValueError(f"{name} must be one of {[v for _, v in spec['options']]}, got {value!r}")
        with self.hold_sync():
            self.notice = ""
            setattr(self, name, value)

    @traitlets.observe("block", "branch", "kind", "query", "layer", "head", "patch_row", "patch_col")
    def _normalize(self, change: dict) -> None:
        """Fit the layer, the head and the patch to the chosen block, branch and kind (the front end does the
        same): a layer or patch past the end moves to the last one, a head the site does not have to the mean."""
        layers, heads = self._site_size()
        rows, cols = self.model.patch_grid(self.branch)
        if self.layer > layers - 1:
            self.layer = layers - 1
        if isinstance(self.head, int) and not 0 <= self.head < heads:
            self.head = "mean"
        if self.patch_row > rows - 1:
            self.patch_row = rows - 1
        if self.patch_col > cols - 1:
            self.patch_col = cols - 1

    # -- the query token ------------------------------------------------------------------------------------
    def query_token(self) -> int:
        """Index of the query token in its branch's sequence: 0 for the CLS, 1 + row * cols + col for a patch."""
        if self.query == "CLS":
            return 0
        _, cols = self.model.patch_grid(self.branch)
        return 1 + self.patch_row * cols + self.patch_col

    def query_label(self) -> str:
        if self.query == "CLS":
            return f"{self.branch} CLS"
        return f"{self.branch} patch ({self.patch_row}, {self.patch_col})"

    def select_patch(self, row: int, col: int, branch: str | None = None) -> None:
        """Make patch (``row``, ``col``) of ``branch``'s grid (default: the current branch) the query and show its
        self-attention row (a patch has no cross-attention row): what a click on the picture does. When this
        changes the kind or the branch, the caption says so."""
        branch = self.branch if branch is None else branch
        if branch not in self.model.branch_names:
            raise ValueError(f"branch must be one of {self.model.branch_names}, got {branch!r}")
        rows, cols = self.model.patch_grid(branch)
        row, col = check_int("row", row), check_int("col", col)  # 0.5 is no patch (it was truncated to 0)
        if not (0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"the {branch} branch has a {rows}x{cols} grid; patch ({row}, {col}) is outside it")
        changed = [f"kind {self.kind} -> self"] if self.kind != "self" else []
        if branch != self.branch:
            changed.append(f"branch {self.branch} -> {branch}")
        with self.hold_sync():
            self.branch, self.query, self.kind = branch, "patch", "self"
            self.patch_row, self.patch_col = int(row), int(col)
            self.notice = (f"You picked {branch} patch ({row}, {col}); a patch has no cross-attention row, so this "
                           f"is its self-attention ({', '.join(changed)}). " if changed else "")

    def shown_grid(self) -> str:
        """The branch whose patch grid the picture shows (and a click picks from): the keys' grid, or the query's
        own when a patch is the query of a cross-attention site (which has no row: the picture shows the query on
        its own grid)."""
        if self.kind == "cross" and self.query != "CLS":
            return self.branch
        return self._grid_branch()

    def site_name(self) -> str:
        """Name of the site the controls select, e.g. ``blocks.1.large.cross.0``."""
        return f"blocks.{self.block}.{self.branch}.{self.kind}.{self.layer}"

    def _grid_branch(self) -> str:
        """The branch whose patches are the keys: the query's own for self-attention, the other for cross."""
        if self.kind == "self":
            return self.branch
        return next(b for b in self.model.branch_names if b != self.branch)

    # -- what the picture shows -----------------------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        """The picture and caption of the current state: ``row`` (the query's fused attention row, 1 + N keys, or
        None), the titles, the colour scale's top ``vmax``, which grid's lines show, where the query outlines go,
        and the caption (HTML)."""
        i, branch, kind, head = self.image, self.branch, self.kind, self.head
        name, token, query = self.site_name(), self.query_token(), self.query_label()
        grid_branch = self._grid_branch()
        predicted = html.escape(class_label(self.class_names, int(self.predictions[i])))
        shown = html.escape(image_label(self.image_names, i))
        patch = None if self.query == "CLS" else [branch, self.patch_row, self.patch_col]
        if kind == "cross" and token != 0:  # only the CLS tokens are fusion queries
            return {
                "site": name, "row": None, "grid_branch": branch, "lines": branch, "query_patch": patch,
                "query_cell": False, "vmax": None, "note": NO_CROSS_ROW_NOTE,
                "title": f"{name}: {query} has no cross-attention row", "image_title": f"query: {query}",
                "panel_title": "",
                "caption": f"<b>{shown}</b> (predicted: {predicted}). <b>{query}</b> is a patch token: a patch "
                           f"has no cross-attention row, because only the CLS tokens attend to the other branch in a "
                           f"fusion layer. Choose query <i>CLS</i> to see what the {branch} CLS reads in the "
                           f"{grid_branch} branch, or kind <i>self</i> for this patch's self-attention row."}
        attention = self.maps[name]
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
        top = float(row[1:].max()) if row[1:].max() > 0 else 1.0  # one scale for both panels: the colour bar's
        head_text = head if isinstance(head, str) else f"head {head}"
        return {
            "site": name, "row": [float(v) for v in row], "grid_branch": grid_branch, "lines": grid_branch,
            "query_patch": patch, "query_cell": patch is not None and grid_branch == branch, "vmax": top,
            "note": "", "title": f"{name} ({head_text}): {query} -> {grid_branch} patches",
            "image_title": f"{query} -> {grid_branch} patches",
            "panel_title": f"attention weights on the {rows}x{cols} {grid_branch} grid",
            "caption": f"{self.notice}<b>{shown}</b> (predicted: {predicted}). {what}. Patch weights sum to "
                       f"{row[1:].sum():.3f}."}

    @property
    def last_site(self) -> str:
        return self.site_name()

    @property
    def last_row(self) -> np.ndarray | None:
        """The query's fused attention row of the current state (1 + N keys), or None (a patch in cross mode)."""
        row = self.view()["row"]
        return None if row is None else np.asarray(row, dtype=np.float32)

    @property
    def last_map(self) -> np.ndarray | None:
        """The patch part of :attr:`last_row` as the keys' grid (rows, cols), or None."""
        row = self.last_row
        if row is None:
            return None
        return row[1:].reshape(self.model.patch_grid(self._grid_branch()))

    def _held_tensors(self) -> list[torch.Tensor]:
        return [*super()._held_tensors(), *self.maps.values()]


def attention_explorer(model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                       class_names: Sequence[str] | None = None, index: int = 0, max_images: int | None = None,
                       image_names: Sequence[str] | None = None) -> AttentionExplorer:
    """A widget to browse every recorded attention map of ``model`` on ``images`` (B, 3, H, W).

    Sliders and menus pick the image, block, branch, kind (``self``: a row of the branch's self-attention;
    ``cross``: what the branch CLS reads in the other branch), layer, head (or the mean / max / min over heads) and
    the query token: the branch's CLS, or any patch by its grid row and column or by clicking it on the picture. A
    patch token has a self-attention row over its own branch only; the picture says so for ``cross``. Classes are
    named by ``class_names``, by default the model's own (:func:`crossvit.class_names`: its checkpoint's,
    ImageNet's, else "class k"), images by ``image_names`` (e.g. their files) if given, else by number. The model
    runs once, here; the recorded maps go to the browser once, and every control is answered there (no kernel
    needed: the widget works in a saved notebook page and in ``explorer.save_html(path)``).

    Memory: the explorer keeps every attention map of every image (:func:`attention_bytes_per_image`: about 0.5 MB
    per image for the bundled model, about 26 MB for crossvit_15_240), so it takes at most ``max_images`` images
    (default :data:`AttentionExplorer.MAX_IMAGES`); ``explorer.memory_bytes`` says what it holds. Like every
    ipywidget, it stays in memory until ``explorer.close()``, even when nothing refers to it any more; a script that
    builds many explorers closes each, or uses ``with attention_explorer(...) as explorer:``, which closes it.
    """
    return AttentionExplorer(model, images, masks=masks, class_names=class_names, index=index, max_images=max_images,
                             image_names=image_names)
