"""The course web site (``make site``): built into a fresh folder with every notebook executed (or taken from the
notebook cache that ``make figures`` and the notebook tests share), then read as a learner reads it, in Debian's
chromium: every notebook page shows its outputs and figures, tables the notebooks display are tables and long
output lines stay inside the page, the API reference documents all of ``crossvit.__all__`` and lists every
explanation method of the registry, no link inside the site is broken, the answer key stays out, and, served from
127.0.0.1 with every other request blocked, the widgets on the notebook pages come alive and answer a reader.

Every browser check waits for what it reads (an image decoded, a widget rendered), never for a fixed time.
"""

from __future__ import annotations

import contextlib
import functools
import html.parser
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_FLAGS  # the one place that finds Debian's chromium

import crossvit
from crossvit.explain import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
COURSE = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WAIT_MS = 120_000  # the longest any browser check waits for what it reads (a loaded machine renders slowly)
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

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


def test_the_index_says_where_next_leads(site):
    """The start page's "Next" link names its target as the table of contents does ("Getting started"), not by
    the README's own heading, which is the site's name."""
    text = (site / "docs" / "index.html").read_text(encoding="utf-8")
    block = re.search(r'<a class="next-page" href="([^"]+)">.*?<div class="title">(.*?)</div>', text, re.S)
    assert block and block.group(1) == "../README.html", block
    assert block.group(2).strip() == "Getting started", block.group(2)
    # and the page it opens says the same, not the index's own heading (the README's first line, the site's name)
    readme = (site / "README.html").read_text(encoding="utf-8")
    heading = re.sub(r"<[^>]+>|¶", "", re.search(r"<h1[^>]*>(.*?)</h1>", readme, re.S).group(1)).strip()
    assert heading == "Getting started with CrossViT Lab", heading


def test_the_widget_manager_and_front_ends_are_served_by_the_site(site):
    """Every notebook page with widget state loads the widget manager from the site itself, no script from
    elsewhere, and the front end of every widget module its saved state names is served by the site (ipywidgets'
    own are inside the manager)."""
    widgets = site / "_static" / "widgets"
    for name in ("require.js", "front-ends.js", "offline.js", "embed-amd.js", "LICENSES.md"):
        assert (widgets / name).is_file(), name
    pages = _widget_pages(site)
    assert pages, "no notebook page carries widget state: the executions no longer save it"
    builtin = {"@jupyter-widgets/base", "@jupyter-widgets/controls", "@jupyter-widgets/output"}
    for name, path in pages.items():
        text = path.read_text(encoding="utf-8")
        scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', text)
        assert not [src for src in scripts if urllib.parse.urlsplit(src).scheme], (name, scripts)
        assert any(src.split("?")[0].endswith("_static/widgets/embed-amd.js") for src in scripts), (name, scripts)
        state = _saved_state(text)["state"]
        modules = {model[key] for model in state.values() for key in ("model_module", "view_module") if key in model}
        for module in sorted(modules - builtin):
            assert (widgets / f"{module}.js").is_file(), f"{name}: the front end of {module!r} is not served"
            assert f'"{module}"' in (widgets / "front-ends.js").read_text(), module


def _saved_state(text: str) -> dict:
    return json.loads(re.search(rf'<script type="{re.escape(WIDGET_STATE)}">(.*?)</script>', text, re.S).group(1))


def _widget_pages(site: Path) -> dict[str, Path]:
    """The notebook pages that carry saved widget state, by notebook stem."""
    pages = {}
    for name in COURSE:
        path = site / "notebooks" / f"{name}.html"
        if WIDGET_STATE in path.read_text(encoding="utf-8"):
            pages[name] = path
    return pages


def _views_shown(path: Path) -> int:
    """How many widget views the page at ``path`` shows: view tags whose model is in the page's saved state."""
    text = path.read_text(encoding="utf-8")
    state = _saved_state(text)
    views = [json.loads(m) for m in re.findall(rf'<script type="{re.escape(WIDGET_VIEW)}">(.*?)</script>', text, re.S)]
    return sum(1 for view in views if view["model_id"] in state["state"])


