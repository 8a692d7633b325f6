"""Every markdown cell of the course notebooks renders as its author meant it, with the renderer of the course site
(myst-parser's markdown-it, with the extensions ``docs/conf.py`` enables): a line that starts like a heading is a
heading, a line that starts like a list item is one, a table is a table, and nothing becomes a code block by
accident (four spaces of indentation turn a paragraph, a heading or an exercise's instructions into code; the
notebooks put code in fenced blocks only)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("myst_parser")

from markdown_it.renderer import RendererHTML  # noqa: E402
from myst_parser.config.main import MdParserConfig  # noqa: E402
from myst_parser.parsers.mdit import create_md_parser  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def site_settings() -> dict:
    """The ``myst_*`` settings of docs/conf.py, read from its source (running it would start a site build's
    set-up)."""
    settings = {}
    for node in ast.parse((ROOT / "docs" / "conf.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id.startswith("myst_"):
            settings[node.targets[0].id.removeprefix("myst_")] = ast.literal_eval(node.value)
    return settings


def site_parser():
    settings = site_settings()
    config = MdParserConfig(enable_extensions=set(settings.get("enable_extensions", ())),
                            heading_anchors=settings.get("heading_anchors", 0))
    return create_md_parser(config, RendererHTML)


PARSER = site_parser()
HEADING = re.compile(r"^\s*#{1,6}\s+\S")
BULLET = re.compile(r"^\s*[*+-]\s+\S")
ORDERED = re.compile(r"^\s*\d{1,3}[.)]\s+\S")
TABLE = re.compile(r"^\s*\|.*\|\s*$")


def problems(source: str) -> list[str]:
    """How the rendering of one markdown cell differs from what its lines say they are."""
    tokens = PARSER.parse(source)
    lines = source.splitlines()
    found = []
    fenced = set()
    for token in tokens:
        if token.type == "fence" and token.map:
            fenced |= set(range(*token.map))
        if token.type == "code_block" and token.map:
            first = lines[token.map[0]].strip()
            found.append(f"line {token.map[0] + 1} renders as an (indented) code block: {first[:60]!r}")
    headings = {t.map[0] for t in tokens if t.type == "heading_open" and t.map}
    items = {line for t in tokens if t.type == "list_item_open" and t.map for line in range(*t.map)}
    item_starts = {t.map[0] for t in tokens if t.type == "list_item_open" and t.map}
    tables = {line for t in tokens if t.type == "table_open" and t.map for line in range(*t.map)}
    for number, line in enumerate(lines):
        if number in fenced:
            continue
        if HEADING.match(line) and number not in headings:
            found.append(f"line {number + 1} looks like a heading but is not one: {line.strip()[:60]!r}")
        if (BULLET.match(line) or ORDERED.match(line)) and number not in item_starts and not HEADING.match(line):
            if number not in items or not line.startswith(" "):  # a wrapped item's own line is inside its item
                found.append(f"line {number + 1} looks like a list item but is not one: {line.strip()[:60]!r}")
        if TABLE.match(line) and number not in tables:
            found.append(f"line {number + 1} looks like a table row but is not in a table: {line.strip()[:60]!r}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_markdown_cell_renders_as_intended(path: Path):
    nb = nbformat.read(path, as_version=4)
    bad = [f"cell {index}: {problem}" for index, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
           for problem in problems(cell.source)]
    assert not bad, "\n".join(bad)


def test_the_check_sees_what_it_is_for():
    """The check itself, on cells written to go wrong: an indented heading and its indented paragraph (the slip of
    exercise 1.3's instructions), a '#' heading without its space, a list item swallowed by a paragraph."""
    indented = "Text before.\n\n    ### Exercise 1.3\n\n    Build the token sequence."
    assert any("code block" in p for p in problems(indented))
    assert any("not one" in p for p in problems("Text\n\n    ### Heading"))
    assert problems("### Exercise 1.3\n\nBuild the token sequence.\n\n* one\n* two\n\n| a | b |\n|---|---|\n| 1 | 2 |") \
        == []
    assert problems("```\n    indented code in a fence is fine\n# and so is a comment\n```") == []
    assert problems("A paragraph\n  * a star that cannot start a list here? it can: CommonMark lets a list "
                    "interrupt a paragraph") == []
    assert any("table" in p for p in problems("| a | b |\nnot a delimiter row\n"))
