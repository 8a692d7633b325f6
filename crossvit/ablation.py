"""Switch parts of a CrossViT off, or keep only one branch, to see what each part contributes.

* :func:`zero_cross_attention`: inside a ``with`` block, the cross-attention output of chosen fusion directions is
  replaced by zeros, so a CLS token no longer receives anything from the other branch (its own path through the
  fusion stays: in the paper flavour a fusion computes ``revert(proj(cls) + attn(...))`` and loses ``attn(...)``).
* :func:`head_accuracies`: accuracy of the model's logits and of each branch head alone.
* :func:`cross_attention_ablations`: :func:`head_accuracies` with each direction of the fusion zeroed, and both.
* :class:`SingleBranchViT`: one branch of a CrossViT as a plain ViT, for single-branch baselines trained with
  ``crossvit.train.train(config, model=SingleBranchViT(arch, "small"))``.

``benchmarks/ablations.py`` uses them for the table and figure in ``figures/ablations.md``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .config import Architecture
from .layers import TransformerBlock
from .model import BranchEmbedding, ClassifierHead, CrossViT, branch_image, check_crossvit, check_images
from .recording import leaves_recordings_alone
from .train import evaluate  # the trainer's held-out scoring, which scores each head too
from .utils import BRANCHES, check_choice, progress_bar, renamed_argument


def _check_model(model: object) -> CrossViT:
    return check_crossvit(model, "the ablations")


@contextmanager
def zero_cross_attention(model: CrossViT, query: str | Sequence[str] = "both", **deprecated: Any) -> Iterator[None]:
    """Within the block, every fusion direction whose query CLS is ``query``'s ("small", "large", "both", or a
    sequence of branch names; an empty one zeroes nothing) adds nothing read from the other branch: its
    cross-attention output is replaced by zeros (forward hooks, removed on exit). (``queries=`` is the deprecated
    name of ``query``.)"""
    _check_model(model)
    query = renamed_argument("zero_cross_attention", deprecated, "queries", "query", query, "both")
    if query == "both":
        queries: Sequence[str] = BRANCHES
    elif isinstance(query, str):
        queries = (check_choice("query", query, ("small", "large", "both")),)
    elif isinstance(query, Sequence):
        queries = tuple(query)
        if not all(isinstance(q, str) and q in BRANCHES for q in queries):
            raise ValueError(f"query must be 'small', 'large', 'both' or a sequence of branch names, got {query!r}")
    else:
        raise TypeError(f"query must be 'small', 'large', 'both' or a sequence of branch names, got {query!r}")
    handles = []
    for block in model.blocks:
        for fusion in block.fusions:
            for query in queries:
                handles.append(getattr(fusion, query).attn.register_forward_hook(
                    lambda module, inputs, out: torch.zeros_like(out)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@leaves_recordings_alone
@torch.no_grad()
def head_accuracies(model: CrossViT, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250, *,
                    progress: bool = False) -> dict[str, float]:
    """Held-out accuracy of the model's logits (``"model"``) and of each head alone (``"small head"``,
    ``"large head"``), in eval mode (restored afterwards); ``progress`` shows a bar over the batches."""
    _check_model(model)
    check_images(images, model)  # before images.device below; evaluate checks the rest
    scores = evaluate(model, images, labels, batch_size=batch_size, device=images.device, progress=progress)
    return {"model": scores["accuracy"], "small head": scores["small_head_accuracy"],
            "large head": scores["large_head_accuracy"]}


CROSS_ATTENTION_ABLATIONS: tuple[tuple[str, ...], ...] = ((), ("small",), ("large",), ("small", "large"))
"""The query CLS tokens whose reading of the other branch :func:`cross_attention_ablations` zeroes, in turn: none,
the small one, the large one, both."""


@leaves_recordings_alone
def cross_attention_ablations(model: CrossViT, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250,
                              *, progress: bool = False) -> dict[tuple[str, ...], dict[str, float]]:
    """For each entry of :data:`CROSS_ATTENTION_ABLATIONS`, :func:`head_accuracies` with those directions of every
    fusion layer zeroed by :func:`zero_cross_attention` (nothing is retrained); ``progress`` shows a bar over the
    four."""
    out = {}
    for queries in progress_bar(CROSS_ATTENTION_ABLATIONS, desc="ablations", unit="setting", progress=progress):
        with zero_cross_attention(model, queries):
            out[queries] = head_accuracies(model, images, labels, batch_size)
    return out


class SingleBranchViT(nn.Module):
    """One branch of a CrossViT as a plain ViT: the branch's image size (the input resized as the CrossViT resizes
    it), patch embedding, width and heads, all of the branch's layers in a row (the sum over the multi-scale blocks),
    one LayerNorm + linear head on the CLS token. Built from the CrossViT's ``Architecture`` (``model.arch``)."""

    def __init__(self, arch: Architecture, branch: str) -> None:
        super().__init__()
        if not isinstance(arch, Architecture):
            raise TypeError(f"arch must be a crossvit Architecture (model.arch), got {type(arch).__name__}")
        self.arch, self.spec = arch, arch.branch(branch)
        spec = self.spec
        self.embed = BranchEmbedding(spec, arch)
        self.layers = nn.Sequential(*[
            TransformerBlock(spec.dim, spec.heads, spec.dim_head, spec.mlp_dim, qkv_bias=arch.qkv_bias,
                             norm_eps=arch.norm_eps)
            for _ in range(sum(spec.depth))
        ])
        self.head = ClassifierHead(spec.dim, arch.num_classes, arch)
        if arch.input_norm is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) for v in arch.input_norm)
            self.register_buffer("input_mean", mean, persistent=False)
            self.register_buffer("input_std", std, persistent=False)
        with torch.no_grad():  # timm's init, as the paper flavour of CrossViT
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
            nn.init.trunc_normal_(self.embed.cls_token, std=0.02)
            nn.init.trunc_normal_(self.embed.pos_embed, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) at the CrossViT's input size -> logits (B, num_classes); refused as the CrossViT
        refuses them (:func:`crossvit.model.check_images`)."""
        check_images(images, self)
        if self.arch.input_norm is not None:
            images = (images - self.input_mean) / self.input_std
        return self.head(self.layers(self.embed(branch_image(images, self.spec, self.arch))))
