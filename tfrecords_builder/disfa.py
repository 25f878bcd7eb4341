"""DISFA (Mavadati et al. 2013): intensities 0..5 of 12 AUs per video frame, 27 subjects, two cameras.

Layout (reference/datasets.md): `ActionUnit_Labels/SN001/SN001_au1.txt` ... `SN001_au26.txt`, lines
`frame,intensity` (frame 1-based, intensity 0..5), and `Videos_LeftCamera/LeftVideoSN001_comp.avi` (right camera,
`camera=right|both`: `Video_RightCamera/RightVideoSN001_Comp.avi` as shipped (singular `Video_`; FERA 2015 baseline,
AU_R-CNN), or the plural `Videos_RightCamera/`; file names matched case-insensitively). Faces are detected and
aligned per frame (MTCNN); `--frame-stride k` keeps frames 1, 1+k, ... Every AU label file of the subject goes to
`facs/*` with occurrence = intensity >= `threshold` (default 2, the usual convention) and the intensity itself;
the canonical `au`/`au_mask`/`au_intensity` come from them. The 5 canonical AUs DISFA does not code have mask 0
(and so does a DISFA AU whose label file is missing for a subject).

DISFA defines no split. Subject-independent and seeded: subjects are ranked by sha256(f"{seed}:{subject}"); the
first round(test_fraction * n) are test, the next round(validation_fraction * n) validation, the rest train
(27 subjects, 0.15/0.15: 19/4/4). sample_id = `<video file stem>/<frame:05d>` (the 1-based DISFA frame number),
subject = `SN0xx`; `extra["camera"]` = left/right.

Skips: a frame whose label row is garbled or out of range (`file`, `line` = that row), a frame with no row in one
of the subject's label files (`no_label`), a frame without a face (`no_face`; `file` = the video, `line` = the
frame number), labelled frames past the video's end (`missing_file`, one record per video counting them).
Inputs (manifest `accounting`) are the frames with a row in at least one of the subject's label files: a missing or
unreadable video counts all of them; a missing AU file (that AU masked out), a stray folder and video frames that no
label file mentions are listed with count 0 (no labelled frame lost). Videos are built in ranges of 500 frames.
"""
from __future__ import annotations

import re

from tfrecords_builder.base import (VIDEO_DETECTOR, Builder, Item, Option, Reason, Skip, file_digest, key_rank,
                                   parse_int)

DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
LABELS = "ActionUnit_Labels"
# camera -> (its folder as shipped and other spellings seen, the video file name prefix)
CAMERAS = {"left": (("Videos_LeftCamera", "Video_LeftCamera"), "LeftVideo"),
           "right": (("Video_RightCamera", "Videos_RightCamera"), "RightVideo")}
MAX_INTENSITY = 5
_SUBJECT = re.compile(r"^SN\d+$", re.IGNORECASE)


