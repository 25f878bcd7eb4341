"""BP4D and BP4D+ builders over tiny trees in their layouts: the FERA 2015 release (AUCoding/*.csv, AU Intensity
Codes3.0/, BP4D/BP4D-training/), the AU_OCC/AU_INT variant, BP4D+ frames inside 2D+3D/<subject>.zip or extracted."""
import hashlib
import zipfile

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage.data import astronaut

from fbnet_tf.labels import AU_NAMES
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build
from tfrecords_builder.bp4d import BP4D_PLUS_AUS
from tfrecords_builder.writer import BuildError

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


# Where each layout keeps occurrence, intensity and frames.
VARIANT = ("AUCoding/AU_OCC", "AUCoding/AU_INT", "Sequences")
FERA2015_RELEASE = ("AUCoding", "AU Intensity Codes3.0", "BP4D/BP4D-training")


def bp4d_tree(root, layout=VARIANT):
    occ_dir, int_dir, frames_dir = layout
    occ = root / occ_dir
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
    intensity = root / int_dir
    (intensity / "AU06").mkdir(parents=True)
    (intensity / "AU12").mkdir(parents=True)
    (intensity / "AU06" / "F001_T1_AU06.csv").write_text("5,3\n6,9\n7,2\n")
    (intensity / "AU12" / "F001_T1_AU12.csv").write_text("5,1\n6,7\n")         # line 2: 7 -> out of range
    sequences = root / frames_dir
    write_image(sequences / "F001" / "T1" / "0005.jpg", face())                   # 4-digit padding
    write_image(sequences / "F001" / "T1" / "0006.jpg", face()[:, ::-1])
    write_image(sequences / "F001" / "T1" / "0007.jpg", np.full((256, 256, 3), 90, np.uint8))
    write_image(sequences / "F002" / "T2" / "10.jpg", face())                     # no padding
    write_image(sequences / "M001" / "T1" / "001.jpg", face())                    # 3-digit padding
    return root


@pytest.fixture
def bp4d(tmp_path):
    return bp4d_tree(tmp_path / "BP4D")


def read_all(out, name):
    examples = {}
    for split in ("train", "validation", "test"):
        for record in tf.data.TFRecordDataset(sorted(str(f) for f in out.glob(f"{name}-{split}.tfrecord-*"))):
            example = decode_example(record.numpy())
            examples[example["sample_id"]] = example
    return examples


def shard_bytes(out, name):
    return {f.name: f.read_bytes() for f in sorted(out.glob(f"{name}-*.tfrecord-*"))}


def labelled(example):
    return {AU_NAMES[i]: int(example["au"][i]) for i in np.flatnonzero(example["au_mask"])}


def facs(example):
    return {int(a): (float(o), float(i)) for a, o, i in
            zip(example["facs/au"], example["facs/occurrence"], example["facs/intensity"])}


def coded(codes, aus=NATIVE, intensity=None):
    """A row's {AU: (occurrence, intensity)} by the format's rule: every header AU, code 9 left out."""
    intensity = intensity or {}
    return {au: (float(codes.get(au, 0)), intensity.get(au, -1.0)) for au in aus if codes.get(au, 0) != 9}


def test_bp4d_every_header_au_intensity_splits_and_skips(bp4d, tmp_path):
    out = tmp_path / "out"
    manifest = build("bp4d", bp4d, out, progress=False, allow_partial=True, image_size=48)
    train_pool = {"F001": "validation" if hash_unit("F001") < 0.15 else "train",
                  "M001": "validation" if hash_unit("M001") < 0.15 else "train"}
    expected = {"F001/T1/0005.jpg": train_pool["F001"], "F001/T1/0006.jpg": train_pool["F001"],
                "M001/T1/001.jpg": train_pool["M001"], "F002/T2/10.jpg": "test"}
    counts = {s: list(expected.values()).count(s) for s in ("train", "validation", "test")}
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {s: n for s, n in counts.items() if n}
    examples = read_all(out, "bp4d")
    assert {key: e["split"] for key, e in examples.items()} == expected
    # facs/*: all 27 header AUs (9 = not coded left out), intensities from AU_INT (9 -> -1; 7 out of range -> -1)
    assert facs(examples["F001/T1/0005.jpg"]) == coded(CODES_5, intensity={6: 3.0, 12: 1.0})
    assert facs(examples["F001/T1/0006.jpg"]) == coded(CODES_6)
    assert 4 not in facs(examples["F001/T1/0006.jpg"])
    assert facs(examples["F002/T2/10.jpg"]) == coded({12: 1, 6: 1})
    assert facs(examples["M001/T1/001.jpg"]) == coded({23: 1, 15: 1})
    for example in examples.values():
        # the canonical au/au_mask: every coded canonical AU, AU24 (outside FERA 2015's 11) included
        assert labelled(example) == {f"AU{a}": int(o) for a, (o, _) in facs(example).items() if f"AU{a}" in AU_NAMES}
        assert example["au_mask"][AU_NAMES.index("AU24")] == 1
        assert example["subject"] == example["sample_id"].split("/")[0]
        assert not example["au"][example["au_mask"] == 0].any()
    assert {AU_NAMES[i]: float(v) for i, v in enumerate(examples["F001/T1/0005.jpg"]["au_intensity"]) if v >= 0} \
        == {"AU6": 3.0, "AU12": 1.0}
    occ = "AUCoding/AU_OCC/"
    assert {(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]} == {
        (occ + "F001_T1.csv", 4, "no_face"), (occ + "F001_T1.csv", 5, "missing_file"),
        (occ + "F001_T1.csv", 6, "label_out_of_range"), (occ + "F001_T1.csv", 7, "bad_row"),
        (occ + "F001_T1.csv", 8, "bad_row"), (occ + "F002_T2.csv", 3, "no_label"),
        (occ + "F003_T1.csv", 1, "bad_row"), (occ + "notes.csv", None, "bad_row"),
        ("AUCoding/AU_INT/AU12/F001_T1_AU12.csv", 2, "label_out_of_range")}
    assert manifest["splits"]["test"]["labels"]["au_annotated"]["AU24"] == 1
    with pytest.raises(LayoutError) as error:
        build("bp4d", bp4d / "Sequences", tmp_path / "none", progress=False)
    assert "AUCoding/AU_OCC/F001_T1.csv" in str(error.value) and "frames_dir" in str(error.value)


