"""Issue 12: a kept map is never overwritten, and misuse gets a clear error instead of a silent wrong answer.

One section per case of the issue. Each test states the behaviour against an independent reference: a fresh
recording cloned before anything can overwrite it, the float32 result of the same model, a hand computation, or the
definition written out.
"""

import copy
import json
import time

import numpy as np
import pytest
import torch

import crossvit
from crossvit.checkpoint import save_checkpoint
from crossvit.metrics import pointing_game
from crossvit.rollout import GraphLayer, gradient_weighted, joint_rows, rollout_from_maps
from crossvit.train import main as train_main
from crossvit.widgets import attention_explorer, rollout_explorer


def _tiny_seed(seed: int = 0) -> crossvit.CrossViT:
    torch.manual_seed(seed)
    return crossvit.create_model("seed", image_size=32, num_classes=3, sm_dim=16, lg_dim=16, sm_patch_size=8,
                                 lg_patch_size=16, sm_enc_heads=2, lg_enc_heads=2, sm_enc_dim_head=8,
                                 lg_enc_dim_head=8, sm_enc_mlp_dim=16, lg_enc_mlp_dim=16, lg_enc_depth=1,
                                 cross_attn_depth=1, cross_attn_heads=2, cross_attn_dim_head=8, depth=2,
                                 dropout=0.0, emb_dropout=0.0).eval()


def _tiny_paper(**overrides) -> crossvit.CrossViT:
    torch.manual_seed(0)
    settings = dict(img_size=48, img_scale=(1.0, 32 / 48), patch_size=(12, 16), embed_dim=(16, 32),
                    depth=((1, 1, 0),) * 2, num_heads=(2, 2), mlp_ratio=(2.0, 2.0, 1.0), num_classes=4)
    return crossvit.CrossViT(crossvit.PaperConfig(**{**settings, **overrides})).eval()


