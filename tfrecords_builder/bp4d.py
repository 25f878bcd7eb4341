"""BP4D-Spontaneous (FERA 2015) and BP4D+ (FERA 2017): per-frame AU occurrence (and intensity) of task videos.

Layouts (reference/datasets.md), found by looking (no option):
- the FERA 2015 organisers' release: occurrence `AUCoding/<subject>_<task>.csv`, intensity
  `AU Intensity Codes3.0/AU06/<subject>_<task>_AU06.csv`, frames `BP4D/BP4D-training/<subject>/<task>/<n>.jpg`;
- the re-packaged variant (and BP4D+): `AUCoding/AU_OCC/<subject>_<task>.csv`, `AUCoding/AU_INT/AU06/...`, frames
  `BP4D-training/`, `Sequences/`, `2D+3D/` or `images/` `<subject>/<task>/<n>.jpg`;
- BP4D+ as shipped: the frames INSIDE `2D+3D/<subject>.zip` (`[<subject>/]<task>/<n>.jpg` members), read from the
  archive directly (no extraction, no copy); an extracted `2D+3D/<subject>/<task>/` folder is used when present.
`--option frames_dir=DIR` (absolute or relative to the root) names the frame folder instead. The frame number is
zero-padded to any width (found from the files present); a frame whose image is missing is skipped as
`missing_file`. `--frame-stride N` keeps every N-th annotated row of each sequence.

Occurrence CSV: row 1 a header of AU numbers, column 1 the frame number (need not start at 1), then one 0/1 column
per AU, code 9 = not coded in that frame. EVERY AU column is kept (`facs/*`; the canonical `au`/`au_mask` for the
ones among the 17, e.g. BP4D's AU24), an AU coded 9 is left out of that frame's lists. BP4D: the header is checked
against the position rule "AU k is column k+1" (a file breaking it is skipped, naming the column) and its last
column is the occlusion flag (FERA 2015's `OCC(:, end)`), not an AU. BP4D+: 34 AUs, read by header name, or, when
the header names no AU and a row has 35 columns, in BP4D+'s column order (`BP4D_PLUS_AUS`).
Intensity CSV (optional): no header, `frame,intensity` with 0..5 (9 = not coded: intensity -1); it fills the
intensity of an AU the occurrence file codes in that frame.
Sample ids are `<subject>/<task>/<image file name>` in every layout, so two layouts of the same data give the same
records. Splits: BP4D: odd-numbered subjects are FERA's train, even-numbered its devel; as in the FaceBehaviorNet
paper devel is the test split and train is divided by subject into train / validation (`validation_fraction` 0.15,
seeded). BP4D+: seeded subject-independent 70/15/15 (`validation_fraction`, `test_fraction`).
Faces: detected and aligned (MTCNN + 5-point template).
"""
from __future__ import annotations

import csv
import functools
import re
import zipfile
from pathlib import Path, PurePosixPath

from fbnet_tf.labels import parse_au_number
from tfrecords_builder.base import VIDEO_DETECTOR, Builder, Item, Reason, Skip, decode_image

# Where each layout keeps its files, in the order they are looked for.
OCCURRENCE_DIRS = ("AUCoding/AU_OCC", "AUCoding")
INTENSITY_DIRS = ("AUCoding/AU_INT", "AU Intensity Codes3.0", "AUCoding/AU Intensity Codes3.0")
FRAME_DIR_CANDIDATES = ("BP4D/BP4D-training", "BP4D-training", "Sequences", "2D+3D", "images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MISSING = 9
# BP4D+'s 34 coded AUs in their column order (ubicomplab/rPPG-Toolbox BP4DPlusBigSmallLoader.py).
BP4D_PLUS_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 27, 28, 29, 30, 31,
                 32, 33, 34, 35, 36, 37, 38, 39)
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


def zip_frames(names: list[str], task: str) -> dict[int, str]:
    """{frame number: member name} of the numbered images of `task` in an archive's member list
    (`<task>/<n>.jpg`, under any leading folders such as `<subject>/`)."""
    found = {}
    for name in sorted(names):
        path = PurePosixPath(name)
        if (len(path.parts) >= 2 and path.parts[-2] == task and path.suffix.lower() in IMAGE_SUFFIXES
                and path.stem.isdigit()):
            found.setdefault(int(path.stem), name)
    return found


@functools.lru_cache(maxsize=2)
def _archive(path: str) -> zipfile.ZipFile:
    """An open archive, kept per process: a subject's frames are read one by one from the same zip."""
    return zipfile.ZipFile(path)


