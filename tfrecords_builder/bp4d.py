"""BP4D-Spontaneous (FERA 2015) and BP4D+ (FERA 2017): per-frame AU occurrence (and intensity) of task videos.

Annotations (reference/datasets.md):
- `AUCoding/AU_OCC/<subject>_<task>.csv` (F001_T1.csv): row 1 a header of AU numbers, column 1 the frame number
  (need not start at 1), then one 0/1 column per AU (code 9 = missing: mask 0 for that AU in that frame); the
  last column may be an occlusion flag. AU columns are read BY HEADER NAME; for BP4D the header is also checked
  against the position rule "AU k is column k+1" (a file breaking it is skipped, naming the column).
- `AUCoding/AU_INT/AU06/F001_T1_AU06.csv` (optional): no header, `frame,intensity` with 0..5 (9 = invalid,
  intensity -1). Intensity only fills `au_intensity`; occurrence comes from AU_OCC.

Frames: the distribution's image layout is not documented in the reference. Accepted:
`<frames>/<subject>/<task>/<frame>.jpg` (also .png/.bmp), the frame number zero-padded to any width (found from
the files present), where `<frames>` is the option `frames_dir` (absolute or relative to the root) or else the
first of `Sequences/`, `BP4D-training/`, `2D+3D/`, `images/` that exists under the root. A frame whose image is
missing is skipped as `missing_file`. `--frame-stride N` keeps every N-th annotated row of each sequence.

AUs: only the challenge's AUs get mask 1 (BP4D: FERA 2015's 1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23; BP4D+:
FERA 2017's 1, 4, 6, 7, 10, 12, 14, 15, 17, 23 [assumed]); other columns are ignored.
Splits: BP4D: odd-numbered subjects are FERA's train, even-numbered its devel; as in the FaceBehaviorNet paper
devel is the test split and train is divided by subject into train / validation (`validation_fraction` 0.15,
seeded). BP4D+: seeded subject-independent 70/15/15 (`validation_fraction`, `test_fraction`).
Faces: detected and aligned (MTCNN + 5-point template).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from fbnet_tf.labels import AUS, au_index, parse_au_number
from tfrecords_builder.base import Builder, Item, Reason, Skip

OCCURRENCE_DIR = "AUCoding/AU_OCC"
INTENSITY_DIR = "AUCoding/AU_INT"
FRAME_DIR_CANDIDATES = ("Sequences", "BP4D-training", "2D+3D", "images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MISSING = 9
_SEQUENCE = re.compile(r"^(?P<subject>[^_]+)_(?P<task>T\d+)$", re.IGNORECASE)


def frame_images(folder: Path) -> dict[int, str]:
    """{frame number: file name} of the numbered images in a sequence folder, whatever the zero padding."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit():
            found.setdefault(int(path.stem), path.name)
    return found


