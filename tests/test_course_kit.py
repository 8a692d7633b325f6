"""The teacher's kit (docs/course_kit.py): slide marks on executed notebooks, and the bundle for hosted notebook
services, installed from its wheel into a fresh environment without the repository."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest
from test_browser import CHROMIUM, CHROMIUM_FLAGS  # the one place that finds Debian's chromium

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("course_kit", ROOT / "docs" / "course_kit.py")
course_kit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(course_kit)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def _executed_notebook():
    v4 = nbformat.v4
    figure = v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})
    text = v4.new_output("stream", name="stdout", text="accuracy 0.97\n")
    cells = [
        v4.new_markdown_cell("# 01 · Title\n\nObjectives."),
        v4.new_code_cell("import crossvit"),                                   # no output: left out
        v4.new_markdown_cell("## A section\n\nText before the figure, with a formula: $a_{ij} = 1/N$."),
        v4.new_code_cell("plot()", outputs=[figure]),                          # a figure: its own sub-slide
        v4.new_code_cell("print(acc)", outputs=[text]),                        # text output: on the same slide
        v4.new_markdown_cell("### A sub-heading\n\nMore text."),
        v4.new_code_cell("def f():\n    raise NotImplementedError", metadata={"tags": ["exercise"]},
                         outputs=[text]),                                      # an exercise stub: left out
        v4.new_markdown_cell("   "),
    ]
    return v4.new_notebook(cells=cells)


def test_slide_marks_follow_the_headings_and_hide_the_code():
    nb = course_kit.mark_slides(_executed_notebook())
    kinds = [cell.metadata["slideshow"]["slide_type"] for cell in nb.cells]
    assert kinds == ["slide", "skip", "slide", "subslide", "-", "subslide", "skip", "skip"]
    assert nb.cells[0].source == "# 01 · Title"  # the deck opens on the title, not on the learner's instructions
    assert all(cell.metadata.get("jupyter", {}).get("source_hidden") for cell in nb.cells
               if cell.cell_type == "code" and cell.metadata["slideshow"]["slide_type"] != "skip")


def test_slides_are_built_from_executed_notebooks_without_their_code(tmp_path):
    executed = tmp_path / "jupyter_execute" / "notebooks"
    executed.mkdir(parents=True)
    nbformat.write(_executed_notebook(), executed / "01_title.ipynb")
    (deck,) = course_kit.build_slides(tmp_path / "jupyter_execute", tmp_path / "slides")
    html = deck.read_text(encoding="utf-8")
    assert deck.name == "01_title.slides.html"
    assert "Text before the figure" in html and "accuracy 0.97" in html and "data:image/png;base64" in html
    assert "NotImplementedError" not in html and "print(acc)" not in html  # code and stubs stay out
    assert "Objectives." not in html  # the learner's instructions are not lecture content
    assert html.count("<section") >= 4  # two slides, each a vertical stack of sub-slides
    # everything the deck loads is beside it: no script or style sheet from elsewhere
    loaded = re.findall(r'<(?:script[^>]*\bsrc|link[^>]*\bhref)="([^"]+)"', html)
    loaded += re.findall(r'require\(\[([^\]]+)\]', html)
    assert loaded and not [url for url in loaded if "//" in url], loaded
    for asset in ("_assets/reveal.js/dist/reveal.js", "_assets/reveal.js/dist/reveal.css",
                  "_assets/reveal.js/dist/theme/white.css", "_assets/widgets/require.js",
                  "_assets/mathjax/tex-chtml-full.js"):
        assert (deck.parent / asset).is_file() and asset in html, asset


@pytest.mark.slow  # a real browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_slides_open_on_the_lecture_with_the_network_off(tmp_path):
    """In chromium from the files, every request off the machine blocked: reveal.js starts, the first slide is the
    notebook's title and the next one is lecture text."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executed = tmp_path / "executed"
    executed.mkdir()
    nbformat.write(_executed_notebook(), executed / "01_title.ipynb")
    (deck,) = course_kit.build_slides(executed, tmp_path / "slides")
    blocked = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://")
                       else (blocked.append(r.request.url), r.abort())[1])
            page.goto(deck.as_uri())
            page.locator(".reveal.ready").wait_for(timeout=60_000)  # reveal.js initialised
            first = page.locator(".reveal .slides section.present").last
            assert first.locator("h1").first.text_content().strip().rstrip("¶") == "01 · Title"  # (¶: its anchor)
            assert "Objectives" not in first.text_content()
            page.locator(".reveal .controls .navigate-right").click()  # the next slide: lecture text
            page.wait_for_function("() => [...document.querySelectorAll('.reveal .slides section.present')]"
                                   ".some(s => s.textContent.includes('A section'))", timeout=60_000)
            page.locator(".reveal mjx-container").first.wait_for(state="attached", timeout=60_000)  # MathJax typeset
        finally:
            browser.close()
    assert not blocked, blocked


