"""The trainer: it learns, it is deterministic, it saves what it trained, and it rejects bad settings clearly."""

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch

import crossvit
from crossvit import data
from crossvit.checkpoint import load_checkpoint
from crossvit.train import TRAIN_PRESETS, TrainConfig, augment, lr_factor, main, train

TINY = crossvit.PaperConfig(
    img_size=48, img_scale=(1.0, 32 / 48), patch_size=(12, 16), embed_dim=(16, 32), depth=((1, 1, 0),) * 2,
    num_heads=(2, 2), mlp_ratio=(2.0, 2.0, 1.0), num_classes=data.NUM_CLASSES,
)


def _tiny(**overrides) -> TrainConfig:
    # few images seen many times: the loss must fall within a few dozen steps (the task itself takes far longer)
    settings = dict(preset=TINY, steps=40, batch_size=32, lr=1.5e-3, warmup_steps=1, train_images=32, augment=False,
                    eval_images=64, eval_every=20, image_size=48, device="cpu")
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tiny_run():
    return train(_tiny(), progress=False)


def test_short_run_lowers_the_loss(tiny_run):
    model, record = tiny_run
    losses = record["loss_history"]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1, f"loss went from {first:.3f} to {last:.3f}"
    assert not model.training


def test_record_describes_the_run(tiny_run):
    model, record = tiny_run
    json.dumps(record, allow_nan=False)  # plain JSON
    assert record["steps"] == 40 and record["parameter_count"] == crossvit.count_parameters(model)
    assert [e["step"] for e in record["eval_history"]] == [20, 40]
    assert record["held_out_accuracy"] == record["eval_history"][-1]["accuracy"]
    assert record["device"] == "cpu" and record["torch_version"] == torch.__version__
    assert record["wall_time_s"] > 0 and record["model_config"] == TINY.to_dict()
    assert all(seed < record["held_out_seed"] for seed in record["training_data_seeds"])


def test_identical_runs_give_identical_weights():
    config = _tiny(steps=6, train_images=96, augment=True, eval_every=0)
    first, _ = train(config, progress=False)
    again, _ = train(config, progress=False)
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_out_dir_saves_a_loadable_checkpoint(tmp_path):
    model, record = train(_tiny(steps=3, eval_every=0), out_dir=tmp_path, progress=False, name="tiny")
    loaded, saved_record = load_checkpoint(tmp_path / "tiny.safetensors", with_record=True)
    assert saved_record["held_out_accuracy"] == record["held_out_accuracy"]
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_cli_writes_checkpoint_and_records_the_command(tmp_path, capsys):
    # a paper preset via the CLI would take too long here; the CLI path is the same for every preset
    argv = ["--preset", "shapes_tiny", "--steps", "1", "--batch-size", "8", "--train-images", "16",
            "--eval-images", "8", "--out", str(tmp_path), "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy:" in out and f"checkpoint: {tmp_path / 'shapes_tiny.safetensors'}" in out
    record = load_checkpoint(tmp_path, name="shapes_tiny").training_record
    assert record["command"].startswith("python -m crossvit.train --preset shapes_tiny --steps 1")


@pytest.mark.slow  # a subprocess that imports torch: seconds on 2 cores, so `make test` runs it, not test-fast
def test_cli_help_documents_the_options():
    result = subprocess.run([sys.executable, "-m", "crossvit.train", "--help"], capture_output=True, text=True,
                            check=True)
    for option in ("--preset", "--steps", "--out", "--batch-size", "--lr", "--seed", "--eval-images", "shapes_tiny"):
        assert option in result.stdout


def test_shapes_tiny_preset_fits_the_task():
    cfg = TRAIN_PRESETS["shapes_tiny"]
    assert int(96 * cfg.img_scale[1]) == 80 and cfg.patch_size == (12, 16)
    model = crossvit.CrossViT(cfg)
    assert model.patch_grid("small") == (8, 8) and model.patch_grid("large") == (5, 5)
    assert crossvit.count_parameters(model) <= 2_500_000  # <= 10 MB of float32 weights


def test_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10) < 0.01


def test_augment_keeps_each_image_up_to_a_symmetry():
    images = torch.rand(16, 3, 8, 8)
    out = augment(images, torch.Generator().manual_seed(0))
    for x, y in zip(images, out):
        candidates = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
        candidates += [c.transpose(-1, -2) for c in candidates]
        assert any(torch.equal(c, y) for c in candidates)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid presets: .*shapes_tiny"):
        train(TrainConfig(preset="nope"), progress=False)


