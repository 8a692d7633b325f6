"""Each choice question's accepted answer agrees with what the notebook it belongs to computes: the answer is
recomputed here with the library, on the model and the images the notebook uses (read from the notebook where it
sets them), and held against the option the question accepts and the reasons it gives against the others.

Every choice question is listed in ANSWER_CHECKS: a question added without a check fails
``test_every_choice_question_is_checked``."""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import pytest
import torch

import crossvit
from crossvit import data
from crossvit.exercises.questions import QUESTIONS, question

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def right(question_id: str) -> str:
    q = question(question_id)
    return q.options[q.correct]


def notebook_source(stem: str) -> str:
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


def report_seed(stem: str) -> int:
    """The data seed of the held-out images a notebook scores its methods on (``DATA_SEED + k`` in its code)."""
    offsets = re.findall(r"make_shapes\((?:N_IMAGES|100), seed=DATA_SEED \+ (\d+)\)", notebook_source(stem))
    assert len(set(offsets)) == 1, offsets
    return data.UNUSED_SEED_BASE + int(offsets[0])


@pytest.fixture(scope="module")
def model():
    return crossvit.load_pretrained().eval()


def check_1a(model):  # the patch grids of the bundled model
    small, large = model.num_patches("small"), model.num_patches("large")
    assert (small, large) == (64, 25)
    assert re.findall(r"\d+", right("1.a")) == [str(small), str(large)]


def check_2a(model):  # model(images) is the mean of the two heads' logits
    images, _, _ = data.make_shapes(4, seed=data.UNUSED_SEED_BASE)
    with torch.no_grad():
        heads = model.branch_logits(model.forward_features(images))
        logits = model(images)
    assert torch.allclose(logits, (heads["small"] + heads["large"]) / 2, atol=1e-5)
    assert not torch.allclose(logits, heads["small"] + heads["large"], atol=1e-3)
    assert "(s + l) / 2" in right("2.a")


def check_3a(model):  # the large CLS's cross-attention map in a fusion layer
    images, _, _ = data.make_shapes(2, seed=data.UNUSED_SEED_BASE)
    with crossvit.record_attention(model, sites="cross") as rec, torch.no_grad():
        model(images)
    (shape,) = {tuple(a.shape) for a in rec.cross_attention("large")}
    heads = shape[1]
    assert shape == (2, heads, 1, 1 + model.num_patches("small"))
    assert f"(B, heads, 1, {shape[-1]})" in right("3.a")


def check_4a(model):  # rollout of uniform attention tends to the uniform row
    n, layers = 1 + model.num_patches("small"), 12
    uniform = [torch.full((1, 1, n, n), 1.0 / n) for _ in range(layers)]
    row = crossvit.rollout.rollout_from_maps(uniform)  # (1, N - 1): the CLS row over the patches
    expected = (1 - 0.5 ** layers) / n  # 0.5^L I + (1 - 0.5^L) U, as the reason says
    assert torch.allclose(row, torch.full_like(row, expected), rtol=1e-5)
    assert right("4.a").startswith("uniform")


def check_5a(model):  # the random map's pointing game, on the images notebook 05 scores
    images, _, masks = data.make_shapes(100, seed=report_seed("05_attributions_compared"))
    area = masks.float().mean().item()
    score = crossvit.metrics.pointing_game(crossvit.explain(model, images, "random"), masks).score
    (percent,) = re.findall(r"about (\d+) %", right("5.a"))
    assert abs(100 * area - int(percent)) < 1.5, (area, percent)  # "here about 9 %"
    assert abs(score - area) < 0.06, (score, area)  # the random row lands about where the area says
    assert 0 < score < 0.25  # neither "0 %" nor "about 25 %" nor "about 50 %"


