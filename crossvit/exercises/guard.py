"""What the checkers do around a call of the learner's function: spot the library functions the exercise rebuilds
(and the ways around that check), hand out copies of the inputs, and notice what the function changed that it was
not given to change (inputs, weights, hooks, the model's structure, torch's and the library's global state), so
that :func:`crossvit.exercises.common.run_learner` can put it back and say so."""

from __future__ import annotations

import functools
import numbers
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Shortcut:
    """A library function an exercise asks the learner to rebuild: calling it inside the learner's function is
    refused. ``target`` is a Python function or method (matched by its code), a code object (see
    :func:`module_shortcuts`), a builtin (matched by identity), or a ``(type, method name)`` pair for a builtin
    method such as ``(torch.Tensor, "unfold")``."""

    target: Any
    label: str  # how the message names it, e.g. "F.unfold"


def _code_of(target: Any) -> Any:
    if isinstance(target, types.CodeType):
        return target
    function = getattr(target, "__func__", target)
    while hasattr(function, "__wrapped__"):  # a decorated function: its own code, not the decorator's wrapper,
        function = function.__wrapped__  # which other decorated functions share
    return getattr(function, "__code__", None)


def module_shortcuts(module: types.ModuleType) -> list[Shortcut]:
    """Every function of ``module`` as a :class:`Shortcut`: its functions, the methods of its classes (autograd
    Functions' forward and backward included), the functions behind its decorators (``__wrapped__``), and the
    functions nested in any of these; each named ``module.qualname``."""
    codes: dict[types.CodeType, None] = {}

    def add(value: Any) -> None:
        value = getattr(value, "__func__", value)  # staticmethod, classmethod
        while hasattr(value, "__wrapped__"):
            value = value.__wrapped__
        code = getattr(value, "__code__", None)
        if isinstance(code, types.CodeType) and code.co_filename == module.__file__:  # not dataclasses' own
            stack = [code]
            while stack:
                c = stack.pop()
                if c not in codes:
                    codes[c] = None
                    stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]

    for value in vars(module).values():
        if isinstance(value, type) and value.__module__ == module.__name__:
            for member in vars(value).values():
                add(member.fget if isinstance(member, property) else member)
        else:
            add(value)
    return [Shortcut(code, f"{module.__name__}.{code.co_qualname}") for code in codes]


@functools.lru_cache(maxsize=4096)  # each check fingerprints the same shortcuts again: dis once per code object
def _fingerprint(code: types.CodeType) -> tuple:
    """What a copy of a function keeps whatever its name, file or line numbers: its instructions with their
    names and constants (jumps by kind only; the compiler's choice between LOAD_METHOD and LOAD_ATTR and its
    bookkeeping instructions left out), nested functions by their own fingerprints. ``f.__code__.replace(...)``, a
    ``types.FunctionType`` built on it, and ``exec`` of its source text all give this fingerprint again."""
    import dis

    jumps = set(dis.hasjrel) | set(dis.hasjabs)
    ops = tuple((i.opname.replace("LOAD_METHOD", "LOAD_ATTR"),
                 None if i.opcode in jumps else _fingerprint(i.argval) if isinstance(i.argval, types.CodeType)
                 else i.argrepr.removeprefix("NULL|self + ").removeprefix("NULL + "))
                for i in dis.get_instructions(code) if i.opname not in _BOOKKEEPING)
    return ops, code.co_varnames


_BOOKKEEPING = {"CACHE", "PRECALL", "NOP", "RESUME", "EXTENDED_ARG", "COPY_FREE_VARS", "MAKE_CELL"}


@functools.cache
def _escapes() -> tuple[dict[types.CodeType, str], dict[int, str]]:
    """Ways for a learner's function to run code the watch cannot see: another thread, another process, or the
    watch switched off. Python functions by code, builtins by identity."""
    import multiprocessing.process
    import subprocess
    import threading

    codes = {threading.Thread.start.__code__: "a new thread (threading.Thread.start)",
             subprocess.Popen.__init__.__code__: "a new process (subprocess)",
             multiprocessing.process.BaseProcess.start.__code__: "a new process (multiprocessing)"}
    builtins = {id(sys.setprofile): "sys.setprofile", id(sys.settrace): "sys.settrace"}
    for name in ("system", "fork", "posix_spawn", "posix_spawnp", "execv", "execve", "popen"):
        if hasattr(os, name):
            builtins[id(getattr(os, name))] = f"a new process (os.{name})"
    return codes, builtins


