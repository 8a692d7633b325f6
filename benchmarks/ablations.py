"""Why does CrossViT have two branches? Ablations of the bundled model, on held-out shapes images.

    .venv/bin/python benchmarks/ablations.py [--images 2000] [--steps N] [--skip-training | --keep-trained] [--threads 2]
    .venv/bin/python benchmarks/ablations.py --replot     # redraw the figure from figures/ablations.json

1. **Inference ablations of the bundled model** (no retraining): accuracy of the model's logits, of each branch head
   alone, and with the cross-attention output of the fusion layers zeroed (all fusion layers, or only the direction
   in which one branch's CLS reads the other branch's patches). Zeroing keeps the CLS token's own path: in the paper
   flavour a fusion computes ``revert(proj(cls) + attn(...))``; the ablation drops ``attn(...)``.
2. **Single-branch baselines trained with the same budget**: a ViT made of only the small branch (12 px patches on
   the 96 px image) or only the large branch (16 px patches on the 80 px resize), with that branch's width, heads
   and all of its layers (the sum over the multi-scale blocks), trained by ``crossvit.train.train`` with the bundled
   model's training settings (steps, batch, schedule, data, seed). The CrossViT row repeats the bundled model's
   own record. Training runs take a few minutes each on 2 CPU cores; ``--skip-training`` leaves them out;
   ``--keep-trained`` keeps those of the committed ``ablations.json`` (and says so in the table).

Writes ``figures/ablations.md`` (a table) and ``figures/ablations.png``; the data seed lies above every seed the
trainer and the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import crossvit  # noqa: E402
from crossvit import data  # noqa: E402
from crossvit.ablation import SingleBranchViT, cross_attention_ablations, head_accuracies  # noqa: E402
from crossvit.data import UNUSED_SEED_BASE  # noqa: E402
from crossvit.model import CrossViT  # noqa: E402
from crossvit.train import TrainConfig, train  # noqa: E402

DEFAULT_SEED = UNUSED_SEED_BASE + 3


def _named(scores: dict[str, float]) -> dict[str, float]:
    """:func:`crossvit.ablation.head_accuracies`' scores under this table's names."""
    return {"model": scores["model"], "small head alone": scores["small head"],
            "large head alone": scores["large head"]}


def accuracies(model, images, labels) -> dict[str, float]:
    return _named(head_accuracies(model, images, labels))


def inference_ablations(model: CrossViT, images: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    scores = cross_attention_ablations(model, images, labels)
    rows = []
    for queries, what in (((), "bundled CrossViT"), (("small", "large"), "all fusion cross-attention zeroed"),
                          (("small",), "small CLS reading large patches zeroed"),
                          (("large",), "large CLS reading small patches zeroed")):
        rows += [{"ablation": f"{what}: {k}", "accuracy": v} for k, v in _named(scores[queries]).items()]
    return rows


def trained_baselines(model: CrossViT, images: torch.Tensor, labels: torch.Tensor, steps: int | None) -> list[dict]:
    record = model.training_record
    settings = dict(record["train_config"])
    settings["preset"] = crossvit.config_from_dict(settings["preset"]) if isinstance(settings["preset"], dict) \
        else settings["preset"]
    if steps is not None:
        settings["steps"] = steps
    config = TrainConfig(**settings)
    rows = [{"ablation": f"CrossViT (bundled, {record['steps']} steps)", "accuracy": accuracies(
        model, images, labels)["model"], "parameters": crossvit.count_parameters(model),
        "train_s": record["wall_time_s"], "loss": record["held_out_loss"],
        "curve": [(h["step"], h["accuracy"], h["loss"]) for h in record["eval_history"]]}]
    for branch in ("small", "large"):
        baseline = SingleBranchViT(model.arch, branch)
        trained, run = train(config, model=baseline, progress=True)
        with torch.no_grad():
            predicted = torch.cat([trained(images[i:i + 250]).argmax(1) for i in range(0, len(labels), 250)])
        rows.append({"ablation": f"{branch} branch only ({config.steps} steps)",
                     "accuracy": (predicted == labels).float().mean().item(),
                     "parameters": crossvit.count_parameters(trained), "train_s": run["wall_time_s"],
                     "loss": run["held_out_loss"],
                     "curve": [(h["step"], h["accuracy"], h["loss"]) for h in run["eval_history"]]})
    return rows


def write_outputs(inference: list[dict], trained: list[dict], out: Path, header: str, trained_note: str = "") -> str:
    lines = [header, "", "| inference ablation of the bundled model | accuracy |", "|---|---:|"]
    lines += [f"| {r['ablation']} | {r['accuracy']:.4f} |" for r in inference]
    if trained:
        steps = [s for s, _, _ in trained[0]["curve"]]
        lines += ["", "| model, same training budget | held-out accuracy | held-out loss (trainer's set) | "
                  + " | ".join(f"accuracy at step {s}" for s in steps) + " | parameters | training s |",
                  "|---|---:|---:|" + "---:|" * len(steps) + "---:|---:|"]
        lines += [f"| {r['ablation']} | {r['accuracy']:.4f} | {r['loss']:.4f} | "
                  + " | ".join(f"{a:.4f}" for _, a, _ in r["curve"]) + f" | {r['parameters']:,} | {r['train_s']:.0f} |"
                  for r in trained]
    text = "\n".join(lines) + "\n"
    (out / "ablations.md").write_text(text)
    record = {"inference": inference, "trained": trained, **({"trained_note": trained_note} if trained_note else {})}
    (out / "ablations.json").write_text(json.dumps(record, indent=1) + "\n")

    plot(inference, trained, out / "ablations.png")
    return text


def plot(inference: list[dict], trained: list[dict], path: Path) -> None:
    """The figure of the two tables (constrained layout: the long ablation names are never clipped)."""
    fig, axes = plt.subplots(1, 3 if trained else 1, figsize=(18 if trained else 8, 4.6), squeeze=False,
                             layout="constrained", width_ratios=[1.6, 1, 1] if trained else None)
    ax = axes[0, 0]
    names = [r["ablation"] for r in inference]
    ax.barh(names, [r["accuracy"] for r in inference], color=["tab:blue" if "bundled" in n else "tab:orange"
                                                              for n in names])
    ax.axvline(1 / data.NUM_CLASSES, color="0.4", linestyle=":", label="chance")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("held-out accuracy")
    ax.set_title("bundled model, parts switched off at inference", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    if trained:
        for ax, k, label in ((axes[0, 1], 1, "held-out accuracy"), (axes[0, 2], 2, "held-out loss (log scale)")):
            for r in trained:
                steps = [point[0] for point in r["curve"]]
                ax.plot(steps, [point[k] for point in r["curve"]], marker="o", label=r["ablation"])
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
            ax.set_title("same data, schedule and steps", fontsize=10)
            ax.legend(fontsize=8)
        axes[0, 2].set_yscale("log")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="data seed of the held-out images")
    parser.add_argument("--steps", type=int, default=None, help="training steps of the baselines (default: the "
                        "bundled model's own)")
    parser.add_argument("--skip-training", action="store_true", help="only the inference ablations")
    parser.add_argument("--keep-trained", action="store_true",
                        help="measure the inference ablations and keep the trained baselines of the ablations.json in "
                             "--out as they are (their table then says so)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--out", default=os.environ.get("CROSSVIT_FIGURES_DIR", "figures"))
    parser.add_argument("--replot", action="store_true", help="redraw ablations.png from the ablations.json in --out "
                        "(nothing is measured)")
    args = parser.parse_args()
    if args.keep_trained and args.skip_training:
        parser.error("--keep-trained and --skip-training exclude each other")
    if args.keep_trained and not (Path(args.out) / "ablations.json").is_file():
        parser.error(f"--keep-trained: no {Path(args.out) / 'ablations.json'} to keep the trained baselines of")
    if args.replot:
        recorded = json.loads((Path(args.out) / "ablations.json").read_text())
        plot(recorded["inference"], recorded["trained"], Path(args.out) / "ablations.png")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    model = crossvit.load_pretrained()
    images, labels, _ = data.make_shapes(args.images, seed=args.seed, image_size=model.image_size)
    inference = inference_ablations(model, images, labels)
    out = Path(args.out)
    kept = ""
    if args.keep_trained:
        recorded = json.loads((out / "ablations.json").read_text())
        trained = recorded["trained"]
        kept = recorded.get("trained_note") or (
            "The training table is kept from an earlier run (`--keep-trained`): its held-out accuracies and curves "
            "were measured on the held-out images drawn before the seed fix of reliability round three; run "
            "`python benchmarks/ablations.py` to measure them again.")
    else:
        trained = [] if args.skip_training else trained_baselines(model, images, labels, args.steps)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/ablations.py" + (f" --images {args.images}" if args.images != 2000 else "") + \
        (f" --steps {args.steps}" if args.steps else "") + (" --skip-training" if args.skip_training else "") + \
        (" --keep-trained" if args.keep_trained else "")
    header = (f"{args.images} held-out shapes images (data seed {args.seed}); command: `{command}`"
              + (f"\n\n{kept}" if kept else ""))
    print(write_outputs(inference, trained, out, header, kept))


if __name__ == "__main__":
    main()
