"""Real-browser tests: JupyterLab runs a notebook with the attention explorer; moving its slider redraws it, and
clicking a patch on its picture (the explorer's own front end) makes that patch the query token; a rollout explorer
asked for a class map it was not built with gets it from the kernel. One click on Run All runs the committed
course notebooks with explorers (exercises unsolved) to the end, every explorer drawn. And every link of every
course notebook, followed in JupyterLab as `make lab` starts it, opens its target.

Drives Debian's ``chromium`` (never a browser Playwright downloads) through Playwright against a JupyterLab
server bound to 127.0.0.1 with a random token. Skipped when chromium or Playwright is missing; ``.ci/run``
installs chromium so CI always runs it.

Every test waits for the cells and outputs it reads, counted from the notebook file itself (JupyterLab renders a
notebook's cells and their Markdown asynchronously, later on a loaded machine): never a fixed pause before reading,
never a count taken from what happens to be on the page already.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SERVER_START_TIMEOUT_S = 120
RUN_TIMEOUT_MS = 900_000  # bounds, not paces: each wait ends as soon as what it waits for is there; a loaded
LINK_TIMEOUT_MS = 120_000  # machine (four jobs on two cores) runs a notebook several times slower than a quiet one

ROOT = Path(__file__).resolve().parent.parent
LAB_SETTINGS = ROOT / "etc" / "jupyterlab"  # the settings `make lab` starts JupyterLab with

pytestmark = [
    pytest.mark.slow,  # a JupyterLab server and a real browser: `make test` runs it, `make test-fast` does not
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]

EXPLORER_CELLS = [
    "import crossvit\n"
    "from crossvit import data, widgets\n"
    "from crossvit.data import UNUSED_SEED_BASE",
    "model = crossvit.load_pretrained()\n"
    "images, labels, masks = data.make_shapes(3, seed=UNUSED_SEED_BASE, image_size=model.image_size)\n"
    "explorer = widgets.attention_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES)\n"
    "explorer",
    "rollout = widgets.rollout_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES, classes=[])\n"
    "rollout",
]


def _click_patch(page, root, grid: int, row: int, col: int) -> None:
    """Click the centre of patch (row, col) of a grid x grid patch grid spread over the explorer's image panel,
    from the panel's place on the page."""
    box = root.locator("canvas.cvx-image").bounding_box()
    page.mouse.click(box["x"] + (col + 0.5) / grid * box["width"], box["y"] + (row + 0.5) / grid * box["height"])


def _drawn(page, root) -> None:
    """Wait until the explorer under ``root`` has drawn its picture."""
    root.wait_for(timeout=RUN_TIMEOUT_MS)
    page.wait_for_function("el => Number(el.dataset.draws || 0) > 0", arg=root.element_handle(),
                           timeout=RUN_TIMEOUT_MS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path) -> None:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {}, "outputs": [],
              "source": src} for i, src in enumerate(EXPLORER_CELLS)]
    nb = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                      "language": "python"}}}
    path.write_text(json.dumps(nb))


@pytest.fixture()
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving ``tmp_path / "lab"``; yields (base URL, token, served directory)."""
    port, token = _free_port(), secrets.token_hex(16)
    root = tmp_path / "lab"
    root.mkdir()
    env = dict(os.environ, JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_PLATFORM_DIRS="1",
               CROSSVIT_FIGURES_DIR=str(tmp_path / "figures"))  # the notebooks never write into the repository
    env.pop("MPLBACKEND", None)  # the kernel uses Jupyter's inline backend, as for a user
    # every cell in the page (no windowed rendering), so that a test can see all of a long notebook's outputs
    settings = tmp_path / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--LabApp.app_settings_dir={LAB_SETTINGS}"],  # as `make lab`: Markdown opens rendered
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "server.log").read_text()) from None
                time.sleep(0.5)
        yield base, token, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _cell_counts(path: Path) -> dict[str, int]:
    """How many cells of each type (``code``, ``markdown``, ``raw``) the notebook file at ``path`` holds."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return {kind: sum(cell["cell_type"] == kind for cell in cells) for kind in ("code", "markdown", "raw")}


