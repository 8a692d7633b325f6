"""figures/build.py keeps git clean: a regenerated PNG that shows the same figure up to float and rendering noise
is replaced by the previous file, anything visibly different is kept, and training-run figures are not committed.
Its runner executes a notebook once and caches it under a key that changes with the notebook's code, the library's
files and the committed results the notebooks read (not with its text); a failure is reported with the cell, left
out of the cache, and does not stop the other notebooks; no cell has a time limit, the run has a budget.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def build():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from course_kit import load_runner  # the one loader of figures/build.py
    finally:
        sys.path.remove(str(ROOT / "docs"))
    return load_runner()


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


def _notebook(*sources: str, markdown: str = "Some text.") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown)] + [nbformat.v4.new_code_cell(src) for src in sources]
    return nb


def test_the_cache_key_follows_the_code_the_library_and_the_results_read(build, tmp_path, monkeypatch):
    """The key of an execution: the code cells (source and tags), every file of the library and the committed
    results; not the text, not compiled files."""
    (tmp_path / "crossvit" / "__pycache__").mkdir(parents=True)
    (tmp_path / "crossvit" / "model.py").write_text("WIDTH = 64\n")
    (tmp_path / "crossvit" / "widgets.js").write_text("export default {}\n")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "ablations.json").write_text("{}")
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(build, "LIBRARY_DIR", tmp_path / "crossvit")
    library = build.library_fingerprint()
    (tmp_path / "crossvit" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"compiled")
    assert build.library_fingerprint() == library  # compiled files are not the library
    (tmp_path / "crossvit" / "model.py").write_text("WIDTH = 65\n")
    changed = build.library_fingerprint()
    assert changed != library  # a change to crossvit/ invalidates every execution
    (tmp_path / "crossvit" / "widgets.js").write_text("export default {render() {}}\n")
    assert build.library_fingerprint() not in (library, changed)  # every file, not only Python
    results = build.library_fingerprint()
    (tmp_path / "figures" / "ablations.json").write_text('{"trained": []}')
    assert build.library_fingerprint() != results  # the committed results a notebook reads
    environment = {"python": "3.11"}
    key = build.notebook_key(_notebook("x = 1"), library, environment)
    assert build.notebook_key(_notebook("x = 1", markdown="Other text."), library, environment) == key
    assert build.notebook_key(_notebook("x = 2"), library, environment) != key
    assert build.notebook_key(_notebook("x = 1"), changed, environment) != key
    assert build.notebook_key(_notebook("x = 1"), library, {"python": "3.12"}) != key
    tagged = _notebook("x = 1")
    tagged.cells[1].metadata["tags"] = ["exercise"]
    assert build.notebook_key(tagged, library, environment) != key


def test_with_outputs_keeps_the_text_and_takes_the_outputs(build):
    executed = _notebook("print(1)")
    executed.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    executed.cells[1].execution_count = 1
    executed.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    source = _notebook("print(1)", markdown="The text as it is now.")
    merged = build.with_outputs(source, executed)
    assert merged.cells[0].source == "The text as it is now." and merged.cells[1].outputs[0]["text"] == "1\n"
    assert merged.metadata["widgets"] == executed.metadata["widgets"] and source.cells[1].outputs == []
    with pytest.raises(ValueError, match="other code cells"):
        build.with_outputs(_notebook("print(2)"), executed)


@pytest.mark.slow
def test_an_execution_runs_once_a_failure_is_not_cached_and_the_budget_says_where(build, tmp_path):
    figure = "from crossvit import plotting\nimport matplotlib.pyplot as plt\nplotting.save_figure(plt.figure(), 'x')"
    good = _notebook("import os\nprint(os.getpid())", figure, "import ipywidgets\nipywidgets.IntSlider(3)")
    first = build.run_notebook(good, "good.ipynb", cache_dir=tmp_path)
    assert first.failure is None and not first.cached and sorted(first.figures) == ["x.png"]
    assert first.notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]  # saved
    assert good.cells[1].outputs == []  # the caller's notebook is left as it was
    again = build.run_notebook(good, "good.ipynb", cache_dir=tmp_path)
    assert again.cached  # read from the cache: no kernel started
    assert again.notebook.cells[1].outputs == first.notebook.cells[1].outputs  # the same process's output
    assert again.figures["x.png"].read_bytes().startswith(b"\x89PNG")

    bad = _notebook("x = 1", "1 / 0", "y = 2")
    failed = build.run_notebook(bad, "bad.ipynb", cache_dir=tmp_path)
    assert "bad.ipynb: cell 2 (code cell #2, starts: '1 / 0') raised ZeroDivisionError" in failed.failure.summary
    assert failed.notebook.cells[1].execution_count == 1 and not failed.cached  # it ran up to the failure
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())  # nothing cached
    assert not list(tmp_path.glob(".bad-*"))  # nor its work folder left behind
    assert build.run_notebook(bad, "bad.ipynb", cache_dir=tmp_path).cached is False  # a rerun executes it again

    slow = _notebook("import time\ntime.sleep(120)")
    stopped = build.run_notebook(slow, "slow.ipynb", cache_dir=tmp_path, deadline=time.monotonic() + 1)
    assert "slow.ipynb: stopped in cell 1 (code cell #1, starts: 'import time')" in stopped.failure.summary
    assert "budget" in stopped.failure.summary


def test_make_figures_runs_every_notebook_and_names_each_failure(build, tmp_path, monkeypatch, capsys):
    """One failing notebook does not stop the others; the exit status and the last lines name it."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb", "03_c.ipynb"):
        nbformat.write(_notebook(f"# {name}"), notebooks / name)
    monkeypatch.setattr(build, "NOTEBOOKS_DIR", notebooks)
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(build, "FIGURES_DIR", tmp_path / "figures")
    ran = []

    def fake_run(nb, name, **kwargs):
        ran.append(name)
        failure = build.NotebookFailed(f"{name}: cell 1 raised ValueError: no") if name == "02_b.ipynb" else None
        return build.Execution(name, "k", nb, {}, 0.1, failure=failure)

    monkeypatch.setattr(build, "run_notebook", fake_run)
    assert build.main([]) == 1
    assert sorted(ran) == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    err = capsys.readouterr().err
    assert "1 notebook(s) FAILED" in err and "02_b.ipynb: cell 1 raised ValueError: no" in err.split("FAILED")[-1]


