"""Reliability, round six (each test failed before the change).

Every public function that reads a CrossViT's structure refuses something else in the same words, through one
check (``crossvit.model.check_crossvit``): a timm or vit-pytorch model is told to convert first, a torch.compile
wrapper to pass the eager model. Before, the plotting functions and the data configs ended in an AttributeError
deep inside, and only the recording named the compiled wrapper.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import crossvit
from crossvit import ablation, lrp, plotting, preprocessing, widgets
from crossvit.explain import occlusion_window
from crossvit.weights import load_timm_weights

IMAGES = torch.rand(1, 3, 96, 96)
LABELS = torch.zeros(1, dtype=torch.long)


def _enter(manager) -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(manager)


CALLS = {
    "explain": lambda m: crossvit.explain(m, IMAGES, "saliency"),
    "relevance_by_branch": lambda m: lrp.relevance_by_branch(m, IMAGES),
    "lrp_rules": lambda m: _enter(lrp.lrp_rules(m)),
    "record_attention": lambda m: _enter(crossvit.record_attention(m)),
    "zero_cross_attention": lambda m: _enter(ablation.zero_cross_attention(m)),
    "head_accuracies": lambda m: ablation.head_accuracies(m, IMAGES, LABELS),
    "cross_attention_ablations": lambda m: ablation.cross_attention_ablations(m, IMAGES, LABELS),
    "patch_map_to_pixels": lambda m: crossvit.patch_map_to_pixels(m, "small", torch.zeros(1, 64)),
    "occlusion_window": occlusion_window,
    "top_classes": lambda m: crossvit.top_classes(m, torch.zeros(1, 4)),
    "class_names": crossvit.class_names,
    "save_checkpoint": lambda m: crossvit.save_checkpoint(m, "never_written"),
    "load_timm_weights": lambda m: load_timm_weights(m, "never_read.pth"),
    "data_config": crossvit.data_config,
    "default_data_config": preprocessing.default_data_config,
    "shapes_data_config": preprocessing.shapes_data_config,
    "stored_data_config": preprocessing.stored_data_config,
    "preprocess": lambda m: crossvit.preprocess(m, IMAGES[0]),
    "attention_explorer": lambda m: widgets.attention_explorer(m, IMAGES),
    "rollout_explorer": lambda m: widgets.rollout_explorer(m, IMAGES),
    "plot_architecture": plotting.plot_architecture,
    "plot_branch_views": lambda m: plotting.plot_branch_views(m, IMAGES[0]),
    "plot_patch_filters": lambda m: plotting.plot_patch_filters(m, "small"),
    "plot_position_similarity": lambda m: plotting.plot_position_similarity(m, "small"),
    "plot_cls_attention": lambda m: plotting.plot_cls_attention(m, IMAGES[0], torch.zeros(1, 2, 65), "small"),
    "plot_cross_attention": lambda m: plotting.plot_cross_attention(m, IMAGES[0], torch.zeros(1, 2, 65)),
    "plot_attention_by_block": lambda m: plotting.plot_attention_by_block(m, IMAGES[0], {}),
    "plot_joint_rollout": lambda m: plotting.plot_joint_rollout(m, IMAGES[0], {}),
    "attention_direction": lambda m: plotting.attention_direction(m, "small", "large"),
    "grid_edges": lambda m: plotting.grid_edges(m, "small"),
    "patch_pixels": lambda m: plotting.patch_pixels(m, "small", [0.0]),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_model_that_is_not_a_crossvit_is_told_how_to_get_one(name, model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if something were, it would land here
    call = CALLS[name]
    with pytest.raises(TypeError, match=r"needs a crossvit\.CrossViT, got Linear; convert a timm or vit-pytorch "
                                        r"model first with crossvit\.from_timm"):
        call(nn.Linear(3, 3))
    with pytest.raises(TypeError, match=r"needs a crossvit\.CrossViT, got str$"):
        call("crossvit_9_240")
    compiled = torch.compile(model)  # compiles lazily, on its first call, which never comes
    with pytest.raises(TypeError, match=r"needs the eager crossvit\.CrossViT, got a torch\.compile wrapper: pass "
                                        r"the original model \(compiled\._orig_mod\)"):
        call(compiled)
    assert list(tmp_path.iterdir()) == []


# -- training and the global random generators ---------------------------------------------------------------------

def _dropout_config():
    from crossvit.train import TrainConfig
    preset = crossvit.PaperConfig(img_size=48, img_scale=(1.0, 32 / 48), embed_dim=(16, 32), depth=((1, 1, 0),),
                                  num_heads=(2, 2), num_classes=4, drop_rate=0.3, drop_path_rate=0.3)
    return TrainConfig(preset=preset, image_size=48, steps=4, batch_size=4, train_images=8, eval_images=4,
                       warmup_steps=0, eval_every=0)


def test_a_resumed_run_with_dropout_ends_as_the_uninterrupted_one(tmp_path, monkeypatch):
    """Dropout and drop-path draw from torch's global generator: the state file keeps it (it used to be seeded
    afresh on resuming, so the resumed run drew other dropout masks from step 3 on)."""
    import io

    from crossvit import train as trainer

    states = []
    save = trainer.save_training_state

    def keep_a_copy(path, state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        states.append(buffer.getvalue())
        save(path, state)

    monkeypatch.setattr(trainer, "save_training_state", keep_a_copy)
    config = _dropout_config()
    whole, whole_record = trainer.train(config, progress=False, state_file=tmp_path / "whole.state", state_every=2)
    assert len(states) == 2  # after steps 2 and 4
    (tmp_path / "half.state").write_bytes(states[0])  # as a run stopped after step 2 left it
    resumed, resumed_record = trainer.train(config, progress=False, state_file=tmp_path / "half.state",
                                            state_every=2)
    assert resumed_record["loss_history"] == whole_record["loss_history"]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_training_gives_the_callers_random_generator_back(tmp_path):
    from crossvit.train import train

    torch.manual_seed(1234)
    torch.rand(5)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    torch.rand(5)
    train(_dropout_config(), progress=False)  # seeds the global generator with config.seed, draws dropout masks
    assert torch.equal(torch.rand(3), expected)


# -- widgets that outlive their use ----------------------------------------------------------------------------------

def _alive(kind: type) -> int:
    import gc

    gc.collect()
    return sum(kind in type(o).__mro__ for o in gc.get_objects())  # type(): isinstance would wake lazy modules


def test_a_closed_widget_is_freed(micro):
    """anywidget keeps a listener per widget on a class-level file watcher when ``_esm`` is a path, and so kept every
    explorer and question (about 2.5 MB each for the bundled model) until the process ended, closed or not."""
    import gc
    import weakref

    from crossvit.exercises import ask
    from crossvit.exercises.questions import QUESTIONS

    net, images = micro
    made = [widgets.attention_explorer(net, images), widgets.rollout_explorer(net, images),
            ask(next(q.id for q in QUESTIONS if q.kind == "choice"))]
    refs = [weakref.ref(w) for w in made]
    for widget in made:
        widget.close()  # a widget lives in ipywidgets' registry (Widget.widgets) until closed, as every ipywidget
    del made, widget
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_explain_html_leaves_no_explorer_behind(tmp_path, capsys):
    from PIL import Image

    from crossvit import cli, data
    from crossvit.widgets.base import _Explorer

    folder = tmp_path / "images"
    folder.mkdir()
    for k, image in enumerate(data.make_shapes(2, seed=data.UNUSED_SEED_BASE + 7)[0]):
        Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"s{k}.png")
    before = _alive(_Explorer)
    for run in range(2):
        assert cli.main(["explain", str(folder), "--checkpoint", str(crossvit.checkpoint.BUNDLED_CHECKPOINT),
                         "--method", "random", "--out", str(tmp_path / f"out{run}"), "--html", "--quiet"]) == 0
    capsys.readouterr()
    assert _alive(_Explorer) == before  # each run built two explorers for its page; the page is all that stays


# -- plotting functions that fail after making their figure ----------------------------------------------------------

def test_a_plot_that_fails_leaves_no_figure_open(model):
    """pyplot keeps every figure until it is closed: these found their bad argument after ``plt.subplots`` and left
    one figure behind per failed call (and two, given a short ``masks`` or an empty ``hits``, raised an IndexError
    or a KeyError instead of naming them)."""
    import matplotlib.pyplot as plt

    with crossvit.record_attention(model) as rec, torch.no_grad():
        logits = model(IMAGES)
    joint = crossvit.joint_rollout(rec)
    maps = rec.sites
    image = IMAGES[0]
    calls = [
        (lambda: plotting.plot_joint_rollout(model, image, joint, index=5), "index"),
        (lambda: plotting.plot_attention_by_block(model, image, maps, index=5), "index"),
        (lambda: plotting.plot_branch_logits({"model": logits}, ["a", "b", "c", "d"], index=5), "index"),
        (lambda: plotting.plot_method_grid(torch.rand(2, 3, 96, 96), {"random": torch.rand(2, 96, 96)},
                                           masks=torch.ones(1, 96, 96, dtype=torch.bool)), "masks must be"),
        (lambda: plotting.plot_class_maps(image, {"random": torch.rand(2, 96, 96)},
                                          torch.ones(2, 96, 96, dtype=torch.bool), ["a", "b"], hits={}),
         "hits must map every method"),
    ]
    for call, message in calls:
        before = plt.get_fignums()
        with pytest.raises((ValueError, IndexError), match=message):
            call()
        assert plt.get_fignums() == before


@pytest.mark.parametrize("method", ["saliency", "gradient_rollout", "joint_rollout", "attnlrp", "occlusion",
                                    "random"])
def test_explain_with_a_bar_gives_the_same_maps(micro, method):
    """``progress=True`` explains a few images at a time; every built-in method but ``random`` (one draw for the
    batch, so it runs whole) maps an image the same whatever else is in the batch."""
    model, images = micro
    images = torch.cat([images, images.flip(-1), images.flip(-2)])
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    whole = crossvit.explain(model, images, method, target)
    assert torch.allclose(crossvit.explain(model, images, method, target, progress=True), whole, atol=1e-6,
                          rtol=1e-4)


def test_loading_a_model_leaves_the_global_generator_alone(tmp_path):
    """A loader builds an initialised model and overwrites its weights: it used to use up draws of the caller's
    global generator (so a seeded script drew other numbers after loading a model)."""
    torch.manual_seed(7)
    expected = torch.rand(3)
    for load in (crossvit.load_pretrained, lambda: crossvit.load_pretrained(task="two_scale")):
        torch.manual_seed(7)
        load()
        assert torch.equal(torch.rand(3), expected)


def test_explain_overwrite_keeps_the_earlier_run_until_it_has_a_result(tmp_path, capsys, monkeypatch):
    """--overwrite deleted the earlier run's figures as soon as the model had loaded: a run that then failed (out of
    memory, a bad method option) left an empty folder."""
    from PIL import Image

    from crossvit import cli, data

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray((data.make_shapes(1, seed=data.UNUSED_SEED_BASE + 8)[0][0].permute(1, 2, 0) * 255)
                    .round().byte().numpy()).save(folder / "s.png")
    out = tmp_path / "out"
    argv = ["explain", str(folder), "--checkpoint", str(crossvit.checkpoint.BUNDLED_CHECKPOINT), "--method",
            "random", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    before = sorted(p.name for p in out.iterdir())

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cli, "explain", out_of_memory)
    assert cli.main([*argv, "--overwrite"]) == 1  # one error: line
    assert "out of memory" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before == ["predictions.json", "s.random.png"]
