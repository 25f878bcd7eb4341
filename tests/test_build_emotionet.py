"""EmotioNet builder over a tiny tree: the manual AU table (xlsx and csv) plus a folder of downloaded images."""
import hashlib

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from skimage.data import astronaut

from fbnet_tf.labels import AU_NAMES, COMPOUND_EXPRESSIONS
from fbnet_tf.labels import EXPRESSIONS as EXPRESSIONS_7
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build
from tfrecords_builder.writer import BuildError

# The table's AU columns, in a deliberately scrambled order (the builder must read them by name).
AU_COLUMNS = ["'AU 12'", "'AU 1'", "'AU 43'", "'AU 2'", "'AU 26'", "'AU 4'", "'AU 5'", "'AU 25'", "'AU 6'",
              "'AU 9'", "'AU 20'", "'AU 17'"]
FACES = {  # image name -> {AU number: code}; 999 = unknown
    "face_a.jpg": {1: 1, 2: 1, 4: 0, 5: 1, 6: 0, 9: 0, 12: 0, 17: 0, 20: 0, 25: 1, 26: 1, 43: 1},
    "face_b.jpg": {1: 0, 2: 0, 4: 0, 5: 0, 6: 1, 9: 0, 12: 1, 17: 0, 20: 0, 25: 1, 26: 0, 43: 0},
    "face_c.jpg": {1: 999, 2: 999, 4: 1, 5: 0, 6: 0, 9: 1, 12: 0, 17: 1, 20: 999, 25: 0, 26: 0, 43: 999},
}


def row(url, codes):
    return {"URL": url, **{column: codes[int(column.strip("'").split()[1])] for column in AU_COLUMNS}}


def expected_split(key, validation=0.15, test=0.15, seed=0):
    u = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "test" if u < test else "validation" if u < test + validation else "train"


# The track-2 code file the user writes (the test's own assumption about the codes), and the list itself.
CODES = "# code category\n1 Happy\n2 Sad\n3 Fearful\n7 Happily surprised\n8 Happily disgusted\n"
EXPRESSIONS = [("http://example.org/pics/face_a.jpg", 7),   # line 2: with AUs too -> compound
               ("http://example.org/face_b.jpg", 1),        # line 3: with AUs too -> basic
               ("http://example.org/face_d.jpg'", 2),       # line 4: expression only
               ("http://example.org/face_e.jpg", 99),       # line 5: code not in the code file
               ("http://example.org/face_b.jpg", 3)]        # line 6: listed twice


def write_tree(root, images, table_name):
    images.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    face = cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(images / "face_a.jpg"), face[..., ::-1])
    cv2.imwrite(str(images / "face_b.jpg"), face[:, ::-1, ::-1])  # mirrored: another face image
    cv2.imwrite(str(images / "face c.jpg"), face[..., ::-1])       # saved under the percent-decoded name
    cv2.imwrite(str(images / "face_d.jpg"), face[..., ::-1])
    cv2.imwrite(str(images / "blank.jpg"), np.full((256, 256, 3), 128, np.uint8))
    (images / "corrupt.jpg").write_bytes(b"not an image")
    ones = {n: 1 for n in (1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26, 43)}
    rows = [
        row("http://example.org/pics/face_a.jpg'", FACES["face_a.jpg"]),         # line 2, trailing quote
        row("http://example.org/face_b.jpg?size=large", FACES["face_b.jpg"]),    # line 3, query string
        row("https://example.org/x/face%20c.jpg", FACES["face_c.jpg"]),         # line 4, percent-encoded
        row("http://example.org/blank.jpg", ones),                              # line 5, no face
        row("http://example.org/missing.jpg", ones),                            # line 6, not downloaded
        row("http://example.org/bad_code.jpg", {**ones, 6: 2}),                 # line 7, code 2
        row("http://example.org/unknown.jpg", {n: 999 for n in ones}),          # line 8, all unknown
        row("http://example.org/", ones),                                       # line 9, no file name
        row("http://mirror.org/face_a.jpg", ones),                              # line 10, duplicate of line 2
        row("http://example.org/corrupt.jpg", ones),                            # line 11, corrupt image
    ]
    frame = pd.DataFrame(rows, columns=["URL"] + AU_COLUMNS)
    if table_name.endswith(".xlsx"):
        frame.to_excel(root / table_name, index=False)
    else:
        frame.to_csv(root / table_name, index=False)


