"""Your own data: a table with one row per image (CSV or JSONL), its labels in named columns.

`--root` is the table (`labels.csv`, `labels.jsonl`, any name ending .csv / .jsonl) or a folder holding
`labels.csv` or `labels.jsonl`. Header names are matched case-insensitively; every column but `image` is optional,
and a blank cell (JSONL: null, or the key left out) means "not annotated" (mask 0):

- `image`: the image's path relative to the table's folder (the sample id);
- `expression`: a name in any spelling `fbnet_tf.labels` knows (happy, Happiness, joy ...; contempt, other,
  none = no basic expression), or with `--option expression_names=a,b,...` a 0-based code into that list (or one
  of its names; names the labels module does not know are categories of the user's own: no basic expression);
- `valence`, `arousal`: numbers in [-1, 1], both or neither;
- `AU<n>` (`AU12`, `AU 12`, `au_12`; any AU number): 0/1 occurrence; with `--option au_threshold=T` an intensity
  0..5, kept, occurrence = intensity >= T;
- `subject`: who is pictured (the seeded split keeps each subject in one split);
- `split`: `train`, `validation` or `test` (also `training`, `val`, `valid`, `dev`, `devel`, `testing`); when the
  column exists every row gives one;
- `face_x`, `face_y`, `face_w`, `face_h`: the face box in pixels (top-left corner, width, height), all or none;
- `landmarks`: 5 points (10 numbers, in the 5-point template's order: the eye on the image's left, the other
  eye, nose tip, left and right mouth corner) or iBUG 68 points (136 numbers), x y interleaved, separated by `;`,
  `,` or spaces (JSONL: a list of numbers or of [x, y] pairs).

Other columns are an error naming them (a misspelt `valance` must not drop every valence silently); list the ones
to leave out with `--option ignore_columns=age,notes`. A column without a name (the index `DataFrame.to_csv`
writes) is left out.

Face crop, per row: landmarks -> similarity-aligned from them (no detector); a box alone -> `box=detect` (default)
runs MTCNN on the box and its surroundings (half the box's side on each side) and aligns the most confident face
whose centre lies inside the box (`no_face` when there is none), `box=crop` takes the square around the box
(AffectNet's rule, no detector); neither -> MTCNN on the whole image, the most confident face.

Labels: `facs` carries every AU column (any AU number; canonical `au`/`au_mask`/`au_intensity` are filled from it
for the 17), `expr` the canonical expression (-1 for a non-basic one), `expr_native`/`expr_native_name` the
table's own: with `expression_names` the code into that list, else the index into the sorted distinct expression
texts of the table (listed in manifest.json `extra.expression_names`).

Splits: the `split` column when present; else seeded (`validation_fraction`, `test_fraction`, `seed`) by the hash
of the subject (subject-independent; by image when the subject is blank or there is no subject column): stable
when rows are added, but with few subjects a split can come out small or empty (the manifest's counts show it;
give a `split` column to choose).
Bad rows are skipped and recorded with the table's name, the line, the column and what was expected; rows with no
label at all are `no_label`.

Source: records say `source=custom`, or `--option name=clinic_a` (lower-case letters, digits, `_`; not a database
this package builds), so that evaluation scores two datasets of your own apart.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import posixpath
import re
from pathlib import Path

import numpy as np

from fbnet_tf.labels import EXPRESSIONS, expression_index, parse_au_number
from tfrecords_builder.base import Builder, Item, Option, Reason, Skip, resolve_in_root

TABLE_NAMES = ("labels.csv", "labels.jsonl")
BOX = ("face_x", "face_y", "face_w", "face_h")
COLUMNS = ("image", "expression", "valence", "arousal", "subject", "split", *BOX, "landmarks")
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
               "valid": "validation", "dev": "validation", "devel": "validation", "test": "test", "testing": "test"}
LANDMARK_COUNTS = (10, 136)  # 5 points, iBUG 68 points
MAX_INTENSITY = 5.0
_AU_COLUMN = re.compile(r"^\s*au", re.IGNORECASE)
_SEPARATORS = re.compile(r"[;,\s]+")


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _integer_text(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.strip().lstrip("-").isdigit())


class Custom(Builder):
    """Any images with a CSV/JSONL table of labels in the canonical spaces' names."""

    NAME = "custom"
    VERSION = "1.0.0"
    RELEASE_NOTES = {"1.0.0": "first release: CSV/JSONL table, every FACS AU column, native expression kept, "
                              "landmarks/box/detector faces, split column or seeded subject-independent split"}
    DESCRIPTION = "Your own images + a labels.csv / labels.jsonl table (--root: the table or its folder)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Write a table with one row per image: columns image (path relative to the table), and any of expression, "
        "valence, arousal, AU<n>, subject, split, face_x/face_y/face_w/face_h, landmarks (see "
        "tfrecords_builder/custom.py or the README's 'Your own data'); point --root at it.")
    EXPECTED_LAYOUT = ("labels.csv   (header: image,expression,valence,arousal,AU1,AU12,...,subject,split,...)",
                       "(or) labels.jsonl   (one JSON object a line with the same keys)",
                       "<the images, at the paths the table gives relative to its folder>")
    OPTIONS = {"au_threshold": Option(0.0, minimum=0.0, maximum=5.0), "expression_names": "",
               "box": Option("detect", choices=("detect", "crop")), "ignore_columns": "",
               "validation_fraction": 0.15, "test_fraction": 0.15, "seed": 0, "name": "custom"}

    def __init__(self, root, **kwargs):
        # `--root` may name the table itself: the builder's root is then the table's folder (image paths are
        # relative to it, and the engine expects a folder), the table is remembered.
        root = Path(root)
        self.table = root if root.is_file() else None
        super().__init__(root.parent if self.table else root, **kwargs)

    def _table(self) -> Path:
        """The labels table: the one `--root` named, or the labels.csv / labels.jsonl in the `--root` folder."""
        if self.table is not None:
            if self.table.suffix.lower() not in (".csv", ".jsonl"):
                raise self.layout_error(f"{self.table.name} is neither a .csv nor a .jsonl table")
            return self.table
        found = [self.root / name for name in TABLE_NAMES if (self.root / name).is_file()]
        if len(found) > 1:
            raise self.layout_error("both labels.csv and labels.jsonl: give the one to read as --root")
        if not found:
            raise self.layout_error("no labels.csv or labels.jsonl")
        return found[0]

    # --- listing (main process) ----------------------------------------------------------------------------------
    def list_items(self):
        table = self._table()
        self._table_name = table.name
        threshold = float(self.options["au_threshold"])
        if not 0.0 <= threshold <= MAX_INTENSITY:
            raise ValueError(f"{self.NAME}: option au_threshold={threshold}; expected 0 (AU columns hold 0/1) or an "
                             f"intensity threshold in (0, {MAX_INTENSITY:g}]")
        self.option_choice("box", ("detect", "crop"))
        self._check_name()
        names = self._expression_names()
        keys, rows = self._read_table(table)
        columns = self._columns(table.name, keys)
        parsed = []
        for line, values in rows:
            if isinstance(values, Skip):  # a line that is not a row at all
                yield values
                continue
            try:
                parsed.append(self._parse_row(values, columns, names, file=table.name, line=line))
            except Skip as skip:
                yield skip
        # The native expression vocabulary: the option's list, else the table's own distinct texts, sorted.
        self._vocabulary = list(names) if names else sorted({row["expr_native_name"] for row in parsed
                                                             if row["expr_native_name"]})
        for row in parsed:
            if row["expr_native_name"] and not names:
                row["expr_native"] = self._vocabulary.index(row["expr_native_name"])
            key, line = row.pop("image"), row.pop("line")
            split = row.pop("split") or self.seeded_split(row["subject"] or key)
            yield Item(split=split, key=key, data=row, file=table.name, line=line)

    def manifest_extra(self) -> dict:
        """The native expression vocabulary (`expr_native` indexes it) and how it maps onto the canonical one."""
        vocabulary = getattr(self, "_vocabulary", [])
        canonical = {name: _canonical(name) for name in vocabulary}
        return {"table": getattr(self, "_table_name", ""), "expression_names": vocabulary,
                "expression_canonical": {name: EXPRESSIONS[index] if index is not None and index >= 0 else None
                                         for name, index in canonical.items()}}

    def _expression_names(self) -> tuple[str, ...]:
        names = tuple(name.strip() for name in self.options["expression_names"].split(",") if name.strip())
        if len({name.lower() for name in names}) != len(names):
            raise ValueError(f"{self.NAME}: option expression_names lists a name twice: {', '.join(names)}")
        return names

    def _read_table(self, table: Path) -> tuple[set, list[tuple[int, dict | Skip]]]:
        """(the columns named, [(line, {column (lower case): value} or the Skip of an unreadable line)])."""
        rows, file = [], table.name
        with open(table, newline="", encoding="utf-8-sig", errors="replace") as handle:
            if table.suffix.lower() == ".jsonl":
                for line, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    try:
                        values = json.loads(text)
                    except ValueError as error:
                        rows.append((line, Skip(Reason.BAD_ROW, f"not a JSON object ({error})", file, line)))
                        continue
                    if not isinstance(values, dict):
                        rows.append((line, Skip(Reason.BAD_ROW, f"a JSON {type(values).__name__}; expected an "
                                                                'object {"image": ..., ...}', file, line)))
                        continue
                    rows.append((line, {str(key).strip().lower(): value for key, value in values.items()}))
                return {key for _, values in rows if isinstance(values, dict) for key in values}, rows
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            if not any(header):
                raise self.layout_error(f"{file} is empty; expected a header line naming its columns")
            duplicated = sorted({name for name in header if name and header.count(name) > 1})
            if duplicated:
                raise self.layout_error(f"{file} names column(s) {', '.join(duplicated)} more than once")
            for row in reader:
                if not any(field.strip() for field in row):
                    continue
                if len(row) != len(header):
                    rows.append((reader.line_num, Skip(Reason.BAD_ROW, f"{len(row)} fields; expected "
                                                                       f"{len(header)} ({','.join(header)})", file,
                                                       reader.line_num)))
                    continue
                rows.append((reader.line_num, dict(zip(header, row))))
            return set(header), rows

    def _columns(self, file: str, keys: set) -> dict:
        """{"aus": {column: AU number}, "present": the known columns present}; LayoutError for unknown columns."""
        ignored = {name.strip().lower() for name in self.options["ignore_columns"].split(",") if name.strip()}
        aus, unknown = {}, []
        for key in sorted(keys - ignored - set(COLUMNS) - {""}):  # a nameless column (pandas' index) names no label
            try:
                number = parse_au_number(key) if _AU_COLUMN.match(key) else None
            except ValueError:
                number = None
            if number is None:
                unknown.append(key)
            elif number in aus.values():
                raise self.layout_error(f"{file}: AU{number} is named by two columns "
                                        f"({', '.join(k for k, n in aus.items() if n == number)}, {key})")
            else:
                aus[key] = number
        if unknown:
            raise self.layout_error(f"{file}: unknown column(s) {', '.join(unknown)}; expected {', '.join(COLUMNS)} "
                                    "and AU<n> (leave others out with --option ignore_columns=name,...)")
        if "image" not in keys:
            raise self.layout_error(f"{file} has no 'image' column")
        return {"aus": aus, "present": keys & set(COLUMNS)}

    def _parse_row(self, values: dict, columns: dict, names: tuple, file: str, line: int) -> dict:
        """One table row -> the Item's fields and data; Skip naming the column and what it expected otherwise."""
        where = {"file": file, "line": line}

        def bad(column: str, reason: str, expected: str) -> Skip:
            shown = repr(values.get(column))
            shown = shown if len(shown) <= 60 else shown[:56] + "...'"
            return Skip(reason, f"column {column!r}: {shown}; expected {expected}", **where)

        image = values.get("image")
        if not isinstance(image, str) or _blank(image):
            raise bad("image", Reason.BAD_ROW, "the image's path relative to the table's folder")
        resolve_in_root(self.root, image, **where)  # Skip(UNSAFE_PATH) for absolute or escaping paths
        row = {"image": posixpath.normpath(image.strip().replace("\\", "/")), "line": line,
               "subject": "" if _blank(values.get("subject")) else str(values["subject"]).strip(), "split": None}
        if "split" in columns["present"]:
            split = values.get("split")
            row["split"] = SPLIT_NAMES.get(split.strip().lower()) if isinstance(split, str) else None
            if row["split"] is None:
                raise bad("split", Reason.BAD_ROW, "train, validation or test (leave the column out for a seeded "
                                                   "split)")
        row.update(self._expression(values.get("expression"), names, bad))

        row["va"] = None
        if not (_blank(values.get("valence")) and _blank(values.get("arousal"))):
            if _blank(values.get("valence")) or _blank(values.get("arousal")):
                raise Skip(Reason.BAD_ROW, f"valence {values.get('valence')!r}, arousal {values.get('arousal')!r}: "
                                           "expected both or neither", **where)
            row["va"] = [_number(values, column, bad) for column in ("valence", "arousal")]
            for column, value in zip(("valence", "arousal"), row["va"]):
                if not -1.0 <= value <= 1.0:
                    raise bad(column, Reason.LABEL_OUT_OF_RANGE, "a number in [-1, 1]")

        threshold, facs = float(self.options["au_threshold"]), []
        for column, number in sorted(columns["aus"].items(), key=lambda entry: entry[1]):
            if _blank(values.get(column)):
                continue
            value = _number(values, column, bad)
            if threshold > 0:
                if not 0.0 <= value <= MAX_INTENSITY:
                    raise bad(column, Reason.LABEL_OUT_OF_RANGE, f"an intensity 0..{MAX_INTENSITY:g} (au_threshold "
                                                                 "is set)")
                facs.append([number, float(value >= threshold), value])
            elif value in (0.0, 1.0):
                facs.append([number, value, -1.0])
            else:
                raise bad(column, Reason.LABEL_OUT_OF_RANGE, "0 or 1 (for intensities 0..5 give "
                                                             "--option au_threshold=2)")
        row["facs"] = facs or None

        row["landmarks"] = None
        if not _blank(values.get("landmarks")):
            row["landmarks"] = _landmarks(values["landmarks"], bad)
        given = [column for column in BOX if not _blank(values.get(column))]
        row["box"] = None
        if given and len(given) < len(BOX):
            raise Skip(Reason.BAD_ROW, f"face box: {', '.join(given)} given, "
                                       f"{', '.join(c for c in BOX if c not in given)} blank; expected all four of "
                                       f"{', '.join(BOX)} or none", **where)
        if given:
            row["box"] = [_number(values, column, bad) for column in BOX]
            for column, size in zip(BOX[2:], row["box"][2:]):
                if size < 2:
                    raise bad(column, Reason.BAD_LANDMARKS, "a box at least 2 pixels wide and high")

        if row["expr"] < 0 and not row["expr_native_name"] and row["va"] is None and row["facs"] is None:
            raise Skip(Reason.NO_LABEL, "expression, valence/arousal and every AU column are blank", **where)
        return row

    @staticmethod
    def _expression(value, names: tuple, bad) -> dict:
        """expr (canonical or -1), expr_native (-1 until the vocabulary is known, without `names`) and its name."""
        if _blank(value):
            return {"expr": -1, "expr_native": -1, "expr_native_name": ""}
        if names:
            lowered = [name.lower() for name in names]
            if _integer_text(value) and 0 <= int(value) < len(names):
                native = int(value)
            elif isinstance(value, str) and value.strip().lower() in lowered:
                native = lowered.index(value.strip().lower())
            else:
                raise bad("expression", Reason.LABEL_OUT_OF_RANGE, f"a code 0..{len(names) - 1} or a name of "
                                                                   f"expression_names ({', '.join(names)})")
            canonical = _canonical(names[native])  # a category of the user's own: no basic expression
            return {"expr": -1 if canonical is None else canonical, "expr_native": native,
                    "expr_native_name": names[native]}
        if not isinstance(value, str) or _integer_text(value):
            raise bad("expression", Reason.BAD_ROW, "an expression name (happy, Sadness, contempt ...); say what "
                                                    "numeric codes mean with --option expression_names=Neutral,"
                                                    "Happy,...")
        canonical = _canonical(value)
        if canonical is None:
            raise bad("expression", Reason.LABEL_OUT_OF_RANGE, "a basic expression name in any common spelling, or "
                                                               "a non-expression label (contempt, other, none ...); "
                                                               "declare categories of your own with --option "
                                                               "expression_names=...")
        return {"expr": canonical, "expr_native": -1, "expr_native_name": value.strip()}

    # --- examples (worker) ---------------------------------------------------------------------------------------
    def examples(self, item: Item):
        data = item.data
        image = self.read_image(self.root / item.key, item)
        if data["landmarks"] is not None:
            crop = self.align_landmarks(image, data["landmarks"], item)
        elif data["box"] is not None:
            crop = self._box_face(image, data["box"], item)
        else:
            crop = self.detect_and_align(image, item, item.key)
        facs = None if data["facs"] is None else {number: (occurrence, intensity)
                                                  for number, occurrence, intensity in data["facs"]}
        yield self.sample(item, crop, subject=data["subject"], expr=data["expr"], va=data["va"], facs=facs,
                          expr_native=data["expr_native"], expr_native_name=data["expr_native_name"])

    def sample(self, item: Item, crop_rgb: np.ndarray, **labels):
        return dataclasses.replace(super().sample(item, crop_rgb, **labels), source=self.options["name"])

    def _check_name(self):
        from tfrecords_builder.registry import databases

        name = self.options["name"]
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{self.NAME}: option name={name!r}; expected lower-case letters, digits and _, "
                             "starting with a letter")
        if name != self.NAME and name in databases():
            raise ValueError(f"{self.NAME}: option name={name!r} is a database this package builds (its records "
                             "would be scored as that database's); choose another name")

    def _box_face(self, image_rgb: np.ndarray, box, item: Item) -> np.ndarray:
        """`box=crop`: the square around the box. `box=detect`: the most confident face MTCNN finds on the box and
        half its side around it whose centre lies inside the box, aligned; Skip(NO_FACE) when there is none."""
        from fbnet_tf import face

        if self.options["box"] == "crop":
            return face.box_crop(image_rgb, box, self.image_size)
        x, y, w, h = box
        margin = 0.5 * max(w, h)
        height, width = image_rgb.shape[:2]
        left, top = max(0, int(x - margin)), max(0, int(y - margin))
        right, bottom = min(width, int(math.ceil(x + w + margin))), min(height, int(math.ceil(y + h + margin)))
        if right - left >= 2 and bottom - top >= 2:
            for found in face.detect(image_rgb[top:bottom, left:right]):  # best score first
                centre_x, centre_y = left + found.box[0] + found.box[2] / 2, top + found.box[1] + found.box[3] / 2
                if x <= centre_x <= x + w and y <= centre_y <= y + h:
                    return face.align(image_rgb, found.landmarks + np.array([left, top], np.float32),
                                      self.image_size)
        raise Skip(Reason.NO_FACE, f"no face found in the box {[round(v, 1) for v in box]} of {item.key} "
                                   f"({width}x{height}); --option box=crop crops the box without detecting")


