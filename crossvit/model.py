"""The CrossViT network, one implementation for both flavours.

Data flow (B images of ``image_size`` pixels; Ns / Nl = patches of the small / large branch)::

    images (B, C, H, W)
      -> per branch: resize to the branch's image size, patch-embed, prepend CLS, add positions
         small tokens (B, 1 + Ns, Ds)          large tokens (B, 1 + Nl, Dl)
      -> multi-scale block x num_blocks:
           each branch: its own transformer layers (self-attention sites)
           fusion layer(s): the CLS of each branch reads the other branch's patches (cross-attention sites)
      -> per branch: LayerNorm, classifier on the CLS token; logits = sum (seed) or mean (paper) of the two
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .config import BRANCHES, Architecture, BranchSpec, CrossViTConfig, architecture_of
from .layers import (
    ConvPatchEmbedding,
    CrossAttention,
    DropPath,
    LinearPatchEmbedding,
    TransformerBlock,
    deepcopy_without_recording,
    state_without_recording,
)

_RUNNING = threading.local()  # per thread: {id(model): depth} of the models whose forward_features is running


@contextmanager
def _running_forward(model: nn.Module) -> Iterator[None]:
    running = _RUNNING.__dict__.setdefault("models", {})
    running[id(model)] = running.get(id(model), 0) + 1
    try:
        yield
    finally:
        running[id(model)] -= 1
        if not running[id(model)]:
            del running[id(model)]


def in_forward(model: nn.Module) -> bool:
    """True while ``model.forward_features`` (so also ``model(x)``) runs in the calling thread: what tells a
    forward of the model from a call of one of its parts (``model.embed["small"](x)``, ``model.blocks[0](s, l)``)."""
    return id(model) in getattr(_RUNNING, "models", ())


def branch_image(images: torch.Tensor, spec: BranchSpec, arch: Architecture) -> torch.Tensor:
    """``images`` (B, C, H, W) as the branch ``spec`` sees them: unchanged at the branch's size, else centre-cropped
    (``arch.resize == "crop"`` and the branch's image is smaller) or resized by bicubic interpolation, with an
    anti-aliasing filter first where ``arch.resize == "antialias"`` (which only changes a downsampling)."""
    size = spec.image_size
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if arch.resize == "crop" and size <= images.shape[-1]:
        top = int(round((images.shape[-2] - size) / 2.0))
        left = int(round((images.shape[-1] - size) / 2.0))
        return images[:, :, top:top + size, left:left + size]
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False,
                         antialias=arch.resize == "antialias")


class BranchEmbedding(nn.Module):
    """Image -> tokens of one branch: patch embedding, a learned CLS token in front, learned positions added."""

    def __init__(self, spec: BranchSpec, arch: Architecture) -> None:
        super().__init__()
        if spec.stem == "linear":
            self.patch_embed: nn.Module = LinearPatchEmbedding(spec.patch_size, arch.in_chans, spec.dim)
        else:
            self.patch_embed = ConvPatchEmbedding(spec.patch_size, arch.in_chans, spec.dim, spec.stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + spec.num_patches, spec.dim))
        self.drop = nn.Dropout(arch.emb_dropout)

    def __deepcopy__(self, memo: dict) -> BranchEmbedding:
        return deepcopy_without_recording(self, memo)  # an attention recording hooks the first embedding

    def __getstate__(self) -> dict:
        return state_without_recording(self)  # torch.save inside a recording: the hooks stay behind

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(images)  # (B, N, D)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, D)
        return self.drop(torch.cat((cls, patches), dim=1) + self.pos_embed)  # (B, 1 + N, D)


class BranchEncoder(nn.Module):
    """One branch's transformer layers inside a multi-scale block (seed: closed by a LayerNorm)."""

    def __init__(self, spec: BranchSpec, depth: int, arch: Architecture, drop_path: tuple[float, ...]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(spec.dim, spec.heads, spec.dim_head, spec.mlp_dim, qkv_bias=arch.qkv_bias,
                             norm_eps=arch.norm_eps, attn_dropout=arch.attn_dropout,
                             proj_dropout=arch.proj_dropout, drop_path=drop_path[i])
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(spec.dim, eps=arch.norm_eps) if arch.encoder_norm else nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tokens = layer(tokens)
        return self.norm(tokens)


class CLSFusion(nn.Module):
    """One direction of a fusion layer: the CLS token of the ``query`` branch reads the other branch's patches.

    Both flavours project the CLS into the other branch's width, attend with it as the only query over
    [projected CLS, other patches], and project back. They differ in the details (docs/architecture.md has both flavours side by side):

    * seed: ``project_in``/``project_out`` are plain Linear layers (Identity when the widths match), the LayerNorm
      acts on the query CLS only, and the residual is added in the CLS's own width;
    * paper: the projections are LayerNorm -> GELU -> Linear, the LayerNorm acts on the whole context, and the
      residual is added in the other width before projecting back.
    """

    def __init__(self, query: BranchSpec, other: BranchSpec, arch: Architecture, drop_path: float) -> None:
        super().__init__()
        self.style = arch.flavour
        d_in, d_out, eps = query.dim, other.dim, arch.norm_eps
        if self.style == "seed":
            self.project_in: nn.Module = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()
            self.project_out: nn.Module = nn.Linear(d_out, d_in) if d_in != d_out else nn.Identity()
        else:
            self.project_in = nn.Sequential(nn.LayerNorm(d_in, eps=eps), nn.GELU(), nn.Linear(d_in, d_out))
            self.project_out = nn.Sequential(nn.LayerNorm(d_out, eps=eps), nn.GELU(), nn.Linear(d_out, d_in))
        self.norm = nn.LayerNorm(d_out, eps=eps)
        self.attn = CrossAttention(d_out, query.cross_heads, query.cross_dim_head, arch.qkv_bias,
                                   arch.attn_dropout, arch.proj_dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, cls: torch.Tensor, other_patches: torch.Tensor) -> torch.Tensor:
        # cls (B, 1, D_query), other_patches (B, N_other, D_other) -> new cls (B, 1, D_query)
        z = self.project_in(cls)  # (B, 1, D_other)
        if self.style == "seed":
            query = self.norm(z)
            context = torch.cat((query, other_patches), dim=1)  # (B, 1 + N_other, D_other)
            return cls + self.project_out(self.attn(query, context))
        context = self.norm(torch.cat((z, other_patches), dim=1))  # (B, 1 + N_other, D_other)
        return self.project_out(z + self.drop_path(self.attn(context[:, :1], context)))


class FusionLayer(nn.Module):
    """Both fusion directions. They read the same input state, so their order does not matter."""

    def __init__(self, arch: Architecture, drop_path: float) -> None:
        super().__init__()
        small, large = arch.branches
        self.small = CLSFusion(small, large, arch, drop_path)
        self.large = CLSFusion(large, small, arch, drop_path)

    def forward(self, small: torch.Tensor, large: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        small_cls = self.small(small[:, :1], large[:, 1:])
        large_cls = self.large(large[:, :1], small[:, 1:])
        return torch.cat((small_cls, small[:, 1:]), dim=1), torch.cat((large_cls, large[:, 1:]), dim=1)


class MultiScaleBlock(nn.Module):
    """Each branch's encoder, then ``arch.fusion_layers`` fusion layers."""

    def __init__(self, arch: Architecture, index: int) -> None:
        super().__init__()
        layer_rates, fusion_rate = arch.drop_path[index]
        self.encoders = nn.ModuleDict(
            {spec.name: BranchEncoder(spec, spec.depth[index], arch, layer_rates) for spec in arch.branches}
        )
        self.fusions = nn.ModuleList(FusionLayer(arch, fusion_rate) for _ in range(arch.fusion_layers))

    def forward(self, small: torch.Tensor, large: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        small, large = self.encoders["small"](small), self.encoders["large"](large)
        for fusion in self.fusions:
            small, large = fusion(small, large)
        return small, large


class ClassifierHead(nn.Module):
    """One branch's classifier: LayerNorm, pool (the CLS token, or the patch mean), dropout, Linear."""

    def __init__(self, dim: int, num_classes: int, arch: Architecture) -> None:
        super().__init__()
        self.pool = arch.global_pool
        self.norm = nn.LayerNorm(dim, eps=arch.norm_eps)
        self.drop = nn.Dropout(arch.head_dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens (B, 1 + N, D) -> logits (B, num_classes)
        # LayerNorm acts per token, so normalising only the pooled tokens is exact (and cheaper)
        pooled = self.norm(tokens[:, 1:]).mean(dim=1) if self.pool == "avg" else self.norm(tokens[:, 0])
        return self.fc(self.drop(pooled))


class CrossViT(nn.Module):
    """A dual-branch vision transformer (Chen, Fan and Panda, ICCV 2021) in either published flavour.

    Build one with :func:`crossvit.create_model`, or from a config: ``CrossViT(SeedConfig(...))``.
    ``model.branch_names``, ``model.patch_grid(branch)`` and ``model.branch_image_size(branch)`` describe the
    token layout so that explanation code never recomputes it.
    """

    branch_names: tuple[str, str] = BRANCHES

    def __init__(self, config: CrossViTConfig) -> None:
        super().__init__()
        self.config = config
        self.arch = arch = architecture_of(config)
        self.embed = nn.ModuleDict({spec.name: BranchEmbedding(spec, arch) for spec in arch.branches})
        self.blocks = nn.ModuleList(MultiScaleBlock(arch, i) for i in range(arch.num_blocks))
        self.heads = nn.ModuleDict(
            {spec.name: ClassifierHead(spec.dim, arch.num_classes, arch) for spec in arch.branches}
        )
        if arch.input_norm is not None:  # not part of the weights: it is fixed by the config
            mean, std = (torch.tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) for v in arch.input_norm)
            self.register_buffer("input_mean", mean, persistent=False)
            self.register_buffer("input_std", std, persistent=False)
        self._init_weights()

    def __deepcopy__(self, memo: dict) -> CrossViT:
        """A copy made inside ``record_attention`` leaves the recording's hooks behind (they belong to the
        original, whose recorder they fill); everything else is copied as ``copy.deepcopy`` copies any module."""
        return deepcopy_without_recording(self, memo)

    def __getstate__(self) -> dict:
        """Pickling (``torch.save(model)``) leaves a live recording's hooks behind too, as a deep copy does."""
        return state_without_recording(self)

    # -- description ----------------------------------------------------------------------------------------
    @property
    def flavour(self) -> str:
        return self.arch.flavour

    @property
    def image_size(self) -> int:
        """Side of the square input image."""
        return self.arch.image_size

    @property
    def in_chans(self) -> int:
        return self.arch.in_chans

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes

    def patch_grid(self, branch: str) -> tuple[int, int]:
        """(rows, columns) of the branch's patch grid; tokens are the grid in row-major order after the CLS."""
        return self.arch.branch(branch).grid

    def branch_image_size(self, branch: str) -> int:
        """Side of the image the branch patchifies, after its resize from the input."""
        return self.arch.branch(branch).image_size

    def patch_size(self, branch: str) -> int:
        return self.arch.branch(branch).patch_size

    def num_patches(self, branch: str) -> int:
        return self.arch.branch(branch).num_patches

    # -- forward --------------------------------------------------------------------------------------------
    def branch_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The image each branch sees: the input, resized (bicubic, anti-aliased where the config asks) or
        centre-cropped to the branch's size (:func:`branch_image`)."""
        return {spec.name: branch_image(images, spec, self.arch) for spec in self.arch.branches}

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Final tokens of each branch, (B, 1 + N_branch, D_branch), before the heads' LayerNorm."""
        check_images(images, self)
        with _running_forward(self):
            if self.arch.input_norm is not None:
                images = (images - self.input_mean) / self.input_std
            branch_images = self.branch_images(images)
            small = self.embed["small"](branch_images["small"])
            large = self.embed["large"](branch_images["large"])
            for block in self.blocks:
                small, large = block(small, large)
        return {"small": small, "large": large}

    def _check_by_branch(self, name: str, value: object, what: str) -> None:
        if not isinstance(value, dict) or set(value) != set(self.branch_names):
            got = f"keys {sorted(value)}" if isinstance(value, dict) else type(value).__name__
            raise TypeError(f"{name} must be a dict with one {what} per branch ({', '.join(self.branch_names)}), "
                            f"as forward_features returns; got {got}")

    def branch_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each branch head's logits, (B, num_classes)."""
        self._check_by_branch("features", features, "token tensor")
        return {name: self.heads[name](tokens) for name, tokens in features.items()}

    def combine_heads(self, branch_logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's logits from its two heads' logits: their sum (seed flavour) or mean (paper flavour)."""
        self._check_by_branch("branch_logits", branch_logits, "(B, num_classes) tensor")
        total = branch_logits["small"] + branch_logits["large"]
        return total if self.arch.logit_reduction == "sum" else total / 2

    def forward_head(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, num_classes) from :meth:`forward_features`' tokens: each head, then :meth:`combine_heads`
        (timm's ``forward_head``)."""
        return self.combine_heads(self.branch_logits(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), float -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(images))

    # -- initialisation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _init_weights(self) -> None:
        """Paper flavour: timm's init (truncated normal, std 0.02). Seed flavour: vit-pytorch's (PyTorch defaults,
        standard-normal CLS and positions)."""
        if self.flavour == "seed":
            for emb in self.embed.values():
                nn.init.normal_(emb.cls_token)
                nn.init.normal_(emb.pos_embed)
            return
        for emb in self.embed.values():
            nn.init.trunc_normal_(emb.cls_token, std=0.02)
            nn.init.trunc_normal_(emb.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # PyTorch < 2.4 asks per device
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def check_images(images: object, model: CrossViT) -> None:
    """Raise a TypeError/ValueError that names the problem if ``images`` is not a batch the model accepts (a
    CrossViT, or any module with its ``arch``, such as :class:`crossvit.ablation.SingleBranchViT`).

    The images' dtype must be the model's (float16 images for a float16 model, ...) unless autocast is on: mixed
    dtypes are refused rather than converted, so that what runs is what the caller asked for. So must their device
    (a ValueError), and neither may be the 'meta' device, which holds shapes but no values.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if not torch.is_floating_point(images):
        raise TypeError(
            f"images must be a floating-point tensor, got dtype {images.dtype}; convert integer images first, "
            "e.g. images.float() / 255"
        )
    in_chans, size = model.arch.in_chans, model.arch.image_size
    expected = (in_chans, size, size)
    if images.ndim == 3 and tuple(images.shape) == expected:
        raise ValueError(f"images has no batch dimension: got shape {tuple(images.shape)}; "
                         "use images.unsqueeze(0) for a single image")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W) = (B, {', '.join(map(str, expected))}), "
                         f"got {images.ndim} dimensions {tuple(images.shape)}")
    if images.shape[1] != in_chans:
        raise ValueError(f"this model takes {in_chans}-channel images, got {images.shape[1]} channels "
                         f"(shape {tuple(images.shape)})")
    if images.shape[-2:] != (size, size):
        raise ValueError(
            f"this model takes {size}x{size} images, got "
            f"{images.shape[-2]}x{images.shape[-1]}; resize them first, e.g. "
            f"F.interpolate(images, size={size}, mode='bicubic')"
        )
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    check_not_meta(model, "the model")
    where = next((p.device for p in model.parameters()), images.device)
    if images.device.type == "meta":
        raise ValueError("images are on the 'meta' device, which holds no values")
    if images.device != where:  # a tensor's device always has its index ("cuda:0"), a parameter's too
        raise ValueError(f"images are on {images.device} but the model's weights are on {where}: move one of "
                         f"them, e.g. images.to({str(where)!r})")
    weights = next((p.dtype for p in model.parameters() if p.is_floating_point()), images.dtype)
    if images.dtype != weights and not _autocast_enabled(images.device.type):
        # without this check, some layers would promote and others fail deep inside torch, depending on flavour
        raise TypeError(
            f"images are {images.dtype} but the model's weights are {weights}: convert the images "
            f"(images.to({weights})) or the model (model.to({images.dtype})), or run under torch.autocast"
        )


def check_not_meta(model: nn.Module, what: str) -> None:
    """A ValueError if a parameter or buffer of ``model`` (called ``what`` in the message) is on torch's 'meta'
    device, which holds shapes but no values: nothing can be computed with, loaded into or copied out of it."""
    if any(t.device.type == "meta" for t in (*model.parameters(), *model.buffers())):
        raise ValueError(f"{what} is on the 'meta' device, which holds shapes but no values: build it on a real "
                         "device, or give it storage with model.to_empty(device=...) and then load its weights")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters needs a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters())



def check_crossvit(model: object, needer: str) -> CrossViT:
    """``model`` if it is a :class:`CrossViT`, else a TypeError that says ``needer`` needs one and how to get one
    from what was given (a torch.compile wrapper, a timm or vit-pytorch model). Every public function that reads a
    CrossViT's structure checks its model here, so they all refuse the same things in the same words."""
    if isinstance(model, CrossViT):
        return model
    if isinstance(getattr(model, "_orig_mod", None), CrossViT):  # torch.compile's OptimizedModule
        raise TypeError(f"{needer} needs the eager crossvit.CrossViT, got a torch.compile wrapper: pass the "
                        "original model (compiled._orig_mod); compiled code does not run the recording hooks")
    hint = ""
    if isinstance(model, nn.Module):
        hint = "; convert a timm or vit-pytorch model first with crossvit.from_timm / crossvit.from_vit_pytorch"
    raise TypeError(f"{needer} needs a crossvit.CrossViT, got {type(model).__name__}{hint}")
