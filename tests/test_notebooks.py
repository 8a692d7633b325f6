"""The notebooks: each runs top to bottom in a fresh kernel of this venv and writes exactly its figures; every
notebook in the repository is stored with outputs stripped and a kernelspec (so JupyterLab asks no questions).

Execution follows ``figures/build.py``: kernel = this interpreter, working directory = ``notebooks/``, figures
written to ``$CROSSVIT_FIGURES_DIR`` (here a temporary directory). ``MPLBACKEND`` (set to Agg for the other
tests by conftest) is removed for the kernel, so the notebooks run with Jupyter's own inline backend.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from crossvit.weights import cached_weights

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CELL_TIMEOUT_S = 600

# Every numbered notebook and the figures it must write (and no others).
EXPECTED_FIGURES: dict[str, list[str]] = {
    "01_patch_embedding.ipynb": [
        "01_shapes_samples.png", "01_patch_grids.png", "01_patch_filters.png",
        "01_position_similarity_small.png", "01_position_similarity_large.png",
    ],
    "02_dual_branch_encoding.ipynb": [
        "02_cls_attention_by_block.png", "02_cls_attention_heads.png", "02_branch_logits.png",
    ],
    "03_cross_attention_and_hooks.ipynb": [
        "03_cross_attention_by_block.png", "03_cross_attention_heads_small.png",
        "03_cross_attention_heads_large.png",
    ],
    "04_attention_rollout.ipynb": [
        "04_rollout_variants.png", "04_joint_rollout.png", "04_grad_rollout_classes.png",
    ],
    "05_attributions_compared.ipynb": ["05_methods_gallery.png", "05_deletion_insertion.png"],
    "06_training_your_own.ipynb": ["06_training_curve.png"],
    # 07 writes figures only from timm's real ImageNet weights, which the tests (HF_HUB_OFFLINE=1) use only when
    # they are already in the Hugging Face cache; on random weights it writes none
    "07_imagenet_crossvit.ipynb": [
        "07_predictions.png", "07_rollout.png", "07_joint_rollout.png", "07_grad_rollout_two_classes.png",
        "07_cross_attention_small.png", "07_cross_attention_by_block.png", "07_patch_filters_small.png",
        "07_patch_filters_large.png", "07_position_similarity.png",
    ] if cached_weights("crossvit_15_240") else [],
}

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def all_notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def venv_kernel_manager() -> AsyncKernelManager:
    """A kernel manager that starts ipykernel with THIS interpreter: with no kernel directories, ``python3`` is
    ipykernel's built-in spec (``sys.executable -m ipykernel_launcher``), so no user kernelspec can hijack it."""
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    if os.name == "posix":  # Unix sockets in a private directory instead of loopback TCP
        km.transport = "ipc"
        km.ip = os.path.join(tempfile.mkdtemp(prefix="crossvit-test-kernel-"), "kernel")
    assert os.path.realpath(km.kernel_spec.argv[0]) == os.path.realpath(sys.executable)
    return km


def test_every_numbered_notebook_is_listed():
    numbered = {p.name for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")}
    assert numbered == set(EXPECTED_FIGURES), "update EXPECTED_FIGURES when adding or renaming a notebook"


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.name)
def test_notebook_is_stored_stripped_with_a_kernelspec(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert {k: nb.metadata.get("kernelspec", {}).get(k) for k in KERNELSPEC} == KERNELSPEC
    assert "widgets" not in nb.metadata, "saved widget state: strip it"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} has outputs"
            assert cell.execution_count is None, f"cell {index} has an execution count"
        assert "execution" not in cell.metadata, f"cell {index} has execution timing metadata"


@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_notebook_runs_and_writes_its_figures(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = NOTEBOOKS_DIR / name
    original = path.read_bytes()
    figures = tmp_path / "figures"
    monkeypatch.setenv("CROSSVIT_FIGURES_DIR", str(figures))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")

    nb = nbformat.read(path, as_version=4)
    km = venv_kernel_manager()
    client = NotebookClient(nb, km=km, kernel_name="python3", timeout=CELL_TIMEOUT_S, startup_timeout=120,
                            allow_errors=False, resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    try:
        client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    finally:
        if km.transport == "ipc":
            shutil.rmtree(os.path.dirname(km.ip), ignore_errors=True)

    written = sorted(p.name for p in figures.iterdir()) if figures.is_dir() else []
    assert written == sorted(EXPECTED_FIGURES[name])
    for figure in written:
        content = (figures / figure).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 1000, f"{figure} is not a real PNG"
    assert path.read_bytes() == original, "executing must not modify the stored notebook"
