"""Matplotlib helpers shared by the notebooks: images, patch grids, attention maps, explanation grids, curves, and
a diagram of the model's own architecture.

Every ``plot_*`` function builds and returns a new :class:`matplotlib.figure.Figure` (through pyplot, so Jupyter
shows it); :func:`save_figure` writes it as a PNG into the figures directory::

    fig = plot_cls_attention(model, images[0], rec.self_attention("small")[-1][0], "small")
    save_figure(fig, "02_cls_attention_heads")   # -> $CROSSVIT_FIGURES_DIR (else ./crossvit-figures)/02_cls_attention_heads.png

Inputs may be torch tensors (on any device) or numpy arrays; images are (3, H, W) or (H, W, 3) in [0, 1].
Nothing here draws at random, so the same inputs give the same pixels.

How the figures read at a glance:

* every heat map carries a colour bar that says what its colours mean. Attention figures share one scale over
  all their panels by default (``scale="shared"``: raw attention weights, 0 to the largest weight shown), so
  panels can be compared; ``scale="panel"`` min-max scales each panel on its own and the colour bar says so;
* signed attributions (:data:`SIGNED_METHODS`, or any map with negative values) use a diverging colour map
  centred at 0 (:data:`SIGNED_CMAP`: red = for the class, blue = against it, no colour = 0), symmetric around 0;
* titles name the query and the keys: ``"large CLS -> small patches"`` reads "the large branch's CLS token
  attends to the small branch's patch tokens";
* a figure has at most :data:`MAX_COLUMNS` columns of panels; more panels wrap into further rows.

The package: :mod:`~crossvit.plotting.base` (constants, saving, axes-level drawing),
:mod:`~crossvit.plotting.images` (images, patches, the architecture diagram),
:mod:`~crossvit.plotting.attention` (attention maps) and :mod:`~crossvit.plotting.explanations` (rollouts,
attributions, curves, tables); every public name is importable from here.
"""

from .attention import (  # noqa: F401
    attention_direction,
    plot_attention_by_block,
    plot_branch_logits,
    plot_cls_attention,
    plot_cross_attention,
)
from .base import (  # noqa: F401
    DPI,
    FIGURES_ENV,
    GRID_COLORS,
    HEAT_CMAP,
    LOCAL_FIGURES_DIRNAME,
    MASK_COLOR,
    MAX_COLUMNS,
    RESULTS_DIR,
    SIGNED_CLIP_PERCENTILE,
    SIGNED_CMAP,
    SIGNED_METHODS,
    ArrayLike,
    add_colorbar,
    balanced_columns,
    cls_row,
    cross_row,
    draw_mask_contour,
    draw_patch_grid,
    figure_path,
    figures_dir,
    fuse,
    grid_edges,
    is_signed,
    normalize_map,
    overlay_heatmap,
    patch_pixels,
    save_figure,
    show_image,
    signed_scale,
    to_hwc,
    to_numpy,
)
from .explanations import (  # noqa: F401
    markdown_table,
    plot_class_maps,
    plot_deletion_insertion,
    plot_joint_rollout,
    plot_method_grid,
    plot_training_curve,
)
from .images import (  # noqa: F401
    plot_architecture,
    plot_branch_views,
    plot_images,
    plot_patch_filters,
    plot_position_similarity,
    position_similarity,
)
