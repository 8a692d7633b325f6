"""Reliability, round two: each test names the item of the issue it covers, and failed before the change.

Checkpoints that do not fit, foreign forwards during a recording, partial recordings, overwritten files, the
sidecar's config hash, signed maps on the command line, leaks (recorders, kept map memory, explorer caches),
option values checked before they reach torch or captum, and the course checkers' targets and precision.
"""

from __future__ import annotations

import gc
import io
import json
import threading
import warnings
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit import cli, exercises, photos
from crossvit.checkpoint import save_checkpoint
from crossvit.train import main as train_main
from crossvit.widgets import AttentionExplorer, attention_explorer, rollout_explorer

timm = pytest.importorskip("timm")

NAME = "crossvit_tiny_240"


@pytest.fixture(scope="module")
def tiny10_file(save_timm_model):
    """A 'fine-tuned' 10-class timm state dict (random weights)."""
    return save_timm_model(NAME, seed=2, num_classes=10)


@pytest.fixture(scope="module")
def two_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two_photos")
    for name in sorted(photos.SAMPLE_PHOTOS)[:2]:
        Image.fromarray(photos.sample_photo(name)).save(folder / f"{name}.png")
    return folder


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# 1. a fine-tuned timm state dict with another number of classes is never loaded with random heads


def test_cli_reads_the_number_of_classes_from_a_timm_file(capsys, tmp_path, tiny10_file, two_photos):
    theirs, path = tiny10_file
    code, _, err = run_cli(capsys, "explain", two_photos, "--model", NAME, "--checkpoint", path, "--method",
                           "random", "--out", tmp_path / "out", "--device", "cpu", "--quiet")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert "10 classes" in summary["weights"]
    first = summary["images"][0]
    assert all(0 <= p["index"] < 10 for p in first["top5"])
    # the same top class as timm's own model on the same preprocessed photo: the file's heads, not random ones
    ours = crossvit.create_model(NAME, checkpoint_path=path, num_classes=10)
    batch = crossvit.preprocess(ours, [two_photos / f"{sorted(photos.SAMPLE_PHOTOS)[0]}.png"])
    with torch.no_grad():
        assert int(theirs(batch).argmax()) == first["top5"][0]["index"]
    code, _, err = run_cli(capsys, "explain", two_photos, "--model", NAME, "--checkpoint", path, "--num-classes",
                           "1000", "--out", tmp_path / "other", "--device", "cpu", "--quiet")
    assert code == 1 and "classifier has 10 classes but the model has 1000" in err


# 2. recording is per call: a forward in another thread (same model, or a model sharing its modules) is not
#    recorded and changes nothing the recording returns


