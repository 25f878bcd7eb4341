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
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Iterator

import numpy as np

from fbnet_tf import face
from fbnet_tf.records import SPLITS, Sample


class Reason:
    """The reason codes a skip is counted under (builders may add their own lower_snake_case codes)."""

    MISSING_FILE = "missing_file"              # an annotated image/video that is not on disk
    UNREADABLE_IMAGE = "unreadable_image"      # empty, corrupt or not an image
    TRUNCATED_IMAGE = "truncated_image"        # a JPEG cut short (no end-of-image marker after its scan)
    CORRUPT_IMAGE = "corrupt_image"            # decodes only with the decoder's warnings about damaged data
    UNREADABLE_VIDEO = "unreadable_video"      # OpenCV cannot open or decode the video
    BAD_ROW = "bad_row"                        # wrong column count, unparsable number, unknown split name
    LABEL_OUT_OF_RANGE = "label_out_of_range"  # a label code outside the database's codes
    NO_LABEL = "no_label"                      # nothing usable left (e.g. Contempt with no valid valence/arousal)
    NO_FACE = "no_face"                        # the detector found no face, or the database marks "no face"
    BAD_LANDMARKS = "bad_landmarks"            # landmarks/box missing, non-finite or degenerate
    UNSAFE_PATH = "unsafe_path"                # an absolute path or one escaping the root with ../
    DUPLICATE = "duplicate"                    # a sample id listed twice (the first one is kept)


class Skip(Exception):
    """An input that is left out, with where it came from. `raise` it to drop an item, `yield` it to record one.

    `count` is how many labelled inputs the record stands for: a run of N consecutive skipped frames is recorded
    once (one message naming the range) and counted N times in `skipped_by_reason` and the summary. `count=0`
    records a problem that loses no input (an AU label file missing: that AU is masked out; a file that carries
    no label): listed in the manifest, not counted as skipped. `frames` = (first, last) frame numbers of a run:
    records of one item that differ only in their counts and runs (the ranges of a video built in parts) are
    merged into one.
    """

    def __init__(self, reason: str, message: str, file: str | os.PathLike | None = None, line: int | None = None,
                 count: int = 1, frames: tuple[int, int] | None = None):
        super().__init__(f"{file or '?'}{f':{line}' if line else ''}: {reason}: {message}")
        self.reason = reason
        self.message = message
        self.file = None if file is None else str(file)
        self.line = line
        self.count = int(count)
        self.frames = None if frames is None else [int(frames[0]), int(frames[1])]

    def __reduce__(self):  # picklable across the process pool despite the custom constructor
        return (Skip, (self.reason, self.message, self.file, self.line, self.count, self.frames))

    def record(self, **context) -> dict:
        """The JSON-able manifest entry."""
        record = {"file": self.file, "line": self.line, "reason": self.reason, "message": self.message,
                  "count": self.count}
        if self.frames is not None:
            record["frames"] = list(self.frames)
        return {**record, **context}


class LayoutError(FileNotFoundError):
    """The root matches none of the layouts the builder knows; the message lists every path it expected."""


class UsageError(ValueError):
    """An argument or builder option out of its type or range: one line naming it, its value and what is expected
    (the CLI exits 2). Raised before any work is done."""


class UnknownOption(UsageError, TypeError):
    """An option the builder does not take."""


@dataclass(frozen=True)
class Option:
    """A builder option's default and what it accepts, declared in `OPTIONS` instead of checks in the code:

        OPTIONS = {"camera": Option("left", choices=("left", "right", "both")),
                   "threshold": Option(2, minimum=1, maximum=5), "seed": 0}

    The value's type is the default's (int, float, bool, str). `minimum`/`maximum` are inclusive, `below` an
    exclusive upper bound. A plain default is an Option with no bounds, except that options named `*_fraction`
    take values in [0, 1)."""

    default: Any
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    below: float | None = None

    def expected(self) -> str:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(type(self.default), "text")
        low, high, below = (None if x is None else f"{x:g}" for x in (self.minimum, self.maximum, self.below))
        if self.choices:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        if low is not None and below is not None:
            return f"{kind} in [{low}, {below})"
        if low is not None and high is not None:
            return f"{kind} in {low}..{high}"
        if low is not None:
            return f"{kind} >= {low}"
        if high is not None or below is not None:
            return f"{kind} {'<= ' + high if high is not None else '< ' + below}"
        return kind

    def check(self, value, what: str):
        """`value` (a CLI string or a Python value) converted to the default's type and checked; UsageError."""
        try:
            value = _coerce(value, self.default)
        except (TypeError, ValueError):
            raise UsageError(f"{what}={value!r}: expected {self.expected()}") from None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ((self.choices and value not in self.choices)
                or (number and not math.isfinite(value))
                or (number and self.minimum is not None and value < self.minimum)
                or (number and self.maximum is not None and value > self.maximum)
                or (number and self.below is not None and value >= self.below)):
            raise UsageError(f"{what}={value!r}: expected {self.expected()}")
        return value


