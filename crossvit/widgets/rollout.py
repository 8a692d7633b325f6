"""The rollout explorer: per-branch, joint and class-specific rollouts (every rollout of the method registry), with
their settings."""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
import traitlets

from ..explain import REGISTRY, Method, explain, joint_rollout_pixels, patch_map_to_pixels
from ..metrics import pointing_game
from ..model import CrossViT
from ..plotting import SIGNED_CLIP_PERCENTILE, signed_scale
from ..rollout import HEAD_FUSIONS, joint_rollout, rollout_from_maps
from ..utils import check_bool, check_int, progress_bar
from .base import _Explorer, class_label, image_label, menu, model_device, slider
from .packet import encode_array

PREDICTED = -1
"""Value of the ``target`` control that explains each image's predicted class."""
DISCARD_STEP = 0.05
DISCARD_MAX = 0.95


def explorer_methods() -> tuple[str, ...]:
    """The methods the rollout explorer offers, read from the registry now (a method registered later appears):
    every class-agnostic method with a ``start_block`` option (the rollouts), and every class-specific method that
    reads the model's attention or relevance (not the captum methods, which explain pixels directly)."""
    return tuple(name for name, m in REGISTRY.items()
                 if ("start_block" in m.defaults and not m.class_specific)
                 or (m.class_specific and not m.needs_captum))


def front_end_rule(record: Method) -> str:
    """How the front end gets a method's maps: ``"branch"`` (it computes the per-branch rollout of the recorded
    self-attention), ``"joint"`` (the joint rollout), or ``"stored"`` (maps computed here, in Python: every
    class-specific method, and any other rollout the front end does not define)."""
    if record.class_specific:
        return "stored"
    if record.branch is not None and set(record.defaults) <= {"start_block", "head_fusion", "discard_ratio"}:
        return "branch"
    if record.name == "joint_rollout":
        return "joint"
    return "stored"


def map_key(method: str, target: int | None, start: int | None) -> str:
    """Key of a stored map set: method, class (``predicted`` for each image's prediction, ``any`` for a
    class-agnostic method) and start block (``-`` for a method without one)."""
    t = "any" if target is None else ("predicted" if target == PREDICTED else str(int(target)))
    return f"{method}|{t}|{'-' if start is None else int(start)}"


class _RegistryView:
    """:data:`RolloutExplorer.METHODS`: :func:`explorer_methods`, read when asked (a method registered later
    appears)."""

    def __get__(self, obj: object, owner: type) -> tuple[str, ...]:
        return explorer_methods()


