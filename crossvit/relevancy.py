"""Co-attention relevancy: Chefer, Gur and Wolf's relevancy rules for bi-modal transformers (ICCV 2021), applied to
CrossViT's two branches.

Their rules keep four relevancy matrices for two token sets s and q: the self-relevancies R^ss and R^qq (start: the
identity) and the cross-relevancies R^sq and R^qs (start: zero). Every attention map A enters as
A_bar = mean_heads(clamp(grad(A) * A, min=0)), the gradient of the explained class score weighting it (their rule 5).

* A **self-attention** layer of set s (rules 6 and 7): R^ss += A_bar R^ss and R^sq += A_bar R^sq.
* A **cross-attention** layer where the tokens of s query those of q, A_bar^sq of shape (N_s, N_q) (rules 10 and 11):
  R^sq += (R_bar^ss)^T A_bar^sq R_bar^qq and R^ss += A_bar^sq R^qs, where R_bar is a self-relevancy normalised
  as in their eq. 8-9: subtract the identity, divide each row by its sum, add the identity back (``normalize_self``;
  a row that sums to zero stays zero). ``self_in_cross=False`` is their option of using A_bar^sq alone in rule 11.

**The mapping onto CrossViT** (written out in docs/rollout.md). The token sets are the two branches, s = small
(CLS_s and its patches) and l = large. A branch's self-attention layers are self-attention layers of its set. A
fusion layer has two directions, computed from the same tokens (the outputs of the block's branch encoders): in
the direction with query branch b (other branch o) the only query is CLS_b, and its keys are CLS_b itself followed
by o's patch tokens, so its map c = (c_0, c_1, ..., c_No) has two parts:

* c_1..c_No is a cross-attention of set b over set o: A_bar^bo is zero except row CLS_b, whose entries over o's
  patches are c_1..c_No (o's CLS is not a key): rules 10 and 11 with this matrix;
* c_0 is CLS_b attending to itself: a self-attention layer of set b whose matrix is zero except the entry
  (CLS_b, CLS_b) = c_0: rules 6 and 7.

All the updates of one fusion layer (both directions, both parts) are computed from the relevancies before that
layer and then added, as the two directions run in parallel. The projections of the CLS token in and out of the
other branch's width are linear maps, not attention, and carry no rule (as MLPs do not).

**Both heads.** CrossViT's logits are the mean of two heads, one on each CLS, so the explanation starts from both:
each CLS token's rows (R^{sp}[CLS_s] and R^{lp}[CLS_l] over the patches of branch p) are returned as the rollouts
return theirs (``out[query][patch_branch]``), and :func:`crossvit.explain.joint_rollout_pixels` averages the two CLS
tokens' maps, as the model averages their heads' logits.
"""

from __future__ import annotations

import torch

from .recording import AttentionRecorder, attention_sites, check_recorder
from .rollout import accumulation_dtype, check_start_block, gradient_weighted
from .utils import check_bool, other_branch


