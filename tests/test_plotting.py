"""crossvit.plotting and crossvit.widgets against hand computations: grid lines, file locations, the values drawn,
and explorers that redraw from the recorded maps when a control changes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pytest
import torch

import crossvit
from crossvit import plotting
from crossvit.presets import SHAPES_PRESETS
from crossvit.widgets import attention_explorer, rollout_explorer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def test_a_learners_run_writes_beside_the_notebook_not_into_the_repository(monkeypatch, tmp_path):
    """Issue 28 item 18: without ``CROSSVIT_FIGURES_DIR`` (which only ``make figures`` sets to the repository's
    ``figures/``), a figure goes to ``crossvit-figures/`` in the working directory, the notebook's own folder under
    Jupyter, wherever the package is installed: never into the repository's tracked ``figures/``, which is where
    committed results are read from (``RESULTS_DIR``)."""
    monkeypatch.delenv(plotting.FIGURES_ENV, raising=False)
    repository_figures = Path(__file__).resolve().parent.parent / "figures"
    committed = repository_figures / "01_patch_grids.png"
    before = committed.read_bytes()
    notebooks = tmp_path / "my notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)
    path = plotting.figure_path("01_patch_grids")  # a name the repository has a committed figure for
    assert path == notebooks / plotting.LOCAL_FIGURES_DIRNAME / "01_patch_grids.png", path
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    assert plotting.save_figure(fig, "01_patch_grids") == path and path.read_bytes().startswith(PNG_SIGNATURE)
    assert committed.read_bytes() == before
    # run from the repository's root (a script, `python -m ...`): still not the tracked folder
    monkeypatch.chdir(repository_figures.parent)
    assert plotting.figures_dir().resolve() != repository_figures.resolve()
    # the committed results are read from the repository's figures/, apart from where figures are written
    assert plotting.RESULTS_DIR.resolve() == repository_figures.resolve()
    assert (plotting.RESULTS_DIR / "ablations.json").is_file()
    # an explicit setting still wins (this is how `make figures` writes the repository's figures)
    monkeypatch.setenv(plotting.FIGURES_ENV, str(tmp_path / "explicit"))
    assert plotting.figures_dir() == tmp_path / "explicit"


@pytest.mark.parametrize("name", ["", "../escape", "sub/dir", "/abs.png", ".."])
def test_figure_path_refuses_paths(name, monkeypatch, tmp_path):
    monkeypatch.setenv(plotting.FIGURES_ENV, str(tmp_path))
    with pytest.raises(ValueError):
        plotting.figure_path(name)


# -- what the attention plots draw ----------------------------------------------------------------------------


def _colorbars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _panels(fig):
    return [ax for ax in fig.axes if ax.images]


def _columns_per_row(fig) -> int:
    """Columns of the figure's panel grid (from the subplot specs, so hidden cells count too)."""
    specs = [ax.get_subplotspec() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    return max(spec.get_gridspec().ncols for spec in specs if spec is not None)


def test_plot_cls_attention_draws_the_cls_row_on_a_shared_scale(model, batch):
    heads, n = 2, 1 + 64
    attention = torch.rand(1, heads, n, n).softmax(dim=-1)
    fig = plotting.plot_cls_attention(model, batch[0][0], attention, "small")
    axes = _panels(fig)
    assert len(axes) == heads + 1  # each head, then their mean
    rows = [attention[0, h, 0] for h in range(heads)] + [attention[0, :, 0].mean(dim=0)]
    top = max(row[1:].max().item() for row in rows)  # the shared scale: 0 to the largest patch weight shown
    for ax, row in zip(axes, rows):
        expected = crossvit.patch_map_to_pixels(model, "small", row[None, 1:])[0]  # raw weights, not rescaled
        np.testing.assert_allclose(ax.images[1].get_array(), expected, rtol=1e-5)
        assert ax.images[1].norm.vmin == 0.0 and ax.images[1].norm.vmax == pytest.approx(top, rel=1e-5)
        assert f"CLS->CLS {row[0]:.2f}" in ax.get_title()
    (bar,) = _colorbars(fig)
    assert "one scale for all panels" in bar.get_ylabel()
    assert bar._colorbar.norm.vmax == pytest.approx(top, rel=1e-5)
    assert "small CLS -> small patches (8x8 grid)" in fig._suptitle.get_text()


def test_plot_cls_attention_per_panel_scale_says_so(model, batch):
    attention = torch.rand(1, 2, 65, 65).softmax(dim=-1)
    fig = plotting.plot_cls_attention(model, batch[0][0], attention, "small", heads=[1], scale="panel")
    (ax,) = _panels(fig)
    expected = plotting.normalize_map(crossvit.patch_map_to_pixels(model, "small", attention[0, 1, 0, None, 1:])[0])
    np.testing.assert_allclose(ax.images[1].get_array(), expected, rtol=1e-5)
    (bar,) = _colorbars(fig)
    assert "min-max scaled" in bar.get_ylabel()
    with pytest.raises(ValueError, match="scale must be"):
        plotting.plot_cls_attention(model, batch[0][0], attention, "small", scale="global")


def test_many_heads_wrap_into_rows_of_at_most_six(model, batch):
    attention = torch.rand(1, 7, 65, 65).softmax(dim=-1)  # 7 heads + their mean = 8 panels
    fig = plotting.plot_cls_attention(model, batch[0][0], attention, "small")
    assert len(_panels(fig)) == 8
    assert _columns_per_row(fig) == 4  # 2 rows of 4, not 8 in a row
    assert plotting.balanced_columns(8) == 4 and plotting.balanced_columns(7) == 4
    assert plotting.balanced_columns(6) == 6 and plotting.balanced_columns(13) == 5


def test_plot_cross_attention_uses_the_other_grid_and_names_both_branches(model, batch):
    row = torch.rand(1 + 25).softmax(dim=0)
    attention = row.reshape(1, 1, 1, 26).expand(2, 3, 1, 26)  # small CLS reading the large grid
    fig = plotting.plot_cross_attention(model, batch[0][0], attention, "small", index=1, heads=[0],
                                        title="last fusion layer")
    (ax,) = _panels(fig)
    expected = crossvit.patch_map_to_pixels(model, "large", row[None, 1:])[0]
    np.testing.assert_allclose(ax.images[1].get_array(), expected, rtol=1e-6)
    assert f"own CLS {row[0]:.2f}" in ax.get_title()
    assert fig._suptitle.get_text() == "last fusion layer\nsmall CLS -> large patches (5x5 grid): cross-attention"
    assert len(_colorbars(fig)) == 1
    with pytest.raises(ValueError, match="reads the small branch"):
        plotting.plot_cross_attention(model, batch[0][0], attention, "large")  # 25 keys, but small has 64


def test_plot_cross_attention_of_the_large_cls_shows_the_small_grid(model, batch, recording):
    fig = plotting.plot_cross_attention(model, batch[0][0], recording.cross_attention("large")[-1], "large")
    assert "large CLS -> small patches (8x8 grid)" in fig._suptitle.get_text()
    for ax in _panels(fig):  # the grid drawn is the small branch's: 9 + 9 lines every 12 px
        assert len(ax.lines) == 2 * 9


def test_plot_attention_by_block_has_a_panel_per_site(model, batch, recording):
    self_sites = sum(1 for name in recording.sites if ".self." in name)  # blocks x (small + large layers)
    fig = plotting.plot_attention_by_block(model, batch[0][0], recording.sites, kind="self")
    assert len(_panels(fig)) == self_sites
    blocks, small_layers, large_layers = model.arch.num_blocks, *(max(s.depth) for s in model.arch.branches)
    assert len(fig.axes) - len(_colorbars(fig)) == blocks * (small_layers + large_layers)
    # the two grids differ in size, so each gets its own shared scale and colour bar
    bars = _colorbars(fig)
    assert sorted("small grid" in b.get_xlabel() for b in bars) == [False, True]
    small_panels = [ax for ax in _panels(fig) if "small CLS -> small patches" in ax.get_title()]
    assert len(small_panels) == blocks * small_layers
    top = max(recording.sites[f"blocks.{k}.small.self.{j}"][0].mean(dim=0)[0, 1:].max().item()
              for k in range(blocks) for j in range(small_layers))
    assert all(ax.images[1].norm.vmax == pytest.approx(top, rel=1e-5) for ax in small_panels)
    fig = plotting.plot_attention_by_block(model, batch[0][0], recording.sites, kind="cross")
    assert len(_panels(fig)) == blocks * 2 * model.arch.fusion_layers
    titles = [ax.get_title() for ax in _panels(fig)]
    assert sum("small CLS -> large patches" in t for t in titles) == blocks
    assert sum("large CLS -> small patches" in t for t in titles) == blocks


def test_plot_attention_by_block_wraps_wide_layouts():
    # 1 small + 6 large layers = 7 columns: they wrap into two bands of at most 4 columns
    config = crossvit.PaperConfig(img_size=48, img_scale=(1.0, 1.0), patch_size=(12, 16), embed_dim=(16, 32),
                                  depth=((1, 6, 0), (1, 6, 0)), num_heads=(2, 2), num_classes=3)
    torch.manual_seed(0)
    net = crossvit.CrossViT(config).eval()
    images = torch.rand(1, 3, 48, 48)
    with crossvit.record_attention(net) as rec, torch.no_grad():
        net(images)
    fig = plotting.plot_attention_by_block(net, images[0], rec.sites, kind="self")
    assert len(_panels(fig)) == 2 * 7
    assert _columns_per_row(fig) <= plotting.MAX_COLUMNS and _columns_per_row(fig) == 4


def test_plot_joint_rollout_shares(model, batch, recording):
    joint = crossvit.joint_rollout(recording)
    fig = plotting.plot_joint_rollout(model, batch[0][0], joint)
    titles = [ax.get_title() for ax in _panels(fig)]
    small_share = (joint["small"]["small"][0].sum() / (joint["small"]["small"][0].sum()
                                                       + joint["small"]["large"][0].sum())).item()
    assert titles[0] == f"small CLS -> small patches\n{small_share:.0%} of its patch mass"
    assert len(_colorbars(fig)) == 2  # one per grid


def test_plot_method_grid_layout_and_masks(batch):
    images, _, masks = batch
    maps = {"a": torch.rand(3, 96, 96), "b": torch.rand(3, 96, 96)}
    fig = plotting.plot_method_grid(images, maps, masks)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 * (1 + 2)
    assert all(ax.collections for ax in panels)  # every panel carries the mask contour
    np.testing.assert_allclose(panels[2].images[1].get_array(), plotting.normalize_map(maps["b"][0]), rtol=1e-6)
    (bar,) = _colorbars(fig)  # no signed method: one bar, which says the panels are min-max scaled
    assert "min-max scaled" in bar.get_ylabel()


def test_plot_method_grid_draws_signed_maps_centred_at_zero(batch):
    images, _, masks = batch
    generator = torch.Generator().manual_seed(0)
    signed = torch.randn(3, 96, 96, generator=generator)  # like integrated gradients: both signs
    maps = {"integrated_gradients": signed, "other_signed": signed * 3, "saliency": signed.abs()}
    fig = plotting.plot_method_grid(images, maps, masks)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for i in range(3):
        ig, other, saliency = (panels[i * 4 + j].images[1] for j in (1, 2, 3))
        for shown in (ig, other):  # a listed method, and one detected by its negative values
            assert shown.norm.vmin == -shown.norm.vmax
            assert shown.get_cmap().name == plotting.SIGNED_CMAP
        # scaled by the 99th percentile of |a|, not min-max: 0 stays 0 and the sign is kept
        scale = np.percentile(signed[i].abs().numpy(), plotting.SIGNED_CLIP_PERCENTILE)
        np.testing.assert_allclose(ig.get_array(), signed[i].numpy() / scale, rtol=1e-5)
        assert saliency.norm.vmin == 0.0 and saliency.get_cmap().name == plotting.HEAT_CMAP
    assert "(signed)" in panels[1].get_title() and "(signed)" not in panels[3].get_title()
    labels = sorted(bar.get_ylabel() for bar in _colorbars(fig))
    assert len(labels) == 2 and "signed maps" in labels[0] and "min-max" in labels[1]
    # forced off: everything min-max scaled
    fig = plotting.plot_method_grid(images, maps, masks, signed=False)
    assert all(ax.images[1].norm.vmin == 0.0 for ax in fig.axes if len(ax.images) > 1)


def test_plot_method_grid_wraps_methods_into_bands_of_at_most_six_columns(batch):
    images, _, masks = batch
    maps = {m: torch.rand(3, 96, 96) for m in crossvit.METHODS}  # more methods than a row of six columns holds
    fig = plotting.plot_method_grid(images, maps, masks, titles=["x", "y", "z"])
    assert _columns_per_row(fig) <= plotting.MAX_COLUMNS
    heat = [ax for ax in fig.axes if len(ax.images) > 1]
    assert len(heat) == 3 * len(crossvit.METHODS)  # every map drawn once
    inputs = [ax for ax in fig.axes if len(ax.images) == 1 and ax.get_label() != "<colorbar>"]
    bands = -(-len(crossvit.METHODS) // (plotting.MAX_COLUMNS - 1))  # at most five methods beside an input column
    assert bands >= 2
    assert len(inputs) == 3 * bands  # the input column repeats in each band
    titled = [ax.get_title().split("\n")[0] for ax in heat if ax.get_title()]
    assert titled == list(crossvit.METHODS)
    with pytest.raises(ValueError, match="must be \\(B, H, W\\)"):
        plotting.plot_method_grid(images, {"a": torch.rand(2, 96, 96)})


def test_overlay_heatmap_signed_scale_is_symmetric(batch):
    fig, ax = plt.subplots()
    heat = np.array([[-2.0, 0.0], [1.0, 0.5]])
    shown = plotting.overlay_heatmap(ax, batch[0][0], heat, signed=True, normalize=False)
    assert (shown.norm.vmin, shown.norm.vmax) == (-2.0, 2.0)
    np.testing.assert_allclose(shown.get_alpha(), 0.9 * np.sqrt(np.abs(heat) / 2.0))  # 0 stays see-through
    assert plotting.signed_scale(np.zeros(4)) == 1.0
    assert plotting.signed_scale(np.array([0.0, 0.0, 0.0, -4.0]), 50.0) == 4.0  # percentile 0 -> the max


# -- the architecture diagram -----------------------------------------------------------------------------------


def _diagram_text(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def test_plot_architecture_of_the_bundled_model():
    torch.manual_seed(0)
    net = crossvit.create_model("shapes_tiny")
    config = SHAPES_PRESETS["shapes_tiny"]  # expected numbers worked out from the config by hand
    side_large = int(config.img_size * config.img_scale[1])  # 80
    assert (config.img_size, side_large) == (96, 80)
    text = _diagram_text(plotting.plot_architecture(net))
    assert "input image: 96x96 px, 3 channels" in text
    assert "input resized (bicubic) 96 -> 80 px" in text
    assert "12 px patches -> 8x8 grid = 64 patches" in text and "16 px patches -> 5x5 grid = 25 patches" in text
    assert "1 + 64 = 65 tokens x width 64" in text and "1 + 25 = 26 tokens x width 128" in text
    assert text.count("multi-scale block") == 3
    assert text.count("2 transformer layers (self-attention)") == 6  # 3 blocks x 2 branches
    assert text.count("small CLS reads large patches: 1 query, 1 + 25 keys, 4 heads") == 3
    assert text.count("large CLS reads small patches: 1 query, 1 + 64 keys, 4 heads") == 3
    assert "(small head + large head) / 2" in text and "mean of the two heads" in text
    assert f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters" in text


def test_plot_architecture_of_a_timm_preset():
    with torch.device("meta"):  # shapes only
        net = crossvit.create_model("crossvit_9_240")
    text = _diagram_text(plotting.plot_architecture(net))
    # the numbers docs/architecture.md quotes: 8.55 M parameters; the small branch sees 20x20 = 400 patches, the large 14x14 = 196
    assert "8.55 M parameters, 1000 classes" in text
    assert "20x20 grid = 400 patches" in text and "14x14 grid = 196 patches" in text
    assert "1 + 400 = 401 tokens x width 128" in text and "1 + 196 = 197 tokens x width 256" in text
    assert "input resized (bicubic) 240 -> 224 px" in text
    assert text.count("1 transformer layer (self-attention)") == 3 and text.count("3 transformer layers") == 3
    assert "small CLS reads large patches: 1 query, 1 + 196 keys" in text
    assert "large CLS reads small patches: 1 query, 1 + 400 keys" in text
    assert "mean of the two heads" in text and "12x12 convolution, stride 12" in text


def test_plot_architecture_of_the_seed_flavour():
    kwargs = dict(image_size=64, num_classes=10, sm_dim=32, lg_dim=48, sm_patch_size=8, lg_patch_size=16,
                  sm_enc_depth=2, lg_enc_depth=1, sm_enc_heads=2, lg_enc_heads=3, sm_enc_mlp_dim=64,
                  lg_enc_mlp_dim=96, sm_enc_dim_head=16, lg_enc_dim_head=16, cross_attn_depth=2,
                  cross_attn_heads=5, cross_attn_dim_head=8, depth=2)
    vit_pytorch = pytest.importorskip("vit_pytorch.cross_vit")
    reference = vit_pytorch.CrossViT(**kwargs)  # the parameter count comes from lucidrains' own model
    text = _diagram_text(plotting.plot_architecture(crossvit.create_model("seed", **kwargs)))
    assert f"{sum(p.numel() for p in reference.parameters()) / 1e6:.2f} M parameters, 10 classes" in text
    assert text.count("the input as it is") == 2  # one image size for both branches
    assert "8 px patches -> 8x8 grid = 64 patches" in text and "16 px patches -> 4x4 grid = 16 patches" in text
    assert "LayerNorm -> Linear -> LayerNorm -> width 32" in text
    assert text.count("2 fusion layers, each:") == 2
    assert text.count("small CLS reads large patches: 1 query, 1 + 16 keys, 5 heads") == 2
    assert text.count("2 transformer layers (self-attention), then LayerNorm") == 2
    assert "logits = small head + large head" in text and "sum of the two heads" in text


def test_plot_architecture_refuses_other_models():
    with pytest.raises(TypeError, match="crossvit.CrossViT"):
        plotting.plot_architecture(torch.nn.Linear(2, 2))


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


def test_plot_deletion_insertion_tells_every_method_apart():
    """crossvit.METHODS has more methods than the colour cycle has colours: no two curves may look alike."""
    from matplotlib.colors import to_hex

    fractions = torch.linspace(0, 1, 5)
    deletion = torch.tensor([[1.0, 0.5, 0.2, 0.1, 0.0]])
    curves = {m: _Curves(fractions, deletion, 1 - deletion, 0.3, 0.7) for m in crossvit.METHODS}
    fig = plotting.plot_deletion_insertion(curves)
    for ax in fig.axes:
        looks = [(to_hex(line.get_color()), line.get_linestyle()) for line in ax.lines]
        assert len(looks) == len(crossvit.METHODS) and len(set(looks)) == len(looks), looks
    plt.close(fig)


def test_plot_deletion_insertion_names_the_score_and_refuses_a_mix():
    fractions = torch.linspace(0, 1, 3)
    curve = torch.tensor([[6.0, 2.0, -1.0]])
    logit = SimpleNamespace(fractions=fractions, deletion=curve, insertion=-curve, mean_deletion_auc=2.25,
                            mean_insertion_auc=-2.25, score="logit")
    fig = plotting.plot_deletion_insertion({"m": logit})
    assert all(ax.get_ylabel() == "logit of the explained class" for ax in fig.axes)
    assert fig.axes[0].get_ylim()[1] >= 6.0  # not clipped to a probability's [0, 1]
    fig = plotting.plot_deletion_insertion({"m": SimpleNamespace(**{**vars(logit), "fractions": torch.tensor(
        [0.0, 0.01, 1.0])})}, log_x=True)
    assert fig.axes[1].get_xscale() == "symlog"
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["0", "1 %", "10 %", "100 %"]
    probability = SimpleNamespace(**{**vars(logit), "score": "probability", "deletion": curve / 6})
    with pytest.raises(ValueError, match="mix curves of different scores"):
        plotting.plot_deletion_insertion({"m": logit, "n": probability})


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

    assert model.arch.fusion_layers == 1
    c["kind"].value = "cross"  # one fusion layer: the layer slider snaps back to 0
    c["block"].value = 2
    assert c["layer"].max == 0 and c["layer"].value == 0
    assert explorer.last_site == "blocks.2.large.cross.0"
    row = recording.sites["blocks.2.large.cross.0"][2, 3, 0]  # (1 + 64,): own CLS, then the small patches
    np.testing.assert_allclose(explorer.last_map, row[1:].reshape(8, 8).numpy(), rtol=1e-5, atol=1e-7)
    assert f"{row[0].item():.3f}" in explorer.caption

    c["head"].value = "max"
    expected = recording.sites["blocks.2.large.cross.0"][2, :, 0, 1:].amax(dim=0).reshape(8, 8)
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)


def test_rollout_explorer_recomputes_rollout_from_the_recording(model, batch, recording):
    images, _, masks = batch
    explorer = rollout_explorer(model, images, masks=masks, class_names=crossvit.data.CLASS_NAMES)
    c = explorer.controls
    c["image"].value = 2
    c["method"].value = "large_rollout"
    c["head_fusion"].value = "max"
    c["discard_ratio"].value = 0.5
    c["start_block"].value = 1
    rollout = crossvit.attention_rollout(recording, "large", head_fusion="max", discard_ratio=0.5, start_block=1)
    expected = crossvit.patch_map_to_pixels(model, "large", rollout)[2]
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-7)

    c["method"].value = "joint_rollout"
    assert c["discard_ratio"].disabled and not c["head_fusion"].disabled
    c["head_fusion"].value = "mean"
    expected = crossvit.explain(model, images, "joint_rollout", start_block=1)[2]
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-5, atol=1e-8)

    c["method"].value = "gradient_rollout"
    assert c["head_fusion"].disabled
    expected = crossvit.explain(model, images, "gradient_rollout", start_block=1)[2]
    np.testing.assert_allclose(explorer.last_map, expected.numpy(), rtol=1e-4, atol=1e-8)
    assert "image 2" in explorer.caption