def as_option(name: str, declared) -> Option:
    """The `Option` of an `OPTIONS` entry (a plain default gets the rules its name implies)."""
    if isinstance(declared, Option):
        return declared
    if name.endswith("_fraction") and isinstance(declared, (int, float)):
        return Option(float(declared), minimum=0.0, below=1.0)
    return Option(declared)


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
    return key_rank(key, seed) < fraction


def split_of(key: str, validation_fraction: float, test_fraction: float = 0.0, seed: int = 0) -> str:
    """"train", "validation" or "test" for a database that defines no split: nested holdouts on one hash, the
    lowest `test_fraction` of keys test, the next `validation_fraction` validation, the rest train.

    With `test_fraction=0` it is the 85/15 division of a released training set (`holdout` on `validation_fraction`).
    """
    if holdout(key, test_fraction, seed):
        return "test"
    return "validation" if holdout(key, test_fraction + validation_fraction, seed) else "train"


def key_rank(key: str, seed: int = 0) -> float:
    """The seeded hash of `key` as a number in [0, 1): what `holdout` and `split_of` threshold, and what a builder
    sorts by to take an exact number of subjects per split (see disfa.py)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def file_digest(path: Path) -> str:
    """sha256 of a file's content: put it in an Item's `data` when `examples` reads that (annotation) file, so an
    edited file invalidates the resumed shards that came from it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def parse_int(text: str, what: str, file=None, line: int | None = None) -> int:
    """`int(text)` for a field of an annotation row; Skip(BAD_ROW, "<what> '<text>' is not an integer") otherwise."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise Skip(Reason.BAD_ROW, f"{what} {text!r} is not an integer", file, line) from None


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
    """The RGB uint8 image at `path`; raises Skip for a missing, empty, truncated or corrupt file
    (`fbnet_tf.images.read_rgb`: decoder warnings about damaged data count as corrupt)."""
    from fbnet_tf import images

    try:
        return images.read_rgb(path)
    except images.ImageError as error:
        raise Skip(error.reason, error.message, file if file is not None else path, line) from None


def decode_image(data: bytes, path, file=None, line: int | None = None) -> np.ndarray:
    """The RGB uint8 image encoded in `data` (read from `path`: a file, or a member of an archive); raises
    Skip(UNREADABLE_IMAGE / TRUNCATED_IMAGE / CORRUPT_IMAGE) naming `path`."""
    from fbnet_tf import images

    try:
        return images.decode_rgb(data, str(path))
    except images.ImageError as error:
        raise Skip(error.reason, error.message, file if file is not None else path, line) from None


def video_frames(path: Path, stride: int = 1, start: int = 0, file=None, *,
                 allow_end: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Lazily yield (frame index, RGB uint8 frame) for every `stride`-th frame of a video, from `start`
    (`fbnet_tf.video.frames`). Raises Skip(MISSING_FILE) for a missing video and Skip(UNREADABLE_VIDEO) for one
    that cannot be opened or yields no frame (with `allow_end`, a video that ends before `start` yields nothing:
    a later range of a video whose labels run past its end)."""
    from fbnet_tf import video

    if not Path(path).is_file():
        raise Skip(Reason.MISSING_FILE, f"video {path} does not exist", file or path)
    try:
        yield from video.frames(path, stride, start)
    except video.VideoEnded:
        if not allow_end:
            raise Skip(Reason.UNREADABLE_VIDEO, str(sys.exc_info()[1]), file or path) from None
    except video.VideoError as err:
        raise Skip(Reason.UNREADABLE_VIDEO, str(err), file or path) from None


