"""Attention rollout: where the CLS tokens end up looking, per branch and across both branches.

Definitions (written out step by step in docs/rollout.md):

* **Per-branch rollout** (Abnar & Zuidema 2020). For the branch's self-attention maps A_1..A_L in forward order:
  fuse the heads (mean, max or min), optionally zero the lowest ``discard_ratio`` of the entries (per image;
  the CLS row is never discarded), take A' = 0.5 A + 0.5 I, renormalise the rows, and R = A'_L ... A'_1.
  The map is R[CLS, patches].
* **Joint rollout** (this project's). One token graph over both branches, T = [CLS_s, patches_s, CLS_l, patches_l],
  R = M_L ... M_1 over all layers in forward order, where a self-attention layer of branch b is the identity except
  for the b-block rownorm(0.5 A + 0.5 I), and a fusion layer is the identity except for the CLS rows: the row of
  CLS_b becomes rownorm(0.5 e(CLS_b) + 0.5 (c[0] e(CLS_b) + sum_j c[j] e(patch_other_j))), A and c being the
  head-fused maps (b's cross-attention row for c). With the mean over heads the rows already sum to 1 and rownorm
  changes nothing; max and min fusion need it, as in the per-branch rollout. The result for query CLS_q over the
  patches of branch p is R[CLS_q, patches_p]; every row sums to 1 with the CLS columns included, for every head
  fusion.
* **Gradient rollout** (Chefer et al. 2021, generic attention explainability): the joint rollout with
  A_bar = mean_heads(clamp(grad(A) * A, min=0)) in place of the head-fused A and no rownorm (Chefer et al. keep
  the weights as they are), so it is specific to the class whose score was back-propagated. A map that received
  no gradient while others did does not feed the score that was back-propagated (e.g. the large CLS's last fusion
  when only the small head's logit was): its gradient is zero.

All three take ``start_block``: only the attention of multi-scale blocks ``start_block`` and later enters the
product (the layers before it count as the identity). Rollout multiplies every layer in, and in a trained model
the first layers attend broadly, so the product of many near-uniform factors spreads the CLS row over the image even
when the last blocks look at one object; starting later shows what the last blocks read (Chefer et al.'s code
restricts its layers for the same reason). ``start_block=0`` (the default here) is the definition above.

Only CLS rows are ever needed, so everything propagates row vectors (v <- v M from the last layer to the first)
instead of multiplying T x T matrices: the cost is one pass over the recorded maps.

Every rollout accumulates in float32 (float64 maps stay float64), whatever the model's dtype: a product of
dozens of row-normalised factors in float16 loses the small entries, and the gradient-weighted maps underflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .model import check_crossvit
from .recording import AttentionRecorder, attention_sites, check_recorder
from .utils import check_bool, check_choice, check_int, check_number, other_branch

HeadFusion = Literal["mean", "max", "min"]
HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype rollouts compute in for maps of ``dtype``: float32, or float64 for float64 maps."""
    return torch.promote_types(dtype, torch.float32)


