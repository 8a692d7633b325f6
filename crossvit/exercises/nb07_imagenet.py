"""Checkers of notebook 07, an ImageNet CrossViT: exercises 7.1-7.2."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..classes import class_names, top_classes
from ..model import CrossViT
from ..photos import read_image
from ..preprocessing import data_config, interpolation_mode, preprocess, transform
from .common import (
    Diagnosis,
    ExerciseError,
    ExerciseTypeError,
    check_model,
    checker_for,
    compare,
    fail,
    int_option,
    ok,
    run_learner,
    tensor_answer,
)
from .guard import Shortcut

# ----------------------------------------------------------------------------------------------------------------
# 07 · an ImageNet CrossViT


def _preprocessing_shortcuts() -> list[Shortcut]:
    out = [Shortcut(preprocess, "crossvit.preprocess"), Shortcut(transform, "crossvit.preprocessing.transform")]
    try:
        from timm.data import create_transform, transforms_factory
    except ImportError:  # timm is optional: nothing of it to call then
        return out
    return [*out, Shortcut(create_transform, "timm's create_transform"),
            Shortcut(transforms_factory.transforms_imagenet_eval, "timm's transforms_imagenet_eval")]


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
    resized = TF.resize(image, [new_h, new_w], interpolation=interpolation_mode(config["interpolation"]))
    cropped = TF.crop(resized, top, left, size, size)
    return TF.normalize(TF.to_tensor(cropped), config["mean"], config["std"])


@checker_for("eval_transform")
def check_eval_transform(function: object, model: CrossViT, photo: Any) -> None:
    """Exercise 7.1: ``function(photo, config)`` = the (C, H, W) float tensor that timm's eval transform makes of
    one ``photo`` (a path, PIL image or (H, W, 3) uint8 array) for ``config = crossvit.data_config(model)``: resize the shorter side to
    floor(H / crop_pct) with the config's interpolation, centre-crop H x W, scale to [0, 1], normalise with the
    config's mean and std. Reference: ``crossvit.preprocess(model, photo)[0]``; the function may call neither it
    nor timm's transforms."""
    name, checker = "eval_transform", "check_eval_transform"
    model = check_model(checker, model)
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
    answer = run_learner(name, function, photo, dict(config), shortcuts=_preprocessing_shortcuts())
    answer = tensor_answer(name, answer, "the preprocessed photo", (c, size, size), "(C, H, W)", hints)
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
    levels = ((answer - reference).abs() * std).max().item() * 255  # the largest difference in 0-255 pixel levels
    try:
        compare(name, answer, reference, what="crossvit.preprocess's tensor", diagnoses=diagnoses, atol=1e-4,
                 rtol=0)
    except ExerciseError as err:
        if "the values differ from" in str(err) and levels <= 4:  # no named slip, and only a few levels off
            fail(name, f"the values are at most {levels:.1f} pixel levels (of 255) from crossvit.preprocess's: the "
                        "steps are right, but the resizing rounds differently. timm resizes the 8-bit PIL image "
                        "(PIL's filter) and only then makes a float tensor; resize the PIL image, not a tensor.")
        raise
    ok(name, f"your ({c}, {size}, {size}) tensor equals crossvit.preprocess: shorter side to {short} px "
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
            fail(name, f"the answer looks like the list of one image; return one list per image, {b} in all.")
        fail(name, f"the answer has {len(answer)} entries, but there are {b} images: one list per image.")
    out: Predictions = []
    for i, row in enumerate(answer):
        if not isinstance(row, list | tuple):
            raise ExerciseTypeError(f"{name}: the entry of image {i} is a {type(row).__name__}; it should be a "
                                    f"list of {k} (name, probability) pairs.")
        if len(row) != k:
            fail(name, f"image {i} has {len(row)} predictions, but k = {k} were asked for.")
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
            pairs.append((str.__str__(label), float(probability)))  # a plain str: a subclass may redefine ==
        out.append(pairs)
    return out


@checker_for("top_predictions")
def check_top_predictions(function: object, model: CrossViT, logits: torch.Tensor, k: int = 5) -> None:
    """Exercise 7.2: ``function(logits, names, k)`` = for each image, its ``k`` most probable classes as
    (name, probability) pairs, best first: a softmax of ``logits`` (B, classes) over the classes, the k largest,
    named by ``names = crossvit.class_names(model)``. Reference: ``crossvit.top_classes(model, logits, k)``,
    which the function may not call."""
    name, checker = "top_predictions", "check_top_predictions"
    model = check_model(checker, model)
    classes = model.num_classes
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != classes:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{checker}: logits must be the model's output (B, {classes}), got {shape}")
    k = int_option(checker, "k", k, 1)
    b, kk = logits.shape[0], min(k, classes)
    names = class_names(model)
    reference = [[(p.name, p.probability) for p in row] for row in top_classes(model, logits, k)]
    answer = run_learner(name, function, logits, list(names), k,
                         shortcuts=[Shortcut(top_classes, "crossvit.top_classes")])
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
        ok(name, f"your top-{kk} of {b} image(s) equal crossvit.top_classes: a softmax over the {classes} "
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
            fail(name, mistake)
    for i, (row, expected) in enumerate(zip(got, reference)):
        for j, ((label, p), (ref_label, ref_p)) in enumerate(zip(row, expected)):
            if label != ref_label or not close(p, ref_p):
                fail(name, f"image {i}, place {j + 1}: yours {label!r} ({p:.4g}), expected {ref_label!r} "
                            f"({ref_p:.4g}).")
    fail(name, "the predictions differ from crossvit.top_classes.")  # a tie resolved differently on two rows
