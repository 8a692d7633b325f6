"""Train a CrossViT on the synthetic shapes task (:mod:`crossvit.data`), from a notebook or the command line.

    python -m crossvit.train --preset shapes_tiny --steps 2000 --out runs/shapes_tiny

>>> model, record = train(TrainConfig(preset="shapes_tiny", steps=200))   # in a notebook
>>> record["held_out_accuracy"]

Recipe: AdamW (no weight decay on norms, biases, CLS tokens and positions), linear warm-up then cosine decay to
zero, cross-entropy on the model's logits plus ``head_loss_weight`` times the cross-entropy of each branch head on
its own (so that both heads carry the decision, not just their combination), optionally plus
``attention_entropy_weight`` times the mean entropy of the CLS tokens' attention rows
(:func:`cls_attention_entropy`; see ``TrainConfig``), random flips/transposes of the images (all 8 symmetries of
the square keep the class of every shapes image). Training images are generated once from data seeds in ``[0, 2**32)``; the
held-out images come from ``HELD_OUT_SEED_BASE + seed``, a seed range training never draws from. Runs are
deterministic for a given config, device and number of torch threads (a CPU sums in another order with another number
of threads, and a few hundred steps make that visible): the model, the data and the batches all come from ``seed``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import platform
import shlex
import sys
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import data
from .checkpoint import (
    check_checkpoint_name,
    check_output,
    check_state_file,
    checkpoint_paths,
    global_rng_state,
    load_training_state,
    restore_global_rng,
    save_checkpoint,
    save_training_state,
)
from .config import CrossViTConfig, PaperConfig, SeedConfig
from .data import HELD_OUT_SEED_BASE
from .model import CrossViT, check_images, count_parameters
from .presets import SHAPES_PRESETS
from .recording import AttentionRecorder, leaves_recordings_alone, record_attention
from .scenes import make_two_object_shapes
from .tasks import TASKS, get_task
from .utils import (
    DefaultsHelpFormatter,
    check_bool,
    check_finite_images,
    check_int,
    class_indices,
    eval_mode,
    leaves_global_rng_alone,
    progress_bar,
)
from .utils import resolve_device as _resolve_device

TRAIN_PRESETS = SHAPES_PRESETS
"""The shapes-task presets (:data:`crossvit.presets.SHAPES_PRESETS`), by name; ``TrainConfig.preset`` also
accepts a config object."""

_CHUNK_IMAGES = 2000  # training images are generated in chunks (each from its own data seed), kept as uint8


@dataclass
class TrainConfig:
    """Everything a training run depends on (the record stores it, so a run can be repeated)."""

    preset: str | CrossViTConfig = "shapes_tiny"  # a TRAIN_PRESETS name, or a PaperConfig / SeedConfig
    task: str = "shapes"  # the synthetic task (crossvit.tasks.TASKS): "shapes" or "two_scale"
    steps: int = 2000  # optimiser steps
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # peak learning rate (after warm-up)
    weight_decay: float = 0.05  # AdamW decay on weight matrices only
    warmup_steps: int = 200  # linear warm-up from 0 to lr; cosine decay to 0 afterwards
    seed: int = 0  # in [0, 2**32): seeds the model init, the training data and the batch order
    train_images: int = 20000  # size of the fixed training set, generated once before training
    eval_images: int = 2000  # held-out images (seed HELD_OUT_SEED_BASE + seed), scored every eval_every steps
    eval_every: int = 500  # steps between held-out evaluations (also one at the end); 0: only at the end
    image_size: int = 96  # side of the generated images; must equal the model's input size
    augment: bool = True  # random flips and transposes of each training image
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    # weight of each branch head's own cross-entropy, added to the loss of the combined logits: loss =
    # CE(logits) + w * (CE(small head) + CE(large head)); 0 trains the combination only (then one head may go silent)
    head_loss_weight: float = 0.5
    # weight of the mean entropy (nats) of the CLS tokens' head-averaged attention rows (keys: the CLS and the
    # patches), in every self- and cross-attention layer (cls_attention_entropy). Without it the model can read the object with near-uniform
    # attention (patch tokens of the background learn to carry nothing), so attention maps say little about what
    # it uses; the penalty asks each CLS to read few patches and leaves which ones to the labels (no mask is used).
    attention_entropy_weight: float = 0.0
    # share of the training set drawn as two-object scenes (crossvit.scenes.make_two_object_shapes), each with the
    # soft target 0.5 on each of its two classes: a model that saw only one object per image need not give a second
    # class any weight, and then no class-specific map can show that class's evidence
    two_object_fraction: float = 0.0
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU, which trains in float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (a config object given as ``preset`` becomes its ``to_dict()``)."""
        out = dataclasses.asdict(self)
        if not isinstance(self.preset, str):
            out["preset"] = self.preset.to_dict()
        return out


