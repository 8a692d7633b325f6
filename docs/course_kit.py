#!/usr/bin/env python3
"""The teacher's kit: lecture slides from the executed course, and the course in two editions for hosted notebook
services and shared drives.

    .venv/bin/python docs/course_kit.py slides [--out site/slides] [--executed DIR]
    .venv/bin/python docs/course_kit.py bundle [--edition student|teacher|both] [--out dist]
    .venv/bin/python docs/course_kit.py folder --edition student --out DIR

``slides`` turns each course notebook, executed, into a reveal.js deck with nbconvert: a new slide at every
``#``/``##`` heading, a sub-slide for every further markdown cell and every figure or widget (an explorer, a
question), the code cells hidden (their outputs shown), exercise stubs and empty cells left out; a slide taller than
the deck (a long table) scrolls. A deck opens on the lecture: its title slide is the
notebook's title alone, without the learner's instructions that follow it (time, objectives, prerequisites, how
the exercises work). The executions are ``figures/build.py``'s cached ones, the same that ``make site`` and
``make figures`` use (executed now only when not cached); ``--executed DIR`` takes executed notebooks from a
folder instead. The decks work offline: reveal.js, MathJax and the widget manager (``docs/_static/``) are copied
beside them, nothing is loaded from a CDN. The committed notebooks are
never touched: the slide marks are set on copies in memory.

``bundle`` writes the course as zips that a hosted notebook service (Colab, Kaggle, a JupyterHub) can run from an
uploaded file, without this repository's address: the library as a wheel, the notebooks, the documentation pages
they link to and the course page. Two editions:

* ``dist/crossvit-lab-course.zip``, the **student** edition, for the class: no solutions, no answer key (the hints'
  last tier then says that this copy holds no solutions);
* ``dist/crossvit-lab-course-teacher.zip``, the **teacher** edition: the same plus ``notebooks/solutions/`` and
  ``docs/teacher/answer_key.md``.

Both unpack to ``crossvit-lab-course/``. ``folder`` writes an edition's files unpacked (no wheel), e.g. the
student edition of the course folder for a lab's shared drive.

Nothing of yours is replaced: ``slides`` and ``bundle`` list what they write in ``--out`` (``.course_kit.json``)
and rebuild only those files; a file by the same name that no earlier run wrote there, or an ``--out`` that is a
file, ends the command with one ``error:`` line (exit status 1), as an existing ``folder`` target does. The
project's own build folders, ``site/`` and ``dist/`` in the checkout, are rebuilt freely.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat

from crossvit.utils import atomic_write

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))
import widget_assets  # noqa: E402  (docs/widget_assets.py)

STATIC = widget_assets.STATIC
ASSETS = "_assets"  # the folder beside the decks that holds reveal.js and the widget manager
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
BUNDLE_NAME = "crossvit-lab-course"
EDITIONS = ("student", "teacher")
# what every edition carries besides the wheel, relative to the repository root
# every documentation page the notebooks and these pages link to (tests/test_course_kit.py checks the links)
BUNDLE_FILES = ("notebooks/README.md", "docs/architecture.md", "docs/rollout.md", "docs/relevance.md", "docs/api.md",
                "docs/README.md")
BUNDLE_GLOBS = ("notebooks/" + NOTEBOOK_GLOB,)
TEACHER_FILES = ("docs/teacher/answer_key.md",)  # and the solutions: the teacher's edition only
TEACHER_GLOBS = ("notebooks/solutions/*.py",)
OWN_BUILD_DIRS = (ROOT / "site", ROOT / "dist")  # the Makefile's output folders (gitignored), rebuilt freely
WRITTEN_LIST = ".course_kit.json"  # in --out: the names this script wrote there, which a rerun may replace
SKIPPED_TAGS = {"exercise"}  # exercise stubs say nothing in a lecture


def _heading_level(source: str) -> int:
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    hashes = len(first) - len(first.lstrip("#"))
    return hashes if first[hashes:hashes + 1] == " " else 0


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _has_figure(cell) -> bool:
    """Whether ``cell`` shows a picture: a figure, or a widget (an explorer or a question) that draws its own."""
    return any({"image/png", WIDGET_VIEW} & set(output.get("data", {})) for output in cell.get("outputs", []))


def mark_slides(nb):
    """Set ``metadata.slideshow.slide_type`` on every cell of ``nb`` (in place) and hide the code; the first cell,
    when it opens with the notebook's ``#`` title, is cut to that title (the learner's instructions that follow it
    are not lecture content). Returns ``nb``."""
    for index, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "markdown":
            level = _heading_level(cell.source)
            if index == 0 and level == 1:
                cell.source = cell.source.lstrip().splitlines()[0]
            kind = "slide" if 1 <= level <= 2 else "subslide"
        elif cell.cell_type == "code" and cell.get("outputs") and not tags & SKIPPED_TAGS:
            kind = "subslide" if _has_figure(cell) else "-"
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
            cell.metadata["transient"] = {"remove_source": True}
        else:
            kind = "skip"
        if not cell.source.strip() and cell.cell_type == "markdown":
            kind = "skip"
        cell.metadata["slideshow"] = {"slide_type": kind}
    return nb


# nbconvert's reveal template, with every script and style sheet from the assets beside the decks: reveal.js, MathJax 3
# and the widget manager of the course site; no jQuery, no mermaid and no MathJax 2 from a CDN.
SLIDES_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_jquery -%}{%- endblock html_head_js_jquery -%}
{%- block html_head_js_requirejs -%}<script src="ASSETS/widgets/require.js"></script>{%- endblock -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script>window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], processEscapes: true}};</script>
<script src="ASSETS/mathjax/tex-chtml-full.js" defer></script>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_css -%}
{{ super() }}
<style>
/* a slide taller than the deck's 700 px (a long table, a long paragraph) scrolls instead of running off the screen */
.reveal .slides section:not(.stack) { max-height: 700px; overflow-y: auto; }
</style>
{%- endblock html_head_css -%}
{% block jupyter_widgets %}
{%- if "widgets" in nb.metadata -%}
<script src="ASSETS/widgets/front-ends.js"></script>
<script src="ASSETS/widgets/offline.js"></script>
<script src="ASSETS/widgets/embed-amd.js"></script>
{%- endif -%}
{% endblock jupyter_widgets %}
{% block footer_js %}
<script>
require(["ASSETS/reveal.js/dist/reveal.js", "ASSETS/reveal.js/plugin/notes/notes.js"], function (Reveal, RevealNotes) {
  Reveal.initialize({controls: true, progress: true, history: true, transition: "slide", plugins: [RevealNotes],
                     width: 960, height: 700});
});
</script>
{% endblock footer_js %}
""".replace("ASSETS", ASSETS)


