"""The explorers' JavaScript computes what the Python defines.

The front end (crossvit/widgets/explorer.js) recomputes in the browser what the library defines: head fusion, the
per-branch rollout with its discard ratio, the joint rollout through the fusion layers, patch maps spread over
pixels, the pointing game's maximal pixels; and it applies the explorers' rules (what each control offers, how the
others follow a change, what a click selects, the captions). Here node runs that very module on the packets the
explorers send, with the maps recorded in float32, and each result is held equal to ``crossvit.rollout`` and to the
Python explorers (which compute every view with the library's functions). A last test measures what sending the
maps as float16 changes.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from explorer_node import needs_node, run_js

import crossvit
from crossvit.rollout import attention_rollout, joint_rollout
from crossvit.widgets import attention_explorer, rollout_explorer

pytestmark = needs_node

FUSIONS = ("mean", "max", "min")
RATIOS = (0.0, 0.05, 0.5, 0.9)


@pytest.fixture(scope="module")
def seed_model() -> crossvit.CrossViT:
    """A random seed-flavour model with two fusion layers per block and 4x4 / 3x3 grids."""
    torch.manual_seed(1)
    return crossvit.create_model("seed", image_size=48, num_classes=3, sm_dim=16, lg_dim=32, sm_enc_dim_head=8,
                                 lg_enc_dim_head=8, cross_attn_dim_head=8, depth=2, cross_attn_depth=2).eval()


def _recorded(model, images):
    """A recording of ``images`` and the float32 packet of an attention explorer built on the same maps."""
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    explorer = attention_explorer(model, images)
    for name, m in rec.sites.items():  # the explorer's own forward recorded the very same maps
        assert torch.equal(explorer.maps[name], m)
    return rec, explorer.packet("float32")


@pytest.fixture(scope="module", params=["bundled", "seed"])
def recorded(request, seed_model):
    if request.param == "bundled":
        model = crossvit.load_pretrained()
        images = crossvit.data.make_shapes(3, crossvit.data.UNUSED_SEED_BASE + 4242)[0]
    else:
        model = seed_model
        images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    rec, packet = _recorded(model, images)
    return model, rec, packet


def test_per_branch_rollout_in_javascript_equals_the_definition(recorded):
    """Every branch, head fusion, discard ratio, start block and image: the JavaScript rollout row (CLS column
    included) equals crossvit.rollout.attention_rollout on the same maps."""
    model, rec, packet = recorded
    cases = [(b, f, r, s) for b in model.branch_names for f in FUSIONS for r in RATIOS
             for s in range(model.arch.num_blocks)]
    b_images = next(iter(rec.sites.values())).shape[0]
    steps = [{"op": "branch_rollout", "branch": b, "fusion": f, "ratio": r, "start": s, "image": i}
             for b, f, r, s in cases for i in range(b_images)]
    rows = iter(run_js(packet, steps))
    for b, f, r, s in cases:
        expected = attention_rollout(rec, b, head_fusion=f, discard_ratio=r, start_block=s)  # (B, N_patches)
        for i in range(b_images):
            row = np.asarray(next(rows))
            assert row.sum() == pytest.approx(1.0, abs=1e-9), (b, f, r, s, i)  # R's rows sum to 1
            np.testing.assert_allclose(row[1:], expected[i].numpy(), rtol=2e-5, atol=1e-8,
                                       err_msg=f"{b} rollout, {f}, discard {r}, from block {s}, image {i}")


@pytest.mark.parametrize("fusion", FUSIONS)
def test_joint_rollout_in_javascript_equals_the_definition(recorded, fusion):
    """Every start block and image: the JavaScript joint rollout's CLS rows over both branches (CLS columns
    included) equal crossvit.rollout.joint_rollout on the same maps, and sum to 1 (docs/rollout.md)."""
    model, rec, packet = recorded
    b_images = next(iter(rec.sites.values())).shape[0]
    starts = range(model.arch.num_blocks)
    steps = [{"op": "joint_rollout", "fusion": fusion, "start": s, "image": i} for s in starts
             for i in range(b_images)]
    results = iter(run_js(packet, steps))
    mismatches = []
    for s in starts:
        expected = joint_rollout(rec, fusion, include_cls=True, start_block=s)
        for i in range(b_images):
            rows = next(results)
            for q in model.branch_names:
                total = sum(np.sum(rows[q][p]) for p in model.branch_names)
                assert total == pytest.approx(1.0, abs=1e-9), (fusion, s, i, q)
                for p in model.branch_names:
                    if not np.allclose(rows[q][p], expected[q][p][i].numpy(), rtol=2e-5, atol=1e-8):
                        mismatches.append((s, i, q, p))
    assert not mismatches, mismatches[:5]


# -- the explorers' rules and views -------------------------------------------------------------------------------

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def assert_same_text(js: str, py: str, context: object = None) -> None:
    """Equal texts, except that a printed number may differ by one unit of its last digit (float32 in torch,
    float64 in JavaScript: a value on a rounding edge may print either way)."""
    assert NUMBER.split(js) == NUMBER.split(py), (context, js, py)
    for a, b in zip(NUMBER.findall(js), NUMBER.findall(py)):
        digits = len(b.split(".")[1]) if "." in b else 0
        assert abs(float(a) - float(b)) <= 1.01 * 10.0 ** -digits, (context, js, py)


def _choices(spec: dict) -> list:
    if spec["type"] == "slider":
        return [float(v) if isinstance(spec["step"], float) else int(v)
                for v in np.round(np.arange(spec["min"], spec["max"] + 1e-9, spec["step"]), 2)]
    return [v for _, v in spec["options"]]


def _walk(explorer, kind: str, steps: int, seed: int, click=None) -> tuple[list, list]:
    """A random walk over every enabled control (and, for the attention explorer, clicks), applied in Python. For
    each step: the node steps (the same action on the previous state; the specs and view of the new state) and
    what Python says."""
    rng = np.random.default_rng(seed)
    js_steps, expected = [], []
    for step in range(steps):
        before = explorer.state()
        if click is not None and step % 5 == 4:
            branch, row, col = click(rng)
            explorer.select_patch(row, col, branch=branch)
            js_steps.append({"op": "select", "state": before, "row": row, "col": col, "branch": branch})
        else:
            specs = explorer.control_specs()
            name = [n for n in explorer.CONTROLS if not specs[n]["disabled"]][int(rng.integers(
                sum(not specs[n]["disabled"] for n in explorer.CONTROLS)))]
            options = _choices(specs[name])
            value = options[int(rng.integers(len(options)))]
            explorer.controls[name].value = value
            js_steps.append({"op": "change", "kind": kind, "state": before, "name": name, "value": value})
        after = explorer.state()
        js_steps += [{"op": "specs", "kind": kind, "state": after}, {"op": "view", "kind": kind, "state": after}]
        expected.append((after, explorer.control_specs(), explorer.view()))
    return js_steps, expected


def _specs_as_json(specs: dict) -> dict:
    return {name: {k: ([list(o) for o in v] if k == "options" else v) for k, v in spec.items()}
            for name, spec in specs.items()}


def test_attention_explorer_rules_and_views_in_javascript_equal_python(bundled):
    images, _, masks = crossvit.data.make_shapes(3, crossvit.data.UNUSED_SEED_BASE + 4243)
    explorer = attention_explorer(bundled, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
    packet = explorer.packet("float32")

    def click(rng):
        branch = explorer.shown_grid()
        rows, cols = bundled.patch_grid(branch)
        return branch, int(rng.integers(rows)), int(rng.integers(cols))

    js_steps, expected = _walk(explorer, "attention", 150, seed=7, click=click)
    results = run_js(packet, js_steps)
    kinds = set()
    for k, (state, specs, view) in enumerate(expected):
        js_state, js_specs, js_view = results[3 * k: 3 * k + 3]
        assert js_state == state, (k, js_state, state)
        assert js_specs == _specs_as_json(specs), k
        assert_same_text(js_view["caption"], view["caption"], k)
        for key in ("site", "grid_branch", "lines", "query_patch", "query_cell", "note", "title", "image_title",
                    "panel_title"):
            assert js_view[key] == view[key], (k, key)
        if view["row"] is None:
            assert js_view["row"] is None
        else:
            np.testing.assert_allclose(js_view["row"], view["row"], rtol=1e-5, atol=1e-7)
            assert js_view["vmax"] == pytest.approx(view["vmax"], rel=1e-5)
        kinds.add((state["kind"], state["query"], bool(state["notice"])))
    assert {("self", "CLS", False), ("cross", "CLS", False), ("self", "patch", False), ("cross", "patch", False),
            ("self", "patch", True)} <= kinds  # every kind of state was visited, a click's notice too


def test_rollout_explorer_rules_and_views_in_javascript_equal_python(bundled):
    images, _, masks = crossvit.data.make_shapes(2, crossvit.data.UNUSED_SEED_BASE + 4244)
    explorer = rollout_explorer(bundled, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
    packet = explorer.packet("float32")
    js_steps, expected = _walk(explorer, "rollout", 90, seed=11)
    results = run_js(packet, js_steps)
    methods = set()
    for k, (state, specs, view) in enumerate(expected):
        js_state, js_specs, js_view = results[3 * k: 3 * k + 3]
        assert js_state == state, (k, js_state, state)
        assert js_specs == _specs_as_json(specs), k
        assert not js_view["missing"]
        heat = np.asarray(js_view["map"]).reshape(view["map"].shape)
        np.testing.assert_allclose(heat, view["map"], rtol=1e-4, atol=1e-9 * np.abs(view["map"]).max())
        assert js_view["title"] == view["title"] and js_view["lines"] == view["lines"], k
        assert js_view["signed"] == view["signed"]
        if view["signed"]:
            assert js_view["limit"] == pytest.approx(view["limit"], rel=1e-5)
        np.testing.assert_allclose(js_view["centre"], view["centre"], atol=1e-9)
        assert_same_text(js_view["caption"], view["caption"], k)
        methods.add(state["method"])
    assert methods == set(explorer.methods)


def test_maps_sent_as_float16_change_the_picture_by_less_than_a_colour_step(bundled):
    """The explorers send the recorded maps as float16 (half the bytes): every view computed from them stays within
    1/256 of the colour scale (one step of the colour table) of the float32 view, and its caption's numbers within
    one unit of their last digit. (Only the note that a discard ratio leaves the map as it is, a comparison at a
    relative 1e-4, may come out either way: float16 maps hold ties that float32 maps do not.)"""
    images, _, masks = crossvit.data.make_shapes(2, crossvit.data.UNUSED_SEED_BASE + 4245)
    explorers = {"attention": attention_explorer(bundled, images, masks=masks),
                 "rollout": rollout_explorer(bundled, images, masks=masks, classes=[])}
    for kind, explorer in explorers.items():
        js_steps, _ = _walk(explorer, kind, 40, seed=3)
        views = [step for step in js_steps if step["op"] == "view"]
        full, half = run_js(explorer.packet("float32"), views), run_js(explorer.packet("float16"), views)
        for a, b in zip(full, half):
            key = "row" if kind == "attention" else "map"
            if a[key] is None:
                continue
            a_values, b_values = np.asarray(a[key]), np.asarray(b[key])
            scale = a_values.max() - (0 if kind == "attention" else a_values.min())
            assert np.abs(a_values - b_values).max() <= scale / 256, kind
            note = " The discard ratio leaves this map as it is"
            assert_same_text(b["caption"].split(note)[0], a["caption"].split(note)[0], kind)


@pytest.mark.slow  # many front-end views in node: seconds on 2 cores, so `make test` runs it, not test-fast
def test_the_front_end_cache_stays_bounded_and_changes_no_answer(bundled):
    """However long a reader explores, the front end keeps at most its cache limit of computed results (fused maps,
    rollouts, outlines), and a small limit changes no answer, only how often it is computed again."""
    images, _, masks = crossvit.data.make_shapes(4, crossvit.data.UNUSED_SEED_BASE + 4246)
    explorer = rollout_explorer(bundled, images, masks=masks, classes=[])
    states = [{**explorer.state(), "method": m, "image": i, "head_fusion": f, "start_block": b}
              for m in ("joint_rollout", "small_rollout") for i in range(4) for f in FUSIONS for b in range(3)]
    steps = [{"op": "view", "kind": "rollout", "state": st} for st in states] * 2
    steps = [step for view in steps for step in (view, {"op": "cache"})]
    limit = 200_000
    small, large = run_js(explorer.packet(), steps, cache_limit=limit), run_js(explorer.packet(), steps)
    assert max(c["bytes"] for c in small[1::2]) <= limit < max(c["bytes"] for c in large[1::2])
    assert [v["map"] for v in small[0::2]] == [v["map"] for v in large[0::2]]


def test_javascript_formats_numbers_as_python_does(tmp_path, bundled):
    """Captions print numbers with Python's rounding (half to even on an exact tie), in both front and back end."""
    explorer = attention_explorer(bundled, crossvit.data.make_shapes(1, crossvit.data.UNUSED_SEED_BASE)[0])
    values = [(0.125, 2), (0.375, 2), (2.5, 0), (3.5, 0), (0.0005, 3), (1 / 3, 3), (0.9995, 3), (12.5, 0),
              (0.05, 2), (0.15, 2), (0.95, 2), (99.5, 0), (100.0, 0), (0.0, 3)]
    results = run_js(explorer.packet(), [{"op": "fixed", "x": x, "digits": d} for x, d in values])
    assert results == [f"{x:.{d}f}" for x, d in values]
