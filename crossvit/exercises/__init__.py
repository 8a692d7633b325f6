"""Checkers for the notebooks' exercises, and the small tooling that finds exercise cells and fills in solutions.

The notebooks are a course. Each exercise asks the learner to write one function that rebuilds a mechanism of
the library by hand (cut an image into patches, compute a CLS attention row from the layer's weights, roll out
attention, ...). In a notebook an exercise is two cells:

* the **exercise cell**, tagged ``exercise`` in its cell metadata: a stub ``def <name>(...)`` whose body raises
  ``NotImplementedError``, then a line that calls it to compute the answer;
* the **checker cell**, the next cell: ``exercises.check_<name>(answer, ...)``.

A checker recomputes the reference from the objects it is given (the model, the images, a recording), with the
library or with an independent computation, so it holds for any weights. A right answer prints one line starting
with a check mark; a wrong answer of any kind (``None``, a wrong type, a wrong shape, wrong values) raises
:class:`ExerciseError`, whose message says in a sentence what is wrong and hints at the fix. Where a common
mistake can be recognised (a missing scale, the wrong multiplication order, a transposed grid, ...), the message
names it.

Solutions live beside the notebooks in ``notebooks/solutions/<notebook stem>.py``, one top-level function per
exercise with the exercise's name (``%load -s <name> solutions/<stem>.py`` pastes one of them into a cell).
:func:`with_solutions` puts them into a notebook in place of the stubs; ``python -m crossvit.exercises solve
NOTEBOOK...`` writes such solved copies, and ``python -m crossvit.exercises list`` prints :data:`EXERCISES`.

The package has one module per notebook (``nb01_patch_embedding`` ... ``nb07_imagenet``), the helpers they share
(:mod:`~crossvit.exercises.common`), and the notebook tooling (:mod:`~crossvit.exercises.notebook`); every checker
is importable from here, as ``exercises.check_<name>``.
"""

from .common import EXERCISES, Exercise, ExerciseError, ExerciseTypeError
from .hints import HINTS, hint, reset_hints
from .nb01_patch_embedding import check_embed_patches, check_patchify, check_token_sequence
from .nb02_dual_branch_encoding import check_cls_attention_row, check_logits_from_heads
from .nb03_cross_attention import check_fusion_direction, check_record_with_hooks
from .nb04_rollout import check_gradient_weighted_attention, check_rollout, check_spread_to_pixels
from .nb05_attributions import (
    check_integrated_gradients,
    check_lrp_attention,
    check_pointing_hits,
    check_saliency_map,
)
from .nb06_training import check_lr_schedule, check_train_with_one_change
from .nb07_imagenet import check_eval_transform, check_top_predictions
from .notebook import (
    EXERCISE_TAG,
    exercise_cells,
    exercise_name,
    solution_functions,
    solutions_path,
    with_solutions,
)
from .questions import QUESTIONS, ask

__all__ = [
    "EXERCISES",
    "EXERCISE_TAG",
    "ask",
    "Exercise",
    "ExerciseError",
    "ExerciseTypeError",
    "HINTS",
    "QUESTIONS",
    "check_cls_attention_row",
    "check_embed_patches",
    "check_eval_transform",
    "check_fusion_direction",
    "check_gradient_weighted_attention",
    "check_integrated_gradients",
    "check_logits_from_heads",
    "check_lrp_attention",
    "check_lr_schedule",
    "check_patchify",
    "check_pointing_hits",
    "check_record_with_hooks",
    "check_rollout",
    "check_saliency_map",
    "check_spread_to_pixels",
    "check_token_sequence",
    "check_top_predictions",
    "check_train_with_one_change",
    "exercise_cells",
    "hint",
    "reset_hints",
    "exercise_name",
    "solution_functions",
    "solutions_path",
    "with_solutions",
]
