"""Checkers of notebook 02, dual-branch encoding: exercises 2.1-2.2."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layers import AttentionMap, SelfAttention
from ..model import CrossViT, check_images
from ..recording import record_attention
from ..utils import eval_mode
from .common import (
    capture_inputs,
    check_model,
    checker_for,
    compare,
    find_site,
    ok,
    run_learner,
    tensor_answer,
)
from .guard import Shortcut

# ----------------------------------------------------------------------------------------------------------------
# 02 · dual-branch encoding

ATTENTION = [Shortcut(AttentionMap.forward, "the layer's attention map module"),
             Shortcut(SelfAttention.forward, "the layer's attention module"),
             Shortcut(F.scaled_dot_product_attention, "F.scaled_dot_product_attention"),
             Shortcut(record_attention.__init__, "record_attention")]


@checker_for("cls_attention_row")
def check_cls_attention_row(function: object, model: CrossViT, images: torch.Tensor, site: str) -> None:
    """Exercise 2.1: ``function(layer, tokens)`` = the CLS token's row of the self-attention map at ``site`` (e.g.
    ``"blocks.2.large.self.1"``), (B, heads, 1 + N), computed from the layer's LayerNorm and q/k weights
    (``layer``: the transformer layer at ``site``, ``tokens``: its input). Reference: the map
    ``record_attention`` records there; the function may not run the layer's attention."""
    name, checker = "cls_attention_row", "check_cls_attention_row"
    model = check_model(checker, model)
    check_images(images, model)
    where = find_site(checker, model, site)
    if where.kind != "self":
        raise ValueError(f"{checker}: {site!r} is a cross-attention site; this exercise is about self-attention")
    layer = model.blocks[where.block].encoders[where.branch].layers[where.index]
    attn = layer.attn

    def run() -> torch.Tensor:
        with record_attention(model, sites=lambda s: s == site) as rec:
            model(images)
        return rec.sites[site]

    with torch.no_grad(), eval_mode(model):
        recorded, (tokens,) = capture_inputs(layer, run)  # (B, heads, N, N); tokens (B, N, D)
    b, heads, n = recorded.shape[0], recorded.shape[1], recorded.shape[-1]
    with torch.no_grad(), eval_mode(model):
        answer = run_learner(name, function, layer, tokens, model=model, shortcuts=ATTENTION)
    answer = tensor_answer(
        name, answer, "the CLS attention row of every head", (b, heads, n), "(B, heads, 1 + N)",
        {(b, heads, 1, n): "that is the query dimension of size 1: take [:, :, 0] (or squeeze(2)).",
         (b, heads, n, n): "that is the whole map; keep only the CLS token's query, row 0.",
         (b, n): "keep one row per head: do not average the heads."})
    with torch.no_grad(), eval_mode(model):

        def row(normalise: bool = True, scale: bool = True, softmax: bool = True, layout: str = "3 h d"
                ) -> torch.Tensor:
            x = layer.norm1(tokens) if normalise else tokens
            qkv = attn.to_qkv(x)  # (B, N, 3 * heads * dim_head)
            if layout == "3 h d":  # the layer's own: q, k, v side by side, each split head by head
                q, k, _ = qkv.reshape(b, n, 3, heads, attn.dim_head).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
            elif layout == "h 3 d":  # a slip: q, k and v interleaved head by head
                q, k, _ = qkv.reshape(b, n, heads, 3, attn.dim_head).permute(3, 0, 2, 1, 4)
            else:  # "3 d h", a slip: the heads interleaved number by number
                q, k, _ = qkv.reshape(b, n, 3, attn.dim_head, heads).permute(2, 0, 4, 1, 3)
            scores = (q[:, :, :1] @ k.transpose(-2, -1))[:, :, 0]  # (B, H, N): the CLS query's scores
            scores = scores * (attn.attention_map.scale if scale else 1.0)
            return scores.softmax(dim=-1) if softmax else scores

        layout = (f"to_qkv's output is q, k and v side by side ({heads} heads x {attn.dim_head} numbers each): "
                  f"reshape it to (B, N, 3, heads, dim_head), so that q is [:, :, 0], k [:, :, 1], and each "
                  "head a contiguous slice of dim_head numbers.")
        diagnoses = [
            (lambda: row(layout="h 3 d"), "q, k and v were split head by head, (B, N, heads, 3, dim_head); " + layout),
            (lambda: row(layout="3 d h"), "the heads were split number by number, (B, N, 3, dim_head, heads); "
                                          + layout),
            (lambda: row(scale=False), "the scores are not scaled: multiply q·k by 1/sqrt(dim_head) "
                                        "(layer.attn.attention_map.scale) before the softmax."),
            (lambda: row(normalise=False), "the tokens were not normalised first: this is a pre-norm layer, so "
                                           "q and k are computed from layer.norm1(tokens)."),
            (lambda: row(softmax=False), "these are the raw scores: apply a softmax over the keys (the last "
                                         "dimension) so that each row sums to 1."),
        ]
        compare(name, answer, recorded[:, :, 0], what="the recorded attention row", diagnoses=diagnoses,
                 atol=1e-5, rtol=1e-3)
    ok(name, f"your {heads} heads' CLS rows equal the recorded map at {site}; each sums to 1 over the "
              f"layer's {n} tokens, the CLS included.")


