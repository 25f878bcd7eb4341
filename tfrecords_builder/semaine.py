"""SEMAINE as annotated for FERA 2015: AU activations (ELAN .eaf) over the session videos.

Layouts (reference/datasets.md), found by looking, at any depth under the root:
```
SEMAINE-Sessions/<rec>/<name>.eaf + <rec>/<video>.avi   the organisers' release (their find_SEMAINE.m), with
SEMAINE-Sessions/<rec>.txt                               the `start end` frame range BESIDE the recording's folder
<root>/[<train|training|devel|development|...>/]<session>/<rec>.eaf + <rec>.txt + <rec>.avi   (range file inside)
```
The video: the same stem as the .eaf (.avi/.mp4/.mov/.mkv/.mpg/.wmv), else the folder's only video.
The .eaf: `TIME_ORDER/TIME_SLOT` (`TIME_SLOT_ID`, `TIME_VALUE` in ms) and one `TIER` per AU whose `TIER_ID`
names it (`AU2`, `AU 2`, `AU02`); each `ALIGNABLE_ANNOTATION` (`TIME_SLOT_REF1`..`TIME_SLOT_REF2`) is an interval
where the AU is active. Frame labels are the organisers' (TadasBaltrusaitis/FERA-2015 `ParseSEMAINEAnnotations.m`
and `extract_SEMAINE_labels.m`), frame for frame:
- frame f (= 0-based video frame index f) at `fps` 50: an interval [t1, t2] ms marks frames
  floor(t1 * fps / 1000) .. floor(t2 * fps / 1000) inclusive, but only when both ends fall in 1 .. last, last =
  floor(latest time slot * fps / 1000) (the parser's frame list starts at 1 and its index look-up finds nothing
  otherwise: an interval starting before 20 ms marks nothing);
- labelled frames are start .. end-1 of the range file; when the annotation is shorter (last + 1 < end) the end
  becomes last + 1 and, past 2999, the start end - 2999; frame 0 (the parser's header row) is never labelled.
`--option fps=0` uses the video's own rate instead of 50. Every AU tier of the file is kept in `facs/*` (FERA
2015's 2, 12, 17, 25, 28, 45; AU28 and AU45 only there, being outside the canonical 17), occurrence only
(intensity -1), each only when the file has its tier (an annotation whose time slots are unaligned leaves that AU
out for the recording, recorded as a skip). The XML is parsed with xml.etree after refusing any DTD (no DOCTYPE,
no entity: nothing external).

Splits: a folder on the way named train*/training* is FERA's train, devel*/dev*/valid* its devel (the paper's
test, as for BP4D), test* test; else the organisers' train/devel recording lists (find_SEMAINE.m) by the
recording folder's name; FERA train is divided 85/15 by session. Other sessions: a seeded session-independent
70/15/15. The recording folder's name is the subject id (SEMAINE records one user a session).
Faces: detected and aligned in each frame (MTCNN + 5-point template); `--frame-stride` keeps every N-th frame.
"""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from fbnet_tf.labels import parse_au_number
from tfrecords_builder.base import VIDEO_DETECTOR, Builder, Item, Option, Reason, Skip

SEMAINE_AUS = (2, 12, 17, 25, 28, 45)  # the AUs FERA 2015 selected from SEMAINE's annotations
FPS = 50  # the organisers' parser: "50 is a valid framerate for all SEMAINE videos"
MAX_LABELLED = 2999  # extract_SEMAINE_labels keeps the last 2999 frames when the annotation ends before the range
# The organisers' recording lists (find_SEMAINE.m): FERA 2015 train and devel.
FERA_RECORDINGS = {
    "train": ("rec1", "rec12", "rec14", "rec19", "rec23", "rec25", "rec37", "rec39", "rec43", "rec45", "rec48",
              "rec50", "rec52", "rec54", "rec56", "rec60"),
    "devel": ("rec9", "rec13", "rec15", "rec20", "rec24", "rec26", "rec38", "rec42", "rec44", "rec46", "rec49",
              "rec51", "rec53", "rec55", "rec58"),
}
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv")
UNSAFE_XML = "unsafe_xml"  # a DTD or entity declaration in an annotation file (refused, never expanded)
_FERA_FOLDERS = ((re.compile(r"^train", re.I), "train"), (re.compile(r"^(devel|dev|valid)", re.I), "devel"),
                 (re.compile(r"^test", re.I), "test"))


