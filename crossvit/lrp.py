"""Conserved relevance for CrossViT: AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al., ICML 2022).

Attention maps and their rollouts say where a CLS token looked. Layer-wise relevance propagation (LRP) says how much
each input token *contributed* to one logit: it hands the logit back through the network, layer by layer, so that
what a layer receives it passes on to its inputs (*conservation*), except what the layer's biases take. Both rules
used here run as one ordinary backward pass whose gradients are changed at a few places, read out as gradient x
input (the relevance of a tensor ``t`` is ``t * dlogit/dt``, summed over its channels):

* **linear layers** (``nn.Linear``, the patch convolution): the epsilon rule, ``R_i = sum_j x_i w_ij R_j / (z_j +
  epsilon * sign(z_j))``; with ``epsilon = 0`` this is plain gradient x input. With ``gamma > 0``, ``nn.Linear``
  layers take the gamma rule instead (zennit's form: the weights ``w + gamma * max(w, 0)`` in the numerator and
  the denominator, favouring positive contributions);
* **LayerNorm**: the standard deviation is held constant (the identity rule on the normalisation), so the layer is
  linear: centring, then a per-channel scale;
* **GELU** (every element-wise non-linearity here): the identity rule, ``R_in = R_out``: the gradient is replaced by
  ``gelu(x) / x``;
* **attention**, ``softmax(q k^T s) v``: AttnLRP applies the uniform rule to both bilinear products (each factor
  gets half of the product's relevance) and takes the softmax's gradient x input as its rule; as gradients, q and k
  receive a quarter of their gradient and v half. CP-LRP holds the attention weights constant: no gradient reaches
  q and k, v gets all of it. The softmax rule is not conservative: it absorbs (or adds) relevance, as a bias does.

The rules switch on inside :func:`lrp_rules`, a context bound to one model: for its length, a forward hook acts on
that model's modules only (never on torch's classes, never on another model), changing how gradients flow and
leaving every forward value as it is; only forwards of the thread that entered it are affected, no module carries a
hook, and nothing stays behind afterwards. The fused attention kernel
keeps running: the rules act on q, k and v before it (:class:`crossvit.layers.AttentionInputs`).

**Where relevance is read.** ``readout="tokens"`` (the default) reads it at each branch's patch tokens (the patch
embedding's output, before the CLS token and the positions join them) and spreads each token's relevance over the
pixels its patch covers, as mass per pixel (:func:`crossvit.explain.patch_map_to_pixels`, ``density=True``), so the
two branches' maps add up; ``readout="pixels"`` reads it at the input pixels (the model's normalised input, summed
over channels), through the patch embedding and the per-branch resize. :func:`relevance_by_branch` splits a logit
into what lies on each branch's patch tokens, CLS token and positions, and what the biases and softmax rules
absorbed: how much of a decision came through each branch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AttentionInputs
from .model import CrossViT, check_crossvit, check_images
from .recording import leaves_recordings_alone
from .utils import (
    BRANCHES,
    check_bool,
    check_choice,
    check_finite_images,
    check_int,
    check_number,
    class_indices,
    eval_mode,
    progress_bar,
)

RULES: tuple[str, ...] = ("attnlrp", "cp_lrp")
"""The relevance rules :func:`lrp_rules` knows (see the module docstring)."""

READOUTS: tuple[str, ...] = ("tokens", "pixels")
"""Where relevance is read: each branch's patch tokens, or the input pixels."""


# ----------------------------------------------------------------------------------------------------------------
# gradient changes that leave forward values alone


class _ScaleGradient(torch.autograd.Function):
    """Forward: ``x`` unchanged; backward: the gradient times ``factor`` (a number or a tensor like ``x``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        return grad * ctx.factor, None


class _Elementwise(torch.autograd.Function):
    """The identity rule on an element-wise function: forward ``y = f(x)`` as computed, backward ``grad * y / x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        safe = torch.where(x == 0, torch.ones_like(x), x)
        ctx.save_for_backward(torch.where(x == 0, torch.full_like(x, 0.5), y / safe))  # gelu'(0) = 1/2
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (slope,) = ctx.saved_tensors
        return grad * slope, None


