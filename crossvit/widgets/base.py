"""What both explorers share: the anywidget whose JavaScript front end (``explorer.js``) draws and answers every
control in the browser, the packet of data it receives once, the Python-side view of its controls, one recorded
forward, and writing a standalone HTML file.

Python computes and records; the browser draws. An explorer packs everything its front end needs into one packet
(:meth:`_Explorer.packet`): the images and masks as uint8, every recorded attention map as float16 (zlib-compressed
bytes; the front end inflates them), the geometry of each branch's patch grid over the input pixels, the colour
maps' lookup tables, class names and predictions. The front end then answers every control from the packet, so it
works in JupyterLab, in a notebook page saved with its widget state, and in a standalone HTML file alike, with or
without a kernel.

The same rules live on both sides: the Python classes compute every view (map, caption, titles) with the library's
own functions, and the front end computes it in JavaScript; ``tests/test_explorer_js.py`` runs the JavaScript under
``node`` on the same packets and holds both equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets

from ..classes import class_names as model_class_names
from ..explain import patch_map_to_pixels
from ..model import CrossViT, check_crossvit, check_images
from ..plotting import GRID_COLORS, HEAT_CMAP, MASK_COLOR, SIGNED_CMAP, grid_edges
from ..preprocessing import display_images
from ..recording import (
    AttentionRecorder,
    attention_sites,
    leaves_recordings_alone,
    record_attention,
    release_attention_memory,
)
from ..utils import check_finite_images, check_int, eval_mode, other_branch
from .packet import encode_array, packet_bytes

HERE = Path(__file__).resolve().parent
ESM = HERE / "explorer.js"
"""The explorers' front end: one ES module (anywidget's ``_esm``), shipped in the package."""
CSS = HERE / "explorer.css"
QUERY_COLOR = "#00ff66"  # outline of the query patch, and the + of a map's maximum
PACKET_VERSION = 1
MAP_DTYPES = ("float16", "float32")
"""How the recorded attention maps travel to the front end: float16 by default (half the bytes, about 3 significant
digits, which the picture and the captions' three decimals allow), float32 for the tests that hold the JavaScript
equal to the Python definitions on the very same maps."""


# ----------------------------------------------------------------------------------------------------------------
# the packet


def colormap_table(name: str) -> list[str]:
    """Matplotlib colour map ``name`` as 256 ``#rrggbb`` colours, the lookup table the front end paints with."""
    from matplotlib import colormaps

    rgba = colormaps[name].resampled(256)(np.arange(256), bytes=True)  # (256, 4) uint8: the table's entries
    return ["#" + "".join(f"{c:02x}" for c in colour[:3]) for colour in rgba]


def grid_geometry(model: CrossViT) -> dict[str, Any]:
    """Each branch's patch grid over the input image: its size, the edges of its cells in input pixels
    (:func:`crossvit.plotting.grid_edges`), which patch covers each input pixel (-1: none, outside a centre crop)
    and how many input pixels a patch covers, all read from :func:`crossvit.patch_map_to_pixels` so that the front
    end spreads a patch map over the pixels exactly as the library does."""
    out = {}
    for branch in model.branch_names:
        rows, cols = model.patch_grid(branch)
        index = torch.arange(1, rows * cols + 1, dtype=torch.float64)[None]  # patch k + 1, so that 0 means none
        cells = patch_map_to_pixels(model, branch, index)[0].round().long() - 1  # (H, W): patch index, -1 outside
        size, side = model.image_size, model.branch_image_size(branch)
        covered = (side / rows) * (side / cols) if model.arch.resize == "crop" and side < size else \
            (size / rows) * (size / cols)
        out[branch] = {"grid": [rows, cols], "edges": [float(e) for e in grid_edges(model, branch)],
                       "cells": encode_array(cells.to(torch.int16), "int16"), "covered": float(covered)}
    return out


# ----------------------------------------------------------------------------------------------------------------
# controls, as Python sees them


class Control:
    """One control of an explorer, seen from Python: ``value`` reads and sets the widget's state (the front end
    follows), and ``options`` / ``min`` / ``max`` / ``disabled`` / ``tooltip`` say what the control offers in the
    current state, as the front end shows it (both compute it by the same rules)."""

    def __init__(self, owner: _Explorer, name: str) -> None:
        self._owner, self.name = owner, name

    @property
    def spec(self) -> dict[str, Any]:
        return self._owner.control_specs()[self.name]

    @property
    def value(self) -> Any:
        return getattr(self._owner, self.name)

    @value.setter
    def value(self, value: Any) -> None:
        self._owner.set_control(self.name, value)

    @property
    def description(self) -> str:
        return self.spec["description"]

    @property
    def options(self) -> list[tuple[str, Any]]:
        return [tuple(option) for option in self.spec.get("options", [])]

    @property
    def min(self) -> float:
        return self.spec["min"]

    @property
    def max(self) -> float:
        return self.spec["max"]

    @property
    def step(self) -> float:
        return self.spec.get("step", 1)

    @property
    def disabled(self) -> bool:
        return self.spec["disabled"]

    @property
    def tooltip(self) -> str:
        return self.spec["tooltip"]

    def __repr__(self) -> str:
        return f"Control({self.name!r}, value={self.value!r})"


def slider(description: str, low: float, high: float, *, step: float = 1, disabled: bool = False,
           tooltip: str = "") -> dict[str, Any]:
    """The spec of a slider control (what :class:`Control` and the front end read)."""
    return {"type": "slider", "description": description, "min": low, "max": high, "step": step,
            "disabled": disabled, "tooltip": tooltip}


def menu(description: str, options: Sequence[tuple[str, Any]], *, buttons: bool = False, disabled: bool = False,
         tooltip: str = "") -> dict[str, Any]:
    """The spec of a drop-down menu (or, ``buttons``, a row of toggle buttons)."""
    return {"type": "buttons" if buttons else "menu", "description": description,
            "options": [[label, value] for label, value in options], "disabled": disabled, "tooltip": tooltip}


# ----------------------------------------------------------------------------------------------------------------
# the widget both explorers are


@leaves_recordings_alone  # built inside a caller's recording, an explorer leaves its maps as they were
def _record(model: CrossViT, images: torch.Tensor) -> tuple[AttentionRecorder, torch.Tensor]:
    """One recorded forward of ``images`` in eval mode: the recorder and the logits, both on the CPU (an explorer
    holds no memory of the model's device). The model keeps no attention memory afterwards."""
    with eval_mode(model), record_attention(model) as rec, torch.no_grad():
        logits = model(images.to(model_device(model)))
    release_attention_memory(model)
    return rec.to("cpu"), logits.cpu()


def model_device(model: CrossViT) -> torch.device:
    return next(model.parameters()).device


def class_label(class_names: Sequence[str] | None, k: int) -> str:
    return class_names[k] if class_names is not None and k < len(class_names) else f"class {k}"


def image_label(image_names: Sequence[str] | None, i: int) -> str:
    """How a caption names image ``i``: ``image 2``, or ``image 2: cat.jpg`` when the images have names (as
    explorer.js's ``imageLabel``; HTML-escaped where it is shown)."""
    return f"image {i}" if image_names is None else f"image {i}: {image_names[i]}"


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


class _Explorer(anywidget.AnyWidget):
    """What both explorers share: the front end, the packet trait, the inputs kept on the CPU, one recorded
    forward, the controls seen from Python, and :meth:`save_html`."""

    # The front end's text, not its path: anywidget watches a path for hot reloading, and each widget's listener on
    # the class-level watcher would keep every explorer alive for as long as the process runs, closed or not.
    _esm = ESM.read_text(encoding="utf-8")
    _css = CSS.read_text(encoding="utf-8")
    _data = traitlets.Dict().tag(sync=True)  # the packet, sent once (binary values travel as buffers)
    image = traitlets.Int(0).tag(sync=True)

    MAX_IMAGES = 32
    """The most images an explorer takes (``max_images=`` raises it): it keeps every attention map of every image,
    :func:`attention_bytes_per_image` bytes each (about 0.5 MB for the bundled model, 26 MB for crossvit_15_240),
    and sends them to the front end as float16 (about 0.14 MB per image for the bundled model once compressed)."""
    CONTROLS: tuple[str, ...] = ()
    KIND = ""  # "attention" or "rollout": which front end the packet asks for

    # -- inputs ---------------------------------------------------------------------------------------------
    def _take_inputs(self, model: CrossViT, images: torch.Tensor, masks: torch.Tensor | None,
                     class_names: Sequence[str] | None, max_images: int | None = None,
                     image_names: Sequence[str] | None = None) -> AttentionRecorder:
        """Check and store the inputs and the predicted classes; return the recorder of the forward."""
        check_crossvit(model, "an explorer")
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise TypeError(f"images must be a (B, 3, H, W) torch.Tensor, got "
                            f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        check_images(images, model)
        check_finite_images(images)  # else every recorded map is NaN
        limit = self.MAX_IMAGES if max_images is None else check_int("max_images", max_images, 1)
        if images.shape[0] > limit:
            per_image = attention_bytes_per_image(model)
            raise ValueError(
                f"the explorer keeps every attention map of every image ({per_image / 2**20:.1f} MB per image for "
                f"this model), so it takes at most {limit} images; got {images.shape[0]}. Pass fewer images, or "
                f"max_images={images.shape[0]} to take them all ({images.shape[0] * per_image / 2**20:.0f} MB)")
        if masks is not None:  # checked now, not when the first bad mask is shown
            if not isinstance(masks, torch.Tensor):
                raise TypeError(f"masks must be a (B, H, W) torch.Tensor, got {type(masks).__name__}")
            expected = (images.shape[0], *images.shape[-2:])
            if tuple(masks.shape) != expected:
                raise ValueError(f"masks must be (B, H, W) = {expected} to match the images "
                                 f"{tuple(images.shape)}, got {tuple(masks.shape)}")
        if class_names is not None and (isinstance(class_names, str) or len(class_names) < model.num_classes):
            raise ValueError(f"class_names must name every one of the model's {model.num_classes} classes")
        if image_names is not None and (isinstance(image_names, str) or len(image_names) != images.shape[0]):
            raise ValueError(f"image_names must name each of the {images.shape[0]} images, one name each")
        self.model = model
        self.images = images.detach().cpu()
        self.masks = None if masks is None else masks.detach().cpu().bool()
        # the names the model carries (its checkpoint's, ImageNet's; else 'class k') unless the caller gives some
        self.class_names = model_class_names(model) if class_names is None else [str(name) for name in class_names]
        self.image_names = None if image_names is None else [str(name) for name in image_names]
        rec, logits = _record(model, images)
        self.logits = logits
        self.predictions = logits.argmax(dim=1)
        return rec

    def _check_index(self, index: int) -> int:
        n = self.images.shape[0]
        return check_int("index", index, 0, n - 1)

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    # -- the packet -----------------------------------------------------------------------------------------
    def _common_packet(self) -> dict[str, Any]:
        """What both front ends need: images, masks, grids, classes and the colours they draw with."""
        model = self.model
        shown = display_images(model, self.images)  # (B, 3, H, W) in [0, 1]
        pixels = (shown.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # (B, H, W, 3)
        return {
            "version": PACKET_VERSION,
            "kind": self.KIND,
            "num_images": self.num_images,
            "image_size": [int(self.images.shape[-2]), int(self.images.shape[-1])],
            "images": encode_array(pixels, "uint8"),
            "masks": None if self.masks is None else encode_array(self.masks.to(torch.uint8), "uint8"),
            "branches": list(model.branch_names),
            "geometry": grid_geometry(model),
            "num_blocks": model.arch.num_blocks,
            "num_classes": model.num_classes,
            "class_names": [class_label(self.class_names, k) for k in range(model.num_classes)],
            "predictions": [int(k) for k in self.predictions],
            "image_names": self.image_names,
            "colors": {"heat": colormap_table(HEAT_CMAP), "signed": colormap_table(SIGNED_CMAP),
                       "grid": dict(GRID_COLORS), "mask": MASK_COLOR, "query": QUERY_COLOR},
        }

    def _encode_sites(self, maps: Mapping[str, torch.Tensor], dtype: str) -> list[dict[str, Any]]:
        """Every recorded site in forward order: its place and its map (B, heads, Nq, Nk) as ``dtype``."""
        if dtype not in MAP_DTYPES:
            raise ValueError(f"dtype must be one of {MAP_DTYPES}, got {dtype!r}")
        return [{"name": s.name, "block": s.block, "branch": s.branch, "kind": s.kind, "index": s.index,
                 "map": encode_array(maps[s.name].float(), dtype)}
                for s in attention_sites(self.model) if s.name in maps]

    def packet(self, dtype: str = "float16") -> dict[str, Any]:
        """Everything the front end needs, as it is sent (``dtype``: of the attention maps, see
        :data:`MAP_DTYPES`)."""
        raise NotImplementedError

    # -- controls -------------------------------------------------------------------------------------------
    @property
    def controls(self) -> dict[str, Control]:
        """Each control by name (:class:`Control`): ``explorer.controls["image"].value = 2``."""
        return {name: Control(self, name) for name in self.CONTROLS}

    def control_specs(self) -> dict[str, dict[str, Any]]:
        """What each control offers in the current state (options, range, disabled and why)."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The controls' values (and what else the front end keeps in the widget's state), as a dict."""
        return {name: getattr(self, name) for name in self.state_keys()}

    def state_keys(self) -> tuple[str, ...]:
        return self.CONTROLS

    def set_control(self, name: str, value: Any) -> None:
        """Set control ``name`` as a reader would (the others follow, as in the front end)."""
        if name not in self.CONTROLS:
            raise ValueError(f"no control {name!r}; the controls are {', '.join(self.CONTROLS)}")
        setattr(self, name, value)

    def view(self) -> dict[str, Any]:
        """What the picture and caption show in the current state, computed in Python (the front end computes the
        same in the browser)."""
        raise NotImplementedError

    @property
    def caption(self) -> str:
        """The caption under the controls in the current state (HTML)."""
        return self.view()["caption"]

    # -- memory and files -----------------------------------------------------------------------------------
    def _held_tensors(self) -> list[torch.Tensor]:
        return [self.images] + ([] if self.masks is None else [self.masks])

    @property
    def memory_bytes(self) -> int:
        """Bytes the explorer holds: its images, masks, recorded maps, cached results and the packet it sent."""
        seen: set[int] = set()
        total = 0
        for t in self._held_tensors():
            if t is not None and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.untyped_storage().nbytes()
        return total + packet_bytes(self._data)

    def save_html(self, path: str | Path, *, overwrite: bool = False, title: str | None = None) -> Path:
        """Write this explorer as one self-contained HTML file (its data and code inline; it needs no network and
        no kernel). An existing file is refused unless ``overwrite=True``. Returns the path written.

        Like every ipywidget, an explorer stays in memory until it is closed: a script that writes many pages calls
        ``explorer.close()`` after each (``crossvit explain --html`` does)."""
        from .html import write_html

        return write_html(path, [self], overwrite=overwrite, title=title)

    def close(self) -> None:
        """Close the widget and its layout (ipywidgets keeps both, and so every map the explorer holds, until
        then)."""
        layout = self.layout
        super().close()
        layout.close()

    def __enter__(self) -> _Explorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
