"""Shared pytest setup: headless matplotlib. Nothing is seeded globally; tests seed what they use."""

import os

# Must happen before anything imports matplotlib (conftest is imported before the test modules).
os.environ["MPLBACKEND"] = "Agg"
