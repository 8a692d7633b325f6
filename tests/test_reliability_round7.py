"""Reliability, round seven (each test failed before the change).

The command lines can be called from Python (``crossvit.cli.main([...])``, ``crossvit.train.main([...])``), e.g.
from a notebook; they then leave the caller's process as they found it. Before, ``crossvit explain`` switched
matplotlib's backend to Agg (which also closes every open pyplot figure when the backend was another one), and
``crossvit.train --threads N`` left torch on N threads.

``lrp_rules`` contexts nest instead of stacking their rules (only the innermost acts), and ``explain`` gives each
method's own map inside one. Before, ``relevance_by_branch`` inside ``lrp_rules(m, "cp_lrp")`` applied both rules
at once (relevance that was neither rule's), saliency came back 82 % different and gradient rollout crashed.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit import cli, lrp
from crossvit import train as train_module


def test_explain_command_leaves_the_callers_backend_and_figures(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo)
    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # a backend other than the Agg the command draws with
    try:
        mine = plt.figure()
        assert cli.main(["explain", str(photo), "--model", "shapes_tiny", "--pretrained", "--out",
                         str(tmp_path / "out"), "--method", "joint_rollout", "--quiet"]) == 0
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == [mine.number]  # the caller's figure is open, and the command left none
        assert (tmp_path / "out" / "photo.joint_rollout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        plt.close("all")
        plt.switch_backend(before)


def test_train_command_gives_the_thread_count_back():
    threads = torch.get_num_threads()
    wanted = 1 if threads > 1 else 2
    argv = ["--steps", "1", "--threads", str(wanted), "--quiet", "--train-images", "64", "--eval-images", "8"]
    assert train_module.main(argv) == 0
    assert torch.get_num_threads() == threads


@pytest.fixture(scope="module")
def bundled_and_images():
    return crossvit.load_pretrained(), crossvit.data.make_shapes(2, seed=2**40 + 2**33 + 3)[0]


@pytest.mark.parametrize(("outer", "inner"), [("cp_lrp", "attnlrp"), ("attnlrp", "attnlrp"), ("attnlrp", "cp_lrp")])
def test_relevance_inside_an_lrp_rules_block_is_the_inner_rules(bundled_and_images, outer, inner):
    model, images = bundled_and_images
    alone = crossvit.relevance_by_branch(model, images, rule=inner)
    with lrp.lrp_rules(model, outer):
        nested = crossvit.relevance_by_branch(model, images, rule=inner)
    for branch in ("small", "large"):
        torch.testing.assert_close(nested.patches[branch], alone.patches[branch], rtol=0, atol=1e-6)
    torch.testing.assert_close(nested.absorbed, alone.absorbed, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["saliency", "gradient_rollout", "attnlrp", "integrated_gradients"])
def test_explain_inside_an_lrp_rules_block_gives_the_methods_own_map(bundled_and_images, method):
    model, images = bundled_and_images
    alone = crossvit.explain(model, images, method, target=0)
    with lrp.lrp_rules(model, "cp_lrp"):
        inside = crossvit.explain(model, images, method, target=0)
        # the block still acts on the caller's own backward passes
        x = images.clone().requires_grad_()
        model(x)[:, 0].sum().backward()
    torch.testing.assert_close(inside, alone, rtol=0, atol=1e-6)
    plain = images.clone().requires_grad_()
    model(plain)[:, 0].sum().backward()
    assert not torch.allclose(x.grad, plain.grad, atol=1e-4)
    assert not lrp._OPEN  # nothing left open


def test_coattention_relevancy_takes_a_backward_from_one_head_as_gradient_rollout_does(bundled_and_images):
    """A backward from the small head's logit leaves the large CLS's last fusion without a gradient; the reference
    runs the same backward with the large head's logit added times 0, which gives that map an explicit zero."""
    from crossvit.relevancy import coattention_relevancy

    model, images = bundled_and_images
    results = []
    for zero_path in (False, True):
        with crossvit.record_attention(model, grads=True) as rec:
            logits = model.branch_logits(model.forward_features(images))
            score = logits["small"][:, 1].sum() + (0 * logits["large"][:, 1].sum() if zero_path else 0)
            score.backward()
            assert (len(rec.gradients) < len(rec.sites)) != zero_path
            results.append(coattention_relevancy(rec))
    for query in ("small", "large"):
        for branch in ("small", "large"):
            torch.testing.assert_close(results[0][query][branch], results[1][query][branch], rtol=0, atol=0)
    with crossvit.record_attention(model, grads=True, sites="self") as rec:  # maps left out: named, ValueError
        model(images)[:, 0].sum().backward()
        with pytest.raises(ValueError, match="co-attention relevancy needs every attention map"):
            coattention_relevancy(rec)


