"""Checkers for the notebooks' exercises, and the small tooling that finds exercise cells and fills in solutions.

The notebooks are a course. Each exercise asks the learner to write one function that rebuilds a mechanism of
the library by hand (cut an image into patches, compute a CLS attention row from the layer's weights, roll out
attention, ...). In a notebook an exercise is two cells:

* the **exercise cell**, tagged ``exercise`` in its cell metadata: a stub ``def <name>(...)`` whose body raises
  ``NotImplementedError``, then a line that calls it to compute the answer;
* the **checker cell**, the next cell: ``exercises.check_<name>(answer, ...)``.

A checker recomputes the reference from the objects it is given (the model, the images, a recording), with the
library or with an independent computation, so it holds for any weights. A right answer prints one line starting
with a check mark; a wrong answer of any kind (``None``, a wrong type, a wrong shape, wrong values) raises
:class:`ExerciseError`, whose message says in a sentence what is wrong and hints at the fix. Where a common
mistake can be recognised (a missing scale, the wrong multiplication order, a transposed grid, ...), the message
names it.

Solutions live beside the notebooks in ``notebooks/solutions/<notebook stem>.py``, one top-level function per
exercise with the exercise's name (``%load -s <name> solutions/<stem>.py`` pastes one of them into a cell).
:func:`with_solutions` puts them into a notebook in place of the stubs; ``python -m crossvit.exercises solve
NOTEBOOK...`` writes such solved copies, and ``python -m crossvit.exercises list`` prints :data:`EXERCISES`.
"""

from __future__ import annotations

import argparse
import ast
import copy
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from .classes import class_names, top_classes
from .explain import _eval_mode, explain, patch_map_to_pixels
from .metrics import pointing_game
from .model import CrossViT, check_images
from .photos import read_image
from .preprocessing import _interpolation, data_config, preprocess, transform
from .recording import AttentionRecorder, attention_sites, record_attention
from .rollout import attention_rollout, gradient_weighted

__all__ = [
    "EXERCISES",
    "EXERCISE_TAG",
    "Exercise",
    "ExerciseError",
    "ExerciseTypeError",
    "check_cls_attention_row",
    "check_embed_patches",
    "check_eval_transform",
    "check_fusion_direction",
    "check_gradient_weighted_attention",
    "check_integrated_gradients",
    "check_logits_from_heads",
    "check_lr_schedule",
    "check_patchify",
    "check_pointing_hits",
    "check_record_with_hooks",
    "check_rollout",
    "check_saliency_map",
    "check_spread_to_pixels",
    "check_token_sequence",
    "check_top_predictions",
    "check_train_with_one_change",
    "exercise_cells",
    "exercise_name",
    "solution_functions",
    "solutions_path",
    "with_solutions",
]


# ----------------------------------------------------------------------------------------------------------------
# The exercises


@dataclass(frozen=True)
class Exercise:
    """One exercise: the function the learner writes (its checker is ``check_<name>``), where it is, how hard."""

    name: str
    notebook: str  # notebook stem, e.g. "01_patch_embedding"
    number: str  # "1.2": notebook 1, second exercise
    stars: int  # difficulty: 1 a few lines, 2 needs the notebook's explanation, 3 several steps to get right
    task: str  # one line: what to build and what it is compared with


EXERCISES: tuple[Exercise, ...] = (
    Exercise("patchify", "01_patch_embedding", "1.1", 1,
             "cut images into flattened patches with reshape/permute; compare with F.unfold"),
    Exercise("embed_patches", "01_patch_embedding", "1.2", 1,
             "apply the patch convolution's weights as one linear map; compare with the conv patch embedding"),
    Exercise("token_sequence", "01_patch_embedding", "1.3", 1,
             "prepend the CLS token and add the position embeddings; compare with the branch embedding"),
    Exercise("cls_attention_row", "02_dual_branch_encoding", "2.1", 2,
             "compute the CLS self-attention row from a layer's LayerNorm and q/k weights; compare with the "
             "recorded map"),
    Exercise("logits_from_heads", "02_dual_branch_encoding", "2.2", 1,
             "apply both classifier heads to the final CLS tokens and combine them; compare with the model's "
             "logits"),
    Exercise("record_with_hooks", "03_cross_attention_and_hooks", "3.1", 2,
             "record the cross-attention maps with your own forward hooks; compare with record_attention"),
    Exercise("fusion_direction", "03_cross_attention_and_hooks", "3.2", 3,
             "one fusion direction from the module's weights (project, attend, project back); compare with the "
             "recorded cross-attention map and the new CLS token"),
    Exercise("rollout", "04_attention_rollout", "4.1", 2,
             "per-branch attention rollout in a few lines; compare with attention_rollout"),
    Exercise("spread_to_pixels", "04_attention_rollout", "4.2", 2,
             "spread a large-branch patch map over the input pixels; compare with patch_map_to_pixels"),
    Exercise("gradient_weighted_attention", "04_attention_rollout", "4.3", 1,
             "Chefer et al.'s gradient-weighted attention of one site; compare with the library's"),
    Exercise("pointing_hits", "05_attributions_compared", "5.1", 1,
             "the pointing game by hand: do most of each map's maximal pixels lie on the object? compare with "
             "metrics.pointing_game"),
    Exercise("saliency_map", "05_attributions_compared", "5.2", 1,
             "a saliency map from one backward pass; compare with explain(..., 'saliency') (captum)"),
    Exercise("integrated_gradients", "05_attributions_compared", "5.3", 3,
             "integrated gradients as a Riemann sum; compare with captum's IntegratedGradients"),
    Exercise("lr_schedule", "06_training_your_own", "6.1", 1,
             "the trainer's warm-up + cosine learning-rate schedule; compare with crossvit.train.lr_factor"),
    Exercise("train_with_one_change", "06_training_your_own", "6.2", 2,
             "train again with one setting changed and measure its effect; the record is checked against the "
             "model"),
    Exercise("eval_transform", "07_imagenet_crossvit", "7.1", 2,
             "timm's eval preprocessing of a photo by hand (resize the shorter side, centre crop, normalise); "
             "compare with crossvit.preprocess"),
    Exercise("top_predictions", "07_imagenet_crossvit", "7.2", 1,
             "the top-k class names and probabilities from the logits; compare with crossvit.top_classes"),
)
"""Every exercise of the course, in notebook order."""


class ExerciseError(ValueError):
    """A wrong answer to an exercise; the message says what is wrong and how to fix it."""


class ExerciseTypeError(ExerciseError, TypeError):
    """An answer of the wrong type (``None``, a list where a tensor belongs, ...)."""


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers

Diagnosis = tuple[Callable[[], Any], str]  # (a wrong answer a common mistake produces, what that mistake is)


def _fail(name: str, message: str) -> NoReturn:
    raise ExerciseError(f"{name}: {message}")


def _ok(name: str, message: str) -> None:
    print(f"\u2713 {name}: {message}")


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _tensor_answer(name: str, answer: object, what: str, expected: Sequence[int], layout: str,
                   shape_hints: Mapping[tuple[int, ...], str] | None = None) -> torch.Tensor:
    """``answer`` as a detached float32 CPU tensor of shape ``expected``, or an ExerciseError saying why not."""
    if answer is None:
        raise ExerciseTypeError(
            f"{name}: the answer is None, but it should be {what}, a tensor of shape {layout} = {_shape(expected)}. "
            "Does your function end with `return ...`?")
    if isinstance(answer, tuple | list) and answer and all(isinstance(a, torch.Tensor) for a in answer):
        raise ExerciseTypeError(
            f"{name}: the answer is a {type(answer).__name__} of {len(answer)} tensors, but it should be one tensor "
            f"of shape {layout} = {_shape(expected)}; stack or concatenate them (torch.stack / torch.cat).")
    if not isinstance(answer, torch.Tensor):
        raise ExerciseTypeError(
            f"{name}: the answer is a {type(answer).__name__}, but it should be {what}, a torch.Tensor of shape "
            f"{layout} = {_shape(expected)}.")
    got = tuple(answer.shape)
    if got != tuple(expected):
        hint = (shape_hints or {}).get(got, "")
        raise ExerciseError(
            f"{name}: the answer has shape {_shape(got)}, but {what} has shape {layout} = {_shape(expected)}."
            + (f" Hint: {hint}" if hint else ""))
    if answer.is_complex() or answer.dtype == torch.bool:
        raise ExerciseTypeError(f"{name}: the answer has dtype {answer.dtype}; it should hold real numbers.")
    out = answer.detach().to("cpu", torch.float32)
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).sum().item()
        _fail(name, f"the answer has {bad} NaN or infinite entries; look for a division by zero or a log of 0.")
    return out


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=rtol)


def _compare(name: str, answer: torch.Tensor, reference: torch.Tensor, *, what: str, hint: str,
             diagnoses: Sequence[Diagnosis] = (), atol: float = 1e-5, rtol: float = 1e-4) -> float:
    """Return the largest difference if ``answer`` equals ``reference`` (both CPU float32); otherwise raise an
    ExerciseError naming the first recognised mistake, or else where the values differ, and ``hint``."""
    reference = reference.detach().to("cpu", torch.float32)
    error = (answer - reference).abs()
    if _close(answer, reference, atol, rtol):
        return error.max().item()
    for wrong, mistake in diagnoses:
        candidate = wrong()
        if isinstance(candidate, torch.Tensor):
            candidate = candidate.detach().to("cpu", torch.float32)
            if _close(answer, candidate, atol, rtol):
                _fail(name, f"the values are not {what} yet: {mistake}")
    worst = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
    _fail(name, f"the values differ from {what} by up to {error.max().item():.3g} (largest at index {worst}: "
                f"yours {answer[worst].item():.4g}, expected {reference[worst].item():.4g}). Hint: {hint}")


