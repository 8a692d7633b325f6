"""What a checker does around the learner's function (crossvit.exercises.guard, run_learner), tried as a student
who wants a ✓ without doing the work would try it, and as a user whose own state must survive a check. Each case
passed the checkers before this guard (an audit found them); the correct solutions still pass (test_exercises)."""

from __future__ import annotations

import cProfile
import importlib.util
import inspect
import sys
import threading
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import crossvit
from crossvit import exercises
from crossvit.exercises import ExerciseError
from crossvit.train import lr_factor

ROOT = Path(__file__).resolve().parent.parent


def solution(stem: str, name: str):
    spec = importlib.util.spec_from_file_location(f"guard_solutions_{stem}", ROOT / "notebooks" / "solutions" /
                                                  f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.fixture(scope="module")
def small_view():
    model = crossvit.load_pretrained()
    images = crossvit.data.make_shapes(2, seed=crossvit.data.UNUSED_SEED_BASE + 61)[0]
    return model, model.branch_images(images)["small"]


def _unfold(x, p):
    return F.unfold(x, p, stride=p).transpose(1, 2)


# -- the library function run where the watch cannot see it ---------------------------------------------------------

def test_a_shortcut_run_in_another_thread_or_with_the_watch_off_is_refused(small_view):
    _, view = small_view

    def in_a_thread(x, p):
        out = {}
        worker = threading.Thread(target=lambda: out.setdefault("r", _unfold(x, p)))
        worker.start()
        worker.join()
        return out["r"]

    def watch_off(x, p):
        sys.setprofile(None)
        return _unfold(x, p)

    for cheat, what in ((in_a_thread, "a new thread"), (watch_off, "sys.setprofile")):
        with pytest.raises(ExerciseError, match=f"where the checker cannot follow it \\({what}"):
            exercises.check_patchify(cheat, view, 12)


def test_a_copy_of_the_library_functions_code_is_refused():
    copied = types.FunctionType(lr_factor.__code__.replace(co_firstlineno=lr_factor.__code__.co_firstlineno + 1),
                                lr_factor.__globals__, "my_schedule")
    namespace: dict = {}
    exec(compile("\n\n" + inspect.getsource(lr_factor), "<cell>", "exec"), lr_factor.__globals__ | namespace,
         namespace)
    for cheat in (copied, namespace["lr_factor"]):
        with pytest.raises(ExerciseError, match="calls crossvit.train.lr_factor"):
            exercises.check_lr_schedule(cheat, 40, 5)


def test_the_checkers_own_reference_helpers_are_refused():
    from crossvit.exercises.nb04_rollout import _full_rollout

    model = crossvit.load_pretrained()
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(crossvit.data.make_shapes(2, seed=crossvit.data.UNUSED_SEED_BASE + 62)[0])
    with pytest.raises(ExerciseError, match="calls the checker's own crossvit.exercises.nb04_rollout._full_rollout"):
        exercises.check_rollout(lambda maps: _full_rollout(maps).float(), rec, "small")


# -- answers that redefine comparing, or the tools compared with ----------------------------------------------------

class _AlwaysClose(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types_, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.Tensor.equal):
            return True
        return super().__torch_function__(func, types_, args, kwargs or {})


def test_a_tensor_subclass_that_redefines_comparing_is_refused(small_view):
    _, view = small_view
    b, _, h, w = view.shape
    with pytest.raises(ExerciseError, match="a subclass of torch.Tensor; return a plain torch.Tensor"):
        exercises.check_patchify(lambda x, p: torch.zeros(b, (h // p) * (w // p), 3 * p * p).as_subclass(
            _AlwaysClose), view, 12)


def test_replacing_torchs_comparison_is_refused_and_undone(small_view):
    _, view = small_view
    allclose, equal = torch.allclose, torch.equal

    def patched(x, p):
        torch.allclose = torch.equal = lambda *a, **k: True
        return torch.zeros(x.shape[0], 64, 3 * p * p)

    with pytest.raises(ExerciseError, match="replaced or changed torch.allclose"):
        exercises.check_patchify(patched, view, 12)
    assert torch.allclose is allclose and torch.equal is equal


def test_changing_the_model_is_refused_and_undone():
    model = crossvit.load_pretrained()
    images = crossvit.data.make_shapes(2, seed=crossvit.data.UNUSED_SEED_BASE + 63)[0]
    site = "blocks.0.small.self.0"
    attention_map = dict(model.named_modules())["blocks.0.small.self.0.attn.attention_map"] if \
        "blocks.0.small.self.0.attn.attention_map" in dict(model.named_modules()) else \
        next(s.module for s in crossvit.attention_sites(model) if s.name == site)
    scale = attention_map.scale
    row = solution("02_dual_branch_encoding", "cls_attention_row")

    def flatten_the_maps(layer, tokens):
        attention_map.scale = 0.0  # every recorded map uniform from now on
        return row(layer, tokens)

    with pytest.raises(ExerciseError, match="changed the model it was given"):
        exercises.check_cls_attention_row(flatten_the_maps, model, images, site)
    assert attention_map.scale == scale
    exercises.check_cls_attention_row(row, model, images, site)  # the model works as before


# -- a check leaves the caller's own state alone --------------------------------------------------------------------

def test_a_check_keeps_an_open_recording_and_a_running_profiler(capsys):
    model = crossvit.load_pretrained()
    images = crossvit.data.make_shapes(2, seed=crossvit.data.UNUSED_SEED_BASE + 64)[0]
    record = solution("03_cross_attention_and_hooks", "record_with_hooks")
    with crossvit.record_attention(model) as rec:
        with torch.no_grad():
            model(images)
        before = {k: v.clone() for k, v in rec.sites.items()}
        exercises.check_record_with_hooks(record, model, images[:1])  # removed the recording's hooks before
        assert {k: v.shape for k, v in rec.sites.items()} == {k: v.shape for k, v in before.items()}  # untouched
        with torch.no_grad():
            model(images.flip(-1))
        assert len(rec.sites) == len(before) and rec.num_forwards == 2  # and it goes on recording
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        exercises.check_lr_schedule(solution("06_training_your_own", "lr_schedule"), 40, 5)  # used to fail
        assert sys.getprofile() is profiler  # still profiling
    finally:
        profiler.disable()
    assert "\u2713" in capsys.readouterr().out


def test_count_flops_and_evaluate_leave_a_callers_maps_alone():
    from crossvit.flops import count_flops
    from crossvit.train import evaluate

    model = crossvit.load_pretrained()
    images, labels, _ = crossvit.data.make_shapes(3, seed=crossvit.data.UNUSED_SEED_BASE + 65)
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
        kept = {k: v.clone() for k, v in rec.sites.items()}
        count_flops(model)
        evaluate(model, images, labels)
        assert rec.num_forwards == 1
        assert all(torch.equal(rec.sites[k], v) for k, v in kept.items())


def test_a_rollout_returned_in_bfloat16_is_held_to_float32s_tolerance():
    """The tolerance loosens for maps in half precision (a bfloat16 model's), not because the answer is: a rollout
    8 % off, returned in bfloat16, passed (the tolerance was then 9 %)."""
    model = crossvit.load_pretrained()
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(crossvit.data.make_shapes(2, seed=crossvit.data.UNUSED_SEED_BASE + 66)[0])
    rollout = solution("04_attention_rollout", "rollout")
    with pytest.raises(ExerciseError, match="differ"):
        exercises.check_rollout(lambda maps: (rollout(maps) * 1.08).bfloat16(), rec, "small")


def test_class_names_that_redefine_comparing_are_read_as_plain_strings():
    class Agreeable(str):
        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

        __hash__ = str.__hash__

    model = crossvit.create_model("crossvit_tiny_240").eval()
    logits = torch.randn(2, 1000, generator=torch.Generator().manual_seed(5))
    top = solution("07_imagenet_crossvit", "top_predictions")

    def wrong_names(lg, names, k):
        return [[(Agreeable("not a class"), p) for _, p in row] for row in top(lg, names, k)]

    with pytest.raises(ExerciseError):
        exercises.check_top_predictions(wrong_names, model, logits, 5)


def test_reasonable_answers_written_differently_are_accepted(capsys):
    """A schedule of 0-d tensors (torch.cos gives them) was refused ("found Tensor"), and pointing hits as a numpy
    bool array, where a list of bools passed."""
    import math

    import numpy as np

    def tensor_schedule(step, steps, warmup_steps):
        if step < warmup_steps:
            return torch.tensor((step + 1) / warmup_steps)
        return 0.5 * (1 + torch.cos(torch.tensor(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps))))

    exercises.check_lr_schedule(tensor_schedule, 40, 5)
    hits = solution("05_attributions_compared", "pointing_hits")
    maps = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(9))
    masks = torch.zeros(3, 96, 96, dtype=torch.bool)
    masks[:, 30:60, 30:60] = True
    exercises.check_pointing_hits(lambda m, k: np.asarray(hits(m, k)), maps, masks)
    assert capsys.readouterr().out.count("\u2713") == 2