def test_a_forward_in_another_thread_is_not_recorded(bundled, shapes):
    images, _, _ = shapes
    twin = crossvit.create_model("shapes_tiny")
    twin.blocks = bundled.blocks  # a second model sharing the first one's modules (and attention sites)
    other_images = torch.rand(5, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    expected = crossvit.explain(bundled, images, "small_rollout")
    with crossvit.record_attention(bundled) as rec, torch.no_grad():
        bundled(images)
        before = {name: m.clone() for name, m in rec.sites.items()}
        for model in (bundled, twin):
            worker = threading.Thread(target=lambda m=model: m(other_images))
            worker.start()
            worker.join()
        assert rec.num_forwards == 1
        assert rec.sites.keys() == before.keys()
        for name, m in rec.sites.items():
            torch.testing.assert_close(m, before[name], rtol=0, atol=0)
    torch.testing.assert_close(crossvit.explain(bundled, images, "small_rollout"), expected, rtol=0, atol=0)


def test_explain_while_another_thread_runs_forwards(bundled, shapes):
    images, _, _ = shapes
    expected = {m: crossvit.explain(bundled, images, m) for m in ("small_rollout", "joint_rollout",
                                                                 "gradient_rollout")}
    stop = threading.Event()
    noise = torch.rand(6, 3, 96, 96, generator=torch.Generator().manual_seed(4))

    def hammer() -> None:
        with torch.no_grad():
            while not stop.is_set():
                bundled(noise)

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        for _ in range(4):
            for method, reference in expected.items():
                torch.testing.assert_close(crossvit.explain(bundled, images, method), reference, rtol=1e-5,
                                           atol=1e-7)
    finally:
        stop.set()
        worker.join()


# 3. every rollout refuses a recording that lacks some of the layers it needs


def test_rollouts_refuse_partial_recordings(bundled, shapes):
    images, _, _ = shapes
    with crossvit.record_attention(bundled, sites=lambda name: not name.startswith("blocks.1.")) as rec, \
            torch.no_grad():
        bundled(images)
    with pytest.raises(ValueError, match="were not recorded"):
        crossvit.attention_rollout(rec, "small", start_block=0)
    crossvit.attention_rollout(rec, "small", start_block=2)  # blocks 2.. are all there
    with pytest.raises(ValueError, match="were not recorded"):
        crossvit.joint_rollout(rec)

    # a forward that raised half-way: the recorder holds only the first blocks' maps
    def explode(module, inputs):
        raise RuntimeError("stop")

    handle = bundled.blocks[1].register_forward_pre_hook(explode)
    try:
        with crossvit.record_attention(bundled) as rec, torch.no_grad():
            with pytest.raises(RuntimeError, match="stop"):
                bundled(images)
    finally:
        handle.remove()
    for rollout in (lambda: crossvit.attention_rollout(rec, "large"), lambda: crossvit.joint_rollout(rec)):
        with pytest.raises(ValueError, match="a forward that ran to the end"):
            rollout()


# 4. the trainer never overwrites a checkpoint without being asked


def test_train_refuses_to_overwrite_a_checkpoint(tmp_path, capsys):
    save_checkpoint(crossvit.create_model("shapes_tiny"), tmp_path, name="shapes_tiny")
    before = (tmp_path / "shapes_tiny.safetensors").read_bytes()
    code = train_main(["--steps", "1", "--batch-size", "4", "--train-images", "64", "--eval-images", "4",
                       "--out", str(tmp_path), "--device", "cpu", "--quiet"])
    assert code == 2 and "already in" in capsys.readouterr().err and "--overwrite" in capsys.readouterr().err + \
        "--overwrite"
    assert (tmp_path / "shapes_tiny.safetensors").read_bytes() == before
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(crossvit.create_model("shapes_tiny"), tmp_path, name="shapes_tiny")
    code = train_main(["--steps", "1", "--batch-size", "4", "--train-images", "64", "--eval-images", "4",
                       "--out", str(tmp_path), "--device", "cpu", "--quiet", "--overwrite"])
    assert code == 0 and (tmp_path / "shapes_tiny.safetensors").read_bytes() != before


# 5. every figure in the output folder is described by its predictions.json


def _listed_figures(out) -> set[str]:
    summary = json.loads((out / "predictions.json").read_text())
    return {name for image in summary["images"] for name in image["figures"].values()}


def test_explain_output_folder_is_always_described(capsys, tmp_path, two_photos, monkeypatch):
    bundled_ckpt = crossvit.checkpoint.BUNDLED_CHECKPOINT
    out = tmp_path / "maps"
    args = ["explain", two_photos, "--checkpoint", bundled_ckpt, "--method", "random", "--out", out, "--quiet",
            "--device", "cpu"]
    assert run_cli(capsys, *args)[0] == 0
    first = _listed_figures(out)
    assert first == {p.name for p in out.glob("*.png")} and len(first) == 2
    code, _, err = run_cli(capsys, *args)  # an earlier run is there
    assert code == 2 and "holds an earlier run" in err and "--overwrite" in err
    (out / "mine.txt").write_text("keep me")
    assert run_cli(capsys, *args[:-2], "--method", "saliency", "--overwrite", "--device", "cpu")[0] == 0
    assert _listed_figures(out) == {p.name for p in out.glob("*.png")}  # the old run's figures are gone
    assert (out / "mine.txt").read_text() == "keep me"
    code, _, err = run_cli(capsys, "explain", two_photos, "--checkpoint", bundled_ckpt, "--out", two_photos)
    assert code == 2 and "is one of the input folders" in err

    # a run that fails half-way leaves only described figures
    calls = []
    real = cli.explanation_figure

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(cli, "explanation_figure", failing)
    broken = tmp_path / "broken"
    code, _, err = run_cli(capsys, "explain", two_photos, "--checkpoint", bundled_ckpt, "--method", "random",
                           "saliency", "--out", broken, "--quiet", "--device", "cpu")
    assert code == 1 and "disk full" in err
    on_disk = {p.name for p in broken.glob("*.png")}
    assert len(on_disk) == 2 and on_disk <= _listed_figures(broken)


# 6. the sidecar's hash covers the config: an edit that keeps every weight's shape is caught


def test_edited_num_heads_is_caught(tmp_path, shapes):
    model = crossvit.create_model("shapes_tiny")
    path = save_checkpoint(model, tmp_path)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["config"]["num_heads"] = [8, 8]  # 64 and 128 are divisible by 8: the same weight shapes
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="was changed after the checkpoint was written"):
        crossvit.load_checkpoint(path)
    edited = crossvit.load_checkpoint(path, verify=False)  # loads, and computes something else
    with torch.no_grad():
        assert not torch.allclose(edited(shapes[0]), model.eval()(shapes[0]), atol=1e-3)


