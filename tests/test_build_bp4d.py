"""BP4D and BP4D+ builders over tiny trees in their layout (AUCoding/AU_OCC, AU_INT, frame folders)."""
import hashlib

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage.data import astronaut

from fbnet_tf.labels import AU_NAMES
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build
from tfrecords_builder.writer import BuildError

FERA2015 = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23)
FERA2017 = (1, 4, 6, 7, 10, 12, 14, 15, 17, 23)
NATIVE = tuple(range(1, 28))  # BP4D's header: frame, then AU 1 ... AU 27 (AU k in column k+1), then occlusion


def face():
    return cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def hash_unit(key, seed=0):
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0 ** 64


def occurrence_row(frame, codes, aus=NATIVE, occlusion=0):
    """A row with the given {AU: code}; every other AU column 0."""
    return ",".join([str(frame)] + [str(codes.get(au, 0)) for au in aus] + [str(occlusion)])


def write_image(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image[..., ::-1])


CODES_5 = {1: 1, 2: 0, 4: 1, 6: 1, 7: 0, 10: 1, 12: 1, 14: 0, 15: 0, 17: 1, 23: 0, 5: 1, 9: 1, 25: 1}
CODES_6 = {1: 0, 2: 1, 4: 9, 6: 0, 7: 1, 10: 0, 12: 0, 14: 1, 15: 1, 17: 0, 23: 1}


@pytest.fixture
def bp4d(tmp_path):
    root = tmp_path / "BP4D"
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True)
    header = ",".join([""] + [str(au) for au in NATIVE] + ["Occlusion"])
    (occ / "F001_T1.csv").write_text("\n".join([
        header,
        occurrence_row(5, CODES_5),                  # line 2: face, frame 5 (frames start at 5)
        occurrence_row(6, CODES_6),                  # line 3: face, AU4 = 9 -> mask 0
        occurrence_row(7, {}),                       # line 4: blank frame -> no_face
        occurrence_row(8, {}),                       # line 5: no image -> missing_file
        occurrence_row(9, {12: 3}),                  # line 6: code 3 -> label_out_of_range
        "10,1,0",                                    # line 7: short row -> bad_row
        occurrence_row("x", {}),                     # line 8: frame not a number -> bad_row
    ]) + "\n")
    (occ / "F002_T2.csv").write_text("\n".join([
        header, occurrence_row(10, {12: 1, 6: 1}),   # line 2: face
        occurrence_row(11, {au: 9 for au in NATIVE}),  # line 3: all missing -> no_label
    ]) + "\n")
    (occ / "M001_T1.csv").write_text("\n".join([header, occurrence_row(1, {23: 1, 15: 1})]) + "\n")
    shifted = ",".join(["", "2", "1"] + [str(au) for au in NATIVE[2:]] + ["Occlusion"])
    (occ / "F003_T1.csv").write_text(shifted + "\n" + occurrence_row(1, {}) + "\n")  # breaks the position rule
    (occ / "notes.csv").write_text("a,b\n")                                         # not <subject>_<task>.csv
    intensity = root / "AUCoding" / "AU_INT"
    (intensity / "AU06").mkdir(parents=True)
    (intensity / "AU12").mkdir(parents=True)
    (intensity / "AU06" / "F001_T1_AU06.csv").write_text("5,3\n6,9\n7,2\n")
    (intensity / "AU12" / "F001_T1_AU12.csv").write_text("5,1\n6,7\n")         # line 2: 7 -> out of range
    sequences = root / "Sequences"
    write_image(sequences / "F001" / "T1" / "0005.jpg", face())                   # 4-digit padding
    write_image(sequences / "F001" / "T1" / "0006.jpg", face()[:, ::-1])
    write_image(sequences / "F001" / "T1" / "0007.jpg", np.full((256, 256, 3), 90, np.uint8))
    write_image(sequences / "F002" / "T2" / "10.jpg", face())                     # no padding
    write_image(sequences / "M001" / "T1" / "001.jpg", face())                    # 3-digit padding
    return root


def read_all(out, name):
    examples = {}
    for split in ("train", "validation", "test"):
        for record in tf.data.TFRecordDataset(sorted(str(f) for f in out.glob(f"{name}-{split}.tfrecord-*"))):
            example = decode_example(record.numpy())
            examples[example["sample_id"]] = example
    return examples


def labelled(example):
    return {AU_NAMES[i]: int(example["au"][i]) for i in np.flatnonzero(example["au_mask"])}


