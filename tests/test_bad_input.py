"""Bad input gets a TypeError/ValueError that names the problem, never an AssertionError or an einops error."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import crossvit


@pytest.fixture(scope="module")
def seed_model():
    return crossvit.create_model("seed", image_size=48, num_classes=3, sm_dim=16, lg_dim=32, sm_enc_dim_head=8,
                                 lg_enc_dim_head=8, cross_attn_dim_head=8, depth=1).eval()


@pytest.fixture(scope="module")
def paper_model():
    return crossvit.create_model("crossvit_tiny_240", num_classes=3).eval()


@pytest.mark.parametrize("which", ["seed_model", "paper_model"])
@pytest.mark.parametrize(
    ("make_input", "error", "words"),
    [
        (lambda s, c: torch.randn(1, c, s + 12, s + 12), ValueError, "images of"),
        (lambda s, c: torch.randn(1, c + 1, s, s), ValueError, "channels"),
        (lambda s, c: torch.randn(c, s, s), ValueError, "no batch dimension"),
        (lambda s, c: torch.randn(s, s), ValueError, "(B, C, H, W)"),
        (lambda s, c: torch.zeros(1, c, s, s, dtype=torch.uint8), TypeError, "floating-point"),
        (lambda s, c: torch.randn(1, c, s, s).numpy(), TypeError, "torch.Tensor"),
        (lambda s, c: torch.randn(0, c, s, s), ValueError, "empty batch"),
    ],
    ids=["wrong-size", "wrong-channels", "no-batch-dim", "2d", "integer", "numpy", "empty"],
)
def test_bad_images(request, which, make_input, error, words):
    model = request.getfixturevalue(which)
    images = make_input(model.image_size, model.in_chans)
    with pytest.raises(error) as info:
        model(images)
    assert words.replace("images of", f"{model.image_size}x{model.image_size} images") in str(info.value)


def test_seed_image_size_not_divisible_by_patch():
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        crossvit.create_model("seed", image_size=60, num_classes=2, sm_dim=8, lg_dim=8)


def test_paper_image_size_not_divisible_by_patch():
    with pytest.raises(ValueError, match="not divisible by the patch size 12"):
        crossvit.create_model("crossvit_9_240", img_size=250)


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ValueError) as info:
        crossvit.create_model("crossvit_99_240")
    for name in crossvit.list_models():
        assert name in str(info.value)


def test_unknown_keyword_is_named():
    with pytest.raises(TypeError, match="numclasses"):
        crossvit.create_model("crossvit_9_240", numclasses=3)


def test_seed_requires_the_reference_required_keywords():
    with pytest.raises(TypeError, match="lg_dim"):
        crossvit.create_model("seed", image_size=48, num_classes=3, sm_dim=16)


def test_bad_config_values():
    with pytest.raises(ValueError, match="embed_dim 100 is not divisible by num_heads 3"):
        crossvit.create_model("crossvit_tiny_240", embed_dim=(100, 192))
    with pytest.raises(ValueError, match="dropout"):
        crossvit.create_model("seed", image_size=48, num_classes=3, sm_dim=16, lg_dim=16, dropout=1.5)
    with pytest.raises(TypeError, match="depth must be an int"):
        crossvit.create_model("seed", image_size=48, num_classes=3, sm_dim=16, lg_dim=16, depth=2.0)


def test_from_timm_rejects_other_models():
    with pytest.raises(TypeError, match="timm CrossVit"):
        crossvit.from_timm(nn.Linear(2, 2))
    timm = pytest.importorskip("timm")
    with pytest.raises(TypeError, match="timm CrossVit"):
        crossvit.from_timm(timm.create_model("vit_tiny_patch16_224"))


def test_from_vit_pytorch_rejects_other_models():
    with pytest.raises(TypeError, match="vit_pytorch.cross_vit.CrossViT"):
        crossvit.from_vit_pytorch(nn.Linear(2, 2))


def test_pretrained_offline_says_what_to_do(tmp_path):
    """No test needs the network: with the hub forced offline and an empty cache, the error explains the way out.
    (A subprocess, because huggingface_hub reads HF_HUB_OFFLINE once, at import.)"""
    pytest.importorskip("timm")
    code = (
        "import crossvit\n"
        "try:\n    crossvit.create_model('crossvit_tiny_240', pretrained=True)\n"
        "except RuntimeError as err:\n    print('MESSAGE', err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "MESSAGE could not fetch timm's pretrained weights for 'crossvit_tiny_240'" in result.stdout, result.stderr
    assert "HF_HUB_OFFLINE" in result.stdout


def test_seed_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="no published weights"):
        crossvit.create_model("seed", pretrained=True, image_size=48, num_classes=3, sm_dim=16, lg_dim=16)
