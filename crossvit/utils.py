"""Small helpers the rest of the package shares, each written once: eval-mode context, the other branch, integer
and number validation, seeded random generators, device names, and deprecated keyword aliases.

This module imports nothing from the package, so every other module may import it.
"""

from __future__ import annotations

import argparse
import functools
import numbers
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

BRANCHES: tuple[str, str] = ("small", "large")
"""The two branches of every CrossViT, in forward order."""


def other_branch(branch: str) -> str:
    """``"large"`` for ``"small"`` and the reverse; a ValueError for anything else."""
    if branch == "small":
        return "large"
    if branch == "large":
        return "small"
    raise ValueError(f"unknown branch {branch!r}; a CrossViT's branches are 'small' and 'large'")


_EVAL_LOCK = threading.Lock()
_EVAL_USERS: dict[torch.nn.Module, list] = {}  # model -> [blocks inside eval_mode, saved (module, flag) pairs]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Within the block the model is in eval mode; afterwards (also on error) every submodule gets back its own
    train/eval flag (a model in ``train()`` with a frozen ``embed.eval()`` comes back exactly so).

    The blocks nest per model, across threads too: the first block to enter saves the flags and the last to leave
    restores them, so several threads explaining one model leave it as it was (a block that saved the flags after
    another thread had switched the model to eval would restore eval).
    """
    with _EVAL_LOCK:
        entry = _EVAL_USERS.get(model)
        if entry is None:
            entry = _EVAL_USERS[model] = [0, [(m, m.training) for m in model.modules()]]
            model.eval()
        entry[0] += 1
    try:
        yield
    finally:
        with _EVAL_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                del _EVAL_USERS[model]
                for module, training in entry[1]:
                    module.training = training


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int when it is an integer (Python or numpy, not a bool) in ``[minimum, maximum]``
    (either bound optional); otherwise a TypeError or ValueError that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
                and value.dtype != torch.bool:
            value = int(value)
        else:
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.60}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_number(name: str, value: object, low: float, high: float, *, high_open: bool = False) -> float:
    """``value`` as a float when it is a real number (not a bool or a string) in ``[low, high]`` (``[low, high)``
    with ``high_open``); otherwise a TypeError or ValueError that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r:.60}")
    value = float(value)
    if not (low <= value and (value < high if high_open else value <= high)):
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value:g}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` as a bool if it is True or False (numpy's too; not 0, 1 or another truthy object); a TypeError
    naming ``name`` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def dtype_kind_mismatches(given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """``"name: <dtype> in the file, <dtype> in the model"`` for every tensor of ``given`` whose kind of dtype
    (floating point, complex, bool, integer) is not that of the tensor of the same name in ``expected``:
    ``load_state_dict`` would cast it silently (an integer 215 read as if it were a trained weight)."""
    def kind(t: torch.Tensor) -> tuple[bool, bool, bool]:
        return t.is_floating_point(), t.is_complex(), t.dtype == torch.bool

    return [f"{k}: {v.dtype} in the file, {expected[k].dtype} in the model" for k, v in given.items()
            if k in expected and kind(v) != kind(expected[k])]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that adds ``(default: ...)`` to each option's help, except where that would mislead:
    an on/off flag (``--no-augment`` would read "default: True", the value it stores when absent) and an option
    whose default is None (its help says what happens without it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape codes (colours, bold), as torch and IPython put in some messages."""
    return _ANSI_CODE.sub("", text)


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first line of ``err``'s message (for a one-line error that quotes another's; terminal colour codes, as
    torch puts in some, removed), else ``default``, else the exception's type name."""
    lines = strip_ansi(str(err)).strip().splitlines()
    return lines[0] if lines else type(err).__name__ if default is None else default


def check_path(name: str, value: object) -> Path:
    """``value`` (a str or an ``os.PathLike``) as a Path; a TypeError naming ``name`` otherwise (an int or None
    would otherwise be taken as a file descriptor or fail deep inside ``pathlib``)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or Path, got {type(value).__name__}")
    return Path(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``; otherwise an error that lists them: a TypeError for a value that
    is not a str (a list of names, None), a ValueError for another string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, choices))} (a str); got "
                        f"{type(value).__name__} {value!r:.60}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r:.60}")
    return value


SEED_RANGE: tuple[int, int] = (0, 2**64 - 1)
"""Every seed the package takes (data generators, the random baseline) is an int in this closed range."""

def leaves_global_rng_alone(function: Callable) -> Callable:
    """Decorator: ``function`` may seed and draw from torch's global random generators (``torch.manual_seed``,
    dropout), and the caller's generators come back as they were, the CPU's and every initialised CUDA device's."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return function(*args, **kwargs)

    return wrapper


_MT_WORDS = 624  # words of the Mersenne Twister state behind torch's CPU generator
_MT_OFFSET = 24  # byte offset of those words (one uint64 each) in the generator's state tensor


def check_seed(name: str, value: object) -> int:
    """``value`` as an int in :data:`SEED_RANGE`; a TypeError / ValueError that names ``name`` otherwise."""
    return check_int(name, value, *SEED_RANGE)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` whose stream depends on every bit of ``seed`` (an int in :data:`SEED_RANGE`).

    ``torch.Generator().manual_seed(seed)`` keeps only the low 32 bits of a seed on the CPU (seeds ``s`` and
    ``s + 2**32`` give the same numbers). Here a seed below ``2**32`` gives exactly that generator, and a larger
    seed gets the Mersenne Twister state that numpy's ``MT19937(seed)`` builds from it (``SeedSequence``: word 0 set
    to ``0x80000000``, words 1..623 from the sequence), so distinct seeds give distinct streams over the whole range.
    """
    seed = check_seed("seed", seed)
    generator = torch.Generator().manual_seed(seed % 2**32)
    if seed < 2**32:
        return generator
    state = generator.get_state().clone()
    end = _MT_OFFSET + 8 * _MT_WORDS
    if state.numel() != 5056 or int(state[_MT_OFFSET:_MT_OFFSET + 8].view(torch.int64)) != seed % 2**32:
        raise RuntimeError("this PyTorch lays out its CPU generator state differently from the one crossvit knows; "
                           f"seeds >= 2**32 (got {seed}) cannot be honoured: use a seed below 2**32")
    words = np.random.SeedSequence(seed).generate_state(_MT_WORDS, dtype=np.uint32).astype(np.uint64)
    words[0] = 0x80000000
    state[_MT_OFFSET:end] = torch.from_numpy(words.view(np.uint8).copy())
    state[:8] = torch.from_numpy(np.array([seed], dtype=np.uint64).view(np.uint8).copy())  # initial_seed()
    generator.set_state(state)
    return generator


def resolve_device(device: str | torch.device, what: str = "device") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else must name an available device (a ValueError
    naming ``what`` otherwise)."""
    if isinstance(device, torch.device):
        out = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            out = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"{what} {device!r} is not a device name ('auto', 'cpu', 'cuda'): {err}") from None
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} is {str(device)!r} but CUDA is not available; use 'cpu' or 'auto'")
    if out.type == "cuda" and out.index is not None and out.index >= torch.cuda.device_count():
        raise ValueError(f"{what} is {str(device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return out


def _warn_renamed(where: str, old: str, new: str, stacklevel: int) -> None:
    warnings.warn(f"{where}: {old!r} is deprecated and will be removed in the next release; use {new!r}",
                  FutureWarning, stacklevel=stacklevel + 1)


def renamed_keywords(where: str, kwargs: dict[str, Any], renames: Mapping[str, str], stacklevel: int = 3
                     ) -> dict[str, Any]:
    """``kwargs`` with every deprecated keyword of ``renames`` (old -> new) renamed, with a FutureWarning per old
    name (``stacklevel`` as ``warnings.warn`` counts it from the caller); a TypeError when both the old and the
    new name are given."""
    out = dict(kwargs)
    for old, new in renames.items():
        if old in out:
            if new in out:
                raise TypeError(f"{where} got both {old!r} and its new name {new!r}; pass {new!r} only")
            _warn_renamed(where, old, new, stacklevel)
            out[new] = out.pop(old)
    return out


def renamed_argument(where: str, deprecated: Mapping[str, Any], old: str, new: str, value: Any, default: Any
                     ) -> Any:
    """The value of the argument ``new`` of function ``where``, which also takes the deprecated name ``old``
    through ``**deprecated``: ``value`` as passed, or ``deprecated[old]`` (with a FutureWarning). Any other
    keyword in ``deprecated`` is a TypeError, and so is passing both names (``value`` not its ``default``)."""
    unknown = sorted(set(deprecated) - {old})
    if unknown:
        raise TypeError(f"{where} got unexpected keyword argument(s) {unknown}")
    if old not in deprecated:
        return value
    if value is not default:
        raise TypeError(f"{where} got both {old!r} and its new name {new!r}; pass {new!r} only")
    _warn_renamed(where, old, new, stacklevel=3)
    return deprecated[old]


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same directory, then rename: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates its file as 0600; give it ordinary permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def class_indices(name: str, target: object, batch: int, num_classes: int) -> torch.Tensor:
    """``target`` (an int, or a (batch,) sequence or tensor of ints; numpy integers too) as a (batch,) long tensor
    of class indices in ``[0, num_classes)``. A float (2.7), a bool or a string is a TypeError, never cast to a
    class; a wrong shape or an index out of range a ValueError. ``name`` starts each message."""
    if isinstance(target, numbers.Integral) and not isinstance(target, bool) and not 0 <= target < num_classes:
        raise ValueError(f"{name}: target class indices must be in [0, {num_classes}), got {int(target)}")
    as_tensor = None
    if not isinstance(target, (str, bytes, bool)):
        try:
            as_tensor = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError):
            as_tensor = None
    if as_tensor is None or as_tensor.dtype == torch.bool or as_tensor.is_floating_point() or as_tensor.is_complex():
        raise TypeError(f"{name}: target must be an int or a (B,) = ({batch},) integer tensor of class indices, got "
                        f"{type(target).__name__} {target!r:.80}")
    out = as_tensor.to(dtype=torch.long)
    if out.ndim == 0:
        out = out.expand(batch)
    if out.shape != (batch,):
        raise ValueError(f"{name}: target must be an int or a (B,) = ({batch},) tensor of class indices, got shape "
                         f"{tuple(out.shape)}")
    if (out < 0).any() or (out >= num_classes).any():
        raise ValueError(f"{name}: target class indices must be in [0, {num_classes}), got {out.tolist()}")
    return out


def progress_bar(iterable=None, *, progress: bool, **kwargs) -> tqdm:
    """The library's one way to show a tqdm bar (``tqdm.auto``: a widget in a notebook, text elsewhere): silent when
    ``progress`` is false, and also when ``TQDM_DISABLE`` is set to anything in the environment, as tqdm reads it.
    (tqdm's text bar honours that variable by itself, but its notebook bar turns a missing ``disable`` into
    ``False`` and shows anyway; the site build, ``make figures`` and the notebook tests set it, since bars would
    fill the pages.)"""
    if not check_bool("progress", progress) or os.environ.get("TQDM_DISABLE"):
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


def check_finite_images(images: torch.Tensor) -> None:
    """A ValueError if ``images`` holds NaN or an infinity: every analysis of such a batch (a map, a score, an
    accuracy) would be NaN or wrong without saying so. (The model's own forward does not check: a reduction over
    the batch on every call, a synchronisation on CUDA, would slow training.)"""
    if not bool(torch.isfinite(images).all()):
        bad = (~torch.isfinite(images)).flatten(1).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"images {bad[:10]}{' ...' if len(bad) > 10 else ''} hold NaN or infinite values")
