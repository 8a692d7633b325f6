"""What both explorers share: a picture drawn once and updated in place, rendered to PNG bytes; one recorded
forward, a bounded cache, the memory an explorer holds, and the image slider."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..model import CrossViT
from ..plotting import draw_mask_contour
from ..recording import AttentionRecorder, attention_sites, record_attention, release_attention_memory
from ..utils import check_int, eval_mode, other_branch

_DPI = 90
QUERY_COLOR = "#00ff66"  # outline of the query patch
_STYLE = {"description_width": "90px"}


def _new_figure(size: tuple[float, float]) -> Figure:
    """An explorer's picture: a figure at :data:`_DPI` on its own Agg canvas (no pyplot state), laid out by the
    constrained layout engine on its first render (:func:`_render`) and fixed from then on."""
    fig = Figure(figsize=size, dpi=_DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _render(fig: Figure) -> bytes:
    """PNG bytes of ``fig``, the whole figure (no tight crop), so that a pixel of the PNG maps back onto the
    figure's own layout. The first render runs the figure's layout engine, then the layout is kept: an explorer
    changes the data, titles and visibility of the artists it drew once, which is what makes a redraw cheap (a
    new layout per control change cost more than the drawing itself)."""
    fig.canvas.draw()
    if fig.get_layout_engine() is not None:
        fig.set_layout_engine("none")  # the axes keep the positions the layout gave them
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="png", compress_level=1)  # fast; about 1.5x zlib's default size
    return buffer.getvalue()


def _show_only(groups: Mapping[Hashable, Sequence[Artist]], key: Hashable | None) -> None:
    """Make the artists of ``groups[key]`` visible and those of every other group invisible (``key`` None or
    absent: none shown)."""
    for k, artists in groups.items():
        for artist in artists:
            artist.set_visible(k == key)


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
    total = 0
    for site in attention_sites(model):
        spec = model.arch.branch(site.branch)
        n = 1 + model.num_patches(site.branch)
        if site.kind == "self":
            total += spec.heads * n * n
        else:
            total += spec.cross_heads * (1 + model.num_patches(other_branch(site.branch)))
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

    def _show_mask(self, i: int, axes: Sequence[Axes]) -> None:
        """Outline image ``i``'s mask (when there are masks) on ``axes`` of the picture, and no other image's: each
        image's outlines are drawn the first time it is shown (into ``self._view["contours"]``), then only shown
        or hidden."""
        if self.masks is None:
            return
        outlines = self._view["contours"]
        if i not in outlines:
            outlines[i] = [draw_mask_contour(ax, self.masks[i]) for ax in axes]
        _show_only(outlines, i)

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
