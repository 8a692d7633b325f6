"""The synthetic tasks a CrossViT is trained on here, by name: each one's generator and class names.

* ``"shapes"`` (:mod:`crossvit.data`): one finely textured object among decoys and distractors; the class is its
  colour family and texture. Either branch of a CrossViT solves it alone (``figures/ablations.md``).
* ``"two_scale"`` (:mod:`crossvit.twoscale`): a finer texture *and* the layout of a tile that only a coarse patch
  holds whole; each half of the class is read cheaply at one scale only.

``crossvit.train`` trains on either (``TrainConfig.task``); a checkpoint it writes records the task, so a loaded
model's class names are the task's (:func:`crossvit.preprocessing.checkpoint_data_config`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import data, twoscale


@dataclass(frozen=True)
class Task:
    """A synthetic classification task: ``make(n, seed, image_size) -> (images (n, 3, H, W) float32 in [0, 1],
    labels (n,) int64, masks)``, deterministic by seed, and its class names (indexed by label)."""

    name: str
    make: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    class_names: tuple[str, ...]
    summary: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


TASKS: dict[str, Task] = {
    "shapes": Task("shapes", data.make_shapes, data.CLASS_NAMES,
                   "one finely textured object; class = its colour family x texture"),
    "two_scale": Task("two_scale", twoscale.make_two_scale_shapes, twoscale.CLASS_NAMES,
                      "a fine texture x the layout of a coarse-patch-sized tile; each read cheaply at one scale only"),
}
"""Every task, by name."""


def get_task(name: object) -> Task:
    """The task called ``name``; a ValueError that lists the tasks otherwise."""
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]
