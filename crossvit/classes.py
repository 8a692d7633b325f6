"""What a model's outputs mean: class names, and the top classes of a batch of logits.

:func:`class_names` follows the model's data config (``model.pretrained_cfg``, see :mod:`crossvit.preprocessing`):

* names stored in it (``label_names``; the shapes model's come from :data:`crossvit.data.CLASS_NAMES`);
* ImageNet-1k models (a 1000-class model whose config says 1000 classes): the WordNet lemmas that timm ships
  offline (``timm.data.ImageNetInfo``), e.g. index 281 is ``"tabby, tabby cat"``;
* anything else: ``"class 0"``, ``"class 1"``, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .model import CrossViT, check_crossvit
from .utils import check_int


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (timm's lemmas, read from timm's package data)."""
    try:
        from timm.data import ImageNetInfo
    except ImportError as err:
        raise ImportError("ImageNet class names come with timm: pip install 'crossvit-lab[pretrained]'") from err
    return tuple(ImageNetInfo("imagenet-1k").label_descriptions())


def class_names(model: CrossViT) -> list[str]:
    """One name per output of ``model`` (rules in the module docstring)."""
    check_crossvit(model, "class_names")
    config = getattr(model, "pretrained_cfg", None) or {}
    stored = config.get("label_names")
    if stored is not None and len(stored) == model.num_classes:
        return [str(name) for name in stored]
    if model.num_classes == 1000 and config.get("num_classes") == 1000:
        return list(imagenet_class_names())
    return [f"class {k}" for k in range(model.num_classes)]


@dataclass(frozen=True)
class Prediction:
    """One of an image's top classes."""

    index: int
    name: str
    probability: float


def top_classes(model: CrossViT, logits: torch.Tensor, k: int = 5) -> list[list[Prediction]]:
    """The ``k`` most probable classes of each image (softmax over ``logits`` (B, num_classes)), best first."""
    check_crossvit(model, "top_classes (model first, then the logits)")
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != model.num_classes:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be (B, {model.num_classes}), got {shape}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits hold NaN or infinite values: the model's input or weights are not finite")
    k = check_int("k", k, 1)
    names = class_names(model)
    probabilities, indices = logits.detach().float().softmax(dim=1).topk(min(k, model.num_classes), dim=1)
    return [[Prediction(int(i), names[int(i)], float(p)) for p, i in zip(row_p, row_i)]
            for row_p, row_i in zip(probabilities.cpu(), indices.cpu())]


__all__ = ["Prediction", "class_names", "imagenet_class_names", "top_classes"]
