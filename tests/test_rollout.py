"""Rollout against hand computations and plain full-matrix references written from the definitions."""

import pytest
import torch

import crossvit
from crossvit.rollout import GraphLayer, discard_lowest, joint_rows, rollout_from_maps


def test_two_layer_rollout_by_hand():
    # one head, CLS + 2 patches; A' = rownorm(0.5 A + 0.5 I) (already row-stochastic here)
    a1 = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.4, 0.4, 0.2]])
    a2 = torch.tensor([[0.6, 0.1, 0.3], [0.3, 0.3, 0.4], [0.0, 0.5, 0.5]])
    # A'1 row 0 = [0.6, 0.25, 0.15]; A'2 row 0 = [0.8, 0.05, 0.15]
    # R[0] = A'2[0] @ A'1:
    #   col 1: 0.8*0.25 + 0.05*0.9 + 0.15*0.2 = 0.2 + 0.045 + 0.03 = 0.275
    #   col 2: 0.8*0.15 + 0.05*0.05 + 0.15*0.6 = 0.12 + 0.0025 + 0.09 = 0.2125
    maps = [a1[None, None], a2[None, None]]
    got = rollout_from_maps(maps)
    torch.testing.assert_close(got, torch.tensor([[0.275, 0.2125]]))


def test_head_fusion_by_hand():
    heads = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0]]])[None]  # (1, 2, 2, 2)
    # mean: [[.75,.25],[.25,.75]] -> A' row 0 = [.875, .125]
    torch.testing.assert_close(rollout_from_maps([heads], "mean"), torch.tensor([[0.125]]))
    # max: [[1,.5],[.5,1]] -> 0.5A+0.5I = [[1,.25],[.25,1]] -> rownorm row 0 = [.8, .2]
    torch.testing.assert_close(rollout_from_maps([heads], "max"), torch.tensor([[0.2]]))
    # min: [[.5,0],[0,.5]] -> 0.5A+0.5I = [[.75,0],[0,.75]] -> rownorm [[1,0],[0,1]]
    torch.testing.assert_close(rollout_from_maps([heads], "min"), torch.tensor([[0.0]]))


def test_discard_is_per_image_and_spares_the_cls_row():
    torch.manual_seed(0)
    a = torch.rand(2, 5, 5)
    out = discard_lowest(a, 0.5)
    k = int(0.5 * 4 * 5)
    for i in range(2):
        assert torch.equal(out[i, 0], a[i, 0])  # CLS row intact
        rest = a[i, 1:].flatten()
        threshold = rest.sort().values[k - 1]
        expected = torch.where(a[i, 1:] <= threshold, 0.0, a[i, 1:])
        torch.testing.assert_close(out[i, 1:], expected)
    assert (out[:, 1:] == 0).sum() == 2 * k


def _reference_rollout(maps, head_fusion="mean", discard_ratio=0.0):
    """vit-explain's algorithm, per image, with full matrices."""
    results = []
    for i in range(maps[0].shape[0]):
        n = maps[0].shape[-1]
        result = torch.eye(n, dtype=torch.float64)
        for attention in maps:
            a = attention[i].double()
            fused = {"mean": a.mean(0), "max": a.max(0).values, "min": a.min(0).values}[head_fusion]
            if discard_ratio:
                flat = fused[1:].flatten().clone()
                k = int(flat.numel() * discard_ratio)
                flat[flat.argsort()[:k]] = 0
                fused = torch.cat((fused[:1], flat.reshape(n - 1, n)))
            mixed = (fused + torch.eye(n, dtype=torch.float64)) / 2
            mixed = mixed / mixed.sum(-1, keepdim=True)
            result = mixed @ result
        results.append(result[0, 1:])
    return torch.stack(results).float()


@pytest.fixture(scope="module")
def recording():
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_tiny_240", num_classes=5, img_size=96, img_scale=(1.0, 80 / 96)).eval()
    images = torch.randn(3, 3, 96, 96)
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    return model, images, rec


@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.6])
@pytest.mark.parametrize("branch", ["small", "large"])
def test_attention_rollout_matches_matrix_product_reference(recording, head_fusion, discard_ratio, branch):
    model, _, rec = recording
    got = crossvit.attention_rollout(rec, branch, head_fusion=head_fusion, discard_ratio=discard_ratio)
    expected = _reference_rollout(rec.self_attention(branch), head_fusion, discard_ratio)
    assert got.shape == (3, model.num_patches(branch))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    assert (got >= 0).all()


def _reference_joint(model, rec, fuse, start_block=0):
    """Full T x T matrices M in forward order, exactly as docs/rollout.md defines them; R = M_L ... M_1 (layers of
    blocks before ``start_block`` are the identity)."""
    ns, nl = 1 + model.num_patches("small"), 1 + model.num_patches("large")
    t = ns + nl
    off = {"small": 0, "large": ns}
    size = {"small": ns, "large": nl}
    other = {"small": "large", "large": "small"}
    b = next(iter(rec.sites.values())).shape[0]
    result = torch.eye(t, dtype=torch.float64).repeat(b, 1, 1)
    sites = crossvit.attention_sites(model)
    k = 0
    while k < len(sites):
        site = sites[k]
        m = torch.eye(t, dtype=torch.float64).repeat(b, 1, 1)
        if site.block < start_block:
            k += 1
            continue
        if site.kind == "self":
            s = slice(off[site.branch], off[site.branch] + size[site.branch])
            m[:, s, s] = 0.5 * fuse(site.name).double() + 0.5 * torch.eye(size[site.branch], dtype=torch.float64)
            k += 1
        else:  # a fusion layer: both directions in one M
            for direction in sites[k:k + 2]:
                c = fuse(direction.name)[:, 0].double()  # (B, 1 + N_other)
                row = off[direction.branch]
                o = off[other[direction.branch]]
                m[:, row, :] = 0
                m[:, row, row] = 0.5 + 0.5 * c[:, 0]
                m[:, row, o + 1:o + size[other[direction.branch]]] = 0.5 * c[:, 1:]
            k += 2
        result = m @ result
    return result[:, [0, ns]].float(), ns  # CLS rows


