#!/usr/bin/env python3
"""Execute the numbered notebooks, each once and cached, and collect the figures they write.

    .venv/bin/python figures/build.py [--only PATTERN ...] [--budget SECONDS] [--jobs N] [--save-executed] [--force]

Runs every ``notebooks/[0-9][0-9]_*.ipynb``, two at a time where there are two cores (``--jobs``; the longest
first, by the last run's time or on a fresh clone by ``TYPICAL_SECONDS``), each in a fresh kernel of the Python
running this script (the venv's, via ``make figures``; no user kernelspec can hijack it), with ``notebooks/`` as
its working directory and the checkout's ``crossvit/`` first on its path.

**One execution, cached, for everything that needs one.** :func:`run_notebook` is the one way the project executes
a notebook: ``make figures`` (this script), ``make site`` (``docs/conf.py`` shows the cached outputs, widget state
included), ``make slides`` (``docs/course_kit.py``) and ``tests/test_notebooks.py`` all call it. An execution is
stored under ``.cache/notebooks/<stem>/<key>/`` (``$CROSSVIT_NOTEBOOK_CACHE`` elsewhere): the executed notebook and
the figures it wrote. The key (:func:`notebook_key`) hashes the notebook's code cells (source and tags: not its
text, so editing a sentence re-executes nothing), every file of the library (``crossvit/``, the bundled model
included), the committed results the notebooks read (``figures/*.json``) and the environment (Python, torch,
which ImageNet weights are in the Hugging Face cache): change any of them and the notebook runs again. Only a
notebook that ran to the end is stored, so a rerun after a failure or an interruption continues where it stopped.
One process at a time executes a given notebook (a lock file per notebook and key, ``.locks/`` in the cache): a
second caller, e.g. another test worker or ``make site`` started beside ``make figures``, waits for it and then reads
its execution from the cache.

**No per-cell time limit.** A loaded machine makes every cell slow without anything being wrong, so nothing is
stopped for being slow; the one bound is the whole run's budget (``--budget``, ``$CROSSVIT_EXECUTION_BUDGET``,
default 3600 s), and a run that spends it says in which notebook and cell it stopped (the notebooks finished
before that are cached).

The kernels run as a reader's would, with the same environment for every caller (so that one execution can serve
them all): Jupyter's inline matplotlib backend, ``HF_HUB_OFFLINE=1`` (notebook 07 uses timm's ImageNet weights
only when they are already downloaded: ``python -c "import crossvit; crossvit.create_model('crossvit_15_240',
pretrained=True)"`` once, with the network) and ``TQDM_DISABLE=1`` (progress bars would fill the pages).
Exercise cells (code cells tagged ``exercise``, see ``crossvit/exercises/``) are committed as stubs; their
checkers say "not attempted yet" for a stub, so every cell runs, as Run All does, and any error fails the notebook.

Notebooks in ``notebooks/`` are never modified (outputs stay stripped in git); with ``--save-executed`` executed
copies go to ``figures/executed/`` (gitignored), failed ones too. A notebook that fails does not stop the others:
the script runs them all and exits non-zero, naming each failure.

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
import concurrent.futures
import contextlib
import fnmatch
import hashlib
import io
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import filelock
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
LIBRARY_DIR = ROOT / "crossvit"
# figures go to $CROSSVIT_FIGURES_DIR when it is set (as the notebooks read it), else to <repo>/figures
FIGURES_DIR = Path(os.environ.get("CROSSVIT_FIGURES_DIR") or ROOT / "figures").resolve()
EXECUTED_DIR = FIGURES_DIR / "executed"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
# Committed results the notebooks read (notebook 02 reads ablations.json): part of every cache key.
RESULT_GLOBS = ("figures/*.json",)
CACHE_DIR = Path(os.environ.get("CROSSVIT_NOTEBOOK_CACHE") or ROOT / ".cache" / "notebooks").resolve()
CACHE_KEEP = 3
"""Executions kept per notebook (the newest): going back to a previous version of the library reuses its run."""
DEFAULT_BUDGET_S = 3600.0
"""The whole run's budget unless ``--budget`` or ``$CROSSVIT_EXECUTION_BUDGET`` says otherwise."""


