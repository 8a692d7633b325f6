"""AttnLRP and CP-LRP (crossvit.lrp) against the rules written out layer by layer (tests/lrp_reference.py), against
lxt's own explicit rules, and against conservation where it must hold exactly."""

from __future__ import annotations

import copy
import dataclasses
import io
import threading

import pytest
import torch
from lrp_reference import Lxt, Ours, reference_relevance

import crossvit
from crossvit.config import PaperConfig, SeedConfig
from crossvit.explain import REGISTRY
from crossvit.lrp import lrp_rules, patch_relevance, pixel_relevance, relevance_by_branch
from crossvit.recording import record_attention

PAPER = PaperConfig(img_size=32, img_scale=(1.0, 0.75), patch_size=(8, 8), embed_dim=(16, 24),
                    depth=((1, 2, 0), (1, 1, 0)), num_heads=(2, 3), mlp_ratio=(2.0, 2.0, 1.0), num_classes=5)
SEED = SeedConfig(image_size=32, num_classes=5, sm_dim=16, lg_dim=24, sm_patch_size=8, lg_patch_size=16,
                  sm_enc_depth=1, lg_enc_depth=2, sm_enc_heads=2, lg_enc_heads=2, sm_enc_mlp_dim=32,
                  lg_enc_mlp_dim=48, sm_enc_dim_head=8, lg_enc_dim_head=8, cross_attn_depth=2, cross_attn_heads=2,
                  cross_attn_dim_head=8, depth=2, dropout=0.0, emb_dropout=0.0)
PAPER_EVEN = dataclasses.replace(PAPER, img_scale=(1.0, 0.5))  # 2 x 2 large patches of 16 px: whole pixels each
FLAVOURS = {"paper": PAPER, "seed": SEED, "paper_even": PAPER_EVEN}


def tiny(flavour: str, *, biases: bool = True, seed: int = 0) -> crossvit.CrossViT:
    """A tiny float64 model whose weights are far from their init (so no layer is near-linear by accident)."""
    torch.manual_seed(seed)
    model = crossvit.CrossViT(FLAVOURS[flavour]).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and not biases:
                p.zero_()
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.4 * torch.randn_like(p) / max(1, p.shape[-1]) ** 0.5)
    return model


def images_for(model: crossvit.CrossViT, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(7),
                      dtype=torch.float64)


@pytest.mark.parametrize("flavour", ["paper", "seed"])
@pytest.mark.parametrize("rule,epsilon,gamma", [("attnlrp", 0.0, 0.0), ("cp_lrp", 0.0, 0.0), ("attnlrp", 0.1, 0.0),
                                                ("cp_lrp", 0.05, 0.25)])
def test_relevance_follows_the_rules_written_out_layer_by_layer(flavour, rule, epsilon, gamma):
    model = tiny(flavour)
    images = images_for(model)
    target = torch.tensor([0, 3, 4])
    ours = relevance_by_branch(model, images, target, rule=rule, epsilon=epsilon, gamma=gamma)
    reference = reference_relevance(model, images, target, Ours(rule, epsilon, gamma))
    for branch in model.branch_names:
        for part, got in (("patches", ours.patches), ("cls", ours.cls), ("positions", ours.positions)):
            torch.testing.assert_close(got[branch].double(), reference[branch][part], rtol=1e-5, atol=1e-8,
                                       msg=f"{flavour} {rule} {branch} {part}")
    with torch.no_grad():
        torch.testing.assert_close(ours.logit.double(), model(images).gather(1, target[:, None])[:, 0].float().double())


@pytest.mark.parametrize("flavour", ["paper", "seed"])
def test_attnlrp_agrees_with_lxts_explicit_rules(flavour):
    pytest.importorskip("lxt.explicit.functional")
    model = tiny(flavour, seed=1)
    images = images_for(model)
    target = torch.tensor([1, 2, 0])
    ours = relevance_by_branch(model, images, target, rule="attnlrp")
    theirs = reference_relevance(model, images, target, Lxt())
    for branch in model.branch_names:  # lxt's LayerNorm rule divides by y + 1e-6: agreement to 0.1 % of the scale
        expected = theirs[branch]["patches"]
        torch.testing.assert_close(ours.patches[branch].double(), expected, rtol=0, atol=1e-3 * expected.abs().max())


@pytest.mark.parametrize("flavour", ["paper", "seed"])
def test_cp_lrp_conserves_the_logit_exactly_without_biases(flavour):
    """No biases, epsilon 0: every layer is linear in its input with the attention weights and the LayerNorm scales
    held constant, so the relevance at the tokens (patches, CLS tokens, positions) adds up to the logit."""
    model = tiny(flavour, biases=False)
    images = images_for(model)
    split = relevance_by_branch(model, images, torch.tensor([2, 2, 1]), rule="cp_lrp")
    torch.testing.assert_close(split.absorbed.double(), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)
    assert split.logit.abs().min() > 1e-3  # a logit worth conserving