@contextlib.contextmanager
def _served(folder: Path) -> Iterator[str]:
    """``folder`` served over HTTP from 127.0.0.1 (a free port) for the duration; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def _offline_browser(sync_api) -> Iterator[tuple[object, list[str]]]:
    """A chromium context in which every request to anything but 127.0.0.1 is blocked (as with the network off);
    yields (context, blocked URLs)."""
    blocked: list[str] = []

    def route(r):
        if urllib.parse.urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort("internetdisconnected")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1300, "height": 900})
            context.route("**/*", route)
            yield context, blocked
        finally:
            browser.close()


# What a reader does with a live widget on a page, and what must follow, with no kernel: (what, CSS selector of the
# widget, action). Each one runs on every page that shows such a widget. The explorers join this list when they
# are anywidgets: e.g. ("explorer: a clicked patch becomes the query", "<the explorer's selector>", click_a_patch)
# on notebook 03's page, checking that the picture changed.
def _choose_an_answer(page, widget) -> None:
    """A choice question: picking an option and pressing Check shows that option's answer line (the question's own
    front end, kept in the browser)."""
    options = widget.locator(".cvq-option input")
    assert options.count() >= 2
    options.nth(options.count() - 1).check()
    widget.locator("button.cvq-check").click()
    answer = widget.locator(".cvq-answer")
    page.wait_for_function("el => /^[\u2713\u2717]/.test(el.innerText.trim())", arg=answer.element_handle(),
                           timeout=WAIT_MS)
    assert sum(options.nth(i).is_checked() for i in range(options.count())) == 1


def _click_a_patch(page, widget) -> None:
    """An attention explorer: a click on a patch of the picture makes it the query, and the picture changes (drawn
    by the explorer's JavaScript, no kernel behind the page)."""
    page.wait_for_function("el => Number(el.dataset.draws || 0) > 0", arg=widget.element_handle(), timeout=WAIT_MS)
    picture, caption = widget.locator("canvas.cvx-image"), widget.locator(".cvx-caption")
    before = picture.evaluate("c => c.toDataURL()")
    box = picture.bounding_box()
    page.mouse.click(box["x"] + 0.69 * box["width"], box["y"] + 0.31 * box["height"])  # off the centre
    page.wait_for_function("el => el.innerText.includes('patch (')", arg=caption.element_handle(), timeout=WAIT_MS)
    assert picture.evaluate("c => c.toDataURL()") != before


LIVE_WIDGETS: list[tuple[str, str, Callable]] = [
    ("choice question: the option picked gets its answer line", ".cvq", _choose_an_answer),
    ("attention explorer: a clicked patch becomes the query", ".cvx[data-explorer='attention']", _click_a_patch),
]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_widgets_come_alive_on_the_notebook_pages_with_the_network_off(site):
    """Served from 127.0.0.1 with every other request blocked: on each notebook page with widget state, every
    widget view is rendered by the widget manager the site serves, a reader's action on each kind of live widget
    gets its answer, no request leaves the machine and no script error occurs."""
    sync_api = pytest.importorskip("playwright.sync_api")
    pages = _widget_pages(site)
    assert pages
    done, errors = [], []
    with _served(site) as base, _offline_browser(sync_api) as (context, blocked):
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        for name, path in pages.items():
            page.goto(f"{base}/notebooks/{name}.html")
            shown = _views_shown(path)
            # wait until the manager has put every view on the page (each in a widget-subarea it creates)
            page.wait_for_function(
                "n => [...document.querySelectorAll('.widget-subarea')].filter(e => e.children.length).length >= n",
                arg=shown, timeout=WAIT_MS)
            for what, selector, action in LIVE_WIDGETS:
                widgets = page.locator(f".widget-subarea {selector}")
                if widgets.count():
                    widgets.first.scroll_into_view_if_needed()
                    action(page, widgets.first)
                    done.append((name, what))
        assert not errors, errors
    assert not blocked, f"requests that would need the network: {blocked}"
    kinds = {what for _, what in done}
    assert kinds == {what for what, _, _ in LIVE_WIDGETS}, f"live widgets tried: {done}"
    assert ("03_cross_attention_and_hooks", LIVE_WIDGETS[1][0]) in done, done  # the explorer of notebook 03


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_every_notebook_page_shows_its_outputs_and_figures_in_the_browser(site):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto((site / "index.html").as_uri())  # the folder opens as a site: index.html leads to the start
            page.wait_for_url("**/docs/index.html", timeout=WAIT_MS)
            for name in COURSE:
                page.goto((site / "notebooks" / f"{name}.html").as_uri())
                page.wait_for_load_state("load", timeout=WAIT_MS)
                outputs = page.locator(".cell_output").count()
                assert outputs >= 5, (name, outputs)  # executed: its outputs are on the page
                images = page.locator("article .cell_output img")
                assert images.count() >= 1, name
                # every figure decoded (waited for: an image further down may still be loading)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('article .cell_output img')]"
                    ".every(e => e.complete && e.naturalWidth > 0 && e.naturalHeight > 0)", timeout=WAIT_MS)
                assert page.locator(".cell_output .output.error, .cell_output .traceback").count() == 0, name
                # tables the notebook displays as Markdown are tables, not pipe text
                raw = page.eval_on_selector_all(
                    ".cell_output", "els => els.filter(e => /^\\s*\\|.*\\|\\s*$/m.test(e.innerText) && "
                    "/\\|\\s*:?-{3,}/.test(e.innerText)).length")
                assert raw == 0, f"{name}: {raw} output(s) show a Markdown table as text"
                # no output line runs off the page: the page does not scroll sideways, long lines scroll in their box
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
                wide = page.eval_on_selector_all(
                    ".cell_output pre", "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => "
                    "[getComputedStyle(e).overflowX, getComputedStyle(e).whiteSpace])")
                assert all(overflow in ("auto", "scroll") or "wrap" in space for overflow, space in wide), (name, wide)
        finally:
            browser.close()


