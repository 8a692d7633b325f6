"""Solutions to the exercises of notebook 01 (patch embedding), one function per exercise.

Load one into a cell with ``%load -s <function> solutions/01_patch_embedding.py`` (or the whole file with
``%load solutions/01_patch_embedding.py``). ``python -m crossvit.exercises solve`` puts them into the notebook.
"""

import torch


# Exercise 1.1 · patchify
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C * p * p): row-major patches, each flattened channel first."""
    b, c, h, w = images.shape
    p = patch_size
    rows, cols = h // p, w // p
    grid = images.reshape(b, c, rows, p, cols, p)  # split both image axes into (patch index, pixel in patch)
    grid = grid.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, p, p): the grid first, each patch as conv sees it
    return grid.reshape(b, rows * cols, c * p * p)


# Exercise 1.2 · embed_patches
def embed_patches(patches: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """Flattened patches (B, N, C * p * p) -> tokens (B, N, D) with the convolution's weights as one linear map."""
    weight = conv.weight.reshape(conv.out_channels, -1)  # (D, C * p * p): one filter per row
    return patches @ weight.T + conv.bias


# Exercise 1.3 · token_sequence
def token_sequence(embedding: torch.nn.Module, branch_image: torch.Tensor) -> torch.Tensor:
    """[CLS, patch tokens] + positions, (B, 1 + N, D), from a branch embedding's parts."""
    patches = embedding.patch_embed(branch_image)  # (B, N, D)
    cls = embedding.cls_token.expand(len(branch_image), -1, -1)  # (B, 1, D): the same learned token per image
    return torch.cat((cls, patches), dim=1) + embedding.pos_embed
