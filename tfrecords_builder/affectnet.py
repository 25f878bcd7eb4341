"""AffectNet (Mollahosseini et al. 2017): 7 basic expressions + valence/arousal, faces aligned from its landmarks.

Both releases (reference/datasets.md):
- original: `Manually_Annotated_file_lists/{training,validation}.csv` (header optional) with rows
  `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal` and
  images under `Manually_Annotated_Images/` (or `Manually_Annotated_compressed/Manually_Annotated_Images/`, or
  `Manually_Annotated/Manually_Annotated_Images/`);
- newer: `{train_set,val_set}/images/<id>.jpg` with `annotations/<id>_{exp,val,aro,lnd}.npy`.

Splits (the paper): no test set is released, so the released validation set is the test set and the training
set is divided 85/15 into train/validation, seeded, by image (AffectNet has no subject ids).
Every written row keeps its native code and name (`expr_native` 0..9, `expr_native_name`). Codes 7 Contempt and
8 None carry no basic expression (`expr` -1) but are labels in their own right (Contempt is AffectNet's 8th
class; None = "none of the eleven"): they are written with or without valence/arousal. 9 Uncertain is no label:
kept only for valid valence/arousal, skipped (`no_label`) otherwise; 10 No-Face is always skipped (`no_face`).
`keep_non_basic=false` skips every non-basic row. A valence or arousal outside [-1, 1] (-2 = uncertain) means
"no VA label".
"""
from __future__ import annotations

import csv
import math

import numpy as np

from fbnet_tf import face
from fbnet_tf.labels import expression_map
from tfrecords_builder.base import Builder, Item, Option, Reason, Skip, resolve_in_root

# Native expression codes, mapped to the canonical space by name (Contempt ... No-Face map to "no label").
ORIGINAL_CODES = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger", "Contempt", "None",
                  "Uncertain", "No-Face")
NEWER_CODES = ORIGINAL_CODES[:8]
CANONICAL = expression_map(ORIGINAL_CODES)  # native code -> canonical index or -1 (NEWER_CODES is a prefix)
NO_FACE_CODE = 10
# Non-basic codes that are labels themselves (written without valence/arousal too): Contempt, None.
NATIVE_LABELS = frozenset(ORIGINAL_CODES.index(name) for name in ("Contempt", "None"))
HEADER = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
          "expression", "valence", "arousal")
LISTS = "Manually_Annotated_file_lists"
IMAGE_DIRS = ("Manually_Annotated_Images", "Manually_Annotated_compressed/Manually_Annotated_Images",
              "Manually_Annotated/Manually_Annotated_Images")
# (file, split rule): the released validation set is the test set.
ORIGINAL_FILES = (("training.csv", "train"), ("validation.csv", "test"))
NEWER_SETS = (("train_set", "train"), ("val_set", "test"))


def valid_va(valence: float, arousal: float) -> tuple[float, float] | None:
    """(valence, arousal) when both are annotated (finite, in [-1, 1]), else None."""
    if all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in (valence, arousal)):
        return (float(valence), float(arousal))
    return None


