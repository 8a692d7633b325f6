"""Reliability, round eight: memory over repeated calls and progress bars (each test failed before the change).

* The rollouts of a recording made with ``grads=True`` (or ``detach=False``) carried the forward's autograd graph:
  every kept result held the whole graph (30 joint rollouts of 16 images kept about 280 MB).
* An explorer stayed in memory after the caller dropped it (ipywidgets keeps every widget until it is closed), and
  closing it left its layout widget behind; the rollout explorer also kept its recorded maps on the model's
  device beside CPU copies. Explorers are now context managers, ``close()`` takes the layout too, and the maps live
  on the CPU (``AttentionRecorder.to``).
* ``relevance_by_branch`` ran any batch in one forward and one backward, with no bar; ``make_composites`` and
  ``preprocess`` (of a list of photos) had no bar; ``train(progress=False)`` still printed the held-out scores.
"""

from __future__ import annotations

import gc
import weakref

import ipywidgets.widgets.widget as widget_registry
import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit.rollout import attention_rollout, joint_rollout
from crossvit.scenes import make_composites
from crossvit.train import TrainConfig, train
from crossvit.widgets import attention_explorer, rollout_explorer


def _recorded(model, images, **kwargs):
    with crossvit.record_attention(model, **kwargs) as rec:
        logits = model(images)
        if kwargs.get("grads"):
            logits[:, 0].sum().backward()
    return rec


@pytest.mark.parametrize("kwargs", [{"grads": True}, {"detach": False}])
def test_rollouts_of_a_recording_with_a_graph_carry_none(micro, kwargs):
    net, images = micro
    plain = _recorded(net, images)  # the reference: maps recorded without a graph
    rec = _recorded(net, images, **kwargs)
    assert any(m.grad_fn is not None for m in rec.sites.values())  # the recording itself keeps the graph
    for branch in net.branch_names:
        out = attention_rollout(rec, branch)
        assert out.grad_fn is None and not out.requires_grad
        torch.testing.assert_close(out, attention_rollout(plain, branch), rtol=0, atol=0)
    joint, reference = joint_rollout(rec), joint_rollout(plain)
    for query in joint:
        for patches, value in joint[query].items():
            assert value.grad_fn is None and not value.requires_grad
            torch.testing.assert_close(value, reference[query][patches], rtol=0, atol=0)
    net.zero_grad(set_to_none=True)


def test_a_recording_moves_to_a_device_only_after_its_block(micro):
    net, images = micro
    with crossvit.record_attention(net, grads=True) as rec:
        net(images)[:, 1].sum().backward()
        with pytest.raises(RuntimeError, match="after its with block"):
            rec.to("cpu")
    net.zero_grad(set_to_none=True)
    names = set(rec.sites)
    assert rec.to("meta") is rec
    assert set(rec.sites) == names and {m.device.type for m in rec.sites.values()} == {"meta"}
    assert {g.device.type for g in rec.gradients.values()} == {"meta"}


def _widget_count() -> int:
    return len(widget_registry._instances)  # what Widget.widgets (deprecated) returns: every widget not closed


@pytest.mark.parametrize("build", [attention_explorer, rollout_explorer])
def test_an_explorer_closed_by_its_with_block_leaves_no_widget_and_is_freed(micro, build):
    net, images = micro
    gc.collect()
    before = _widget_count()
    with build(net, images) as explorer:
        assert _widget_count() > before  # open: ipywidgets holds it (and its layout)
        alive = weakref.ref(explorer)
    assert _widget_count() == before  # the layout widget too
    del explorer
    gc.collect()
    assert alive() is None


def test_the_rollout_explorer_keeps_its_maps_on_the_cpu(micro):
    net, images = micro
    with rollout_explorer(net, images) as explorer:
        assert {m.device.type for m in explorer.recorder.sites.values()} == {"cpu"}
        # the per-branch copies are the recorder's own tensors, not a second copy
        first = explorer.self_maps["small"][0][1]
        assert any(first.untyped_storage().data_ptr() == m.untyped_storage().data_ptr()
                   for m in explorer.recorder.sites.values())


def test_relevance_by_branch_in_batches_matches_one_batch(bundled, shapes, capsys):
    images, labels, _ = shapes
    whole = crossvit.relevance_by_branch(bundled, images, labels, batch_size=len(images))
    parts = crossvit.relevance_by_branch(bundled, images, labels, batch_size=3, progress=True)
    assert "relevance" in capsys.readouterr().err  # the bar, over the 2 batches
    torch.testing.assert_close(parts.logit, whole.logit, rtol=1e-5, atol=1e-5)
    for branch in bundled.branch_names:
        torch.testing.assert_close(parts.patches[branch], whole.patches[branch], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(parts.total(branch), whole.total(branch), rtol=1e-5, atol=1e-5)
    # the predicted class, batch by batch, is the same target as the whole batch's
    predicted = crossvit.relevance_by_branch(bundled, images, batch_size=1)
    torch.testing.assert_close(predicted.logit, whole.logit, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        crossvit.relevance_by_branch(bundled, images, batch_size=0)
    with pytest.raises(TypeError, match="progress"):
        crossvit.relevance_by_branch(bundled, images, progress="yes")


def test_make_composites_shows_a_bar_and_the_same_images(capsys):
    quiet = make_composites(6, 77)
    assert capsys.readouterr().err == ""
    shown = make_composites(6, 77, progress=True)
    assert "composites" in capsys.readouterr().err
    for a, b in zip(quiet, shown):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="progress"):
        make_composites(6, 77, progress=1)


def test_train_without_progress_prints_nothing(capsys):
    config = TrainConfig(preset="shapes_tiny", steps=2, batch_size=4, train_images=8, eval_images=4, warmup_steps=1,
                         eval_every=1, seed=5)
    train(config, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    _, record = train(config, progress=True)
    assert "step 1: held-out accuracy" in capsys.readouterr().out + capsys.readouterr().err
    assert len(record["eval_history"]) == 2
    with pytest.raises(TypeError, match="progress"):
        train(config, progress="no")


def test_preprocess_shows_a_bar_over_the_photos_and_the_same_batch(bundled, tmp_path, capsys):
    photos = []
    for k in range(3):
        photos.append(tmp_path / f"photo{k}.png")
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (50 + k, 64, 3), dtype=np.uint8)).save(photos[-1])
    quiet = crossvit.preprocess(bundled, photos)
    assert capsys.readouterr().err == ""
    shown = crossvit.preprocess(bundled, photos, progress=True)
    assert "preprocess" in capsys.readouterr().err
    assert torch.equal(quiet, shown)
    with pytest.raises(TypeError, match="progress"):
        crossvit.preprocess(bundled, photos, progress="yes")
