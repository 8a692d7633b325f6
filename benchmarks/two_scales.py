"""Why two branches: CrossViT against single-branch ViTs of the same FLOPs, on the two-scale task.

    .venv/bin/python benchmarks/two_scales.py train [--sizes s m l] [--lrs 0.001 0.002] [--steps 1500] [--threads 1]
                                                   # [--head-loss-weight W]: the CrossViT's heads' own losses
                                                   # [--attention-entropy-weight W]: its attention-entropy term
                                                   # [--seeds 0 1 2]: the seeds of the init, data and batches
    .venv/bin/python benchmarks/two_scales.py bundle [--size m] [--steps N]  # the best CrossViT of a size becomes
                                                   # crossvit.load_pretrained(task="two_scale")
    .venv/bin/python benchmarks/two_scales.py report [--steps N] [--analyse RUN ...]  # table, figure, and the
                                                   # analysis of the bundled CrossViT (and of the runs named)
    .venv/bin/python benchmarks/two_scales.py probe [--half texture|arrangement] [--steps N] [--augment]
                                                   # can a coarse ViT read one half of the label alone?

The task (``crossvit.twoscale``): the class is a fine texture (readable at full resolution only) times the layout
of a 16 px tile (two dark quadrants side by side or on a diagonal) that one coarse patch holds whole and fine patches
see only as four flat squares. Every model takes the 96 px image; where a model looks at the half-resolution copy,
the resize is anti-aliased, so the copy holds no trace of the texture. Three families:

* ``crossvit``: the paper's asymmetric design, three multi-scale blocks of a shallow, narrow *small* branch on 8 px
  patches of the full image (12 x 12 = 144 tokens) and a deep, wide *large* branch on 8 px patches of the
  half-resolution copy (6 x 6 = 36 tokens, each 16 px of the image), joined by cross-attention;
* ``fine``: a ViT on the small branch's tokens alone (6 layers);
* ``coarse``: a ViT on the large branch's tokens alone (9 layers).

Each family comes in three sizes (``s``, ``m``, ``l``; the committed runs are ``s`` and ``m``); a single-branch
ViT's width is the one whose FLOPs (``crossvit.flops``, attention included) come closest to the CrossViT of that
size (within 10 %). Every run is ``crossvit.train.train`` with the
same data (task ``two_scale``, 20,000 training images), schedule (AdamW, warm-up, cosine decay), steps and batch,
and the same small learning-rate sweep for every family; the CrossViT's loss adds each head's own cross-entropy and
the attention-entropy term of the bundled model's recipe (``crossvit/assets/shapes_tiny.json``). The learning rate
of each (family, size) is chosen on the trainer's held-out images (validation) and the accuracy reported on 2,000
other images (``UNUSED_SEED_BASE + 2**35``, a seed no test uses).

``train`` is resumable: each run keeps its state in ``runs/two_scales/<run>.state`` (every 100 steps) and appends its
result to ``figures/two_scales.json`` when it ends; run it again after a stop and it skips finished runs and
continues the unfinished one. ``report`` writes ``figures/two_scales.md`` and ``figures/two_scales.png``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossvit.ablation import SingleBranchViT  # noqa: E402
from crossvit.config import PaperConfig, architecture_of  # noqa: E402
from crossvit.data import UNUSED_SEED_BASE  # noqa: E402
from crossvit.flops import count_flops  # noqa: E402
from crossvit.model import CrossViT  # noqa: E402
from crossvit.train import TrainConfig, evaluate, train  # noqa: E402
from crossvit.twoscale import make_two_scale_shapes  # noqa: E402

RESULTS = ROOT / "figures" / "two_scales.json"
RUNS = ROOT / "runs" / "two_scales"
TEST_SEED = UNUSED_SEED_BASE + 2**35
TEST_IMAGES = 2000
CHOICE_SEED = TEST_SEED + 1  # images on which the analysis chooses a rollout's start_block (never the test images)
FAMILIES = ("crossvit", "fine", "coarse")
SINGLE_DEPTH = {"fine": 6, "coarse": 9}
# (small width, large width, large layers per block, small heads, large heads); the small branch has one layer per block
CROSSVIT_SIZES = {"s": (24, 64, 2, 2, 4), "m": (32, 96, 3, 2, 4), "l": (48, 128, 3, 3, 4)}
RECIPE = dict(task="two_scale", batch_size=64, weight_decay=0.05, train_images=20000, eval_images=2000,
              head_loss_weight=0.5, attention_entropy_weight=0.05, seed=0)
# the CrossViT's extra loss terms a run may change, and the tag its name then carries ("-heads0", "-ent0");
# the paper trains the averaged logits alone, i.e. both at 0
LOSS_TERMS = {"head_loss_weight": "heads", "attention_entropy_weight": "ent"}


def paper_config(embed_dim: tuple[int, int], depth: tuple[tuple[int, int, int], ...], heads: tuple[int, int],
                 antialias: bool = True) -> PaperConfig:
    return PaperConfig(img_size=96, img_scale=(1.0, 0.5), patch_size=(8, 8), embed_dim=embed_dim, depth=depth,
                       num_heads=heads, mlp_ratio=(3.0, 3.0, 1.0), num_classes=4, resize_antialias=antialias,
                       input_norm=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))


def crossvit_config(size: str) -> PaperConfig:
    small, large, depth, small_heads, large_heads = CROSSVIT_SIZES[size]
    return paper_config((small, large), ((1, depth, 0),) * 3, (small_heads, large_heads))


def single_branch(family: str, width: int, antialias: bool = True) -> SingleBranchViT:
    """A plain ViT on one branch's tokens: ``width`` channels, heads of 16 channels (at least 2)."""
    heads = max(2, width // 16)
    while width % heads:
        heads -= 1
    branch = "small" if family == "fine" else "large"
    dims, head_pair = ((width, 16), (heads, 2)) if branch == "small" else ((16, width), (2, heads))
    layers = ((SINGLE_DEPTH[family], 1, 0),) if branch == "small" else ((1, SINGLE_DEPTH[family], 0),)
    return SingleBranchViT(architecture_of(paper_config(dims, layers, head_pair, antialias)), branch)


def matched_width(family: str, flops: int) -> int:
    """The width (a multiple of 4) whose single-branch ViT's FLOPs come closest to ``flops``."""
    return min(range(16, 512, 4), key=lambda w: abs(count_flops(single_branch(family, w)) - flops))


def build(family: str, size: str, seed: int = RECIPE["seed"]) -> tuple[torch.nn.Module, PaperConfig | None]:
    """The model of ``family`` at ``size`` (fresh weights: the trainer seeds and initialises it) and, for the
    CrossViT, its config."""
    if family == "crossvit":
        config = crossvit_config(size)
        return CrossViT(config), config
    width = matched_width(family, count_flops(CrossViT(crossvit_config(size))))
    torch.manual_seed(seed)  # as the trainer seeds the init of the CrossViT it builds
    return single_branch(family, width), None


def load_results() -> list[dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else []


def recipe_losses() -> dict[str, float]:
    """The recipe's weights of the CrossViT's extra loss terms."""
    return {k: RECIPE[k] for k in LOSS_TERMS}


def run_name(family: str, size: str, lr: float, steps: int, losses: dict[str, float] | None = None,
             seed: int = RECIPE["seed"]) -> str:
    """The run's name; a CrossViT trained with another weight on an extra loss term than the recipe's says so
    (``-heads0``, ``-ent0``), and a run with another seed than the recipe's (``-seed1``)."""
    losses = {**recipe_losses(), **(losses or {})}
    tags = "".join(f"-{tag}{losses[k]:g}" for k, tag in LOSS_TERMS.items()
                   if family == "crossvit" and losses[k] != RECIPE[k])
    return f"{family}-{size}-lr{lr:g}-{steps}steps{tags}" + (f"-seed{seed}" if seed != RECIPE["seed"] else "")


def recipe_of(run: dict) -> dict[str, float]:
    """The weights of the extra loss terms a recorded run was trained with (a run recorded without one used the
    recipe's); a single-branch run, which has no heads, counts as trained with the recipe's."""
    return {k: run.get(k, RECIPE[k]) for k in LOSS_TERMS}


def train_one(family: str, size: str, lr: float, steps: int, test: tuple[torch.Tensor, torch.Tensor],
              losses: dict[str, float] | None = None, seed: int = RECIPE["seed"]) -> dict:
    losses = {**recipe_losses(), **(losses or {})}
    model, config = build(family, size, seed)
    train_config = TrainConfig(preset=config or crossvit_config(size), steps=steps, lr=lr,
                               warmup_steps=max(1, steps // 10), eval_every=max(1, steps // 4),
                               **{**RECIPE, **losses, "seed": seed})
    name = run_name(family, size, lr, steps, losses, seed)
    RUNS.mkdir(parents=True, exist_ok=True)
    trained, record = train(train_config, RUNS if family == "crossvit" else None, progress=True, name=name,
                            model=None if family == "crossvit" else model, overwrite=True,
                            state_file=RUNS / f"{name}.state")
    scores = evaluate(trained, *test)
    with torch.no_grad():
        predicted = torch.cat([trained(test[0][i:i + 250]).argmax(1) for i in range(0, len(test[1]), 250)])
    halves = {"texture_accuracy": (predicted % 2 == test[1] % 2).float().mean().item(),
              "arrangement_accuracy": (predicted // 2 == test[1] // 2).float().mean().item()}
    return {"family": family, "size": size, "lr": lr, "steps": steps, "seed": seed, **halves,
            "flops": count_flops(trained), "params": sum(p.numel() for p in trained.parameters()),
            "val_accuracy": record["held_out_accuracy"], "accuracy": scores["accuracy"],
            "test_seed": TEST_SEED, "test_images": TEST_IMAGES, "wall_time_s": record["wall_time_s"],
            "torch_threads": torch.get_num_threads(), "run": name,
            **(losses if family == "crossvit" else {}),
            **({"small_head_accuracy": scores["small_head_accuracy"],
                "large_head_accuracy": scores["large_head_accuracy"]} if family == "crossvit" else {})}


def train_all(args: argparse.Namespace) -> None:
    losses = {k: getattr(args, k) for k in LOSS_TERMS}
    done = {r["run"] for r in load_results()}
    images, labels, _ = make_two_scale_shapes(TEST_IMAGES, TEST_SEED)
    todo = [(f, s, lr, seed) for seed in dict.fromkeys(args.seeds) for s in dict.fromkeys(args.sizes)
            for f in dict.fromkeys(args.families) for lr in dict.fromkeys(args.lrs)  # each run once
            if run_name(f, s, lr, args.steps, losses, seed) not in done]
    print(f"{len(done)} runs done, {len(todo)} to go", flush=True)
    for k, (family, size, lr, seed) in enumerate(todo):
        name = run_name(family, size, lr, args.steps, losses, seed)
        print(f"[{k + 1}/{len(todo)}] {name} ({time.strftime('%H:%M')})", flush=True)
        result = train_one(family, size, lr, args.steps, (images, labels), losses, seed)
        with open(RUNS / "results.lock", "w") as lock:  # two train processes may finish together
            fcntl.flock(lock, fcntl.LOCK_EX)
            results = load_results() + [result]
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(f"    test accuracy {result['accuracy']:.4f} (validation {result['val_accuracy']:.4f}), "
              f"{result['flops'] / 1e6:.1f} MFLOP, {result['wall_time_s']:.0f} s", flush=True)


def probe(args: argparse.Namespace) -> None:
    """Can a ViT on the half-resolution copy read each half of the label alone? The coarse family's model (``--size``)
    trained on one half of the label (``--half``: the texture, with the anti-aliased resize and with a plain bicubic
    one; or the arrangement, anti-aliased), with the trainer's optimiser and schedule (and, with ``--augment``, its
    augmentation, :func:`crossvit.train.augment`) in its own short loop (the trainer trains the four classes).
    Appends its rows to ``figures/two_scales_probe.json``."""
    import torch.nn.functional as F

    from crossvit.train import augment, lr_factor, parameter_groups

    width = matched_width("coarse", count_flops(CrossViT(crossvit_config(args.size))))
    half = (lambda y: y % 2) if args.half == "texture" else (lambda y: y // 2)
    test_x, test_y, _ = make_two_scale_shapes(TEST_IMAGES, TEST_SEED)
    train_x, train_y = zip(*[make_two_scale_shapes(2000, seed)[:2] for seed in range(args.train_images // 2000)])
    train_x, train_y = torch.cat(train_x), torch.cat(train_y)
    path = ROOT / "figures" / "two_scales_probe.json"
    # a rerun of the same probe replaces its row; "second_half" tells the task's versions apart (its first version's
    # second half was three beads in a row or bent, "beads"; the tile replaced it)
    key = ("second_half", "half", "antialias", "steps", "size", "lr", "augment")
    rows = json.loads(path.read_text()) if path.is_file() else []
    for antialias in ((True, False) if args.half == "texture" else (True,)):
        torch.manual_seed(0)
        model = single_branch("coarse", width, antialias)
        optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=args.lr)
        batches = torch.Generator().manual_seed(1)
        model.train()
        curve = []
        for step in tqdm(range(args.steps), desc=f"coarse ViT, {args.half} only, antialias={antialias}", unit="step"):
            for group in optimizer.param_groups:
                group["lr"] = args.lr * lr_factor(step, args.steps, args.steps // 10)
            index = torch.randint(0, len(train_y), (64,), generator=batches)
            x = augment(train_x[index], batches) if args.augment else train_x[index]  # the trainer's, per image
            loss = F.cross_entropy(model(x), half(train_y[index]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if (step + 1) % max(1, args.steps // 10) == 0:
                curve.append([step + 1, round(loss.item(), 4)])
        model.eval()
        with torch.no_grad():
            predicted = torch.cat([model(test_x[i:i + 250]).argmax(1) for i in range(0, len(test_y), 250)])
        row = {"second_half": "tile", "half": args.half, "antialias": antialias,
               "accuracy": (predicted == half(test_y)).float().mean().item(), "steps": args.steps, "lr": args.lr,
               "train_images": len(train_y), "size": args.size, "width": width, "augment": args.augment,
               "chance": 0.5, "loss_curve": curve}
        rows = [r for r in rows if {k: r.get(k) for k in key}
                != {k: row[k] for k in key}] + [row]
        print({k: v for k, v in row.items() if k != "loss_curve"}, flush=True)
        path.write_text(json.dumps(rows, indent=1) + "\n")


def best_runs(results: list[dict], steps: int) -> dict[tuple[str, str], dict]:
    """Per (family, size), among the runs of ``steps`` steps with the recipe's loss and seed, the one with the best
    validation accuracy (ties: the smaller learning rate)."""
    best: dict[tuple[str, str], dict] = {}
    for r in sorted((r for r in results if r["steps"] == steps and recipe_of(r) == recipe_losses()
                     and r["seed"] == RECIPE["seed"]),
                    key=lambda r: r["lr"]):
        key = (r["family"], r["size"])
        if key not in best or r["val_accuracy"] > best[key]["val_accuracy"]:
            best[key] = r
    return best


def analyse(model: CrossViT, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor
            ) -> dict[str, float | str]:
    """For one trained CrossViT: each head alone, each fusion direction zeroed, the AttnLRP share of each branch,
    the pointing game of the attention maps on the class evidence (the object and the tile), and gradient
    rollout's four rows (each one's share of the map and where it points)."""
    import crossvit
    from crossvit.ablation import cross_attention_ablations

    ablations = cross_attention_ablations(model, images, labels)
    out = dict(ablations[()])
    for name, queries in (("small CLS reading", ("small",)), ("large CLS reading", ("large",)),
                          ("both directions", ("small", "large"))):
        out.update({f"{name} zeroed: {k}": v for k, v in ablations[queries].items()})
    n = min(400, len(images))
    totals: dict[str, list[torch.Tensor]] = {"small": [], "large": []}
    shares: dict[str, list[torch.Tensor]] = {"small": [], "large": []}
    for i in range(0, n, 50):
        split = crossvit.relevance_by_branch(model, images[i:i + 50], labels[i:i + 50])
        for b in shares:
            totals[b].append(split.total(b))
            shares[b].append(split.share(b))
    both = sum(torch.cat(v).sum() for v in totals.values())
    for b in shares:
        out[f"{b} branch relevance share (its total / both totals)"] = (torch.cat(totals[b]).sum() / both).item()
        out[f"{b} branch relevance share (mean of per-image shares)"] = torch.cat(shares[b]).mean().item()
    evidence = masks[:n].any(dim=1)

    def explained(method: str, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.cat([crossvit.explain(model, x[i:i + 50], method, target=y[i:i + 50], **kwargs)
                          for i in range(0, len(y), 50)])

    def pointing(maps: torch.Tensor, where: torch.Tensor) -> float:
        return crossvit.metrics.pointing_game(maps, where).score

    for method in ("joint_rollout", "gradient_rollout", "attnlrp", "random"):
        maps = explained(method, images[:n], labels[:n])
        out[f"pointing {method}"] = pointing(maps, evidence)
        out[f"pointing {method}, object only"] = pointing(maps, masks[:n, 0])
    # gradient rollout's map is the sum of four rows (each CLS token over each branch's patches): each row's share
    # of the map's mass, and where each row alone points
    rows: dict[tuple[str, str], list[torch.Tensor]] = {}
    for i in range(0, n, 50):
        x = images[i:i + 50].detach().clone().requires_grad_(True)
        with crossvit.record_attention(model, grads=True) as rec, torch.enable_grad():
            model(x).gather(1, labels[i:i + 50, None]).sum().backward(inputs=list(rec.sites.values()))
        for query, row in crossvit.gradient_rollout(rec).items():
            for patches, r in row.items():
                rows.setdefault((query, patches), []).append(r)
        rec.clear()
    mass = sum(torch.cat(r).sum() for r in rows.values())
    for (query, patches), r in rows.items():
        r = torch.cat(r)
        pixels = crossvit.patch_map_to_pixels(model, patches, r, density=True)
        out[f"gradient_rollout row {query} CLS -> {patches} patches: share of the mass"] = (r.sum() / mass).item()
        out[f"gradient_rollout row {query} CLS -> {patches} patches: pointing, object / tile"] = (
            f"{pointing(pixels, masks[:n, 0]):.4f} / {pointing(pixels, masks[:n, 1]):.4f}")
    # explain's start_block defaults were chosen on the shapes model; for this model, choose each rollout's on
    # other images (CHOICE_SEED), then score the choice on the test images
    x, y, m = make_two_scale_shapes(n, CHOICE_SEED)
    for method in ("joint_rollout", "gradient_rollout"):
        scores = {b: pointing(explained(method, x, y, start_block=b), m.any(dim=1)) for b in range(len(model.blocks))}
        best = max(scores, key=lambda b: (scores[b], -b))
        out[f"pointing {method}, start_block {best} (chosen on {n} other images: "
            + ", ".join(f"{b}: {v:.3f}" for b, v in scores.items()) + ")"] = pointing(
                explained(method, images[:n], labels[:n], start_block=best), evidence)
    return out


def measures_table(measures: dict[str, float | str]) -> list[str]:
    """The markdown lines of :func:`analyse`'s measures, a blank line first."""
    return ["", "| measure | value |", "|---|---:|",
            *(f"| {k} | {v if isinstance(v, str) else format(v, '.4f')} |" for k, v in measures.items())]


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = load_results()
    best = best_runs(results, args.steps)
    images, labels, masks = make_two_scale_shapes(TEST_IMAGES, TEST_SEED)
    lines = [f"Two-scale task: {TEST_IMAGES} test images (data seed {TEST_SEED}); every run {args.steps} steps of "
             f"{RECIPE['batch_size']} images; per family and size the learning rate with the best validation accuracy "
             "(the trainer's held-out images); FLOPs per image by `crossvit.flops.count_flops`. Command: "
             "`python benchmarks/two_scales.py train` then `report"
             + (" --analyse " + " ".join(args.analyse) if args.analyse else "") + "`.", "",
             "![test accuracy against FLOPs per image, one line per family](two_scales.png)", "",
             "| size | family | MFLOP | parameters | learning rate | validation accuracy | test accuracy | "
             "texture half | tile half |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size in CROSSVIT_SIZES:
        for family in FAMILIES:
            r = best.get((family, size))
            if r:
                lines.append(f"| {size} | {family} | {r['flops'] / 1e6:.1f} | {r['params']:,} | {r['lr']:g} | "
                             f"{r['val_accuracy']:.4f} | {r['accuracy']:.4f} | {r.get('texture_accuracy', -1):.4f} | "
                             f"{r.get('arrangement_accuracy', -1):.4f} |")
    lines += ["", "| size | CrossViT test accuracy | best single-branch ViT | its test accuracy | its FLOPs / "
              "CrossViT's | CrossViT ahead by (points) |", "|---|---:|---|---:|---:|---:|"]
    for size in CROSSVIT_SIZES:
        cv = best.get(("crossvit", size))
        rivals = [best[(f, size)] for f in ("fine", "coarse") if (f, size) in best]
        if cv and rivals:
            top = max(rivals, key=lambda r: r["accuracy"])
            lines.append(f"| {size} | {cv['accuracy']:.4f} | {top['family']} | {top['accuracy']:.4f} | "
                         f"{top['flops'] / cv['flops']:.2f} | {100 * (cv['accuracy'] - top['accuracy']):+.1f} |")
    longer = sorted((r for r in results if r["steps"] != args.steps or recipe_of(r) != recipe_losses()
                     or r["seed"] != RECIPE["seed"]),
                    key=lambda r: (r["steps"], r["size"], FAMILIES.index(r["family"]), r["lr"], r["run"]))
    if longer:
        lines += ["", "Runs with another number of steps or other weights of the CrossViT's extra loss terms (its "
                  "heads' own cross-entropy, `-headsW` in the name, recipe 0.5; the attention-entropy term, `-entW`, "
                  "recipe 0.05; or another seed, `-seedN`, recipe 0; not in the comparison above):", "",
                  "| run | MFLOP | validation accuracy | test accuracy | texture half | tile half |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['run']} | {r['flops'] / 1e6:.1f} | {r['val_accuracy']:.4f} | {r['accuracy']:.4f} | "
                  f"{r['texture_accuracy']:.4f} | {r['arrangement_accuracy']:.4f} |" for r in longer]
    settings: dict[str, list[dict]] = {}
    for r in results:
        settings.setdefault(run_name(r["family"], r["size"], r["lr"], r["steps"], recipe_of(r)), []).append(r)
    repeated = {name: sorted(runs, key=lambda r: r["seed"]) for name, runs in settings.items() if len(runs) > 1}
    if repeated:
        lines += ["", "Settings trained with more than one seed (the seed sets the initialisation, the training images "
                  "and the batch order; the test images stay the same):", "",
                  "| setting | seeds | test accuracy per seed | mean | seeds that learned both halves (test accuracy "
                  ">= 0.9) |", "|---|---|---|---:|---:|"]
        lines += [f"| {name} | {', '.join(str(r['seed']) for r in runs)} | "
                  f"{', '.join(format(r['accuracy'], '.4f') for r in runs)} | "
                  f"{sum(r['accuracy'] for r in runs) / len(runs):.4f} | "
                  f"{sum(r['accuracy'] >= 0.9 for r in runs)} of {len(runs)} |" for name, runs in repeated.items()]
    from crossvit.checkpoint import BUNDLED_CHECKPOINTS, load_checkpoint, load_pretrained

    if BUNDLED_CHECKPOINTS["two_scale"].is_file():
        model = load_pretrained(task="two_scale")
        a = analyse(model, images, labels, masks)
        lines += ["", "### The bundled two-scale CrossViT, `crossvit.load_pretrained(task=\"two_scale\")`", "",
                  f"Trained by: `{model.training_record['command']}`. Each head alone, each direction of the fusion "
                  "layers' cross-attention switched off (`crossvit.ablation`), AttnLRP's share of the true-class "
                  "logit on each branch's tokens (mean over 400 test images), and the pointing game on the class "
                  "evidence (object and tile; and on the object alone).", *measures_table(a)]
    for name in args.analyse:  # other trained CrossViTs, e.g. one trained with other loss weights
        run = next(r for r in results if r["run"] == name)
        model = load_checkpoint(RUNS / f"{name}.safetensors")
        a = analyse(model, images, labels, masks)
        weights = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in recipe_of(run).items())
        lines += ["", f"### Run `{name}` ({weights}), analysed as the bundled one", *measures_table(a)]
    text = "\n".join(lines) + "\n"
    (ROOT / "figures" / "two_scales.md").write_text(text)
    print(text)

    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for family, marker in zip(FAMILIES, ("o", "s", "^")):
        points = sorted((r["flops"] / 1e6, r["accuracy"], r["size"]) for (f, _), r in best.items() if f == family)
        if points:
            ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker=marker, label=family)
            for x, y, size in points:
                ax.annotate(size, (x, 100 * y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("MFLOP per image (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.axhline(50, color="grey", linestyle=":", label="one half of the label\n(texture or tile alone)")
    ax.axhline(25, color="grey", linestyle="--", label="chance")
    ax.set_title(f"Two-scale task: accuracy at matched compute ({args.steps} steps)")
    ax.legend(title="family")
    ax.grid(alpha=0.3)
    fig.savefig(ROOT / "figures" / "two_scales.png", dpi=120)


def bundle(args: argparse.Namespace) -> None:
    """Copy the best ``args.steps``-step CrossViT of size ``args.size`` (validation accuracy) to the bundled
    two-scale checkpoint, recording in its JSON the command that trained it; refuses to replace a bundled file
    unless ``--overwrite``."""
    import shutil

    from crossvit.checkpoint import BUNDLED_CHECKPOINTS, load_checkpoint
    from crossvit.utils import atomic_write

    run = best_runs(load_results(), args.steps).get(("crossvit", args.size))
    if run is None:
        raise SystemExit(f"error: no finished {args.steps}-step CrossViT run of size {args.size} in {RESULTS}; run `train` "
                         "first")
    target = BUNDLED_CHECKPOINTS["two_scale"]
    meta_target = target.with_suffix(".json")
    if not args.overwrite and (target.exists() or meta_target.exists()):
        raise SystemExit(f"error: {target} exists; pass --overwrite to replace it")
    source = RUNS / f"{run['run']}.safetensors"
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    meta = json.loads(source.with_suffix(".json").read_text())
    lrs = " ".join(f"{r['lr']:g}" for r in load_results()  # the runs best_runs chose among
                   if (r["family"], r["size"], r["steps"]) == ("crossvit", args.size, args.steps)
                   and recipe_of(r) == recipe_losses() and r["seed"] == RECIPE["seed"])
    meta["record"]["command"] = (f"python benchmarks/two_scales.py train --families crossvit --sizes {args.size} "
                                 f"--lrs {lrs} --steps {run['steps']} (best validation accuracy: lr {run['lr']:g})")
    atomic_write(meta_target, lambda tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8"))
    load_checkpoint(target)  # the hash still matches
    print(f"bundled {run['run']} (test accuracy {run['accuracy']:.4f}) as {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tr = commands.add_parser("train")
    tr.add_argument("--sizes", nargs="+", default=list(CROSSVIT_SIZES), choices=list(CROSSVIT_SIZES))
    tr.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    tr.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 2e-3])
    tr.add_argument("--steps", type=int, default=1500)
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--seeds", nargs="+", type=int, default=[RECIPE["seed"]],
                    help="seeds of the model init, the training data and the batch order, in [0, 2**32) (the "
                    "test images stay the same)")
    tr.add_argument("--head-loss-weight", type=float, default=RECIPE["head_loss_weight"],
                    help="weight of each CrossViT head's own cross-entropy (the recipe's by default; 0 trains the "
                    "averaged logits only, so the heads are free to specialise)")
    tr.add_argument("--attention-entropy-weight", type=float, default=RECIPE["attention_entropy_weight"],
                    help="weight of the CrossViT's attention-entropy term (the recipe's by default; with "
                    "--head-loss-weight 0 as well, 0 trains the paper's loss)")
    pr = commands.add_parser("probe", help="a coarse ViT on one half of the label (the texture: with and "
                             "without the anti-aliased resize)")
    pr.add_argument("--half", default="texture", choices=["texture", "arrangement"])
    pr.add_argument("--size", default="m", choices=list(CROSSVIT_SIZES))
    pr.add_argument("--steps", type=int, default=1500)
    pr.add_argument("--lr", type=float, default=1e-3)
    pr.add_argument("--augment", action="store_true",
                    help="the trainer's augmentation: each image in one of the square's 8 symmetries")
    pr.add_argument("--train-images", type=int, default=8000, help="a multiple of 2000")
    pr.add_argument("--threads", type=int, default=None)
    rep = commands.add_parser("report")
    rep.add_argument("--steps", type=int, default=1500, help="the runs of this many steps are compared")
    rep.add_argument("--analyse", nargs="*", default=[], metavar="RUN",
                     help="CrossViT runs (names in figures/two_scales.json) to analyse as the bundled model is")
    bu = commands.add_parser("bundle", help="copy the best CrossViT of one size to the bundled two-scale checkpoint")
    bu.add_argument("--size", default="m", choices=list(CROSSVIT_SIZES))
    bu.add_argument("--steps", type=int, default=1500, help="the runs of this many steps")
    bu.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if args.command == "probe" and (args.train_images < 2000 or args.train_images % 2000 or args.steps < 10):
        parser.error(f"--train-images must be a positive multiple of 2000 and --steps at least 10, "
                     f"got {args.train_images} and {args.steps}")
    if args.command == "train" and (args.steps < 1 or not all(lr > 0 and math.isfinite(lr) for lr in args.lrs)
                                    or not all(getattr(args, k) >= 0 and math.isfinite(getattr(args, k))
                                               for k in LOSS_TERMS)
                                    or not all(0 <= seed < 2**32 for seed in args.seeds)):
        parser.error(f"--steps must be >= 1, --lrs positive numbers, --head-loss-weight and "
                     f"--attention-entropy-weight numbers >= 0 and --seeds in [0, 2**32); got {args.steps}, "
                     f"{args.lrs}, {args.head_loss_weight}, {args.attention_entropy_weight} and {args.seeds}")
    if args.command == "probe" and not (args.lr > 0 and math.isfinite(args.lr)):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.command == "report":
        known = {r["run"] for r in load_results() if r["family"] == "crossvit"}
        if not set(args.analyse) <= known:
            parser.error(f"--analyse: no CrossViT run named {sorted(set(args.analyse) - known)} in {RESULTS}")
        if not best_runs(load_results(), args.steps):  # the table and the figure would be empty
            parser.error(f"no finished {args.steps}-step runs in {RESULTS}: the report would replace the committed "
                         "table and figure with empty ones; give the --steps of the runs")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.command == "train":
        train_all(args)
    elif args.command == "probe":
        probe(args)
    elif args.command == "bundle":
        bundle(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
