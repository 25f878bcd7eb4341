"""RAF-DB (Li, Deng & Du 2017), basic and compound expressions, from the aligned crops it ships.

Layout (reference/datasets.md): `basic/EmoLabel/list_patition_label.txt` (sic) with lines `train_00001.jpg 5`,
images `basic/Image/aligned/train_00001_aligned.jpg` (and `Image/original/train_00001.jpg`); the same under
`compound/`. RAF-DB defines train and test; a seeded 15% of train (by image: RAF-DB has no subject ids) becomes
validation (`validation_fraction=0` keeps all of train). Every image keeps RAF-DB's own label: `expr_native` = the
file's code (1..7 basic, 1..11 compound) and `expr_native_name` its name.
"""
from __future__ import annotations

from fbnet_tf.labels import COMPOUND_EXPRESSIONS, RAFDB_COMPOUND, expression_map
from tfrecords_builder.base import Builder, Item, Option, Reason, Skip, parse_int, resolve_in_root

# Native codes 1..7 (code - 1 indexes these), mapped to the canonical space by name.
BASIC_NAMES = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
_BASIC_TO_CANONICAL = expression_map(BASIC_NAMES)
# Native compound codes 1..11, mapped onto Du et al.'s order by name.
COMPOUND_NAMES = RAFDB_COMPOUND
LABEL_FILE = "EmoLabel/list_patition_label.txt"


class RafDb(Builder):
    """RAF-DB basic: 7 expressions; aligned 100x100 crops resized (or `faces=original`: detect + align)."""

    NAME = "rafdb"
    PART = "basic"
    VERSION = "1.1.0"
    RELEASE_NOTES = {"1.0.0": "first release: aligned crops, 85/15 seeded train/validation, test as released",
                     "1.1.0": "expr_native / expr_native_name: RAF-DB's own code (1-based, as in the label file) "
                              "and its name"}
    DESCRIPTION = "RAF-DB basic expressions (--root: the folder holding basic/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request RAF-DB at http://www.whdeng.cn/raf/model1.html, unpack it and point "
                                    "--root at the folder that holds basic/ (and compound/).")
    EXPECTED_LAYOUT = (f"basic/{LABEL_FILE}", "basic/Image/aligned/train_00001_aligned.jpg",
                       "basic/Image/original/train_00001.jpg (only with faces=original)")
    OPTIONS = {"faces": Option("aligned", choices=("aligned", "original")), "validation_fraction": 0.15, "seed": 0}

    def _part_dir(self):
        # The root may be the RAF-DB folder (holding basic/) or the part folder itself.
        for candidate in (self.root / self.PART, self.root):
            if (candidate / LABEL_FILE).is_file():
                return candidate
        raise self.layout_error(f"no {self.PART}/{LABEL_FILE}")

    def _label(self, code: int) -> dict:
        return {"expr": int(_BASIC_TO_CANONICAL[code - 1]), "expr_native": code,
                "expr_native_name": BASIC_NAMES[code - 1]}

    def _num_codes(self) -> int:
        return len(BASIC_NAMES)

    def list_items(self):
        faces = self.option_choice("faces", ("aligned", "original"))
        part = self._part_dir()
        label_file, image_dir = part / LABEL_FILE, part / "Image" / faces
        if not image_dir.is_dir():
            raise self.layout_error(f"no image folder {image_dir}")
        for line, text in enumerate(label_file.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                yield self._parse_row(text, image_dir, file=self.relative(label_file), line=line)
            except Skip as skip:  # an unusable row: counted with its line, and the build goes on
                yield skip

    def _parse_row(self, text: str, image_dir, file: str, line: int) -> Item:
        """One `train_00001.jpg 5` line -> an Item, or Skip naming what was expected."""
        where = {"file": file, "line": line}
        fields = text.split()
        if len(fields) != 2:
            raise Skip(Reason.BAD_ROW, f"{len(fields)} fields in {text!r}; expected '<name>.jpg <code>'", **where)
        name, code = fields
        if not name.startswith(("train_", "test_")):
            raise Skip(Reason.BAD_ROW, f"image name {name!r} starts with neither train_ nor test_", **where)
        code = parse_int(code, "label", **where)
        if not 1 <= code <= self._num_codes():
            raise Skip(Reason.LABEL_OUT_OF_RANGE, f"label {code} outside 1..{self._num_codes()}", **where)
        file_name = name
        if self.options["faces"] == "aligned":  # train_00001.jpg -> train_00001_aligned.jpg
            stem, dot, extension = name.rpartition(".")
            file_name = f"{stem}_aligned.{extension}" if dot else f"{name}_aligned"
        image = resolve_in_root(image_dir, file_name, **where)
        # RAF-DB has no subject ids: the held-out validation images are chosen by name.
        split = "test" if name.startswith("test_") else self.seeded_split(name)
        return Item(split=split, key=self.relative(image), data={"code": code}, **where)

    def examples(self, item: Item):
        image = self.read_image(self.root / item.key, item)
        crop = (self.resize_aligned(image) if self.options["faces"] == "aligned"
                else self.detect_and_align(image, item, item.key))
        yield self.sample(item, crop, **self._label(item.data["code"]))


class RafDbCompound(RafDb):
    """RAF-DB compound: 11 of Du et al.'s compound categories (the `compound` feature; no basic label)."""

    NAME = "rafdb_compound"
    PART = "compound"
    DESCRIPTION = "RAF-DB compound expressions (--root: the folder holding compound/)"
    EXPECTED_LAYOUT = (f"compound/{LABEL_FILE}", "compound/Image/aligned/train_0001_aligned.jpg",
                       "compound/Image/original/train_0001.jpg (only with faces=original)")

    def _label(self, code: int) -> dict:
        return {"compound": COMPOUND_EXPRESSIONS.index(COMPOUND_NAMES[code - 1]), "expr_native": code,
                "expr_native_name": COMPOUND_NAMES[code - 1]}

    def _num_codes(self) -> int:
        return len(COMPOUND_NAMES)