class Bp4d(Builder):
    """BP4D-Spontaneous: every coded AU's occurrence + intensity, FERA 2015 train/devel split by subject."""

    NAME = "bp4d"
    VERSION = "2.1.0"
    RELEASE_NOTES = {"1.0.0": "first release: AU_OCC by header name, AU_INT intensities, detect + align",
                     "2.0.0": "FERA 2015 organisers' layout (AUCoding/*.csv, AU Intensity Codes3.0/, "
                              "BP4D/BP4D-training/) found by looking; every header AU kept (facs/*, canonical "
                              "au/au_mask for all coded canonical AUs, e.g. AU24); sample id <subject>/<task>/<file> "
                              "in every layout",
                     "2.1.0": "option detector (--detector), default fast: BlazeFace + FaceMesh, was MTCNN"}
    DESCRIPTION = "BP4D-Spontaneous AUs (--root: the folder holding AUCoding/ and the frames)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request BP4D at http://www.cs.binghamton.edu/~lijun/Research/3DFE/"
                                    "3DFE_Analysis.html; point --root at the folder holding AUCoding/ (and the "
                                    "frame images, or give --option frames_dir=DIR).")
    EXPECTED_LAYOUT = ("AUCoding/F001_T1.csv (FERA 2015 release) or AUCoding/AU_OCC/F001_T1.csv",
                       "AU Intensity Codes3.0/AU06/F001_T1_AU06.csv or AUCoding/AU_INT/AU06/F001_T1_AU06.csv "
                       "(optional)",
                       "BP4D/BP4D-training/F001/T1/0001.jpg (or BP4D-training/, Sequences/, 2D+3D/, images/, or "
                       "--option frames_dir=DIR)")
    POSITION_RULE = True  # BP4D's AU k is column k+1 (checked against the header); the last column is occlusion
    ITEMS_PER_SHARD = 2000
    HINTS = {Reason.MISSING_FILE: "frames are read from <frames>/<subject>/<task>/<frame>.jpg under Sequences/, "
                                  "BP4D-training/, 2D+3D/ or images/ (BP4D+ ships them inside 2D+3D/<subject>.zip), "
                                  "or --option frames_dir=DIR: check that the frame folders are there"}
    OPTIONS = {"frames_dir": "", "validation_fraction": 0.15, "seed": 0, "detector": VIDEO_DETECTOR}

    # --- splits --------------------------------------------------------------------------------------------------
    def split_of(self, subject: str) -> str | None:
        """FERA 2015: odd subject numbers train, even devel (= the paper's test); train 85/15 by subject."""
        number = re.search(r"\d+", subject)
        if number is None:
            return None
        return "test" if int(number.group()) % 2 == 0 else self.seeded_split(subject)

    # --- layout --------------------------------------------------------------------------------------------------
    def _occurrence_files(self) -> list[Path]:
        for name in OCCURRENCE_DIRS:
            files = sorted((self.root / name).glob("*.csv")) if (self.root / name).is_dir() else []
            if files:
                return files
        raise self.layout_error(f"no <subject>_<task>.csv in {' or '.join(OCCURRENCE_DIRS)}")

    def _frames_root(self) -> Path:
        if self.options["frames_dir"]:
            return self.option_path("frames_dir", folder=True)
        for name in FRAME_DIR_CANDIDATES:
            if (self.root / name).is_dir():
                return self.root / name
        raise self.layout_error(f"no frame folder ({', '.join(FRAME_DIR_CANDIDATES)}) under the root")

    # --- listing -------------------------------------------------------------------------------------------------
    def list_items(self):
        files = self._occurrence_files()
        frames_root = self._frames_root()
        archives = {}  # subject -> member names of 2D+3D/<subject>.zip (read once)
        for path in files:
            yield from self._sequence(path, frames_root, archives)

    def _frames(self, frames_root: Path, subject: str, task: str, archives: dict):
        """({frame: image location for Item.data}, where the frames were looked for) of one sequence."""
        folder = frames_root / subject / task
        if folder.is_dir() or not (frames_root / f"{subject}.zip").is_file():
            return {frame: {"image": str(folder / name)} for frame, name in frame_images(folder).items()}, folder
        archive = frames_root / f"{subject}.zip"
        if subject not in archives:
            try:
                with zipfile.ZipFile(archive) as handle:
                    archives[subject] = handle.namelist()
            except (OSError, zipfile.BadZipFile):
                archives[subject] = []
        return ({frame: {"zip": str(archive), "member": name}
                 for frame, name in zip_frames(archives[subject], task).items()}, f"{archive}:{task}/")

    def _sequence(self, path: Path, frames_root: Path, archives: dict):
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
        images, looked_in = self._frames(frames_root, subject, task, archives)
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
            facs = [[au, float(code), intensities.get(au, {}).get(frame, -1.0)]
                    for au, code in sorted(codes.items()) if code != MISSING]
            if not facs:
                yield Skip(Reason.NO_LABEL, f"frame {frame}: every AU is {MISSING} (not coded)", **where)
                continue
            if frame not in images:
                yield Skip(Reason.MISSING_FILE, f"no image for frame {frame} in {looked_in} (expected <frame>.jpg, "
                                                "any zero padding)", **where)
                continue
            image = images[frame]
            name = PurePosixPath(image.get("member") or Path(image["image"]).name).name
            yield Item(split=split, key=f"{subject}/{task}/{name}", data={**image, "subject": subject, "facs": facs},
                       **where)

    def _au_columns(self, header: list[str]) -> tuple[dict[int, int], str | None]:
        """{AU number: column} of every AU the header names; an error text when the header breaks the layout."""
        columns = {}
        names = header[1:-1] if self.POSITION_RULE else header[1:]  # BP4D: the last column is the occlusion flag
        for column, name in enumerate(names, start=1):
            try:
                number = parse_au_number(name)
            except ValueError:
                continue  # e.g. an occlusion column
            if self.POSITION_RULE and number != column:
                return {}, (f"header names AU {number} in column {column + 1}; {self.NAME} puts AU k in column "
                            "k+1 (column 1 is the frame)")
            columns.setdefault(number, column)
        if not columns:
            return {}, (f"header {','.join(header[:8])}... names no AU; expected row 1 = frame, then AU numbers")
        return columns, None

    def _intensity_dir(self) -> Path | None:
        return next((self.root / name for name in INTENSITY_DIRS if (self.root / name).is_dir()), None)

    def _intensities(self, subject: str, task: str) -> tuple[dict[int, dict[int, float]], list[Skip]]:
        """{AU number: {frame: intensity 0..5 or -1}} from the intensity folders, and skips of their bad lines."""
        folder, found, skips = self._intensity_dir(), {}, []
        if folder is None:
            return found, skips
        for au_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                au = parse_au_number(au_folder.name)
            except ValueError:
                continue
            candidates = sorted(au_folder.glob(f"{subject}_{task}_*.csv"))
            if not candidates:
                continue
            path = candidates[0]
            values = found.setdefault(au, {})
            for number, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
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
        if "zip" in item.data:
            where = f"{item.data['zip']}:{item.data['member']}"
            self.depends_on(item.data["zip"])  # a replaced archive rebuilds the shard
            try:
                data = _archive(item.data["zip"]).read(item.data["member"])
            except (OSError, KeyError, zipfile.BadZipFile) as error:
                raise Skip(Reason.MISSING_FILE, f"cannot read {where}: {error}") from None
            image = decode_image(data, where, item.file, item.line)
        else:
            image = self.read_image(Path(item.data["image"]), item)
        crop = self.detect_and_align(image, item, item.key)
        yield self.sample(item, crop, subject=item.data["subject"], facs=item.data["facs"])