def test_emotionet_xlsx_aus_by_name_masks_splits_and_skips(tmp_path):
    root = tmp_path / "EmotioNet"
    write_tree(root, root / "images", "emotionet_facs_24600.xlsx")
    out = tmp_path / "out"
    (root / "track2").mkdir()
    pd.DataFrame(EXPRESSIONS, columns=["URL", "Expression"]).to_csv(root / "track2" / "expressions.csv", index=False)
    (root / "track2" / "codes.txt").write_text(CODES)
    manifest = build("emotionet", root, out, progress=False, allow_partial=True, image_size=64, expressions="track2/expressions.csv",
                     expression_codes="track2/codes.txt")
    keys = {"face_a.jpg": "images/face_a.jpg", "face_b.jpg": "images/face_b.jpg", "face_c.jpg": "images/face c.jpg",
            "face_d.jpg": "images/face_d.jpg"}
    splits = {key: expected_split(key) for key in keys.values()}
    counts = {split: list(splits.values()).count(split) for split in ("train", "validation", "test")}
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {s: n for s, n in counts.items() if n}
    examples = {}
    for split in ("train", "validation", "test"):
        for record in tf.data.TFRecordDataset(sorted(str(f) for f in out.glob(f"emotionet-{split}.tfrecord-*"))):
            example = decode_example(record.numpy())
            examples[example["sample_id"]] = example
    assert set(examples) == set(keys.values())
    for name, key in keys.items():
        example = examples[key]
        assert example["split"] == splits[key] and example["source"] == "emotionet"
        coded = {n: code for n, code in FACES.get(name, {}).items() if code != 999}  # 999 = unknown: left out
        assert dict(zip(example["facs/au"].tolist(), example["facs/occurrence"].tolist())) == coded
        assert (example["facs/intensity"] == -1).all()
        annotated = {f"AU{n}": code for n, code in coded.items() if n != 43}  # AU43 is outside the canonical 17
        assert {AU_NAMES[i]: int(example["au"][i]) for i in np.flatnonzero(example["au_mask"])} == annotated
        assert not example["au"][example["au_mask"] == 0].any()
        assert example["va_mask"] == 0
        assert example["image"].shape == (64, 64, 3)
    # Track 2, by name: codes 7 -> Happily Surprised (compound), 1 -> Happiness, 2 -> Sadness.
    named = {name: (EXPRESSIONS_7[examples[key]["expr"]] if examples[key]["expr"] >= 0 else None,
                    COMPOUND_EXPRESSIONS[examples[key]["compound"]] if examples[key]["compound"] >= 0 else None)
             for name, key in keys.items()}
    assert named == {"face_a.jpg": (None, "Happily Surprised"), "face_b.jpg": ("Happiness", None),
                     "face_c.jpg": (None, None), "face_d.jpg": ("Sadness", None)}
    native = {name: (examples[key]["expr_native"], examples[key]["expr_native_name"]) for name, key in keys.items()}
    assert native == {"face_a.jpg": (7, "Happily surprised"), "face_b.jpg": (1, "Happy"), "face_c.jpg": (-1, ""),
                      "face_d.jpg": (2, "Sad")}
    table, track2 = "emotionet_facs_24600.xlsx", "track2/expressions.csv"
    assert {(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]} == {
        (track2, 5, "label_out_of_range"), (track2, 6, "duplicate"),
        (table, 5, "no_face"), (table, 6, "missing_file"), (table, 7, "label_out_of_range"), (table, 8, "no_label"),
        (table, 9, "bad_row"), (table, 10, "duplicate"), (table, 11, "unreadable_image")}


def test_emotionet_csv_with_images_elsewhere_strict_and_layout_error(tmp_path):
    root, images = tmp_path / "table_only", tmp_path / "downloads"
    write_tree(root, images, "manual.csv")
    manifest = build("emotionet", root, tmp_path / "out", progress=False, allow_partial=True, image_size=48, images=str(images),
                     validation_fraction=0.0, test_fraction=0.0)
    assert manifest["splits"]["train"]["count"] == 3
    assert manifest["skipped_by_reason"] == {"bad_row": 1, "duplicate": 1, "label_out_of_range": 1,
                                             "missing_file": 1, "no_face": 1, "no_label": 1, "unreadable_image": 1}
    with pytest.raises(BuildError, match="manual.csv:7: label_out_of_range"):
        build("emotionet", root, tmp_path / "strict", progress=False, strict=True, images=str(images))
    with pytest.raises(LayoutError) as error:
        build("emotionet", images, tmp_path / "none", progress=False)
    assert "emotionet_facs_24600.xlsx" in str(error.value) and "images/" in str(error.value)
