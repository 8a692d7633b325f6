"""Solutions to the exercises of notebook 04 (attention rollout), one function per exercise.

Load one into a cell with ``%load -s <function> solutions/04_attention_rollout.py``.
"""

import torch


# Exercise 4.1 · rollout
def rollout(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per-branch rollout of self-attention maps (forward order, each (B, heads, N, N)) -> (B, N - 1)."""
    b, _, n, _ = maps[0].shape
    eye = torch.eye(n, dtype=maps[0].dtype, device=maps[0].device)
    result = eye.expand(b, n, n)
    for attention in maps:  # forward order: each later layer multiplies from the left
        a = 0.5 * attention.mean(dim=1) + 0.5 * eye  # heads fused by the mean; the residual keeps half of a token
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result[:, 0, 1:]  # the CLS row over the patches


# Exercise 4.2 · spread_to_pixels
def spread_to_pixels(patch_map: torch.Tensor, grid: tuple[int, int], image_size: int) -> torch.Tensor:
    """A (B, rows * cols) patch map -> (B, H, W): each input pixel takes the value of the patch covering it."""
    rows, cols = grid
    values = patch_map.reshape(-1, rows, cols)
    # the grid spans the whole input (the branch resized it), so pixel y lies in patch row floor(y * rows / H)
    row_of = torch.arange(image_size, device=patch_map.device) * rows // image_size
    col_of = torch.arange(image_size, device=patch_map.device) * cols // image_size
    return values[:, row_of][:, :, col_of]


# Exercise 4.3 · gradient_weighted_attention
def gradient_weighted_attention(attention: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s A_bar: positive part of grad * A, averaged over the heads, (B, Nq, Nk)."""
    return (grad * attention).clamp(min=0).mean(dim=1)
