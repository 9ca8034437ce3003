"""The PNG encoder and the picture helpers (no Pillow needed; Pillow, when installed,
decodes the files as an independent reader)."""
import struct
import zlib

import numpy as np
import pytest

from cnntrain.errors import CnnTrainError
from cnntrain.tools.png import encode_png, grid, to_uint8, upscale, write_png


def decode(data: bytes) -> tuple[dict, np.ndarray]:
    """A strict reader of exactly what the PNG specification says the file must hold:
    the signature, chunks with matching CRCs, IHDR first and IEND last, scanlines of
    filter type 0."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, comp, filt, interlace) == (8, 0, 0, 0)
    channels = {0: 1, 2: 3}[color]
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert not rows[:, 0].any()      # filter type 0 on every scanline
    pixels = rows[:, 1:].reshape((height, width) + ((channels,) if channels == 3 else ()))
    return {"width": width, "height": height, "color": color}, pixels


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (7, 5, 3), (32, 32, 3)])
def test_encoded_pixels_read_back_exactly(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    header, pixels = decode(encode_png(image))
    assert (header["height"], header["width"]) == shape[:2]
    assert header["color"] == (2 if len(shape) == 3 else 0)
    np.testing.assert_array_equal(pixels, image)


def test_pillow_reads_the_same_pixels():
    Image = pytest.importorskip("PIL.Image", reason="Pillow (the image extra) is not installed")
    import io

    image = np.random.default_rng(1).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(image))) as img:
        np.testing.assert_array_equal(np.asarray(img), image)
    gray = image[..., 0]
    with Image.open(io.BytesIO(encode_png(gray))) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.asarray(img), gray)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)])
def test_other_arrays_are_refused(bad):
    with pytest.raises(ValueError, match="uint8"):
        encode_png(bad)


def test_write_png_is_atomic_and_errors_are_one_line(tmp_path):
    path = write_png(tmp_path / "sub" / "a.png", np.zeros((2, 3), np.uint8))
    assert decode(path.read_bytes())[1].shape == (2, 3)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]     # no temporary left
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CnnTrainError, match="could not write"):
        write_png(blocker / "x.png", np.zeros((2, 2), np.uint8))


def test_scaling_upscaling_and_grids():
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 1.0])), [0, 128, 255])
    np.testing.assert_array_equal(to_uint8(np.array([5.0, 5.0])), [128, 128])   # constant
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 2.0]), 0, 1), [0, 255])  # clipped
    np.testing.assert_array_equal(upscale(np.array([[1, 2]], np.uint8), 2),
                                  [[1, 1, 2, 2], [1, 1, 2, 2]])
    tiles = np.arange(1, 6, dtype=np.uint8).reshape(5, 1, 1)
    out = grid(tiles, columns=3, pad=1, background=0)
    # 2 rows of 3 one-pixel tiles, a pixel of background around each
    assert out.shape == (5, 7)
    assert [out[1, 1], out[1, 3], out[1, 5], out[3, 1], out[3, 3], out[3, 5]] == [1, 2, 3, 4, 5, 0]
    assert grid(np.zeros((4, 2, 2, 3), np.uint8), pad=0).shape == (4, 4, 3)   # 2x2 by default