@pytest.mark.parametrize("flavour", ["paper", "seed"])
def test_attnlrp_absorbs_exactly_what_its_softmax_rule_absorbs(flavour):
    """Without biases the only leak is AttnLRP's softmax rule: at each attention map A = softmax(S) the relevance of
    A (half of the product A v's) minus that of S. With g the gradient that reaches A under the rules (recorded),
    that is (sum A g - sum S g_S) / 2, g_S = A (g - sum A g), and S = log A + a constant per row."""
    model = tiny(flavour, biases=False)
    images, target = images_for(model), torch.tensor([4, 0, 2])
    split = relevance_by_branch(model, images, target, rule="attnlrp")
    x = images.clone().requires_grad_(True)
    with lrp_rules(model, "attnlrp"), record_attention(model, grads=True) as rec:
        model(x).gather(1, target[:, None]).sum().backward()
    absorbed = torch.zeros(3, dtype=torch.float64)
    for name, a in rec.sites.items():
        a, g = a.detach(), rec.gradients[name]
        g_s = a * (g - (a * g).sum(-1, keepdim=True))
        absorbed += ((a * g).sum(dim=(1, 2, 3)) - (torch.log(a) * g_s).sum(dim=(1, 2, 3))) / 2
    torch.testing.assert_close(split.absorbed.double(), absorbed, rtol=1e-6, atol=1e-8)
    assert absorbed.abs().max() > 1e-3  # the softmax rule does absorb here


@pytest.mark.parametrize("rule", ["attnlrp", "cp_lrp"])
def test_the_pixel_readout_carries_the_patch_tokens_relevance_through_resize_and_patch_embedding(rule):
    """The per-branch resize and the patch embedding are linear; without their biases the pixels' relevance sums to
    the patch tokens' (of both branches); the token readout spreads each token's relevance over its pixels as
    mass, so its map sums to the same (exactly where every patch covers whole pixels of the input)."""
    model = tiny("paper_even", biases=False, seed=3)
    images, target = images_for(model), torch.tensor([1, 1, 3])
    tokens = patch_relevance(model, images, target, rule)
    pixels = pixel_relevance(model, images, target, rule)
    total = tokens["small"].sum(1) + tokens["large"].sum(1)
    torch.testing.assert_close(pixels.sum(dim=(1, 2)), total, rtol=1e-6, atol=1e-9)
    token_map = crossvit.explain(model, images, rule, target=target)
    torch.testing.assert_close(token_map.sum(dim=(1, 2)), total, rtol=1e-6, atol=1e-9)


def test_the_rules_change_gradients_only_inside_the_context_and_only_in_its_thread():
    model = tiny("paper", seed=4)
    images = images_for(model)
    with torch.no_grad():
        plain = model(images)
    x = images.clone().requires_grad_(True)
    plain_grad = torch.autograd.grad(model(x)[:, 0].sum(), x)[0]
    other: dict[str, torch.Tensor] = {}

    def elsewhere() -> None:
        y = images.clone().requires_grad_(True)
        other["grad"] = torch.autograd.grad(model(y)[:, 0].sum(), y)[0]

    with lrp_rules(model, "attnlrp"):
        inside = model(x)
        ruled_grad = torch.autograd.grad(inside[:, 0].sum(), x)[0]
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        copied = copy.deepcopy(model)
        copied_grad = torch.autograd.grad(copied(x)[:, 0].sum(), x)[0]  # a copy made inside follows no rules
        saved = io.BytesIO()
        torch.save(model, saved)  # nothing of the rules is pickled
    torch.testing.assert_close(inside.detach(), plain, rtol=0, atol=0)  # forward values unchanged
    assert not torch.allclose(ruled_grad, plain_grad)  # the rules do change the backward ...
    torch.testing.assert_close(other["grad"], plain_grad)  # ... but not another thread's
    hooked = [n for n, m in model.named_modules() if m._forward_hooks] + \
        [n for n, m in copied.named_modules() if m._forward_hooks]
    assert not hooked, hooked  # nothing left on the model, nothing carried by a copy
    after = torch.autograd.grad(model(x)[:, 0].sum(), x)[0]
    torch.testing.assert_close(after, plain_grad)
    saved.seek(0)
    loaded = torch.load(saved, weights_only=False)
    torch.testing.assert_close(torch.autograd.grad(loaded(x)[:, 0].sum(), x)[0], plain_grad)
    torch.testing.assert_close(copied_grad, plain_grad)


def test_explain_registers_both_rules_with_checked_options(bundled):
    for name in ("attnlrp", "cp_lrp"):
        record = REGISTRY[name]
        assert name in crossvit.METHODS and record.signed and record.class_specific and record.own_prediction
        assert dict(crossvit.METHOD_OPTIONS[name]) == {"readout": "tokens", "epsilon": 0.0, "gamma": 0.0}
    images = crossvit.data.make_shapes(2, crossvit.data.UNUSED_SEED_BASE + 2**34 + 5)[0]
    with pytest.raises(ValueError, match="readout"):
        crossvit.explain(bundled, images, "attnlrp", readout="cls")
    with pytest.raises(ValueError, match="epsilon"):
        crossvit.explain(bundled, images, "cp_lrp", epsilon=-1.0)
    with pytest.raises(TypeError, match="gamma"):
        crossvit.explain(bundled, images, "attnlrp", gamma="0.25")


def test_explain_with_attnlrp_leaves_the_model_as_it_was(bundled):
    model = copy.deepcopy(bundled).train()
    model.heads.eval()  # a frozen part stays frozen
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    images = crossvit.data.make_shapes(2, crossvit.data.UNUSED_SEED_BASE + 2**34 + 6)[0]
    maps = crossvit.explain(model, images, "attnlrp")
    assert maps.shape == (2, 96, 96) and torch.isfinite(maps).all()
    assert model.training and model.blocks.training and not model.heads.training
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert not [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def test_explain_attnlrp_explains_its_own_prediction_by_default(bundled):
    images = crossvit.data.make_shapes(3, crossvit.data.UNUSED_SEED_BASE + 2**34 + 7)[0]
    with torch.no_grad():
        predicted = bundled(images).argmax(1)
    torch.testing.assert_close(crossvit.explain(bundled, images, "attnlrp"),
                               crossvit.explain(bundled, images, "attnlrp", target=predicted))
