"""Solutions to the exercises of notebook 02 (dual-branch encoding), one function per exercise.

Load one into a cell with ``%load -s <function> solutions/02_dual_branch_encoding.py``.
"""

import torch


# Exercise 2.1 · cls_attention_row
def cls_attention_row(layer: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The CLS query's attention over all tokens, (B, heads, 1 + N), in a pre-norm transformer layer."""
    attn = layer.attn
    b, n, _ = tokens.shape
    x = layer.norm1(tokens)  # pre-norm: q, k, v are computed from the normalised tokens
    qkv = attn.to_qkv(x).reshape(b, n, 3, attn.heads, attn.dim_head)  # one fused projection for q, k and v
    q, k, _ = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, dim_head)
    scores = q[:, :, :1] @ k.transpose(-2, -1) * attn.dim_head ** -0.5  # (B, heads, 1, N): the CLS query only
    return scores.softmax(dim=-1)[:, :, 0]


# Exercise 2.2 · logits_from_heads
def logits_from_heads(model: torch.nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits (B, classes) from the final tokens of both branches: each head, then their mean."""
    logits = []
    for branch, tokens in features.items():
        head = model.heads[branch]
        logits.append(head.fc(head.norm(tokens[:, 0])))  # LayerNorm, then Linear, on the CLS token
    return (logits[0] + logits[1]) / 2  # the paper flavour averages the heads (the seed flavour adds them)
