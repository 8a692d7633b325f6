"""Checkers of notebook 04, attention rollout: exercises 4.1-4.3."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..explain import explain, patch_map_to_pixels
from ..model import CrossViT
from ..recording import AttentionRecorder
from ..rollout import attention_rollout, gradient_rollout, gradient_weighted, joint_rollout, rollout_from_maps
from .common import (
    check_branch,
    check_model,
    checker_for,
    compare,
    ok,
    run_learner,
    tensor_answer,
)
from .guard import Shortcut

# ----------------------------------------------------------------------------------------------------------------
# 04 · rollout

ROLLOUTS = [Shortcut(attention_rollout, "crossvit.attention_rollout"),
            Shortcut(rollout_from_maps, "crossvit.rollout.rollout_from_maps"),
            Shortcut(joint_rollout, "crossvit.joint_rollout"), Shortcut(explain, "crossvit.explain")]


def _full_rollout(maps: Sequence[torch.Tensor], reverse: bool = False, residual: str = "half",
                  fusion: str = "mean", renormalise: bool = True, transpose: bool = False, column: bool = False
                  ) -> torch.Tensor:
    """R[CLS, patches] with full (B, N, N) matrices in float64, or one of the slips a learner makes; for
    diagnosing wrong answers. ``residual``: "half" (0.5 A + 0.5 I, the definition), "sum" (A + I) or "none"."""
    first = maps[0]
    b, _, n, _ = first.shape
    eye = torch.eye(n, dtype=torch.float64)
    result = eye.expand(b, n, n)
    for attention in maps:
        a = attention.detach().cpu().double()
        a = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[fusion]
        a = a.transpose(-2, -1) if transpose else a
        if residual != "none":
            a = 0.5 * a + 0.5 * eye if residual == "half" else a + eye
            a = a / a.sum(dim=-1, keepdim=True) if renormalise else a
        result = result @ a if reverse else a @ result
    return (result[:, 1:, 0] if column else result[:, 0, 1:]).float()


def _rollout_diagnoses(maps: Sequence[torch.Tensor]) -> list[tuple]:
    """The slips of Exercise 4.1 that can be recognised, each as (its wrong answer, what it is)."""
    return [
        (lambda: _full_rollout(maps, reverse=True),
         "the product is in the wrong order: the last layer's matrix goes on the left, R = A'_L ... A'_1 "
         "(start from the first layer and left-multiply each next one)."),
        (lambda: _full_rollout(maps, column=True),
         "that is the CLS column, R[:, 1:, 0], how much each patch took from the CLS; the map is the CLS row, "
         "R[:, 0, 1:], how much the CLS took from each patch."),
        (lambda: _full_rollout(maps, transpose=True),
         "each layer's matrix was transposed: row i of A is what token i reads (query i over the keys), so "
         "use A as it is, (B, N_query, N_key)."),
        (lambda: _full_rollout(maps, residual="none"),
         "the residual connection is missing: use A' = 0.5 A + 0.5 I (rows renormalised), not A."),
        (lambda: _full_rollout(maps, residual="sum", renormalise=False),
         "that is A + I, whose rows sum to 2, and the product was not renormalised: each layer doubles the map. "
         "Use 0.5 A + 0.5 I (or renormalise the rows of A + I)."),
        (lambda: _full_rollout(maps, fusion="max"), "the heads were fused by the max; this exercise uses the mean."),
        (lambda: _full_rollout(maps, fusion="min"), "the heads were fused by the min; this exercise uses the mean."),
        (lambda: _full_rollout(maps[-1:]), "only the last layer went in: multiply through every layer."),
    ]


@checker_for("rollout")
def check_rollout(function: object, rec: AttentionRecorder, branch: str) -> None:
    """Exercise 4.1: ``function(maps)`` = the per-branch rollout (B, N_patches) of ``maps =
    rec.self_attention(branch)``: heads fused by the mean, A' = rownorm(0.5 A + 0.5 I), R = A'_L ... A'_1, the
    CLS row over the patches. Reference: ``crossvit.attention_rollout(rec, branch)``, which the function may not
    call (nor the library's other rollouts).

    The function is called twice: on the recorded maps, and on the heads' maximum of each map (one "head" per
    map, as ``head_fusion="max"`` fuses them), whose rows no longer sum to 1, so that the renormalisation of
    0.5 A + 0.5 I matters (with the mean of heads it changes nothing). Reference of the second call:
    ``attention_rollout(rec, branch, head_fusion="max")``."""
    name, checker = "rollout", "check_rollout"
    if not isinstance(rec, AttentionRecorder):
        raise TypeError(f"{checker} needs the recorder of `with crossvit.record_attention(model) as rec:`, got "
                        f"{type(rec).__name__}")
    branch = check_branch(checker, rec.model, branch)
    maps = rec.self_attention(branch)
    reference = attention_rollout(rec, branch)  # (B, N - 1)
    peaked = [a.amax(dim=1, keepdim=True) for a in maps]  # (B, 1, N, N) each: rows sum to more than 1
    peaked_reference = attention_rollout(rec, branch, head_fusion="max")
    b, n = reference.shape[0], reference.shape[1] + 1
    answer = run_learner(name, function, list(maps), shortcuts=ROLLOUTS)
    atol, rtol, precision = 1e-5, 1e-4, ""
    if maps[0].dtype in (torch.float16, torch.bfloat16):
        # the maps are in half precision (a bfloat16 model's): each of the L factors rounds to the dtype's
        # precision, so compare at that precision instead of float32's (never because the answer is: a rollout of
        # float32 maps returned in bfloat16 is compared at float32's precision)
        eps = torch.finfo(maps[0].dtype).eps
        rtol = 4 * len(maps) * eps
        atol = rtol * float(reference.abs().max())
        precision = f" (compared at {maps[0].dtype}'s precision, {rtol:.2g}, the precision of the maps)"
    hints = {(b, n): "drop the CLS column: the map is R[CLS, patches], R[:, 0, 1:].",
             (b, n, n): "keep only the CLS token's row over the patches: R[:, 0, 1:].",
             (b, n - 1, n - 1): "the map is the CLS row of R over the patches, R[:, 0, 1:]."}
    answer = tensor_answer(name, answer, "the rollout over the patches", (b, n - 1), "(B, N_patches)", hints)
    compare(name, answer, reference, what="attention_rollout's map", atol=atol, rtol=rtol,
            diagnoses=_rollout_diagnoses(maps))
    second = run_learner(name, function, peaked, shortcuts=ROLLOUTS)
    second = tensor_answer(name, second, "the rollout of the heads' maximum", (b, n - 1), "(B, N_patches)", hints)
    compare(name, second, peaked_reference, what="attention_rollout's map with head_fusion='max' (the checker's "
            "second call gives your function each map's maximum over the heads, as one head: its rows sum to "
            "more than 1)", atol=atol, rtol=rtol, diagnoses=[
                (lambda: _full_rollout(peaked, renormalise=False),
                 "the rows of 0.5 A + 0.5 I were not renormalised. With the mean of the heads every row of A sums "
                 "to 1 and renormalising changes nothing, but a map whose rows do not sum to 1 (the heads' "
                 "maximum, or a map after discarding its weakest entries) needs it: divide each row by its sum."),
                *_rollout_diagnoses(peaked)])
    ok(name, f"your rollout equals attention_rollout(rec, '{branch}') for all {b} images, through "
              f"{len(maps)} layers{precision}, and also with the heads fused by the max, where renormalising "
              "the rows matters.")


@checker_for("spread_to_pixels")
def check_spread_to_pixels(function: object, model: CrossViT, patch_map: torch.Tensor, branch: str) -> None:
    """Exercise 4.2: ``function(patch_map, grid, image_size)`` = ``patch_map`` (B, N_patches of ``branch``)
    spread over the input pixels, (B, H, W): each input pixel takes the value of the patch that covers it
    (``grid = model.patch_grid(branch)``, ``image_size = model.image_size``). Reference:
    ``crossvit.patch_map_to_pixels``; the function may call neither it nor ``F.interpolate`` (whose nearest
    mode would do the exercise in one call: the point is to work out which patch covers each pixel)."""
    name, checker = "spread_to_pixels", "check_spread_to_pixels"
    model = check_model(checker, model)
    branch = check_branch(checker, model, branch)
    rows, cols = model.patch_grid(branch)
    if not isinstance(patch_map, torch.Tensor) or patch_map.ndim != 2 or patch_map.shape[1] != rows * cols:
        raise ValueError(f"{checker}: patch_map must be (B, {rows * cols}) for the {branch} branch")
    b, size, side = patch_map.shape[0], model.image_size, model.branch_image_size(branch)
    hints = {(b, rows, cols): "that is the grid; now give every input pixel the value of its patch.",
             (b, size, size, 1): "drop the trailing dimension of size 1."}
    if side != size:
        hints[(b, side, side)] = (
            f"that is the {side} px image the {branch} branch saw. Its {rows}x{cols} grid covers the whole "
            f"{size} px input, so each patch covers {size / rows:g} input pixels: pixel row y belongs to patch "
            f"row floor(y * {rows} / {size}).")
    pm = patch_map.detach().cpu().float()
    reference = patch_map_to_pixels(model, branch, pm)
    answer = run_learner(name, function, patch_map, (rows, cols), size, shortcuts=[
        Shortcut(patch_map_to_pixels, "crossvit.patch_map_to_pixels"), Shortcut(F.interpolate, "F.interpolate"),
        Shortcut(explain, "crossvit.explain")])
    answer = tensor_answer(name, answer, "the pixel map", (b, size, size), "(B, H, W)", hints)
    covered = (size / rows) * (size / cols)
    compare(name, answer, reference, what="patch_map_to_pixels's map", atol=1e-6, rtol=1e-5, diagnoses=[
        (lambda: patch_map_to_pixels(model, branch, pm.reshape(b, rows, cols).transpose(1, 2).reshape(b, -1)),
         "the grid is transposed: token k is patch (row k // cols, column k % cols)."),
        (lambda: reference / covered, "the values were divided by the patch area; spread them unchanged."),
    ])
    ok(name, f"your map equals patch_map_to_pixels for the {rows}x{cols} {branch} grid "
              f"({size / rows:g} input pixels per patch).")


@checker_for("gradient_weighted_attention")
def check_gradient_weighted_attention(function: object, rec: AttentionRecorder, site: str) -> None:
    """Exercise 4.3: ``function(attention, grad)`` = Chefer et al.'s A_bar = mean over heads of
    clamp(grad(A) * A, min=0) for the map at ``site`` of a recording made with ``grads=True`` after
    ``backward()``. Reference: ``crossvit.rollout.gradient_weighted``, which the function may not call."""
    name, checker = "gradient_weighted_attention", "check_gradient_weighted_attention"
    if not isinstance(rec, AttentionRecorder):
        raise TypeError(f"{checker} needs the recorder of `record_attention(model, grads=True)`, got "
                        f"{type(rec).__name__}")
    maps, grads = rec.sites, rec.gradients
    if site not in maps or site not in grads:
        raise ValueError(f"{checker}: no map with a gradient at {site!r}; recorded: {list(grads)[:4]}...")
    attention, grad = maps[site].detach(), grads[site]
    b, heads, nq, nk = attention.shape
    reference = gradient_weighted(attention, grad)
    product = grad * attention
    answer = run_learner(name, function, attention, grad, shortcuts=[
        Shortcut(gradient_weighted, "crossvit.rollout.gradient_weighted"),
        Shortcut(gradient_rollout, "crossvit.gradient_rollout")])
    answer = tensor_answer(name, answer, "the gradient-weighted map", (b, nq, nk), "(B, Nq, Nk)",
                            {(b, heads, nq, nk): "average over the heads (dimension 1)."})
    compare(name, answer, reference, what="gradient_weighted's map", atol=1e-7, rtol=1e-4, diagnoses=[
        (lambda: product.mean(dim=1), "negative contributions were kept: clamp grad * A at 0 before averaging."),
        (lambda: product.mean(dim=1).clamp(min=0),
         "the clamp came after the head average; clamp each head's grad * A first, then average."),
        (lambda: product.abs().mean(dim=1), "that is |grad * A|; keep the positive part only (clamp(min=0))."),
        (lambda: grad.clamp(min=0).mean(dim=1), "the attention itself is missing: weight the gradient by A."),
        (lambda: (grad.abs() * attention).mean(dim=1),
         "that is |grad| * A: the gradient's sign was dropped before multiplying; keep grad * A's positive part."),
    ])
    ok(name, f"your A_bar equals the library's at {site}: {100 * (reference > 0).float().mean().item():.0f}% "
              "of its entries are positive (only those feed the gradient rollout).")
