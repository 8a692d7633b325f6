"""How long an explorer takes to answer a control change, click to picture, in chromium with no kernel: both
explorers (bundled model, 8 shapes images) written to one standalone HTML file, served from 127.0.0.1, every control
changed ``--changes`` times through the page as a reader would (keyboard on sliders, menus, buttons, clicks on
patches).

    .venv/bin/python benchmarks/explorers.py                    # 20 changes of each control, 3 rounds
    .venv/bin/python benchmarks/explorers.py --changes 40 --rounds 5 --save /tmp/explorers.html

A change is timed from the first input event it causes (pointerdown, keydown, input or change; capture phase) to
the first animation frame after the explorer has drawn its answer (its ``cvx-drawn`` event): the time until the
browser can paint the new picture. The median and the worst of every change of a control are printed, per
explorer; a round repeats the whole sequence. Goal (issue 31): <= 16 ms median (one 60 Hz frame) for every
control. ``tests/test_browser.py`` measures the same in JupyterLab, where the kernel also hears of each change.

The functions here drive an explorer in a page (Playwright); the browser tests use them too. Chromium is Debian's
(``/usr/bin/chromium``), never one Playwright downloads. The data seed (``--seed``, default 90_001) is one the tests
never use.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import statistics
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# In the page: a change starts at the first pointerdown / keydown / input / change event (capture phase) and ends at
# the first animation frame after the explorer under `root` says it has drawn (its `cvx-drawn` event). Events in the
# task of that draw (a range input's `change` after its `input`) start nothing. Each time goes to window.__latency;
# window.__pictures counts the changes that changed the picture (the canvases' pixels and the figure's titles),
# window.__answers those that changed the picture or the caption.
LATENCY_PROBE = r"""([root]) => {
  const state = window.__latencyState = window.__latencyState || {};
  window.__latency = []; window.__pictures = 0; window.__answers = 0;
  state.t0 = null; state.root = root;
  const picture = () => [...state.root.querySelectorAll('canvas')].map((c) => c.toDataURL()).join()
    + state.root.querySelector('.cvx-figure').innerText;  // its titles are part of the picture
  const caption = () => state.root.querySelector('.cvx-caption').innerHTML;
  state.picture = picture(); state.caption = caption();
  if (!state.listening) {
    for (const type of ['pointerdown', 'keydown', 'input', 'change'])
      document.addEventListener(type, () => {
        if (state.t0 === null && !state.settling) state.t0 = performance.now();
      }, true);
    document.addEventListener('cvx-drawn', (event) => {
      if (state.t0 === null || !state.root.contains(event.target)) return;
      const t0 = state.t0; state.t0 = null;
      state.settling = true; setTimeout(() => { state.settling = false; }, 0);
      requestAnimationFrame(() => {
        window.__latency.push(performance.now() - t0);
        const now = state.pictureOf(), text = state.captionOf();
        if (now !== state.picture) window.__pictures += 1;
        if (now !== state.picture || text !== state.caption) window.__answers += 1;
        state.picture = now; state.caption = text;
      });
    });
    state.listening = true;
  }
  state.pictureOf = picture; state.captionOf = caption;
}"""


def _other(values: list, k: int, current: object) -> object:
    """The k-th of ``values``, or the next one when that is the current value (a change, always)."""
    value = values[k % len(values)]
    return value if value != current else values[(k + 1) % len(values)]


def control_actions(page, root, kind: str, patch_point: Callable[[int, int], tuple[float, float]] | None = None
                    ) -> dict[str, tuple[Callable[[], None], Callable[[int], None]]]:
    """Per control of the explorer under ``root`` (a Playwright locator), a set-up (untimed: puts the explorer
    where the control matters, e.g. a method that uses it) and an action ``k -> None`` that changes the control
    once, as a reader does."""
    def control(name: str):
        return root.locator(f".cvx-control[data-control='{name}']")

    def slider(name: str, keys: tuple[str, str] = ("ArrowRight", "ArrowLeft")):
        handle = control(name).locator("input")

        def act(k: int) -> None:
            handle.focus()
            at_end = handle.evaluate("e => Number(e.value) >= Number(e.max) ? 1 : Number(e.value) <= Number(e.min) "
                                     "? -1 : 0")
            page.keyboard.press(keys[1] if at_end == 1 else keys[0] if at_end == -1 else keys[k % 2])
        return act

    def menu(name: str, values: list[str] | None = None):
        select = control(name).locator("select")

        def act(k: int) -> None:
            labels = values or select.evaluate("s => [...s.options].map(o => o.text)")
            select.select_option(label=_other(labels, k, select.evaluate("s => s.options[s.selectedIndex].text")))
        return act

    def buttons(name: str):
        group = control(name)

        def act(k: int) -> None:
            labels = group.locator("button").all_inner_texts()
            current = group.locator("button.mod-active").inner_text().strip()
            group.get_by_role("button", name=_other(labels, k, current), exact=True).click()
        return act

    def choose(name: str, label: str) -> Callable[[], None]:
        def act() -> None:
            if name in ("kind", "query"):
                control(name).get_by_role("button", name=label, exact=True).click()
            else:
                control(name).locator("select").select_option(label=label)
        return act

    def steps(*acts: Callable[[], None]) -> Callable[[], None]:
        return lambda: [act() for act in acts]

    def nothing() -> None:
        return None

    if kind == "attention":
        cells = [(1, 1), (2, 5), (6, 3), (4, 4), (0, 7), (7, 0), (3, 2)]

        def click(k: int) -> None:
            row, col = cells[k % len(cells)]
            x, y = patch_point(row, col) if patch_point else _image_point(root, 8, row, col)
            page.mouse.click(x, y)

        self_small_cls = steps(choose("branch", "small"), choose("kind", "self"), choose("query", "CLS"))
        return {
            "image slider": (nothing, slider("image")),
            "block slider": (nothing, slider("block")),
            "layer slider": (steps(choose("kind", "self")), slider("layer")),
            "branch menu": (nothing, menu("branch")),
            "kind buttons": (nothing, buttons("kind")),
            "head menu": (nothing, menu("head", ["head 0", "head 1", "max of heads", "min of heads",
                                                 "mean of heads"])),
            "query buttons": (nothing, buttons("query")),
            "patch row slider": (steps(choose("kind", "self"), choose("query", "patch")), slider("patch_row")),
            "patch column slider": (steps(choose("kind", "self"), choose("query", "patch")), slider("patch_col")),
            "patch click": (self_small_cls, click),
        }
    return {
        "image slider": (choose("method", "joint_rollout"), slider("image")),
        "method menu": (nothing, menu("method")),
        "head fusion menu": (choose("method", "small_rollout"), menu("head_fusion")),
        "discard ratio slider": (choose("method", "large_rollout"), slider("discard_ratio", ("PageUp", "PageDown"))),
        "start block menu": (choose("method", "joint_rollout"), menu("start_block")),
        "target menu": (choose("method", "gradient_rollout"), menu("target")),
    }


def _image_point(root, grid: int, row: int, col: int) -> tuple[float, float]:
    """Page coordinates of the centre of patch (row, col) of a ``grid`` x ``grid`` patch grid on the explorer's
    image panel (the grid spans the panel)."""
    box = root.locator("canvas.cvx-image").bounding_box()
    return box["x"] + (col + 0.5) / grid * box["width"], box["y"] + (row + 0.5) / grid * box["height"]


def measure(page, root, action: Callable[[int], None], n: int, timeout_ms: float = 30_000
            ) -> tuple[list[float], int, int]:
    """Milliseconds from each of ``n`` calls of ``action(k)`` to the next frame after the explorer under ``root``
    drew its answer (see :data:`LATENCY_PROBE`); how many of them changed the picture, and how many changed the
    picture or the caption.

    After each action it also waits (up to ``timeout_ms``) for that action's answer: one action can draw two frames
    (a range input's input and change events drawn in separate tasks), and the second frame must not be taken for
    the next action's, or the last action's answer would be read before it is drawn. An action that changes
    nothing is let through after the wait, and the counts say so."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.evaluate(LATENCY_PROBE, [root.element_handle()])
    for k in range(n):
        action(k)
        page.wait_for_function("n => window.__latency.length > n", arg=k, timeout=timeout_ms)
        try:
            page.wait_for_function("n => window.__answers > n", arg=k, timeout=timeout_ms)
        except PlaywrightTimeout:
            pass
    return (page.evaluate("window.__latency"), page.evaluate("window.__pictures"),
            page.evaluate("window.__answers"))


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A static file server on 127.0.0.1 (a free port) for ``folder``, running in a thread; its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def block_the_network(page, base: str) -> list[str]:
    """Abort every request that does not go to ``base`` (the local server); returns the list the blocked URLs go
    to."""
    blocked: list[str] = []

    def route(r) -> None:  # noqa: ANN001
        if r.request.url.startswith(base) or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return blocked


def report(title: str, times: dict[str, list[float]], goal: str) -> None:
    print(f"\n{title} ({goal})\n")
    print("| control | median ms | worst ms | changes |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} | {max(values):.1f} | {len(values)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=90_001)
    parser.add_argument("--save", type=Path, default=None, help="also keep the standalone file here")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    import crossvit
    from crossvit import data
    from crossvit.widgets import attention_explorer, rollout_explorer, write_html

    model = crossvit.load_pretrained()
    images, _, masks = data.make_shapes(args.images, seed=args.seed)
    explorers = [attention_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES),
                 rollout_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES)]
    with tempfile.TemporaryDirectory() as folder:
        path = write_html(Path(folder) / "explorers.html", explorers, title="explorers benchmark")
        if args.save is not None:
            write_html(args.save, explorers, title="explorers benchmark", overwrite=True)
        print(f"bundled model, {args.images} shapes images (seed {args.seed}), one standalone file of "
              f"{path.stat().st_size / 2**20:.1f} MB, {args.changes} changes per control x {args.rounds} rounds, "
              f"headless chromium")
        server, base = serve(Path(folder))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                blocked = block_the_network(page, base)
                page.goto(f"{base}/{path.name}")
                for k in range(len(explorers)):
                    page.locator(f"#crossvit-widget-{k}[data-ready='true']").wait_for(timeout=60_000)
                for kind in ("attention", "rollout"):
                    root = page.locator(f".cvx[data-explorer='{kind}']")
                    actions = control_actions(page, root, kind)
                    times: dict[str, list[float]] = {name: [] for name in actions}
                    for _ in range(args.rounds):
                        for name, (setup, action) in actions.items():
                            setup()
                            times[name] += measure(page, root, action, args.changes)[0]
                    report(f"{kind} explorer, click to picture in chromium, no kernel", times,
                           "goal: <= 16 ms median")
                browser.close()
                assert not blocked, blocked
        finally:
            server.shutdown()


if __name__ == "__main__":
    main()
