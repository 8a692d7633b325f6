"""Property-based tests (Hypothesis) of the invariants the documentation states, drawing options, dtypes, batch
sizes and seeds over their documented ranges:

* every rollout row sums to 1 (per-branch: every head fusion and discard ratio, ``include_cls``; joint: every head
  fusion and start block), against a float64 full-matrix reference;
* an image's map does not depend on the other images of its batch (every method but the ``random`` baseline,
  whose seeded noise is drawn per call);
* seeds are deterministic and distinct over ``SEED_RANGE``;
* no public function modifies its inputs;
* ``explain`` and ``deletion_insertion`` leave the model's state (every train/eval flag, ``requires_grad``,
  ``.grad``, the weights) as they found it;
* neither the command line nor ``save_checkpoint`` replaces a file the user owns.

The number of examples comes from the profile tests/conftest.py loads: a few in the fast set, more in ``make test``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit import cli, metrics, photos
from crossvit.checkpoint import BUNDLED_CHECKPOINT, save_checkpoint
from crossvit.data import UNUSED_SEED_BASE
from crossvit.explain import METHODS
from crossvit.rollout import (
    HEAD_FUSIONS,
    GraphLayer,
    discard_lowest,
    fuse_heads,
    joint_rows,
    rollout_from_maps,
)
from crossvit.utils import SEED_RANGE, seeded_generator

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SEEDS = st.integers(*SEED_RANGE)
CHEAP_OPTIONS = {"integrated_gradients": {"n_steps": 4}}  # few steps: the property, not the approximation
THOROUGH = os.environ.get("CROSSVIT_HYPOTHESIS_PROFILE") == "thorough"
DRAWN_METHODS = [m for m in METHODS if THOROUGH or m not in ("occlusion", "integrated_gradients")]
"""Methods the explain properties draw from: all in ``make test``; the fast set leaves out the two that cost tens of
model calls per image."""


def attention(generator: torch.Generator, b: int, heads: int, nq: int, nk: int, dtype: torch.dtype) -> torch.Tensor:
    """Row-stochastic attention maps (B, heads, Nq, Nk) from random scores, in ``dtype``."""
    scores = torch.randn(b, heads, nq, nk, generator=generator, dtype=torch.float64) * 3
    return scores.softmax(dim=-1).to(dtype)


def tolerance(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 2e-6


# ----------------------------------------------------------------------------------------------------------------
# rollout rows sum to 1


@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 3), n=st.integers(2, 9), heads=st.integers(1, 4),
       layers=st.integers(1, 4), head_fusion=st.sampled_from(HEAD_FUSIONS),
       discard_ratio=st.one_of(st.just(0.0), st.floats(0.0, 1.0, exclude_max=True)), dtype=st.sampled_from(DTYPES))
def test_per_branch_rollout_rows_sum_to_one(seed, b, n, heads, layers, head_fusion, discard_ratio, dtype):
    g = torch.Generator().manual_seed(seed)
    maps = [attention(g, b, heads, n, n, dtype) for _ in range(layers)]
    row = rollout_from_maps(maps, head_fusion, discard_ratio, include_cls=True)  # (B, N)
    assert row.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert (row >= 0).all()
    torch.testing.assert_close(row.sum(-1).double(), torch.ones(b, dtype=torch.float64), rtol=0,
                               atol=tolerance(dtype) * layers * n)
    torch.testing.assert_close(rollout_from_maps(maps, head_fusion, discard_ratio), row[:, 1:])
    if discard_ratio == 0.0:  # reference: full matrices in float64, rownorm(0.5 A + 0.5 I), R = A'_L ... A'_1
        result = torch.eye(n, dtype=torch.float64).repeat(b, 1, 1)
        for a in maps:
            mixed = 0.5 * fuse_heads(a.double(), head_fusion) + 0.5 * torch.eye(n, dtype=torch.float64)
            result = (mixed / mixed.sum(-1, keepdim=True)) @ result
        torch.testing.assert_close(row.double(), result[:, 0], rtol=1e-5, atol=1e-6)


@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 3), ns=st.integers(2, 6), nl=st.integers(2, 6),
       kinds=st.lists(st.sampled_from(["small", "large", "fusion"]), min_size=1, max_size=6),
       head_fusion=st.sampled_from(HEAD_FUSIONS), heads=st.integers(1, 3), dtype=st.sampled_from(DTYPES))
def test_joint_rollout_rows_sum_to_one(seed, b, ns, nl, kinds, head_fusion, heads, dtype):
    g = torch.Generator().manual_seed(seed)
    counts = {"small": ns, "large": nl}
    layers = []
    for kind in kinds:
        if kind == "fusion":
            for branch, other in (("small", "large"), ("large", "small")):
                c = fuse_heads(attention(g, b, heads, 1, counts[other], dtype), head_fusion)[:, 0]  # (B, 1 + N_o - 1)
                layers.append(GraphLayer("cross", branch, c))
        else:
            n = counts[kind]
            layers.append(GraphLayer("self", kind, fuse_heads(attention(g, b, heads, n, n, dtype), head_fusion)))
    rows = joint_rows(layers, counts)  # (B, 2, Ns + Nl)
    assert (rows >= 0).all()
    torch.testing.assert_close(rows.sum(-1).double(), torch.ones(b, 2, dtype=torch.float64), rtol=0,
                               atol=tolerance(dtype) * len(layers) * (ns + nl))


@pytest.fixture(scope="module")
def recorded(bundled, shapes):
    with crossvit.record_attention(bundled) as rec, torch.no_grad():
        bundled(shapes[0])
    return rec


@given(head_fusion=st.sampled_from(HEAD_FUSIONS), start_block=st.integers(-3, 2), include_cls=st.booleans(),
       branch=st.sampled_from(["small", "large"]),
       discard_ratio=st.one_of(st.just(0.0), st.floats(0.0, 1.0, exclude_max=True)))
def test_recorded_rollouts_sum_to_one(recorded, head_fusion, start_block, include_cls, branch, discard_ratio):
    joint = crossvit.joint_rollout(recorded, head_fusion, include_cls=include_cls, start_block=start_block)
    total = joint["small"]["small"].sum(-1) + joint["small"]["large"].sum(-1)
    if include_cls:
        torch.testing.assert_close(total, torch.ones(4), rtol=0, atol=1e-5)
    else:
        assert (total <= 1 + 1e-5).all()
    row = crossvit.attention_rollout(recorded, branch, head_fusion, discard_ratio, start_block, include_cls=True)
    torch.testing.assert_close(row.sum(-1), torch.ones(4), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# maps do not depend on the other images of the batch


POOL_SEED = UNUSED_SEED_BASE + 28


@pytest.fixture(scope="module")
def pool():
    return crossvit.data.make_shapes(5, POOL_SEED, 96)


@pytest.fixture(scope="module")
def alone(model, pool):
    """Each pool image's map computed in a batch of its own, by method (filled lazily)."""
    cache: dict[tuple[str, int], torch.Tensor] = {}

    def get(method: str, i: int) -> torch.Tensor:
        if (method, i) not in cache:
            cache[method, i] = crossvit.explain(model, pool[0][i:i + 1], method, target=int(pool[1][i]),
                                                **CHEAP_OPTIONS.get(method, {}))[0]
        return cache[method, i]

    return get