def test_bp4d_aus_by_header_intensity_splits_and_skips(bp4d, tmp_path):
    out = tmp_path / "out"
    manifest = build("bp4d", bp4d, out, progress=False, allow_partial=True, image_size=64)
    train_pool = {"F001": "validation" if hash_unit("F001") < 0.15 else "train",
                  "M001": "validation" if hash_unit("M001") < 0.15 else "train"}
    expected = {"Sequences/F001/T1/0005.jpg": train_pool["F001"], "Sequences/F001/T1/0006.jpg": train_pool["F001"],
                "Sequences/M001/T1/001.jpg": train_pool["M001"], "Sequences/F002/T2/10.jpg": "test"}
    counts = {s: list(expected.values()).count(s) for s in ("train", "validation", "test")}
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {s: n for s, n in counts.items() if n}
    examples = read_all(out, "bp4d")
    assert {key: e["split"] for key, e in examples.items()} == expected

    def fera(codes):  # the FERA 2015 AUs of a row, by name; 9 = not annotated
        return {f"AU{au}": codes.get(au, 0) for au in FERA2015 if codes.get(au, 0) != 9}

    assert labelled(examples["Sequences/F001/T1/0005.jpg"]) == fera(CODES_5)
    assert labelled(examples["Sequences/F001/T1/0006.jpg"]) == fera(CODES_6)
    assert "AU4" not in labelled(examples["Sequences/F001/T1/0006.jpg"])
    assert labelled(examples["Sequences/F002/T2/10.jpg"]) == fera({12: 1, 6: 1})
    assert labelled(examples["Sequences/M001/T1/001.jpg"]) == fera({23: 1, 15: 1})
    for example in examples.values():
        assert example["subject"] == example["sample_id"].split("/")[1]
        assert not example["au"][example["au_mask"] == 0].any()

    def intensity(example):
        return {AU_NAMES[i]: float(v) for i, v in enumerate(example["au_intensity"]) if v >= 0}

    assert intensity(examples["Sequences/F001/T1/0005.jpg"]) == {"AU6": 3.0, "AU12": 1.0}
    assert intensity(examples["Sequences/F001/T1/0006.jpg"]) == {}  # 9 = invalid; 7 = out of range
    assert intensity(examples["Sequences/F002/T2/10.jpg"]) == {}
    occ = "AUCoding/AU_OCC/"
    assert {(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]} == {
        (occ + "F001_T1.csv", 4, "no_face"), (occ + "F001_T1.csv", 5, "missing_file"),
        (occ + "F001_T1.csv", 6, "label_out_of_range"), (occ + "F001_T1.csv", 7, "bad_row"),
        (occ + "F001_T1.csv", 8, "bad_row"), (occ + "F002_T2.csv", 3, "no_label"),
        (occ + "F003_T1.csv", 1, "bad_row"), (occ + "notes.csv", None, "bad_row"),
        ("AUCoding/AU_INT/AU12/F001_T1_AU12.csv", 2, "label_out_of_range")}
    with pytest.raises(LayoutError) as error:
        build("bp4d", bp4d / "Sequences", tmp_path / "none", progress=False)
    assert "AUCoding/AU_OCC/F001_T1.csv" in str(error.value) and "frames_dir" in str(error.value)


def test_bp4d_plus_by_name_subject_independent_split_and_frames_dir(tmp_path):
    root, frames = tmp_path / "BP4D+", tmp_path / "frames"
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True)
    native = (23, 1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 24)  # not in AU order: BP4D+ is read by name only
    subjects = ("F001", "F002", "M001", "M002")
    for index, subject in enumerate(subjects):
        codes = {au: (index + k) % 2 for k, au in enumerate(native)}
        header = ",".join(["frame"] + [f"AU{au:02d}" for au in native] + ["occlusion"])
        (occ / f"{subject}_T3.csv").write_text(header + "\n" + occurrence_row(1, codes, native) + "\n")
        write_image(frames / subject / "T3" / "1.jpg", face())
    manifest = build("bp4d_plus", root, tmp_path / "out", progress=False, image_size=48, frames_dir=str(frames))
    splits = {s: "test" if hash_unit(s) < 0.15 else "validation" if hash_unit(s) < 0.30 else "train"
              for s in subjects}
    counts = {s: list(splits.values()).count(s) for s in ("train", "validation", "test")}
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {s: n for s, n in counts.items() if n}
    assert manifest["skipped"] == []
    for key, example in read_all(tmp_path / "out", "bp4d_plus").items():
        subject = key.split("/")[0]
        index = subjects.index(subject)
        assert example["split"] == splits[subject] and example["subject"] == subject
        assert labelled(example) == {f"AU{au}": (index + k) % 2 for k, au in enumerate(native) if au in FERA2017}
        assert example["au_mask"][AU_NAMES.index("AU2")] == 0  # annotated natively, not a FERA 2017 AU
        assert (example["au_intensity"] == -1).all()
    with pytest.raises(BuildError):
        (occ / "F003_T3.csv").write_text("frame,AU01\n1,5\n")
        build("bp4d_plus", root, tmp_path / "strict", progress=False, strict=True, frames_dir=str(frames))
