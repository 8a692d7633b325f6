"""Record every attention map a CrossViT computes, with ordinary PyTorch forward hooks.

Each place where the model turns scores into attention probabilities is a *site*, an
:class:`~crossvit.layers.AttentionMap` module whose forward output is the map:

====================================  =======================================================================
site name                             map shape
====================================  =======================================================================
``blocks.{k}.{branch}.self.{j}``      (B, heads, N, N): layer ``j`` of ``branch``'s encoder in block ``k``;
                                      N = 1 + patches of that branch, token 0 is its CLS
``blocks.{k}.{branch}.cross.{f}``     (B, heads, 1, 1 + N_other): fusion layer ``f`` of block ``k``; the only
                                      query is ``branch``'s (projected) CLS, the keys are [that CLS, the other
                                      branch's patch tokens]
====================================  =======================================================================

Sites are listed in forward order: per block, the small encoder's layers, the large encoder's layers, then each
fusion layer's small and large direction. A site that nothing records keeps the fused
``F.scaled_dot_product_attention`` path, so recording costs only where it is asked for.

>>> with record_attention(model) as rec:
...     logits = model(images)
>>> rec.self_attention("small")[0].shape   # (B, heads, 1 + N_small, 1 + N_small)
>>> rec.cross_attention("large")[-1].shape # (B, heads, 1, 1 + N_small)
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from .layers import AttentionMap
from .model import CrossViT, check_crossvit, in_forward
from .utils import check_bool

Kind = Literal["self", "cross"]


@dataclass(frozen=True)
class Site:
    """One attention site: where it is (block, branch, kind, index), its name, and the module to hook."""

    block: int
    branch: str
    kind: Kind
    index: int
    module: AttentionMap

    @property
    def name(self) -> str:
        return f"blocks.{self.block}.{self.branch}.{self.kind}.{self.index}"


def attention_sites(model: CrossViT) -> list[Site]:
    """Every attention site of ``model``, in forward order."""
    check_crossvit(model, "attention recording")
    sites = []
    for k, block in enumerate(model.blocks):
        for branch in model.branch_names:
            for j, layer in enumerate(block.encoders[branch].layers):
                sites.append(Site(k, branch, "self", j, layer.attn.attention_map))
        for f, fusion in enumerate(block.fusions):
            for branch in model.branch_names:
                sites.append(Site(k, branch, "cross", f, getattr(fusion, branch).attn.attention_map))
    return sites


SiteSelector = Literal["all", "self", "cross"] | Callable[[str], bool]


def _select(sites: list[Site], selector: SiteSelector) -> list[Site]:
    if callable(selector):
        return [s for s in sites if selector(s.name)]
    if selector == "all":
        return list(sites)
    if selector in ("self", "cross"):
        return [s for s in sites if s.kind == selector]
    raise ValueError(f"sites must be 'all', 'self', 'cross' or a predicate on site names, got {selector!r}")


_serials = itertools.count(1)  # each recording that starts gets the next number
_pause = threading.local()  # .below: recordings of this thread numbered below it ignore forwards (0: none)


@contextmanager
def outer_recordings_paused() -> Iterator[None]:
    """Within the block, the recordings this thread had already started ignore every forward: a library function
    that runs the model on images of its own (perturbed, interpolated, flipped) leaves the caller's recording as it
    was. Recordings started inside the block record as usual."""
    previous = getattr(_pause, "below", 0)
    _pause.below = next(_serials)
    try:
        yield
    finally:
        _pause.below = previous


F = TypeVar("F", bound=Callable[..., Any])


def leaves_recordings_alone(fn: F) -> F:
    """Decorator: ``fn`` runs inside :func:`outer_recordings_paused`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with outer_recordings_paused():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class AttentionRecorder:
    """Holds the maps (and optionally their gradients) recorded by :func:`record_attention`.

    Each forward pass of the model (``model(x)`` or ``model.forward_features(x)``) *replaces* the maps of the
    previous one (``num_forwards`` counts them), so the maps always belong to the latest forward. Calling a part
    of the model on its own (``model.embed["small"](x)``, ``model.blocks[0](s, l)``) is not a forward: it neither
    replaces nor adds maps. Nor are the forwards that the library's own analyses run on images of their own
    (``explain``, ``relevance_by_branch``, ``deletion_insertion``, ``head_accuracies``,
    ``cross_attention_ablations``, building an explorer): called inside the block, they leave its maps as they
    were. The maps stay readable after the ``with`` block ends. With ``grads=True`` only gradients of the latest
    forward's maps are kept: reading gradients that arrived for an earlier forward only raises an error that says
    so. Several backward passes through one recorded forward (``retain_graph=True``)
    add up: ``rec.gradients`` is then the gradient of their sum, as PyTorch's ``.grad`` accumulates (a
    ``torch.autograd.grad`` call through the maps runs the same hooks, and counts as a pass too).

    The model must run eagerly: a ``torch.compile``-d model (or any wrapper whose compiled code skips module
    hooks) records nothing, and reading the recorder after such a call raises an error that says so.

    Memory: without autograd, a forward writes its maps into the memory of the previous recorded forward's maps
    (of this or an earlier recording) when nothing outside the recorder still references them (see
    :class:`~crossvit.layers.AttentionMap`), so recording many batches does not pay for ~100 MB of fresh memory per
    forward. Whatever you keep of a map is never overwritten: the map, a view, its storage object, a numpy or
    DLPack export, or a copy sent to another process through ``torch.multiprocessing``; its site then gets fresh
    memory. The model's attention sites keep at most one forward's worth of map memory after a recording;
    :func:`release_attention_memory` frees it.
    """

    def __init__(self, model: CrossViT, sites: list[Site], detach: bool, grads: bool) -> None:
        detach, grads = check_bool("detach", detach), check_bool("grads", grads)
        self.model = model
        self.recorded_sites = sites
        self.detach = detach and not grads
        self.keep_grads = grads
        self.num_forwards = 0
        self._maps: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._forward_id = 0  # never reset (unlike num_forwards): tells each forward's gradients apart
        self._forward_id_at_call = 0  # _forward_id when the latest model call began
        self._stale_grads_from: int | None = None  # forward whose gradients arrived after a newer forward began
        self._unseen_calls = 0  # model calls in which no forward of ours ran (compiled code skips module hooks)
        self._latest_call_unseen = False
        self._thread: int | None = None  # the thread that entered the recording: only its forwards are recorded
        self._serial = 0  # set on entering: a recording started before an outer_recordings_paused block ignores it
        self._reuse_before: list[tuple[bool, int | None]] = []  # each site's memory-reuse flags before entering

    # -- hooks ----------------------------------------------------------------------------------------------
    def _ours(self) -> bool:
        """True when the running forward belongs to this recording: it runs in the thread that entered the
        ``with`` block. Forwards of other threads through the same modules (the same model, or another model
        sharing its modules) are neither recorded nor counted, and never write into the kept map memory; nor are
        forwards inside a library function that runs the model on images of its own (outer_recordings_paused)."""
        return threading.get_ident() == self._thread and self._serial >= getattr(_pause, "below", 0)

    def _attach(self) -> None:
        model = self.model
        self._thread = threading.get_ident()
        self._serial = next(_serials)
        # a forward begins where both model(x) and model.forward_features(x) begin: the first branch's embedding
        first_embedding = model.embed[model.branch_names[0]]
        self._handles += [
            model.register_forward_pre_hook(_recording_hook(self._on_model_call)),
            model.register_forward_hook(_recording_hook(self._after_model_call)),
            first_embedding.register_forward_pre_hook(_recording_hook(self._on_forward)),
        ]
        # a recording inside another one gives the sites back as it found them (the outer one still reuses memory)
        self._reuse_before = [(site.module.reuse_memory, site.module.reuse_thread) for site in self.recorded_sites]
        for site in self.recorded_sites:
            self._handles.append(site.module.register_forward_hook(self._hook_for(site.name)))
            site.module.reuse_memory = True  # a later forward may write into a map nobody holds any more
            site.module.reuse_thread = self._thread  # ... but only a forward of the recording thread

    def _detach_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for site, (reuse, thread) in zip(self.recorded_sites, self._reuse_before):
            # outside every recording: off (the kept memory stays for the next recording, see release_memory)
            site.module.reuse_memory, site.module.reuse_thread = reuse, thread

    def _on_forward(self, module: nn.Module, inputs: tuple) -> None:
        if not self._ours() or not in_forward(self.model):  # the embedding called on its own is no forward
            return
        self._maps = {}
        self._grads = {}
        self._stale_grads_from = None
        self._latest_call_unseen = False
        self.num_forwards += 1
        self._forward_id += 1

    def _on_model_call(self, module: nn.Module, inputs: tuple) -> None:
        if self._ours():
            self._forward_id_at_call = self._forward_id

    def _after_model_call(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if self._ours() and self._forward_id == self._forward_id_at_call:  # the model ran, but not the modules we hooked
            self._unseen_calls += 1
            self._latest_call_unseen = True

    def _keep_grad(self, forward_id: int, name: str, grad: torch.Tensor) -> None:
        if forward_id == self._forward_id:  # several backward passes add up, as .grad does
            held = self._grads.get(name)
            self._grads[name] = grad if held is None else held + grad  # a new tensor: what a caller holds stays
        else:  # a backward through an earlier forward: its gradients do not belong to the maps we hold
            self._stale_grads_from = forward_id

    def _hook_for(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not self._ours() or not in_forward(self.model):  # a block called on its own records nothing
                return
            if self.keep_grads and output.requires_grad:
                # the gradient hook lives as long as the map's autograd graph; it must not keep the recorder (and
                # through it every map) alive: it reaches the recorder through a weak reference
                recorder, forward_id = weakref.ref(self), self._forward_id

                def keep(grad: torch.Tensor) -> None:
                    alive = recorder()
                    if alive is not None:
                        alive._keep_grad(forward_id, name, grad)

                output.register_hook(keep)
            self._maps[name] = output.detach() if self.detach else output

        hook.recording_hook = True  # type: ignore[attr-defined]  # see _recording_hook
        return hook

    # -- reading --------------------------------------------------------------------------------------------
    def _require_forward(self) -> None:
        if self._latest_call_unseen:
            raise RuntimeError(
                f"the model was called during the recording but its attention sites did not run "
                f"({self._unseen_calls} such call(s)): it was probably called through torch.compile (or another "
                "wrapper whose compiled code skips module hooks). Call the eager model inside the recording "
                "(for a compiled model: compiled._orig_mod)"
            )
        if self.num_forwards == 0:
            raise RuntimeError("no attention has been recorded yet: run the model inside the "
                               "`with record_attention(model) as rec:` block before reading rec")

    def _check_branch(self, branch: str) -> None:
        if branch not in self.model.branch_names:
            raise ValueError(f"unknown branch {branch!r}; this model's branches are 'small' and 'large'")

    @property
    def sites(self) -> dict[str, torch.Tensor]:
        """Every recorded map, by site name, in forward order."""
        self._require_forward()
        return {s.name: self._maps[s.name] for s in self.recorded_sites if s.name in self._maps}

    def _by_kind(self, branch: str, kind: Kind, store: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        self._require_forward()
        self._check_branch(branch)
        chosen = [s for s in self.recorded_sites if s.branch == branch and s.kind == kind]
        if not chosen:
            raise ValueError(f"no {kind}-attention site of the {branch} branch was recorded (sites=...)")
        return [store[s.name] for s in chosen if s.name in store]

    def self_attention(self, branch: str) -> list[torch.Tensor]:
        """The branch's self-attention maps in forward order, each (B, heads, N, N)."""
        return self._by_kind(branch, "self", self._maps)

    def cross_attention(self, branch: str) -> list[torch.Tensor]:
        """The maps in which ``branch``'s CLS reads the other branch, one per fusion layer: (B, heads, 1, 1+N_other)."""
        return self._by_kind(branch, "cross", self._maps)

    def _require_grads(self) -> None:
        self._require_forward()
        if not self.keep_grads:
            raise RuntimeError("this recording kept no gradients: use record_attention(model, grads=True) and "
                               "call backward() on the output")
        if not self._grads and self._stale_grads_from is not None:
            raise RuntimeError(
                f"the attention gradients that arrived belong to an earlier forward of this recording than the "
                f"maps it holds (the latest, forward {self.num_forwards}): the recorder keeps only the latest "
                "forward's maps, so call backward() on the output of the latest forward"
            )
        if not self._grads:
            raise RuntimeError("no attention gradients yet: call backward() on (a function of) the model's "
                               "output after the forward, with autograd enabled")

    @property
    def gradients(self) -> dict[str, torch.Tensor]:
        """d(output)/d(map) for every recorded site a gradient reached, by site name (needs ``grads=True`` and a
        backward pass); the sum over the backward passes through the latest forward, as ``.grad`` accumulates."""
        self._require_grads()
        return {s.name: self._grads[s.name] for s in self.recorded_sites if s.name in self._grads}

    def self_attention_grads(self, branch: str) -> list[torch.Tensor]:
        """Gradients of the branch's self-attention maps, same order and shapes as :meth:`self_attention`."""
        self._require_grads()
        return self._by_kind(branch, "self", self._grads)

    def cross_attention_grads(self, branch: str) -> list[torch.Tensor]:
        """Gradients of the branch's cross-attention maps, same order and shapes as :meth:`cross_attention`."""
        self._require_grads()
        return self._by_kind(branch, "cross", self._grads)

    def to(self, device: torch.device | str) -> AttentionRecorder:
        """Move the recorded maps and gradients to ``device`` and return the recorder: ``rec.to("cpu")`` keeps
        them without holding the memory of the model's GPU. Only after the ``with`` block (a RuntimeError inside
        it: its hooks write on the model's device)."""
        if self._handles:
            raise RuntimeError("move a recording with .to() after its with block has ended")
        device = torch.device(device)
        self._maps = {name: m.to(device) for name, m in self._maps.items()}
        self._grads = {name: g.to(device) for name, g in self._grads.items()}
        return self

    def clear(self) -> None:
        """Forget the recorded maps and gradients (the hooks stay while the ``with`` block lasts)."""
        self._maps, self._grads, self.num_forwards = {}, {}, 0
        self._stale_grads_from, self._latest_call_unseen, self._unseen_calls = None, False, 0

    def __repr__(self) -> str:
        return (f"AttentionRecorder({len(self.recorded_sites)} sites, {self.num_forwards} forwards, "
                f"grads={self.keep_grads}, {'active' if self._handles else 'closed'})")


def _recording_hook(fn: Callable) -> Callable:
    """``fn`` as a hook marked ``recording_hook``, which ``copy.deepcopy`` of a model leaves out of the copy."""
    def hook(*args: object) -> object:
        return fn(*args)

    hook.recording_hook = True  # type: ignore[attr-defined]
    return hook


def check_recorder(rec: object) -> AttentionRecorder:
    """``rec`` if it is an :class:`AttentionRecorder`; a TypeError naming ``rec`` otherwise."""
    if not isinstance(rec, AttentionRecorder):
        raise TypeError(f"rec must be the AttentionRecorder of a record_attention(model) block, got "
                        f"{type(rec).__name__}")
    return rec


class record_attention:  # noqa: N801 - used as a function-like context manager
    """Context manager: record the attention maps of ``model`` while the block runs.

    Args:
        model: a :class:`crossvit.CrossViT`.
        sites: ``"all"``, ``"self"``, ``"cross"``, or a predicate on site names (see the module docstring).
        detach: store detached maps (the default; they hold no autograd graph).
        grads: keep each map in the graph and record its gradient when ``backward()`` runs (for gradient
            rollout); implies ``detach=False``.

    The hooks are removed when the block exits, also when it exits with an exception.
    """

    def __init__(self, model: CrossViT, *, sites: SiteSelector = "all", detach: bool = True,
                 grads: bool = False) -> None:
        chosen = _select(attention_sites(model), sites)
        self.recorder = AttentionRecorder(model, chosen, detach=detach, grads=grads)

    def __enter__(self) -> AttentionRecorder:
        self.recorder._attach()
        return self.recorder

    def __exit__(self, *exc_info: object) -> None:
        self.recorder._detach_hooks()


def release_attention_memory(model: CrossViT) -> None:
    """Free the map memory the attention sites of ``model`` keep for reuse by the next recording.

    Maps you still hold stay valid; only the model's own references go.
    """
    for site in attention_sites(model):
        site.module.release_memory()


def iter_site_names(model: CrossViT) -> Iterator[str]:
    """Names of all attention sites of ``model``, in forward order."""
    return (site.name for site in attention_sites(model))