@checker_for("logits_from_heads")
def check_logits_from_heads(function: object, model: CrossViT, images: torch.Tensor) -> None:
    """Exercise 2.2: ``function(model, features)`` = the model's logits (B, classes) computed from ``features =
    model.forward_features(images)`` by applying each branch's head (LayerNorm, then Linear on the CLS token) and
    combining the two. Reference: ``model(images)``; the function may not call the model's own combination."""
    name, checker = "logits_from_heads", "check_logits_from_heads"
    model = check_model(checker, model)
    check_images(images, model)
    b, k = images.shape[0], model.num_classes
    with torch.no_grad(), eval_mode(model):
        reference = model(images)
        features = model.forward_features(images)
        heads = {name_: model.heads[name_] for name_ in model.branch_names}
        per_head = {br: heads[br].fc(heads[br].norm(features[br][:, 0])) for br in model.branch_names}
        no_norm = {br: heads[br].fc(features[br][:, 0]) for br in model.branch_names}
        all_tokens = {br: heads[br].fc(heads[br].norm(features[br].mean(dim=1))) for br in model.branch_names}
        patch_tokens = {br: heads[br].fc(heads[br].norm(features[br][:, 1:].mean(dim=1))) for br in model.branch_names}
        answer = run_learner(name, function, model, features, model=model, shortcuts=[
            Shortcut(CrossViT.forward, "the model itself"), Shortcut(CrossViT.forward_head, "model.forward_head"),
            Shortcut(CrossViT.combine_heads, "model.combine_heads"),
            Shortcut(CrossViT.branch_logits, "model.branch_logits")])
    answer = tensor_answer(name, answer, "the model's logits", (b, k), "(B, classes)",
                            {(2, b, k): "combine the two heads' logits into one (B, classes) tensor.",
                             (b, 2, k): "combine the two heads' logits into one (B, classes) tensor."})
    mean = model.arch.logit_reduction == "mean"
    diagnoses = [
        (lambda: per_head["small"] + per_head["large"],
         "these are the two heads' logits summed; this (paper-flavour) model averages them." if mean else ""),
        (lambda: (per_head["small"] + per_head["large"]) / 2,
         "these are the two heads' logits averaged; this (seed-flavour) model sums them." if not mean else ""),
        (lambda: per_head["small"], "these are the small head's logits alone; combine both heads."),
        (lambda: per_head["large"], "these are the large head's logits alone; combine both heads."),
        (lambda: (no_norm["small"] + no_norm["large"]) / (2 if mean else 1),
         "the heads' LayerNorm is missing: head.fc(head.norm(cls))."),
        (lambda: (all_tokens["small"] + all_tokens["large"]) / (2 if mean else 1),
         "each head read the mean of all its branch's tokens; a head reads only its CLS token, token 0 "
         "(features[branch][:, 0])."),
        (lambda: (patch_tokens["small"] + patch_tokens["large"]) / (2 if mean else 1),
         "each head read the mean of its branch's patch tokens; a head reads only its CLS token, token 0 "
         "(features[branch][:, 0]), which gathered the image through attention."),
    ]
    diagnoses = [(wrong, mistake) for wrong, mistake in diagnoses if mistake]
    compare(name, answer, reference, what="the model's logits", diagnoses=diagnoses, atol=1e-4, rtol=1e-4)
    ok(name, f"your logits equal model(images): the {'mean' if mean else 'sum'} of the two branch heads.")
