"""Interleaved timing shared by the benchmark scripts: robust ratios on a noisy machine.

Every round runs each contender once, in a freshly shuffled order, so slow phases of the machine hit all of them;
ratios are taken round by round and their median is reported.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable


def interleaved_times(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                      seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each contender, one entry per round (after ``warmup`` untimed calls of each)."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(contenders)
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of ``name``'s time divided by ``reference``'s time in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[reference]))
