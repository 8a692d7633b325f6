"""The explorers' steering controls, driven directly in Python: any query token (a patch by grid row and column, or
by a click on the picture) in the attention explorer, and the target class of the rollout explorer's gradient
rollout. Each shown map is checked against the recorded maps sliced by hand, or a rollout computed separately.
The front end computes the same views in the browser (tests/test_explorer_js.py holds it equal to these, a click
included); here also: what the explorers send (the saved state of a notebook page stays under 5 MB), standalone
HTML files, bad input, and the question widget."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from explorer_node import needs_node, run_js

import crossvit
from crossvit.exercises.questions import QUESTIONS, answer_lines, ask, feedback
from crossvit.explain import REGISTRY, joint_rollout_pixels
from crossvit.widgets import RolloutExplorer, attention_explorer, rollout_explorer
from crossvit.widgets.html import widget_state
from crossvit.widgets.packet import decode_array


@pytest.fixture(scope="module")
def batch():
    return crossvit.data.make_shapes(3, seed=2**40 + 2**32 + 11)


@pytest.fixture(scope="module")
def recording(model, batch):
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(batch[0])
    return rec


@pytest.fixture(scope="module")
def built_rollout(model, batch):
    images, _, masks = batch
    explorer = rollout_explorer(model, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
    return explorer, explorer.state()


@pytest.fixture()
def rollout(built_rollout):
    """The rollout explorer of ``batch`` (built once: its class-specific maps take backward passes), back in the
    state it was built in."""
    explorer, initial = built_rollout
    with explorer.hold_sync():
        for name, value in initial.items():
            setattr(explorer, name, value)
    return explorer


@pytest.fixture()
def explorer(model, batch):
    images, _, masks = batch
    return attention_explorer(model, images, masks=masks)


def test_patch_query_shows_its_self_attention_row(explorer, recording):
    c = explorer.controls
    assert c["patch_row"].disabled and c["patch_col"].disabled  # CLS query first
    c["query"].value = "patch"
    assert not c["patch_row"].disabled
    c["block"].value, c["layer"].value, c["head"].value, c["image"].value = 1, 1, 2, 2
    c["patch_row"].value, c["patch_col"].value = 3, 6
    assert explorer.query_token() == 1 + 3 * 8 + 6
    name = "blocks.1.small.self.1"
    assert explorer.last_site == name
    expected = recording.sites[name][2, 2, 1 + 3 * 8 + 6]  # (1 + 64,): that patch's row, head 2, image 2
    np.testing.assert_allclose(explorer.last_row, expected.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(explorer.last_map, expected[1:].reshape(8, 8).numpy(), rtol=1e-5, atol=1e-7)
    assert "small patch (3, 6)" in explorer.caption

    # the large branch has a 5x5 grid: the sliders shrink and the patch stays inside it
    c["branch"].value = "large"
    assert (c["patch_row"].max, c["patch_col"].max) == (4, 4)
    assert (c["patch_row"].value, c["patch_col"].value) == (3, 4)
    c["head"].value = "max"
    expected = recording.sites["blocks.1.large.self.1"][2, :, 1 + 3 * 5 + 4].amax(dim=0)
    np.testing.assert_allclose(explorer.last_map, expected[1:].reshape(5, 5).numpy(), rtol=1e-5, atol=1e-7)


def test_patch_query_has_no_cross_attention_row(explorer, recording):
    c = explorer.controls
    c["query"].value = "patch"
    c["kind"].value = "cross"
    assert explorer.last_row is None and explorer.last_map is None
    assert "no cross-attention row" in explorer.caption and "only the CLS tokens" in explorer.caption
    view = explorer.view()  # the picture: the query outlined on its own grid, a note in place of the grid panel
    assert view["note"].startswith("A patch token has no cross-attention row") and view["vmax"] is None
    assert view["query_patch"] == ["small", 4, 4] and view["lines"] == "small" and not view["query_cell"]
    c["query"].value = "CLS"  # back to the CLS: its cross-attention row over the other (large) grid
    row = recording.sites["blocks.0.small.cross.0"][0].mean(dim=0)[0]
    np.testing.assert_allclose(explorer.last_map, row[1:].reshape(5, 5).numpy(), rtol=1e-5, atol=1e-7)
    assert c["patch_row"].disabled


def test_selecting_a_patch_makes_it_the_query(explorer, recording, model):
    """What a click does once the front end has found the patch under it (select_patch): in cross mode the patch
    of the grid the picture shows becomes the query, with its self-attention (a patch has no cross-attention row),
    the caption saying what changed; in self mode nothing else changes."""
    c = explorer.controls
    c["kind"].value = "cross"  # the picture shows the small CLS reading the large grid: a click picks a large cell
    assert explorer.shown_grid() == "large"
    explorer.select_patch(1, 3, branch=explorer.shown_grid())
    assert (c["branch"].value, c["query"].value, c["kind"].value, c["patch_row"].value, c["patch_col"].value) == (
        "large", "patch", "self", 1, 3)
    assert "kind cross -> self" in explorer.caption and "branch small -> large" in explorer.caption
    expected = recording.sites["blocks.0.large.self.0"][0].mean(dim=0)[1 + 1 * 5 + 3, 1:].reshape(5, 5)
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)
    # in self mode a click picks a patch of the grid shown, the branch's own, and changes nothing else
    c["branch"].value = "small"
    assert "You picked" not in explorer.caption  # any other change clears the note
    explorer.select_patch(2, 5, branch=explorer.shown_grid())
    assert (c["branch"].value, c["kind"].value) == ("small", "self") and "You picked" not in explorer.caption
    expected = recording.sites["blocks.0.small.self.0"][0].mean(dim=0)[1 + 2 * 8 + 5, 1:].reshape(8, 8)
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert "small patch (2, 5)" in explorer.caption
    with pytest.raises(ValueError, match="8x8 grid"):
        explorer.select_patch(8, 0)
    with pytest.raises(ValueError, match="branch must be one of"):
        explorer.select_patch(0, 0, branch="medium")


@needs_node
def test_a_click_on_the_picture_selects_the_patch_under_it(model, batch):
    """The front end maps a click to a patch (its pointToPatch, run under node): a click anywhere inside a patch's
    cell of the image panel, or inside its cell of the grid panel, selects that patch of the grid the picture shows;
    the positions come from the patch geometry written out here (12 px cells of the small grid, 19.2 px cells of
    the large grid's 80 px resize over the 96 px input)."""
    images, _, masks = batch
    explorer = attention_explorer(model, images, masks=masks)
    steps, expected = [], []
    cell = {"small": 96 / 8, "large": 96 / 5}
    for kind, query, branch in (("self", "CLS", "small"), ("self", "patch", "large"), ("cross", "CLS", "small"),
                                ("cross", "patch", "small")):
        explorer.controls["branch"].value = branch
        explorer.controls["kind"].value = kind
        explorer.controls["query"].value = query
        shown = explorer.shown_grid()
        rows, cols = model.patch_grid(shown)
        for row, col in ((0, 0), (2, 3), (rows - 1, cols - 1), (rows // 2, 0)):
            for fx, fy in ((0.5, 0.5), (0.05, 0.95), (0.95, 0.05)):  # centre and near two corners of the cell
                x, y = (col + fx) * cell[shown], (row + fy) * cell[shown]  # input pixels
                steps.append({"op": "point", "state": explorer.state(), "where": "image", "u": x / 96, "v": y / 96})
                expected.append([shown, row, col])
                steps.append({"op": "point", "state": explorer.state(), "where": "grid", "u": (col + fx) / cols,
                              "v": (row + fy) / rows})
                expected.append(None if (kind, query) == ("cross", "patch") else [shown, row, col])
        steps.append({"op": "point", "state": explorer.state(), "where": "grid", "u": 1.0, "v": 0.5})
        expected.append(None)  # the right edge: outside every cell
    assert run_js(explorer.packet(), steps) == expected


def test_rollout_explorer_target_class(model, batch, rollout):
    images, _, masks = batch
    explorer = rollout
    c = explorer.controls
    assert c["target"].disabled  # only gradient rollout is class-specific
    c["method"].value = "gradient_rollout"
    assert not c["target"].disabled and c["target"].value == RolloutExplorer.PREDICTED
    assert [v for _, v in c["target"].options] == [RolloutExplorer.PREDICTED, *range(model.num_classes)]

    def grad_rollout_of(target: int, start_block: int = 0) -> torch.Tensor:
        # Chefer et al.'s rollout written out here: back-propagate the target's score to the recorded maps
        with crossvit.record_attention(model, grads=True) as rec, torch.enable_grad():
            score = model(images)[:, target].sum()
            score.backward(inputs=list(rec.sites.values()))
        rollout = crossvit.gradient_rollout(rec, start_block=start_block)
        return joint_rollout_pixels(model, rollout)  # both CLS tokens, mass per pixel

    last = model.arch.num_blocks - 1
    # each rollout starts where explain starts it: the gradient rollout at block 0, the others at the last block
    assert c["start_block"].value == crossvit.METHOD_OPTIONS["gradient_rollout"]["start_block"] == 0
    c["method"].value = "joint_rollout"
    assert c["start_block"].value == last
    c["method"].value = "gradient_rollout"
    assert c["start_block"].value == 0
    c["start_block"].value = last  # a start the reader chose stays when the method changes
    c["method"].value = "joint_rollout"
    c["method"].value = "gradient_rollout"
    assert c["start_block"].value == last
    c["target"].value = 0
    np.testing.assert_allclose(explorer.last_map, grad_rollout_of(0, last)[0].detach().numpy(), rtol=1e-4,
                               atol=1e-8)
    c["start_block"].value = 0
    maps = {}
    for target in range(model.num_classes):
        c["target"].value = target
        c["image"].value = 1
        maps[target] = explorer.last_map
        np.testing.assert_allclose(explorer.last_map, grad_rollout_of(target)[1].detach().numpy(), rtol=1e-4,
                                   atol=1e-8)
        assert f"gradients of class {crossvit.data.CLASS_NAMES[target]}" in explorer.caption
    assert any(not np.allclose(maps[0], maps[k]) for k in range(1, model.num_classes))  # the class matters

    c["target"].value = RolloutExplorer.PREDICTED
    predicted = int(explorer.predictions[1])
    np.testing.assert_allclose(explorer.last_map, maps[predicted], rtol=1e-6)
    assert "gradients of the predicted class" in explorer.caption
    with pytest.raises(ValueError, match="target must be"):
        explorer.gradient_maps(model.num_classes)


def test_rollout_explorer_shows_the_coattention_relevancy_of_the_chosen_class(model, batch, rollout):
    images, _, masks = batch
    explorer = rollout
    c = explorer.controls
    c["method"].value = "coattention_relevancy"
    assert not c["target"].disabled and c["head_fusion"].disabled
    for target in (1, 2):
        c["target"].value = target
        c["image"].value = 2
        expected = crossvit.explain(model, images, "coattention_relevancy", target=torch.full((len(images),), target))
        np.testing.assert_allclose(explorer.last_map, expected[2].numpy(), rtol=1e-5, atol=1e-9)
        # not the gradient rollout's map: each class-specific method has its own results
        assert not np.allclose(explorer.last_map, explorer.gradient_maps(target, c["start_block"].value)[2].numpy())
    with pytest.raises(ValueError, match="class-specific rollout"):
        explorer.class_maps("joint_rollout", 0)


def test_rollout_explorer_verdict_is_the_majority_pointing_game(model, batch, rollout):
    images, _, masks = batch
    explorer = rollout
    for i in range(len(images)):
        explorer.controls["image"].value = i
        heat = torch.as_tensor(explorer.last_map, dtype=torch.float64)
        maximal = heat >= heat.max() * (1 - 1e-6)  # the maps are non-negative: relative tolerance as the metric's
        share = (maximal & masks[i]).sum().item() / maximal.sum().item()  # share of maximal pixels on the object
        assert f"{share:.0%} of the maximal pixels" in explorer.caption
        assert ("counts a hit" if share > 0.5 else "counts a miss") in explorer.caption


def test_rollout_explorer_controls_say_when_they_do_nothing(bundled):
    """Disabled controls carry a one-line reason; a discard ratio that leaves the map as it is is called out in
    the caption exactly when the rollout without discarding gives the same map; the title names the target class."""
    # images on which some discard ratio leaves the map as it is and another does not (see the last assertion)
    images, _, masks = crossvit.data.make_shapes(3, 2**40 + 2**33 + 1307)
    explorer = rollout_explorer(bundled, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
    c = explorer.controls
    c["method"].value = "joint_rollout"
    assert c["target"].disabled and "class-specific" in c["target"].tooltip
    assert c["discard_ratio"].disabled and "per-branch" in c["discard_ratio"].tooltip
    c["method"].value = "small_rollout"
    assert not c["discard_ratio"].disabled and c["discard_ratio"].tooltip == ""
    seen = set()
    for start in (0, bundled.arch.num_blocks - 1):
        c["start_block"].value = start
        for ratio in (0.05, 0.5, 0.95):
            c["discard_ratio"].value = ratio
            maps = [m for block, m in explorer.self_maps["small"] if block >= start]
            with_ratio = crossvit.rollout.rollout_from_maps([m[:1] for m in maps], "mean", ratio)
            without = crossvit.rollout.rollout_from_maps([m[:1] for m in maps], "mean", 0.0)
            same = bool(torch.allclose(with_ratio, without, rtol=1e-4, atol=1e-7))
            seen.add(same)
            assert ("leaves this map as it is" in explorer.caption) == same, (start, ratio)
    assert seen == {True, False}  # both cases occur on this model, so both branches of the rule are exercised
    c["method"].value = "gradient_rollout"
    c["target"].value = 2
    assert c["target"].tooltip == ""
    fig_title = f"for class {crossvit.data.CLASS_NAMES[2]}"
    assert fig_title in explorer.last_title


def test_attention_explorer_layer_slider_is_disabled_where_there_is_one_layer(bundled):
    images, _, _ = crossvit.data.make_shapes(2, 2**40 + 2**33 + 308)
    explorer = attention_explorer(bundled, images)
    c = explorer.controls
    c["kind"].value = "cross"
    assert bundled.arch.fusion_layers == 1 and c["layer"].disabled and "single layer" in c["layer"].tooltip
    c["kind"].value = "self"
    assert not c["layer"].disabled and c["layer"].max == bundled.arch.branch(c["branch"].value).depth[0] - 1




# -- what the explorers send ---------------------------------------------------------------------------------------


def test_the_packet_holds_the_recorded_maps(model, batch, recording):
    """The front end gets every recorded map once (float16: within float16's rounding of the float32 map), the
    images as shown, the masks, and which patch covers each pixel as patch_map_to_pixels spreads them."""
    images, _, masks = batch
    explorer = attention_explorer(model, images, masks=masks)
    packet = explorer.packet()
    assert [s["name"] for s in packet["sites"]] == list(recording.sites)  # forward order
    for site in packet["sites"]:
        sent, recorded = decode_array(site["map"]), recording.sites[site["name"]].numpy()
        assert sent.dtype == np.float16 and sent.shape == recorded.shape
        np.testing.assert_allclose(sent.astype(np.float32), recorded, rtol=2**-11, atol=2**-25)
    np.testing.assert_array_equal(decode_array(packet["masks"]), masks.numpy())
    shown = decode_array(packet["images"])  # (B, H, W, 3) uint8
    np.testing.assert_allclose(shown / 255, images.permute(0, 2, 3, 1).clamp(0, 1).numpy(), atol=0.5 / 255 + 1e-6)
    for branch in model.branch_names:
        cells = decode_array(packet["geometry"][branch]["cells"])
        rows, cols = model.patch_grid(branch)
        patch_ids = torch.arange(rows * cols, dtype=torch.float32)[None]
        expected = crossvit.patch_map_to_pixels(model, branch, patch_ids)[0].numpy()
        np.testing.assert_array_equal(cells, expected)
    assert explorer.memory_bytes > sum(m.untyped_storage().nbytes() for m in explorer.maps.values())


def test_explorers_name_classes_as_the_model_does(model, bundled, batch):
    images = batch[0][:2]
    for build in (attention_explorer, rollout_explorer):
        named = build(bundled, images, classes=[0]) if build is rollout_explorer else build(bundled, images)
        assert named.packet()["class_names"] == list(crossvit.data.CLASS_NAMES)  # the checkpoint's names
        given = build(model, images, class_names=[f"mine {k}" for k in range(model.num_classes)])
        assert given.packet()["class_names"] == [f"mine {k}" for k in range(model.num_classes)]
    torch.manual_seed(0)
    bare = crossvit.CrossViT(model.config).eval()  # built from a config alone: no names, so numbered
    unnamed = attention_explorer(bare, images)
    assert crossvit.class_names(bare)[0] == "class 0" and unnamed.packet()["class_names"] == [f"class {k}" for k in range(model.num_classes)]


def test_explorers_call_images_by_the_names_given(model, batch):
    images = batch[0][:2]
    names = ["cat.jpg", "<b>dog</b>.png"]
    attention = attention_explorer(model, images, image_names=names)
    attention.controls["image"].value = 1
    assert "<b>image 1: &lt;b&gt;dog&lt;/b&gt;.png</b>" in attention.caption  # escaped: a file name is not HTML
    rollout = rollout_explorer(model, images, image_names=names, classes=[0])
    assert "<b>image 0: cat.jpg</b>" in rollout.caption and rollout.packet()["image_names"] == names
    assert "<b>image 0</b>" in attention_explorer(model, images).caption  # no names: numbered
    with pytest.raises(ValueError, match="image_names must name each of the 2 images"):
        attention_explorer(model, images, image_names=["only one"])


@pytest.mark.slow  # two explorers of 8 images, the rollout explorer's class maps included
def test_a_notebook_page_saves_less_than_five_megabytes_of_widget_state(bundled):
    """Notebooks 03 and 04 each show one explorer of 8 images and a question: the widget state a page saves (the
    packet's arrays as base64 in JSON, the front-end code included) stays under 5 MB."""
    def saved(widget) -> int:  # its state as a page saves it: base64 buffers in JSON, with its code and style
        return len(json.dumps(widget_state(widget))) + len(str(widget._esm)) + len(str(widget._css))

    images, _, masks = crossvit.data.make_shapes(8, crossvit.data.UNUSED_SEED_BASE)
    for build in (attention_explorer, rollout_explorer):
        explorer = build(bundled, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
        size = saved(explorer) + saved(ask("3.a"))
        print(f"{build.__name__}: {size / 2**20:.2f} MB of widget state")
        assert size <= 5 * 2**20, (build.__name__, size)


def test_save_html_writes_one_self_contained_file_and_never_replaces_one(tmp_path, model, batch):
    images, _, masks = batch
    explorer = attention_explorer(model, images, masks=masks)
    path = tmp_path / "explorer.html"
    assert explorer.save_html(path) == path
    text = path.read_text(encoding="utf-8")
    assert re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, flags=re.IGNORECASE) is None  # no address
    assert "default-src 'none'" in text and "<script src" not in text  # the page may load nothing
    assert "export default { render }" in text.replace("\\n", "\n")  # the front end is inline
    assert "blocks.0.small.self.0" in text  # and the maps
    path.write_text("a reader's own notes")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        explorer.save_html(path)
    assert path.read_text() == "a reader's own notes"
    explorer.save_html(path, overwrite=True)
    assert path.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explorer.html"]  # no temporary file left behind
    for bad, error in ((tmp_path / "explorer.ipynb", ValueError), (tmp_path / "missing" / "x.html", FileNotFoundError),
                       (tmp_path, ValueError), (42, TypeError)):
        with pytest.raises(error):
            explorer.save_html(bad)


def test_explorers_refuse_bad_input_early(model, batch):
    images, _, masks = batch
    with pytest.raises(TypeError, match="CrossViT"):
        attention_explorer(torch.nn.Linear(2, 2), images)
    with pytest.raises(TypeError, match=r"\(B, 3, H, W\)"):
        attention_explorer(model, images[0])
    with pytest.raises(ValueError, match="masks must be"):
        rollout_explorer(model, images, masks=masks[:2])
    with pytest.raises(ValueError, match="class_names must name every one"):
        attention_explorer(model, images, class_names=["a", "b"])
    with pytest.raises(ValueError, match="index must be <= 2"):
        attention_explorer(model, images, index=3)
    with pytest.raises(ValueError, match="classes must be <= 3"):
        rollout_explorer(model, images, classes=[4])
    explorer = attention_explorer(model, images)
    c = explorer.controls
    for name, value in (("block", 3), ("branch", "medium"), ("head", 4), ("patch_row", 8), ("image", True),
                        ("kind", "both"), ("layer", -1)):
        with pytest.raises(ValueError, match=name):
            c[name].value = value
    with pytest.raises(ValueError, match="no control 'picture'"):
        explorer.set_control("picture", 0)
    assert explorer.state() == attention_explorer(model, images).state()  # nothing changed on the way


def test_rollout_explorer_computes_a_missing_class_map_on_demand_and_keeps_a_few(model, batch):
    """With a kernel, a class-specific map not computed at build time is computed when asked for and sent to the
    front end (the `_extra` trait); at most EXTRA_CACHE of them are kept."""
    images, _, _ = batch
    explorer = rollout_explorer(model, images, classes=[])
    specific = [REGISTRY[m] for m in explorer.methods if REGISTRY[m].class_specific]
    assert {"gradient_rollout", "coattention_relevancy", "attnlrp"} <= {r.name for r in specific}
    # each image's predicted class, at every start block of a method that has one ("-" where it has none)
    assert set(explorer.stored) == {f"{r.name}|predicted|{s}" for r in specific
                                    for s in (range(model.arch.num_blocks) if "start_block" in r.defaults else "-")}
    explorer.controls["method"].value = "gradient_rollout"
    explorer.controls["target"].value = 2
    key = f"gradient_rollout|2|{explorer.start_block}"
    assert set(explorer._extra) == {key}
    expected = crossvit.explain(model, images, "gradient_rollout", target=2, start_block=explorer.start_block)
    np.testing.assert_allclose(decode_array(explorer._extra[key]), expected.numpy(), rtol=1e-5, atol=1e-9)
    for start in range(model.arch.num_blocks):
        explorer.controls["start_block"].value = start
        for target in range(model.num_classes):
            explorer.controls["target"].value = target
    assert len(explorer._extra) == len(explorer._extras) == RolloutExplorer.EXTRA_CACHE


def test_the_method_menu_comes_from_the_registry(model, batch):
    """A rollout registered later appears in the menu: a class-specific one through maps computed in Python, a
    class-agnostic one the front end has no definition of through maps computed in Python too."""
    from crossvit.explain import REGISTRY, register_method

    images, _, _ = batch

    @register_method("test_flipped_rollout", summary="a test rollout", class_specific=True, needs_gradients=True)
    def flipped(model, images, target, *, start_block: int = 0):  # noqa: ANN001
        return crossvit.explain(model, images, "gradient_rollout", target=target, start_block=start_block).flip(-1)

    @register_method("test_plain_rollout", summary="a test class-agnostic rollout")
    def plain(model, images, target, *, start_block: int = -1):  # noqa: ANN001
        return crossvit.explain(model, images, "joint_rollout", start_block=start_block) ** 2

    try:
        explorer = rollout_explorer(model, images, classes=[1])
        assert explorer.methods[-2:] == ("test_flipped_rollout", "test_plain_rollout")
        assert [m for m in explorer.methods if REGISTRY[m].needs_captum] == []
        for method, expected in (("test_flipped_rollout", crossvit.explain(model, images, "gradient_rollout",
                                                                            target=1, start_block=0).flip(-1)),
                                 ("test_plain_rollout", crossvit.explain(model, images, "joint_rollout",
                                                                         start_block=-1) ** 2)):
            explorer.controls["method"].value = method
            if method == "test_flipped_rollout":
                explorer.controls["target"].value = 1
            np.testing.assert_allclose(explorer.last_map, expected[explorer.image].numpy(), rtol=1e-5, atol=1e-9)
            assert any(key.startswith(method) for key in explorer.packet()["maps"])  # sent to the front end
    finally:
        del REGISTRY["test_flipped_rollout"], REGISTRY["test_plain_rollout"]


# -- the question widget -------------------------------------------------------------------------------------------


def test_a_question_widget_answers_from_what_it_holds():
    q = next(q for q in QUESTIONS if q.kind == "choice")
    widget = ask(q.id)
    assert widget.options == list(q.options) and widget.messages == answer_lines(q)
    assert widget.check() == "Pick an option first."
    widget.choice = q.correct
    assert widget.check() == feedback(q.id, q.correct) and q.why in widget.answer
    widget.choice = (q.correct + 1) % len(q.options)
    assert widget.check().startswith("\u2717")
    with pytest.raises(Exception, match="choice must be an option index"):
        widget.choice = len(q.options)
    with pytest.raises(ValueError, match="in writing"):
        ask(next(q for q in QUESTIONS if q.kind == "written").id)


def test_each_wrong_option_of_a_question_widget_gives_its_own_reason():
    for q in (q for q in QUESTIONS if q.kind == "choice"):
        lines = answer_lines(q)
        assert len(lines) == len(q.options) and lines[q.correct] == f"\u2713 Right. {q.why}"
        for k, line in enumerate(lines):
            if k != q.correct:
                assert line.startswith("\u2717") and q.options[k] in line and q.reasons[k] in line, (q.id, k)
                assert q.why not in line, (q.id, k)


@needs_node
def test_the_question_front_end_shows_the_line_python_would(tmp_path):
    import shutil
    import subprocess

    from crossvit.widgets.question import QuestionWidget

    script = tmp_path / "q.mjs"
    module = QuestionWidget._esm
    cases = []
    for q in (q for q in QUESTIONS if q.kind == "choice"):
        widget = ask(q.id)
        for choice in [None, *range(len(q.options))]:
            widget.choice = choice
            cases.append({"messages": widget.messages, "choice": choice, "expected": widget.check()})
    script.write_text(
        f"import {{ answerFor }} from {json.dumps(str(tmp_path / 'question.mjs'))};\n"
        f"const cases = {json.dumps(cases)};\n"
        "process.stdout.write(JSON.stringify(cases.map((c) => answerFor(c.messages, c.choice) === c.expected)));\n")
    (tmp_path / "question.mjs").write_text(str(module))
    done = subprocess.run([shutil.which("node"), str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True] * len(cases)


@pytest.mark.slow  # builds a wheel
def test_the_front_ends_ship_inside_the_wheel(tmp_path):
    """The explorers' and questions' JavaScript and style are package data: a wheel carries them, so an installed
    crossvit needs no CDN and no checkout."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "source"  # a copy: building leaves build/ and *.egg-info beside the sources
    shutil.copytree(root / "crossvit", source / "crossvit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("crossvit_lab-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    shipped = {f"crossvit/widgets/{p.name}" for p in (root / "crossvit" / "widgets").glob("*.[jc]s*")}
    assert {"crossvit/widgets/explorer.js", "crossvit/widgets/question.js"} <= shipped <= names
