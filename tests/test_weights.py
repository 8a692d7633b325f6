"""ImageNet weights from a local file or the Hugging Face cache, offline, checked against timm loading the same
file (``pretrained_cfg_overlay=dict(file=...)``, ``checkpoint_path=``, and its own hub-cache loading)."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

import crossvit
from crossvit import photos, presets, weights

timm = pytest.importorskip("timm")
huggingface_hub = pytest.importorskip("huggingface_hub")

NAME = "crossvit_9_240"


@pytest.fixture(scope="module")
def random_timm_file(tmp_path_factory):
    """A timm model of random weights (non-trivial biases and norms too) saved as .safetensors."""
    torch.manual_seed(0)
    model = timm.create_model(NAME).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("weights") / "crossvit_9_random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def photo_batch():
    return [photos.sample_photo(n) for n in photos.SAMPLE_PHOTOS]


def _timm_logits(timm_model, images):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=timm_model))
    batch = torch.stack([transform(Image.fromarray(a)) for a in images])
    with torch.no_grad():
        return timm_model.eval()(batch)


def test_checkpoint_path_gives_timms_logits_on_the_sample_photos(random_timm_file, photo_batch):
    ours = crossvit.create_model(NAME, pretrained=True, checkpoint_path=random_timm_file)
    assert not ours.training
    theirs = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(random_timm_file)))
    reference = _timm_logits(theirs, photo_batch)
    with torch.no_grad():
        logits = ours(crossvit.preprocess(ours, photo_batch))
    assert torch.allclose(logits, reference, atol=1e-4), (logits - reference).abs().max()
    # timm's other way of reading a local file agrees too
    loaded = timm.create_model(NAME, checkpoint_path=str(random_timm_file))
    assert torch.allclose(_timm_logits(loaded, photo_batch), reference, atol=1e-6)


def test_pth_and_bin_files_are_read_with_weights_only(random_timm_file, tmp_path, photo_batch):
    from safetensors.torch import load_file

    state = load_file(str(random_timm_file))
    reference = crossvit.create_model(NAME, checkpoint_path=random_timm_file)
    images = crossvit.preprocess(reference, photo_batch[:2])
    with torch.no_grad():
        expected = reference(images)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    for path, content in ((tmp_path / "plain.pth", state), (tmp_path / "wrapped.bin", wrapped)):
        torch.save(content, path)
        model = crossvit.create_model(NAME, pretrained=True, checkpoint_path=path)
        with torch.no_grad():
            assert torch.equal(model(images), expected)


def test_a_full_pickle_is_refused(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="whole_model.pth.*never unpickles"):
        crossvit.create_model(NAME, pretrained=True, checkpoint_path=path)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda p, f: p / "missing.safetensors", FileNotFoundError, "missing.safetensors"),
        (lambda p, f: (p / "x.npz").write_bytes(b"1") and p / "x.npz", ValueError, "unknown weights format"),
        (lambda p, f: (p / "bad.safetensors").write_bytes(b"garbage!") and p / "bad.safetensors", ValueError,
         "bad.safetensors: not a readable safetensors"),
    ],
    ids=["missing", "suffix", "corrupt"],
)
def test_bad_files_are_named(tmp_path, random_timm_file, make, error, words):
    with pytest.raises(error, match=words):
        crossvit.create_model(NAME, checkpoint_path=make(tmp_path, random_timm_file))


def test_weights_of_another_variant_or_model_are_refused(random_timm_file, save_timm_model, tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        crossvit.create_model("crossvit_15_240", checkpoint_path=random_timm_file)
    _, deeper = save_timm_model(NAME, depth=[[1, 4, 0]] * 3)  # one more large-branch layer per block
    with pytest.raises(ValueError, match=r"do not fit.* 0 with another shape.* 3\d unused"):
        crossvit.create_model(NAME, checkpoint_path=deeper)
    other = tmp_path / "linear.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ValueError, match="not a timm CrossViT"):
        crossvit.create_model(NAME, checkpoint_path=other)
    with pytest.raises(ValueError, match="no published weights"):
        crossvit.create_model("seed", checkpoint_path=random_timm_file, image_size=48, num_classes=2, sm_dim=8,
                              lg_dim=8)





def test_own_weights_with_another_number_of_classes_are_refused(save_timm_model):
    # a fine-tuned 10-class file loaded into a 1000-class model: timm's checkpoint_path refuses (size mismatch)
    _, tiny10 = save_timm_model(NAME, num_classes=10)
    with pytest.raises(RuntimeError, match="size mismatch"):
        timm.create_model(NAME, checkpoint_path=str(tiny10))
    with pytest.raises(ValueError, match="classifier has 10 classes but the model has 1000; build the model with "
                                         "num_classes=10"):
        crossvit.create_model(NAME, checkpoint_path=tiny10)
    ours = crossvit.create_model(NAME, checkpoint_path=tiny10, num_classes=10)
    theirs = timm.create_model(NAME, checkpoint_path=str(tiny10), num_classes=10).eval()
    x = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)  # the file's own heads, not random ones
    assert weights.file_num_classes(tiny10) == 10


def test_another_number_of_classes_keeps_all_but_the_classifier(random_timm_file):
    ours = crossvit.create_model(NAME, pretrained=True, checkpoint_path=random_timm_file, num_classes=10)
    theirs = timm.create_model(NAME, pretrained=True, num_classes=10,
                               pretrained_cfg_overlay=dict(file=str(random_timm_file))).eval()
    x = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = ours.forward_features(x)  # before the heads' LayerNorm
        reference = theirs.forward_features(x)  # timm: both branches' tokens after their final norm
        for branch, theirs_tokens in zip(ours.branch_names, reference):
            assert torch.allclose(ours.heads[branch].norm(features[branch]), theirs_tokens, atol=1e-4)
    assert ours.num_classes == 10 and crossvit.class_names(ours)[0] == "class 0"


def _fake_hub_cache(root, name, weights_file):
    """The layout huggingface_hub's cache uses: models--ORG--REPO/{refs/main, snapshots/<commit>/FILE}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{weights.hub_repo(name).replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(weights_file.read_bytes())
    return snapshot / "model.safetensors"


def test_pretrained_true_uses_the_hugging_face_cache_offline(random_timm_file, tmp_path, monkeypatch, photo_batch):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE, "tests run with HF_HUB_OFFLINE=1 (tests/conftest.py)"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert weights.cached_weights(NAME) is None
    cached = _fake_hub_cache(tmp_path, NAME, random_timm_file)
    assert weights.cached_weights(NAME) == cached
    ours = crossvit.create_model(NAME, pretrained=True)
    theirs = timm.create_model(NAME, pretrained=True)  # timm's own hub loading, served from the same cache
    with torch.no_grad():
        logits = ours(crossvit.preprocess(ours, photo_batch))
    assert torch.allclose(logits, _timm_logits(theirs, photo_batch), atol=1e-4)
    model, real = presets.imagenet_or_random(NAME)
    assert real
    with torch.no_grad():
        assert torch.equal(model(crossvit.preprocess(model, photo_batch)), logits)


def test_without_cache_or_network_pretrained_fails_at_once_and_the_fallback_is_random(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert not weights.hub_reachable()
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="checkpoint_path"):
        crossvit.create_model(NAME, pretrained=True)
    assert time.perf_counter() - started < 10  # no minute of retries
    torch.manual_seed(3)
    model, real = presets.imagenet_or_random(NAME)
    torch.manual_seed(3)
    again = crossvit.create_model(NAME)
    assert not real and not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