def load_runner():
    """``figures/build.py``, the project's cached notebook runner, as a module: the one loader of it, shared by the
    site (``docs/conf.py``), the slides and the notebook tests."""
    name = "crossvit_figures_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "figures" / "build.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # (its dataclasses look their module up there)
        spec.loader.exec_module(module)
    return sys.modules[name]


def executed_course() -> dict[str, nbformat.NotebookNode]:
    """Every course notebook executed (from the cache that ``make site`` and ``make figures`` share, executed now
    where it is not cached), by file stem. A notebook that fails stops the slides with its reason."""
    from tqdm.auto import tqdm

    runner = load_runner()
    executed = {}
    for path in tqdm(runner.find_notebooks(None), desc="executing (cached ones are instant)", unit="notebook"):
        nb = nbformat.read(path, as_version=4)
        done = runner.run_notebook(nb, path.name)
        if done.failure is not None:
            raise SystemExit(f"cannot make the slides: {done.failure.summary}")
        executed[path.stem] = runner.with_outputs(nb, done.notebook)
    return executed


def claim_outputs(out: Path, names: list[str], *, write: bool = True) -> None:
    """Make ``out`` ready for this script to write ``names`` (files or folders) in it: refused (FileExistsError)
    when ``out`` is not a folder, or when one of ``names`` exists there and no earlier run of this script wrote it
    (see the module docstring); the names are then added to ``out``'s list of what this script wrote (not with
    ``write=False``: a check before long work, which may still fail)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    listed = out / WRITTEN_LIST
    try:
        ours = set(json.loads(listed.read_text())) if listed.is_file() else set()
    except (ValueError, TypeError, OSError):  # an unreadable list vouches for nothing
        ours = set()
    own_build = any(out.resolve().is_relative_to(folder.resolve()) for folder in OWN_BUILD_DIRS)
    for name in names:
        if not own_build and name not in ours and (out / name).exists():
            raise FileExistsError(f"{out / name} exists and no earlier run of this script wrote it; choose another "
                                  "--out, or move it away first")
    if not names or not write:  # only checking --out: nothing written yet
        return
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(sorted(ours | set(names)), indent=1) + "\n"
    atomic_write(listed, lambda tmp: tmp.write_text(text))  # an interrupted run leaves the old list whole


def build_slides(executed: Path | dict[str, nbformat.NotebookNode], out: Path) -> list[Path]:
    """One ``<notebook>.slides.html`` in ``out`` per executed notebook (a folder searched for them, or the
    notebooks by name), with the assets they load beside them (``out/_assets``)."""
    import jinja2
    from nbconvert import SlidesExporter

    if isinstance(executed, Path):
        found = sorted(executed.rglob(NOTEBOOK_GLOB))
        if not found:
            what = "no executed notebooks (NN_*.ipynb) there" if executed.is_dir() else "no such folder"
            raise FileNotFoundError(f"--executed {executed}: {what}; run `make slides` without --executed to "
                                    "execute them")
        executed = {}
        for path in found:
            try:
                executed[path.stem] = nbformat.read(path, as_version=4)
            except Exception as err:  # noqa: BLE001 - any reason a file is not a notebook
                raise ValueError(f"--executed: {path} is not a readable notebook ({type(err).__name__})") from None
    claim_outputs(out, [ASSETS, *(f"{stem}.slides.html" for stem in executed)])
    assets = out / ASSETS
    for folder in ("reveal.js", "mathjax", "widgets"):
        shutil.copytree(STATIC / folder, assets / folder, dirs_exist_ok=True)
    widget_assets.copy_front_ends(assets)  # the front ends Python packages ship, as the site serves them
    exporter = SlidesExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                              reveal_url_prefix=f"{ASSETS}/reveal.js", reveal_theme="white",
                              extra_loaders=[jinja2.DictLoader({"crossvit_slides.j2": SLIDES_TEMPLATE})],
                              template_file="crossvit_slides.j2")
    written = []
    for stem, nb in sorted(executed.items()):
        nb = mark_slides(nbformat.from_dict(nb))
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": stem}})
        target = out / f"{stem}.slides.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
        print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return written


def edition_files(edition: str) -> list[Path]:
    """The course files of one edition (``"student"`` or ``"teacher"``), absolute paths in the repository."""
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {EDITIONS}, got {edition!r}")
    files = [ROOT / name for name in BUNDLE_FILES]
    for pattern in BUNDLE_GLOBS:
        files += sorted(ROOT.glob(pattern))
    if edition == "teacher":
        files += [ROOT / name for name in TEACHER_FILES]
        for pattern in TEACHER_GLOBS:
            files += sorted(ROOT.glob(pattern))
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} is missing: the kit is built from a checkout of the repository")
    return files


def bundle_path(out: Path, edition: str) -> Path:
    """Where :func:`build_bundle` writes an edition: the student edition keeps the name the class uploads."""
    return out / (f"{BUNDLE_NAME}.zip" if edition == "student" else f"{BUNDLE_NAME}-{edition}.zip")


def build_folder(out: Path, edition: str) -> Path:
    """The files of ``edition`` unpacked under ``out/crossvit-lab-course/`` (refused if that folder exists)."""
    target = out / BUNDLE_NAME
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another --out, or move it away first")
    for path in edition_files(edition):
        destination = target / path.relative_to(ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(path.read_bytes())
    (target / "figures").mkdir(parents=True, exist_ok=True)  # the notebooks save their figures here
    print(f"{target}: the {edition} edition of the course")
    return target


def build_bundle(out: Path, editions: tuple[str, ...] = EDITIONS) -> list[Path]:
    """One zip per edition in ``out`` (see the module docstring): the wheel (built from this checkout) and the
    edition's course files."""
    names = [bundle_path(out, edition).name for edition in editions]
    claim_outputs(out, names, write=False)  # refused before the build
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        # built from a copy of the checkout's files: nothing is left in the checkout (build/, *.egg-info)
        # and nothing stale from an earlier build (a deleted module) gets into the wheel
        source = Path(tmp) / "source"
        _copy_tracked_files(source)
        # --no-build-isolation: setuptools comes from the environment, so the build needs no network
        try:
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            tmp, str(source)], check=True)
        except subprocess.CalledProcessError as err:
            raise OSError(f"building the wheel failed (pip exited with {err.returncode}; its output is above): no "
                          "kit was written") from None
        (wheel,) = Path(tmp).glob("crossvit_lab-*.whl")
        claim_outputs(out, names)
        for edition in editions:
            files = edition_files(edition)
            target = bundle_path(out, edition)
            partial = target.with_suffix(".zip.partial")
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.write(wheel, f"{BUNDLE_NAME}/{wheel.name}")
                for path in files:
                    archive.write(path, f"{BUNDLE_NAME}/{path.relative_to(ROOT).as_posix()}")
                archive.writestr(f"{BUNDLE_NAME}/figures/.keep", "")  # the notebooks save their figures here
            partial.replace(target)
            print(f"{target}: the {edition} edition ({wheel.name} and {len(files)} course files)")
            written.append(target)
    return written


