"""Photos in: read a file, a PIL image or a numpy array as one 8-bit RGB PIL image, and the sample photographs.

:func:`read_image` is the single door every photo goes through before :func:`crossvit.preprocess`:

* a **path** (``str`` or ``Path``): opened with PIL and turned upright by its EXIF orientation tag (as image
  viewers do); a missing file, a file that is not an image, or a path that is not a regular file (a FIFO, a
  device, a socket: reading one could wait for ever) raises an error that names it;
* a **PIL image** of any common mode: ``RGB`` as it is, greyscale / palette / CMYK / YCbCr converted to RGB,
  an alpha channel composited onto white (what an image viewer shows; the colours under transparent pixels are
  arbitrary). Integer greyscale (``I;16``, ``I;16B``, ``I``: PIL stores both 16-bit files and 8-bit values in
  these modes, and nothing in the mode says which) is read as 16-bit (value / 257, rounded) when the image was
  decoded from a file (a path, or a PIL image whose ``format`` is set: a 16-bit PNG or TIFF) or when a value
  exceeds 255, and as 8-bit values otherwise (what ``image.convert("I")`` of an 8-bit image holds, and how PIL's
  own ``convert("L")`` reads it); values outside [0, 65535] are refused;
* a **numpy array** (H, W, 3) ``uint8`` (also (H, W) greyscale, (H, W, 4) RGBA, and ``uint16`` scaled to 8 bits).

An image with no pixels (a width or height of 0) is refused.

Nothing the caller holds is changed: every conversion makes a new image.

The sample photographs ship inside scikit-image's wheel (``skimage.data``), so they work offline. Their
licences, from ``skimage.data``'s docstrings, are in :data:`SAMPLE_PHOTOS`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .utils import check_path

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                                   ".pgm")
"""File suffixes (lower case) treated as images when a folder is scanned (``crossvit explain FOLDER``)."""

SAMPLE_PHOTOS: dict[str, dict[str, str]] = {
    "chelsea": {"file": "chelsea.png", "what": "Chelsea the cat",
                "licence": "CC0, by the photographer Stefan van der Walt"},
    "coffee": {"file": "coffee.png", "what": "a cup of espresso on a saucer (courtesy of Pikolo Espresso Bar)",
               "licence": "CC0, by the photographer Rachel Michetti"},
    "astronaut": {"file": "astronaut.png", "what": "the astronaut Eileen Collins (NASA Great Images database)",
                  "licence": "public domain (no known copyright restrictions)"},
    "rocket": {"file": "rocket.jpg", "what": "the launch of DSCOVR on a Falcon 9 (SpaceX)",
               "licence": "public domain (released by SpaceX)"},
}
"""The photographs this project uses from ``skimage.data``: file name in the wheel, what they show, licence."""

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_NOT_REGULAR = "not a regular file (a FIFO, device or socket, which could block the reader for ever); give an image file"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


# ----------------------------------------------------------------------------------------------------------------
# Reading


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _sixteen_bit_to_rgb(values: np.ndarray, where: str, sixteen_bit: bool = True) -> Image.Image:
    """A (H, W) array of integer grey levels -> an 8-bit RGB image: 16-bit levels (value / 257, rounded:
    65535 -> 255), or with ``sixteen_bit=False`` levels that are 8-bit already (all in [0, 255])."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"{where}: integer image with values in [{values.min()}, {values.max()}], outside the "
                         "16-bit range [0, 65535]; convert it to 8-bit RGB first")
    eight = np.rint(values.astype(np.float64) / 257.0) if sixteen_bit else values
    return Image.fromarray(eight.astype(np.uint8)).convert("RGB")


def _pil_to_rgb(image: Image.Image, where: str, from_file: bool | None = None) -> Image.Image:
    """Any PIL image -> a new 8-bit RGB image (see the module docstring for the rules). ``from_file``: the image
    was decoded from a file (default: its ``format`` is set), which fixes the bit depth of integer modes."""
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{where}: empty image of {image.width}x{image.height} pixels")
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in _SIXTEEN_BIT_MODES or mode == "I":  # integer greyscale: a 16-bit file, or 8-bit values
        values = np.asarray(image)
        from_file = image.format is not None if from_file is None else from_file
        sixteen_bit = from_file or bool(values.size and values.max() > 255)
        return _sixteen_bit_to_rgb(values, where, sixteen_bit)
    if mode == "F":
        raise ValueError(f"{where}: 32-bit float image (PIL mode 'F') has no standard value range; save it as 8- or "
                         "16-bit, or pass a uint8 array")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _composite_on_white(image)
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ValueError(f"{where}: cannot convert a PIL image of mode {mode!r} to RGB ({err})") from None


def _array_to_rgb(array: np.ndarray, where: str) -> Image.Image:
    if array.dtype == np.uint16:
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 1):
            return _sixteen_bit_to_rgb(array.reshape(array.shape[:2]), where)
        array = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)  # 16-bit colour -> 8 bits
    elif array.dtype != np.uint8:
        hint = (" (floats have no standard range: for [0, 1] values use "
                "(np.clip(a, 0, 1) * 255).round().astype(np.uint8))") if np.issubdtype(array.dtype, np.floating) else ""
        raise TypeError(f"{where}: an image array must be uint8 (or uint16), got dtype {array.dtype}{hint}")
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        raise ValueError(f"{where}: array of shape {array.shape} looks channels-first; photos are (H, W, 3): "
                         "use array.transpose(1, 2, 0)")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"{where}: expected an (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) greyscale array, "
                         f"got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{where}: empty image of shape {array.shape}")
    array = np.ascontiguousarray(array).copy()  # PIL may share the buffer: never alias the caller's array
    if array.ndim == 2:
        return Image.fromarray(array).convert("RGB")
    if array.shape[-1] == 4:
        return _composite_on_white(Image.fromarray(array))
    return Image.fromarray(array)


