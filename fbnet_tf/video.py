"""Lazy video reading shared by the builders and `fbnet_tf.predict`: one decoded frame in memory at a time."""
from __future__ import annotations

import math
from typing import Iterator

import cv2
import numpy as np


class VideoError(Exception):
    """A video that cannot be opened, or that yields no frame to read."""


class VideoEnded(VideoError):
    """A video that has frames, but none from the requested start on."""


def frames(path, stride: int = 1, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB uint8 frame) for every `stride`-th frame from `start`; skipped frames are grabbed, not
    decoded. Raises VideoError when the video cannot be opened, and after the last frame when none was yielded
    (OpenCV opens some corrupt files and then decodes nothing: such a video must not pass silently)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"OpenCV cannot open video {path} (corrupt or unsupported codec)")
        index, yielded = 0, 0
        while capture.grab():
            if index >= start and (index - start) % max(1, stride) == 0:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    break
                yielded += 1
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    if not yielded:
        if 0 < index <= start:
            raise VideoEnded(f"{path} has {index} frames, none from frame {start} on")
        raise VideoError(f"no frame of {path} could be decoded")


def fps(path) -> float:
    """Frames per second from the container header (NaN when unknown)."""
    capture = cv2.VideoCapture(str(path))
    rate = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    return rate or math.nan


def frame_count(path, stride: int = 1) -> int:
    """How many frames `frames(path, stride)` will yield, from the header (0 when unknown)."""
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return max(0, -(-count // max(1, stride)))