def _copy_tracked_files(target: Path) -> None:
    """The checkout's files as git lists them (tracked, and untracked ones it does not ignore, with their
    working-tree content; not ignored build outputs) copied to ``target``; outside a git checkout, every file but
    build outputs and caches."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                check=True, capture_output=True).stdout.decode().split("\0")
        files = [ROOT / name for name in listed if name and (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {"build", "dist", "site", ".venv", ".git", ".cache", "__pycache__"}
        files = [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
                 and not any(part.endswith(".egg-info") for part in p.parts)]
    for path in files:
        destination = target / path.relative_to(ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    slides = commands.add_parser("slides", help="reveal.js decks from the executed notebooks")
    slides.add_argument("--executed", type=Path, default=None,
                        help="a folder of executed notebooks (default: the cached executions, run where missing)")
    slides.add_argument("--out", type=Path, default=ROOT / "site" / "slides",
                        help="folder for the decks and their assets (default: site/slides in the checkout)")
    bundle = commands.add_parser("bundle", help="the course as zips for hosted notebook services")
    bundle.add_argument("--edition", choices=[*EDITIONS, "both"], default="both",
                        help="student (no solutions, no answer key), teacher, or both (default)")
    bundle.add_argument("--out", type=Path, default=ROOT / "dist",
                        help="folder for the zips (default: dist/ in the checkout)")
    folder = commands.add_parser("folder", help="an edition of the course folder, unpacked")
    folder.add_argument("--edition", choices=EDITIONS, required=True)
    folder.add_argument("--out", type=Path, required=True,
                        help="folder to write crossvit-lab-course/ into (that subfolder must not exist yet)")
    args = parser.parse_args(argv)
    try:
        if args.command == "slides":
            if args.executed is not None and not args.executed.is_dir():
                raise FileNotFoundError(f"--executed {args.executed}: no such folder")
            stems = [p.stem for p in (sorted(args.executed.rglob(NOTEBOOK_GLOB)) if args.executed is not None
                                      else load_runner().find_notebooks(None))]
            # a bad --out, or a deck of someone else's there, is refused before the notebooks are executed
            claim_outputs(args.out, [ASSETS, *(f"{stem}.slides.html" for stem in stems)], write=False)
            build_slides(args.executed if args.executed is not None else executed_course(), args.out)
        elif args.command == "bundle":
            build_bundle(args.out, EDITIONS if args.edition == "both" else (args.edition,))
        else:
            build_folder(args.out, args.edition)
    except (OSError, ValueError, SystemExit) as err:  # FileExistsError, FileNotFoundError; SystemExit: a notebook
        # failed; ValueError: a file that is not a notebook
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
