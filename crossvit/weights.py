"""timm's ImageNet weights for the paper variants: from a local file, from the Hugging Face cache, or through timm.

* :func:`read_state_dict` reads a timm-format state dict from ``.safetensors`` or, through
  ``torch.load(weights_only=True)``, from ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` (never a full pickle);
* :func:`load_timm_weights` converts it into a :class:`CrossViT` of the same variant, as timm would load it;
* :func:`fetch_imagenet_weights` is ``create_model(name, pretrained=True)``: the file in the Hugging Face cache
  when it is there (offline, no network call), else a download through timm (which caches it), else a clear
  error at once instead of timm's minute of retries;
* :func:`crossvit.presets.imagenet_or_random` (notebook 07) builds on these: real weights when they can be had,
  random ones otherwise, and which of the two it got.

timm keeps its downloads in the Hugging Face cache: ``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``,
as ``models--timm--<name>.in1k/``. ``HF_HUB_OFFLINE=1`` forbids any network access.
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .convert import timm_state_dict_to_ours
from .model import CrossViT, check_crossvit, check_not_meta
from .utils import check_bool, check_path, dtype_kind_mismatches, first_line

HUB_TAG = "in1k"
"""timm's pretrained tag of the paper variants' ImageNet-1k weights."""

HUB_FILES: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
"""The weight files timm looks for in a hub repository, in its order of preference."""

TORCH_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".bin", ".ckpt", ".tar")  # .tar: timm's train.py's model_best.pth.tar

# wrappers timm's load_state_dict unwraps, in its order of preference (EMA weights first)
_WRAPPER_KEYS: tuple[str, ...] = ("state_dict_ema", "model_ema", "state_dict", "model")
# prefixes left by DistributedDataParallel and torch.compile, stripped as timm's clean_state_dict does
_WRAPPER_PREFIXES: tuple[str, ...] = ("_orig_mod.", "module.")


def hub_repo(name: str) -> str:
    """The Hugging Face repository of a paper variant's ImageNet weights, e.g. ``timm/crossvit_15_240.in1k``."""
    return f"timm/{name}.{HUB_TAG}"


# ----------------------------------------------------------------------------------------------------------------
# Files


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict (name -> tensor, on the CPU) from a ``.safetensors`` file or a ``torch.save`` file read with
    ``weights_only=True``. A ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper (EMA weights first, as in timm)
    is unwrapped and ``module.`` prefixes are stripped, so a checkpoint of timm's training script
    (``model_best.pth.tar``, with its settings as an ``argparse.Namespace``) loads too. Errors name the file."""
    path = check_path("checkpoint_path", path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the weights file itself (.safetensors, .pth or .bin)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    elif suffix in TORCH_SUFFIXES:
        try:
            # timm's training script saves its settings beside the weights as an argparse.Namespace, a plain
            # attribute holder (whose values weights_only still restricts to plain types)
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as err:
            raise ValueError(f"{path}: torch.load(weights_only=True) cannot read it as a plain state dict "
                             f"({first_line(err)}); "
                             "crossvit never unpickles arbitrary objects: re-save the weights with "
                             "torch.save(model.state_dict(), ...) or as .safetensors") from None
    else:
        raise ValueError(f"{path}: unknown weights format {suffix!r}; expected .safetensors or "
                         f"{', '.join(TORCH_SUFFIXES)}")
    if isinstance(state, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: holds {type(state).__name__}, not a state dict of tensors")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; not a state dict")
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def _timm_key_fixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's own filter for CrossViT checkpoints: the original IBM files name ``pos_embed.0``, timm ``pos_embed_0``."""
    return {(key.replace(".", "_") if "pos_embed" in key or "cls_token" in key else key): value
            for key, value in state.items()}


