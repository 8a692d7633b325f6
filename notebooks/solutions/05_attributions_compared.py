"""Solutions to the exercises of notebook 05 (attribution methods compared), one function per exercise.

Load one into a cell with ``%load -s <function> solutions/05_attributions_compared.py``.
"""

import torch


# Exercise 5.1 · pointing_hits
def pointing_hits(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) bool: do more than half of each map's maximal pixels (within a relative 1e-6 of its maximum) lie on the
    object?"""
    b = maps.shape[0]
    flat = maps.reshape(b, -1).double()  # (B, H*W)
    top = flat.max(dim=1, keepdim=True).values  # (B, 1)
    maximal = flat >= top - 1e-6 * top.abs()  # (B, H*W): a whole patch on a patch map
    on_object = (maximal & masks.reshape(b, -1).bool()).sum(dim=1)
    return on_object * 2 > maximal.sum(dim=1)  # more than half


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


# Exercise 5.4 · lrp_attention
def lrp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale) v with AttnLRP's uniform rule on its two products: the same output, the gradients into
    q and k scaled by 1/4 and into v by 1/2. q (B, heads, Nq, dim_head), k and v (B, heads, Nk, dim_head)."""
    def gradient_times(x: torch.Tensor, c: float) -> torch.Tensor:
        return x * c + x.detach() * (1 - c)  # the value of x; only c of the gradient flows back into x

    q, k, v = gradient_times(q, 0.25), gradient_times(k, 0.25), gradient_times(v, 0.5)
    attention = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)  # (B, heads, Nq, Nk)
    return attention @ v  # (B, heads, Nq, dim_head)
