"""Aff-Wild (v1; Zafeiriou et al., CVPR 2017 challenge): valence and arousal per video frame, in the wild.

Layout (reference/datasets.md): `videos/{train,test}/<video>.mp4|.avi` and
`annotations/train/{valence,arousal}/<video>.txt` (no header, one float in [-1, 1] per line, line i = frame i,
0-based). Faces are detected and aligned per frame (MTCNN; the release's `bboxs/` and `landmarks/` are not
used); `--frame-stride` keeps every k-th frame. sample_id = `<video>/<frame:05d>` (0-based, as the labels),
subject = the video id.

Splits: the public release has no test labels, so a test video is written only if
`annotations/test/{valence,arousal}/<video>.txt` exist, and is otherwise counted as `no_label`. The training
videos are divided 85/15 into train/validation by video (subject-independent: one person per video), with a
seeded hash of the video id (`validation_fraction`, `seed`).

Skips: a frame whose label line is not a number or is outside [-1, 1] (`file`, `line` = that line), frames past
the end of the label files (`no_label`), labelled frames past the video's end (`missing_file`) - each one record
per video whose `count` is its number of frames - and a frame without a face (`no_face`; `file` = the video,
`line` = the 1-based frame number).
Inputs (manifest `accounting`) are the frames with a line in a label file; an unlabelled video (the public test
set), video frames past the label files, a stray or duplicate file are listed with count 0. A missing video counts
its labelled frames. Videos are built in ranges of 500 frames.
"""
from __future__ import annotations

import math

from tfrecords_builder.base import VIDEO_DETECTOR, Builder, Item, Reason, Skip, file_digest

VIDEO_SUFFIXES = (".mp4", ".avi")
DIMENSIONS = ("valence", "arousal")


