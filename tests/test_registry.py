"""The explanation-method registry: one record per method, read by explain, the options table, the explorers, the
plotting and the command line; adding a method is its function and its decorator."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import crossvit
from crossvit import cli, photos, plotting
from crossvit.explain import OPTION_CHECKS, REGISTRY, register_method
from crossvit.utils import check_number
from crossvit.widgets import RolloutExplorer


@pytest.fixture()
def centre_method():
    """A new method registered the documented way (one function, one decorator), removed afterwards."""
    OPTION_CHECKS["width"] = lambda model, v: check_number("width", v, 0.01, 10)  # a new kind of option

    @register_method("centre_bias", summary="a Gaussian bump at the image centre (a test method)", signed=True)
    def centre_bias(model, images, target, *, width: float = 0.25) -> torch.Tensor:
        b, _, h, w = images.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        bump = torch.exp(-(xs**2 + ys**2) / (2 * width**2))
        return bump.expand(b, h, w).to(images.device)

    yield "centre_bias"
    del REGISTRY["centre_bias"]
    del OPTION_CHECKS["width"]


def test_a_new_method_is_one_function_and_one_record(model, centre_method, tmp_path):
    images = torch.rand(2, 3, 96, 96)
    assert centre_method in crossvit.METHODS and crossvit.METHOD_OPTIONS[centre_method] == {"width": 0.25}
    maps = crossvit.explain(model, images, centre_method, width=0.5)
    assert maps.shape == (2, 96, 96) and maps[0, 48, 48] > maps[0, 0, 0]
    with pytest.raises(ValueError, match=r"width must be in \[0.01, 10\]"):
        crossvit.explain(model, images, centre_method, width=0)
    assert plotting.is_signed(centre_method)  # the record says how to draw it
    photo = tmp_path / "cat.png"
    Image.fromarray(photos.sample_photo("chelsea")).save(photo)
    code = cli.main(["explain", str(photo), "--checkpoint", str(crossvit.checkpoint.BUNDLED_CHECKPOINT),
                     "--method", centre_method, "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    assert code == 0 and (tmp_path / "out" / f"cat.{centre_method}.png").is_file()  # the command line takes it
    assert centre_method not in RolloutExplorer.METHODS  # no start_block option: not a rollout


def test_records_describe_their_methods():
    assert {m for m, r in REGISTRY.items() if r.class_specific} == {
        "gradient_rollout", "coattention_relevancy", "attnlrp", "cp_lrp", "integrated_gradients", "saliency",
        "occlusion"}
    assert {m for m, r in REGISTRY.items() if r.signed} == plotting.SIGNED_METHODS == {
        "attnlrp", "cp_lrp", "integrated_gradients", "occlusion"}
    assert {m for m, r in REGISTRY.items() if r.needs_captum} == {"integrated_gradients", "saliency", "occlusion"}
    assert {m: r.branch for m, r in REGISTRY.items() if r.branch} == {"small_rollout": "small",
                                                                       "large_rollout": "large"}
    assert tuple(RolloutExplorer.METHODS) == ("small_rollout", "large_rollout", "joint_rollout", "gradient_rollout",
                                              "coattention_relevancy", "attnlrp", "cp_lrp")


def test_class_specific_flag_matches_what_the_maps_do(bundled, shapes):
    """A method is class-specific exactly when its maps change with the target class."""
    images = shapes[0][:2]
    for name, record in REGISTRY.items():
        a = crossvit.explain(bundled, images, name, target=0, n_steps=4)
        b = crossvit.explain(bundled, images, name, target=1, n_steps=4)
        assert (not torch.allclose(a, b)) == record.class_specific, name


def test_registering_twice_or_without_a_check_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_method("saliency", summary="again")(lambda model, images, target: images)
    with pytest.raises(TypeError, match="add a check for option"):
        register_method("needs_check", summary="x")(lambda model, images, target, *, mystery=1: images)
    assert "needs_check" not in REGISTRY
