"""CrossViT Lab: a readable CrossViT (both published flavours) and the tools to look inside it."""

from .config import Architecture, BranchSpec, PaperConfig, SeedConfig, config_from_dict
from .convert import from_timm, from_vit_pytorch
from .model import CrossViT, count_parameters
from .presets import PAPER_PRESETS, create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "BranchSpec",
    "CrossViT",
    "PAPER_PRESETS",
    "PaperConfig",
    "SeedConfig",
    "config_from_dict",
    "count_parameters",
    "create_model",
    "from_timm",
    "from_vit_pytorch",
    "list_models",
]
