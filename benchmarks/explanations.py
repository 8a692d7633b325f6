"""How faithful is each explanation method? Pointing game and deletion / insertion on held-out shapes images;
class-specific pointing on two-object scenes; the field's metrics (Quantus) beside ours.

    .venv/bin/python benchmarks/explanations.py [--images 200] [--seed SEED] [--steps 16] [--checkpoint PATH]
                                                [--scenes 100] [--scene-seed SEED] [--quantus-images 20]

Uses the bundled trained model (``crossvit.load_pretrained()``) by default, explains each image's true class,
and writes ``figures/explanation_faithfulness.md`` (a table) and ``figures/explanation_faithfulness.png`` (pointing
game, share of the map's mass on the object, and the two AUCs per method, the random baseline included). Every
method runs with its defaults (``crossvit.METHOD_OPTIONS``); rows marked "textbook" repeat a rollout from the
first block (``start_block=0``) where the default starts later. Higher pointing game, mass on the object and
insertion AUC, lower deletion AUC = more faithful. The pointing game is the default "majority" rule (most of the
maximal pixels on the object); the mass share of a map spread evenly is the object's area share.

**Two-object scenes** (``crossvit.scenes.make_two_object_shapes``): each scene holds two objects of different
classes; every method explains each of the two classes in turn, and the map for a class is scored on that class's
object. A class-agnostic method gives the same map for both targets, so it points at most at one of the two objects
(pointing game <= 0.5, "both right" 0). Also reported on the scenes where the model's two largest logits are the two
objects' classes (where it sees both), since a map cannot show evidence the model did not pick up.

**Composites** (``crossvit.scenes.make_composites``): the object of one single-object image pasted into another whose
object has another class, touching no object; scored as the scenes are. Every piece comes from the task the model was
trained on.

**Quantus** (the ``bench`` extra; skipped without it), on the first ``--quantus-images`` single-object images:
PointingGame and RelevanceRankAccuracy (localisation), ROAD (Rong et al. 2022: the most relevant pixels replaced by
noisy linear imputation, which leaks less of the removed shape than a blur; the mean accuracy over removal
percentages 10, 30, 50, 70 and 90 %, lower = more faithful), and RandomLogit (the SSIM between the map for the true class and the map
for a random other class; lower = more class-sensitive; class-agnostic methods score 1).
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
from crossvit.data import UNUSED_SEED_BASE  # noqa: E402
from crossvit.explain import REGISTRY  # noqa: E402
from crossvit.scenes import make_composites, make_two_object_shapes  # noqa: E402


def variants() -> list[tuple[str, str, dict]]:
    """(row name, method, options): every method with its defaults, then the textbook rollouts from block 0."""
    rows = [(method, method, {}) for method in crossvit.METHODS]
    for method, defaults in crossvit.METHOD_OPTIONS.items():
        if defaults.get("start_block", 0) != 0:
            rows.append((f"{method} (textbook: start_block=0)", method, {"start_block": 0}))
        if defaults.get("readout") == "tokens":
            rows.append((f"{method} (read at the pixels)", method, {"readout": "pixels"}))
    return rows


def explain_batched(model, images, method, target, batch: int, **options) -> torch.Tensor:
    return torch.cat([crossvit.explain(model, images[i:i + batch], method, target=target[i:i + batch], **options)
                      for i in range(0, len(images), batch)])


def evaluate(model, images, labels, masks, steps: int, batch: int) -> list[dict]:
    rows = []
    for name, method, options in tqdm(variants(), desc="methods"):
        start = time.perf_counter()
        maps = explain_batched(model, images, method, labels, batch, **options)
        seconds = time.perf_counter() - start
        pointing = metrics.pointing_game(maps, masks)
        curves = metrics.deletion_insertion(model, images, maps, labels, steps=steps)
        logit_curves = metrics.deletion_insertion(model, images, maps, labels, steps=steps, score="logit")
        rows.append({
            "method": name, "pointing_game": pointing.score,
            "mass_on_object": metrics.mass_inside_mask(maps, masks).mean().item(),
            "deletion_auc": curves.mean_deletion_auc, "insertion_auc": curves.mean_insertion_auc,
            "deletion_auc_logit": logit_curves.mean_deletion_auc,
            "seconds_per_image": seconds / len(images),
        })
    return rows


def class_specific(model, scenes, pairs, masks, batch: int) -> tuple[list[dict], float]:
    """Per method: pointing game and mass on the object for each (scene, class) with that class's object as the
    mask; the share of scenes where both classes are right; the same on the scenes where the model sees both."""
    with torch.no_grad():
        top2 = model(scenes).topk(2, dim=1).indices.sort(dim=1).values
    sees_both = (top2 == pairs.sort(dim=1).values).all(dim=1)
    rows = []
    for method in tqdm(crossvit.METHODS, desc="two-object scenes"):
        hits, mass = [], []
        for k in range(pairs.shape[1]):
            maps = explain_batched(model, scenes, method, pairs[:, k], batch)
            hits.append(metrics.pointing_game(maps, masks[:, k]).hits)
            mass.append(metrics.mass_inside_mask(maps, masks[:, k]))
        hits = torch.stack(hits, dim=1).float()  # (N, 2)
        rows.append({"method": method, "class_specific": REGISTRY[method].class_specific,
                     "pointing_game": hits.mean().item(), "both_right": hits.prod(1).mean().item(),
                     "mass_on_object": torch.stack(mass).mean().item(),
                     "pointing_sees_both": hits[sees_both].mean().item(),
                     "both_right_sees_both": hits[sees_both].prod(1).mean().item()})
    return rows, sees_both.float().mean().item()


def _pixel_road(quantus):
    """Quantus's ROAD for one map per image over all colour channels. Quantus 0.6's ROAD broadcasts a (B, 1, H, W)
    map to the image's channels and ranks the B x 3HW entries, while its noisy linear imputation indexes the HW
    pixels, so every index past HW fails; this subclass ranks the HW pixels, as the ROAD paper does, and otherwise
    runs Quantus's code (the imputation, the model calls, the aggregation)."""
    import numpy as np

    class PixelROAD(quantus.ROAD):
        def evaluate_batch(self, model, x_batch, y_batch, a_batch, **kwargs):
            order = np.argsort(-a_batch.reshape(len(a_batch), -1), axis=1)  # pixels, most relevant first
            pixels = order.shape[1]
            results = []
            for p in self.percentages:
                top = order[:, : int(pixels * p / 100)]
                perturbed = np.stack([self.perturb_func(arr=xi, indices=ti) for xi, ti in zip(x_batch, top)])
                x_input = model.shape_input(perturbed, x_batch.shape, channel_first=True, batched=True)
                results.append(y_batch == np.argmax(model.predict(x_input), axis=-1))
            return [np.stack(results, axis=1).astype(int)]

    return PixelROAD