def test_a_widget_gets_a_slide_of_its_own():
    v4 = nbformat.v4
    view = v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "m"},
                                               "text/plain": "Explorer(...)"})
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("## Explore\n\nA long paragraph before the explorer."),
                                v4.new_code_cell("explorer", outputs=[view])])
    kinds = [cell.metadata["slideshow"]["slide_type"] for cell in course_kit.mark_slides(nb).cells]
    assert kinds == ["slide", "subslide"]  # not under the paragraph, where it ran off the slide


@pytest.mark.slow  # a real browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_a_slide_taller_than_the_deck_scrolls_instead_of_running_off_the_screen(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    nb = _executed_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("## A long table\n\n| k | value |\n|---|---|\n"
                                                  + "".join(f"| {k} | row {k} |\n" for k in range(60))))
    executed = tmp_path / "executed"
    executed.mkdir()
    nbformat.write(nb, executed / "01_title.ipynb")
    (deck,) = course_kit.build_slides(executed, tmp_path / "slides")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(deck.as_uri() + "#/2")  # the third slide: the long table
            page.locator(".reveal.ready").wait_for(timeout=60_000)
            slide = page.locator(".reveal .slides section.present").last
            slide.get_by_text("row 0", exact=True).wait_for(timeout=60_000)
            box = slide.bounding_box()
            assert box["y"] >= 0 and box["y"] + box["height"] <= 800  # on the screen, all of it
            assert slide.evaluate("s => s.scrollHeight > s.clientHeight")  # the rest is below, to scroll to
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.wheel(0, 300)
            page.wait_for_function("s => s.scrollTop > 0", arg=slide.element_handle(), timeout=60_000)
        finally:
            browser.close()


def test_slides_say_what_to_do_when_there_is_no_executed_course(tmp_path):
    with pytest.raises(FileNotFoundError, match="no executed notebooks .* run `make slides` without --executed"):
        course_kit.build_slides(tmp_path, tmp_path / "slides")


