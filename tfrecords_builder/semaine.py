"""SEMAINE as annotated for FERA 2015: AU activations (ELAN .eaf) over the session videos.

Accepted layout (reference/datasets.md: a per-session folder with an ELAN `.eaf` of AU activations and a
sibling `<rec>.txt` holding the `start end` frame range, plus the session video), at any depth under the root:
```
<root>/[<train|training|devel|development|...>/]<session>/<rec>.eaf
<root>/.../<session>/<rec>.txt     one line "start end": video frame indices, 0-based, inclusive
<root>/.../<session>/<rec>.avi     same stem (.avi/.mp4/.mov/.mkv/.mpg/.wmv), else the folder's only video
```
The .eaf: `TIME_ORDER/TIME_SLOT` (`TIME_SLOT_ID`, `TIME_VALUE` in ms) and one `TIER` per AU whose `TIER_ID`
names it (`AU2`, `AU 2`, `AU02`); each `ALIGNABLE_ANNOTATION` (`TIME_SLOT_REF1`..`TIME_SLOT_REF2`) is an interval
where the AU is active. Video frame i (0-based) starts at t = 1000 i / fps ms and has the AU active when
t1 <= t < t2 for an interval of its tier; fps is the video's own (`CAP_PROP_FPS`), or the `fps` option when
given. AUs 28 and 45 are outside the canonical 17 and dropped: only 2, 12, 17, 25 are masked, each only when the
file has its tier (an annotation whose time slots are unaligned masks that AU out for the recording, recorded as
a skip). The XML is parsed with xml.etree after refusing any DTD (no DOCTYPE, no entity: nothing external).

Splits: a folder on the way named train*/training* is FERA's train, devel*/dev*/valid* its devel (the paper's
test, as for BP4D), test* test; FERA train is divided 85/15 by session. Without such folders: a seeded
session-independent 70/15/15. The session folder name is the subject id (SEMAINE records one user a session).
Faces: detected and aligned in each frame (MTCNN + 5-point template); `--frame-stride` keeps every N-th frame.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from fbnet_tf.labels import AUS, au_index, parse_au_number
from tfrecords_builder.base import Builder, Item, Option, Reason, Skip

SEMAINE_AUS = (2, 12, 17, 25, 28, 45)
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv")
UNSAFE_XML = "unsafe_xml"  # a DTD or entity declaration in an annotation file (refused, never expanded)
_FERA_FOLDERS = ((re.compile(r"^train", re.I), "train"), (re.compile(r"^(devel|dev|valid)", re.I), "devel"),
                 (re.compile(r"^test", re.I), "test"))


def parse_eaf(path: Path, file: str) -> tuple[dict[int, list[tuple[int, int]]], list[Skip]]:
    """{AU number: [(start ms, end ms), ...]} of the AU tiers of an ELAN file, and skips of unusable annotations.

    An AU with an unusable annotation is absent from the result (its labels are incomplete). Raises Skip for a
    file that is not well-formed ELAN XML or declares a DTD.
    """
    data = path.read_bytes()
    declaration = re.search(rb"<!\s*(DOCTYPE|ENTITY)", data, re.IGNORECASE)
    if declaration:  # ELAN never writes a DTD; refusing one rules out entity expansion and external fetches
        raise Skip(UNSAFE_XML, "DTD/entity declarations are refused in .eaf files", file,
                   data[:declaration.start()].count(b"\n") + 1)
    try:
        document = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise Skip(Reason.BAD_ROW, f"not well-formed XML: {error}", file, error.position[0]) from None
    if document.tag != "ANNOTATION_DOCUMENT":
        raise Skip(Reason.BAD_ROW, f"root element <{document.tag}>; expected ELAN <ANNOTATION_DOCUMENT>", file, 1)
    header = document.find("HEADER")
    units = "milliseconds" if header is None else header.get("TIME_UNITS", "milliseconds")
    if units != "milliseconds":
        raise Skip(Reason.BAD_ROW, f"TIME_UNITS={units!r}; expected milliseconds", file, 1)
    slots = {}
    for slot in document.iter("TIME_SLOT"):
        value = slot.get("TIME_VALUE")
        slots[slot.get("TIME_SLOT_ID")] = int(value) if value is not None and value.strip().isdigit() else None
    text = data.decode("utf-8", errors="replace")
    intervals, skips, broken = {}, [], set()
    for tier in document.iter("TIER"):
        try:
            au = parse_au_number(tier.get("TIER_ID", ""))
        except ValueError:
            continue  # a tier that is not an AU (comments, speech ...)
        intervals.setdefault(au, [])
        for annotation in tier.iter("ALIGNABLE_ANNOTATION"):
            start, end = slots.get(annotation.get("TIME_SLOT_REF1")), slots.get(annotation.get("TIME_SLOT_REF2"))
            if start is None or end is None or end < start:
                ident = annotation.get("ANNOTATION_ID", "")
                position = text.find(f'ANNOTATION_ID="{ident}"')
                skips.append(Skip(Reason.LABEL_OUT_OF_RANGE, f"annotation {ident} of tier AU{au}: time slots "
                                  f"{annotation.get('TIME_SLOT_REF1')}={start}, {annotation.get('TIME_SLOT_REF2')}"
                                  f"={end} are not an aligned interval; AU{au} is left unannotated here",
                                  file, text.count("\n", 0, position) + 1 if position >= 0 else None))
                broken.add(au)
                continue
            intervals[au].append((start, end))
    return {au: spans for au, spans in intervals.items() if au not in broken}, skips


def active(intervals: list[tuple[int, int]], time_ms: float) -> bool:
    """True when `time_ms` lies in one of the [start, end) intervals."""
    return any(start <= time_ms < end for start, end in intervals)


class Semaine(Builder):
    """SEMAINE (FERA 2015): AUs 2, 12, 17, 25 per video frame from ELAN activation intervals."""

    NAME = "semaine"
    VERSION = "1.0.0"
    RELEASE_NOTES = {"1.0.0": "first release: ELAN intervals -> frames at the video's fps, detect + align"}
    DESCRIPTION = "SEMAINE FERA 2015 AUs (--root: the folder holding the session folders)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request the FERA 2015 SEMAINE data (https://semaine-db.eu / the FERA 2015 "
                                    "organisers) and point --root at the folder holding the session folders "
                                    "(or their train/devel parents).")
    EXPECTED_LAYOUT = ("<session>/<rec>.eaf (ELAN, one tier per AU: AU2, AU12, AU17, AU25, AU28, AU45)",
                       "<session>/<rec>.txt ('start end' frame range)", "<session>/<rec>.avi (the session video)",
                       "(optionally under train*/ and devel*/ folders for the FERA 2015 split)")
    ITEMS_PER_SHARD = 2
    SEGMENT_FRAMES = 500  # a recording is built in ranges of 500 frames, so that every worker has work
    HINTS = {Reason.MISSING_FILE: "FERA 2015 puts the frame-range file beside the recording's folder "
                                  "(SEMAINE-Sessions/<rec>.txt) or inside it: check that it is there"}
    OPTIONS = {"fps": Option(0.0, minimum=0.0, maximum=1000.0), "validation_fraction": 0.15, "test_fraction": 0.15,
               "seed": 0}

    def split_of(self, relative: Path, session: str) -> str:
        """FERA folder on the path if any (train 85/15 by session, devel -> test), else seeded 70/15/15."""
        fera = next((name for part in relative.parts[:-1] for pattern, name in _FERA_FOLDERS if pattern.match(part)),
                    None)
        if fera in ("devel", "test"):
            return "test"
        return self.seeded_split(session, test_fraction=0.0 if fera == "train" else None)

    def list_items(self):
        annotations = sorted(self.root.rglob("*.eaf"))
        if not annotations:
            raise self.layout_error("no .eaf file under the root")
        for eaf in annotations:
            file, folder = self.relative(eaf), eaf.parent
            session = folder.name if folder != self.root else eaf.stem
            try:
                intervals, skips = parse_eaf(eaf, file)
            except Skip as skip:
                yield skip
                continue
            yield from skips
            # AU28 and AU45 are not among the canonical 17: dropped here.
            canonical = {au: spans for au, spans in intervals.items()
                         if au in SEMAINE_AUS and au_index(au) is not None}
            if not canonical:
                yield Skip(Reason.NO_LABEL, f"no usable tier named AU2, AU12, AU17 or AU25 (tiers: "
                                            f"{sorted(intervals)})", file=file)
                continue
            frame_range = yield from self._frame_range(eaf.with_suffix(".txt"))
            if frame_range is None:
                continue
            video = yield from self._video(eaf, file)
            if video is None:
                continue
            key = eaf.relative_to(self.root).with_suffix("").as_posix()
            yield Item(split=self.split_of(eaf.relative_to(self.root), session), key=key, file=file,
                       data={"video": self.relative(video), "session": session, "range": frame_range,
                             "intervals": {str(au): [list(span) for span in spans] for au, spans in canonical.items()}})

    def _frame_range(self, path: Path):
        """(start, end) from `<rec>.txt` (a generator: yields the Skip of a bad file, returns None then)."""
        file = self.relative(path)
        if not path.is_file():
            yield Skip(Reason.MISSING_FILE, f"no frame range file {path.name} ('start end') beside the .eaf", file)
            return None
        lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
        number, line = lines[0] if lines else (1, "")
        fields = line.replace(",", " ").split()
        try:
            start, end = (int(field) for field in fields)
        except ValueError:
            yield Skip(Reason.BAD_ROW, f"{line!r}; expected 'start end' (two frame numbers)", file, number)
            return None
        if not 0 <= start <= end:
            yield Skip(Reason.LABEL_OUT_OF_RANGE, f"frame range {start}..{end}; expected 0 <= start <= end",
                       file, number)
            return None
        return [start, end]

    def _video(self, eaf: Path, file: str):
        """The recording's video (a generator: yields the Skip when there is none or several, returns None)."""
        same_stem = [eaf.with_suffix(suffix) for suffix in VIDEO_SUFFIXES if eaf.with_suffix(suffix).is_file()]
        videos = same_stem or sorted(p for p in eaf.parent.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if len(videos) == 1:
            return videos[0]
        reason, what = ((Reason.MISSING_FILE, "no video") if not videos
                        else (Reason.BAD_ROW, f"{len(videos)} videos and none named {eaf.stem}.*"))
        yield Skip(reason, f"{what} beside {eaf.name}; expected {eaf.stem}.avi (or the folder's only video)", file)
        return None

    def frame_range(self, item: Item):
        start, end = item.data["range"]
        return start, end + 1

    def examples(self, item: Item):
        from fbnet_tf import video

        path = self.root / item.data["video"]
        fps = float(self.options["fps"])
        if fps <= 0:
            fps = video.fps(path)  # NaN when the header has none
        start, end = item.data["range"]
        if not math.isfinite(fps) or fps <= 0:
            raise Skip(Reason.UNREADABLE_VIDEO, f"{item.data['video']} reports no frame rate; give --option fps=N",
                       count=self.frames_kept(range(start, end + 1), start=start))
        intervals = {au_index(int(au)): spans for au, spans in item.data["intervals"].items()}
        mask = np.zeros(len(AUS), np.float32)
        mask[list(intervals)] = 1.0
        last = max(start, self.segment[0]) - 1
        for index, frame in self.video_frames(path, item, start=start, labelled=range(start, end + 1)):
            if index > end:
                break
            last = index
            au = np.zeros(len(AUS), np.float32)
            for position, spans in intervals.items():
                au[position] = float(active(spans, 1000.0 * index / fps))
            # The skip names the recording's .eaf (the item's file), not the video.
            crop = self.detect_frame(frame, item, index, what=f"{item.data['video']} frame {index}")
            if isinstance(crop, Skip):
                yield crop
                continue
            yield self.sample(item, crop, sample_id=f"{item.key}/{index:05d}", subject=item.data["session"],
                              au=au, au_mask=mask)
        missing = [f for f in range(last + 1, end + 1) if self.frames_kept([f], start=start)]
        if missing:  # frames of the range the video does not have (in this part of it)
            yield Skip(Reason.UNREADABLE_VIDEO, f"{item.data['video']} ends before the end of its frame range "
                                                f"{start}..{end}", count=len(missing), frames=(missing[0], missing[-1]))