def quantus_metrics(model, images, labels, masks, batch: int) -> list[dict] | None:
    """Quantus's PointingGame, RelevanceRankAccuracy, ROAD and RandomLogit per method (None without Quantus)."""
    try:
        import quantus
    except ImportError:
        return None
    x, y, s = images.numpy(), labels.numpy(), masks[:, None].numpy().astype(float)
    rows = []
    for method in tqdm(crossvit.METHODS, desc="quantus"):
        def explain_func(model, inputs, targets, method=method, **kwargs):
            maps = explain_batched(model, torch.as_tensor(inputs), method, torch.as_tensor(targets), batch)
            return maps[:, None].numpy()

        a = explain_func(model, x, y)
        common = {"disable_warnings": True, "display_progressbar": False}
        pointing = quantus.PointingGame(abs=False, normalise=False, **common)(
            model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
        rank = quantus.RelevanceRankAccuracy(abs=False, normalise=False, **common)(
            model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
        road = _pixel_road(quantus)(percentages=list(range(10, 100, 20)), noise=0.01, **common)
        road(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu")
        logit = quantus.RandomLogit(num_classes=data.NUM_CLASSES, seed=0, abs=False, normalise=True, **common)(
            model=model, x_batch=x, y_batch=y, a_batch=a, explain_func=explain_func, device="cpu")
        rows.append({"method": method, "pointing_game": float(sum(pointing) / len(pointing)),
                     "rank_accuracy": float(sum(rank) / len(rank)),
                     "road": float(sum(road.evaluation_scores.values()) / len(road.evaluation_scores))
                     if isinstance(road.evaluation_scores, dict) else float(torch.tensor(road.evaluation_scores,
                                                                                         dtype=torch.float64).mean()),
                     "random_logit_ssim": float(sum(logit) / len(logit))})
    return rows


def write_table(rows: list[dict], path: Path, header: str, extra: str = "") -> str:
    lines = [header, "", "| method | pointing game | mass on object | deletion AUC (lower better) | "
             "insertion AUC (higher better) | deletion AUC of the logit (lower better) | s / image |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['pointing_game']:.3f} | {r['mass_on_object']:.3f} | "
                     f"{r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} | {r['deletion_auc_logit']:.3f} | "
                     f"{r['seconds_per_image']:.3f} |")
    text = "\n".join(lines) + "\n" + extra
    path.write_text(text)
    return text


def scenes_table(rows: list[dict], header: str,
                 title: str = "Two-object scenes: does the map for a class point at that class's object?") -> str:
    lines = ["", f"### {title}", "", header, "",
             "| method | class-specific | pointing game | both classes right | mass on the class's object | "
             "pointing, model sees both | both right, model sees both |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {'yes' if r['class_specific'] else 'no'} | {r['pointing_game']:.3f} | "
                     f"{r['both_right']:.3f} | {r['mass_on_object']:.3f} | {r['pointing_sees_both']:.3f} | "
                     f"{r['both_right_sees_both']:.3f} |")
    return "\n".join(lines) + "\n"


def quantus_table(rows: list[dict] | None, header: str) -> str:
    if rows is None:
        return "\n### Quantus\n\nQuantus is not installed (`pip install -e '.[bench]'`): not measured.\n"
    lines = ["", "### The same methods measured by Quantus", "", header, "",
             "| method | PointingGame | RelevanceRankAccuracy | ROAD, MoRF accuracy (lower better) | "
             "RandomLogit SSIM (lower = more class-sensitive) |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['pointing_game']:.3f} | {r['rank_accuracy']:.3f} | {r['road']:.3f} | "
                     f"{r['random_logit_ssim']:.3f} |")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--seed", type=int, default=UNUSED_SEED_BASE + 1,
                        help="data seed (default: above every seed the trainer draws from or evaluates on)")
    parser.add_argument("--steps", type=int, default=16, help="deletion / insertion steps")
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--checkpoint", default=None, help="a trainer checkpoint (default: the bundled model)")
    parser.add_argument("--out", default=os.environ.get("CROSSVIT_FIGURES_DIR", "figures"))
    parser.add_argument("--scenes", type=int, default=100, help="two-object scenes")
    parser.add_argument("--scene-seed", type=int, default=UNUSED_SEED_BASE + 3)
    parser.add_argument("--composite-seed", type=int, default=UNUSED_SEED_BASE + 5)
    parser.add_argument("--quantus-images", type=int, default=20, help="single-object images Quantus measures")
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
              f"target = true class, {args.steps} deletion/insertion steps (the command is at the end).")
    scenes, pairs, scene_masks = make_two_object_shapes(args.scenes, args.scene_seed, model.image_size)
    scene_rows, sees_both = class_specific(model, scenes, pairs, scene_masks, args.batch)
    scene_header = (f"{args.scenes} held-out two-object scenes (data seed {args.scene_seed}), each class of the "
                    f"scene explained in turn (target = that class); the model's two largest logits are the scene's "
                    f"two classes on {sees_both:.2f} of them; majority pointing rule.")
    composites, composite_pairs, composite_masks = make_composites(args.scenes, args.composite_seed, model.image_size)
    composite_rows, composite_sees_both = class_specific(model, composites, composite_pairs, composite_masks,
                                                         args.batch)
    composite_header = (f"{args.scenes} composites (data seed {args.composite_seed}): the object of one held-out "
                        f"shapes image pasted into another shapes image whose object has a different class, touching "
                        f"no object (crossvit.scenes.make_composites); each class explained in turn; the model's two "
                        f"largest logits are the two classes on {composite_sees_both:.2f} of them.")
    q = args.quantus_images
    quantus_rows = quantus_metrics(model, images[:q], labels[:q], masks[:q], args.batch)
    quantus_header = (f"The first {q} single-object images above, target = true class; Quantus "
                      f"{_quantus_version()}, ROAD over removal percentages 10, 30, 50, 70 and 90 %.")
    extra = (scenes_table(scene_rows, scene_header)
             + scenes_table(composite_rows, composite_header, "Composites: one shapes object pasted into another "
                            "shapes image") + quantus_table(quantus_rows, quantus_header))
    command = (f"\nCommand: `python benchmarks/explanations.py --images {args.images} --seed {args.seed} --steps "
               f"{args.steps} --scenes {args.scenes} --scene-seed {args.scene_seed} --composite-seed {args.composite_seed} "
               f"--quantus-images {q}"
               + (f" --checkpoint {Path(args.checkpoint).name}" if args.checkpoint else "") + "`.\n")
    print(write_table(rows, out / "explanation_faithfulness.md", header, extra + command))
    plot(rows, out / "explanation_faithfulness.png")


def _quantus_version() -> str:
    try:
        import quantus
    except ImportError:
        return "(not installed)"
    return quantus.__version__


if __name__ == "__main__":
    main()
