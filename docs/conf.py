"""Sphinx configuration of the course web site: ``make site`` (see the Makefile) builds it into ``site/``.

    .venv/bin/python -m sphinx -b html -c docs . site

The source directory is the repository root, so that every page keeps the relative links it has on GitHub and in
JupyterLab (``../docs/rollout.md`` from a notebook); ``include_patterns`` picks the pages that are published.
myst-nb executes every course notebook during the build (the notebooks stay committed without outputs) in
``notebooks/`` as its working directory, writing their figures to a temporary folder, never into ``figures/``.
The answer key (``docs/teacher/``) and the solved notebooks are not published.

Environment: ``CROSSVIT_SITE_EXECUTE=0`` builds without executing the notebooks (a quick look at the text).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import crossvit  # noqa: E402
from crossvit.explain import REGISTRY  # noqa: E402

project = "CrossViT Lab"
author = "CrossViT Lab developers"
copyright = "2026, CrossViT Lab developers"
release = version = crossvit.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
root_doc = "docs/index"
include_patterns = [
    "docs/index.md",
    "docs/architecture.md",
    "docs/rollout.md",
    "docs/api.md",
    "docs/results.md",
    "docs/README.md",
    "notebooks/README.md",
    "notebooks/[0-9][0-9]_*.ipynb",
    "README.md",
]
exclude_patterns = ["docs/_extra", "**/.ipynb_checkpoints", ".venv", "site", "course", "notebooks/solutions", "docs/teacher"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# Markdown: GitHub-style heading anchors (README.md#terms) resolve to the heading; $...$ is maths as on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath", "colon_fence"]

# Notebook execution: every notebook, each in a fresh kernel (the Python running Sphinx), cell errors fail the build.
nb_execution_mode = "force" if os.environ.get("CROSSVIT_SITE_EXECUTE", "1") != "0" else "off"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_in_temp = False  # run in notebooks/, where the course's relative paths point
nb_kernel_rgx_aliases = {".*": "python3"}
_figures = tempfile.mkdtemp(prefix="crossvit-site-figures-")
atexit.register(shutil.rmtree, _figures, True)
os.environ["CROSSVIT_FIGURES_DIR"] = _figures  # the kernels inherit it: figures/ in the repository stays as it is
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures inline, whatever the caller set
os.environ["HF_HUB_OFFLINE"] = "1"  # the site builds offline; notebook 07 falls back to its offline path
os.environ["TQDM_DISABLE"] = "1"  # progress bars would fill the pages

# API reference: autodoc, members in source order, type hints in the description.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}

html_theme = "furo"  # installed from PyPI with its assets: nothing is fetched at build time
html_title = f"CrossViT Lab {release}"
html_static_path: list[str] = []
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


def _fill_placeholders(app, docname, source):
    if docname == "docs/api" and METHODS_PLACEHOLDER in source[0]:
        source[0] = source[0].replace(METHODS_PLACEHOLDER, _methods_table())


def setup(app):
    app.connect("source-read", _fill_placeholders)