@pytest.mark.parametrize(("key", "value", "error", "words"), [
    ("crop_pct", True, TypeError, "'crop_pct'] must be a number, got bool"),
    ("crop_pct", 0, ValueError, "must be in (0, 1]"),
    ("interpolation", "foo", ValueError, "'interpolation'] 'foo' is not one of nearest"),
    ("std", (0.0, 0.0, 0.0), ValueError, "'std'] must hold finite numbers > 0"),
    ("mean", (float("nan"),) * 3, ValueError, "'mean'] must hold finite numbers"),
    ("std", 1.0, TypeError, "'std'] must be a sequence of one number per channel, got float"),
    ("mean", "abc", TypeError, "'mean'] must be a sequence"),
])
def test_a_bad_data_config_is_named_before_any_photo_is_read(key, value, error, words):
    """Each of these passed the check before: to fail inside torchvision, to give NaN inputs silently, or (a
    numpy float crop_pct) to be refused in words that contradict themselves."""
    model = crossvit.load_pretrained()
    model.pretrained_cfg = {**model.pretrained_cfg, key: value}
    with pytest.raises(error) as info:
        crossvit.data_config(model)
    assert words in str(info.value)
    model.pretrained_cfg = {**model.pretrained_cfg, key: crossvit.preprocessing.default_data_config(model)[key]}
    model.pretrained_cfg["crop_pct"] = np.float32(0.875)  # numpy numbers are numbers
    assert crossvit.data_config(model)["crop_pct"] == pytest.approx(0.875)


def test_the_interpolations_are_torchvisions():
    from torchvision.transforms import InterpolationMode

    assert sorted(crossvit.preprocessing.INTERPOLATIONS) == sorted(mode.value for mode in InterpolationMode)


def test_display_images_refuses_what_it_cannot_show():
    model = crossvit.load_pretrained()
    with pytest.raises(TypeError, match="expected a preprocessed batch, a"):
        crossvit.display_images(model, [[0.0]])
    with pytest.raises(ValueError, match="hold NaN or infinite values"):  # its output is promised in [0, 1]
        crossvit.display_images(model, torch.full((1, 3, 96, 96), float("nan")))


# -- a researcher's own weights (an audit as one) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_tiny():
    timm = pytest.importorskip("timm")
    return timm.create_model("crossvit_tiny_240", pretrained=False).eval()


def test_a_model_or_images_without_values_are_refused_by_name(timm_tiny, tmp_path):
    """On 'meta', explain failed deep inside torch, and weights 'loaded' into a meta model with only 292 torch
    warnings to say that nothing was loaded."""
    path = tmp_path / "tiny.pth"
    torch.save(timm_tiny.state_dict(), path)
    with torch.device("meta"):
        empty = crossvit.create_model("crossvit_tiny_240")
        with pytest.raises(ValueError, match="the model to load weights into is on the 'meta' device"):
            crossvit.create_model("crossvit_tiny_240", checkpoint_path=path)
    with pytest.raises(ValueError, match="the model is on the 'meta' device"):
        crossvit.explain(empty, torch.zeros(1, 3, 240, 240), "joint_rollout")
    with pytest.raises(ValueError, match="the model to save is on the 'meta' device"):
        crossvit.save_checkpoint(empty, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="images are on the 'meta' device"):
        crossvit.explain(crossvit.load_pretrained(), torch.zeros(1, 3, 96, 96, device="meta"), "joint_rollout")


