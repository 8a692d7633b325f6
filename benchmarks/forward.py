"""Forward-pass cost of this CrossViT against timm and vit-pytorch, and the cost of recording attention.

All contenders run in one process, interleaved round by round in a shuffled order; each round's times are divided
by the same round's reference time and the medians of those ratios are reported (robust to machine noise).

    .venv/bin/python benchmarks/forward.py                # crossvit_9_240, batch 8, 240 px, 25 rounds
    .venv/bin/python benchmarks/forward.py --rounds 40 --batch 8 --threads 2

Goals (issue 3): ours hooks-off <= 1.00x timm; recording cross-attention only <= 1.02x and recording every map
<= 1.15x ours hooks-off.

Recording is timed two ways: "recording ..." opens a new recording around every forward, "long rec. ..." keeps one
recording open over all rounds, as a loop over a dataset does. In both, a forward writes its maps into the memory
of the previous recorded forward's maps once nothing holds those any more (see crossvit.layers.AttentionMap).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import statistics

import torch
from _timing import interleaved_times, median_ratio  # benchmarks/_timing.py (scripts run from benchmarks/)

import crossvit


def build(batch: int, seed: int = 0):
    import timm
    from vit_pytorch.cross_vit import CrossViT as VitPytorchCrossViT

    torch.manual_seed(seed)
    reference = timm.create_model("crossvit_9_240").eval()
    ours = crossvit.from_timm(reference).eval()
    # vit-pytorch at the closest configuration it can express: one 240 px image for both branches (so 15x15 large
    # patches instead of 14x14), same widths, depths, heads and MLP widths, one fusion layer per block
    lucid = VitPytorchCrossViT(
        image_size=240, num_classes=1000, sm_dim=128, lg_dim=256, sm_patch_size=12, sm_enc_depth=1, sm_enc_heads=4,
        sm_enc_mlp_dim=384, sm_enc_dim_head=32, lg_patch_size=16, lg_enc_depth=3, lg_enc_heads=4,
        lg_enc_mlp_dim=768, lg_enc_dim_head=64, cross_attn_depth=1, cross_attn_heads=4, cross_attn_dim_head=64,
        depth=3, dropout=0.0, emb_dropout=0.0,
    ).eval()
    images = torch.randn(batch, 3, 240, 240)
    return reference, ours, lucid, images


def contenders(reference, ours, lucid, stack: contextlib.ExitStack):
    def new_recording_per_forward(sites):
        def run(images):
            with crossvit.record_attention(ours, sites=sites) as rec:
                out = ours(images)
            return out, rec

        return run

    def one_long_recording(sites):
        # its own copy of the model, so its hooks stay out of the other contenders' way; the recording stays open
        # over every round and each call is one more forward in it (the maps of the previous call are let go)
        model = copy.deepcopy(ours)
        stack.enter_context(crossvit.record_attention(model, sites=sites))
        return model

    return {
        "timm (fused)": reference,
        "vit-pytorch": lucid,
        "ours, hooks off": ours,
        "ours, recording cross": new_recording_per_forward("cross"),
        "ours, recording all": new_recording_per_forward("all"),
        "ours, long rec. cross": one_long_recording("cross"),
        "ours, long rec. all": one_long_recording("all"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference, ours, lucid, images = build(args.batch)
    with contextlib.ExitStack() as stack, torch.no_grad():
        runs = contenders(reference, ours, lucid, stack)
        calls = {name: functools.partial(fn, images) for name, fn in runs.items()}
        times = interleaved_times(calls, args.rounds, warmup=args.warmup)

    print(f"crossvit_9_240, batch {args.batch}, 240 px, {args.threads} threads, {args.rounds} interleaved rounds "
          f"(torch {torch.__version__})")
    print(f"{'contender':<26}{'median ms':>10}{'/ timm':>9}{'/ ours off':>12}")
    for name in runs:
        print(f"{name:<26}{1000 * statistics.median(times[name]):>10.1f}{median_ratio(times, name, 'timm (fused)'):>9.3f}"
              f"{median_ratio(times, name, 'ours, hooks off'):>12.3f}")


if __name__ == "__main__":
    main()