def _wait_for_cells(page, path: Path, notebook: str = ".jp-Notebook") -> None:
    """Wait until the notebook shown (``notebook``: its CSS selector) has every cell of the file at ``path`` on the
    page and every Markdown cell rendered."""
    counts = _cell_counts(path)
    page.wait_for_function(
        """([sel, code, markdown]) => { const nb = document.querySelector(sel); if (!nb) return false;
             return nb.querySelectorAll('.jp-CodeCell').length === code
                 && nb.querySelectorAll('.jp-MarkdownCell.jp-mod-rendered .jp-RenderedMarkdown').length === markdown; }""",
        arg=[notebook, counts["code"], counts["markdown"]], timeout=RUN_TIMEOUT_MS)


def _open_and_run_all(browser, url: str, path: Path):
    """A new page with the notebook at ``url`` (whose file is ``path``) open with all its cells, its kernel idle,
    and Run All Cells clicked once in the Run menu (the notebook carries a kernelspec, so no "Select Kernel" dialog
    comes first)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator(".jp-Notebook").first.wait_for(timeout=RUN_TIMEOUT_MS)
    _wait_for_cells(page, path)
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    return page


def test_attention_explorer_slider_and_click_in_jupyterlab(jupyterlab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, token, root = jupyterlab
    _write_notebook(root / "explorer.ipynb")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = _open_and_run_all(browser, f"{base}/lab/tree/explorer.ipynb?token={token}", root / "explorer.ipynb")

            explorer = page.locator(".jp-OutputArea-output .cvx[data-explorer='attention']").first
            _drawn(page, explorer)
            caption = explorer.locator(".cvx-caption")
            picture = explorer.locator("canvas.cvx-image")
            before_picture, before_caption = picture.evaluate("c => c.toDataURL()"), caption.inner_text()
            assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                                    ).filter(has_text="Traceback").count()

            # move the "image" slider one step with the keyboard, as a user with a mouse-less setup would
            slider = explorer.locator(".cvx-control[data-control='image']")
            slider.locator("input").focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function("([el, text]) => el.innerText !== text", arg=[caption.element_handle(),
                                                                               before_caption], timeout=RUN_TIMEOUT_MS)
            assert slider.locator(".cvx-readout").inner_text().strip() == "1"
            assert "image 1" in caption.inner_text()
            assert picture.evaluate("c => c.toDataURL()") != before_picture

            # click the centre of small patch (row 2, column 5) on the picture: it becomes the query token
            before_picture = picture.evaluate("c => c.toDataURL()")
            _click_patch(page, explorer, 8, 2, 5)
            page.wait_for_function("el => el.innerText.includes('small patch (2, 5)')",
                                   arg=caption.element_handle(), timeout=RUN_TIMEOUT_MS)
            query = explorer.locator(".cvx-control[data-control='query']")
            assert query.locator("button.mod-active").inner_text().strip() == "patch"
            assert picture.evaluate("c => c.toDataURL()") != before_picture

            # the rollout explorer was built without class maps beyond the predicted classes: the kernel computes
            # the one asked for, and the picture appears
            rollout = page.locator(".jp-OutputArea-output .cvx[data-explorer='rollout']").first
            _drawn(page, rollout)
            rollout.locator("[data-control='method'] select").select_option(label="gradient_rollout")
            rollout.locator("[data-control='target'] select").select_option(index=3)  # class 2
            page.wait_for_function("el => el.style.display !== 'none'",
                                   arg=rollout.locator("canvas.cvx-map").element_handle(), timeout=RUN_TIMEOUT_MS)
            assert "gradients of class" in rollout.locator(".cvx-caption").inner_text()
            assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                                    ).filter(has_text="Traceback").count()
            page.screenshot(path=str(tmp_path / "explorer.png"))
        finally:
            browser.close()


COURSE_NOTEBOOKS_WITH_EXPLORERS = ["03_cross_attention_and_hooks.ipynb", "04_attention_rollout.ipynb"]


@pytest.mark.parametrize("name", COURSE_NOTEBOOKS_WITH_EXPLORERS)
def test_run_all_reaches_the_end_of_the_course_notebooks(jupyterlab, tmp_path, name):
    """As committed (every exercise a stub), one click on Run All runs every cell: each checker says 'not
    attempted yet' in one line, no error output appears, and every explorer is drawn."""
    sync_api = pytest.importorskip("playwright.sync_api")
    base, token, root = jupyterlab
    shutil.copyfile(Path(__file__).resolve().parent.parent / "notebooks" / name, root / name)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = _open_and_run_all(browser, f"{base}/lab/tree/{name}?token={token}", root / name)  # Run All
            code_cells = _cell_counts(root / name)["code"]  # from the file: every one must get its number
            try:  # finished: every code cell has an execution number, none is waiting or running ("[*]")
                page.wait_for_function(
                    r"""n => { const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                              .map(e => e.innerText.trim());
                              return p.length === n && p.every(t => /^\[\d+\]:$/.test(t)); }""",
                    arg=code_cells, timeout=RUN_TIMEOUT_MS)
                # each unsolved exercise says so in one line: wait for all of them (outputs may trail the numbers)
                exercises = sum("exercise" in cell.get("metadata", {}).get("tags", [])
                                for cell in json.loads((root / name).read_text())["cells"])
                assert exercises >= 2
                page.wait_for_function(
                    "n => [...document.querySelectorAll('.jp-OutputArea-output')]"
                    ".filter(e => e.innerText.includes('not attempted yet')).length >= n",
                    arg=exercises, timeout=RUN_TIMEOUT_MS)
            finally:
                page.screenshot(path=str(tmp_path / f"{name}.png"))
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0
            calm = page.locator(".jp-OutputArea-output").filter(has_text="not attempted yet")
            assert calm.count() >= 2, "each unsolved exercise says so in one line"
            explorers = page.locator(".jp-OutputArea-output .cvx")
            explorers.first.wait_for(timeout=RUN_TIMEOUT_MS)
            for i in range(explorers.count()):
                _drawn(page, explorers.nth(i))
        finally:
            browser.close()


