"""Checkers of notebook 05, attributions compared: exercises 5.1-5.4."""

from __future__ import annotations

import numbers

import torch

from ..explain import explain
from ..metrics import MAXIMAL_RELATIVE_TOLERANCE, maximal_pixels, pointing_game
from ..model import CrossViT, check_images
from ..utils import eval_mode
from .common import (
    ExerciseError,
    ExerciseTypeError,
    capture_inputs,
    check_model,
    checker_for,
    close,
    compare,
    fail,
    find_site,
    int_option,
    ok,
    run_learner,
    target_classes,
    tensor_answer,
)
from .guard import Shortcut, _ShortcutWatch, module_shortcuts

# ----------------------------------------------------------------------------------------------------------------
# 05 · attributions


def _captum_shortcuts() -> list[Shortcut]:
    from captum import attr  # a run-time dependency; imported when a checker runs

    return [Shortcut(getattr(attr, cls).attribute, f"captum's {cls}") for cls in
            ("Saliency", "IntegratedGradients", "InputXGradient", "DeepLift", "GradientShap", "NoiseTunnel")
            if hasattr(attr, cls)]



def _maximal_pixels(maps: torch.Tensor, relative: float) -> torch.Tensor:
    """(B, H*W) bool: the pixels of each map within ``relative`` of its maximum (0: exactly the maximum; the
    pointing game's own tolerance is :func:`crossvit.metrics.maximal_pixels`)."""
    if relative == MAXIMAL_RELATIVE_TOLERANCE:
        return maximal_pixels(maps).reshape(maps.shape[0], -1)
    flat = maps.double().reshape(maps.shape[0], -1)  # (B, H*W)
    top = flat.max(dim=1, keepdim=True).values  # (B, 1)
    return flat >= top - relative * top.abs()


@checker_for("pointing_hits")
def check_pointing_hits(function: object, maps: torch.Tensor, masks: torch.Tensor) -> None:
    """Exercise 5.1: ``function(maps, masks)`` = (B,) bool, True where more than half of the *maximal pixels* of
    ``maps[i]`` (those within a relative 1e-6 of its maximum) lie on the object, ``masks[i]``: the pointing game's
    default "majority" rule. Reference: ``crossvit.metrics.pointing_game(maps, masks).hits``, which the function
    may not call."""
    name, checker = "pointing_hits", "check_pointing_hits"
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise ValueError(f"{checker}: maps must be a (B, H, W) tensor")
    if not isinstance(masks, torch.Tensor) or masks.shape != maps.shape:
        raise ValueError(f"{checker}: masks must be a (B, H, W) tensor like maps {tuple(maps.shape)}")
    b, h, w = maps.shape
    cpu_maps, cpu_masks = maps.detach().cpu().float(), masks.detach().cpu().bool()
    reference = pointing_game(cpu_maps, cpu_masks).hits.cpu()  # (B,) bool; checks the maps and masks too
    answer = run_learner(name, function, maps, masks, shortcuts=[
        Shortcut(pointing_game, "crossvit.metrics.pointing_game")])
    if isinstance(answer, numbers.Real) and not isinstance(answer, bool):
        raise ExerciseTypeError(f"{name}: the answer is one number ({answer}), probably the score; return one hit "
                                f"per image, a (B,) = ({b},) bool tensor (its mean is the score).")
    if type(answer).__module__ == "numpy":  # a numpy bool array, as a list of bools is taken
        answer = torch.from_numpy(answer.copy()) if getattr(answer, "ndim", 0) else answer
    if isinstance(answer, list | tuple):
        answer = torch.tensor(answer) if answer else None
    if isinstance(answer, torch.Tensor) and answer.shape == (b,) and answer.dtype != torch.bool:
        if answer.is_complex() or not ((answer == 0) | (answer == 1)).all():
            raise ExerciseTypeError(f"{name}: the answer has dtype {answer.dtype} with values other than 0/1; "
                                    "return a bool tensor, e.g. inside_count > maximal_count / 2.")
    if isinstance(answer, torch.Tensor):
        answer = answer.float()  # bool or 0/1: compared as bool below
    hits = tensor_answer(name, answer, "one hit (True/False) per image", (b,), "(B,)",
                          {(b, h, w): "that is a map of the maximal pixels; keep one value per image, whether "
                                      "more than half of them lie on the object.",
                           (b, h * w): "that is one value per pixel; keep one value per image, whether more than "
                                       "half of the maximal pixels lie on the object.",
                           (b, 2): "those look like (row, col) points; the default rule counts all the maximal "
                                   "pixels, not one point."})
    if not torch.equal(hits.bool(), reference):
        inside = cpu_masks.reshape(b, -1)  # (B, H*W)
        near, exact = _maximal_pixels(cpu_maps, MAXIMAL_RELATIVE_TOLERANCE), _maximal_pixels(cpu_maps, 0.0)
        share = (near & inside).sum(1) / near.sum(1)  # (B,) share of the maximal pixels on the object
        candidates = [
            (pointing_game(cpu_maps, cpu_masks, rule="first").hits.cpu(),
             "these are the hits of the single *first* maximum (rule='first'). On a patch map the maximum is a "
             "whole patch of equal pixels, and the first of them is its top-left corner, which favours objects "
             "up and to the left; count all the maximal pixels and ask whether more than half lie on the object."),
            ((near & inside).any(1),
             "one maximal pixel on the object is enough for your rule; a hit needs more than half of them there."),
            ((near & ~inside).sum(1) == 0,
             "your rule needs every maximal pixel on the object; more than half of them is enough."),
            (share >= 0.5, "exactly half of the maximal pixels on the object counts as a hit in your rule; it must "
                           "be more than half (share > 0.5)."),
            ((exact & inside).sum(1) * 2 > exact.sum(1),
             "the maximal pixels were found by exact equality with the maximum; float noise can split one patch's "
             "value, so take every pixel >= max - 1e-6 * |max|."),
        ]
        if hits.bool().all():  # says nothing about which rule was meant: name the images instead of guessing
            misses = (~reference).nonzero().flatten().tolist()
            fail(name, f"your function counts every map as a hit, but image(s) {misses[:5]} are misses: fewer "
                        f"than half of their maximal pixels lie on the object (image {misses[0]}: "
                        f"{share[misses[0]].item():.0%}).")
        for wrong, mistake in candidates:
            if torch.equal(hits.bool(), wrong):
                fail(name, mistake)
        wrong_images = (hits.bool() != reference).nonzero().flatten().tolist()
        fail(name, f"image(s) {wrong_images[:5]} are wrong (on image {wrong_images[0]}, "
                    f"{share[wrong_images[0]].item():.0%} of the maximal pixels lie on the object).")
    ok(name, f"your hits are right: {int(reference.sum())} of {b} maps put most of their maximal pixels on the "
              f"object (pointing game {reference.float().mean().item():.2f}).")


