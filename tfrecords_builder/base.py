"""What every database builder is: a class that lists the database's items and turns one item into samples.

A builder (see `rafdb.py` for a complete one) subclasses `Builder`, sets its class attributes and writes two
methods, in the spirit of tensorflow_datasets:

- `list_items()`: parse the annotation files under `self.root` (cheap, main process) and yield one `Item` per
  image or video, each already assigned to its split; yield `Skip(...)` for a row that cannot be used; raise
  `self.layout_error()` when the root matches no known layout.
- `examples(item)`: read the image (or the video's frames), make the face crop, and yield `Sample`s (use
  `self.sample(...)`); raise `Skip(...)` to drop the whole item, yield `Skip(...)` to drop one frame and go on.

Everything else (sharding, the process pool, atomic writes, resume, manifest, skip accounting, strict mode,
progress) lives once, in `tfrecords_builder.writer`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Iterator

import numpy as np

from fbnet_tf.records import SPLITS, Sample


class Reason:
    """The reason codes a skip is counted under (builders may add their own lower_snake_case codes)."""

    MISSING_FILE = "missing_file"              # an annotated image/video that is not on disk
    UNREADABLE_IMAGE = "unreadable_image"      # empty, corrupt or not an image
    TRUNCATED_IMAGE = "truncated_image"        # a JPEG cut short (no end-of-image marker after its scan)
    UNREADABLE_VIDEO = "unreadable_video"      # OpenCV cannot open or decode the video
    BAD_ROW = "bad_row"                        # wrong column count, unparsable number, unknown split name
    LABEL_OUT_OF_RANGE = "label_out_of_range"  # a label code outside the database's codes
    NO_LABEL = "no_label"                      # nothing usable left (e.g. Contempt with no valid valence/arousal)
    NO_FACE = "no_face"                        # the detector found no face, or the database marks "no face"
    BAD_LANDMARKS = "bad_landmarks"            # landmarks/box missing, non-finite or degenerate
    UNSAFE_PATH = "unsafe_path"                # an absolute path or one escaping the root with ../
    DUPLICATE = "duplicate"                    # a sample id listed twice (the first one is kept)


class Skip(Exception):
    """An input that is left out, with where it came from. `raise` it to drop an item, `yield` it to record one."""

    def __init__(self, reason: str, message: str, file: str | os.PathLike | None = None, line: int | None = None):
        super().__init__(f"{file or '?'}{f':{line}' if line else ''}: {reason}: {message}")
        self.reason = reason
        self.message = message
        self.file = None if file is None else str(file)
        self.line = line

    def __reduce__(self):  # picklable across the process pool despite the custom constructor
        return (Skip, (self.reason, self.message, self.file, self.line))

    def record(self, **context) -> dict:
        """The JSON-able manifest entry."""
        return {"file": self.file, "line": self.line, "reason": self.reason, "message": self.message, **context}


class LayoutError(FileNotFoundError):
    """The root matches none of the layouts the builder knows; the message lists every path it expected."""


@dataclass(frozen=True)
class Item:
    """One unit of work: an image (or a whole video) with its labels, already assigned to a split.

    `key` is unique within the database (the sample id for an image, the video id for a video). `data` is
    free-form, picklable and JSON-able (paths relative to the root, labels, landmarks): it reaches `examples`
    in a worker process and its content is part of the resume fingerprint.
    """

    split: str
    key: str
    data: dict = field(default_factory=dict)
    file: str | None = None  # the annotation file the item came from (for skip records)
    line: int | None = None  # its 1-based line in that file

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"{self.key}: split {self.split!r} not in {SPLITS}")


def holdout(key: str, fraction: float, seed: int = 0) -> bool:
    """True for a stable, seeded `fraction` of keys (hash based: independent of order and of the other keys).

    Use it for splits a database does not define: pass the subject id to keep the split subject-independent,
    or the sample id when the database has no subjects.
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def resolve_in_root(root: Path, relative: str, file=None, line: int | None = None) -> Path:
    """`root / relative` for a path read from an annotation file; raises Skip(UNSAFE_PATH) for an absolute path
    or one that escapes the root (`../`)."""
    text = str(relative).strip().replace("\\", "/")
    posix = PurePosixPath(text)
    if not text or posix.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise Skip(Reason.UNSAFE_PATH, f"path {relative!r} is absolute or empty; expected a path relative to "
                                       f"{root}", file, line)
    depth = 0
    for part in posix.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise Skip(Reason.UNSAFE_PATH, f"path {relative!r} escapes the root {root}", file, line)
    return Path(root, *posix.parts)


