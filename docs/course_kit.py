#!/usr/bin/env python3
"""The teacher's kit: lecture slides from the executed course, and a zip for hosted notebook services.

    .venv/bin/python docs/course_kit.py slides [--executed site/jupyter_execute] [--out site/slides]
    .venv/bin/python docs/course_kit.py bundle [--out dist]

``slides`` turns each executed notebook of the site build (``make site`` writes them to ``site/jupyter_execute``)
into a reveal.js deck with nbconvert: a new slide at every ``#``/``##`` heading, a sub-slide for every further
markdown cell and every figure, the code cells hidden (their outputs shown), exercise stubs and empty cells left out.
The committed notebooks are never touched: the slide marks are set on copies in memory.

``bundle`` writes ``dist/crossvit-lab-course.zip``: the library as a wheel, the notebooks with their solutions, the
documentation pages the notebooks link to and the teacher's page, so that a hosted notebook service (Colab, Kaggle,
a JupyterHub) can run the course from an uploaded file, without this repository's address.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
BUNDLE_NAME = "crossvit-lab-course"
# what the bundle carries besides the wheel, relative to the repository root
BUNDLE_FILES = ("notebooks/README.md", "docs/architecture.md", "docs/rollout.md", "docs/README.md")
BUNDLE_GLOBS = ("notebooks/" + NOTEBOOK_GLOB, "notebooks/solutions/*.py")
SKIPPED_TAGS = {"exercise"}  # exercise stubs say nothing in a lecture


def _heading_level(source: str) -> int:
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    hashes = len(first) - len(first.lstrip("#"))
    return hashes if first[hashes:hashes + 1] == " " else 0


def _has_figure(cell) -> bool:
    return any("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def mark_slides(nb):
    """Set ``metadata.slideshow.slide_type`` on every cell of ``nb`` (in place) and hide the code; returns ``nb``."""
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "markdown":
            level = _heading_level(cell.source)
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


def build_slides(executed: Path, out: Path) -> list[Path]:
    """One ``<notebook>.slides.html`` in ``out`` per executed notebook found under ``executed``."""
    from nbconvert import SlidesExporter

    notebooks = sorted(executed.rglob(NOTEBOOK_GLOB))
    if not notebooks:
        raise SystemExit(f"no executed notebooks under {executed}: run `make site` first")
    out.mkdir(parents=True, exist_ok=True)
    exporter = SlidesExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    written = []
    for path in notebooks:
        nb = mark_slides(nbformat.read(path, as_version=4))
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        target = out / f"{path.stem}.slides.html"
        target.write_text(body, encoding="utf-8")
        written.append(target)
        print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return written


def build_bundle(out: Path) -> Path:
    """``out/crossvit-lab-course.zip``: the wheel (built from this checkout) and the course files."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # --no-build-isolation: setuptools comes from the environment, so the build needs no network
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp,
                        str(ROOT)], check=True)
        (wheel,) = Path(tmp).glob("crossvit_lab-*.whl")
        files = [ROOT / name for name in BUNDLE_FILES]
        for pattern in BUNDLE_GLOBS:
            files += sorted(ROOT.glob(pattern))
        target = out / f"{BUNDLE_NAME}.zip"
        partial = target.with_suffix(".zip.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(wheel, f"{BUNDLE_NAME}/{wheel.name}")
            for path in files:
                archive.write(path, f"{BUNDLE_NAME}/{path.relative_to(ROOT).as_posix()}")
            archive.writestr(f"{BUNDLE_NAME}/figures/.keep", "")  # the notebooks save their figures here
        partial.replace(target)
    print(f"{target} ({wheel.name} and {len(files)} course files)")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    slides = commands.add_parser("slides", help="reveal.js decks from the executed notebooks")
    slides.add_argument("--executed", type=Path, default=ROOT / "site" / "jupyter_execute")
    slides.add_argument("--out", type=Path, default=ROOT / "site" / "slides")
    bundle = commands.add_parser("bundle", help="a zip for hosted notebook services")
    bundle.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    if args.command == "slides":
        build_slides(args.executed, args.out)
    else:
        build_bundle(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