@given(method=st.sampled_from([m for m in DRAWN_METHODS if m != "random"]),
       batch=st.lists(st.integers(0, 4), min_size=1, max_size=4))
def test_an_images_map_does_not_depend_on_its_batch(model, pool, alone, method, batch):
    images, labels, _ = pool
    maps = crossvit.explain(model, images[batch], method, target=labels[batch], **CHEAP_OPTIONS.get(method, {}))
    for k, i in enumerate(batch):
        expected = alone(method, i)
        scale = expected.abs().max().clamp(min=1e-12)
        torch.testing.assert_close(maps[k] / scale, expected / scale, rtol=1e-4, atol=2e-5)


@given(ratio=st.floats(0.0, 1.0, exclude_max=True), seed=st.integers(0, 2**32 - 1), b=st.integers(2, 4))
def test_discard_is_per_image(ratio, seed, b):
    fused = attention(torch.Generator().manual_seed(seed), b, 1, 6, 6, torch.float64)[:, 0]
    together = discard_lowest(fused, ratio)
    for i in range(b):
        assert torch.equal(together[i], discard_lowest(fused[i:i + 1], ratio)[0])


# ----------------------------------------------------------------------------------------------------------------
# seeds: deterministic and distinct over SEED_RANGE


@given(seed=SEEDS, other=SEEDS)
def test_seeds_are_deterministic_and_distinct(seed, other):
    first, again = crossvit.data.make_shapes(1, seed, 48), crossvit.data.make_shapes(1, seed, 48)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert torch.equal(torch.rand(8, generator=seeded_generator(seed)), torch.rand(8, generator=seeded_generator(seed)))
    if other != seed:
        assert not torch.equal(torch.rand(8, generator=seeded_generator(seed)),
                               torch.rand(8, generator=seeded_generator(other)))
        assert not torch.equal(first[0], crossvit.data.make_shapes(1, other, 48)[0])