def test_make_figures_runs_two_notebooks_at_once_each_kernel_with_its_share_of_the_cores(build, tmp_path,
                                                                                         monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        nbformat.write(_notebook(f"# {name}"), notebooks / name)
    for name, value in (("NOTEBOOKS_DIR", notebooks), ("ROOT", tmp_path), ("FIGURES_DIR", tmp_path / "figures")):
        monkeypatch.setattr(build, name, value)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(build.os, "cpu_count", lambda: 4)
    both_running = threading.Barrier(2, timeout=60)  # broken unless the two runs overlap
    threads = []

    def fake_run(nb, name, **kwargs):
        threads.append(os.environ.get("OMP_NUM_THREADS"))  # what a kernel started now would inherit
        both_running.wait()
        return build.Execution(name, "k", nb, {}, 0.1)

    monkeypatch.setattr(build, "run_notebook", fake_run)
    assert build.main(["--jobs", "2"]) == 0
    assert threads == ["2", "2"] and "OMP_NUM_THREADS" not in os.environ  # 4 cores // 2 jobs; restored after
    with pytest.raises(SystemExit):
        build.main(["--jobs", "0"])


def test_the_longest_notebook_is_started_first_by_its_last_cached_time(build, tmp_path):
    def record(key: str, seconds, age: float) -> None:
        entry = tmp_path / "06_training" / key
        entry.mkdir(parents=True)
        (entry / "record.json").write_text(json.dumps({"seconds": seconds}))
        os.utime(entry / "record.json", (time.time() - age, time.time() - age))

    assert build.last_seconds("06_training.ipynb", tmp_path) == 0.0  # never ran: no estimate
    record("old", 300.0, age=3600)
    record("new", 85.5, age=60)
    (tmp_path / "06_training" / "broken").mkdir()
    (tmp_path / "06_training" / "broken" / "record.json").write_text("{ half written")
    assert build.last_seconds("06_training.ipynb", tmp_path) == 85.5  # the newest run's time, the broken one skipped


def test_a_cold_cache_still_starts_the_long_notebooks_first(build, tmp_path):
    names = sorted(path.name for path in build.find_notebooks(None))
    order = sorted(names, key=lambda name: -build.expected_seconds(name, tmp_path))  # as main() orders them
    assert order[:2] == ["06_training_your_own.ipynb", "05_attributions_compared.ipynb"]
    assert order[2:] == names[:4] + names[6:]  # the rest in file order
    (tmp_path / "01_patch_embedding" / "k").mkdir(parents=True)
    (tmp_path / "01_patch_embedding" / "k" / "record.json").write_text(json.dumps({"seconds": 500.0}))
    assert build.expected_seconds("01_patch_embedding.ipynb", tmp_path) == 500.0  # a timed run wins


_RUN_ONE = """
import sys
sys.path.insert(0, sys.argv[1])
from course_kit import load_runner
import nbformat
from pathlib import Path
build = load_runner()
done = build.run_notebook(nbformat.read(sys.argv[2], as_version=4), "shared.ipynb", cache_dir=Path(sys.argv[3]))
print("cached" if done.cached else "executed", done.failure)
"""


@pytest.mark.slow
def test_two_processes_asking_for_one_notebook_execute_it_once(build, tmp_path):
    """Two callers at once (two test workers, `make site` beside `make figures`): one executes the notebook, the
    other waits for it and reads the execution from the cache."""
    runs = tmp_path / "runs.txt"
    path = tmp_path / "shared.ipynb"
    nbformat.write(_notebook(f"import os, time\nopen({str(runs)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
                             "time.sleep(3)"), path)
    command = [sys.executable, "-c", _RUN_ONE, str(ROOT / "docs"), str(path), str(tmp_path / "cache")]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    said = sorted(p.communicate(timeout=600)[0].strip() for p in both)
    assert said == ["cached None", "executed None"], said
    assert len(runs.read_text().splitlines()) == 1  # one kernel ran the cell


def test_a_caller_waiting_for_another_execution_stops_at_its_budget(build, tmp_path):
    import filelock

    nb = _notebook("x = 1")
    with filelock.FileLock(build._lock_path(tmp_path, "held.ipynb", build.notebook_key(nb))):  # another process's
        stopped = build.run_notebook(nb, "held.ipynb", cache_dir=tmp_path, deadline=time.monotonic() + 0.5)
    assert "waiting for another process" in stopped.failure.summary and not stopped.cached
    assert build.run_notebook(nb, "held.ipynb", cache_dir=tmp_path).failure is None  # released: it runs


def test_bad_figure_folders_and_broken_notebooks_are_error_lines(build, tmp_path, monkeypatch, capsys):
    """Before: a figures folder that is a file was a FileExistsError traceback, and a notebook that is not JSON
    raised out of the pool (stopping the collection of the others' figures)."""
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setattr(build, "FIGURES_DIR", tmp_path / "a_file")
    assert build.main(["--only", "01_"]) == 1
    assert "it is a file, not a folder" in capsys.readouterr().err
    broken = tmp_path / "99_broken.ipynb"
    broken.write_text("{ not json")
    monkeypatch.setattr(build, "FIGURES_DIR", tmp_path / "figures")
    monkeypatch.setattr(build, "find_notebooks", lambda only: [broken])
    assert build.main([]) == 1
    err = capsys.readouterr().err
    assert "99_broken.ipynb: not a readable notebook" in err and "Traceback" not in err
