"""The notebooks: each runs top to bottom in a fresh kernel of this venv and writes exactly its figures; every
notebook in the repository is stored with outputs stripped and a kernelspec (so JupyterLab asks no questions),
and follows the course conventions (objectives, prerequisites and a time estimate up front, a recap and a pointer
to the next notebook at the end, exercises as described in ``crossvit/exercises/``).

Each notebook is executed twice, top to bottom as Run All does: as committed, where every cell must succeed and
every checker must print one calm "not attempted yet" line (the exercises are stubs), and with the solutions of
``notebooks/solutions/<stem>.py`` in place of the stubs, where every checker must accept them. Both runs are marked
``slow`` (``make test`` runs them, ``make test-fast`` does not).

Execution is ``figures/build.py``'s :func:`run_notebook`, the one runner of the project: kernel = this interpreter,
working directory = ``notebooks/``, figures written to a folder of their own, and the execution cached under the
notebook's code, the library's files and the environment. The committed run is the very execution that ``make site``
and ``make figures`` use (whichever runs first executes it), and a run repeated with nothing changed is read from the
cache: what it asserts (every cell ran, the figures written, the checkers' lines) is a property of that execution.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat
import pytest

from crossvit import exercises
from crossvit.weights import cached_weights

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


sys.path.insert(0, str(ROOT / "docs"))
from course_kit import load_runner  # noqa: E402  (docs/course_kit.py: the one loader of figures/build.py)

runner = load_runner()

# Every numbered notebook and the figures it must write (and no others).
EXPECTED_FIGURES: dict[str, list[str]] = {
    "01_patch_embedding.ipynb": [
        "01_shapes_samples.png", "01_patch_grids.png", "01_patch_filters.png",
        "01_position_similarity_small.png", "01_position_similarity_large.png",
    ],
    "02_dual_branch_encoding.ipynb": [
        "02_architecture.png", "02_cls_attention_by_block.png", "02_cls_attention_heads.png",
        "02_branch_logits.png",
    ],
    "03_cross_attention_and_hooks.ipynb": [
        "03_cross_attention_by_block.png", "03_cross_attention_heads_small.png",
        "03_cross_attention_heads_large.png",
    ],
    "04_attention_rollout.ipynb": [
        "04_rollout_variants.png", "04_rollout_start_block.png", "04_joint_rollout.png",
        "04_joint_rollout_last_block.png", "04_grad_rollout_classes.png",
    ],
    "05_attributions_compared.ipynb": ["05_methods_gallery.png", "05_two_objects.png", "05_attnlrp_two_objects.png",
                                       "05_deletion_insertion.png"],
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


def numbered_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def cell_text(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells)


@pytest.mark.parametrize("path", numbered_notebooks(), ids=lambda p: p.name)
def test_notebook_opens_with_objectives_and_ends_with_a_recap(path: Path):
    nb = nbformat.read(path, as_version=4)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.name[:2]} ")
    assert re.search(r"\*\*Time:\*\* about \d+ minutes", first.source), "a time estimate in minutes"
    assert "**You will be able to**" in first.source and first.source.count("\n* ") >= 2, "learning objectives"
    assert "**Before you start:**" in first.source, "prerequisites"
    assert "README.md#terms" in first.source, "a pointer to where the terms are explained"
    assert last.cell_type == "markdown" and last.source.startswith("## Recap")
    assert "**Next:**" in last.source, "a pointer to the next notebook"
    assert "DESIGN.md" not in cell_text(nb), "DESIGN.md is not part of the repository: link docs/ instead"


@pytest.mark.parametrize("path", numbered_notebooks(), ids=lambda p: p.name)
def test_every_figure_and_table_has_a_sentence_under_it(path: Path):
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and ("save_figure(" in cell.source or "markdown_table(" in cell.source):
            following = nb.cells[index + 1] if index + 1 < len(nb.cells) else None
            assert following is not None and following.cell_type == "markdown", (
                f"cell {index} shows a figure or table; the next cell must say what to see in it")


COURSE = sorted({ex.notebook for ex in exercises.EXERCISES})


@pytest.mark.parametrize("stem", COURSE)
def test_exercise_cells_follow_the_convention(stem: str):
    """Each exercise: a tagged cell defining the stub (raising NotImplementedError), then a cell handing the function
    itself to its checker; the solutions file has the function; the registry lists them in this order."""
    nb = nbformat.read(NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4)
    found = exercises.exercise_cells(nb)
    assert [name for _, name in found] == [ex.name for ex in exercises.EXERCISES if ex.notebook == stem]
    assert len(found) >= 2
    solutions = exercises.solution_functions(exercises.solutions_path(NOTEBOOKS_DIR / f"{stem}.ipynb"))
    for index, name in found:
        stub = nb.cells[index].source
        function = next(n for n in ast.parse(stub).body if isinstance(n, ast.FunctionDef))
        assert function.name == name
        assert isinstance(function.body[-1], ast.Raise) and "NotImplementedError" in ast.unparse(function.body[-1])
        assert not re.search(rf"^(?!def )[^#\s].*\b{name}\(", stub, re.M), f"exercise cell {index} must not call {name}()"
        checker = nb.cells[index + 1]
        assert checker.cell_type == "code" and re.search(rf"exercises\.check_{name}\({name}\b", checker.source)
        assert name in solutions, f"notebooks/solutions/{stem}.py has no function {name}"
        uses = [i for i, cell in enumerate(nb.cells) if i not in (index, index + 1) and cell.cell_type == "code"
                and re.search(rf"(?<![\w.]){name}\(", cell.source)]
        assert not uses, f"cells {uses} call {name}(): only the checker calls the learner's function"


@pytest.mark.slow
def test_a_notebook_kernel_ends_with_its_notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\npid = os.getpid()\nprint(pid)")]
    done = runner.run_notebook(nb, "kernel_check.ipynb", cache_dir=None)  # fails when the kernel outlives it
    assert done.failure is None, done.failure
    pid = int(done.notebook.cells[0].outputs[0]["text"])
    assert not runner.process_alive(pid)


def run_notebook(nb, name: str) -> tuple[nbformat.NotebookNode, list[str]]:
    """``nb`` executed top to bottom in a fresh kernel, as Run All does (or its cached execution): every cell must
    succeed (an exercise left as a stub does not stop anything: its checker says it is not attempted yet).
    Returns the executed notebook and the figures it wrote, each checked to be a real PNG."""
    done = runner.run_notebook(nb, name)
    assert done.failure is None, f"{done.failure.summary}\n{done.failure.details[-3000:]}"
    written = sorted(done.figures)
    for figure, path in done.figures.items():
        content = path.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 1000, f"{figure} is not a real PNG"
    return done.notebook, written


def checker_output(nb, index: int) -> str:
    """What the checker cell after exercise cell ``index`` printed."""
    return "".join(out.get("text", "") for out in nb.cells[index + 1].outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_notebook_runs_as_committed_and_writes_its_figures(name: str):
    path = NOTEBOOKS_DIR / name
    original = path.read_bytes()
    nb, written = run_notebook(nbformat.read(path, as_version=4), name)  # Run All reaches the end
    assert written == sorted(EXPECTED_FIGURES[name])
    for index, _ in exercises.exercise_cells(nb):  # one calm line per unsolved exercise, no traceback
        printed = checker_output(nb, index)
        assert printed.startswith("\u2026 exercise") and "not attempted yet" in printed, printed
        assert printed.count("\n") == 1 and not any(o.output_type == "error" for o in nb.cells[index + 1].outputs)
    assert path.read_bytes() == original, "executing must not modify the stored notebook"


@pytest.mark.slow
@pytest.mark.parametrize("stem", COURSE)
def test_notebook_runs_with_the_solutions(stem: str):
    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    solved = exercises.with_solutions(nbformat.read(path, as_version=4), exercises.solutions_path(path))
    nb, written = run_notebook(solved, f"{stem}.solved.ipynb")
    assert written == sorted(EXPECTED_FIGURES[path.name])
    for index, _ in exercises.exercise_cells(nb):
        printed = checker_output(nb, index).strip().splitlines()  # (a training run prints its progress first)
        assert printed and printed[-1].startswith("\u2713 "), f"the checker after cell {index} printed {printed!r}"


def test_with_solutions_replaces_only_the_stub(tmp_path: Path):
    solutions = tmp_path / "solutions.py"
    solutions.write_text("import math\n\n\n# Exercise\ndef area(r):\n    return math.pi * r * r\n\n\n"
                         "def other():\n    pass\n")
    nb = nbformat.v4.new_notebook()
    stub = nbformat.v4.new_code_cell("# Exercise\ndef area(r):\n    raise NotImplementedError\n\n\nanswer = area(2.0)")
    stub.metadata["tags"] = ["exercise"]
    nb.cells = [nbformat.v4.new_code_cell("import math"), stub, nbformat.v4.new_code_cell("check_area(answer)")]
    solved = exercises.with_solutions(nb, solutions)
    assert solved.cells[1].source == "# Exercise\ndef area(r):\n    return math.pi * r * r\n\n\nanswer = area(2.0)"
    assert [c.source for c in solved.cells[::2]] == [c.source for c in nb.cells[::2]]
    assert "raise NotImplementedError" in nb.cells[1].source  # the notebook given is left as it was
    namespace: dict = {}
    exec(solved.cells[0].source + "\n" + solved.cells[1].source, namespace)
    assert namespace["answer"] == pytest.approx(3.14159265 * 4)
    solutions.write_text("def volume(r):\n    return r\n")
    with pytest.raises(ValueError, match="no solution for exercise 'area'"):
        exercises.with_solutions(nb, solutions)
