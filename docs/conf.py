"""Sphinx configuration of the course web site: ``make site`` (see the Makefile) builds it into ``site/``.

    .venv/bin/python -m sphinx -b html -c docs . site

The source directory is the repository root, so that every page keeps the relative links it has on GitHub and in
JupyterLab (``../docs/rollout.md`` from a notebook); ``include_patterns`` picks the pages that are published.
The answer key (``docs/teacher/``) and the solved notebooks are not published.

**Executed once, cached.** The course notebooks stay committed without outputs; the pages show them executed.
myst-nb does not execute anything here: each notebook's source is replaced, as Sphinx reads it, by the same notebook
carrying the outputs of ``figures/build.py``'s :func:`run_notebook`, the one cached execution that ``make figures``,
``make slides`` and the notebook tests share (keyed on the notebook's code cells, every file of ``crossvit/`` and
the environment; see ``figures/build.py``). A warm cache builds the site without starting a kernel. A notebook that
fails does not stop the build: its page shows the cells up to the failure, says at the top what failed, and the
build ends with an error naming it; a rerun executes only what is not cached. No cell has a time limit; the whole
run has a budget (``$CROSSVIT_EXECUTION_BUDGET``, default 3600 s), and a run that spends it says where it stopped.
A notebook whose cache key changed (its code, the library) is read again even when its file did not change.

**Widgets, alive offline.** The executions save the widget state, and the pages load the widget manager
(``@jupyter-widgets/html-manager``, with ipywidgets' controls) from ``docs/_static/widgets/`` (vendored: see the
README there) and anywidget's front end from the installed ``anywidget`` package (copied at build time), never
from a CDN, so the widgets on the notebook pages answer with the network off.

Environment: ``CROSSVIT_SITE_EXECUTE=0`` builds without executing the notebooks (a quick look at the text).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from sphinx.util import logging

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))

import widget_assets  # noqa: E402  (docs/widget_assets.py)
from course_kit import load_runner  # noqa: E402  (docs/course_kit.py)

import crossvit  # noqa: E402
from crossvit.explain import REGISTRY  # noqa: E402

logger = logging.getLogger("crossvit.site")

runner = load_runner()  # figures/build.py: the cached notebook runner the site shares with `make figures`

project = "CrossViT Lab"
author = "CrossViT Lab developers"
copyright = "2026, CrossViT Lab developers"
release = version = crossvit.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
root_doc = "docs/index"
include_patterns = [
    "docs/*.md",
    "notebooks/README.md",
    "notebooks/[0-9][0-9]_*.ipynb",
    "README.md",
]
exclude_patterns = ["docs/_extra", "docs/_static", "**/.ipynb_checkpoints", ".venv", "site", "course", "notebooks/solutions", "docs/teacher"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# Markdown: GitHub-style heading anchors (README.md#terms) resolve to the heading; $...$ is maths as on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath", "colon_fence"]

# Notebook execution: by figures/build.py's cached runner as Sphinx reads each notebook (see the module docstring);
# myst-nb itself executes nothing.
EXECUTE = os.environ.get("CROSSVIT_SITE_EXECUTE", "1") != "0"
nb_execution_mode = "off"
nb_kernel_rgx_aliases = {".*": "python3"}
# Markdown that the notebooks display (display(Markdown(table))) is rendered with GitHub's flavour: tables are tables.
nb_render_markdown_format = "gfm"

# Widgets: the widget manager and every front end from this site (docs/widget_assets.py), in that order.
nb_ipywidgets_js = {path: {} for path in widget_assets.MANAGER_SCRIPTS}


def _front_ends() -> str:
    """A folder for ``html_static_path`` with the widget front ends that the installed Python packages ship."""
    folder = Path(tempfile.mkdtemp(prefix="crossvit-site-static-"))
    atexit.register(shutil.rmtree, folder, True)
    widget_assets.copy_front_ends(folder)
    return str(folder)


# API reference: autodoc, members in source order, type hints in the description.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}

# Formulas: MathJax 3 from this site (docs/_static/mathjax/), not from a CDN, so the pages read the same offline.
mathjax_path = "mathjax/tex-chtml-full.js"

html_theme = "furo"  # installed from PyPI with its assets: nothing is fetched at build time
html_title = f"CrossViT Lab {release}"
html_static_path = ["_static", _front_ends()]
html_css_files = ["crossvit.css"]
html_extra_path = ["_extra"]  # site/index.html: a link to the start page, so the folder opens as a site
html_show_sourcelink = False
html_copy_source = False


METHODS_PLACEHOLDER = "<!-- methods table: generated from the registry by docs/conf.py -->"


def _methods_table() -> str:
    """The explanation methods, one row each, from the registry itself (so the page cannot fall behind it)."""
    rows = ["| method | what it computes | class-specific | signed | needs gradients | options |", "|---|---|---|---|---|---|"]
    for name, record in REGISTRY.items():
        options = ", ".join(f"`{key}={value!r}`" for key, value in record.defaults.items()) or "none"
        summary = record.summary.replace("|", "\\|")  # a literal | would end the table cell
        rows.append(
            f"| `{name}` | {summary} | {'yes' if record.class_specific else 'no'} | "
            f"{'yes' if record.signed else 'no'} | {'yes' if record.needs_gradients else 'no'} | {options} |"
        )
    return "\n".join(rows)


README_HEADING = "# CrossViT Lab\n"  # the repository's README opens with the site's own name ...
README_HEADING_ON_SITE = "# Getting started with CrossViT Lab\n"  # ... which, on the site, says what the page is


def _fill_placeholders(app, docname, source):
    if docname == "docs/api" and METHODS_PLACEHOLDER in source[0]:
        source[0] = source[0].replace(METHODS_PLACEHOLDER, _methods_table())
    if docname == "README" and source[0].startswith(README_HEADING):  # (the index's "Next" leads here)
        source[0] = README_HEADING_ON_SITE + source[0][len(README_HEADING):]


_budget_deadline: float | None = None


def _deadline() -> float:
    """The whole build's execution deadline, started at the first notebook that is read."""
    global _budget_deadline
    if _budget_deadline is None:
        _budget_deadline = time.monotonic() + runner.budget_from_environment()
    return _budget_deadline