def normalize_self_relevancy(relevancy: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s eq. 8-9 on (B, N, N) self-relevancies: (R - I) with each row divided by its sum, plus I.
    A row of R - I that sums to zero (nothing accumulated yet) stays zero before I is added."""
    if not isinstance(relevancy, torch.Tensor) or relevancy.ndim < 2 or relevancy.shape[-1] != relevancy.shape[-2]:
        got = tuple(relevancy.shape) if isinstance(relevancy, torch.Tensor) else type(relevancy).__name__
        raise TypeError(f"relevancy must be a (B, N, N) tensor, got {got}")
    eye = torch.eye(relevancy.shape[-1], dtype=relevancy.dtype, device=relevancy.device)
    return _normalized_residual(relevancy - eye) + eye


def _normalized_residual(residual: torch.Tensor) -> torch.Tensor:
    sums = residual.sum(dim=-1, keepdim=True)
    safe = torch.where(sums == 0, torch.ones_like(sums), sums)
    return torch.where(sums == 0, torch.zeros_like(residual), residual / safe)


def coattention_relevancy(rec: AttentionRecorder, normalize_self: bool = True, self_in_cross: bool = True,
                          start_block: int = 0, include_cls: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Relevancy of every patch for each CLS token: ``out[query][patch_branch]`` (B, N_patches), or with
    ``include_cls=True`` (B, 1 + N_patches) starting with the patch branch's CLS column. Needs
    ``record_attention(model, grads=True)`` and a backward pass from the class score to explain, as
    :func:`crossvit.rollout.gradient_rollout`; only the layers of blocks ``start_block`` and later enter. As
    there, a map that received no gradient while others did (after a backward from one branch head's logit) is
    not on any path to the score: its gradient is zero. A map that was not recorded is a ValueError."""
    check_recorder(rec)
    check_bool("normalize_self", normalize_self)
    check_bool("self_in_cross", self_in_cross)
    check_bool("include_cls", include_cls)
    model = rec.model
    start = check_start_block(model, start_block)
    maps, recorded_grads = rec.sites, rec.gradients  # raises when no map received a gradient
    sites = [s for s in attention_sites(model) if s.block >= start]
    missing = [s.name for s in sites if s.name not in maps]
    if missing:
        raise ValueError(f"co-attention relevancy needs every attention map from block {start} on with its "
                         f"gradient; {len(missing)} are missing (e.g. {missing[0]}): record with sites='all' and "
                         "grads=True, and back-propagate from the model's output")
    grads = {s.name: recorded_grads.get(s.name, torch.zeros_like(maps[s.name])) for s in sites}
    first = maps[sites[0].name]
    b_size, device = first.shape[0], first.device  # batch size
    dtype = accumulation_dtype(first.dtype)
    count = {branch: 1 + model.num_patches(branch) for branch in model.branch_names}
    # The self-relevancies are kept as their residual D = R - I (what the layers added): the normalisation reads
    # R - I, and D holds it exactly, where R - I in float32 would lose the small entries beside a diagonal near 1.
    residual = {b: torch.zeros(b_size, count[b], count[b], dtype=dtype, device=device) for b in model.branch_names}
    cross = {(p, q): torch.zeros(b_size, count[p], count[q], dtype=dtype, device=device)
             for p in model.branch_names for q in model.branch_names if p != q}

    def full(branch: str) -> torch.Tensor:  # R^bb = I + D^bb
        return residual[branch] + torch.eye(count[branch], dtype=dtype, device=device)

    def normalized(branch: str) -> torch.Tensor:  # R_bar^bb
        d = _normalized_residual(residual[branch]) if normalize_self else residual[branch]
        return d + torch.eye(count[branch], dtype=dtype, device=device)

    index = 0
    while index < len(sites):
        site = sites[index]
        if site.kind == "self":  # rules 6 and 7
            weights = gradient_weighted(maps[site.name].detach(), grads[site.name])  # (B, N_b, N_b)
            own, other = site.branch, other_branch(site.branch)
            residual[own] = residual[own] + weights @ full(own)
            cross[own, other] = cross[own, other] + weights @ cross[own, other]
            index += 1
            continue
        layer = [site]  # one fusion layer: its two directions, consecutive sites with the same block and index
        while (index + len(layer) < len(sites) and sites[index + len(layer)].kind == "cross"
               and (sites[index + len(layer)].block, sites[index + len(layer)].index) == (site.block, site.index)):
            layer.append(sites[index + len(layer)])
        additions = []
        for fusion in layer:
            own, other = fusion.branch, other_branch(fusion.branch)
            row = gradient_weighted(maps[fusion.name].detach(), grads[fusion.name])[:, 0]  # (B, 1 + N_other)
            to_patches = torch.zeros(b_size, count[own], count[other], dtype=dtype, device=device)
            to_patches[:, 0, 1:] = row[:, 1:]  # CLS_own over the other branch's patches
            to_itself = torch.zeros(b_size, count[own], count[own], dtype=dtype, device=device)
            to_itself[:, 0, 0] = row[:, 0]  # CLS_own over itself
            if self_in_cross:  # rule 11
                to_other = normalized(own).transpose(1, 2) @ to_patches @ normalized(other)
            else:
                to_other = to_patches
            to_own = to_patches @ cross[other, own]  # rule 10
            additions.append((("cross", own, other), to_other + to_itself @ cross[own, other]))  # + rule 7
            additions.append((("self", own), to_own + to_itself @ full(own)))  # + rule 6
        for key, addition in additions:
            if key[0] == "self":
                residual[key[1]] = residual[key[1]] + addition
            else:
                cross[key[1:]] = cross[key[1:]] + addition
        index += len(layer)

    out: dict[str, dict[str, torch.Tensor]] = {}
    first_column = 0 if include_cls else 1
    for query in model.branch_names:
        rows = {query: full(query)[:, 0], other_branch(query): cross[query, other_branch(query)][:, 0]}
        out[query] = {p: rows[p][:, first_column:] for p in model.branch_names}
    return out