class _RecordingDict(dict):
    """A dict that remembers which keys were read, to find the entries a conversion left unused."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return super().__getitem__(key)


def file_num_classes(path: str | os.PathLike) -> int:
    """The number of classes of the classifier in a timm ``CrossVit`` state dict file."""
    state = _timm_key_fixes(read_state_dict(path))
    _check_timm_keys(path, state)
    return int(state["head.0.weight"].shape[0])


def _check_timm_keys(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> None:
    """A ValueError saying what ``state`` is if it is not a timm CrossViT state dict with its classifier."""
    if "embed_small_cls_token" in state:  # embed.small.cls_token, after _timm_key_fixes
        raise ValueError(f"{path}: a crossvit model's state dict, not a timm one: load it into the model it came "
                         "from with model.load_state_dict(torch.load(path)), or save models with "
                         "crossvit.save_checkpoint and read them with crossvit.load_checkpoint")
    if "cls_token_0" not in state:
        raise ValueError(f"{path}: not a timm CrossViT state dict (no 'cls_token_0'; first keys: {sorted(state)[:4]})")
    if "head.0.weight" not in state:
        raise ValueError(f"{path}: a timm CrossViT without its classifier (no 'head.0.weight': saved with "
                         "num_classes=0, as a feature extractor); explaining a class needs the classifier's weights")


def load_timm_weights(model: CrossViT, path: str | os.PathLike, *, reset_classifier: bool = False) -> CrossViT:
    """Load a timm ``CrossVit`` state dict file into ``model`` (built for the same variant); returns it in eval mode.

    A file whose classifier has another number of classes than the model is refused (as timm's
    ``load_checkpoint`` refuses it), with the number to pass as ``num_classes``; with ``reset_classifier=True``
    (timm's *pretrained* loading, used for its ImageNet weights with a new ``num_classes``) everything but the two
    classifier layers loads and those keep their initial values. Any other mismatch (another variant's weights, a
    file that is not a timm CrossViT) raises a ValueError naming the file.
    """
    if check_crossvit(model, "load_timm_weights").flavour != "paper":
        raise TypeError("timm weights load into a paper-flavour crossvit.CrossViT (create_model(<paper name>)), "
                        f"got a {model.flavour}-flavour one")
    check_not_meta(model, "the model to load weights into")
    path = check_path("path", path)
    check_bool("reset_classifier", reset_classifier)
    state = _timm_key_fixes(read_state_dict(path))
    _check_timm_keys(path, state)
    keep_heads = state["head.0.weight"].shape[0] == model.num_classes
    if not keep_heads and not reset_classifier:
        n = state["head.0.weight"].shape[0]
        raise ValueError(f"{path}: the file's classifier has {n} classes but the model has {model.num_classes}; "
                         f"build the model with num_classes={n} (create_model(name, num_classes={n}, "
                         f"checkpoint_path=...), or --num-classes {n} on the command line)")
    if not keep_heads:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    recorder = _RecordingDict(state)
    own = model.state_dict()
    if not keep_heads:  # the converter reads the heads too: give it the model's own (initial) ones
        for i, branch in enumerate(model.branch_names):
            for p in ("weight", "bias"):
                dict.__setitem__(recorder, f"head.{i}.{p}", own[f"heads.{branch}.fc.{p}"])
    try:
        converted = timm_state_dict_to_ours(recorder, model.config.depth)
    except KeyError as err:
        raise ValueError(f"{path}: has no entry {err.args[0]!r}; are these the weights of another model?") from None
    unused = sorted(k for k in state if k not in recorder.read and not k.startswith("patch_embed."))
    missing = sorted(set(own) - set(converted))
    wrong = [f"{k}: file {tuple(v.shape)}, model {tuple(own[k].shape)}"
             for k, v in converted.items() if k in own and v.shape != own[k].shape]
    if unused or missing or wrong:
        raise ValueError(f"{path}: the weights do not fit this model (weights of another variant?): "
                         f"{len(wrong)} with another shape {wrong[:3]}, {len(unused)} unused {unused[:3]}, "
                         f"{len(missing)} missing {missing[:3]}")
    wrong_kind = dtype_kind_mismatches(converted, own)
    if wrong_kind:
        raise ValueError(f"{path}: {len(wrong_kind)} tensor(s) stored with another kind of dtype than the model's, "
                         f"which loading would cast silently: {wrong_kind[:3]}")
    model.load_state_dict(converted)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# The Hugging Face cache and hub


def cached_weights(name: str) -> Path | None:
    """The weights file of ``name``'s ImageNet weights in the Hugging Face cache, or None if not downloaded yet
    (or if huggingface_hub, which comes with timm, is not installed)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in HUB_FILES:
        found = try_to_load_from_cache(hub_repo(name), filename)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds (False when
    ``HF_HUB_OFFLINE`` is set, or without huggingface_hub). A fast check before timm's slow retries."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


def fetch_imagenet_weights(model: CrossViT, name: str, **overrides: object) -> CrossViT:
    """``model`` (built for ``name``) with timm's ImageNet weights: the cached file when it is there, else a model
    downloaded and converted through timm (``**overrides`` go to timm), else a RuntimeError that says what to do."""
    cached = cached_weights(name)
    if cached is not None:  # timm's pretrained semantics: a new num_classes gets a fresh classifier
        return load_timm_weights(model, cached, reset_classifier=True)
    if not hub_reachable():
        raise RuntimeError(
            f"could not fetch timm's pretrained weights for {name!r}: they are not in the Hugging Face cache and the "
            f"hub cannot be reached (HF_HUB_OFFLINE set, or no network). Connect once so that timm downloads {hub_repo(name)}, or use a "
            "local copy of its model.safetensors: create_model(name, checkpoint_path=FILE), or --checkpoint FILE "
            "on the command line."
        )
    from .convert import load_timm_pretrained

    return load_timm_pretrained(name, **overrides)


__all__ = ["HUB_FILES", "HUB_TAG", "cached_weights", "fetch_imagenet_weights", "file_num_classes", "hub_reachable",
           "hub_repo",
           "load_timm_weights", "read_state_dict"]
