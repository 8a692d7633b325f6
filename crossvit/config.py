"""Configurations of the two published CrossViT flavours, and the one architecture both map to.

* :class:`SeedConfig` mirrors lucidrains' ``vit_pytorch.cross_vit.CrossViT`` keyword arguments (same names, same
  defaults), so ``create_model("seed", **kwargs)`` accepts exactly what that constructor accepts.
* :class:`PaperConfig` mirrors the keyword arguments of timm's ``CrossVit`` (the IBM paper code), so timm overrides
  such as ``num_classes``, ``img_size`` or ``drop_rate`` work unchanged.

Both are turned into an :class:`Architecture`: a flavour-neutral description (per-branch widths, depths, image
sizes, and the few places where the flavours really differ) from which :mod:`crossvit.model` builds the network.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

BRANCHES: tuple[str, str] = ("small", "large")
"""Branch names, in the order both reference implementations use: small patches first."""

Flavour = Literal["seed", "paper"]


@dataclass(frozen=True)
class SeedConfig:
    """lucidrains' CrossViT (``vit_pytorch.cross_vit``); every field has that constructor's name and default.

    One image size feeds both branches, so it must be divisible by both patch sizes.
    """

    image_size: int  # side of the square input image, seen unchanged by both branches
    num_classes: int  # number of output logits
    sm_dim: int  # token width of the small-patch branch
    lg_dim: int  # token width of the large-patch branch
    sm_patch_size: int = 12  # side of a small patch, in pixels
    sm_enc_depth: int = 1  # self-attention layers of the small branch in each multi-scale block
    sm_enc_heads: int = 8  # heads of those layers
    sm_enc_mlp_dim: int = 2048  # hidden width of their feed-forward
    sm_enc_dim_head: int = 64  # width of one head (inner width = heads * dim_head)
    lg_patch_size: int = 16  # side of a large patch, in pixels
    lg_enc_depth: int = 4  # self-attention layers of the large branch in each multi-scale block
    lg_enc_heads: int = 8
    lg_enc_mlp_dim: int = 2048
    lg_enc_dim_head: int = 64
    cross_attn_depth: int = 2  # fusion layers (both directions each) in each multi-scale block
    cross_attn_heads: int = 8  # heads of every cross-attention
    cross_attn_dim_head: int = 64  # width of one cross-attention head
    depth: int = 3  # number of multi-scale blocks
    dropout: float = 0.1  # dropout on attention probabilities, attention output and feed-forward
    emb_dropout: float = 0.1  # dropout on the embedded tokens
    channels: int = 3  # input image channels

    flavour: Flavour = field(default="seed", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, with the flavour, that :func:`config_from_dict` reads back."""
        return {"flavour": self.flavour, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}}


