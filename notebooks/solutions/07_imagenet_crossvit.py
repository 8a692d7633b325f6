"""Solutions to the exercises of notebook 07 (inside an ImageNet CrossViT), one function per exercise.

Load one into a cell with ``%load -s <function> solutions/07_imagenet_crossvit.py``.
"""

import numpy as np
import torch


# Exercise 7.1 · eval_transform
def eval_transform(photo: np.ndarray, config: dict) -> torch.Tensor:
    """An (H, W, 3) uint8 photo -> the (3, H, W) float tensor that timm's eval transform makes of it for `config`."""
    from PIL import Image

    _, size, _ = config["input_size"]  # (3, 240, 240)
    image = Image.fromarray(photo)  # PIL sizes are (width, height)
    width, height = image.size
    short = int(size / config["crop_pct"])  # floor(240 / 0.875) = 274
    long = int(short * max(width, height) / min(width, height))  # truncated, as torchvision computes it
    new_size = (short, long) if width <= height else (long, short)
    resample = getattr(Image.Resampling, config["interpolation"].upper())  # "bicubic" -> Image.Resampling.BICUBIC
    image = image.resize(new_size, resample)
    left, top = round((new_size[0] - size) / 2), round((new_size[1] - size) / 2)
    image = image.crop((left, top, left + size, top + size))  # the central size x size
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255  # (3, size, size) in [0, 1]
    mean = torch.tensor(config["mean"]).reshape(-1, 1, 1)
    std = torch.tensor(config["std"]).reshape(-1, 1, 1)
    return (x - mean) / std


# Exercise 7.2 · top_predictions
def top_predictions(logits: torch.Tensor, names: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Logits (B, classes) -> for each image, its k most probable classes as (name, probability), best first."""
    probabilities = logits.softmax(dim=1)  # (B, classes): each row sums to 1
    values, indices = probabilities.topk(k, dim=1)  # (B, k), largest first
    return [[(names[int(i)], float(p)) for p, i in zip(row_values, row_indices)]
            for row_values, row_indices in zip(values, indices)]
