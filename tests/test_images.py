"""Decoding and resizing one image: modes, letterbox/stretch geometry, bad files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from mura_lib.data.images import load_image, png_missing_share, read_gray, resize_square
from mura_lib.errors import ImageReadError


def _save(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels but holds no image data (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_letterbox_keeps_aspect_and_centres_wide_image() -> None:
    wide = np.full((50, 200), 255, dtype=np.uint8)  # 200 wide, 50 high
    out = resize_square(wide, 64, "letterbox")
    assert out.shape == (64, 64) and out.dtype == np.uint8
    # 200 -> 64 scales 50 -> 16 rows, centred: rows 24..39 hold the image, the rest is padding.
    rows = np.flatnonzero(out.max(axis=1) > 0)
    assert (rows.min(), rows.max()) == (24, 39)
    assert (out[:24] == 0).all() and (out[40:] == 0).all()
    assert (out[24:40] == 255).all()  # all columns used, the image content unchanged


def test_letterbox_tall_image_pads_columns() -> None:
    tall = np.full((200, 50), 200, dtype=np.uint8)
    out = resize_square(tall, 64, "letterbox")
    cols = np.flatnonzero(out.max(axis=0) > 0)
    assert (cols.min(), cols.max()) == (24, 39)
    assert (out[:, 24:40] == 200).all()


def test_letterbox_square_image_fills_the_square() -> None:
    square = np.full((100, 100), 7, dtype=np.uint8)
    assert (resize_square(square, 32, "letterbox") == 7).all()


def test_stretch_fills_the_square_and_distorts() -> None:
    wide = np.zeros((50, 200), dtype=np.uint8)
    wide[:, :100] = 255  # left half white
    out = resize_square(wide, 64, "stretch")
    assert out.shape == (64, 64)
    assert (out[:, :30] == 255).all() and (out[:, 34:] == 0).all()  # the edge stays in the middle


def test_unknown_resize_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="letterbox"):
        resize_square(np.zeros((4, 4), np.uint8), 8, "crop")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("L", 100, 100),
        ("RGB", (255, 0, 0), 76),  # ITU-R 601 luma of pure red
        ("RGBA", (200, 200, 200, 255), 200),
        ("LA", (90, 255), 90),
        ("P", 3, None),  # palette: value depends on the palette, just decodable
    ],
)
def test_modes_become_8bit_gray(tmp_path: Path, mode: str, color, expected) -> None:
    path = _save(tmp_path / "x.png", Image.new(mode, (30, 20), color))
    gray, warning = read_gray(path)
    assert gray.shape == (20, 30) and gray.dtype == np.uint8 and warning is None
    if expected is not None:
        assert (gray == expected).all()


def test_transparent_pixels_are_black(tmp_path: Path) -> None:
    path = _save(tmp_path / "x.png", Image.new("RGBA", (8, 8), (255, 255, 255, 0)))
    gray, _ = read_gray(path)
    assert (gray == 0).all()


def test_16bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 2000, 4000]], dtype=np.uint16)  # a 12-bit detector's range
    path = _save(tmp_path / "x16.png", Image.fromarray(values))
    gray, _ = read_gray(path)
    assert gray.tolist() == [[0, 64, 128, 255]]


def _noise_png(path: Path, shape: tuple[int, int] = (60, 40)) -> Path:
    """Random pixels: incompressible, so the bytes cut from the file are the rows lost."""
    rng = np.random.default_rng(0)
    return _save(path, Image.fromarray(rng.integers(0, 256, shape, np.uint8)))


def test_a_png_that_lost_a_few_rows_is_read_with_a_warning_saying_how_much(tmp_path) -> None:
    data = _noise_png(tmp_path / "full.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) - 16 - 60])  # IEND, CRC and about 1.5 of 60 rows
    assert png_missing_share(cut) == pytest.approx(1.5 / 60, abs=0.01)
    gray, warning = read_gray(cut)
    assert gray.shape == (60, 40)
    assert warning is not None and str(cut) in warning and "truncated" in warning
    assert f"{png_missing_share(cut):.1%} of its rows are missing" in warning
    # The switch is scoped to the one decode: it is off again afterwards.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("keep", [300, "half"])
def test_a_png_that_lost_most_of_its_rows_is_a_bad_image(tmp_path, keep) -> None:
    """The issue's case: a film truncated to 300 bytes used to be trained on, mostly black."""
    data = _noise_png(tmp_path / "full.png", (120, 64)).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: 300 if keep == 300 else len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_gray(cut)
    message = str(info.value)
    assert str(cut) in message and "of its rows are missing, more than the 5%" in message
    assert "skip_bad=True" in message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_whole_png_misses_nothing(tmp_path) -> None:
    assert png_missing_share(_noise_png(tmp_path / "full.png")) == 0.0
    assert png_missing_share(_save(tmp_path / "x.bmp", Image.new("L", (4, 4)))) is None


@pytest.mark.parametrize(
    ("content", "phrase"),
    [(b"", "empty"), (b"this is not a PNG file at all", "not a readable image")],
)
def test_unreadable_file_names_the_file(tmp_path: Path, content: bytes, phrase: str) -> None:
    path = tmp_path / "image1.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        read_gray(path)
    message = str(err.value)
    assert str(path) in message and phrase in message and "skip_bad=True" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="does not exist") as err:
        read_gray(tmp_path / "gone.png")
    assert "gone.png" in str(err.value)


@pytest.mark.parametrize("side", [10_000, 20_000])  # 100 MP: our limit; 400 MP: Pillow's too
def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, side: int) -> None:
    path = _png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(ImageReadError, match="beyond the limit") as err:
        read_gray(path)
    assert str(path) in str(err.value)


def test_load_image_decodes_and_resizes(tmp_path: Path) -> None:
    path = _save(tmp_path / "x.png", Image.new("L", (120, 60), 50))
    out, warning = load_image(path, 32, "letterbox")
    assert out.shape == (32, 32) and warning is None
    assert (out[8:24] == 50).all() and (out[:8] == 0).all()
