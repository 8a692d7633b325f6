"""The relevance rules of AttnLRP and CP-LRP written out layer by layer, as a reference for ``crossvit.lrp``.

Each rule is an autograd Function whose *backward* takes the relevance of its output and returns the relevance of
its inputs, computed from the rule's formula with an explicit relevance matrix (``R_in[i] = sum_j M[i, j] R_out[j]``)
where the rule is a matrix; autograd only walks the graph (relevance that reaches a tensor from several consumers
adds up, reshapes and concatenations pass it on unchanged). :func:`reference_relevance` runs a CrossViT's forward
pass op by op with these rules (both flavours, mirroring ``crossvit/model.py`` and ``crossvit/layers.py``) and
returns the relevance of each branch's patch tokens, CLS token and positions.

``ops="lxt"`` runs the same forward with the AttnLRP rules of the ``lxt`` package (``lxt.explicit.functional``,
Achtibat et al.'s own explicit implementation) instead, where ours and theirs coincide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd import Function

from crossvit.model import CrossViT


def _stab(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class LinearRule(Function):
    """Epsilon / gamma rule: M[i, j] = x_i w'_ji / (z'_j + eps sign z'_j), w' = w + gamma max(w, 0)."""

    @staticmethod
    def forward(ctx, x, weight, bias, epsilon, gamma):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, weight, bias if bias is not None else torch.zeros(0))
        ctx.epsilon, ctx.gamma, ctx.has_bias = epsilon, gamma, bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, relevance):  # noqa: ANN001, ANN205
        x, weight, bias = ctx.saved_tensors
        w = weight + ctx.gamma * weight.clamp(min=0)
        b = bias + ctx.gamma * bias.clamp(min=0) if ctx.has_bias else None
        z = _stab(F.linear(x, w, b), ctx.epsilon)  # (..., out)
        matrix = x[..., :, None] * w.t() / z[..., None, :]  # (..., in, out)
        return (matrix @ relevance[..., :, None])[..., 0], None, None, None, None


class LayerNormRule(Function):
    """The standard deviation held constant: y = A x + b with A = diag(w / std) (I - 1/D); M[i, j] = x_i A_ji / y_j."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # noqa: ANN001, ANN205
        y = F.layer_norm(x, x.shape[-1:], weight, bias, eps)
        ctx.save_for_backward(x, weight, y)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, relevance):  # noqa: ANN001, ANN205
        x, weight, y = ctx.saved_tensors
        d = x.shape[-1]
        std = torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + ctx.eps)  # (..., 1)
        centring = torch.eye(d, dtype=x.dtype) - 1.0 / d  # (D, D)
        a = weight[:, None] * centring / std[..., None]  # (..., D, D): y = A x + b
        matrix = x[..., :, None] * a.transpose(-1, -2) / y[..., None, :]  # (..., in, out)
        return (matrix @ relevance[..., :, None])[..., 0], None, None, None


class IdentityRule(Function):
    """An element-wise non-linearity (or a constant factor): R_in = R_out."""

    @staticmethod
    def forward(ctx, x, fn):  # noqa: ANN001, ANN205
        return fn(x)

    @staticmethod
    def backward(ctx, relevance):  # noqa: ANN001, ANN205
        return relevance, None


class AddRule(Function):
    """z = a + b: each summand gets the share of the relevance it contributed, R_a = a R / z."""

    @staticmethod
    def forward(ctx, a, b):  # noqa: ANN001, ANN205
        ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx, relevance):  # noqa: ANN001, ANN205
        a, b = ctx.saved_tensors
        return a * relevance / (a + b), b * relevance / (a + b)


class UniformMatmulRule(Function):
    """z = a @ b, the uniform rule: R_a[i, k] = sum_j a_ik b_kj R_ij / (2 z_ij), R_b[k, j] likewise."""

    @staticmethod
    def forward(ctx, a, b):  # noqa: ANN001, ANN205
        z = a @ b
        ctx.save_for_backward(a, b, z)
        return z

    @staticmethod
    def backward(ctx, relevance):  # noqa: ANN001, ANN205
        a, b, z = ctx.saved_tensors
        share = a[..., :, :, None] * b[..., None, :, :] * (relevance / (2 * z))[..., :, None, :]  # (..., i, k, j)
        return share.sum(dim=-1), share.sum(dim=-3)