def parse_eaf(path: Path, file: str) -> tuple[dict[int, list[tuple[int, int]]], int, list[Skip]]:
    """{AU number: [(start ms, end ms), ...]} of the AU tiers of an ELAN file, its latest time slot (ms; where the
    organisers' parser ends the recording) and skips of unusable annotations.

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
    text = data.decode("utf-8-sig", errors="replace")
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
    latest = max((value for value in slots.values() if value is not None), default=0)
    return {au: spans for au, spans in intervals.items() if au not in broken}, latest, skips


def frame_at(time_ms: float, fps: float) -> int:
    """The organisers' frame of a time: floor(t * fps / 1000) (exact in integers for a whole fps)."""
    if float(fps).is_integer() and float(time_ms).is_integer():
        return int(time_ms) * int(fps) // 1000
    return math.floor(time_ms * fps / 1000.0)


def active_frames(spans, last_frame: int, fps: float) -> set[int]:
    """Frames ParseSEMAINEAnnotations marks active for one AU: frame(t1)..frame(t2) inclusive for each interval
    whose two end frames both lie in its frame list 1..last_frame (its index look-up finds nothing otherwise)."""
    active = set()
    for start_ms, end_ms in spans:
        first, last = frame_at(start_ms, fps), frame_at(end_ms, fps)
        if 1 <= first <= last_frame and 1 <= last <= last_frame:
            active.update(range(first, last + 1))
    return active


def labelled_range(start: int, end: int, last_frame: int) -> tuple[int, int]:
    """(first, last) frame extract_SEMAINE_labels labels for a range file's `start end`: start..end-1, the end
    capped at the annotation's last frame + 1 (then, past MAX_LABELLED, the start moved to end - MAX_LABELLED)."""
    if last_frame + 1 < end:
        end = last_frame + 1
        if end > MAX_LABELLED:
            start = end - MAX_LABELLED
    return start, end - 1


