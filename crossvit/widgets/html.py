"""Standalone HTML: one file that holds widgets' data and front-end code inline, opens in any browser without a
network or a kernel, and shows the same picture and controls as the notebook.

The page carries, per widget, its synced state (binary values as base64) and its ES module as JSON, and a small
loader that imports each module from a ``blob:`` URL and hands its ``render`` a model with anywidget's interface
(``get``, ``set``, ``on``, ``off``, ``save_changes``, ``send``) backed by that state. A Content-Security-Policy
forbids every network request, so the file shows what it holds and nothing else.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import anywidget

from .packet import to_base64

HTML_SUFFIXES = (".html", ".htm")
_NOT_SENT = {"_esm", "_css", "_anywidget_id", "layout", "tabbable", "tooltip", "_dom_classes", "_model_module",
             "_model_module_version", "_model_name", "_view_module", "_view_module_version", "_view_name",
             "_view_count"}
_CSP = ("default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; img-src data: blob:; "
        "connect-src data: blob:")

_LOADER = """
const widgets = JSON.parse(document.getElementById("crossvit-widgets").textContent);
function modelOf(state) {
  const listeners = new Map();
  return {
    get: (key) => state[key],
    set(key, value) { state[key] = value; for (const f of listeners.get(`change:${key}`) || []) f(); },
    on(name, f) { if (!listeners.has(name)) listeners.set(name, new Set()); listeners.get(name).add(f); },
    off(name, f) { if (listeners.has(name)) listeners.get(name).delete(f); },
    save_changes() {}, send() {},
  };
}
for (const [k, widget] of widgets.entries()) {
  const url = URL.createObjectURL(new Blob([widget.esm], { type: "text/javascript" }));
  const module = await import(url);
  const el = document.getElementById(`crossvit-widget-${k}`);
  try {
    await (module.default.render || module.render)({ model: modelOf(widget.state), el });
    el.dataset.ready = "true";
  } catch (error) {
    el.textContent = `This widget could not be shown: ${error}`;
    el.dataset.ready = "error";
    throw error;
  }
}
"""


def widget_state(widget: anywidget.AnyWidget) -> dict[str, object]:
    """The synced state of ``widget`` as its front end reads it, binary values as base64 (what the page holds)."""
    state = {key: value for key, value in widget.get_state().items() if key not in _NOT_SENT}
    return to_base64(state)


def _json_in_html(value: object) -> str:
    """JSON that is safe inside a <script> element (no ``</`` can close it)."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")


def page(widgets: Sequence[anywidget.AnyWidget], title: str) -> str:
    """The HTML text of a standalone page showing ``widgets`` one below the other."""
    entries, styles = [], []
    for widget in widgets:
        entries.append({"esm": str(widget._esm), "state": widget_state(widget)})
        css = str(getattr(widget, "_css", "") or "")
        if css and css not in styles:
            styles.append(css)
    boxes = "\n".join(f'<div class="crossvit-widget" id="crossvit-widget-{k}"></div>' for k in range(len(widgets)))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 16px 24px; }}
.crossvit-widget {{ margin: 12px 0 28px; }}
.crossvit-about {{ color: #555; font-size: 13px; max-width: 760px; }}
{"".join(styles)}
</style>
</head>
<body>
<h1 style="font-size: 18px">{html.escape(title)}</h1>
<p class="crossvit-about">Made with crossvit-lab. The recorded attention maps, the explanations computed in Python
and the code that draws them are all inside this file: it works offline, with no kernel; every control is answered
in the browser.</p>
{boxes}
<script type="application/json" id="crossvit-widgets">{_json_in_html(entries)}</script>
<script type="module">{_LOADER}</script>
</body>
</html>
"""


def check_html_path(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """``path`` as a Path ending in .html or .htm, in an existing folder, and not an existing file unless
    ``overwrite`` (and never a folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    path = Path(path)
    if path.suffix.lower() not in HTML_SUFFIXES:
        raise ValueError(f"{path} does not end in .html or .htm: a standalone page is an HTML file")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of the HTML file to write")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent} is not a folder; create it first")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    return path


def write_html(path: str | os.PathLike[str], widgets: Sequence[anywidget.AnyWidget], *, overwrite: bool = False,
               title: str | None = None) -> Path:
    """Write ``widgets`` as one standalone HTML file at ``path`` (see :func:`page`); an existing file is replaced
    only with ``overwrite=True``. The file appears whole or not at all (written beside it, then linked or renamed
    into place). Returns the path."""
    path = check_html_path(path, overwrite)
    if not widgets:
        raise ValueError("no widget to write")
    text = page(widgets, title or "CrossViT explorer")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, and never replaces: a file that appeared meanwhile stays
            except FileExistsError:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
            except OSError:  # a file system without hard links: create the file exclusively instead
                with open(path, "xb") as out:
                    out.write(tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return path