def test_joint_rollout_matches_full_matrix_reference(recording):
    model, _, rec = recording
    expected, ns = _reference_joint(model, rec, lambda name: rec.sites[name].mean(1))
    got = crossvit.joint_rollout(rec, include_cls=True)
    for qi, q in enumerate(("small", "large")):
        torch.testing.assert_close(got[q]["small"], expected[:, qi, :ns], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(got[q]["large"], expected[:, qi, ns:], atol=1e-6, rtol=1e-4)
        total = got[q]["small"].sum(-1) + got[q]["large"].sum(-1)
        torch.testing.assert_close(total, torch.ones(3))
        assert (got[q]["small"] >= 0).all() and (got[q]["large"] >= 0).all()
    patches_only = crossvit.joint_rollout(rec)
    torch.testing.assert_close(patches_only["large"]["small"], got["large"]["small"][:, 1:])


@pytest.mark.parametrize("start_block", [1, 2, -1])
def test_rollouts_from_a_later_block_match_the_references(recording, start_block):
    model, _, rec = recording
    first = start_block % model.arch.num_blocks
    for branch in ("small", "large"):
        later = [rec.sites[s.name] for s in crossvit.attention_sites(model)
                 if s.branch == branch and s.kind == "self" and s.block >= first]
        got = crossvit.attention_rollout(rec, branch, start_block=start_block)
        torch.testing.assert_close(got, _reference_rollout(later), atol=1e-6, rtol=1e-4)
        assert not torch.allclose(got, crossvit.attention_rollout(rec, branch))
    expected, ns = _reference_joint(model, rec, lambda name: rec.sites[name].mean(1), start_block=first)
    got = crossvit.joint_rollout(rec, include_cls=True, start_block=start_block)
    for qi, q in enumerate(("small", "large")):
        torch.testing.assert_close(got[q]["small"], expected[:, qi, :ns], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(got[q]["large"], expected[:, qi, ns:], atol=1e-6, rtol=1e-4)


def test_start_block_errors(recording):
    model, images, rec = recording
    with pytest.raises(ValueError, match=r"start_block must be in \[-3, 3\)"):
        crossvit.joint_rollout(rec, start_block=3)
    with pytest.raises(TypeError, match="start_block must be an int"):
        crossvit.attention_rollout(rec, "small", start_block=1.0)
    with crossvit.record_attention(model, sites=lambda name: not name.startswith("blocks.0")) as partial:
        with torch.no_grad():
            model(images)
    crossvit.joint_rollout(partial, start_block=1)  # the blocks it reads were recorded
    with pytest.raises(ValueError, match="from block 0 on"):
        crossvit.joint_rollout(partial)


def test_joint_equals_per_branch_when_fusion_ignores_the_other_branch(recording):
    model, _, rec = recording
    layers = []
    for site in crossvit.attention_sites(model):
        fused = rec.sites[site.name].mean(1)
        if site.kind == "cross":  # all weight on the own CLS key
            weights = torch.zeros_like(fused[:, 0])
            weights[:, 0] = 1.0
            layers.append(GraphLayer("cross", site.branch, weights))
        else:
            layers.append(GraphLayer("self", site.branch, fused))
    counts = {b: 1 + model.num_patches(b) for b in ("small", "large")}
    rows = joint_rows(layers, counts)
    ns = counts["small"]
    torch.testing.assert_close(rows[:, 0, 1:ns], crossvit.attention_rollout(rec, "small"), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(rows[:, 1, ns + 1:], crossvit.attention_rollout(rec, "large"), atol=1e-6, rtol=1e-4)
    assert rows[:, 0, ns:].abs().max() == 0 and rows[:, 1, :ns].abs().max() == 0


def test_gradient_rollout_matches_reference_and_is_class_specific(recording):
    model, images, _ = recording
    results = []
    for target in (0, 3):
        with crossvit.record_attention(model, grads=True) as rec:
            model(images)[:, target].sum().backward(inputs=list(rec.sites.values()))
        grads = rec.gradients
        weighted = {name: (grads[name] * a.detach()).clamp(min=0).mean(1) for name, a in rec.sites.items()}
        expected, ns = _reference_joint(model, rec, weighted.__getitem__)
        got = crossvit.gradient_rollout(rec, include_cls=True)
        torch.testing.assert_close(got["small"]["large"], expected[:, 0, ns:], atol=1e-9, rtol=1e-4)
        torch.testing.assert_close(got["large"]["small"], expected[:, 1, :ns], atol=1e-9, rtol=1e-4)
        results.append(got["small"]["small"])
    assert not torch.allclose(results[0], results[1])


def test_rollout_errors(recording):
    model, images, rec = recording
    with pytest.raises(ValueError, match="'small' and 'large'"):
        crossvit.attention_rollout(rec, "tiny")
    with pytest.raises(ValueError, match="mean"):
        crossvit.attention_rollout(rec, "small", head_fusion="median")
    with pytest.raises(ValueError, match=r"discard_ratio must be in \[0, 1\)"):
        crossvit.attention_rollout(rec, "small", discard_ratio=1.0)
    with pytest.raises(RuntimeError, match="grads=True"):
        crossvit.gradient_rollout(rec)
    with crossvit.record_attention(model, sites="self") as partial, torch.no_grad():
        model(images)
    with pytest.raises(ValueError, match="sites='all'"):
        crossvit.joint_rollout(partial)
