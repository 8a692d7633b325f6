"""``crossvit explain ... --html``: one standalone page per run holding both explorers of the run's images, never
written over a file the command did not write, nor over an input; an earlier run's page goes with --overwrite."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import crossvit
from crossvit import cli, data
from crossvit.widgets.html import HTML_SUFFIXES

BUNDLED = crossvit.checkpoint.BUNDLED_CHECKPOINT


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    images, _, _ = data.make_shapes(3, seed=data.UNUSED_SEED_BASE + 5)
    for k, image in enumerate(images):
        Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / f"shape{k}.png")
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # three runs, each building both explorers
def test_html_writes_one_page_per_run_and_never_a_readers_file(capsys, tmp_path, shapes_folder):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "explain", shapes_folder, "--checkpoint", BUNDLED, "--method", "random",
                            "--out", out, "--html", "--quiet")
    assert code == 0, err
    page = out / cli.EXPLORERS_PAGE
    assert page.suffix in HTML_SUFFIXES and "explorers.html" in stdout
    text = page.read_text(encoding="utf-8")
    assert text.count('class="crossvit-widget"') == 2 and "default-src 'none'" in text
    for name in ("shape0", "shape1", "shape2"):  # three images in the explorers' packets
        assert (out / f"{name}.random.png").is_file()
    state = json.loads(text.split('id="crossvit-widgets">', 1)[1].split("</script>", 1)[0].replace("<\\/", "</"))
    assert [w["state"]["_data"]["num_images"] for w in state] == [3, 3]
    shown = json.loads((out / "predictions.json").read_text())["images"]  # the images in the order the page has them
    assert [w["state"]["_data"]["image_names"] for w in state] == [[p["path"].rsplit("/", 1)[-1] for p in shown]] * 2
    assert json.loads((out / "predictions.json").read_text())["html"] == cli.EXPLORERS_PAGE

    # an earlier run: refused without --overwrite, replaced with it (the page was listed in its predictions.json)
    code, _, err = run(capsys, "explain", shapes_folder, "--checkpoint", BUNDLED, "--method", "random", "--out", out,
                       "--html", "--quiet")
    assert code == 2 and "earlier run" in err
    page.write_text("stale")
    code, _, err = run(capsys, "explain", shapes_folder / "shape0.png", "--checkpoint", BUNDLED, "--method",
                       "random", "--out", out, "--html", "--overwrite", "--quiet")
    assert code == 0, err
    assert page.read_text(encoding="utf-8") != "stale" and "crossvit-widget" in page.read_text(encoding="utf-8")

    # a reader's own explorers.html in a new folder is never replaced, --overwrite or not, and nothing is written
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / cli.EXPLORERS_PAGE).write_text("my notes")
    for extra in ([], ["--overwrite"]):
        code, _, err = run(capsys, "explain", shapes_folder, "--checkpoint", BUNDLED, "--method", "random",
                           "--out", mine, "--html", "--quiet", *extra)
        assert code == 2 and "no earlier run of this command wrote it" in err
    assert sorted(p.name for p in mine.iterdir()) == [cli.EXPLORERS_PAGE]
    assert (mine / cli.EXPLORERS_PAGE).read_text() == "my notes"


def test_html_refuses_more_images_than_a_page_holds_before_any_work(capsys, tmp_path, shapes_folder, monkeypatch):
    monkeypatch.setattr(cli, "MAX_PAGE_IMAGES", 2)
    code, _, err = run(capsys, "explain", shapes_folder, "--checkpoint", BUNDLED, "--out", tmp_path / "o",
                       "--html")
    assert code == 2 and "at most 2 images; got 3" in err
    assert not (tmp_path / "o").exists()  # refused before the folder was made