def _check_model(checker: str, model: object) -> CrossViT:
    if not isinstance(model, CrossViT):
        raise TypeError(f"{checker} needs the crossvit.CrossViT the exercise is about, got {type(model).__name__}")
    return model


def _check_branch(checker: str, model: CrossViT, branch: object) -> str:
    if branch not in model.branch_names:
        raise ValueError(f"{checker}: branch must be 'small' or 'large', got {branch!r}")
    return str(branch)


def _check_image_batch(checker: str, images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{checker}: images must be a float tensor (B, C, H, W), got {shape}")
    return images


def _site(checker: str, model: CrossViT, name: str):
    for site in attention_sites(model):
        if site.name == name:
            return site
    names = ", ".join(s.name for s in attention_sites(model))
    raise ValueError(f"{checker}: {name!r} is not an attention site of this model; its sites are {names}")


def _capture_inputs(module: nn.Module, run: Callable[[], Any]) -> tuple[Any, tuple]:
    """Run ``run()`` and return its result and the positional inputs ``module`` received (last call)."""
    seen: list[tuple] = []
    handle = module.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs))
    try:
        result = run()
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{type(module).__name__} did not run during the forward pass")
    return result, seen[-1]


def _target(checker: str, target: object, batch: int, num_classes: int) -> torch.Tensor:
    out = torch.as_tensor(target).long()
    if out.ndim == 0:
        out = out.expand(batch)
    if out.shape != (batch,) or (out < 0).any() or (out >= num_classes).any():
        raise ValueError(f"{checker}: target must be a class index or a ({batch},) tensor of them in "
                         f"[0, {num_classes}), got {target!r}")
    return out


def _int(checker: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{checker}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------------------
# 01 · patch embedding


def check_patchify(answer: object, images: torch.Tensor, patch_size: int) -> None:
    """Exercise 1.1: ``answer`` = ``images`` (B, C, H, W) cut into non-overlapping ``patch_size`` patches,
    (B, N, C * p * p): patches in row-major grid order, each flattened channel first (as ``conv.weight`` is).
    Reference: ``F.unfold``."""
    name = "patchify"
    images = _check_image_batch("check_patchify", images)
    p = _int("check_patchify", "patch_size", patch_size, 1)
    b, c, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"check_patchify: the image size {h}x{w} is not divisible by patch_size {p}")
    rows, cols = h // p, w // p
    n, d = rows * cols, c * p * p
    answer = _tensor_answer(
        name, answer, "the flattened patches", (b, n, d), "(B, N, C·p·p)",
        {(b, d, n): "that is F.unfold's own layout (B, C·p·p, N); transpose the last two dimensions.",
         (b, c, n, p * p): "flatten each patch's channels too: one vector of C·p·p numbers per patch.",
         (b, rows, cols, d): "flatten the grid: one row per patch, (B, rows·cols, C·p·p).",
         (b, c, rows, p, cols, p): "permute so that the grid dimensions come first, then reshape."})
    x = images.detach().to("cpu", torch.float32)
    reference = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p)
    grid = x.reshape(b, c, rows, p, cols, p)
    diagnoses = [
        (lambda: grid.permute(0, 2, 4, 3, 5, 1).reshape(b, n, d),
         "each patch is flattened pixel by pixel with the channels last (row, column, channel); conv.weight "
         "flattens channel first: permute to (B, rows, cols, C, p, p) before reshaping."),
        (lambda: grid.permute(0, 4, 2, 1, 3, 5).reshape(b, n, d),
         "the patches are in column-major order; token k must be patch (k // cols, k % cols), so the grid's row "
         "dimension comes before its column dimension."),
        (lambda: grid.permute(0, 2, 4, 1, 5, 3).reshape(b, n, d),
         "inside each patch, rows and columns are swapped: flatten (C, row, column), in that order."),
    ]
    _compare(name, answer, reference, what="F.unfold's patches", diagnoses=diagnoses, atol=1e-6, rtol=0,
             hint="reshape to (B, C, rows, p, cols, p), permute to (B, rows, cols, C, p, p), reshape to "
                  "(B, rows·cols, C·p·p).")
    _ok(name, f"your {b}x{n} patches of {d} numbers equal F.unfold's ({rows}x{cols} grid of {p} px patches).")


def _conv_embedding(checker: str, model: CrossViT, branch: str) -> nn.Conv2d:
    conv = getattr(model.embed[branch].patch_embed, "proj", None)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"{checker}: the {branch} branch of this model has no single-convolution patch "
                         "embedding (seed flavour or a 3-convolution stem); use a paper-flavour model")
    return conv


def _branch_image(checker: str, model: CrossViT, branch_image: object, branch: str) -> torch.Tensor:
    image = _check_image_batch(checker, branch_image)
    side = model.branch_image_size(branch)
    if image.shape[1:] != (model.in_chans, side, side):
        raise ValueError(f"{checker}: the {branch} branch patchifies ({model.in_chans}, {side}, {side}) images "
                         f"(model.branch_images(images)['{branch}']), got {tuple(image.shape)}")
    return image


def check_embed_patches(answer: object, model: CrossViT, branch_image: torch.Tensor, branch: str) -> None:
    """Exercise 1.2: ``answer`` = the patch tokens (B, N, D) of ``branch_image`` (the image the branch sees),
    computed as flattened patches times the convolution's weight matrix plus its bias. Reference:
    ``model.embed[branch].patch_embed``."""
    name, checker = "embed_patches", "check_embed_patches"
    model = _check_model(checker, model)
    branch = _check_branch(checker, model, branch)
    conv = _conv_embedding(checker, model, branch)
    image = _branch_image(checker, model, branch_image, branch)
    b, n, d = image.shape[0], model.num_patches(branch), conv.out_channels
    answer = _tensor_answer(
        name, answer, "the patch tokens", (b, n, d), "(B, N, D)",
        {(b, d, n): "that is the convolution's channel-first layout; transpose to one row per patch.",
         (n, d): "keep the batch dimension."})
    with torch.no_grad(), _eval_mode(model):
        reference = model.embed[branch].patch_embed(image)  # (B, N, D)
    bias = conv.bias.detach().cpu().float() if conv.bias is not None else None
    diagnoses = [] if bias is None else [
        (lambda: reference.cpu().float() - bias, "the convolution's bias is missing: add conv.bias.")]
    _compare(name, answer, reference, what="the conv patch embedding's tokens", diagnoses=diagnoses, atol=1e-4,
             rtol=1e-4, hint="tokens = patches @ conv.weight.reshape(D, -1).T + conv.bias, with the patches "
                             "flattened channel first as in exercise 1.1.")
    _ok(name, f"your tokens equal the {branch} branch's convolution output, {b} images x {n} patches x {d} "
              "numbers: a strided convolution is a linear map on flattened patches.")


def check_token_sequence(answer: object, model: CrossViT, branch_image: torch.Tensor, branch: str) -> None:
    """Exercise 1.3: ``answer`` = [CLS, patch tokens] + position embeddings, (B, 1 + N, D), for the image the
    branch sees. Reference: ``model.embed[branch](branch_image)`` in eval mode."""
    name, checker = "token_sequence", "check_token_sequence"
    model = _check_model(checker, model)
    branch = _check_branch(checker, model, branch)
    image = _branch_image(checker, model, branch_image, branch)
    embedding = model.embed[branch]
    with torch.no_grad(), _eval_mode(model):
        reference = embedding(image)  # (B, 1 + N, D)
        patches = embedding.patch_embed(image)
        cls = embedding.cls_token.expand(image.shape[0], -1, -1)
        pos = embedding.pos_embed
    b, n, d = reference.shape[0], reference.shape[1] - 1, reference.shape[2]
    answer = _tensor_answer(
        name, answer, "the token sequence", (b, 1 + n, d), "(B, 1 + N, D)",
        {(b, n, d): "the CLS token is missing: prepend it (torch.cat along dimension 1).",
         (1, 1 + n, d): "expand the CLS token to the batch (cls_token.expand(B, -1, -1)) before concatenating."})
    diagnoses = [
        (lambda: torch.cat((cls, patches), dim=1),
         "the position embeddings are missing: add embedding.pos_embed to the whole sequence."),
        (lambda: torch.cat((patches, cls), dim=1) + pos,
         "the CLS token is at the end; it goes in front, as token 0."),
        (lambda: torch.cat((cls, patches + pos[:, 1:]), dim=1),
         "the CLS token did not get its position embedding: add pos_embed after concatenating."),
    ]
    _compare(name, answer, reference, what="the branch embedding's tokens", diagnoses=diagnoses, atol=1e-5,
             hint="torch.cat((cls_token.expand(B, -1, -1), patch_embed(image)), dim=1) + pos_embed.")
    _ok(name, f"your (B, 1 + {n}, {d}) sequence equals model.embed['{branch}']: the CLS token is token 0 and "
              "every token carries its learned position.")