def _input_gradient(model: CrossViT, images: torch.Tensor, target: torch.Tensor, probability: bool = False
                    ) -> torch.Tensor:
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        logits = model(x)
        scores = logits.softmax(dim=1) if probability else logits
        (grad,) = torch.autograd.grad(scores.gather(1, target.to(x.device)[:, None]).sum(), x)
    return grad.detach().cpu().float()


@checker_for("saliency_map")
def check_saliency_map(function: object, model: CrossViT, images: torch.Tensor, target: object) -> None:
    """Exercise 5.2: ``function(model, images, target)`` = ``|d logit[target] / d pixel|``, the largest over the colour
    channels, (B, H, W). Reference: ``crossvit.explain(model, images, "saliency", target)`` (captum's Saliency);
    the function may use neither."""
    name, checker = "saliency_map", "check_saliency_map"
    model = check_model(checker, model)
    check_images(images, model)
    b, c, h, w = images.shape
    target = target_classes(checker, target, b, model.num_classes)
    reference = explain(model, images, "saliency", target=target.to(images.device))
    grad = _input_gradient(model, images, target)
    answer = run_learner(name, function, model, images, target.to(images.device), model=model,
                         shortcuts=[*_captum_shortcuts(), Shortcut(explain, "crossvit.explain")])
    answer = tensor_answer(name, answer, "the saliency map", (b, h, w), "(B, H, W)",
                            {(b, c, h, w): "reduce the colour channels: the largest |gradient| over dimension 1."})
    compare(name, answer, reference, what="captum's saliency map", atol=1e-6, rtol=1e-3, diagnoses=[
        (lambda: grad.amax(dim=1), "the absolute value is missing: take |gradient| before the channel maximum."),
        (lambda: grad.abs().sum(dim=1), "the channels were summed; take the largest |gradient| over them."),
        (lambda: grad.abs().mean(dim=1), "the channels were averaged; take the largest |gradient| over them."),
        (lambda: _input_gradient(model, images, target, probability=True).abs().amax(dim=1),
         "that is the gradient of the softmax probability; saliency differentiates the logit (the score before "
         "the softmax)."),
    ])
    ok(name, "your saliency map equals captum's (the model in eval mode, the logit of the target class).")


