"""The two-object figure of notebook 05 marks what the pointing game scored (issue 30, item 14): the maximal pixels
of each map, outlined in green with a + at their centre, found as :func:`crossvit.metrics.maximal_pixels` finds
them (the pixels :func:`crossvit.metrics.pointing_game` counts), from the map as it is, so that a signed map's
mark sits where its largest *value* is, not where its largest magnitude is drawn."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.lines import Line2D

from crossvit import metrics, plotting
from crossvit.plotting.explanations import MAXIMAL_COLOUR


def test_maximal_pixels_are_the_pixels_within_a_millionth_of_the_maximum():
    maps = torch.zeros(3, 6, 8)
    maps[0, 1:3, 2:5] = 4.0
    maps[0, 2, 4] = 4.0 * (1 - 5e-7)  # float noise inside the plateau: still maximal
    maps[0, 5, 7] = 4.0 * (1 - 5e-6)  # a near miss: not maximal
    maps[1] = -1.0
    maps[1, 0, 0] = -0.5  # a negative maximum: within 1e-6 of |max|
    maps[2, 3, 3] = float("inf")
    expected = torch.zeros(3, 6, 8, dtype=torch.bool)
    expected[0, 1:3, 2:5] = True
    expected[1, 0, 0] = True
    expected[2, 3, 3] = True
    assert torch.equal(metrics.maximal_pixels(maps), expected)
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:4] = True  # 4 of the 6 maximal pixels: a hit under the majority rule
    masks[1:, 3:, 3:] = True
    hits = metrics.pointing_game(maps, masks).hits
    assert hits.tolist() == [True, False, True]  # the pointing game scores exactly these pixels
    with pytest.raises(ValueError, match="NaN"):
        metrics.maximal_pixels(torch.full((1, 2, 2), float("nan")))


def _marks(ax):
    """The green marks of one panel: its + markers and the outline vertices."""
    green = mcolors.to_rgba(MAXIMAL_COLOUR)
    pluses = [line for line in ax.lines if isinstance(line, Line2D) and line.get_marker() == "+"
              and mcolors.to_rgba(line.get_color()) == green]
    outlines = []
    for collection in ax.collections:
        colours = collection.get_edgecolor() if hasattr(collection, "get_edgecolor") else []
        if len(colours) and np.allclose(colours[0], green):
            outlines += [path.vertices for path in collection.get_paths() if len(path.vertices)]
    return pluses, outlines


def test_the_class_maps_mark_the_maximal_pixels_of_the_map_as_scored():
    h, w = 24, 24
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 14:22, 14:22] = True
    unsigned = torch.zeros(2, h, w)
    unsigned[0, 4:8, 4:10] = 1.0  # class 0's map: a plateau on object 0
    unsigned[1, 16:20, 12:16] = 2.0  # class 1's map: a plateau half off object 1
    signed = torch.zeros(2, h, w)
    signed[:, 18, 18] = 1.0  # the largest value (what the pointing game scores) ...
    signed[:, 3, 3] = -5.0  # ... is not the largest magnitude, which the heat map draws brightest
    fig = plotting.plot_class_maps(image, {"patchy": unsigned, "integrated_gradients": signed}, masks,
                                   ["warm striped", "cool checkered"])
    axes = np.array(fig.axes[:-1]).reshape(2, 3)  # the colour bar comes last
    for k in range(2):
        for j, maps in ((1, unsigned), (2, signed)):
            maximal = metrics.maximal_pixels(maps[k][None])[0]
            rows, cols = torch.nonzero(maximal, as_tuple=True)
            pluses, outlines = _marks(axes[k, j])
            assert len(pluses) == 1, (k, j)
            assert pluses[0].get_xdata()[0] == pytest.approx(cols.float().mean().item())
            assert pluses[0].get_ydata()[0] == pytest.approx(rows.float().mean().item())
            points = np.concatenate(outlines)  # the outline runs around the maximal pixels, half a pixel out
            assert points[:, 0].min() == pytest.approx(cols.min().item() - 0.5, abs=0.01)
            assert points[:, 0].max() == pytest.approx(cols.max().item() + 0.5, abs=0.01)
            assert points[:, 1].min() == pytest.approx(rows.min().item() - 0.5, abs=0.01)
            assert points[:, 1].max() == pytest.approx(rows.max().item() + 0.5, abs=0.01)
    assert _marks(axes[0, 0]) == ([], [])  # the image column has no map, so no mark
    quiet = plotting.plot_class_maps(image, {"patchy": unsigned}, masks, ["a", "b"], mark_maximal=False)
    assert all(_marks(ax) == ([], []) for ax in quiet.axes[:-1])
    plt.close("all")
