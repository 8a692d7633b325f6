"""Seeds count in every bit: the data generators and the random baseline give distinct outputs for seeds that agree
in their low 32 bits (torch's CPU generator keeps only those), and the same output for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crossvit
from crossvit.data import HELD_OUT_SEED_BASE, UNUSED_SEED_BASE, make_shapes
from crossvit.scenes import make_two_object_shapes
from crossvit.utils import SEED_RANGE, seeded_generator


def raw_words(generator: torch.Generator, n: int) -> list[int]:
    """The generator's next n 32-bit Mersenne Twister outputs, as torch's 64-bit draws expose them: torch takes
    two words per int64 draw and keeps the second one modulo the range."""
    return torch.randint(0, 2**31, (n,), generator=generator, dtype=torch.int64).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1])
def test_a_32_bit_seed_gives_torchs_own_generator(seed):
    ours, torchs = seeded_generator(seed), torch.Generator().manual_seed(seed)
    assert torch.equal(torch.rand(50, generator=ours), torch.rand(50, generator=torchs))


@pytest.mark.parametrize("seed", [2**32, 2**40 + 1, 2**63 + 12345, 2**64 - 1])
def test_a_long_seed_gives_numpys_mt19937_stream(seed):
    """Reference: numpy's MT19937 seeded with the same int (SeedSequence). numpy returns one word of the state
    before its first twist (its position starts at 623), torch starts after the twist; torch keeps every second
    word of the stream that follows, reduced modulo 2**31."""
    reference = np.random.MT19937(seed).random_raw(1 + 2 * 20)[1:]
    assert raw_words(seeded_generator(seed), 20) == [int(w) % 2**31 for w in reference[1::2]]
    assert seeded_generator(seed).initial_seed() == seed


def test_seeds_that_share_their_low_32_bits_differ():
    low = 12345
    streams = [torch.rand(20, generator=seeded_generator(low + k * 2**32)) for k in range(4)]
    assert all(not torch.equal(a, b) for i, a in enumerate(streams) for b in streams[i + 1:])


def test_the_data_generators_see_every_bit_of_a_seed():
    """The reported bug: make_shapes(4, seed=1) equalled seed=2**40 + 1, so the held-out images were those of
    seed 1."""
    a, b = make_shapes(4, seed=1), make_shapes(4, seed=HELD_OUT_SEED_BASE + 1)
    assert not torch.equal(a[0], b[0])
    assert torch.equal(make_shapes(4, seed=HELD_OUT_SEED_BASE + 1)[0], b[0])
    scene_a, scene_b = make_two_object_shapes(3, seed=7), make_two_object_shapes(3, seed=7 + 2**32)
    assert not torch.equal(scene_a[0], scene_b[0])
    assert make_shapes(1, seed=SEED_RANGE[1])[0].shape == (1, 3, 96, 96)  # the top of the documented range


def test_the_random_baseline_sees_every_bit_of_its_seed(bundled):
    images = make_shapes(2, seed=UNUSED_SEED_BASE + 2**33 + 41)[0]
    a = crossvit.explain(bundled, images, "random", seed=5)
    b = crossvit.explain(bundled, images, "random", seed=5 + 2**32)
    assert not torch.equal(a, b)
    assert torch.equal(b, crossvit.explain(bundled, images, "random", seed=5 + 2**32))


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seeds_outside_the_range_are_refused(seed):
    with pytest.raises(ValueError, match="seed must be"):
        seeded_generator(seed)
    with pytest.raises(ValueError, match="seed must be"):
        make_shapes(1, seed=seed)


def test_training_seeds_stay_below_the_held_out_ones_and_are_the_bundled_models():
    """The trainer's data seeds are 32-bit (the images every run so far was trained on), so the bundled model's
    training record, rebuilt from its train_config, lists the seeds of its training data."""
    from crossvit.train import TrainConfig, training_data_seeds

    record = crossvit.load_pretrained().training_record
    config = TrainConfig(**{k: v for k, v in record["train_config"].items()})
    seeds = training_data_seeds(config)
    assert seeds == record["training_data_seeds"]
    assert all(0 <= s < 2**32 for s in seeds) and 2**32 <= HELD_OUT_SEED_BASE
    assert UNUSED_SEED_BASE >= HELD_OUT_SEED_BASE + 2**32  # above every trainer seed's held-out set
