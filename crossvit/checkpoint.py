"""Save and load CrossViT checkpoints as a safetensors file plus a JSON sidecar; nothing is ever pickled.

A checkpoint named ``NAME`` in a directory is two files::

    NAME.safetensors   the weights (a contiguous CPU state dict, loadable with safetensors alone)
    NAME.json          {"format": 2, "config": model.config.to_dict(), "record": {...} or null,
                        "sha256": "<hex sha256 of NAME.safetensors>",
                        "config_sha256": "<hex sha256 of the config and data_config, canonical JSON>",
                        "data_config": {...}   (optional: the model's pretrained_cfg, how to prepare inputs)}

The JSON says how to rebuild the network (``config``), what produced the weights (``record``: the trainer's
command line, settings, accuracy, ...), and lets the loader check that the weights file is the one that was
written (``sha256``) and that nothing that defines the model was edited since (``config_sha256`` covers the
``config`` and the ``data_config``: an edited ``num_heads`` would load the same weights into another network). ``load_pretrained()`` loads the small model bundled in ``crossvit/assets/``. A loaded
model knows how its inputs must be prepared (``model.pretrained_cfg``, see :mod:`crossvit.preprocessing`): the
stored ``data_config``, else the shapes task's for a model ``crossvit.train`` wrote.

The trainer's files live here too: :func:`check_output` and :func:`check_state_file` make sure a run can write its
checkpoint and its resumable state before it starts; that state (weights, optimiser, schedule, batch order) is a
``torch.save`` file read back with ``weights_only=True`` (:func:`save_training_state`, :func:`load_training_state`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal, overload

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import config_from_dict
from .model import CrossViT, check_crossvit, check_not_meta
from .preprocessing import checkpoint_data_config, stored_data_config
from .utils import (
    atomic_write,
    check_bool,
    check_path,
    dtype_kind_mismatches,
    first_line,
    leaves_global_rng_alone,
    resolve_device,
)

FORMAT = 2
"""Version of the JSON sidecar layout written by :func:`save_checkpoint` (2 added ``config_sha256``). ``"format"``
must be the JSON integer 1 or 2; a format-1 file has no config hash, so an edited config cannot be told from the
one the weights were trained with: it loads only with ``load_checkpoint(..., allow_unverified_config=True)`` (or
``verify=False``)."""

WEIGHTS_SUFFIX = ".safetensors"
META_SUFFIX = ".json"

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUNDLED_CHECKPOINT = ASSETS_DIR / "shapes_tiny.safetensors"
"""The small CrossViT trained on the synthetic shapes task (``benchmarks/train_bundled.sh`` rebuilds it)."""

BUNDLED_CHECKPOINTS: dict[str, Path] = {"shapes": BUNDLED_CHECKPOINT,
                                        "two_scale": ASSETS_DIR / "two_scale.safetensors"}
"""The bundled checkpoint of each task (:data:`crossvit.tasks.TASKS`): the shapes model above, and the CrossViT of
size ``m`` trained on the two-scale task by ``benchmarks/two_scales.py train`` (the paper's asymmetric branches;
its run's record says which learning rate won)."""


def config_sha256(meta: dict[str, Any]) -> str:
    """Hex sha256 of everything in a sidecar that defines the model besides its weights: the ``config`` and the
    (optional) ``data_config``, as canonical JSON (sorted keys, no spaces)."""
    defining = {"config": meta.get("config"), "data_config": meta.get("data_config")}
    text = json.dumps(defining, sort_keys=True, separators=(",", ":"))  # NaN stays NaN: an edit still shows
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_paths(path: str | Path, name: str = "model") -> tuple[Path, Path]:
    """(weights file, JSON file) of a checkpoint given as its .safetensors file, its .json file, or a directory
    holding ``<name>.safetensors`` and ``<name>.json``. Only names paths; checks nothing."""
    path = check_path("checkpoint path", path)
    if path.is_dir():
        path = path / f"{name}{WEIGHTS_SUFFIX}"
    if path.suffix == META_SUFFIX:
        return path.with_suffix(WEIGHTS_SUFFIX), path
    if path.suffix == WEIGHTS_SUFFIX:
        return path, path.with_suffix(META_SUFFIX)
    raise ValueError(f"{path}: expected a {WEIGHTS_SUFFIX} file, a {META_SUFFIX} file or a directory")


def check_checkpoint_name(name: object) -> str:
    """``name`` if it is a plain file stem such as ``"model"`` (no directory, not hidden), else a ValueError."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith(".") \
            or "\0" in name:
        raise ValueError(f"checkpoint name must be a plain file stem such as 'model', got {name!r}")
    return name


def check_not_taken(directory: str | Path, name: str, overwrite: bool) -> None:
    """A FileExistsError when ``<directory>/<name>.safetensors`` or ``.json`` exists (a symlink too, even one that
    points nowhere) and ``overwrite`` is False."""
    if check_bool("overwrite", overwrite):
        return
    taken = [p for p in (Path(directory) / f"{name}{WEIGHTS_SUFFIX}", Path(directory) / f"{name}{META_SUFFIX}")
             if os.path.lexists(p)]  # a dangling symlink too: writing would replace it
    if taken:
        raise FileExistsError(f"{taken[0]} exists: a checkpoint named {name!r} is already in {directory}; choose "
                              "another name or directory, or pass overwrite=True (--overwrite) to replace it")


def check_output(out_dir: str | Path, name: str, overwrite: bool = False) -> Path:
    """Make sure a checkpoint ``<out_dir>/<name>.*`` can be written, before any training: ``name`` must be a plain
    file stem, ``out_dir`` a directory (created if missing) in which a file can be created, and no checkpoint of
    that name may be there unless ``overwrite``. Returns ``out_dir``."""
    check_checkpoint_name(name)
    out = check_path("out_dir", out_dir)
    check_not_taken(out, name, overwrite)
    _check_writable_folder(out, "the checkpoint")
    return out


def _check_writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` if missing and make sure a file can be created in it; a ValueError naming ``what``."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot write {what} to {str(folder)!r}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"cannot write {what} to {str(folder)!r}: {err.strerror or err}") from None


def check_state_file(state_file: str | Path) -> Path:
    """Make sure the training state can be written to ``state_file`` before any training (a file path, not a
    folder; its folder is created if missing). Returns it as a Path."""
    path = check_path("state_file", state_file)
    if path.is_dir():
        raise ValueError(f"state_file {str(path)!r} is a folder; give the path of a file in it (e.g. "
                         f"{path / 'state.pt'})")
    _check_writable_folder(path.parent, "the training state")
    return path


def global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global generators' states a resumed run needs (dropout and drop-path draw from them)."""
    state = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_global_rng(saved: dict[str, Any], device: torch.device) -> None:
    """Give torch's global generators the states :func:`global_rng_state` saved in ``saved``."""
    if "rng" in saved:  # a state file written before the trainer kept them has none
        torch.set_rng_state(saved["rng"])
    if "cuda_rng" in saved and device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], device)


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write a resumable training state (:func:`crossvit.train.train`'s ``state_file``) atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The training state saved in ``path`` (None if there is none); a ValueError if it belongs to a run of
    another config (``config``: the run's ``TrainConfig.to_dict()``)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"{path}: not a training state this trainer wrote ({first_line(err)[:200]}); move it away "
                         "to start afresh") from None
    if not isinstance(state, dict) or "config" not in state:  # a tensor, a list, another program's dict
        raise ValueError(f"{path}: not a training state this trainer wrote (it holds a {type(state).__name__}); "
                         "move it away to start afresh")
    if state.get("config") != config:
        raise ValueError(f"{path} holds the state of a run with another TrainConfig; move it away or give that "
                         "config")
    return state


def save_checkpoint(model: CrossViT, directory: str | Path, *, record: dict[str, Any] | None = None,
                    name: str = "model", overwrite: bool = False) -> Path:
    """Write ``<directory>/<name>.safetensors`` and ``<name>.json`` (see the module docstring); returns the
    weights path. ``record`` must be plain JSON (dicts, lists, str, numbers, bools, None). An existing checkpoint
    of that name is a FileExistsError unless ``overwrite=True``."""
    check_crossvit(model, "save_checkpoint")
    check_not_meta(model, "the model to save")
    check_checkpoint_name(name)
    directory = check_path("directory", directory)
    check_not_taken(directory, name, overwrite)
    if record is not None and not isinstance(record, dict):
        raise TypeError(f"record must be a dict or None, got {type(record).__name__}")
    try:
        record_json = json.loads(json.dumps(record, allow_nan=False))  # fails now, not when loading
    except (TypeError, ValueError) as err:
        raise TypeError(f"record must be plain JSON (dict/list/str/number/bool/None, finite floats): {err}") from None

    data_config = stored_data_config(model)
    _check_writable_folder(directory, "the checkpoint")  # a file where the folder should be: named, a ValueError
    weights_path = directory / f"{name}{WEIGHTS_SUFFIX}"
    meta_path = directory / f"{name}{META_SUFFIX}"
    state = {key: tensor.detach().to("cpu").contiguous() for key, tensor in model.state_dict().items()}
    atomic_write(weights_path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    meta = {"format": FORMAT, "config": model.config.to_dict(), "record": record_json,
            "sha256": file_sha256(weights_path)}
    if data_config is not None:  # how inputs must be prepared (crossvit.preprocessing); optional key
        meta["data_config"] = data_config
    meta["config_sha256"] = config_sha256(json.loads(json.dumps(meta)))  # hashed as it will be read back
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8"))
    return weights_path


def read_checkpoint_meta(path: str | Path, name: str = "model") -> dict[str, Any]:
    """The parsed JSON sidecar of a checkpoint (config, record, sha256), checked for the expected keys."""
    _, meta_path = checkpoint_paths(path, name)
    if not meta_path.is_file():
        raise FileNotFoundError(f"checkpoint metadata {meta_path} not found (a checkpoint is a .safetensors file "
                                f"plus a .json file of the same name, as written by save_checkpoint)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err}); the file is corrupted") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    missing = sorted({"format", "config", "sha256"} - set(meta))
    if missing:
        raise ValueError(f"{meta_path}: missing key(s) {missing}; not a crossvit checkpoint")
    if type(meta["format"]) is not int or meta["format"] not in (1, FORMAT):  # not True, 2.0 or "2"
        raise ValueError(f"{meta_path}: checkpoint format {meta['format']!r} is not supported (this crossvit "
                         f"reads the integers 1 and {FORMAT})")
    if meta["format"] >= 2 and "config_sha256" not in meta:
        raise ValueError(f"{meta_path}: missing key 'config_sha256' (format {meta['format']}); not a crossvit "
                         "checkpoint, or an edited one")
    return meta


@overload
def load_checkpoint(path: str | Path, *, name: str = ..., map_location: str | torch.device = ...,
                    verify: bool = ..., allow_unverified_config: bool = ...,
                    with_record: Literal[False] = ...) -> CrossViT: ...
@overload
def load_checkpoint(path: str | Path, *, name: str = ..., map_location: str | torch.device = ...,
                    verify: bool = ..., allow_unverified_config: bool = ...,
                    with_record: Literal[True]) -> tuple[CrossViT, dict | None]: ...


@leaves_global_rng_alone  # the model it builds is initialised, then overwritten: no draw of the caller's is used up
def load_checkpoint(path: str | Path, *, name: str = "model", map_location: str | torch.device = "cpu",
                    verify: bool = True, allow_unverified_config: bool = False, with_record: bool = False):
    """Rebuild a model written by :func:`save_checkpoint`, in eval mode, on ``map_location``, in the dtype it was
    saved in.

    ``path`` is the .safetensors file, the .json file, or the directory (then ``name`` picks the checkpoint).
    The training record is attached as ``model.training_record``; ``with_record=True`` returns
    ``(model, record)`` instead.

    Refused (ValueError naming the file): a ``"format"`` other than the JSON integer 1 or 2; with ``verify``
    (the default), a weights file whose sha256 is not the JSON's, a config or data_config that no longer matches
    its ``config_sha256``, and a format-1 file (it has no config hash, so an edited config would go unnoticed)
    unless ``allow_unverified_config=True`` says the caller vouches for it; always, a config that does not fit the
    weights (names, shapes) and a weight stored with another kind of dtype than the model's (an integer tensor
    where the model has float weights is never cast). ``verify=False`` skips the hash checks (and so also loads
    format 1). A missing file is a FileNotFoundError.
    """
    for flag, value in (("verify", verify), ("allow_unverified_config", allow_unverified_config),
                        ("with_record", with_record)):
        check_bool(flag, value)
    check_checkpoint_name(name)  # as save_checkpoint: a plain file name, no path
    map_location = resolve_device(map_location, "map_location")  # before any file is read, not torch's error after
    weights_path, meta_path = checkpoint_paths(path, name)
    if not weights_path.is_file():
        raise FileNotFoundError(f"checkpoint weights {weights_path} not found")
    meta = read_checkpoint_meta(meta_path)
    if verify:
        actual = file_sha256(weights_path)
        if actual != meta["sha256"]:
            raise ValueError(f"{weights_path}: sha256 mismatch: the file hashes to {actual} but {meta_path.name} "
                             f"records {meta['sha256']}; the weights are corrupted or do not belong to this JSON "
                             "(pass verify=False to load anyway)")
        if meta["format"] == 1:
            if not allow_unverified_config:
                raise ValueError(
                    f"{meta_path} is a format-1 checkpoint: its config is not covered by a hash, so a config edited "
                    "after the weights were written cannot be told from the real one, and the weights could load "
                    "into another network. If you trust this file, load it with load_checkpoint(..., "
                    "allow_unverified_config=True) and save it again with save_checkpoint, which adds the hash")
        elif config_sha256(meta) != meta["config_sha256"]:
            raise ValueError(f"{meta_path}: the model config (or data_config) was changed after the checkpoint was "
                             "written: it no longer matches its config_sha256, so the weights would load into "
                             "another network than the one they were trained in (pass verify=False to load anyway)")
    try:
        config = config_from_dict(meta["config"])
        with torch.device("meta"):  # shapes only, no memory: the config is checked against the file first
            meta_state = CrossViT(config).state_dict()
        expected = {k: tuple(v.shape) for k, v in meta_state.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{meta_path}: invalid model config: {err}") from None
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as f:  # reads the header only
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({err}); the file is corrupted") from None

    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong_shape = [f"{k}: file {stored[k]} vs config {v}" for k, v in expected.items()
                   if k in stored and stored[k] != v]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{weights_path}: the weights do not fit the config in {meta_path.name}: "
            f"{len(missing)} missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong_shape)} with another shape {wrong_shape[:3]}"
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights_path}: not a readable safetensors file ({err}); the file is corrupted") from None
    wrong_kind = dtype_kind_mismatches(state, meta_state)
    if wrong_kind:
        raise ValueError(f"{weights_path}: {len(wrong_kind)} tensor(s) stored with another kind of dtype than the "
                         f"model's, which loading would cast silently: {wrong_kind[:3]}; the file is not a "
                         "checkpoint of this model")
    model = CrossViT(config)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:  # a model saved in float16 / bfloat16 / float64 comes back so
        model = model.to(dtypes.pop())
    model.load_state_dict(state)
    model.to(map_location).eval()
    record = meta.get("record")
    model.training_record = record
    model.pretrained_cfg = checkpoint_data_config(meta, model)
    return (model, record) if with_record else model


def load_pretrained(path: str | Path | None = None, *, task: str = "shapes", **kwargs: Any) -> CrossViT:
    """A bundled model (hash-verified): the shapes model by default, or the two-scale task's with
    ``task="two_scale"`` (:data:`BUNDLED_CHECKPOINTS`); or, given ``path``, any checkpoint the trainer wrote (then
    ``task`` is not used). ``kwargs`` go to :func:`load_checkpoint` (``map_location``, ``verify``, ``name``, ...)."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a task's name (a str), got {type(task).__name__}")
    if task not in BUNDLED_CHECKPOINTS:
        raise ValueError(f"task must be one of {sorted(BUNDLED_CHECKPOINTS)}, got {task!r}")
    if path is None:
        path = BUNDLED_CHECKPOINTS[task]
        if not path.is_file():
            rebuild = "benchmarks/train_bundled.sh" if task == "shapes" else "benchmarks/two_scales.py train"
            raise FileNotFoundError(f"the bundled checkpoint {path} is missing; rebuild it with {rebuild}")
    elif task != "shapes":
        raise ValueError(f"give either a path or a task, not both (got path={str(path)!r} and task={task!r})")
    return load_checkpoint(path, **kwargs)