class Disfa(Builder):
    """DISFA: 12 AU intensities and occurrences per frame; faces detected + aligned; split by subject."""

    NAME = "disfa"
    VERSION = "1.2.0"
    RELEASE_NOTES = {"1.0.0": "first release: left/right/both cameras, occurrence = intensity >= threshold, "
                              "seeded 70/15/15 subject split",
                     "1.1.0": "facs/* lists (every AU file: occurrence and intensity); the right camera's folder "
                              "as shipped, Video_RightCamera/ (singular), and the plural",
                     "1.2.0": "option detector (--detector), default fast: BlazeFace + FaceMesh, was MTCNN"}
    DESCRIPTION = "DISFA AU intensities (--root: the folder holding ActionUnit_Labels/ and Videos_LeftCamera/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request DISFA at http://mohammadmahoor.com/disfa/, unpack it and point --root "
                                    "at the folder that holds ActionUnit_Labels/ and Videos_LeftCamera/.")
    EXPECTED_LAYOUT = (f"{LABELS}/SN001/SN001_au1.txt ... SN001_au26.txt   (lines 'frame,intensity')",
                       "Videos_LeftCamera/LeftVideoSN001_comp.avi",
                       "Video_RightCamera/RightVideoSN001_Comp.avi (or Videos_RightCamera/; only with camera=right "
                       "or both)")
    ITEMS_PER_SHARD = 4  # one item = one subject's video (4845 frames)
    SEGMENT_FRAMES = 500  # ... built in ranges of 500 frames, so that every worker has work
    HINTS = {Reason.MISSING_FILE: "camera=right reads Video_RightCamera/ (or Videos_RightCamera/); camera=left "
                                  "Videos_LeftCamera/: check that the camera's folder and its videos are there"}
    OPTIONS = {"camera": Option("left", choices=("left", "right", "both")),
               "threshold": Option(2, minimum=1, maximum=MAX_INTENSITY), "validation_fraction": 0.15,
               "test_fraction": 0.15, "seed": 0, "detector": VIDEO_DETECTOR}

    def list_items(self):
        camera = self.option_choice("camera", ("left", "right", "both"))
        cameras = ("left", "right") if camera == "both" else (camera,)
        labels = self.root / LABELS
        if not labels.is_dir():
            raise self.layout_error(f"no {LABELS}/ folder")
        folders = {}
        for side in cameras:
            folders[side] = next((self.root / name for name in CAMERAS[side][0] if (self.root / name).is_dir()), None)
            if folders[side] is None:
                raise self.layout_error(f"no {' or '.join(CAMERAS[side][0])}/ folder for camera={side}")
        subjects = []
        for folder in sorted(p for p in labels.iterdir() if not p.name.startswith(".")):
            if folder.is_dir() and _SUBJECT.match(folder.name):
                subjects.append(folder)
            else:
                yield Skip(Reason.BAD_ROW, "not a subject folder; expected SN<digits>/", file=self.relative(folder),
                           count=0)  # holds no labelled frame
        if not subjects:
            raise self.layout_error(f"no SN<digits>/ subject folders in {LABELS}/")
        splits = self._subject_splits([folder.name for folder in subjects])
        for folder in subjects:
            subject = folder.name
            files = {}
            for path in sorted(folder.iterdir()):
                match = re.match(rf"^{re.escape(subject)}_au(\d+)\.txt$", path.name, re.IGNORECASE)
                if match:  # every AU DISFA codes (its 12 are canonical; any other goes to facs/* only)
                    files[int(match.group(1))] = [self.relative(path), file_digest(path)]
            for au in DISFA_AUS:
                if au not in files:
                    yield Skip(Reason.MISSING_FILE, f"no label file for AU{au}: that AU is masked out for {subject}",
                               file=f"{LABELS}/{subject}/{subject}_au{au}.txt", count=0)  # no frame is lost
            if not files:
                continue
            for side in cameras:
                video = self._video(subject, side, folders[side])
                if isinstance(video, Skip):  # examples() counts it as one skip per labelled frame
                    video = self.root / video.file
                yield Item(split=splits[subject], key=video.stem,
                           data={"subject": subject, "camera": side, "video": self.relative(video), "labels": files},
                           file=self.relative(video))

    def _subject_splits(self, subjects: list[str]) -> dict[str, str]:
        """Seeded subject-independent split: rank by hash, first test, next validation, rest train."""
        # Ranked rather than thresholded (`split_of`): with 27 subjects a hash threshold could leave a split empty.
        ranked = sorted(subjects, key=lambda subject: key_rank(subject, self.options["seed"]))
        n_test = round(self.options["test_fraction"] * len(ranked))
        n_validation = round(self.options["validation_fraction"] * len(ranked))
        return {subject: "test" if rank < n_test else "validation" if rank < n_test + n_validation else "train"
                for rank, subject in enumerate(ranked)}

    def _video(self, subject: str, side: str, folder):
        """The subject's video of one camera (names matched case-insensitively), or a Skip saying what was expected."""
        prefix = CAMERAS[side][1]
        expected = f"{prefix}{subject}_{'Comp' if side == 'right' else 'comp'}.avi"
        pattern = re.compile(rf"^{prefix}{subject}(?!\d).*\.avi$", re.IGNORECASE)  # SN001 must not match SN0011
        candidates = sorted(p for p in folder.iterdir() if pattern.match(p.name))
        exact = [p for p in candidates if p.name.lower() == expected.lower()]
        if exact or candidates:
            return (exact or candidates)[0]
        return Skip(Reason.MISSING_FILE, f"no {side}-camera video for {subject}; expected {folder.name}/{expected}",
                    file=f"{folder.name}/{expected}")

    def frame_range(self, item: Item):
        from fbnet_tf import video

        path = self.root / item.data["video"]
        return (0, video.frame_count(path)) if path.is_file() else None

    def examples(self, item: Item):
        subject, video = item.data["subject"], item.data["video"]
        intensities, problems = {}, {}  # AU -> {frame: intensity}; frame -> Skip of its first bad row
        files = {int(au): file for au, (file, _) in item.data["labels"].items()}
        for au, file in sorted(files.items()):
            try:
                lines = self.read_lines(file)
            except Skip as skip:  # that AU is masked out: no frame is lost
                if self.first_segment:
                    skip.count = 0
                    yield skip
                continue
            intensities[au] = {}
            for line_number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    frame, value = _parse_row(line)
                except Skip as skip:
                    skip.file, skip.line = file, line_number
                    if getattr(skip, "frame", None) is not None:
                        problems.setdefault(skip.frame, skip)  # recorded when the video reaches that frame
                    elif self.first_segment:  # no usable frame number: the row alone is recorded, losing no
                        skip.count = 0        # frame (a frame without this AU's row is counted as no_label)
                        yield skip
                    continue
                if frame in intensities[au]:
                    if self.first_segment:
                        yield Skip(Reason.BAD_ROW, f"frame {frame} is listed twice; the first is kept", file,
                                   line_number, count=0)
                    continue
                intensities[au][frame] = value
        if not intensities:
            raise Skip(Reason.NO_LABEL, f"none of {subject}'s label files could be read",
                       count=int(self.first_segment))
        threshold = self.options["threshold"]
        labelled = set().union(*(set(frames) for frames in intensities.values())) | set(problems)
        last, unlabelled = self.segment[0], []  # the frame number before this range's first
        for index, image in self.video_frames(self.root / video, item, labelled=labelled, first=1):
            frame = index + 1
            last = frame
            if frame not in labelled:
                unlabelled.append(frame)  # no label file has a row for it: not an input (noted, counted 0)
                continue
            if frame in problems:
                yield problems[frame]
                continue
            absent = next((au for au in intensities if frame not in intensities[au]), None)
            if absent is not None:
                yield Skip(Reason.NO_LABEL, f"frame {frame} of {video} has no row in {files[absent]}",
                           file=files[absent])
                continue
            crop = self.detect_frame(image, item, index, video=video, what=f"{video} frame {frame}")
            if isinstance(crop, Skip):
                yield crop
                continue
            facs = {number: (float(frames[frame] >= threshold), float(frames[frame]))
                    for number, frames in intensities.items()}
            yield self.sample(item, crop, sample_id=f"{item.key}/{frame:05d}", subject=subject, facs=facs,
                              extra={"camera": item.data["camera"]})
        if unlabelled:
            yield Skip(Reason.NO_LABEL, f"frames of {video} with no row in any label file are not annotated",
                       file=video, count=0, frames=(unlabelled[0], unlabelled[-1]))
        yield from self.frames_past_end(labelled, last, video, first=1)


def _parse_row(line: str) -> tuple[int, int]:
    """'frame,intensity' -> (frame, intensity); Skip(BAD_ROW / LABEL_OUT_OF_RANGE) otherwise."""
    fields = [field.strip() for field in line.split(",")]
    if len(fields) != 2:
        raise Skip(Reason.BAD_ROW, f"{len(fields)} fields in {line!r}; expected 'frame,intensity'")
    frame = parse_int(fields[0], "frame")
    if frame < 1:
        raise Skip(Reason.BAD_ROW, f"frame {frame}; DISFA frames are numbered from 1")
    try:
        value = float(fields[1])
    except ValueError:
        value = None
    if value is None or not value.is_integer() or not 0 <= value <= MAX_INTENSITY:
        skip = Skip(Reason.BAD_ROW if value is None else Reason.LABEL_OUT_OF_RANGE,
                    f"frame {frame} intensity {fields[1]!r}; expected an integer 0..{MAX_INTENSITY}")
        skip.frame = frame  # the frame is known: it is skipped with this row as the reason
        raise skip
    return frame, int(value)