class Bp4dPlus(Bp4d):
    """BP4D+: 34 coded AUs per frame (frames read from its zip archives or folders), seeded 70/15/15 by subject."""

    NAME = "bp4d_plus"
    VERSION = "2.1.0"
    RELEASE_NOTES = {"1.0.0": "first release: FERA 2017 AUs by header name, detect + align",
                     "2.0.0": "frames read directly from 2D+3D/<subject>.zip (or extracted folders); every coded "
                              "AU kept (facs/*, BP4D+'s 34; canonical au/au_mask for every coded canonical AU); "
                              "BP4D+'s column order when the header names no AU; sample id "
                              "<subject>/<task>/<file>",
                     "2.1.0": "option detector (--detector), default fast: BlazeFace + FaceMesh, was MTCNN"}
    DESCRIPTION = "BP4D+ AUs (--root: the folder holding AUCoding/ and 2D+3D/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request BP4D+ at http://www.cs.binghamton.edu/~lijun/Research/3DFE/"
                                    "3DFE_Analysis.html; point --root at the folder holding AUCoding/ and 2D+3D/ "
                                    "(the <subject>.zip archives are read as they are; or give --option "
                                    "frames_dir=DIR).")
    EXPECTED_LAYOUT = ("AUCoding/AU_OCC/F001_T1.csv (34 AUs, column 1 the 1-based frame)",
                       "AUCoding/AU_INT/AU06/F001_T1_AU06.csv (optional)",
                       "2D+3D/F001.zip (members [F001/]T1/0001.jpg) or 2D+3D/F001/T1/0001.jpg (or "
                       "--option frames_dir=DIR)")
    POSITION_RULE = False  # read by name (or BP4D+'s column order when the header names no AU)
    OPTIONS = {"frames_dir": "", "validation_fraction": 0.15, "test_fraction": 0.15, "seed": 0,
               "detector": VIDEO_DETECTOR}

    def split_of(self, subject: str) -> str:
        """Seeded, subject-independent: nested holdouts on the subject id (test, then validation)."""
        return self.seeded_split(subject)

    def _au_columns(self, header: list[str]) -> tuple[dict[int, int], str | None]:
        columns, problem = super()._au_columns(header)
        if problem and len(header) == 1 + len(BP4D_PLUS_AUS):
            return {au: column for column, au in enumerate(BP4D_PLUS_AUS, start=1)}, None
        return columns, problem