@dataclass(frozen=True)
class PaperConfig:
    """IBM's CrossViT as packaged by timm (``timm.models.crossvit.CrossVit``); fields have timm's names.

    Each branch sees the input resized (bicubic) to ``int(img_size * img_scale[b])`` pixels, e.g. 240 for the
    12 px branch and 224 for the 16 px branch of the ``*_240`` models.
    """

    img_size: int = 224  # side of the square input image
    img_scale: tuple[float, float] = (1.0, 1.0)  # per-branch resize factor of the input
    patch_size: tuple[int, int] = (12, 16)  # patch side of the small and the large branch
    in_chans: int = 3  # input image channels
    num_classes: int = 1000  # number of output logits
    embed_dim: tuple[int, int] = (192, 384)  # token width of the small and the large branch
    # one (small depth, large depth, fusion depth) triple per multi-scale block; fusion depth 0 and 1 both mean one
    # fusion layer (timm stores the 1 inside an nn.Sequential)
    depth: tuple[tuple[int, int, int], ...] = ((1, 3, 0), (1, 3, 0), (1, 3, 0))
    num_heads: tuple[int, int] = (6, 12)  # heads of each branch; a fusion uses the heads of the branch it reads
    mlp_ratio: tuple[float, float, float] = (2.0, 2.0, 4.0)  # feed-forward width / token width, per branch
    multi_conv: bool = False  # 3-convolution stem instead of one strided convolution (the "dagger" models)
    crop_scale: bool = False  # centre-crop instead of resize where a branch's image is smaller than the input
    qkv_bias: bool = True  # bias on the query/key/value projections
    drop_rate: float = 0.0  # dropout before the classifier heads
    pos_drop_rate: float = 0.0  # dropout on the embedded tokens
    proj_drop_rate: float = 0.0  # dropout after attention and feed-forward projections
    attn_drop_rate: float = 0.0  # dropout on attention probabilities
    drop_path_rate: float = 0.0  # stochastic depth, growing linearly over the layers as in timm
    norm_eps: float = 1e-6  # LayerNorm epsilon everywhere (timm: partial(nn.LayerNorm, eps=1e-6))
    global_pool: str = "token"  # "token": classify the CLS token; "avg": the mean of the patch tokens
    # not in timm: per-channel (mean, std) applied to the input inside the model, so that a model trained from
    # scratch on [0, 1] images (the bundled one) takes [0, 1] images; None = the input is used as it is
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # not in timm: where a branch's image is smaller than the input, low-pass filter before the bicubic resize
    # (torch's antialias=True), so that detail finer than the branch's resolution is removed, not aliased into
    # coarser patterns (the two-scale task's coarse branch must not see its fine texture)
    resize_antialias: bool = False

    flavour: Flavour = field(default="paper", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, with the flavour, that :func:`config_from_dict` reads back."""
        out: dict[str, Any] = {"flavour": self.flavour}
        for f in dataclasses.fields(self):
            if f.init:
                value = getattr(self, f.name)
                out[f.name] = [list(v) for v in value] if f.name in ("depth", "input_norm") and value else value
        return out


CrossViTConfig = SeedConfig | PaperConfig


def config_from_dict(data: dict[str, Any]) -> CrossViTConfig:
    """Inverse of ``config.to_dict()``: rebuild a config from its JSON form (as written by the trainer).

    Value types are checked when the config is turned into an architecture (building a model, loading a
    checkpoint): a string where a bool or number belongs is an error, never read as truthy.
    """
    if not isinstance(data, dict) or data.get("flavour") not in ("seed", "paper"):
        raise ValueError(f"a config dict needs 'flavour' set to 'seed' or 'paper', got {data!r:.200}")
    kwargs = {k: v for k, v in data.items() if k != "flavour"}
    cls = SeedConfig if data["flavour"] == "seed" else PaperConfig
    valid = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; valid fields: {sorted(valid)}")
    if cls is PaperConfig:
        def sequence(name: str, value: Any) -> tuple:
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{name} must be a list, got {type(value).__name__} {value!r}")
            return tuple(value)

        for name in ("img_scale", "patch_size", "embed_dim", "num_heads", "mlp_ratio"):
            if name in kwargs:
                kwargs[name] = sequence(name, kwargs[name])
        if "depth" in kwargs:
            kwargs["depth"] = tuple(sequence("depth entry", d) for d in sequence("depth", kwargs["depth"]))
        if kwargs.get("input_norm") is not None:
            kwargs["input_norm"] = tuple(sequence("input_norm entry", v)
                                         for v in sequence("input_norm", kwargs["input_norm"]))
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# The flavour-neutral architecture


@dataclass(frozen=True)
class BranchSpec:
    """Everything about one branch (``small`` or ``large``) that the model builder needs."""

    name: str
    dim: int  # token width
    patch_size: int  # patch side in pixels, on this branch's image
    image_size: int  # side of the image this branch patchifies (after its resize)
    depth: tuple[int, ...]  # self-attention layers in each multi-scale block
    heads: int
    dim_head: int
    mlp_dim: int  # feed-forward hidden width
    stem: Literal["linear", "conv", "conv3"]  # patch embedding: seed's LN-Linear-LN, a strided conv, a 3-conv stem
    cross_heads: int  # heads of the cross-attention in which this branch's CLS reads the other branch
    cross_dim_head: int

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, columns)."""
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols


@dataclass(frozen=True)
class Architecture:
    """What to build. ``flavour`` selects the few behaviours that differ (docs/architecture.md sets the two
    flavours side by side)."""

    flavour: Flavour
    image_size: int  # input side
    in_chans: int
    num_classes: int
    branches: tuple[BranchSpec, BranchSpec]  # (small, large)
    fusion_layers: int  # fusion layers per multi-scale block
    qkv_bias: bool
    norm_eps: float
    resize: Literal["none", "bicubic", "antialias", "crop"]  # how the input becomes each branch's image
    encoder_norm: bool  # seed: a LayerNorm closes every branch encoder
    logit_reduction: Literal["sum", "mean"]
    global_pool: str
    emb_dropout: float
    attn_dropout: float
    proj_dropout: float
    head_dropout: float
    # stochastic-depth rate per multi-scale block: rates of its self-attention layers, and of its fusion
    drop_path: tuple[tuple[tuple[float, ...], float], ...]
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # per-channel (mean, std), or None

    @property
    def num_blocks(self) -> int:
        return len(self.branches[0].depth)

    def branch(self, name: str) -> BranchSpec:
        for spec in self.branches:
            if spec.name == name:
                return spec
        raise ValueError(f"unknown branch {name!r}; this model's branches are 'small' and 'large'")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):  # a JSON string such as "false" is truthy: never read it as a flag
        raise TypeError(f"{name} must be a bool (true/false), got {type(value).__name__} {value!r}")
    return value


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _check_divisible(image_size: int, patch_size: int, where: str) -> None:
    if image_size % patch_size != 0:
        raise ValueError(
            f"{where}: image size {image_size} is not divisible by the patch size {patch_size} "
            f"(nearest valid sizes: {image_size // patch_size * patch_size} or "
            f"{(image_size // patch_size + 1) * patch_size})"
        )


