"""DISFA builder over a tiny tree in DISFA's own layout: label files per subject and AU, MJPG videos per camera.

Frames with a face are `skimage.data.astronaut()` (MTCNN finds one face); a blank frame is the "no face" case.
"""
import hashlib
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from fbnet_tf.labels import AU_NAMES
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build
from tfrecords_builder.writer import BuildError

# DISFA's 12 coded AUs, spelled out independently of the builder.
DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
FACE = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
BLANK = np.full_like(FACE, 200)


def intensity(au, frame):
    return (au + frame) % 6  # 0..5, different for every AU and frame


def write_video(path, frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def write_labels(root, subject, frames, aus=DISFA_AUS, edit=None):
    folder = root / "ActionUnit_Labels" / subject
    folder.mkdir(parents=True)
    for au in aus:
        lines = [f"{frame},{intensity(au, frame)}" for frame in frames]
        if edit:
            lines = edit(au, lines)
        (folder / f"{subject}_au{au}.txt").write_text("\n".join(lines) + "\n")


def ranked_splits(subjects, test=0.34, validation=0.34, seed=0):
    ranked = sorted(subjects, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n_test, n_val = round(test * len(ranked)), round(validation * len(ranked))
    return {s: "test" if k < n_test else "validation" if k < n_test + n_val else "train" for k, s in enumerate(ranked)}


def read_all(out):
    examples = {}
    for split in ("train", "validation", "test"):
        for record in tf.data.TFRecordDataset(sorted(str(f) for f in out.glob(f"disfa-{split}.tfrecord-*"))):
            example = decode_example(record.numpy())
            raw = tf.train.Example.FromString(record.numpy()).features.feature
            example["camera"] = raw["camera"].bytes_list.value[0].decode()
            assert example["split"] == split
            examples[example["sample_id"]] = example
    return examples


@pytest.fixture(scope="module")
def disfa(tmp_path_factory):
    root = tmp_path_factory.mktemp("disfa") / "DISFA"

    def sn001_edit(au, lines):
        if au == 1:
            lines[1] = "2,x"      # frame 2 garbled                         au1 line 2
            lines.append("oops")  # a line without a frame number           au1 line 5
        if au == 2:
            del lines[3]          # frame 4 has no row in SN001_au2.txt
        return lines

    # SN001: frame 1 face, 2 garbled label, 3 blank (no face), 4 missing label row.
    write_labels(root, "SN001", [1, 2, 3, 4], edit=sn001_edit)
    write_video(root / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi", [FACE, FACE, BLANK, FACE])
    write_video(root / "Video_RightCamera" / "RightVideoSN001_Comp.avi", [FACE])  # singular Video_, as shipped
    # SN002: AU26's file is missing (masked out); frame 1 intensity 7 (out of range); labels run past the video.
    write_labels(root, "SN002", [1, 2, 3], aus=DISFA_AUS[:-1],
                 edit=lambda au, lines: ["1,7"] + lines[1:] if au == 9 else lines)
    write_video(root / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi", [FACE, FACE])
    # SN003: labels but no video.
    write_labels(root, "SN003", [1])
    (root / "ActionUnit_Labels" / "readme.txt").write_text("not a subject")
    return root


def test_disfa_labels_masks_splits_and_skips(disfa, tmp_path):
    options = {"test_fraction": 0.34, "validation_fraction": 0.34}
    out = tmp_path / "out"
    manifest = build("disfa", disfa, out, progress=False, allow_partial=True, **options)
    splits = ranked_splits(["SN001", "SN002", "SN003"])
    assert sorted(splits.values()) == ["test", "train", "validation"]
    expected = {"train": 0, "validation": 0, "test": 0}
    expected[splits["SN001"]] += 1
    expected[splits["SN002"]] += 1
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {
        split: n for split, n in expected.items()}  # SN003's split: its video is missing, 0 written

    examples = read_all(out)
    assert sorted(examples) == ["LeftVideoSN001_comp/00001", "LeftVideoSN002_comp/00002"]
    for sample_id, subject, frame, aus in (("LeftVideoSN001_comp/00001", "SN001", 1, DISFA_AUS),
                                           ("LeftVideoSN002_comp/00002", "SN002", 2, DISFA_AUS[:-1])):
        example = examples[sample_id]
        assert example["subject"] == subject and example["split"] == splits[subject]
        assert example["camera"] == "left"
        assert example["image"].shape == (112, 112, 3) and example["expr"] == -1 and example["va_mask"] == 0
        for name, value, mask, level in zip(AU_NAMES, example["au"], example["au_mask"], example["au_intensity"]):
            number = int(name[2:])
            if number in aus:
                assert (mask, level, value) == (1, intensity(number, frame), float(intensity(number, frame) >= 2)), name
            else:
                assert (mask, level, value) == (0, -1, 0), name
        assert example["image"].std() > 20  # a face crop, not a constant border

    skips = {(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]}
    assert skips == {
        ("ActionUnit_Labels/SN001/SN001_au1.txt", 2, "bad_row"),             # '2,x'
        ("ActionUnit_Labels/SN001/SN001_au1.txt", 5, "bad_row"),             # 'oops'
        ("Videos_LeftCamera/LeftVideoSN001_comp.avi", 3, "no_face"),         # blank frame
        ("ActionUnit_Labels/SN001/SN001_au2.txt", None, "no_label"),         # frame 4 has no row
        ("ActionUnit_Labels/SN002/SN002_au9.txt", 1, "label_out_of_range"),  # intensity 7
        ("ActionUnit_Labels/SN002/SN002_au26.txt", None, "missing_file"),    # AU file missing
        ("Videos_LeftCamera/LeftVideoSN002_comp.avi", None, "missing_file"),  # frame 3 past the end
        ("Videos_LeftCamera/LeftVideoSN003_comp.avi", None, "missing_file"),  # no video
        ("ActionUnit_Labels/readme.txt", None, "bad_row"),
    }
    assert manifest["splits"][splits["SN002"]]["labels"]["au_annotated"]["AU26"] == 0

    with pytest.raises(BuildError):
        build("disfa", disfa, tmp_path / "strict", strict=True, progress=False, **options)


def test_disfa_right_camera_threshold_and_layout_error(disfa, tmp_path):
    manifest = build("disfa", disfa, tmp_path / "right", progress=False, allow_partial=True, camera="right", threshold=4,
                     test_fraction=0.0, validation_fraction=0.0)
    assert manifest["splits"]["train"]["count"] == 1
    example = read_all(tmp_path / "right")["RightVideoSN001_Comp/00001"]
    assert example["subject"] == "SN001" and example["camera"] == "right"
    levels = {name: level for name, level in zip(AU_NAMES, example["au_intensity"]) if level >= 0}
    assert levels == {f"AU{au}": intensity(au, 1) for au in DISFA_AUS}
    assert {name for name, v in zip(AU_NAMES, example["au"]) if v} == {
        f"AU{au}" for au in DISFA_AUS if intensity(au, 1) >= 4}
    assert ("Video_RightCamera/RightVideoSN002_Comp.avi", "missing_file") in {
        (r["file"], r["reason"]) for r in manifest["skipped"]}
    # The plural folder name gives the same shard.
    plural = tmp_path / "plural"
    shutil.copytree(disfa, plural)
    (plural / "Video_RightCamera").rename(plural / "Videos_RightCamera")
    build("disfa", plural, tmp_path / "right_plural", progress=False, allow_partial=True, camera="right", threshold=4,
          test_fraction=0.0, validation_fraction=0.0)
    assert [f.read_bytes() for f in sorted((tmp_path / "right").glob("disfa-*"))] == \
        [f.read_bytes() for f in sorted((tmp_path / "right_plural").glob("disfa-*"))]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError) as error:
        build("disfa", empty, tmp_path / "none", progress=False)
    assert "ActionUnit_Labels/SN001/SN001_au1.txt" in str(error.value)
    assert "Videos_LeftCamera/LeftVideoSN001_comp.avi" in str(error.value)


def test_disfa_camera_both_facs_round_trip(disfa, tmp_path):
    manifest = build("disfa", disfa, tmp_path / "both", progress=False, allow_partial=True, camera="both", test_fraction=0.0,
                     validation_fraction=0.0)
    examples = read_all(tmp_path / "both")
    assert manifest["splits"]["train"]["count"] == 3
    assert {key: e["camera"] for key, e in examples.items()} == {
        "LeftVideoSN001_comp/00001": "left", "LeftVideoSN002_comp/00002": "left", "RightVideoSN001_Comp/00001": "right"}
    for key, example in examples.items():
        frame = int(key.split("/")[1])
        aus = DISFA_AUS if "SN001" in key else DISFA_AUS[:-1]  # SN002 has no AU26 file
        # facs/*: DISFA's own 12 (or 11) AUs, occurrence = intensity >= 2, the intensity itself
        assert example["facs/au"].tolist() == list(aus)
        assert example["facs/intensity"].tolist() == [intensity(au, frame) for au in aus]
        assert example["facs/occurrence"].tolist() == [float(intensity(au, frame) >= 2) for au in aus]
