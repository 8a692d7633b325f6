"""Co-attention relevancy (crossvit.relevancy): the library's batched implementation against a direct reference
written loop by loop from Chefer, Gur and Wolf's rules (ICCV 2021), per image and per layer in float64 numpy,
with the fusion layers mapped onto them as docs/rollout.md says; on both flavours (the seed flavour has two
fusion layers per block)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crossvit
from crossvit import metrics
from crossvit.explain import REGISTRY
from crossvit.relevancy import coattention_relevancy, normalize_self_relevancy
from crossvit.scenes import make_two_object_shapes

SEED = 2**40 + 2**33 + 97  # test images: above the trainer's seeds, not a benchmark's


def _seed_model():
    torch.manual_seed(1)
    config = crossvit.SeedConfig(image_size=96, num_classes=4, sm_dim=32, lg_dim=48, sm_enc_heads=2,
                                 sm_enc_mlp_dim=64, sm_enc_dim_head=16, lg_enc_depth=2, lg_enc_heads=2,
                                 lg_enc_mlp_dim=64, lg_enc_dim_head=16, cross_attn_depth=2, cross_attn_heads=2,
                                 cross_attn_dim_head=16, depth=2, dropout=0.0, emb_dropout=0.0)
    return crossvit.CrossViT(config).eval()


def _record(model, images, target):
    with crossvit.record_attention(model, grads=True) as rec:
        logits = model(images)
        logits.gather(1, target[:, None]).sum().backward(inputs=list(rec.sites.values()))
    return rec


# ---- the reference: Chefer et al.'s functions, one image at a time ---------------------------------------------

def _avg_heads(attention, grad):  # rule 5: mean over heads of the positive part of grad * attention
    heads = attention.shape[0]
    out = np.zeros(attention.shape[1:])
    for h in range(heads):
        out += np.maximum(grad[h] * attention[h], 0.0)
    return out / heads


def _handle_residual(r):  # eq. 8-9
    n = r.shape[0]
    out = r - np.eye(n)
    for i in range(n):
        total = out[i].sum()
        out[i] = out[i] / total if total != 0 else 0.0
    return out + np.eye(n)


def _self_rules(r_ss, r_sq, cam):  # rules 6 and 7: the additions
    return cam @ r_ss, cam @ r_sq


def _mm_rules(r_ss, r_qq, r_qs, cam_sq, normalize, self_in_cross):  # rules 10 and 11: the additions
    r_ss_bar = _handle_residual(r_ss) if normalize else r_ss
    r_qq_bar = _handle_residual(r_qq) if normalize else r_qq
    r_sq_add = r_ss_bar.T @ cam_sq @ r_qq_bar if self_in_cross else cam_sq
    r_ss_add = cam_sq @ r_qs
    return r_sq_add, r_ss_add


def _reference(model, rec, image, normalize=True, self_in_cross=True, start_block=0):
    n = {b: 1 + model.num_patches(b) for b in ("small", "large")}
    other = {"small": "large", "large": "small"}
    r = {(p, q): (np.eye(n[p]) if p == q else np.zeros((n[p], n[q]))) for p in n for q in n}
    sites = [s for s in crossvit.attention_sites(model) if s.block >= start_block]
    maps = {name: a[image].detach().double().numpy() for name, a in rec.sites.items()}
    grads = {name: g[image].double().numpy() for name, g in rec.gradients.items()}
    i = 0
    while i < len(sites):
        site = sites[i]
        if site.kind == "self":
            b, o = site.branch, other[site.branch]
            cam = _avg_heads(maps[site.name], grads[site.name])
            add_bb, add_bo = _self_rules(r[b, b], r[b, o], cam)
            r[b, b] = r[b, b] + add_bb
            r[b, o] = r[b, o] + add_bo
            i += 1
            continue
        layer = [s for s in sites[i:i + 2] if s.kind == "cross" and (s.block, s.index) == (site.block, site.index)]
        additions = []
        for fusion in layer:
            b, o = fusion.branch, other[fusion.branch]
            row = _avg_heads(maps[fusion.name], grads[fusion.name])[0]  # the CLS query's row: [CLS_b, patches_o]
            cam_cross = np.zeros((n[b], n[o]))
            for j in range(1, n[o]):
                cam_cross[0, j] = row[j]
            cam_self = np.zeros((n[b], n[b]))
            cam_self[0, 0] = row[0]
            add_bo, add_bb = _mm_rules(r[b, b], r[o, o], r[o, b], cam_cross, normalize, self_in_cross)
            self_bb, self_bo = _self_rules(r[b, b], r[b, o], cam_self)
            additions += [((b, o), add_bo + self_bo), ((b, b), add_bb + self_bb)]
        for key, value in additions:
            r[key] = r[key] + value
        i += len(layer)
    return r


@pytest.mark.parametrize("flavour", ["paper", "seed"])
@pytest.mark.parametrize("options", [{}, {"normalize_self": False}, {"self_in_cross": False}, {"start_block": 1}])
def test_coattention_relevancy_matches_the_rules_written_out(model, flavour, options):
    net = model if flavour == "paper" else _seed_model()
    images, labels, _ = crossvit.data.make_shapes(3, SEED, 96)
    rec = _record(net, images, labels)
    got = coattention_relevancy(rec, include_cls=True, **options)
    reference_options = {"normalize": options.get("normalize_self", True),
                         "self_in_cross": options.get("self_in_cross", True),
                         "start_block": options.get("start_block", 0)}
    for image in range(3):
        r = _reference(net, rec, image, **reference_options)
        for query in ("small", "large"):
            for patches in ("small", "large"):
                # float32 against float64 (the library keeps R - I itself, so no cancellation against a diagonal
                # near 1 costs precision); a wrong rule differs by far more than 1e-4
                np.testing.assert_allclose(got[query][patches][image].double().numpy(), r[query, patches][0],
                                           rtol=1e-4, atol=1e-9)


def test_the_normalisation_is_the_papers_and_leaves_empty_rows_alone():
    r = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 2.0]]])
    expected = torch.tensor([[[2 / 3 + 1, 1 / 3, 0.0], [0.0, 1.0, 0.0], [0.25, 0.25, 1.5]]])
    torch.testing.assert_close(normalize_self_relevancy(r), expected)


def test_explain_method_is_class_specific_and_checks_its_options(bundled):
    images, labels, masks = make_two_object_shapes(6, SEED + 1)
    first = crossvit.explain(bundled, images, "coattention_relevancy", target=labels[:, 0])
    second = crossvit.explain(bundled, images, "coattention_relevancy", target=labels[:, 1])
    assert first.shape == (6, 96, 96) and not torch.allclose(first, second)
    # the map for each object's class puts more of its mass on that object than the map for the other class does
    assert (metrics.mass_inside_mask(first, masks[:, 0]) > metrics.mass_inside_mask(second, masks[:, 0])).float().mean() > 0.5
    with pytest.raises(TypeError, match="normalize_self must be True or False"):
        crossvit.explain(bundled, images, "coattention_relevancy", normalize_self=1)
    record = REGISTRY["coattention_relevancy"]
    assert record.class_specific and record.needs_gradients
