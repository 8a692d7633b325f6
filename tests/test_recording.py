"""Recorded attention maps equal the references' own attention probabilities; recording leaves no trace."""

import gc

import psutil
import pytest
import torch

import crossvit

timm = pytest.importorskip("timm")
vit_pytorch_cross_vit = pytest.importorskip("vit_pytorch.cross_vit")


def _timm_attention_maps(model, images):
    """Run timm with explicit attention and hook every attn_drop (eval: identity on the probabilities)."""
    maps, handles = [], []
    for blk in model.blocks:
        modules = [layer.attn for branch in blk.blocks for layer in branch]
        modules += [fusion.attn for fusion in blk.fusion]
        for attn in modules:
            if hasattr(attn, "fused_attn"):
                attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(o.detach())))
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        for h in handles:
            h.remove()
    return logits, maps


@pytest.fixture(scope="module")
def timm_pair():
    torch.manual_seed(0)
    reference = timm.create_model("crossvit_tiny_240", num_classes=5).eval()
    return reference, crossvit.from_timm(reference).eval()


def test_recorded_maps_equal_timm_attention(timm_pair):
    reference, ours = timm_pair
    images = torch.randn(2, 3, 240, 240)
    expected_logits, expected = _timm_attention_maps(reference, images)
    with crossvit.record_attention(ours) as rec, torch.no_grad():
        logits = ours(images)
    got = list(rec.sites.values())
    assert len(got) == len(expected) == 3 * (1 + 4 + 2)
    for name, g, e in zip(rec.sites, got, expected):
        assert g.shape == e.shape, name
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(logits, expected_logits, atol=1e-4, rtol=0)
    # documented shapes: self (B, H, N, N); cross (B, H, 1, 1 + N_other)
    assert rec.self_attention("small")[0].shape == (2, 3, 401, 401)
    assert rec.self_attention("large")[0].shape == (2, 3, 197, 197)
    assert rec.cross_attention("small")[0].shape == (2, 3, 1, 197)
    assert rec.cross_attention("large")[0].shape == (2, 3, 1, 401)
    assert len(rec.self_attention("large")) == 12 and len(rec.cross_attention("small")) == 3


@pytest.mark.parametrize("cross_attn_depth", [1, 3])
def test_recorded_maps_equal_vit_pytorch_softmax(cross_attn_depth):
    torch.manual_seed(0)
    kwargs = dict(image_size=48, num_classes=4, sm_dim=32, lg_dim=48, sm_enc_depth=2, lg_enc_depth=1,
                  sm_enc_heads=2, lg_enc_heads=3, sm_enc_dim_head=8, lg_enc_dim_head=16,
                  cross_attn_depth=cross_attn_depth, cross_attn_heads=2, cross_attn_dim_head=8, depth=2)
    reference = vit_pytorch_cross_vit.CrossViT(**kwargs).eval()
    ours = crossvit.from_vit_pytorch(reference).eval()
    expected = []
    softmaxes = [m for m in reference.modules() if isinstance(m, torch.nn.Softmax)]
    handles = [m.register_forward_hook(lambda m, i, o: expected.append(o.detach())) for m in softmaxes]
    images = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        reference(images)
    for h in handles:
        h.remove()
    with crossvit.record_attention(ours) as rec, torch.no_grad():
        ours(images)
    got = list(rec.sites.values())
    assert len(got) == len(expected) == 2 * (2 + 1 + 2 * cross_attn_depth)
    for name, g, e in zip(rec.sites, got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0, msg=name)
    assert len(rec.cross_attention("small")) == 2 * cross_attn_depth
    assert rec.cross_attention("small")[0].shape == (3, 2, 1, 1 + 9)  # 48 px / 16 px = 3x3 large patches
    assert rec.cross_attention("large")[0].shape == (3, 2, 1, 1 + 16)