class Semaine(Builder):
    """SEMAINE (FERA 2015): every AU tier (2, 12, 17, 25, 28, 45) per video frame, as the organisers' parser."""

    NAME = "semaine"
    VERSION = "2.1.0"
    RELEASE_NOTES = {"1.0.0": "first release: ELAN intervals -> frames at the video's fps, detect + align",
                     "2.0.0": "labels frame for frame as the FERA 2015 organisers' parser (50 fps, interval ends "
                              "floor(t*50/1000) inclusive, frames start..end-1 of the range file); range file "
                              "beside the recording's folder (SEMAINE-Sessions/<rec>.txt) too; every AU tier in "
                              "facs/* (AU28, AU45 included); the organisers' train/devel recording lists",
                     "2.1.0": "option detector (--detector), default fast: BlazeFace + FaceMesh, was MTCNN"}
    DESCRIPTION = "SEMAINE FERA 2015 AUs (--root: the folder holding SEMAINE-Sessions/ or the session folders)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request the FERA 2015 SEMAINE data (https://semaine-db.eu / the FERA 2015 "
                                    "organisers) and point --root at the folder holding SEMAINE-Sessions/ (or the "
                                    "session folders, or their train/devel parents).")
    EXPECTED_LAYOUT = ("SEMAINE-Sessions/<rec>/<name>.eaf (ELAN, one tier per AU: AU2, AU12, AU17, AU25, AU28, AU45)",
                       "SEMAINE-Sessions/<rec>.txt ('start end' frame range, beside the recording's folder)",
                       "SEMAINE-Sessions/<rec>/<video>.avi (the session video)",
                       "(or <session>/<rec>.eaf with <session>/<rec>.txt inside the folder, optionally under "
                       "train*/ and devel*/ folders for the FERA 2015 split)")
    ITEMS_PER_SHARD = 2
    SEGMENT_FRAMES = 500  # a recording is built in ranges of 500 frames, so that every worker has work
    HINTS = {Reason.MISSING_FILE: "FERA 2015 puts the frame-range file beside the recording's folder "
                                  "(SEMAINE-Sessions/<rec>.txt) or inside it: check that it is there"}
    OPTIONS = {"fps": Option(float(FPS), minimum=0.0, maximum=1000.0), "validation_fraction": 0.15,
               "test_fraction": 0.15, "seed": 0, "detector": VIDEO_DETECTOR}

    def split_of(self, relative: Path, session: str) -> str:
        """FERA folder on the path, else the organisers' recording lists (train 85/15 by session, devel -> test),
        else seeded 70/15/15."""
        fera = next((name for part in relative.parts[:-1] for pattern, name in _FERA_FOLDERS if pattern.match(part)),
                    None)
        fera = fera or next((name for name, recordings in FERA_RECORDINGS.items() if session in recordings), None)
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
                intervals, latest, skips = parse_eaf(eaf, file)
            except Skip as skip:
                yield skip
                continue
            yield from skips
            if not intervals:
                yield Skip(Reason.NO_LABEL, "no usable AU tier (AU2, AU12, AU17, AU25, AU28, AU45 ...); tiers "
                                            "that name an AU and have only aligned annotations are read", file=file)
                continue
            frame_range = yield from self._frame_range(eaf)
            if frame_range is None:
                continue
            video = yield from self._video(eaf, file)
            if video is None:
                continue
            key = eaf.relative_to(self.root).with_suffix("").as_posix()
            yield Item(split=self.split_of(eaf.relative_to(self.root), session), key=key, file=file,
                       data={"video": self.relative(video), "session": session, "range": frame_range,
                             "latest_ms": latest,
                             "intervals": {str(au): [list(span) for span in spans] for au, spans in intervals.items()}})

    def _frame_range(self, eaf: Path):
        """(start, end) from the range file: `<rec>.txt` beside the recording's folder (the organisers' layout) or
        `<name>.txt` beside the .eaf (a generator: yields the Skip of a missing or bad file, returns None then)."""
        candidates = [eaf.with_suffix(".txt")]
        if eaf.parent != self.root:
            candidates.append(eaf.parent.with_name(eaf.parent.name + ".txt"))
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            yield Skip(Reason.MISSING_FILE, "no frame range file ('start end'): expected "
                                            f"{' or '.join(self.relative(c) for c in reversed(candidates))}",
                       self.relative(candidates[-1]))
            return None
        file = self.relative(path)
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1) if line.strip()]
        number, line = lines[0] if lines else (1, "")
        fields = line.replace(",", " ").split()
        try:
            start, end = (int(float(field)) for field in fields)
        except ValueError:
            yield Skip(Reason.BAD_ROW, f"{line!r}; expected 'start end' (two frame numbers)", file, number)
            return None
        if not 0 <= start < end:
            yield Skip(Reason.LABEL_OUT_OF_RANGE, f"frame range {start} {end}; expected 0 <= start < end (frames "
                                                  "start..end-1 are labelled)", file, number)
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
        return tuple(item.data["range"])  # frames start..end-1 at most (labelled_range only shrinks it)

    def examples(self, item: Item):
        from fbnet_tf import video

        path = self.root / item.data["video"]
        fps = float(self.options["fps"])
        if fps <= 0:
            fps = video.fps(path)  # NaN when the header has none
        if not math.isfinite(fps) or fps <= 0:
            raise Skip(Reason.UNREADABLE_VIDEO, f"{item.data['video']} reports no frame rate; give --option fps=N",
                       count=self.frames_kept(range(*item.data["range"]), start=item.data["range"][0]))
        last_frame = frame_at(item.data["latest_ms"], fps)
        start, end = labelled_range(*item.data["range"], last_frame)
        if start == 0:  # the parser's row for frame 0 is its header: no label
            if self.frames_kept([0]):
                yield Skip(Reason.NO_LABEL, "frame 0 has no label in the organisers' parser (its frames start at 1)")
            start = 1
        if end < start:
            if not self.first_segment:
                return
            raise Skip(Reason.NO_LABEL, f"no frame left to label: range {item.data['range']}, annotation ends at "
                                        f"frame {last_frame}")
        active = {int(au): active_frames(spans, last_frame, fps) for au, spans in item.data["intervals"].items()}
        last = max(start, self.segment[0]) - 1
        for index, frame in self.video_frames(path, item, start=start, labelled=range(start, end + 1)):
            if index > end:
                break
            last = index
            # The skip names the recording's .eaf (the item's file), not the video.
            crop = self.detect_frame(frame, item, index, what=f"{item.data['video']} frame {index}")
            if isinstance(crop, Skip):
                yield crop
                continue
            facs = [[au, float(index in frames), -1.0] for au, frames in sorted(active.items())]
            yield self.sample(item, crop, sample_id=f"{item.key}/{index:05d}", subject=item.data["session"],
                              facs=facs)
        missing = [f for f in range(last + 1, end + 1) if self.frames_kept([f], start=start)]
        if missing:  # frames of the range the video does not have (in this part of it)
            yield Skip(Reason.UNREADABLE_VIDEO, f"{item.data['video']} ends before the end of its frame range "
                                                f"{start}..{end}", count=len(missing), frames=(missing[0], missing[-1]))
