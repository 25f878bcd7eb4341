"""Strict image reading: damaged JPEGs are refused with a reason, sound ones decode as OpenCV decodes them."""
import cv2
import numpy as np
import pytest

from fbnet_tf import images


def _jpeg(quality=90) -> bytes:
    from skimage import data

    ok, buffer = cv2.imencode(".jpg", data.astronaut()[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buffer.tobytes()


def _scribble(jpeg: bytes, seed: int) -> bytes:
    """200 random bytes written inside the scan data; the end marker stays intact."""
    rng = np.random.default_rng(seed)
    scan = jpeg.rfind(b"\xff\xda")
    start = int(rng.integers(scan + 100, len(jpeg) - 300))
    damaged = bytearray(jpeg)
    damaged[start:start + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    return bytes(damaged)


def test_sound_jpeg_and_png_decode_like_opencv(tmp_path):
    jpeg = _jpeg()
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    decoded = images.decode_rgb(jpeg)
    assert decoded.shape == expected.shape == (512, 512, 3)
    # libjpeg-turbo vs OpenCV's libjpeg: the same pixels up to IDCT rounding
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 1.0
    ok, png = cv2.imencode(".png", expected[:, :, ::-1])
    path = tmp_path / "a.png"
    path.write_bytes(png.tobytes())
    np.testing.assert_array_equal(images.read_rgb(path), expected)


@pytest.mark.parametrize("seed", range(8))
def test_scan_data_damage_is_corrupt(seed):
    damaged = _scribble(_jpeg(), seed)
    assert cv2.imdecode(np.frombuffer(damaged, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV takes it
    with pytest.raises(images.ImageError) as error:
        images.decode_rgb(damaged, "x.jpg")
    assert error.value.reason == images.CORRUPT_IMAGE and "x.jpg" in str(error.value)


def test_truncated_empty_missing(tmp_path):
    jpeg = _jpeg()
    cases = {"cut.jpg": (jpeg[: len(jpeg) // 2], images.TRUNCATED_IMAGE),
             "empty.jpg": (b"", images.UNREADABLE_IMAGE),
             "text.png": (b"not an image at all", images.UNREADABLE_IMAGE)}
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(images.ImageError) as error:
            images.read_rgb(tmp_path / name)
        assert error.value.reason == reason, name
    with pytest.raises(images.ImageError) as error:
        images.read_rgb(tmp_path / "absent.jpg")
    assert error.value.reason == images.MISSING_FILE


def test_min_factor_shrinks():
    assert images.decode_rgb(_jpeg(), min_factor=4).shape == (128, 128, 3)
