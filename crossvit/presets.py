"""Named models: ``"seed"`` (lucidrains' constructor), the eleven paper variants under timm's names, and the
models of the synthetic shapes task (``"shapes_tiny"``, whose published weights are the bundled checkpoint).

``pretrained=True`` means the same everywhere: the published weights of that model (timm's ImageNet weights for a
paper variant, the bundled checkpoint for ``shapes_tiny``).

>>> model = create_model("crossvit_9_240", num_classes=10)
>>> model = create_model("seed", image_size=96, num_classes=6, sm_dim=64, lg_dim=128)
>>> model = create_model("shapes_tiny", pretrained=True)   # the bundled model, as crossvit.load_pretrained()
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from . import data
from .checkpoint import load_pretrained
from .config import CrossViTConfig, PaperConfig, SeedConfig
from .model import CrossViT
from .preprocessing import imagenet_data_config, shapes_data_config
from .utils import check_path
from .weights import cached_weights, fetch_imagenet_weights, hub_reachable, load_timm_weights

_240 = dict(img_size=240, img_scale=(1.0, 224 / 240))
_408 = dict(img_size=408, img_scale=(1.0, 384 / 408))


def _paper(embed_dim: tuple[int, int], large_depth: int, heads: int, mlp: float, size: dict, multi_conv: bool = False
           ) -> PaperConfig:
    return PaperConfig(
        patch_size=(12, 16), embed_dim=embed_dim, depth=((1, large_depth, 0),) * 3, num_heads=(heads, heads),
        mlp_ratio=(mlp, mlp, 1.0), multi_conv=multi_conv, **size,
    )


PAPER_PRESETS: dict[str, PaperConfig] = {
    "crossvit_tiny_240": _paper((96, 192), 4, 3, 4.0, _240),
    "crossvit_small_240": _paper((192, 384), 4, 6, 4.0, _240),
    "crossvit_base_240": _paper((384, 768), 4, 12, 4.0, _240),
    "crossvit_9_240": _paper((128, 256), 3, 4, 3.0, _240),
    "crossvit_15_240": _paper((192, 384), 5, 6, 3.0, _240),
    "crossvit_18_240": _paper((224, 448), 6, 7, 3.0, _240),
    "crossvit_9_dagger_240": _paper((128, 256), 3, 4, 3.0, _240, multi_conv=True),
    "crossvit_15_dagger_240": _paper((192, 384), 5, 6, 3.0, _240, multi_conv=True),
    "crossvit_18_dagger_240": _paper((224, 448), 6, 7, 3.0, _240, multi_conv=True),
    "crossvit_15_dagger_408": _paper((192, 384), 5, 6, 3.0, _408, multi_conv=True),
    "crossvit_18_dagger_408": _paper((224, 448), 6, 7, 3.0, _408, multi_conv=True),
}
"""The paper variants, with timm's names and configurations (ImageNet: 1000 classes)."""

SHAPES_PRESETS: dict[str, CrossViTConfig] = {
    # Paper flavour for 96 px images: the small branch cuts the 96 px image into 8x8 = 64 patches of 12 px, the
    # large branch the image resized to int(96 * 80/96) = 80 px into 5x5 = 25 patches of 16 px.
    "shapes_tiny": PaperConfig(
        img_size=96, img_scale=(1.0, 80 / 96), patch_size=(12, 16), embed_dim=(64, 128),
        depth=((2, 2, 0),) * 3, num_heads=(4, 4), mlp_ratio=(3.0, 3.0, 1.0), num_classes=data.NUM_CLASSES,
        # shapes images are in [0, 1]; centring them inside the model is what lets training leave chance level
        input_norm=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    ),
}
"""Models sized for the synthetic shapes task (:mod:`crossvit.data`), by name; the trainer's presets.
``create_model("shapes_tiny", pretrained=True)`` is the bundled checkpoint."""

SEED = "seed"


def list_models() -> list[str]:
    """Names :func:`create_model` accepts: ``"seed"``, the paper variants and the shapes-task models."""
    return [SEED, *PAPER_PRESETS, *SHAPES_PRESETS]


def _apply_overrides(cls: type, base: dict[str, Any], overrides: dict[str, Any], name: str):
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise TypeError(f"{name!r} got unexpected keyword argument(s) {unknown}; valid ones: {valid}")
    return cls(**{**base, **overrides})


