"""Photos in: reading every kind of input, preprocessing equal to timm's eval transform, class names.

References: timm's own ``create_transform(**resolve_data_config(...))`` and pretrained configs, timm's ImageNet
class list plus known indices, the shapes task's definition (images in [0, 1] at 96 px), hand-made pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit import data, photos, preprocessing

timm = pytest.importorskip("timm")
from timm.data import ImageNetInfo, create_transform, resolve_data_config  # noqa: E402

SAMPLES = list(photos.SAMPLE_PHOTOS)


@pytest.fixture(scope="module")
def timm_and_ours():
    torch.manual_seed(0)
    timm_model = timm.create_model("crossvit_9_240").eval()
    return timm_model, crossvit.from_timm(timm_model).eval()


# ----------------------------------------------------------------------------------------------------------------
# read_image


def test_sample_photos_are_real_photographs_shipped_offline():
    for name in SAMPLES:
        path = photos.sample_photo_path(name)
        assert path.is_file() and "skimage" in path.parts
        image = photos.sample_photo(name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 300 and image.std() > 20  # a real photo, not a blank
        assert photos.SAMPLE_PHOTOS[name]["licence"]
    import skimage.data

    assert np.array_equal(photos.sample_photo("chelsea"), skimage.data.chelsea())
    assert np.array_equal(photos.sample_photo("rocket"), skimage.data.rocket())


def test_path_pil_and_array_read_the_same(tmp_path):
    array = photos.sample_photo("coffee")
    path = tmp_path / "coffee.png"
    Image.fromarray(array).save(path)
    for source in (path, str(path), Image.fromarray(array), array):
        assert np.array_equal(np.asarray(photos.read_image(source)), array)


def test_a_cameras_orientation_tag_is_applied(tmp_path):
    array = photos.sample_photo("rocket")[:40, :60].copy()  # wider than tall
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # EXIF Orientation: the camera was turned, show it rotated by 90 degrees clockwise
    path = tmp_path / "turned.png"
    image.save(path, exif=exif)
    upright = np.asarray(photos.read_image(path))
    assert upright.shape == (60, 40, 3)
    assert np.array_equal(upright, np.rot90(array, k=-1))  # rotated clockwise, written out by numpy


def test_greyscale_becomes_three_equal_channels():
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    for source in (grey, grey[..., None], Image.fromarray(grey)):
        rgb = np.asarray(photos.read_image(source))
        assert rgb.shape == (6, 8, 3)
        assert all(np.array_equal(rgb[..., c], grey) for c in range(3))


def test_rgba_is_composited_onto_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    rgba[2:, :, 3] = 0
    rgba[3, 0, 3] = 128  # one half-transparent pixel
    out = np.asarray(photos.read_image(rgba)).astype(int)
    assert (out[:2] == (10, 200, 30)).all()
    assert (out[2, :] == 255).all()
    expected = np.array([10, 200, 30]) * 128 / 255 + 255 * (1 - 128 / 255)  # alpha blend by hand
    assert np.abs(out[3, 0] - expected).max() <= 1
    assert np.array_equal(np.asarray(photos.read_image(Image.fromarray(rgba))), out.astype(np.uint8))


def test_sixteen_bit_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257 * 7 + 100]], dtype=np.uint16)  # 7 + 100/257 rounds to 7
    expected = np.array([[0, 100, 255, 7]], dtype=np.uint8)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # a 16-bit greyscale PNG
    assert Image.open(path).mode.startswith("I")
    for source in (values, path):
        rgb = np.asarray(photos.read_image(source))
        assert all(np.array_equal(rgb[..., c], expected) for c in range(3))
    colour = np.stack([values, values // 2, values // 4], axis=-1)
    assert np.array_equal(np.asarray(photos.read_image(colour))[..., 0], expected)


def test_inputs_are_never_modified():
    array = photos.sample_photo("chelsea")[:50, :60].copy()
    rgba = np.dstack([array, np.full(array.shape[:2], 100, np.uint8)])
    before, before_rgba = array.copy(), rgba.copy()
    pil = Image.fromarray(rgba)
    model = crossvit.create_model("crossvit_tiny_240", num_classes=3)
    preprocess = crossvit.preprocess(model, [array, rgba, pil])
    assert preprocess.shape == (3, 3, 240, 240)
    assert np.array_equal(array, before) and np.array_equal(rgba, before_rgba)
    assert pil.mode == "RGBA" and np.array_equal(np.asarray(pil), before_rgba)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda p: np.zeros((8, 8, 3), np.float32), TypeError, "uint8"),
        (lambda p: np.zeros((8, 8, 3), np.int64), TypeError, "uint8"),
        (lambda p: np.zeros((3, 8, 8), np.uint8), ValueError, "channels-first"),
        (lambda p: np.zeros((2, 8, 8, 3), np.uint8), ValueError, "(H, W, 3)"),
        (lambda p: np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
        (lambda p: Image.fromarray(np.zeros((4, 4), np.float32)), ValueError, "float"),
        (lambda p: torch.zeros(3, 8, 8), TypeError, "file path, a PIL image"),
        (lambda p: p / "missing.jpg", FileNotFoundError, "missing.jpg"),
        (lambda p: p, ValueError, "directory"),
    ],
    ids=["float", "int64", "channels-first", "batch-array", "empty", "pil-float", "tensor", "missing", "folder"],
)
def test_bad_inputs_get_clear_errors(tmp_path, make, error, words):
    with pytest.raises(error) as info:
        photos.read_image(make(tmp_path))
    assert words in str(info.value)


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    model = crossvit.create_model("crossvit_tiny_240", num_classes=3)
    with pytest.raises(ValueError, match="notes.jpg: not an image"):
        crossvit.preprocess(model, [photos.sample_photo("rocket"), path])
    with pytest.raises(ValueError, match="notes.jpg"):
        photos.check_image_file(path)
    with pytest.raises(ValueError, match="empty list"):
        crossvit.preprocess(model, [])


def test_find_images_scans_folders_and_names_bad_paths(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in photos.find_images([tmp_path])] == ["a.JPG", "b.png"]
    with pytest.raises(FileNotFoundError, match="nope"):
        photos.find_images([tmp_path / "nope"])
    with pytest.raises(ValueError, match="no image files"):
        photos.find_images([tmp_path / "sub"])


def test_collage_lays_square_tiles_in_a_grid():
    red = np.zeros((30, 50, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((40, 20, 3), np.uint8)
    blue[..., 2] = 255
    two = photos.collage([red, blue], tile=16)
    assert two.shape == (16, 32, 3)
    assert (two[:, :16] == (255, 0, 0)).all() and (two[:, 16:] == (0, 0, 255)).all()
    three = photos.collage([red, blue, red], tile=8)
    assert three.shape == (16, 16, 3) and (three[8:, 8:] == 255).all()  # the unused cell stays white
    with pytest.raises(ValueError, match="non-empty"):
        photos.collage([])


# ----------------------------------------------------------------------------------------------------------------
# preprocess == timm's eval transform


@pytest.mark.parametrize("name", crossvit.PAPER_PRESETS)
def test_imagenet_data_config_is_timms(name):
    size = crossvit.PAPER_PRESETS[name].img_size
    ours = preprocessing.imagenet_data_config(name, (3, size, size))
    theirs = timm.models.get_pretrained_cfg(name).to_dict()
    assert resolve_data_config({}, pretrained_cfg=ours) == resolve_data_config({}, pretrained_cfg=theirs)
    assert ours["hf_hub_id"] == theirs["hf_hub_id"]


def test_preprocess_equals_timms_transform_on_the_sample_photos(timm_and_ours, tmp_path):
    timm_model, ours = timm_and_ours
    transform = create_transform(**resolve_data_config({}, model=timm_model))
    assert resolve_data_config({}, model=ours) == resolve_data_config({}, model=timm_model)
    created = crossvit.create_model("crossvit_9_240")  # created by name: same data config as from_timm
    for name in SAMPLES:
        array = photos.sample_photo(name)
        expected = transform(Image.fromarray(array))  # (3, 240, 240)
        assert torch.equal(crossvit.preprocess(ours, array)[0], expected), name
        assert torch.equal(crossvit.preprocess(created, photos.sample_photo_path(name))[0], expected), name
    batch = crossvit.preprocess(ours, [photos.sample_photo(n) for n in SAMPLES])
    assert batch.shape == (len(SAMPLES), 3, 240, 240)
    with torch.no_grad():
        assert torch.allclose(ours(batch), timm_model(batch), atol=1e-4)


def test_preprocess_of_a_portrait_and_a_tiny_image_matches_timm(timm_and_ours):
    timm_model, ours = timm_and_ours
    transform = create_transform(**resolve_data_config({}, model=timm_model))
    portrait = photos.sample_photo("rocket").transpose(1, 0, 2).copy()  # taller than wide
    tiny = photos.sample_photo("astronaut")[::10, ::10].copy()  # 52 px: upsampled
    for image in (portrait, tiny):
        assert torch.equal(crossvit.preprocess(ours, image)[0], transform(Image.fromarray(image)))


def test_display_images_undoes_the_normalisation(timm_and_ours):
    _, ours = timm_and_ours
    array = photos.sample_photo("astronaut")
    shown = crossvit.display_images(ours, crossvit.preprocess(ours, array))
    crop = Image.fromarray(array).resize((274, 274), Image.Resampling.BICUBIC).crop((17, 17, 257, 257))
    assert torch.allclose(shown[0], torch.from_numpy(np.array(crop)).permute(2, 0, 1) / 255, atol=1e-5)


def test_shapes_model_gets_what_it_was_trained_on():
    model = crossvit.load_pretrained()
    assert preprocessing.data_config(model)["input_size"] == (3, 96, 96)
    images, labels, _ = data.make_shapes(24, seed=2**40 + 2**32 + 11)
    as_uint8 = [(img.permute(1, 2, 0) * 255).round().byte().numpy() for img in images]
    batch = crossvit.preprocess(model, as_uint8)
    # 96 px in, 96 px out: the batch is the 8-bit image scaled to [0, 1], exactly what crossvit.train feeds
    assert torch.equal(batch, torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in as_uint8]))
    with torch.no_grad():
        accuracy = (model(batch).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.9
    photo = crossvit.preprocess(model, photos.sample_photo("coffee"))
    assert photo.shape == (1, 3, 96, 96) and 0 <= photo.min() and photo.max() <= 1


def test_model_without_a_config_takes_unit_range_images():
    model = crossvit.create_model("seed", image_size=48, num_classes=3, sm_dim=16, lg_dim=32, depth=1)
    array = photos.sample_photo("chelsea")
    batch = crossvit.preprocess(model, array)
    # by hand: the 300 x 451 photo's shorter side to 48 px (bilinear), 48 x 72, then the central 48 columns
    assert array.shape[:2] == (300, 451)
    square = Image.fromarray(array).resize((72, 48), Image.Resampling.BILINEAR).crop((12, 0, 60, 48))
    assert torch.equal(batch[0], torch.from_numpy(np.array(square)).permute(2, 0, 1) / 255)
    model.pretrained_cfg = {"input_size": (3, 96, 96)}
    with pytest.raises(ValueError, match="input_size"):
        crossvit.preprocess(model, array)


def test_data_config_survives_a_checkpoint_round_trip(timm_and_ours, tmp_path):
    _, ours = timm_and_ours
    crossvit.save_checkpoint(ours, tmp_path, name="imagenet_like")
    loaded = crossvit.load_checkpoint(tmp_path / "imagenet_like.json")
    assert preprocessing.data_config(loaded) == preprocessing.data_config(ours)
    assert crossvit.class_names(loaded) == crossvit.class_names(ours)
    array = photos.sample_photo("coffee")
    assert torch.equal(crossvit.preprocess(loaded, array), crossvit.preprocess(ours, array))


# ----------------------------------------------------------------------------------------------------------------
# class names


def test_imagenet_class_names():
    names = crossvit.class_names(crossvit.create_model("crossvit_tiny_240"))
    assert len(names) == 1000
    assert names[281] == "tabby, tabby cat" and names[285] == "Egyptian cat" and names[967] == "espresso"
    assert names == ImageNetInfo("imagenet-1k").label_descriptions()


def test_shapes_and_other_class_names(timm_and_ours):
    assert crossvit.class_names(crossvit.load_pretrained()) == list(data.CLASS_NAMES)
    assert crossvit.class_names(crossvit.create_model("crossvit_tiny_240", num_classes=3)) == [
        "class 0", "class 1", "class 2"]
    seed = crossvit.create_model("seed", image_size=48, num_classes=2, sm_dim=16, lg_dim=32, depth=1)
    assert crossvit.class_names(seed) == ["class 0", "class 1"]
    _, ours = timm_and_ours
    assert crossvit.class_names(ours)[281] == "tabby, tabby cat"


def test_top_classes_are_the_softmax_top_k():
    model = crossvit.load_pretrained()
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
    top = crossvit.top_classes(model, logits, k=5)[0]
    probabilities = torch.softmax(logits[0], 0)
    assert [p.index for p in top] == [1, 2, 0, 3]
    assert [p.name for p in top] == [data.CLASS_NAMES[k] for k in (1, 2, 0, 3)]
    assert top[0].probability == pytest.approx(float(probabilities[1]))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        crossvit.top_classes(model, torch.zeros(2, 5))