class _ConstantScaleNorm(torch.autograd.Function):
    """LayerNorm with its standard deviation held constant: forward the layer's output as computed, backward
    ``(w g - mean(w g)) / std`` (centring is linear and keeps its gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, std: torch.Tensor  # noqa: ANN001
                ) -> torch.Tensor:
        ctx.save_for_backward(std, weight if weight is not None else torch.ones(()))
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        std, weight = ctx.saved_tensors
        scaled = grad * weight
        return (scaled - scaled.mean(dim=-1, keepdim=True)) / std, None, None, None


class _LinearRule(torch.autograd.Function):
    """The epsilon / gamma rule on a linear layer: forward its output ``y`` as computed; backward
    ``(grad * ratio) @ weight`` into its input, where ``ratio = y / (z + epsilon * sign(z))`` and ``z`` (and
    ``weight``) use the gamma-modified weights."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, ratio: torch.Tensor  # noqa: ANN001
                ) -> torch.Tensor:
        ctx.save_for_backward(weight, ratio)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        weight, ratio = ctx.saved_tensors
        return (grad * ratio) @ weight, None, None, None


def _stabilized(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` with sign(0) = +1, so that no denominator is 0 when epsilon > 0."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


# ----------------------------------------------------------------------------------------------------------------
# the context


@dataclass(frozen=True)
class _Rules:
    rule: str
    epsilon: float
    gamma: float
    thread: int


def _hooks(rules: _Rules):
    """The forward hooks of one context, by the module type they serve; each acts only in the context's thread."""

    def mine() -> bool:
        return threading.get_ident() == rules.thread and torch.is_grad_enabled()

    def attention(module: nn.Module, inputs: tuple, output: tuple) -> tuple | None:
        if not mine():
            return None
        q, k, v = output
        if rules.rule == "cp_lrp":  # attention weights constant
            return q.detach(), k.detach(), v
        return _ScaleGradient.apply(q, 0.25), _ScaleGradient.apply(k, 0.25), _ScaleGradient.apply(v, 0.5)

    def norm(module: nn.LayerNorm, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not mine():
            return None
        x = inputs[0]
        std = torch.sqrt(x.detach().var(dim=-1, unbiased=False, keepdim=True) + module.eps)
        return _ConstantScaleNorm.apply(x, output, module.weight, std)

    def elementwise(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return _Elementwise.apply(inputs[0], output) if mine() else None

    def linear(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not mine():
            return None
        x = inputs[0]
        weight, bias = module.weight.detach(), None if module.bias is None else module.bias.detach()
        if isinstance(module, nn.Linear) and rules.gamma > 0:
            weight = weight + rules.gamma * weight.clamp(min=0)
            bias = None if bias is None else bias + rules.gamma * bias.clamp(min=0)
            z = F.linear(x.detach(), weight, bias)
        else:
            z = output.detach()
        ratio = output.detach() / _stabilized(z, rules.epsilon)
        if isinstance(module, nn.Linear):
            return _LinearRule.apply(x, output, weight, ratio)
        return _ScaleGradient.apply(output, ratio)  # a convolution: epsilon only (its gradient stays the conv's)

    return attention, norm, elementwise, linear


_OPEN: dict[tuple[int, int], list[object]] = {}
"""(id of a model, thread) -> the lrp_rules contexts and suspensions open on that model in that thread, innermost
last: only the innermost acts, so contexts never stack their rules."""


@contextmanager
def _innermost(model: nn.Module) -> Iterator[object]:
    """Open a context on ``model`` in this thread: yields its token, which is innermost until a later one opens."""
    key, token = (id(model), threading.get_ident()), object()
    _OPEN.setdefault(key, []).append(token)
    try:
        yield token
    finally:
        _OPEN[key].remove(token)
        if not _OPEN[key]:
            del _OPEN[key]


@contextmanager
def rules_suspended(model: CrossViT) -> Iterator[None]:
    """Within the block, the :func:`lrp_rules` contexts already open on ``model`` in this thread do not act: its
    backward passes are plain gradients again (a context opened inside the block acts). :func:`crossvit.explain`
    runs in one, so that each method gives its own map inside an ``lrp_rules`` block too."""
    with _innermost(model):
        yield


@contextmanager
def lrp_rules(model: CrossViT, rule: str = "attnlrp", *, epsilon: float = 0.0, gamma: float = 0.0
              ) -> Iterator[None]:
    """Within the block, backward passes through forwards of ``model`` (run in this thread) follow ``rule``'s
    relevance rules (see the module docstring): gradient x input is then relevance. Forward values do not change.

    Args:
        model: a :class:`crossvit.CrossViT` (either flavour).
        rule: ``"attnlrp"`` or ``"cp_lrp"``.
        epsilon: the epsilon rule's stabiliser on linear layers and the patch convolution (>= 0; 0 = gradient x
            input).
        gamma: the gamma rule on ``nn.Linear`` layers (>= 0; 0 = off). Pair it with ``epsilon > 0``: the gamma
            rule's denominator (the output recomputed with the modified weights) can come near zero where the
            output does not, and without a stabiliser those ratios swamp the map (``benchmarks/lrp_rules.py``:
            with ``gamma = 1, epsilon = 0`` class-specific pointing on two-object scenes falls from 0.88 to 0.12).

    One global forward hook (``torch.nn.modules.module.register_module_forward_hook``) serves the context: it acts
    on this model's LayerNorm, GELU, linear and attention-input modules only, so no module carries a hook (a copy or
    a pickle of the model made inside the block holds nothing of it) and other models are untouched. It is removed
    when the block exits, also on an exception; the model's flags, parameters and their ``.grad`` are not touched.
    Contexts nest: within an inner ``lrp_rules`` on the same model (:func:`relevance_by_branch` opens one) only the
    inner rules act, and :func:`rules_suspended` turns the open ones off.
    """
    check_crossvit(model, "lrp_rules")
    rules = _Rules(check_choice("rule", rule, RULES),
                   check_number("epsilon", epsilon, 0.0, float("inf"), high_open=True),  # inf: NaN relevance
                   check_number("gamma", gamma, 0.0, float("inf"), high_open=True), threading.get_ident())
    attention, norm, elementwise, linear = _hooks(rules)
    served = {}  # id of one of the model's modules -> the rule's hook
    for module in model.modules():
        if isinstance(module, AttentionInputs):
            served[id(module)] = attention
        elif isinstance(module, nn.LayerNorm):
            served[id(module)] = norm
        elif isinstance(module, nn.GELU):
            served[id(module)] = elementwise
        elif isinstance(module, (nn.Linear, nn.Conv2d)) and (rules.epsilon > 0 or rules.gamma > 0):
            served[id(module)] = linear

    with _innermost(model) as token:
        key = (id(model), rules.thread)

        def dispatch(module: nn.Module, inputs: tuple, output: object) -> object:
            hook = served.get(id(module))
            if hook is None or _OPEN.get(key, [None])[-1] is not token:  # not ours, or an inner context acts
                return None
            return hook(module, inputs, output)

        handle = torch.nn.modules.module.register_module_forward_hook(dispatch)
        try:
            yield
        finally:
            handle.remove()


# ----------------------------------------------------------------------------------------------------------------
# reading relevance out


@dataclass(frozen=True)
class BranchRelevance:
    """One logit per image split by :func:`relevance_by_branch`; every tensor is (B,) unless noted, float32.

    ``logit``: the explained logit. ``patches[b]`` (B, N_b): the relevance of each patch token of branch ``b``;
    ``cls[b]`` and ``positions[b]``: that of its CLS token and of its position embeddings (these are learned
    constants, so their relevance is what biases take at the input). ``absorbed``: the rest of the logit, taken by
    the biases inside the network and (AttnLRP) by the softmax rule.
    """

    rule: str
    logit: torch.Tensor
    patches: dict[str, torch.Tensor]
    cls: dict[str, torch.Tensor]
    positions: dict[str, torch.Tensor]

    def total(self, branch: str) -> torch.Tensor:
        """Everything on branch ``branch``'s tokens: patches, CLS token and positions."""
        check_choice("branch", branch, BRANCHES)
        return self.patches[branch].sum(dim=1) + self.cls[branch] + self.positions[branch]

    @property
    def absorbed(self) -> torch.Tensor:
        return self.logit - sum(self.total(b) for b in BRANCHES)

    def share(self, branch: str) -> torch.Tensor:
        """The share of the two branches' relevance that lies on ``branch``: ``total(branch) / (total(small) +
        total(large))`` (signed relevance: a share can leave [0, 1] where the branches disagree in sign)."""
        return self.total(branch) / (self.total("small") + self.total("large"))


def _lrp_backward(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None, rule: str, epsilon: float,
                  gamma: float, readout: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    """One forward under the rules and one backward from the target logits (the predicted class of this forward
    where ``target`` is None). Returns (logits of the target (B,), the input's gradient or None, and per branch
    its embedding's output ``tokens`` (B, 1 + N, D), ``patches`` (B, N, D) and the gradient ``grad`` of the
    tokens)."""
    seen: dict[str, dict[str, torch.Tensor]] = {b: {} for b in model.branch_names}
    handles = []
    for branch in model.branch_names:
        embed = model.embed[branch]
        handles.append(embed.register_forward_hook(
            lambda module, inputs, out, b=branch: seen[b].__setitem__("tokens", out)))
        handles.append(embed.patch_embed.register_forward_hook(
            lambda module, inputs, out, b=branch: seen[b].__setitem__("patches", out)))
    x = images.detach().clone().requires_grad_(True)  # so that the graph exists on a frozen model too
    try:
        with lrp_rules(model, rule, epsilon=epsilon, gamma=gamma), torch.enable_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if target is None:
        target = logits.detach().argmax(dim=1)
    score = logits.gather(1, target[:, None])[:, 0]  # (B,)
    wanted = [x] if readout == "pixels" else [seen[b]["tokens"] for b in model.branch_names]
    grads = torch.autograd.grad(score.sum(), wanted)
    if readout == "pixels":
        return score.detach(), grads[0], seen
    for branch, grad in zip(model.branch_names, grads):
        seen[branch]["grad"] = grad
    return score.detach(), None, seen


def _check(model: CrossViT, images: torch.Tensor, target: object) -> torch.Tensor | None:
    check_crossvit(model, "AttnLRP")
    check_images(images, model)
    check_finite_images(images)
    return None if target is None else class_indices("relevance", target, images.shape[0], model.num_classes).to(
        images.device)


@leaves_recordings_alone
def relevance_by_branch(model: CrossViT, images: torch.Tensor, target: int | torch.Tensor | None = None, *,
                        rule: str = "attnlrp", epsilon: float = 0.0, gamma: float = 0.0, batch_size: int = 32,
                        progress: bool = False) -> BranchRelevance:
    """Split each image's ``target`` logit (default: the predicted class) by ``rule`` (see :func:`lrp_rules`)
    over each branch's patch tokens, CLS token and positions; the rest is ``absorbed`` (see
    :class:`BranchRelevance`). The model runs in eval mode (restored afterwards), on ``batch_size`` images at a
    time (one forward and one backward each, which bounds the memory); ``progress`` shows a bar over the batches."""
    target = _check(model, images, target)
    batch_size = check_int("batch_size", batch_size, 1)
    parts: list[tuple[torch.Tensor, dict, dict, dict]] = []
    with eval_mode(model), torch.inference_mode(False):
        for i in progress_bar(range(0, images.shape[0], batch_size), desc="relevance", unit="batch",
                              progress=check_bool("progress", progress)):
            chunk = None if target is None else target[i:i + batch_size]
            logit, _, seen = _lrp_backward(model, images[i:i + batch_size], chunk, rule, epsilon, gamma, "tokens")
            patches, cls, positions = {}, {}, {}
            for branch in model.branch_names:
                embed, grad = model.embed[branch], seen[branch]["grad"].detach().float()  # (b, 1 + N, D)
                patches[branch] = (seen[branch]["patches"].detach().float() * grad[:, 1:]).sum(dim=-1)  # (b, N)
                cls[branch] = (embed.cls_token.detach().float()[:, 0] * grad[:, 0]).sum(dim=-1)  # (b,)
                positions[branch] = (embed.pos_embed.detach().float() * grad).sum(dim=(1, 2))  # (b,)
            parts.append((logit.detach().float(), patches, cls, positions))
    joined = [{b: torch.cat([part[k][b] for part in parts]) for b in model.branch_names} for k in (1, 2, 3)]
    return BranchRelevance(rule, torch.cat([part[0] for part in parts]), *joined)


def patch_relevance(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None, rule: str = "attnlrp", *,
                    epsilon: float = 0.0, gamma: float = 0.0) -> dict[str, torch.Tensor]:
    """Per branch, the relevance of each patch token for each image's ``target`` logit (None: the predicted
    class): ``{"small": (B, N_small), "large": (B, N_large)}``, patches row-major over the branch's grid. The model
    must be in the mode to explain (:func:`crossvit.explain` puts it in eval mode)."""
    target = _check(model, images, target)
    _, _, seen = _lrp_backward(model, images, target, rule, epsilon, gamma, "tokens")
    return {b: (seen[b]["patches"].detach() * seen[b]["grad"][:, 1:]).sum(dim=-1) for b in model.branch_names}


def pixel_relevance(model: CrossViT, images: torch.Tensor, target: torch.Tensor | None, rule: str = "attnlrp", *,
                    epsilon: float = 0.0, gamma: float = 0.0) -> torch.Tensor:
    """(B, H, W): the relevance of each input pixel (summed over channels) for each image's ``target`` logit, read
    at the normalised input the first layer sees (``(x - mean) / std`` for a model with ``input_norm``, whose
    relevance is ``(x - mean) * dlogit/dx``; the mean is a bias)."""
    target = _check(model, images, target)
    _, grad, _ = _lrp_backward(model, images, target, rule, epsilon, gamma, "pixels")
    x = images.detach()
    if model.arch.input_norm is not None:
        x = x - model.input_mean
    return (x * grad).sum(dim=1)
