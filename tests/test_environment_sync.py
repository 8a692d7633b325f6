"""pyproject.toml and environment.yml must declare the same packages.

Only package *names* are compared (normalised per PEP 503, with extras, version specifiers and
environment markers stripped). `python`, `pip`, the project itself and pip options such as
`-e .` are ignored. environment.yml is read with a tiny parser for the subset of YAML it uses,
so this test does not depend on PyYAML (cross-checked against PyYAML when it is installed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: declared as `tomli; python_version < '3.11'` in [test]
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"

IGNORED = {"python", "pip"}

_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


# --------------------------------------------------------------------------- helpers
def normalize_name(name: str) -> str:
    """PEP 503 normalisation: case-insensitive, runs of `-`, `_`, `.` are equivalent."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str | None:
    """Normalised package name of a pip or conda requirement string.

    Returns None for things that are not a named package: pip options (`-e .`,
    `--extra-index-url ...`) and local paths.
    """
    spec = spec.strip()
    if not spec or spec.startswith(("-", ".", "/", "~")):
        return None
    if "::" in spec:  # conda `channel::package`
        spec = spec.split("::", 1)[1]
    match = _NAME_RE.match(spec)
    if match is None:
        raise ValueError(f"cannot parse a package name from {spec!r}")
    return normalize_name(match.group(0))


def pyproject_names(pyproject: dict) -> set[str]:
    project = pyproject["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    own = normalize_name(project["name"])
    names = {requirement_name(s) for s in specs}
    return {n for n in names if n is not None and n != own and n not in IGNORED}


def environment_names(env: dict, own: str | None = None) -> set[str]:
    specs: list[str] = []
    for dep in env.get("dependencies") or []:
        if isinstance(dep, dict):
            for key, sub in dep.items():
                if key != "pip":
                    raise ValueError(f"unsupported nested dependency section {key!r}")
                specs.extend(sub or [])
        else:
            specs.append(str(dep))
    names = {requirement_name(s) for s in specs}
    return {n for n in names if n is not None and n != own and n not in IGNORED}


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"" and (not line[:i].strip() or line[:i].rstrip()[-1] in "-:"):
            quote = ch  # a quoted scalar starts here; `#` inside it is not a comment
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return inner.replace("''", "'") if value[0] == "'" else inner
    return value


def parse_environment_yml(text: str) -> dict:
    """Parse the YAML subset used by conda environment files.

    Top-level `key: scalar` or `key:` followed by a `- item` list; one level of nested
    `- pip:` list inside a list. Anything else raises ValueError (so a restructured file is
    noticed rather than silently mis-read).
    """
    data: dict = {}
    key = None
    nested: list | None = None
    nested_indent = -1
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line.strip():
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise ValueError(f"line {lineno}: tabs in indentation are not YAML")
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if indent == 0 and not body.startswith("-"):
            k, sep, v = body.partition(":")
            if not sep:
                raise ValueError(f"line {lineno}: expected `key: value`, got {raw!r}")
            key = k.strip()
            data[key] = _unquote(v) if v.strip() else []
            nested = None
            continue
        if not (body == "-" or body.startswith("- ")):
            raise ValueError(f"line {lineno}: unsupported YAML construct {raw!r}")
        item = body[1:].strip()
        if nested is not None and indent > nested_indent:
            nested.append(_unquote(item))
            continue
        nested = None
        if key is None or not isinstance(data.get(key), list):
            raise ValueError(f"line {lineno}: list item outside a list: {raw!r}")
        sub_key, sep, rest = item.partition(":")
        if sep and not rest.strip() and re.fullmatch(r"[A-Za-z_][\w-]*", sub_key):
            nested = []
            nested_indent = indent
            data[key].append({sub_key: nested})
        else:
            data[key].append(_unquote(item))
    return data


def diff(py_names: set[str], env_names: set[str]) -> str:
    lines = []
    if only_py := sorted(py_names - env_names):
        lines.append(f"only in pyproject.toml: {', '.join(only_py)}")
    if only_env := sorted(env_names - py_names):
        lines.append(f"only in environment.yml: {', '.join(only_env)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the real check
def _load():
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    env = parse_environment_yml(ENVIRONMENT.read_text(encoding="utf-8"))
    return pyproject, env


def test_pyproject_and_environment_declare_same_packages():
    pyproject, env = _load()
    own = normalize_name(pyproject["project"]["name"])
    py_names = pyproject_names(pyproject)
    env_names = environment_names(env, own=own)
    assert py_names, "no dependencies found in pyproject.toml"
    problems = diff(py_names, env_names)
    assert not problems, "pyproject.toml and environment.yml drifted apart:\n" + problems


def test_environment_installs_project_editable():
    _, env = _load()
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_sections, "environment.yml has no `- pip:` section"
    assert "-e ." in pip_sections[0]
    assert "pip" in env["dependencies"]
    assert any(str(d).startswith("python") for d in env["dependencies"])


def test_parser_agrees_with_pyyaml():
    yaml = pytest.importorskip("yaml")
    text = ENVIRONMENT.read_text(encoding="utf-8")
    assert parse_environment_yml(text) == yaml.safe_load(text)


# --------------------------------------------------------------------------- the helpers can fail
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("Vit_Pytorch>=1.6", "vit-pytorch"),
        ("vit.pytorch", "vit-pytorch"),
        ("  timm[hf-hub] >= 1.0 ; python_version < '3.11'", "timm"),
        ('tomli; python_version < "3.11"', "tomli"),
        ("conda-forge::NumPy=1.26", "numpy"),
        ("numpy 1.26.*", "numpy"),
        ("python=3.11", "python"),
        ("torch @ https://example.org/torch.whl", "torch"),
        ("-e .", None),
        ("--extra-index-url https://download.pytorch.org/whl/cpu", None),
        ("./vendor/pkg", None),
    ],
)
def test_requirement_name(spec, expected):
    assert requirement_name(spec) == expected


def test_drift_is_detected():
    pyproject = {
        "project": {
            "name": "crossvit-lab",
            "dependencies": ["Torch>=2.1", "safetensors", "IPyWidgets>=8"],
            "optional-dependencies": {"test": ["vit_pytorch>=1.6", "crossvit-lab[pretrained]"]},
        }
    }
    env = parse_environment_yml(
        "name: x\n"
        "dependencies:\n"
        "  - python=3.11\n"
        "  - pip\n"
        "  - pip:\n"
        "      - torch  # comment\n"
        "      - 'ipywidgets>=8'\n"
        "      - vit-pytorch\n"
        "      - einops\n"
        "      - -e .\n"
    )
    py_names = pyproject_names(pyproject)
    env_names = environment_names(env, own="crossvit-lab")
    assert py_names == {"torch", "safetensors", "ipywidgets", "vit-pytorch"}
    assert env_names == {"torch", "ipywidgets", "vit-pytorch", "einops"}
    assert diff(py_names, env_names) == (
        "only in pyproject.toml: safetensors\nonly in environment.yml: einops"
    )
    assert diff(py_names, py_names) == ""


def test_parser_rejects_unsupported_yaml():
    with pytest.raises(ValueError):
        parse_environment_yml("dependencies:\n  - pip:\n      - torch\n  nested: {a: 1}\n")
