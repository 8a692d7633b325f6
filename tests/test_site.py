"""The course web site (``make site``): built from a clean state with every notebook executed, then read as a
learner reads it, in Debian's chromium from the files (``file://``): every notebook page shows its outputs and
figures, the API reference documents all of ``crossvit.__all__`` and lists every explanation method of the registry,
no link inside the site is broken, and the answer key stays out.
"""

from __future__ import annotations

import html.parser
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_FLAGS  # the one place that finds Debian's chromium

import crossvit
from crossvit.explain import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
COURSE = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

pytestmark = pytest.mark.slow  # executes the whole course: `make test` runs it, `make test-fast` does not


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``make site`` into a fresh folder (the Makefile's own command, run by this Python); yields its html/."""
    pytest.importorskip("myst_nb")
    out = tmp_path_factory.mktemp("site")
    started = time.perf_counter()
    # STAMP= : the environment running the tests is the one to use (no install step from inside the test run)
    result = subprocess.run(["make", "-s", "site", f"SITE_DIR={out}", f"VPY={sys.executable}", "STAMP="],
                            cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, MAKEFLAGS=""))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    print(f"make site: {time.perf_counter() - started:.0f} s")
    yield out / "html"


class _Page(html.parser.HTMLParser):
    """The ids and the link targets of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids, self.links, self.images = set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.links.append(attrs["src"])
            self.images.append(attrs["src"])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_every_internal_link_of_the_site_resolves(site):
    pages = {path: _parse(path) for path in site.rglob("*.html")}
    checked, broken = 0, []
    for path, page in pages.items():
        for href in page.links:
            parts = urllib.parse.urlsplit(href)
            if parts.scheme or href.startswith("//"):
                continue  # the readings and the libraries' pages: outside the site
            target = (path.parent / urllib.parse.unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{path.relative_to(site)}: {href} (no file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if urllib.parse.unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {href} (no #{parts.fragment})")
    assert checked > 500, checked  # the toctree alone links every page from every page
    assert not broken, "\n".join(broken)


def test_the_answer_key_and_solutions_are_not_published(site):
    published = [p.relative_to(site).as_posix() for p in site.rglob("*")]
    assert not [p for p in published if "answer_key" in p or "solutions" in p]
    key = (ROOT / "docs" / "teacher" / "answer_key.md").read_text(encoding="utf-8")
    # a sentence of the key's rubric that no public page says
    rubric_line = next(line for line in key.splitlines() if len(line) > 80 and not line.startswith("#"))
    assert not any(rubric_line[:60] in p.read_text(encoding="utf-8") for p in site.rglob("*.html"))


def test_the_api_reference_documents_every_public_name_and_method(site):
    ids = _parse(site / "docs" / "api.html").ids
    text = (site / "docs" / "api.html").read_text(encoding="utf-8")
    missing = [name for name in crossvit.__all__ if f"crossvit.{name}" not in ids and f"module-crossvit.{name}" not in ids]
    assert not missing, missing
    for name, record in REGISTRY.items():  # the generated methods table: one row per registered method
        assert re.search(rf"<code[^>]*>\s*(<span[^>]*>)?{name}(</span>)?\s*</code>", text), name
        # the summary's first words (Sphinx typesets apostrophes as typographic quotes: stop before one)
        assert record.summary.split(",")[0].split("'")[0][:30] in text, name


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_every_notebook_page_shows_its_outputs_and_figures_in_the_browser(site):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto((site / "index.html").as_uri())  # the folder opens as a site: index.html leads to the start
            page.wait_for_url("**/docs/index.html")
            for name in COURSE:
                page.goto((site / "notebooks" / f"{name}.html").as_uri())
                page.wait_for_load_state("load")
                outputs = page.locator(".cell_output").count()
                assert outputs >= 5, (name, outputs)  # executed: its outputs are on the page
                images = page.locator("article .cell_output img")
                assert images.count() >= 1, name
                sizes = page.eval_on_selector_all("article .cell_output img",
                                                  "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
                assert all(done and w > 0 and h > 0 for done, w, h in sizes), (name, sizes)
                assert page.locator(".cell_output .output.error, .cell_output .traceback").count() == 0, name
        finally:
            browser.close()
