"""Checkers of notebook 03, cross-attention and hooks: exercises 3.1-3.2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..layers import AttentionMap
from ..model import CrossViT, check_images
from ..recording import AttentionRecorder, attention_sites, record_attention
from ..utils import eval_mode
from .common import (
    ExerciseTypeError,
    capture_inputs,
    check_branch,
    check_model,
    checker_for,
    close,
    compare,
    fail,
    ok,
    run_learner,
    shape_text,
    tensor_answer,
)
from .guard import Shortcut, remove_hooks

# ----------------------------------------------------------------------------------------------------------------
# 03 · cross-attention and hooks


@checker_for("record_with_hooks")
def check_record_with_hooks(function: object, model: CrossViT, images: torch.Tensor, sites: str = "cross") -> None:
    """Exercise 3.1: ``function(model, images, kind)`` = {site name: map} recorded with your own forward hooks on
    the sites' modules (``site.module``) during one forward pass, hooks removed afterwards. Reference:
    ``record_attention(model, sites=sites)``, which the function may not use."""
    name, checker = "record_with_hooks", "check_record_with_hooks"
    model = check_model(checker, model)
    check_images(images, model)
    left = {site.name: keys for site in attention_sites(model) if (keys := _forward_hook_keys(site.module))}
    if left:  # hooks of an attempt run outside the checker: remove them, so this attempt starts clean
        for site in attention_sites(model):
            remove_hooks({id(site.module): site.module}, left.get(site.name, set()))
        print(f"(removed {sum(map(len, left.values()))} hook(s) left on the attention sites, e.g. on "
              f"{next(iter(left))}, probably by an earlier run of your function outside this checker; each hook "
              "must be removed before the function returns. Hooks of an open record_attention stay.)")
    with torch.no_grad(), eval_mode(model), record_attention(model, sites=sites) as rec:
        model(images)
    reference = rec.sites
    inputs = _site_inputs(model, images, list(reference))  # what each site's module receives: (q, k)
    with torch.no_grad():
        answer = run_learner(name, function, model, images, sites, model=model, shortcuts=[
            Shortcut(record_attention.__init__, "record_attention"),
            Shortcut(AttentionRecorder._attach, "an AttentionRecorder")])
    if answer is None:
        raise ExerciseTypeError(f"{name}: the answer is None; return a dict {{site name: map}}. Does your "
                                "function end with `return ...`?")
    if not isinstance(answer, Mapping):
        raise ExerciseTypeError(f"{name}: the answer is a {type(answer).__name__}; return a dict mapping each "
                                f"site name (e.g. {next(iter(reference))!r}) to the map its hook saw.")
    missing = [s for s in reference if s not in answer]
    extra = [s for s in answer if s not in reference]
    last = list(reference)[-1]
    if len(reference) > 1 and list(answer) == [last] and isinstance(answer[last], torch.Tensor) \
            and close(answer[last].detach().cpu().float(), reference[last].cpu().float(), 1e-5, 1e-4):
        fail(name, f"every hook stored its map under one name, {last!r}, the last site's, so only the last map "
                    "is left: when the hooks ran, the loop variable they read the name from already held the "
                    "last site.")
    if missing:
        fail(name, f"{len(missing)} of the {len(reference)} sites are missing (e.g. {missing[0]!r}). Register a "
                    "hook on site.module for every site in the list, keyed by site.name.")
    if extra:
        fail(name, f"unexpected keys {extra[:3]}: record exactly the sites {list(reference)}.")
    for site_name, expected in reference.items():
        value = answer[site_name]
        q, k = inputs[site_name]
        if isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(v, torch.Tensor) for v in value) \
                and tuple(value[0].shape) == tuple(q.shape):
            fail(name, f"under {site_name} you stored the hook's `inputs`, the (queries, keys) the module receives; "
                        "the map is what the module returns, the hook's third argument `output`.")
        if isinstance(value, torch.Tensor) and tuple(value.shape) in (tuple(q.shape), tuple(k.shape)) \
                and tuple(value.shape) != tuple(expected.shape):
            fail(name, f"under {site_name} you stored one of the module's inputs (the queries or the keys, "
                        f"{shape_text(value.shape)}), not its output: a forward hook is called as hook(module, "
                        "inputs, output), and the map is `output`.")
        if isinstance(value, torch.Tensor) and not close(value.detach().cpu().float(), expected.cpu().float(),
                                                          1e-5, 1e-4):
            same_as = [s for s, other in reference.items()
                       if s != site_name and close(value.detach().cpu().float(), other.cpu().float(), 1e-5, 1e-4)]
            if same_as:
                fail(name, f"under {site_name} you stored the map of {same_as[0]}: each hook must store under its "
                            "own site's name, e.g. a name bound when the hook is made (a default argument or "
                            "functools.partial), not a loop variable read when the hook runs.")
        layout = "(B, heads, 1, 1 + N_other)" if ".cross." in site_name else "(B, heads, N, N)"
        got = tensor_answer(name, value, f"the map of {site_name}", expected.shape, layout)
        if not close(got, expected.cpu().float(), 1e-5, 1e-4):
            fail(name, f"the map of {site_name} differs from record_attention's.")
    ok(name, f"your hooks recorded the same {len(reference)} maps as record_attention, and none is left "
              "registered.")


def _forward_hook_keys(module: torch.nn.Module) -> set:
    """The keys of ``module``'s forward hooks and forward pre-hooks, as :func:`remove_hooks` takes them, but for
    those of the library's own recordings (a caller's open ``record_attention`` keeps recording)."""
    return {(id(module), kind, key) for kind in ("_forward_hooks", "_forward_pre_hooks")
            for key, hook in getattr(module, kind).items()
            if getattr(getattr(hook, "__code__", None), "co_filename", "") != _RECORDING_FILE}


_RECORDING_FILE = AttentionRecorder._hook_for.__code__.co_filename  # crossvit/recording.py


def _site_inputs(model: CrossViT, images: torch.Tensor, names: list[str]) -> dict[str, tuple[torch.Tensor, ...]]:
    """site name -> the (q, k) its attention-map module received in one forward pass."""
    seen: dict[str, tuple[torch.Tensor, ...]] = {}
    handles = [site.module.register_forward_pre_hook(
        lambda _module, inputs, name=site.name: seen.__setitem__(name, tuple(t.detach() for t in inputs)))
        for site in attention_sites(model) if site.name in names]
    try:
        with torch.no_grad(), eval_mode(model):
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _fusion_io(checker: str, model: CrossViT, images: torch.Tensor, query: str, block: int, fusion: int
               ) -> tuple[str, Any, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Site name, the CLSFusion module, its input CLS and other patches, and the recorded map and new CLS."""
    k = range(model.arch.num_blocks)[block]
    f = range(model.arch.fusion_layers)[fusion]
    site = f"blocks.{k}.{query}.cross.{f}"
    layer = model.blocks[k].fusions[f]

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        try:
            with record_attention(model, sites=lambda s: s == site) as rec:
                model(images)
        finally:
            handle.remove()
        return rec.sites[site], outputs[-1][model.branch_names.index(query)][:, :1]

    (recorded, new_cls), (small, large) = capture_inputs(layer, run)
    own, other = (small, large) if query == "small" else (large, small)
    return site, getattr(layer, query), own[:, :1], other[:, 1:], recorded, new_cls