# 7. the command line draws signed maps on a zero-centred diverging scale


def test_cli_figure_of_a_signed_map_is_zero_centred():
    image = torch.rand(3, 48, 48)
    heat = torch.zeros(48, 48)
    heat[:8] = 2.0
    heat[-4:] = -0.5
    fig = cli.explanation_figure(image, heat, "integrated_gradients", "test")
    shown = fig.axes[1].images[-1]
    assert shown.norm.vmin == -shown.norm.vmax  # 0 sits in the middle of the colour bar
    assert np.allclose(shown.get_array()[20], 0.0)  # no attribution stays 0, not 0.42 of the bar
    assert "signed" in fig.axes[-1].get_ylabel()
    unsigned = cli.explanation_figure(image, heat.abs(), "gradient_rollout", "test")
    assert unsigned.axes[1].images[-1].norm.vmin == 0.0


# 8. (tests/test_widgets.py) the rollout explorer's gradient rollout starts where explain's does


def test_rollout_explorer_uses_explains_defaults(bundled, shapes):
    images, _, masks = shapes
    explorer = rollout_explorer(bundled, images[:2], masks=masks[:2])
    for method in explorer.METHODS:
        explorer.controls["method"].value = method
        default = crossvit.METHOD_OPTIONS[method].get("start_block")  # conserved relevance has none
        if default is not None:
            assert explorer.controls["start_block"].value == default % bundled.arch.num_blocks
        np.testing.assert_allclose(explorer.last_map, crossvit.explain(bundled, images[:2], method)[0].numpy(),
                                   rtol=1e-4, atol=1e-7)


# 9-11. no leaks: recorders, kept map memory, explorer caches


def test_a_gradient_recording_is_freed_when_dropped(bundled, shapes):
    images = shapes[0].clone().requires_grad_(True)
    with crossvit.record_attention(bundled, grads=True) as rec:
        bundled(images)[:, 0].sum().backward(inputs=list(rec.sites.values()))
    assert rec.gradients
    ref = weakref.ref(rec)
    del rec
    gc.collect()
    assert ref() is None, "the gradient hooks keep the recorder (and every map) alive"


def _live_tensor_bytes() -> int:
    gc.collect()
    total, seen = 0, set()
    for obj in gc.get_objects():
        try:
            is_tensor = isinstance(obj, torch.Tensor) and not isinstance(obj, torch.nn.Parameter)
        except ReferenceError:  # a weak proxy whose object is gone (a closed notebook progress bar leaves one)
            continue
        if is_tensor:
            try:  # tensors without real memory (fake or meta tensors another test left behind) do not count
                storage = obj.untyped_storage()
                pointer = storage.data_ptr()
            except (RuntimeError, NotImplementedError):
                continue
            if pointer not in seen:
                seen.add(pointer)
                total += storage.nbytes()
    return total