# ----------------------------------------------------------------------------------------------------------------
# 02 · dual-branch encoding


def check_cls_attention_row(answer: object, model: CrossViT, images: torch.Tensor, site: str) -> None:
    """Exercise 2.1: ``answer`` = the CLS token's row of the self-attention map at ``site`` (e.g.
    ``"blocks.2.large.self.1"``), (B, heads, 1 + N), computed from the layer's LayerNorm and q/k weights.
    Reference: the map ``record_attention`` records there."""
    name, checker = "cls_attention_row", "check_cls_attention_row"
    model = _check_model(checker, model)
    check_images(images, model)
    where = _site(checker, model, site)
    if where.kind != "self":
        raise ValueError(f"{checker}: {site!r} is a cross-attention site; this exercise is about self-attention")
    layer = model.blocks[where.block].encoders[where.branch].layers[where.index]
    attn = layer.attn

    def run() -> torch.Tensor:
        with record_attention(model, sites=lambda s: s == site) as rec:
            model(images)
        return rec.sites[site]

    with torch.no_grad(), _eval_mode(model):
        recorded, (tokens,) = _capture_inputs(layer, run)  # (B, heads, N, N); tokens (B, N, D)
    b, heads, n = recorded.shape[0], recorded.shape[1], recorded.shape[-1]
    answer = _tensor_answer(
        name, answer, "the CLS attention row of every head", (b, heads, n), "(B, heads, 1 + N)",
        {(b, heads, 1, n): "that is the query dimension of size 1: take [:, :, 0] (or squeeze(2)).",
         (b, heads, n, n): "that is the whole map; keep only the CLS token's query, row 0.",
         (b, n): "keep one row per head: do not average the heads."})
    with torch.no_grad(), _eval_mode(model):

        def row(normalise: bool = True, scale: bool = True, softmax: bool = True) -> torch.Tensor:
            x = layer.norm1(tokens) if normalise else tokens
            q, k, _ = attn.to_qkv(x).reshape(b, n, 3, heads, attn.dim_head).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
            scores = (q[:, :, :1] @ k.transpose(-2, -1))[:, :, 0]  # (B, H, N): the CLS query's scores
            scores = scores * (attn.attention_map.scale if scale else 1.0)
            return scores.softmax(dim=-1) if softmax else scores

        diagnoses = [
            (lambda: row(scale=False), "the scores are not scaled: multiply q·k by 1/sqrt(dim_head) "
                                        "(layer.attn.attention_map.scale) before the softmax."),
            (lambda: row(normalise=False), "the tokens were not normalised first: this is a pre-norm layer, so "
                                           "q and k are computed from layer.norm1(tokens)."),
            (lambda: row(softmax=False), "these are the raw scores: apply a softmax over the keys (the last "
                                         "dimension) so that each row sums to 1."),
        ]
        _compare(name, answer, recorded[:, :, 0], what="the recorded attention row", diagnoses=diagnoses,
                 atol=1e-5, rtol=1e-3,
                 hint="x = layer.norm1(tokens); q, k, v = layer.attn.to_qkv(x) split into 3 x (B, heads, N, "
                      "dim_head); softmax(q[:, :, :1] @ k.transpose(-2, -1) * scale, dim=-1)[:, :, 0].")
    _ok(name, f"your {heads} heads' CLS rows equal the recorded map at {site}; each sums to 1 over the "
              f"layer's {n} tokens, the CLS included.")


def check_logits_from_heads(answer: object, model: CrossViT, images: torch.Tensor) -> None:
    """Exercise 2.2: ``answer`` = the model's logits (B, classes) computed from ``model.forward_features`` by
    applying each branch's head (LayerNorm, then Linear on the CLS token) and combining the two. Reference:
    ``model(images)``."""
    name, checker = "logits_from_heads", "check_logits_from_heads"
    model = _check_model(checker, model)
    check_images(images, model)
    b, k = images.shape[0], model.num_classes
    answer = _tensor_answer(name, answer, "the model's logits", (b, k), "(B, classes)",
                            {(2, b, k): "combine the two heads' logits into one (B, classes) tensor.",
                             (b, 2, k): "combine the two heads' logits into one (B, classes) tensor."})
    with torch.no_grad(), _eval_mode(model):
        reference = model(images)
        features = model.forward_features(images)
        heads = {name_: model.heads[name_] for name_ in model.branch_names}
        per_head = {br: heads[br].fc(heads[br].norm(features[br][:, 0])) for br in model.branch_names}
        no_norm = {br: heads[br].fc(features[br][:, 0]) for br in model.branch_names}
    mean = model.arch.logit_reduction == "mean"
    diagnoses = [
        (lambda: per_head["small"] + per_head["large"],
         "these are the two heads' logits summed; this (paper-flavour) model averages them." if mean else ""),
        (lambda: (per_head["small"] + per_head["large"]) / 2,
         "these are the two heads' logits averaged; this (seed-flavour) model sums them." if not mean else ""),
        (lambda: per_head["small"], "these are the small head's logits alone; combine both heads."),
        (lambda: per_head["large"], "these are the large head's logits alone; combine both heads."),
        (lambda: (no_norm["small"] + no_norm["large"]) / (2 if mean else 1),
         "the heads' LayerNorm is missing: head.fc(head.norm(cls))."),
    ]
    diagnoses = [(wrong, mistake) for wrong, mistake in diagnoses if mistake]
    _compare(name, answer, reference, what="the model's logits", diagnoses=diagnoses, atol=1e-4, rtol=1e-4,
             hint="for each branch: head = model.heads[branch]; head.fc(head.norm(features[branch][:, 0])); "
                  "then " + ("average" if mean else "add") + " the two.")
    _ok(name, f"your logits equal model(images): the {'mean' if mean else 'sum'} of the two branch heads.")


# ----------------------------------------------------------------------------------------------------------------
# 03 · cross-attention and hooks


def check_record_with_hooks(answer: object, model: CrossViT, images: torch.Tensor, sites: str = "cross") -> None:
    """Exercise 3.1: ``answer`` = {site name: map} recorded with your own forward hooks on the sites' modules
    (``site.module``) during one forward pass, hooks removed afterwards. Reference: ``record_attention(model,
    sites=sites)``."""
    name, checker = "record_with_hooks", "check_record_with_hooks"
    model = _check_model(checker, model)
    check_images(images, model)
    left = [s.name for s in attention_sites(model) if s.module.observed]
    if left:
        _fail(name, f"{len(left)} hook(s) are still registered (e.g. on {left[0]}), so those sites stay on the "
                    "slow explicit path forever. Keep the handle that register_forward_hook returns and call "
                    "handle.remove() when the forward pass is done (in a `finally:` block).")
    with torch.no_grad(), _eval_mode(model), record_attention(model, sites=sites) as rec:
        model(images)
    reference = rec.sites
    if answer is None:
        raise ExerciseTypeError(f"{name}: the answer is None; return a dict {{site name: map}}. Does your "
                                "function end with `return ...`?")
    if not isinstance(answer, Mapping):
        raise ExerciseTypeError(f"{name}: the answer is a {type(answer).__name__}; return a dict mapping each "
                                f"site name (e.g. {next(iter(reference))!r}) to the map its hook saw.")
    missing = [s for s in reference if s not in answer]
    extra = [s for s in answer if s not in reference]
    if missing:
        _fail(name, f"{len(missing)} of the {len(reference)} sites are missing (e.g. {missing[0]!r}). Register a "
                    "hook on site.module for every site in the list, keyed by site.name.")
    if extra:
        _fail(name, f"unexpected keys {extra[:3]}: record exactly the sites {list(reference)}.")
    for site_name, expected in reference.items():
        value = answer[site_name]
        if isinstance(value, torch.Tensor) and not _close(value.detach().cpu().float(), expected.cpu().float(),
                                                          1e-5, 1e-4):
            same_as = [s for s, other in reference.items()
                       if s != site_name and _close(value.detach().cpu().float(), other.cpu().float(), 1e-5, 1e-4)]
            if same_as:
                _fail(name, f"under {site_name} you stored the map of {same_as[0]}: each hook must store under its "
                            "own site's name, e.g. a name bound when the hook is made (a default argument or "
                            "functools.partial), not a loop variable read when the hook runs.")
        layout = "(B, heads, 1, 1 + N_other)" if ".cross." in site_name else "(B, heads, N, N)"
        got = _tensor_answer(name, value, f"the map of {site_name}", expected.shape, layout)
        if not _close(got, expected.cpu().float(), 1e-5, 1e-4):
            _fail(name, f"the map of {site_name} differs from record_attention's. Hint: store the hook's `output` "
                        "argument (the module's forward output is the map), from one forward pass of the images.")
    _ok(name, f"your hooks recorded the same {len(reference)} maps as record_attention, and none is left "
              "registered.")