@checker_for("fusion_direction")
def check_fusion_direction(function: object, model: CrossViT, images: torch.Tensor, query: str, block: int = -1,
                           fusion: int = -1) -> None:
    """Exercise 3.2: ``function(fusion, cls, other_patches)`` = ``(attention, new_cls)`` of one fusion direction
    of a paper-flavour model (``fusion``: the fusion layer's module for ``query``; ``cls``: that branch's CLS
    (B, 1, D_query); ``other_patches``: the other branch's patch tokens), computed from the module's weights (not
    by running the module): the ``query`` branch's CLS projected to the other width (z), the context [z, other
    patches] layer-normalised, attention with the CLS as the only query, scores scaled by 1/sqrt(dim_head)
    (``fusion.attn.attention_map.scale``), (B, heads, 1, 1 + N_other), the attention output added to z and the
    result projected back (B, 1, D_query). Reference: the recorded cross-attention map and the fusion layer's
    output CLS."""
    name, checker = "fusion_direction", "check_fusion_direction"
    model = check_model(checker, model)
    check_images(images, model)
    query = check_branch(checker, model, query)
    if model.flavour != "paper":
        raise ValueError(f"{checker}: this exercise follows the paper flavour's fusion; the model is "
                         f"{model.flavour!r}")
    other_branch = "large" if query == "small" else "small"
    b = images.shape[0]
    with torch.no_grad(), eval_mode(model):
        site, direction, cls, patches, recorded, new_cls = _fusion_io(checker, model, images, query, block, fusion)
        answer = run_learner(name, function, direction, cls, patches, model=model, shortcuts=[
            Shortcut(type(direction).forward, "the fusion module itself"),
            Shortcut(type(direction.attn).forward, "the fusion's attention module"),
            Shortcut(AttentionMap.forward, "the attention map module"),
            Shortcut(record_attention.__init__, "record_attention")])
    if answer is None:
        raise ExerciseTypeError(f"{name}: the answer is None; return the pair (attention, new_cls). Does your "
                                "function end with `return attention, new_cls`?")
    if isinstance(answer, torch.Tensor) or not isinstance(answer, tuple | list) or len(answer) != 2:
        got = f"a {type(answer).__name__}" + (f" of length {len(answer)}" if isinstance(answer, tuple | list)
                                               else "")
        raise ExerciseTypeError(f"{name}: the answer is {got}; return the pair (attention, new_cls), the "
                                "cross-attention map and the new CLS token.")
    with torch.no_grad(), eval_mode(model):
        attn = direction.attn
        heads, n_other = recorded.shape[1], recorded.shape[-1]
        d_query = model.arch.branch(query).dim
        attention = tensor_answer(
            name, answer[0], "the cross-attention map", (b, heads, 1, n_other), "(B, heads, 1, 1 + N_other)",
            {(b, heads, n_other): "keep the query dimension of size 1: (B, heads, 1, 1 + N_other).",
             (b, 1, n_other): "keep one map per head: do not average them.",
             (b, heads, n_other, n_other): "only the CLS is a query: compute q from context[:, :1] only."})
        z = direction.project_in(cls)  # (B, 1, D_other)

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, N, heads * dim_head) -> (B, heads, N, dim_head)
            return t.reshape(b, t.shape[1], attn.heads, attn.dim_head).transpose(1, 2)

        def parts(normalise: bool = True, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
            context = torch.cat((z, patches), dim=1)
            context = direction.norm(context) if normalise else context
            q = split(attn.to_q(context[:, :1]))
            key, value = (split(t) for t in attn.to_kv(context).chunk(2, dim=-1))
            weights = ((q @ key.transpose(-2, -1)) * (attn.attention_map.scale if scale else 1.0)).softmax(-1)
            mixed = (weights @ value).transpose(1, 2).reshape(b, 1, attn.inner_dim)
            return weights, mixed

        compare(name, attention, recorded, what="the recorded cross-attention map", atol=1e-5, rtol=1e-3,
                 diagnoses=[
                     (lambda: parts(normalise=False)[0],
                      "the context was not layer-normalised: apply fusion.norm to [projected CLS, other patches] "
                      "before computing q, k and v."),
                     (lambda: parts(scale=False)[0],
                      "the scores are not scaled: multiply q·kᵀ by 1/sqrt(dim_head) (the attention module keeps it as "
                      "fusion.attn.attention_map.scale)."),
                 ])
        answer_cls = tensor_answer(
            name, answer[1], "the new CLS token", (b, 1, d_query), "(B, 1, D_query)",
            {(b, 1, z.shape[-1]): "the new CLS is still in the other branch's width: project it back with "
                                  "fusion.project_out.",
             (b, d_query): "keep the token dimension: (B, 1, D_query)."})
        weights, mixed = parts()
        out = attn.to_out(mixed)  # (B, 1, D_other)
        compare(name, answer_cls, new_cls, what="the fusion layer's new CLS token", atol=1e-4, rtol=1e-3,
                 diagnoses=[
                     (lambda: direction.project_out(out),
                      "the residual is missing: add the projected CLS z to the attention output before "
                      "projecting back."),
                     (lambda: direction.project_out(z + mixed),
                      "the attention output skipped its output projection attn.to_out."),
                     (lambda: cls + direction.project_out(out),
                      "that is the seed flavour's residual (in the query's own width); the paper flavour adds z, "
                      "in the other width, before project_out."),
                     (lambda: direction.project_out(direction.norm(torch.cat((z, patches), dim=1))[:, :1] + out),
                      "the residual was taken from the layer-normalised z (the first token of fusion.norm's "
                      "output); the residual path skips the LayerNorm: add z itself, project_in(cls)."),
                 ])
    ok(name, f"your fusion step equals the model's at {site}: the {query} CLS read {n_other - 1} {other_branch}"
              f"-branch patches and came back in its own width {d_query}.")
