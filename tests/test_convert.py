"""The converted models compute the same function as the two reference implementations."""

import pytest
import torch

import crossvit
from crossvit.convert import timm_config

timm = pytest.importorskip("timm")
vit_pytorch_cross_vit = pytest.importorskip("vit_pytorch.cross_vit")

PAPER_NAMES = list(crossvit.PAPER_PRESETS)


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_from_timm_matches_timm_logits_and_parameter_count(name):
    torch.manual_seed(0)
    num_classes = 1000 if PAPER_NAMES.index(name) % 2 else 37  # ImageNet heads and a non-1000 head both covered
    reference = timm.create_model(name, num_classes=num_classes).eval()
    ours = crossvit.from_timm(reference).eval()
    images = torch.randn(2, 3, reference.img_size[0], reference.img_size[1])
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    assert got.shape == expected.shape == (2, num_classes)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert crossvit.count_parameters(ours) == sum(p.numel() for p in reference.parameters())
    # the preset builds exactly the architecture timm builds for that name
    expected_config = crossvit.config_from_dict({**crossvit.PAPER_PRESETS[name].to_dict(), "num_classes": num_classes})
    assert timm_config(reference) == expected_config


@pytest.mark.parametrize(
    "overrides",
    [dict(global_pool="avg"), dict(crop_scale=True, img_scale=(1.0, 192 / 240)), dict(in_chans=1, qkv_bias=False)],
    ids=["avg-pool", "crop-scale", "grey-no-qkv-bias"],
)
def test_from_timm_matches_timm_with_overrides(overrides):
    torch.manual_seed(1)
    reference = timm.create_model("crossvit_tiny_240", num_classes=10, **overrides).eval()
    ours = crossvit.from_timm(reference).eval()
    images = torch.randn(2, reference.in_chans, *reference.img_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference(images), atol=1e-4, rtol=0)


def test_create_model_overrides_match_timm_constructor():
    """timm-style keyword overrides mean the same thing here as in timm."""
    kwargs = dict(num_classes=12, drop_rate=0.1, drop_path_rate=0.2, attn_drop_rate=0.05, proj_drop_rate=0.03)
    reference = timm.create_model("crossvit_9_240", **kwargs)
    ours = crossvit.create_model("crossvit_9_240", **kwargs)
    assert timm_config(reference) == ours.config
    # stochastic depth follows timm's linear ramp, layer by layer
    for k, (theirs, mine) in enumerate(zip(reference.blocks, ours.blocks)):
        for i, branch in enumerate(("small", "large")):
            for j, layer in enumerate(theirs.blocks[i]):
                rate = getattr(layer.drop_path1, "drop_prob", 0.0)
                got = getattr(mine.encoders[branch].layers[j].drop_path, "p", 0.0)
                assert got == pytest.approx(rate, abs=1e-7), (k, branch, j)
            fusion_rate = getattr(theirs.fusion[i].drop_path, "drop_prob", 0.0)
            assert getattr(getattr(mine.fusions[0], branch).drop_path, "p", 0.0) == pytest.approx(fusion_rate, abs=1e-7)


SEED_CONFIGS = [
    dict(image_size=96, num_classes=5, sm_dim=32, lg_dim=64, sm_enc_dim_head=16, lg_enc_dim_head=32,
         cross_attn_depth=1, depth=2),
    dict(image_size=48, num_classes=3, sm_dim=48, lg_dim=48, cross_attn_depth=3, channels=1,
         cross_attn_dim_head=8, sm_enc_heads=2, lg_enc_heads=3),
    dict(image_size=64, num_classes=10, sm_dim=40, lg_dim=24, sm_patch_size=8, lg_patch_size=32, sm_enc_depth=2,
         lg_enc_depth=1, sm_enc_mlp_dim=64, lg_enc_mlp_dim=32, cross_attn_depth=2, cross_attn_heads=3,
         cross_attn_dim_head=16, depth=1),
]


@pytest.mark.parametrize("kwargs", SEED_CONFIGS, ids=["unequal-widths", "equal-widths-grey-depth3", "wide-small"])
def test_from_vit_pytorch_matches_vit_pytorch(kwargs):
    torch.manual_seed(0)
    reference = vit_pytorch_cross_vit.CrossViT(**kwargs).eval()
    ours = crossvit.from_vit_pytorch(reference).eval()
    images = torch.randn(3, kwargs.get("channels", 3), kwargs["image_size"], kwargs["image_size"])
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference(images), atol=1e-5, rtol=0)
    assert crossvit.count_parameters(ours) == sum(p.numel() for p in reference.parameters())
    assert crossvit.count_parameters(crossvit.create_model("seed", **kwargs)) == crossvit.count_parameters(ours)
    assert ours.config == crossvit.SeedConfig(**kwargs)


def test_seed_defaults_are_vit_pytorchs():
    """create_model('seed') takes vit-pytorch's keywords with vit-pytorch's defaults."""
    import inspect

    signature = inspect.signature(vit_pytorch_cross_vit.CrossViT.__init__)
    defaults = {n: p.default for n, p in signature.parameters.items() if n != "self"}
    ours = {f: getattr(crossvit.SeedConfig(image_size=1, num_classes=1, sm_dim=1, lg_dim=1), f) for f in defaults}
    for name, default in defaults.items():
        if default is not inspect.Parameter.empty:
            assert ours[name] == default, name


def test_converted_model_keeps_training_mode_and_gradients_flow():
    reference = timm.create_model("crossvit_tiny_240", num_classes=4)
    ours = crossvit.from_timm(reference)
    assert ours.training
    images = torch.randn(1, 3, 240, 240)
    ours(images).sum().backward()
    assert all(p.grad is not None for p in ours.parameters())