def budget_from_environment() -> float:
    """``$CROSSVIT_EXECUTION_BUDGET`` in seconds, else :data:`DEFAULT_BUDGET_S`; a ValueError naming the variable
    when it is not a positive number."""
    raw = os.environ.get("CROSSVIT_EXECUTION_BUDGET") or str(DEFAULT_BUDGET_S)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:  # NaN too
        raise ValueError(f"$CROSSVIT_EXECUTION_BUDGET must be a positive number of seconds, got {raw!r}")
    return value


# The kernel's environment, the same for every caller so that one execution serves them all (module docstring).
KERNEL_ENV = {
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "HF_HUB_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # quiets a debugpy warning
}
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


# ----------------------------------------------------------------------------------------------------------------
# Figures: the same figure up to noise keeps the committed file


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
    returns those paths (byte-identical ones included). Files that did not exist before, or changed beyond
    ``tolerance``, keep the new bytes."""
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


# ----------------------------------------------------------------------------------------------------------------
# The cache


def _hash_files(digest, paths: list[Path]) -> None:
    for path in sorted(paths):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def library_fingerprint() -> str:
    """A hash of every file of the library (sources, ESM front ends, the bundled model) and of the committed
    results the notebooks read: any change to them invalidates every cached execution."""
    digest = hashlib.sha256()
    files = [path for path in LIBRARY_DIR.rglob("*") if path.is_file() and "__pycache__" not in path.parts
             and path.suffix not in (".pyc", ".pyo")]
    for pattern in RESULT_GLOBS:
        files += [path for path in ROOT.glob(pattern) if path.is_file()]
    _hash_files(digest, files)
    return digest.hexdigest()


def environment_fingerprint() -> dict[str, object]:
    """What besides the code decides a notebook's outputs: the interpreter, torch, the kernel environment and
    which ImageNet weights are already downloaded (notebook 07 runs on them only then). torch's version is read
    from its installed metadata: importing torch here would cost a second before the first kernel starts."""
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:  # a torch that pip did not install: ask the module itself
        import torch

        torch_version = torch.__version__
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        weights = sorted(p.name for p in Path(HF_HUB_CACHE).glob("models--timm--crossvit_*"))
    except ImportError:
        weights = []
    return {"python": platform.python_version(), "prefix": sys.prefix, "torch": torch_version,
            "kernel_env": KERNEL_ENV, "imagenet_weights": weights}


def notebook_key(nb, library: str | None = None, environment: dict | None = None) -> str:
    """The cache key of executing ``nb``: its code cells (source and tags, in order), the library and the
    environment (:func:`library_fingerprint`, :func:`environment_fingerprint`)."""
    code = [(cell.source, sorted(cell.metadata.get("tags", []))) for cell in nb.cells if cell.cell_type == "code"]
    payload = {"code": code, "library": library or library_fingerprint(),
               "environment": environment if environment is not None else environment_fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Execution:
    """One notebook executed (or found in the cache): the executed notebook and the figures it wrote."""

    name: str
    key: str
    notebook: nbformat.NotebookNode
    figures: dict[str, Path] = field(default_factory=dict)
    """Figure file name -> its file (in the cache entry, or in a temporary folder when not cached)."""
    seconds: float = 0.0
    """How long the execution took (when it ran; for a cached one, when it was made)."""
    cached: bool = False
    """Whether it came from the cache (False: it ran now)."""
    failure: NotebookFailed | None = None
    """Why it stopped, for a notebook that did not run to the end (then ``notebook`` is partially executed)."""


def _entry(cache_dir: Path, name: str, key: str) -> Path:
    return cache_dir / Path(name).stem / key


def cached_execution(nb, name: str, cache_dir: Path = CACHE_DIR, key: str | None = None) -> Execution | None:
    """The cached execution of ``nb`` (named ``name``, e.g. ``03_cross_attention_and_hooks.ipynb``), or None."""
    key = key or notebook_key(nb)
    entry = _entry(cache_dir, name, key)
    try:
        record = json.loads((entry / "record.json").read_text())
        executed = nbformat.read(entry / "executed.ipynb", as_version=4)
    except (OSError, ValueError):
        return None
    figures = {figure: entry / "figures" / figure for figure in record["figures"]}
    if not all(path.is_file() for path in figures.values()):
        return None
    os.utime(entry)  # most recently used: kept by the pruning
    return Execution(name, key, executed, figures, record["seconds"], cached=True)


def run_notebook(nb, name: str, *, cache_dir: Path | None = CACHE_DIR, deadline: float | None = None,
                 force: bool = False) -> Execution:
    """Execute ``nb`` top to bottom in a fresh kernel as a reader's Run All does, or take its execution from the
    cache (``cache_dir=None``: neither read nor write it; ``force``: execute and replace the cached one). ``nb``
    itself is not modified. ``deadline`` (``time.monotonic()`` value) bounds the whole run: past it the cell that
    is running is stopped and the failure says where. A failure is returned in ``Execution.failure`` with the
    partially executed notebook (never cached), not raised."""
    key = notebook_key(nb)
    if cache_dir is None:
        return _execute_and_store(nb, name, key, None, deadline)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One process at a time executes a given notebook and key: a second caller (another test worker, `make site`
    # beside `make figures`) waits for it and then reads its execution from the cache instead of running it twice.
    lock = filelock.FileLock(_lock_path(cache_dir, name, key))
    waited = time.monotonic()
    try:
        lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic()))
    except filelock.Timeout:
        return Execution(name, key, nb, {}, time.monotonic() - waited, failure=NotebookFailed(
            f"{name}: the run's time budget was spent waiting for another process that is executing it",
            f"lock file {lock.lock_file}"))
    try:
        if not force:
            found = cached_execution(nb, name, cache_dir, key)
            if found is not None:
                return found
        return _execute_and_store(nb, name, key, cache_dir, deadline)
    finally:
        lock.release()


def _lock_path(cache_dir: Path, name: str, key: str) -> Path:
    locks = cache_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return locks / f"{Path(name).stem}-{key}.lock"


def _execute_and_store(nb, name: str, key: str, cache_dir: Path | None, deadline: float | None) -> Execution:
    """:func:`run_notebook`'s execution, stored in ``cache_dir`` when it ran to the end (the caller holds the
    lock)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a copy: the caller's notebook stays as it was
    work = Path(tempfile.mkdtemp(prefix=f".{Path(name).stem}-", dir=cache_dir))
    figures_dir = work / "figures"
    figures_dir.mkdir()
    started = time.perf_counter()
    failure = None
    try:
        _execute(nb, name, figures_dir, deadline)
    except NotebookFailed as exc:
        failure = exc
    seconds = time.perf_counter() - started
    written = sorted(path.name for path in figures_dir.iterdir() if path.is_file())
    if failure is not None and cache_dir is not None:  # nothing of a failed run is kept in the cache
        shutil.rmtree(work, ignore_errors=True)
        return Execution(name, key, nb, {}, seconds, failure=failure)
    if failure is not None or cache_dir is None:
        return Execution(name, key, nb, {f: figures_dir / f for f in written}, seconds, failure=failure)
    nbformat.write(nb, work / "executed.ipynb")
    (work / "record.json").write_text(json.dumps({"name": name, "key": key, "seconds": round(seconds, 2),
                                                   "figures": written, "python": sys.executable}, indent=1))
    entry = _entry(cache_dir, name, key)
    entry.parent.mkdir(parents=True, exist_ok=True)
    if entry.exists():  # force, or another process finished the same execution first
        shutil.rmtree(entry, ignore_errors=True)
    try:
        work.rename(entry)
    except OSError:  # another process renamed its copy in between: the same execution
        shutil.rmtree(work, ignore_errors=True)
    _prune(entry.parent)
    return Execution(name, key, nb, {f: entry / "figures" / f for f in written}, seconds)


