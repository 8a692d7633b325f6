"""CrossViT Lab: a readable CrossViT (both published flavours) and the tools to look inside it."""

from . import data, lrp, metrics, photos, scenes, twoscale, weights
from .checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from .classes import class_names, top_classes
from .config import Architecture, BranchSpec, PaperConfig, SeedConfig, config_from_dict
from .convert import from_timm, from_vit_pytorch
from .explain import (
    METHOD_OPTIONS,
    METHODS,
    explain,
    joint_rollout_pixels,
    patch_map_to_pixels,
    register_method,
)
from .lrp import lrp_rules, relevance_by_branch
from .model import CrossViT, count_parameters
from .photos import sample_photo, sample_photos
from .preprocessing import data_config, display_images, preprocess
from .presets import PAPER_PRESETS, create_model, list_models
from .recording import AttentionRecorder, Site, attention_sites, record_attention, release_attention_memory
from .rollout import attention_rollout, gradient_rollout, joint_rollout

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "AttentionRecorder",
    "BranchSpec",
    "CrossViT",
    "METHODS",
    "METHOD_OPTIONS",
    "PAPER_PRESETS",
    "PaperConfig",
    "SeedConfig",
    "Site",
    "attention_rollout",
    "attention_sites",
    "class_names",
    "config_from_dict",
    "count_parameters",
    "create_model",
    "data",
    "data_config",
    "display_images",
    "explain",
    "from_timm",
    "from_vit_pytorch",
    "gradient_rollout",
    "joint_rollout",
    "joint_rollout_pixels",
    "list_models",
    "load_checkpoint",
    "load_pretrained",
    "lrp",
    "lrp_rules",
    "metrics",
    "patch_map_to_pixels",
    "photos",
    "preprocess",
    "record_attention",
    "register_method",
    "relevance_by_branch",
    "release_attention_memory",
    "sample_photo",
    "sample_photos",
    "save_checkpoint",
    "scenes",
    "top_classes",
    "twoscale",
    "weights",
]