def seed_architecture(cfg: SeedConfig) -> Architecture:
    """Validate a :class:`SeedConfig` and describe the network it defines."""
    for name in ("image_size", "num_classes", "sm_dim", "lg_dim", "sm_patch_size", "lg_patch_size", "sm_enc_depth",
                 "lg_enc_depth", "sm_enc_heads", "lg_enc_heads", "sm_enc_mlp_dim", "lg_enc_mlp_dim",
                 "sm_enc_dim_head", "lg_enc_dim_head", "cross_attn_depth", "cross_attn_heads",
                 "cross_attn_dim_head", "depth", "channels"):
        _positive_int(name, getattr(cfg, name))
    dropout = _check_rate("dropout", cfg.dropout)
    _check_rate("emb_dropout", cfg.emb_dropout)
    _check_divisible(cfg.image_size, cfg.sm_patch_size, "sm_patch_size")
    _check_divisible(cfg.image_size, cfg.lg_patch_size, "lg_patch_size")

    def branch(name: str, prefix: str) -> BranchSpec:
        return BranchSpec(
            name=name, dim=getattr(cfg, f"{prefix}_dim"), patch_size=getattr(cfg, f"{prefix}_patch_size"),
            image_size=cfg.image_size, depth=(getattr(cfg, f"{prefix}_enc_depth"),) * cfg.depth,
            heads=getattr(cfg, f"{prefix}_enc_heads"), dim_head=getattr(cfg, f"{prefix}_enc_dim_head"),
            mlp_dim=getattr(cfg, f"{prefix}_enc_mlp_dim"), stem="linear",
            cross_heads=cfg.cross_attn_heads, cross_dim_head=cfg.cross_attn_dim_head,
        )

    return Architecture(
        flavour="seed", image_size=cfg.image_size, in_chans=cfg.channels, num_classes=cfg.num_classes,
        branches=(branch("small", "sm"), branch("large", "lg")), fusion_layers=cfg.cross_attn_depth,
        qkv_bias=False, norm_eps=1e-5, resize="none", encoder_norm=True, logit_reduction="sum",
        global_pool="token", emb_dropout=cfg.emb_dropout, attn_dropout=dropout, proj_dropout=dropout,
        head_dropout=0.0,
        drop_path=tuple(((0.0,) * max(cfg.sm_enc_depth, cfg.lg_enc_depth), 0.0) for _ in range(cfg.depth)),
    )


def paper_branch_sizes(cfg: PaperConfig) -> tuple[int, int]:
    """Each branch's image side, computed exactly as timm does (``int(img_size * scale)``)."""
    return tuple(int(cfg.img_size * scale) for scale in cfg.img_scale)  # type: ignore[return-value]