def check_5c(model):  # the insertion curves of notebook 05: logits, back early, areas that hardly differ
    source = notebook_source("05_attributions_compared")
    assert 'score="logit"' in source
    (curves,) = re.findall(r"N_CURVES = (\d+)", source)
    images, _, _ = data.make_shapes(int(curves), seed=report_seed("05_attributions_compared"))
    with torch.no_grad():
        predicted = model(images).argmax(1)
    fractions = [0.0] + [2.0 ** -k for k in range(10, -1, -1)]  # the notebook's FRACTIONS
    assert "[0.0] + [2.0 ** -k for k in range(10, -1, -1)]" in source
    reached, areas = {}, {}
    for method in ("joint_rollout", "gradient_rollout", "saliency"):
        maps = crossvit.explain(model, images, method, target=predicted)
        result = crossvit.metrics.deletion_insertion(model, images, maps, predicted, fractions=fractions,
                                                     score="logit", batch_size=128)
        curve = result.insertion.mean(0)  # (fractions,)
        final = curve[-1].item()
        assert final > 2, "the curves are logits, not probabilities that saturate at 1"
        assert curve[0].item() < 0.5 * final, "the blurred start is far below the whole image's logit"
        reached[method] = next(f for f, v in zip(fractions, curve.tolist()) if v >= 0.8 * final)
        areas[method] = result.mean_insertion_auc
        assert areas[method] > 0.75 * final  # the area is mostly the flat stretch after the logit is back
    assert max(areas.values()) - min(areas.values()) < 0.1 * max(areas.values())  # areas hardly differ ...
    assert max(reached.values()) >= 4 * min(reached.values())  # ... while the curves rise at different points
    assert right("5.c").startswith("a linear axis is mostly fractions after the logit is back")


def check_6a(model):  # the warm-up multiplier at step 0 of notebook 06's run
    from crossvit.train import lr_factor

    source = notebook_source("06_training_your_own")
    steps = int(re.search(r"steps=(\d+),", source).group(1))
    warmup = int(re.search(r"warmup_steps=(\d+),", source).group(1))
    assert lr_factor(0, steps, warmup) == pytest.approx(1 / warmup)
    assert right("6.a") == f"1 / {warmup}"
    assert f"{warmup}" in question("6.a").why


def check_7a(model):  # crossvit_15_240's eval transform: floor(240 / crop_pct)
    with torch.device("meta"):
        imagenet = crossvit.create_model("crossvit_15_240")
    config = crossvit.data_config(imagenet)
    size = config["input_size"][-1]
    assert math.floor(size / config["crop_pct"]) == 274
    assert f"floor({size} / {config['crop_pct']:g})" in right("7.a")


ANSWER_CHECKS = {"1.a": check_1a, "2.a": check_2a, "3.a": check_3a, "4.a": check_4a, "5.a": check_5a,
                 "5.c": check_5c, "6.a": check_6a, "7.a": check_7a}


def question_text(stem: str, question_id: str) -> str:
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if c.source.startswith(f"**Question {question_id}**")]
    return cell.source


def test_question_2b_quotes_the_ablation_table_it_argues_from(model):
    """A written question that quotes numbers quotes the ones the notebook's table shows (it once quoted
    figures/ablations.md's, on other images)."""
    from crossvit.ablation import head_accuracies, zero_cross_attention

    text = question_text("02_dual_branch_encoding", "2.b")
    before, after = (int(v) for v in re.search(r"large head alone falls from (\d+) % to (\d+) %", text).groups())
    stays = int(re.search(r"small head alone stay at (\d+) %", text).group(1))
    offset = int(re.search(r"make_shapes\(200, seed=DATA_SEED \+ (\d+)\)", notebook_source("02_dual_branch_encoding"))
                 .group(1))
    images, labels, _ = data.make_shapes(200, seed=data.UNUSED_SEED_BASE + offset)
    plain = head_accuracies(model, images, labels)
    with zero_cross_attention(model, ("large",)):
        ablated = head_accuracies(model, images, labels)
    assert round(100 * plain["large head"]) == before and round(100 * ablated["large head"]) == after
    assert round(100 * ablated["model"]) == stays and round(100 * ablated["small head"]) == stays


def test_every_choice_question_is_checked():
    assert set(ANSWER_CHECKS) == {q.id for q in QUESTIONS if q.kind == "choice"}


@pytest.mark.parametrize("question_id", sorted(ANSWER_CHECKS))
def test_the_accepted_answer_agrees_with_the_notebook(model, question_id):
    ANSWER_CHECKS[question_id](model)