def _fusion_io(checker: str, model: CrossViT, images: torch.Tensor, query: str, block: int, fusion: int
               ) -> tuple[str, Any, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Site name, the CLSFusion module, its input CLS and other patches, and the recorded map and new CLS."""
    k = range(model.arch.num_blocks)[block]
    f = range(model.arch.fusion_layers)[fusion]
    site = f"blocks.{k}.{query}.cross.{f}"
    layer = model.blocks[k].fusions[f]

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        try:
            with record_attention(model, sites=lambda s: s == site) as rec:
                model(images)
        finally:
            handle.remove()
        return rec.sites[site], outputs[-1][model.branch_names.index(query)][:, :1]

    (recorded, new_cls), (small, large) = _capture_inputs(layer, run)
    own, other = (small, large) if query == "small" else (large, small)
    return site, getattr(layer, query), own[:, :1], other[:, 1:], recorded, new_cls


def check_fusion_direction(answer: object, model: CrossViT, images: torch.Tensor, query: str, block: int = -1,
                           fusion: int = -1) -> None:
    """Exercise 3.2: ``answer`` = ``(attention, new_cls)`` of one fusion direction of a paper-flavour model,
    computed from the module's weights: the ``query`` branch's CLS projected to the other width, the context
    [projected CLS, other patches] layer-normalised, attention with the CLS as the only query (B, heads, 1,
    1 + N_other), the residual added and the result projected back (B, 1, D_query). Reference: the recorded
    cross-attention map and the fusion layer's output CLS."""
    name, checker = "fusion_direction", "check_fusion_direction"
    model = _check_model(checker, model)
    check_images(images, model)
    query = _check_branch(checker, model, query)
    if model.flavour != "paper":
        raise ValueError(f"{checker}: this exercise follows the paper flavour's fusion; the model is "
                         f"{model.flavour!r}")
    other_branch = "large" if query == "small" else "small"
    b = images.shape[0]
    if answer is None:
        raise ExerciseTypeError(f"{name}: the answer is None; return the pair (attention, new_cls). Does your "
                                "function end with `return attention, new_cls`?")
    if isinstance(answer, torch.Tensor) or not isinstance(answer, tuple | list) or len(answer) != 2:
        got = f"a {type(answer).__name__}" + (f" of length {len(answer)}" if isinstance(answer, tuple | list)
                                               else "")
        raise ExerciseTypeError(f"{name}: the answer is {got}; return the pair (attention, new_cls), the "
                                "cross-attention map and the new CLS token.")
    with torch.no_grad(), _eval_mode(model):
        site, direction, cls, patches, recorded, new_cls = _fusion_io(checker, model, images, query, block, fusion)
        attn = direction.attn
        heads, n_other = recorded.shape[1], recorded.shape[-1]
        d_query = model.arch.branch(query).dim
        attention = _tensor_answer(
            name, answer[0], "the cross-attention map", (b, heads, 1, n_other), "(B, heads, 1, 1 + N_other)",
            {(b, heads, n_other): "keep the query dimension of size 1: (B, heads, 1, 1 + N_other).",
             (b, 1, n_other): "keep one map per head: do not average them.",
             (b, heads, n_other, n_other): "only the CLS is a query: compute q from context[:, :1] only."})
        z = direction.project_in(cls)  # (B, 1, D_other)

        def parts(normalise: bool = True, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
            context = torch.cat((z, patches), dim=1)
            context = direction.norm(context) if normalise else context
            q = attn._split_heads(attn.to_q(context[:, :1]))
            key, value = (attn._split_heads(t) for t in attn.to_kv(context).chunk(2, dim=-1))
            weights = ((q @ key.transpose(-2, -1)) * (attn.attention_map.scale if scale else 1.0)).softmax(-1)
            mixed = (weights @ value).transpose(1, 2).reshape(b, 1, attn.inner_dim)
            return weights, mixed

        _compare(name, attention, recorded, what="the recorded cross-attention map", atol=1e-5, rtol=1e-3,
                 diagnoses=[
                     (lambda: parts(normalise=False)[0],
                      "the context was not layer-normalised: apply fusion.norm to [projected CLS, other patches] "
                      "before computing q, k and v."),
                     (lambda: parts(scale=False)[0],
                      "the scores are not scaled: multiply by 1/sqrt(dim_head) (attn.attention_map.scale)."),
                 ],
                 hint="z = project_in(cls); context = norm(cat(z, other_patches)); q from context[:, :1] with "
                      "attn.to_q, k and v from the whole context with attn.to_kv, split into heads; "
                      "softmax(q @ k^T * scale).")
        answer_cls = _tensor_answer(
            name, answer[1], "the new CLS token", (b, 1, d_query), "(B, 1, D_query)",
            {(b, 1, z.shape[-1]): "the new CLS is still in the other branch's width: project it back with "
                                  "fusion.project_out.",
             (b, d_query): "keep the token dimension: (B, 1, D_query)."})
        weights, mixed = parts()
        out = attn.to_out(mixed)  # (B, 1, D_other)
        _compare(name, answer_cls, new_cls, what="the fusion layer's new CLS token", atol=1e-4, rtol=1e-3,
                 diagnoses=[
                     (lambda: direction.project_out(out),
                      "the residual is missing: add the projected CLS z to the attention output before "
                      "projecting back."),
                     (lambda: direction.project_out(z + mixed),
                      "the attention output skipped its output projection attn.to_out."),
                     (lambda: cls + direction.project_out(out),
                      "that is the seed flavour's residual (in the query's own width); the paper flavour adds z, "
                      "in the other width, before project_out."),
                 ],
                 hint="new_cls = project_out(z + attn.to_out(merge_heads(attention @ v))).")
    _ok(name, f"your fusion step equals the model's at {site}: the {query} CLS read {n_other - 1} {other_branch}"
              f"-branch patches and came back in its own width {d_query}.")


# ----------------------------------------------------------------------------------------------------------------
# 04 · rollout


def _full_rollout(maps: Sequence[torch.Tensor], reverse: bool = False, residual: bool = True,
                  fusion: str = "mean") -> torch.Tensor:
    """R[CLS, patches] with full (B, N, N) matrices in float64; for diagnosing wrong answers."""
    first = maps[0]
    b, _, n, _ = first.shape
    eye = torch.eye(n, dtype=torch.float64)
    result = eye.expand(b, n, n)
    for attention in maps:
        a = attention.detach().cpu().double()
        a = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[fusion]
        if residual:
            a = 0.5 * a + 0.5 * eye
            a = a / a.sum(dim=-1, keepdim=True)
        result = result @ a if reverse else a @ result
    return result[:, 0, 1:].float()


def check_rollout(answer: object, rec: AttentionRecorder, branch: str) -> None:
    """Exercise 4.1: ``answer`` = the per-branch rollout (B, N_patches) of ``rec.self_attention(branch)``: heads
    fused by the mean, A' = rownorm(0.5 A + 0.5 I), R = A'_L ... A'_1, the CLS row over the patches. Reference:
    ``crossvit.attention_rollout(rec, branch)``."""
    name, checker = "rollout", "check_rollout"
    if not isinstance(rec, AttentionRecorder):
        raise TypeError(f"{checker} needs the recorder of `with crossvit.record_attention(model) as rec:`, got "
                        f"{type(rec).__name__}")
    branch = _check_branch(checker, rec.model, branch)
    maps = rec.self_attention(branch)
    reference = attention_rollout(rec, branch)  # (B, N - 1)
    b, n = reference.shape[0], reference.shape[1] + 1
    answer = _tensor_answer(
        name, answer, "the rollout over the patches", (b, n - 1), "(B, N_patches)",
        {(b, n): "drop the CLS column: the map is R[CLS, patches], R[:, 0, 1:].",
         (b, n, n): "keep only the CLS token's row over the patches: R[:, 0, 1:].",
         (b, n - 1, n - 1): "the map is the CLS row of R over the patches, R[:, 0, 1:]."})
    _compare(name, answer, reference, what="attention_rollout's map", atol=1e-5, rtol=1e-4, diagnoses=[
        (lambda: _full_rollout(maps, reverse=True),
         "the product is in the wrong order: the last layer's matrix goes on the left, R = A'_L ... A'_1 "
         "(start from the first layer and left-multiply each next one)."),
        (lambda: _full_rollout(maps, residual=False),
         "the residual connection is missing: use A' = 0.5 A + 0.5 I (rows renormalised), not A."),
        (lambda: _full_rollout(maps, fusion="max"), "the heads were fused by the max; this exercise uses the mean."),
        (lambda: _full_rollout(maps, fusion="min"), "the heads were fused by the min; this exercise uses the mean."),
        (lambda: _full_rollout(maps[-1:]), "only the last layer went in: multiply through every layer."),
    ], hint="R = I; for A in maps (forward order): A = A.mean(1); A = 0.5 * A + 0.5 * I; A = A / A.sum(-1, "
            "keepdim=True); R = A @ R. Answer: R[:, 0, 1:].")
    _ok(name, f"your rollout equals attention_rollout(rec, '{branch}') for all {b} images, through "
              f"{len(maps)} layers.")


def check_spread_to_pixels(answer: object, model: CrossViT, patch_map: torch.Tensor, branch: str) -> None:
    """Exercise 4.2: ``answer`` = ``patch_map`` (B, N_patches of ``branch``) spread over the input pixels,
    (B, H, W): each input pixel takes the value of the patch that covers it. Reference:
    ``crossvit.patch_map_to_pixels``."""
    name, checker = "spread_to_pixels", "check_spread_to_pixels"
    model = _check_model(checker, model)
    branch = _check_branch(checker, model, branch)
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
    answer = _tensor_answer(name, answer, "the pixel map", (b, size, size), "(B, H, W)", hints)
    pm = patch_map.detach().cpu().float()
    reference = patch_map_to_pixels(model, branch, pm)
    covered = (size / rows) * (size / cols)
    _compare(name, answer, reference, what="patch_map_to_pixels's map", atol=1e-6, rtol=1e-5, diagnoses=[
        (lambda: patch_map_to_pixels(model, branch, pm.reshape(b, rows, cols).transpose(1, 2).reshape(b, -1)),
         "the grid is transposed: token k is patch (row k // cols, column k % cols)."),
        (lambda: reference / covered, "the values were divided by the patch area; spread them unchanged."),
    ], hint=f"index = torch.arange({size}) * {rows} // {size} gives each pixel row's patch row; "
            "grid[:, index][:, :, index] spreads a (B, rows, cols) grid.")
    _ok(name, f"your map equals patch_map_to_pixels for the {rows}x{cols} {branch} grid "
              f"({size / rows:g} input pixels per patch).")


def check_gradient_weighted_attention(answer: object, rec: AttentionRecorder, site: str) -> None:
    """Exercise 4.3: ``answer`` = Chefer et al.'s A_bar = mean over heads of clamp(grad(A) * A, min=0) for the
    map at ``site`` of a recording made with ``grads=True`` after ``backward()``. Reference:
    ``crossvit.rollout.gradient_weighted``."""
    name, checker = "gradient_weighted_attention", "check_gradient_weighted_attention"
    if not isinstance(rec, AttentionRecorder):
        raise TypeError(f"{checker} needs the recorder of `record_attention(model, grads=True)`, got "
                        f"{type(rec).__name__}")
    maps, grads = rec.sites, rec.gradients
    if site not in maps or site not in grads:
        raise ValueError(f"{checker}: no map with a gradient at {site!r}; recorded: {list(grads)[:4]}...")
    attention, grad = maps[site].detach(), grads[site]
    b, heads, nq, nk = attention.shape
    answer = _tensor_answer(name, answer, "the gradient-weighted map", (b, nq, nk), "(B, Nq, Nk)",
                            {(b, heads, nq, nk): "average over the heads (dimension 1)."})
    reference = gradient_weighted(attention, grad)
    product = grad * attention
    _compare(name, answer, reference, what="gradient_weighted's map", atol=1e-7, rtol=1e-4, diagnoses=[
        (lambda: product.mean(dim=1), "negative contributions were kept: clamp grad * A at 0 before averaging."),
        (lambda: product.mean(dim=1).clamp(min=0),
         "the clamp came after the head average; clamp each head's grad * A first, then average."),
        (lambda: product.abs().mean(dim=1), "that is |grad * A|; keep the positive part only (clamp(min=0))."),
        (lambda: grad.clamp(min=0).mean(dim=1), "the attention itself is missing: weight the gradient by A."),
    ], hint="(grad * attention).clamp(min=0).mean(dim=1).")
    _ok(name, f"your A_bar equals the library's at {site}: {100 * (reference > 0).float().mean().item():.0f}% "
              "of its entries are positive (only those feed the gradient rollout).")


# ----------------------------------------------------------------------------------------------------------------
# 05 · attributions


def _maximal_pixels(maps: torch.Tensor, relative: float) -> torch.Tensor:
    """(B, H*W) bool: the pixels of each map within ``relative`` of its maximum (0: exactly the maximum)."""
    flat = maps.double().reshape(maps.shape[0], -1)  # (B, H*W)
    top = flat.max(dim=1, keepdim=True).values  # (B, 1)
    return flat >= top - relative * top.abs()


def check_pointing_hits(answer: object, maps: torch.Tensor, masks: torch.Tensor) -> None:
    """Exercise 5.1: ``answer`` = (B,) bool, True where more than half of the *maximal pixels* of ``maps[i]``
    (those within a relative 1e-6 of its maximum) lie on the object, ``masks[i]``: the pointing game's default
    "majority" rule. Reference: ``crossvit.metrics.pointing_game(maps, masks).hits``."""
    name, checker = "pointing_hits", "check_pointing_hits"
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise ValueError(f"{checker}: maps must be a (B, H, W) tensor")
    if not isinstance(masks, torch.Tensor) or masks.shape != maps.shape:
        raise ValueError(f"{checker}: masks must be a (B, H, W) tensor like maps {tuple(maps.shape)}")
    b, h, w = maps.shape
    cpu_maps, cpu_masks = maps.detach().cpu().float(), masks.detach().cpu().bool()
    reference = pointing_game(cpu_maps, cpu_masks).hits.cpu()  # (B,) bool; checks the maps and masks too
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool):
        raise ExerciseTypeError(f"{name}: the answer is one number ({answer}), probably the score; return one hit "
                                f"per image, a (B,) = ({b},) bool tensor (its mean is the score).")
    if isinstance(answer, list | tuple):
        answer = torch.tensor(answer) if answer else None
    if isinstance(answer, torch.Tensor) and answer.shape == (b,) and answer.dtype != torch.bool:
        if answer.is_complex() or not ((answer == 0) | (answer == 1)).all():
            raise ExerciseTypeError(f"{name}: the answer has dtype {answer.dtype} with values other than 0/1; "
                                    "return a bool tensor, e.g. inside_count > maximal_count / 2.")
    if isinstance(answer, torch.Tensor):
        answer = answer.float()  # bool or 0/1: compared as bool below
    hits = _tensor_answer(name, answer, "one hit (True/False) per image", (b,), "(B,)",
                          {(b, h, w): "that is a map of the maximal pixels; keep one value per image, whether "
                                      "more than half of them lie on the object.",
                           (b, h * w): "that is one value per pixel; keep one value per image, whether more than "
                                       "half of the maximal pixels lie on the object.",
                           (b, 2): "those look like (row, col) points; the default rule counts all the maximal "
                                   "pixels, not one point."})
    if not torch.equal(hits.bool(), reference):
        inside = cpu_masks.reshape(b, -1)  # (B, H*W)
        near, exact = _maximal_pixels(cpu_maps, 1e-6), _maximal_pixels(cpu_maps, 0.0)
        share = (near & inside).sum(1) / near.sum(1)  # (B,) share of the maximal pixels on the object
        candidates = [
            (pointing_game(cpu_maps, cpu_masks, rule="first").hits.cpu(),
             "these are the hits of the single *first* maximum (rule='first'). On a patch map the maximum is a "
             "whole patch of equal pixels, and the first of them is its top-left corner, which favours objects "
             "up and to the left; count all the maximal pixels and ask whether more than half lie on the object."),
            ((near & inside).any(1),
             "one maximal pixel on the object is enough for your rule; a hit needs more than half of them there."),
            ((near & ~inside).sum(1) == 0,
             "your rule needs every maximal pixel on the object; more than half of them is enough."),
            (share >= 0.5, "exactly half of the maximal pixels on the object counts as a hit in your rule; it must "
                           "be more than half (share > 0.5)."),
            ((exact & inside).sum(1) * 2 > exact.sum(1),
             "the maximal pixels were found by exact equality with the maximum; float noise can split one patch's "
             "value, so take every pixel >= max - 1e-6 * |max|."),
        ]
        for wrong, mistake in candidates:
            if torch.equal(hits.bool(), wrong):
                _fail(name, mistake)
        wrong_images = (hits.bool() != reference).nonzero().flatten().tolist()
        _fail(name, f"image(s) {wrong_images[:5]} are wrong (on image {wrong_images[0]}, "
                    f"{share[wrong_images[0]].item():.0%} of the maximal pixels lie on the object). Hint: "
                    "maximal = maps[k] >= maps[k].max() - 1e-6 * maps[k].max().abs(); hit = (maximal & masks[k]).sum() "
                    "> maximal.sum() / 2.")
    _ok(name, f"your hits are right: {int(reference.sum())} of {b} maps put most of their maximal pixels on the "
              f"object (pointing game {reference.float().mean().item():.2f}).")


def _input_gradient(model: CrossViT, images: torch.Tensor, target: torch.Tensor, probability: bool = False
                    ) -> torch.Tensor:
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), _eval_mode(model):
        logits = model(x)
        scores = logits.softmax(dim=1) if probability else logits
        (grad,) = torch.autograd.grad(scores.gather(1, target.to(x.device)[:, None]).sum(), x)
    return grad.detach().cpu().float()