class ConstantLeftMatmulRule(Function):
    """z = A @ v with A held constant (CP-LRP): v gets all the relevance, R_v[k, j] = sum_i A_ik v_kj R_ij / z_ij."""

    @staticmethod
    def forward(ctx, a, v):  # noqa: ANN001, ANN205
        z = a @ v
        ctx.save_for_backward(a, v, z)
        return z

    @staticmethod
    def backward(ctx, relevance):  # noqa: ANN001, ANN205
        a, v, z = ctx.saved_tensors
        share = a[..., :, :, None] * v[..., None, :, :] * (relevance / z)[..., :, None, :]
        return None, share.sum(dim=-3)


class SoftmaxRule(Function):
    """AttnLRP's softmax rule (its Proposition 3.1): R_s = s * (R_A - A * sum(R_A)), row by row."""

    @staticmethod
    def forward(ctx, s):  # noqa: ANN001, ANN205
        attention = torch.softmax(s, dim=-1)
        ctx.save_for_backward(s, attention)
        return attention

    @staticmethod
    def backward(ctx, relevance):  # noqa: ANN001, ANN205
        s, attention = ctx.saved_tensors
        return s * (relevance - attention * relevance.sum(dim=-1, keepdim=True))


class Ours:
    """The rules above."""

    def __init__(self, rule: str, epsilon: float = 0.0, gamma: float = 0.0) -> None:
        self.rule, self.epsilon, self.gamma = rule, epsilon, gamma

    def linear(self, x, module):  # noqa: ANN001, ANN201
        return LinearRule.apply(x, module.weight, module.bias, self.epsilon, self.gamma)

    def norm(self, x, module):  # noqa: ANN001, ANN201
        return LayerNormRule.apply(x, module.weight, module.bias, module.eps)

    def gelu(self, x):  # noqa: ANN001, ANN201
        return IdentityRule.apply(x, F.gelu)

    def scale(self, x, factor):  # noqa: ANN001, ANN201
        return IdentityRule.apply(x, lambda t: t * factor)

    def add(self, a, b):  # noqa: ANN001, ANN201
        return AddRule.apply(a, b)

    def attend(self, q, k, v, scale):  # noqa: ANN001, ANN201
        if self.rule == "cp_lrp":
            attention = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1).detach()
            return ConstantLeftMatmulRule.apply(attention, v)
        scores = UniformMatmulRule.apply(self.scale(q, scale), k.transpose(-2, -1))
        return UniformMatmulRule.apply(SoftmaxRule.apply(scores), v)


class Lxt(Ours):
    """AttnLRP as the lxt package implements it (``lxt.explicit.functional``), with tiny stabilisers."""

    def __init__(self) -> None:
        super().__init__("attnlrp")
        import lxt.explicit.functional as lf

        self.lf = lf

    def linear(self, x, module):  # noqa: ANN001, ANN201
        return self.lf.linear_epsilon(x, module.weight, module.bias, epsilon=1e-30)

    def norm(self, x, module):  # noqa: ANN001, ANN201
        return self.lf.layer_norm(x, module.weight, module.bias, module.eps)

    def add(self, a, b):  # noqa: ANN001, ANN201
        return self.lf.add2(a, b, epsilon=1e-30)

    def attend(self, q, k, v, scale):  # noqa: ANN001, ANN201
        scores = self.lf.matmul(self.scale(q, scale), k.transpose(-2, -1), epsilon=1e-30)
        return self.lf.matmul(self.lf.softmax(scores, -1), v, epsilon=1e-30)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.reshape(b, n, heads, -1).transpose(1, 2)  # (B, H, N, D)


