"""The LRP rules' free parameters: the gamma rule on linear layers and the epsilon stabiliser, for AttnLRP and
CP-LRP on the bundled model, chosen on tuning images and reported on the held-out images of
``benchmarks/explanations.py``.

    .venv/bin/python benchmarks/lrp_rules.py [--scenes 100] [--images 200]

Both methods default to ``gamma = 0, epsilon = 0`` (plain gradient x input through every linear layer). zennit and
the AttnLRP paper use a gamma rule in some layers to favour positive evidence. Each setting of the grid is scored on
*tuning* scenes and composites (seeds ``UNUSED_SEED_BASE + 2**37 + 3`` and ``+ 5``, used nowhere else): the share of
images whose two classes are both pointed at their own object. The best setting per method (ties: the smaller
gamma, then epsilon) and the default are then scored once on the held-out images that every other explanation
number uses (single-object pointing and the logit deletion area, lower is better, on ``UNUSED_SEED_BASE + 1``;
scenes ``+ 3``; composites ``+ 5``), beside integrated gradients. Writes ``figures/lrp_rules.md``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explanations import explain_batched  # noqa: E402  (benchmarks/explanations.py)
from lrp_readout import class_specific_hits, held_out_sets  # noqa: E402  (benchmarks/lrp_readout.py)

from crossvit import metrics  # noqa: E402
from crossvit.checkpoint import load_pretrained  # noqa: E402
from crossvit.data import UNUSED_SEED_BASE  # noqa: E402
from crossvit.scenes import make_composites, make_two_object_shapes  # noqa: E402

METHODS = ("attnlrp", "cp_lrp")
GAMMAS = (0.0, 0.25, 1.0)
EPSILONS = (0.0, 0.1, 1.0)
TUNING_SEED = UNUSED_SEED_BASE + 2**37


def both_right(model, images, pairs, masks, method: str, batch: int, **options) -> tuple[float, float]:
    """(class-specific pointing, share of images with both classes right)."""
    hits = class_specific_hits(model, images, pairs, masks, method, batch, **options)
    return hits.mean().item(), hits.prod(1).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--steps", type=int, default=20, help="deletion curve steps")
    parser.add_argument("--out", default=os.environ.get("CROSSVIT_FIGURES_DIR", "figures"))
    args = parser.parse_args()
    for name in ("images", "scenes", "batch", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.manual_seed(0)
    model = load_pretrained()
    size = model.image_size
    tune = [make_two_object_shapes(args.scenes, TUNING_SEED + 3, size), make_composites(args.scenes, TUNING_SEED + 5, size)]
    grid = list(itertools.product(METHODS, GAMMAS, EPSILONS))
    rows = []
    for method, gamma, epsilon in tqdm(grid, desc="rule settings (tuning images)"):
        scores = [both_right(model, *t, method, args.batch, gamma=gamma, epsilon=epsilon) for t in tune]
        rows.append({"method": method, "gamma": gamma, "epsilon": epsilon, "scenes": scores[0],
                     "composites": scores[1], "objective": scores[0][1] + scores[1][1]})
    lines = ["Free parameters of the LRP rules on the bundled model. Command: `python benchmarks/lrp_rules.py"
             + (f" --scenes {args.scenes}" if args.scenes != 100 else "")
             + (f" --images {args.images}" if args.images != 200 else "") + "`.", "",
             f"### Tuning: {args.scenes} two-object scenes and {args.scenes} composites (seeds TUNING + 3, + 5)", "",
             "| method | gamma | epsilon | pointing, scenes | both right, scenes | pointing, composites "
             "| both right, composites |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['gamma']:g} | {r['epsilon']:g} | {r['scenes'][0]:.3f} | {r['scenes'][1]:.3f} "
              f"| {r['composites'][0]:.3f} | {r['composites'][1]:.3f} |" for r in rows]

    (images, labels, masks), scenes, composites = held_out_sets(model, args.images, args.scenes)
    chosen = [("integrated_gradients", {}, "")]
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        best = max(mine, key=lambda r: (r["objective"], -r["gamma"], -r["epsilon"]))
        chosen.append((method, {}, "default"))
        if best["gamma"] or best["epsilon"]:
            chosen.append((method, {"gamma": best["gamma"], "epsilon": best["epsilon"]}, "best on tuning"))
    lines += ["", f"### Held out: {args.images} single objects, {args.scenes} scenes, {args.scenes} composites "
              "(the seeds of `benchmarks/explanations.py`)", "",
              "| method | setting | gamma | epsilon | pointing, single | deletion area (logit) | pointing, scenes "
              "| both right, scenes | pointing, composites | both right, composites |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, options, label in tqdm(chosen, desc="held-out images"):
        maps = explain_batched(model, images, method, labels, args.batch, **options)
        single = metrics.pointing_game(maps, masks).score
        deletion = metrics.deletion_insertion(model, images, maps, labels, steps=args.steps,
                                              score="logit").mean_deletion_auc
        two = both_right(model, *scenes, method, args.batch, **options)
        pasted = both_right(model, *composites, method, args.batch, **options)
        lines.append(f"| {method} | {label} | {options.get('gamma', 0):g} | {options.get('epsilon', 0):g} "
                     f"| {single:.3f} | {deletion:.3f} | {two[0]:.3f} | {two[1]:.3f} | {pasted[0]:.3f} "
                     f"| {pasted[1]:.3f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lrp_rules.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
