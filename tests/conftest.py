"""Shared pytest setup: headless matplotlib, no network. Nothing is seeded globally; tests seed what they use."""

import os

# Must happen before anything imports matplotlib (conftest is imported before the test modules).
os.environ["MPLBACKEND"] = "Agg"
# Tests never download (weights included): huggingface_hub reads this when it is imported, and notebook kernels
# started by the tests inherit it, so a notebook uses real ImageNet weights only when they are already cached.
os.environ["HF_HUB_OFFLINE"] = "1"
