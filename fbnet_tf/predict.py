"""Facial behaviour of every face in an image, a folder of images or a video: one CSV row per face per frame.

    python -m fbnet_tf.predict photo.jpg --model runs/demo/export/fbnet
    python -m fbnet_tf.predict clip.mp4 --model runs/demo/export/tflite/1/fbnet_dynamic.tflite --annotate --every 5

Each frame: find faces and align them to 112x112 with `fbnet_tf.face` (as the TFRecord builders do), batch the
crops, run the model (on the centre of each crop, framed as in training), write rows. Still images are searched
with `face.STILL_DETECTOR`; video frames go through `fbnet_tf.tracking.Tracker` (full detection every `--detect-every`
frames, tracking in between), so each row's `face_id` follows one person through a video. `--model` is a
SavedModel (a version dir or a TF Serving model root), a `.tflite` or `.onnx` file, or a run dir / `.keras` file.
Frames are read one at a time and rows stream to disk, so memory stays flat however long the video; faces in a
large frame are found on a copy at most `detect_max_side` pixels wide and aligned from the original.
`summary.csv` holds one row per file and face (`fbnet_tf.temporal.Summary`). Every input without a row
(unreadable, unsupported, a subfolder, an image without a face) is listed in `errors.csv` with its reason. The
inputs and the model are checked before `--out` is touched, and the CSVs are replaced only by complete files.

    from fbnet_tf import Predictor
    table = Predictor("runs/demo/export/fbnet").predict("photo.jpg")   # a pandas DataFrame, one row per face
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from fbnet_tf import cli, face, images, temporal, video
from fbnet_tf.labels import AU_NAMES, EXPRESSIONS, VA_NAMES

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
CROP_SIZE = 112  # the builders' alignment size; the model frames its input from it (data.centre_crop)
FACE_COLUMNS = ("file", "frame", "time", "face_id", "x", "y", "w", "h", "face_score")
# The columns of a FaceBehaviorNet (a single-task one leaves the outputs it lacks empty); other models write
# `columns_for` their own outputs.
COLUMNS = (*FACE_COLUMNS, *VA_NAMES, "top_expression", *EXPRESSIONS, *AU_NAMES)
OUTPUT_ORDER = ("valence_arousal", "expression", "action_units", "attributes", "compound")
TOP_COLUMNS = {"expression": "top_expression", "compound": "top_compound"}  # the arg-max class, before the output's
ERROR_COLUMNS = ("file", "frame", "reason")
DETECT_MAX_SIDE = 1920  # larger frames are searched for faces at this size (MTCNN's pyramid needs GBs at 6000 px)
DETECT_EVERY = 5  # videos: full detection every this many kept frames, tracking in between (fbnet_tf.tracking)




@dataclass
class Frame:
    """One decoded frame (RGB uint8), or why it could not be read (`image` None, `error` set)."""

    file: str
    index: int
    time: float
    image: np.ndarray | None = None
    error: str = ""
    stride: int = 1  # every stride-th frame of its video is kept


# ---------------------------------------------------------------- models

def canonical_labels(outputs=("valence_arousal", "expression", "action_units")) -> dict[str, list[str]]:
    names = {"valence_arousal": list(VA_NAMES), "expression": list(EXPRESSIONS), "action_units": list(AU_NAMES)}
    return {key: names[key] for key in outputs if key in names}


def columns_for(labels: dict) -> tuple[str, ...]:
    """The CSV columns of a model whose outputs carry these label names: `COLUMNS` when they are the canonical
    ones (or some of them), else the face columns and each output's own names (with `TOP_COLUMNS`)."""
    if all(names == canonical_labels().get(key) for key, names in labels.items()):
        return COLUMNS
    columns = list(FACE_COLUMNS)
    for key in OUTPUT_ORDER:
        if key in labels:
            columns += ([TOP_COLUMNS[key]] if key in TOP_COLUMNS else []) + list(labels[key])
    return tuple(columns)


