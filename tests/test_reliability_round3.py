"""Reliability, round three (issue 28): each test names the item of the issue it covers, and failed before the
change that made it pass. The property-based half of the audit is in ``tests/test_properties.py``."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

import crossvit
from crossvit import cli, photos
from crossvit.checkpoint import BUNDLED_CHECKPOINT, file_sha256, save_checkpoint
from crossvit.layers import AttentionMap
from crossvit.rollout import HEAD_FUSIONS
from crossvit.utils import eval_mode

# ----------------------------------------------------------------------------------------------------------------
# helpers


def reference_joint(model, maps, fuse, *, normalise: bool):
    """The joint rollout's CLS rows, (B, 2, T), from full T x T matrices in float64 exactly as docs/rollout.md
    writes them: R = M_L ... M_1; a self-attention layer's block is rownorm(0.5 A + 0.5 I), a fusion layer's CLS_b
    row is rownorm(0.5 e(CLS_b) + 0.5 (c[0] e(CLS_b) + sum_j c[j] e(patch_other_j))) (``normalise=False``: the
    gradient rollout, which keeps the rows as they are)."""
    ns, nl = 1 + model.num_patches("small"), 1 + model.num_patches("large")
    t = ns + nl
    off, size = {"small": 0, "large": ns}, {"small": ns, "large": nl}
    other = {"small": "large", "large": "small"}
    b = next(iter(maps.values())).shape[0]
    result = torch.eye(t, dtype=torch.float64).repeat(b, 1, 1)
    sites = crossvit.attention_sites(model)
    k = 0
    while k < len(sites):
        m = torch.eye(t, dtype=torch.float64).repeat(b, 1, 1)
        site = sites[k]
        if site.kind == "self":
            s = slice(off[site.branch], off[site.branch] + size[site.branch])
            block = 0.5 * fuse(site.name).double() + 0.5 * torch.eye(size[site.branch], dtype=torch.float64)
            m[:, s, s] = block / block.sum(-1, keepdim=True) if normalise else block
            k += 1
        else:  # both directions of one fusion layer form one M
            for direction in sites[k:k + 2]:
                c = fuse(direction.name)[:, 0].double()  # (B, 1 + N_other)
                r, o = off[direction.branch], off[other[direction.branch]]
                row = torch.zeros(b, t, dtype=torch.float64)
                row[:, r] = 0.5 + 0.5 * c[:, 0]
                row[:, o + 1:o + size[other[direction.branch]]] = 0.5 * c[:, 1:]
                m[:, r] = row / row.sum(-1, keepdim=True) if normalise else row
            k += 2
        result = m @ result
    return result[:, [0, ns]], ns


def fused(maps, head_fusion):
    return lambda name: {"mean": maps[name].mean(1), "max": maps[name].amax(1), "min": maps[name].amin(1)}[head_fusion]


@pytest.fixture(scope="module")
def recorded(bundled, shapes):
    images = shapes[0]
    with crossvit.record_attention(bundled) as rec, torch.no_grad():
        bundled(images)
    return rec


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


CHECKPOINT = ("--checkpoint", BUNDLED_CHECKPOINT, "--device", "cpu", "--quiet")


def write_photo(path: Path, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """The command line must refuse before it loads a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the command should have been refused before")

    monkeypatch.setattr(cli, "load_model", refuse)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()}


# ----------------------------------------------------------------------------------------------------------------
# 2. the joint rollout keeps its invariant (each CLS row sums to 1 over both grids) for every head fusion


