"""Building blocks shared by both CrossViT flavours: attention, feed-forward, transformer block, patch embeddings.

Attention probabilities only exist as a tensor inside :class:`AttentionMap`. When nothing observes that module
(no forward hook registered on it), attention runs through ``F.scaled_dot_product_attention`` and the
probabilities are never materialised; registering a hook (which :func:`crossvit.record_attention` does) switches
just that site to the explicit ``softmax(q k^T * scale) v`` path so the hook can see them.
"""

from __future__ import annotations

import copy
import math
import sys
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from einops.layers.torch import Rearrange
from torch import nn

_STORAGE_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)  # C++ references to a storage
_HAS_STANDARD_DELETER = getattr(torch._C, "_has_Standard_Deleter", None)  # CUDA memory not exported through IPC


def _storage_references(tensor: torch.Tensor) -> tuple[int, int]:
    """(C++ references to ``tensor``'s storage, Python references to its storage object), both measured here.

    The C++ count sees every tensor, view, autograd saved tensor, numpy array (it holds its tensor) and DLPack
    capsule on the memory; the Python count sees a storage object someone keeps (``map.untyped_storage()``, a
    TypedStorage), which PyTorch hands out as ONE object per storage and which the C++ count sees only once.
    """
    storage = tensor.untyped_storage()
    return _STORAGE_USE_COUNT(storage._cdata), sys.getrefcount(storage)


# What _storage_references reports for a tensor that nobody else references (measured, not assumed, since both
# counts include references of PyTorch's own that vary between versions); None: this PyTorch cannot tell.
_ALONE = None if _STORAGE_USE_COUNT is None else _storage_references(torch.empty(1))


def _process_private(storage: torch.UntypedStorage) -> bool:
    """False when the memory may be visible to another process: CPU memory moved to shared memory (what
    ``torch.multiprocessing`` does to every tensor it sends) or CUDA memory exported through IPC. Memory of
    other devices is never considered private."""
    if storage.device.type == "cpu":
        return not storage.is_shared()
    if storage.device.type == "cuda" and _HAS_STANDARD_DELETER is not None:
        return bool(_HAS_STANDARD_DELETER(storage._cdata))  # IPC export swaps in a deleter of its own
    return False


def _only_owner(spare: torch.Tensor) -> bool:
    """True when nothing but ``spare``, a tensor private to its :class:`AttentionMap`, can reach its memory: no
    tensor or view of it, no autograd saved tensor, no numpy array or DLPack capsule, no storage object held in
    Python, and no other process (shared memory, CUDA IPC). When in doubt (a PyTorch without the reference
    count), memory is never considered free.
    """
    if _ALONE is None:
        return False
    return _storage_references(spare) == _ALONE and _process_private(spare.untyped_storage())


def state_without_recording(module: nn.Module) -> dict:
    """``module.__dict__`` (a shallow copy) minus what a live attention recording attached to it: hooks marked
    ``recording_hook``, and the kept map memory of an :class:`AttentionMap`. What ``copy.deepcopy`` and pickling
    (``torch.save(model)``) of the modules a recording hooks copy."""
    state = nn.Module.__getstate__(module)  # nn.Module's own (it leaves out a torch.compile cache)
    dropped = set()
    for name in ("_forward_hooks", "_forward_pre_hooks"):
        hooks = state[name]
        dropped |= {key for key, hook in hooks.items() if getattr(hook, "recording_hook", False)}
        state[name] = OrderedDict((key, hook) for key, hook in hooks.items() if key not in dropped)
    for name in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
        if name in state:
            state[name] = OrderedDict((key, v) for key, v in state[name].items() if key not in dropped)
    if isinstance(module, AttentionMap):
        state["reuse_memory"], state["reuse_thread"], state["_spare"] = False, None, None
    return state


def deepcopy_without_recording(module: nn.Module, memo: dict) -> nn.Module:
    """``copy.deepcopy`` of ``module`` minus what a live attention recording attached to it.

    A copy made inside ``record_attention`` would otherwise carry the recorder's hooks forever: its attention
    sites would stay on the slow path and its forwards would write into the original recorder. Hooks marked
    ``recording_hook`` are left out (so is the kept map memory of an :class:`AttentionMap`); the rest is copied as
    ``copy.deepcopy`` copies any module. Pickling leaves out the same (:func:`state_without_recording`): the
    recorder's hooks are local functions, which pickle cannot save.
    """
    new = module.__class__.__new__(module.__class__)
    memo[id(module)] = new
    for key, value in state_without_recording(module).items():
        new.__dict__[key] = copy.deepcopy(value, memo)
    return new


