"""The explorers' steering controls, driven directly in Python: any query token (a patch by grid row and column, or
by a click on the picture) in the attention explorer, and the target class of the rollout explorer's gradient
rollout. Each shown map is checked against the recorded maps sliced by hand, or a rollout computed separately."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit.explain import joint_rollout_pixels
from crossvit.widgets import RolloutExplorer, attention_explorer, rollout_explorer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def batch():
    return crossvit.data.make_shapes(3, seed=2**40 + 2**32 + 11)


@pytest.fixture(scope="module")
def recording(model, batch):
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(batch[0])
    return rec


@pytest.fixture()
def explorer(model, batch):
    images, _, masks = batch
    return attention_explorer(model, images, masks=masks)


def _picture_point(ax, x: float, y: float, figure) -> tuple[float, float]:
    """PNG pixel (from the top left) of data point (x, y) of ``ax``, from the axes' position in the figure and its
    data limits (matplotlib's layout), not from the explorer's own inverse mapping."""
    box = ax.get_position()  # figure fraction, after the layout ran
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()  # imshow: y runs downwards, so y0 > y1
    fx = box.x0 + (x - x0) / (x1 - x0) * box.width
    fy = box.y0 + (y - y0) / (y1 - y0) * box.height
    width, height = figure.bbox.width, figure.bbox.height
    return fx * width, (1.0 - fy) * height


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
    assert "small patch (3, 6)" in explorer.caption.value

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
    before = bytes(explorer.picture.value)
    c["kind"].value = "cross"
    assert explorer.last_row is None and explorer.last_map is None
    assert "no cross-attention row" in explorer.caption.value and "only the CLS tokens" in explorer.caption.value
    assert bytes(explorer.picture.value) != before and bytes(explorer.picture.value).startswith(PNG_SIGNATURE)
    c["query"].value = "CLS"  # back to the CLS: its cross-attention row over the other (large) grid
    row = recording.sites["blocks.0.small.cross.0"][0].mean(dim=0)[0]
    np.testing.assert_allclose(explorer.last_map, row[1:].reshape(5, 5).numpy(), rtol=1e-5, atol=1e-7)
    assert c["patch_row"].disabled


def test_clicking_a_patch_on_the_image_selects_it(explorer, recording, model):
    c = explorer.controls
    c["kind"].value = "cross"  # the picture shows the small CLS reading the large grid
    ax_image = explorer.figure.axes[0]
    # the centre of small patch (row 2, column 5) in input pixels (12 px patches; imshow centres pixel i on i) lies
    # in large cell (row 1, column 3) (19.2 px cells): in cross mode the click picks the cell the picture shows there,
    # and as a patch has no cross-attention row it shows that large patch's self-attention, saying so
    x, y = _picture_point(ax_image, 5 * 12 + 5.5, 2 * 12 + 5.5, explorer.figure)
    assert explorer.select_point(x, y) == (1, 3)
    assert (c["branch"].value, c["query"].value, c["kind"].value, c["patch_row"].value, c["patch_col"].value) == (
        "large", "patch", "self", 1, 3)
    assert "kind cross -> self" in explorer.caption.value and "branch small -> large" in explorer.caption.value
    expected = recording.sites["blocks.0.large.self.0"][0].mean(dim=0)[1 + 1 * 5 + 3, 1:].reshape(5, 5)
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)
    # in self mode a click picks a patch of the grid shown, the branch's own, and changes nothing else
    c["branch"].value = "small"
    x, y = _picture_point(explorer.figure.axes[0], 5 * 12 + 5.5, 2 * 12 + 5.5, explorer.figure)
    assert explorer.select_point(x, y) == (2, 5)
    assert (c["branch"].value, c["kind"].value) == ("small", "self") and "You picked" not in explorer.caption.value
    expected = recording.sites["blocks.0.small.self.0"][0].mean(dim=0)[1 + 2 * 8 + 5, 1:].reshape(8, 8)
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)

    # the large branch: its 5x5 grid spans the 96 px input in cells of 19.2 px; the click arrives as ipyevents
    # reports it (the picture's natural pixel coordinates)
    c["branch"].value = "large"
    x, y = _picture_point(explorer.figure.axes[0], 4 * 19.2 + 2.0, 1 * 19.2 + 17.0, explorer.figure)
    explorer._on_dom_event({"type": "click", "dataX": round(x), "dataY": round(y)})
    assert (c["patch_row"].value, c["patch_col"].value) == (1, 4)
    assert "large patch (1, 4)" in explorer.caption.value

    # a click on the grid panel picks that cell; a click in the margin changes nothing
    ax_grid = explorer.figure.axes[1]
    x, y = _picture_point(ax_grid, 0.0, 3.0, explorer.figure)  # cell (row 3, column 0) is centred on (0, 3)
    assert explorer.select_point(x, y) == (3, 0)
    assert explorer.select_point(2.0, 2.0) is None
    assert (c["patch_row"].value, c["patch_col"].value) == (3, 0)
    with pytest.raises(ValueError, match="5x5 grid"):
        explorer.select_patch(5, 0)


def test_explorer_clicks_go_through_ipyevents(explorer):
    ipyevents = pytest.importorskip("ipyevents")
    assert isinstance(explorer._clicks, ipyevents.Event)
    assert explorer._clicks.source is explorer.picture and explorer._clicks.watched_events == ["click"]


def test_rollout_explorer_target_class(model, batch):
    images, _, masks = batch
    explorer = rollout_explorer(model, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
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
        assert f"gradients of class {crossvit.data.CLASS_NAMES[target]}" in explorer.caption.value
    assert any(not np.allclose(maps[0], maps[k]) for k in range(1, model.num_classes))  # the class matters

    c["target"].value = RolloutExplorer.PREDICTED
    predicted = int(explorer.predictions[1])
    np.testing.assert_allclose(explorer.last_map, maps[predicted], rtol=1e-6)
    assert "gradients of the predicted class" in explorer.caption.value
    with pytest.raises(ValueError, match="target must be"):
        explorer.gradient_maps(model.num_classes)


def test_rollout_explorer_shows_the_coattention_relevancy_of_the_chosen_class(model, batch):
    images, _, masks = batch
    explorer = rollout_explorer(model, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
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


def test_rollout_explorer_verdict_is_the_majority_pointing_game(model, batch):
    images, _, masks = batch
    explorer = rollout_explorer(model, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
    for i in range(len(images)):
        explorer.controls["image"].value = i
        heat = torch.as_tensor(explorer.last_map, dtype=torch.float64)
        maximal = heat >= heat.max() * (1 - 1e-6)  # the maps are non-negative: relative tolerance as the metric's
        share = (maximal & masks[i]).sum().item() / maximal.sum().item()  # share of maximal pixels on the object
        assert f"{share:.0%} of the maximal pixels" in explorer.caption.value
        assert ("counts a hit" if share > 0.5 else "counts a miss") in explorer.caption.value


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
            assert ("leaves this map as it is" in explorer.caption.value) == same, (start, ratio)
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


def _pixels(png: bytes | memoryview) -> np.ndarray:
    png = bytes(png)
    assert png.startswith(PNG_SIGNATURE)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.mark.parametrize("kind", ["attention", "rollout"])
def test_a_picture_updated_in_place_is_the_picture_a_fresh_explorer_draws(bundled, kind):
    """The explorers draw their figure once and then change its artists. After a long random walk over every
    control (patch clicks included), the picture must be pixel for pixel the one a fresh explorer draws when set
    straight to the final state: nothing left over from an earlier state (an outline, a grid, a contour, a
    title, a colour scale)."""
    images, _, masks = crossvit.data.make_shapes(4, 2**40 + 2**33 + 309)
    build = attention_explorer if kind == "attention" else rollout_explorer
    walker = build(bundled, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
    c = walker.controls
    rng = np.random.default_rng(5)
    choices = {name: ([o[1] if isinstance(o, tuple) else o for o in w.options] if hasattr(w, "options")
                      else list(np.arange(w.min, w.max + 1e-9, getattr(w, "step", 1))))
               for name, w in c.items() if not name.startswith("patch_")}
    order = ["image", "method", "branch", "kind", "query", "block", "layer", "head", "patch_row", "patch_col",
             "head_fusion", "discard_ratio", "start_block", "target"]

    def check_against_a_fresh_explorer() -> None:
        fresh = build(bundled, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
        for name in order:
            if name in c and fresh.controls[name].value != c[name].value:
                fresh.controls[name].value = c[name].value
        assert walker.caption.value.endswith(fresh.caption.value)  # after what a click changed, if it did
        assert np.array_equal(_pixels(fresh.picture.value), _pixels(walker.picture.value)), walker.caption.value

    if kind == "attention":  # every order of (kind, query) changes, each state checked: the rare ones included
        for a, b in (("query", "kind"), ("kind", "query")):
            for values in ({"kind": "cross", "query": "patch"}, {"kind": "self", "query": "CLS"}):
                for name in (a, b):
                    c[name].value = values[name]
                    check_against_a_fresh_explorer()
    for step in range(60):
        if kind == "attention" and step % 4 == 3:  # a click on a patch of the grid the picture shows
            branch = walker.shown_grid()
            rows, cols = bundled.patch_grid(branch)
            walker.select_patch(int(rng.integers(rows)), int(rng.integers(cols)), branch=branch)
        else:
            name = list(choices)[int(rng.integers(len(choices)))]
            if not c[name].disabled:
                value = choices[name][int(rng.integers(len(choices[name])))]
                c[name].value = value.item() if isinstance(value, np.generic) else value
        if step % 3 == 2:
            check_against_a_fresh_explorer()