class _Model:
    """The model behind any deployable file: call(crops uint8 [N, 112, 112, 3]) -> dict of numpy outputs."""

    def __init__(self, path):
        from fbnet_tf import export

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such model (expected a SavedModel dir, .tflite, .onnx, "
                                    "a run dir or a .keras file)")
        self.path, self.kind = path, None
        savedmodel = _savedmodel_dir(path)
        if savedmodel is not None:
            import tensorflow as tf

            self.kind = "savedmodel"
            loaded = tf.saved_model.load(str(savedmodel))
            signature = loaded.signatures["serving_default"]
            self.labels = _decoded_labels(loaded.signatures["labels"]()) if "labels" in loaded.signatures \
                else canonical_labels(signature.structured_outputs)
            self._serve = lambda crops: {k: v.numpy() for k, v in signature(
                **{export.SERVING_INPUT: tf.constant(crops)}).items()}
            self.path = savedmodel
            return
        if path.suffix in (".tflite", ".onnx"):
            self.kind = path.suffix[1:]
            runner = export.tflite_runner(path) if self.kind == "tflite" else export.onnx_runner(path)
            self.size = runner.input_size
            self.labels = _labels_beside(path) or canonical_labels()
        else:
            self.kind = "keras"
            model = export.load_model(path)
            self.size = export.model_input_size(model)
            self.labels = export.labels_dict(model)
            runner = lambda images: {k: np.asarray(v) for k, v in model(images, training=False).items()}  # noqa: E731
        self._serve = lambda crops: runner(self._frame(crops))

    def _frame(self, crops):
        # The framing the exported SavedModel graph applies (and the model was trained on).
        from fbnet_tf.data import centre_crop

        return centre_crop(crops, self.size).numpy()

    def __call__(self, crops: np.ndarray) -> dict:
        return self._serve(np.asarray(crops, np.uint8))


def _decoded_labels(tensors) -> dict[str, list[str]]:
    return {key: [v.decode() for v in value.numpy()] for key, value in tensors.items()}


def _labels_beside(path: Path) -> dict | None:
    """The `labels.json` that export writes beside its TFLite and ONNX files (None for a file without one)."""
    import json

    labels = path.parent / "labels.json"
    return json.loads(labels.read_text()) if labels.is_file() else None


def _savedmodel_dir(path: Path) -> Path | None:
    """The SavedModel version dir for a version dir or a TF Serving model root (highest version); else None."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = [p for p in path.glob("*") if p.name.isdigit() and (p / "saved_model.pb").is_file()] \
        if path.is_dir() else []
    return max(versions, key=lambda p: int(p.name)) if versions else None


# ---------------------------------------------------------------- frames

def input_files(path) -> list[Path]:
    """The image and video files `path` names: itself, or a folder's (sorted, not recursive)."""
    return scan_inputs(path)[0]


def scan_inputs(path) -> tuple[list[Path], list[dict]]:
    """(image and video files, error rows for what a folder holds besides them: other file types, subfolders).

    A folder is not searched recursively. FileNotFoundError when `path` does not exist."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if not path.is_dir():
        return [path], []
    files, skipped = [], []
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            skipped.append({"file": str(entry), "frame": 0,
                            "reason": "subfolder: folders inside the input folder are not searched"})
        elif entry.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
            files.append(entry)
        else:
            skipped.append({"file": str(entry), "frame": 0, "reason": f"unsupported_file: "
                            f"{entry.suffix or 'no extension'} is not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                            f" or a video ({', '.join(sorted(VIDEO_EXTENSIONS))})"})
    return files, skipped


def read_frames(path: Path, every: int = 1, fps: float | None = None) -> Iterator[Frame]:
    """Frames of one image or video file, lazily; a file that cannot be read gives one Frame with the reason.
    Videos keep every `every`-th frame, or about `fps` frames a second (`video_stride`)."""
    name = str(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        yield from _video_frames(path, video_stride(path, every, fps))
        return
    try:
        image = images.read_rgb(path)
    except images.ImageError as error:
        yield Frame(name, 0, 0.0, error=f"{error.reason}: {error.message}")
        return
    yield Frame(name, 0, 0.0, image)


def video_stride(path, every: int = 1, fps: float | None = None) -> int:
    """Keep every how-many-th frame of a video: `every`, or with `fps` the stride closest to keeping `fps` frames a
    second of video at the container's frame rate (every frame when that rate is unknown or below `fps`)."""
    if not fps:
        return every
    rate = video.fps(path)
    if not math.isfinite(rate):
        log.warning("%s: frame rate unknown, --fps %g keeps every frame", path, fps)
        return 1
    return max(1, round(rate / fps))


def _video_frames(path: Path, stride: int) -> Iterator[Frame]:
    rate = video.fps(path)
    try:
        for index, image in video.frames(path, stride=stride):
            yield Frame(str(path), index, index / rate, image, stride=stride)
    except video.VideoError as err:
        yield Frame(str(path), 0, 0.0, error=str(err))


