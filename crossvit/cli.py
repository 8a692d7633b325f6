"""The ``crossvit`` command line (also ``python -m crossvit``): explain photos, or train on the shapes task.

    crossvit explain PATHS... --model NAME (--pretrained | --checkpoint FILE [--num-classes N]) [--method M ...]
                     [--target CLASS] [--out DIR] [--overwrite] [--html] [--device auto|cpu|cuda] [--batch-size N]
                     [--quiet]
    crossvit train ...        (the same options as ``python -m crossvit.train``)

``explain`` takes image files and folders (a folder's image files, not its sub-folders) and writes, into ``DIR``:

* ``<stem>.<method>.png`` per image and method: the photo as the model sees it (resized and centre-cropped), the
  explanation over it with a colour bar, and the predicted class in the title;
* ``predictions.json``: per image its top-5 classes (index, name, probability), the explained class and its
  figures. It is rewritten (atomically) before each figure is written (atomically too), so that every figure in
  ``DIR`` is always described by it, also after a run that stopped half-way;
* with ``--html``, ``explorers.html``: the run's images (at most 32) in the attention and rollout explorers, one
  standalone page (data and code inline: it opens offline, with no kernel, and can be mailed). It holds every
  attention map of every image: about 0.6 MB per image for the bundled shapes model, about 10 MB per image for
  ``crossvit_tiny_240`` and more for the larger variants; the last line gives its size, and a note says when it
  is over 20 MB, more than most mail services take. A file of that name that no earlier run wrote is refused.

Nothing the command did not write is ever replaced. Before any work (before the model loads) it refuses, with one
``error:`` line: a ``DIR`` that is a file; a ``DIR`` that is an input folder or holds an input image (the figures
would be read back as photos next time, and a figure's name could be an input's); a ``DIR`` that holds an earlier
run (a ``predictions.json``) unless ``--overwrite`` is given; and any file (or symlink) already in ``DIR`` under a
name the run would write that the earlier run's ``predictions.json`` does not list. With ``--overwrite`` the
figures and the page the earlier ``predictions.json`` lists (plain ``<stem>.<method>.png`` names and
``explorers.html`` in ``DIR``, regular files) and that file itself are deleted just before the first new file is
written, so a run that fails before it has a result leaves them in place; nothing else in ``DIR`` is touched. An
image named twice (also through a folder or a symlink) is explained once. Deprecated method names
(``grad_rollout``) work with a warning line, as ``crossvit.explain`` takes them.

Signed methods (integrated gradients, occlusion, AttnLRP, CP-LRP) are drawn on a diverging scale centred at 0, as
in the notebooks; the others min-max scaled.

Weights: ``--pretrained`` (timm's ImageNet weights, cached after one download; for ``shapes_tiny`` the bundled
checkpoint), ``--checkpoint FILE`` with a timm state dict (``.safetensors``, ``.pth``, ``.bin``; needs ``--model``;
the number of classes is read from the file, or given with ``--num-classes``), or ``--checkpoint`` with one of this
project's checkpoints (``NAME.safetensors`` + ``NAME.json``, e.g. ``crossvit/assets/shapes_tiny.safetensors``; the
model comes from its JSON, so no ``--model``). Bad input ends with one ``error:`` line and exit status 1 (2 for
command-line usage errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .checkpoint import WEIGHTS_SUFFIX, checkpoint_paths, load_checkpoint
from .classes import class_names, top_classes
from .explain import METHODS, explain, get_method
from .model import CrossViT
from .photos import check_image_file, find_images
from .preprocessing import display_images, preprocess
from .presets import PAPER_PRESETS, SHAPES_PRESETS, create_model, list_models
from .utils import atomic_write, progress_bar
from .utils import resolve_device as _resolve_device
from .weights import file_num_classes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROG = "crossvit"
DEFAULT_METHODS: tuple[str, ...] = ("gradient_rollout",)
TOP_K = 5


class UsageError(ValueError):
    """A bad combination of command-line options (exit status 2)."""


# ----------------------------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """The ``crossvit`` parser: sub-commands ``explain`` (parsed here) and ``train`` (forwarded by :func:`main`)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Look inside a CrossViT: explain photos (explain), or train one on the synthetic "
                               "shapes task (train).")
    commands = parser.add_subparsers(dest="command", metavar="{explain,train}")
    commands.required = True
    commands.add_parser("train", help="train on the shapes task: same options as python -m crossvit.train",
                        add_help=False)
    ex = commands.add_parser(
        "explain", help="explain what a model predicts on photos",
        description="Explain photos: writes DIR/<stem>.<method>.png per image and method, and DIR/predictions.json "
                    "(top-5 classes per image). Put PATHS first: --method takes every word after it.")
    ex.add_argument("paths", nargs="+", metavar="PATHS", help="image files and/or folders of images")
    ex.add_argument("--model", default=None,
                    help=f"model name ({', '.join(n for n in list_models() if n != 'seed')}); may be omitted "
                         "when --checkpoint is one of this project's checkpoints")
    weights = ex.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true",
                         help="the model's published weights: timm's ImageNet weights (Hugging Face cache, or "
                              "downloaded once), the bundled checkpoint for shapes_tiny")
    weights.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                         help="a timm state dict (.safetensors/.pth/.bin, or model_best.pth.tar from timm's "
                              "training script) or a crossvit checkpoint (NAME.safetensors + NAME.json)")
    ex.add_argument("--num-classes", type=int, default=None, metavar="N",
                    help="classes of the model a timm --checkpoint belongs to (default: read from the file)")
    ex.add_argument("--method", nargs="+", default=list(DEFAULT_METHODS), metavar="M",
                    help=f"explanation method(s), default {' '.join(DEFAULT_METHODS)}: {', '.join(METHODS)}")
    ex.add_argument("--target", default=None, metavar="CLASS",
                    help="class to explain, as an index or a name (default: each image's predicted class)")
    ex.add_argument("--out", type=Path, default=Path("explanations"), metavar="DIR",
                    help="output folder, created if needed (default: ./explanations)")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace an earlier run in --out (its figures and predictions.json)")
    ex.add_argument("--html", action="store_true",
                    help=f"also write DIR/{EXPLORERS_PAGE}: the images (at most {MAX_PAGE_IMAGES}) in the attention and "
                         "rollout explorers, one standalone page that works offline")
    ex.add_argument("--device", default="auto", metavar="{auto,cpu,cuda}",
                    help="'auto' (the default): CUDA when available, else the CPU")
    ex.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per forward pass (default: 8)")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# Pieces of `explain`


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cuda`` must be available."""
    if name not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}")
    return _resolve_device(name, "--device")


def is_crossvit_checkpoint(path: Path) -> bool:
    """Whether ``path`` is one of this project's checkpoints (a .json, or a .safetensors with its .json beside it,
    or a folder holding model.safetensors + model.json) rather than a bare timm state dict."""
    if path.is_dir() or path.suffix == ".json":
        return True
    return path.suffix == WEIGHTS_SUFFIX and checkpoint_paths(path)[1].is_file()


def _is_our_state_dict(path: Path) -> bool:
    """Whether a .safetensors file holds this package's parameter names (a crossvit checkpoint's weights)."""
    if path.suffix != WEIGHTS_SUFFIX or not path.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:  # the header only
            return "embed.small.cls_token" in set(f.keys())
    except Exception:  # noqa: BLE001 - unreadable files are reported by the loader that follows
        return False


def load_model(model_name: str | None, pretrained: bool, checkpoint: Path | None, num_classes: int | None = None
               ) -> tuple[CrossViT, str]:
    """The model the options ask for, and a one-line description of its weights."""
    if num_classes is not None and (checkpoint is None or num_classes < 1):
        raise UsageError("--num-classes N (N >= 1) goes with a timm --checkpoint FILE: timm's ImageNet weights have "
                         "1000 classes and a crossvit checkpoint says its own number in its JSON")
    if checkpoint is not None:
        if not checkpoint.exists():
            raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
        if is_crossvit_checkpoint(checkpoint):
            if model_name is not None or num_classes is not None:
                raise UsageError(f"{checkpoint} is a crossvit checkpoint: its JSON says which model it is, so leave "
                                 "out --model and --num-classes")
            return load_checkpoint(checkpoint), f"crossvit checkpoint {checkpoint}"
        if _is_our_state_dict(checkpoint):
            raise ValueError(f"{checkpoint} holds a crossvit checkpoint's weights, but its JSON sidecar "
                             f"{checkpoint_paths(checkpoint)[1]} is missing (a crossvit checkpoint is NAME.safetensors "
                             "plus NAME.json, as save_checkpoint writes them); put the .json back beside it")
        if model_name is None:
            raise UsageError(f"{checkpoint} is a timm state dict: say which model it belongs to with --model")
        if model_name not in PAPER_PRESETS:
            raise UsageError(f"--model {model_name} is not a timm CrossViT, so a timm state dict cannot be loaded into "
                             f"it; name the timm variant the weights belong to (--model crossvit_tiny_240, ...), or "
                             "give a crossvit checkpoint (NAME.safetensors + NAME.json) without --model")
        if num_classes is None:
            num_classes = file_num_classes(checkpoint)
        model = create_model(model_name, checkpoint_path=checkpoint, num_classes=num_classes)
        return model, f"{model_name} ({num_classes} classes) weights from {checkpoint}"
    if model_name is None:
        raise UsageError("give --model NAME with --pretrained, or --checkpoint FILE")
    published = "this project's bundled checkpoint" if model_name in SHAPES_PRESETS else "timm's ImageNet weights"
    if not pretrained:
        raise UsageError(f"say which weights to explain: --pretrained ({published} for {model_name}) or --checkpoint "
                         "FILE")
    return create_model(model_name, pretrained=True).eval(), f"{model_name} with {published}"


def resolve_target(target: str | None, names: Sequence[str]) -> int | None:
    """A class index from ``--target``: an index, a full class name, or one of its comma-separated synonyms
    (``tabby`` for ``tabby, tabby cat``), case-insensitive."""
    if target is None:
        return None
    if target.lstrip("-").isdigit():
        index = int(target)
        if not 0 <= index < len(names):
            raise ValueError(f"--target {index} is out of range: this model has {len(names)} classes (0..{len(names) - 1})")
        return index
    wanted = target.strip().lower()
    exact = [k for k, name in enumerate(names) if name.lower() == wanted]
    if exact:
        return exact[0]
    matches = [k for k, name in enumerate(names) if wanted in (part.strip().lower() for part in name.split(","))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"--target {target!r} names several classes: "
                         + "; ".join(f"{k} ({names[k]})" for k in matches))
    raise ValueError(f"--target {target!r} is not a class name of this model (e.g. {names[0]!r}); give a class "
                     "index or a name")


def output_stem(path: Path) -> str:
    """The stem an image's figures are named by: the file's stem, with leading dots dropped (a figure of
    ``.hidden.png`` would itself be hidden) and backslashes made ``_``, so every name the command writes is one
    that a later ``--overwrite`` recognises as its own (``image`` if nothing is left)."""
    return path.stem.lstrip(".").replace("\\", "_") or "image"


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """:func:`output_stem` of each file, made unique by a numeric suffix where two images share one (``cat``,
    ``cat_1``, ...)."""
    seen: dict[str, int] = {}
    taken = {output_stem(p) for p in paths}
    out = []
    for path in paths:
        stem = output_stem(path)
        if stem in seen:
            k = seen[stem]
            while f"{stem}_{k}" in taken:
                k += 1
            seen[stem] = k + 1
            stem = f"{stem}_{k}"
            taken.add(stem)
        else:
            seen[stem] = 1
        out.append(stem)
    return out


def explanation_figure(image: torch.Tensor, heat: torch.Tensor, method: str, title: str) -> Figure:
    """The photo as the model sees it, and ``heat`` (H, W) over it with a colour bar; ``title`` on top. Signed
    maps (:func:`crossvit.plotting.is_signed`) are drawn on a diverging scale centred at 0, others min-max scaled."""
    from matplotlib.figure import Figure  # not pyplot: no backend is chosen, no figure is kept by pyplot

    from . import plotting

    fig = Figure(figsize=(7.6, 3.9), layout="constrained")
    ax_photo, ax_map = fig.subplots(1, 2)
    plotting.show_image(ax_photo, image, "input, as the model sees it")
    signed = plotting.is_signed(method, heat)
    shown = plotting.overlay_heatmap(ax_map, image, heat, title=method, signed=signed)
    label = ("signed relevance (0 = none; scaled by the 99th percentile of |value|)" if signed
             else "relevance (min-max scaled)")
    fig.colorbar(shown, ax=ax_map, fraction=0.046, pad=0.02, label=label)
    fig.suptitle(title, fontsize=10)
    return fig


PREDICTIONS = "predictions.json"
EXPLORERS_PAGE = "explorers.html"
MAX_PAGE_IMAGES = 32  # the explorers' own limit (AttentionExplorer.MAX_IMAGES)
MAIL_LIMIT_BYTES = 20_000_000  # a page larger than this gets a note: most mail services refuse it


def resolve_methods(names: Sequence[str]) -> list[str]:
    """The registry's names of the methods asked for, repeats dropped, in order; a deprecated name works with a
    warning line (as ``explain`` takes it with a FutureWarning), an unknown one is a UsageError."""
    chosen, unknown = [], []
    for name in names:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                chosen.append(get_method(name).name)
            except ValueError:
                unknown.append(name)
        for warning in caught:
            print(f"{PROG} explain: warning: {warning.message}", file=sys.stderr)
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(map(repr, unknown))}; valid methods: {', '.join(METHODS)}")
    return list(dict.fromkeys(chosen))


def _is_figure_name(name: object) -> bool:
    """A plain ``<stem>.<method>.png`` name, as this command writes them (no folder, not hidden)."""
    if not isinstance(name, str) or not name or name != Path(name).name or name.startswith(".") or "\\" in name:
        return False
    parts = name.rsplit(".", 2)
    return len(parts) == 3 and parts[0] != "" and parts[2] == "png" and parts[1] in METHODS


def _earlier_figures(previous: Path) -> set[str]:
    """The figure names an earlier run's ``predictions.json`` lists; a ValueError unless it is a regular file
    this command could have written, listing only plain figure names."""
    if previous.is_symlink() or not previous.is_file():
        raise ValueError(f"{previous} is not a predictions file this command wrote (not a regular file); move it "
                         "away first")
    try:
        earlier = json.loads(previous.read_text(encoding="utf-8"))
        listed = [name for image in earlier.get("images", []) for name in image.get("figures", {}).values()]
        listed += [earlier["html"]] if "html" in earlier else []  # the explorers page of a run with --html
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"{previous} is not a predictions file this command wrote; move it away first") from None
    strange = [name for name in listed if not _is_figure_name(name) and name != EXPLORERS_PAGE]
    if strange:
        raise ValueError(f"{previous} lists {strange[0]!r}, which is not a figure this command writes; it is not a "
                         "predictions file this command wrote: move it away first")
    return set(listed)


def check_output_folder(out: Path, inputs: Sequence[str | Path], images: Sequence[Path], planned: Sequence[str],
                        overwrite: bool) -> list[Path]:
    """Refuse (before any work) an ``out`` that is a file, an input folder or the folder of an input image, that
    holds an earlier run (unless ``overwrite``), or in which a file the run would write (``planned`` names) already
    exists without an earlier run's ``predictions.json`` listing it. Changes nothing; returns the files of the
    earlier run to delete before writing (with ``overwrite``)."""
    if os.path.lexists(out) and not out.is_dir():  # a file, a FIFO, a dangling symlink
        raise UsageError(f"--out {out} is a file, not a folder; choose a folder (it is created if needed)")
    ancestor = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not ancestor.is_dir():
        raise UsageError(f"--out {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write into {ancestor} (permission denied)")
    resolved = out.resolve()
    for path in map(Path, inputs):
        if path.is_dir() and path.resolve() == resolved:
            raise UsageError(f"--out {out} is one of the input folders: its figures would be read as photos by the "
                             "next run; choose another --out")
    inside = [image for image in images if image.resolve().parent == resolved]
    if inside:
        raise UsageError(f"--out {out} holds input image(s) ({inside[0].name}, ...): the figures would be read as "
                         "photos by the next run and could replace an input; choose another --out")
    listed: set[str] = set()
    previous = out / PREDICTIONS
    if os.path.lexists(previous):
        if not overwrite:
            raise UsageError(f"{out} holds an earlier run ({PREDICTIONS}); choose another --out, or pass --overwrite "
                             "to replace that run's figures and predictions")
        listed = _earlier_figures(previous)
    for name in planned:
        if name == PREDICTIONS:  # checked above: an earlier run's, replaced only with --overwrite
            continue
        target = out / name
        if os.path.lexists(target) and (name not in listed or target.is_symlink() or not target.is_file()):
            raise UsageError(f"{target} exists and no earlier run of this command wrote it (its "
                             f"{PREDICTIONS} does not list it): it would be replaced; move it away or choose another "
                             "--out")
    earlier = [out / name for name in sorted(listed) if os.path.lexists(out / name)]
    return earlier + [previous] if os.path.lexists(previous) else earlier


def clear_earlier_run(files: Sequence[Path]) -> None:
    """Delete the earlier run's files that :func:`check_output_folder` returned, if they are still regular files
    (a symlink put there since is left alone)."""
    for path in files:
        if path.is_file() and not path.is_symlink():
            path.unlink()


def _explain_command(args: argparse.Namespace) -> int:
    methods = resolve_methods(args.method)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.model is not None and args.model not in list_models():
        raise ValueError(f"unknown model {args.model!r}; available: {', '.join(list_models())}")
    device = resolve_device(args.device)
    paths = find_images(args.paths)  # a file named twice is listed once
    for path in paths:  # every file must be an image before any work starts (reads the headers only)
        check_image_file(path)
    stems = unique_stems(paths)
    if args.html and len(paths) > MAX_PAGE_IMAGES:
        raise UsageError(f"--html puts every image's attention maps into one page, so it takes at most "
                         f"{MAX_PAGE_IMAGES} images; got {len(paths)}. Explain fewer images, or leave out --html")
    planned = [f"{stem}.{method}.png" for stem in stems for method in methods] + [PREDICTIONS]
    planned += [EXPLORERS_PAGE] if args.html else []
    earlier_run = check_output_folder(args.out, args.paths, paths, planned, args.overwrite)

    model, weights = load_model(args.model, args.pretrained, args.checkpoint, args.num_classes)
    model = model.to(device).eval()
    names = class_names(model)
    target = resolve_target(args.target, names)
    args.out.mkdir(parents=True, exist_ok=True)

    results: list[dict[str, Any]] = []
    summary = {"weights": weights, "methods": methods, "device": str(device),
               "target": None if target is None else {"index": target, "name": names[target]}, "images": results}
    if args.html:
        summary["html"] = EXPLORERS_PAGE

    def write_predictions() -> None:  # after every batch: the figures on disk are always the ones it lists
        if earlier_run:  # the earlier run's files go only now, just before the first new file: a run that fails
            clear_earlier_run(earlier_run)  # before it has a result leaves them in place
            earlier_run.clear()
        text = json.dumps(summary, indent=1) + "\n"
        atomic_write(args.out / PREDICTIONS, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    # one step per map made (an image with one method): slow methods (occlusion: ~20 s an image on a 240 px model)
    # move the bar once per method and batch, and its label says which method is running
    bar = progress_bar(total=len(paths) * len(methods), unit="map", desc="explain", progress=not args.quiet,
                       file=sys.stderr)
    for start in range(0, len(paths), args.batch_size):
        chunk = paths[start:start + args.batch_size]
        batch = preprocess(model, chunk)  # (B, 3, H, W) on the model's device
        with torch.no_grad():
            logits = model(batch)
        top = top_classes(model, logits, TOP_K)
        explained = torch.full((len(chunk),), target, device=device) if target is not None else logits.argmax(1)
        shown = display_images(model, batch)  # (B, 3, H, W) in [0, 1], CPU
        maps = {}
        for method in methods:
            bar.set_postfix_str(method)
            maps[method] = explain(model, batch, method, target=explained).cpu()
            bar.update(len(chunk))
        for i, path in enumerate(chunk):
            stem, best, k = stems[start + i], top[i][0], int(explained[i])
            title = f"{path.name}: predicted {best.name} ({best.probability:.1%})"
            if k != best.index:
                title += f"; explained: {names[k]}"
            figures: dict[str, str] = {}
            results.append({
                "path": str(path), "stem": stem,
                "top5": [{"index": p.index, "name": p.name, "probability": round(p.probability, 6)} for p in top[i]],
                "explained_class": {"index": k, "name": names[k]}, "figures": figures,
            })
            for method in methods:
                fig = explanation_figure(shown[i], maps[method][i], method, title)
                figures[method] = f"{stem}.{method}.png"
                write_predictions()  # listed before it exists: no figure on disk is ever left undescribed
                atomic_write(args.out / figures[method],
                             lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110, facecolor="white"))
    bar.close()
    write_predictions()
    page = ""
    if args.html:
        write_explorers_page(model, paths, target, args.out / EXPLORERS_PAGE, title=weights, progress=not args.quiet)
        size = (args.out / EXPLORERS_PAGE).stat().st_size
        page = f", {EXPLORERS_PAGE} ({size / 1e6:.1f} MB)"
        if size > MAIL_LIMIT_BYTES:
            print(f"note: {EXPLORERS_PAGE} is {size / 1e6:.1f} MB, more than most mail services take "
                  f"({MAIL_LIMIT_BYTES / 1e6:.0f} MB): every attention map of every image is inside it. Put fewer "
                  "images on a page (run the command on a few at a time) to share it", file=sys.stderr)
    print(f"{len(results)} image(s), {len(results) * len(methods)} figure(s){page} and {PREDICTIONS} in {args.out}")
    return 0


def write_explorers_page(model: CrossViT, paths: Sequence[Path], target: int | None, page: Path, title: str,
                         progress: bool = False) -> None:
    """Both explorers of ``paths`` in one standalone page at ``page`` (listed in predictions.json beforehand; an
    earlier run's page was removed by clear_earlier_run, and any other file there is never replaced)."""
    from .widgets import RolloutExplorer, attention_explorer, rollout_explorer, write_html

    images = preprocess(model, list(paths))
    names = class_names(model)
    classes = None if target is None or model.num_classes <= RolloutExplorer.ALL_CLASSES_UP_TO else [target]
    files = [path.name for path in paths]  # what the captions call each image; paths where two names collide
    files = files if len(set(files)) == len(files) else [str(path) for path in paths]
    explorers = [attention_explorer(model, images, class_names=names, image_names=files)]
    try:
        explorers.append(rollout_explorer(model, images, class_names=names, classes=classes, progress=progress,
                                          image_names=files))
        write_html(page, explorers, title=f"{len(paths)} image(s): {title}")
    finally:  # a widget lives in ipywidgets' registry until it is closed; the page has all it needs
        for explorer in explorers:
            explorer.close()


# ----------------------------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 bad input, 2 usage error, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":  # forward everything after `train` to the trainer's own parser
        from .train import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _explain_command(args)
    except UsageError as err:
        print(f"{PROG} explain: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, TypeError, RuntimeError, ImportError, OSError) as err:
        print(f"{PROG} explain: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} explain: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "check_output_folder", "explanation_figure", "main", "resolve_methods", "resolve_target",
           "unique_stems"]