def check_saliency_map(answer: object, model: CrossViT, images: torch.Tensor, target: object) -> None:
    """Exercise 5.2: ``answer`` = |d logit[target] / d pixel|, the largest over the colour channels, (B, H, W).
    Reference: ``crossvit.explain(model, images, "saliency", target)`` (captum's Saliency)."""
    name, checker = "saliency_map", "check_saliency_map"
    model = _check_model(checker, model)
    check_images(images, model)
    b, c, h, w = images.shape
    target = _target(checker, target, b, model.num_classes)
    answer = _tensor_answer(name, answer, "the saliency map", (b, h, w), "(B, H, W)",
                            {(b, c, h, w): "reduce the colour channels: the largest |gradient| over dimension 1."})
    reference = explain(model, images, "saliency", target=target.to(images.device))
    grad = _input_gradient(model, images, target)
    _compare(name, answer, reference, what="captum's saliency map", atol=1e-6, rtol=1e-3, diagnoses=[
        (lambda: grad.amax(dim=1), "the absolute value is missing: take |gradient| before the channel maximum."),
        (lambda: grad.abs().sum(dim=1), "the channels were summed; take the largest |gradient| over them."),
        (lambda: grad.abs().mean(dim=1), "the channels were averaged; take the largest |gradient| over them."),
        (lambda: _input_gradient(model, images, target, probability=True).abs().amax(dim=1),
         "that is the gradient of the softmax probability; saliency differentiates the logit (the score before "
         "the softmax)."),
    ], hint="x = images.clone().requires_grad_(True); model(x).gather(1, target[:, None]).sum().backward(); "
            "x.grad.abs().amax(dim=1).")
    _ok(name, "your saliency map equals captum's (the model in eval mode, the logit of the target class).")


