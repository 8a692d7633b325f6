"""Reliability, round five: what the round-four audit left (each test failed before the change).

Arguments refused by a bare KeyError, AttributeError or TypeError from deep inside instead of an error that names
them, and the library's own analyses overwriting the maps of a recording the caller had open on the same model.
"""

from __future__ import annotations

import pytest
import torch

import crossvit
from crossvit import ablation, data, metrics, rollout, scenes
from crossvit.checkpoint import save_checkpoint
from crossvit.explain import joint_rollout_pixels
from crossvit.lrp import relevance_by_branch
from crossvit.train import check_output
from crossvit.weights import read_state_dict


@pytest.fixture(scope="module")
def batch():
    images, labels, _ = data.make_shapes(2, seed=data.UNUSED_SEED_BASE + 95)
    return images, labels


def test_paths_that_are_not_paths_are_named(model, tmp_path):
    for call, name in ((lambda: save_checkpoint(model, 3), "directory"),  # an int: was pathlib's own TypeError
                       (lambda: save_checkpoint(model, None), "directory"),
                       (lambda: check_output(3, "model"), "out_dir"),
                       (lambda: read_state_dict(3), "checkpoint_path"),
                       (lambda: crossvit.load_checkpoint(None), "checkpoint path")):
        with pytest.raises(TypeError, match=f"{name} must be a str or Path, got"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_a_branch_name_is_checked(model, batch):
    shares = relevance_by_branch(model, batch[0])
    for call in (shares.share, shares.total):
        with pytest.raises(ValueError, match="branch must be one of 'small', 'large'; got 'Small'"):
            call("Small")  # was KeyError: 'Small'
    torch.testing.assert_close(shares.share("small") + shares.share("large"), torch.ones(2), rtol=0, atol=1e-6)


def test_rollout_from_maps_names_what_it_was_given():
    maps = [torch.softmax(torch.randn(2, 3, 5, 5), dim=-1) for _ in range(2)]
    with pytest.raises(TypeError, match="maps must be a list or tuple"):
        rollout.rollout_from_maps(torch.stack(maps))  # a stacked tensor: was "Boolean value of Tensor ... ambiguous"
    with pytest.raises(TypeError, match=r"maps\[1\] must be a \(B, heads, N, N\) tensor, got int"):
        rollout.rollout_from_maps([maps[0], 3])  # was AttributeError: 'int' object has no attribute 'shape'
    with pytest.raises(ValueError, match=r"maps\[0\] must be a \(B, heads, N, N\) tensor, got shape \(2, 5, 5\)"):
        rollout.rollout_from_maps([maps[0][:, 0]])  # was "not enough values to unpack"
    with pytest.raises(TypeError, match="include_cls must be True or False"):
        rollout.rollout_from_maps(maps, include_cls="no")  # was read as True
    # what it accepts still gives the written-out product: row 0 of A'_2 A'_1 with A' = rownorm(0.5 A + 0.5 I)
    eye = torch.eye(5)
    a1, a2 = ((0.5 * m.mean(dim=1) + 0.5 * eye) for m in maps)
    a1, a2 = a1 / a1.sum(-1, keepdim=True), a2 / a2.sum(-1, keepdim=True)
    torch.testing.assert_close(rollout.rollout_from_maps(tuple(maps)), (a2 @ a1)[:, 0, 1:])


def test_joint_rollout_pixels_names_a_missing_pair(model):
    with pytest.raises(ValueError, match=r"rollout\['small'\]\[patch branch\]"):
        joint_rollout_pixels(model, {})  # was KeyError: 'small'
    with pytest.raises(TypeError, match="rollout must be a dict of dicts"):
        joint_rollout_pixels(model, [torch.ones(2, 64)])


def test_zero_cross_attention_names_a_query_that_is_not_one(model, batch):
    for query, error in ((None, TypeError), (3, TypeError), (["small", 3], ValueError)):
        with pytest.raises(error, match="query must be 'small', 'large', 'both' or"):
            with ablation.zero_cross_attention(model, query):  # None, 3: was "object is not iterable"
                pass
    with torch.no_grad():
        plain = model(batch[0])
        with ablation.zero_cross_attention(model, []):  # the ablations' baseline: nothing zeroed
            assert torch.equal(model(batch[0]), plain)
        with ablation.zero_cross_attention(model, ["large"]):
            zeroed = model(batch[0])
    assert not torch.allclose(plain, zeroed)  # a valid sequence still zeroes


def test_make_composites_refuses_a_gap_with_no_room_before_drawing():
    with pytest.raises(ValueError, match="gap must be <= 48, got 200"):
        scenes.make_composites(2, seed=0, image_size=96, gap=200)  # was RuntimeError after drawing 20 images
    with pytest.raises(ValueError, match="only 0 of 4 composites found room 40 px from the host's object"):
        scenes.make_composites(4, seed=0, image_size=96, gap=40)


def test_the_library_leaves_an_open_recording_as_it_was(model, batch):
    images, labels = batch
    other = images.flip(-1)
    with crossvit.record_attention(model) as rec:
        model(images)
        kept = {name: m.clone() for name, m in rec.sites.items()}
        for method in ("joint_rollout", "gradient_rollout", "attnlrp", "integrated_gradients"):
            crossvit.explain(model, other, method)  # ran the model on `other` inside: rec held its maps after
        relevance_by_branch(model, other)
        ablation.head_accuracies(model, other, labels)
        ablation.cross_attention_ablations(model, other, labels)
        maps = crossvit.explain(model, other, "joint_rollout")
        metrics.deletion_insertion(model, other, maps, 0, steps=2)
        assert rec.num_forwards == 1
        assert rec.sites.keys() == kept.keys()
        for name, m in rec.sites.items():
            assert torch.equal(m, kept[name]), name
        model(other)  # the caller's own forward still replaces them
        assert rec.num_forwards == 2
        with torch.no_grad():
            with crossvit.record_attention(model) as fresh:
                model(other)
        for name, m in rec.sites.items():
            assert torch.equal(m, fresh.sites[name]), name