@pytest.mark.parametrize("head_fusion", HEAD_FUSIONS)
def test_joint_rollout_rows_sum_to_one_for_every_head_fusion(bundled, recorded, head_fusion):
    got = crossvit.joint_rollout(recorded, head_fusion, include_cls=True)
    expected, ns = reference_joint(bundled, recorded.sites, fused(recorded.sites, head_fusion), normalise=True)
    for qi, q in enumerate(("small", "large")):
        total = got[q]["small"].sum(-1) + got[q]["large"].sum(-1)
        torch.testing.assert_close(total, torch.ones(4), rtol=0, atol=1e-5)
        torch.testing.assert_close(got[q]["small"].double(), expected[:, qi, :ns], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got[q]["large"].double(), expected[:, qi, ns:], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("head_fusion", ["max", "min"])
def test_explain_joint_rollout_mass_is_at_most_one_for_max_and_min(bundled, shapes, head_fusion):
    maps = crossvit.explain(bundled, shapes[0], "joint_rollout", head_fusion=head_fusion, start_block=0)
    mass = maps.double().sum(dim=(1, 2))  # mass per pixel summed: the patch share of the CLS rows, <= 1
    assert (mass <= 1 + 1e-5).all() and (mass > 0).all(), mass


# ----------------------------------------------------------------------------------------------------------------
# 3. two backward passes through one recorded forward: the gradients add up, as .grad does


def test_two_backward_passes_add_their_gradients(bundled, shapes):
    images = shapes[0]
    with crossvit.record_attention(bundled, grads=True) as rec:
        out = bundled(images)
        maps = list(rec.sites.values())
        out[:, 2].sum().backward(retain_graph=True, inputs=maps)
        out[:, 3].sum().backward(inputs=maps)
        twice = rec.gradients
    with crossvit.record_attention(bundled, grads=True) as ref:
        out = bundled(images)
        (out[:, 2] + out[:, 3]).sum().backward(inputs=list(ref.sites.values()))
    assert twice.keys() == ref.gradients.keys()
    for name, grad in ref.gradients.items():
        torch.testing.assert_close(twice[name], grad, rtol=1e-4, atol=1e-6)  # float32 sums in another order
    # the maps' own .grad, which PyTorch accumulates, is the independent reference
    for name, m in rec.sites.items():
        torch.testing.assert_close(twice[name], m.grad, rtol=1e-5, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# 5. a checkpoint's integer tensor is never loaded as a float weight


def test_a_checkpoint_with_an_integer_weight_is_refused(tmp_path, bundled):
    path = save_checkpoint(bundled, tmp_path, name="m")
    state = load_file(str(path))
    key = "heads.small.fc.weight"
    state[key] = torch.full_like(state[key], 215, dtype=torch.int64)
    save_file(state, str(path), metadata={"format": "pt"})
    meta_path = tmp_path / "m.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = file_sha256(path)  # a consistent file: only the dtype is wrong
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{key}.*int64"):
        crossvit.load_checkpoint(path)


# ----------------------------------------------------------------------------------------------------------------
# 6. non-finite maps in the mass-on-object metric: an error that names the image


def test_mass_inside_mask_refuses_infinite_maps_and_names_the_image():
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 2:5] = True
    maps[1, 3, 3] = float("inf")
    with pytest.raises(ValueError, match=r"image\(s\) \[1\]"):
        crossvit.metrics.mass_inside_mask(maps, masks)
    maps[1, 3, 3] = float("-inf")
    with pytest.raises(ValueError, match=r"image\(s\) \[1\]"):
        crossvit.metrics.mass_inside_mask(maps, masks)


def test_mass_inside_mask_of_huge_finite_values_is_their_share():
    maps = torch.zeros(1, 4, 4, dtype=torch.float64)
    maps[0, 0, :] = 1e308  # the sum overflows float64
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 0, :2] = True
    torch.testing.assert_close(crossvit.metrics.mass_inside_mask(maps, masks), torch.tensor([0.5]))


# ----------------------------------------------------------------------------------------------------------------
# 7. integer-mode PIL images (I, I;16) are read on the scale of their values


@pytest.mark.parametrize("mode", ["I", "I;16", "I;16B"])
def test_integer_mode_copies_of_an_8_bit_image_read_as_the_8_bit_image(mode):
    grey = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 30), dtype=np.uint8))
    expected = np.asarray(photos.read_image(grey))
    got = np.asarray(photos.read_image(grey.convert(mode)))
    np.testing.assert_array_equal(got, expected)
    model = crossvit.create_model("shapes_tiny")
    torch.testing.assert_close(crossvit.preprocess(model, grey.convert(mode)), crossvit.preprocess(model, grey))