class Bp4d(Builder):
    """BP4D-Spontaneous: FERA 2015 AU occurrence (11 AUs) + intensity, FERA train/devel split by subject."""

    NAME = "bp4d"
    VERSION = "1.0.0"
    RELEASE_NOTES = {"1.0.0": "first release: AU_OCC by header name, AU_INT intensities, detect + align"}
    DESCRIPTION = "BP4D-Spontaneous AUs (--root: the folder holding AUCoding/ and Sequences/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request BP4D at http://www.cs.binghamton.edu/~lijun/Research/3DFE/"
                                    "3DFE_Analysis.html; point --root at the folder holding AUCoding/ (and the "
                                    "frame images, or give --option frames_dir=DIR).")
    EXPECTED_LAYOUT = (f"{OCCURRENCE_DIR}/F001_T1.csv", f"{INTENSITY_DIR}/AU06/F001_T1_AU06.csv (optional)",
                       "Sequences/F001/T1/0001.jpg (or BP4D-training/, 2D+3D/, images/, or --option frames_dir=DIR)")
    CHALLENGE_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23)
    POSITION_RULE = True  # BP4D's AU k is column k+1: checked against the header
    ITEMS_PER_SHARD = 2000
    HINTS = {Reason.MISSING_FILE: "frames are read from <frames>/<subject>/<task>/<frame>.jpg under Sequences/, "
                                  "BP4D-training/, 2D+3D/ or images/ (BP4D+ ships them inside 2D+3D/<subject>.zip), "
                                  "or --option frames_dir=DIR: check that the frame folders are there"}
    OPTIONS = {"frames_dir": "", "validation_fraction": 0.15, "seed": 0}

    # --- splits --------------------------------------------------------------------------------------------------
    def split_of(self, subject: str) -> str | None:
        """FERA 2015: odd subject numbers train, even devel (= the paper's test); train 85/15 by subject."""
        number = re.search(r"\d+", subject)
        if number is None:
            return None
        return "test" if int(number.group()) % 2 == 0 else self.seeded_split(subject)

    # --- layout --------------------------------------------------------------------------------------------------
    def _frames_root(self) -> Path:
        if self.options["frames_dir"]:
            return self.option_path("frames_dir", folder=True)
        for name in FRAME_DIR_CANDIDATES:
            if (self.root / name).is_dir():
                return self.root / name
        raise self.layout_error(f"no frame folder ({', '.join(FRAME_DIR_CANDIDATES)}) under the root")

    # --- listing -------------------------------------------------------------------------------------------------
    def list_items(self):
        occurrence = self.root / OCCURRENCE_DIR
        files = sorted(occurrence.glob("*.csv")) if occurrence.is_dir() else []
        if not files:
            raise self.layout_error(f"no {OCCURRENCE_DIR}/<subject>_<task>.csv")
        frames_root = self._frames_root()
        for path in files:
            yield from self._sequence(path, frames_root)

    def _sequence(self, path: Path, frames_root: Path):
        file = self.relative(path)
        match = _SEQUENCE.match(path.stem)
        split = self.split_of(match["subject"]) if match else None
        if split is None:
            yield Skip(Reason.BAD_ROW, f"file name {path.name!r}; expected <subject>_<task>.csv like F001_T1.csv "
                                       "(subject with a number)", file=file)
            return
        subject, task = match["subject"], match["task"]
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            rows = list(csv.reader(handle))
        header = [cell.strip() for cell in rows[0]] if rows else []
        columns, problem = self._au_columns(header)
        if problem:
            yield Skip(Reason.BAD_ROW, problem, file=file, line=1)
            return
        intensities, skips = self._intensities(subject, task)
        yield from skips
        images = frame_images(frames_root / subject / task)
        for position, (number, fields) in enumerate(enumerate(rows[1:], start=2)):
            if not any(cell.strip() for cell in fields) or position % self.frame_stride:
                continue
            where = {"file": file, "line": number}
            if len(fields) != len(header):
                yield Skip(Reason.BAD_ROW, f"{len(fields)} columns; the header has {len(header)}", **where)
                continue
            try:
                frame = int(float(fields[0]))
                codes = {au: int(float(fields[column])) for au, column in columns.items()}
            except ValueError:
                yield Skip(Reason.BAD_ROW, f"non-numeric frame or AU code in {','.join(fields[:6])}...", **where)
                continue
            bad = {au: code for au, code in codes.items() if code not in (0, 1, MISSING)}
            if bad:
                yield Skip(Reason.LABEL_OUT_OF_RANGE, f"AU codes {bad}; expected 0, 1 or {MISSING}", **where)
                continue
            au, mask = np.zeros(len(AUS), np.float32), np.zeros(len(AUS), np.float32)
            for number_of_au, code in codes.items():
                if code != MISSING:
                    position = au_index(number_of_au)
                    au[position], mask[position] = code, 1.0
            if not mask.any():
                yield Skip(Reason.NO_LABEL, f"frame {frame}: every AU is {MISSING} (missing)", **where)
                continue
            if frame not in images:
                yield Skip(Reason.MISSING_FILE, f"no image for frame {frame} in {frames_root / subject / task} "
                                                "(expected <frame>.jpg, any zero padding)", **where)
                continue
            image = frames_root / subject / task / images[frame]
            data = {"image": str(image), "subject": subject, "au": au.tolist(), "au_mask": mask.tolist()}
            if intensities:
                data["au_intensity"] = [intensities.get(a, {}).get(frame, -1.0) for a in range(len(AUS))]
            # Frames kept outside the root (option frames_dir) are keyed <subject>/<task>/<file>.
            yield Item(split=split, key=self.relative_or_name(image, f"{subject}/{task}/{image.name}"), data=data,
                       **where)

    def _au_columns(self, header: list[str]) -> tuple[dict[int, int], str | None]:
        """{challenge AU number: column} read by header name; an error text when the header breaks the layout."""
        columns = {}
        for column, name in enumerate(header[1:], start=1):
            try:
                number = parse_au_number(name)
            except ValueError:
                continue  # e.g. an occlusion column
            if number not in self.CHALLENGE_AUS:
                continue  # AUs outside the challenge set (and a numbered occlusion column) are not read
            if self.POSITION_RULE and number != column:
                return {}, (f"header names AU {number} in column {column + 1}; {self.NAME} puts AU k in column "
                            "k+1 (column 1 is the frame)")
            columns.setdefault(number, column)
        if not columns:
            return {}, (f"header {','.join(header[:8])}... names none of the AUs {list(self.CHALLENGE_AUS)}; "
                        "expected row 1 = frame, then AU numbers")
        return columns, None

    def _intensities(self, subject: str, task: str) -> tuple[dict[int, dict[int, float]], list[Skip]]:
        """{canonical AU position: {frame: intensity 0..5 or -1}} from AU_INT, and skips of its bad lines."""
        folder, found, skips = self.root / INTENSITY_DIR, {}, []
        if not folder.is_dir():
            return found, skips
        for au_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                position = au_index(parse_au_number(au_folder.name))
            except ValueError:
                continue
            candidates = sorted(au_folder.glob(f"{subject}_{task}_*.csv"))
            if position is None or not candidates:
                continue
            path = candidates[0]
            values = found.setdefault(position, {})
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
                if not line.strip():
                    continue
                fields = [field.strip() for field in line.split(",")]
                where = {"file": self.relative(path), "line": number}
                try:
                    frame, intensity = int(float(fields[0])), int(float(fields[1]))
                except (ValueError, IndexError):
                    if number > 1:  # a header line is tolerated
                        skips.append(Skip(Reason.BAD_ROW, f"{line!r}; expected 'frame,intensity'", **where))
                    continue
                if len(fields) != 2:
                    skips.append(Skip(Reason.BAD_ROW, f"{len(fields)} fields; expected 'frame,intensity'", **where))
                elif intensity == MISSING:
                    values[frame] = -1.0
                elif 0 <= intensity <= 5:
                    values[frame] = float(intensity)
                else:  # the frame keeps its occurrence labels; only this intensity is dropped
                    skips.append(Skip(Reason.LABEL_OUT_OF_RANGE, f"intensity {intensity}; expected 0..5 or "
                                                                 f"{MISSING}", **where))
        return found, skips

    # --- examples ------------------------------------------------------------------------------------------------
    def examples(self, item: Item):
        image = self.read_image(Path(item.data["image"]), item)
        crop = self.detect_and_align(image, item, item.key)
        yield self.sample(item, crop, subject=item.data["subject"], au=item.data["au"], au_mask=item.data["au_mask"],
                          au_intensity=item.data.get("au_intensity"))


class Bp4dPlus(Bp4d):
    """BP4D+: FERA 2017 AU occurrence (10 AUs, assumed), seeded subject-independent 70/15/15."""

    NAME = "bp4d_plus"
    DESCRIPTION = "BP4D+ AUs (--root: the folder holding AUCoding/ and the frame folders)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request BP4D+ at http://www.cs.binghamton.edu/~lijun/Research/3DFE/"
                                    "3DFE_Analysis.html; point --root at the folder holding AUCoding/ (and the "
                                    "frame images, or give --option frames_dir=DIR).")
    CHALLENGE_AUS = (1, 4, 6, 7, 10, 12, 14, 15, 17, 23)
    POSITION_RULE = False  # BP4D+'s column positions are not confirmed: columns are found by name only
    OPTIONS = {"frames_dir": "", "validation_fraction": 0.15, "test_fraction": 0.15, "seed": 0}

    def split_of(self, subject: str) -> str:
        """Seeded, subject-independent: nested holdouts on the subject id (test, then validation)."""
        return self.seeded_split(subject)
