"""What every checker shares: the list of exercises, the error types, and the helpers that turn an answer into a
tensor, compare it with a reference and name a recognised mistake."""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
from torch import nn

from ..model import CrossViT
from ..recording import attention_sites, outer_recordings_paused, release_attention_memory
from ..utils import class_indices
from .guard import (
    Shortcut,
    _argument_names,
    _describe_hook,
    _hook_flags,
    _hook_owners,
    _hooks,
    _restore_weights,
    _same,
    _ShortcutWatch,
    _weights,
    checker_internals,
    global_state,
    learner_copy,
    model_state,
    remove_hooks,
    restore_global_state,
    restore_model_state,
)

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
    Exercise("lrp_attention", "05_attributions_compared", "5.4", 2,
             "AttnLRP's uniform rule on one attention layer: the same output, the gradients into q and k scaled by "
             "1/4 and into v by 1/2; compare with the rule written out term by term"),
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
    plain(name, answer)
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


_PLAIN = (torch.Tensor, nn.Parameter, getattr(nn, "Buffer", torch.Tensor))


def plain(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` if it is a plain tensor; a subclass of torch.Tensor (which may redefine what comparing it
    means, through ``__torch_function__``) is refused."""
    if type(tensor) not in _PLAIN:
        raise ExerciseTypeError(f"{name}: the answer is a {type(tensor).__name__}, a subclass of torch.Tensor; "
                                "return a plain torch.Tensor.")
    return tensor


def close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float) -> bool:
    plain("the comparison", a)
    plain("the comparison", b)
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=rtol)


def compare(name: str, answer: torch.Tensor, reference: torch.Tensor, *, what: str,
            diagnoses: Sequence[Diagnosis] = (), atol: float = 1e-5, rtol: float = 1e-4) -> float:
    """Return the largest difference if ``answer`` equals ``reference`` (both CPU float32); otherwise raise an
    ExerciseError naming the first recognised mistake, or else where the values differ (what is wrong, never how
    to write it: :func:`crossvit.exercises.hint` gives hints one at a time)."""
    plain(name, answer)
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
                f"yours {answer[worst].item():.4g}, expected {reference[worst].item():.4g}).")


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


# ----------------------------------------------------------------------------------------------------------------
# Running the learner's function: not attempted yet, shortcuts refused, nothing left behind


class NotAttempted(Exception):
    """The learner's function still raises NotImplementedError (the stub)."""


GRADING_ENV = "CROSSVIT_GRADING"
"""Set (to anything but "" or "0") while an autograder runs the notebooks: a stub is then a wrong answer (an
ExerciseError, 0 points) instead of a calm "not attempted yet"."""


def exercise(name: str) -> Exercise:
    """The :class:`Exercise` called ``name`` (its function's name), or with number ``name`` ("4.1")."""
    for ex in EXERCISES:
        if name in (ex.name, ex.number):
            return ex
    raise ValueError(f"no exercise {name!r}; the exercises are {', '.join(e.number for e in EXERCISES)}")


def run_learner(name: str, function: object, *args: Any, shortcuts: Sequence[Shortcut] = (),
                model: nn.Module | None = None, **kwargs: Any) -> Any:
    """Call the learner's ``function(*args, **kwargs)`` for exercise ``name`` and return what it returns.

    * ``function`` must be the function itself (a result is refused: only a function can be checked for
      shortcuts);
    * it gets copies of the inputs (tensors, arrays, images, lists and dicts), so nothing it does to them reaches
      the caller's objects or the checker's reference, and a function that changed an input in place is told so;
      the modules it gets (``model`` and any module among the arguments) are the real ones, and weights it
      changed are put back (and reported);
    * the stub's NotImplementedError becomes :class:`NotAttempted` (the checker then says so calmly);
    * any other error becomes an ExerciseError naming it (the traceback above the message shows where);
    * a call of one of ``shortcuts`` (the library functions the exercise rebuilds) is refused;
    * nothing is left behind: torch's grad mode, the train/eval mode of every submodule of ``model`` and the
      weights are restored, and hooks of every kind the function registered on the modules (or torch's global
      module hooks) and did not remove are removed (and reported);
    * so are changes to the modules' structure (a parameter or submodule replaced, a method set on an instance,
      an attribute changed, ``requires_grad``), and to torch's or the library's global state (a function of torch,
      builtins or crossvit replaced, the default dtype): put back, then refused, since a checker cannot check an
      answer that changed what it is compared with;
    * the checkers' own functions are shortcuts too, and so is running work where the watch cannot see it (a new
      thread or process, the profiler the watch uses switched off).
    """
    if not callable(function):
        raise ExerciseTypeError(
            f"{name}: pass your function itself, as in `exercises.check_{name}({name}, ...)`, not what it returns "
            f"(got a {type(function).__name__}): the checker calls it on its own inputs.")
    modules = [m for m in (model, *args, *kwargs.values()) if isinstance(m, nn.Module)]
    grad_mode = torch.is_grad_enabled()
    modes = [(m, m.training) for module in modules for m in module.modules()]
    owners = _hook_owners(modules)
    hooks_before, flags_before = _hooks(owners), _hook_flags(owners)
    weights = _weights(modules)
    structure, world = model_state(modules), global_state()
    copies = [learner_copy(a) for a in args]
    kw_copies = {k: learner_copy(v) for k, v in kwargs.items()}
    own = getattr(function, "__code__", None)  # a checker's wrapper around the learner's function is no shortcut
    watch = _ShortcutWatch([*shortcuts, *(s for s in checker_internals() if s.target is not own)], escapes=True)
    try:
        with watch:
            result = function(*copies, **kw_copies)
    except NotImplementedError:
        raise NotAttempted from None
    except ExerciseError:
        raise
    except Exception as err:  # noqa: BLE001 - any bug of the learner's becomes a sentence (traceback kept above)
        raise ExerciseError(f"{name}: your function raised {type(err).__name__}: {err}") from err
    finally:
        torch.set_grad_enabled(grad_mode)
        for m, training in modes:
            m.training = training
        left = _hooks(owners) - hooks_before
        remove_hooks(owners, left)
        for (ident, flag), value in flags_before.items():
            setattr(owners[ident], flag, value)
        changed_weights = _restore_weights(weights)
        changed_structure, changed_world = restore_model_state(structure), restore_global_state(world)
    if watch.escaped:
        fail(name, f"your function runs work where the checker cannot follow it ({watch.escaped[0]}); compute the "
                   "answer in the function itself.")
    if changed_world:
        fail(name, f"your function replaced or changed {', '.join(changed_world[:3])}"
                   + (" and more" if len(changed_world) > 3 else "") + "; the checker put it back. A function must "
                   "compute its answer, not change the tools it is checked with.")
    if watch.seen:
        used = ", ".join(s.label for s in watch.seen)
        fail(name, f"your function calls {used}, which this exercise asks you to rebuild yourself; it must compute "
                   "the same result without calling it.")
    names = _argument_names(function, args, kwargs)
    changed = [n for n, a, c in zip(names, args, copies) if not _same(a, c)]
    changed += [k for k, v in kwargs.items() if not _same(v, kw_copies[k])]
    if changed:
        fail(name, f"your function changed its input `{changed[0]}` in place (an in-place operation such as "
                   f"`{changed[0]}.abs_()` or `.zero_()`, or an assignment into it). A function must leave what it "
                   "is given as it was: compute new tensors (`x.abs()`, `x.clone()`) instead. The checker gave "
                   "your function copies, so your own tensors are unchanged.")
    if changed_weights:
        fail(name, f"your function changed the weights of the module it was given (`{changed_weights[0]}`"
                   + (f" and {len(changed_weights) - 1} more" if len(changed_weights) > 1 else "")
                   + ") in place; the checker put them back. Read weights, never write them.")
    if changed_structure:
        fail(name, f"your function changed the model it was given ({', '.join(changed_structure[:3])}"
                   + (" and more" if len(changed_structure) > 3 else "") + "); the checker put it back. Read the "
                   "model's modules and weights, never replace or change them.")
    if left:
        module_names = {id(m): n or "the model" for module in modules for n, m in module.named_modules()}
        module_names |= {id(t): n for module in modules for n, t in
                         [*module.named_parameters(), *module.named_buffers()]}
        what = sorted(_describe_hook(owners, module_names, key) for key in left)
        fail(name, f"your function left {len(left)} hook(s) registered after it returned ({'; '.join(what[:3])}"
                   + ("; ..." if len(what) > 3 else "") + "); the checker removed them, so your next attempt starts "
                   "clean: every hook must be removed before returning (handle.remove(), in a finally: block).")
    return result


def checker_for(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorator for ``check_<name>``: an exercise not attempted yet prints one calm line instead of an error, and
    every wrong answer's message ends by pointing at :func:`crossvit.exercises.hint`."""
    ex = exercise(name)

    def decorate(check: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(check)
        def wrapped(*args: Any, **kwargs: Any) -> None:
            try:
                with outer_recordings_paused():  # the checker's forwards never replace a caller's recorded maps
                    check(*args, **kwargs)
            except NotAttempted:
                if os.environ.get(GRADING_ENV, "") not in ("", "0"):
                    raise ExerciseError(f"{name}: not attempted (the function still raises "
                                        "NotImplementedError)") from None
                print(f"\u2026 exercise {ex.number} ({name}) not attempted yet: write `{name}` in the cell above, "
                      "run it, then run this cell again.")
            except ExerciseError as err:
                if "exercises.hint(" not in str(err):
                    err.args = (f"{err} (exercises.hint({ex.number!r}) gives a hint.)",)
                raise
            finally:  # the map memory the checker's recordings kept on the model goes, as after explain()
                for value in (*args, *kwargs.values()):
                    model = getattr(value, "model", value)  # a recorder's model, or the model itself
                    if isinstance(model, CrossViT):
                        release_attention_memory(model)
        return wrapped

    return decorate
