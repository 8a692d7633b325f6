"""The library's progress bars (crossvit.utils.progress_bar): each one ends at its total (a notebook draws a bar
closed short of it in red, as if the work had failed), and TQDM_DISABLE=1 silences them all, as tqdm documents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm.std import tqdm as text_tqdm

import crossvit.train
import crossvit.utils
from crossvit.train import TrainConfig, make_training_set, train

ROOT = Path(__file__).resolve().parent.parent


class _Recording(text_tqdm):
    closed: list[tuple[str, int, int]] = []

    def close(self):
        if not self.disable and not getattr(self, "_recorded", False):
            self._recorded = True
            _Recording.closed.append((self.desc, self.n, self.total))
        super().close()


@pytest.fixture()
def bars(monkeypatch):
    _Recording.closed = []
    monkeypatch.setattr(crossvit.utils, "tqdm", _Recording)
    monkeypatch.setattr(crossvit.train, "_CHUNK_IMAGES", 8)  # three chunks of training images, not one
    return _Recording.closed


def test_the_training_bars_end_at_their_totals(bars, tmp_path):
    config = TrainConfig(steps=3, warmup_steps=1, batch_size=4, train_images=24, eval_images=8, eval_every=0)
    make_training_set(config, progress=True)
    assert bars == [("training data", 3, 3)]  # it stopped at 2 of 3 when the loop took the seeds with next()
    bars.clear()
    train(config, progress=True)
    assert bars == [("training data", 3, 3), ("train", 3, 3)]
    bars.clear()
    make_training_set(config, progress=False)
    assert bars == []  # progress=False: no bar at all


def test_tqdm_disable_silences_a_notebook_bar_too(monkeypatch):
    from tqdm.notebook import tqdm as notebook_tqdm

    monkeypatch.setattr(crossvit.utils, "tqdm", notebook_tqdm)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert crossvit.utils.progress_bar(range(3), progress=True).disable  # tqdm.notebook alone would show it
    monkeypatch.delenv("TQDM_DISABLE")
    shown = crossvit.utils.progress_bar(range(3), progress=True, display=False)
    assert not shown.disable  # without it: shown
    shown.close()
    shown.container.close()  # (else ipywidgets keeps it, and its weak proxy to the bar outlives the bar)


@pytest.mark.slow  # two Python processes that import torch
@pytest.mark.parametrize("disabled", [False, True])
def test_tqdm_disable_in_the_environment_silences_the_bars(disabled):
    script = ("import crossvit.train as t\n"
              "t._CHUNK_IMAGES = 8\n"
              "t.make_training_set(t.TrainConfig(train_images=16), progress=True)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    env.update(PYTHONPATH=str(ROOT), **({"TQDM_DISABLE": "1"} if disabled else {}))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert ("training data" in run.stderr) != disabled, run.stderr


def test_the_analysis_bars_end_at_their_totals(bars, micro):
    """explain, evaluate and the ablations ran silent for minutes on large models (occlusion of a 240 px image by
    crossvit_9_240: about 19 s an image); ``progress=True`` now shows a bar over the work."""
    import torch

    from crossvit import ablation, explain
    from crossvit.train import evaluate

    model, images = micro
    images = torch.cat([images] * 3)  # 6 images
    labels = torch.zeros(6, dtype=torch.long)
    explain(model, images, "saliency", progress=True)
    explain(model, images, "random", progress=True)  # one draw for the whole batch: one step
    evaluate(model, images, labels, batch_size=4, progress=True)
    ablation.cross_attention_ablations(model, images, labels, progress=True)
    assert bars == [("explain (saliency)", 6, 6), ("explain (random)", 1, 1), ("evaluate", 2, 2),
                    ("ablations", 4, 4)]