_INT_FIELDS = {"steps": 1, "batch_size": 1, "warmup_steps": 0, "train_images": 1, "eval_images": 1, "eval_every": 0,
               "image_size": 32, "seed": 0}  # each with its minimum; numpy integers are taken as ints
_NUMBER_FIELDS = ("lr", "weight_decay", "label_smoothing", "head_loss_weight", "attention_entropy_weight",
                  "two_object_fraction")


def _plain_copy(config: TrainConfig) -> TrainConfig:
    """A copy of a valid ``config`` (see :func:`validate`) whose numbers are Python ints and floats (numpy's would
    not go into JSON)."""
    return dataclasses.replace(config, **{name: int(getattr(config, name)) for name in _INT_FIELDS},
                               **{name: float(getattr(config, name)) for name in _NUMBER_FIELDS})


def model_config_of(config: TrainConfig) -> CrossViTConfig:
    """The model config a TrainConfig trains: its preset looked up, and checked against the data."""
    preset = config.preset
    if isinstance(preset, str):
        if preset not in TRAIN_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(TRAIN_PRESETS)}")
        model_config = TRAIN_PRESETS[preset]
    elif isinstance(preset, (PaperConfig, SeedConfig)):
        model_config = preset
    else:
        raise TypeError(f"TrainConfig.preset must be a preset name or a PaperConfig/SeedConfig, "
                        f"got {type(preset).__name__}")
    size = model_config.img_size if isinstance(model_config, PaperConfig) else model_config.image_size
    classes, task = model_config.num_classes, get_task(config.task)
    if size != config.image_size:
        raise ValueError(f"the model takes {size} px images but TrainConfig.image_size is {config.image_size}")
    if classes != task.num_classes:
        raise ValueError(f"the {task.name} task has {task.num_classes} classes but the model has "
                         f"num_classes={classes}")
    return model_config


def validate(config: TrainConfig) -> CrossViTConfig:
    """Raise a ValueError/TypeError naming the first bad field; return the model config to train."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train() expects a TrainConfig, got {type(config).__name__}")
    for name, minimum in _INT_FIELDS.items():
        check_int(f"TrainConfig.{name}", getattr(config, name), minimum, 2**32 - 1 if name == "seed" else None)
    for name in ("augment", "amp"):
        check_bool(f"TrainConfig.{name}", getattr(config, name))
    if config.batch_size > config.train_images:
        raise ValueError(f"TrainConfig.batch_size ({config.batch_size}) is larger than train_images "
                         f"({config.train_images})")
    for name in _NUMBER_FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"TrainConfig.{name} must be a number, got {type(value).__name__} {value!r:.60}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
    if config.lr == 0:
        raise ValueError("TrainConfig.lr must be > 0")
    if config.label_smoothing >= 1:
        raise ValueError(f"TrainConfig.label_smoothing must be < 1, got {config.label_smoothing}")
    if config.two_object_fraction > 1:
        raise ValueError(f"TrainConfig.two_object_fraction must be <= 1, got {config.two_object_fraction}")
    if config.two_object_fraction > 0 and config.task != "shapes":
        raise ValueError("TrainConfig.two_object_fraction mixes in two-object scenes of the shapes task; it needs "
                         f"task='shapes', got task={config.task!r}")
    resolve_device(config.device)
    return model_config_of(config)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else must name an available device."""
    return _resolve_device(device, "TrainConfig.device")