def _course_copy(root: Path) -> None:
    """The course's notebooks and the pages they link to, laid out as in the repository, under ``root``."""
    (root / "notebooks").mkdir()
    (root / "docs").mkdir()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + [ROOT / "notebooks" / "README.md"]:
        shutil.copyfile(path, root / "notebooks" / path.name)
    for path in sorted((ROOT / "docs").glob("*.md")):
        shutil.copyfile(path, root / "docs" / path.name)


def test_every_notebook_link_opens_its_target_in_jupyterlab(jupyterlab):
    """Each link in each course notebook's text, clicked once: an anchor in the notebook exists; a link to a page
    or notebook opens it in a new tab (Markdown rendered); a link with #section shows that section."""
    sync_api = pytest.importorskip("playwright.sync_api")
    base, token, root = jupyterlab
    _course_copy(root)
    followed = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            for number, notebook in enumerate(sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                # a fresh workspace per notebook: only this notebook is open, not the tabs a previous one opened
                page.goto(f"{base}/lab/workspaces/links{number}/tree/notebooks/{notebook.name}?token={token}&reset")
                # every Markdown cell rendered, and every link the authors wrote on the page (counted in the file)
                _wait_for_cells(page, notebook, CURRENT_NOTEBOOK)
                written = _author_links(notebook)
                page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n",
                                       arg=[AUTHOR_LINKS, len(written)], timeout=RUN_TIMEOUT_MS)
                hrefs = page.eval_on_selector_all(AUTHOR_LINKS, "els => els.map(e => e.getAttribute('href'))")
                assert len(hrefs) == len(written), (notebook.name, hrefs, written)
                for index, href in enumerate(hrefs):
                    if href.startswith(("http://127.0.0.1", "/")) or not href.startswith(("http:", "https:", "#")):
                        followed.append((notebook.name, href))
                        _follow_lab_link(page, index, href)
                    elif href.startswith("#"):
                        assert page.locator(_anchor(urllib.parse.unquote(href[1:]))).count(), (notebook.name, href)
                page.close()
        finally:
            browser.close()
    assert len(followed) >= 2 * 7, followed  # every notebook links to the teacher's page and to the next one


def _author_links(path: Path) -> list[str]:
    """The links the authors wrote in the Markdown cells of the notebook at ``path`` (CommonMark with tables, as
    JupyterLab renders them), in order."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").enable("table")
    hrefs = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for token in parser.parse(source):
                hrefs += [t.attrGet("href") for t in token.children or [] if t.type == "link_open"]
    return hrefs


CURRENT_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
# the authors' links in the notebook shown (JupyterLab adds its own heading permalinks: not counted)
AUTHOR_LINKS = f"{CURRENT_NOTEBOOK} .jp-RenderedMarkdown a[href]:not(.jp-InternalAnchorLink)"


def _anchor(name: str) -> str:
    """CSS for the element a ``#name`` fragment points at (JupyterLab renders ``id`` as ``data-jupyter-id``)."""
    return f"[id='{name}'], [data-jupyter-id='{name}']"