def _prune(folder: Path, keep: int = CACHE_KEEP) -> None:
    """Keep the ``keep`` most recently used executions of one notebook; also remove what runs that were killed
    left in the cache (their unfinished work folders, ``.<stem>-*``, a day old)."""
    entries = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.parent.glob(".*-*"):
        if stale.is_dir() and time.time() - stale.stat().st_mtime > 86400:
            shutil.rmtree(stale, ignore_errors=True)
    for lock in (folder.parent / ".locks").glob(f"{folder.name}-*.lock"):  # the locks of keys no longer kept
        if lock.stem.removeprefix(f"{folder.name}-") not in {p.name for p in entries[:keep]}:
            lock.unlink(missing_ok=True)


def with_outputs(source, executed):
    """A copy of the notebook ``source`` carrying the outputs of ``executed`` (an execution of the same code
    cells, e.g. from the cache): the text is ``source``'s, each code cell gets its counterpart's outputs and
    execution count, and the notebook gets the saved widget state."""
    merged = nbformat.from_dict(json.loads(json.dumps(source)))
    ran = [cell for cell in executed.cells if cell.cell_type == "code"]
    code = [cell for cell in merged.cells if cell.cell_type == "code"]
    if [c.source for c in ran] != [c.source for c in code]:
        raise ValueError("the executed notebook has other code cells than the source")
    for cell, done in zip(code, ran):
        cell.outputs = done.outputs
        cell.execution_count = done.execution_count
    for key in ("widgets", "language_info"):
        if key in executed.metadata:
            merged.metadata[key] = executed.metadata[key]
    return merged