def test_the_tables_the_notebooks_display_are_tables(site):
    """Notebook 02 displays its ablation tables with ``display(Markdown(...))``: on the page they are <table>s."""
    text = (site / "notebooks" / "02_dual_branch_encoding.html").read_text(encoding="utf-8")
    outputs = re.findall(r'<div class="cell_output docutils container">(.*?)</div>\s*</div>\s*</div>', text, re.S)
    assert any("<table" in out for out in outputs), "no table in notebook 02's outputs"
    assert not re.search(r"\|\s*-{3,}\s*\|", re.sub(r"<[^>]+>", "", "".join(outputs)))


COUNTER_CELLS = [
    "import anywidget\nimport traitlets",
    'class Counter(anywidget.AnyWidget):\n'
    '    """A widget whose front end (ESM) does the work: a click counts up in the browser."""\n'
    '    _esm = """export default { render({ model, el }) {\n'
    '        const button = document.createElement("button");\n'
    '        button.className = "counter";\n'
    '        const show = () => { button.textContent = `count is ${model.get("value")}`; };\n'
    '        button.addEventListener("click", () => { model.set("value", model.get("value") + 1); model.save_changes(); });\n'
    '        model.on("change:value", show);\n'
    '        show();\n'
    '        el.appendChild(button);\n'
    '    } };"""\n'
    '    value = traitlets.Int(0).tag(sync=True)\n\n\n'
    'Counter(value=3)',
]


def _sphinx(source: Path, out: Path, cache: Path) -> subprocess.CompletedProcess:
    """The site's own build (docs/conf.py, -W --keep-going as ``make site``) of ``source`` into ``out``, with the
    notebook cache at ``cache``."""
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-c", str(ROOT / "docs"), "-d",
         str(out / "doctrees"), str(source), str(out / "html")],
        capture_output=True, text=True, env=dict(os.environ, CROSSVIT_NOTEBOOK_CACHE=str(cache)))