def check_integrated_gradients(answer: object, model: CrossViT, images: torch.Tensor, target: object,
                               steps: int) -> None:
    """Exercise 5.3: ``answer`` = integrated gradients from a black image (B, C, H, W) as the right Riemann sum
    (Sundararajan et al. 2017, eq. 3): (x - x') * (1/m) sum_{k=1..m} dF/dx (x' + k/m (x - x')), x' = 0, m =
    ``steps``, F the logit of ``target``. Reference: captum's ``IntegratedGradients`` with
    ``method="riemann_right"``."""
    from captum.attr import IntegratedGradients

    name, checker = "integrated_gradients", "check_integrated_gradients"
    model = _check_model(checker, model)
    check_images(images, model)
    m = _int(checker, "steps", steps, 2)
    b, c, h, w = images.shape
    target = _target(checker, target, b, model.num_classes).to(images.device)
    answer = _tensor_answer(name, answer, "the attributions", (b, c, h, w), "(B, C, H, W)",
                            {(b, h, w): "keep the colour channels; crossvit.explain sums them only afterwards."})
    x = images.detach()
    baseline = torch.zeros_like(x)

    def captum_ig(method: str) -> torch.Tensor:
        with _eval_mode(model), torch.enable_grad():
            return IntegratedGradients(model).attribute(x.clone().requires_grad_(True), baselines=baseline,
                                                        target=target, n_steps=m, method=method,
                                                        internal_batch_size=max(b, 16))

    def mean_gradient() -> torch.Tensor:
        return sum(_input_gradient(model, baseline + k / m * (x - baseline), target) for k in range(1, m + 1)) / m

    reference = captum_ig("riemann_right").detach().cpu().float()
    scale = reference.abs().max().item()
    _compare(name, answer, reference, what="captum's integrated gradients", atol=1e-4 * scale, rtol=1e-3, diagnoses=[
        (lambda: captum_ig("riemann_left"), "that is the left Riemann sum (k = 0 .. m-1); use the points "
                                            "k/m for k = 1 .. m, as in the paper."),
        (lambda: captum_ig("riemann_middle"), "that is the midpoint rule ((k + 0.5)/m); use k/m for k = 1 .. m."),
        (lambda: mean_gradient(), "that is the average gradient; multiply it by (x - baseline)."),
        (lambda: reference * m, "the gradients were summed, not averaged: divide by the number of steps."),
        (lambda: -reference, "the sign is flipped: integrate from the baseline to the image, (x - baseline)."),
    ], hint="for k in 1..m: point = baseline + k/m * (x - baseline); add the gradient of the target logit at "
            "point; attributions = (x - baseline) * (sum / m).")
    with torch.no_grad(), _eval_mode(model):
        gap = (model(x) - model(baseline)).gather(1, target[:, None])[:, 0].cpu()
    total = answer.sum(dim=(1, 2, 3))
    _ok(name, f"your attributions equal captum's ({m} steps). Completeness: they sum to F(x) - F(0) up to "
              f"{(total - gap).abs().max().item():.3g} (the logit gap is {gap.abs().mean().item():.3g} on "
              "average); more steps shrink that error.")


# ----------------------------------------------------------------------------------------------------------------
# 06 · training


def check_lr_schedule(answer: object, steps: int, warmup_steps: int) -> None:
    """Exercise 6.1: ``answer`` = the learning-rate multiplier at every step 0 .. steps-1 (a list or 1-D
    tensor): linear warm-up to 1 over ``warmup_steps`` steps, then cosine decay to 0. Reference:
    ``crossvit.train.lr_factor``."""
    from .train import lr_factor

    name, checker = "lr_schedule", "check_lr_schedule"
    steps = _int(checker, "steps", steps, 1)
    warmup = _int(checker, "warmup_steps", warmup_steps, 0)
    if isinstance(answer, list | tuple):
        if not all(isinstance(v, numbers.Real) for v in answer):
            raise ExerciseTypeError(f"{name}: the answer must hold one number per step; found "
                                    f"{next(type(v).__name__ for v in answer if not isinstance(v, numbers.Real))}.")
        answer = torch.tensor([float(v) for v in answer])
    factors = _tensor_answer(name, answer, "the multiplier of every step", (steps,), "(steps,)")
    reference = torch.tensor([lr_factor(s, steps, warmup) for s in range(steps)])

    def schedule(warm: Callable[[int], float], decay: Callable[[float], float]) -> torch.Tensor:
        out = []
        for s in range(steps):
            progress = min(1.0, (s - warmup) / max(1, steps - warmup))
            out.append(warm(s) if s < warmup else decay(progress))
        return torch.tensor(out)

    cosine = lambda p: 0.5 * (1 + math.cos(math.pi * p))  # noqa: E731
    _compare(name, factors, reference, what="the trainer's schedule", atol=1e-6, rtol=1e-5, diagnoses=[
        (lambda: schedule(lambda s: s / warmup, cosine),
         "the warm-up is one step late: step 0 already trains, so its multiplier is (step + 1) / warmup_steps."),
        (lambda: schedule(lambda s: (s + 1) / warmup, lambda p: 1 - p),
         "the decay is linear; the trainer decays along half a cosine, 0.5 * (1 + cos(pi * progress))."),
        (lambda: torch.tensor([cosine(s / max(1, steps)) for s in range(steps)]),
         "the warm-up is missing: rise linearly over the first warmup_steps steps."),
    ], hint="step < warmup: (step + 1) / warmup; else progress = (step - warmup) / (steps - warmup) and "
            "0.5 * (1 + cos(pi * progress)).")
    peak = int(reference.argmax())
    _ok(name, f"your schedule equals the trainer's: it peaks at step {peak} and ends at "
              f"{reference[-1].item():.3g}.")


# Settings that change only the measurement, not the training.
_MEASUREMENT_ONLY = {"eval_images", "eval_every", "device", "amp"}


def check_train_with_one_change(answer: object, baseline_record: Mapping[str, Any]) -> None:
    """Exercise 6.2: ``answer`` = ``(model, record)`` returned by ``crossvit.train.train`` for a TrainConfig that
    differs from the baseline run in exactly one setting. The checker re-evaluates the model on the held-out
    images its record names (so the record belongs to the model) and prints the effect of the change."""
    from .train import HELD_OUT_SEED_BASE, evaluate

    name, checker = "train_with_one_change", "check_train_with_one_change"
    if not isinstance(baseline_record, Mapping) or "train_config" not in baseline_record:
        raise ValueError(f"{checker}: baseline_record must be the record that train() returned for the baseline")
    if answer is None:
        raise ExerciseTypeError(f"{name}: the answer is None; return what train() returns, the pair (model, "
                                "record).")
    if not isinstance(answer, tuple | list) or len(answer) != 2:
        raise ExerciseTypeError(f"{name}: the answer is a {type(answer).__name__}; return the pair (model, record) "
                                "that crossvit.train.train returns.")
    model, record = answer
    if not isinstance(model, CrossViT):
        raise ExerciseTypeError(f"{name}: the first item is a {type(model).__name__}, not the trained "
                                "crossvit.CrossViT; return train(config) unchanged.")
    if not isinstance(record, Mapping) or not {"train_config", "held_out_accuracy"} <= set(record):
        raise ExerciseTypeError(f"{name}: the second item is not a training record (a dict with 'train_config' "
                                "and 'held_out_accuracy'); return train(config) unchanged.")
    base, new = baseline_record["train_config"], record["train_config"]
    changed = sorted(k for k in set(base) | set(new) if base.get(k) != new.get(k))
    if not changed:
        _fail(name, "this run has the same settings as the baseline; change one setting, e.g. "
                    "dataclasses.replace(config, augment=False).")
    if len(changed) > 1:
        _fail(name, f"{len(changed)} settings changed ({', '.join(changed)}); change exactly one, so that the "
                    "difference in the results can be put down to it.")
    (field,) = changed
    if field in _MEASUREMENT_ONLY:
        _fail(name, f"`{field}` changes how the run is measured, not how it trains; change a training setting "
                    "(lr, warmup_steps, batch_size, steps, augment, label_smoothing, weight_decay, train_images, "
                    "head_loss_weight, attention_entropy_weight, preset, seed).")
    held_x, held_y, _ = _held_out(new, HELD_OUT_SEED_BASE)
    device = next(model.parameters()).device
    scores = evaluate(model, held_x, held_y, device=device, amp=record.get("amp") == "bfloat16")
    if abs(scores["accuracy"] - record["held_out_accuracy"]) > 1.5 / len(held_y):
        _fail(name, f"the model scores {scores['accuracy']:.1%} on the held-out images its record names, but the "
                    f"record says {record['held_out_accuracy']:.1%}: the model and the record come from different "
                    "runs. Return train(config) unchanged.")
    _ok(name, f"you changed `{field}` from {base.get(field)!r} to {new.get(field)!r}: held-out accuracy "
              f"{baseline_record['held_out_accuracy']:.1%} -> {record['held_out_accuracy']:.1%}, final training "
              f"loss {baseline_record['final_train_loss']:.3f} -> {record['final_train_loss']:.3f}"
              + (" (a new seed measures run-to-run noise, not a setting)" if field == "seed" else "") + ".")