def test_slides_and_bundles_never_replace_a_file_of_yours(tmp_path, capsys, monkeypatch):
    executed = tmp_path / "executed"
    executed.mkdir()
    nbformat.write(_executed_notebook(), executed / "01_title.ipynb")
    out = tmp_path / "talks"
    out.mkdir()
    mine = out / "01_title.slides.html"
    mine.write_text("my own deck")
    argv = ["slides", "--executed", str(executed), "--out", str(out)]
    assert course_kit.main(argv) == 1
    assert "01_title.slides.html exists" in capsys.readouterr().err
    assert mine.read_text() == "my own deck" and not (out / "_assets").exists()
    mine.unlink()
    assert course_kit.main(argv) == 0 and "reveal" in mine.read_text()  # written by this script ...
    assert course_kit.main(argv) == 0  # ... so a rebuild may replace it
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    assert course_kit.main(["slides", "--executed", str(executed), "--out", str(a_file)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err and a_file.read_text() == "notes"
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "crossvit-lab-course.zip").write_text("someone's zip")
    with pytest.raises(FileExistsError, match="crossvit-lab-course.zip exists"):
        course_kit.build_bundle(dist, ("student",))  # refused before the wheel is built
    assert (dist / "crossvit-lab-course.zip").read_text() == "someone's zip"
    own = tmp_path / "site" / "slides"  # the Makefile's own output folder (site/ in the checkout) is rebuilt freely
    own.mkdir(parents=True)
    (own / "01_title.slides.html").write_text("a deck from before the list existed")
    monkeypatch.setattr(course_kit, "OWN_BUILD_DIRS", (tmp_path / "site",))
    assert course_kit.main(["slides", "--executed", str(executed), "--out", str(own)]) == 0
    assert "reveal" in (own / "01_title.slides.html").read_text()


def test_the_student_edition_holds_no_solution_and_no_answer_key():
    student = {p.relative_to(ROOT).as_posix() for p in course_kit.edition_files("student")}
    teacher = {p.relative_to(ROOT).as_posix() for p in course_kit.edition_files("teacher")}
    notebooks = {p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert notebooks <= student and "notebooks/README.md" in student
    assert not any("solutions" in name or "teacher" in name for name in student), sorted(student)
    assert teacher - student == {"docs/teacher/answer_key.md"} | {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks" / "solutions").glob("*.py")}
    with pytest.raises(ValueError, match="edition"):
        course_kit.edition_files("everyone")


def test_every_page_the_notebooks_link_to_is_in_the_kit():
    """Notebooks 02 and 05 and the notebooks' README link to docs/relevance.md and docs/api.md, which the kit did
    not hold."""
    student = {p.relative_to(ROOT).as_posix() for p in course_kit.edition_files("student")}
    pages = [p for p in course_kit.edition_files("student") if p.suffix in (".ipynb", ".md") and
             p.parent.name == "notebooks"]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if page.suffix == ".ipynb":
            text = "\n".join(cell.source for cell in nbformat.reads(text, as_version=4).cells
                             if cell.cell_type == "markdown")
        for link in re.findall(r"\]\(([^)#\s]+\.(?:md|ipynb))(?:#[^)]*)?\)", text):
            if "://" not in link and (page.parent / link).resolve().relative_to(ROOT).as_posix() not in student:
                broken.append(f"{page.name} -> {link}")
    assert not broken, broken


def test_slides_refuse_a_deck_of_yours_before_executing_anything(tmp_path, capsys, monkeypatch):
    (tmp_path / "01_patch_embedding.slides.html").write_text("my own deck")
    monkeypatch.setattr(course_kit, "executed_course", lambda: pytest.fail("executed before checking --out"))
    assert course_kit.main(["slides", "--out", str(tmp_path)]) == 1
    assert "exists and no earlier run of this script wrote it" in capsys.readouterr().err
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "01_patch_embedding.ipynb").write_text("not json")
    assert course_kit.main(["slides", "--executed", str(executed), "--out", str(tmp_path / "decks")]) == 1
    assert "is not a readable notebook" in capsys.readouterr().err


@pytest.mark.slow  # builds a wheel
def test_a_bundle_is_built_outside_the_checkout_and_a_failed_build_claims_nothing(tmp_path, capsys, monkeypatch):
    """Before: pip built in the checkout (leaving build/ and *.egg-info, whose stale copy of a deleted module went
    into the next wheel), and a failed build was a traceback that had already listed the zip as the script's own,
    so that a file of the user's of that name was replaced on the next run."""
    had = {name: (ROOT / name).exists() for name in ("build", "crossvit_lab.egg-info")}
    (student,) = course_kit.build_bundle(tmp_path / "kit", ("student",))
    assert {name: (ROOT / name).exists() for name in had} == had
    with zipfile.ZipFile(student) as archive:
        assert any(name.endswith(".whl") for name in archive.namelist())

    def failing(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0])

    monkeypatch.setattr(course_kit.subprocess, "run", failing)
    assert course_kit.main(["bundle", "--edition", "student", "--out", str(tmp_path / "other")]) == 1
    assert "building the wheel failed" in capsys.readouterr().err
    assert not (tmp_path / "other" / course_kit.WRITTEN_LIST).exists()


def test_the_student_edition_of_the_course_folder(tmp_path):
    folder = course_kit.build_folder(tmp_path, "student")
    assert (folder / "notebooks" / "01_patch_embedding.ipynb").is_file() and (folder / "figures").is_dir()
    assert not (folder / "notebooks" / "solutions").exists() and not (folder / "docs" / "teacher").exists()
    with pytest.raises(FileExistsError, match="exists"):
        course_kit.build_folder(tmp_path, "teacher")  # never written over


@pytest.mark.slow  # builds a wheel and a virtual environment
def test_the_bundles_install_from_their_wheel_in_a_fresh_environment(tmp_path):
    """What a hosted notebook service does with the zip: unzip, install the wheel without dependencies (the
    service has them; here a fresh venv borrows this environment's packages but not its editable crossvit),
    then run a course notebook's first steps from the unpacked notebooks folder. The student edition has no
    solutions (and the hints say so), the teacher's has them."""
    student_zip, teacher_zip = course_kit.build_bundle(tmp_path / "dist")
    assert student_zip.name == "crossvit-lab-course.zip" and teacher_zip.name == "crossvit-lab-course-teacher.zip"
    with zipfile.ZipFile(teacher_zip) as archive:
        names = archive.namelist()
    assert any(n.startswith(f"{course_kit.BUNDLE_NAME}/notebooks/solutions/") for n in names)
    assert f"{course_kit.BUNDLE_NAME}/docs/teacher/answer_key.md" in names
    with zipfile.ZipFile(student_zip) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "upload")
    assert not any("solutions" in n or "answer_key" in n for n in names)
    course = tmp_path / "upload" / course_kit.BUNDLE_NAME
    assert {f"{course_kit.BUNDLE_NAME}/notebooks/{p.name}" for p in (ROOT / "notebooks").glob("0*.ipynb")} <= set(names)
    (wheel,) = course.glob("crossvit_lab-*.whl")

    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    python = fresh / "bin" / "python"
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies a hosted service already has (torch, ...): this environment's packages, appended after the
    # fresh venv's own site-packages, whose .pth files (the editable install of the checkout) are not read
    (fresh_site / "provided.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True)
    script = (
        "import crossvit, torch\n"
        "from pathlib import Path\n"
        "from crossvit import exercises\n"
        f"assert Path(crossvit.__file__).is_relative_to({str(fresh)!r}), crossvit.__file__\n"
        "model = crossvit.create_model('shapes_tiny', pretrained=True)\n"
        "images, labels, masks = crossvit.data.make_shapes(4, seed=crossvit.data.HELD_OUT_SEED_BASE + 7,"
        " image_size=model.image_size)\n"
        "acc = (model(images).argmax(-1) == labels).float().mean().item()\n"
        "maps = crossvit.explain(model, images, 'gradient_rollout')\n"
        "last = [exercises.hint('1.1') for _ in range(4)][-1]\n"
        "print('ok', acc, tuple(maps.shape), 'holds no solutions' in last)\n"
    )
    result = subprocess.run([str(python), "-c", script], cwd=course / "notebooks", capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    ok, accuracy, *_ = result.stdout.split()[-6:]
    assert ok == "ok" and float(accuracy) >= 0.75
    assert result.stdout.strip().endswith("True")