# -- data -----------------------------------------------------------------------------------------------------


def _split(config: TrainConfig) -> tuple[int, int]:
    """(single-object images, two-object scenes) of the training set."""
    scenes = round(config.train_images * config.two_object_fraction)
    return config.train_images - scenes, scenes


def training_data_seeds(config: TrainConfig) -> list[int]:
    """Data seeds of the training chunks (``_CHUNK_IMAGES`` images each), in ``[0, 2**32)``: the single-object
    chunks, then the two-object chunks (none unless ``two_object_fraction > 0``).

    Each is a draw from ``[0, 2**40)`` reduced to its low 32 bits. Before the data generators took every bit of a
    seed, torch used only those 32 bits, so these are the seeds of the images every earlier run (the bundled model
    included) was trained on; and they stay below the held-out seeds ``HELD_OUT_SEED_BASE + seed``."""
    g = torch.Generator().manual_seed(config.seed)
    chunks = sum(math.ceil(n / _CHUNK_IMAGES) for n in _split(config))
    draws = torch.randint(0, 2**40, (chunks,), generator=g, dtype=torch.int64)
    return [int(s) % 2**32 for s in draws]


def make_training_set(config: TrainConfig, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``train_images`` images as uint8 (n, 3, H, W) (a quarter of float32's memory) and their targets: class
    indices (n,) when every image holds one object (``two_object_fraction == 0``), else class probabilities
    (n, classes): 1 on a single object's class, 0.5 on each class of a two-object scene (which come last).
    ``F.cross_entropy`` takes either."""
    images, targets = [], []
    singles, scenes = _split(config)
    all_seeds = training_data_seeds(config)
    seeds = iter(all_seeds)
    # a bar counted by hand, one step per chunk made: one over the seeds would stop a step short (this loop takes
    # the seeds with next() and never asks for the end), which a notebook draws as a red, unfinished bar
    with progress_bar(total=len(all_seeds), desc="training data", unit="chunk", progress=progress, leave=False) as bar:
        for count, two_objects in ((singles, False), (scenes, True)):
            remaining = count
            while remaining > 0:
                n = min(_CHUNK_IMAGES, remaining)
                if two_objects:
                    x, pairs, _ = make_two_object_shapes(n, next(seeds), config.image_size, progress=False)
                    y = torch.zeros(n, data.NUM_CLASSES).scatter_(1, pairs, 0.5)
                else:
                    x, y, _ = get_task(config.task).make(n, next(seeds), config.image_size)  # no masks needed
                    y = F.one_hot(y, data.NUM_CLASSES).float() if scenes else y
                images.append(x.mul_(255).round_().to(torch.uint8))
                targets.append(y)
                remaining -= n
                bar.update()
    return torch.cat(images), torch.cat(targets)


def _hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image, whether the top class is a class of the image (the class, or either class of a scene)."""
    top = logits.argmax(dim=1)
    return top == target if target.ndim == 1 else target.gather(1, top[:, None])[:, 0] > 0


def make_held_out_set(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``eval_images`` float images (n, 3, H, W) and labels of the task, from the held-out seed
    ``HELD_OUT_SEED_BASE + seed``."""
    return get_task(config.task).make(config.eval_images, HELD_OUT_SEED_BASE + config.seed, config.image_size)[:2]


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Apply one of the square's 8 symmetries (random flips and transpose) to each image of (B, C, H, W)."""
    flips = torch.rand((3, images.shape[0]), generator=g) < 0.5  # (3, B): h-flip, v-flip, transpose
    flips = flips.to(images.device)[:, :, None, None, None]
    images = torch.where(flips[0], images.flip(-1), images)
    images = torch.where(flips[1], images.flip(-2), images)
    return torch.where(flips[2], images.transpose(-1, -2), images)


# -- optimisation ---------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight matrices decay; norms, biases, CLS tokens and position embeddings do not."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(("cls_token", "pos_embed")) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up to 1, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def cls_attention_entropy(rec: AttentionRecorder) -> torch.Tensor:
    """Mean entropy (nats) of the CLS tokens' attention rows in the recorded forward, heads averaged: for every
    self-attention site the CLS row over [CLS, the branch's patches], for every cross-attention site the query
    CLS's row over [its own projected CLS, the other branch's patches]. ``log(N)`` for a row spread evenly over N
    keys, 0 for a row on one key; a CLS that has nothing to read in a layer can keep its row on itself.
    Differentiable when the recording keeps the graph (``record_attention(model, detach=False)``)."""
    entropies = []
    for attention in rec.sites.values():  # (B, H, Nq, Nk)
        p = attention.float().mean(dim=1)[:, 0]  # (B, Nk): the CLS row
        entropies.append(-(p * torch.log(p.clamp(min=1e-12))).sum(dim=-1).mean())
    return torch.stack(entropies).mean()


@torch.no_grad()
@leaves_recordings_alone  # its forwards never replace the maps of a recording the caller has open
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 250,
             device: torch.device | str = "cpu", amp: bool = False, progress: bool = False) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on float images (n, 3, H, W) with labels (n,); for a CrossViT
    also the accuracy of each branch head alone (``small_head_accuracy``, ``large_head_accuracy``). The model runs
    in eval mode; every submodule's train/eval flag is restored afterwards; ``progress`` shows a bar over the
    batches. A ValueError / TypeError names a bad argument (an empty batch, NaN images, labels not class indices)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, CrossViT):
        check_images(images, model)
    elif not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise TypeError("images must be a float torch.Tensor (n, 3, H, W)")
    if len(images) == 0:
        raise ValueError("evaluate needs at least one image; got an empty batch")
    check_finite_images(images)
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError("labels must be a (B,) tensor with one class index per image")
    num_classes = getattr(model, "num_classes", None)
    labels = class_indices("labels", labels, len(images), num_classes if isinstance(num_classes, int) else 2**62)
    batch_size = check_int("batch_size", batch_size, 1)
    device = _resolve_device(device, "device")
    amp = check_bool("amp", amp)
    heads = isinstance(model, CrossViT)
    correct, loss_sum = 0, 0.0
    head_correct = {"small": 0, "large": 0}
    with eval_mode(model):  # every submodule's flag comes back as it was
        for i in progress_bar(range(0, len(labels), batch_size), desc="evaluate", unit="batch", progress=progress):
            x = images[i:i + batch_size].to(device)
            y = labels[i:i + batch_size].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                if heads:
                    by_head = model.branch_logits(model.forward_features(x))
                    logits = model.combine_heads(by_head).float()  # (b, num_classes)
                else:
                    logits = model(x).float()
            if i == 0 and int(labels.max()) >= logits.shape[1]:  # a module that does not say its num_classes
                raise ValueError(f"labels: class indices must be < the model's {logits.shape[1]} classes, got "
                                 f"{int(labels.max())}")
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(dim=1) == y).sum().item()
            if heads:
                for name, head_logits in by_head.items():
                    head_correct[name] += (head_logits.argmax(dim=1) == y).sum().item()
    scores = {"accuracy": correct / len(labels), "loss": loss_sum / len(labels)}
    if heads:
        scores.update({f"{name}_head_accuracy": c / len(labels) for name, c in head_correct.items()})
    return scores