@checker_for("integrated_gradients")
def check_integrated_gradients(function: object, model: CrossViT, images: torch.Tensor, target: object,
                               steps: int) -> None:
    """Exercise 5.3: ``function(model, images, target, steps=steps)`` = integrated gradients from a black image (B, C, H, W) as the right Riemann sum
    (Sundararajan et al. 2017, eq. 3): (x - x') * (1/m) sum_{k=1..m} dF/dx (x' + k/m (x - x')), x' = 0, m =
    ``steps``, F the logit of ``target``. Reference: captum's ``IntegratedGradients`` with
    ``method="riemann_right"``; the function may use neither captum nor ``crossvit.explain``."""
    from captum.attr import IntegratedGradients

    name, checker = "integrated_gradients", "check_integrated_gradients"
    model = check_model(checker, model)
    check_images(images, model)
    m = int_option(checker, "steps", steps, 2)
    b, c, h, w = images.shape
    target = target_classes(checker, target, b, model.num_classes).to(images.device)
    x = images.detach().clone()
    baseline = torch.zeros_like(x)

    def captum_ig(method: str) -> torch.Tensor:
        with eval_mode(model), torch.enable_grad():
            return IntegratedGradients(model).attribute(x.clone().requires_grad_(True), baselines=baseline,
                                                        target=target, n_steps=m, method=method,
                                                        internal_batch_size=max(b, 16))

    def mean_gradient() -> torch.Tensor:
        return sum(_input_gradient(model, baseline + k / m * (x - baseline), target) for k in range(1, m + 1)) / m

    reference = captum_ig("riemann_right").detach().cpu().float()
    scale = reference.abs().max().item()
    with torch.no_grad(), eval_mode(model):
        gap = (model(x) - model(baseline)).gather(1, target[:, None])[:, 0].cpu()
    answer = run_learner(name, function, model, images, target, steps=m, model=model,
                         shortcuts=[*_captum_shortcuts(), Shortcut(explain, "crossvit.explain")])
    answer = tensor_answer(name, answer, "the attributions", (b, c, h, w), "(B, C, H, W)",
                            {(b, h, w): "keep the colour channels; crossvit.explain sums them only afterwards."})
    compare(name, answer, reference, what="captum's integrated gradients", atol=1e-4 * scale, rtol=1e-3, diagnoses=[
        (lambda: captum_ig("riemann_left"), "that is the left Riemann sum (k = 0 .. m-1); use the points "
                                            "k/m for k = 1 .. m, as in the paper."),
        (lambda: captum_ig("riemann_middle"), "that is the midpoint rule ((k + 0.5)/m); use k/m for k = 1 .. m."),
        (lambda: mean_gradient(), "that is the average gradient; multiply it by (x - baseline)."),
        (lambda: reference * m, "the gradients were summed, not averaged: divide by the number of steps."),
        (lambda: -reference, "the sign is flipped: integrate from the baseline to the image, (x - baseline)."),
    ])
    total = answer.sum(dim=(1, 2, 3))
    ok(name, f"your attributions equal captum's ({m} steps). Completeness: they sum to F(x) - F(0) up to "
              f"{(total - gap).abs().max().item():.3g} (the logit gap is {gap.abs().mean().item():.3g} on "
              "average); more steps shrink that error.")


# ----------------------------------------------------------------------------------------------------------------
# 5.4 · the uniform rule on one attention layer (AttnLRP)

_RELEVANCE_SEED = 0  # the random relevance the checker hands to the attention's output


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dim: int = -1) -> torch.Tensor:
    """``softmax(q k^T scale) v`` in float64, with the softmax over ``dim`` (-1: over the keys)."""
    return (scale * q.double() @ k.double().transpose(-2, -1)).softmax(dim) @ v.double()


