"""Solutions to the exercises of notebook 05 (attribution methods compared), one function per exercise.

Load one into a cell with ``%load -s <function> solutions/05_attributions_compared.py``.
"""

import torch


# Exercise 5.1 · pointing_hits
def pointing_hits(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) bool: does each map's maximum (the first one in row-major order) lie on the object?"""
    b, _, w = maps.shape
    flat_index = maps.reshape(b, -1).argmax(dim=1)  # argmax returns the first maximum
    rows, cols = flat_index // w, flat_index % w
    return masks[torch.arange(b), rows, cols].bool()


# Exercise 5.2 · saliency_map
def saliency_map(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|d logit[target] / d pixel|, the largest over the colour channels, (B, H, W)."""
    x = images.detach().clone().requires_grad_(True)
    score = model(x).gather(1, target[:, None]).sum()  # images are independent, so one backward serves all
    (grad,) = torch.autograd.grad(score, x)
    return grad.abs().amax(dim=1)


# Exercise 5.3 · integrated_gradients
def integrated_gradients(model: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, steps: int
                         ) -> torch.Tensor:
    """Integrated gradients from a black image as the right Riemann sum, (B, C, H, W)."""
    baseline = torch.zeros_like(images)
    total = torch.zeros_like(images)
    for k in range(1, steps + 1):
        point = (baseline + k / steps * (images - baseline)).detach().requires_grad_(True)
        score = model(point).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, point)
        total += grad
    return (images - baseline) * total / steps
