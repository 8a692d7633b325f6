"""A standalone explorer file in a real browser with every non-local request blocked: it loads from what it holds,
and every control of both explorers gets an answer (a new picture or caption); a click on a patch changes the
picture and makes that patch the query. Also opened from disk (file://), as a mailed file is.

Drives Debian's ``chromium`` through Playwright (never a browser Playwright downloads); the page comes from a
server bound to 127.0.0.1. The controls are driven by ``benchmarks/explorers.py``'s functions, which the click-to-
picture benchmark uses on the same kind of file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_FLAGS

import crossvit
from crossvit import data
from crossvit.widgets import attention_explorer, rollout_explorer, write_html

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from explorers import block_the_network, control_actions, measure, serve  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # a real browser: `make test` runs it, `make test-fast` does not
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]
READY_MS = 120_000


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    model = crossvit.load_pretrained()
    images, _, masks = data.make_shapes(3, seed=data.UNUSED_SEED_BASE + 77)
    names = ["first <i>.png", "second.png", "third.png"]  # as the CLI names its images: their files
    explorers = [attention_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES, image_names=names),
                 rollout_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES, image_names=names)]
    return write_html(tmp_path_factory.mktemp("standalone") / "explorers.html", explorers, title="two explorers")


def _open(browser, url: str, allowed: tuple[str, ...]):
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    blocked = block_the_network(page, allowed[0])
    page.goto(url)
    for k in range(2):
        page.locator(f"#crossvit-widget-{k}[data-ready='true']").wait_for(timeout=READY_MS)
    return page, blocked, errors


def _click_patch(page, root, grid: int, row: int, col: int) -> None:
    """Click the centre of patch (row, col) of a grid x grid patch grid spread over the image panel, from the
    panel's place on the page."""
    box = root.locator("canvas.cvx-image").bounding_box()
    page.mouse.click(box["x"] + (col + 0.5) / grid * box["width"], box["y"] + (row + 0.5) / grid * box["height"])


def test_a_standalone_file_answers_every_control_with_the_network_blocked(page_file):
    sync_api = pytest.importorskip("playwright.sync_api")
    server, base = serve(page_file.parent)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            try:
                page, blocked, errors = _open(browser, f"{base}/{page_file.name}", (base,))
                answered = {}
                for kind in ("attention", "rollout"):
                    root = page.locator(f".cvx[data-explorer='{kind}']")
                    for name, (setup, action) in control_actions(page, root, kind).items():
                        setup()
                        times, pictures, answers = measure(page, root, action, 4)
                        answered[f"{kind}: {name}"] = (len(times), answers)
                        if name == "patch click":
                            assert pictures == 4, "every click on another patch changes the picture"
                # every action answered (the picture or the caption changed four times); a control may draw more
                # frames than actions (an input and a change event of one action drawn apart on a loaded machine)
                unanswered = {name: got for name, got in answered.items() if got[0] < 4 or got[1] != 4}
                assert not unanswered, f"(frames, changed answers) of 4 actions: {unanswered}"

                # a click on small patch (2, 5) makes it the query: the controls, the caption and the picture say so
                root = page.locator(".cvx[data-explorer='attention']")
                before = root.locator("canvas.cvx-image").evaluate("c => c.toDataURL()")
                _click_patch(page, root, 8, 2, 5)
                page.wait_for_function("el => el.innerText.includes('small patch (2, 5)')",
                                       arg=root.locator(".cvx-caption").element_handle(), timeout=READY_MS)
                assert root.locator("[data-control='query'] button.mod-active").inner_text() == "patch"
                assert root.locator("[data-control='patch_row'] .cvx-readout").inner_text() == "2"
                assert root.locator("[data-control='patch_col'] .cvx-readout").inner_text() == "5"
                assert root.locator("canvas.cvx-image").evaluate("c => c.toDataURL()") != before
                assert not errors, errors
            finally:
                browser.close()
    finally:
        server.shutdown()
    assert not blocked, f"the page asked the network for {blocked}"


def test_a_standalone_file_opened_from_disk_works(page_file):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page, blocked, errors = _open(browser, page_file.as_uri(), ("file://",))
            root = page.locator(".cvx[data-explorer='rollout']")
            caption = root.locator(".cvx-caption").inner_text()
            assert caption.startswith("image 0: first <i>.png (predicted:")  # the name as text, not as markup
            root.locator("[data-control='method'] select").select_option(label="gradient_rollout")
            root.locator("[data-control='target'] select").select_option(index=2)
            assert "gradients of class" in root.locator(".cvx-caption").inner_text() != caption
            assert root.locator(".cvx-note:visible").count() == 0  # every class's map was in the file
            assert not errors and not blocked, (errors, blocked)
        finally:
            browser.close()


def test_a_question_answers_in_the_browser_without_a_kernel(tmp_path):
    """A choice question saved as a page (no kernel behind it): picking an option and pressing Check shows that
    option's answer line, as Python's widget would."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from crossvit.exercises.questions import QUESTIONS, ask

    q = next(q for q in QUESTIONS if q.kind == "choice")
    widget = ask(q.id)
    path = write_html(tmp_path / "question.html", [widget], title=f"question {q.id}")
    server, base = serve(tmp_path)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            try:
                page = browser.new_page()
                blocked = block_the_network(page, base)
                page.goto(f"{base}/{path.name}")
                page.locator("#crossvit-widget-0[data-ready='true']").wait_for(timeout=READY_MS)
                answer = page.locator(".cvq-answer")
                page.get_by_role("button", name="Check").click()
                assert answer.inner_text() == "Pick an option first."
                for k in (q.correct, (q.correct + 1) % len(q.options)):
                    page.locator(".cvq-option input").nth(k).check()
                    page.get_by_role("button", name="Check").click()
                    widget.choice = k
                    assert answer.inner_text() == widget.check()
                assert not blocked
            finally:
                browser.close()
    finally:
        server.shutdown()
