"""Two-object scenes (crossvit.scenes): two objects of different classes per image, one exact mask each,
deterministic by seed, with the class colours on each object's own pixels."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from crossvit import data
from crossvit.scenes import PAIRS, make_two_object_shapes

SEED = 2**40 + 2**33 + 211


def test_two_objects_of_different_classes_with_disjoint_masks():
    images, labels, masks = make_two_object_shapes(48, SEED)
    assert images.shape == (48, 3, 96, 96) and images.dtype == torch.float32
    assert labels.shape == (48, 2) and masks.shape == (48, 2, 96, 96) and masks.dtype == torch.bool
    assert (labels[:, 0] != labels[:, 1]).all()
    assert Counter(map(tuple, labels.tolist())) == {pair: 4 for pair in PAIRS}  # 12 ordered pairs, 4 times each
    assert not (masks[:, 0] & masks[:, 1]).any()
    area = masks.sum(dim=(2, 3)).float()
    # the smallest object: a triangle of circumradius 1.25 * 11 px (area 3 sqrt(3)/4 R^2); the largest a disk of 17 px
    assert area.min() >= 0.9 * 3 * math.sqrt(3) / 4 * (1.25 * 11) ** 2
    assert area.max() <= math.pi * 17.5**2
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_each_object_carries_its_own_class_colour():
    """Warm classes (0, 1) have red above blue on their object's pixels, cool ones (2, 3) blue above red."""
    images, labels, masks = make_two_object_shapes(24, SEED + 1, noise=0.0)
    for i in range(24):
        for k in range(2):
            red, _, blue = images[i][:, masks[i, k]].mean(dim=1).tolist()
            warm = data.COLOURS[int(labels[i, k]) // len(data.TEXTURES)] == "warm"
            assert (red > blue) == warm, (i, k, int(labels[i, k]))


def test_deterministic_by_seed_whatever_the_global_rng():
    torch.manual_seed(0)
    first = make_two_object_shapes(5, SEED + 2, image_size=64)
    torch.manual_seed(123)
    torch.rand(10)
    second = make_two_object_shapes(5, SEED + 2, image_size=64)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    other = make_two_object_shapes(5, SEED + 3, image_size=64)
    assert not torch.equal(first[0], other[0])
    assert make_two_object_shapes(1, 2**63 - 1)[0].shape == (1, 3, 96, 96)  # the whole documented seed range


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n": 0}, ValueError, "n"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"image_size": 16}, ValueError, "image_size"),
    ({"num_distractors": (3, 1)}, ValueError, "num_distractors"),
])
def test_bad_input_is_refused(kwargs, error, match):
    args = {"n": 2, "seed": 1, **kwargs}
    with pytest.raises(error, match=match):
        make_two_object_shapes(args.pop("n"), args.pop("seed"), **args)