def test_site_selection_and_names(timm_pair):
    _, ours = timm_pair
    images = torch.randn(1, 3, 240, 240)
    with crossvit.record_attention(ours, sites="cross") as rec, torch.no_grad():
        ours(images)
    assert list(rec.sites) == [f"blocks.{k}.{b}.cross.0" for k in range(3) for b in ("small", "large")]
    with crossvit.record_attention(ours, sites=lambda name: name.startswith("blocks.2.large.self")) as rec:
        with torch.no_grad():
            ours(images)
    assert list(rec.sites) == [f"blocks.2.large.self.{j}" for j in range(4)]
    # unrecorded sites keep the fused path: only the selected AttentionMap modules carry hooks
    with crossvit.record_attention(ours, sites="cross"):
        observed = [s.name for s in crossvit.attention_sites(ours) if s.module.observed]
    assert observed == [f"blocks.{k}.{b}.cross.0" for k in range(3) for b in ("small", "large")]


def test_recording_does_not_change_logits_and_leaves_no_hooks(timm_pair):
    _, ours = timm_pair
    images = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        plain = ours(images)
        with crossvit.record_attention(ours):
            recorded = ours(images)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=0)
    assert not any(s.module.observed for s in crossvit.attention_sites(ours))
    assert not ours._forward_pre_hooks


def test_hooks_removed_when_forward_raises(timm_pair):
    _, ours = timm_pair
    with pytest.raises(ValueError, match="240x240"):
        with crossvit.record_attention(ours):
            ours(torch.randn(1, 3, 224, 224))
    assert not any(s.module.observed for s in crossvit.attention_sites(ours))
    assert not ours._forward_pre_hooks


def test_each_forward_replaces_the_previous_maps(timm_pair):
    _, ours = timm_pair
    a, b = torch.randn(1, 3, 240, 240), torch.randn(3, 3, 240, 240)
    with crossvit.record_attention(ours) as rec, torch.no_grad():
        ours(a)
        first = rec.self_attention("small")[0]
        ours(b)
    assert rec.num_forwards == 2
    assert first.shape[0] == 1 and rec.self_attention("small")[0].shape[0] == 3
    assert len(rec.sites) == 21


def test_later_forward_reuses_memory_nobody_holds_and_never_overwrites_held_maps(timm_pair):
    _, ours = timm_pair
    a, b, c = (torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(i)) for i in range(3))
    expected = {}
    for name, x in (("a", a), ("b", b), ("c", c)):  # references: one fresh recording per input
        with crossvit.record_attention(ours) as rec, torch.no_grad():
            ours(x)
        expected[name] = {k: v.clone() for k, v in rec.sites.items()}
    small0 = "blocks.0.small.self.0"
    with crossvit.record_attention(ours) as rec, torch.no_grad():
        ours(a)
        pointers = {k: v.data_ptr() for k, v in rec.sites.items()}  # addresses only: the maps are let go
        ours(b)
        # nothing held the first forward's maps, so the second forward wrote into the same memory
        assert {k: v.data_ptr() for k, v in rec.sites.items()} == pointers
        for k, v in rec.sites.items():
            torch.testing.assert_close(v, expected["b"][k], atol=1e-6, rtol=0, msg=k)
        held = rec.sites  # the caller keeps b's maps (and a view of one) ...
        view = held[small0][1, 2]
        ours(c)
        for k, v in held.items():  # ... so the third forward must not overwrite them
            torch.testing.assert_close(v, expected["b"][k], atol=1e-6, rtol=0, msg=k)
        torch.testing.assert_close(view, expected["b"][small0][1, 2], atol=1e-6, rtol=0)
        for k, v in rec.sites.items():
            assert v.data_ptr() != held[k].data_ptr(), k
            torch.testing.assert_close(v, expected["c"][k], atol=1e-6, rtol=0, msg=k)
    # after the block the sites stop reusing but keep one map's memory each, which the next recording reuses once
    # nothing holds it; release_attention_memory lets it go
    sites = crossvit.attention_sites(ours)
    assert not any(s.module.reuse_memory for s in sites)
    last = {k: v.data_ptr() for k, v in rec.sites.items()}
    del held, view, rec, v  # v: the loop variable above still holds the last map
    with crossvit.record_attention(ours) as rec, torch.no_grad():
        ours(a)
    assert {k: v.data_ptr() for k, v in rec.sites.items()} == last
    for k, v in rec.sites.items():
        torch.testing.assert_close(v, expected["a"][k], atol=1e-6, rtol=0, msg=k)
    crossvit.release_attention_memory(ours)
    assert all(s.module._spare is None for s in sites)
    torch.testing.assert_close(rec.sites[small0], expected["a"][small0], atol=1e-6, rtol=0)  # held maps survive