class AffectNet(Builder):
    """AffectNet, either release; faces similarity-aligned from the 68 landmarks it ships."""

    NAME = "affectnet"
    VERSION = "1.1.0"
    RELEASE_NOTES = {"1.0.0": "both releases; landmark alignment; validation released = test; 85/15 train split",
                     "1.1.0": "expr_native / expr_native_name (AffectNet's own code and name); Contempt and None "
                              "rows written without valence/arousal too"}
    DESCRIPTION = ("AffectNet expressions + valence/arousal (--root: the folder holding Manually_Annotated_file_lists/"
                   " or train_set/)")
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request AffectNet at http://mohammadmahoor.com/affectnet/ and point --root at "
                                    "the folder holding Manually_Annotated_file_lists/ and Manually_Annotated_Images/"
                                    " (original release) or train_set/ and val_set/ (newer release).")
    EXPECTED_LAYOUT = (f"{LISTS}/training.csv", f"{LISTS}/validation.csv", f"{IMAGE_DIRS[0]}/<int>/<hex>.jpg",
                       f"(or) {IMAGE_DIRS[1]}/<int>/<hex>.jpg", f"(or) {IMAGE_DIRS[2]}/<int>/<hex>.jpg",
                       "(or, newer release) train_set/images/<id>.jpg + train_set/annotations/<id>_exp.npy, "
                       "_val.npy, _aro.npy, _lnd.npy; val_set/...")
    ITEMS_PER_SHARD = 5000
    OPTIONS = {"validation_fraction": 0.15, "seed": 0, "keep_non_basic": True,
               "release": Option("auto", choices=("auto", "original", "newer"))}

    def _split(self, released: str, key: str) -> str:
        return "test" if released == "test" else self.seeded_split(key)

    def _release(self) -> str:
        release = self.option_choice("release", ("auto", "original", "newer"))
        has_original = any((self.root / LISTS / name).is_file() for name, _ in ORIGINAL_FILES)
        has_newer = any((self.root / folder / "annotations").is_dir() for folder, _ in NEWER_SETS)
        if release == "auto":
            release = "original" if has_original else "newer" if has_newer else ""
        if (release == "original" and not has_original) or (release == "newer" and not has_newer) or not release:
            raise self.layout_error("no annotation lists found")
        return release

    def list_items(self):
        if self._release() == "original":
            yield from self._list_original()
        else:
            yield from self._list_newer()

    # --- original release: CSV lists ---------------------------------------------------------------------------
    def _list_original(self):
        image_dir = next((self.root / d for d in IMAGE_DIRS if (self.root / d).is_dir()), None)
        if image_dir is None:
            raise self.layout_error("no image folder " + " or ".join(IMAGE_DIRS))
        for name, released in ORIGINAL_FILES:
            path = self.root / LISTS / name
            if not path.is_file():
                continue
            file = self.relative(path)
            with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
                reader = csv.reader(handle)
                for row in reader:
                    line = reader.line_num
                    if not row or (line == 1 and row[0].strip() == HEADER[0]):
                        continue  # blank line, or the header some copies carry
                    try:
                        item = self._original_row(row, image_dir, released, file, line)
                    except Skip as skip:
                        yield skip
                        continue
                    yield item

    def _original_row(self, row, image_dir, released, file, line) -> Item:
        where = {"file": file, "line": line}
        if len(row) != len(HEADER):
            raise Skip(Reason.BAD_ROW, f"{len(row)} columns; expected {len(HEADER)}: {','.join(HEADER)}", **where)
        try:
            code = int(float(row[6]))
            va = valid_va(float(row[7]), float(row[8]))
        except ValueError:
            raise Skip(Reason.BAD_ROW, f"expression/valence/arousal {row[6:9]} are not numbers", **where) from None
        self._check_code(code, va, len(ORIGINAL_CODES), where)
        image = resolve_in_root(image_dir, row[0], **where)
        points, box = None, None
        try:
            landmarks = np.array([float(v) for v in row[5].split(";") if v.strip()], np.float64)
            if landmarks.size == 136 and np.all(np.isfinite(landmarks)):
                points = np.round(face.landmarks68_to_5(landmarks.reshape(68, 2)), 3).tolist()
        except ValueError:
            pass
        if points is None:  # no usable landmarks: fall back to the box
            try:
                box = [float(v) for v in row[1:5]]
            except ValueError:
                box = None
            if box is None or not all(math.isfinite(v) for v in box) or box[2] <= 1 or box[3] <= 1:
                raise Skip(Reason.BAD_LANDMARKS, "neither 68 landmarks (136 numbers joined by ';') nor a "
                                                 f"face box: landmarks {row[5][:40]!r}, box {row[1:5]}", **where)
        # Held out by the listed path, so every copy of the release (compressed or not) splits the same way.
        return Item(split=self._split(released, row[0].strip()), key=self.relative(image), file=file, line=line,
                    data={"expr": int(CANONICAL[code]), "expr_native": code, "va": va, "points": points, "box": box})

    def _check_code(self, code: int, va, n_codes: int, where: dict) -> None:
        if not 0 <= code < n_codes:
            raise Skip(Reason.LABEL_OUT_OF_RANGE, f"expression code {code} outside 0..{n_codes - 1}", **where)
        if code == NO_FACE_CODE:
            raise Skip(Reason.NO_FACE, "expression code 10 (No-Face)", **where)
        if CANONICAL[code] < 0 and not self.options["keep_non_basic"]:
            raise Skip(Reason.NO_LABEL, f"expression code {code} ({ORIGINAL_CODES[code]}) is not a basic "
                                        "expression (keep_non_basic=false)", **where)
        if CANONICAL[code] < 0 and code not in NATIVE_LABELS and va is None:
            raise Skip(Reason.NO_LABEL, f"expression code {code} ({ORIGINAL_CODES[code]}) is no label and "
                                        "valence/arousal are not annotated", **where)

    # --- newer release: one .npy per label ---------------------------------------------------------------------
    def _list_newer(self):
        for folder, released in NEWER_SETS:
            images, annotations = self.root / folder / "images", self.root / folder / "annotations"
            if not annotations.is_dir():
                continue
            labelled = {p.name[:-len("_exp.npy")] for p in annotations.glob("*_exp.npy")}
            pictured = {p.stem: p for p in images.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")} \
                if images.is_dir() else {}
            for image_id in sorted(labelled - set(pictured)):
                yield Skip(Reason.MISSING_FILE, f"annotations for {image_id} but no image in {folder}/images",
                           self.relative(annotations / f"{image_id}_exp.npy"))
            for image_id in sorted(set(pictured) - labelled):
                yield Skip(Reason.NO_LABEL, f"image without {image_id}_exp.npy", self.relative(pictured[image_id]),
                           count=0)  # an image that carries no label is not an input
            for image_id in sorted(labelled & set(pictured)):
                yield Item(split=self._split(released, image_id), key=self.relative(pictured[image_id]),
                           file=self.relative(annotations / f"{image_id}_exp.npy"),
                           data={"annotations": self.relative(annotations), "id": image_id})

    def _newer_labels(self, item: Item) -> dict:
        folder = self.root / item.data["annotations"]
        values = {}
        for suffix in ("exp", "val", "aro", "lnd"):
            path = folder / f"{item.data['id']}_{suffix}.npy"
            try:
                values[suffix] = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                raise Skip(Reason.MISSING_FILE, f"{path.name} does not exist", self.relative(path)) from None
            except (OSError, ValueError) as error:
                raise Skip(Reason.BAD_ROW, f"{path.name} is not a readable .npy ({error})",
                           self.relative(path)) from None
        where = {"file": item.file, "line": None}
        try:
            code = int(float(str(values["exp"].item())))  # stored as a number or as a string
            va = valid_va(float(values["val"]), float(values["aro"]))
        except (ValueError, TypeError):
            raise Skip(Reason.BAD_ROW, f"labels {values['exp']!r}, {values['val']!r}, {values['aro']!r} are not "
                                       "numbers", **where) from None
        self._check_code(code, va, len(NEWER_CODES), where)
        landmarks = np.asarray(values["lnd"], np.float64).ravel()
        if landmarks.size != 136:
            raise Skip(Reason.BAD_LANDMARKS, f"{item.data['id']}_lnd.npy holds {landmarks.size} numbers; "
                                             "expected 136", **where)
        return {"expr": int(CANONICAL[code]), "expr_native": code, "va": va,
                "points": np.round(face.landmarks68_to_5(landmarks.reshape(68, 2)), 3).tolist(), "box": None}

    # --- both ----------------------------------------------------------------------------------------------------
    def examples(self, item: Item):
        labels = item.data if "expr" in item.data else self._newer_labels(item)
        image = self.read_image(self.root / item.key, item)
        if labels["points"] is not None:
            crop = self.align_landmarks(image, labels["points"], item)
        else:
            crop = self.crop_box(image, labels["box"])
        yield self.sample(item, crop, expr=labels["expr"], va=labels["va"], expr_native=labels["expr_native"],
                          expr_native_name=ORIGINAL_CODES[labels["expr_native"]])

    def crop_box(self, image_rgb: np.ndarray, box) -> np.ndarray:
        """The square around a face box (x, y, w, h), resized: for rows without landmarks."""
        return face.box_crop(image_rgb, box, self.image_size)
