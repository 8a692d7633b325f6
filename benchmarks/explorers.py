"""How long an explorer takes to answer a control change: from setting the control until the new picture (PNG
bytes) and caption are in the widget, measured in the kernel, on the bundled model and 8 shapes images.

    .venv/bin/python benchmarks/explorers.py                 # 20 changes of each control, 3 rounds
    .venv/bin/python benchmarks/explorers.py --changes 40 --rounds 5 --threads 2

Each control is changed ``--changes`` times (cycling through its values, and for patch clicks through the grid);
every change is one redraw, timed alone. The median and the worst of all changes of a control are printed, per
explorer; a round repeats the whole sequence (the machine is shared: the medians are over every round's changes).
Goals (issue 21): attention explorer <= 50 ms median and <= 100 ms worst per control; rollout explorer <= 50 ms
median. What the browser adds on top (the comm message, decoding the PNG) is measured by
``tests/test_browser.py``, which prints its click-to-picture times.

The data seed (``--seed``, default 90_001) is one the tests never use.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch

import crossvit
from crossvit import data
from crossvit.widgets import attention_explorer, rollout_explorer


def _changes(explorer, name: str, values: list, n: int) -> list[Callable[[], None]]:
    """``n`` callables, each setting control ``name`` to the next of ``values`` (never to its current value)."""
    control = explorer.controls[name]
    cycle = itertools.cycle(values)
    steps = []

    def step() -> None:
        value = next(cycle)
        if value == control.value:
            value = next(cycle)
        control.value = value

    for _ in range(n):
        steps.append(step)
    return steps


def _time(steps: list[Callable[[], None]]) -> list[float]:
    times = []
    for step in steps:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def attention_sequences(explorer, n: int) -> dict[str, Callable[[], list[float]]]:
    """Per control of the attention explorer, a function that makes ``n`` changes and returns their times."""
    model, c = explorer.model, explorer.controls
    images = list(range(c["image"].max + 1))
    heads = [v for _, v in c["head"].options]

    def reset(kind: str = "self", query: str = "CLS") -> None:
        c["kind"].value, c["query"].value = kind, query

    def control(name: str, values: list, kind: str = "self", query: str = "CLS") -> Callable[[], list[float]]:
        def run() -> list[float]:
            reset(kind, query)
            return _time(_changes(explorer, name, values, n))
        return run

    def clicks(kind: str) -> Callable[[], list[float]]:
        def run() -> list[float]:
            reset(kind)
            branch = explorer.shown_grid()
            rows, cols = model.patch_grid(branch)
            cells = itertools.cycle([(r, col) for r in range(rows) for col in range(cols)])
            times = []
            for _ in range(n):
                reset(kind)  # a click in cross mode switches to self: back to the mode under test, untimed
                r, col = next(cells)
                start = time.perf_counter()
                explorer.select_patch(r, col, branch=branch)
                times.append(time.perf_counter() - start)
            return times
        return run

    return {
        "image slider": control("image", images),
        "block slider": control("block", list(range(model.arch.num_blocks))),
        "branch menu": control("branch", list(model.branch_names)),
        "kind buttons": control("kind", ["self", "cross"]),
        "head menu": control("head", heads[:6]),
        "query buttons": control("query", ["CLS", "patch"]),
        "patch click (self)": clicks("self"),
        "patch click (cross)": clicks("cross"),
    }


def rollout_sequences(explorer, n: int) -> dict[str, Callable[[], list[float]]]:
    """Per control of the rollout explorer, a function that makes ``n`` changes and returns their times (the
    class-specific maps are computed once before timing: a first backward is the work, not the redraw)."""
    c = explorer.controls
    for method in explorer.METHODS:
        c["method"].value = method  # warms every method's default-start result
    blocks = [v for _, v in c["start_block"].options]

    def control(name: str, values: list, method: str) -> Callable[[], list[float]]:
        def run() -> list[float]:
            c["method"].value = method
            return _time(_changes(explorer, name, values, n))
        return run

    return {
        "image slider": control("image", list(range(c["image"].max + 1)), "joint_rollout"),
        "method menu": control("method", list(explorer.METHODS), "joint_rollout"),
        "head fusion menu": control("head_fusion", ["mean", "max", "min"], "small_rollout"),
        "discard ratio slider": control("discard_ratio", [0.0, 0.25, 0.5, 0.75, 0.9], "large_rollout"),
        "start block menu": control("start_block", blocks, "joint_rollout"),
    }


def report(title: str, sequences: dict[str, Callable[[], list[float]]], rounds: int, goal: str) -> None:
    times: dict[str, list[float]] = {name: [] for name in sequences}
    for _ in range(rounds):
        for name, run in sequences.items():
            times[name] += run()
    print(f"\n{title} ({goal})\n")
    print("| control | median ms | worst ms | changes |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {1000 * statistics.median(values):.0f} | {1000 * max(values):.0f} | {len(values)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=90_001)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = crossvit.load_pretrained()
    images, _, masks = data.make_shapes(args.images, seed=args.seed)
    print(f"bundled model, {args.images} shapes images (seed {args.seed}), {torch.get_num_threads()} threads, "
          f"{args.changes} changes per control x {args.rounds} rounds")
    att = attention_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES)
    report("attention explorer", attention_sequences(att, args.changes), args.rounds,
           "goal: <= 50 ms median, <= 100 ms worst")
    roll = rollout_explorer(model, images, masks=masks, class_names=data.CLASS_NAMES)
    report("rollout explorer", rollout_sequences(roll, args.changes), args.rounds, "goal: <= 50 ms median")


if __name__ == "__main__":
    main()
