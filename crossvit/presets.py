"""Named models: ``"seed"`` (lucidrains' constructor) and the eleven paper variants under timm's names.

>>> model = create_model("crossvit_9_240", num_classes=10)
>>> model = create_model("seed", image_size=96, num_classes=6, sm_dim=64, lg_dim=128)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .config import PaperConfig, SeedConfig
from .model import CrossViT
from .preprocessing import imagenet_data_config
from .weights import fetch_imagenet_weights, load_timm_weights

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

SEED = "seed"


def list_models() -> list[str]:
    """Names :func:`create_model` accepts: ``"seed"`` and the paper variants."""
    return [SEED, *PAPER_PRESETS]


def _apply_overrides(cls: type, base: dict[str, Any], overrides: dict[str, Any], name: str):
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise TypeError(f"{name!r} got unexpected keyword argument(s) {unknown}; valid ones: {valid}")
    return cls(**{**base, **overrides})


def create_model(name: str, pretrained: bool = False, checkpoint_path: str | os.PathLike | None = None,
                 **overrides: Any) -> CrossViT:
    """Build a CrossViT by name.

    ``"seed"`` takes exactly ``vit_pytorch.cross_vit.CrossViT``'s keyword arguments (``image_size``,
    ``num_classes``, ``sm_dim`` and ``lg_dim`` are required, as there). A paper name takes timm's keyword overrides
    (``num_classes``, ``img_size``, ``drop_rate``, ``drop_path_rate``, ``in_chans``, ...). ``pretrained=True``
    (paper names only) loads timm's ImageNet weights: from the Hugging Face cache when they are there (no network
    needed), else downloaded through timm (needs timm and the network once). ``checkpoint_path`` loads them from a
    local timm-format state dict instead (``.safetensors``, or ``.pth``/``.bin`` read with
    ``torch.load(weights_only=True)``), offline and without timm. Paper models carry timm's data config as
    ``model.pretrained_cfg`` (see :mod:`crossvit.preprocessing`).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name == SEED:
        if pretrained or checkpoint_path is not None:
            raise ValueError("the 'seed' flavour has no published weights; use pretrained=False, or convert your "
                             "own vit-pytorch model with crossvit.from_vit_pytorch")
        required = {"image_size", "num_classes", "sm_dim", "lg_dim"}
        missing = sorted(required - set(overrides))
        if missing:
            raise TypeError(f"'seed' needs the keyword argument(s) {missing} (as vit_pytorch's CrossViT does)")
        return CrossViT(_apply_overrides(SeedConfig, {}, overrides, name))
    if name not in PAPER_PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    base = {f.name: getattr(PAPER_PRESETS[name], f.name) for f in dataclasses.fields(PaperConfig) if f.init}
    model = CrossViT(_apply_overrides(PaperConfig, base, overrides, name))
    model.pretrained_cfg = imagenet_data_config(name, (model.in_chans, model.image_size, model.image_size))
    if checkpoint_path is not None:
        return load_timm_weights(model, checkpoint_path)
    if pretrained:
        return fetch_imagenet_weights(model, name, **overrides)
    return model