class AttentionMap(nn.Module):
    """Computes ``softmax(q k^T * scale)`` over the keys: the attention probabilities, shape (B, heads, Nq, Nk).

    This is the module to hook: its forward output *is* the attention map. ``kind`` is ``"self"`` or ``"cross"``.

    Memory reuse: a recorder sets ``reuse_memory = True`` while it records. Without autograd, the module then
    writes each map into the memory of the map it returned last *if* nothing else can reach that memory any more
    (the recorder has let go of the previous forward's map and the caller kept nothing of it); otherwise it takes
    fresh memory, so a map someone holds is never overwritten. "Holds" means any tensor or view of the map, an
    autograd saved tensor, a numpy array (``map.numpy()``) or DLPack capsule made from it, its storage object
    (``map.untyped_storage()``), or another process it was sent to (``torch.multiprocessing`` moves it to shared
    memory, which is then never reused; likewise CUDA memory exported through IPC). Raw addresses
    (``map.data_ptr()`` handed to ctypes or to a C library) are outside any count: copy the map before doing that.
    The module keeps the memory through a private tensor of its own (``_spare``), never through an object the
    caller can also obtain. This spares the page faults of ~100 MB of fresh memory per forward when every map of
    a large model is recorded. The kept memory (at most one map per site) outlives the recording, so that the
    next recording reuses it too; :meth:`release_memory` frees it. A ``copy.deepcopy`` of the module starts
    without kept memory and without the hooks of a live recording.
    """

    def __init__(self, scale: float, kind: str) -> None:
        super().__init__()
        self.scale = scale
        self.kind = kind
        self.reuse_memory = False
        self.reuse_thread: int | None = None  # the recording thread: only its forwards may reuse the kept memory
        self._spare: torch.Tensor | None = None  # private tensor on the memory of the last map returned while reusing

    @property
    def observed(self) -> bool:
        """True when a forward hook wants the probabilities, so the fused kernel must not be used."""
        return bool(self._forward_hooks) or bool(self._forward_pre_hooks)

    def release_memory(self) -> None:
        """Let go of the kept map memory (maps still held elsewhere stay valid)."""
        self._spare = None

    def __getstate__(self) -> dict:
        # the kept memory is a cache and the recording's hooks belong to the recorder: torch.save / pickle leave
        # both out
        return state_without_recording(self)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        # .to(), .half(), .cuda() ...: the kept memory would stay behind in the old dtype / device; drop it
        self._spare = None
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict) -> AttentionMap:
        return deepcopy_without_recording(self, memo)

    def _kept_memory(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """An empty (B, H, Nq, Nk) tensor on the kept memory, or on fresh memory (kept from now on) when the kept
        memory does not fit or anything but the module can still reach it."""
        shape = (*q.shape[:-1], k.shape[-2])
        spare = self._spare
        nbytes = math.prod(shape) * q.element_size()
        if spare is not None and spare.device == q.device and spare.untyped_storage().nbytes() == nbytes \
                and _only_owner(spare):
            return q.new_empty(0).set_(spare.untyped_storage(), 0, shape)
        out = q.new_empty(shape)
        self._spare = out.new_empty(0).set_(out)  # a tensor of our own on the same memory, never handed out
        return out

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # q (B, H, Nq, D), k (B, H, Nk, D) -> (B, H, Nq, Nk)
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):  # out= cannot record autograd history
            return torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        if self.reuse_memory and self.reuse_thread == threading.get_ident():
            scores = torch.matmul(q * self.scale, k.transpose(-2, -1), out=self._kept_memory(q, k))
        else:
            scores = (q * self.scale) @ k.transpose(-2, -1)
        return torch.softmax(scores, dim=-1, out=scores)  # in place: no second (B, H, Nq, Nk) allocation

    def extra_repr(self) -> str:
        return f"kind={self.kind}, scale={self.scale:.4g}"