def _follow_lab_link(page, index: int, href: str) -> None:
    """Click the ``index``-th author link on ``page``; its target must become the current tab, scrolled to the
    fragment when there is one."""
    target = urllib.parse.urlsplit(href)
    name = urllib.parse.unquote(target.path.rsplit("/", 1)[-1])
    link = page.locator(AUTHOR_LINKS).nth(index)
    link.scroll_into_view_if_needed()
    link.click()
    current = page.locator(".jp-RenderedMarkdown:visible, .jp-Notebook:visible")
    tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
    page.wait_for_function("name => [...document.querySelectorAll('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current')]"
                           ".some(t => t.innerText.trim() === name)", arg=name, timeout=LINK_TIMEOUT_MS)
    assert tab.count() >= 1
    if name.endswith(".md"):  # opened rendered (Markdown Preview), not as source text
        viewer = page.locator(".jp-MarkdownViewer .jp-RenderedMarkdown:visible").first
        viewer.wait_for(timeout=LINK_TIMEOUT_MS)
        if target.fragment:
            anchor = viewer.locator(_anchor(urllib.parse.unquote(target.fragment))).first
            anchor.wait_for(state="attached", timeout=LINK_TIMEOUT_MS)
            page.wait_for_function(
                "el => { const r = el.getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight; }",
                arg=anchor.element_handle(), timeout=LINK_TIMEOUT_MS)
    assert current.count() >= 1
    # back to the notebook for the next link
    page.locator("#jp-main-dock-panel .lm-TabBar-tab").first.click()


# -- click-to-picture latency of both explorers ------------------------------------------------------------------
LATENCY_CELLS = [
    "import crossvit\n"
    "from crossvit import data, widgets\n"
    "model = crossvit.load_pretrained()\n"
    "images, labels, masks = data.make_shapes(8, seed=90_001, image_size=model.image_size)",
    "attention = widgets.attention_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES)\n"
    "attention",
    "rollout = widgets.rollout_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES)\n"
    "rollout",
]


def test_explorers_answer_every_control_and_report_click_to_picture_times(jupyterlab, tmp_path):
    """Every control of both explorers, changed several times in JupyterLab (a kernel running and hearing of each
    change), gets an answer: a new picture or caption. The click-to-picture times are printed and written to
    ``explorer_latency.md`` in the test's temporary folder: a measurement reported, not a timed assertion (goal,
    issue 31: <= 16 ms median; benchmarks/explorers.py measures the same on a standalone file, no kernel)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from explorers import control_actions, measure  # the benchmark's way of driving an explorer

    base, token, root = jupyterlab
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {}, "outputs": [],
              "source": src} for i, src in enumerate(LATENCY_CELLS)]
    (root / "latency.ipynb").write_text(json.dumps({
        "cells": cells, "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}}}))
    n = 7
    results: dict[str, list[float]] = {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = _open_and_run_all(browser, f"{base}/lab/tree/latency.ipynb?token={token}", root / "latency.ipynb")
            for kind in ("attention", "rollout"):
                box = page.locator(f".jp-OutputArea-output .cvx[data-explorer='{kind}']").first
                _drawn(page, box)
                for name, (setup, action) in control_actions(page, box, kind).items():
                    setup()
                    page.wait_for_timeout(300)
                    try:
                        times, _, answers = measure(page, box, action, n, timeout_ms=LINK_TIMEOUT_MS)
                    except sync_api.TimeoutError:
                        page.screenshot(path=str(tmp_path / "latency.png"))
                        raise AssertionError(f"{kind}: {name}: a change got no answer within {LINK_TIMEOUT_MS} ms; "
                                             f"answered {page.evaluate('window.__latency')}") from None
                    assert len(times) == answers == n, (kind, name, times, answers)  # every change answered
                    results[f"{kind}: {name}"] = times
            assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                                    ).filter(has_text="Traceback").count()
        finally:
            browser.close()
    lines = ["| control | median ms | worst ms | changes |", "|---|---:|---:|---:|"]
    for name, times in results.items():
        lines.append(f"| {name} | {sorted(times)[n // 2]:.1f} | {max(times):.1f} | {n} |")
    report = "\n".join(lines)
    (tmp_path / "explorer_latency.md").write_text(report + "\n")
    print(f"\nclick-to-picture in JupyterLab (headless chromium), bundled model, 8 images:\n{report}")