# ---------------------------------------------------------------- predictor

class Predictor:
    """Detect, align and analyse every face: `Predictor(model_path).predict(image_or_frames) -> DataFrame`.

    `model_path`: a SavedModel (version dir or TF Serving model root), `.tflite`, `.onnx`, run dir or `.keras`.
    Still images are searched with `detector` (default `face.STILL_DETECTOR`), their faces numbered 0, 1, ... by score
    in `face_id`; video frames (and frames given as arrays) go through a `fbnet_tf.tracking.Tracker` with
    `detector` (default `face.VIDEO_DETECTOR`) detecting every `detect_every` frames, so `face_id` follows each person
    (a new id after a face has been out of sight for a while: there is no re-identification).
    `smoothing`: None, or `window:N` / `ema:ALPHA` applied to each face's outputs over its frames
    (`fbnet_tf.temporal.Smoother`; the rows then carry a `smoothing` column naming it).
    After each `predict`, `errors` is a DataFrame (file, frame, reason) of the inputs that gave no row: unreadable
    files and frames, and still images without a face (video frames without one are only counted, in
    `frames_without_face`), and `summary` the per-file, per-face summary (`fbnet_tf.temporal.Summary`).
    `frames_read` counts the frames decoded.
    `detect_max_side`: faces are searched on a copy of each frame scaled down to this many pixels on its longer
    side (None: at full size); the crops are always aligned from the full-size frame.
    `batch_size`: crops per model call (dynamic-range TFLite runs 1.5-1.8x faster per crop in batches of 4 or
    more than one at a time, paper and small preset alike: benchmarks/video.py).
    """

    def __init__(self, model_path, batch_size: int = 32, min_face_score: float = 0.9,
                 detect_max_side: int | None = DETECT_MAX_SIDE, detector: str | None = None,
                 detect_every: int = DETECT_EVERY, smoothing: str | None = None):
        if detector is not None and detector not in face.DETECTORS:
            raise ValueError(f"unknown detector {detector!r}: expected one of {', '.join(face.DETECTORS)}")
        if smoothing:
            temporal.parse(smoothing)  # a bad setting is refused before the model is loaded
        self.model = _Model(model_path)
        self.smoothing = smoothing or ""
        self.columns = columns_for(self.model.labels) + ((temporal.SMOOTHING_COLUMN,) if self.smoothing else ())
        self.batch_size = batch_size
        self.min_face_score = min_face_score
        self.detect_max_side = detect_max_side
        self.detectors = {"still": detector or face.STILL_DETECTOR, "video": detector or face.VIDEO_DETECTOR}
        self.detect_every = detect_every
        self.errors = self.summary = None
        self.frames_read = self.frames_without_face = 0

    def predict(self, image_or_frames, every: int = 1, annotate_dir=None, fps: float | None = None):
        """Rows (columns `columns`) for every face in: a path (image, video or folder), an RGB uint8 image
        [H, W, 3], or an iterable of such frames (a video's, in order). `every`: keep every N-th video frame;
        `fps`: keep about that many frames a second of each video file instead. `annotate_dir`: also write the
        annotated images / videos there."""
        import pandas as pd

        errors = []
        summary = temporal.Summary(self.model.labels, self.smoothing)
        rows = []
        for row in self.iter_rows(image_or_frames, every, annotate_dir, errors, fps=fps):
            summary.add(row)
            rows.append(row)
        self.errors = pd.DataFrame(errors, columns=ERROR_COLUMNS)
        self.summary = pd.DataFrame(summary.rows(), columns=summary.columns)
        return pd.DataFrame(rows, columns=self.columns)

    def iter_rows(self, image_or_frames, every: int = 1, annotate_dir=None, errors=None,
                  progress: bool = False, fps: float | None = None) -> Iterator[dict]:
        """`predict`, one row at a time (for long videos: nothing accumulates); unreadable inputs go to `errors`."""
        frames, total, skipped = _frames_of(image_or_frames, every, fps)
        for row in skipped:
            log.warning("%s: %s", row["file"], row["reason"])
        if errors is not None:
            errors.extend(skipped)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=total or None, unit="frame", desc="predict")  # shows frames/s
        writer = _AnnotationWriter(annotate_dir) if annotate_dir else None
        smoother = self._smoother()  # a fresh one per call: a stream of frames given twice starts over
        pending: list[tuple[Frame, list]] = []
        self.frames_read = self.frames_without_face = 0
        tracker, tracked_file = None, None
        try:
            for frame in frames:
                if not frame.error:
                    self.frames_read += 1
                    try:
                        if _is_still(frame):
                            faces = self._still_faces(frame.image)
                        else:
                            if frame.file != tracked_file:  # a new video: new ids
                                tracker, tracked_file = self._tracker(), frame.file
                            faces = [(t.face_id, t.face) for t in tracker.update(frame.image)]
                        faces = [(face_id, found, self._align(frame.image, found)) for face_id, found in faces]
                    except Exception as error:  # one odd frame (e.g. a 2x2 image) must not end a long run
                        frame.error = f"face detection failed: {type(error).__name__}: {error}"
                if frame.error:
                    log.warning("%s (frame %d): %s", frame.file, frame.index, frame.error)
                    if errors is not None:
                        errors.append({"file": frame.file, "frame": frame.index, "reason": frame.error})
                    continue
                if not faces:
                    self.frames_without_face += 1
                    if errors is not None and _is_still(frame):
                        errors.append({"file": frame.file, "frame": frame.index,
                                       "reason": f"no_face: no face scored >= {self.min_face_score}"})
                if writer is None:
                    frame.image = None  # only the crops are needed from here: pending frames cost no memory
                pending.append((frame, faces))
                # Flush on crops or on frames, so frames without faces cannot pile up either.
                if sum(len(faces) for _, faces in pending) >= self.batch_size or len(pending) >= self.batch_size:
                    yield from self._flush(pending, writer, smoother)
                    pending = []
            yield from self._flush(pending, writer, smoother)
        finally:
            if writer is not None:
                writer.close()

    def _detector(self, kind: str):
        found = face.detector(self.detectors[kind])
        return _Downscaled(found, self.detect_max_side) if self.detect_max_side else found

    def _tracker(self):
        from fbnet_tf.tracking import Tracker

        return Tracker(self._detector("video"), self.detect_every, min_score=self.min_face_score)

    def _still_faces(self, image) -> list:
        return list(enumerate(self._detector("still").detect(image, min_score=self.min_face_score)))

    @staticmethod
    def _align(image, found):
        return face.align(image, found.landmarks, CROP_SIZE)

    def _smoother(self):
        if not self.smoothing:
            return None
        return temporal.Smoother(self.smoothing, _output_columns(self.model.labels, self.columns),
                                 {top: self.model.labels.get(key, []) for key, top in TOP_COLUMNS.items()})

    def _flush(self, pending, writer, smoother=None) -> Iterator[dict]:
        crops = [crop for _, faces in pending for _, _, crop in faces]
        outputs = self.model(np.stack(crops)) if crops else {}
        position = 0
        for frame, faces in pending:
            rows = []
            for face_id, found, _ in faces:
                row = _row(frame, face_id, found, {k: v[position] for k, v in outputs.items()}, self.model.labels,
                           self.columns)
                rows.append(smoother(row) if smoother else row)
                position += 1
            if writer is not None:
                writer.write(frame, rows)
            yield from rows


