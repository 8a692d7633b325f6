"""Reliability, round six (each test failed before the change).

Every public function that reads a CrossViT's structure refuses something else in the same words, through one
check (``crossvit.model.check_crossvit``): a timm or vit-pytorch model is told to convert first, a torch.compile
wrapper to pass the eager model. Before, the plotting functions and the data configs ended in an AttributeError
deep inside, and only the recording named the compiled wrapper.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import crossvit
from crossvit import ablation, lrp, plotting, preprocessing, widgets
from crossvit.explain import occlusion_window
from crossvit.weights import load_timm_weights

IMAGES = torch.rand(1, 3, 96, 96)
LABELS = torch.zeros(1, dtype=torch.long)


def _enter(manager) -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(manager)


CALLS = {
    "explain": lambda m: crossvit.explain(m, IMAGES, "saliency"),
    "relevance_by_branch": lambda m: lrp.relevance_by_branch(m, IMAGES),
    "lrp_rules": lambda m: _enter(lrp.lrp_rules(m)),
    "record_attention": lambda m: _enter(crossvit.record_attention(m)),
    "zero_cross_attention": lambda m: _enter(ablation.zero_cross_attention(m)),
    "head_accuracies": lambda m: ablation.head_accuracies(m, IMAGES, LABELS),
    "cross_attention_ablations": lambda m: ablation.cross_attention_ablations(m, IMAGES, LABELS),
    "patch_map_to_pixels": lambda m: crossvit.patch_map_to_pixels(m, "small", torch.zeros(1, 64)),
    "occlusion_window": occlusion_window,
    "top_classes": lambda m: crossvit.top_classes(m, torch.zeros(1, 4)),
    "class_names": crossvit.class_names,
    "save_checkpoint": lambda m: crossvit.save_checkpoint(m, "never_written"),
    "load_timm_weights": lambda m: load_timm_weights(m, "never_read.pth"),
    "data_config": crossvit.data_config,
    "default_data_config": preprocessing.default_data_config,
    "shapes_data_config": preprocessing.shapes_data_config,
    "stored_data_config": preprocessing.stored_data_config,
    "preprocess": lambda m: crossvit.preprocess(m, IMAGES[0]),
    "attention_explorer": lambda m: widgets.attention_explorer(m, IMAGES),
    "rollout_explorer": lambda m: widgets.rollout_explorer(m, IMAGES),
    "plot_architecture": plotting.plot_architecture,
    "plot_branch_views": lambda m: plotting.plot_branch_views(m, IMAGES[0]),
    "plot_patch_filters": lambda m: plotting.plot_patch_filters(m, "small"),
    "plot_position_similarity": lambda m: plotting.plot_position_similarity(m, "small"),
    "plot_cls_attention": lambda m: plotting.plot_cls_attention(m, IMAGES[0], torch.zeros(1, 2, 65), "small"),
    "plot_cross_attention": lambda m: plotting.plot_cross_attention(m, IMAGES[0], torch.zeros(1, 2, 65)),
    "plot_attention_by_block": lambda m: plotting.plot_attention_by_block(m, IMAGES[0], {}),
    "plot_joint_rollout": lambda m: plotting.plot_joint_rollout(m, IMAGES[0], {}),
    "attention_direction": lambda m: plotting.attention_direction(m, "small", "large"),
    "grid_edges": lambda m: plotting.grid_edges(m, "small"),
    "patch_pixels": lambda m: plotting.patch_pixels(m, "small", [0.0]),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_model_that_is_not_a_crossvit_is_told_how_to_get_one(name, model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if something were, it would land here
    call = CALLS[name]
    with pytest.raises(TypeError, match=r"needs a crossvit\.CrossViT, got Linear; convert a timm or vit-pytorch "
                                        r"model first with crossvit\.from_timm"):
        call(nn.Linear(3, 3))
    with pytest.raises(TypeError, match=r"needs a crossvit\.CrossViT, got str$"):
        call("crossvit_9_240")
    compiled = torch.compile(model)  # compiles lazily, on its first call, which never comes
    with pytest.raises(TypeError, match=r"needs the eager crossvit\.CrossViT, got a torch\.compile wrapper: pass "
                                        r"the original model \(compiled\._orig_mod\)"):
        call(compiled)
    assert list(tmp_path.iterdir()) == []