class _LRU(OrderedDict):
    """A dict that keeps only its ``size`` most recently used entries."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or_compute(self, key: Hashable, compute) -> Any:  # noqa: ANN001
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = compute()
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class RolloutExplorer(_Explorer):
    """Controls + picture of one rollout map. Build it with :func:`rollout_explorer`.

    ``controls``: ``image``, ``method`` (:func:`explorer_methods`), ``head_fusion``, ``discard_ratio``,
    ``start_block`` (the first multi-scale block whose attention enters the product; each method starts where
    ``explain`` starts it until the reader picks a block) and ``target`` (the class a class-specific method
    explains: :data:`PREDICTED`, each image's predicted class, or a class index).

    The front end computes the per-branch and joint rollouts itself from the recorded maps. Class-specific maps
    need a backward pass, so they are computed here when the explorer is built, for every start block and for
    every class when the model has at most :data:`ALL_CLASSES_UP_TO` classes (else for each image's predicted class
    and the :data:`OTHER_CLASSES` most probable others; ``classes=`` chooses them), and any other one on demand
    while a kernel runs (the :data:`EXTRA_CACHE` most recent are kept). :meth:`view` says what the picture shows:
    ``last_map`` is the (H, W) pixel map shown (before display scaling) and ``last_title`` its title. A control
    that cannot change the picture says why: disabled ones in their tooltip, a discard ratio that leaves the map as
    it is in the caption.
    """

    KIND = "rollout"
    CONTROLS = ("image", "method", "head_fusion", "discard_ratio", "start_block", "target")
    METHODS = _RegistryView()
    """The methods an explorer built now offers (:func:`explorer_methods`); ``explorer.methods`` are those of
    its own menu, read from the registry when it was built."""
    PREDICTED = PREDICTED
    ALL_CLASSES_UP_TO = 10
    OTHER_CLASSES = 3
    EXTRA_CACHE = 8
    PRECOMPUTE_BATCH = 64
    """Images per ``explain`` call when the class-specific maps are computed (the images of several classes are
    explained in one call)."""
    method = traitlets.Unicode().tag(sync=True)
    head_fusion = traitlets.Unicode("mean").tag(sync=True)
    discard_ratio = traitlets.Float(0.0).tag(sync=True)
    start_block = traitlets.Int(0).tag(sync=True)
    target = traitlets.Int(PREDICTED).tag(sync=True)
    start_chosen = traitlets.Bool(False).tag(sync=True)  # the reader picked a start block: methods keep it
    _extra = traitlets.Dict().tag(sync=True)  # class-specific maps computed on demand: key -> encoded (B, H, W)

    def __init__(self, model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, index: int = 0, max_images: int | None = None,
                 classes: Sequence[int] | None = None, progress: bool = False,
                 image_names: Sequence[str] | None = None) -> None:
        self.recorder = self._take_inputs(model, images, masks, class_names, max_images, image_names)
        self.progress = check_bool("progress", progress)
        self.methods = explorer_methods()
        if not self.methods:
            raise ValueError("the method registry holds no rollout to explore")
        maps = self.recorder.sites
        # per branch, (block, map) of every self-attention layer in forward order
        self.self_maps = {b: [(s.block, maps[s.name]) for s in self.recorder.recorded_sites
                              if s.branch == b and s.kind == "self"] for b in model.branch_names}
        self._joint = _LRU(len(HEAD_FUSIONS) * model.arch.num_blocks)  # (fusion, start) -> (B, H, W)
        self._extras = _LRU(self.EXTRA_CACHE)  # key -> (B, H, W) computed on demand
        self.precomputed_classes = self._choose_classes(classes)
        self.stored: dict[str, torch.Tensor] = self._precompute()
        first = self.methods[0]
        super().__init__(image=self._check_index(index), method=first, start_block=self._default_start(first),
                         _data=self.packet())

    # -- which classes, which maps --------------------------------------------------------------------------
    def _choose_classes(self, classes: Sequence[int] | None) -> list[int]:
        n = self.model.num_classes
        if classes is not None:
            if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, torch.Tensor, np.ndarray)):
                raise TypeError(f"classes must be a sequence of class indices (e.g. [{classes!r:.20}] for one), got "
                                f"{type(classes).__name__}")
            chosen = [check_int("classes", k, 0, n - 1) for k in classes]
            return sorted(set(chosen))
        if n <= self.ALL_CLASSES_UP_TO:
            return list(range(n))
        probability = self.logits.softmax(dim=1).mean(dim=0)  # the most probable classes over the images
        return sorted(probability.topk(min(self.OTHER_CLASSES, n)).indices.tolist())

    def _starts(self, record: Method) -> list[int | None]:
        return list(range(self.model.arch.num_blocks)) if "start_block" in record.defaults else [None]

    def _all_classes(self) -> bool:
        return len(self.precomputed_classes) == self.model.num_classes

    def _explain(self, method: str, targets: Sequence[int], start: int | None) -> list[torch.Tensor]:
        """``explain`` of every image for each class of ``targets`` (:data:`PREDICTED`: each image's prediction),
        several classes per call: one (B, H, W) map set per target."""
        b = self.num_images
        per_call = max(1, self.PRECOMPUTE_BATCH // b)
        options = {} if start is None else {"start_block": start}
        device = model_device(self.model)
        out = []
        for first in range(0, len(targets), per_call):
            chunk = targets[first:first + per_call]
            classes = torch.cat([self.predictions if t == PREDICTED else torch.full((b,), t) for t in chunk])
            images = self.images.repeat(len(chunk), 1, 1, 1).to(device)  # (len(chunk) * B, 3, H, W)
            maps = explain(self.model, images, method, target=classes.to(device), **options).cpu()
            out += list(maps.reshape(len(chunk), b, *maps.shape[1:]))
        return out

    def _precompute(self) -> dict[str, torch.Tensor]:
        """The maps the front end cannot compute: every start block of every class-specific method for the chosen
        classes (and each image's predicted class when not every class is chosen), and the class-agnostic methods
        it has no definition of."""
        jobs = []
        for name in self.methods:
            record = REGISTRY[name]
            if front_end_rule(record) != "stored":
                continue
            if record.class_specific:
                targets = list(self.precomputed_classes) + ([] if self._all_classes() else [PREDICTED])
            else:
                targets = [None]
            jobs += [(name, targets, start) for start in self._starts(record)]
        stored: dict[str, torch.Tensor] = {}
        for name, targets, start in progress_bar(jobs, desc="class-specific maps", unit="map set",
                                                 progress=bool(jobs and self.progress)):
            if targets == [None]:
                maps = explain(self.model, self.images.to(model_device(self.model)), name,
                               **({} if start is None else {"start_block": start})).cpu()
                stored[map_key(name, None, start)] = maps
                continue
            for target, maps in zip(targets, self._explain(name, targets, start)):
                stored[map_key(name, target, start)] = maps
        return stored

    def packet(self, dtype: str = "float16") -> dict[str, Any]:
        methods = []
        for name in self.methods:
            record = REGISTRY[name]
            methods.append({"name": name, "summary": record.summary, "class_specific": record.class_specific,
                            "signed": record.signed, "branch": record.branch, "options": list(record.defaults),
                            "default_start": self._default_start(name), "rule": front_end_rule(record)})
        return {**self._common_packet(), "sites": self._encode_sites(self.recorder.sites, dtype),
                "methods": methods, "precomputed_classes": self.precomputed_classes,
                "maps": {key: encode_array(maps, "float32") for key, maps in self.stored.items()},
                "discard": {"step": DISCARD_STEP, "max": DISCARD_MAX},
                "signed_percentile": SIGNED_CLIP_PERCENTILE}

    # -- controls -------------------------------------------------------------------------------------------
    def _default_start(self, method: str) -> int:
        """The method's default start block (its registry record's, as ``explain`` uses), as a block index (0
        for a method without one)."""
        start = REGISTRY[method].defaults.get("start_block", 0)
        return int(start) % self.model.arch.num_blocks

    def control_specs(self) -> dict[str, dict[str, Any]]:
        record = REGISTRY[self.method]
        specific = [m for m in self.methods if REGISTRY[m].class_specific]
        discarding = [m for m in self.methods if "discard_ratio" in REGISTRY[m].defaults]
        fusing = [m for m in self.methods if "head_fusion" in REGISTRY[m].defaults]
        starting = [m for m in self.methods if "start_block" in REGISTRY[m].defaults]
        classes = [(f"{k}: {class_label(self.class_names, k)}", k) for k in range(self.model.num_classes)]
        return {
            "image": slider("image", 0, self.num_images - 1),
            "method": menu("method", [(m, m) for m in self.methods]),
            "head_fusion": menu("head fusion", [(f, f) for f in HEAD_FUSIONS],
                                disabled="head_fusion" not in record.defaults,
                                tooltip="" if "head_fusion" in record.defaults else
                                f"only {', '.join(fusing)} fuse heads"),
            "discard_ratio": slider("discard ratio", 0.0, DISCARD_MAX, step=DISCARD_STEP,
                                    disabled="discard_ratio" not in record.defaults,
                                    tooltip="" if "discard_ratio" in record.defaults else
                                    f"only the per-branch rollouts ({', '.join(discarding)}) discard entries"),
            "start_block": menu("start block", [(f"block {k}", k) for k in range(self.model.arch.num_blocks)],
                                disabled="start_block" not in record.defaults,
                                tooltip="" if "start_block" in record.defaults else
                                f"{self.method} has no start block (only {', '.join(starting)} do)"),
            "target": menu("target class", [("predicted class", PREDICTED), *classes],
                           disabled=not record.class_specific,
                           tooltip="" if record.class_specific else
                           f"only the class-specific methods ({', '.join(specific)}) use a target class"),
        }

    def state_keys(self) -> tuple[str, ...]:
        return (*self.CONTROLS, "start_chosen")

    def set_control(self, name: str, value: Any) -> None:
        spec = self.control_specs().get(name)
        if spec is None:
            raise ValueError(f"no control {name!r}; the controls are {', '.join(self.CONTROLS)}")
        if name == "discard_ratio":
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
                    not 0.0 <= value <= DISCARD_MAX:
                raise ValueError(f"discard_ratio must be a number in [0, {DISCARD_MAX}], got {value!r}")
            value = float(value)
        elif spec["type"] == "slider":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
                    not spec["min"] <= value <= spec["max"]:
                raise ValueError(f"{name} must be an int in [{spec['min']}, {spec['max']}], got {value!r}")
            value = int(value)
        elif isinstance(value, bool) or value not in [v for _, v in spec["options"]]:
            raise ValueError(f"{name} must be one of {[v for _, v in spec['options']]}, got {value!r}")
        with self.hold_sync():
            if name == "start_block":
                self.start_chosen = True
            elif name == "method" and not self.start_chosen:  # each method starts where explain starts it
                self.start_block = self._default_start(value)
            setattr(self, name, value)

    @traitlets.observe("method", "target", "start_block")
    def _fetch_class_maps(self, change: dict) -> None:
        """A class-specific map the front end does not have yet is computed now (a kernel is running: this is
        Python) and sent to it."""
        if REGISTRY[self.method].class_specific:
            self.class_maps(self.method, self.target, self.start_block)

    # -- the maps -------------------------------------------------------------------------------------------
    def _key(self, method: str, target: int, start: int) -> str:
        record = REGISTRY[method]
        return map_key(method, target if record.class_specific else None,
                       start if "start_block" in record.defaults else None)

    def class_maps(self, method: str, target: int, start_block: int = 0) -> torch.Tensor:
        """The maps (B, H, W) of a class-specific ``method`` for class ``target`` (:data:`PREDICTED`: each image's
        predicted class) from ``start_block`` (for a method with that option), as ``explain(..., method,
        target=..., start_block=...)`` computes them: precomputed, or computed now (one ``explain`` call) and sent
        to the front end; the :data:`EXTRA_CACHE` most recent of those are kept."""
        if target != PREDICTED and not (isinstance(target, int) and 0 <= target < self.model.num_classes):
            raise ValueError(f"target must be RolloutExplorer.PREDICTED or a class in [0, "
                             f"{self.model.num_classes}), got {target}")
        if method not in self.methods or not REGISTRY[method].class_specific:
            specific = [m for m in self.methods if REGISTRY[m].class_specific]
            raise ValueError(f"method must be a class-specific rollout of {specific}, got {method!r}")
        key = self._key(method, target, start_block)
        if key in self.stored:
            return self.stored[key]
        if target == PREDICTED and self._all_classes():  # each image's map for its predicted class
            per_class = {k: self.class_maps(method, k, start_block) for k in set(self.predictions.tolist())}
            return torch.stack([per_class[int(k)][i] for i, k in enumerate(self.predictions)])
        start = start_block if "start_block" in REGISTRY[method].defaults else None
        computed = key not in self._extras
        maps = self._extras.get_or_compute(key, lambda: self._explain(method, [target], start)[0])
        if computed:  # to the front end, with the others it still has
            self._extra = {k: encode_array(v, "float32") for k, v in self._extras.items()}
        return maps

    def gradient_maps(self, target: int, start_block: int = 0) -> torch.Tensor:
        """Gradient rollout maps (B, H, W) for class ``target`` (see :meth:`class_maps`)."""
        return self.class_maps("gradient_rollout", target, start_block)

    @property
    def grad_maps(self) -> torch.Tensor:
        """The gradient rollout of each image's predicted class from its default start block."""
        return self.gradient_maps(PREDICTED, self._default_start("gradient_rollout"))

    def _joint_pixels(self, head_fusion: str, start_block: int) -> torch.Tensor:
        """The model-level joint rollout map (B, H, W) as ``explain(..., "joint_rollout")`` defines it."""
        return self._joint.get_or_compute(
            (head_fusion, start_block),
            lambda: joint_rollout_pixels(self.model, joint_rollout(self.recorder, head_fusion,
                                                                   start_block=start_block)).cpu())

    def _branch_pixels(self, branch: str, i: int, head_fusion: str, discard_ratio: float, start: int) -> np.ndarray:
        maps = [m[i:i + 1] for block, m in self.self_maps[branch] if block >= start]  # (1, heads, N, N) each
        patches = rollout_from_maps(maps, head_fusion, discard_ratio)  # (1, N)
        return patch_map_to_pixels(self.model, branch, patches)[0].numpy()

    def current_map(self) -> np.ndarray:
        """The (H, W) pixel map the controls select, computed with the library's functions."""
        i, method, start = self.image, self.method, self.start_block
        record = REGISTRY[method]
        rule = front_end_rule(record)
        if rule == "branch":
            return self._branch_pixels(record.branch, i, self.head_fusion, self.discard_ratio, start)
        if rule == "joint":
            return self._joint_pixels(self.head_fusion, start)[i].numpy()
        if record.class_specific:
            return self.class_maps(method, self.target, start)[i].numpy()
        return self.stored[self._key(method, PREDICTED, start)][i].numpy()

    # -- what the picture shows -----------------------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        """The picture and caption of the current state: ``map`` (H, W), ``signed`` and ``limit`` (a signed map is
        drawn over [-limit, limit]), the titles, the patch grid drawn (a per-branch rollout's), ``centre`` (of the
        maximal pixels, (row, col)), and the caption (HTML)."""
        i, method = self.image, self.method
        record = REGISTRY[method]
        heat = self.current_map()
        signed = record.signed or bool((heat < 0).any())
        target_label = None
        if record.class_specific:
            k = int(self.predictions[i]) if self.target == PREDICTED else self.target
            target_label = class_label(self.class_names, k)
        title = method if target_label is None else f"{method}\nfor class {target_label}"
        values = torch.as_tensor(heat, dtype=torch.float64)
        top = values.max()
        maximal = (values >= top - 1e-6 * top.abs()).nonzero().double()  # as the pointing game finds them
        centre = maximal.mean(dim=0).tolist()
        verdict = ""
        if self.masks is not None:
            game = pointing_game(values[None].float(), self.masks[i][None])  # the default ("majority") rule
            share = float(game.inside_share[0])
            verdict = (f" {share:.0%} of the maximal pixels (+ marks their centre) lie on the object: the pointing "
                       f"game counts a {'hit' if bool(game.hits[0]) else 'miss'}.")
        settings = []
        if "head_fusion" in record.defaults:
            settings.append(f"head fusion {self.head_fusion}")
        unchanged = ""
        if "discard_ratio" in record.defaults:
            settings.append(f"discard ratio {self.discard_ratio:.2f}")
            if self.discard_ratio > 0 and front_end_rule(record) == "branch":
                plain = self._branch_pixels(record.branch, i, self.head_fusion, 0.0, self.start_block)
                if np.allclose(plain, heat, rtol=1e-4, atol=1e-7):
                    unchanged = (" The discard ratio leaves this map as it is: the entries it zeroes are too small "
                                 "to move the rolled-out CLS row.")
        if "start_block" in record.defaults:
            settings.append(f"from block {self.start_block}")
        predicted = html.escape(class_label(self.class_names, int(self.predictions[i])))
        shown = html.escape(image_label(self.image_names, i))
        if record.class_specific:
            settings.append(f"gradients of the predicted class, {predicted}" if self.target == PREDICTED else
                            f"gradients of class {html.escape(class_label(self.class_names, self.target))}")
        caption = f"<b>{shown}</b> (predicted: {predicted}); {method}" + \
                  (f" ({', '.join(settings)})" if settings else "") + "." + verdict + unchanged
        return {"map": heat, "signed": signed, "limit": signed_scale(heat) if signed else None, "title": title, "lines": record.branch,
                "centre": centre, "caption": caption}

    @property
    def last_map(self) -> np.ndarray:
        return self.current_map()

    @property
    def last_title(self) -> str:
        return self.view()["title"]

    def _held_tensors(self) -> list[torch.Tensor]:
        tensors = [*super()._held_tensors(), *self.recorder.sites.values(), *self.stored.values()]
        return tensors + list(self._joint.values()) + list(self._extras.values())


def rollout_explorer(model: CrossViT, images: torch.Tensor, *, masks: torch.Tensor | None = None,
                     class_names: Sequence[str] | None = None, index: int = 0, max_images: int | None = None,
                     classes: Sequence[int] | None = None, progress: bool = False,
                     image_names: Sequence[str] | None = None) -> RolloutExplorer:
    """A widget to compare rollout maps of ``model`` on ``images`` (B, 3, H, W): per-branch rollout (head fusion
    and discard ratio adjustable), the joint rollout through the fusion layers (head fusion adjustable), and the
    class-specific methods of the registry (gradient rollout, co-attention relevancy, ...) for a target class (each
    image's predicted class, or one chosen in the ``target`` menu). ``masks`` (B, H, W) outline the objects and say
    whether the map's maximum lands on one. Classes are named by ``class_names``, by default the model's own
    (:func:`crossvit.class_names`), images by ``image_names`` if given, else by number.

    The model runs once here, plus the backward passes of the class-specific maps: every start block, for every
    class when there are at most :data:`RolloutExplorer.ALL_CLASSES_UP_TO` (else each image's predicted class and
    the most probable others, or the ``classes`` given). The browser computes the rest from the recorded maps, so
    the widget answers every control without a kernel (in a saved notebook page, in ``explorer.save_html(path)``);
    with a kernel, a class-specific map not computed yet is computed when asked for. ``progress`` shows a tqdm bar
    over the backward passes.

    Memory: the recorded maps of every image (as :func:`attention_explorer`, at most ``max_images`` images), the
    class-specific maps (each (B, H, W) float32) and at most one joint-rollout result per (head fusion, start
    block); ``explorer.memory_bytes`` says what it holds. Like every ipywidget, it stays in memory until
    ``explorer.close()``, even when nothing refers to it any more; a script that builds many explorers closes each,
    or uses ``with rollout_explorer(...) as explorer:``, which closes it.
    """
    return RolloutExplorer(model, images, masks=masks, class_names=class_names, index=index, max_images=max_images,
                           classes=classes, progress=progress, image_names=image_names)