def test_gradients_are_recorded_and_match_autograd():
    torch.manual_seed(0)
    model = crossvit.create_model("seed", image_size=48, num_classes=3, sm_dim=16, lg_dim=32, sm_enc_dim_head=8,
                                  lg_enc_dim_head=8, cross_attn_dim_head=8, depth=2, dropout=0.0,
                                  emb_dropout=0.0).eval()
    images = torch.randn(2, 3, 48, 48)
    with crossvit.record_attention(model, grads=True) as rec:
        out = model(images)[:, 1].sum()
        out.backward()
    maps = rec.sites
    grads = rec.gradients
    assert list(grads) == list(maps)
    for name in maps:
        assert grads[name].shape == maps[name].shape
    # independent check: autograd.grad of the same output w.r.t. the same (non-detached) map tensors
    with crossvit.record_attention(model, grads=True) as rec2:
        out2 = model(images)[:, 1].sum()
        tensors = list(rec2.sites.values())
        expected = torch.autograd.grad(out2, tensors)
    for (name, g), e in zip(grads.items(), expected):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5, msg=name)
    assert rec.cross_attention_grads("large")[0].shape == rec.cross_attention("large")[0].shape


@pytest.mark.slow  # repeated recordings, memory measured: seconds on 2 cores, so `make test` runs it, not test-fast
def test_many_recordings_do_not_accumulate_memory():
    torch.manual_seed(0)
    # cheap to run, but with maps of ~2 MiB per forward (257 small tokens), so a leak would show at once
    model = crossvit.create_model("seed", image_size=64, num_classes=3, sm_dim=16, lg_dim=16, sm_patch_size=4,
                                  sm_enc_heads=2, lg_enc_heads=2, sm_enc_dim_head=8, lg_enc_dim_head=8,
                                  sm_enc_mlp_dim=16, lg_enc_mlp_dim=16, lg_enc_depth=1, cross_attn_depth=1,
                                  cross_attn_dim_head=8, depth=1).eval()
    images = torch.randn(4, 3, 64, 64)
    process = psutil.Process()

    def run(n):
        for _ in range(n):
            with crossvit.record_attention(model) as rec, torch.no_grad():
                model(images)
            assert rec.sites
        gc.collect()

    run(30)  # warm-up: allocator and thread pools settle
    before = process.memory_info().rss
    run(300)
    grown = (process.memory_info().rss - before) / 2**20
    maps_mb = sum(t.numel() * t.element_size() for t in rec_maps(model, images)) / 2**20
    # 300 recordings of ~maps_mb each would be hundreds of MB if anything were kept
    assert grown < max(20.0, 3 * maps_mb), f"RSS grew by {grown:.1f} MiB over 300 recordings"
    assert not any(s.module.observed for s in crossvit.attention_sites(model))


def rec_maps(model, images):
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    return list(rec.sites.values())


def test_bad_input_errors(timm_pair):
    _, ours = timm_pair
    with pytest.raises(TypeError, match="needs a crossvit.CrossViT"):
        crossvit.record_attention(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="'all', 'self', 'cross'"):
        crossvit.record_attention(ours, sites="everything")
    with crossvit.record_attention(ours) as rec:
        with pytest.raises(RuntimeError, match="no attention has been recorded yet"):
            rec.self_attention("small")
        with torch.no_grad():
            ours(torch.randn(1, 3, 240, 240))
    with pytest.raises(ValueError, match="'small' and 'large'"):
        rec.cross_attention("medium")
    with pytest.raises(RuntimeError, match="grads=True"):
        rec.self_attention_grads("small")