def test_answers_that_hold_only_for_the_checkers_first_input_are_refused(small_view):
    """A table of the right values, or shapes written in as numbers, passed: each checker saw one input."""
    _, view = small_view
    table = [lr_factor(s, 40, 5) for s in range(40)]
    with pytest.raises(ExerciseError, match="not from a table"):
        exercises.check_lr_schedule(lambda step, steps, warmup_steps: table[step % 40], 40, 5)
    with pytest.raises(ExerciseError, match="IndexError.*not from a table"):  # a plain table runs out
        exercises.check_lr_schedule(lambda step, steps, warmup_steps: table[step], 40, 5)
    b, c = view.shape[:2]

    def fixed(x, p):
        return x.reshape(b, c, 8, p, 8, p).permute(0, 2, 4, 1, 3, 5).reshape(b, 64, c * p * p)

    with pytest.raises(ExerciseError, match="on a second, 84x96 px input"):
        exercises.check_patchify(fixed, view, 12)


def test_a_progress_bar_in_the_learners_function_is_no_escape(capsys):
    """tqdm starts a monitor thread for its bars (exercise 6.2 trains with one): a thread that an installed
    package starts is not the learner's escape."""
    from tqdm.std import tqdm

    schedule = solution("06_training_your_own", "lr_schedule")

    def with_a_bar(step, steps, warmup_steps):
        with tqdm(total=1, disable=False, file=sys.stderr) as bar:  # a text bar; its monitor thread starts now
            bar.update()
        return schedule(step, steps, warmup_steps)

    exercises.check_lr_schedule(with_a_bar, 40, 5)
    assert "\u2713" in capsys.readouterr().out


def test_torch_wrapping_its_own_functions_on_first_import_is_no_change(capsys, monkeypatch):
    """Importing torch._dynamo the first time wraps torch.manual_seed (functools.wraps, in torch's own code): a
    learner's function that happens to trigger that import is not refused. A wrapper of the learner's own is."""
    import functools

    import torch._compile

    original = torch.manual_seed
    schedule = solution("06_training_your_own", "lr_schedule")
    wrapped_by_torch = torch._compile._disable_dynamo(original)  # what the import does

    def first_import(step, steps, warmup_steps):
        torch.manual_seed = wrapped_by_torch
        return schedule(step, steps, warmup_steps)

    monkeypatch.setattr(torch, "manual_seed", original)
    exercises.check_lr_schedule(first_import, 40, 5)
    assert "\u2713" in capsys.readouterr().out

    def own_wrapper(step, steps, warmup_steps):
        torch.allclose = functools.wraps(torch.allclose)(lambda *a, **k: True)
        return schedule(step, steps, warmup_steps)

    allclose = torch.allclose
    with pytest.raises(ExerciseError, match="replaced or changed torch.allclose"):
        exercises.check_lr_schedule(own_wrapper, 40, 5)
    assert torch.allclose is allclose
