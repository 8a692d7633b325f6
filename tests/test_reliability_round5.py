"""Reliability, round five: what the round-four audit left, and what a second audit of the public API found (each
test failed before the change).

Arguments refused by a bare KeyError, AttributeError or TypeError from deep inside instead of an error that names
them; flags that took "no" for True; images holding NaN shown or scored without a word; a state file checked only
after the training it was to save; a command that replaced a file of the user's; and the library's own analyses
overwriting the maps of a recording the caller had open on the same model.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

import crossvit
from crossvit import ablation, data, metrics, rollout, scenes
from crossvit.checkpoint import save_checkpoint
from crossvit.explain import joint_rollout_pixels
from crossvit.lrp import relevance_by_branch
from crossvit.train import check_output
from crossvit.weights import read_state_dict


@pytest.fixture(scope="module")
def batch():
    images, labels, _ = data.make_shapes(2, seed=data.UNUSED_SEED_BASE + 95)
    return images, labels


def test_paths_that_are_not_paths_are_named(model, tmp_path):
    for call, name in ((lambda: save_checkpoint(model, 3), "directory"),  # an int: was pathlib's own TypeError
                       (lambda: save_checkpoint(model, None), "directory"),
                       (lambda: check_output(3, "model"), "out_dir"),
                       (lambda: read_state_dict(3), "checkpoint_path"),
                       (lambda: crossvit.load_checkpoint(None), "checkpoint path")):
        with pytest.raises(TypeError, match=f"{name} must be a str or Path, got"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_a_branch_name_is_checked(model, batch):
    shares = relevance_by_branch(model, batch[0])
    for call in (shares.share, shares.total):
        with pytest.raises(ValueError, match="branch must be one of 'small', 'large'; got 'Small'"):
            call("Small")  # was KeyError: 'Small'
    torch.testing.assert_close(shares.share("small") + shares.share("large"), torch.ones(2), rtol=0, atol=1e-6)


def test_rollout_from_maps_names_what_it_was_given():
    maps = [torch.softmax(torch.randn(2, 3, 5, 5), dim=-1) for _ in range(2)]
    with pytest.raises(TypeError, match="maps must be a list or tuple"):
        rollout.rollout_from_maps(torch.stack(maps))  # a stacked tensor: was "Boolean value of Tensor ... ambiguous"
    with pytest.raises(TypeError, match=r"maps\[1\] must be a \(B, heads, N, N\) tensor, got int"):
        rollout.rollout_from_maps([maps[0], 3])  # was AttributeError: 'int' object has no attribute 'shape'
    with pytest.raises(ValueError, match=r"maps\[0\] must be a \(B, heads, N, N\) tensor, got shape \(2, 5, 5\)"):
        rollout.rollout_from_maps([maps[0][:, 0]])  # was "not enough values to unpack"
    with pytest.raises(TypeError, match="include_cls must be True or False"):
        rollout.rollout_from_maps(maps, include_cls="no")  # was read as True
    # what it accepts still gives the written-out product: row 0 of A'_2 A'_1 with A' = rownorm(0.5 A + 0.5 I)
    eye = torch.eye(5)
    a1, a2 = ((0.5 * m.mean(dim=1) + 0.5 * eye) for m in maps)
    a1, a2 = a1 / a1.sum(-1, keepdim=True), a2 / a2.sum(-1, keepdim=True)
    torch.testing.assert_close(rollout.rollout_from_maps(tuple(maps)), (a2 @ a1)[:, 0, 1:])


def test_joint_rollout_pixels_names_a_missing_pair(model):
    with pytest.raises(ValueError, match=r"rollout\['small'\]\[patch branch\]"):
        joint_rollout_pixels(model, {})  # was KeyError: 'small'
    with pytest.raises(TypeError, match="rollout must be a dict of dicts"):
        joint_rollout_pixels(model, [torch.ones(2, 64)])


def test_zero_cross_attention_names_a_query_that_is_not_one(model, batch):
    for query, error in ((None, TypeError), (3, TypeError), (["small", 3], ValueError)):
        with pytest.raises(error, match="query must be 'small', 'large', 'both' or"):
            with ablation.zero_cross_attention(model, query):  # None, 3: was "object is not iterable"
                pass
    with torch.no_grad():
        plain = model(batch[0])
        with ablation.zero_cross_attention(model, []):  # the ablations' baseline: nothing zeroed
            assert torch.equal(model(batch[0]), plain)
        with ablation.zero_cross_attention(model, ["large"]):
            zeroed = model(batch[0])
    assert not torch.allclose(plain, zeroed)  # a valid sequence still zeroes


def test_make_composites_refuses_a_gap_with_no_room_before_drawing():
    with pytest.raises(ValueError, match="gap must be <= 48, got 200"):
        scenes.make_composites(2, seed=0, image_size=96, gap=200)  # was RuntimeError after drawing 20 images
    with pytest.raises(ValueError, match="only 0 of 4 composites found room 40 px from the host's object"):
        scenes.make_composites(4, seed=0, image_size=96, gap=40)


def test_the_library_leaves_an_open_recording_as_it_was(model, batch):
    images, labels = batch
    other = images.flip(-1)
    with crossvit.record_attention(model) as rec:
        model(images)
        kept = {name: m.clone() for name, m in rec.sites.items()}
        for method in ("joint_rollout", "gradient_rollout", "attnlrp", "integrated_gradients"):
            crossvit.explain(model, other, method)  # ran the model on `other` inside: rec held its maps after
        relevance_by_branch(model, other)
        ablation.head_accuracies(model, other, labels)
        ablation.cross_attention_ablations(model, other, labels)
        maps = crossvit.explain(model, other, "joint_rollout")
        metrics.deletion_insertion(model, other, maps, 0, steps=2)
        assert rec.num_forwards == 1
        assert rec.sites.keys() == kept.keys()
        for name, m in rec.sites.items():
            assert torch.equal(m, kept[name]), name
        model(other)  # the caller's own forward still replaces them
        assert rec.num_forwards == 2
        with torch.no_grad():
            with crossvit.record_attention(model) as fresh:
                model(other)
        for name, m in rec.sites.items():
            assert torch.equal(m, fresh.sites[name]), name


# ---------------------------------------------------------------------------------------------------------------
# found by an audit of the public API after the first half of this round (each failed before its change)


def test_training_flags_and_the_state_file_are_checked_before_any_training(tmp_path, monkeypatch):
    from crossvit import train as train_module

    for flag in ("augment", "amp"):
        with pytest.raises(TypeError, match=f"TrainConfig.{flag} must be True or False"):
            train_module.validate(train_module.TrainConfig(**{flag: "no"}))  # "no" was read as True
    monkeypatch.setattr(train_module, "make_training_set", lambda *a: pytest.fail("data made before the check"))
    config = train_module.TrainConfig(steps=2, batch_size=2, train_images=4, eval_images=2, device="cpu")
    with pytest.raises(ValueError, match="state_file .* is a folder"):
        train_module.train(config, state_file=tmp_path, progress=False)  # was IsADirectoryError after state_every steps
    with pytest.raises(TypeError, match="state_file must be a str or Path, got int"):
        train_module.train(config, state_file=3, progress=False)
    blocker = tmp_path / "a file"
    blocker.write_text("mine")
    with pytest.raises(ValueError, match="cannot write the training state"):
        train_module.train(config, state_file=blocker / "state.pt", progress=False)  # its folder cannot exist
    assert blocker.read_text() == "mine"


def test_evaluate_names_what_is_wrong_with_its_arguments(model, batch):
    from crossvit.ablation import SingleBranchViT
    from crossvit.train import evaluate

    images, labels = batch
    bad = images.clone()
    bad[1, 0, 0, 0] = float("nan")
    for kwargs, error, message in (
            ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),  # was "range() arg 3 must not be zero"
            ({"labels": labels.float()}, TypeError, "integer tensor of class indices"),
            ({"labels": labels.tolist()}, ValueError, r"labels must be a \(B,\) tensor"),  # was AttributeError
            ({"labels": labels + 10}, ValueError, r"class indices must be in \[0, 4\)"),  # was IndexError
            ({"images": images[:0], "labels": labels[:0]}, ValueError, "empty batch"),  # was ZeroDivisionError
            ({"amp": "no"}, TypeError, "amp must be True or False"),
            ({"device": "gpu"}, ValueError, "device"),
            ({"images": bad}, ValueError, r"images \[1\] hold NaN")):  # was a NaN loss and a counted accuracy
        arguments = {"images": images, "labels": labels, **kwargs}
        with pytest.raises(error, match=message):
            evaluate(model, arguments.pop("images"), arguments.pop("labels"), **arguments)
    single = SingleBranchViT(model.arch, "small").eval()  # no num_classes attribute: checked against its logits
    with pytest.raises(ValueError, match="class indices must be < the model's 4 classes"):
        evaluate(single, images, labels + 4)
    with pytest.raises(ValueError, match="this model takes 96x96 images"):
        single(images[:, :, :50, :50])  # was resized without a word, where the CrossViT refuses it
    # what it accepts still scores as a hand count does
    with torch.no_grad():
        hits = (model(images).argmax(dim=1) == labels).float().mean().item()
    assert evaluate(model, images, labels)["accuracy"] == pytest.approx(hits)


def test_weights_and_model_arguments_are_named(model, tmp_path):
    from crossvit.weights import load_timm_weights

    paper = crossvit.create_model("crossvit_tiny_240", num_classes=3)
    with pytest.raises(TypeError, match="reset_classifier must be True or False"):
        load_timm_weights(paper, tmp_path / "w.safetensors", reset_classifier="no")  # was read as True
    with pytest.raises(TypeError, match="path must be a str or Path, got NoneType"):
        load_timm_weights(paper, None)
    with pytest.raises(TypeError, match="checkpoint_path must be a str or Path, got int"):
        crossvit.create_model("crossvit_tiny_240", checkpoint_path=3)
    with pytest.raises(ValueError, match="is a folder; give the weights file itself"):
        crossvit.create_model("crossvit_tiny_240", checkpoint_path=tmp_path)  # was "no such weights file"
    for field in ("patch_size", "embed_dim"):
        with pytest.raises(TypeError, match=rf"{field} must be a tuple of \(small, large\) pair, got int"):
            crossvit.create_model("shapes_tiny", **{field: 12})  # was "object of type 'int' has no len()"
    with pytest.raises(TypeError, match="features must be a dict with one token tensor per branch"):
        model.forward_head(torch.zeros(2, 64))  # timm's forward_head takes a tensor; was AttributeError
    with pytest.raises(TypeError, match="branch_logits must be a dict"):
        model.combine_heads({})  # was KeyError: 'small'
    with pytest.raises(TypeError, match=r"patch_map_to_pixels \(model first, then branch and patch_map\) needs a "
                                        r"crossvit\.CrossViT"):
        crossvit.patch_map_to_pixels("small", model, torch.zeros(2, 64))  # was AttributeError: 'patch_grid'
    logits = torch.zeros(2, 4)
    with pytest.raises(TypeError, match=r"top_classes \(model first, then the logits\) needs a crossvit\.CrossViT"):
        crossvit.top_classes(logits, model)  # swapped: was AttributeError: ... 'num_classes'
    with pytest.raises(ValueError, match="logits hold NaN"):
        crossvit.top_classes(model, torch.full((2, 4), float("nan")))  # was a probability of nan
    with pytest.raises(ValueError, match=r"target class indices must be in \[0, 4\), got 1180591620717411303424"):
        crossvit.explain(model, torch.rand(1, 3, 96, 96), "joint_rollout", target=2**70)  # was "must be an int"


def test_explanation_functions_check_their_inputs(model, batch):
    from crossvit.lrp import patch_relevance, pixel_relevance
    from crossvit.relevancy import coattention_relevancy

    images = batch[0]
    bad = images.clone()
    bad[0, 1, 2, 3] = float("inf")
    for function in (patch_relevance, pixel_relevance):
        with pytest.raises(ValueError, match=r"target class indices must be in \[0, 4\)"):
            function(model, images, torch.tensor([9, 9]))  # was "index 9 is out of bounds"
        with pytest.raises(ValueError, match=r"images \[0\] hold NaN or infinite"):
            function(model, bad, None)  # was a NaN map
        with pytest.raises(TypeError, match="images must be a torch.Tensor"):
            function(model, images.tolist(), None)
    by_int = patch_relevance(model, images, 1)  # an int is every image's target (was "'int' is not subscriptable")
    by_tensor = patch_relevance(model, images, torch.tensor([1, 1]))
    for branch in model.branch_names:
        torch.testing.assert_close(by_int[branch], by_tensor[branch])
    with pytest.raises(TypeError, match="rec must be the AttentionRecorder"):
        coattention_relevancy("rec")  # was AttributeError: 'str' object has no attribute 'model'
    with crossvit.record_attention(model, grads=True) as rec:
        model(images)[:, 0].sum().backward()
    with pytest.raises(TypeError, match="include_cls must be True or False"):
        coattention_relevancy(rec, include_cls="no")  # was read as True: (B, 1 + N) rows
    with pytest.raises(TypeError, match=r"attention must be a \(B, heads, Nq, Nk\) tensor"):
        rollout.fuse_heads([torch.zeros(2, 2)])  # was AttributeError
    with pytest.raises(ValueError, match=r"attention must be a \(B, N, N\) tensor, got shape \(2, 3, 5, 5\)"):
        rollout.discard_lowest(torch.rand(2, 3, 5, 5), 0.5)  # was "too many values to unpack"


def test_explorers_refuse_what_they_cannot_show(model, batch):
    from crossvit.widgets import attention_explorer, rollout_explorer

    images = batch[0]
    bad = images.clone()
    bad[1, 0, 0, 0] = float("nan")
    for make in (attention_explorer, rollout_explorer):
        with pytest.raises(ValueError, match=r"images \[1\] hold NaN"):
            make(model, bad)  # attention: 18 NaN maps; rollout: named images [1, 3, 5, 7] of its own batch
    with pytest.raises(TypeError, match=r"classes must be a sequence of class indices \(e.g. \[2\] for one\)"):
        rollout_explorer(model, images[:1], classes=2)  # was "'int' object is not iterable"
    explorer = attention_explorer(model, images[:1])
    with pytest.raises(TypeError, match="row must be an int"):
        explorer.select_patch(0.5, 0)  # was truncated to row 0


def test_photos_and_display_arguments_are_named(model, tmp_path):
    from crossvit import photos
    from crossvit.preprocessing import display_images

    with pytest.raises(TypeError, match=r"names must be a list of sample photo names, e.g. \['chelsea'\]"):
        photos.sample_photos("chelsea")  # was "unknown sample photo 'c'"
    with pytest.raises(ValueError, match=r"unknown sample photo \['chelsea'\]"):
        photos.sample_photo(["chelsea"])  # was "unhashable type: 'list'"
    for ncols in (-1, 0, "2", 2.0):
        with pytest.raises(ValueError, match="ncols must be a positive int"):
            photos.collage(["chelsea", "coffee"], tile=8, ncols=ncols)  # 0 used the default; -1 numpy's error
    path = photos.sample_photo_path("coffee")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "coffee.png").write_bytes(path.read_bytes())
    assert photos.find_images(str(folder)) == photos.find_images([folder])  # one path: it walked the string
    with pytest.raises(TypeError, match=r"paths\[1\] must be a str or Path, got NoneType"):
        photos.find_images([folder, None])
    with pytest.raises(TypeError, match="path must be a str or Path"):
        photos.check_image_file(None)
    with pytest.raises(ValueError, match="the batch has 1 channels but the model's data config normalises 3"):
        display_images(model, torch.zeros(2, 1, 96, 96))  # was broadcast to 3 channels


def test_solve_never_replaces_a_file_unless_asked(tmp_path, capsys):
    from crossvit.exercises.__main__ import main

    source = Path(__file__).resolve().parent.parent / "notebooks" / "01_patch_embedding.ipynb"
    mine = tmp_path / source.name
    mine.write_text("my own notes")
    assert main(["solve", str(source), "--out", str(tmp_path)]) == 1  # it was replaced, exit 0
    assert mine.read_text() == "my own notes"
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["solve", str(source), "--out", str(mine)]) == 1  # --out a file
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["solve", str(source), "--out", str(tmp_path), "--overwrite"]) == 0
    solved = nbformat.read(mine, as_version=4)
    assert not any("NotImplementedError" in cell.source for cell in solved.cells if cell.cell_type == "code")


def test_a_shortcut_on_a_decorated_function_watches_that_function_only(model, batch):
    # explain and relevance_by_branch share the decorator that leaves an open recording alone: a checker that
    # refuses explain must not refuse relevance_by_branch for sharing the decorator's wrapper code
    from crossvit.exercises.guard import Shortcut, _ShortcutWatch

    shortcut = Shortcut(crossvit.explain, "crossvit.explain")
    with _ShortcutWatch([shortcut]) as watch:
        relevance_by_branch(model, batch[0])
    assert watch.seen == []
    with _ShortcutWatch([shortcut]) as watch:
        crossvit.explain(model, batch[0], "joint_rollout")
    assert watch.seen == [shortcut]


def test_what_the_api_audit_listed_as_minor(model, batch):
    from crossvit import plotting
    from crossvit.explain import joint_rollout_pixels as pixels
    from crossvit.model import count_parameters

    images, labels = batch
    rows = {q: {p: torch.ones(2 if q == "small" else 3, model.num_patches(p)) for p in model.branch_names}
            for q in model.branch_names}
    with pytest.raises(ValueError, match=r"one batch size, got \[2, 3\]"):
        pixels(model, rows)  # was torch's size mismatch
    with pytest.raises(TypeError, match="sigma .* must be a number, got str"):
        metrics.gaussian_blur(images, "5")  # was a ValueError about "blur sigma"
    with pytest.raises(TypeError, match="count_parameters needs a torch.nn.Module"):
        count_parameters(None)
    maps = crossvit.explain(model, images, "joint_rollout")
    as_list = metrics.deletion_insertion(model, images, maps, labels.tolist(), steps=2)  # refused: "got list"
    as_tensor = metrics.deletion_insertion(model, images, maps, labels, steps=2)
    torch.testing.assert_close(as_list.deletion_auc, as_tensor.deletion_auc)
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    self_map = rec.self_attention("small")[0]
    with pytest.raises(ValueError, match=r"index must be <= 1, got 5"):
        plotting.plot_cls_attention(model, images[0], self_map, "small", index=5)  # was IndexError
    with pytest.raises(ValueError, match=r"head must be <= 3, got 9"):
        plotting.plot_cls_attention(model, images[0], self_map, "small", heads=[9])
    with pytest.raises(ValueError, match=r"titles must have one entry per image \(2\), got 1"):
        plotting.plot_images(images, titles=["only one"])
    with pytest.raises(ValueError, match="record must be the record train"):
        plotting.plot_training_curve({})  # was KeyError: 'loss_history'
    with pytest.raises(ValueError, match="signed must be None, True, False or a list of method names"):
        plotting.plot_method_grid(images, {"joint_rollout": maps}, signed="yes")  # was read as a list of letters


def test_an_explorer_and_a_nested_recording_leave_the_outer_recording_as_it_was(model, batch):
    from crossvit.widgets import attention_explorer

    images = batch[0]
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
        kept = {name: m.clone() for name, m in rec.sites.items()}
        attention_explorer(model, images.flip(-1))  # its own recorded forward replaced the caller's maps
        assert rec.num_forwards == 1
        assert all(torch.equal(m, kept[name]) for name, m in rec.sites.items())
        with crossvit.record_attention(model, sites="self"):
            model(images)
        # the inner recording gave the sites back as it found them: the outer one still reuses map memory
        sites = crossvit.attention_sites(model)
        assert all(site.module.reuse_memory for site in sites)  # the self-attention sites were switched off
    assert not any(site.module.reuse_memory for site in sites)