class AffWild(Builder):
    """Aff-Wild v1: valence/arousal per frame; faces detected + aligned; 85/15 seeded split by video."""

    NAME = "affwild"
    VERSION = "1.1.0"
    RELEASE_NOTES = {"1.0.0": "first release: per-frame VA, detect + align, 85/15 train/validation by video",
                     "1.1.0": "option detector (--detector), default fast: BlazeFace + FaceMesh, was MTCNN"}
    DESCRIPTION = "Aff-Wild (v1) valence/arousal (--root: the folder holding videos/ and annotations/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request Aff-Wild at https://ibug.doc.ic.ac.uk/resources/first-affect-wild-"
                                    "challenge/, unpack it and point --root at the folder that holds videos/ and "
                                    "annotations/.")
    EXPECTED_LAYOUT = ("videos/train/<video>.mp4 (or .avi)", "videos/test/<video>.mp4 (or .avi)",
                       "annotations/train/valence/<video>.txt", "annotations/train/arousal/<video>.txt")
    ITEMS_PER_SHARD = 4  # one item = one video (thousands of frames)
    SEGMENT_FRAMES = 500  # ... built in ranges of 500 frames, so that every worker has work
    OPTIONS = {"validation_fraction": 0.15, "seed": 0, "detector": VIDEO_DETECTOR}

    def list_items(self):
        if not (self.root / "videos").is_dir() or not (self.root / "annotations" / "train").is_dir():
            raise self.layout_error("no videos/ or no annotations/train/ folder")
        for set_name in ("train", "test"):
            videos = {}
            folder = self.root / "videos" / set_name
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                if path.name.startswith("."):
                    continue
                if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():  # no labelled input lost
                    yield Skip(Reason.BAD_ROW, "not a .mp4/.avi video", file=self.relative(path), count=0)
                elif path.stem in videos:
                    yield Skip(Reason.DUPLICATE, f"video {path.stem} exists twice; {videos[path.stem].name} is kept",
                               file=self.relative(path), count=0)
                else:
                    videos[path.stem] = path
            labels = {dimension: self._label_files(set_name, dimension) for dimension in DIMENSIONS}
            for video in sorted(set(videos) | set(labels["valence"]) | set(labels["arousal"])):
                files = {dimension: labels[dimension].get(video) for dimension in DIMENSIONS}
                if video not in videos:
                    present = next(p for p in files.values() if p is not None)
                    yield Skip(Reason.MISSING_FILE, f"annotated video {video} has no videos/{set_name}/{video}.mp4 "
                                                    "or .avi", file=self.relative(present), count=self._labelled(files))
                    continue
                where = {"file": self.relative(videos[video])}
                absent = [d for d in DIMENSIONS if files[d] is None]
                if len(absent) == len(DIMENSIONS):
                    why = ("test video: the public release has no test labels" if set_name == "test"
                           else "training video without annotations/train/{valence,arousal}/" + f"{video}.txt")
                    yield Skip(Reason.NO_LABEL, why, **where, count=0)  # an unlabelled video is not an input
                    continue
                if absent:
                    yield Skip(Reason.MISSING_FILE, f"no annotations/{set_name}/{absent[0]}/{video}.txt beside the "
                                                    f"{DIMENSIONS[1 - DIMENSIONS.index(absent[0])]} file", **where,
                               count=self._labelled(files))
                    continue
                split = "test" if set_name == "test" else self.seeded_split(video)
                yield Item(split=split, key=video, data={
                    "video": self.relative(videos[video]),
                    **{d: [self.relative(files[d]), file_digest(files[d])] for d in DIMENSIONS}}, **where)

    def _labelled(self, files: dict) -> int:
        """Labelled frames (those `frame_stride` keeps) of a video that cannot be built: its longest label file."""
        try:
            lines = max(len(self.read_lines(self.relative(path))) for path in files.values() if path is not None)
        except Skip:  # an unreadable label file: its frames cannot be counted
            return 1
        return max(1, -(-lines // self.frame_stride))

    def frame_range(self, item: Item):
        from fbnet_tf import video

        path = self.root / item.data["video"]
        return (0, video.frame_count(path)) if path.is_file() else None

    def _label_files(self, set_name: str, dimension: str) -> dict:
        folder = self.root / "annotations" / set_name / dimension
        return {p.stem: p for p in sorted(folder.glob("*.txt"))} if folder.is_dir() else {}

    def examples(self, item: Item):
        video = item.data["video"]
        values, problems = {}, {}  # dimension -> [value per frame]; frame -> Skip of its first bad line
        for dimension in DIMENSIONS:
            file = item.data[dimension][0]
            values[dimension] = []
            for frame, line in enumerate(self.read_lines(file)):
                value = _parse_value(line)
                if isinstance(value, Skip):
                    value.file, value.line = file, frame + 1
                    problems.setdefault(frame, value)
                values[dimension].append(value)
        labelled = min(len(v) for v in values.values())  # frames with both labels
        described = max(len(v) for v in values.values())  # frames with at least one: the inputs
        unlabelled, beyond = [], []
        last = self.segment[0] - 1
        for index, image in self.video_frames(self.root / video, item, labelled=range(described)):
            last = index
            if index >= described:
                beyond.append(index)  # no label line: not an input (noted below, counted 0)
                continue
            if index >= labelled:
                unlabelled.append(index)
                continue
            if index in problems:
                yield problems[index]
                continue
            crop = self.detect_frame(image, item, index, video=video)
            if isinstance(crop, Skip):
                yield crop
                continue
            yield self.sample(item, crop, sample_id=f"{item.key}/{index:05d}", subject=item.key,
                              va=(values["valence"][index], values["arousal"][index]))
        if unlabelled:
            yield Skip(Reason.NO_LABEL, f"frames of {video} past the end of its shorter label file ({labelled} "
                                        "lines): valence or arousal is missing", file=video,
                       count=len(unlabelled), frames=(unlabelled[0], unlabelled[-1]))
        if beyond:
            yield Skip(Reason.NO_LABEL, f"frames of {video} past the end of its label files ({described} lines) are "
                                        "not annotated", file=video, count=0, frames=(beyond[0], beyond[-1]))
        yield from self.frames_past_end(range(described), last, video)


def _parse_value(line: str):
    """One label line -> a float in [-1, 1], or the Skip saying why it is not one."""
    try:
        value = float(line.strip())
    except ValueError:
        return Skip(Reason.BAD_ROW, f"{line.strip()!r} is not a number; expected one float in [-1, 1] per line")
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        return Skip(Reason.LABEL_OUT_OF_RANGE, f"{value} outside [-1, 1]")
    return value