def _check_map(name: str, value: object, ndim: int, shape: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a {shape} tensor, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must be a {shape} tensor, got shape {tuple(value.shape)}")


def fuse_heads(attention: torch.Tensor, head_fusion: HeadFusion = "mean") -> torch.Tensor:
    """(B, heads, Nq, Nk) -> (B, Nq, Nk) by the mean, max or min over heads."""
    if not isinstance(attention, torch.Tensor) or attention.ndim < 2:  # dim 1 is the heads (also of one row)
        got = tuple(attention.shape) if isinstance(attention, torch.Tensor) else type(attention).__name__
        raise TypeError(f"attention must be a (B, heads, Nq, Nk) tensor, got {got}")
    if not attention.is_floating_point():
        raise TypeError(f"attention must hold floating-point weights, got dtype {attention.dtype}")
    head_fusion = check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    if head_fusion == "mean":
        return attention.mean(dim=1)
    return attention.amax(dim=1) if head_fusion == "max" else attention.amin(dim=1)


def discard_lowest(attention: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the lowest ``ratio`` of the entries of each image's (N, N) map, leaving the CLS row (row 0) intact.

    ``k = int(ratio * (N - 1) * N)`` entries are zeroed per image (vit-explain discards per batch element 0 only;
    here every image gets its own threshold). When nothing is discarded (``ratio = 0``, or ``k = 0``) the map
    itself comes back, not a copy.
    """
    _check_map("attention", attention, 3, "(B, N, N)")
    if attention.shape[1] != attention.shape[2]:
        raise ValueError(f"attention must be square maps (B, N, N), got shape {tuple(attention.shape)}")
    ratio = check_number("discard_ratio", ratio, 0.0, 1.0, high_open=True)
    if ratio == 0.0 or attention.shape[0] == 0:  # nothing to discard, or no image to discard it from
        return attention
    b, n, _ = attention.shape
    rest = attention[:, 1:, :].reshape(b, -1)  # (B, (N-1) * N): every row but the CLS row
    k = int(ratio * rest.shape[1])
    if k == 0:
        return attention
    lowest = rest.topk(k, dim=1, largest=False).indices
    rest = rest.scatter(1, lowest, 0.0)
    return torch.cat((attention[:, :1, :], rest.reshape(b, n - 1, n)), dim=1)


def rollout_from_maps(maps: Sequence[torch.Tensor], head_fusion: HeadFusion = "mean",
                      discard_ratio: float = 0.0, include_cls: bool = False) -> torch.Tensor:
    """Per-branch rollout of self-attention maps (forward order, each (B, heads, N, N)) -> (B, N - 1).

    Returns R[CLS, patches] with R = A'_L ... A'_1, A' = rownorm(0.5 A + 0.5 I); with ``include_cls=True`` the
    whole row R[CLS, :], (B, N), which sums to 1.
    """
    if isinstance(maps, torch.Tensor) or not isinstance(maps, Sequence):
        raise TypeError(f"maps must be a list or tuple of (B, heads, N, N) tensors, got {type(maps).__name__}")
    if not maps:
        raise ValueError("rollout needs at least one self-attention map")
    for k, attention in enumerate(maps):
        _check_map(f"maps[{k}]", attention, 4, "(B, heads, N, N)")
    check_bool("include_cls", include_cls)
    first = maps[0]
    b, _, n, _ = first.shape
    dtype = accumulation_dtype(first.dtype)
    row = torch.zeros(b, 1, n, dtype=dtype, device=first.device)  # (B, 1, N): e(CLS)
    row[:, 0, 0] = 1.0
    for attention in reversed(maps):
        if attention.shape[0] != b or attention.shape[-1] != n or attention.shape[-2] != n:
            raise ValueError(f"all maps must be (B, heads, {n}, {n}) with B={b}, got {tuple(attention.shape)}")
        fused = discard_lowest(fuse_heads(attention.to(dtype), head_fusion), discard_ratio)  # (B, N, N)
        # row <- row @ A' with A' = (0.5 A + 0.5 I) / s (rows), s = row sums of 0.5 A + 0.5 I; never build A'
        scaled = row / (0.5 * fused.sum(dim=-1) + 0.5)[:, None, :]  # (B, 1, N)
        row = 0.5 * (scaled @ fused) + 0.5 * scaled
    return row[:, 0] if include_cls else row[:, 0, 1:]


def check_index(name: str, value: object, length: int, what: str) -> int:
    """``value`` as an index in ``[0, length)`` of the model's ``length`` ``what`` (e.g. "blocks"); negative values
    count from the end, like a list index. A TypeError / ValueError names ``name`` otherwise."""
    value = check_int(name, value)  # a Python or numpy integer, not a bool
    if not -length <= value < length:
        raise ValueError(f"{name} must be in [{-length}, {length}) for this model's {length} {what}, got {value}")
    return value % length


def check_start_block(model: torch.nn.Module, start_block: object) -> int:
    """``start_block`` as a block index in ``[0, num_blocks)`` of ``model`` (a CrossViT; see :func:`check_index`)."""
    check_crossvit(model, "check_start_block")
    return check_index("start_block", start_block, model.arch.num_blocks, "blocks")


def attention_rollout(rec: AttentionRecorder, branch: str, head_fusion: HeadFusion = "mean",
                      discard_ratio: float = 0.0, start_block: int = 0, include_cls: bool = False) -> torch.Tensor:
    """Classic rollout of one branch's self-attention, for every image of the batch: (B, N_patches of branch).

    Patches are in row-major order over ``rec.model.patch_grid(branch)``. Only the layers of blocks
    ``start_block`` and later enter the product. With ``include_cls=True`` the CLS's own column comes first,
    (B, 1 + N_patches), and each row sums to 1. The result carries no autograd graph, even from a recording made
    with ``grads=True`` or ``detach=False`` (:func:`rollout_from_maps` keeps the graph of the maps it is given).
    """
    check_recorder(rec)
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    start = check_start_block(rec.model, start_block)
    rec.self_attention(branch)  # checks the branch and that a forward was recorded
    recorded = rec.sites
    needed = [s.name for s in attention_sites(rec.model) if s.branch == branch and s.kind == "self"
              and s.block >= start]
    missing = [name for name in needed if name not in recorded]
    if missing:  # a sites= filter left them out, or the forward stopped before reaching them
        raise ValueError(f"rollout of the {branch} branch from block {start} needs all its {len(needed)} "
                         f"self-attention maps, but {len(missing)} were not recorded (e.g. {missing[0]}); record "
                         "with sites='all' or 'self', and read the recorder after a forward that ran to the end")
    return rollout_from_maps([recorded[name].detach() for name in needed], head_fusion, discard_ratio,
                             check_bool("include_cls", include_cls))


# ----------------------------------------------------------------------------------------------------------------
# Joint rollout over both branches


@dataclass(frozen=True)
class GraphLayer:
    """One factor M of the joint graph: a branch's self-attention (B, N_b, N_b) or a fusion step (B, 1 + N_other).

    A fusion layer with both directions is two consecutive ``GraphLayer`` records of kind "cross"; they touch disjoint
    entries of the row vectors and read none of each other's, so together they apply that layer's single M.
    """

    kind: Literal["self", "cross"]
    branch: str  # the branch whose tokens attend (self) or whose CLS is the query (cross)
    weights: torch.Tensor  # head-fused attention: (B, N_b, N_b) for self, (B, 1 + N_other) for cross


def joint_rows(layers: Sequence[GraphLayer], num_tokens: dict[str, int], normalise: bool = True) -> torch.Tensor:
    """CLS rows of the joint rollout R = M_L ... M_1 (``layers`` in forward order).

    Args:
        layers: the graph's factors in forward order.
        num_tokens: tokens per branch including its CLS, e.g. ``{"small": 1 + 400, "large": 1 + 196}``.
        normalise: divide each row of every factor by its sum (the joint rollout: rows of R sum to 1 whatever the
            head fusion); False keeps the factors as they are (the gradient rollout's weights).

    Returns:
        (B, 2, T) with T = N_small + N_large tokens laid out [CLS_s, patches_s, CLS_l, patches_l]; row 0 is R's
        row of CLS_small, row 1 that of CLS_large.
    """
    if not layers:
        raise ValueError("joint rollout needs at least one layer")
    offsets = {"small": 0, "large": num_tokens["small"]}
    total = num_tokens["small"] + num_tokens["large"]
    ref = layers[0].weights
    dtype = accumulation_dtype(ref.dtype)
    rows = torch.zeros(ref.shape[0], 2, total, dtype=dtype, device=ref.device)  # (B, 2, T)
    rows[:, 0, offsets["small"]] = 1.0
    rows[:, 1, offsets["large"]] = 1.0
    for layer in reversed(layers):  # v <- v M, last factor first
        start = offsets[layer.branch]
        if layer.kind == "self":
            block = slice(start, start + num_tokens[layer.branch])
            a = layer.weights.to(dtype)  # (B, N_b, N_b)
            v = rows[:, :, block]  # (B, 2, N_b)
            if normalise:  # v M with M = (0.5 A + 0.5 I) / s (rows), s = row sums of 0.5 A + 0.5 I
                v = v / (0.5 * a.sum(dim=-1) + 0.5)[:, None, :]
            rows[:, :, block] = 0.5 * v + 0.5 * (v @ a)
        else:
            c = layer.weights.to(dtype)  # (B, 1 + N_other): [own CLS, other patches]
            o = offsets[other_branch(layer.branch)]
            patches = slice(o + 1, o + num_tokens[other_branch(layer.branch)])
            w = rows[:, :, start].clone()  # (B, 2): how much of each query row sits on CLS_b
            if normalise:  # the CLS_b row of M, 0.5 e(CLS_b) + 0.5 c, sums to 0.5 + 0.5 sum(c)
                w = w / (0.5 + 0.5 * c.sum(dim=-1))[:, None]
            rows[:, :, start] = w * (0.5 + 0.5 * c[:, None, 0])
            rows[:, :, patches] += 0.5 * w[:, :, None] * c[:, None, 1:]
    return rows


def _graph_layers(rec: AttentionRecorder, fuse: Callable[[str, torch.Tensor], torch.Tensor], start_block: int = 0
                  ) -> list[GraphLayer]:
    check_recorder(rec)
    model = rec.model
    start = check_start_block(model, start_block)
    maps = rec.sites  # checks that a forward was recorded
    every = [s for s in attention_sites(model) if s.block >= start]  # forward order
    missing = [s.name for s in every if s.name not in maps]
    if missing:
        raise ValueError(f"joint rollout needs every self- and cross-attention site from block {start} on, but "
                         f"{len(missing)} were not recorded (e.g. {missing[0]}); record with sites='all' and "
                         "read the recorder after a forward that ran to the end")
    layers = []
    for site in every:
        fused = fuse(site.name, maps[site.name])  # (B, Nq, Nk)
        layers.append(GraphLayer(site.kind, site.branch, fused if site.kind == "self" else fused[:, 0]))
    return layers


def _token_counts(rec: AttentionRecorder) -> dict[str, int]:
    return {b: 1 + rec.model.num_patches(b) for b in rec.model.branch_names}


def _split_rows(rows: torch.Tensor, counts: dict[str, int], include_cls: bool) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    offsets = {"small": 0, "large": counts["small"]}
    for qi, query in enumerate(("small", "large")):
        out[query] = {}
        for patch_branch in ("small", "large"):
            start = offsets[patch_branch] + (0 if include_cls else 1)
            out[query][patch_branch] = rows[:, qi, start:offsets[patch_branch] + counts[patch_branch]]
    return out


def joint_rollout(rec: AttentionRecorder, head_fusion: HeadFusion = "mean", include_cls: bool = False,
                  start_block: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Two-branch rollout through the fusion layers: ``out[query_branch][patch_branch]`` is (B, N_patches).

    With ``include_cls=True`` each tensor starts with the patch branch's CLS column, (B, 1 + N_patches), and for
    every query ``out[q]["small"].sum(-1) + out[q]["large"].sum(-1) == 1``. Only the layers of blocks
    ``start_block`` and later enter the product. As every rollout of a recording, the result carries no autograd
    graph, whatever the recording's ``grads`` or ``detach``.
    """
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    layers = _graph_layers(rec, lambda name, attention: fuse_heads(attention.detach(), head_fusion), start_block)
    counts = _token_counts(rec)
    return _split_rows(joint_rows(layers, counts, normalise=True), counts, check_bool("include_cls", include_cls))


def gradient_weighted(attention: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s A_bar = mean over heads of clamp(grad * A, min=0): (B, H, Nq, Nk) -> (B, Nq, Nk), computed
    in float32 (or float64) whatever the dtype of the maps."""
    _check_map("attention", attention, 4, "(B, heads, Nq, Nk)")
    _check_map("grad", grad, 4, "(B, heads, Nq, Nk)")
    if grad.shape != attention.shape:
        raise ValueError(f"grad must have the attention's shape {tuple(attention.shape)}, got {tuple(grad.shape)}")
    dtype = accumulation_dtype(torch.promote_types(attention.dtype, grad.dtype))
    return (grad.to(dtype) * attention.to(dtype)).clamp(min=0).mean(dim=1)


def gradient_rollout(rec: AttentionRecorder, include_cls: bool = False, start_block: int = 0
                     ) -> dict[str, dict[str, torch.Tensor]]:
    """Class-specific joint rollout: A_bar in place of the head-fused maps (needs ``record_attention(...,
    grads=True)`` and a backward pass from the class score to explain). Same layout and ``start_block`` as
    :func:`joint_rollout`; the factors are not row-normalised.

    A map that received no gradient while others did is not on any path to the back-propagated score (after a
    backward from one branch head's logit, the other CLS's last fusion): its gradient is zero, so its layer
    enters as 0.5 I. (A backward restricted with ``inputs=`` to some of the maps makes the others zero too.)
    """
    check_recorder(rec)
    grads = rec.gradients  # raises when no map received a gradient (or only those of an earlier forward)

    def weighted(name: str, attention: torch.Tensor) -> torch.Tensor:
        attention = attention.detach()
        grad = grads[name] if name in grads else torch.zeros_like(attention)
        return gradient_weighted(attention, grad)

    layers = _graph_layers(rec, weighted, start_block)
    counts = _token_counts(rec)
    return _split_rows(joint_rows(layers, counts, normalise=False), counts, check_bool("include_cls", include_cls))
