"""The rollout explorer: per-branch, joint and gradient rollouts of the recorded attention, with their settings."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from ..explain import REGISTRY, explain, joint_rollout_pixels, patch_map_to_pixels
from ..metrics import pointing_game
from ..model import CrossViT
from ..plotting import (
    GRID_COLORS,
    add_colorbar,
    draw_patch_grid,
    normalize_map,
    overlay_heatmap,
    show_image,
    to_hwc,
)
from ..rollout import HEAD_FUSIONS, joint_rollout, rollout_from_maps
from .base import (
    _STYLE,
    _BoundedCache,
    _class_label,
    _Explorer,
    _model_device,
    _new_figure,
    _render,
    _show_only,
)

TARGET_HINT = "only the class-specific methods (gradient_rollout, coattention_relevancy) use a target class"
DISCARD_HINT = "only the per-branch rollouts (small_rollout, large_rollout) discard entries"


class RolloutExplorer(_Explorer):
    """Controls + picture of one rollout map. Build it with :func:`rollout_explorer`.

    ``controls``: ``image``, ``method``, ``head_fusion``, ``discard_ratio``, ``start_block`` (the first
    multi-scale block whose attention enters the product; the last block by default, as ``explain``'s rollouts)
    and ``target`` (the class whose score the gradient rollout back-propagates: :data:`PREDICTED`, each image's
    predicted class, or a class index). After each redraw ``last_map`` is the (H, W) pixel map shown (before
    display scaling) and ``last_title`` its title (the method, and the target class for a class-specific one).
    A control that cannot change the picture says why: disabled ones in their tooltip, a discard ratio that leaves
    the map as it is in the caption.
    """

    METHODS: tuple[str, ...] = tuple(name for name, m in REGISTRY.items() if "start_block" in m.defaults)
    """The rollouts of the method registry (every method with a ``start_block`` option)."""
    PREDICTED = -1
    """Value of the ``target`` control that explains each image's predicted class."""
    GRADIENT_CACHE = 8
    """How many class-specific results (one per (method, target class, start block), each (B, H, W) float32) the
    explorer keeps; older ones are recomputed (one backward pass) when shown again."""

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
        self._grad = _BoundedCache(self.GRADIENT_CACHE)  # (method, class or PREDICTED, start) -> (B, H, W)
        last_block = model.arch.num_blocks - 1
        first = self.METHODS[0]
        self.grad_maps = self.gradient_maps(self.PREDICTED, self._default_start("gradient_rollout"))
        self._start_chosen = False  # set once the reader picks a start block; until then each method's default
        self.last_map: np.ndarray | None = None
        self.last_title = ""
        self.figure: Figure | None = None  # the picture's figure, drawn on the first redraw

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
        predicted class), as ``explain(..., "gradient_rollout", target=..., start_block=...)`` computes them."""
        return self.class_maps("gradient_rollout", target, start_block)

    def class_maps(self, method: str, target: int, start_block: int = 0) -> torch.Tensor:
        """The maps (B, H, W) of a class-specific rollout ``method`` (``gradient_rollout`` or
        ``coattention_relevancy``) for class ``target`` (:data:`PREDICTED`: each image's predicted class), as
        ``explain(..., method, target=..., start_block=...)`` computes them; one backward per (method, target,
        start block), the :data:`GRADIENT_CACHE` most recent kept for later."""
        if target != self.PREDICTED and not 0 <= target < self.model.num_classes:
            raise ValueError(f"target must be RolloutExplorer.PREDICTED or a class in [0, "
                             f"{self.model.num_classes}), got {target}")
        if method not in self.METHODS or not REGISTRY[method].class_specific:
            raise ValueError(f"method must be a class-specific rollout of {self.METHODS}, got {method!r}")

        def compute() -> torch.Tensor:
            images = self.images.to(_model_device(self.model))
            classes = self.predictions if target == self.PREDICTED else torch.full_like(self.predictions, target)
            return explain(self.model, images, method, target=classes.to(images.device),
                           start_block=start_block).cpu()

        return self._grad.get_or_compute((method, target, start_block), compute)

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
        return self.class_maps(method, c["target"].value, start)[i].numpy()

    def _discard_changes_nothing(self) -> bool:
        """Whether the per-branch map shown equals the same rollout without discarding (to display precision)."""
        c = self.controls
        i, branch, start = c["image"].value, REGISTRY[c["method"].value].branch, c["start_block"].value
        maps = [m[i:i + 1] for block, m in self.self_maps[branch] if block >= start]
        plain = patch_map_to_pixels(self.model, branch, rollout_from_maps(maps, c["head_fusion"].value, 0.0))[0]
        return bool(np.allclose(plain.numpy(), self.last_map, rtol=1e-4, atol=1e-7))

    def _build_picture(self) -> None:
        """Draw the picture's figure once: the input, the map over the input with its colour bar, each branch's
        patch grid and the marker of the maximum. A redraw changes their data, titles and visibility."""
        fig = _new_figure((6.4, 3.4))
        ax_image, ax_map = fig.subplots(1, 2)
        h, w = self.images.shape[-2:]
        image = show_image(ax_image, self.images[0], "input")
        heat = overlay_heatmap(ax_map, self.images[0], np.zeros((h, w)), alpha=0.6, title="two-line\ntitle")
        ax_map.title.set_fontsize(9)  # the layout leaves room for a two-line title (method, target class)
        add_colorbar(fig, ax_map, "min-max scaled\nper map", ticks=[0.0, 1.0], ticklabels=["min", "max"],
                     shrink=0.7)
        self._view = {
            "image": image, "map_image": ax_map.images[0], "heat": heat,
            "lines": {b: draw_patch_grid(ax_map, self.model, b, color=GRID_COLORS[b], linewidth=0.4, alpha=0.5)
                      for b in self.model.branch_names},
            "centre": ax_map.plot([0], [0], marker="+", color="#00ff66", markersize=14, markeredgewidth=2.5)[0],
            "contours": {},  # image index -> its mask outlines on both panels (_show_mask)
        }
        self.figure = fig

    def redraw(self) -> None:
        """Recompute the selected map from the recorded attention and redraw the picture."""
        c = self.controls
        i, method = c["image"].value, c["method"].value
        record = REGISTRY[method]
        per_branch = record.branch is not None
        c["head_fusion"].disabled = "head_fusion" not in record.defaults
        c["discard_ratio"].disabled = "discard_ratio" not in record.defaults
        c["target"].disabled = not record.class_specific
        c["target"].tooltip = "" if record.class_specific else TARGET_HINT
        c["discard_ratio"].tooltip = "" if per_branch else DISCARD_HINT
        self.last_map = self.current_map()
        target_label = None
        if record.class_specific:
            target = c["target"].value
            target_label = _class_label(self.class_names, int(self.predictions[i]) if target == self.PREDICTED
                                        else target)

        if self.figure is None:
            self._build_picture()
        v, (ax_image, ax_map) = self._view, self.figure.axes[:2]
        v["image"].set_data(to_hwc(self.images[i]))
        v["map_image"].set_data(to_hwc(self.images[i]))
        title = method if target_label is None else f"{method}\nfor class {target_label}"
        self.last_title = title
        v["heat"].set_data(normalize_map(self.last_map))  # min-max scaled, as overlay_heatmap draws it
        ax_map.set_title(title, fontsize=9)
        _show_only(v["lines"], record.branch)  # a per-branch rollout's grid; None (no grid) for the others
        heat = torch.as_tensor(self.last_map, dtype=torch.float64)
        top = heat.max()
        maximal = (heat >= top - 1e-6 * top.abs()).nonzero().double()  # the maximal pixels (a patch, or a part of one)
        centre = maximal.mean(dim=0).tolist()
        v["centre"].set_data([centre[1]], [centre[0]])
        verdict = ""
        if self.masks is not None:
            self._show_mask(i, (ax_image, ax_map))
            game = pointing_game(heat[None].float(), self.masks[i][None])  # the default ("majority") rule
            share = float(game.inside_share[0])
            verdict = (f" {share:.0%} of the maximal pixels (+ marks their centre) lie on the object: the pointing "
                       f"game counts a {'hit' if bool(game.hits[0]) else 'miss'}.")
        self.picture.value = _render(self.figure)
        settings = []
        if not c["head_fusion"].disabled:
            settings.append(f"head fusion {c['head_fusion'].value}")
        unchanged = ""
        if per_branch:
            settings.append(f"discard ratio {c['discard_ratio'].value:.2f}")
            if c["discard_ratio"].value > 0 and self._discard_changes_nothing():
                unchanged = (" The discard ratio leaves this map as it is: the entries it zeroes are too small to "
                             "move the rolled-out CLS row.")
        settings.append(f"from block {c['start_block'].value}")
        predicted = _class_label(self.class_names, int(self.predictions[i]))
        if record.class_specific:
            target = c["target"].value
            settings.append(f"gradients of the predicted class, {predicted}" if target == self.PREDICTED else
                            f"gradients of class {_class_label(self.class_names, target)}")
        self.caption.value = f"<b>image {i}</b> (predicted: {predicted}); {method}" + \
                             (f" ({', '.join(settings)})" if settings else "") + "." + verdict + unchanged


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