def _canonical(name: str) -> int | None:
    """Canonical index of an expression name, -1 for a known non-expression label, None for an unknown name."""
    try:
        index = expression_index(name)
    except KeyError:
        return None
    return -1 if index is None else index


def _number(values: dict, column: str, bad) -> float:
    value = values.get(column)
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise bad(column, Reason.BAD_ROW, "a finite number")
    return number


def _landmarks(value, bad) -> list[float]:
    """10 or 136 finite numbers from a `landmarks` cell (text separated by ; , or spaces, or a JSON list)."""
    expected = "10 (5 points) or 136 (68 points) numbers, x y interleaved"
    if isinstance(value, str):
        parts = [part for part in _SEPARATORS.split(value.strip()) if part]
    elif isinstance(value, list):
        parts = [p for entry in value for p in (entry if isinstance(entry, list) else [entry])]
    else:
        raise bad("landmarks", Reason.BAD_LANDMARKS, expected)
    try:
        numbers = [float(part) for part in parts if not isinstance(part, bool)]
    except (TypeError, ValueError):
        raise bad("landmarks", Reason.BAD_LANDMARKS, expected) from None
    if len(numbers) != len(parts) or len(numbers) not in LANDMARK_COUNTS or not all(map(math.isfinite, numbers)):
        raise bad("landmarks", Reason.BAD_LANDMARKS, f"{expected}, got {len(parts)} values")
    return numbers