def _uniform_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, grad: torch.Tensor
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """AttnLRP's rules on ``softmax(q k^T scale) v`` written out term by term, in float64 and independent of
    :mod:`crossvit.lrp`: the output ``out`` receives the relevance ``R_out = out * grad``. A bilinear product
    ``z_i = sum_t a_t b_t`` hands each term ``a_t b_t`` its share ``a_t b_t R_i / z_i`` and splits it evenly, half to
    each factor (the uniform rule); the softmax ``A = softmax(S)`` takes its gradient x input, ``R_S = S * A * (g_A -
    sum A g_A)`` with ``g_A = R_A / A``, i.e. ``R_S = S * (R_A - A sum R_A)``. Returns (out (B, H, Nq, D), the
    relevance of q, k and v (each like its tensor), R_S (B, H, Nq, Nk))."""
    q, k, v, grad = (t.detach().double() for t in (q, k, v, grad))
    scores = scale * q @ k.transpose(-2, -1)  # (B, H, Nq, Nk)
    attn = scores.softmax(dim=-1)
    out = attn @ v  # (B, H, Nq, D)
    # A v: the term A_ij v_jc of out_ic gets A_ij v_jc R_out_ic / out_ic = A_ij v_jc grad_ic
    terms = attn[..., :, :, None] * v[..., None, :, :] * grad[..., :, None, :]  # (B, H, Nq, Nk, D)
    r_attn, r_v = terms.sum(dim=-1) / 2, terms.sum(dim=-3) / 2  # (B, H, Nq, Nk), (B, H, Nk, D)
    per_score = r_attn - attn * r_attn.sum(dim=-1, keepdim=True)  # R_S / S (B, H, Nq, Nk): no division needed
    r_scores = scores * per_score  # the softmax's gradient x input
    # scale q k^T: the term scale q_id k_jd of S_ij gets scale q_id k_jd R_S_ij / S_ij = scale q_id k_jd per_score_ij
    terms = scale * q[..., :, None, :] * k[..., None, :, :] * per_score[..., None]  # (B, H, Nq, Nk, D)
    return out, {"q": terms.sum(dim=-2) / 2, "k": terms.sum(dim=-3) / 2, "v": r_v}, r_scores