def test_loading_weights_by_name_leaves_the_callers_generator_alone(timm_tiny, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(timm_tiny.state_dict(), path)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    crossvit.create_model("crossvit_tiny_240", checkpoint_path=path)
    assert torch.equal(torch.rand(3), expected)


def test_an_integer_tensor_in_a_timm_state_dict_is_refused_not_cast(timm_tiny, tmp_path):
    state = dict(timm_tiny.state_dict())
    state["head.0.bias"] = torch.arange(1000)
    torch.save(state, tmp_path / "int.pth")
    with pytest.raises(ValueError, match="another kind of dtype .* torch.int64 in the file"):
        crossvit.create_model("crossvit_tiny_240", checkpoint_path=tmp_path / "int.pth")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_from_timm_keeps_the_dtype_and_the_frozen_parameters(timm_tiny, dtype):
    import copy

    source = copy.deepcopy(timm_tiny).to(dtype)
    for name, param in source.named_parameters():
        param.requires_grad_(not name.startswith(("blocks.0.", "cls_token")))
    model = crossvit.from_timm(source)
    assert {p.dtype for p in model.parameters()} == {dtype}
    images = torch.rand(2, 3, 240, 240, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():  # float64: the weights were not rounded through float32 on the way
        tolerance = 1e-12 if dtype == torch.float64 else 0.05
        torch.testing.assert_close(model(images), source(images), rtol=0, atol=tolerance)
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == sum(
        p.numel() for p in source.parameters() if not p.requires_grad)


def test_from_timm_says_when_it_cannot_keep_mixed_modes(timm_tiny):
    import copy

    source = copy.deepcopy(timm_tiny).train()
    source.blocks.eval()
    with pytest.warns(UserWarning, match="submodules in train mode and others in eval mode"):
        model = crossvit.from_timm(source)
    assert model.training


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_a_checkpoint_comes_back_in_the_dtype_it_was_saved_in(tmp_path, dtype):
    model = crossvit.load_pretrained().to(dtype)
    crossvit.save_checkpoint(model, tmp_path)
    again = crossvit.load_checkpoint(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def _photo(path, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path, "PNG")


def test_explain_command_reruns_over_odd_names_and_skips_hidden_files(tmp_path):
    """A folder from a Mac holds ``._name.jpg`` files that are not images: the run stopped on them. An explicitly
    named ``.hidden.png`` and a name with a backslash gave figure names that the rerun with --overwrite refused
    as not its own."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "back\\slash.png")
    (photos / "._back.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble, not an image")
    hidden = tmp_path / ".hidden.png"
    _photo(hidden, 1)
    argv = ["explain", str(photos), str(hidden), "--model", "shapes_tiny", "--pretrained", "--out",
            str(tmp_path / "out"), "--method", "joint_rollout", "--quiet"]
    assert cli.main(argv) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["back_slash.joint_rollout.png", "hidden.joint_rollout.png", "predictions.json"]
    assert cli.main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == written


def test_train_help_states_each_default_once_and_never_a_flags_stored_value():
    text = " ".join(train_module.build_parser().format_help().split())
    assert "disable random flips/transposes of the training images --label-smoothing" in text  # no "(default: True)"
    assert "disable bfloat16 autocast on CUDA --threads" in text
    assert "(default: the preset name) --overwrite" in text  # not followed by "(default: None)"
    assert "optimiser steps (default: 2000)" in text


def test_weights_files_of_the_wrong_kind_are_named_for_what_they_are(timm_tiny, tmp_path):
    timm = pytest.importorskip("timm")
    torch.save(timm.create_model("crossvit_tiny_240", num_classes=0).state_dict(), tmp_path / "headless.pth")
    torch.save(crossvit.create_model("crossvit_tiny_240").state_dict(), tmp_path / "ours.pth")
    torch.save(timm_tiny.state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match="a timm CrossViT without its classifier .* num_classes=0"):
        crossvit.create_model("crossvit_tiny_240", checkpoint_path=tmp_path / "headless.pth")
    with pytest.raises(ValueError, match="a crossvit model's state dict, not a timm one"):
        crossvit.create_model("crossvit_tiny_240", checkpoint_path=tmp_path / "ours.pth")
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(ValueError, match="it is a file, not a folder"):
        crossvit.save_checkpoint(crossvit.load_pretrained(), tmp_path / "a_file")
    _photo(tmp_path / "a.png")
    argv = ["explain", str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "tiny.pth"), "--out",
            str(tmp_path / "out"), "--quiet"]
    assert cli.main([*argv, "--model", "shapes_tiny"]) == 2  # was: "... takes no overrides (got num_classes)"


def test_quoted_errors_carry_no_terminal_colour_codes():
    from crossvit.utils import first_line

    assert first_line(RuntimeError("\x1b[1mWeights only load failed.\x1b[0m\nmore")) == "Weights only load failed."


def test_a_decompression_bomb_is_called_too_large_not_unreadable(tmp_path, monkeypatch):
    _photo(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40 x 40 = 1600 pixels: more than twice the limit
    with pytest.raises(ValueError, match="too large to open safely"):
        crossvit.photos.check_image_file(tmp_path / "big.png")


# -- the rollouts' building blocks, as documented (an audit of the docstrings) ----------------------------------


def test_rollout_building_blocks_refuse_what_their_docstrings_exclude():
    from crossvit.rollout import check_start_block, discard_lowest, fuse_heads, gradient_weighted

    with pytest.raises(ValueError, match="grad must be a"):  # was broadcast over the heads without a word
        gradient_weighted(torch.rand(1, 2, 3, 3), torch.rand(1, 3, 3))
    with pytest.raises(ValueError, match="grad must have the attention's shape"):
        gradient_weighted(torch.rand(1, 2, 3, 3), torch.rand(1, 2, 3, 4))
    with pytest.raises(TypeError, match="attention must be a"):
        gradient_weighted([0.5], torch.rand(1, 2, 3, 3))
    with pytest.raises(ValueError, match="square maps"):
        discard_lowest(torch.rand(2, 1, 5), 0.5)
    assert discard_lowest(torch.rand(0, 5, 5), 0.5).shape == (0, 5, 5)  # was a reshape error
    with pytest.raises(TypeError, match="floating-point"):
        fuse_heads(torch.ones(1, 2, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="head_fusion must be one of .* got list"):
        fuse_heads(torch.rand(1, 2, 3, 3), ["mean"])
    with pytest.raises(TypeError, match="check_start_block needs a crossvit.CrossViT"):
        check_start_block(torch.nn.Linear(2, 2), 0)


def test_numpy_bools_are_bools():
    from crossvit.rollout import rollout_from_maps

    maps = [torch.softmax(torch.rand(1, 2, 5, 5, generator=torch.Generator().manual_seed(k)), -1) for k in range(2)]
    torch.testing.assert_close(rollout_from_maps(maps, include_cls=np.True_), rollout_from_maps(maps, include_cls=True))


def test_a_numpy_bool_array_is_not_fractions():
    from crossvit.metrics import deletion_insertion

    model = crossvit.load_pretrained()
    images = crossvit.data.make_shapes(1, seed=2**40 + 2**33 + 9)[0]
    with pytest.raises(TypeError, match="fractions must be a sequence of numbers"):  # was read as [0, 1]
        deletion_insertion(model, images, torch.rand(1, 96, 96), 0, fractions=np.array([False, True]))


def test_the_blur_sigma_has_its_docstring():
    import ast
    import inspect

    source = inspect.getsource(crossvit.metrics)
    body = ast.parse(source).body
    for k, node in enumerate(body):  # the string literal right after the assignment is its attribute docstring
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "DEFAULT_BLUR_SIGMA":
            follower = body[k + 1]
            assert isinstance(follower, ast.Expr) and "Gaussian blur" in follower.value.value
            break
    else:
        raise AssertionError("DEFAULT_BLUR_SIGMA not found")


def test_the_explorers_page_says_its_size_and_when_it_is_too_big_to_mail(tmp_path, monkeypatch, capsys):
    """A page of two crossvit_tiny_240 photos was 17 MB, and 32 photos (the limit) about 300 MB, with nothing said;
    the README promised a page that can be mailed."""
    _photo(tmp_path / "a.png")
    monkeypatch.setattr(cli, "MAIL_LIMIT_BYTES", 1000)
    argv = ["explain", str(tmp_path / "a.png"), "--model", "shapes_tiny", "--pretrained", "--out",
            str(tmp_path / "out"), "--method", "joint_rollout", "--quiet", "--html"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    size = (tmp_path / "out" / "explorers.html").stat().st_size
    assert f"explorers.html ({size / 1e6:.1f} MB)" in out
    assert "more than most mail services take" in err


def test_plotting_refuses_an_image_normalised_for_the_model():
    """preprocess's output (ImageNet mean and std) was drawn clipped, in wrong colours, without a word."""
    from crossvit import plotting

    model = crossvit.create_model("crossvit_tiny_240")
    batch = crossvit.preprocess(model, crossvit.sample_photo("chelsea"))
    maps = {"joint_rollout": crossvit.explain(model, batch, "joint_rollout")}
    with pytest.raises(ValueError, match=r"not in \[0, 1\].*display_images"):
        plotting.plot_method_grid(batch, maps)
    assert not plt.get_fignums()
    figure = plotting.plot_method_grid(crossvit.display_images(model, batch), maps)
    plt.close(figure)
    # a bicubic resize of a [0, 1] image overshoots a little at sharp edges: still drawn
    shapes = crossvit.data.make_shapes(1, seed=2**40 + 2**33 + 21)[0]
    resized = torch.nn.functional.interpolate(shapes, size=240, mode="bicubic")
    assert resized.min() < 0 and resized.max() > 1
    _, ax = plt.subplots()
    plotting.show_image(ax, resized[0])
    plt.close("all")


def test_slow_maps_show_progress(tmp_path, capsys, monkeypatch):
    """Occlusion of one 240 px image takes ~20 s: explain(progress=True) showed a one-step bar, and the command's
    bar moved once per batch of 8 images, after every method had run."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    model = crossvit.load_pretrained()
    images = crossvit.data.make_shapes(1, seed=2**40 + 2**33 + 17)[0]
    crossvit.explain(model, images, "occlusion", progress=True)
    assert "Occlusion attribution" in capsys.readouterr().err  # captum's bar over the windows
    for k in range(3):
        _photo(tmp_path / f"p{k}.png", k)
    argv = ["explain", *(str(tmp_path / f"p{k}.png") for k in range(3)), "--model", "shapes_tiny", "--pretrained",
            "--out", str(tmp_path / "out"), "--method", "joint_rollout", "saliency", "--batch-size", "2"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "6/6 [" in err and "2/6 [" in err and "joint_rollout" in err and "saliency" in err


def test_a_checkpoint_of_timms_training_script_loads(timm_tiny, tmp_path):
    """timm's train.py saves ``model_best.pth.tar``: the weights beside the optimiser and its settings as an
    argparse.Namespace. It was refused by its suffix, and then by weights_only because of the Namespace."""
    import argparse

    torch.save({"epoch": 3, "arch": "crossvit_tiny_240", "state_dict": timm_tiny.state_dict(), "version": 2,
                "args": argparse.Namespace(lr=0.1, model="crossvit_tiny_240", img_size=None), "metric": 0.5},
               tmp_path / "model_best.pth.tar")
    model = crossvit.create_model("crossvit_tiny_240", checkpoint_path=tmp_path / "model_best.pth.tar")
    images = torch.rand(1, 3, 240, 240, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(images), timm_tiny(images), rtol=0, atol=1e-5)
