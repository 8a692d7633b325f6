#!/usr/bin/env python3
"""Execute the numbered notebooks and collect the figures they write.

    .venv/bin/python figures/build.py [--only PATTERN ...] [--timeout SECONDS] [--save-executed]

Runs every ``notebooks/[0-9][0-9]_*.ipynb`` in sorted order, each in a fresh kernel whose
working directory is ``notebooks/`` and whose environment has ``CROSSVIT_FIGURES_DIR`` set to
the absolute ``figures/`` directory. The kernel is always the Python running this script (the
venv's, via ``make figures``), not whatever ``python3`` kernelspec Jupyter would find first.

Exercise cells (code cells tagged ``exercise``, see ``crossvit/exercises.py``) are committed as stubs that
raise ``NotImplementedError``: that error is allowed there, and the checker cell that follows such a stub is
skipped (there is nothing to check). Any other error fails the build.

Notebooks in ``notebooks/`` are never modified (outputs stay stripped in git); with
``--save-executed`` executed copies go to ``figures/executed/`` (gitignored), failed ones too.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import fnmatch
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
# figures go to $CROSSVIT_FIGURES_DIR when it is set (as the notebooks read it), else to <repo>/figures
FIGURES_DIR = Path(os.environ.get("CROSSVIT_FIGURES_DIR") or ROOT / "figures").resolve()
EXECUTED_DIR = FIGURES_DIR / "executed"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
# Files in figures/ that are not outputs.
NOT_OUTPUTS = {"build.py", "README.md", ".gitignore", ".gitkeep"}
EXERCISE_TAG = "exercise"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookFailed(Exception):
    """`summary` is one line naming the notebook and the cell; `details` is the traceback etc."""

    def __init__(self, summary: str, details: str = ""):
        super().__init__(summary)
        self.summary = summary
        self.details = details


def find_notebooks(patterns: list[str] | None) -> list[Path]:
    notebooks = sorted(NOTEBOOKS_DIR.glob(NOTEBOOK_GLOB))
    if patterns:
        notebooks = [nb for nb in notebooks if any(_matches(nb.name, p) for p in patterns)]
    return notebooks


def _matches(name: str, pattern: str) -> bool:
    """Glob against the file name (`02_*`); a pattern without wildcards is a substring (`02`, `attn`)."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name, pattern + ".ipynb")
    return pattern in name


def snapshot_outputs() -> dict[Path, tuple[int, int]]:
    state = {}
    for path in FIGURES_DIR.rglob("*"):
        rel = path.relative_to(FIGURES_DIR)
        if (
            not path.is_file()
            or rel.parts[0] in {"executed", "__pycache__"}
            or (len(rel.parts) == 1 and rel.name in NOT_OUTPUTS)
        ):
            continue
        st = path.stat()
        state[rel] = (st.st_mtime_ns, st.st_size)
    return state


def venv_kernel_manager() -> AsyncKernelManager:
    """A kernel manager that launches ipykernel with *this* interpreter.

    With no kernel directories, ``python3`` resolves to ipykernel's built-in spec, whose argv is
    ``[sys.executable, "-m", "ipykernel_launcher", ...]``. A user-level ``python3`` kernelspec
    (e.g. ~/.local/share/jupyter/kernels/python3 pointing at another Python) cannot hijack it.
    """
    ksm = KernelSpecManager(kernel_dirs=[])
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ksm)
    if os.name == "posix":
        # Unix-domain sockets in a private temp dir instead of unencrypted loopback TCP
        # (also silences ipykernel's "running over TCP without encryption" warning).
        km.transport = "ipc"
        km.ip = os.path.join(tempfile.mkdtemp(prefix="crossvit-kernel-"), "kernel")
    argv0 = km.kernel_spec.argv[0]
    if os.path.realpath(argv0) != os.path.realpath(sys.executable):
        raise RuntimeError(f"kernel would run {argv0}, expected {sys.executable}")
    return km


async def _run_notebook(client: NotebookClient, budget_s: float) -> None:
    """Like NotebookClient.async_execute, plus a kernel sanity check and a per-notebook deadline."""
    deadline = None

    def remaining(_cell) -> int:
        # nbclient's timeout is per cell; give each cell what is left of the notebook's budget.
        return max(1, int(deadline - time.monotonic())) if deadline is not None else int(budget_s)

    client.timeout_func = remaining
    client.reset_execution_trackers()
    # cleanup_kc=True: we pass our own km, and nbclient only shuts down kernels it created itself.
    async with client.async_setup_kernel(cwd=str(NOTEBOOKS_DIR), cleanup_kc=True):
        kc = client.kc
        info = await client.async_wait_for_reply(await _maybe_await(kc.kernel_info()))
        client.nb.metadata["language_info"] = info["content"]["language_info"]

        # Check the kernel really is this venv's interpreter.
        msg_id = await _maybe_await(
            kc.execute("", silent=True, user_expressions={"prefix": "__import__('sys').prefix"})
        )
        reply = await client.async_wait_for_reply(msg_id)
        kernel_prefix = ast.literal_eval(reply["content"]["user_expressions"]["prefix"]["data"]["text/plain"])
        if os.path.realpath(kernel_prefix) != os.path.realpath(sys.prefix):
            raise NotebookFailed(f"kernel runs in {kernel_prefix}, expected {sys.prefix}")

        deadline = time.monotonic() + budget_s
        skip = None
        for index, cell in enumerate(client.nb.cells):
            if index == skip:  # the checker of an exercise left as a stub
                continue
            client.current_index = index  # for error reports
            try:
                await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            except CellExecutionError as exc:
                if exc.ename == "NotImplementedError" and EXERCISE_TAG in cell.metadata.get("tags", []):
                    skip = index + 1
                    continue
                raise
        client.set_widgets_metadata()


