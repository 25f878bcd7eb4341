"""Reading image files strictly: a file that is missing, empty, cut short or corrupt is an error with a reason.

OpenCV and TensorFlow decode a JPEG whose scan data is damaged into a picture with garbage in it, printing libjpeg's
"Corrupt JPEG data" warning to stderr and nothing else. Builders (training data) and predict (results a user trusts)
must not take such an image, so JPEGs are decoded with libjpeg-turbo in strict mode (simplejpeg), where every
decoder warning is an error; other formats go through OpenCV.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Reason codes, shared with the builders' skip records (tfrecords_builder.base.Reason).
MISSING_FILE = "missing_file"
UNREADABLE_IMAGE = "unreadable_image"
TRUNCATED_IMAGE = "truncated_image"
CORRUPT_IMAGE = "corrupt_image"

_JPEG_MAGIC = b"\xff\xd8"


class ImageError(ValueError):
    """An image that cannot be used; `reason` is one of the codes above."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def decode_rgb(data: bytes, name: str = "image", *, min_factor: int = 1) -> np.ndarray:
    """RGB uint8 pixels of an encoded image; ImageError(UNREADABLE/TRUNCATED/CORRUPT_IMAGE) naming `name`.

    `min_factor` > 1 gives an image about that many times smaller on each side (for a JPEG through libjpeg's DCT
    scaling, which also makes decoding a large photo cheap).
    """
    if not data:
        raise ImageError(UNREADABLE_IMAGE, f"{name} is empty (0 bytes)")
    if data[:2] == _JPEG_MAGIC:
        image = _decode_jpeg(data, name, min_factor)
        if image is not None:
            return image
    return _decode_opencv(data, name, min_factor)


def read_rgb(path, *, min_factor: int = 1) -> np.ndarray:
    """`decode_rgb` of a file; ImageError(MISSING_FILE) when it does not exist or cannot be read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(MISSING_FILE, f"image {path} does not exist") from None
    except OSError as error:
        raise ImageError(UNREADABLE_IMAGE, f"cannot read {path}: {error}") from None
    return decode_rgb(data, str(path), min_factor=min_factor)


def _decode_jpeg(data: bytes, name: str, min_factor: int) -> np.ndarray | None:
    """Strict libjpeg-turbo decoding; None for a JPEG it does not handle (e.g. CMYK), left to OpenCV."""
    import simplejpeg

    last_scan = data.rfind(b"\xff\xda")
    if last_scan >= 0 and data.rfind(b"\xff\xd9") < last_scan:
        # A complete file has its end-of-image marker after the last start-of-scan.
        raise ImageError(TRUNCATED_IMAGE, f"JPEG {name} is truncated ({len(data)} bytes, no end marker)")
    try:
        size = {}
        if min_factor > 1:  # libjpeg scales by n/8: ask for the smallest size at least 1/min_factor of the original
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            size = {"min_height": -(-height // min_factor), "min_width": -(-width // min_factor)}
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **size)
    except ValueError as strict_error:
        try:  # decodes when only warnings were raised: damaged data, not an unsupported file
            simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=8, strict=False)
        except ValueError:
            return None
        raise ImageError(CORRUPT_IMAGE, f"JPEG {name} is corrupt: {strict_error}") from None


def _decode_opencv(data: bytes, name: str, min_factor: int) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(UNREADABLE_IMAGE, f"{name} ({len(data)} bytes) is not a decodable image")
    if min_factor > 1:
        size = (max(1, image.shape[1] // min_factor), max(1, image.shape[0] // min_factor))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