def test_a_dark_16_bit_file_stays_16_bit(tmp_path):
    values = np.array([[0, 255, 128, 7]], dtype=np.uint16)  # every value <= 255, but a 16-bit file
    path = tmp_path / "dark16.png"
    Image.fromarray(values).save(path)
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(photos.read_image(path))[..., 0], expected)
    with Image.open(path) as opened:  # the file opened by the caller: still its 16-bit scale
        np.testing.assert_array_equal(np.asarray(photos.read_image(opened))[..., 0], expected)


# ----------------------------------------------------------------------------------------------------------------
# 8. the command line never replaces a file it did not write


def test_explain_refuses_to_write_over_an_input_file(capsys, tmp_path, no_model_load):
    folder = tmp_path / "dl"
    folder.mkdir()
    a = write_photo(folder / "a.png", 1)
    victim = write_photo(folder / "a.random.png", 2)
    before = snapshot(folder)
    code, _, err = run_cli(capsys, "explain", a, victim, "--out", folder, "--method", "random", *CHECKPOINT)
    assert code != 0 and "error:" in err
    assert snapshot(folder) == before


def test_explain_refuses_an_out_folder_that_holds_an_input_file(capsys, tmp_path, no_model_load):
    folder = tmp_path / "dl"
    folder.mkdir()
    a = write_photo(folder / "a.png", 1)
    code, _, err = run_cli(capsys, "explain", a, "--out", folder, "--method", "random", *CHECKPOINT)
    assert code == 2 and "input" in err and list(folder.iterdir()) == [a]


def test_a_first_run_never_replaces_a_users_file(capsys, tmp_path, no_model_load):
    photos_dir, out = tmp_path / "dl2", tmp_path / "out_dl2"
    photos_dir.mkdir()
    out.mkdir()
    write_photo(photos_dir / "cat.png")
    (out / "cat.random.png").write_bytes(b"the user's own picture")
    for extra in ((), ("--overwrite",)):
        code, _, err = run_cli(capsys, "explain", photos_dir, "--out", out, "--method", "random", *extra,
                               *CHECKPOINT)
        assert code == 2 and "cat.random.png" in err, err
        assert (out / "cat.random.png").read_bytes() == b"the user's own picture"


def test_overwrite_replaces_only_what_the_earlier_run_listed(capsys, tmp_path):
    photos_dir, out = tmp_path / "p", tmp_path / "out"
    photos_dir.mkdir()
    write_photo(photos_dir / "cat.png", 1)
    code, _, err = run_cli(capsys, "explain", photos_dir, "--out", out, "--method", "random", *CHECKPOINT)
    assert code == 0, err
    (out / "notes.txt").write_text("mine")
    write_photo(photos_dir / "dog.png", 2)
    (out / "dog.random.png").write_bytes(b"mine too")  # not written by the earlier run
    code, _, err = run_cli(capsys, "explain", photos_dir, "--out", out, "--method", "random", "--overwrite",
                           *CHECKPOINT)
    assert code == 2 and "dog.random.png" in err
    assert (out / "dog.random.png").read_bytes() == b"mine too" and (out / "cat.random.png").is_file()
    (out / "dog.random.png").unlink()
    code, _, err = run_cli(capsys, "explain", photos_dir, "--out", out, "--method", "random", "--overwrite",
                           *CHECKPOINT)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["cat.random.png", "dog.random.png", "notes.txt",
                                                      "predictions.json"]
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_deletes_only_figures_an_earlier_predictions_file_could_list(capsys, tmp_path):
    photos_dir, out = tmp_path / "p", tmp_path / "out"
    photos_dir.mkdir()
    write_photo(photos_dir / "cat.png")
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "predictions.json").write_text(json.dumps({"images": [{"figures": {"random": "notes.txt"}}]}))
    code, _, err = run_cli(capsys, "explain", photos_dir, "--out", out, "--method", "random", "--overwrite",
                           *CHECKPOINT)
    assert code == 1 and "notes.txt" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_out_given_as_a_symlink_to_an_input_folder_is_refused(capsys, tmp_path, no_model_load):
    photos_dir = tmp_path / "p"
    photos_dir.mkdir()
    write_photo(photos_dir / "cat.png")
    link = tmp_path / "link"
    link.symlink_to(photos_dir, target_is_directory=True)
    code, _, err = run_cli(capsys, "explain", photos_dir, "--out", link, "--method", "random", *CHECKPOINT)
    assert code == 2 and "input" in err and sorted(p.name for p in photos_dir.iterdir()) == ["cat.png"]


