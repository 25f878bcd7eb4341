"""Face detection (box + 5 landmarks) and similarity-transform alignment to the canonical 5-point template.

Builders and `fbnet_tf.predict` share this module so training and inference crops are identical.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Canonical 5-point template for a 112x112 crop (left eye, right eye, nose tip, left and right mouth corner,
# image coordinates; "left" = the subject's right eye, on the image's left). The widely used ArcFace template.
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)

# iBUG 68-point indices (0-based) of the points the 5-point landmarks are made of.
_LEFT_EYE_68 = slice(36, 42)
_RIGHT_EYE_68 = slice(42, 48)
_NOSE_TIP_68 = 30
_MOUTH_LEFT_68 = 48
_MOUTH_RIGHT_68 = 54


@dataclass(frozen=True)
class Face:
    """One detected face: box (x, y, w, h) in pixels, 5 landmarks [5, 2] (template order), detector score."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float


def template(size: int = 112) -> np.ndarray:
    """The 5-point template scaled to a `size` x `size` crop."""
    return TEMPLATE_112 * (float(size) / 112.0)


def landmarks68_to_5(points68) -> np.ndarray:
    """iBUG 68 landmarks [68, 2] -> the 5 template points: eye centres, nose tip, mouth corners."""
    points = np.asarray(points68, np.float64).reshape(68, 2)
    return np.stack([points[_LEFT_EYE_68].mean(axis=0), points[_RIGHT_EYE_68].mean(axis=0),
                     points[_NOSE_TIP_68], points[_MOUTH_LEFT_68], points[_MOUTH_RIGHT_68]]).astype(np.float32)


def similarity_transform(source, target) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping `source` onto `target` (Umeyama 1991).

    Returns the 2x3 matrix for `cv2.warpAffine`. Closed form, so the same points always give the same crop.
    """
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    reflection = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # keep a proper rotation, never a mirror
        reflection[1, 1] = -1
    rotation = u @ reflection @ vt
    variance = (src_c ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(singular) @ reflection) / variance) if variance > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float64)


def align(image_rgb: np.ndarray, landmarks5, size: int = 112) -> np.ndarray:
    """The `size` x `size` uint8 crop whose 5 landmarks land on the template (similarity transform)."""
    landmarks = np.asarray(landmarks5, np.float64).reshape(5, 2)
    if not np.all(np.isfinite(landmarks)):
        raise ValueError(f"landmarks must be finite, got {landmarks.tolist()}")
    matrix = similarity_transform(landmarks, template(size))
    return cv2.warpAffine(np.asarray(image_rgb, np.uint8), matrix, (int(size), int(size)),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def box_crop(image_rgb: np.ndarray, box, size: int = 112) -> np.ndarray:
    """The `size` x `size` crop of the square around a face box (x, y, w, h) (side max(w, h), same centre; black
    outside the image): for faces that come with a box but no landmarks."""
    x, y, w, h = (float(v) for v in box)
    scale = size / max(w, h)
    cx, cy = x + w / 2.0, y + h / 2.0
    matrix = np.array([[scale, 0, size / 2.0 - scale * cx], [0, scale, size / 2.0 - scale * cy]], np.float64)
    return cv2.warpAffine(np.asarray(image_rgb, np.uint8), matrix, (int(size), int(size)), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class Detector:
    """What `predict`, the tracker and the builders need from a face detector; `detector(name)` gives one.

    `detect`: every face in a frame, best score first. `refine`: the face around a box it was seen in on an
    earlier frame (the tracker's step between detections, much cheaper than `detect`), or None when no face is
    there any more. Both return `Face`s with 5 landmarks in template order and a score in [0, 1].
    """

    name = ""

    def detect(self, image_rgb: np.ndarray, min_score: float = 0.9) -> list[Face]:
        raise NotImplementedError

    def refine(self, image_rgb: np.ndarray, box, min_score: float = 0.5) -> Face | None:
        raise NotImplementedError


class MtcnnDetector(Detector):
    """MTCNN 1.0's full cascade (weights shipped in its wheel): the reference path."""

    name = "mtcnn"

    def __init__(self):
        from mtcnn import MTCNN

        self._mtcnn = MTCNN(device="CPU:0")
        self._onet_function = None

    def detect(self, image_rgb: np.ndarray, min_score: float = 0.9) -> list[Face]:
        image = _rgb(image_rgb)
        faces = []
        for found in self._mtcnn.detect_faces(image):
            score = float(found["confidence"])
            if score < min_score:
                continue
            points = found["keypoints"]
            landmarks = np.array([points[name] for name in ("left_eye", "right_eye", "nose", "mouth_left",
                                                            "mouth_right")], np.float32)
            faces.append(Face(box=tuple(float(v) for v in found["box"]), landmarks=landmarks, score=score))
        return sorted(faces, key=lambda face: -face.score)

    def refine(self, image_rgb: np.ndarray, box, min_score: float = 0.5) -> Face | None:
        """MTCNN's last stage alone (ONet) on an earlier box: made square about its centre and sampled at 48x48
        as the cascade samples RNet's boxes, it gives the box regression, the 5 points and the confidence."""
        image = _rgb(image_rgb)
        x, y, w, h = (float(v) for v in box)
        if w < 2 or h < 2:
            return None
        side = max(w, h)
        x0, y0 = x + (w - side) / 2, y + (h - side) / 2
        x1, y1 = x0 + side, y0 + side
        offsets, points, probabilities = (np.asarray(t) for t in self._onet(_onet_patch(image, x0, y0, x1, y1)))
        score = float(probabilities[0, 1])
        if score < min_score:
            return None
        # MTCNN 1.0's conventions (utils/landmarks.adjust_landmarks, utils/bboxes.adjust_bboxes): sizes count
        # both end pixels; points are fractions of the input box, shifted one pixel up-left.
        size = side + 1
        landmarks = np.stack([points[0, :5] * size + x0 - 1, points[0, 5:] * size + y0 - 1], axis=1)
        bx0, by0, bx1, by1 = np.array([x0, y0, x1, y1]) + offsets[0] * size
        return Face(box=(float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)),
                    landmarks=landmarks.astype(np.float32), score=score)

    @property
    def _onet(self):
        if self._onet_function is None:  # traced once (one input shape): ~4x faster than eager calls
            import tensorflow as tf

            self._onet_function = tf.function(self._mtcnn.get_stage(stage_id=3).model)
        return self._onet_function