def _model_attention_bytes(model) -> int:
    return sum(s.module._spare.untyped_storage().nbytes() for s in crossvit.attention_sites(model)
               if s.module._spare is not None)


@pytest.mark.slow  # 50 calls of every method, memory measured: seconds on 2 cores, so `make test` runs it, not test-fast
def test_memory_is_flat_over_50_explain_calls_of_every_method(micro):
    # what leaks is per call, not per pixel: the micro model (48 px, one layer per branch) makes each call cheap
    model, images = micro
    options = {"n_steps": 4}
    for method in crossvit.METHODS:  # warm-up: caches of torch and captum fill once
        crossvit.explain(model, images, method, **options)
    before = _live_tensor_bytes()
    for _ in range(50):
        for method in crossvit.METHODS:
            crossvit.explain(model, images, method, **options)
    grown = _live_tensor_bytes() - before
    assert grown < 256 * 1024, f"{grown / 2**20:.2f} MB of tensors more after 50 calls of every method"
    assert _model_attention_bytes(model) == 0  # explain leaves no attention memory on the model


def test_kept_attention_memory_is_never_saved_nor_left_behind_by_half(tmp_path):
    model = crossvit.create_model("crossvit_tiny_240").eval()
    images = torch.rand(2, 3, 240, 240)
    plain = io.BytesIO()
    torch.save(model, plain)
    with crossvit.record_attention(model), torch.no_grad():
        model(images)
    assert _model_attention_bytes(model) > 10 * 2**20  # a recording keeps its maps' memory for the next one
    recorded = io.BytesIO()
    torch.save(model, recorded)
    assert abs(len(recorded.getvalue()) - len(plain.getvalue())) < 64 * 1024
    model.half()
    assert _model_attention_bytes(model) == 0
    crossvit.explain(model.float(), images, "joint_rollout")
    assert _model_attention_bytes(model) == 0


def test_rollout_explorer_cache_is_bounded(bundled, shapes):
    images, _, _ = shapes
    explorer = rollout_explorer(bundled, images[:2], classes=[])  # only each image's predicted class precomputed
    explorer.controls["method"].value = "gradient_rollout"
    for start in range(bundled.arch.num_blocks):
        explorer.controls["start_block"].value = start
        for target in range(bundled.num_classes):
            explorer.controls["target"].value = target
    assert len(explorer._extras) == explorer.EXTRA_CACHE < bundled.arch.num_blocks * bundled.num_classes
    assert explorer.memory_bytes > 0


def test_attention_explorer_takes_a_bounded_number_of_images(bundled):
    many = torch.rand(AttentionExplorer.MAX_IMAGES + 1, 3, 96, 96)
    with pytest.raises(ValueError, match=r"at most 32 images.*max_images=33"):
        attention_explorer(bundled, many)
    explorer = attention_explorer(bundled, many[:3])
    per_image = crossvit.widgets.attention_bytes_per_image(bundled)
    maps = sum(m.untyped_storage().nbytes() for m in explorer.maps.values())
    assert maps == 3 * per_image
    assert explorer.memory_bytes >= maps
    assert attention_explorer(bundled, many, max_images=33).images.shape[0] == 33


# 13. every option of every method is checked before it reaches torch or captum


@pytest.mark.parametrize("method, options, error, words", [
    ("small_rollout", {"discard_ratio": "0.5"}, TypeError, "discard_ratio must be a number"),
    ("small_rollout", {"discard_ratio": 1.0}, ValueError, r"discard_ratio must be in \[0, 1\)"),
    ("random", {"seed": "a"}, TypeError, "seed must be an int"),
    ("random", {"seed": -1}, ValueError, "seed must be >= 0"),
    ("random", {"seed": 2**64}, ValueError, "seed must be <="),
    ("integrated_gradients", {"n_steps": 0}, ValueError, "n_steps must be >= 1"),
    ("occlusion", {"internal_batch_size": 0}, ValueError, "internal_batch_size must be >= 1"),
    ("saliency", {"internal_batch_size": 2.5}, TypeError, "internal_batch_size must be an int"),
    ("joint_rollout", {"head_fusion": 3}, TypeError, "head_fusion must be one of"),
    ("cls_attention", {"layer": "0"}, TypeError, "layer must be an int"),
    ("cross_attention", {"query": "cls"}, ValueError, "query must be one of"),
    ("joint_rollout", {"start_block": 1.0}, TypeError, "start_block must be an int"),
])
def test_bad_option_values_are_refused_before_the_model_runs(bundled, method, options, error, words):
    calls = []
    handle = bundled.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(error, match=words):
            crossvit.explain(bundled, torch.rand(1, 3, 96, 96), method, **options)
    finally:
        handle.remove()
    assert not calls