def _output_columns(labels: dict, columns) -> list[str]:
    """The model-output columns of a row (what smoothing averages)."""
    return [name for key in OUTPUT_ORDER for name in labels.get(key, []) if name in columns]


class _Downscaled:
    """A detector that searches frames larger than `max_side` on a scaled-down copy (made once per frame) and
    answers in the full frame's pixels."""

    def __init__(self, detector, max_side: int):
        self.detector, self.max_side = detector, max_side
        self._frame = self._search = None

    def _scaled(self, image) -> tuple[np.ndarray, float, float]:
        height, width = image.shape[:2]
        if max(height, width) <= self.max_side:
            return image, 1.0, 1.0
        if image is not self._frame:
            ratio = self.max_side / max(height, width)
            self._frame, self._search = image, cv2.resize(
                image, (max(1, round(width * ratio)), max(1, round(height * ratio))), interpolation=cv2.INTER_AREA)
        return self._search, width / self._search.shape[1], height / self._search.shape[0]

    def detect(self, image, min_score: float = 0.9) -> list:
        search, sx, sy = self._scaled(image)
        return [_scale_face(f, sx, sy) for f in self.detector.detect(search, min_score)]

    def refine(self, image, box, min_score: float = 0.5):
        search, sx, sy = self._scaled(image)
        x, y, w, h = box
        found = self.detector.refine(search, (x / sx, y / sy, w / sx, h / sy), min_score)
        return _scale_face(found, sx, sy) if found is not None else None