_SMALLEST_COPY = 24  # bytes of bytecode: a one-line getter copied is no shortcut, and may be torch's own twin
_INSTALLED = tuple({*(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))),
                    os.path.dirname(os.__file__)})  # torch's, numpy's, the standard library's (not this package's)


_PROFILERS = (sys.setprofile, sys.settrace)


def _installed(code: types.CodeType) -> bool:
    """Whether ``code`` belongs to an installed package or the standard library: never a learner's copy of a
    shortcut, and a thread or process it starts (such as tqdm's monitor thread) is its own business."""
    return code.co_filename.startswith(_INSTALLED)


class _ShortcutWatch:
    """While active (``with``), notes every call of a :class:`Shortcut` in this thread (``sys.setprofile``): the
    function itself, or a copy of its code (:func:`_fingerprint`). With ``escapes=True`` it also notes what would
    take a call out of its sight (:func:`_escapes`: a thread, a process, the profiler switched off), in
    ``self.escaped``."""

    def __init__(self, shortcuts: Sequence[Shortcut], *, escapes: bool = False) -> None:
        self.by_code: dict[Any, Shortcut | None] = {
            _code_of(s.target): s for s in shortcuts if _code_of(s.target) is not None}
        self.by_fingerprint = {_fingerprint(code): s for code, s in self.by_code.items()
                               if len(code.co_code) >= _SMALLEST_COPY}
        self.builtins = {id(s.target): s for s in shortcuts
                         if _code_of(s.target) is None and not isinstance(s.target, tuple)}
        self.methods = {(s.target[1], s.target[0]): s for s in shortcuts if isinstance(s.target, tuple)}
        self.escape_codes, self.escape_builtins = _escapes() if escapes else ({}, {})
        self.seen: list[Shortcut] = []
        self.escaped: list[str] = []
        self._active = bool(self.by_code or self.builtins or self.methods or escapes)
        self._previous = None
        self._done = False

    def _lookup(self, code: types.CodeType) -> Shortcut | None:
        try:
            return self.by_code[code]
        except KeyError:  # first sight of this code: a copy of a shortcut's? (cached either way)
            hit = self.by_code[code] = None if _installed(code) else self.by_fingerprint.get(_fingerprint(code))
            return hit

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if self._done:  # __exit__ itself switches the profiler back
            return
        if event == "call":
            code = frame.f_code
            caller = frame.f_back
            if code in self.escape_codes and not (caller and _installed(caller.f_code)):  # tqdm's monitor: no escape
                self.escaped.append(self.escape_codes[code])
            hit = self._lookup(code)
        elif event == "c_call":
            if id(arg) in self.escape_builtins and (arg in _PROFILERS or not _installed(frame.f_code)):
                self.escaped.append(self.escape_builtins[id(arg)])
            hit = self.builtins.get(id(arg))
            if hit is None and self.methods:
                owner = getattr(arg, "__self__", None)
                for (method, cls), shortcut in self.methods.items():
                    if getattr(arg, "__name__", None) == method and isinstance(owner, cls):
                        hit = shortcut
                        break
        else:
            return
        if hit is not None and hit not in self.seen:
            self.seen.append(hit)

    def __enter__(self) -> _ShortcutWatch:
        if self._active:
            self._done = False
            self._previous = sys.getprofile()
            sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._active:
            return
        self._done = True
        if sys.getprofile() != self._profile and "sys.setprofile" not in self.escaped:
            self.escaped.append("sys.setprofile")
        previous = self._previous
        if previous is not None and not callable(previous) and hasattr(previous, "enable"):
            sys.setprofile(None)  # cProfile (e.g. %prun): a C profiler comes back through its own enable()
            previous.enable()
        else:
            sys.setprofile(previous)


# Hooks of every kind a learner's function may leave: on the model's modules (forward, forward pre-, backward,
# backward pre-, state-dict and load-state-dict hooks), on its parameters and buffers (tensor hooks, post-accumulate
# hooks) and torch's global module hooks. Found by name, so a kind a later torch adds is covered as well.
HookKey = tuple[int, str, int]  # (id of the owner: a module, a tensor or torch's module namespace; its dict; key)

