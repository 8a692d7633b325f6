"""Mutation testing of the core modules against their fast tests, with mutmut (the `bench` extra). A benchmark,
never part of CI: it says how many small faults planted in the library (an operator flipped, a constant changed, an
argument dropped) the tests that exercise those modules catch.

    python benchmarks/mutation.py                                    # every core module: hours on 2 cores
    python benchmarks/mutation.py --modules rollout --time-limit 600 # one module, stop after 10 minutes
    python benchmarks/mutation.py --modules metrics --functions 'crossvit.metrics.x_pointing_game*'

The score is killed / (killed + survived): a mutant is *killed* when a test fails (or times out) with it, and
*survives* when every test that runs the mutated function still passes. Mutants no test reaches ("no tests") are
counted apart: they say which functions the module's fast tests never call. Surviving mutants are listed by name;
mutmut's own ``mutmut show NAME`` prints one's diff (run it inside the work folder that ``--keep`` keeps).

How: the script copies ``crossvit/``, ``tests/`` and ``pyproject.toml`` into a temporary folder, appends a
``[tool.mutmut]`` section naming the modules to mutate and their test files (``CORE_MODULES``), and runs
``mutmut run`` there (mutmut writes ``mutants/`` beside the copy; the repository is never touched). With
``--time-limit`` the run is interrupted and the mutants tried so far are scored. The folder is deleted afterwards
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CORE_MODULES: dict[str, tuple[str, ...]] = {
    "rollout": ("tests/test_rollout.py",),
    "metrics": ("tests/test_metrics.py",),
    "relevancy": ("tests/test_relevancy.py",),
    "explain": ("tests/test_explain.py", "tests/test_registry.py"),
    "recording": ("tests/test_recording.py",),
    "layers": ("tests/test_recording.py", "tests/test_convert.py"),
    "preprocessing": ("tests/test_photos.py",),
    "checkpoint": ("tests/test_checkpoint.py",),
}
"""Each core module (``crossvit/<name>.py``) and the fast test files that exercise it. ``tests/test_reliability*.py``
and ``tests/test_properties.py`` are left out: they span every module, and mutmut runs every test that calls a
mutated function, so each mutant would cost minutes instead of seconds."""

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code), reduced to what the score needs
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def mutmut_config(modules: list[str]) -> str:
    tests = sorted({path for module in modules for path in CORE_MODULES[module]})
    return "\n".join([
        "", "[tool.mutmut]",
        'source_paths = ["crossvit"]',
        f"only_mutate = {json.dumps([f'crossvit/{m}.py' for m in modules])}",
        'also_copy = ["tests", "pyproject.toml"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-m", "not slow", "-q", "-p", "no:cacheprovider"]',
        # torch is not fork-safe once its thread pool ran (a forked worker hangs, which mutmut reports as a
        # timeout): workers fork from a server that imported the tests but ran nothing
        'process_isolation = "forkserver"',
        "",
    ])


def results(work: Path) -> dict[str, str]:
    """Status of every mutant mutmut generated, by name, from its ``mutants/**/*.meta`` files."""
    out = {}
    for meta in (work / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            out[name] = STATUS.get(code, "suspicious")
    return out


def run(modules: list[str], functions: list[str], time_limit: float | None, children: int, keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="crossvit-mutation-"))
    try:
        shutil.copytree(ROOT / "crossvit", work / "crossvit", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + mutmut_config(modules))
        command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *functions]
        started = time.monotonic()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread per worker, fork-safe
        process = subprocess.Popen(command, cwd=work, env=env, start_new_session=True)
        try:
            process.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)  # mutmut stops its workers and keeps what it measured
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        elapsed = time.monotonic() - started
        statuses = results(work)
        counts = Counter(statuses.values())
        caught = counts["killed"] + counts["timeout"]
        tried = caught + counts["survived"]
        return {
            "modules": modules, "functions": functions or None, "seconds": round(elapsed, 1),
            "time_limit": time_limit, "counts": dict(counts),
            "score": round(caught / tried, 4) if tried else None,
            "survivors": sorted(name for name, status in statuses.items() if status == "survived"),
            "work": str(work) if keep else None,
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(CORE_MODULES), choices=list(CORE_MODULES),
                        help="core modules to mutate (default: all)")
    parser.add_argument("--functions", nargs="*", default=[],
                        help="mutmut mutant-name globs, e.g. 'crossvit.rollout.x_joint_rows*' (default: all)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="interrupt the run after this long and score the mutants tried so far")
    parser.add_argument("--children", type=int, default=1, help="mutmut worker processes (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (to inspect mutants)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    result = run(args.modules, args.functions, args.time_limit, args.children, args.keep)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
