"""Decode one radiograph and resize it to a square: the per-image work behind the cache.

Every image of MURA ends up as an 8-bit grayscale square of side S. Decoding is done once per
file (by :mod:`mura_lib.data.cache`), never per epoch. Two resize modes:

* ``"letterbox"`` (default): scale the long side to S, keep the aspect ratio, centre the result
  and pad with zeros (black, the background of a radiograph). Bones keep their shape, which
  matters for a data set whose aspect ratios run from about 1:1 to 5:1 (512x108 exists).
* ``"stretch"``: resize both sides to S independently, as the project we grew from did
  (``Resize((256, 256))``). Kept so results can be compared with it.

Bad files are handled here so that the cache can decide what to do with them: a PNG that lost a
few rows at its end (as some of MURA's files did) is read as far as it goes and the caller gets
a warning that says how much is missing; one that lost more than :data:`MAX_MISSING_SHARE` of
its rows, or anything that cannot be read at all, raises
:class:`~mura_lib.errors.ImageReadError` naming the file. A film that is mostly black padding
would otherwise be trained on with its study's label: noise in the training set.
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from mura_lib.errors import ImageReadError

ResizeMode = Literal["letterbox", "stretch"]
RESIZE_MODES: tuple[str, ...] = ("letterbox", "stretch")

# 64 megapixels: MURA's largest images are a few megapixels, so anything beyond this is a
# corrupt header or a decompression bomb, and decoding it would cost gigabytes of memory.
MAX_PIXELS = 64_000_000

# A truncated PNG is still used when at most this share of its rows is missing (a few rows
# at the bottom of a film, usually black background); beyond it the file is a bad image.
MAX_MISSING_SHARE = 0.05

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type

# Bilinear with Pillow's antialiasing support (a true downscaling filter, unlike
# torch's interpolate): the filter torchvision's Resize applies to PIL images.
_RESAMPLE = Image.Resampling.BILINEAR


@contextlib.contextmanager
def _truncated_images_allowed() -> Iterator[None]:
    """Let Pillow decode a truncated file as far as it goes, for this block only.

    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is a module-wide switch; setting it once for the whole
    process would silently hide truncation everywhere else. The cache builds in worker
    processes, one image at a time per process, so toggling it around one decode is safe.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def png_missing_share(path: str | Path) -> float | None:
    """The share of a PNG's pixel rows that its file does not hold (0.0 for a whole file).

    Read from the chunks: the image data (IDAT) present is decompressed as far as it goes and
    compared with the size the header (IHDR) promises. None when that cannot be told: not a
    PNG, no header, or an interlaced image (whose passes do not fill rows in order).
    """
    data = Path(path).read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        return None
    header, image_data, pos = None, [], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = body
        elif kind == b"IDAT":
            image_data.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or header[12] != 0 or header[9] not in _PNG_CHANNELS:
        return None
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    bits = header[8] * _PNG_CHANNELS[header[9]]
    expected = height * (1 + (width * bits + 7) // 8)  # each row: a filter byte, then pixels
    inflate, got = zlib.decompressobj(), 0
    for chunk in image_data:
        try:
            got += len(inflate.decompress(chunk))
        except zlib.error:
            break
    return 1.0 - min(got, expected) / expected if expected else None


def _to_gray_uint8(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an 8-bit grayscale array.

    8-bit modes (L, RGB, RGBA, P, LA, CMYK...) go through Pillow's own luminance conversion.
    16-bit and 32-bit modes (``I;16``, ``I``, ``F``) have no fixed intensity scale (12-bit
    detectors store values up to 4095 in 16-bit containers), and Pillow's ``convert("L")``
    would clip them at 255; they are scaled linearly so the image's maximum becomes 255 and
    zero stays black.
    """
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image).astype(np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        values = np.clip(values, 0.0, None)
        peak = values.max() if values.size else 0.0
        if peak > 0:
            values = values * (255.0 / peak)
        return np.rint(values).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels count as background (black), not as whatever colour they hide.
        image = image.convert("RGBA")
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, image)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def read_gray(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str | None]:
    """Decode an image file into an 8-bit grayscale array.

    Args:
        path: the image file (PNG in MURA; any format Pillow reads works).
        max_pixels: refuse images with more pixels than this (decompression bombs, corrupt
            headers) before decoding them.

    Returns:
        ``(array, warning)``: a (height, width) uint8 array, and ``None`` or a message saying
        the file was truncated and read only as far as it goes.

    Raises:
        ImageReadError: the file is missing, empty, not an image, too large or undecodable.
    """
    path = Path(path)
    hint = "re-download or re-extract it, or pass skip_bad=True to leave it out"
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: the file is empty (0 bytes); {hint}.")
    except FileNotFoundError:
        raise ImageReadError(
            f"{path}: the file does not exist; re-read the data set index (read_mura) "
            "or restore the file."
        ) from None
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that counts; Pillow's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageReadError(
                        f"{path}: {width}x{height} pixels is beyond the limit of {max_pixels} "
                        f"(a corrupt header or a decompression bomb); {hint}."
                    )
                warning = None
                try:
                    image.load()
                except OSError as err:
                    warning = _truncation_warning(path, err, hint)
                    # Pillow reads truncated data only when the switch is on at load time.
                    with _truncated_images_allowed(), Image.open(path) as retry:
                        retry.load()
                        image = retry.copy()
                return _to_gray_uint8(image), warning
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageReadError(
            f"{path}: the image is beyond the limit of a sane size ({err}); {hint}."
        ) from None
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not a readable image ({err}); {hint}.") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot decode the image ({err}); {hint}.") from None


def _truncation_warning(path: Path, err: OSError, hint: str) -> str:
    """The warning for a file that lost a few rows; ImageReadError if it lost more."""
    missing = png_missing_share(path)
    if missing is None:
        raise ImageReadError(
            f"{path}: the file is truncated ({err}) and how much of it is missing cannot be "
            f"told; {hint}."
        )
    if missing > MAX_MISSING_SHARE:
        raise ImageReadError(
            f"{path}: the file is truncated: {missing:.0%} of its rows are missing, more than "
            f"the {MAX_MISSING_SHARE:.0%} a film may lose and still be used; {hint}."
        )
    return (
        f"{path}: the file is truncated ({err}): {missing:.1%} of its rows are missing; read "
        "as far as it goes (the rest is black)"
    )


def resize_square(gray: np.ndarray, size: int, resize: ResizeMode = "letterbox") -> np.ndarray:
    """Resize a grayscale array to (size, size).

    Args:
        gray: a (height, width) uint8 array.
        size: the side S of the output square.
        resize: ``"letterbox"`` keeps the aspect ratio and pads with zeros, centred;
            ``"stretch"`` resizes each side independently (distorts the aspect ratio).

    Returns:
        A (size, size) uint8 array.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
    height, width = gray.shape
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8))
    if resize == "stretch":
        # reducing_gap lets Pillow shrink by an integer factor first: much faster on large
        # images and indistinguishable from a single resample at these ratios.
        return np.asarray(image.resize((size, size), _RESAMPLE, reducing_gap=3.0))
    top, left, new_h, new_w = letterbox_box(height, width, size)
    out = np.zeros((size, size), dtype=np.uint8)
    if (new_w, new_h) == (width, height):
        out[top : top + new_h, left : left + new_w] = gray
    else:
        resized = image.resize((new_w, new_h), _RESAMPLE, reducing_gap=3.0)
        out[top : top + new_h, left : left + new_w] = np.asarray(resized)
    return out


def letterbox_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Where a letterboxed (height, width) film lies in its (size, size) square:
    (top, left, box height, box width)."""
    scale = size / max(height, width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def load_image(
    path: str | Path,
    size: int,
    resize: ResizeMode = "letterbox",
    max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, str | None]:
    """Decode a file and resize it to a (size, size) uint8 square.

    Returns:
        ``(array, warning)`` as :func:`read_gray` does.

    Raises:
        ImageReadError: as :func:`read_gray`.
    """
    gray, warning = read_gray(path, max_pixels=max_pixels)
    return resize_square(gray, size, resize), warning