@pytest.fixture(scope="module")
def small_site(tmp_path_factory):
    """A two-notebook site built with the site's configuration: 01 shows an anywidget (its front end does the
    work), 02 fails in its second code cell. Yields (source, build result, output folder, cache folder)."""
    pytest.importorskip("myst_nb")
    pytest.importorskip("anywidget")  # a dependency of the library once the explorers are anywidgets
    import nbformat

    root = tmp_path_factory.mktemp("small_site")
    source = root / "source"
    (source / "docs").mkdir(parents=True)
    (source / "notebooks").mkdir()
    (source / "docs" / "index.md").write_text(
        "# A site\n\n```{toctree}\n../notebooks/01_counter\n../notebooks/02_fails\n```\n")
    kernelspec = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    counter = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · A counter")]
                                       + [nbformat.v4.new_code_cell(code) for code in COUNTER_CELLS])
    fails = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 02 · A failure"),
                                            nbformat.v4.new_code_cell("print('before the failure')"),
                                            nbformat.v4.new_code_cell("1 / 0"),
                                            nbformat.v4.new_code_cell("print('never reached')")])
    for name, nb in (("01_counter", counter), ("02_fails", fails)):
        nb.metadata["kernelspec"] = kernelspec
        nbformat.write(nb, source / "notebooks" / f"{name}.ipynb")
    result = _sphinx(source, root / "first", root / "cache")
    yield source, result, root / "first" / "html", root / "cache"


def test_a_failing_notebook_leaves_the_others_built_and_a_rerun_continues_from_the_cache(small_site):
    source, result, site, cache = small_site
    assert result.returncode != 0  # the build fails, naming the notebook and the cell...
    assert "notebook failed: 02_fails.ipynb: cell 2 (code cell #2, starts: '1 / 0') raised ZeroDivisionError" \
        in result.stderr, result.stderr[-3000:]
    # ...after building every page: the other notebook with its outputs, the failed one up to the failure
    assert "widget-view+json" in (site / "notebooks" / "01_counter.html").read_text(encoding="utf-8")
    failed = (site / "notebooks" / "02_fails.html").read_text(encoding="utf-8")
    assert "did not run to the end" in failed and "ZeroDivisionError" in failed and "before the failure" in failed
    assert failed.count("never reached") == 1  # in the cell's source only: nothing ran after the failure
    assert [p.parent.parent.name for p in cache.glob("*/*/executed.ipynb")] == ["01_counter"]  # only what ran through
    again = _sphinx(source, source.parent / "again", cache)  # a rerun: 01 from the cache, 02 executed again
    assert "01_counter.ipynb: cached execution" in again.stdout, again.stdout[-3000:]
    assert "notebook failed: 02_fails.ipynb" in again.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_an_anywidget_comes_alive_on_a_site_page_with_the_network_off(small_site):
    """The site's own configuration (docs/conf.py) on a page whose notebook shows an anywidget: served from
    127.0.0.1 with every other request blocked, the widget's front end (from anywidget's package, served by the
    site) renders it from the saved state and answers a click, with no kernel."""
    sync_api = pytest.importorskip("playwright.sync_api")
    _, _, site, _ = small_site
    assert (site / "_static" / "widgets" / "anywidget.js").is_file()
    errors = []
    with _served(site) as base, _offline_browser(sync_api) as (context, blocked):
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/notebooks/01_counter.html")
        counter = page.locator(".widget-subarea button.counter")
        counter.wait_for(timeout=WAIT_MS)
        page.wait_for_function("el => el.textContent === 'count is 3'", arg=counter.element_handle(), timeout=WAIT_MS)
        counter.click()
        page.wait_for_function("el => el.textContent === 'count is 4'", arg=counter.element_handle(), timeout=WAIT_MS)
    assert not blocked, blocked
    assert not errors, errors
