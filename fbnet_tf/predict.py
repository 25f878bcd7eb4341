"""Facial behaviour of every face in an image, a folder of images or a video: one CSV row per face per frame.

    python -m fbnet_tf.predict photo.jpg --model runs/demo/export/fbnet
    python -m fbnet_tf.predict clip.mp4 --model runs/demo/export/tflite/fbnet_dynamic.tflite --annotate --every 5

Each frame: detect faces and align them to 112x112 with `fbnet_tf.face` (as the TFRecord builders do), batch the
crops, run the model (on the centre of each crop, framed as in training), write rows. `--model` is a SavedModel
(a version dir or a TF Serving model root), a `.tflite` or `.onnx` file, or a run dir / `.keras` file. Frames are read one at a time, so
memory stays flat however long the video. Unreadable inputs are logged and listed in `errors.csv`, not fatal.

    from fbnet_tf import Predictor
    table = Predictor("runs/demo/export/fbnet").predict("photo.jpg")   # a pandas DataFrame, one row per face
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from fbnet_tf import images, video
from fbnet_tf.labels import AU_NAMES, EXPRESSIONS, VA_NAMES

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
CROP_SIZE = 112  # the builders' alignment size; the model frames its input from it (data.centre_crop)
FACE_COLUMNS = ("file", "frame", "time", "x", "y", "w", "h", "face_score")
# The columns of a FaceBehaviorNet (a single-task one leaves the outputs it lacks empty); other models write
# `columns_for` their own outputs.
COLUMNS = (*FACE_COLUMNS, *VA_NAMES, "top_expression", *EXPRESSIONS, *AU_NAMES)
OUTPUT_ORDER = ("valence_arousal", "expression", "action_units", "attributes")
ERROR_COLUMNS = ("file", "frame", "reason")


@dataclass
class Frame:
    """One decoded frame (RGB uint8), or why it could not be read (`image` None, `error` set)."""

    file: str
    index: int
    time: float
    image: np.ndarray | None = None
    error: str = ""


# ---------------------------------------------------------------- models

def canonical_labels(outputs=("valence_arousal", "expression", "action_units")) -> dict[str, list[str]]:
    names = {"valence_arousal": list(VA_NAMES), "expression": list(EXPRESSIONS), "action_units": list(AU_NAMES)}
    return {key: names[key] for key in outputs if key in names}


def columns_for(labels: dict) -> tuple[str, ...]:
    """The CSV columns of a model whose outputs carry these label names: `COLUMNS` when they are the canonical
    ones (or some of them), else the face columns and each output's own names (with `top_expression`)."""
    if all(names == canonical_labels().get(key) for key, names in labels.items()):
        return COLUMNS
    columns = list(FACE_COLUMNS)
    for key in OUTPUT_ORDER:
        if key in labels:
            columns += (["top_expression"] if key == "expression" else []) + list(labels[key])
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
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return [path]


def read_frames(path: Path, every: int = 1) -> Iterator[Frame]:
    """Frames of one image or video file, lazily; a file that cannot be read gives one Frame with the reason."""
    name = str(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        yield from _video_frames(path, every)
        return
    try:
        image = images.read_rgb(path)
    except images.ImageError as error:
        yield Frame(name, 0, 0.0, error=f"{error.reason}: {error.message}")
        return
    yield Frame(name, 0, 0.0, image)


def _video_frames(path: Path, every: int) -> Iterator[Frame]:
    rate = video.fps(path)
    try:
        for index, image in video.frames(path, stride=every):
            yield Frame(str(path), index, index / rate, image)
    except video.VideoError as err:
        yield Frame(str(path), 0, 0.0, error=str(err))


# ---------------------------------------------------------------- predictor

class Predictor:
    """Detect, align and analyse every face: `Predictor(model_path).predict(image_or_frames) -> DataFrame`.

    `model_path`: a SavedModel (version dir or TF Serving model root), `.tflite`, `.onnx`, run dir or `.keras`.
    After each call, `errors` is a DataFrame (file, frame, reason) of the inputs that could not be read.
    """

    def __init__(self, model_path, batch_size: int = 32, min_face_score: float = 0.9):
        self.model = _Model(model_path)
        self.columns = columns_for(self.model.labels)
        self.batch_size = batch_size
        self.min_face_score = min_face_score
        self.errors = None

    def predict(self, image_or_frames, every: int = 1, annotate_dir=None):
        """Rows (columns `COLUMNS`) for every face in: a path (image, video or folder), an RGB uint8 image
        [H, W, 3], or an iterable of such frames. `every`: keep every N-th video frame. `annotate_dir`: also write
        the annotated images / videos there."""
        import pandas as pd

        errors = []
        rows = list(self.iter_rows(image_or_frames, every, annotate_dir, errors))
        self.errors = pd.DataFrame(errors, columns=ERROR_COLUMNS)
        return pd.DataFrame(rows, columns=self.columns)

    def iter_rows(self, image_or_frames, every: int = 1, annotate_dir=None, errors=None,
                  progress: bool = False) -> Iterator[dict]:
        """`predict`, one row at a time (for long videos: nothing accumulates); unreadable inputs go to `errors`."""
        frames, total = _frames_of(image_or_frames, every)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=total or None, unit="frame", desc="predict")
        writer = _AnnotationWriter(annotate_dir, every) if annotate_dir else None
        pending: list[tuple[Frame, list]] = []
        try:
            for frame in frames:
                if not frame.error:
                    try:
                        faces = self._faces(frame.image)
                    except Exception as error:  # one odd frame (e.g. a 2x2 image) must not end a long run
                        frame.error = f"face detection failed: {type(error).__name__}: {error}"
                if frame.error:
                    log.warning("%s (frame %d): %s", frame.file, frame.index, frame.error)
                    if errors is not None:
                        errors.append({"file": frame.file, "frame": frame.index, "reason": frame.error})
                    continue
                pending.append((frame, faces))
                # Flush on crops or on frames, so frames without faces cannot pile up either.
                if sum(len(faces) for _, faces in pending) >= self.batch_size or len(pending) >= self.batch_size:
                    yield from self._flush(pending, writer)
                    pending = []
            yield from self._flush(pending, writer)
        finally:
            if writer is not None:
                writer.close()

    def _faces(self, image) -> list:
        from fbnet_tf import face

        return [(found, face.align(image, found.landmarks, CROP_SIZE))
                for found in face.detect(image, min_score=self.min_face_score)]

    def _flush(self, pending, writer) -> Iterator[dict]:
        crops = [crop for _, faces in pending for _, crop in faces]
        outputs = self.model(np.stack(crops)) if crops else {}
        position = 0
        for frame, faces in pending:
            rows = []
            for found, _ in faces:
                rows.append(_row(frame, found, {k: v[position] for k, v in outputs.items()}, self.model.labels,
                                 self.columns))
                position += 1
            if writer is not None:
                writer.write(frame, rows)
            yield from rows


