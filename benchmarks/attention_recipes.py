"""Which training recipe gives attention that points at the evidence? Train a recipe, then score every attention site.

    .venv/bin/python benchmarks/attention_recipes.py RECIPE [--steps 1500] [--seed 0] [--threads 1] [--images 200]

Recipes (all on the shapes task of ``crossvit.data``, the ``shapes_tiny`` architecture, AdamW 1e-3, 64 images per
step, warm-up 150 steps; they differ only in the loss):

* ``combined``: cross-entropy of the model's logits only (``head_loss_weight=0``);
* ``heads``: plus each branch head's own cross-entropy, weight 0.5;
* ``entropy05``, ``entropy10``, ``entropy20``: ``heads`` plus the CLS attention-entropy penalty
  (``crossvit.train.cls_attention_entropy``) with weight 0.05, 0.1 or 0.2.

For the trained model it prints the held-out accuracy (and each head's), then, on held-out images from a seed no
test and no training run uses, the pointing game (default "majority" rule) and the share of the map's mass on the
object for: every explanation method with its defaults, the rollouts from every start block, the raw CLS attention
of every self-attention layer (each branch and both) and the cross-attention of every fusion layer (each direction
and both). The bundled model's recipe was chosen with this script; ``benchmarks/explanations.py`` then scores the
bundled model with the defaults in ``crossvit.METHOD_OPTIONS``. Each run takes 10-20 minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import crossvit
from crossvit import data, metrics
from crossvit.data import UNUSED_SEED_BASE
from crossvit.train import TrainConfig, evaluate, train

RECIPES: dict[str, dict[str, float]] = {
    "combined": {"head_loss_weight": 0.0},
    "heads": {"head_loss_weight": 0.5},
    "entropy05": {"head_loss_weight": 0.5, "attention_entropy_weight": 0.05},
    "entropy10": {"head_loss_weight": 0.5, "attention_entropy_weight": 0.1},
    "entropy20": {"head_loss_weight": 0.5, "attention_entropy_weight": 0.2},
}
SCORE_SEED = UNUSED_SEED_BASE + 77  # above every training seed, and no test uses it


def variants(model: crossvit.CrossViT) -> list[tuple[str, dict]]:
    """(method, options) pairs: every method's defaults, every start block, every CLS row and fusion direction."""
    out: list[tuple[str, dict]] = [(m, {}) for m in crossvit.METHODS if m not in ("integrated_gradients", "occlusion")]
    for start in range(model.arch.num_blocks):
        out += [(m, {"start_block": start}) for m in ("small_rollout", "large_rollout", "joint_rollout",
                                                       "gradient_rollout")]
    for block in range(model.arch.num_blocks):
        for layer in range(min(model.arch.branch(b).depth[block] for b in model.branch_names)):
            out += [("cls_attention", {"block": block, "layer": layer, "branch": b})
                    for b in ("both", "small", "large")]
    fusions = sum(1 for s in crossvit.attention_sites(model) if s.kind == "cross") // 2
    for fusion in range(fusions):
        out += [("cross_attention", {"fusion": fusion, "query": q}) for q in ("both", "small", "large")]
    return out


def score(model: crossvit.CrossViT, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor
          ) -> list[dict]:
    rows = []
    for method, options in variants(model):
        maps = torch.cat([crossvit.explain(model, images[i:i + 50], method, target=labels[i:i + 50], **options)
                          for i in range(0, len(images), 50)])
        rows.append({"method": method, "options": options,
                     "pointing_game": metrics.pointing_game(maps, masks).score,
                     "mass_on_object": metrics.mass_inside_mask(maps, masks).mean().item()})
        print(f"{method:16s} {json.dumps(options):48s} pointing {rows[-1]['pointing_game']:.3f}  "
              f"mass {rows[-1]['mass_on_object']:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig(preset="shapes_tiny", steps=args.steps, warmup_steps=150, eval_every=max(1, args.steps // 4),
                         eval_images=1000, seed=args.seed, **RECIPES[args.recipe])
    started = time.perf_counter()
    model, record = train(config)
    print(f"{args.recipe}: {record['wall_time_s']:.0f} s of training; held-out accuracy per evaluation: "
          f"{[(h['step'], round(h['accuracy'], 4)) for h in record['eval_history']]}")
    images, labels, masks = data.make_shapes(args.images, SCORE_SEED, model.image_size)
    print("scoring images:", {k: round(v, 4) for k, v in evaluate(model, images, labels).items()})
    score(model, images, labels, masks)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