def test_a_symlink_where_a_figure_would_go_is_refused(capsys, tmp_path, no_model_load):
    photos_dir, out = tmp_path / "p", tmp_path / "out"
    photos_dir.mkdir()
    out.mkdir()
    write_photo(photos_dir / "cat.png")
    (out / "cat.random.png").symlink_to(tmp_path / "nowhere.png")  # dangling: exists() says False
    code, _, err = run_cli(capsys, "explain", photos_dir, "--out", out, "--method", "random", *CHECKPOINT)
    assert code == 2 and "cat.random.png" in err and (out / "cat.random.png").is_symlink()


def test_the_same_image_given_twice_is_explained_once(capsys, tmp_path):
    photos_dir, out = tmp_path / "p", tmp_path / "out"
    photos_dir.mkdir()
    cat = write_photo(photos_dir / "cat.png")
    code, _, err = run_cli(capsys, "explain", cat, photos_dir, str(cat), "--out", out, "--method", "random",
                           *CHECKPOINT)
    assert code == 0, err
    summary = json.loads((out / "predictions.json").read_text())
    assert [image["stem"] for image in summary["images"]] == ["cat"]
    assert sorted(p.name for p in out.iterdir()) == ["cat.random.png", "predictions.json"]


def test_train_refuses_a_dangling_symlink_where_its_checkpoint_would_go(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("crossvit.train.make_training_set",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("training started")))
    (tmp_path / "shapes_tiny.json").symlink_to(tmp_path / "elsewhere.json")
    from crossvit.train import main as train_main

    assert train_main(["--steps", "1", "--out", str(tmp_path), "--quiet"]) == 2
    assert "shapes_tiny.json" in capsys.readouterr().err
    assert (tmp_path / "shapes_tiny.json").is_symlink()


# ----------------------------------------------------------------------------------------------------------------
# 9. the checkpoint format is exactly the int 1 or 2; format 1 (no config hash) only with an explicit opt-in


def _rewrite_meta(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("value", [True, 2.0, "2"])
def test_a_format_that_is_not_the_int_1_or_2_is_refused(tmp_path, bundled, value):
    save_checkpoint(bundled, tmp_path, name="m")
    _rewrite_meta(tmp_path / "m.json", format=value)
    with pytest.raises(ValueError, match="format"):
        crossvit.load_checkpoint(tmp_path / "m.json")


def test_a_format_1_file_needs_an_explicit_opt_in(tmp_path, bundled):
    save_checkpoint(bundled, tmp_path, name="m")
    meta_path = tmp_path / "m.json"
    _rewrite_meta(meta_path, format=1, config_sha256=None)
    meta = json.loads(meta_path.read_text())
    meta["config"]["num_heads"] = [2, 2]  # an edit nobody can see without the hash
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="allow_unverified_config=True"):
        crossvit.load_checkpoint(meta_path)
    model = crossvit.load_checkpoint(meta_path, allow_unverified_config=True)  # the caller's own responsibility
    assert model.config.num_heads == (2, 2) or list(model.config.num_heads) == [2, 2]


def test_the_bundled_checkpoint_is_format_2_and_loads():
    meta = json.loads(BUNDLED_CHECKPOINT.with_suffix(".json").read_text())
    assert meta["format"] == 2 and type(meta["format"]) is int
    assert isinstance(crossvit.load_pretrained(), crossvit.CrossViT)


# ----------------------------------------------------------------------------------------------------------------
# 10. every submodule's train/eval flag is restored; 11. also when several threads explain one model


