"""ipywidgets explorers for the notebooks, where moving a slider teaches more than one static figure.

* :func:`attention_explorer`: image, block, branch, kind (self / cross), layer, head (or head fusion) and the
  query token (the CLS, or any patch by grid row and column or by a click on the picture, through ``ipyevents``);
  shows the query's attention row over the grid it attends to.
* :func:`rollout_explorer`: image, method (per-branch, joint or gradient rollout), head fusion, discard ratio and
  the target class of the gradient rollout.

Each explorer runs the model ONCE when it is built, keeps the recorded maps, and on every change only slices them
(and, for rollout, multiplies a few small matrices), so redraws are cheap. The figure is rendered to PNG bytes
inside an :class:`ipywidgets.Image`, which works in any front end and without a display (tests drive the
controls directly and read ``explorer.last_map``)::

    explorer = attention_explorer(model, images, class_names=CLASS_NAMES)
    explorer          # last expression of a cell: shows the widget

The package: :mod:`~crossvit.widgets.base` (what both share), :mod:`~crossvit.widgets.attention` and
:mod:`~crossvit.widgets.rollout`.
"""

from .attention import AttentionExplorer, attention_explorer
from .base import attention_bytes_per_image
from .rollout import RolloutExplorer, rollout_explorer

__all__ = ["AttentionExplorer", "RolloutExplorer", "attention_bytes_per_image", "attention_explorer",
           "rollout_explorer"]
