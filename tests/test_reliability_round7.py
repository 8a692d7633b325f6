"""Reliability, round seven (each test failed before the change).

The command lines can be called from Python (``crossvit.cli.main([...])``, ``crossvit.train.main([...])``), e.g.
from a notebook; they then leave the caller's process as they found it. Before, ``crossvit explain`` switched
matplotlib's backend to Agg (which also closes every open pyplot figure when the backend was another one), and
``crossvit.train --threads N`` left torch on N threads.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from crossvit import cli
from crossvit import train as train_module


def test_explain_command_leaves_the_callers_backend_and_figures(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo)
    before = matplotlib.get_backend()
    plt.switch_backend("svg")  # a backend other than the Agg the command draws with
    try:
        mine = plt.figure()
        assert cli.main(["explain", str(photo), "--model", "shapes_tiny", "--pretrained", "--out",
                         str(tmp_path / "out"), "--method", "joint_rollout", "--quiet"]) == 0
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == [mine.number]  # the caller's figure is open, and the command left none
        assert (tmp_path / "out" / "photo.joint_rollout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        plt.close("all")
        plt.switch_backend(before)


def test_train_command_gives_the_thread_count_back():
    threads = torch.get_num_threads()
    wanted = 1 if threads > 1 else 2
    argv = ["--steps", "1", "--threads", str(wanted), "--quiet", "--train-images", "64", "--eval-images", "8"]
    assert train_module.main(argv) == 0
    assert torch.get_num_threads() == threads
