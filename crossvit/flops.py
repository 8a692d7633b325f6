"""Count a model's floating-point operations with PyTorch's own counter, the way the paper compares models.

:func:`count_flops` runs one forward of one image under ``torch.utils.flop_counter.FlopCounterMode``, which counts
2 FLOPs per multiply-add of every matrix product, linear layer and convolution (element-wise work, LayerNorm,
softmax and the resize are not counted, as in the CrossViT and DeiT papers' FLOP tables). On the CPU the counter
counts nothing for ``F.scaled_dot_product_attention``, so every attention runs on its explicit path while it
counts (a no-op hook on each :class:`~crossvit.layers.AttentionMap`, removed afterwards): the two attention
products, ``q k^T`` and ``A v``, are then ordinary matrix products.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .layers import AttentionMap
from .recording import leaves_recordings_alone
from .utils import check_int, eval_mode


@leaves_recordings_alone  # its forward never replaces the maps of a recording the caller has open
def count_flops(model: nn.Module, image_size: int | None = None, in_chans: int = 3) -> int:
    """FLOPs of ``model``'s forward pass on one ``in_chans`` x ``image_size`` x ``image_size`` image (default: the
    model's ``image_size`` attribute, or its ``arch.image_size``), in eval mode (restored afterwards)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if image_size is None:
        image_size = getattr(model, "image_size", None) or getattr(getattr(model, "arch", None), "image_size", None)
        if image_size is None:
            raise ValueError("give image_size: the model has no image_size (nor arch.image_size) attribute")
    image_size = check_int("image_size", image_size, 1)
    parameter = next(model.parameters(), None)
    images = torch.zeros(1, check_int("in_chans", in_chans, 1), image_size, image_size,
                         dtype=parameter.dtype if parameter is not None else torch.float32,
                         device=parameter.device if parameter is not None else "cpu")
    handles = [m.register_forward_hook(lambda module, inputs, output: None) for m in model.modules()
               if isinstance(m, AttentionMap)]  # observed: the explicit softmax(q k^T) path runs
    try:
        with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return int(counter.get_total_flops())