def _onet_patch(image: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The [1, 48, 48, 3] ONet input for box (x0, y0, x1, y1): the sample grid of `tf.image.crop_and_resize` on
    the box divided by the image size (as MTCNN 1.0 crops), bilinear, 0 outside, pixels scaled to ~[-1, 1]."""
    height, width = image.shape[:2]
    steps = np.arange(48, dtype=np.float32) / 47.0
    xs = (x0 + steps * (x1 - x0)) * (width - 1) / width
    ys = (y0 + steps * (y1 - y0)) * (height - 1) / height
    map_x, map_y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    patch = cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=(127.5, 127.5, 127.5))
    return ((patch - 127.5) / 128.0)[None]


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    width = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    height = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = width * height
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _blazeface(range: str = "full") -> Detector:  # noqa: A002 - imported when asked for: it imports this module
    from fbnet_tf.blazeface import BlazeFaceDetector

    return BlazeFaceDetector(range)


# name -> a callable building the detector. "fast": BlazeFace full-range + FaceMesh (fbnet_tf.blazeface), the
# video path; "fast-short": BlazeFace's short-range model (close faces only, a little quicker).
DETECTORS = {"mtcnn": MtcnnDetector, "fast": _blazeface, "fast-short": lambda: _blazeface("short")}
# The defaults (README "Face detectors"): still images keep MTCNN, which finds the most faces in group photos;
# video (predict and the builders) takes the fast path, as close to MTCNN's points and ~20x quicker.
STILL_DETECTOR = "mtcnn"
VIDEO_DETECTOR = "fast"
_detectors: dict[str, Detector] = {}


def detector(name: str = "mtcnn") -> Detector:
    """The process's one detector of that name (`DETECTORS`), built on first use (they import TensorFlow)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}: expected one of {', '.join(DETECTORS)}")
    if name not in _detectors:
        _detectors[name] = DETECTORS[name]()
    return _detectors[name]


def detect(image_rgb: np.ndarray, min_score: float = 0.9) -> list[Face]:
    """Faces in an RGB uint8 image with the reference detector (MTCNN), best score first.

    Landmarks are in template order: left eye (image left), right eye, nose, left and right mouth corner.
    """
    return detector("mtcnn").detect(image_rgb, min_score)


def _rgb(image_rgb) -> np.ndarray:
    image = np.ascontiguousarray(np.asarray(image_rgb, np.uint8))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detect expects an RGB image [H, W, 3], got shape {image.shape}")
    return image