def _mixed_modes(model, training: bool, flipped: str):
    model.train(training)
    model.get_submodule(flipped).train(not training)
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("training, flipped", [(True, "embed"), (False, "heads")])
def test_explain_and_deletion_insertion_restore_every_submodules_mode(model, shapes, training, flipped):
    images, labels, _ = shapes
    try:
        modes = _mixed_modes(model, training, flipped)
        crossvit.explain(model, images, "joint_rollout")
        assert {name: m.training for name, m in model.named_modules()} == modes
        maps = torch.rand(4, 96, 96, generator=torch.Generator().manual_seed(0))
        crossvit.metrics.deletion_insertion(model, images, maps, labels, steps=2)
        assert {name: m.training for name, m in model.named_modules()} == modes
        from crossvit.train import evaluate

        evaluate(model, images, labels)
        assert {name: m.training for name, m in model.named_modules()} == modes
    finally:
        model.eval()


def test_eval_mode_nests_across_threads():
    """Two threads in eval_mode on one model, the first to enter leaving first: the model ends as it began."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
    net[1].eval()
    first_inside, second_inside, first_left = threading.Event(), threading.Event(), threading.Event()

    def first():
        with eval_mode(net):
            first_inside.set()
            second_inside.wait(10)
        first_left.set()

    def second():
        first_inside.wait(10)  # enters after the first has switched the model to eval
        with eval_mode(net):
            second_inside.set()
            first_left.wait(10)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert net.training and net[0].training and not net[1].training


def test_four_threads_explaining_one_training_model_leave_it_training(model, shapes):
    images = shapes[0]
    model.train()
    model.embed.eval()
    try:
        errors = []

        def work():
            try:
                for _ in range(3):
                    crossvit.explain(model, images[:2], "joint_rollout")
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert model.training and model.heads.training and not model.embed.training
    finally:
        model.eval()


# ----------------------------------------------------------------------------------------------------------------
# 12. calling a part of the model inside a recording is not a new forward


def test_calling_a_submodule_inside_a_recording_keeps_the_maps(bundled, shapes):
    images = shapes[0]
    with crossvit.record_attention(bundled) as rec, torch.no_grad():
        bundled(images)
        before = {name: m.clone() for name, m in rec.sites.items()}
        branch_images = bundled.branch_images(images)
        small = bundled.embed["small"](branch_images["small"])
        large = bundled.embed["large"](branch_images["large"])
        bundled.blocks[0](small, large)
        assert rec.num_forwards == 1
        assert rec.sites.keys() == before.keys()
        for name, m in rec.sites.items():
            assert torch.equal(m, before[name]), name
        bundled.forward_features(images[:2])  # a forward after all
        assert rec.num_forwards == 2 and next(iter(rec.sites.values())).shape[0] == 2


# ----------------------------------------------------------------------------------------------------------------
# 14. empty images; 15. files that are not regular files


@pytest.mark.parametrize("size", [(0, 5), (5, 0), (0, 0)])
def test_empty_images_are_refused_with_a_clear_error(size):
    model = crossvit.create_model("shapes_tiny")
    with pytest.raises(ValueError, match="empty"):
        photos.read_image(Image.new("RGB", size))
    with pytest.raises(ValueError, match="empty"):
        crossvit.preprocess(model, Image.new("RGB", size))


def _unblock(path: Path) -> None:
    """Open the FIFO for writing once, so that a reader stuck in open() returns (the test then fails, not hangs)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _within(seconds: float, fn, fifo: Path):
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        _unblock(fifo)
        worker.join(5)
        pytest.fail(f"blocked for more than {seconds} s on a FIFO")
    return result


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_a_photo_is_refused_not_waited_on(tmp_path, capsys):
    fifo = tmp_path / "cat.png"
    os.mkfifo(fifo)
    model = crossvit.create_model("shapes_tiny")
    for fn in (lambda: photos.read_image(fifo), lambda: crossvit.preprocess(model, str(fifo)),
               lambda: photos.find_images([fifo])):
        result = _within(10, fn, fifo)
        assert isinstance(result.get("error"), ValueError) and "not a regular file" in str(result["error"])
    result = _within(20, lambda: run_cli(capsys, "explain", fifo, "--out", tmp_path / "out", *CHECKPOINT), fifo)
    code, _, err = result["value"]
    assert code == 1 and "not a regular file" in err


# ----------------------------------------------------------------------------------------------------------------
# 16. torch.save inside a recording; train's diverging loss; gradient rollout from one branch's head


