"""What an explanation costs next to the passes it needs: ``explain`` against a plain forward (class-agnostic
methods) or a plain forward + backward (gradient rollout), side by side in one process.

    .venv/bin/python benchmarks/explain_speed.py                         # crossvit_15_240, batch 4, 240 px
    .venv/bin/python benchmarks/explain_speed.py --rounds 12 --threads 2 --device cuda

Every round runs each contender once, in a shuffled order; the medians of the per-round ratios are printed
(``benchmarks/_timing.py``). Random weights (no download): the cost does not depend on them. Goals (issue 21):
``joint_rollout`` and ``cross_attention`` <= 1.15x a forward, ``gradient_rollout`` <= 1.25x a forward + backward;
(issue 29) ``attnlrp`` <= 1.3x a forward + backward (``cp_lrp`` reported beside it).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import interleaved_times, median_ratio  # benchmarks/_timing.py (scripts run from benchmarks/)

import crossvit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="crossvit_15_240")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = crossvit.create_model(args.model).to(device).eval()
    images = torch.rand(args.batch, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(1))
    images = images.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward() -> None:
        with torch.no_grad():
            model(images)
        sync()

    def forward_backward() -> None:
        x = images.clone().requires_grad_(True)
        model(x).max(dim=1).values.sum().backward(inputs=[x])
        sync()

    def method(name: str):
        def run() -> None:
            crossvit.explain(model, images, name)
            sync()
        return run

    contenders = {"forward": forward, "forward+backward": forward_backward,
                  **{m: method(m) for m in ("joint_rollout", "cross_attention", "small_rollout", "gradient_rollout",
                                             "attnlrp", "cp_lrp")}}
    times = interleaved_times(contenders, rounds=args.rounds, warmup=2)
    print(f"{args.model}, batch {args.batch}, {model.image_size} px, {args.device}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"forward {1000 * statistics.median(times['forward']):.0f} ms, forward+backward "
          f"{1000 * statistics.median(times['forward+backward']):.0f} ms (medians)\n")
    print("| explain method | ratio | reference | goal |")
    print("|---|---:|---|---:|")
    for name, reference, goal in (("joint_rollout", "forward", 1.15), ("cross_attention", "forward", 1.15),
                                  ("small_rollout", "forward", None),
                                  ("gradient_rollout", "forward+backward", 1.25),
                                  ("attnlrp", "forward+backward", 1.3), ("cp_lrp", "forward+backward", None)):
        ratio = median_ratio(times, name, reference)
        print(f"| {name} | {ratio:.2f}x | {reference} | {'' if goal is None else f'<= {goal:.2f}x'} |")


if __name__ == "__main__":
    main()