def _is_course_notebook(app, docname: str) -> bool:
    return docname.startswith("notebooks/") and (Path(app.srcdir) / f"{docname}.ipynb").is_file()


FAILED_NOTE = """:::{{error}}
This notebook did not run to the end when this site was built, so the outputs below stop early.
**{summary}**
:::
"""


def _executed_notebook(app, docname, source):
    """``source-read``: a course notebook's text becomes the same notebook with its (cached) execution's outputs."""
    if not EXECUTE or not _is_course_notebook(app, docname):
        return
    name = f"{Path(docname).name}.ipynb"
    nb = nbformat.reads(source[0], as_version=4)
    done = runner.run_notebook(nb, name, deadline=_deadline())
    keys = app.env.__dict__.setdefault("crossvit_notebook_keys", {})
    if done.failure is None:
        executed = runner.with_outputs(nb, done.notebook)
        keys[docname] = done.key
        logger.info(f"{name}: {'cached execution' if done.cached else f'executed in {done.seconds:.0f} s'}")
    else:  # the page shows what ran, says what failed; the build goes on and ends with this warning as an error
        executed = done.notebook
        executed.cells.insert(1, nbformat.v4.new_markdown_cell(FAILED_NOTE.format(summary=done.failure.summary)))
        keys.pop(docname, None)  # read (and executed) again by the next build
        logger.warning(f"notebook failed: {done.failure.summary}", location=docname)
    source[0] = nbformat.writes(executed)


def _stale_notebooks(app, env, added, changed, removed):
    """``env-get-outdated``: notebooks whose execution key changed (the library, say) although their file did not."""
    if not EXECUTE:
        return []
    keys = env.__dict__.get("crossvit_notebook_keys", {})
    library, environment = runner.library_fingerprint(), runner.environment_fingerprint()
    stale = []
    for docname in env.found_docs:
        if _is_course_notebook(app, docname) and docname not in added | changed:
            nb = nbformat.read(Path(app.srcdir) / f"{docname}.ipynb", as_version=4)
            if keys.get(docname) != runner.notebook_key(nb, library, environment):
                stale.append(docname)
    return stale


def _next_link_says_where(app, pagename, templatename, context, doctree):
    """``html-page-context``: the "Next" and "Previous" links carry the title the toctree gives their page
    (``Getting started <../README.md>``), not the page's own first heading (the README's is "CrossViT Lab", the
    site's own name)."""
    titles = app.env.__dict__.get("crossvit_toctree_titles", {})
    links = {app.builder.get_relative_uri(pagename, docname): title for docname, title in titles.items()}
    for key in ("next", "prev"):
        link = context.get(key)
        if link and link.get("link") in links:
            link["title"] = links[link["link"]]


def _collect_toctree_titles(app, doctree):
    """``doctree-read``: the explicit titles of toctree entries (``Title <page>``), by target docname."""
    from sphinx import addnodes

    titles = app.env.__dict__.setdefault("crossvit_toctree_titles", {})
    for node in doctree.findall(addnodes.toctree):
        for title, ref in node["entries"]:
            if title:
                titles[ref] = title


def setup(app):
    app.connect("source-read", _fill_placeholders)
    app.connect("source-read", _executed_notebook)
    app.connect("env-get-outdated", _stale_notebooks)
    app.connect("doctree-read", _collect_toctree_titles)
    app.connect("html-page-context", _next_link_says_where)
