"""AFEW builder over a tiny tree in AFEW's own layout: train_afew/<Class>/<clip>.avi and val_afew/<Class>/<clip>.avi.

Frames with a face are `skimage.data.astronaut()` (MTCNN finds one face); a blank frame is the "no face" case.
"""
import hashlib

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from fbnet_tf.labels import EXPRESSIONS
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build

# AFEW's class folders -> the canonical expression names, spelled out independently of the builder.
AFEW_CLASSES = {"Angry": "Anger", "Disgust": "Disgust", "Fear": "Fear", "Happy": "Happiness",
                "Neutral": "Neutral", "Sad": "Sadness", "Surprise": "Surprise"}
FACE = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
BLANK = np.full_like(FACE, 90)


def is_validation(clip, fraction=0.15, seed=0):
    digest = hashlib.sha256(f"{seed}:{clip}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def write_clip(path, frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (256, 256))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def clip_ids():
    """Nine-digit clip ids: the first that the seeded 15% sends to validation, then ones it keeps in train."""
    ids = [f"{n:09d}" for n in range(1, 200)]
    validation = next(c for c in ids if is_validation(c))
    train = [c for c in ids if not is_validation(c)][:4]
    return validation, train


@pytest.fixture(scope="module")
def afew(tmp_path_factory):
    root = tmp_path_factory.mktemp("afew") / "AFEW"
    validation, (happy, sad, angry, neutral) = clip_ids()
    write_clip(root / "train_afew" / "Happy" / f"{happy}.avi", [FACE, FACE])
    write_clip(root / "train_afew" / "Sad" / f"{sad}.avi", [FACE])
    write_clip(root / "train_afew" / "Angry" / f"{angry}.avi", [BLANK])                     # no face
    write_clip(root / "train_afew" / "Disgust" / f"{validation}.avi", [FACE, BLANK])        # -> validation
    write_clip(root / "val_afew" / "Surprise" / "000000900.avi", [FACE])                    # -> test
    (root / "val_afew" / "Neutral").mkdir(parents=True)
    (root / "val_afew" / "Neutral" / f"{neutral}.avi").write_bytes(b"RIFF" + b"\0" * 300)   # corrupt clip
    write_clip(root / "val_afew" / "Fear" / f"{happy}.avi", [BLANK])                        # duplicate clip id
    (root / "train_afew" / "Contempt").mkdir()                                              # not an AFEW class
    (root / "train_afew" / "Happy" / "notes.txt").write_text("not a clip")
    return root, {"happy": happy, "sad": sad, "angry": angry, "neutral": neutral, "validation": validation}


def read_all(out):
    examples = {}
    for split in ("train", "validation", "test"):
        for record in tf.data.TFRecordDataset(sorted(str(f) for f in out.glob(f"afew-{split}.tfrecord-*"))):
            example = decode_example(record.numpy())
            example["clip"] = tf.train.Example.FromString(record.numpy()).features.feature["clip"] \
                .bytes_list.value[0].decode()
            assert example["split"] == split
            examples[example["sample_id"]] = example
    return examples


def test_afew_clip_labels_splits_and_skips(afew, tmp_path):
    root, clips = afew
    manifest = build("afew", root, tmp_path / "out", progress=False, allow_partial=True)
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {
        "train": 3, "validation": 1, "test": 1}
    examples = read_all(tmp_path / "out")
    expected = {f"{clips['happy']}/00000": ("Happy", "train"), f"{clips['happy']}/00001": ("Happy", "train"),
                f"{clips['sad']}/00000": ("Sad", "train"), f"{clips['validation']}/00000": ("Disgust", "validation"),
                "000000900/00000": ("Surprise", "test")}
    assert sorted(examples) == sorted(expected)
    for sample_id, (folder, split) in expected.items():
        example = examples[sample_id]
        clip = sample_id.split("/")[0]
        assert EXPRESSIONS[example["expr"]] == AFEW_CLASSES[folder]
        # AFEW's own index: the class's position in its seven folders, alphabetical as EmotiW lists them
        assert (example["expr_native"], example["expr_native_name"]) == (sorted(AFEW_CLASSES).index(folder), folder)
        assert example["split"] == split and example["subject"] == clip and example["clip"] == clip
        assert example["va_mask"] == 0 and not example["au_mask"].any()
        assert example["image"].shape == (112, 112, 3) and example["image"].std() > 20

    skips = {(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]}
    assert skips == {
        (f"train_afew/Angry/{clips['angry']}.avi", 1, "no_face"),
        (f"train_afew/Disgust/{clips['validation']}.avi", 2, "no_face"),
        (f"val_afew/Neutral/{clips['neutral']}.avi", None, "unreadable_video"),
        (f"val_afew/Fear/{clips['happy']}.avi", None, "duplicate"),
        ("train_afew/Contempt", None, "label_out_of_range"),
        ("train_afew/Happy/notes.txt", None, "bad_row"),
    }
    assert manifest["splits"]["train"]["labels"]["expression"]["Happiness"] == 2


def test_afew_wrong_root_lists_expected_paths(tmp_path):
    with pytest.raises(LayoutError) as error:
        build("afew", tmp_path, tmp_path / "out", progress=False)
    assert "train_afew/{Angry,Disgust,Fear,Happy,Neutral,Sad,Surprise}/<9 digits>.avi" in str(error.value)
    assert "val_afew/" in str(error.value)
