"""Checkers of notebook 06, training your own: exercises 6.1-6.2."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..model import CrossViT
from .common import (
    ExerciseError,
    ExerciseTypeError,
    checker_for,
    compare,
    fail,
    int_option,
    ok,
    plain,
    run_learner,
    tensor_answer,
)
from .guard import Shortcut

# ----------------------------------------------------------------------------------------------------------------
# 06 · training


@checker_for("lr_schedule")
def check_lr_schedule(function: object, steps: int, warmup_steps: int) -> None:
    """Exercise 6.1: ``function(step, steps, warmup_steps)`` = the learning-rate multiplier at ``step``: linear
    warm-up to 1 over ``warmup_steps`` steps, then cosine decay to 0; the checker asks it for every step
    0 .. steps-1. Reference: ``crossvit.train.lr_factor``, which the function may not call."""
    from ..train import lr_factor

    name, checker = "lr_schedule", "check_lr_schedule"
    steps = int_option(checker, "steps", steps, 1)
    warmup = int_option(checker, "warmup_steps", warmup_steps, 0)
    reference = torch.tensor([lr_factor(s, steps, warmup) for s in range(steps)])
    run_learner(name, function, 0, steps, warmup, shortcuts=[Shortcut(lr_factor, "crossvit.train.lr_factor")])
    answer = run_learner(name, lambda: [function(s, steps, warmup) for s in range(steps)],
                         shortcuts=[Shortcut(lr_factor, "crossvit.train.lr_factor")])
    if isinstance(answer, list | tuple):  # one number per step; a 0-d tensor (from torch.cos, say) is a number too
        answer = [plain(name, v).item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v for v in answer]
        if not all(isinstance(v, numbers.Real) for v in answer):
            raise ExerciseTypeError(f"{name}: the answer must hold one number per step; found "
                                    f"{next(type(v).__name__ for v in answer if not isinstance(v, numbers.Real))}.")
        answer = torch.tensor([float(v) for v in answer])
    factors = tensor_answer(name, answer, "the multiplier of every step", (steps,), "(steps,)")

    def schedule(warm: Callable[[int], float], decay: Callable[[float], float]) -> torch.Tensor:
        out = []
        for s in range(steps):
            progress = min(1.0, (s - warmup) / max(1, steps - warmup))
            out.append(warm(s) if s < warmup else decay(progress))
        return torch.tensor(out)

    cosine = lambda p: 0.5 * (1 + math.cos(math.pi * p))  # noqa: E731
    compare(name, factors, reference, what="the trainer's schedule", atol=1e-6, rtol=1e-5, diagnoses=[
        (lambda: schedule(lambda s: s / warmup, cosine),
         "the warm-up is one step late: step 0 already trains, so its multiplier is (step + 1) / warmup_steps."),
        (lambda: schedule(lambda s: (s + 1) / warmup, lambda p: 1 - p),
         "the decay is linear; the trainer decays along half a cosine, 0.5 * (1 + cos(pi * progress))."),
        (lambda: torch.tensor([cosine(s / max(1, steps)) for s in range(steps)]),
         "the warm-up is missing: rise linearly over the first warmup_steps steps."),
    ])
    # a second schedule the learner has not been shown (a table of the first one's values passes only the first)
    other = (steps + 7, warmup + 3)
    try:
        second = run_learner(name, lambda: [float(plain(name, v)) if isinstance(v, torch.Tensor) else v
                                            for v in (function(s, *other) for s in range(other[0]))],
                             shortcuts=[Shortcut(lr_factor, "crossvit.train.lr_factor")])
    except ExerciseError as err:
        raise type(err)(f"{err} (for steps={other[0]}, warmup_steps={other[1]}; the schedule was right for "
                        f"steps={steps}, warmup_steps={warmup}: compute it from the arguments, not from a "
                        "table)") from err
    expected = torch.tensor([lr_factor(s, *other) for s in range(other[0])])
    if not isinstance(second, list) or not all(isinstance(v, numbers.Real) for v in second) or not torch.allclose(
            torch.tensor([float(v) for v in second]), expected, atol=1e-6, rtol=1e-5):
        fail(name, f"your schedule is right for steps={steps}, warmup_steps={warmup} but not for steps={other[0]}, "
                   f"warmup_steps={other[1]}: compute it from the arguments, not from a table.")
    peak = int(reference.argmax())
    ok(name, f"your schedule equals the trainer's: it peaks at step {peak} and ends at "
              f"{reference[-1].item():.3g}.")


# Settings that change only the measurement, not the training.
_MEASUREMENT_ONLY = {"eval_images", "eval_every", "device", "amp"}


@checker_for("train_with_one_change")
def check_train_with_one_change(function: object, baseline_config: Any, baseline_record: Mapping[str, Any]
                                ) -> None:
    """Exercise 6.2: ``function(baseline_config)`` = ``(model, record)`` returned by ``crossvit.train.train`` for
    a TrainConfig that differs from the baseline run in exactly one setting. The checker re-evaluates the model on
    the held-out images its record names (so the record belongs to the model) and prints the effect of the
    change."""
    from ..train import HELD_OUT_SEED_BASE, TrainConfig, evaluate

    name, checker = "train_with_one_change", "check_train_with_one_change"
    if not isinstance(baseline_record, Mapping) or "train_config" not in baseline_record:
        raise ValueError(f"{checker}: baseline_record must be the record that train() returned for the baseline")
    if not isinstance(baseline_config, TrainConfig):
        raise TypeError(f"{checker}: baseline_config must be the baseline's TrainConfig, got "
                        f"{type(baseline_config).__name__}")
    answer = run_learner(name, function, baseline_config)
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
    needed = {"train_config", "held_out_accuracy", "final_train_loss", "loss_history"}
    if not isinstance(record, Mapping) or not needed <= set(record) or not isinstance(record["train_config"], Mapping):
        raise ExerciseTypeError(f"{name}: the second item is not a training record (a dict with {sorted(needed)}); "
                                "return train(config) unchanged.")
    base, new = baseline_record["train_config"], record["train_config"]
    changed = sorted(k for k in set(base) | set(new) if base.get(k) != new.get(k))
    if not changed:
        fail(name, "this run has the same settings as the baseline; change one setting, e.g. "
                    "dataclasses.replace(config, augment=False).")
    if len(changed) > 1:
        fail(name, f"{len(changed)} settings changed ({', '.join(changed)}); change exactly one, so that the "
                    "difference in the results can be put down to it.")
    (field,) = changed
    if field not in {f.name for f in dataclasses.fields(TrainConfig)}:
        fail(name, f"`{field}` is not a setting of TrainConfig; train with dataclasses.replace(config, <setting>=...) "
                   "and return what train() returns.")
    if field in _MEASUREMENT_ONLY:
        fail(name, f"`{field}` changes how the run is measured, not how it trains; change a training setting "
                    "(lr, warmup_steps, batch_size, steps, augment, label_smoothing, weight_decay, train_images, "
                    "head_loss_weight, attention_entropy_weight, preset, seed).")
    losses = record["loss_history"]
    if not isinstance(losses, Sequence) or len(losses) != new.get("steps") or not math.isclose(
            sum(losses[-50:]) / max(1, len(losses[-50:])), record["final_train_loss"], rel_tol=1e-6, abs_tol=1e-9):
        fail(name, "the record's loss history does not match its number of steps and final training loss: it was "
                   "not written by train(). Return train(config) unchanged.")
    with torch.random.fork_rng(devices=[]):  # the weights train() starts from (it seeds the init with the seed)
        torch.default_generator.manual_seed(int(new.get("seed", 0)))
        start = CrossViT(model.config)
    if all(torch.equal(a.cpu(), b) for a, b in zip(model.state_dict().values(), start.state_dict().values())):
        fail(name, "the model still has the weights it was initialised with: it was never trained. Return what "
                   "train(config) returns.")
    held_x, held_y, _ = _held_out(new, HELD_OUT_SEED_BASE)
    device = next(model.parameters()).device
    scores = evaluate(model, held_x, held_y, device=device, amp=record.get("amp") == "bfloat16")
    if abs(scores["accuracy"] - record["held_out_accuracy"]) > 1.5 / len(held_y):
        fail(name, f"the model scores {scores['accuracy']:.1%} on the held-out images its record names, but the "
                    f"record says {record['held_out_accuracy']:.1%}: the model and the record come from different "
                    "runs. Return train(config) unchanged.")
    ok(name, f"you changed `{field}` from {base.get(field)!r} to {new.get(field)!r}: held-out accuracy "
              f"{baseline_record['held_out_accuracy']:.1%} -> {record['held_out_accuracy']:.1%}, final training "
              f"loss {baseline_record['final_train_loss']:.3f} -> {record['final_train_loss']:.3f}"
              + (" (a new seed measures run-to-run noise, not a setting)" if field == "seed" else "") + ".")


def _held_out(train_config: Mapping[str, Any], base: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ..data import make_shapes

    return make_shapes(int(train_config["eval_images"]), base + int(train_config["seed"]),
                       int(train_config["image_size"]))
