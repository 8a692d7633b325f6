"""figures/build.py keeps git clean: a regenerated PNG that shows the same figure up to float and rendering noise
is replaced by the previous file, anything visibly different is kept, and training-run figures are not committed.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("figures_build", ROOT / "figures" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _curve_png(values: np.ndarray, title: str = "deletion", metadata: dict | None = None) -> bytes:
    """A small line plot as the notebooks draw them, rendered to PNG bytes."""
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.linspace(0, 1, len(values)), values, linewidth=1.4)
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata=metadata)
    plt.close(fig)
    return buffer.getvalue()


def _edit_pixels(png: bytes, change) -> bytes:
    array = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA")).copy()
    change(array)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _heat_png(values: np.ndarray) -> bytes:
    """A heat map panel as the notebooks draw them, rendered to PNG bytes."""
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(values, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def test_float_noise_is_the_same_figure(build):
    curve = np.array([0.9, 0.7, 0.5, 0.42, 0.3, 0.2])
    reference = _curve_png(curve)
    # a curve moved by float noise (as between two CPUs) renders within the tolerance
    assert build.same_figure(reference, _curve_png(curve + 1e-4))
    # two levels up on a block of pixels (what 1 vs 2 threads did to notebook 05's heat maps): same figure
    nudged = _edit_pixels(reference, lambda a: a.__setitem__((slice(50, 60), slice(50, 80), 0),
                                                             np.clip(a[50:60, 50:80, 0].astype(int) + 2, 0, 255)))
    assert nudged != reference and build.pixel_differences(reference, nudged).max() == 2
    assert build.same_figure(reference, nudged)
    # a few anti-aliased edge pixels off by a few dozen levels (the committed deletion curves against a rerun)
    edges = _edit_pixels(reference, lambda a: a.__setitem__((slice(100, 105), slice(100, 110), 1),
                                                            np.clip(a[100:105, 100:110, 1].astype(int) - 25, 0, 255)))
    assert build.same_figure(reference, edges)
    # different PNG metadata (e.g. another matplotlib version in the Software field): same pixels, same figure
    other_software = _curve_png(curve, metadata={"Software": "another matplotlib"})
    assert other_software != reference and build.same_figure(reference, other_software)


def test_visible_changes_are_not_the_same_figure(build):
    curve = np.array([0.9, 0.7, 0.5, 0.42, 0.3, 0.2])
    reference = _curve_png(curve, title="AUC 0.412")
    assert not build.same_figure(reference, _curve_png(curve + 0.02, title="AUC 0.412"))  # the curve moved ~3 px
    assert not build.same_figure(reference, _curve_png(curve, title="AUC 0.413"))  # one digit
    one_pixel = _edit_pixels(reference, lambda a: a.__setitem__((2, 2, 1), 255 - a[2, 2, 1]))  # white -> black
    assert build.pixel_differences(reference, one_pixel).max() > build.PIXEL_TOLERANCE
    assert not build.same_figure(reference, one_pixel)
    fig, ax = plt.subplots(figsize=(3, 2.5))  # another size
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    assert build.pixel_differences(reference, buffer.getvalue()) is None
    assert not build.same_figure(reference, buffer.getvalue())


def test_a_recoloured_heat_map_is_not_the_same_figure(build):
    values = np.random.default_rng(0).random((8, 8))
    reference = _heat_png(values)
    assert build.same_figure(reference, _heat_png(values + 1e-6))  # float noise: same colours
    changed = values.copy()
    changed[2:4, 2:4] += 0.15  # four cells a little brighter: each change stays below 64 levels, but over an area
    difference = build.pixel_differences(reference, _heat_png(changed))
    assert difference.max() <= build.PIXEL_TOLERANCE and (difference > build.NOISE_LEVEL).mean() > 0.001
    assert not build.same_figure(reference, _heat_png(changed))


def test_keep_unchanged_puts_back_the_previous_file(build, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "FIGURES_DIR", tmp_path)
    curve = np.array([0.9, 0.7, 0.5, 0.42, 0.3, 0.2])
    committed = {Path("05_a.png"): _curve_png(curve), Path("05_b.png"): _curve_png(curve)}
    for rel, data in committed.items():
        (tmp_path / rel).write_bytes(data)
    previous = build.read_pngs()
    assert previous == committed
    # the notebook rewrites both: one with float noise, one with a real change; and writes a new figure
    (tmp_path / "05_a.png").write_bytes(_curve_png(curve + 1e-6, metadata={"Software": "x"}))
    changed = _curve_png(curve + 0.1)
    (tmp_path / "05_b.png").write_bytes(changed)
    (tmp_path / "05_c.png").write_bytes(_curve_png(curve))
    written = [Path("05_a.png"), Path("05_b.png"), Path("05_c.png")]
    assert build.keep_unchanged(previous, written) == [Path("05_a.png")]
    assert (tmp_path / "05_a.png").read_bytes() == committed[Path("05_a.png")]  # byte for byte: git stays clean
    assert (tmp_path / "05_b.png").read_bytes() == changed
    assert (tmp_path / "05_c.png").exists()


def test_training_run_figures_are_not_committed(build):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name in sorted(build.LOCAL_ONLY):
        path = f"figures/{name}"
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} is a training-run figure (LOCAL_ONLY) but .gitignore misses it"
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path], cwd=ROOT, capture_output=True)
        assert tracked.returncode != 0, f"{path} is still tracked: git rm --cached it"