_KIND_NAMES = {"_forward_hooks": "forward hook", "_forward_pre_hooks": "forward pre-hook",
               "_backward_hooks": "backward hook", "_backward_pre_hooks": "backward pre-hook",
               "_post_accumulate_grad_hooks": "post-accumulate-grad hook"}


def _hook_dicts(owner: object, prefix: str = "") -> list[tuple[str, dict]]:
    """The hook dictionaries of a module, a tensor or torch's module namespace: attributes named ``*_hooks``."""
    names = vars(owner) if not isinstance(owner, torch.Tensor) else ("_backward_hooks",
                                                                     "_post_accumulate_grad_hooks")
    out = []
    for attribute in names:
        value = getattr(owner, attribute, None)
        if attribute.startswith(prefix) and attribute.endswith("_hooks") and isinstance(value, dict):
            out.append((attribute, value))
    return out


def _hook_owners(modules: Sequence[nn.Module]) -> dict[int, object]:
    """Every object that can hold a hook of these modules, by id: their submodules, parameters and buffers, and
    torch's global module hooks."""
    from torch.nn.modules import module as module_namespace

    owners: dict[int, object] = {id(module_namespace): module_namespace}
    for module in modules:
        for m in module.modules():
            owners[id(m)] = m
            for tensor in [*m.parameters(recurse=False), *m.buffers(recurse=False)]:
                owners[id(tensor)] = tensor
    return owners


def _hooks(owners: Mapping[int, object]) -> set[HookKey]:
    out = set()
    for ident, owner in owners.items():
        prefix = "_global_" if not isinstance(owner, nn.Module | torch.Tensor) else ""
        for kind, hooks in _hook_dicts(owner, prefix):
            out |= {(ident, kind, key) for key in hooks}
    return out


def _hook_flags(owners: Mapping[int, object]) -> dict[tuple[int, str], Any]:
    """The flags torch keeps beside the hooks (whether the backward hooks are "full" ones): a flag a learner's hook
    set stays set after its hook is gone, and would refuse the other kind of backward hook later."""
    return {(ident, flag): getattr(owner, flag) for ident, owner in owners.items()
            for flag in ("_is_full_backward_hook", "_global_is_full_backward_hook") if hasattr(owner, flag)}


def _describe_hook(owners: Mapping[int, object], names: Mapping[int, str], key: HookKey) -> str:
    ident, kind, _ = key
    what = _KIND_NAMES.get(kind.removeprefix("_global"), kind.strip("_").replace("_", " ")[:-1])
    if isinstance(owners[ident], nn.Module | torch.Tensor):
        return f"a {what} on {names.get(ident, type(owners[ident]).__name__)}"
    return f"a global module {what}"


def remove_hooks(owners: Mapping[int, object], keys: set[HookKey]) -> None:
    """Remove the hooks ``keys`` (found by :func:`_hooks`), with the entries torch keeps beside each one
    (``_forward_hooks_with_kwargs``, ``_forward_hooks_always_called``, ...)."""
    for ident, kind, key in keys:
        owner = owners[ident]
        getattr(owner, kind).pop(key, None)
        for attribute in () if isinstance(owner, torch.Tensor) else list(vars(owner)):
            side = getattr(owner, attribute, None)
            if attribute.startswith(kind) and attribute != kind and isinstance(side, dict):
                side.pop(key, None)


# ----------------------------------------------------------------------------------------------------------------
# The learner's inputs: copies in, changes noticed


def learner_copy(value: Any) -> Any:
    """A copy of one input for the learner's function: tensors, arrays and images copied, lists, tuples and dicts
    copied item by item; modules (and strings, numbers, paths) are passed as they are (their weights are checked
    afterwards instead)."""
    if isinstance(value, torch.Tensor):
        copy = value.detach().clone()
        return copy.requires_grad_(True) if value.requires_grad and copy.is_floating_point() else copy
    if isinstance(value, nn.Module) or value is None or isinstance(value, str | bytes | numbers.Number | os.PathLike):
        return value
    if isinstance(value, list | tuple):
        items = [learner_copy(v) for v in value]
        return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
    if isinstance(value, dict):
        return type(value)((k, learner_copy(v)) for k, v in value.items())
    if hasattr(value, "copy") and callable(value.copy):  # numpy arrays, PIL images, sets
        return value.copy()
    import copy as copying

    return copying.deepcopy(value)  # a config dataclass, ...