def test_torch_save_inside_a_recording_leaves_the_hooks_behind(bundled, shapes):
    images = shapes[0][:2]
    with crossvit.record_attention(bundled) as rec, torch.no_grad():
        buffer = io.BytesIO()
        torch.save(bundled, buffer)
        bundled(images)
        assert rec.num_forwards == 1
    copy = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    hooks = [h for m in copy.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    assert hooks == []
    with torch.no_grad():
        torch.testing.assert_close(copy(images), bundled(images), rtol=0, atol=0)


def test_train_command_line_reports_a_diverging_loss_as_an_error_line(tmp_path, capsys):
    code = cli.main(["train", "--lr", "1e9", "--warmup-steps", "0", "--steps", "6", "--batch-size", "8",
                     "--train-images", "16", "--eval-images", "8", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error:") and "Traceback" not in err and "lr" in err


def test_gradient_rollout_from_one_branch_head(bundled, shapes):
    images = shapes[0]
    with crossvit.record_attention(bundled, grads=True) as rec:
        features = bundled.forward_features(images)
        maps = list(rec.sites.values())
        bundled.heads["small"](features["small"])[:, 1].sum().backward(inputs=maps)
    got = crossvit.gradient_rollout(rec, include_cls=True)
    grads = rec.gradients
    unreached = [name for name in rec.sites if name not in grads]
    assert unreached == [crossvit.attention_sites(bundled)[-1].name]  # the large CLS's last fusion
    weighted = {name: ((grads[name] if name in grads else torch.zeros_like(a)) * a.detach()).clamp(min=0).mean(1)
                for name, a in rec.sites.items()}
    expected, ns = reference_joint(bundled, rec.sites, weighted.__getitem__, normalise=False)
    torch.testing.assert_close(got["small"]["small"].double(), expected[:, 0, :ns], rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(got["small"]["large"].double(), expected[:, 0, ns:], rtol=1e-4, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# 17. the command line takes the deprecated method names; --out naming a file fails before the model loads


def test_the_command_line_takes_deprecated_method_names(capsys, tmp_path):
    photos_dir = tmp_path / "p"
    photos_dir.mkdir()
    write_photo(photos_dir / "cat.png")
    code, _, err = run_cli(capsys, "explain", photos_dir, "--out", tmp_path / "out", "--method", "grad_rollout",
                           *CHECKPOINT)
    assert code == 0, err
    assert "grad_rollout" in err and "gradient_rollout" in err  # the warning names both
    assert (tmp_path / "out" / "cat.gradient_rollout.png").is_file()


def test_out_naming_an_existing_file_is_refused_before_the_model_loads(capsys, tmp_path, no_model_load):
    photos_dir = tmp_path / "p"
    photos_dir.mkdir()
    write_photo(photos_dir / "cat.png")
    target = tmp_path / "maps.png"
    target.write_bytes(b"mine")
    code, _, err = run_cli(capsys, "explain", photos_dir, "--out", target, *CHECKPOINT)
    assert code == 2 and "error:" in err and "not a folder" in err and target.read_bytes() == b"mine"


# ----------------------------------------------------------------------------------------------------------------
# Tests that would catch a regression (the faults only other modules' tests caught, or none)


def test_a_default_recording_holds_no_autograd_graph(model, shapes):
    images = shapes[0][:2]
    assert any(p.requires_grad for p in model.parameters())
    with crossvit.record_attention(model) as rec:  # autograd on, parameters that require grad
        model(images)
    for name, m in rec.sites.items():
        assert not m.requires_grad and m.grad_fn is None, name


def test_pointing_game_counts_pixels_within_float_noise_of_the_maximum_as_maximal():
    maps = torch.zeros(1, 10, 10)
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, :3, :3] = True
    maps[0, :3, :3] = 1.0 - 5e-8  # one patch, its values split by float noise
    maps[0, 0, 0] = 1.0
    maps[0, 9, 9] = 1.0  # one pixel off the object at the exact maximum
    result = crossvit.metrics.pointing_game(maps, masks)
    torch.testing.assert_close(result.inside_share, torch.tensor([0.9]))
    assert result.hits.tolist() == [True]


def test_gradients_of_an_earlier_forward_are_refused(model, shapes):
    images = shapes[0][:2]
    with crossvit.record_attention(model, grads=True) as rec:
        first = model(images)
        first_maps = list(rec.sites.values())
        model(images)
        first.sum().backward(inputs=first_maps)
        with pytest.raises(RuntimeError, match="earlier forward"):
            _ = rec.gradients
        with pytest.raises(RuntimeError, match="earlier forward"):
            crossvit.gradient_rollout(rec)


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_attention_map_with_autograd_equals_the_no_grad_path_and_sdpa(kind):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 1 if kind == "cross" else 5, 8, generator=g) * 3
    k, v = torch.randn(2, 3, 5, 8, generator=g) * 3, torch.randn(2, 3, 5, 8, generator=g)
    attention_map = AttentionMap(8 ** -0.5, kind)
    with torch.no_grad():
        plain = attention_map(q, k)
    with_grad = attention_map(q.clone().requires_grad_(True), k.clone().requires_grad_(True))
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), plain, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(with_grad.detach() @ v, F.scaled_dot_product_attention(q, k, v), rtol=1e-5,
                               atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Promises of the public docstrings that no test held (the audit's second half)


def test_eval_mode_restores_every_flag_when_the_block_raises():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
    net[0].eval()
    with pytest.raises(KeyError), eval_mode(net):
        assert not any(m.training for m in net.modules())
        raise KeyError("inside")
    assert [m.training for m in net.modules()] == [True, False, True]
    with eval_mode(net), eval_mode(net):  # nested in one thread: the outer block restores
        pass
    assert [m.training for m in net.modules()] == [True, False, True]


def test_infinite_values_rank_first_or_last_in_the_pointing_game_and_deletion(bundled, shapes):
    """metrics' docstring: the rank-based metrics take +-inf (+inf the most relevant pixel, -inf the least)."""
    images, labels, masks = shapes
    maps = torch.zeros(4, 96, 96)
    inside = masks.flatten(1).float().argmax(dim=1)  # one pixel of each object
    maps.view(4, -1)[torch.arange(4), inside] = float("inf")
    maps[:, 0, 0] = float("-inf")
    assert crossvit.metrics.pointing_game(maps, masks).hits.all()
    finite = torch.zeros(4, 96, 96)
    finite.view(4, -1)[torch.arange(4), inside] = 1.0
    finite[:, 0, 0] = -1.0
    with_inf = crossvit.metrics.deletion_insertion(bundled, images, maps, labels, steps=4)
    same_ranks = crossvit.metrics.deletion_insertion(bundled, images, finite, labels, steps=4)
    torch.testing.assert_close(with_inf.deletion, same_ranks.deletion)
    torch.testing.assert_close(with_inf.insertion, same_ranks.insertion)


def test_atomic_write_never_leaves_half_a_file(tmp_path):
    from crossvit.utils import atomic_write

    target = tmp_path / "out.json"
    target.write_text("the whole old file")

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_text() == "the whole old file" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_read_image_returns_a_new_image_that_shares_nothing_with_the_input():
    array = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    original = array.copy()
    given = Image.fromarray(original.copy())
    for source in (given, array):
        out = photos.read_image(source)
        assert out is not source
        out.putpixel((0, 0), (1, 2, 3))  # writing into the result changes nothing the caller holds
    np.testing.assert_array_equal(np.asarray(given), original)
    np.testing.assert_array_equal(array, original)


def test_rollouts_accumulate_in_float32_whatever_the_maps_dtype(bundled, recorded):
    half = {name: m.half() for name, m in recorded.sites.items()}
    layers = [crossvit.rollout.GraphLayer(s.kind, s.branch, half[s.name].float().mean(1).half() if s.kind == "self"
                                          else half[s.name].float().mean(1)[:, 0].half())
              for s in crossvit.attention_sites(bundled)]
    counts = {b: 1 + bundled.num_patches(b) for b in ("small", "large")}
    assert crossvit.rollout.joint_rows(layers, counts).dtype == torch.float32
    assert crossvit.rollout.rollout_from_maps(list(half.values())[:2]).dtype == torch.float32
    double = [m.double() for m in list(recorded.sites.values())[:2]]
    assert crossvit.rollout.rollout_from_maps(double).dtype == torch.float64