def paper_architecture(cfg: PaperConfig) -> Architecture:
    """Validate a :class:`PaperConfig` and describe the network it defines."""
    for name in ("img_size", "in_chans"):
        _positive_int(name, getattr(cfg, name))
    if isinstance(cfg.num_classes, bool) or not isinstance(cfg.num_classes, int) or cfg.num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {cfg.num_classes!r}")
    for name in ("img_scale", "patch_size", "embed_dim", "num_heads", "mlp_ratio", "depth"):
        if not isinstance(getattr(cfg, name), (tuple, list)):
            shape = "(small, large, fusion) triples, one per block" if name == "depth" else "(small, large) pair"
            raise TypeError(f"{name} must be a tuple of {shape}, got {type(getattr(cfg, name)).__name__} "
                            f"{getattr(cfg, name)!r}")
    for name in ("img_scale", "patch_size", "embed_dim", "num_heads"):
        if len(getattr(cfg, name)) != 2:
            raise ValueError(f"{name} needs one entry per branch (small, large), got {getattr(cfg, name)!r}")
    if len(cfg.mlp_ratio) < 2:
        raise ValueError(f"mlp_ratio needs at least one entry per branch, got {cfg.mlp_ratio!r}")
    for name in ("patch_size", "embed_dim", "num_heads"):
        for value in getattr(cfg, name):
            _positive_int(name, value)
    for name in ("img_scale", "mlp_ratio"):
        for value in getattr(cfg, name):
            _positive_number(name, value)
    for name in ("multi_conv", "crop_scale", "qkv_bias", "resize_antialias"):
        _check_bool(name, getattr(cfg, name))
    _positive_number("norm_eps", cfg.norm_eps)
    if not cfg.depth or any(not isinstance(d, (tuple, list)) or len(d) != 3 for d in cfg.depth):
        raise ValueError(f"depth must be (small, large, fusion) triples, one per block; got {cfg.depth!r}")
    for triple in cfg.depth:
        for value in triple:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"depth entries must be ints >= 0, got {cfg.depth!r}")
    if any(d[2] > 1 for d in cfg.depth):
        raise ValueError("fusion depths above 1 are not supported (timm's implementation feeds only the CLS token "
                         f"to the second fusion layer); got depth={cfg.depth!r}")
    if cfg.global_pool not in ("token", "avg"):
        raise ValueError(f"global_pool must be 'token' or 'avg', got {cfg.global_pool!r}")
    for name in ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"):
        _check_rate(name, getattr(cfg, name))
    sizes = paper_branch_sizes(cfg)
    for branch_name, size, patch in zip(BRANCHES, sizes, cfg.patch_size):
        if size < patch:
            raise ValueError(f"the {branch_name} branch's image ({size} px) is smaller than its patch ({patch} px)")
        _check_divisible(size, patch, f"{branch_name} branch (img_size {cfg.img_size} x img_scale)")
    if cfg.input_norm is not None:
        mean, std = cfg.input_norm
        numbers_ok = all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
                         for v in (*mean, *std))
        if len(mean) != cfg.in_chans or len(std) != cfg.in_chans or not numbers_ok or min(std) <= 0:
            raise ValueError(f"input_norm must be ((finite mean per channel), (finite std > 0 per channel)) for "
                             f"{cfg.in_chans} channels, got {cfg.input_norm!r}")
    if cfg.multi_conv and tuple(cfg.patch_size) != (12, 16):
        raise ValueError(f"multi_conv stems exist only for patch sizes (12, 16), got {cfg.patch_size!r}")
    for branch_name, dim, heads in zip(BRANCHES, cfg.embed_dim, cfg.num_heads):
        if dim % heads != 0:
            raise ValueError(f"{branch_name} branch: embed_dim {dim} is not divisible by num_heads {heads}")

    # stochastic depth exactly as timm: a linear ramp over sum(large + fusion depth) entries, sliced per block
    total = sum(sum(d[-2:]) for d in cfg.depth)
    ramp = [cfg.drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    drop_path, start = [], 0
    for d in cfg.depth:
        rates = ramp[start:start + max(d[:-1]) + d[-1]]
        drop_path.append((tuple(rates[: max(d[:-1])]), rates[-1] if rates else 0.0))
        start += max(d[:-1]) + d[-1]

    def branch(i: int) -> BranchSpec:
        other = 1 - i
        return BranchSpec(
            name=BRANCHES[i], dim=cfg.embed_dim[i], patch_size=cfg.patch_size[i], image_size=sizes[i],
            depth=tuple(d[i] for d in cfg.depth), heads=cfg.num_heads[i],
            dim_head=cfg.embed_dim[i] // cfg.num_heads[i], mlp_dim=int(cfg.embed_dim[i] * cfg.mlp_ratio[i]),
            stem="conv3" if cfg.multi_conv else "conv",
            cross_heads=cfg.num_heads[other], cross_dim_head=cfg.embed_dim[other] // cfg.num_heads[other],
        )

    return Architecture(
        flavour="paper", image_size=cfg.img_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
        branches=(branch(0), branch(1)), fusion_layers=1, qkv_bias=cfg.qkv_bias, norm_eps=cfg.norm_eps,
        resize="crop" if cfg.crop_scale else "antialias" if cfg.resize_antialias else "bicubic", encoder_norm=False,
        logit_reduction="mean",
        global_pool=cfg.global_pool, emb_dropout=cfg.pos_drop_rate, attn_dropout=cfg.attn_drop_rate,
        proj_dropout=cfg.proj_drop_rate, head_dropout=cfg.drop_rate, drop_path=tuple(drop_path),
        input_norm=cfg.input_norm,
    )


def architecture_of(cfg: CrossViTConfig) -> Architecture:
    """The :class:`Architecture` a config defines (validating it on the way)."""
    if isinstance(cfg, SeedConfig):
        return seed_architecture(cfg)
    if isinstance(cfg, PaperConfig):
        return paper_architecture(cfg)
    raise TypeError(f"expected a SeedConfig or PaperConfig, got {type(cfg).__name__}")
