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


def test_float_noise_is_the_same_figure(build):
    curve = np.array([0.9, 0.7, 0.5, 0.42, 0.3, 0.2])
    reference = _curve_png(curve)
    # a curve moved by float noise (1e-6, as between two CPUs) renders within the tolerance
    assert build.same_figure(reference, _curve_png(curve + 1e-6))
    # two levels up on a block of pixels (what 1 vs 2 threads did to notebook 05's heat maps): same figure
    nudged = _edit_pixels(reference, lambda a: a.__setitem__((slice(50, 60), slice(50, 80), 0),
                                                             np.clip(a[50:60, 50:80, 0].astype(int) + 2, 0, 255)))
    assert nudged != reference and build.pixel_difference(reference, nudged) == 2
    assert build.same_figure(reference, nudged)
    # different PNG metadata (e.g. another matplotlib version in the Software field): same pixels, same figure
    other_software = _curve_png(curve, metadata={"Software": "another matplotlib"})
    assert other_software != reference and build.same_figure(reference, other_software)


def test_visible_changes_are_not_the_same_figure(build):
    curve = np.array([0.9, 0.7, 0.5, 0.42, 0.3, 0.2])
    reference = _curve_png(curve)
    assert not build.same_figure(reference, _curve_png(curve + 0.05))  # the curve moved ~5 px
    assert not build.same_figure(reference, _curve_png(curve, title="deletion (AUC 0.413)"))  # a new number
    one_pixel = _edit_pixels(reference, lambda a: a.__setitem__((10, 10, 1), 255 - a[10, 10, 1]))
    assert build.pixel_difference(reference, one_pixel) > build.PIXEL_TOLERANCE
    assert not build.same_figure(reference, one_pixel)
    fig, ax = plt.subplots(figsize=(3, 2.5))  # another size
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    assert build.pixel_difference(reference, buffer.getvalue()) is None
    assert not build.same_figure(reference, buffer.getvalue())


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
