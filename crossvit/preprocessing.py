"""From photos to the batch a model expects, following the model's own *data config*.

Every model knows how its inputs must be prepared through ``model.pretrained_cfg``, a dict with timm's key names
(so ``timm.data.resolve_data_config({}, model=model)`` reads it too)::

    input_size   (C, H, W) of the model's input
    interpolation, crop_pct, crop_mode
                 resize the shorter side to floor(H / crop_pct) with this interpolation, then centre-crop H x W
                 (crop_mode "center"; "squash" resizes both sides to that size before the crop)
    mean, std    per-channel normalisation after scaling the pixels to [0, 1]
    num_classes, label_names (optional), dataset (optional)

Where it comes from:

* ``create_model(<paper name>)`` and ``from_timm(m)``: timm's pretrained config of that variant (ImageNet:
  bicubic, crop_pct 0.875, or 1.0 for the 408 px models, ImageNet mean and std); ``from_timm`` copies the timm
  model's own ``pretrained_cfg``;
* this project's checkpoints (:func:`crossvit.load_checkpoint`): the ``data_config`` the checkpoint's JSON
  stores, else, for a model trained by ``crossvit.train`` on the shapes task, what the trainer fed it:
  [0, 1] floats at the model's size (the model normalises inside, ``PaperConfig.input_norm``), and the shapes
  class names;
* any other model (``CrossViT(config)``, ``from_vit_pytorch``, ``"seed"``): :func:`default_data_config`, [0, 1]
  floats at the model's size. Set ``model.pretrained_cfg = {...}`` to say otherwise.

``input_size`` is always the model's own input size (a model built with ``img_size=...`` gets that size).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from .model import CrossViT, check_crossvit
from .photos import read_image
from .tasks import TASKS, get_task
from .utils import check_bool, check_finite_images, check_number, progress_bar

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

DATA_KEYS: tuple[str, ...] = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
"""The keys :func:`preprocess` reads (timm's ``resolve_data_config`` keys)."""

INTERPOLATIONS: tuple[str, ...] = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
"""The interpolations a data config may name: torchvision's ``InterpolationMode`` values."""

STORED_KEYS: tuple[str, ...] = (*DATA_KEYS, "num_classes", "label_names", "dataset", "architecture", "tag")
"""The keys a checkpoint's JSON keeps of ``model.pretrained_cfg`` (:func:`stored_data_config`)."""

# timm's pretrained configs of the paper variants: everything at crop_pct 0.875 except the two 408 px models
_IMAGENET_CROP_PCT: dict[str, float] = {"crossvit_15_dagger_408": 1.0, "crossvit_18_dagger_408": 1.0}


# ----------------------------------------------------------------------------------------------------------------
# Data configs


def _input_size(model: CrossViT) -> tuple[int, int, int]:
    return (model.in_chans, model.image_size, model.image_size)


def imagenet_data_config(name: str, input_size: tuple[int, int, int]) -> dict[str, Any]:
    """timm's ImageNet-1k pretrained data config of the paper variant ``name``, for a model of ``input_size``
    (C, H, W)."""
    return {
        "architecture": name, "tag": "in1k", "hf_hub_id": f"timm/{name}.in1k", "dataset": "imagenet-1k",
        "input_size": tuple(input_size), "interpolation": "bicubic", "crop_pct": _IMAGENET_CROP_PCT.get(name, 0.875),
        "crop_mode": "center", "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_classes": 1000,
    }


def default_data_config(model: CrossViT) -> dict[str, Any]:
    """For a model that says nothing: [0, 1] floats at its input size (resize the shorter side, centre crop)."""
    check_crossvit(model, "default_data_config")
    channels = model.in_chans
    return {"input_size": _input_size(model), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
            "mean": (0.0,) * channels, "std": (1.0,) * channels, "num_classes": model.num_classes}


def shapes_data_config(model: CrossViT, task: str = "shapes") -> dict[str, Any]:
    """What ``crossvit.train`` feeds a model: [0, 1] floats at its size, the class names of its synthetic ``task``
    (:data:`crossvit.tasks.TASKS`)."""
    check_crossvit(model, "shapes_data_config")
    config = {**default_data_config(model), "dataset": task}
    names = get_task(task).class_names
    if model.num_classes == len(names):
        config["label_names"] = list(names)
    return config


def stored_data_config(model: CrossViT) -> dict[str, Any] | None:
    """The JSON-able part of ``model.pretrained_cfg`` a checkpoint keeps (None if the model has none)."""
    check_crossvit(model, "stored_data_config")
    config = getattr(model, "pretrained_cfg", None)
    if not config:
        return None
    out = {}
    for key in STORED_KEYS:
        if key in config and config[key] is not None:
            value = list(config[key]) if isinstance(config[key], (tuple, list)) else config[key]
            try:
                out[key] = json.loads(json.dumps(value, allow_nan=False))
            except (TypeError, ValueError):
                raise TypeError(f"model.pretrained_cfg[{key!r}] is not plain JSON: {value!r}") from None
    return out


def checkpoint_data_config(meta: Mapping[str, Any], model: CrossViT) -> dict[str, Any]:
    """The data config of a model loaded from this project's checkpoint, from the checkpoint's JSON ``meta``:
    its stored ``data_config``, else the shapes config for a model ``crossvit.train`` wrote (its record has a
    ``train_config``), else :func:`default_data_config`."""
    stored = meta.get("data_config")
    if isinstance(stored, Mapping):
        config = {**default_data_config(model), **stored}
        for key in ("input_size", "mean", "std"):
            config[key] = tuple(config[key])
        config["input_size"] = _input_size(model)
        return config
    record = meta.get("record")
    if isinstance(record, Mapping) and isinstance(record.get("train_config"), Mapping):
        task = record["train_config"].get("task", "shapes")  # records before the task field: the shapes task
        return shapes_data_config(model, task if task in TASKS else "shapes")
    return default_data_config(model)


def data_config(model: CrossViT) -> dict[str, Any]:
    """The six keys of :data:`DATA_KEYS` that :func:`preprocess` follows for ``model`` (see the module docstring),
    checked, each value named in the error: an input size that is not the model's, an unknown crop mode or
    interpolation, a ``crop_pct`` outside (0, 1] and a mean or std that is not one finite number per channel
    (a std above 0) raise ValueError, a value of the wrong type TypeError."""
    check_crossvit(model, "the model's data config")
    given = getattr(model, "pretrained_cfg", None) or {}
    config = {**default_data_config(model), **{k: v for k, v in given.items() if v is not None}}
    resolved = {key: config[key] for key in DATA_KEYS}
    resolved["input_size"] = tuple(resolved["input_size"])
    if resolved["input_size"] != _input_size(model):
        raise ValueError(f"model.pretrained_cfg says input_size {resolved['input_size']}, but the model takes "
                         f"{_input_size(model)}; fix model.pretrained_cfg['input_size']")
    if resolved["crop_mode"] not in ("center", "squash"):
        raise ValueError(f"crop_mode {resolved['crop_mode']!r} is not supported (use 'center' or 'squash')")
    if resolved["interpolation"] not in INTERPOLATIONS:
        raise ValueError(f"model.pretrained_cfg['interpolation'] {resolved['interpolation']!r} is not one of "
                         f"{', '.join(INTERPOLATIONS)}")
    resolved["crop_pct"] = check_number("model.pretrained_cfg['crop_pct']", resolved["crop_pct"], 0.0, 1.0)
    if resolved["crop_pct"] == 0:
        raise ValueError("model.pretrained_cfg['crop_pct'] must be in (0, 1], got 0")
    for key in ("mean", "std"):
        values = resolved[key]
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            raise TypeError(f"model.pretrained_cfg[{key!r}] must be a sequence of one number per channel, got "
                            f"{type(values).__name__} {values!r:.60}")
        resolved[key] = tuple(float(v) for v in values)
        if len(resolved[key]) != model.in_chans:
            raise ValueError(f"{key} needs one value per channel ({model.in_chans}), got {resolved[key]}")
        if not all(math.isfinite(v) and (key == "mean" or v > 0) for v in resolved[key]):
            raise ValueError(f"model.pretrained_cfg[{key!r}] must hold finite numbers{'' if key == 'mean' else ' > 0'}"
                             f", got {resolved[key]}")
    return resolved


# ----------------------------------------------------------------------------------------------------------------
# Photos -> batch


def interpolation_mode(name: str) -> Any:
    """torchvision's InterpolationMode called ``name`` (timm's data configs name it: "bicubic", "bilinear", ...)."""
    from torchvision.transforms import InterpolationMode  # imported here: torchvision takes seconds to import

    try:
        return InterpolationMode(name)
    except ValueError:
        valid = ", ".join(mode.value for mode in InterpolationMode)
        raise ValueError(f"unknown interpolation {name!r}; valid: {valid}") from None


def transform(image: Image.Image, config: Mapping[str, Any]) -> torch.Tensor:
    """One RGB PIL image -> (C, H, W) float tensor, as timm's eval transform does for the same data config:
    resize, centre crop, scale to [0, 1], normalise."""
    from torchvision.transforms import functional as TF

    _, height, width = config["input_size"]
    if height != width:
        raise ValueError(f"only square inputs are supported, got input_size {config['input_size']}")
    scale = math.floor(height / config["crop_pct"])
    size: int | list[int] = scale if config["crop_mode"] == "center" else [scale, scale]
    resized = TF.resize(image, size, interpolation=interpolation_mode(config["interpolation"]))
    cropped = TF.center_crop(resized, [height, width])
    return TF.normalize(TF.to_tensor(cropped), config["mean"], config["std"])


def preprocess(model: CrossViT, image: Any, *, progress: bool = False) -> torch.Tensor:
    """The batch ``model`` expects for one photo or a list of photos: (B, C, H, W) float32 on the model's device.

    A photo is a path, a PIL image or an (H, W, 3) uint8 array (greyscale, RGBA and 16-bit are converted, see
    :func:`crossvit.photos.read_image`); non-square photos are resized on their shorter side and centre-cropped.
    The steps follow :func:`data_config` (for timm / ImageNet models exactly timm's eval transform). The inputs
    are never modified. ``progress`` shows a tqdm bar over the photos (about 10 ms each for a 512 px photo).
    """
    progress = check_bool("progress", progress)
    config = data_config(model)
    if model.in_chans != 3:
        raise ValueError(f"preprocess makes RGB images, but this model takes {model.in_chans} channels")
    if isinstance(image, Sequence) and not isinstance(image, (str, bytes)):
        if len(image) == 0:
            raise ValueError("preprocess got an empty list of images")
        items = [(x, None if isinstance(x, (str, os.PathLike)) else f"image {k} of the list")
                 for k, x in enumerate(image)]
    else:
        items = [(image, None)]
    shown = progress_bar(items, desc="preprocess", unit="image", progress=progress)
    batch = torch.stack([transform(read_image(x, where), config) for x, where in shown])  # (B, C, H, W)
    return batch.to(next(model.parameters()).device)


def display_images(model: CrossViT, batch: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of a preprocessed batch: (B, C, H, W) in [0, 1] on the CPU, ready to plot (a batch
    holding NaN or an infinity is a ValueError)."""
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"expected a preprocessed batch, a (B, C, H, W) tensor, got {type(batch).__name__}")
    if batch.ndim != 4:
        raise ValueError(f"expected a preprocessed batch (B, C, H, W), got shape {tuple(batch.shape)}")
    check_finite_images(batch)
    config = data_config(model)
    if batch.shape[1] != len(config["mean"]):
        raise ValueError(f"the batch has {batch.shape[1]} channels but the model's data config normalises "
                         f"{len(config['mean'])}: pass the preprocessed batch the model takes")
    mean = torch.tensor(config["mean"]).reshape(1, -1, 1, 1)
    std = torch.tensor(config["std"]).reshape(1, -1, 1, 1)
    return (batch.detach().float().cpu() * std + mean).clamp(0, 1)


__all__ = ["DATA_KEYS", "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "checkpoint_data_config", "data_config",
           "default_data_config", "display_images", "imagenet_data_config", "preprocess", "shapes_data_config",
           "stored_data_config", "transform"]
