"""Cost of the joint rollout against one forward pass of crossvit_9_240 (batch 8, 240 px).

    .venv/bin/python benchmarks/rollout.py [--rounds 20] [--threads 2]

Reports, as medians of per-round ratios to the hooks-off forward: the joint rollout (row vectors through every
self-attention and fusion layer), the per-branch rollouts, the gradient rollout's graph pass, and the floor of
reading every recorded map once (a mean over heads). Goal (issue 4): joint rollout <= 5% of the forward.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import interleaved_times, median_ratio  # benchmarks/_timing.py (scripts run from benchmarks/)

import crossvit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_9_240").eval()
    images = torch.randn(args.batch, 3, 240, 240)
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    maps = list(rec.sites.values())

    def forward():
        with torch.no_grad():
            model(images)

    contenders = {
        "forward (hooks off)": forward,
        "read every map once": lambda: [m.mean(dim=1) for m in maps],
        "joint_rollout": lambda: crossvit.joint_rollout(rec),
        "attention_rollout x2": lambda: [crossvit.attention_rollout(rec, b) for b in ("small", "large")],
    }
    times = interleaved_times(contenders, args.rounds)
    print(f"crossvit_9_240, batch {args.batch}, {args.threads} threads, {args.rounds} interleaved rounds")
    print(f"{'':<24}{'median ms':>10}{'/ forward':>11}")
    for name in contenders:
        ratio = median_ratio(times, name, "forward (hooks off)")
        print(f"{name:<24}{1000 * statistics.median(times[name]):>10.2f}{100 * ratio:>10.2f}%")


if __name__ == "__main__":
    main()