@leaves_global_rng_alone  # the run seeds torch's global generator (initialisation, dropout); the caller's comes back
def train(config: TrainConfig, out_dir: str | Path | None = None, progress: bool = True, *,
          name: str | None = None, command: str | None = None, model: nn.Module | None = None,
          overwrite: bool = False, state_file: str | Path | None = None, state_every: int = 100
          ) -> tuple[CrossViT, dict[str, Any]]:
    """Train a CrossViT as ``config`` says; return it (eval mode) and a JSON-able record of the run.

    If ``out_dir`` is given, the model and record are saved there with :func:`crossvit.checkpoint.save_checkpoint`
    as ``<name>.safetensors`` / ``<name>.json`` (``name`` defaults to the preset name, else ``"model"``); both are
    checked (:func:`check_output`) before the first step, so a bad path never costs a training run; an existing
    checkpoint of that name is refused (FileExistsError) unless ``overwrite=True``. ``command`` is stored in the record (the CLI passes its exact command line).

    ``model`` trains a module you built instead of the preset's CrossViT, with the same data, batches and schedule
    (ablations use it for single-branch baselines); it must map (B, 3, H, W) images in [0, 1] to (B, 4) logits.
    A module that is not a CrossViT has no branch heads (no head loss) and cannot be saved with ``out_dir``.
    ``progress``: bars over the data made and the steps, with the scores of each held-out evaluation under them.

    ``state_file`` makes the run resumable: every ``state_every`` steps the whole training state (weights, optimiser,
    schedule, batch order, random state, histories) is written there atomically; a run started with a state file
    that exists continues from it (the same config, else a ValueError) and ends as the uninterrupted run would. The
    file is left in place at the end (delete it to train afresh).
    """
    model_config, config = validate(config), _plain_copy(config)  # validated first; the caller's is left as it is
    progress = check_bool("progress", progress)
    state_every = check_int("state_every", state_every, 1)
    default_name = config.preset if isinstance(config.preset, str) else "model"
    if out_dir is not None:  # fail now, not after the training
        check_output(out_dir, name or default_name, overwrite)
    state_path = None if state_file is None else check_state_file(state_file)
    if out_dir is not None and state_path is not None and state_path.resolve() in {
            path.resolve() for path in checkpoint_paths(Path(out_dir), name or default_name)}:
        raise ValueError(f"state_file {str(state_path)!r} is the checkpoint's own file; name the state otherwise")
    device = resolve_device(config.device)
    amp = config.amp and device.type == "cuda"
    started = time.perf_counter()

    (torch.manual_seed if device.type == "cuda" else torch.default_generator.manual_seed)(config.seed)  # CPU: not CUDA's
    if model is None:
        model = CrossViT(model_config)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    elif out_dir is not None and not isinstance(model, CrossViT):
        raise ValueError("only a crossvit.CrossViT can be saved as a checkpoint; pass out_dir=None")
    model = model.to(device)
    has_heads = isinstance(model, CrossViT)
    entropy_weight = config.attention_entropy_weight if has_heads else 0.0
    train_x, train_y = make_training_set(config, progress)
    eval_x, eval_y = make_held_out_set(config)
    fused = device.type in ("cpu", "cuda") or None  # one kernel for the whole update: ~4x faster than a loop
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.steps, config.warmup_steps))
    batches = torch.Generator().manual_seed(config.seed + 1)  # batch order and augmentation

    losses: list[float] = []
    entropies: list[float] = []  # mean CLS attention entropy per step, when the penalty is on
    recent_correct: deque[float] = deque(maxlen=50)
    eval_history: list[dict[str, float]] = []
    order = torch.randperm(len(train_y), generator=batches)
    cursor, first_step, earlier_s = 0, 0, 0.0
    saved = None if state_path is None else load_training_state(state_path, config.to_dict())
    if saved is not None:  # continue where the saved run stopped
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        batches.set_state(saved["generator"])
        restore_global_rng(saved, device)
        order, cursor, first_step, earlier_s = saved["order"], saved["cursor"], saved["step"], saved["elapsed"]
        losses, entropies, eval_history = saved["losses"], saved["entropies"], saved["eval_history"]
        recent_correct.extend(saved["recent"])
    model.train()
    bar = progress_bar(range(first_step, config.steps), desc="train", unit="step", progress=progress,
                       initial=first_step, total=config.steps)
    for step in bar:
        if cursor + config.batch_size > len(order):  # new epoch: reshuffle
            order, cursor = torch.randperm(len(train_y), generator=batches), 0
        index = order[cursor:cursor + config.batch_size]
        cursor += config.batch_size
        x = train_x[index].to(device).float().div_(255)  # (B, 3, H, W) uint8 -> float in [0, 1]
        y = train_y[index].to(device)
        if config.augment:
            x = augment(x, batches)
        recording = record_attention(model, detach=False) if entropy_weight > 0 else nullcontext()
        with recording as rec, torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if has_heads:
                by_head = {k: v.float() for k, v in model.branch_logits(model.forward_features(x)).items()}
                logits = model.combine_heads(by_head)  # (B, num_classes), exactly what model(x) returns
            else:
                logits = model(x).float()
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        if entropy_weight > 0:
            entropy = cls_attention_entropy(rec)
            loss = loss + entropy_weight * entropy
            entropies.append(entropy.item())
        if has_heads and config.head_loss_weight > 0:
            loss = loss + config.head_loss_weight * sum(
                F.cross_entropy(v, y, label_smoothing=config.label_smoothing) for v in by_head.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower TrainConfig.lr "
                                     f"(now {config.lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

        losses.append(loss.item())
        recent_correct.append(_hits(logits, y).float().mean().item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}",
                        acc=f"{sum(recent_correct) / len(recent_correct):.3f}", refresh=False)
        last = step + 1 == config.steps
        if last or (config.eval_every and (step + 1) % config.eval_every == 0):
            scores = evaluate(model, eval_x, eval_y, device=device, amp=amp)
            eval_history.append({"step": step + 1, **scores})
            if progress:  # the scores under the bar (also where TQDM_DISABLE hides the bar: a notebook shows them)
                heads = "".join(f", {k.split('_')[0]} head {v:.4f}" for k, v in scores.items() if k.endswith("_head_accuracy"))
                bar.write(f"step {step + 1}: held-out accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f}{heads}")
        if state_path is not None and (last or (step + 1) % state_every == 0):
            save_training_state(state_path, {
                "config": config.to_dict(), "step": step + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "generator": batches.get_state(), **global_rng_state(device), "order": order, "cursor": cursor,
                "losses": losses, "entropies": entropies, "recent": list(recent_correct), "eval_history": eval_history,
                "elapsed": earlier_s + time.perf_counter() - started})
    bar.close()
    model.eval()
    wall = earlier_s + time.perf_counter() - started

    tail = losses[-50:]
    record: dict[str, Any] = {
        "command": command,
        "train_config": config.to_dict(),
        "model_config": model.config.to_dict() if has_heads else None, "model_class": type(model).__name__,
        "preset": config.preset if isinstance(config.preset, str) else None,
        "steps": config.steps, "images_seen": config.steps * config.batch_size,
        "wall_time_s": round(wall, 2), "final_train_loss": sum(tail) / len(tail),  # mean of the last (up to) 50 steps
        "final_train_accuracy": sum(recent_correct) / len(recent_correct),  # ditto, on augmented batches
        "held_out_accuracy": eval_history[-1]["accuracy"],
        "held_out_loss": eval_history[-1]["loss"],
        "held_out_head_accuracy": ({k: eval_history[-1][f"{k}_head_accuracy"] for k in ("small", "large")}
                                   if has_heads else None),
        "held_out_images": config.eval_images, "held_out_seed": HELD_OUT_SEED_BASE + config.seed,
        "training_data_seeds": training_data_seeds(config),
        "eval_history": eval_history,
        "loss_history": [round(v, 5) for v in losses],  # one entry per step
        "attention_entropy_history": [round(v, 4) for v in entropies],  # one per step with the penalty on
        "parameter_count": count_parameters(model),
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "amp": "bfloat16" if amp else None,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }
    if out_dir is not None:
        record["checkpoint"] = str(save_checkpoint(model, out_dir, record=record, name=name or default_name,
                                                   overwrite=overwrite))
    return model, record