def encode_jpeg(image_rgb: np.ndarray, quality: int = 95) -> bytes:
    """Deterministic JPEG bytes of an RGB uint8 image."""
    import cv2

    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(np.asarray(image_rgb, np.uint8), cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


# Engine arguments, checked like options. Below 16 px a face crop holds nothing a model can use.
IMAGE_SIZE = Option(112, minimum=16, maximum=4096)
FRAME_STRIDE = Option(1, minimum=1)
WORKERS = Option(1, minimum=1)
SHARDS = Option(1, minimum=1)
# The face detector (`fbnet_tf.face.DETECTORS`) of the builders that detect faces in video frames: declare it in
# `OPTIONS` as "detector" (`--detector`, recorded in the manifest's options). "fast" (BlazeFace + FaceMesh) agrees
# with MTCNN's points within ~6% of the inter-ocular distance, ~17x faster a build (README, "Face detectors").
VIDEO_DETECTOR = Option(face.VIDEO_DETECTOR, choices=tuple(face.DETECTORS))

# What to check when a build skips many inputs for a reason (builders add their own in `Builder.HINTS`).
SKIP_HINTS = {
    Reason.MISSING_FILE: "check that --root is the folder the annotation files' paths are relative to",
    Reason.NO_FACE: "the detector found no face: check that the images show faces (or that the database's "
                    "aligned crops are used)",
    Reason.UNREADABLE_VIDEO: "OpenCV cannot decode these videos: check the files (ffprobe) and OpenCV's codecs",
    Reason.BAD_ROW: "the annotation rows do not have the expected columns: check the release's file format",
    Reason.UNSAFE_PATH: "the annotation files name paths outside --root",
}


class Builder:
    """Base class of a database builder. Subclasses set the class attributes and write `list_items`/`examples`."""

    NAME: ClassVar[str] = ""                    # the CLI name and the `source` feature, e.g. "rafdb"
    VERSION: ClassVar[str] = "1.0.0"            # bump when the output for the same input changes
    RELEASE_NOTES: ClassVar[dict] = {}          # {version: what changed}
    DESCRIPTION: ClassVar[str] = ""             # one line for `--help`
    MANUAL_DOWNLOAD_INSTRUCTIONS: ClassVar[str] = ""  # where to get it, and which folder `--root` points at
    EXPECTED_LAYOUT: ClassVar[tuple[str, ...]] = ()   # paths under the root, listed when the layout matches none
    ITEMS_PER_SHARD: ClassVar[int] = 2000       # items per shard when `shards` is not given (use ~1-4 for videos)
    OPTIONS: ClassVar[dict[str, Any]] = {}      # builder options: defaults or `Option`s (`--option k=v`)
    JPEG_QUALITY: ClassVar[int] = 95
    HINTS: ClassVar[dict[str, str]] = {}        # {skip reason: what to check}, shown when a build fails (+ SKIP_HINTS)
    SEGMENT_FRAMES: ClassVar[int] = 0           # > 0: long videos are cut into ranges of this many frames (workers)

    def __init__(self, root, *, image_size: int = 112, frame_stride: int = 1, **options):
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise UnknownOption(f"{self.NAME}: unknown option(s) {unknown}; this builder takes "
                                f"{sorted(self.OPTIONS) or 'none'}")
        self.root = Path(root)
        self.image_size = IMAGE_SIZE.check(image_size, "--image-size")
        self.frame_stride = FRAME_STRIDE.check(frame_stride, "--frame-stride")
        self.options = {}
        for name, declared in self.OPTIONS.items():
            option = as_option(name, declared)
            self.options[name] = option.check(options.get(name, option.default), f"{self.NAME}: option {name}")
        fractions = {k: v for k, v in self.options.items() if k in ("validation_fraction", "test_fraction")}
        if len(fractions) == 2 and sum(fractions.values()) >= 1:
            raise UsageError(f"{self.NAME}: options validation_fraction={fractions['validation_fraction']} and "
                             f"test_fraction={fractions['test_fraction']} sum to {sum(fractions.values()):g}; "
                             "expected a sum below 1 (the train split would be empty)")
        self.segment: tuple[int, int | None] = (0, None)  # the frames a work unit covers (see `segments`)
        self.inputs_read: dict[str, list | None] = {}  # files `examples` read, with their size and mtime

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

    def relative_or_name(self, path: Path, name: str | None = None) -> str:
        """`relative(path)` for a path under the root; for data kept elsewhere (an option naming another folder)
        `name`, by default the file name."""
        try:
            return self.relative(path)
        except ValueError:
            return Path(path).name if name is None else name

    def option_path(self, option: str, *, folder: bool = False) -> Path:
        """The file (or `folder`) an option names, absolute or relative to the root; `layout_error` when absent."""
        path = Path(self.options[option])
        path = path if path.is_absolute() else self.root / path
        if not (path.is_dir() if folder else path.is_file()):
            raise self.layout_error(f"option {option}={self.options[option]!r}: {path} is not "
                                    f"{'a folder' if folder else 'an existing file'}")
        return path

    def option_choice(self, option: str, choices: tuple[str, ...]) -> str:
        """The value of an option that takes one of `choices`; ValueError naming them otherwise."""
        value = self.options[option]
        if value not in choices:
            raise ValueError(f"{self.NAME}: option {option}={value!r}; expected "
                             f"{', '.join(choices[:-1])} or {choices[-1]}")
        return value

    def seeded_split(self, key: str, *, test_fraction: float | None = None) -> str:
        """`split_of(key, ...)` with the builder's `validation_fraction`, `test_fraction` (0 when the builder has
        no such option, or as given: 0 for a released training set) and `seed` options."""
        if test_fraction is None:
            test_fraction = self.options.get("test_fraction", 0.0)
        return split_of(key, self.options["validation_fraction"], test_fraction, self.options["seed"])

    def read_lines(self, relative: str) -> list[str]:
        """The lines of an annotation file under the root, trailing blank lines dropped; Skip(MISSING_FILE) naming
        the file when it cannot be read."""
        self.depends_on(self.root / relative)
        try:
            # utf-8-sig: a byte-order mark (Windows editors) is not part of the first row.
            lines = (self.root / relative).read_text(encoding="utf-8-sig", errors="replace").splitlines()
        except OSError as error:
            raise Skip(Reason.MISSING_FILE, f"cannot read {relative}: {error}", relative) from None
        while lines and not lines[-1].strip():
            lines.pop()
        return lines

    def manifest_extra(self) -> dict:
        """JSON-able facts about this build that belong in manifest.json (under "extra"), e.g. the order of a
        label vector; none by default."""
        return {}

    def depends_on(self, path) -> None:
        """Note that this item's output depends on the file at `path` (present or not): a rerun rebuilds the shard
        when its size or modification time changes (a restored image, a replaced video). `read_image`,
        `video_frames` and `read_lines` call it; call it for any other file `examples` reads."""
        path = Path(path)
        try:
            stat = path.stat()
            state = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            state = None
        self.inputs_read[self.relative_or_name(path, str(path))] = state

    def read_image(self, path: Path, item: Item | None = None) -> np.ndarray:
        """RGB uint8 image; Skip(MISSING_FILE / UNREADABLE_IMAGE / TRUNCATED_IMAGE / CORRUPT_IMAGE) attributed to
        the item's row."""
        self.depends_on(path)
        return read_image(path, item.file if item else None, item.line if item else None)

    # --- videos: frame ranges (segments) ------------------------------------------------------------------------
    def frame_range(self, item: Item) -> tuple[int, int] | None:
        """The frame indices [first, stop) an item's labels cover, roughly (from the video's header, a range file
        ...), for cutting a long video into `SEGMENT_FRAMES` ranges that workers build in parallel; None (the
        default) keeps the item whole. Override it together with a non-zero `SEGMENT_FRAMES`."""
        return None

    def in_segment(self, index: int) -> bool:
        """True when frame `index` (0-based) belongs to the range this call of `examples` builds."""
        low, high = self.segment
        return index >= low and (high is None or index < high)

    @property
    def first_segment(self) -> bool:
        """True for the range holding frame 0 (the whole item when it is not cut): item-level records (a bad label
        row without a frame, a file read once per item) are yielded there only, so they are counted once."""
        return self.segment[0] == 0

    def frames_kept(self, labelled, *, start: int = 0, first: int = 0) -> int:
        """How many of the `labelled` frame numbers (numbered from `first`; an int is taken as a count) this call
        builds: those `frame_stride` keeps (counting from frame `start`) inside the current range."""
        if isinstance(labelled, int):
            return labelled if self.segment == (0, None) else 0
        return sum(1 for f in set(labelled) if f - first >= start and (f - first - start) % self.frame_stride == 0
                   and self.in_segment(f - first))

    def video_frames(self, path: Path, item: Item | None = None, start: int = 0, *, labelled=None,
                     first: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Lazy (index, RGB frame) pairs every `frame_stride` frames from frame `start`, within the current range
        (see `frame_range`); its skips name the item's file.

        `labelled`: the frame numbers (from `first`) the labels describe, or their count: a missing or unreadable
        video is then counted as that many skipped inputs (those this call builds), not as one."""
        self.depends_on(path)
        count = 1 if labelled is None else self.frames_kept(labelled, start=start, first=first)
        low, high = self.segment
        if low > start:  # the first frame of this range that the stride keeps
            start += -(-(low - start) // self.frame_stride) * self.frame_stride
        try:
            for index, frame in video_frames(path, stride=self.frame_stride, start=start,
                                             file=item.file if item else None, allow_end=low > 0):
                if high is not None and index >= high:
                    return
                yield index, frame
        except Skip as skip:
            skip.count = count
            raise

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

    def detect_face(self, image_rgb: np.ndarray, item: Item | None = None, what: str = ""):
        """The most confident face (`fbnet_tf.face.Face`) by the builder's "detector" option (MTCNN when it has
        none); Skip(NO_FACE) when there is none."""
        faces = face.detector(self.options.get("detector", "mtcnn")).detect(image_rgb)
        if not faces:
            raise Skip(Reason.NO_FACE, f"no face found in {what or (item.key if item else 'the image')}",
                       item.file if item else None, item.line if item else None)
        return faces[0]

    def detect_and_align(self, image_rgb: np.ndarray, item: Item | None = None, what: str = "") -> np.ndarray:
        """Detect the most confident face (`detect_face`) and align it; Skip(NO_FACE) when there is none."""
        return face.align(image_rgb, self.detect_face(image_rgb, item, what).landmarks, self.image_size)

    def detect_frame(self, frame_rgb: np.ndarray, item: Item, index: int, *, video: str | None = None,
                     what: str = "") -> np.ndarray | Skip:
        """The aligned face of video frame `index` (0-based), or the Skip(NO_FACE) to yield for that frame alone:

            crop = self.detect_frame(frame, item, index, video=item.data["video"])
            if isinstance(crop, Skip):
                yield crop
                continue

        With `video` (its path relative to the root) the skip names the video, line = the 1-based frame number;
        without it, the item's own file and line. `what` names the frame in the message.

        Every frame is detected on its own (no tracking from the frame before): a crop depends on its frame
        only, so shards are the same bytes whatever the frame ranges and the number of workers."""
        try:
            return self.detect_and_align(frame_rgb, item, what=what or f"{video or item.key} frame {index}")
        except Skip as skip:
            if video is not None:
                skip.file, skip.line = video, index + 1
            return skip

    def frames_past_end(self, labelled, last_read: int, video: str, *, first: int = 0) -> Iterator[Skip]:
        """One Skip(MISSING_FILE) counting the `labelled` frame numbers after `last_read` that `frame_stride` keeps
        (numbers start at `first`: 0 or 1) - labels the video does not reach - or nothing. `yield from` it."""
        beyond = sorted(f for f in set(labelled) if f > last_read and (f - first) % self.frame_stride == 0
                        and self.in_segment(f - first))
        if beyond:
            yield Skip(Reason.MISSING_FILE, f"labelled frames past the end of {video}", file=video,
                       count=len(beyond), frames=(beyond[0], beyond[-1]))

    def sample(self, item: Item, crop_rgb: np.ndarray, *, sample_id: str | None = None, **labels) -> Sample:
        """A `Sample` of this database for `item` with the JPEG-encoded crop; `labels` are `Sample` fields
        (subject, expr, va, au, au_mask, au_intensity, compound, attributes, facs, expr_native, expr_native_name,
        extra). Label vectors may be the lists kept in `Item.data` (None = not annotated); `facs` a dict
        {AU: (occurrence, intensity)} or the list [[AU, occurrence, intensity], ...] kept in `Item.data`."""
        if isinstance(labels.get("facs"), (list, tuple)):  # [[AU, occurrence, intensity], ...] as kept in data
            labels["facs"] = {int(au): (float(o), float(i)) for au, o, i in labels["facs"]}
        for name in ("au", "au_mask", "au_intensity", "attributes"):
            if labels.get(name) is not None:
                labels[name] = np.asarray(labels[name], np.float32)
        if labels.get("va") is not None:
            labels["va"] = tuple(float(v) for v in labels["va"])
        height, width = crop_rgb.shape[:2]
        return Sample(image=encode_jpeg(crop_rgb, self.JPEG_QUALITY), height=int(height), width=int(width),
                      source=self.NAME, split=item.split, sample_id=sample_id or item.key, **labels)


def _coerce(value, default):
    """An option's value (a CLI string or a Python value) as the type of its default; ValueError otherwise."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if isinstance(default, int):
        if isinstance(value, str):
            return int(value.strip())
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(value)
        if not float(value).is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value.strip() if isinstance(value, str) else value)
    if isinstance(default, str):
        if isinstance(value, (str, os.PathLike)):
            return str(value) if not isinstance(value, str) else value
        raise ValueError(value)
    return value