@pytest.mark.parametrize(
    ("field", "value", "error", "words"),
    [
        ("steps", 0, ValueError, "TrainConfig.steps must be >= 1, got 0"),
        ("steps", 2.5, TypeError, "TrainConfig.steps must be an int"),
        ("batch_size", 0, ValueError, "TrainConfig.batch_size must be >= 1"),
        ("eval_images", 0, ValueError, "TrainConfig.eval_images must be >= 1"),
        ("lr", -1.0, ValueError, "TrainConfig.lr must be a finite number"),
        ("lr", "1e-3", TypeError, "TrainConfig.lr must be a number, got str"),
        ("seed", 2**32, ValueError, "TrainConfig.seed must be <= 4294967295"),
        ("seed", -1, ValueError, "TrainConfig.seed must be >= 0"),
        ("image_size", 64, ValueError, "takes 48 px images but TrainConfig.image_size is 64"),
        ("batch_size", 1000, ValueError, "larger than train_images"),
        ("device", "tpu9", ValueError, "TrainConfig.device"),
    ],
)
def test_bad_settings_are_named(field, value, error, words):
    with pytest.raises(error) as info:
        train(_tiny(**{field: value}), progress=False)
    assert words in str(info.value)


def test_numpy_numbers_train_as_python_ones():
    # a sweep over np.arange / np.linspace hands numpy scalars; the run and its JSON record are as with Python's
    import numpy as np

    plain = _tiny(steps=3, train_images=64, eval_every=0, seed=5)
    numpy = dataclasses.replace(plain, steps=np.int64(3), train_images=np.int32(64), eval_every=np.int64(0),
                                seed=np.uint32(5), lr=np.float32(1.5e-3), weight_decay=np.float64(0.05))
    record_a, record_b = train(plain, progress=False)[1], train(numpy, progress=False)[1]
    json.dumps(record_b, allow_nan=False)
    assert record_b["train_config"]["steps"] == 3 and type(record_b["train_config"]["seed"]) is int
    assert record_b["loss_history"][0] == record_a["loss_history"][0]  # float32's 1.5e-3 differs in later steps
    assert type(numpy.steps) is np.int64  # the caller's config is left as it was


def test_wrong_number_of_classes():
    cfg = dataclasses.replace(TINY, num_classes=3)
    with pytest.raises(ValueError, match=f"{data.NUM_CLASSES} classes but the model has num_classes=3"):
        train(_tiny(preset=cfg), progress=False)


def test_cli_bad_steps_exits_with_a_message(capsys):
    assert main(["--steps", "0", "--quiet"]) == 2
    assert "TrainConfig.steps must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(("weight", "entropy_weight"), [(0.0, 0.0), (0.5, 0.0), (0.5, 0.3)])
def test_first_step_loss_is_combined_plus_weighted_head_losses(weight, entropy_weight):
    """Recompute step 0 from scratch: the same init, the same first batch, the loss written out by hand."""
    from crossvit.train import make_training_set

    config = _tiny(steps=1, eval_every=0, head_loss_weight=weight, attention_entropy_weight=entropy_weight)
    _, record = train(config, progress=False)
    torch.manual_seed(config.seed)
    model = crossvit.CrossViT(TINY)
    train_x, train_y = make_training_set(config, progress=False)
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(config.seed + 1))
    x, y = train_x[order[:config.batch_size]].float() / 255, train_y[order[:config.batch_size]]
    model.train()
    with crossvit.record_attention(model) as rec:
        tokens = model.forward_features(x)
    small = model.heads["small"](tokens["small"])
    large = model.heads["large"](tokens["large"])
    ce = torch.nn.functional.cross_entropy
    expected = ce((small + large) / 2, y) + weight * (ce(small, y) + ce(large, y))
    if entropy_weight:
        rows = [a.mean(1)[:, 0] for a in rec.sites.values()]  # each CLS row, heads averaged
        entropy = torch.stack([torch.distributions.Categorical(probs=r).entropy().mean() for r in rows]).mean()
        expected = expected + entropy_weight * entropy
        assert record["attention_entropy_history"][0] == pytest.approx(entropy.item(), abs=1e-4)
    assert record["loss_history"][0] == pytest.approx(expected.item(), abs=2e-5)


def test_cls_attention_entropy_by_hand():
    from crossvit.train import cls_attention_entropy

    class Recorded:  # the one attribute cls_attention_entropy reads
        sites = {
            # self site: CLS row [0.5 (itself), 0.5, 0] -> log 2 (the other rows do not count)
            "self": torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])[None, None],
            # cross site, two heads averaged: [0, 1, 0, 0] and [0, 0, 0, 1] -> [0, 0.5, 0, 0.5] -> log 2
            "cross": torch.tensor([[[[0.0, 1.0, 0.0, 0.0]]], [[[0.0, 0.0, 0.0, 1.0]]]]).transpose(0, 1),
            # a CLS on itself: entropy 0
            "idle": torch.tensor([[1.0, 0.0], [0.5, 0.5]])[None, None],
        }

    assert cls_attention_entropy(Recorded()).item() == pytest.approx(2 * math.log(2) / 3)