def _held_out(train_config: Mapping[str, Any], base: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from .data import make_shapes

    return make_shapes(int(train_config["eval_images"]), base + int(train_config["seed"]),
                       int(train_config["image_size"]))


# ----------------------------------------------------------------------------------------------------------------
# 07 · an ImageNet CrossViT


def _eval_transform_variant(image: Any, config: Mapping[str, Any], *, long_side: Callable[[float], int] = int,
                            shift: tuple[int, int] = (0, 0)) -> torch.Tensor | None:
    """timm's eval transform ("center" crop mode) of the PIL ``image`` with one slip built in: the longer side
    computed with ``long_side`` instead of ``int`` (truncation), or the crop moved by ``shift`` = (rows, columns).
    None where the slip cannot happen (the crop would leave the image)."""
    from torchvision.transforms import functional as TF

    _, size, _ = config["input_size"]
    short = math.floor(size / config["crop_pct"])
    width, height = image.size
    long = long_side(short * max(width, height) / min(width, height))
    new_w, new_h = (short, long) if width <= height else (long, short)
    top = int(round((new_h - size) / 2.0)) + shift[0]
    left = int(round((new_w - size) / 2.0)) + shift[1]
    if top < 0 or left < 0 or top + size > new_h or left + size > new_w:
        return None
    resized = TF.resize(image, [new_h, new_w], interpolation=_interpolation(config["interpolation"]))
    cropped = TF.crop(resized, top, left, size, size)
    return TF.normalize(TF.to_tensor(cropped), config["mean"], config["std"])


def check_eval_transform(answer: object, model: CrossViT, photo: Any) -> None:
    """Exercise 7.1: ``answer`` = the (C, H, W) float tensor that timm's eval transform makes of one ``photo`` (a
    path, PIL image or (H, W, 3) uint8 array) for ``model``'s data config: resize the shorter side to
    floor(H / crop_pct) with the config's interpolation, centre-crop H x W, scale to [0, 1], normalise with the
    config's mean and std. Reference: ``crossvit.preprocess(model, photo)[0]``."""
    name, checker = "eval_transform", "check_eval_transform"
    model = _check_model(checker, model)
    config = data_config(model)
    image = read_image(photo, f"{checker}: photo")  # RGB PIL image; errors name the problem
    reference = preprocess(model, photo)[0].detach().cpu().float()  # (C, H, W)
    c, size, _ = config["input_size"]
    short = math.floor(size / config["crop_pct"])
    width, height = image.size
    long = int(short * max(width, height) / min(width, height))
    resized_shape = (c, long, short) if width <= height else (c, short, long)
    hints = {(size, size, c): "that is channels last (H, W, C), as PIL and numpy store pixels; a tensor image is "
                              "channels first: permute(2, 0, 1).",
             (1, c, size, size): "that is a batch of one; return the single image (C, H, W).",
             (c, height, width): "that is the photo at its own size: resize it and crop the centre."}
    if config["crop_mode"] == "center":
        hints[resized_shape] = (f"the photo is resized ({resized_shape[1]} x {resized_shape[2]}) but not cropped: "
                                f"cut out the central {size} x {size}.")
    answer = _tensor_answer(name, answer, "the preprocessed photo", (c, size, size), "(C, H, W)", hints)
    mean = torch.tensor(config["mean"]).reshape(-1, 1, 1)
    std = torch.tensor(config["std"]).reshape(-1, 1, 1)
    unit = reference * std + mean  # the crop in [0, 1]
    interpolation = config["interpolation"]
    diagnoses: list[Diagnosis] = [
        (lambda mode=mode: transform(image, {**config, "interpolation": mode}),
         f"the photo was resized with {mode} interpolation; the data config asks for {interpolation} "
         f"(PIL: Image.Resampling.{interpolation.upper()}).")
        for mode in ("bilinear", "bicubic", "nearest") if mode != interpolation
    ]
    if config["crop_mode"] == "center":
        if short != size:
            diagnoses.append((lambda: transform(image, {**config, "crop_pct": 1.0}),
                              f"the shorter side was resized to {size} px, so nothing was cut off along it; resize "
                              f"it to floor({size} / crop_pct) = floor({size} / {config['crop_pct']}) = {short} px "
                              f"first, then cut out the central {size} x {size}."))
        diagnoses.append((lambda: transform(image, {**config, "crop_pct": 1.0, "crop_mode": "squash"}),
                          f"both sides were resized to {size} px, which squashes a photo that is not square; resize "
                          "the shorter side (keeping the aspect ratio), then crop the centre."))
        diagnoses.append((lambda: _eval_transform_variant(image, config, long_side=round),
                          f"the longer side was rounded to the nearest pixel; torchvision (and so timm) truncates "
                          f"it: int({short} * long / short), here {long} px."))
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
            diagnoses.append((lambda dy=dy, dx=dx: _eval_transform_variant(image, config, shift=(dy, dx)),
                              f"the crop is {dy:+d} px off vertically and {dx:+d} px horizontally; it starts at "
                              f"round((side - {size}) / 2) on each axis (Python's round)."))
    diagnoses += [
        (lambda: unit, "the values are in [0, 1] but not normalised: subtract the config's mean and divide by its "
                       "std, channel by channel."),
        (lambda: unit - mean, "the mean was subtracted, but the values were not divided by the std."),
        (lambda: (unit * 255 - mean) / std, "the pixels were normalised without being scaled to [0, 1] first: "
                                            "divide the 0-255 values by 255 before normalising."),
        (lambda: (unit * 255).round(), "these are the crop's 0-255 pixel values: divide by 255, then normalise."),
        (lambda: reference.flip(0), "the colour channels are in reverse order (BGR); keep PIL's RGB order."),
    ]
    hint = (f"resize the shorter side to {short} px ({interpolation}; the longer side int({short} * long / short)), "
            f"crop {size} x {size} starting at round((side - {size}) / 2), to a (C, H, W) float tensor divided by "
            "255, then (x - mean) / std per channel.")
    levels = ((answer - reference).abs() * std).max().item() * 255  # the largest difference in 0-255 pixel levels
    try:
        _compare(name, answer, reference, what="crossvit.preprocess's tensor", diagnoses=diagnoses, atol=1e-4,
                 rtol=0, hint=hint)
    except ExerciseError as err:
        if "the values differ from" in str(err) and levels <= 4:  # no named slip, and only a few levels off
            _fail(name, f"the values are at most {levels:.1f} pixel levels (of 255) from crossvit.preprocess's: the "
                        "steps are right, but the resizing rounds differently. timm resizes the 8-bit PIL image "
                        "(PIL's filter) and only then makes a float tensor; resize the PIL image, not a tensor.")
        raise
    _ok(name, f"your ({c}, {size}, {size}) tensor equals crossvit.preprocess: shorter side to {short} px "
              f"({interpolation}), the central {size} x {size}, scaled to [0, 1] and normalised per channel.")


Predictions = list[list[tuple[str, float]]]


def _prediction_lists(name: str, answer: object, b: int, k: int) -> Predictions:
    """``answer`` as B lists of k (name, probability) pairs, or an ExerciseTypeError/ExerciseError saying why
    not."""
    example = "[[('tabby, tabby cat', 0.41), ...], ...]"
    if answer is None:
        raise ExerciseTypeError(f"{name}: the answer is None; return one list per image of (name, probability) "
                                f"pairs, e.g. {example}. Does your function end with `return ...`?")
    if isinstance(answer, torch.Tensor) or not isinstance(answer, list | tuple):
        raise ExerciseTypeError(f"{name}: the answer is a {type(answer).__name__}; return a list with one list per "
                                f"image of (name, probability) pairs, e.g. {example}.")
    looks_like_one_image = all(isinstance(x, list | tuple) and len(x) == 2 and isinstance(x[0], str)
                               for x in answer)
    if len(answer) != b:
        if looks_like_one_image and len(answer) == k:
            _fail(name, f"the answer looks like the list of one image; return one list per image, {b} in all.")
        _fail(name, f"the answer has {len(answer)} entries, but there are {b} images: one list per image.")
    out: Predictions = []
    for i, row in enumerate(answer):
        if not isinstance(row, list | tuple):
            raise ExerciseTypeError(f"{name}: the entry of image {i} is a {type(row).__name__}; it should be a "
                                    f"list of {k} (name, probability) pairs.")
        if len(row) != k:
            _fail(name, f"image {i} has {len(row)} predictions, but k = {k} were asked for.")
        pairs = []
        for entry in row:
            if isinstance(entry, str):
                raise ExerciseTypeError(f"{name}: the entries are bare names ({entry!r}); pair each with its "
                                        "probability: (name, probability).")
            if isinstance(entry, numbers.Integral) or (isinstance(entry, torch.Tensor) and entry.numel() == 1):
                raise ExerciseTypeError(f"{name}: the entries look like class indices ({int(entry)}); look each "
                                        "name up (names[index]) and pair it with its probability.")
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise ExerciseTypeError(f"{name}: an entry of image {i} is {entry!r}; each entry must be a pair "
                                        "(name, probability).")
            label, probability = entry
            if isinstance(label, numbers.Integral) or isinstance(label, torch.Tensor):
                raise ExerciseTypeError(f"{name}: the pairs hold class indices ({int(label)}) where the names "
                                        "belong; look them up: names[index].")
            if not isinstance(label, str):
                raise ExerciseTypeError(f"{name}: a class name is a {type(label).__name__}; it should be the str "
                                        "from names[index].")
            if isinstance(probability, torch.Tensor) and probability.numel() == 1:
                probability = probability.item()
            if isinstance(probability, bool) or not isinstance(probability, numbers.Real):
                raise ExerciseTypeError(f"{name}: the probability paired with {label!r} is a "
                                        f"{type(probability).__name__}; it should be a number (float(p)).")
            pairs.append((label, float(probability)))
        out.append(pairs)
    return out


def check_top_predictions(answer: object, model: CrossViT, logits: torch.Tensor, k: int = 5) -> None:
    """Exercise 7.2: ``answer`` = for each image, its ``k`` most probable classes as (name, probability) pairs,
    best first: a softmax of ``logits`` (B, classes) over the classes, the k largest, named by
    ``crossvit.class_names(model)``. Reference: ``crossvit.top_classes(model, logits, k)``."""
    name, checker = "top_predictions", "check_top_predictions"
    model = _check_model(checker, model)
    classes = model.num_classes
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != classes:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{checker}: logits must be the model's output (B, {classes}), got {shape}")
    k = _int(checker, "k", k, 1)
    b, kk = logits.shape[0], min(k, classes)
    names = class_names(model)
    reference = [[(p.name, p.probability) for p in row] for row in top_classes(model, logits, k)]
    got = _prediction_lists(name, answer, b, kk)
    scores = logits.detach().float().cpu()
    probabilities = scores.softmax(dim=1)

    def close(a: float, b_: float) -> bool:
        return abs(a - b_) <= 1e-6 + 1e-4 * abs(b_)

    def same(mine: Predictions, theirs: Predictions, row_probabilities: torch.Tensor) -> bool:
        for i, (row, expected) in enumerate(zip(mine, theirs)):
            for (label, p), (ref_label, ref_p) in zip(row, expected):
                if not close(p, ref_p):
                    return False
                if label != ref_label and not any(  # a tie: another class with the same probability
                        n == label and close(row_probabilities[i, j].item(), ref_p) for j, n in enumerate(names)):
                    return False
        return True

    if same(got, reference, probabilities):
        best = reference[0][0]
        _ok(name, f"your top-{kk} of {b} image(s) equal crossvit.top_classes: a softmax over the {classes} "
                  f"classes, the {kk} largest, best first (image 0: {best[0]!r} at {best[1]:.1%}).")
        return

    def ranked(order: torch.Tensor, shown: torch.Tensor, offset: int = 0) -> Predictions:
        return [[(names[(int(j) + offset) % classes], float(shown[i, int(j)])) for j in row]
                for i, row in enumerate(order)]

    top = probabilities.topk(kk, dim=1).indices  # (B, k)
    bottom = probabilities.topk(kk, dim=1, largest=False).indices  # (B, k), least probable first
    candidates: list[tuple[Callable[[], Predictions], str]] = [
        (lambda: ranked(top, scores),
         "the numbers are the logits; turn them into probabilities with a softmax over the classes (dim=1)."),
        (lambda: ranked(top, probabilities * 100), "the probabilities are in percent; return them in [0, 1]."),
        (lambda: ranked(top, scores.log_softmax(dim=1)),
         "these are log-probabilities; the softmax itself gives the probabilities."),
        (lambda: ranked(top.flip(1), probabilities),
         "the order is reversed; the most probable class comes first (topk sorts that way)."),
        (lambda: ranked(bottom, probabilities),
         "these are the least probable classes; take the largest probabilities (topk(k), or "
         "argsort(descending=True))."),
        (lambda: ranked(bottom.flip(1), probabilities),
         "these are the least probable classes; take the largest probabilities (argsort(descending=True))."),
        (lambda: ranked(top, probabilities, offset=1),
         "the names are one place off: class index i is names[i] (0-based)."),
        (lambda: ranked(top, probabilities, offset=-1),
         "the names are one place off: class index i is names[i] (0-based)."),
    ]
    if b > 1:
        over_batch = scores.softmax(dim=0)
        candidates.append((lambda: ranked(over_batch.topk(kk, dim=1).indices, over_batch),
                           "the softmax ran over the images (dim=0); it must run over the classes (dim=1)."))
    for wrong, mistake in candidates:
        if same(got, wrong(), probabilities):
            _fail(name, mistake)
    for i, (row, expected) in enumerate(zip(got, reference)):
        for j, ((label, p), (ref_label, ref_p)) in enumerate(zip(row, expected)):
            if label != ref_label or not close(p, ref_p):
                _fail(name, f"image {i}, place {j + 1}: yours {label!r} ({p:.4g}), expected {ref_label!r} "
                            f"({ref_p:.4g}). Hint: probabilities = logits.softmax(dim=1); values, indices = "
                            "probabilities.topk(k, dim=1); pair names[index] with each value, best first.")
    _fail(name, "the predictions differ from crossvit.top_classes.")  # a tie resolved differently on two rows


# ----------------------------------------------------------------------------------------------------------------
# Notebook tooling: exercise cells and solutions

EXERCISE_TAG = "exercise"


def is_exercise_cell(cell: Mapping[str, Any]) -> bool:
    """True for a code cell tagged ``exercise`` in its metadata."""
    return cell.get("cell_type") == "code" and EXERCISE_TAG in cell.get("metadata", {}).get("tags", [])


def exercise_name(cell: Mapping[str, Any]) -> str:
    """The name of the one function an exercise cell defines (its checker is ``check_<name>``)."""
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    defs = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    if len(defs) != 1:
        raise ValueError(f"an exercise cell must define exactly one function, found {defs or 'none'}:\n{source}")
    return defs[0]


def exercise_cells(nb: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(cell index, exercise name) of every exercise cell of a notebook, in order."""
    return [(i, exercise_name(cell)) for i, cell in enumerate(nb["cells"]) if is_exercise_cell(cell)]


def solutions_path(notebook: str | Path) -> Path:
    """Where a notebook's solutions live: ``solutions/<notebook stem>.py`` beside it."""
    notebook = Path(notebook)
    return notebook.parent / "solutions" / f"{notebook.stem}.py"


def _function_lines(source: str) -> dict[str, tuple[int, int]]:
    """Line range (0-based start, end exclusive) of each top-level function of ``source``, decorators included."""
    ranges = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            ranges[node.name] = (start, node.end_lineno)
    return ranges


def solution_functions(path: str | Path) -> dict[str, str]:
    """The source of each top-level function of a solutions file, by name."""
    source = Path(path).read_text(encoding="utf-8")
    lines = source.splitlines()
    return {name: "\n".join(lines[start:end]) for name, (start, end) in _function_lines(source).items()}


def with_solutions(nb: Any, solutions: str | Path) -> Any:
    """A copy of notebook ``nb`` whose exercise cells call the solutions instead of the stubs.

    In each exercise cell the stub function is replaced by the solution function of the same name from the file
    ``solutions``; the rest of the cell (the line that computes the answer) stays. Only the function goes in, as
    ``%load -s <name> <solutions>`` would paste it: a solution must run with the names the notebook has imported
    (a solution that needs another module imports it inside the function).
    """
    functions = solution_functions(solutions)
    out = copy.deepcopy(nb)
    for index, name in exercise_cells(out):
        if name not in functions:
            raise ValueError(f"{solutions} has no solution for exercise {name!r} (cell {index})")
        cell = out["cells"][index]
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        lines = source.splitlines()
        start, end = _function_lines(source)[name]
        cell["source"] = "\n".join(lines[:start] + [functions[name]] + lines[end:])
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m crossvit.exercises list`` | ``solve NOTEBOOK... [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m crossvit.exercises",
                                     description="The course's exercises: list them, or write solved copies of "
                                                 "notebooks (stubs replaced by notebooks/solutions/<stem>.py).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print every exercise with its difficulty")
    solve = commands.add_parser("solve", help="write <out>/<notebook name> with the solutions filled in")
    solve.add_argument("notebooks", nargs="+", type=Path)
    solve.add_argument("--out", type=Path, default=Path("solved"), help="output directory (default: ./solved)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for ex in EXERCISES:
            print(f"{ex.number:>4}  {'*' * ex.stars:<3}  {ex.name:<28} {ex.task}")
        return 0
    import nbformat

    for notebook in args.notebooks:
        solutions = solutions_path(notebook)
        if not notebook.is_file() or not solutions.is_file():
            print(f"error: {notebook if not notebook.is_file() else solutions} not found", file=sys.stderr)
            return 1
        solved = with_solutions(nbformat.read(notebook, as_version=4), solutions)
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / notebook.name
        if target.resolve() == notebook.resolve():
            print(f"error: {target} would overwrite the notebook itself; choose another --out", file=sys.stderr)
            return 1
        nbformat.write(solved, target)
        print(f"{target}: {len(exercise_cells(solved))} exercise(s) solved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