# -- command line ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m crossvit.train",
        description="Train a CrossViT on a synthetic task (shapes, two_scale) and save it as <out>/<name>.safetensors plus "
                    "<name>.json (config, training record, sha256). Prints the held-out accuracy and the path.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--preset", default=defaults.preset, help=f"model preset, one of: {', '.join(TRAIN_PRESETS)}")
    p.add_argument("--task", default=defaults.task, help=f"synthetic task, one of: {', '.join(TASKS)}")
    p.add_argument("--state-file", type=Path, default=None, metavar="FILE",
                   help="keep the training state in FILE (every 100 steps) and continue from it if it exists")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for the checkpoint (created if needed); omit to train without saving")
    p.add_argument("--name", default=None, help="checkpoint file stem (default: the preset name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing checkpoint of the same name in --out (refused otherwise)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of AdamW")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help="AdamW weight decay (weight matrices only)")
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps,
                   help="linear warm-up steps before the cosine decay")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="seed of the model init, data and batch order, in [0, 2**32)")
    p.add_argument("--train-images", type=int, default=defaults.train_images, help="size of the training set")
    p.add_argument("--eval-images", type=int, default=defaults.eval_images,
                   help="held-out images (from a seed range training never uses)")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every,
                   help="steps between held-out evaluations (0: only at the end)")
    p.add_argument("--image-size", type=int, default=defaults.image_size, help="side of the generated images")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="disable random flips/transposes of the training images")
    p.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                   help="cross-entropy label smoothing")
    p.add_argument("--head-loss-weight", type=float, default=defaults.head_loss_weight,
                   help="weight of each branch head's own cross-entropy added to the loss (0: combined logits only)")
    p.add_argument("--attention-entropy-weight", type=float, default=defaults.attention_entropy_weight,
                   help="weight of the mean entropy of the CLS tokens' attention over the patches (0: off)")
    p.add_argument("--two-object-fraction", type=float, default=defaults.two_object_fraction,
                   help="share of the training set that are two-object scenes (soft target 0.5 on each class)")
    p.add_argument("--device", default=defaults.device, help="'auto' (CUDA if available), 'cpu', 'cuda', ...")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bfloat16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (torch.set_num_threads); default: torch's choice. 1 is often faster "
                        "on a machine whose cores are busy with other work")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """The trainer's command line; returns the exit status: 0 done, 2 a bad setting (nothing trained), 1 a run that
    failed (a diverging loss: lower ``--lr``; a checkpoint that could not be written), 130 interrupted. Every
    failure is one ``error:`` line, never a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    config = TrainConfig(
        preset=args.preset, task=args.task, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, seed=args.seed,
        train_images=args.train_images, eval_images=args.eval_images, eval_every=args.eval_every,
        image_size=args.image_size, augment=args.augment, label_smoothing=args.label_smoothing,
        head_loss_weight=args.head_loss_weight, attention_entropy_weight=args.attention_entropy_weight,
        two_object_fraction=args.two_object_fraction, device=args.device, amp=args.amp,
    )
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    command, threads = shlex.join(["python", "-m", "crossvit.train", *argv]), torch.get_num_threads()
    try:  # the thread count goes back as it was when main() returns (it may be called from Python)
        torch.set_num_threads(args.threads or threads)
        if args.name is not None:
            check_checkpoint_name(args.name)  # also without --out: a bad name is a mistake either way
        _, record = train(config, args.out, progress=not args.quiet, name=args.name, command=command,
                          overwrite=args.overwrite, state_file=args.state_file)
    except (TypeError, ValueError, FileExistsError) as err:  # a bad setting: nothing was trained
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as err:  # the run itself failed: a diverging loss, a full disk, ...
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)
    print(f"held-out accuracy: {record['held_out_accuracy']:.4f} on {record['held_out_images']} images "
          f"(seed {record['held_out_seed']}); {record['parameter_count']:,} parameters; "
          f"{record['wall_time_s']:.1f} s on {record['device']}")
    if "checkpoint" in record:
        print(f"checkpoint: {record['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
