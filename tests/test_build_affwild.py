"""Aff-Wild (v1) builder over a tiny tree in its own layout: videos/{train,test}/ and
annotations/train/{valence,arousal}/<video>.txt (one float per line, line i = frame i).

Frames with a face are `skimage.data.astronaut()` (MTCNN finds one face); a blank frame is the "no face" case.
"""
import hashlib

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build

FACE = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
BLANK = np.full_like(FACE, 40)


def is_validation(video, fraction, seed=0):
    digest = hashlib.sha256(f"{seed}:{video}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def write_video(path, frames, fourcc="MJPG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (256, 256))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def write_labels(root, set_name, video, valence=None, arousal=None):
    for dimension, values in (("valence", valence), ("arousal", arousal)):
        if values is not None:
            path = root / "annotations" / set_name / dimension / f"{video}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(str(v) for v in values) + "\n")


@pytest.fixture(scope="module")
def affwild(tmp_path_factory):
    root = tmp_path_factory.mktemp("affwild") / "Aff-Wild"
    write_video(root / "videos" / "train" / "101.avi", [FACE, FACE, BLANK])
    write_labels(root, "train", "101", [0.5, -0.2, 0.1], [0.3, 0.4, 0.0])
    write_video(root / "videos" / "train" / "102.mp4", [FACE], fourcc="mp4v")  # labels run past the video
    write_labels(root, "train", "102", [0.1, 0.2], [0.7, 0.8])
    write_video(root / "videos" / "train" / "103.avi", [FACE, FACE, FACE])
    write_labels(root, "train", "103", ["abc", 1.5], [0.0, 0.0])               # bad line, out of range, short
    write_video(root / "videos" / "train" / "104.avi", [FACE])                 # no annotations
    write_labels(root, "train", "105", [0.1], [0.1])                           # annotations, no video
    write_video(root / "videos" / "train" / "106.avi", [FACE])
    write_labels(root, "train", "106", valence=[0.1])                          # arousal file missing
    (root / "videos" / "train" / "notes.txt").write_text("not a video")
    write_video(root / "videos" / "test" / "201.avi", [FACE])                  # public test video: no labels
    write_video(root / "videos" / "test" / "202.avi", [FACE])                  # a test video with labels
    write_labels(root, "test", "202", [-0.9], [0.9])
    return root


def read_all(out):
    examples = {}
    for split in ("train", "validation", "test"):
        for record in tf.data.TFRecordDataset(sorted(str(f) for f in out.glob(f"affwild-{split}.tfrecord-*"))):
            example = decode_example(record.numpy())
            assert example["split"] == split
            examples[example["sample_id"]] = example
    return examples


def test_affwild_frames_labels_splits_and_skips(affwild, tmp_path):
    manifest = build("affwild", affwild, tmp_path / "out", progress=False, allow_partial=True, validation_fraction=0.5)
    split_of = {video: "validation" if is_validation(video, 0.5) else "train" for video in ("101", "102", "103")}
    split_of["202"] = "test"
    expected_va = {"101/00000": (0.5, 0.3), "101/00001": (-0.2, 0.4), "102/00000": (0.1, 0.7),
                   "202/00000": (-0.9, 0.9)}
    counts = {}
    for sample_id in expected_va:
        counts[split_of[sample_id[:3]]] = counts.get(split_of[sample_id[:3]], 0) + 1
    assert {split: entry["count"] for split, entry in manifest["splits"].items() if entry["count"]} == counts

    examples = read_all(tmp_path / "out")
    assert sorted(examples) == sorted(expected_va)
    for sample_id, va in expected_va.items():
        example = examples[sample_id]
        np.testing.assert_allclose(example["va"], va, atol=1e-6)
        assert example["va_mask"] == 1 and example["expr"] == -1 and not example["au_mask"].any()
        assert example["subject"] == sample_id[:3] and example["split"] == split_of[sample_id[:3]]
        assert example["image"].shape == (112, 112, 3) and example["image"].std() > 20

    skips = {(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]}
    assert skips == {
        ("videos/train/101.avi", 3, "no_face"),
        ("videos/train/102.mp4", None, "missing_file"),             # label line 2 has no frame
        ("annotations/train/valence/103.txt", 1, "bad_row"),        # 'abc'
        ("annotations/train/valence/103.txt", 2, "label_out_of_range"),  # 1.5
        ("videos/train/103.avi", None, "no_label"),                 # frame 2 past the label files
        ("videos/train/104.avi", None, "no_label"),
        ("annotations/train/valence/105.txt", None, "missing_file"),
        ("videos/train/106.avi", None, "missing_file"),
        ("videos/train/notes.txt", None, "bad_row"),
        ("videos/test/201.avi", None, "no_label"),
    }
    messages = {r["file"]: r["message"] for r in manifest["skipped"] if r["line"] is None}
    assert "no test labels" in messages["videos/test/201.avi"]
    assert "annotations/train/arousal/106.txt" in messages["videos/train/106.avi"]


def test_affwild_default_split_is_85_15_by_video_and_layout_error(affwild, tmp_path):
    from tfrecords_builder.affwild import AffWild

    items = [entry for entry in AffWild(affwild).list_items() if not hasattr(entry, "reason")]
    assert {item.key: item.split for item in items} == {
        **{v: "validation" if is_validation(v, 0.15) else "train" for v in ("101", "102", "103")}, "202": "test"}
    with pytest.raises(LayoutError) as error:
        build("affwild", tmp_path, tmp_path / "out", progress=False)
    assert "annotations/train/valence/<video>.txt" in str(error.value)
    assert "videos/train/<video>.mp4" in str(error.value)