async def _maybe_await(value):
    return await value if asyncio.iscoroutine(value) else value


def _describe_cell(nb, index: int) -> str:
    cell = nb.cells[index]
    code_no = sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")
    first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
    return f"cell {index} (code cell #{code_no}, starts: {first[:80]!r})"


def execute(path: Path, timeout: float, save_executed: bool) -> None:
    nb = nbformat.read(path, as_version=4)
    km = venv_kernel_manager()
    client = NotebookClient(
        nb,
        km=km,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
        startup_timeout=120,
        allow_errors=False,
        record_timing=True,
    )
    client.current_index = None
    rel = path.relative_to(ROOT)

    def where() -> str:
        return "kernel start-up" if client.current_index is None else _describe_cell(nb, client.current_index)

    try:
        asyncio.run(_run_notebook(client, timeout))
    except CellTimeoutError as exc:
        raise NotebookFailed(f"{rel}: exceeded its {timeout:.0f} s budget in {where()}", str(exc)) from None
    except CellExecutionError as exc:
        raise NotebookFailed(f"{rel}: {where()} raised {exc.ename}: {exc.evalue}", str(exc)) from None
    except DeadKernelError as exc:
        raise NotebookFailed(f"{rel}: kernel died during {where()}", str(exc)) from None
    except NotebookFailed as exc:
        raise NotebookFailed(f"{rel}: {exc.summary}", exc.details) from None
    except Exception as exc:
        details = "".join(traceback.format_exception(exc))
        raise NotebookFailed(f"{rel}: {type(exc).__name__} during {where()}: {exc}", details) from None
    finally:
        if km.transport == "ipc":
            shutil.rmtree(os.path.dirname(km.ip), ignore_errors=True)
        if save_executed:
            EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, EXECUTED_DIR / path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="run only matching notebooks: a glob on the file name ('02_*') or a substring ('attn'); "
        "repeatable",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="wall-clock budget per notebook in seconds (default 900)"
    )
    parser.add_argument(
        "--save-executed", action="store_true", help="write executed copies to figures/executed/"
    )
    args = parser.parse_args(argv)

    notebooks = find_notebooks(args.only)
    if not notebooks:
        what = f" matching {args.only}" if args.only else ""
        print(f"error: no notebooks {NOTEBOOKS_DIR.relative_to(ROOT)}/{NOTEBOOK_GLOB}{what}", file=sys.stderr)
        return 1

    os.environ["CROSSVIT_FIGURES_DIR"] = str(FIGURES_DIR)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugpy warning
    FIGURES_DIR.mkdir(exist_ok=True)
    print(f"kernel: {sys.executable}  cwd: {NOTEBOOKS_DIR}  CROSSVIT_FIGURES_DIR={FIGURES_DIR}")

    total_start = time.perf_counter()
    summary = []
    bar = tqdm(notebooks, unit="nb", file=sys.stderr)
    for path in bar:
        bar.set_description(path.name)
        before = snapshot_outputs()
        start = time.perf_counter()
        try:
            execute(path, args.timeout, args.save_executed)
        except NotebookFailed as exc:
            bar.close()
            details = exc.details if sys.stderr.isatty() else ANSI_ESCAPE.sub("", exc.details)
            if details:
                print("\n" + details.rstrip(), file=sys.stderr)
            print(f"\nFAILED after {time.perf_counter() - start:.1f} s: {exc.summary}", file=sys.stderr)
            if args.save_executed:
                print(
                    f"partially executed copy: {EXECUTED_DIR.relative_to(ROOT) / path.name}", file=sys.stderr
                )
            return 1
        elapsed = time.perf_counter() - start
        after = snapshot_outputs()
        written = sorted(p for p, st in after.items() if before.get(p) != st)
        summary.append((path.name, elapsed, written))
        tqdm.write(f"{path.name}: {elapsed:.1f} s, {len(written)} file(s) written")
        for p in written:
            tqdm.write(f"    figures/{p.as_posix()}")
    bar.close()

    n_files = sum(len(w) for _, _, w in summary)
    print(
        f"\n{len(summary)} notebook(s) in {time.perf_counter() - total_start:.1f} s, {n_files} file(s) written:"
    )
    for name, elapsed, written in summary:
        print(f"  {elapsed:7.1f} s  {name}")
        for p in written:
            print(f"             figures/{p.as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