def test_numpy_integers_and_old_names_are_accepted(bundled, shapes):
    images = shapes[0][:2]
    torch.testing.assert_close(crossvit.explain(bundled, images, "joint_rollout", start_block=np.int64(1)),
                               crossvit.explain(bundled, images, "joint_rollout", start_block=1))
    torch.testing.assert_close(crossvit.explain(bundled, images, "random", seed=np.uint64(2**64 - 1)),
                               crossvit.explain(bundled, images, "random", seed=2**64 - 1))
    with pytest.warns(FutureWarning, match="'grad_rollout' is now called 'gradient_rollout'"):
        old = crossvit.explain(bundled, images, "grad_rollout")
    torch.testing.assert_close(old, crossvit.explain(bundled, images, "gradient_rollout"))
    with pytest.warns(FutureWarning, match="'ig_steps' is deprecated"):
        crossvit.explain(bundled, images, "integrated_gradients", ig_steps=2)
    with pytest.warns(FutureWarning, match="'branch' is deprecated"):
        crossvit.explain(bundled, images, "cls_attention", branch="small")


# 14. a crossvit checkpoint without its sidecar says so


def test_cli_says_the_sidecar_is_missing(capsys, tmp_path, two_photos):
    weights = save_checkpoint(crossvit.create_model("shapes_tiny"), tmp_path / "ck")
    weights.with_suffix(".json").unlink()
    for extra in ([], ["--model", NAME]):
        code, _, err = run_cli(capsys, "explain", two_photos, "--checkpoint", weights, *extra, "--out",
                               tmp_path / "o")
        assert code == 1 and "JSON sidecar" in err and "is missing" in err
        assert "--model" not in err and "not a timm CrossViT" not in err


# 15. the course checkers: class indices only; a half-precision rollout is checked at its precision


@pytest.mark.parametrize("target", [2.7, True, "2", [1.5, 0.0]])
def test_checker_targets_must_be_class_indices(bundled, shapes, target):
    images = shapes[0][:2]
    with pytest.raises(TypeError, match="target must be an int"):
        exercises.check_saliency_map(torch.zeros(2, 96, 96), bundled, images, target)


def _rollout_by_hand(maps: list[torch.Tensor]) -> torch.Tensor:
    rows = None
    for attention in maps:  # in the maps' own dtype, as a learner would write it
        a = attention.mean(1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
        rows = a if rows is None else a @ rows
    return rows[:, 0, 1:]


def test_a_correct_bfloat16_rollout_passes_its_checker(bundled, shapes, capsys):
    model = crossvit.create_model("shapes_tiny", pretrained=True).to(torch.bfloat16)
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(shapes[0][:2].to(torch.bfloat16))
    assert _rollout_by_hand(rec.self_attention("small")).dtype == torch.bfloat16
    exercises.check_rollout(_rollout_by_hand, rec, "small")  # the checker calls the learner's function
    assert "bfloat16's precision" in capsys.readouterr().out
    with pytest.raises(exercises.ExerciseError):  # a wrong one still fails
        exercises.check_rollout(lambda maps: _rollout_by_hand(maps[::-1]).flip(-1), rec, "small")


def test_no_warning_from_the_current_names(bundled, shapes):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for method in crossvit.METHODS:
            crossvit.explain(bundled, shapes[0][:1], method, n_steps=2)
