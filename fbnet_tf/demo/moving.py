"""Videos of demo faces moving across a plain background, for the tracker's tests and `benchmarks/video.py`.

Each face is rendered once (`portraits`) and pasted through a soft elliptical mask at its position in each frame
(`compose`), so a face drawn later covers an earlier one where they overlap, as a nearer person would.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fbnet_tf.demo import face_model as fm
from fbnet_tf.demo import render as rd


def portraits(count: int, face_px: int = 150, seed: int = 0) -> list[np.ndarray]:
    """`count` different people, frontal and neutral, each an RGB uint8 patch of about 4/3 x 16/15 `face_px` with
    the face `face_px` tall in its middle (on a plain studio backdrop)."""
    rng = np.random.default_rng(seed)
    height, width = round(face_px * 4 / 3), round(face_px * 16 / 15)
    patches = []
    for i in range(count):
        scene = rd.placed(height, width, centre=(width / 2, height / 2), face_px=face_px, background=1,
                          seed=seed * 1000 + i)
        patches.append(rd.render(fm.sample_person(rng), np.zeros(len(fm.MODEL_AUS), np.float32), scene)[0])
    return patches


def compose(patches: list[np.ndarray], positions, size=(480, 640), background: int = 90) -> np.ndarray:
    """One RGB frame of `size` (height, width): each patch whose position (x, y of its top-left corner; None:
    absent) is given pasted at it, in order, through an elliptical mask; the parts outside the frame cut off."""
    frame = np.full((*size, 3), background, np.float32)
    for patch, position in zip(patches, positions):
        if position is None:
            continue
        h, w = patch.shape[:2]
        x, y = (int(round(v)) for v in position)
        x0, y0, x1, y1 = max(0, x), max(0, y), min(size[1], x + w), min(size[0], y + h)
        if x0 >= x1 or y0 >= y1:
            continue
        alpha = _mask(h, w)[y0 - y:y1 - y, x0 - x:x1 - x, None]
        frame[y0:y1, x0:x1] = alpha * patch[y0 - y:y1 - y, x0 - x:x1 - x] + (1 - alpha) * frame[y0:y1, x0:x1]
    return np.round(frame).astype(np.uint8)


def glide(start, end, frames: int) -> list[tuple[float, float]]:
    """Positions moving at constant speed from `start` to `end` over `frames` frames."""
    return [tuple(np.asarray(start, float) + (np.asarray(end, float) - start) * t / max(1, frames - 1))
            for t in range(frames)]


def write_video(path, frames, fps: float = 25.0) -> Path:
    """Write RGB frames (any iterable: one in memory at a time) as a video, MJPG for `.avi`, else mp4v."""
    path = Path(path)
    writer = None
    try:
        for frame in frames:
            if writer is None:
                codec = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, frame.shape[1::-1])
                if not writer.isOpened():
                    raise OSError(f"cv2.VideoWriter could not open {path} ({codec})")
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        if writer is not None:
            writer.release()
    return path


_masks: dict[tuple[int, int], np.ndarray] = {}


def _mask(height: int, width: int) -> np.ndarray:
    """Opacity [height, width] in 0..1: an ellipse filling the patch, its edge blurred over a few pixels."""
    if (height, width) not in _masks:
        mask = np.zeros((height, width), np.float32)
        cv2.ellipse(mask, (width // 2, height // 2), (int(width * 0.46), int(height * 0.48)), 0, 0, 360, 1.0, -1)
        _masks[height, width] = cv2.GaussianBlur(mask, (0, 0), max(1.0, width / 60))
    return _masks[height, width]