def test_bp4d_fera2015_release_and_variant_give_identical_records(tmp_path):
    fera = bp4d_tree(tmp_path / "fera", FERA2015_RELEASE)
    variant = bp4d_tree(tmp_path / "variant", VARIANT)
    first = build("bp4d", fera, tmp_path / "out_fera", progress=False, allow_partial=True, image_size=32)
    build("bp4d", variant, tmp_path / "out_variant", progress=False, allow_partial=True, image_size=32)
    assert sum(e["count"] for e in first["splits"].values()) == 4
    assert shard_bytes(tmp_path / "out_fera", "bp4d") == shard_bytes(tmp_path / "out_variant", "bp4d")
    intensity = read_all(tmp_path / "out_fera", "bp4d")["F001/T1/0005.jpg"]["au_intensity"]
    assert intensity[AU_NAMES.index("AU6")] == 3.0  # read from "AU Intensity Codes3.0/AU06/"


def test_bp4d_plus_from_zips_and_folders_byte_identical(tmp_path):
    subjects = ("F001", "F002", "M001", "M002")

    def tree(root, zipped):
        occ = root / "AUCoding" / "AU_OCC"
        occ.mkdir(parents=True)
        header = ",".join(["0"] + [str(au) for au in BP4D_PLUS_AUS])
        for index, subject in enumerate(subjects):
            rows = [occurrence_row(frame, {au: (index + k + frame) % 2 for k, au in enumerate(BP4D_PLUS_AUS)},
                                   BP4D_PLUS_AUS)[:-2] for frame in (1, 2)]  # 34 AUs, no occlusion column
            (occ / f"{subject}_T1.csv").write_text("\n".join([header] + rows) + "\n")
            images = {f"{subject}/T1/{frame:04d}.jpg": face() if frame == 1 else face()[:, ::-1] for frame in (1, 2)}
            if zipped:
                (root / "2D+3D").mkdir(exist_ok=True)
                with zipfile.ZipFile(root / "2D+3D" / f"{subject}.zip", "w") as archive:
                    for name, image in images.items():
                        archive.writestr(name, cv2.imencode(".jpg", image[..., ::-1])[1].tobytes())
            else:
                for name, image in images.items():
                    write_image(root / "2D+3D" / name, image)
        return root

    zipped = build("bp4d_plus", tree(tmp_path / "zipped", True), tmp_path / "from_zips", progress=False,
                   image_size=32)
    build("bp4d_plus", tree(tmp_path / "folders", False), tmp_path / "from_folders", progress=False, image_size=32)
    assert shard_bytes(tmp_path / "from_zips", "bp4d_plus") == shard_bytes(tmp_path / "from_folders", "bp4d_plus")
    assert zipped["skipped"] == [] and sum(e["count"] for e in zipped["splits"].values()) == 8
    splits = {s: "test" if hash_unit(s) < 0.15 else "validation" if hash_unit(s) < 0.30 else "train"
              for s in subjects}
    for key, example in read_all(tmp_path / "from_zips", "bp4d_plus").items():
        subject, _, name = key.split("/")
        index, frame = subjects.index(subject), int(name[:-4])
        assert example["split"] == splits[subject] and example["subject"] == subject
        expected = {au: (float((index + k + frame) % 2), -1.0) for k, au in enumerate(BP4D_PLUS_AUS)}
        assert facs(example) == expected and len(expected) == 34
        assert labelled(example) == {f"AU{a}": int(o) for a, (o, _) in expected.items() if f"AU{a}" in AU_NAMES}
        assert example["au_mask"].sum() == 15  # every canonical AU but 25, 26 (2, 5, 9, 20, 24 included)


def test_bp4d_plus_by_name_frames_dir_and_strict(tmp_path):
    root, frames = tmp_path / "BP4D+", tmp_path / "frames"
    occ = root / "AUCoding" / "AU_OCC"
    occ.mkdir(parents=True)
    native = (23, 1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 24, 45)  # not in AU order: read by name
    header = ",".join(["frame"] + [f"AU{au:02d}" for au in native] + ["occlusion"])
    (occ / "F001_T3.csv").write_text(header + "\n" + occurrence_row(1, {23: 1, 45: 1, 2: 9}, native) + "\n")
    write_image(frames / "F001" / "T3" / "1.jpg", face())
    manifest = build("bp4d_plus", root, tmp_path / "out", progress=False, image_size=32, frames_dir=str(frames))
    assert manifest["skipped"] == []
    (example,) = read_all(tmp_path / "out", "bp4d_plus").values()
    assert facs(example) == coded({23: 1, 45: 1, 2: 9}, native)
    with pytest.raises(BuildError):
        (occ / "F003_T3.csv").write_text("frame,AU01\n1,5\n")
        build("bp4d_plus", root, tmp_path / "strict", progress=False, strict=True, frames_dir=str(frames))
