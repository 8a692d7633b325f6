#!/usr/bin/env python3
"""Execute the numbered notebooks and collect the figures they write.

    .venv/bin/python figures/build.py [--only PATTERN ...] [--timeout SECONDS] [--save-executed] [--force]

Runs every ``notebooks/[0-9][0-9]_*.ipynb`` in sorted order, each in a fresh kernel whose
working directory is ``notebooks/`` and whose environment has ``CROSSVIT_FIGURES_DIR`` set to
the absolute ``figures/`` directory. The kernel is always the Python running this script (the
venv's, via ``make figures``), not whatever ``python3`` kernelspec Jupyter would find first.

Exercise cells (code cells tagged ``exercise``, see ``crossvit/exercises/``) are committed as stubs; their
checkers say "not attempted yet" for a stub, so every cell runs, as Run All does, and any error fails the build.

Notebooks in ``notebooks/`` are never modified (outputs stay stripped in git); with
``--save-executed`` executed copies go to ``figures/executed/`` (gitignored), failed ones too.

Figures that did not change leave git clean. Floating-point results differ slightly from one CPU
to another (and with the number of threads), so a figure regenerated on another machine is rarely
byte-identical to the committed one even when nobody could tell them apart. The rule:

* a PNG the notebook rewrites is compared with the file that was there before the run (in a
  fresh clone: the committed one) by its decoded pixels, matplotlib's image-comparison idea.
  It is the same figure up to float and rendering noise, and the previous file is put back byte
  for byte, when both have the same size, no pixel differs by more than ``PIXEL_TOLERANCE`` = 64
  levels (of 255, in any colour channel), and at most ``NOISY_FRACTION`` = 0.1 % of the pixels
  differ by more than ``NOISE_LEVEL`` = 16 levels. Float noise moves anti-aliased curve edges by a
  fraction of a pixel, which changes a few edge pixels by a few dozen levels at most; a changed
  digit in a legend or title, a curve moved by a pixel or more, or another layout changes pixels
  by far more than 64 levels, and a recoloured area changes far more than 0.1 % of the pixels,
  so they keep the new file and show up in ``git status``. What the rule cannot tell from noise:
  a change of less than 16 levels everywhere, or of less than 64 levels on a few hundred pixels
  (0.1 % of a typical figure); ``--force`` keeps every new file regardless. Measured here:
  notebook 05's figures computed with 1 thread and with 2 threads (maps differing by <= 1e-6)
  differed by at most 2 levels; the committed 05_deletion_insertion.png against a rerun by up to
  25 levels, on 34 of its 569,000 pixels, all on curve edges;
* figures of training runs (``LOCAL_ONLY``) are not reproducible across machines at all: a
  few hundred SGD steps amplify the last-bit differences until the curves visibly part (from
  about step 47 for notebook 06's run). They are written locally but never committed: they are
  listed in ``.gitignore``, and the text beside them says they come from the reader's own run.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import fnmatch
import io
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import nbformat
import numpy as np
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
# figures go to $CROSSVIT_FIGURES_DIR when it is set (as the notebooks read it), else to <repo>/figures
FIGURES_DIR = Path(os.environ.get("CROSSVIT_FIGURES_DIR") or ROOT / "figures").resolve()
EXECUTED_DIR = FIGURES_DIR / "executed"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
# Files in figures/ that are not outputs.
NOT_OUTPUTS = {"build.py", "README.md", ".gitignore", ".gitkeep"}
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Two renderings of a figure count as the same figure when no pixel differs by more than PIXEL_TOLERANCE levels
# (of 255, in any colour channel) and at most NOISY_FRACTION of the pixels differ by more than NOISE_LEVEL levels
# (see the module docstring).
PIXEL_TOLERANCE = 64
NOISE_LEVEL = 16
NOISY_FRACTION = 0.001
# Figures of training runs: written locally, never committed (gitignored), because they differ between machines.
LOCAL_ONLY = frozenset({"06_training_curve.png"})


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


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of a PNG as an (H, W, 4) uint8 RGBA array (whatever its colour type and metadata)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGBA"))


def pixel_differences(old: bytes, new: bytes) -> np.ndarray | None:
    """Per-pixel difference of two PNGs, (H, W) in levels of 0..255: the largest over the colour channels
    (alpha included); None when their sizes differ."""
    a, b = decode_png(old), decode_png(new)
    if a.shape != b.shape:
        return None
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)


def same_figure(old: bytes, new: bytes, tolerance: int = PIXEL_TOLERANCE, noise: int = NOISE_LEVEL,
                noisy_fraction: float = NOISY_FRACTION) -> bool:
    """Whether two PNGs show the same figure up to float and rendering noise: equal bytes, or equal sizes, no
    pixel off by more than ``tolerance`` levels of 255, and at most ``noisy_fraction`` of the pixels off by more
    than ``noise`` levels (see the module docstring)."""
    if old == new:
        return True
    difference = pixel_differences(old, new)
    if difference is None:
        return False
    return int(difference.max()) <= tolerance and float((difference > noise).mean()) <= noisy_fraction


def read_pngs() -> dict[Path, bytes]:
    """The bytes of every PNG output in the figures directory (relative path -> bytes)."""
    return {
        path.relative_to(FIGURES_DIR): path.read_bytes()
        for path in FIGURES_DIR.rglob("*.png")
        if path.relative_to(FIGURES_DIR).parts[0] not in {"executed", "__pycache__"}
    }


def keep_unchanged(previous: dict[Path, bytes], written: list[Path], tolerance: int = PIXEL_TOLERANCE
                   ) -> list[Path]:
    """Put back the previous bytes of every written PNG that shows the same figure (:func:`same_figure`);
    returns those paths (byte-identical ones included). Files that did not exist before, or changed beyond ``tolerance``, keep the new bytes."""
    kept = []
    for rel in written:
        old = previous.get(rel)
        path = FIGURES_DIR / rel
        if old is None or rel.suffix != ".png" or not path.is_file():
            continue
        new = path.read_bytes()
        if same_figure(old, new, tolerance):
            if new != old:
                path.write_bytes(old)
            kept.append(rel)
    return kept


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
        for index, cell in enumerate(client.nb.cells):
            client.current_index = index  # for error reports
            await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
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
    parser.add_argument(
        "--force",
        action="store_true",
        help="keep every regenerated figure, even one within the pixel tolerance of the previous file",
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
        previous_pngs = {} if args.force else read_pngs()
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
        kept = set(keep_unchanged(previous_pngs, written))
        summary.append((path.name, elapsed, written, kept))
        tqdm.write(f"{path.name}: {elapsed:.1f} s, {len(written)} file(s) written, {len(kept)} unchanged")
        for p in written:
            tqdm.write(f"    figures/{p.as_posix()}{_note(p, kept)}")
    bar.close()

    n_files = sum(len(w) for _, _, w, _ in summary)
    n_kept = sum(len(k) for _, _, _, k in summary)
    print(
        f"\n{len(summary)} notebook(s) in {time.perf_counter() - total_start:.1f} s, {n_files} file(s) written, "
        f"{n_kept} of them the same figure as before (previous file kept):"
    )
    for name, elapsed, written, kept in summary:
        print(f"  {elapsed:7.1f} s  {name}")
        for p in written:
            print(f"             figures/{p.as_posix()}{_note(p, kept)}")
    return 0


def _note(path: Path, kept: set[Path]) -> str:
    if path in kept:
        return "  (same figure: previous file kept)"
    if path.name in LOCAL_ONLY:
        return "  (local only: not committed)"
    return ""


if __name__ == "__main__":
    sys.exit(main())
