"""Solutions to the exercises of notebook 06 (training your own), one function per exercise.

Load one into a cell with ``%load -s <function> solutions/06_training_your_own.py``.
"""

from crossvit.train import TrainConfig, train


# Exercise 6.1 · lr_schedule
def lr_schedule(step: int, steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up to 1, then cosine decay to 0."""
    import math

    if step < warmup_steps:
        return (step + 1) / warmup_steps  # step 0 already trains, so it gets 1 / warmup_steps, not 0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


# Exercise 6.2 · train_with_one_change
def train_with_one_change(config: TrainConfig):
    """Train again with one setting changed: here, half the steps (the schedule's warm-up and cosine decay then
    fit into 150 steps; the run stops about where the baseline's curve was still climbing)."""
    import dataclasses

    changed = dataclasses.replace(config, steps=config.steps // 2)
    return train(changed)
