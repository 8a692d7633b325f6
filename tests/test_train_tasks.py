"""The trainer on either synthetic task, and runs that survive a stop: a run continued from its saved state ends
with the weights and record of the run that never stopped."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import crossvit
from crossvit import train as trainer
from crossvit.checkpoint import load_checkpoint
from crossvit.classes import class_names
from crossvit.tasks import TASKS, get_task
from crossvit.train import TrainConfig, train

TINY = crossvit.PaperConfig(
    img_size=48, img_scale=(1.0, 0.5), patch_size=(8, 8), embed_dim=(16, 24), depth=((1, 1, 0),) * 2,
    num_heads=(2, 2), mlp_ratio=(2.0, 2.0, 1.0), num_classes=4, resize_antialias=True,
)


def _config(**overrides) -> TrainConfig:
    settings = dict(preset=TINY, task="two_scale", steps=8, batch_size=8, lr=1e-3, warmup_steps=1, train_images=24,
                    eval_images=16, eval_every=4, image_size=48, device="cpu", attention_entropy_weight=0.05)
    return TrainConfig(**{**settings, **overrides})


def test_every_task_names_its_classes_and_makes_its_images():
    for task in TASKS.values():
        images, labels, _ = task.make(8, 3, 48)
        assert images.shape == (8, 3, 48, 48) and labels.max() < task.num_classes == len(task.class_names)
    with pytest.raises(ValueError, match="unknown task 'digits'; tasks: shapes, two_scale"):
        get_task("digits")


def test_the_trainer_draws_the_tasks_images(monkeypatch):
    """Training and held-out images come from the task's own generator, at the documented seeds."""
    calls = []
    real = TASKS["two_scale"].make

    def spy(n, seed, image_size, **kwargs):
        calls.append((n, seed, image_size))
        return real(n, seed, image_size, **kwargs)

    monkeypatch.setitem(TASKS, "two_scale", TASKS["two_scale"].__class__("two_scale", spy, TASKS["two_scale"]
                                                                        .class_names, "spy"))
    config = _config()
    trainer.make_training_set(config, progress=False)
    trainer.make_held_out_set(config)
    seeds = trainer.training_data_seeds(config)
    assert calls == [(24, seeds[0], 48), (16, crossvit.data.HELD_OUT_SEED_BASE + config.seed, 48)]


@pytest.mark.parametrize("overrides,message", [
    (dict(task="digits"), "unknown task 'digits'"),
    (dict(two_object_fraction=0.25), "needs task='shapes'"),
    (dict(preset=dataclasses.replace(TINY, num_classes=3)),
     "the two_scale task has 4 classes but the model has num_classes=3"),
])
def test_bad_task_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        train(_config(**overrides), progress=False)


def test_a_two_scale_checkpoint_names_the_two_scale_classes(tmp_path):
    train(_config(steps=2, eval_every=0), tmp_path, progress=False, name="tiny")
    model = load_checkpoint(tmp_path, name="tiny")
    assert class_names(model) == list(crossvit.twoscale.CLASS_NAMES)
    assert model.training_record["train_config"]["task"] == "two_scale"


def test_a_run_continued_from_its_state_ends_as_the_uninterrupted_run(tmp_path, monkeypatch):
    config = _config()
    straight, straight_record = train(config, progress=False)

    state = tmp_path / "run.state"
    real_augment, calls = trainer.augment, []

    def stop_after_five(images, generator):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt  # the machine stops the run during step 6
        return real_augment(images, generator)

    monkeypatch.setattr(trainer, "augment", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False, state_file=state, state_every=2)
    assert torch.load(state, weights_only=True)["step"] == 4  # the last state saved before the stop
    monkeypatch.setattr(trainer, "augment", real_augment)
    resumed, record = train(config, progress=False, state_file=state, state_every=2)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for key in ("loss_history", "eval_history", "attention_entropy_history", "held_out_accuracy"):
        assert record[key] == straight_record[key], key


def test_a_state_of_another_run_is_refused(tmp_path):
    state = tmp_path / "run.state"
    train(_config(steps=2, eval_every=0), progress=False, state_file=state)
    with pytest.raises(ValueError, match="another TrainConfig"):
        train(_config(steps=3, eval_every=0), progress=False, state_file=state)
    with pytest.raises(ValueError, match="state_every must be >= 1"):
        train(_config(steps=2), progress=False, state_file=state, state_every=0)
