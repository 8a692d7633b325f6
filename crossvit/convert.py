"""Converters from the two public CrossViT implementations: read the reference model's structure, build the matching
:class:`~crossvit.model.CrossViT`, and copy every weight under its new name.

* :func:`from_timm` for ``timm.models.crossvit.CrossVit`` (IBM's code, and its ImageNet weights);
* :func:`from_vit_pytorch` for ``vit_pytorch.cross_vit.CrossViT`` (lucidrains').

Neither library is imported unless one of its models is passed in.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from .config import BRANCHES, PaperConfig, SeedConfig
from .model import CrossViT, check_not_meta
from .utils import leaves_global_rng_alone


def _class_names(obj: object) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__}


def _load_exactly(model: CrossViT, state: dict[str, torch.Tensor], source: str) -> CrossViT:
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:  # a converter bug, not a user error: say exactly what did not line up
        raise RuntimeError(f"converting {source}: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise RuntimeError(f"converting {source}: {key} has shape {tuple(value.shape)}, "
                               f"expected {tuple(own[key].shape)}")
    model.load_state_dict(state)
    return model


def _converted(config: PaperConfig | SeedConfig, source: nn.Module, convert: Any) -> CrossViT:
    """A CrossViT of ``config`` holding ``source``'s weights, converted by the state-dict converter ``convert``,
    and put where ``source`` is: its floating dtype (set before the weights are copied, so none is rounded) and
    device, each parameter's ``requires_grad`` (a parameter made of several of the source's is trainable if any of
    them is), and its train/eval mode. A source whose submodules are in both modes gets a warning: the converted
    modules do not map one to one, so the model takes the source's top-level mode."""
    check_not_meta(source, f"the {type(source).__name__}")
    model = CrossViT(config)
    dtypes = {t.dtype for t in source.parameters() if t.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    state = {k: v.detach().cpu() for k, v in source.state_dict().items()}
    _load_exactly(model, convert(state), type(source).__name__)
    devices = {t.device for t in source.parameters()}
    if len(devices) == 1:
        model = model.to(devices.pop())
    # the converter maps each parameter's flag as it maps the parameter (split, joined or reshaped)
    trainable = {name: p.requires_grad for name, p in source.named_parameters()}
    flags = convert({name: torch.full(t.shape, float(trainable.get(name, False)))  # buffers too, as in the state
                     for name, t in source.state_dict().items()})
    for name, param in model.named_parameters():
        if name in flags:
            param.requires_grad_(bool(flags[name].any()))
    if len({module.training for module in source.modules()}) > 1:
        warnings.warn(f"the {type(source).__name__} has submodules in train mode and others in eval mode; the "
                      f"converted model is in {'train' if source.training else 'eval'} mode throughout (its modules "
                      "do not map one to one to the source's)", UserWarning, stacklevel=3)
    return model.train(source.training)


# ----------------------------------------------------------------------------------------------------------------
# timm / IBM


def _is_timm_crossvit(model: object) -> bool:
    return "timm.models.crossvit.CrossVit" in _class_names(model)


def timm_config(timm_model: nn.Module) -> PaperConfig:
    """Read a :class:`PaperConfig` off a timm ``CrossVit`` instance."""
    if not _is_timm_crossvit(timm_model):
        raise TypeError(f"expected a timm CrossVit (timm.models.crossvit.CrossVit), got {type(timm_model).__name__}")
    m: Any = timm_model
    if m.num_branches != 2:
        raise ValueError(f"only two-branch CrossViTs are supported, this one has {m.num_branches} branches")
    img = m.img_size[0]
    if m.img_size[0] != m.img_size[1] or any(s[0] != s[1] for s in m.img_size_scaled):
        raise ValueError(f"only square images are supported, got img_size {m.img_size}")
    scales = []
    for size, _ in m.img_size_scaled:
        scale = size / img
        while int(img * scale) < size:  # make timm's int(img * scale) give back exactly `size`
            scale = math.nextafter(scale, math.inf)
        scales.append(scale)
    first = m.blocks[0]
    depth = []
    for blk in m.blocks:
        fusion_depth = 0 if type(blk.fusion[0]).__name__ == "CrossAttentionBlock" else len(blk.fusion[0])
        depth.append((len(blk.blocks[0]), len(blk.blocks[1]), fusion_depth))
    layer0 = [first.blocks[i][0] for i in range(2)]
    norm = m.norm[0]
    # timm's stochastic depth ramps linearly from 0 to drop_path_rate, so the rate is the largest one in the model
    # (torch.linspace runs in float32, so round away its last bits)
    drop_path_rate = round(max((mod.drop_prob for mod in m.modules() if type(mod).__name__ == "DropPath"), default=0.0), 6)
    return PaperConfig(
        img_size=img, img_scale=tuple(scales), patch_size=tuple(pe.patch_size[0] for pe in m.patch_embed),
        in_chans=m.in_chans, num_classes=m.num_classes, embed_dim=tuple(m.embed_dim), depth=tuple(depth),
        num_heads=tuple(layer.attn.num_heads for layer in layer0),
        mlp_ratio=tuple(layer.mlp.fc1.out_features / layer.mlp.fc1.in_features for layer in layer0) + (1.0,),
        multi_conv=isinstance(m.patch_embed[0].proj, nn.Sequential), crop_scale=m.crop_scale,
        qkv_bias=layer0[0].attn.qkv.bias is not None, drop_rate=m.head_drop.p, pos_drop_rate=m.pos_drop.p,
        proj_drop_rate=layer0[0].attn.proj_drop.p, attn_drop_rate=layer0[0].attn.attn_drop.p,
        drop_path_rate=drop_path_rate, norm_eps=norm.eps, global_pool=m.global_pool,
    )


def timm_state_dict_to_ours(state: dict[str, torch.Tensor], depth: tuple[tuple[int, int, int], ...]
                            ) -> dict[str, torch.Tensor]:
    """Rename a timm CrossVit state dict to this package's names (``wk``/``wv`` become one ``to_kv``)."""
    out: dict[str, torch.Tensor] = {}
    for i, branch in enumerate(BRANCHES):
        out[f"embed.{branch}.cls_token"] = state[f"cls_token_{i}"]
        out[f"embed.{branch}.pos_embed"] = state[f"pos_embed_{i}"]
        prefix = f"patch_embed.{i}.proj."
        for key, value in state.items():
            if key.startswith(prefix):
                out[f"embed.{branch}.patch_embed.proj.{key[len(prefix):]}"] = value
        for p in ("weight", "bias"):
            out[f"heads.{branch}.norm.{p}"] = state[f"norm.{i}.{p}"]
            out[f"heads.{branch}.fc.{p}"] = state[f"head.{i}.{p}"]
    layer_names = {"norm1": "norm1", "attn.qkv": "attn.to_qkv", "attn.proj": "attn.to_out", "norm2": "norm2",
                   "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for k, block_depth in enumerate(depth):
        for i, branch in enumerate(BRANCHES):
            for j in range(block_depth[i]):
                for theirs, ours in layer_names.items():
                    for p in ("weight", "bias"):
                        key = f"blocks.{k}.blocks.{i}.{j}.{theirs}.{p}"
                        if key in state:
                            out[f"blocks.{k}.encoders.{branch}.layers.{j}.{ours}.{p}"] = state[key]
            fusion = f"blocks.{k}.fusion.{i}." + ("0." if block_depth[2] == 1 else "")
            ours = f"blocks.{k}.fusions.0.{branch}."
            for p in ("weight", "bias"):
                for idx in (0, 2):
                    out[ours + f"project_in.{idx}.{p}"] = state[f"blocks.{k}.projs.{i}.{idx}.{p}"]
                    out[ours + f"project_out.{idx}.{p}"] = state[f"blocks.{k}.revert_projs.{i}.{idx}.{p}"]
                out[ours + f"norm.{p}"] = state[fusion + f"norm1.{p}"]
                out[ours + f"attn.to_out.{p}"] = state[fusion + f"attn.proj.{p}"]
                if fusion + f"attn.wq.{p}" in state:
                    out[ours + f"attn.to_q.{p}"] = state[fusion + f"attn.wq.{p}"]
                    out[ours + f"attn.to_kv.{p}"] = torch.cat(
                        (state[fusion + f"attn.wk.{p}"], state[fusion + f"attn.wv.{p}"]), dim=0)
    return out


@leaves_global_rng_alone  # the model it builds is initialised, then overwritten
def from_timm(timm_model: nn.Module) -> CrossViT:
    """A :class:`CrossViT` computing the same function as a timm ``CrossVit``: weights copied, on the timm model's
    device and in its dtype, with its mode and each parameter's ``requires_grad`` (see :func:`_converted`).

    timm's data config comes along as ``model.pretrained_cfg`` (input size set to the model's own), so that
    :func:`crossvit.preprocess` prepares photos exactly as timm does for this model."""
    config = timm_config(timm_model)
    model = _converted(config, timm_model, lambda state: timm_state_dict_to_ours(state, config.depth))
    pretrained_cfg = getattr(timm_model, "pretrained_cfg", None)
    if pretrained_cfg:
        model.pretrained_cfg = {**pretrained_cfg, "input_size": (config.in_chans, config.img_size, config.img_size)}
    return model


def load_timm_pretrained(name: str, **overrides: Any) -> CrossViT:
    """Fetch timm's ImageNet weights for ``name`` and convert them (used by ``create_model(..., pretrained=True)``)."""
    try:
        import timm
    except ImportError as err:
        raise ImportError("pretrained paper weights come through timm: pip install 'crossvit-lab[pretrained]'"
                          ) from err
    try:
        timm_model = timm.create_model(name, pretrained=True, **overrides)
    except Exception as err:  # network, cache or hub errors all end here
        raise RuntimeError(
            f"could not fetch timm's pretrained weights for {name!r} ({type(err).__name__}: {err}). They are "
            "downloaded from the Hugging Face hub (timm/" + name + ".in1k): connect to the internet once, or copy "
            "a populated ~/.cache/huggingface here and set HF_HUB_OFFLINE=1."
        ) from err
    return from_timm(timm_model.eval()).eval()


# ----------------------------------------------------------------------------------------------------------------
# vit-pytorch / lucidrains


def _is_vit_pytorch_crossvit(model: object) -> bool:
    return "vit_pytorch.cross_vit.CrossViT" in _class_names(model)


def vit_pytorch_config(model: nn.Module) -> SeedConfig:
    """Read a :class:`SeedConfig` off a ``vit_pytorch.cross_vit.CrossViT`` instance."""
    if not _is_vit_pytorch_crossvit(model):
        raise TypeError(f"expected a vit_pytorch.cross_vit.CrossViT, got {type(model).__name__}")
    m: Any = model
    encoder = m.multi_scale_encoder
    first_block = encoder.layers[0]

    def branch(embedder: Any, transformer: Any, prefix: str) -> dict[str, int]:
        patch = embedder.to_patch_embedding[0].axes_lengths["p1"]
        num_patches = embedder.pos_embedding.shape[1] - 1
        attn, ff = transformer.layers[0]
        return {
            f"{prefix}_dim": embedder.cls_token.shape[-1], f"{prefix}_patch_size": patch,
            f"{prefix}_enc_depth": len(transformer.layers), f"{prefix}_enc_heads": attn.heads,
            f"{prefix}_enc_dim_head": attn.to_q.out_features // attn.heads,
            f"{prefix}_enc_mlp_dim": ff.net[1].out_features,
            "_image_size": math.isqrt(num_patches) * patch,
            "_channels": embedder.to_patch_embedding[1].normalized_shape[0] // (patch * patch),
        }

    small = branch(m.sm_image_embedder, first_block[0], "sm")
    large = branch(m.lg_image_embedder, first_block[1], "lg")
    cross_attn = first_block[2].layers[0][0].fn
    return SeedConfig(
        image_size=small.pop("_image_size"), num_classes=m.sm_mlp_head[1].out_features,
        channels=small.pop("_channels"), **{k: v for k, v in large.items() if not k.startswith("_")}, **small,
        cross_attn_depth=len(first_block[2].layers), cross_attn_heads=cross_attn.heads,
        cross_attn_dim_head=cross_attn.to_q.out_features // cross_attn.heads, depth=len(encoder.layers),
        dropout=first_block[0].layers[0][0].dropout.p, emb_dropout=m.sm_image_embedder.dropout.p,
    )


def vit_pytorch_state_dict_to_ours(state: dict[str, torch.Tensor], config: SeedConfig) -> dict[str, torch.Tensor]:
    """Rename a vit-pytorch CrossViT state dict to this package's names (``to_q`` + ``to_kv`` become ``to_qkv``
    in self-attention)."""
    out: dict[str, torch.Tensor] = {}

    def copy(theirs: str, ours: str) -> None:
        for p in ("weight", "bias"):
            if f"{theirs}.{p}" in state:
                out[f"{ours}.{p}"] = state[f"{theirs}.{p}"]

    for branch, short in zip(BRANCHES, ("sm", "lg")):
        emb = f"{short}_image_embedder."
        out[f"embed.{branch}.cls_token"] = state[emb + "cls_token"]
        out[f"embed.{branch}.pos_embed"] = state[emb + "pos_embedding"]
        for idx, name in ((1, "norm_in"), (2, "proj"), (3, "norm_out")):
            copy(f"{emb}to_patch_embedding.{idx}", f"embed.{branch}.patch_embed.{name}")
        copy(f"{short}_mlp_head.0", f"heads.{branch}.norm")
        copy(f"{short}_mlp_head.1", f"heads.{branch}.fc")
    for k in range(config.depth):
        block = f"multi_scale_encoder.layers.{k}."
        for i, branch in enumerate(BRANCHES):
            enc = f"{block}{i}."
            ours = f"blocks.{k}.encoders.{branch}."
            depth = config.sm_enc_depth if branch == "small" else config.lg_enc_depth
            for j in range(depth):
                attn, ff, layer = f"{enc}layers.{j}.0.", f"{enc}layers.{j}.1.net.", f"{ours}layers.{j}."
                copy(attn + "norm", layer + "norm1")
                out[layer + "attn.to_qkv.weight"] = torch.cat((state[attn + "to_q.weight"],
                                                               state[attn + "to_kv.weight"]), dim=0)
                copy(attn + "to_out.0", layer + "attn.to_out")
                copy(ff + "0", layer + "norm2")
                copy(ff + "1", layer + "mlp.fc1")
                copy(ff + "4", layer + "mlp.fc2")
            copy(enc + "norm", ours + "norm")
            for f in range(config.cross_attn_depth):
                theirs, fusion = f"{block}2.layers.{f}.{i}.", f"blocks.{k}.fusions.{f}.{branch}."
                copy(theirs + "project_in", fusion + "project_in")
                copy(theirs + "project_out", fusion + "project_out")
                copy(theirs + "fn.norm", fusion + "norm")
                copy(theirs + "fn.to_q", fusion + "attn.to_q")
                copy(theirs + "fn.to_kv", fusion + "attn.to_kv")
                copy(theirs + "fn.to_out.0", fusion + "attn.to_out")
    return out


@leaves_global_rng_alone
def from_vit_pytorch(model: nn.Module) -> CrossViT:
    """A :class:`CrossViT` computing the same function as a ``vit_pytorch.cross_vit.CrossViT``: weights copied, on
    its device and in its dtype, with its mode and each parameter's ``requires_grad`` (see :func:`_converted`)."""
    config = vit_pytorch_config(model)
    return _converted(config, model, lambda state: vit_pytorch_state_dict_to_ours(state, config))


__all__ = ["from_timm", "from_vit_pytorch", "timm_config", "vit_pytorch_config", "load_timm_pretrained"]
