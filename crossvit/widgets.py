"""ipywidgets explorers for the notebooks, where moving a slider teaches more than one static figure.

* :func:`attention_explorer`: image, block, branch, kind (self / cross), layer and head (or head fusion); shows
  the chosen CLS row over the grid it attends to.
* :func:`rollout_explorer`: image, method (per-branch, joint or gradient rollout), head fusion and discard ratio.

Each explorer runs the model ONCE when it is built, keeps the recorded maps, and on every change only slices them
(and, for rollout, multiplies a few small matrices), so redraws are cheap. The figure is rendered to PNG bytes
inside an :class:`ipywidgets.Image`, which works in any front end and without a display (tests drive the
controls directly and read ``explorer.last_map``)::

    explorer = attention_explorer(model, images, class_names=CLASS_NAMES)
    explorer          # last expression of a cell: shows the widget
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from .explain import explain, joint_rollout_pixels, patch_map_to_pixels
from .metrics import argmax_points
from .model import CrossViT
from .plotting import (
    GRID_COLORS,
    HEAT_CMAP,
    cls_row,
    cross_row,
    draw_mask_contour,
    draw_patch_grid,
    fuse,
    overlay_heatmap,
    show_image,
)
from .recording import AttentionRecorder, record_attention
from .rollout import HEAD_FUSIONS, joint_rollout, rollout_from_maps

_DPI = 90
_STYLE = {"description_width": "90px"}


def _render(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def _model_device(model: CrossViT) -> torch.device:
    return next(model.parameters()).device


def _record(model: CrossViT, images: torch.Tensor) -> tuple[AttentionRecorder, torch.Tensor]:
    """One recorded forward of ``images`` in eval mode: the recorder and the logits (on the CPU)."""
    was_training = model.training
    model.eval()
    try:
        with record_attention(model) as rec, torch.no_grad():
            logits = model(images.to(_model_device(model)))
    finally:
        model.train(was_training)
    return rec, logits.cpu()


def _class_label(class_names: Sequence[str] | None, k: int) -> str:
    return class_names[k] if class_names is not None and k < len(class_names) else f"class {k}"


class _Explorer(widgets.VBox):
    """What both explorers share: their inputs kept on the CPU, one recorded forward, and the image slider."""

    def _take_inputs(self, model: CrossViT, images: torch.Tensor, masks: torch.Tensor | None,
                     class_names: Sequence[str] | None, index: int) -> tuple[AttentionRecorder, widgets.IntSlider]:
        """Store the inputs and the predicted classes; return the recorder of the forward and the image slider."""
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
    """Controls + picture of one recorded attention site. Build it with :func:`attention_explorer`.

    ``controls`` maps a name (``image``, ``block``, ``branch``, ``kind``, ``layer``, ``head``) to its widget;
    ``maps`` holds every recorded map on the CPU (site name -> tensor); after each redraw ``last_site`` names the
    shown site, ``last_row`` is the fused CLS row (1 + N keys) and ``last_map`` its patch part as a grid.
    """

    def __init__(self, model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, index: int = 0) -> None:
        rec, image_slider = self._take_inputs(model, images, masks, class_names, index)
        self.maps: dict[str, torch.Tensor] = {name: m.cpu() for name, m in rec.sites.items()}
        self.last_site: str | None = None
        self.last_row: np.ndarray | None = None
        self.last_map: np.ndarray | None = None
        self._syncing = False

        arch = model.arch
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
        }
        self.picture = widgets.Image(format="png")
        self.caption = widgets.HTML()
        c = self.controls
        column_a = widgets.VBox([c["image"], c["block"], c["layer"]])
        column_b = widgets.VBox([c["branch"], c["kind"], c["head"]])
        super().__init__([widgets.HBox([column_a, column_b]), self.caption, self.picture])
        self._sync_ranges()
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    # -- state ----------------------------------------------------------------------------------------------
    def _sync_ranges(self) -> None:
        """Fit the layer slider and the head options to the chosen block, branch and kind."""
        c = self.controls
        spec = self.model.arch.branch(c["branch"].value)
        if c["kind"].value == "self":
            layers, heads = spec.depth[c["block"].value], spec.heads
        else:
            layers, heads = self.model.arch.fusion_layers, spec.cross_heads
        self._syncing = True
        try:
            c["layer"].max = max(0, layers - 1)
            c["layer"].value = min(c["layer"].value, layers - 1)
            options = [("mean of heads", "mean"), ("max of heads", "max"), ("min of heads", "min")]
            options += [(f"head {h}", h) for h in range(heads)]
            current = c["head"].value
            if [v for _, v in c["head"].options] != [v for _, v in options]:
                c["head"].options = options
            c["head"].value = current if current in [v for _, v in options] else "mean"
        finally:
            self._syncing = False

    def _on_change(self, change: dict) -> None:
        if self._syncing:
            return
        if change["owner"] in (self.controls["block"], self.controls["branch"], self.controls["kind"]):
            self._sync_ranges()
        self.redraw()

    def site_name(self) -> str:
        """Name of the site the controls select, e.g. ``blocks.1.large.cross.0``."""
        c = self.controls
        return f"blocks.{c['block'].value}.{c['branch'].value}.{c['kind'].value}.{c['layer'].value}"

    # -- drawing --------------------------------------------------------------------------------------------
    def redraw(self) -> None:
        """Slice the recorded map the controls select and redraw the picture."""
        c = self.controls
        i, branch, kind, head = c["image"].value, c["branch"].value, c["kind"].value, c["head"].value
        name = self.site_name()
        attention = self.maps[name]
        if kind == "self":
            row, grid_branch = fuse(cls_row(attention, i), head), branch
            what = f"{branch} CLS over its own {branch} patches; CLS->CLS weight {row[0]:.3f}"
        else:
            grid_branch = next(b for b in self.model.branch_names if b != branch)
            row = fuse(cross_row(attention, i), head)
            what = f"{branch} CLS reads the {grid_branch} patches; weight on its own CLS {row[0]:.3f}"
        rows, cols = self.model.patch_grid(grid_branch)
        self.last_site, self.last_row, self.last_map = name, row, row[1:].reshape(rows, cols)

        fig = Figure(figsize=(7.6, 3.5), layout="constrained")
        ax_image, ax_grid = fig.subplots(1, 2)
        pixels = patch_map_to_pixels(self.model, grid_branch, torch.as_tensor(row[1:])[None])[0]
        overlay_heatmap(ax_image, self.images[i], pixels, alpha=0.6)
        draw_patch_grid(ax_image, self.model, grid_branch, linewidth=0.5, alpha=0.6)
        if self.masks is not None:
            draw_mask_contour(ax_image, self.masks[i])
        shown = ax_grid.imshow(self.last_map, cmap=HEAT_CMAP, interpolation="nearest")
        ax_grid.set_title(f"attention weights on the {rows}x{cols} {grid_branch} grid", fontsize=9)
        ax_grid.set_xticks([])
        ax_grid.set_yticks([])
        fig.colorbar(shown, ax=ax_grid, shrink=0.85)
        label = "mean" if head == "mean" else head
        fig.suptitle(f"{name}  ({label if isinstance(label, str) else f'head {label}'})", fontsize=10)
        self.picture.value = _render(fig)
        predicted = _class_label(self.class_names, int(self.predictions[i]))
        self.caption.value = f"<b>image {i}</b> (predicted: {predicted}). {what}. Patch weights sum to " \
                             f"{row[1:].sum():.3f}."


def attention_explorer(model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                       class_names: Sequence[str] | None = None, index: int = 0) -> AttentionExplorer:
    """A widget to browse every recorded attention map of ``model`` on ``images`` (B, 3, H, W).

    Sliders and menus pick the image, block, branch, kind (``self``: the branch CLS's row of its self-attention;
    ``cross``: what the branch CLS reads in the other branch), layer and head (or the mean / max / min over
    heads). The model runs once, here; changing a control only slices the recorded maps.
    """
    return AttentionExplorer(model, images, masks=masks, class_names=class_names, index=index)


class RolloutExplorer(_Explorer):
    """Controls + picture of one rollout map. Build it with :func:`rollout_explorer`.

    ``controls``: ``image``, ``method``, ``head_fusion``, ``discard_ratio``. After each redraw ``last_map`` is
    the (H, W) pixel map shown (before display scaling).
    """

    METHODS: tuple[str, ...] = ("rollout_small", "rollout_large", "joint_rollout", "grad_rollout")

    def __init__(self, model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, index: int = 0) -> None:
        self.recorder, image_slider = self._take_inputs(model, images, masks, class_names, index)
        self.self_maps = {b: [m.cpu() for m in self.recorder.self_attention(b)] for b in model.branch_names}
        self._joint: dict[str, torch.Tensor] = {}  # head fusion -> (B, H, W), computed on first use
        # class-specific, so it needs a backward pass: computed once for the predicted classes
        self.grad_maps = explain(model, images, "grad_rollout", target=self.predictions.to(images.device)).cpu()
        self.last_map: np.ndarray | None = None

        self.controls = {
            "image": image_slider,
            "method": widgets.Dropdown(options=list(self.METHODS), value="rollout_small", description="method",
                                       style=_STYLE),
            "head_fusion": widgets.Dropdown(options=list(HEAD_FUSIONS), value="mean", description="head fusion",
                                            style=_STYLE),
            "discard_ratio": widgets.FloatSlider(value=0.0, min=0.0, max=0.95, step=0.05,
                                                 description="discard ratio", style=_STYLE,
                                                 continuous_update=False, readout_format=".2f"),
        }
        self.picture = widgets.Image(format="png")
        self.caption = widgets.HTML()
        c = self.controls
        super().__init__([widgets.HBox([widgets.VBox([c["image"], c["method"]]),
                                        widgets.VBox([c["head_fusion"], c["discard_ratio"]])]),
                          self.caption, self.picture])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    def _on_change(self, change: dict) -> None:
        self.redraw()

    def _joint_pixels(self, head_fusion: str) -> torch.Tensor:
        """The model-level joint rollout map (B, H, W) as ``explain(..., "joint_rollout")`` defines it: per query
        CLS, both grids' mass per pixel added; then the mean over the two CLS tokens."""
        if head_fusion not in self._joint:
            joint = joint_rollout(self.recorder, head_fusion)
            self._joint[head_fusion] = joint_rollout_pixels(self.model, joint).cpu()
        return self._joint[head_fusion]

    def current_map(self) -> np.ndarray:
        """The (H, W) pixel map the controls select."""
        c = self.controls
        i, method = c["image"].value, c["method"].value
        if method in ("rollout_small", "rollout_large"):
            branch = method.split("_")[1]
            maps = [m[i:i + 1] for m in self.self_maps[branch]]  # this image only: (1, heads, N, N) each
            patches = rollout_from_maps(maps, c["head_fusion"].value, c["discard_ratio"].value)  # (1, N)
            return patch_map_to_pixels(self.model, branch, patches)[0].numpy()
        if method == "joint_rollout":
            return self._joint_pixels(c["head_fusion"].value)[i].numpy()
        return self.grad_maps[i].numpy()

    def redraw(self) -> None:
        """Recompute the selected map from the recorded attention and redraw the picture."""
        c = self.controls
        i, method = c["image"].value, c["method"].value
        per_branch = method in ("rollout_small", "rollout_large")
        c["head_fusion"].disabled = method == "grad_rollout"
        c["discard_ratio"].disabled = not per_branch
        self.last_map = self.current_map()

        fig = Figure(figsize=(6.4, 3.4), layout="constrained")
        ax_image, ax_map = fig.subplots(1, 2)
        show_image(ax_image, self.images[i], "input")
        overlay_heatmap(ax_map, self.images[i], self.last_map, alpha=0.6, title=method)
        if per_branch:
            branch = method.split("_")[1]
            draw_patch_grid(ax_map, self.model, branch, color=GRID_COLORS[branch], linewidth=0.4, alpha=0.5)
        point = argmax_points(torch.as_tensor(self.last_map)[None])[0].tolist()  # (row, col) of the maximum
        ax_map.plot(point[1], point[0], marker="+", color="#00ff66", markersize=14, markeredgewidth=2.5)
        verdict = ""
        if self.masks is not None:
            for ax in (ax_image, ax_map):
                draw_mask_contour(ax, self.masks[i])
            verdict = " The maximum (+) is " + ("ON" if bool(self.masks[i][point[0], point[1]]) else "off") + \
                      " the object."
        self.picture.value = _render(fig)
        settings = []
        if not c["head_fusion"].disabled:
            settings.append(f"head fusion {c['head_fusion'].value}")
        if per_branch:
            settings.append(f"discard ratio {c['discard_ratio'].value:.2f}")
        if method == "grad_rollout":
            settings.append("gradients of the predicted class")
        predicted = _class_label(self.class_names, int(self.predictions[i]))
        self.caption.value = f"<b>image {i}</b> (predicted: {predicted}); {method}" + \
                             (f" ({', '.join(settings)})" if settings else "") + "." + verdict


def rollout_explorer(model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                     class_names: Sequence[str] | None = None, index: int = 0) -> RolloutExplorer:
    """A widget to compare rollout maps of ``model`` on ``images`` (B, 3, H, W): per-branch rollout (head fusion
    and discard ratio adjustable), the joint rollout through the fusion layers (head fusion adjustable), and the
    gradient rollout of each image's predicted class. ``masks`` (B, H, W) outline the objects and say whether the
    map's maximum lands on one. The model runs once (plus one backward for the gradient rollout), here.
    """
    return RolloutExplorer(model, images, masks=masks, class_names=class_names, index=index)


__all__ = ["AttentionExplorer", "RolloutExplorer", "attention_explorer", "rollout_explorer"]
