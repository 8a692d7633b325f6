"""Where to read LRP relevance: at each branch's patch tokens (``readout="tokens"``, the default) or at the input
pixels (``readout="pixels"``), for AttnLRP and CP-LRP on the bundled model, on the held-out images and seeds of
``benchmarks/explanations.py``.

    .venv/bin/python benchmarks/lrp_readout.py [--images 200] [--scenes 100]

Single objects: pointing game (target = true class). Two-object scenes and composites: class-specific pointing
(each class explained in turn, scored on its own object) and the share of images with both classes right. Writes
``figures/lrp_readout.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explanations import explain_batched  # noqa: E402  (benchmarks/explanations.py)

from crossvit import data, metrics  # noqa: E402
from crossvit.checkpoint import load_pretrained  # noqa: E402
from crossvit.data import UNUSED_SEED_BASE  # noqa: E402
from crossvit.scenes import make_composites, make_two_object_shapes  # noqa: E402

METHODS = ("attnlrp", "cp_lrp")
READOUTS = ("tokens", "pixels")


def class_specific_hits(model, images, pairs, masks, method: str, batch: int, **options) -> torch.Tensor:
    """(N, 2) float: does the map (``explain``'s ``options``) for each of an image's two classes point at that
    class's object?"""
    hits = [metrics.pointing_game(explain_batched(model, images, method, pairs[:, k], batch, **options),
                                  masks[:, k]).hits for k in range(pairs.shape[1])]
    return torch.stack(hits, dim=1).float()


def held_out_sets(model, images: int, scenes: int):
    """The held-out images of ``benchmarks/explanations.py``'s defaults: ``images`` single objects (images, labels,
    masks), ``scenes`` two-object scenes and ``scenes`` composites (images, class pairs, masks)."""
    size = model.image_size
    return (data.make_shapes(images, seed=UNUSED_SEED_BASE + 1, image_size=size),
            make_two_object_shapes(scenes, UNUSED_SEED_BASE + 3, size),
            make_composites(scenes, UNUSED_SEED_BASE + 5, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--out", default=os.environ.get("CROSSVIT_FIGURES_DIR", "figures"))
    args = parser.parse_args()
    for name in ("images", "scenes", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.manual_seed(0)
    model = load_pretrained()
    (images, labels, masks), scenes, composites = held_out_sets(model, args.images, args.scenes)
    lines = [f"AttnLRP and CP-LRP on the bundled model, read at the tokens or at the pixels: {args.images} held-out "
             f"shapes images, {args.scenes} two-object scenes and {args.scenes} composites (the seeds of "
             "`benchmarks/explanations.py`). Command: `python benchmarks/lrp_readout.py"
             + (f" --images {args.images}" if args.images != 200 else "")
             + (f" --scenes {args.scenes}" if args.scenes != 100 else "") + "`.", "",
             "| method | readout | pointing, single objects | pointing, scenes | both right, scenes "
             "| pointing, composites | both right, composites |", "|---|---|---:|---:|---:|---:|---:|"]
    for method in METHODS:
        for readout in tqdm(READOUTS, desc=method):
            single = metrics.pointing_game(explain_batched(model, images, method, labels, args.batch,
                                                           readout=readout), masks).score
            two = class_specific_hits(model, *scenes, method, args.batch, readout=readout)
            pasted = class_specific_hits(model, *composites, method, args.batch, readout=readout)
            lines.append(f"| {method} | {readout} | {single:.3f} | {two.mean():.3f} | {two.prod(1).mean():.3f} "
                         f"| {pasted.mean():.3f} | {pasted.prod(1).mean():.3f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lrp_readout.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