def _same(a: Any, b: Any) -> bool:
    """Whether input ``b`` (as the learner's function left it) still equals its original ``a``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and bool(
            ((a == b) | (a.isnan() & b.isnan()) if a.is_floating_point() else (a == b)).all())
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a).__module__ == "numpy":
        import numpy as np

        return isinstance(b, np.ndarray) and a.shape == b.shape and bool(np.array_equal(a, b))
    if type(a).__module__.startswith("PIL"):
        return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()
    try:
        return bool(a == b) or a is b
    except Exception:  # noqa: BLE001 - a value that cannot be compared is taken as unchanged
        return True


def _argument_names(function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[str]:
    """The learner's names for the positional arguments (``images``, ``grad``, ...), as its signature says."""
    import inspect

    try:
        bound = inspect.signature(function).bind_partial(*args, **kwargs).arguments
        names = list(bound)[:len(args)]
    except (TypeError, ValueError):
        names = []
    return names + [f"argument {i + 1}" for i in range(len(names), len(args))]


def _weights(modules: Sequence[nn.Module]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (the parameter or buffer, a copy of its value) of every module given, each tensor once."""
    out, seen = {}, set()
    for module in modules:
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                out[name] = (tensor, tensor.detach().clone())
    return out


def _restore_weights(saved: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> list[str]:
    """Put back every parameter or buffer whose value changed; returns their names."""
    changed = []
    with torch.no_grad():
        for name, (tensor, value) in saved.items():
            if tensor.shape != value.shape or tensor.dtype != value.dtype:
                tensor.data = value
                changed.append(name)
            elif not torch.equal(tensor, value):
                tensor.copy_(value)
                changed.append(name)
    return changed


# ----------------------------------------------------------------------------------------------------------------
# What else a learner's function may change: the structure of the model it is given, torch's and the library's
# global state. Each is noted before the call and put back after it; the names of what changed come back.

_DYNAMIC = ("training", "reuse_memory", "reuse_thread", "_spare")  # moved by eval_mode and recordings themselves
_SCALARS = (bool, int, float, str, type(None))
_STRUCTURE = ("_parameters", "_buffers", "_modules")
_MISSING = object()


def _watched(key: str) -> bool:
    return "hook" not in key and key not in _DYNAMIC


def model_state(modules: Sequence[nn.Module]) -> list[tuple[str, nn.Module, dict[str, Any], dict[str, tuple]]]:
    """For every submodule of ``modules``: its instance attributes (parameters, buffers and children by identity;
    hooks and the flags the library moves itself left out) and each parameter's ``requires_grad`` and ``.grad``."""
    out, seen = [], set()
    for root in modules:
        for name, m in root.named_modules():
            if id(m) not in seen:
                seen.add(id(m))
                attrs = {k: dict(v) if k in _STRUCTURE else v for k, v in vars(m).items() if _watched(k)}
                params = {n: (p, p.requires_grad, p.grad) for n, p in m._parameters.items() if p is not None}
                out.append((name or "the model", m, attrs, params))
    return out


def restore_model_state(saved: Sequence[tuple[str, nn.Module, dict[str, Any], dict[str, tuple]]]) -> list[str]:
    """Put back what :func:`model_state` noted; returns what had changed (a ``.grad`` left by a backward pass is
    put back without being named: computing a gradient is no change to the model)."""
    changed = []
    for name, m, attrs, params in saved:
        now = vars(m)
        for key, value in attrs.items():
            current = now.get(key, _MISSING)
            if key in _STRUCTURE:
                if current.keys() != value.keys() or any(current[k] is not v for k, v in value.items()):
                    what = sorted(k for k in current.keys() | value.keys() if current.get(k) is not value.get(k))
                    changed += [f"{name}.{k}" for k in what]
                    current.clear()
                    current.update(value)
            elif current is not value and not (type(current) is type(value) and isinstance(value, _SCALARS)
                                               and current == value):
                changed.append(f"{name}.{key}")
                now[key] = value
        for key in [k for k in now if k not in attrs and _watched(k)]:  # e.g. a forward set on the instance
            changed.append(f"{name}.{key}")
            del now[key]
        for pname, (p, flag, grad) in params.items():
            if p.requires_grad != flag:
                changed.append(f"{name}.{pname}.requires_grad")
                p.requires_grad_(flag)
            if p.grad is not grad:
                p.grad = grad
    return changed


def _namespaces() -> list[tuple[str, object]]:
    """Where a function that checkers or the library call could be swapped for another: builtins, torch's main
    namespaces, numpy, and every module of this package."""
    import builtins

    import torch.nn.functional as F

    spaces = [("builtins", builtins), ("torch", torch), ("torch.Tensor", torch.Tensor), ("torch.nn.functional", F),
              ("torch.nn.Module", nn.Module), ("torch.autograd", torch.autograd), ("torch.linalg", torch.linalg),
              ("torch.testing", torch.testing)]
    if "numpy" in sys.modules:
        spaces.append(("numpy", sys.modules["numpy"]))
    return spaces + [(n, m) for n, m in list(sys.modules.items()) if n.split(".")[0] == "crossvit" and m is not None]


def _wrapped_by_a_package(current: Any, before: Any) -> bool:
    """Whether ``current`` is ``before`` wrapped by an installed package's code: importing ``torch._dynamo`` the
    first time (which the learner's function may do without knowing) wraps ``torch.manual_seed``, for one."""
    code = getattr(current, "__code__", None)
    return getattr(current, "__wrapped__", None) is before and code is not None and \
        code.co_filename.startswith(_INSTALLED)


def global_state() -> dict[str, Any]:
    """torch's global settings and the attributes of :func:`_namespaces` (by identity)."""
    return {"spaces": [(label, space, dict(vars(space))) for label, space in _namespaces()],
            "default_dtype": torch.get_default_dtype(), "matmul": torch.get_float32_matmul_precision(),
            "deterministic": (torch.are_deterministic_algorithms_enabled(),
                              torch.is_deterministic_algorithms_warn_only_enabled()),
            "threads": torch.get_num_threads()}


def restore_global_state(saved: Mapping[str, Any]) -> list[str]:
    """Put back what :func:`global_state` noted; returns what had changed (the thread count is put back without a
    word: it changes speed, not results)."""
    changed = []
    for label, space, before in saved["spaces"]:
        now = vars(space)
        for key, value in before.items():
            if key.startswith("__") or key == "_" or isinstance(value, types.ModuleType):
                continue  # module metadata, the REPL's last result, submodules
            current = now.get(key, _MISSING)
            if current is not value and not _wrapped_by_a_package(current, value):
                changed.append(f"{label}.{key}")
                setattr(space, key, value)
    if torch.get_default_dtype() != saved["default_dtype"]:
        changed.append("torch's default dtype (torch.set_default_dtype)")
        torch.set_default_dtype(saved["default_dtype"])
    if torch.get_float32_matmul_precision() != saved["matmul"]:
        changed.append("torch.set_float32_matmul_precision")
        torch.set_float32_matmul_precision(saved["matmul"])
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    if deterministic != saved["deterministic"]:
        changed.append("torch.use_deterministic_algorithms")
        torch.use_deterministic_algorithms(saved["deterministic"][0], warn_only=saved["deterministic"][1])
    if torch.get_num_threads() != saved["threads"]:
        torch.set_num_threads(saved["threads"])
    return changed


_INTERNALS: dict[str, list[Shortcut]] = {}


def checker_internals() -> list[Shortcut]:
    """The helpers of the checker modules loaded (``crossvit.exercises.nb*``), as shortcuts: they compute the
    references and the near misses, so a learner's function may not call them either. The ``check_*`` functions
    and what is defined inside them (wrappers around the learner's function, inputs handed to it) are left out."""
    out = []
    for name, module in list(sys.modules.items()):
        if name.startswith("crossvit.exercises.nb") and module is not None:
            if name not in _INTERNALS:
                _INTERNALS[name] = [Shortcut(s.target, f"the checker's own {s.label}")
                                    for s in module_shortcuts(module)
                                    if not s.target.co_qualname.startswith("check_")]  # (wrappers and inputs)
            out += _INTERNALS[name]
    return out