def test_evaluate_scores_each_head_alone(tiny_run):
    from crossvit.train import evaluate

    model, _ = tiny_run
    images, labels, _ = data.make_shapes(40, seed=5, image_size=48)
    scores = evaluate(model, images, labels, batch_size=16)
    with torch.no_grad():
        tokens = model.forward_features(images)
        for branch in ("small", "large"):
            alone = (model.heads[branch](tokens[branch]).argmax(1) == labels).float().mean().item()
            assert scores[f"{branch}_head_accuracy"] == pytest.approx(alone)
        assert scores["accuracy"] == pytest.approx((model(images).argmax(1) == labels).float().mean().item())


def test_train_accepts_another_module_for_baselines(tmp_path):
    baseline = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 48 * 48, data.NUM_CLASSES))
    trained, record = train(_tiny(steps=30), model=baseline, progress=False)
    assert trained is baseline and record["held_out_head_accuracy"] is None
    assert record["model_class"] == "Sequential" and record["model_config"] is None
    assert sum(record["loss_history"][-5:]) < sum(record["loss_history"][:5])
    with pytest.raises(ValueError, match="only a crossvit.CrossViT can be saved"):
        train(_tiny(steps=1), out_dir=tmp_path, model=baseline, progress=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        train(_tiny(steps=1), model="vit", progress=False)


def test_two_object_scenes_in_training_come_with_soft_targets():
    """With ``two_object_fraction``, the last share of the training set are the scenes of
    ``crossvit.scenes.make_two_object_shapes`` for the recorded data seeds, each with 0.5 on each of its two
    classes; the single-object images come first, one-hot; without it the set is what it always was."""
    from crossvit.scenes import make_two_object_shapes
    from crossvit.train import _CHUNK_IMAGES, make_training_set, training_data_seeds

    config = _tiny(train_images=2 * _CHUNK_IMAGES + 40, two_object_fraction=0.01)  # 40 scenes, one chunk
    images, targets = make_training_set(config, progress=False)
    seeds = training_data_seeds(config)
    assert len(seeds) == 3 and targets.shape == (2 * _CHUNK_IMAGES + 40, data.NUM_CLASSES)
    scenes, pairs, _ = make_two_object_shapes(40, seeds[-1], 48, progress=False)
    assert torch.equal(images[-40:], scenes.mul(255).round().to(torch.uint8))
    expected = torch.zeros(40, data.NUM_CLASSES)
    for i, (a, b) in enumerate(pairs.tolist()):
        expected[i, a] = expected[i, b] = 0.5
    assert torch.equal(targets[-40:], expected)
    singles, labels, _ = data.make_shapes(_CHUNK_IMAGES, seeds[0], 48)
    assert torch.equal(images[:_CHUNK_IMAGES], singles.mul(255).round().to(torch.uint8))
    assert torch.equal(targets[:_CHUNK_IMAGES].argmax(1), labels) and torch.equal(targets[:-40].sum(1),
                                                                                  torch.ones(2 * _CHUNK_IMAGES))
    plain = _tiny(train_images=2 * _CHUNK_IMAGES + 40)  # no scenes: class indices, the same single-object chunks
    _, plain_labels = make_training_set(plain, progress=False)
    assert plain_labels.dtype == torch.int64 and training_data_seeds(plain)[:1] == seeds[:1]


def test_first_step_loss_with_soft_targets_is_the_cross_entropy_written_out():
    """Step 0 recomputed by hand on a set that is half scenes: -sum_c p_c log softmax(z)_c, averaged."""
    from crossvit.train import make_training_set

    config = _tiny(steps=1, eval_every=0, train_images=64, two_object_fraction=0.5, head_loss_weight=0.5)
    _, record = train(config, progress=False)
    torch.manual_seed(config.seed)
    model = crossvit.CrossViT(TINY).train()
    train_x, targets = make_training_set(config, progress=False)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(config.seed + 1))
    x, p = train_x[order[:config.batch_size]].float() / 255, targets[order[:config.batch_size]]
    assert (p == 0.5).any() and (p == 1.0).any()  # the first batch mixes scenes and single objects
    tokens = model.forward_features(x)
    small, large = model.heads["small"](tokens["small"]), model.heads["large"](tokens["large"])

    def ce(z):
        return -(p * torch.log_softmax(z, dim=1)).sum(dim=1).mean()

    expected = ce((small + large) / 2) + 0.5 * (ce(small) + ce(large))
    assert record["loss_history"][0] == pytest.approx(expected.item(), abs=2e-5)


@pytest.mark.parametrize(("fraction", "error"), [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError),
                                                 (True, TypeError)])
def test_a_bad_two_object_fraction_is_refused_by_name(fraction, error):
    with pytest.raises(error, match="two_object_fraction"):
        train(_tiny(two_object_fraction=fraction), progress=False)