def _attention(ops: Ours, attn, queries: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:  # noqa: ANN001
    """Self-attention (context None) or cross-attention of ``queries`` over ``context``."""
    if context is None:
        b, n, _ = queries.shape
        q, k, v = ops.linear(queries, attn.to_qkv).reshape(b, n, 3, attn.heads, attn.dim_head).permute(2, 0, 3, 1, 4)
    else:
        q = _heads(ops.linear(queries, attn.to_q), attn.heads)
        k, v = (_heads(t, attn.heads) for t in ops.linear(context, attn.to_kv).chunk(2, dim=-1))
    out = ops.attend(q, k, v, attn.attention_map.scale)  # (B, H, Nq, D)
    b, _, nq, _ = out.shape
    return ops.linear(out.transpose(1, 2).reshape(b, nq, attn.inner_dim), attn.to_out)


def _encoder(ops: Ours, encoder, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    for layer in encoder.layers:
        x = ops.add(x, _attention(ops, layer.attn, ops.norm(x, layer.norm1), None))
        hidden = ops.gelu(ops.linear(ops.norm(x, layer.norm2), layer.mlp.fc1))
        x = ops.add(x, ops.linear(hidden, layer.mlp.fc2))
    return ops.norm(x, encoder.norm) if isinstance(encoder.norm, torch.nn.LayerNorm) else x


def _project(ops: Ours, module, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """A fusion's projection: seed: Linear or Identity; paper: LayerNorm -> GELU -> Linear."""
    if isinstance(module, torch.nn.Identity):
        return x
    if isinstance(module, torch.nn.Linear):
        return ops.linear(x, module)
    return ops.linear(ops.gelu(ops.norm(x, module[0])), module[2])


def _fusion(ops: Ours, fusion, cls: torch.Tensor, other: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    z = _project(ops, fusion.project_in, cls)
    if fusion.style == "seed":
        query = ops.norm(z, fusion.norm)
        context = torch.cat((query, other), dim=1)
        return ops.add(cls, _project(ops, fusion.project_out, _attention(ops, fusion.attn, query, context)))
    context = ops.norm(torch.cat((z, other), dim=1), fusion.norm)
    return _project(ops, fusion.project_out, ops.add(z, _attention(ops, fusion.attn, context[:, :1], context)))


def reference_relevance(model: CrossViT, images: torch.Tensor, target: torch.Tensor, ops: Ours
                        ) -> dict[str, dict[str, torch.Tensor]]:
    """Per branch ``{"patches": (B, N), "cls": (B,), "positions": (B,)}``: the relevance of each image's target
    logit (the model in eval mode, no dropout)."""
    b = images.shape[0]
    leaves, tokens = {}, {}
    for name in model.branch_names:
        embed = model.embed[name]
        with torch.no_grad():
            patches = embed.patch_embed(model.branch_images(images)[name])
        leaves[name] = {"patches": patches.clone().requires_grad_(True),
                        "cls": embed.cls_token.detach().expand(b, -1, -1).clone().requires_grad_(True),
                        "positions": embed.pos_embed.detach().expand(b, -1, -1).clone().requires_grad_(True)}
        parts = leaves[name]
        tokens[name] = ops.add(torch.cat((parts["cls"], parts["patches"]), dim=1), parts["positions"])
    small, large = tokens["small"], tokens["large"]
    for block in model.blocks:
        small, large = _encoder(ops, block.encoders["small"], small), _encoder(ops, block.encoders["large"], large)
        for fusion in block.fusions:
            small_cls = _fusion(ops, fusion.small, small[:, :1], large[:, 1:])
            large_cls = _fusion(ops, fusion.large, large[:, :1], small[:, 1:])
            small, large = torch.cat((small_cls, small[:, 1:]), 1), torch.cat((large_cls, large[:, 1:]), 1)
    heads = [ops.linear(ops.norm(t[:, 0], model.heads[n].norm), model.heads[n].fc)
             for n, t in (("small", small), ("large", large))]
    logits = ops.add(heads[0], heads[1])
    if model.arch.logit_reduction == "mean":
        logits = ops.scale(logits, 0.5)
    chosen = torch.zeros_like(logits).scatter_(1, target[:, None], logits.detach().gather(1, target[:, None]))
    flat = [leaves[n][k] for n in model.branch_names for k in ("patches", "cls", "positions")]
    grads = torch.autograd.grad(logits, flat, grad_outputs=chosen)
    out, i = {}, 0
    for name in model.branch_names:
        out[name] = {"patches": grads[i].sum(-1), "cls": grads[i + 1].sum(dim=(1, 2)),
                     "positions": grads[i + 2].sum(dim=(1, 2))}
        i += 3
    return out