@given(seed=SEEDS)
def test_the_random_baseline_is_seeded(model, pool, seed):
    images = pool[0][:2]
    maps = crossvit.explain(model, images, "random", seed=seed)
    torch.testing.assert_close(crossvit.explain(model, images, "random", seed=seed), maps, rtol=0, atol=0)
    assert not torch.equal(crossvit.explain(model, images, "random", seed=seed ^ 1), maps)


@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=SEED_RANGE[1] + 1)))
def test_seeds_outside_the_range_are_refused(model, pool, seed):
    with pytest.raises(ValueError, match="seed"):
        crossvit.data.make_shapes(1, seed, 48)
    with pytest.raises(ValueError, match="seed"):
        crossvit.explain(model, pool[0][:1], "random", seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# no public function modifies its inputs


def frozen(value):
    """A deep snapshot of tensors / arrays / PIL images (values, dtype, requires_grad)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().clone(), value.dtype, value.requires_grad)
    if isinstance(value, np.ndarray):
        return ("array", value.copy())
    if isinstance(value, Image.Image):
        return ("image", value.mode, value.size, value.tobytes())
    if isinstance(value, (list, tuple)):
        return ("seq", [frozen(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: frozen(v) for k, v in value.items()})
    return ("other", value)


def same(a, b) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "tensor":
        return a[2] == b[2] and a[3] == b[3] and a[1].shape == b[1].shape and torch.equal(
            torch.nan_to_num(a[1].double(), nan=7.0), torch.nan_to_num(b[1].double(), nan=7.0))
    if a[0] == "array":
        return a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1])
    if a[0] == "seq":
        return len(a[1]) == len(b[1]) and all(same(x, y) for x, y in zip(a[1], b[1]))
    if a[0] == "dict":
        return a[1].keys() == b[1].keys() and all(same(a[1][k], b[1][k]) for k in a[1])
    return a == b


def _calls(model, rec, images, labels, masks, maps, g):
    """(name, function, inputs) of the public functions under test, on inputs drawn from ``g``."""
    heads = attention(g, images.shape[0], 2, 5, 5, torch.float32)
    grid = model.num_patches("small")
    patch_map = torch.rand(images.shape[0], grid, generator=g)
    layers = [GraphLayer("self", "small", heads.mean(1)), GraphLayer("cross", "small", torch.rand(images.shape[0], 3,
                                                                                                   generator=g))]
    array = (torch.rand(30, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
    return [
        ("fuse_heads", lambda x: fuse_heads(x, "max"), (heads,)),
        ("discard_lowest", lambda x: discard_lowest(x, 0.5), (heads.mean(1),)),
        ("rollout_from_maps", lambda x: rollout_from_maps([x, x], "min", 0.3), (heads,)),
        ("joint_rows", lambda ls: joint_rows(ls, {"small": 5, "large": 3}), (layers,)),
        ("gradient_weighted", crossvit.rollout.gradient_weighted, (heads, torch.randn(heads.shape, generator=g))),
        ("patch_map_to_pixels", lambda m: crossvit.patch_map_to_pixels(model, "small", m, density=True),
         (patch_map,)),
        ("pointing_game", lambda m, k: metrics.pointing_game(m, k, tolerance=2), (maps, masks)),
        ("mass_inside_mask", metrics.mass_inside_mask, (maps, masks)),
        ("argmax_points", metrics.argmax_points, (maps,)),
        ("gaussian_blur", lambda x: metrics.gaussian_blur(x, 2.0), (images,)),
        ("deletion_insertion", lambda x, m, t: metrics.deletion_insertion(model, x, m, t, steps=2), (images, maps,
                                                                                                   labels)),
        ("preprocess(array)", lambda a: crossvit.preprocess(model, a), (array,)),
        ("preprocess(PIL)", lambda a: crossvit.preprocess(model, [a]), (Image.fromarray(array).convert("RGBA"),)),
        ("read_image", photos.read_image, (Image.fromarray(array[..., 0]).convert("I"),)),
        ("display_images", lambda x: crossvit.display_images(model, x), (images,)),
        ("top_classes", lambda x: crossvit.top_classes(model, x, 2), (torch.randn(2, 4, generator=g),)),
        ("joint_rollout", lambda r: crossvit.joint_rollout(r, "max", include_cls=True), (rec,)),
        ("attention_rollout", lambda r: crossvit.attention_rollout(r, "large", "min", 0.5), (rec,)),
    ]


@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 10_000), b=st.integers(1, 3))
def test_public_functions_never_modify_their_inputs(model, pool, recorded, seed, which, b):
    g = torch.Generator().manual_seed(seed)
    images, labels, masks = (t[:b] for t in pool)
    maps = torch.rand(b, 96, 96, generator=g)
    calls = _calls(model, recorded, images, labels, masks, maps, g)
    name, function, inputs = calls[which % len(calls)]
    if name in ("joint_rollout", "attention_rollout"):  # the recorder's maps are the inputs
        before = frozen(dict(recorded.sites))
        function(*inputs)
        assert same(frozen(dict(recorded.sites)), before), name
        return
    before = frozen(list(inputs) if name != "joint_rows" else [layer.weights for layer in inputs[0]])
    function(*inputs)
    after = frozen(list(inputs) if name != "joint_rows" else [layer.weights for layer in inputs[0]])
    assert same(after, before), name


@given(method=st.sampled_from(DRAWN_METHODS), b=st.integers(1, 3), with_target=st.booleans(),
       requires_grad=st.booleans())
def test_explain_never_modifies_its_inputs(model, pool, method, b, with_target, requires_grad):
    images = pool[0][:b].clone().requires_grad_(requires_grad)
    target = pool[1][:b].clone() if with_target else None
    before = frozen([images, target])
    crossvit.explain(model, images, method, target=target, **CHEAP_OPTIONS.get(method, {}))
    assert same(frozen([images, target]), before)
    assert images.grad is None


# ----------------------------------------------------------------------------------------------------------------
# the model's state is restored


@given(method=st.sampled_from([*DRAWN_METHODS, "deletion_insertion"]), data=st.data())
def test_the_models_state_is_restored(model, pool, method, data):
    names = [name for name, _ in model.named_modules()]
    params = list(model.named_parameters())
    training = data.draw(st.lists(st.sampled_from(names), max_size=6, unique=True), label="modules in train()")
    frozen_params = data.draw(st.lists(st.integers(0, len(params) - 1), max_size=4, unique=True), label="frozen")
    with_grad = data.draw(st.lists(st.integers(0, len(params) - 1), max_size=4, unique=True), label="with .grad")
    try:
        model.eval()
        for name in training:
            model.get_submodule(name).training = True
        for k in frozen_params:
            params[k][1].requires_grad_(False)
        for k in with_grad:
            params[k][1].grad = torch.full_like(params[k][1], 0.25)
        modes = {name: m.training for name, m in model.named_modules()}
        flags = [p.requires_grad for _, p in params]
        grads = [p.grad for _, p in params]
        weights = [p.detach().clone() for _, p in params]
        images, labels, _ = (t[:2] for t in pool)
        if method == "deletion_insertion":
            metrics.deletion_insertion(model, images, torch.rand(2, 96, 96), labels, steps=2)
        else:
            crossvit.explain(model, images, method, **CHEAP_OPTIONS.get(method, {}))
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert [p.requires_grad for _, p in params] == flags
        assert all(p.grad is g for (_, p), g in zip(params, grads))
        assert all(torch.equal(p, w) for (_, p), w in zip(params, weights))
        assert all(torch.equal(g, torch.full_like(g, 0.25)) for g in grads if g is not None)
    finally:
        model.eval()
        for _, p in params:
            p.requires_grad_(True)
            p.grad = None


# ----------------------------------------------------------------------------------------------------------------
# nothing the user owns is overwritten


@pytest.fixture(scope="module")
def loaded():
    """The bundled model, loaded once: the command line's load is replaced by this in the property below."""
    model = crossvit.load_pretrained()
    return model, "the bundled model"


@given(existing=st.sets(st.sampled_from(["cat.random.png", "dog.random.png", "notes.txt", "predictions.json",
                                         "cat.cls_attention.png", "link:cat.random.png"]), max_size=4),
       listed=st.sets(st.sampled_from(["cat.random.png", "dog.random.png", "old.random.png"]), max_size=3),
       methods=st.lists(st.sampled_from(["random", "cls_attention"]), min_size=1, max_size=2, unique=True),
       overwrite=st.booleans(), out_is_input=st.booleans())
def test_the_command_line_never_replaces_a_users_file(loaded, existing, listed, methods, overwrite, out_is_input):
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "load_model", lambda *a, **k: loaded)
        root = Path(tmp)
        inputs, out = root / "in", root / "out"
        inputs.mkdir()
        out.mkdir()
        for k, stem in enumerate(("cat", "dog")):
            Image.fromarray(np.full((20, 20, 3), 40 * k, dtype=np.uint8)).save(inputs / f"{stem}.png")
        owned: dict[str, bytes] = {}
        earlier = set()
        for name in sorted(existing):
            if name.startswith("link:"):
                (out / name[5:]).unlink(missing_ok=True)
                (out / name[5:]).symlink_to(root / "elsewhere.png")
            elif name == "predictions.json":
                earlier = set(listed)
                figures = [{"figures": {"random": figure}} for figure in sorted(earlier)]
                (out / name).write_text(json.dumps({"images": figures}))
            else:
                (out / name).write_bytes(f"user's {name}".encode())
        for name in existing:
            # (a file of the same name that a link replaced is not the user's content any more)
            if (not name.startswith("link:") and name != "predictions.json" and name not in earlier
                    and f"link:{name}" not in existing):
                owned[name] = (out / name).read_bytes()
        owned_inputs = {p.name: p.read_bytes() for p in inputs.iterdir()}
        argv = ["explain", str(inputs / "cat.png"), str(inputs / "dog.png"), "--out",
                str(inputs if out_is_input else out), "--method", *methods, *CHECKPOINT_ARGS]
        with open(os.devnull, "w") as devnull, pytest.MonkeyPatch.context() as quiet:
            quiet.setattr("sys.stderr", devnull)
            quiet.setattr("sys.stdout", devnull)
            code = cli.main(argv + (["--overwrite"] if overwrite else []))
        assert {p.name: p.read_bytes() for p in inputs.iterdir() if p.name in owned_inputs} == owned_inputs
        if out_is_input:
            assert code == 2 and sorted(p.name for p in inputs.iterdir()) == sorted(owned_inputs)
        for name, content in owned.items():
            assert (out / name).read_bytes() == content, name
        if "link:cat.random.png" in existing:
            assert (out / "cat.random.png").is_symlink()
        if code == 0:
            written = json.loads((out / "predictions.json").read_text())
            assert [image["stem"] for image in written["images"]] == ["cat", "dog"]


CHECKPOINT_ARGS = ("--checkpoint", str(BUNDLED_CHECKPOINT), "--device", "cpu", "--quiet")


@given(existing=st.sets(st.sampled_from(["m.safetensors", "m.json", "other.json"]), max_size=3),
       overwrite=st.booleans())
def test_save_checkpoint_never_replaces_without_overwrite(model, existing, overwrite):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in existing:
            (folder / name).write_bytes(f"user's {name}".encode())
        taken = existing & {"m.safetensors", "m.json"}
        if taken and not overwrite:
            with pytest.raises(FileExistsError):
                save_checkpoint(model, folder, name="m")
            for name in existing:
                assert (folder / name).read_bytes() == f"user's {name}".encode()
        else:
            save_checkpoint(model, folder, name="m", overwrite=overwrite)
            assert isinstance(crossvit.load_checkpoint(folder / "m.json"), crossvit.CrossViT)
        if "other.json" in existing:
            assert (folder / "other.json").read_bytes() == b"user's other.json"