def read_image(path: Path, file=None, line: int | None = None) -> np.ndarray:
    """The RGB uint8 image at `path`; raises Skip for a missing, empty, corrupt or truncated file."""
    import cv2

    source = {"file": file if file is not None else path, "line": line}
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise Skip(Reason.MISSING_FILE, f"image {path} does not exist", **source) from None
    except OSError as error:
        raise Skip(Reason.UNREADABLE_IMAGE, f"cannot read {path}: {error}", **source) from None
    last_scan = data.rfind(b"\xff\xda")
    if data[:2] == b"\xff\xd8" and (last_scan < 0 or data.rfind(b"\xff\xd9") < last_scan):
        # OpenCV decodes a cut-off JPEG into a half-grey picture without failing; the end-of-image marker
        # after the last start-of-scan is what a complete file has.
        raise Skip(Reason.TRUNCATED_IMAGE, f"JPEG {path} is truncated ({len(data)} bytes, no end marker)",
                   **source)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise Skip(Reason.UNREADABLE_IMAGE, f"{path} ({len(data)} bytes) is not a decodable image", **source)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def video_frames(path: Path, stride: int = 1, start: int = 0, file=None) -> Iterator[tuple[int, np.ndarray]]:
    """Lazily yield (frame index, RGB uint8 frame) for every `stride`-th frame of a video, from `start`.

    Frames are decoded one at a time (never the whole video in memory); skipped frames are grabbed, not decoded.
    Raises Skip(MISSING_FILE / UNREADABLE_VIDEO) when the video cannot be opened.
    """
    import cv2

    if not Path(path).is_file():
        raise Skip(Reason.MISSING_FILE, f"video {path} does not exist", file or path)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise Skip(Reason.UNREADABLE_VIDEO, f"OpenCV cannot open video {path}", file or path)
        index = 0
        while True:
            wanted = index >= start and (index - start) % max(1, stride) == 0
            if not capture.grab():
                break
            if wanted:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    break
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def encode_jpeg(image_rgb: np.ndarray, quality: int = 95) -> bytes:
    """Deterministic JPEG bytes of an RGB uint8 image."""
    import cv2

    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(np.asarray(image_rgb, np.uint8), cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


class Builder:
    """Base class of a database builder. Subclasses set the class attributes and write `list_items`/`examples`."""

    NAME: ClassVar[str] = ""                    # the CLI name and the `source` feature, e.g. "rafdb"
    VERSION: ClassVar[str] = "1.0.0"            # bump when the output for the same input changes
    RELEASE_NOTES: ClassVar[dict] = {}          # {version: what changed}
    DESCRIPTION: ClassVar[str] = ""             # one line for `--help`
    MANUAL_DOWNLOAD_INSTRUCTIONS: ClassVar[str] = ""  # where to get it, and which folder `--root` points at
    EXPECTED_LAYOUT: ClassVar[tuple[str, ...]] = ()   # paths under the root, listed when the layout matches none
    ITEMS_PER_SHARD: ClassVar[int] = 2000       # items per shard when `shards` is not given (use ~1-4 for videos)
    OPTIONS: ClassVar[dict[str, Any]] = {}      # builder-specific options and their defaults (`--option k=v`)
    JPEG_QUALITY: ClassVar[int] = 95

    def __init__(self, root, *, image_size: int = 112, frame_stride: int = 1, **options):
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise TypeError(f"{self.NAME}: unknown option(s) {unknown}; this builder takes {sorted(self.OPTIONS)}")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.frame_stride = max(1, int(frame_stride))
        self.options = {**self.OPTIONS, **{k: _coerce(v, self.OPTIONS[k]) for k, v in options.items()}}

    # --- what a builder writes ---------------------------------------------------------------------------------
    def list_items(self) -> Iterator[Item | Skip]:
        """Yield the database's items (each with its split) and a `Skip` for each unusable annotation row."""
        raise NotImplementedError

    def examples(self, item: Item) -> Iterator[Sample | Skip]:
        """Yield the samples of one item (raise `Skip` to drop it whole; yield `Skip` to drop one frame)."""
        raise NotImplementedError

    # --- helpers a builder uses --------------------------------------------------------------------------------
    def layout_error(self, detail: str = "") -> LayoutError:
        """The one error for a root that matches no known layout; lists `EXPECTED_LAYOUT` under the root."""
        expected = "\n".join(f"  {self.root / path}" for path in self.EXPECTED_LAYOUT)
        return LayoutError(f"{self.NAME}: {self.root} does not look like {self.NAME}"
                           f"{f' ({detail})' if detail else ''}. Expected:\n{expected}\n"
                           f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}".rstrip())

    def path(self, relative: str, file=None, line: int | None = None) -> Path:
        """A path from an annotation file, resolved under the root (Skip(UNSAFE_PATH) if it escapes)."""
        return resolve_in_root(self.root, relative, file, line)

    def relative(self, path: Path) -> str:
        """`path` relative to the root, POSIX style: the sample id of an image."""
        return Path(path).relative_to(self.root).as_posix()

    def read_image(self, path: Path, item: Item | None = None) -> np.ndarray:
        """RGB uint8 image; Skip(MISSING_FILE / UNREADABLE_IMAGE / TRUNCATED_IMAGE) attributed to the item's row."""
        return read_image(path, item.file if item else None, item.line if item else None)

    def video_frames(self, path: Path, item: Item | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Lazy (index, RGB frame) pairs every `frame_stride` frames (see `video_frames`)."""
        return video_frames(path, stride=self.frame_stride, file=item.file if item else None)

    def resize_aligned(self, image_rgb: np.ndarray) -> np.ndarray:
        """A crop the database already aligned, resized to `image_size` (area filter when shrinking)."""
        import cv2

        size = self.image_size
        if image_rgb.shape[:2] == (size, size):
            return image_rgb
        shrinking = image_rgb.shape[0] > size or image_rgb.shape[1] > size
        return cv2.resize(image_rgb, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)

    def align_landmarks(self, image_rgb: np.ndarray, landmarks, item: Item | None = None) -> np.ndarray:
        """Similarity-align with the database's own landmarks: 5 points in template order, or iBUG 68."""
        from fbnet_tf import face

        points = np.asarray(landmarks, np.float64)
        if points.size == 136:
            points = face.landmarks68_to_5(points.reshape(68, 2))
        points = points.reshape(-1, 2)
        spread = np.ptp(points, axis=0) if points.size else np.zeros(2)
        if points.shape != (5, 2) or not np.all(np.isfinite(points)) or spread.max() < 1.0:
            raise Skip(Reason.BAD_LANDMARKS, f"landmarks {np.asarray(landmarks).ravel()[:10].tolist()}... are not "
                                             "5 or 68 finite, distinct points",
                       item.file if item else None, item.line if item else None)
        return face.align(image_rgb, points, self.image_size)

    def detect_and_align(self, image_rgb: np.ndarray, item: Item | None = None, what: str = "") -> np.ndarray:
        """Detect the most confident face (MTCNN) and align it; Skip(NO_FACE) when there is none."""
        from fbnet_tf import face

        faces = face.detect(image_rgb)
        if not faces:
            raise Skip(Reason.NO_FACE, f"no face found in {what or (item.key if item else 'the image')}",
                       item.file if item else None, item.line if item else None)
        return face.align(image_rgb, faces[0].landmarks, self.image_size)

    def sample(self, item: Item, crop_rgb: np.ndarray, *, sample_id: str | None = None, **labels) -> Sample:
        """A `Sample` of this database for `item` with the JPEG-encoded crop; `labels` are `Sample` fields
        (subject, expr, va, au, au_mask, au_intensity, compound, attributes, extra)."""
        height, width = crop_rgb.shape[:2]
        return Sample(image=encode_jpeg(crop_rgb, self.JPEG_QUALITY), height=int(height), width=int(width),
                      source=self.NAME, split=item.split, sample_id=sample_id or item.key, **labels)


def _coerce(value, default):
    """CLI option strings -> the type of the option's default."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    return type(default)(value)
