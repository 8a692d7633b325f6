"""Reliability, round four: what an audit of the public API's docstrings found (each test failed before the change).

Flags that took any truthy object for True (``save_checkpoint(overwrite="no")`` replaced a checkpoint), images
holding NaN analysed into NaN maps and scores without a word, arguments refused by torch's or Python's own errors
deep inside instead of a named one, and numbers that overflowed or underflowed into wrong answers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import crossvit
from crossvit import ablation, data, metrics
from crossvit.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def batch():
    images, labels, masks = data.make_shapes(2, seed=data.UNUSED_SEED_BASE + 91)
    return images, labels, masks


def test_a_flag_is_true_or_false_not_any_truthy_object(model, batch, tmp_path):
    first = save_checkpoint(model, tmp_path, name="kept")
    before = first.read_bytes()
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        save_checkpoint(model, tmp_path, name="kept", overwrite="no")  # was read as True: the file was replaced
    assert first.read_bytes() == before
    for flag in ("verify", "allow_unverified_config", "with_record"):
        with pytest.raises(TypeError, match=f"{flag} must be True or False"):
            load_checkpoint(first, **{flag: "no"})
    with pytest.raises(TypeError, match="pretrained must be True or False"):
        crossvit.create_model("shapes_tiny", pretrained="no")  # loaded the bundled weights
    for flag in ("detach", "grads"):
        with pytest.raises(TypeError, match=f"{flag} must be True or False"):
            with crossvit.record_attention(model, **{flag: "no"}):
                pass
    with pytest.raises(TypeError, match="progress must be True or False"):
        data.make_shapes(2, seed=0, progress="no")  # showed a bar
    images, labels, _ = batch
    maps = torch.rand(2, 96, 96)
    with pytest.raises(TypeError, match="progress must be True or False"):
        metrics.deletion_insertion(model, images, maps, labels, progress="no")
    with pytest.raises(TypeError, match="density must be True or False"):
        crossvit.patch_map_to_pixels(model, "small", torch.rand(2, 64), density="no")


def test_images_holding_nan_are_refused_by_every_analysis(model, batch):
    images, labels, _ = batch
    bad = images.clone()
    bad[1, 0, 5, 5] = float("nan")
    calls = {
        "explain": lambda: crossvit.explain(model, bad, "joint_rollout"),  # a whole NaN map, silently
        "relevance_by_branch": lambda: crossvit.relevance_by_branch(model, bad),
        "deletion_insertion": lambda: metrics.deletion_insertion(model, bad, torch.rand(2, 96, 96), labels),
        "head_accuracies": lambda: ablation.head_accuracies(model, bad, labels),  # a NaN logit counted as class 0
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"images \[1\] hold NaN or infinite values"):
            call()
            pytest.fail(f"{name} took images holding NaN")
    assert torch.isnan(bad).sum() == 1  # the caller's batch as it was


def test_head_accuracies_names_what_is_wrong_with_its_arguments(model, batch):
    images, labels, _ = batch
    with pytest.raises(TypeError, match=r"labels: .* integer tensor of class indices"):
        ablation.head_accuracies(model, images, labels.float())
    with pytest.raises(ValueError, match=r"labels: target class indices must be in \[0, 4\)"):
        ablation.head_accuracies(model, images, labels + 10)
    with pytest.raises(ValueError, match="batch_size"):
        ablation.head_accuracies(model, images, labels, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        ablation.head_accuracies(model, images, labels, batch_size=True)
    with pytest.raises(TypeError, match="torch.Tensor"):
        ablation.head_accuracies(model, images.tolist(), labels)
    with pytest.raises(ValueError, match="empty batch"):
        ablation.head_accuracies(model, images[:0], labels[:0])
    # other integer types are class indices too: the same scores as int64 labels
    assert ablation.head_accuracies(model, images, labels.int()) == ablation.head_accuracies(model, images, labels)


def test_numbers_at_the_ends_of_their_ranges(model, batch):
    images = batch[0]
    tiny = metrics.gaussian_blur(images, 1e-200)  # sigma * sigma underflowed to 0: 0 / 0 made every pixel NaN
    assert torch.equal(tiny, images)  # a blur far narrower than a pixel leaves the image as it is
    with pytest.raises(ValueError, match="too large to count exactly"):
        metrics.pixel_counts(2**62, 2)  # overflowed int64: [0, -2305843009213693952, 0]
    assert metrics.pixel_counts(10, 4).tolist() == [0, 3, 5, 8, 10]  # round(i * 10 / 4), halves up, by hand
    for option in ("epsilon", "gamma"):
        with pytest.raises(ValueError, match=option):
            crossvit.relevance_by_branch(model, images, **{option: math.inf})  # NaN shares before


def test_arguments_of_the_wrong_kind_get_a_named_error(model, batch, tmp_path):
    images, labels, _ = batch
    for rollout in (lambda r: crossvit.attention_rollout(r, "small"), crossvit.joint_rollout,
                    crossvit.gradient_rollout):
        with pytest.raises(TypeError, match="rec must be the AttentionRecorder"):
            rollout("rec")  # AttributeError: 'str' object has no attribute 'model'
    with pytest.raises(TypeError, match="patch_map must be a floating-point"):
        crossvit.patch_map_to_pixels(model, "small", torch.ones(2, 64, dtype=torch.long))
    with pytest.raises(TypeError, match="fractions must be a sequence of numbers"):
        metrics.deletion_insertion(model, images, torch.rand(2, 96, 96), labels, fractions="abc")
    with pytest.raises(TypeError, match="not True/False"):
        metrics.deletion_insertion(model, images, torch.rand(2, 96, 96), labels, fractions=[False, True])
    logits = model(images)
    assert crossvit.top_classes(model, logits, np.int64(2)) == crossvit.top_classes(model, logits, 2)
    path = save_checkpoint(model, tmp_path)
    with pytest.raises(ValueError, match="map_location 'gpu' is not a device"):
        load_checkpoint(path, map_location="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="map_location is 'cuda' but CUDA is not available"):
            load_checkpoint(path, map_location="cuda")
    with pytest.raises(ValueError, match="plain file stem"):
        load_checkpoint(tmp_path, name="../elsewhere/model")  # save_checkpoint refused that name; load took it


def test_a_density_map_divides_by_the_patch_area_it_documents(model):
    """patch_map_to_pixels(density=True): each value over (H / rows) * (W / cols), the patch's area in the
    continuous image (19.2 x 19.2 px for the large branch's 5 x 5 grid over 96 px), written out by hand."""
    one = torch.zeros(1, 25)
    one[0, 7] = 3.0  # row 1, column 2
    density = crossvit.patch_map_to_pixels(model, "large", one, density=True)
    plain = crossvit.patch_map_to_pixels(model, "large", one)
    torch.testing.assert_close(density, plain / (96 / 5) ** 2)
    covered = int((plain > 0).sum())
    assert covered in (19 * 19, 19 * 20, 20 * 20)  # nearest-pixel spreading: whole pixels, 19 or 20 a side
    assert abs(float(density.sum()) - 3.0) <= 3.0 * abs(covered / (96 / 5) ** 2 - 1) + 1e-6