def _images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _fresh_maps(model: crossvit.CrossViT, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference maps: one recording of its own, cloned at once."""
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(images)
    return {name: m.clone() for name, m in rec.sites.items()}


# ----------------------------------------------------------------------------------------------------------------
# 1. a kept map is never overwritten, whatever keeps it

SITE = "blocks.0.small.self.0"

HOLDERS = {
    "storage object": lambda m: m.untyped_storage(),
    "typed storage": lambda m: m._typed_storage(),
    "numpy array": lambda m: m.numpy(),
    "DLPack capsule": lambda m: torch.utils.dlpack.to_dlpack(m),
    "numpy from DLPack": lambda m: np.from_dlpack(m),
    "view": lambda m: m[1, 0],
    "detached alias": lambda m: m.detach(),
}


def _read_back(holder: object, like: torch.Tensor) -> torch.Tensor:
    """The values the holder sees now, as a tensor shaped like the map (or like the view it is)."""
    if isinstance(holder, torch.UntypedStorage):
        return torch.empty(0, dtype=like.dtype).set_(holder, 0, like.shape).clone()
    if isinstance(holder, torch.TypedStorage):
        return torch.empty(0, dtype=like.dtype).set_(holder._untyped_storage, 0, like.shape).clone()
    if isinstance(holder, np.ndarray):
        return torch.from_numpy(holder.copy())
    if isinstance(holder, torch.Tensor):
        return holder.clone()
    return torch.from_dlpack(holder).clone()  # a DLPack capsule


@pytest.mark.parametrize("how", list(HOLDERS))
@pytest.mark.parametrize("where", ["same recording", "next recording"])
def test_a_kept_map_is_never_overwritten(how, where):
    model = _tiny_seed()
    a, b = _images(1), _images(2)
    expected_a, expected_b = _fresh_maps(model, a), _fresh_maps(model, b)
    assert not torch.allclose(expected_a[SITE], expected_b[SITE])  # an overwrite would show
    reference = _read_back(HOLDERS[how](expected_a[SITE]), expected_a[SITE])  # what the holder shows of A's map

    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(a)
        held = HOLDERS[how](rec.sites[SITE])  # the caller keeps only this, nothing else of the map
        if where == "same recording":
            model(b)
    if where == "next recording":
        with crossvit.record_attention(model) as rec, torch.no_grad():
            model(b)
    torch.testing.assert_close(rec.sites[SITE], expected_b[SITE], atol=1e-6, rtol=0)  # B's maps are right ...
    torch.testing.assert_close(_read_back(held, reference), reference, atol=0, rtol=0)  # ... and A's kept


def test_memory_nobody_holds_is_still_reused():
    model = _tiny_seed()
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model(_images(1))
        pointers = {k: v.data_ptr() for k, v in rec.sites.items()}
        held = rec.sites[SITE].untyped_storage()
        del held  # let go again: this memory may be reused
        model(_images(2))
        assert {k: v.data_ptr() for k, v in rec.sites.items()} == pointers


def _child_reads_later(inbox, outbox) -> None:
    """Receive a map, say so, wait for the parent's next forward, then report what the map holds."""
    received = inbox.get()
    outbox.put("received")
    assert inbox.get() == "go"
    outbox.put(received.tolist())


@pytest.fixture(params=["file_descriptor", "file_system"])
def sharing_strategy(request):
    """Each of torch.multiprocessing's ways to share CPU memory, restored afterwards."""
    before = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy(request.param)
    yield request.param
    torch.multiprocessing.set_sharing_strategy(before)


def test_a_map_sent_to_another_process_is_never_overwritten(sharing_strategy):
    model = _tiny_seed()
    a, b = _images(1), _images(2)
    expected_a = _fresh_maps(model, a)
    context = torch.multiprocessing.get_context("fork")
    inbox, outbox = context.Queue(), context.Queue()
    child = context.Process(target=_child_reads_later, args=(inbox, outbox), daemon=True)
    child.start()
    try:
        with crossvit.record_attention(model) as rec, torch.no_grad():
            model(a)
            inbox.put(rec.sites[SITE])  # torch.multiprocessing moves the map to shared memory
            assert outbox.get(timeout=60) == "received"
            model(b)  # the parent holds nothing of A's maps any more
        inbox.put("go")
        seen = torch.tensor(outbox.get(timeout=60))
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    torch.testing.assert_close(seen, expected_a[SITE], atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# 2. rollouts accumulate in float32 whatever the model's dtype


def _relative_error(maps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (maps.float() - reference).abs() / reference.abs().clamp_min(1e-12)


@pytest.mark.parametrize("method", ["gradient_rollout", "joint_rollout", "small_rollout", "large_rollout"])
def test_half_model_rollouts_match_float32(bundled, shapes, method):
    images = shapes[0]
    reference = crossvit.explain(bundled, images, method)
    assert (reference > 0).all()
    maps = crossvit.explain(copy.deepcopy(bundled).half(), images.half(), method)
    assert maps.dtype == torch.float32
    assert (maps > 0).all(), f"{(maps == 0).float().mean():.0%} of the pixels underflowed to 0"
    assert _relative_error(maps, reference).median() < 0.01


def test_autocast_float16_grad_rollout_matches_float32(bundled, shapes):
    images = shapes[0]
    reference = crossvit.explain(bundled, images, "gradient_rollout")
    with torch.autocast("cpu", dtype=torch.float16):
        maps = crossvit.explain(bundled, images, "gradient_rollout")
    # Under float16 autocast the model's own softmax rows underflow (many attention weights are exactly 0, a property
    # of the fp16 model, not of the rollout), so pixels that are negligible in the float32 map may become 0. The
    # rollout's promise is float32 accumulation: every pixel that matters keeps its value, and no pixel of weight
    # above 1/1000 of the maximum is lost (accumulating in float16 zeroed ~90 % of the pixels).
    scale = reference.amax(dim=(1, 2), keepdim=True)
    assert (maps[reference > 1e-3 * scale] > 0).all()
    matters = reference > 1e-2 * scale
    assert _relative_error(maps, reference)[matters].median() < 0.01
    assert ((maps.float() - reference).abs() / scale).max() < 0.01


def test_rollout_functions_compute_in_float32_for_half_maps():
    # gradient_weighted by hand: 1e-4 * 1e-4 = 1e-8 is below float16's smallest subnormal (6e-8)
    attention = torch.full((1, 2, 1, 3), 1e-4, dtype=torch.float16)
    grad = torch.full((1, 2, 1, 3), 1e-4, dtype=torch.float16)
    weighted = gradient_weighted(attention, grad)
    assert weighted.dtype == torch.float32
    torch.testing.assert_close(weighted, torch.full((1, 1, 3), float(attention[0, 0, 0, 0]) ** 2), rtol=1e-3, atol=0)

    # per-branch rollout: the definition written out in float64 on the same (float16) maps
    g = torch.Generator().manual_seed(0)
    maps = [torch.softmax(4 * torch.randn(1, 2, 9, 9, generator=g), dim=-1).half() for _ in range(12)]
    result = torch.eye(9, dtype=torch.float64)
    for attention in maps:
        mixed = 0.5 * attention.double().mean(dim=1)[0] + 0.5 * torch.eye(9, dtype=torch.float64)
        result = (mixed / mixed.sum(dim=-1, keepdim=True)) @ result
    rolled = rollout_from_maps(maps)
    assert rolled.dtype == torch.float32
    torch.testing.assert_close(rolled.double(), result[0, 1:][None], rtol=1e-4, atol=1e-9)

    # joint rows: float16 weights give the float64 computation's rows to float32 precision
    layers = [GraphLayer("self", "small", maps[0].mean(dim=1)), GraphLayer("self", "large", maps[1].mean(dim=1))]
    half_rows = joint_rows(layers, {"small": 9, "large": 9})
    exact_rows = joint_rows([GraphLayer(x.kind, x.branch, x.weights.double()) for x in layers],
                            {"small": 9, "large": 9})
    assert half_rows.dtype == torch.float32
    torch.testing.assert_close(half_rows.double(), exact_rows, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# 3. frozen models: the gradient reaches the maps and the input regardless of the parameters' flags


@pytest.mark.parametrize("method", ["gradient_rollout", "saliency"])
def test_gradient_methods_work_on_a_frozen_model(bundled, shapes, method):
    images = shapes[0]
    reference = crossvit.explain(bundled, images, method)  # same weights, parameters requiring grad
    frozen = copy.deepcopy(bundled).requires_grad_(False)
    torch.testing.assert_close(crossvit.explain(frozen, images, method), reference)
    with torch.inference_mode():  # a caller's inference mode does not stop the gradient methods either
        torch.testing.assert_close(crossvit.explain(frozen, images, method), reference)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.grad is None for p in frozen.parameters())


def test_explain_leaves_requires_grad_and_grad_as_they_were(shapes):
    model = _tiny_paper(img_size=96, img_scale=(1.0, 80 / 96))
    images = shapes[0]
    params = list(model.parameters())
    for i, p in enumerate(params):  # half frozen, half with a .grad of their own
        p.requires_grad_(i % 2 == 0)
        p.grad = torch.full_like(p, float(i)) if i % 2 == 0 else None
    for method in ("gradient_rollout", "saliency"):
        crossvit.explain(model, images, method)
        for i, p in enumerate(params):
            assert p.requires_grad == (i % 2 == 0)
            assert (p.grad is None) if i % 2 else torch.equal(p.grad, torch.full_like(p, float(i)))


def test_rollout_explorer_on_a_frozen_model(bundled, shapes):
    images, _, masks = shapes
    frozen = copy.deepcopy(bundled).requires_grad_(False)
    explorer = rollout_explorer(frozen, images, masks=masks)
    predictions = bundled(images).argmax(dim=1)
    # the explorer's gradient rollout starts where explain's does (its default)
    torch.testing.assert_close(explorer.grad_maps, crossvit.explain(bundled, images, "gradient_rollout", predictions))
    assert not any(p.requires_grad for p in frozen.parameters())


# ----------------------------------------------------------------------------------------------------------------
# 4. copy.deepcopy inside a recording


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_deepcopy_inside_a_recording_leaves_the_recording_behind():
    model, images = _tiny_seed(), _images(1)
    own_hook_calls = []
    model.register_forward_hook(lambda m, i, o: own_hook_calls.append(1))  # the user's own hook is copied
    with crossvit.record_attention(model) as rec, torch.no_grad():
        expected_logits = model(images)
        maps = rec.sites
        twin = copy.deepcopy(model)
        assert _hooks(twin) == 1
        assert not any(site.module.observed or site.module.reuse_memory for site in crossvit.attention_sites(twin))
        torch.testing.assert_close(twin(_images(2)), model(_images(2)))
        model(images)  # the recording's latest forward is the original's
        twin(_images(3))  # ... and the twin's forwards never reach it
        assert rec.num_forwards == 3
        for name, m in rec.sites.items():
            torch.testing.assert_close(m, maps[name], atol=1e-6, rtol=0)
    torch.testing.assert_close(twin(images), expected_logits, atol=1e-5, rtol=0)
    assert len(own_hook_calls) == 6  # model: 3 calls, twin: 3 calls
    assert _hooks(model) == 1


# ----------------------------------------------------------------------------------------------------------------
# 5. forward_features inside a recording


def test_forward_features_counts_as_a_forward():
    model, images = _tiny_seed(), _images(1)
    expected = _fresh_maps(model, images)
    with crossvit.record_attention(model) as rec, torch.no_grad():
        model.forward_features(images)
        assert rec.num_forwards == 1
        assert rec.sites.keys() == expected.keys()
        for name, m in rec.sites.items():
            torch.testing.assert_close(m, expected[name], atol=1e-6, rtol=0)
        model(images)  # a whole forward counts once
        assert rec.num_forwards == 2


# ----------------------------------------------------------------------------------------------------------------
# 6. stale gradients


def test_gradients_of_an_earlier_forward_are_refused():
    model = _tiny_seed()
    with crossvit.record_attention(model, grads=True) as rec:
        first = model(_images(1))
        second = model(_images(2))
        first[:, 0].sum().backward()  # gradients of the first forward; the recorder holds the second's maps
        with pytest.raises(RuntimeError, match="earlier forward"):
            crossvit.gradient_rollout(rec)
        with pytest.raises(RuntimeError, match="earlier forward"):
            _ = rec.gradients
        score = second[:, 0].sum()  # the latest forward's own gradients are fine
        maps = list(rec.sites.values())
        for m in maps:  # PyTorch's own .grad of each map is the reference (an autograd.grad call beforehand would
            m.retain_grad()  # run the recorder's hooks too, and the recorder adds every pass up, as .grad does)
        score.backward()
    assert list(rec.gradients) == list(rec.sites)
    for g, m in zip(rec.gradients.values(), maps):
        torch.testing.assert_close(g, m.grad)
    crossvit.gradient_rollout(rec)


# ----------------------------------------------------------------------------------------------------------------
# 7. the trainer checks --out and --name before the first step


def _no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started although the output could not be written")

    monkeypatch.setattr("crossvit.train.make_training_set", refuse)


@pytest.mark.parametrize("bad", ["out under a file", "out is a file", "name with a slash", "hidden name", "empty name"])
def test_train_cli_checks_the_output_before_training(tmp_path, monkeypatch, capsys, bad):
    _no_training(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out, name = str(tmp_path / "runs"), "model"
    if bad == "out under a file":
        out = str(blocker / "runs")
    elif bad == "out is a file":
        out = str(blocker)
    elif bad == "name with a slash":
        name = "../model"
    elif bad == "hidden name":
        name = ".model"
    else:
        name = ""
    code = train_main(["--steps", "1", "--train-images", "64", "--eval-images", "8", "--quiet", "--device", "cpu",
                       "--out", out, "--name", name])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert ("cannot write the checkpoint" in err) if bad.startswith("out") else ("checkpoint name" in err)


# ----------------------------------------------------------------------------------------------------------------
# 8. torch.compile


@pytest.mark.slow  # torch.compile: seconds on 2 cores, so `make test` runs it, not test-fast
def test_recording_a_model_called_through_torch_compile_says_so():
    model, images = _tiny_seed(), _images(1)
    compiled = torch.compile(model, backend="eager")  # dynamo without code generation: fast, and as hook-blind
    with torch.no_grad():
        compiled(images)
    with pytest.raises(TypeError, match="torch.compile"):
        crossvit.record_attention(compiled)
    with crossvit.record_attention(model) as rec, torch.no_grad():
        compiled(images)
    for read in (lambda: rec.sites, lambda: crossvit.joint_rollout(rec), lambda: rec.self_attention("small")):
        with pytest.raises(RuntimeError, match="torch.compile"):
            read()
    with crossvit.record_attention(model) as rec, torch.no_grad():  # eager forwards after it record as usual
        model(images)
    assert len(rec.sites) == len(crossvit.attention_sites(model))


# ----------------------------------------------------------------------------------------------------------------
# 9. resource and type guards


def _pointing_by_definition(maps: torch.Tensor, masks: torch.Tensor, tolerance: int) -> list[bool]:
    """Hit iff some mask pixel lies within Euclidean distance ``tolerance`` of the map's first maximum."""
    hits = []
    for m, mask in zip(maps, masks):
        flat = int((m.flatten() == m.max()).nonzero()[0])
        p = torch.tensor([flat // m.shape[1], flat % m.shape[1]])
        distances = (mask.nonzero() - p).double().norm(dim=1)
        hits.append(bool((distances <= tolerance).any()))
    return hits


def test_pointing_game_large_tolerances_are_cheap_and_exact():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 64, 80, generator=g)
    masks = torch.zeros(6, 64, 80, dtype=torch.bool)
    for i in range(6):  # one small square per image, somewhere
        r, c = torch.randint(0, 56, (2,), generator=g).tolist()
        masks[i, r:r + 6, c:c + 6] = True
    for tolerance in (0, 3, 17, 40, 101, 5000, 10**12):
        start = time.perf_counter()
        result = pointing_game(maps, masks, tolerance=tolerance)
        assert time.perf_counter() - start < 2.0, f"tolerance {tolerance} took {time.perf_counter() - start:.1f} s"
        assert result.hits.tolist() == _pointing_by_definition(maps, masks, tolerance), tolerance
        assert result.tolerance == tolerance
    assert pointing_game(maps, masks, tolerance=5000).score == 1.0  # every mask is within the image's diagonal


def _edit_sidecar(path, **changes):
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["config"].update(changes)
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("field, value, words", [
    ("crop_scale", "false", "crop_scale must be a bool"),
    ("qkv_bias", 1, "qkv_bias must be a bool"),
    ("multi_conv", "no", "multi_conv must be a bool"),
    ("norm_eps", -1e-6, "norm_eps must be a finite number > 0"),
    ("norm_eps", float("nan"), "norm_eps must be a finite number > 0"),
    ("norm_eps", "1e-6", "norm_eps must be a number"),
    ("input_norm", [[0.5, 0.5, 0.5], [0.25, 0.0, 0.25]], "input_norm"),
    ("input_norm", [[0.5, 0.5, 0.5], [0.25, float("nan"), 0.25]], "input_norm"),
    ("input_norm", [[0.5, float("inf"), 0.5], [0.25, 0.25, 0.25]], "input_norm"),
    ("img_scale", [1.0, float("nan")], "img_scale must be a finite number > 0"),
    ("mlp_ratio", [2.0, -2.0, 1.0], "mlp_ratio must be a finite number > 0"),
    ("embed_dim", "16", "embed_dim must be a list"),
    ("drop_rate", False, "drop_rate must be a probability"),
])
def test_checkpoint_sidecar_values_are_type_checked(tmp_path, field, value, words):
    path = save_checkpoint(_tiny_paper(), tmp_path)
    _edit_sidecar(path, **{field: value})
    with pytest.raises(ValueError, match="config .* was changed after the checkpoint was written"):
        crossvit.load_checkpoint(path)  # the config hash sees the edit first
    with pytest.raises(ValueError, match=words):
        crossvit.load_checkpoint(path, verify=False)


@pytest.mark.parametrize("num_classes", [5, 2_000_000])
def test_checkpoint_weights_are_checked_before_the_model_is_built(tmp_path, monkeypatch, num_classes):
    path = save_checkpoint(_tiny_paper(), tmp_path)
    _edit_sidecar(path, num_classes=num_classes)
    built_on = []
    original_init = crossvit.CrossViT.__init__

    def spy(self, config):
        original_init(self, config)
        built_on.append(next(self.parameters()).device.type)

    monkeypatch.setattr(crossvit.CrossViT, "__init__", spy)
    with pytest.raises(ValueError, match=r"do not fit the config.*heads\.small\.fc\.weight"):
        crossvit.load_checkpoint(path, verify=False)
    assert set(built_on) <= {"meta"}, f"a model was built on {built_on} before the shapes were checked"


@pytest.mark.parametrize("target", [2.7, "cat", True, torch.tensor([1.0, 2.0]), [1.5, 0.0], 1j])
def test_explain_target_must_be_class_indices(bundled, shapes, target):
    images = shapes[0][:2]
    with pytest.raises(TypeError, match="target must be an int"):
        crossvit.explain(bundled, images, "joint_rollout", target=target)


def test_explain_target_accepts_ints_and_integer_tensors(bundled, shapes):
    images = shapes[0][:2]
    expected = crossvit.explain(bundled, images, "gradient_rollout", target=torch.tensor([2, 2]))
    for target in (2, np.int64(2), [2, 2], np.array([2, 2]), torch.tensor(2, dtype=torch.int32)):
        torch.testing.assert_close(crossvit.explain(bundled, images, "gradient_rollout", target=target), expected)


@pytest.mark.parametrize("flavour", ["seed", "paper", "paper with input_norm"])
def test_mixed_dtypes_get_a_clear_error(flavour):
    if flavour == "seed":
        model, size = _tiny_seed(), 32
    elif flavour == "paper":
        model, size = _tiny_paper(), 48
    else:
        model, size = _tiny_paper(input_norm=((0.5,) * 3, (0.25,) * 3)), 48
    images = _images(1, size=size)
    half = copy.deepcopy(model).half()
    for net, x, words in ((model, images.half(), "images are torch.float16 but the model's weights are torch.float32"),
                          (half, images, "images are torch.float32 but the model's weights are torch.float16"),
                          (model, images.double(), "images are torch.float64")):
        with pytest.raises(TypeError, match=words):
            net(x)
        with pytest.raises(TypeError, match=words):
            crossvit.explain(net, x, "joint_rollout")
    with torch.no_grad():  # matching dtypes still run, in both precisions
        torch.testing.assert_close(half(images.half()).float(), model(images), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("make", [attention_explorer, rollout_explorer])
def test_explorers_reject_masks_of_the_wrong_shape(bundled, shapes, make):
    images, _, masks = shapes
    for bad in (masks[:2], masks[:, :48], masks[:, None]):
        with pytest.raises(ValueError, match=r"masks must be \(B, H, W\)"):
            make(bundled, images, masks=bad)
    with pytest.raises(TypeError, match="masks must be"):
        make(bundled, images, masks=masks.numpy())
