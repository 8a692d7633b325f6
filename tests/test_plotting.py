"""crossvit.plotting and crossvit.widgets against hand computations: grid lines, file locations, the values drawn,
and explorers that redraw from the recorded maps when a control changes."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import crossvit
from crossvit import plotting
from crossvit.train import TRAIN_PRESETS
from crossvit.widgets import attention_explorer, rollout_explorer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def model():
    # the bundled model's architecture, random weights: 96 px input; small 8x8 grid of 12 px, large 5x5 grid of
    # 16 px on an 80 px resize
    torch.manual_seed(0)
    return crossvit.CrossViT(TRAIN_PRESETS["shapes_tiny"]).eval()


@pytest.fixture(scope="module")
def batch():
    images, labels, masks = crossvit.data.make_shapes(3, seed=2**40 + 2**32 + 7)
    return images, labels, masks


@pytest.fixture(scope="module")
def recording(model, batch):
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(batch[0])
    return rec


# -- patch grids ----------------------------------------------------------------------------------------------


def test_grid_edges_by_hand(model):
    # large branch: 96 px resized to 80 px, 5 patches of 16 px -> one patch covers 96 / 5 = 19.2 input pixels
    np.testing.assert_allclose(plotting.grid_edges(model, "large"), [0.0, 19.2, 38.4, 57.6, 76.8, 96.0])
    np.testing.assert_allclose(plotting.grid_edges(model, "small"), np.arange(0, 97, 12))


def test_grid_edges_with_centre_crop():
    cropped = crossvit.create_model("crossvit_tiny_240", num_classes=2, img_size=96, img_scale=(1.0, 80 / 96),
                                    crop_scale=True)
    # the 80 px crop starts 8 px in and keeps the 16 px patch size
    np.testing.assert_allclose(plotting.grid_edges(cropped, "large"), [8, 24, 40, 56, 72, 88])


def test_draw_patch_grid_puts_lines_on_pixel_boundaries(model, batch):
    fig, ax = plt.subplots()
    plotting.show_image(ax, batch[0][0])
    lines = plotting.draw_patch_grid(ax, model, "large")
    assert len(lines) == 2 * 6  # 6 vertical + 6 horizontal edges of a 5x5 grid
    vertical = sorted(line.get_xdata()[0] for line in lines[0::2])
    horizontal = sorted(line.get_ydata()[0] for line in lines[1::2])
    expected = [-0.5, 18.7, 37.9, 57.1, 76.3, 95.5]  # imshow centres pixel i on i: its left edge is i - 0.5
    np.testing.assert_allclose(vertical, expected)
    np.testing.assert_allclose(horizontal, expected)


def test_grid_lines_match_where_patch_maps_change(model):
    # the lines must be drawn where crossvit.patch_map_to_pixels switches from one patch to the next
    pixels = crossvit.patch_map_to_pixels(model, "large", torch.arange(25.0)[None])[0]  # (96, 96)
    changes = [c for c in range(1, 96) if pixels[0, c] != pixels[0, c - 1]]
    assert changes == [int(np.ceil(e)) for e in plotting.grid_edges(model, "large")[1:-1]]  # 20, 39, 58, 77


# -- saving ---------------------------------------------------------------------------------------------------


def test_save_figure_honours_the_environment(tmp_path, monkeypatch):
    target = tmp_path / "figs"
    monkeypatch.setenv(plotting.FIGURES_ENV, str(target))
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    path = plotting.save_figure(fig, "99_test")
    assert path == target / "99_test.png"
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert plotting.save_figure(fig, "99_test.png") == path  # the suffix is optional
    assert plt.fignum_exists(fig.number)  # still open, so Jupyter can show it


def test_figure_path_defaults_to_repo_figures(monkeypatch):
    monkeypatch.delenv(plotting.FIGURES_ENV, raising=False)
    path = plotting.figure_path("01_x")
    assert path.parent.name == "figures" and (path.parent.parent / "crossvit").is_dir()
    assert path.name == "01_x.png" and not path.exists()


@pytest.mark.parametrize("name", ["", "../escape", "sub/dir", "/abs.png", ".."])
def test_figure_path_refuses_paths(name, monkeypatch, tmp_path):
    monkeypatch.setenv(plotting.FIGURES_ENV, str(tmp_path))
    with pytest.raises(ValueError):
        plotting.figure_path(name)


# -- what the attention plots draw ----------------------------------------------------------------------------


def test_plot_cls_attention_draws_the_cls_row(model, batch):
    heads, n = 2, 1 + 64
    attention = torch.rand(1, heads, n, n).softmax(dim=-1)
    fig = plotting.plot_cls_attention(model, batch[0][0], attention, "small")
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == heads + 1  # each head, then their mean
    for head, ax in enumerate(axes[:heads]):
        row = attention[0, head, 0]
        expected = plotting.normalize_map(crossvit.patch_map_to_pixels(model, "small", row[None, 1:])[0])
        np.testing.assert_allclose(ax.images[1].get_array(), expected, rtol=1e-6)
        assert f"CLS->CLS {row[0]:.2f}" in ax.get_title()
    mean_row = attention[0, :, 0].mean(dim=0)
    expected = plotting.normalize_map(crossvit.patch_map_to_pixels(model, "small", mean_row[None, 1:])[0])
    np.testing.assert_allclose(axes[-1].images[1].get_array(), expected, rtol=1e-5)


def test_plot_cross_attention_uses_the_other_grid_and_reports_own_cls(model, batch):
    row = torch.rand(1 + 25).softmax(dim=0)
    attention = row.reshape(1, 1, 1, 26).expand(2, 3, 1, 26)  # small CLS reading the large grid
    fig = plotting.plot_cross_attention(model, batch[0][0], attention, "small", index=1, heads=[0])
    (ax,) = [ax for ax in fig.axes if ax.images]
    expected = plotting.normalize_map(crossvit.patch_map_to_pixels(model, "large", row[None, 1:])[0])
    np.testing.assert_allclose(ax.images[1].get_array(), expected, rtol=1e-6)
    assert f"own CLS {row[0]:.2f}" in ax.get_title()
    with pytest.raises(ValueError, match="reads the small branch"):
        plotting.plot_cross_attention(model, batch[0][0], attention, "large")  # 25 keys, but small has 64


def test_plot_attention_by_block_has_a_panel_per_site(model, batch, recording):
    self_sites = sum(1 for name in recording.sites if ".self." in name)  # blocks x (small + large layers)
    fig = plotting.plot_attention_by_block(model, batch[0][0], recording.sites, kind="self")
    assert sum(1 for ax in fig.axes if ax.images) == self_sites
    blocks, small_layers, large_layers = model.arch.num_blocks, *(max(s.depth) for s in model.arch.branches)
    assert len(fig.axes) == blocks * (small_layers + large_layers)  # rows = blocks, one column per layer
    fig = plotting.plot_attention_by_block(model, batch[0][0], recording.sites, kind="cross")
    assert sum(1 for ax in fig.axes if ax.images) == blocks * 2 * model.arch.fusion_layers


def test_plot_joint_rollout_shares(model, batch, recording):
    joint = crossvit.joint_rollout(recording)
    fig = plotting.plot_joint_rollout(model, batch[0][0], joint)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    small_share = (joint["small"]["small"][0].sum() / (joint["small"]["small"][0].sum()
                                                       + joint["small"]["large"][0].sum())).item()
    assert titles[0] == f"small CLS -> small patches\n{small_share:.0%} of its patch mass"


def test_plot_method_grid_layout_and_masks(batch):
    images, _, masks = batch
    maps = {"a": torch.rand(3, 96, 96), "b": torch.rand(3, 96, 96)}
    fig = plotting.plot_method_grid(images, maps, masks)
    assert len(fig.axes) == 3 * (1 + 2)
    assert all(ax.collections for ax in fig.axes)  # every panel carries the mask contour
    np.testing.assert_allclose(fig.axes[2].images[1].get_array(), plotting.normalize_map(maps["b"][0]), rtol=1e-6)


@dataclass
class _Curves:  # the fields plot_deletion_insertion reads from a DeletionInsertionResult
    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    mean_deletion_auc: float
    mean_insertion_auc: float


def test_plot_deletion_insertion_plots_mean_curves():
    fractions = torch.linspace(0, 1, 5)
    deletion = torch.tensor([[1.0, 0.5, 0.2, 0.1, 0.0], [1.0, 0.7, 0.4, 0.1, 0.0]])
    insertion = 1 - deletion
    fig = plotting.plot_deletion_insertion({"random": _Curves(fractions, deletion, insertion, 0.3, 0.7),
                                            "m": _Curves(fractions, deletion, insertion, 0.25, 0.75)})
    ax_del, ax_ins = fig.axes
    np.testing.assert_allclose(ax_del.lines[0].get_ydata(), deletion.mean(0).numpy())
    np.testing.assert_allclose(ax_ins.lines[1].get_ydata(), insertion.mean(0).numpy())
    assert ax_del.lines[0].get_linestyle() == "--"  # the random baseline is dashed
    assert [t.get_text() for t in ax_ins.get_legend().get_texts()] == ["random (0.700)", "m (0.750)"]


def test_markdown_table():
    assert plotting.markdown_table(["a", "b"], [["x", 0.5], [1, 2.0]]) == \
        "| a | b |\n|---|---|\n| x | 0.500 |\n| 1 | 2.000 |"


# -- widgets --------------------------------------------------------------------------------------------------


def test_attention_explorer_redraws_from_the_recording(model, batch, recording):
    images, _, masks = batch
    explorer = attention_explorer(model, images, masks=masks)
    assert explorer.last_site == "blocks.0.small.self.0"
    expected = recording.sites["blocks.0.small.self.0"][0].mean(dim=0)[0]  # CLS row, heads averaged
    np.testing.assert_allclose(explorer.last_row, expected.numpy(), rtol=1e-5, atol=1e-7)
    first_picture = bytes(explorer.picture.value)
    assert first_picture.startswith(PNG_SIGNATURE)

    c = explorer.controls
    c["branch"].value = "large"
    last_layer = model.arch.branch("large").depth[0] - 1
    assert last_layer >= 1 and c["layer"].max == last_layer
    c["layer"].value = last_layer
    c["head"].value = 3
    c["image"].value = 2
    assert explorer.last_site == f"blocks.0.large.self.{last_layer}"
    expected = recording.sites[f"blocks.0.large.self.{last_layer}"][2, 3, 0, 1:].reshape(5, 5)
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert bytes(explorer.picture.value) != first_picture

    assert model.arch.fusion_layers == 1
    c["kind"].value = "cross"  # one fusion layer: the layer slider snaps back to 0
    c["block"].value = 2
    assert c["layer"].max == 0 and c["layer"].value == 0
    assert explorer.last_site == "blocks.2.large.cross.0"
    row = recording.sites["blocks.2.large.cross.0"][2, 3, 0]  # (1 + 64,): own CLS, then the small patches
    np.testing.assert_allclose(explorer.last_map, row[1:].reshape(8, 8).numpy(), rtol=1e-5, atol=1e-7)
    assert f"{row[0].item():.3f}" in explorer.caption.value

    c["head"].value = "max"
    expected = recording.sites["blocks.2.large.cross.0"][2, :, 0, 1:].amax(dim=0).reshape(8, 8)
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_rollout_explorer_recomputes_rollout_from_the_recording(model, batch, recording):
    images, _, masks = batch
    explorer = rollout_explorer(model, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
    c = explorer.controls
    c["image"].value = 2
    c["method"].value = "rollout_large"
    c["head_fusion"].value = "max"
    c["discard_ratio"].value = 0.5
    rollout = crossvit.attention_rollout(recording, "large", head_fusion="max", discard_ratio=0.5)
    expected = crossvit.patch_map_to_pixels(model, "large", rollout)[2]
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)

    c["method"].value = "joint_rollout"
    assert c["discard_ratio"].disabled and not c["head_fusion"].disabled
    c["head_fusion"].value = "mean"
    np.testing.assert_allclose(explorer.last_map, crossvit.explain(model, images, "joint_rollout")[2].numpy(),
                               rtol=1e-5, atol=1e-8)

    c["method"].value = "grad_rollout"
    assert c["head_fusion"].disabled
    np.testing.assert_allclose(explorer.last_map, crossvit.explain(model, images, "grad_rollout")[2].numpy(),
                               rtol=1e-4, atol=1e-8)
    assert bytes(explorer.picture.value).startswith(PNG_SIGNATURE)
    assert "image 2" in explorer.caption.value