class AttentionInputs(nn.Module):
    """The query, key and value tensors of one attention, passed on unchanged: ``(q, k, v) -> (q, k, v)``.

    A place to hook, as :class:`AttentionMap` is: a forward hook that returns new tensors changes what the
    attention receives. The relevance rules of :mod:`crossvit.lrp` use it to change how gradients flow into q, k
    and v (the forward values stay the same), on the fused path and the explicit one alike.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return q, k, v


class _MultiHeadAttention(nn.Module):
    """What self- and cross-attention share: the inputs' hook point, the attention map, dropout, and the output
    projection."""

    def __init__(self, dim: int, heads: int, dim_head: int, attn_dropout: float, proj_dropout: float,
                 kind: str) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.inner_dim = heads * dim_head
        self.inputs = AttentionInputs()
        self.attention_map = AttentionMap(dim_head ** -0.5, kind)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.to_out = nn.Linear(self.inner_dim, dim)
        self.out_drop = nn.Dropout(proj_dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)  # (B, N, H*D) -> (B, H, N, D)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q (B, H, Nq, D), k and v (B, H, Nk, D) -> (B, Nq, H*D) projected to (B, Nq, dim)
        q, k, v = self.inputs(q, k, v)
        if self.attention_map.observed:
            attn = self.attn_drop(self.attention_map(q, k))  # (B, H, Nq, Nk)
            out = attn @ v
        else:
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        b, _, nq, _ = out.shape
        out = out.transpose(1, 2).reshape(b, nq, self.inner_dim)  # (B, Nq, H*D)
        return self.out_drop(self.to_out(out))


class SelfAttention(_MultiHeadAttention):
    """Multi-head self-attention with one fused query/key/value projection (``to_qkv``)."""

    def __init__(self, dim: int, heads: int, dim_head: int, qkv_bias: bool = False, attn_dropout: float = 0.0,
                 proj_dropout: float = 0.0) -> None:
        super().__init__(dim, heads, dim_head, attn_dropout, proj_dropout, kind="self")
        self.to_qkv = nn.Linear(dim, 3 * self.inner_dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.to_qkv(x).reshape(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        q, k, v = qkv.unbind(0)
        return self._attend(q, k, v)


class CrossAttention(_MultiHeadAttention):
    """Multi-head attention of a few query tokens (here: one CLS token) over a context of other tokens."""

    def __init__(self, dim: int, heads: int, dim_head: int, qkv_bias: bool = False, attn_dropout: float = 0.0,
                 proj_dropout: float = 0.0) -> None:
        super().__init__(dim, heads, dim_head, attn_dropout, proj_dropout, kind="cross")
        self.to_q = nn.Linear(dim, self.inner_dim, bias=qkv_bias)
        self.to_kv = nn.Linear(dim, 2 * self.inner_dim, bias=qkv_bias)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # queries (B, Nq, dim), context (B, Nk, dim) -> (B, Nq, dim)
        q = self._split_heads(self.to_q(queries))
        k, v = (self._split_heads(t) for t in self.to_kv(context).chunk(2, dim=-1))
        return self._attend(q, k, v)


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear, with dropout after each, as in both references."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: during training, drop a residual branch for whole samples with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, *, qkv_bias: bool, norm_eps: float,
                 attn_dropout: float = 0.0, proj_dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, heads, dim_head, qkv_bias, attn_dropout, proj_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = FeedForward(dim, mlp_dim, proj_dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ----------------------------------------------------------------------------------------------------------------
# Patch embeddings: image (B, C, H, W) -> patch tokens (B, N, dim), row-major over the patch grid


class LinearPatchEmbedding(nn.Module):
    """lucidrains' embedding: cut into patches, flatten each, LayerNorm -> Linear -> LayerNorm."""

    def __init__(self, patch_size: int, in_chans: int, dim: int, norm_eps: float = 1e-5) -> None:
        super().__init__()
        patch_dim = in_chans * patch_size * patch_size
        self.to_patches = Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)
        self.norm_in = nn.LayerNorm(patch_dim, eps=norm_eps)
        self.proj = nn.Linear(patch_dim, dim)
        self.norm_out = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm_out(self.proj(self.norm_in(self.to_patches(images))))


class ConvPatchEmbedding(nn.Module):
    """The paper's embedding: one convolution with kernel = stride = patch size, or the 3-convolution stem of the
    "dagger" models (``stem="conv3"``, patch sizes 12 and 16 only)."""

    def __init__(self, patch_size: int, in_chans: int, dim: int, stem: str = "conv") -> None:
        super().__init__()
        if stem == "conv":
            self.proj: nn.Module = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        elif stem == "conv3" and patch_size in (12, 16):
            # overall stride 4 * 3 * 1 = 12 or 4 * 2 * 2 = 16
            second, third = ((3, 0), (1, 1)) if patch_size == 12 else ((2, 1), (2, 1))
            self.proj = nn.Sequential(
                nn.Conv2d(in_chans, dim // 4, kernel_size=7, stride=4, padding=3),
                nn.ReLU(inplace=True),
                nn.Conv2d(dim // 4, dim // 2, kernel_size=3, stride=second[0], padding=second[1]),
                nn.ReLU(inplace=True),
                nn.Conv2d(dim // 2, dim, kernel_size=3, stride=third[0], padding=third[1]),
            )
        else:
            raise ValueError(f"unsupported patch stem {stem!r} for patch size {patch_size}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, dim, h, w) -> (B, h*w, dim)
