"""What every checker shares: the list of exercises, the error types, and the helpers that turn an answer into a
tensor, compare it with a reference and name a recognised mistake."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
from torch import nn

from ..model import CrossViT
from ..recording import attention_sites
from ..utils import class_indices

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


def fail(name: str, message: str) -> NoReturn:
    raise ExerciseError(f"{name}: {message}")


def ok(name: str, message: str) -> None:
    print(f"\u2713 {name}: {message}")


def shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def tensor_answer(name: str, answer: object, what: str, expected: Sequence[int], layout: str,
                   shape_hints: Mapping[tuple[int, ...], str] | None = None) -> torch.Tensor:
    """``answer`` as a detached float32 CPU tensor of shape ``expected``, or an ExerciseError saying why not."""
    if answer is None:
        raise ExerciseTypeError(
            f"{name}: the answer is None, but it should be {what}, a tensor of shape {layout} = {shape_text(expected)}. "
            "Does your function end with `return ...`?")
    if isinstance(answer, tuple | list) and answer and all(isinstance(a, torch.Tensor) for a in answer):
        raise ExerciseTypeError(
            f"{name}: the answer is a {type(answer).__name__} of {len(answer)} tensors, but it should be one tensor "
            f"of shape {layout} = {shape_text(expected)}; stack or concatenate them (torch.stack / torch.cat).")
    if not isinstance(answer, torch.Tensor):
        raise ExerciseTypeError(
            f"{name}: the answer is a {type(answer).__name__}, but it should be {what}, a torch.Tensor of shape "
            f"{layout} = {shape_text(expected)}.")
    got = tuple(answer.shape)
    if got != tuple(expected):
        hint = (shape_hints or {}).get(got, "")
        raise ExerciseError(
            f"{name}: the answer has shape {shape_text(got)}, but {what} has shape {layout} = {shape_text(expected)}."
            + (f" Hint: {hint}" if hint else ""))
    if answer.is_complex() or answer.dtype == torch.bool:
        raise ExerciseTypeError(f"{name}: the answer has dtype {answer.dtype}; it should hold real numbers.")
    out = answer.detach().to("cpu", torch.float32)
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).sum().item()
        fail(name, f"the answer has {bad} NaN or infinite entries; look for a division by zero or a log of 0.")
    return out


def close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=rtol)


def compare(name: str, answer: torch.Tensor, reference: torch.Tensor, *, what: str, hint: str,
             diagnoses: Sequence[Diagnosis] = (), atol: float = 1e-5, rtol: float = 1e-4) -> float:
    """Return the largest difference if ``answer`` equals ``reference`` (both CPU float32); otherwise raise an
    ExerciseError naming the first recognised mistake, or else where the values differ, and ``hint``."""
    reference = reference.detach().to("cpu", torch.float32)
    error = (answer - reference).abs()
    if close(answer, reference, atol, rtol):
        return error.max().item()
    for wrong, mistake in diagnoses:
        candidate = wrong()
        if isinstance(candidate, torch.Tensor):
            candidate = candidate.detach().to("cpu", torch.float32)
            if close(answer, candidate, atol, rtol):
                fail(name, f"the values are not {what} yet: {mistake}")
    worst = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
    fail(name, f"the values differ from {what} by up to {error.max().item():.3g} (largest at index {worst}: "
                f"yours {answer[worst].item():.4g}, expected {reference[worst].item():.4g}). Hint: {hint}")


def check_model(checker: str, model: object) -> CrossViT:
    if not isinstance(model, CrossViT):
        raise TypeError(f"{checker} needs the crossvit.CrossViT the exercise is about, got {type(model).__name__}")
    return model


def check_branch(checker: str, model: CrossViT, branch: object) -> str:
    if branch not in model.branch_names:
        raise ValueError(f"{checker}: branch must be 'small' or 'large', got {branch!r}")
    return str(branch)


def check_image_batch(checker: str, images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{checker}: images must be a float tensor (B, C, H, W), got {shape}")
    return images


def find_site(checker: str, model: CrossViT, name: str):
    for site in attention_sites(model):
        if site.name == name:
            return site
    names = ", ".join(s.name for s in attention_sites(model))
    raise ValueError(f"{checker}: {name!r} is not an attention site of this model; its sites are {names}")


def capture_inputs(module: nn.Module, run: Callable[[], Any]) -> tuple[Any, tuple]:
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


def target_classes(checker: str, target: object, batch: int, num_classes: int) -> torch.Tensor:
    return class_indices(checker, target, batch, num_classes)  # 2.7, True or "2" are refused, never cast


def int_option(checker: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{checker}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)