# ----------------------------------------------------------------------------------------------------------------
# Executing


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


def kernel_environment(figures_dir: Path) -> dict[str, str]:
    """The environment of a notebook's kernel: the caller's, plus :data:`KERNEL_ENV`, the figures folder, and this
    checkout first on the path (so the kernel imports the library the cache key hashed)."""
    env = dict(os.environ, **KERNEL_ENV, CROSSVIT_FIGURES_DIR=str(figures_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _run_cells(client: NotebookClient, env: dict[str, str], deadline: float | None) -> int | None:
    """Like NotebookClient.async_execute, plus checks that the kernel is this venv's Python importing this
    checkout's library; returns the kernel's process id."""

    def remaining(_cell) -> int | None:  # no per-cell limit: only what is left of the whole run's budget
        return None if deadline is None else max(1, int(deadline - time.monotonic()))

    client.timeout_func = remaining
    client.reset_execution_trackers()
    pid = None
    # cleanup_kc=True: we pass our own km, and nbclient only shuts down kernels it created itself.
    async with client.async_setup_kernel(cwd=str(NOTEBOOKS_DIR), env=env, cleanup_kc=True):
        provisioner = getattr(client.km, "provisioner", None)
        pid = getattr(getattr(provisioner, "process", None), "pid", None)
        kc = client.kc
        info = await client.async_wait_for_reply(await _maybe_await(kc.kernel_info()))
        client.nb.metadata["language_info"] = info["content"]["language_info"]
        msg_id = await _maybe_await(kc.execute("", silent=True, user_expressions={
            "prefix": "__import__('sys').prefix", "library": "__import__('crossvit').__file__"}))
        reply = await client.async_wait_for_reply(msg_id)
        found = {name: ast.literal_eval(value["data"]["text/plain"])
                 for name, value in reply["content"]["user_expressions"].items() if value.get("status") == "ok"}
        if os.path.realpath(found.get("prefix", "?")) != os.path.realpath(sys.prefix):
            raise NotebookFailed(f"kernel runs in {found.get('prefix')}, expected {sys.prefix}")
        if not os.path.realpath(found.get("library", "?")).startswith(os.path.realpath(LIBRARY_DIR)):
            raise NotebookFailed(f"kernel imports crossvit from {found.get('library')}, expected {LIBRARY_DIR}")
        for index, cell in enumerate(client.nb.cells):
            client.current_index = index  # for error reports
            await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        client.set_widgets_metadata()
    return pid


async def _maybe_await(value):
    return await value if asyncio.iscoroutine(value) else value


def _describe_cell(nb, index: int) -> str:
    cell = nb.cells[index]
    code_no = sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")
    first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
    return f"cell {index} (code cell #{code_no}, starts: {first[:80]!r})"


def _execute(nb, name: str, figures_dir: Path, deadline: float | None) -> None:
    """Execute ``nb`` in place (outputs and widget state added); raises :class:`NotebookFailed`."""
    km = venv_kernel_manager()
    client = NotebookClient(nb, km=km, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
                            startup_timeout=600, allow_errors=False, record_timing=False, store_widget_state=True,
                            shutdown_kernel="immediate")
    client.current_index = None
    started = time.monotonic()

    def where() -> str:
        return "kernel start-up" if client.current_index is None else _describe_cell(nb, client.current_index)

    pid = None
    try:
        pid = asyncio.run(_run_cells(client, kernel_environment(figures_dir), deadline))
    except CellTimeoutError as exc:
        raise NotebookFailed(
            f"{name}: stopped in {where()} after {time.monotonic() - started:.0f} s: the run's time budget was "
            f"spent (the notebooks before it are cached: run again to continue)", str(exc)) from None
    except CellExecutionError as exc:
        raise NotebookFailed(f"{name}: {where()} raised {exc.ename}: {exc.evalue}", str(exc)) from None
    except DeadKernelError as exc:
        raise NotebookFailed(f"{name}: kernel died during {where()}", str(exc)) from None
    except NotebookFailed as exc:
        raise NotebookFailed(f"{name}: {exc.summary}", exc.details) from None
    except Exception as exc:
        details = "".join(traceback.format_exception(exc))
        raise NotebookFailed(f"{name}: {type(exc).__name__} during {where()}: {exc}", details) from None
    finally:
        if km.transport == "ipc":
            shutil.rmtree(os.path.dirname(km.ip), ignore_errors=True)
    if km.has_kernel or (pid is not None and process_alive(pid)):
        raise NotebookFailed(f"{name}: the notebook's kernel outlived its notebook")


# ----------------------------------------------------------------------------------------------------------------
# make figures


DEFAULT_JOBS = 2 if (os.cpu_count() or 1) >= 2 else 1
# What the two long notebooks took in a quiet `make figures` on 2 cores (one torch thread per kernel), used only to
# order a cache that has timed no run yet (a fresh clone); every later run orders by its own cached times.
TYPICAL_SECONDS = {"06_training_your_own.ipynb": 118.0, "05_attributions_compared.ipynb": 72.0}


def last_seconds(name: str, cache_dir: Path = CACHE_DIR) -> float:
    """How long the newest cached execution of notebook ``name`` took (0 when there is none)."""
    times = []
    for record in (cache_dir / Path(name).stem).glob("*/record.json"):
        try:
            times.append((record.stat().st_mtime, float(json.loads(record.read_text())["seconds"])))
        except (OSError, ValueError, KeyError, TypeError):  # an entry being written or pruned right now
            continue
    return max(times)[1] if times else 0.0


def expected_seconds(name: str, cache_dir: Path = CACHE_DIR) -> float:
    """How long notebook ``name`` should take: its last cached time, else :data:`TYPICAL_SECONDS` (else 0)."""
    return last_seconds(name, cache_dir) or TYPICAL_SECONDS.get(name, 0.0)


@contextlib.contextmanager
def _torch_threads_per_kernel(jobs: int):
    """Kernels started inside get ``cores // jobs`` torch threads (OMP_NUM_THREADS), unless the caller set it: on 2
    cores two kernels of one thread each do more work than two of two threads fighting for the cores."""
    if jobs == 1 or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    try:
        yield
    finally:
        del os.environ["OMP_NUM_THREADS"]


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
        "--budget", type=float, default=None,
        help=f"wall-clock budget of the whole run in seconds (default: $CROSSVIT_EXECUTION_BUDGET, else "
        f"{DEFAULT_BUDGET_S:.0f}); no per-cell limit",
    )
    parser.add_argument(
        "--save-executed", action="store_true",
        help="write executed copies to figures/executed/ ($CROSSVIT_FIGURES_DIR/executed/ when that is set)"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="execute every notebook again (and replace its cached execution)"
    )
    parser.add_argument(
        "--jobs", type=int, default=DEFAULT_JOBS,
        help=f"notebooks executed at once, each kernel with its share of the CPU cores as torch threads (default "
        f"{DEFAULT_JOBS}: two where there are at least two cores; 1 runs them one after another)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="keep every regenerated figure, even one within the pixel tolerance of the previous file",
    )
    args = parser.parse_args(argv)
    if args.budget is not None and not args.budget > 0:  # NaN too
        parser.error(f"--budget must be positive, got {args.budget}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        budget = args.budget if args.budget is not None else budget_from_environment()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    notebooks = find_notebooks(args.only)
    if not notebooks:
        what = f" matching {args.only}" if args.only else ""
        print(f"error: no notebooks {NOTEBOOKS_DIR.relative_to(ROOT)}/{NOTEBOOK_GLOB}{what}", file=sys.stderr)
        return 1

    try:  # a path that is a file, or cannot be made: one error line, before any kernel starts
        if FIGURES_DIR.exists() and not FIGURES_DIR.is_dir():
            raise NotADirectoryError(0, "it is a file, not a folder")
        FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: cannot use {FIGURES_DIR} for the figures ($CROSSVIT_FIGURES_DIR): {err.strerror or err}",
              file=sys.stderr)
        return 1
    summary, failures = [], []
    parsed = {}  # each notebook read once, here: a file that is not a notebook fails alone, and the others run
    for path in notebooks:
        try:
            parsed[path] = nbformat.read(path, as_version=4)
        except Exception as err:  # noqa: BLE001 - any reason a file is not a notebook
            failures.append(f"{path.name}: not a readable notebook ({type(err).__name__})")
            print(f"FAILED: {failures[-1]}", file=sys.stderr)
    notebooks = list(parsed)
    print(f"kernel: {sys.executable}  cwd: {NOTEBOOKS_DIR}  figures: {FIGURES_DIR}  cache: {CACHE_DIR}")
    total_start = time.perf_counter()
    deadline = time.monotonic() + budget
    previous_pngs = {} if args.force else read_pngs()  # before any notebook writes (each writes its own files)
    jobs = max(1, min(args.jobs, len(notebooks)))
    bar = tqdm(total=len(notebooks), unit="nb", file=sys.stderr, desc=f"{jobs} at a time")

    def run(path: Path) -> Execution:
        return run_notebook(parsed[path], path.name, deadline=deadline, force=args.no_cache)

    with _torch_threads_per_kernel(jobs), concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        # longest first (the last run's time, from the cache), so that no kernel is left alone at the end
        order = sorted(notebooks, key=lambda p: -expected_seconds(p.name))
        started = {pool.submit(run, path): path for path in order}
        finished = {}
        for future in concurrent.futures.as_completed(started):
            done = finished[started[future]] = future.result()
            bar.update()
            how = "from the cache" if done.cached else f"{done.seconds:.1f} s"
            tqdm.write(f"{done.name}: {'FAILED' if done.failure else how}", file=sys.stderr)
    bar.close()
    for path in notebooks:  # collect in the notebooks' order
        done = finished[path]
        if args.save_executed:
            EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
            nbformat.write(done.notebook, EXECUTED_DIR / path.name)
        if done.failure is not None:
            details = done.failure.details if sys.stderr.isatty() else ANSI_ESCAPE.sub("", done.failure.details)
            print(("\n" + details.rstrip() + "\n" if details else "")
                  + f"FAILED after {done.seconds:.1f} s: {done.failure.summary}", file=sys.stderr)
            failures.append(done.failure.summary)
            continue
        written = []
        for figure, source in sorted(done.figures.items()):
            shutil.copyfile(source, FIGURES_DIR / figure)
            written.append(Path(figure))
        kept = set(keep_unchanged(previous_pngs, written))
        summary.append((path.name, done, written, kept))

    shown_dir = FIGURES_DIR.relative_to(ROOT).as_posix() if FIGURES_DIR.is_relative_to(ROOT) else FIGURES_DIR
    n_files = sum(len(w) for _, _, w, _ in summary)
    n_kept = sum(len(k) for _, _, _, k in summary)
    print(
        f"\n{len(summary)} notebook(s) in {time.perf_counter() - total_start:.1f} s, {n_files} file(s) written, "
        f"{n_kept} of them the same figure as before (previous file kept):"
    )
    for name, done, written, kept in summary:
        how = "  cached" if done.cached else f"{done.seconds:7.1f} s"
        print(f"  {how}  {name}")
        for p in written:
            print(f"             {shown_dir}/{p.as_posix()}{_note(p, kept)}")
    if failures:
        print(f"\n{len(failures)} notebook(s) FAILED (the others ran and are cached):", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        if args.save_executed:
            print(f"partially executed copies: {EXECUTED_DIR}", file=sys.stderr)
        return 1
    return 0


def _note(path: Path, kept: set[Path]) -> str:
    if path in kept:
        return "  (same figure: previous file kept)"
    if path.name in LOCAL_ONLY:
        return "  (local only: not committed)"
    return ""


if __name__ == "__main__":
    sys.exit(main())