def _attention_inputs(checker: str, model: CrossViT, images: torch.Tensor, site_name: str
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The q, k, v (B, heads, N, dim_head) that the attention of ``site_name`` receives, on the CPU in float32,
    and its scale."""
    site = find_site(checker, model, site_name)
    (attention,) = [m for m in model.modules() if getattr(m, "attention_map", None) is site.module]
    with torch.no_grad(), eval_mode(model):
        _, (q, k, v) = capture_inputs(attention.inputs, lambda: model(images))
    return (*(t.detach().to("cpu", torch.float32) for t in (q, k, v)), float(site.module.scale))


_GRADIENT_SLIPS = (  # (the factors of q's, k's and v's gradients, what the mistake is)
    ((1.0, 1.0, 1.0), "the gradients are the ordinary ones: no rule acts on them."),
    ((0.25, 0.25, 1.0), "q and k are right, but v receives its whole gradient: the 1/2 on v is missing."),
    ((0.5, 0.5, 0.5), "q and k were scaled by 1/2 each, like v; but q kᵀ sits inside the product A v, so q and "
                      "k get half of the half that reaches A."),
    ((0.5, 0.5, 1.0), "q and k were scaled by 1/2 each and v not at all; each of the two products halves what "
                      "passes through it, and q, k lie behind both."),
    ((0.0, 0.0, 1.0), "no gradient reaches q and k: the attention weights are held constant. That is CP-LRP's "
                      "rule, not the uniform rule of AttnLRP."),
    ((0.0, 0.0, 0.5), "no gradient reaches q and k (the attention weights are held constant, as in CP-LRP); the "
                      "uniform rule lets a quarter of it through."),
    ((0.75, 0.75, 0.5), "the gradients of q and k are 3/4 of the ordinary ones, not 1/4: in the detach trick the "
                        "weight of the part that carries the gradient and that of the detached part are swapped."),
    ((0.25, 0.25, 0.25), "v's gradient was scaled by 1/4 like q's and k's; v is a factor of one product only."),
    ((0.5, 0.5, 0.25), "the factors are swapped: q and k lie behind two products, v behind one."),
)


@checker_for("lrp_attention")
def check_lrp_attention(function: object, model: CrossViT, images: torch.Tensor, site: str) -> None:
    """Exercise 5.4: ``function(q, k, v, scale)`` = ``softmax(q k^T scale) v`` (B, heads, Nq, dim_head) for the
    q, k, v that the attention of ``site`` receives on ``images``, with the forward values unchanged and the
    gradients of AttnLRP's uniform rule: a relevance handed to the output comes back, as gradient x input, as the
    rule written out term by term says (:func:`_uniform_rule`). The function gets CPU float32 copies that require
    grad; anything in :mod:`crossvit.lrp` is refused."""
    from .. import lrp

    name, checker = "lrp_attention", "check_lrp_attention"
    model = check_model(checker, model)
    check_images(images, model)
    if not isinstance(site, str):
        raise TypeError(f"{checker}: site must be a site's name such as 'blocks.2.small.self.0', got "
                        f"{type(site).__name__}")
    q, k, v, scale = _attention_inputs(checker, model, images, site)
    b, h, nq, d = q.shape
    plain_out = _attend(q, k, v, scale)
    # a random positive relevance R_out = out * grad at the output: |random| with the output's sign as its gradient
    grad = torch.randn(b, h, nq, d, generator=torch.Generator().manual_seed(_RELEVANCE_SEED),
                       dtype=torch.float64).abs() * plain_out.sign()
    out, relevance, r_scores = _uniform_rule(q, k, v, scale, grad)  # the reference, before the learner runs
    leaves = {n: t.double().requires_grad_(True) for n, t in (("q", q), ("k", k), ("v", v))}
    with torch.enable_grad():
        plain = torch.autograd.grad((_attend(leaves["q"], leaves["k"], leaves["v"], scale) * grad).sum(),
                                    list(leaves.values()))
    ordinary = {n: (t.detach() * g).float() for (n, t), g in zip(leaves.items(), plain)}  # gradient x input

    seen: dict[str, tuple] = {}

    def learner(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> object:
        seen["inputs"] = (q, k, v)
        return function(q, k, v, scale)

    shortcuts = module_shortcuts(lrp)
    given = [t.clone().requires_grad_(True) for t in (q, k, v)]
    with torch.enable_grad():
        answer = run_learner(name, learner, *given, scale, shortcuts=shortcuts)
    values = tensor_answer(name, answer, "the attention's output", (b, h, nq, d), "(B, heads, Nq, dim_head)",
                           {(b, nq, h * d): "keep the heads apart; the output projection merges them later.",
                            (b, h, nq, nq): "that is the attention map A; multiply it by v.",
                            (b, h, nq, k.shape[2]): "that is the attention map A; multiply it by v."})

    compare(name, values, out.float(), what="softmax(q kᵀ · scale) v", diagnoses=[
        (lambda: _attend(q / 4, k / 4, v / 2, scale), "the factors 1/4, 1/4 and 1/2 changed the forward values too; "
                                                     "the rule changes only the gradients."),
        (lambda: _attend(q / 4, k / 4, v, scale), "the factors 1/4 on q and k changed the forward values too; the "
                                                 "rule changes only the gradients."),
        (lambda: _attend(q, k, v / 2, scale), "the factor 1/2 on v changed the forward values too (the output is "
                                             "halved); the rule changes only the gradients."),
        (lambda: _attend(q, k, v, 1.0), "the scale is missing: the scores are q kᵀ times scale."),
        (lambda: _attend(q, k, v, 1.0 / scale), "the scores were divided by scale; scale is the factor itself "
                                               "(dim_head ** -0.5)."),
        (lambda: _attend(q, k, v, scale, dim=-2), "the softmax ran over the queries; each query's weights over the "
                                                 "keys must sum to 1."),
    ])
    if not answer.requires_grad:
        fail(name, "the output carries no gradient back to q, k and v (it does not require grad): the rule "
                   "scales the gradients, it must not stop all of them.")
    inputs = seen["inputs"]
    watch = _ShortcutWatch(shortcuts)
    try:
        with watch:
            grads = torch.autograd.grad(answer, inputs, grad.to(answer.dtype), allow_unused=True)
    except Exception as err:  # noqa: BLE001 - a bug in the learner's backward becomes a sentence
        raise ExerciseError(f"{name}: the backward pass through your function raised {type(err).__name__}: "
                            f"{err}") from err
    if watch.seen:
        fail(name, f"your function's backward pass calls {watch.seen[0].label}, which this exercise asks you to "
                   "rebuild yourself.")
    got = {n: (t.detach().double() * (torch.zeros_like(t) if g is None else g.detach()).double()).float()
           for n, t, g in zip("qkv", inputs, grads)}  # gradient x input
    tolerance = {n: dict(atol=1e-5 * relevance[n].abs().max().item(), rtol=1e-4) for n in "qkv"}
    if not all(close(got[n], relevance[n].float(), **tolerance[n]) for n in "qkv"):
        for factors, mistake in _GRADIENT_SLIPS:
            if all(close(got[n], ordinary[n] * f, **tolerance[n]) for n, f in zip("qkv", factors)):
                fail(name, f"the forward values are right, but the relevance (gradient x input) is not the "
                           f"uniform rule's: {mistake}")
        for n in "qkv":
            compare(name, got[n], relevance[n].float(), what=f"the uniform rule's relevance of {n} (gradient x "
                    "input)", **tolerance[n])
    total = (out * grad).sum().item()
    ok(name, f"your attention keeps its output and follows the uniform rule. Of the relevance {total:.4g} handed "
              f"to the output, v holds {relevance['v'].sum().item():.4g} (half) and A the other half; of that, the "
              f"softmax rule passes {r_scores.sum().item():.4g} on to the scores, split evenly between q and k "
              f"({relevance['q'].sum().item():.4g} each), and absorbs the rest, as a bias would.")