def _row(frame: Frame, found, outputs: dict, labels: dict, columns) -> dict:
    x, y, w, h = found.box
    row = {"file": frame.file, "frame": frame.index, "time": frame.time, "x": x, "y": y, "w": w, "h": h,
           "face_score": float(found.score)}
    for key in OUTPUT_ORDER:
        names = labels.get(key) or canonical_labels().get(key, [])
        if key == "expression" and "top_expression" in columns:
            row["top_expression"] = names[int(np.argmax(outputs[key]))] if key in outputs else ""
        # A model without some output (a single-task one) leaves its columns empty (NaN).
        values = outputs.get(key, np.full(len(names), np.nan))
        row.update({name: float(v) for name, v in zip(names, values) if name in columns})
    return row


def _frames_of(source, every: int) -> tuple[Iterable[Frame], int]:
    """(frames, expected count) of a path, an image array, or an iterable of image arrays."""
    if isinstance(source, np.ndarray) and source.ndim == 3:
        return [Frame("<array>", 0, 0.0, _as_rgb_uint8(source))], 1
    if isinstance(source, (str, os.PathLike)):
        files = input_files(source)
        total = sum(video.frame_count(f, every) if f.suffix.lower() in VIDEO_EXTENSIONS else 1 for f in files)
        return (frame for f in files for frame in read_frames(f, every)), total
    frames = (Frame("<frames>", i, math.nan, _as_rgb_uint8(image))
              for i, image in enumerate(source) if i % every == 0)
    return frames, -(-len(source) // every) if hasattr(source, "__len__") else 0


def _as_rgb_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels 0..255, got {image.dtype}")
    return image


class _AnnotationWriter:
    """Writes annotated frames: images as `<dir>/<name>`, each video as `<dir>/<stem>.mp4`."""

    def __init__(self, directory, every: int = 1):
        self.directory, self.every = Path(directory), every
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
            fps = (rate if math.isfinite(rate) else 25.0) / self.every  # real-time playback of the kept frames
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

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="an image, a folder of images/videos, or a video")
    parser.add_argument("--model", required=True, help="SavedModel dir, .tflite, .onnx, run dir or .keras")
    parser.add_argument("--out", default="fbnet_predictions", help="output folder (predictions.csv, errors.csv)")
    parser.add_argument("--annotate", action="store_true", help="also write annotated images/videos")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--every", type=int, default=1, help="keep every N-th video frame")
    parser.add_argument("--min-face-score", type=float, default=0.9)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.every < 1 or args.batch_size < 1:
        parser.error("--every and --batch-size must be >= 1")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(args.model, args.batch_size, args.min_face_score)
    errors: list[dict] = []
    faces = 0
    with open(out / "predictions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=predictor.columns)
        writer.writeheader()
        for row in predictor.iter_rows(args.input, args.every, out / "annotated" if args.annotate else None,
                                       errors, progress=True):
            writer.writerow(row)
            faces += 1
    with open(out / "errors.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ERROR_COLUMNS)
        writer.writeheader()
        writer.writerows(errors)
    print(f"{faces} face rows -> {out / 'predictions.csv'}; {len(errors)} unreadable inputs -> "
          f"{out / 'errors.csv'}" + (f"; annotated -> {out / 'annotated'}" if args.annotate else ""))


if __name__ == "__main__":
    main()
