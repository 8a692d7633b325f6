"""Interactive views for the notebooks, where moving a slider teaches more than one static figure: anywidget
widgets whose JavaScript front end (``explorer.js``, shipped in the package) draws and answers every control in
the browser.

* :func:`attention_explorer`: image, block, branch, kind (self / cross), layer, head (or head fusion) and the
  query token (the CLS, or any patch by grid row and column or by a click on the picture); shows the query's
  attention row over the grid it attends to.
* :func:`rollout_explorer`: image, method (the per-branch and joint rollouts, and every class-specific method of
  the registry: gradient rollout, co-attention relevancy, ...), head fusion, discard ratio, start block and the
  target class.

Each explorer runs the model ONCE when it is built (the rollout explorer also computes its class-specific maps
then) and sends the recorded maps to the browser once; the browser slices them, fuses heads and multiplies the
rollouts itself, so a control change needs no kernel. The widget works in JupyterLab, in a notebook page saved
with its widget state, and as a standalone HTML file (``explorer.save_html(path)``)::

    explorer = attention_explorer(model, images, class_names=CLASS_NAMES)
    explorer          # last expression of a cell: shows the widget

Python computes the same views (:meth:`~crossvit.widgets.attention.AttentionExplorer.view`: maps, captions,
titles) with the library's own functions; tests hold the two equal. The package: :mod:`~crossvit.widgets.base`
(what both share, the packet), :mod:`~crossvit.widgets.attention`, :mod:`~crossvit.widgets.rollout`,
:mod:`~crossvit.widgets.html` (standalone pages) and :mod:`~crossvit.widgets.question` (the course's choice
questions).
"""

from .attention import AttentionExplorer, attention_explorer
from .base import attention_bytes_per_image
from .html import write_html
from .rollout import RolloutExplorer, explorer_methods, rollout_explorer

__all__ = ["AttentionExplorer", "RolloutExplorer", "attention_bytes_per_image", "attention_explorer",
           "explorer_methods", "rollout_explorer", "write_html"]
