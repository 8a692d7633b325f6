"""Our localisation metrics against Quantus (Hedström et al., JMLR 2023), the field's reference implementation,
where the definitions coincide: the pointing game (our rules "first" and "majority" against Quantus's
PointingGame: any maximal pixel on the mask; the same whenever a map has one maximum) and the mass on the object
(Quantus's RelevanceMassAccuracy). Real maps of the bundled model, single- and two-object images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crossvit
from crossvit import metrics
from crossvit.scenes import make_two_object_shapes

quantus = pytest.importorskip("quantus")

SEED = 2**40 + 2**33 + 131  # test images: above the trainer's seeds, not a benchmark's
METHODS = ("random", "joint_rollout", "gradient_rollout", "coattention_relevancy", "saliency", "cls_attention")


@pytest.fixture(scope="module")
def cases(bundled):
    """(maps, masks) pairs: every method above on 8 single-object images and on 8 two-object scenes (each of the
    scene's two classes as target, scored on that object's mask)."""
    images, labels, masks = crossvit.data.make_shapes(8, SEED)
    scenes, pairs, scene_masks = make_two_object_shapes(8, SEED + 1)
    out = []
    for method in METHODS:
        out.append((method, crossvit.explain(bundled, images, method, target=labels), masks))
        for k in range(2):
            out.append((method, crossvit.explain(bundled, scenes, method, target=pairs[:, k]), scene_masks[:, k]))
    return out


def _quantus(metric, maps: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    a = maps[:, None].double().numpy()
    s = masks[:, None].numpy().astype(float)
    x = np.zeros((len(a), 3, *a.shape[-2:]))  # the localisation metrics never read the images
    return np.asarray(metric(model=None, x_batch=x, y_batch=np.zeros(len(a), dtype=int), a_batch=a, s_batch=s),
                      dtype=float)


def test_pointing_game_agrees_with_quantus_wherever_the_maxima_agree(cases):
    """Where all of a map's maximal pixels lie on the same side of the mask edge (a single maximum, or a patch
    map's maximal patch wholly on or off the object), every rule gives the same answer: ours must equal Quantus's.
    Where tied maxima straddle the edge, Quantus's "any maximum on the mask" is the loosest rule."""
    pointing = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)
    compared = total = 0
    for method, maps, masks in cases:
        theirs = _quantus(pointing, maps, masks).astype(bool)
        flat, inside = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
        is_max = flat == flat.max(dim=1, keepdim=True).values
        on = (is_max & inside).sum(1)
        decided = ((on == 0) | (on == is_max.sum(1))).numpy()
        for rule in ("first", "majority"):
            ours = metrics.pointing_game(maps, masks, rule=rule).hits.numpy()
            assert (ours[decided] == theirs[decided]).all(), (method, rule)
            assert (theirs | ~ours).all(), (method, rule)
        compared += int(decided.sum())
        total += len(maps)
    assert compared >= 0.6 * total, (compared, total)  # patch maps tie over whole patches; most still decide


def test_mass_on_the_object_equals_quantus_relevance_mass_accuracy(cases):
    mass = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)
    for method, maps, masks in cases:
        if (maps < 0).any():  # our mass share is defined on non-negative maps (explain's unsigned methods)
            continue
        np.testing.assert_allclose(metrics.mass_inside_mask(maps, masks).double().numpy(),
                                   _quantus(mass, maps, masks), rtol=1e-5, atol=1e-7, err_msg=method)
