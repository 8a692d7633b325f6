"""How faithful is each explanation method? Pointing game and deletion / insertion on held-out shapes images.

    .venv/bin/python benchmarks/explanations.py [--images 200] [--seed SEED] [--steps 16] [--checkpoint PATH]

Uses the bundled trained model (``crossvit.load_pretrained()``) by default, explains each image's true class,
and writes ``figures/explanation_faithfulness.md`` (a table) and ``figures/explanation_faithfulness.png`` (pointing
game, share of the map's mass on the object, and the two AUCs per method, the random baseline included). Every
method runs with its defaults (``crossvit.METHOD_OPTIONS``); rows marked "textbook" repeat a rollout from the
first block (``start_block=0``) where the default starts later. Higher pointing game, mass on the object and
insertion AUC, lower deletion AUC = more faithful. The pointing game is the default "majority" rule (most of the
maximal pixels on the object); the mass share of a map spread evenly is the object's area share.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import crossvit  # noqa: E402
from crossvit import data, metrics  # noqa: E402
from crossvit.checkpoint import load_pretrained  # noqa: E402
from crossvit.data import HELD_OUT_SEED_BASE  # noqa: E402


def variants() -> list[tuple[str, str, dict]]:
    """(row name, method, options): every method with its defaults, then the textbook rollouts from block 0."""
    rows = [(method, method, {}) for method in crossvit.METHODS]
    for method, defaults in crossvit.METHOD_OPTIONS.items():
        if defaults.get("start_block", 0) != 0:
            rows.append((f"{method} (textbook: start_block=0)", method, {"start_block": 0}))
    return rows


def evaluate(model, images, labels, masks, steps: int, batch: int) -> list[dict]:
    rows = []
    for name, method, options in tqdm(variants(), desc="methods"):
        start = time.perf_counter()
        maps = torch.cat([crossvit.explain(model, images[i:i + batch], method, target=labels[i:i + batch],
                                           **options) for i in range(0, len(images), batch)])
        seconds = time.perf_counter() - start
        pointing = metrics.pointing_game(maps, masks)
        curves = metrics.deletion_insertion(model, images, maps, labels, steps=steps)
        rows.append({
            "method": name, "pointing_game": pointing.score,
            "mass_on_object": metrics.mass_inside_mask(maps, masks).mean().item(),
            "deletion_auc": curves.mean_deletion_auc, "insertion_auc": curves.mean_insertion_auc,
            "seconds_per_image": seconds / len(images),
        })
    return rows


def write_table(rows: list[dict], path: Path, header: str) -> str:
    lines = [header, "", "| method | pointing game | mass on object | deletion AUC (lower better) | "
             "insertion AUC (higher better) | s / image |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['pointing_game']:.3f} | {r['mass_on_object']:.3f} | "
                     f"{r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} | {r['seconds_per_image']:.3f} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def plot(rows: list[dict], path: Path) -> None:
    names = [r["method"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 0.32 * len(rows) + 1.6), sharey=True)
    for ax, key, title in zip(axes, ("pointing_game", "mass_on_object", "deletion_auc", "insertion_auc"),
                              ("pointing game (higher better)", "mass on the object (higher better)",
                               "deletion AUC (lower better)", "insertion AUC (higher better)")):
        values = [r[key] for r in rows]
        colors = ["0.6" if n == "random" else "tab:orange" if "textbook" in n else "tab:blue" for n in names]
        ax.barh(names, values, color=colors)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, 1)
        for y, v in enumerate(values):
            ax.text(min(v + 0.01, 0.85), y, f"{v:.2f}", va="center", fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED_BASE + 2**32 + 1,
                        help="data seed (default: above every seed the trainer draws from or evaluates on)")
    parser.add_argument("--steps", type=int, default=16, help="deletion / insertion steps")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--checkpoint", default=None, help="a trainer checkpoint (default: the bundled model)")
    parser.add_argument("--out", default=os.environ.get("CROSSVIT_FIGURES_DIR", "figures"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_pretrained(args.checkpoint)
    images, labels, masks = data.make_shapes(args.images, seed=args.seed, image_size=model.image_size)
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    rows = evaluate(model, images, labels, masks, args.steps, args.batch)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    area = masks.float().mean().item()
    header = (f"{args.images} held-out shapes images (data seed {args.seed}), model accuracy {accuracy:.3f}, "
              f"object area {area:.3f} of the image (the mass share of an even map), "
              f"target = true class, {args.steps} deletion/insertion steps; command: "
              f"`python benchmarks/explanations.py --images {args.images} --seed {args.seed} --steps {args.steps}`")
    print(write_table(rows, out / "explanation_faithfulness.md", header))
    plot(rows, out / "explanation_faithfulness.png")


if __name__ == "__main__":
    main()