def _scale_face(found, sx: float, sy: float):
    if sx == sy == 1.0:
        return found
    x, y, w, h = found.box
    return face.Face(box=(x * sx, y * sy, w * sx, h * sy), landmarks=found.landmarks * np.float32([sx, sy]),
                     score=found.score)


def _is_still(frame: Frame) -> bool:
    """A frame that is a whole input (an image file or array), not one of a video's or a stream's."""
    return frame.file != "<frames>" and Path(frame.file).suffix.lower() not in VIDEO_EXTENSIONS


def _row(frame: Frame, face_id: int, found, outputs: dict, labels: dict, columns) -> dict:
    x, y, w, h = found.box
    row = {"file": frame.file, "frame": frame.index, "time": frame.time, "face_id": int(face_id), "x": x, "y": y,
           "w": w, "h": h, "face_score": float(found.score)}
    for key in OUTPUT_ORDER:
        names = labels.get(key) or canonical_labels().get(key, [])
        if TOP_COLUMNS.get(key) in columns:
            row[TOP_COLUMNS[key]] = names[int(np.argmax(outputs[key]))] if key in outputs else ""
        # A model without some output (a single-task one) leaves its columns empty (NaN).
        values = outputs.get(key, np.full(len(names), np.nan))
        row.update({name: float(v) for name, v in zip(names, values) if name in columns})
    return row