def read_image(image: Any, where: str | None = None) -> Image.Image:
    """A new 8-bit RGB PIL image from a path, a PIL image or a numpy array (rules in the module docstring).

    ``where`` names the input in error messages (default: the path, or the kind of object).
    Raises FileNotFoundError for a missing file, ValueError naming the file for one that is not an image,
    TypeError for anything else.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        where = where or str(path)
        if not path.exists():
            raise FileNotFoundError(f"{where}: no such file")
        if path.is_dir():
            raise ValueError(f"{where}: is a directory, not an image file")
        if not path.is_file():
            raise ValueError(f"{where}: {_NOT_REGULAR}")
        try:
            with Image.open(path) as opened:
                opened.load()
                upright = ImageOps.exif_transpose(opened)  # a camera's orientation tag, applied as viewers do
                return _pil_to_rgb(upright, where, from_file=True)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
            raise ValueError(f"{where}: not an image file that PIL can read ({type(err).__name__}: {err})") from None
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, where or "PIL image")
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, where or "image array")
    raise TypeError(f"{where or 'image'}: expected a file path, a PIL image or an (H, W, 3) uint8 numpy array, "
                    f"got {type(image).__name__}")


# ----------------------------------------------------------------------------------------------------------------
# Sample photographs (scikit-image)


def _skimage_data_dir() -> Path:
    try:
        import skimage.data
    except ImportError as err:
        raise ImportError("the sample photos come from scikit-image: pip install scikit-image") from err
    return Path(skimage.data.__file__).resolve().parent


def sample_photo_path(name: str) -> Path:
    """Path of a sample photo (a key of :data:`SAMPLE_PHOTOS`) inside the installed scikit-image."""
    if not isinstance(name, str) or name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r:.60}; available: {', '.join(SAMPLE_PHOTOS)}")
    path = _skimage_data_dir() / SAMPLE_PHOTOS[name]["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed scikit-image; reinstall scikit-image")
    return path


def sample_photo(name: str) -> np.ndarray:
    """A sample photo as an (H, W, 3) uint8 array (``chelsea``, ``coffee``, ``astronaut``, ``rocket``)."""
    return np.asarray(read_image(sample_photo_path(name)))


def sample_photos(names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Several sample photos by name (default: all of :data:`SAMPLE_PHOTOS`), as (H, W, 3) uint8 arrays."""
    if isinstance(names, str):
        raise TypeError(f"names must be a list of sample photo names, e.g. [{names!r:.40}]; got one string")
    return {name: sample_photo(name) for name in (SAMPLE_PHOTOS if names is None else names)}


def collage(images: Sequence[Any], tile: int = 240, ncols: int | None = None) -> np.ndarray:
    """Several photos in one: each centre-cropped to a square, resized to ``tile`` px and laid out in a grid
    (``ncols`` columns, default the smallest square grid); unused cells stay white. Returns (H, W, 3) uint8.

    One photo with several objects in it, e.g. to ask a class-specific explanation about each of them.
    """
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive int (pixels), got {tile!r}")
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)) or not images:
        raise ValueError("collage needs a non-empty list of images")
    if ncols is None:
        ncols = math.ceil(math.sqrt(len(images)))
    elif isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int (columns) or None, got {ncols!r}")
    nrows = math.ceil(len(images) / ncols)
    canvas = np.full((nrows * tile, ncols * tile, 3), 255, dtype=np.uint8)
    for k, image in enumerate(images):
        rgb = read_image(image, where=f"image {k} of the collage")
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        square = rgb.crop((left, top, left + side, top + side)).resize((tile, tile), Image.Resampling.BICUBIC)
        row, col = divmod(k, ncols)
        canvas[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = np.asarray(square)
    return canvas


def check_image_file(path: str | os.PathLike) -> None:
    """Raise (naming the file) unless PIL recognises ``path`` as an image; reads the header only, so it is cheap."""
    path = check_path("path", path)
    if not path.is_file():
        if path.exists():
            raise ValueError(f"{path}: {_NOT_REGULAR}")
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path):
            pass
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: an image too large to open safely ({err}); if you trust the file, raise "
                         "PIL.Image.MAX_IMAGE_PIXELS, or shrink the image first") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: not an image file that PIL can read ({type(err).__name__}: {err})") from None


def find_images(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """The image files named by ``paths``: files as given, folders scanned (not recursively) for files with an
    :data:`IMAGE_SUFFIXES` suffix, in sorted order (a folder's entries that are not regular files are skipped, and
    so are hidden ones, whose names start with a dot, such as the ``._photo.jpg`` files macOS leaves on copies).
    A missing path raises FileNotFoundError naming it; a folder without images, or a path that is not a regular
    file (a FIFO, a device), raises ValueError. The same file named twice (also through a folder or a symlink) is
    listed once, where it first appears. A single path (a str or Path) is read as a list of one."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, Sequence):
        raise TypeError(f"paths must be a list of file or folder paths, got {type(paths).__name__}")
    found: list[Path] = []
    for k, item in enumerate(paths):
        path = check_path(f"paths[{k}]", item)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not inside:
                raise ValueError(f"{path}: folder has no image files ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        elif path.exists():
            raise ValueError(f"{path}: {_NOT_REGULAR}")
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


__all__ = ["IMAGE_SUFFIXES", "SAMPLE_PHOTOS", "check_image_file", "collage", "find_images", "read_image", "sample_photo",
           "sample_photo_path", "sample_photos"]