def create_model(name: str, pretrained: bool = False, checkpoint_path: str | os.PathLike | None = None,
                 **overrides: Any) -> CrossViT:
    """Build a CrossViT by name (:func:`list_models`).

    ``"seed"`` takes exactly ``vit_pytorch.cross_vit.CrossViT``'s keyword arguments (``image_size``,
    ``num_classes``, ``sm_dim`` and ``lg_dim`` are required, as there). A paper name takes timm's keyword overrides
    (``num_classes``, ``img_size``, ``drop_rate``, ``drop_path_rate``, ``in_chans``, ...). ``pretrained=True``
    (paper names only) loads timm's ImageNet weights: from the Hugging Face cache when they are there (no network
    needed), else downloaded through timm (needs timm and the network once). ``checkpoint_path`` loads weights from a
    local timm-format state dict instead (``.safetensors``, or ``.pth``/``.bin`` read with
    ``torch.load(weights_only=True)``), offline and without timm: alone, the file must fit the model exactly (a
    classifier of another size is a ValueError that names the ``num_classes`` to pass, as timm's
    ``checkpoint_path`` refuses it); with ``pretrained=True`` too it is read as timm reads pretrained weights (a
    new ``num_classes`` keeps all but the classifier). Paper models carry timm's data config as
    ``model.pretrained_cfg`` (see :mod:`crossvit.preprocessing`).

    A shapes-task name (:data:`SHAPES_PRESETS`) builds that model with fresh weights (overrides as for a paper
    name); ``pretrained=True`` returns its published weights, the bundled checkpoint (``checkpoint_path``: a
    checkpoint of that model written by the trainer instead).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if checkpoint_path is not None:
        check_path("checkpoint_path", checkpoint_path)
    if name == SEED:
        if pretrained or checkpoint_path is not None:
            raise ValueError("the 'seed' flavour has no published weights; use pretrained=False, or convert your "
                             "own vit-pytorch model with crossvit.from_vit_pytorch")
        required = {"image_size", "num_classes", "sm_dim", "lg_dim"}
        missing = sorted(required - set(overrides))
        if missing:
            raise TypeError(f"'seed' needs the keyword argument(s) {missing} (as vit_pytorch's CrossViT does)")
        return CrossViT(_apply_overrides(SeedConfig, {}, overrides, name))
    if name in SHAPES_PRESETS:
        if pretrained or checkpoint_path is not None:  # the published weights: the bundled checkpoint
            if overrides:
                raise TypeError(f"{name!r} with pretrained weights takes no overrides (got {sorted(overrides)}): the "
                                "checkpoint's JSON defines the model")
            model = load_pretrained(checkpoint_path)
            if model.config != SHAPES_PRESETS[name]:
                raise ValueError(f"{checkpoint_path}: the checkpoint is not a {name!r} model (its config differs)")
            return model
        base = {f.name: getattr(SHAPES_PRESETS[name], f.name) for f in dataclasses.fields(PaperConfig) if f.init}
        model = CrossViT(_apply_overrides(PaperConfig, base, overrides, name))
        model.pretrained_cfg = shapes_data_config(model)  # how the shapes task feeds it
        return model
    if name not in PAPER_PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    base = {f.name: getattr(PAPER_PRESETS[name], f.name) for f in dataclasses.fields(PaperConfig) if f.init}
    # weights to load: the initialisation they replace draws from a copy of the caller's generator (a classifier
    # that pretrained=True leaves initial gets the values it would have had), and the caller's is not advanced
    with torch.random.fork_rng(devices=[], enabled=pretrained or checkpoint_path is not None):
        model = CrossViT(_apply_overrides(PaperConfig, base, overrides, name))
    model.pretrained_cfg = imagenet_data_config(name, (model.in_chans, model.image_size, model.image_size))
    if checkpoint_path is not None:
        # as in timm: pretrained=True with a local file is timm's pretrained loading (a new num_classes gets a fresh
        # classifier); checkpoint_path alone is your own weights and must fit the model exactly
        return load_timm_weights(model, checkpoint_path, reset_classifier=pretrained)
    if pretrained:
        return fetch_imagenet_weights(model, name, **overrides)
    return model


def imagenet_or_random(name: str, **overrides: object) -> tuple[CrossViT, bool]:
    """``(model, True)`` with timm's ImageNet weights if they are cached or can be downloaded now, else
    ``(model, False)`` with random weights (timm's initialisation, from the global torch seed). Eval mode."""
    if cached_weights(name) is not None or hub_reachable():
        try:
            return create_model(name, pretrained=True, **overrides), True
        except (RuntimeError, OSError, ValueError):
            pass  # a failed download: fall back to random weights, as when offline
    return create_model(name, **overrides).eval(), False
