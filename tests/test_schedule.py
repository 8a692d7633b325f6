"""``make test``'s schedule (tests/conftest.py): under pytest-xdist with the Makefile's options, a module's tests go
to one worker (its module-scoped fixture is set up once), the tests of a module in SPLIT_MODULES are spread over the
workers, and the units listed in LONGEST_FIRST start first. Checked on a small suite of our own, run the way the
Makefile runs the real one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # a pytest run with two worker processes

SUITE = {
    "test_site.py": '''
import os, time, pytest
@pytest.fixture(scope="module")
def site():
    open(os.environ["LOG"], "a").write(f"site set up by {os.getpid()}\\n")
    yield
def test_a(site): time.sleep(0.5)
def test_b(site): time.sleep(0.5)
def test_c(site): time.sleep(0.5)
''',
    "test_notebooks.py": '''
import os, time, pytest
@pytest.mark.parametrize("stem", ["01_a", "06_training_your_own", "05_attributions_compared"])
def test_notebook_runs_with_the_solutions(stem):
    open(os.environ["LOG"], "a").write(f"{stem} started by {os.getpid()}\\n")
    time.sleep(1.5)
''',
    "test_other.py": '''
import os, time, pytest
@pytest.mark.parametrize("i", range(6))
def test_quick(i): time.sleep(0.1)
''',
}


def test_make_tests_schedule_keeps_a_module_on_one_worker_and_starts_the_longest_first(tmp_path):
    pytest.importorskip("xdist")
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tests)
    for name, source in SUITE.items():
        (tests / name).write_text(source)
    log = tmp_path / "log.txt"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                             "loadscope", "--no-loadscope-reorder", "--rootdir", str(tmp_path), "tests"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "LOG": str(log), "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = log.read_text().splitlines()
    assert len([line for line in lines if line.startswith("site set up")]) == 1  # one worker ran the module
    started = [line.split()[0] for line in lines if " started by " in line]
    assert started[0] == "06_training_your_own"  # the longest first
    workers = {line.split()[-1] for line in lines}
    assert len(workers) == 2  # both workers had work: the notebook tests were not kept together