def _frames_of(source, every: int, fps: float | None = None) -> tuple[Iterable[Frame], int, list[dict]]:
    """(frames, expected count, error rows of a folder's other entries) of a path, an image array, or an
    iterable of image arrays."""
    if isinstance(source, np.ndarray) and source.ndim == 3:
        return [Frame("<array>", 0, 0.0, _as_rgb_uint8(source))], 1, []
    if isinstance(source, (str, os.PathLike)):
        files, skipped = scan_inputs(source)
        total = sum(video.frame_count(f, video_stride(f, every, fps)) if f.suffix.lower() in VIDEO_EXTENSIONS
                    else 1 for f in files)
        return (frame for f in files for frame in read_frames(f, every, fps)), total, skipped
    if fps:
        raise ValueError("fps needs video files (frames given as arrays have no frame rate): use every")
    frames = (Frame("<frames>", i, math.nan, _as_rgb_uint8(image), stride=every)
              for i, image in enumerate(source) if i % every == 0)
    return frames, -(-len(source) // every) if hasattr(source, "__len__") else 0, []


def _as_rgb_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels 0..255, got {image.dtype}")
    return image


class _AnnotationWriter:
    """Writes annotated frames: images as `<dir>/<name>`, each video as `<dir>/<stem>.mp4`."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.video, self.video_file = None, None

    def write(self, frame: Frame, rows: list[dict]):
        from fbnet_tf.annotate import annotate

        image = cv2.cvtColor(annotate(frame.image, rows), cv2.COLOR_RGB2BGR)
        source = Path(frame.file)
        if source.suffix.lower() not in VIDEO_EXTENSIONS:
            name = source.name if source.suffix else f"frame_{frame.index:06d}.png"
            cv2.imwrite(str(self.directory / name), image)
            return
        if self.video_file != frame.file:
            self.close()
            rate = video.fps(frame.file)
            fps = (rate if math.isfinite(rate) else 25.0) / frame.stride  # real-time playback of the kept frames
            height, width = image.shape[:2]
            self.video = cv2.VideoWriter(str(self.directory / f"{source.stem}.mp4"),
                                         cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            self.video_file = frame.file
        self.video.write(image)

    def close(self):
        if self.video is not None:
            self.video.release()
        self.video, self.video_file = None, None


# ---------------------------------------------------------------- CLI

def main(argv=None) -> int:
    """0: rows written; 1: no input could be processed (--out left as it was); 2: a usage error."""
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="an image, a folder of images/videos, or a video")
    parser.add_argument("--model", required=True, help="SavedModel dir, .tflite, .onnx, run dir or .keras")
    parser.add_argument("--out", default="fbnet_predictions",
                        help="output folder (predictions.csv, summary.csv, errors.csv)")
    parser.add_argument("--annotate", action="store_true", help="also write annotated images/videos")
    parser.add_argument("--batch-size", type=cli.integer(1), default=32, help="crops per model call")
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--every", type=cli.integer(1), default=1, help="keep every N-th video frame")
    frames.add_argument("--fps", type=cli.number(1e-3), default=None,
                        help="keep about F video frames a second (the stride from each video's frame rate)")
    parser.add_argument("--detector", choices=sorted(face.DETECTORS), default=None,
                        help=f"face detector (default: {face.VIDEO_DETECTOR} for videos, {face.STILL_DETECTOR} for images)")
    parser.add_argument("--detect-every", type=cli.integer(1), default=DETECT_EVERY,
                        help="videos: detect faces every K kept frames and track them in between (1: every frame)")
    parser.add_argument("--smooth", type=_smoothing, default=None, metavar="window:N|ema:ALPHA",
                        help="smooth each face's outputs over its frames (off by default); the CSVs then have a "
                             f"'{temporal.SMOOTHING_COLUMN}' column naming it")
    parser.add_argument("--min-face-score", type=cli.number(0, 1), default=0.9)
    parser.add_argument("--detect-max-side", type=cli.integer(0), default=DETECT_MAX_SIDE,
                        help="search faces on frames scaled down to this longer side (0: full size); crops are "
                             "aligned from the full-size frame")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cli.quiet_tensorflow()

    # Everything that can be refused is refused before --out is touched.
    try:
        files, _ = scan_inputs(args.input)
        if not files:
            parser.error(f"{args.input}: holds no image ({', '.join(sorted(IMAGE_EXTENSIONS))}) or video "
                         f"({', '.join(sorted(VIDEO_EXTENSIONS))})")
        predictor = Predictor(args.model, args.batch_size, args.min_face_score, args.detect_max_side or None,
                              detector=args.detector, detect_every=args.detect_every, smoothing=args.smooth)
    except FileNotFoundError as error:
        parser.error(str(error))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out}: exists and is not a folder")
    result = write_results(predictor, args.input, out, every=args.every, fps=args.fps, annotate=args.annotate)
    if result is None:
        return cli.FAILED
    faces, errors = result
    print(f"{faces} face rows from {predictor.frames_read} frames -> {out / 'predictions.csv'}; per face -> "
          f"{out / 'summary.csv'}; {errors} inputs without a row -> {out / 'errors.csv'}"
          + (f" ({predictor.frames_without_face} frames had no face)" if predictor.frames_without_face else "")
          + (f"; annotated -> {out / 'annotated'}" if args.annotate else ""))
    return 0


def write_results(predictor: Predictor, source, out: Path, *, every: int = 1, fps: float | None = None,
                  annotate: bool = False, progress: bool = True) -> tuple[int, int] | None:
    """`predictions.csv`, `summary.csv` and `errors.csv` of `source` in `out`, each replacing the old one only when
    complete: (face rows, error rows), or None (nothing replaced) when no input could be read or no face was
    found in any. Rows stream to disk; only the summary's per-face totals are held."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    errors: list[dict] = []
    faces = 0
    summary = temporal.Summary(predictor.model.labels, predictor.smoothing)
    predictions = _partial(out / "predictions.csv")
    try:
        with open(predictions, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=predictor.columns)
            writer.writeheader()
            for row in predictor.iter_rows(source, every, out / "annotated" if annotate else None, errors,
                                           progress=progress, fps=fps):
                writer.writerow(row)
                summary.add(row)
                faces += 1
        if predictor.frames_read == 0:
            print(f"error: none of the inputs in {source} could be read ({len(errors)} listed above); "
                  f"{out} left as it was", file=sys.stderr)
            return None
        if faces == 0:  # an empty table must not replace a good one
            print(f"error: no face scored >= {predictor.min_face_score} in any of the {predictor.frames_read} "
                  f"frames read from {source}; {out / 'predictions.csv'} left as it was", file=sys.stderr)
            return None
        _write_csv(out / "errors.csv", ERROR_COLUMNS, errors)
        _write_csv(out / "summary.csv", summary.columns, summary.rows())
        os.replace(predictions, out / "predictions.csv")
    finally:
        for path in out.glob(f"*{_PARTIAL}"):
            path.unlink(missing_ok=True)
    return faces, len(errors)


def _write_csv(path: Path, columns, rows):
    partial = _partial(path)
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)


def _smoothing(text: str) -> str:
    try:
        temporal.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


_PARTIAL = f".partial-{os.getpid()}"


def _partial(path: Path) -> Path:
    """Where a result file is written before it replaces `path` whole (same folder, so the rename is atomic)."""
    return path.with_name(path.name + _PARTIAL)


if __name__ == "__main__":
    sys.exit(main())
