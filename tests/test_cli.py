"""The command line: ``crossvit explain`` on a folder of real photos writes its figures and predictions (checked
against timm's own predictions on the same files); bad input ends with one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import crossvit
from crossvit import cli, data, photos

timm = pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parent.parent
NAME = "crossvit_tiny_240"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def timm_model_and_file(save_timm_model):
    return save_timm_model(NAME, seed=1)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """The four sample photos as JPEG and PNG files, a text file (skipped in folders), and a sub-folder."""
    folder = tmp_path_factory.mktemp("photos")
    for k, name in enumerate(photos.SAMPLE_PHOTOS):
        Image.fromarray(photos.sample_photo(name)).save(folder / f"{name}.{'jpg' if k % 2 else 'png'}")
    (folder / "README.txt").write_text("not a photo")
    (folder / "more").mkdir()
    return folder


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # runs the CLI on timm's crossvit_9_240 over a photo folder: seconds on 2 cores, so `make test` runs it, not test-fast
def test_explain_a_folder_of_photos(capsys, tmp_path, timm_model_and_file, photo_folder):
    timm_model, weights_file = timm_model_and_file
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "explain", photo_folder, "--model", NAME, "--checkpoint", weights_file,
                             "--method", "gradient_rollout", "joint_rollout", "--out", out_dir, "--batch-size", "3",
                             "--device", "cpu")
    assert code == 0, err
    stems = sorted(photos.SAMPLE_PHOTOS)
    expected = {f"{s}.{m}.png" for s in stems for m in ("gradient_rollout", "joint_rollout")} | {"predictions.json"}
    assert {p.name for p in out_dir.iterdir()} == expected
    for name in expected - {"predictions.json"}:
        content = (out_dir / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 20_000, name
    with Image.open(out_dir / "chelsea.gradient_rollout.png") as figure:  # photo and overlay side by side
        assert figure.width > 1.6 * figure.height

    result = json.loads((out_dir / "predictions.json").read_text())
    assert [Path(r["path"]).stem for r in result["images"]] == stems
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=timm_model))
    names = crossvit.class_names(crossvit.create_model(NAME))
    for record in result["images"]:
        with Image.open(record["path"]) as image:
            with torch.no_grad():
                probabilities = timm_model(transform(image.convert("RGB"))[None]).softmax(1)[0]
        p, k = probabilities.topk(5)
        assert [e["index"] for e in record["top5"]] == k.tolist()
        assert [e["name"] for e in record["top5"]] == [names[i] for i in k.tolist()]
        assert [e["probability"] for e in record["top5"]] == pytest.approx(p.tolist(), abs=1e-5)
        assert record["explained_class"]["index"] == k[0].item()
        assert record["figures"] == {m: f"{record['stem']}.{m}.png" for m in ("gradient_rollout", "joint_rollout")}
    assert "4 image(s), 8 figure(s)" in out


def test_explain_with_this_projects_checkpoint_and_a_target(capsys, tmp_path, photo_folder):
    bundled = crossvit.checkpoint.BUNDLED_CHECKPOINT
    files = [photo_folder / "chelsea.png", photo_folder / "coffee.jpg"]
    code, _, err = run_cli(capsys, "explain", *files, "--checkpoint", bundled, "--target", "cool striped",
                           "--method", "small_rollout", "--out", tmp_path, "--quiet")
    assert code == 0, err
    result = json.loads((tmp_path / "predictions.json").read_text())
    model = crossvit.load_pretrained()
    with torch.no_grad():
        probabilities = model(crossvit.preprocess(model, files)).softmax(1)
    for record, row in zip(result["images"], probabilities):
        assert [e["name"] for e in record["top5"]][0] == data.CLASS_NAMES[int(row.argmax())]
        assert len(record["top5"]) == data.NUM_CLASSES
        assert record["explained_class"] == {"index": 2, "name": "cool striped"}
    assert (tmp_path / "chelsea.small_rollout.png").is_file()


def test_the_bundled_models_weights_are_named_as_what_they_are(capsys, tmp_path, photo_folder):
    code, _, err = run_cli(capsys, "explain", photo_folder / "coffee.jpg", "--model", "shapes_tiny", "--pretrained",
                           "--method", "small_rollout", "--out", tmp_path, "--quiet")
    assert code == 0, err
    weights = json.loads((tmp_path / "predictions.json").read_text())["weights"]
    assert "bundled checkpoint" in weights and "ImageNet" not in weights, weights
    code, _, err = run_cli(capsys, "explain", photo_folder / "coffee.jpg", "--model", "shapes_tiny",
                           "--out", tmp_path / "again")
    assert code == 2 and "bundled checkpoint" in err and "ImageNet" not in err, err


def test_same_stems_in_two_folders_get_distinct_files(capsys, tmp_path, photo_folder):
    other = tmp_path / "other"
    other.mkdir()
    (other / "chelsea.jpg").write_bytes((photo_folder / "chelsea.png").read_bytes())  # PNG bytes: PIL sniffs
    code, _, err = run_cli(capsys, "explain", photo_folder / "chelsea.png", other, "--checkpoint",
                           crossvit.checkpoint.BUNDLED_CHECKPOINT, "--method", "random", "--out", tmp_path / "o")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["chelsea.random.png", "chelsea_1.random.png"]


def test_unique_stems_and_target_names():
    paths = [Path("a/x.jpg"), Path("b/x.png"), Path("x_1.jpg"), Path("y.png")]
    assert cli.unique_stems(paths) == ["x", "x_2", "x_1", "y"]
    names = crossvit.class_names(crossvit.create_model(NAME))
    assert cli.resolve_target("tabby", names) == 281
    assert cli.resolve_target("Tabby, tabby cat", names) == 281
    assert cli.resolve_target("285", names) == 285
    assert cli.resolve_target(None, names) is None
    with pytest.raises(ValueError, match="out of range"):
        cli.resolve_target("1000", names)
    with pytest.raises(ValueError, match="not a class name"):
        cli.resolve_target("unicorn", names)


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["{photos}/missing.jpg", "--model", NAME, "--checkpoint", "{weights}"], 1, "missing.jpg: no such file"),
        (["{photos}/README.txt", "--model", NAME, "--checkpoint", "{weights}"], 1, "README.txt: not an image"),
        (["{photos}/more"], 1, "more: folder has no image files"),
        (["{photos}", "--model", "crossvit_99", "--checkpoint", "{weights}"], 1, "unknown model 'crossvit_99'"),
        (["{photos}", "--model", NAME, "--checkpoint", "{weights}", "--method", "magic"], 2,
         "unknown method(s) 'magic'"),
        (["{photos}", "--model", "crossvit_9_240", "--checkpoint", "{weights}"], 1, "do not fit"),
        (["{photos}", "--checkpoint", "{weights}"], 2, "say which model it belongs to with --model"),
        (["{photos}", "--model", NAME], 2, "--pretrained"),
        (["{photos}", "--model", NAME, "--pretrained"], 1, "not in the Hugging Face cache"),
        (["{photos}", "--checkpoint", "{bundled}", "--model", NAME], 2, "leave out --model"),
        (["{photos}", "--checkpoint", "{bundled}", "--target", "99"], 1, "out of range"),
        (["{photos}", "--checkpoint", "{photos}/README.txt", "--model", NAME], 1, "unknown weights format"),
        (["{photos}", "--checkpoint", "{bundled}", "--batch-size", "0"], 2, "--batch-size must be >= 1"),
        (["{photos}", "--checkpoint", "{bundled}", "--device", "tpu"], 2, "--device must be auto, cpu or cuda"),
    ],
    ids=["missing", "not-image", "empty-folder", "unknown-model", "unknown-method", "wrong-variant",
         "timm-file-no-model", "no-weights", "pretrained-offline", "model-with-own-checkpoint", "bad-target",
         "bad-checkpoint", "batch-size", "device"],
)
def test_bad_input_gets_one_clear_line(capsys, tmp_path, timm_model_and_file, photo_folder, argv, code, words,
                                       monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    values = {"photos": photo_folder, "weights": timm_model_and_file[1],
              "bundled": crossvit.checkpoint.BUNDLED_CHECKPOINT}
    got, out, err = run_cli(capsys, "explain", *(a.format(**values) for a in argv), "--out", tmp_path / "o")
    assert got == code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossvit explain: error: "), err
    assert words in lines[0]
    assert "Traceback" not in err + out
    assert not (tmp_path / "o" / "predictions.json").exists()


@pytest.mark.slow  # subprocesses that import torch and train: seconds on 2 cores, so `make test` runs it, not test-fast
def test_python_dash_m_crossvit_runs_and_forwards_train(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    bad = subprocess.run([sys.executable, "-m", "crossvit", "explain", str(tmp_path / "nope.png"), "--checkpoint",
                          str(crossvit.checkpoint.BUNDLED_CHECKPOINT)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "nope.png" in bad.stderr
    assert "Traceback" not in bad.stderr
    trained = subprocess.run([sys.executable, "-m", "crossvit", "train", "--steps", "0"], capture_output=True,
                             text=True, env=env, timeout=300)
    assert trained.returncode == 2 and "TrainConfig.steps must be >= 1" in trained.stderr  # crossvit.train's check


def test_console_script_is_declared():
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"crossvit": "crossvit.cli:main"}
    module, function = scripts["crossvit"].split(":")
    assert getattr(__import__(module, fromlist=[function]), function) is cli.main
