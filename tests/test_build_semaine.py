"""SEMAINE (FERA 2015) builder over a tiny tree: session folders with an ELAN .eaf, a frame range and a video."""
import hashlib
from collections import Counter

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage.data import astronaut

from fbnet_tf.labels import AU_NAMES
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build
from tfrecords_builder.writer import BuildError


def eaf(tiers, slots, doctype=""):
    """An ELAN 2.7 document: `slots` {id: ms or None}, `tiers` {tier id: [(annotation id, ref1, ref2)]}."""
    time_order = "\n".join(f'    <TIME_SLOT TIME_SLOT_ID="{ident}"' + ("" if ms is None else f' TIME_VALUE="{ms}"')
                           + "/>" for ident, ms in slots.items())
    tier_xml = "\n".join(
        f'  <TIER DEFAULT_LOCALE="en" LINGUISTIC_TYPE_REF="default-lt" TIER_ID="{tier}">\n' + "".join(
            f'    <ANNOTATION>\n      <ALIGNABLE_ANNOTATION ANNOTATION_ID="{a}" TIME_SLOT_REF1="{r1}" '
            f'TIME_SLOT_REF2="{r2}">\n        <ANNOTATION_VALUE>1</ANNOTATION_VALUE>\n'
            f'      </ALIGNABLE_ANNOTATION>\n    </ANNOTATION>\n' for a, r1, r2 in annotations) + "  </TIER>"
        for tier, annotations in tiers.items())
    return f"""<?xml version="1.0" encoding="UTF-8"?>
{doctype}<ANNOTATION_DOCUMENT AUTHOR="" DATE="2015-01-20T10:00:00+00:00" FORMAT="2.7" VERSION="2.7"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:noNamespaceSchemaLocation="http://www.mpi.nl/tools/elan/EAFv2.7.xsd">
  <HEADER MEDIA_FILE="" TIME_UNITS="milliseconds">
    <MEDIA_DESCRIPTOR MEDIA_URL="file:///semaine/session.avi" MIME_TYPE="video/x-msvideo"/>
    <PROPERTY NAME="lastUsedAnnotationId">20</PROPERTY>
  </HEADER>
  <TIME_ORDER>
{time_order}
  </TIME_ORDER>
{tier_xml}
  <LINGUISTIC_TYPE GRAPHIC_REFERENCES="false" LINGUISTIC_TYPE_ID="default-lt" TIME_ALIGNABLE="true"/>
  <LOCALE COUNTRY_CODE="GB" LANGUAGE_CODE="en"/>
</ANNOTATION_DOCUMENT>
"""


# Session S01 (fps 5: frame i starts at 200 i ms). AU17's only annotation has an unaligned slot (ts9).
S01_SLOTS = {"ts1": 0, "ts2": 500, "ts3": 600, "ts4": 1000, "ts5": 1400, "ts6": 2000, "ts7": 200, "ts8": 400,
             "ts9": None}
S01_TIERS = {"AU2": [("a1", "ts1", "ts2")], "AU12": [("a2", "ts3", "ts4"), ("a3", "ts4", "ts5")],
             "AU17": [("a4", "ts7", "ts9")], "AU25": [], "AU28": [("a5", "ts1", "ts6")],
             "AU45": [("a6", "ts7", "ts8")]}
# Worked by hand from the intervals: [0, 500) AU2, [600, 1000) + [1000, 1400) AU12; frame 4 is blank.
S01_EXPECTED = {1: {"AU2": 1, "AU12": 0, "AU25": 0}, 2: {"AU2": 1, "AU12": 0, "AU25": 0},
                3: {"AU2": 0, "AU12": 1, "AU25": 0}, 5: {"AU2": 0, "AU12": 1, "AU25": 0}}
# Session S02 (fps 10: frame i at 100 i ms), devel; tier spelled "AU 12"; the video ends before the range does.
S02_SLOTS = {"t1": 0, "t2": 100, "t3": 150}
S02_TIERS = {"AU2": [], "AU 12": [("b1", "t1", "t2")], "AU17": [("b2", "t2", "t3")], "AU25": []}
S02_EXPECTED = {0: {"AU2": 0, "AU12": 1, "AU17": 0, "AU25": 0}, 1: {"AU2": 0, "AU12": 0, "AU17": 1, "AU25": 0}}


def write_video(path, frames, fps):
    size = (frames[0].shape[1], frames[0].shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def session(root, name, tiers, slots, frame_range=None, doctype="", text=None):
    root.joinpath(name).parent.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.eaf").write_text(text if text is not None else eaf(tiers, slots, doctype))
    if frame_range is not None:
        (root / f"{name}.txt").write_text(frame_range + "\n")


@pytest.fixture
def semaine(tmp_path):
    root = tmp_path / "SEMAINE"
    face = cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    blank = np.full_like(face, 100)
    session(root, "training/S01/S01", S01_TIERS, S01_SLOTS, "1 5")
    write_video(root / "training/S01/S01.avi", [face, face, face, face, blank, face, face], fps=5)
    session(root, "development/S02/rec2", S02_TIERS, S02_SLOTS, "0 3")
    write_video(root / "development/S02/session.avi", [face, face], fps=10)  # the folder's only video
    ok = {"AU12": [("c1", "ts1", "ts2")]}
    session(root, "training/S03/S03", ok, S01_SLOTS, "0 1",
            doctype='<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n')           # line 2: refused
    session(root, "training/S04/S04", ok, S01_SLOTS, "0 1", text="<ANNOTATION_DOCUMENT>\n<TIER>\n")  # not XML
    session(root, "training/S05/S05", ok, S01_SLOTS)                                        # no range file
    session(root, "training/S06/S06", ok, S01_SLOTS, "0 1")                                 # no video
    session(root, "training/S07/S07", {"AU28": [("d1", "ts1", "ts2")], "AU45": []}, S01_SLOTS, "0 1")
    session(root, "training/S08/S08", ok, S01_SLOTS, "5")                                   # one number
    return root


def test_semaine_intervals_to_frames_masks_splits_and_skips(semaine, tmp_path):
    out = tmp_path / "out"
    manifest = build("semaine", semaine, out, progress=False, allow_partial=True, image_size=48)
    unit = int.from_bytes(hashlib.sha256(b"0:S01").digest()[:8], "big") / 2.0 ** 64
    s01_split = "validation" if unit < 0.15 else "train"
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {s01_split: 4, "test": 2}
    examples = {}
    for split in ("train", "validation", "test"):
        for record in tf.data.TFRecordDataset(sorted(str(f) for f in out.glob(f"semaine-{split}.tfrecord-*"))):
            example = decode_example(record.numpy())
            examples[example["sample_id"]] = example
    assert set(examples) == ({f"training/S01/S01/{i:05d}" for i in S01_EXPECTED}
                             | {f"development/S02/rec2/{i:05d}" for i in S02_EXPECTED})
    for prefix, subject, split, expected in (("training/S01/S01", "S01", s01_split, S01_EXPECTED),
                                             ("development/S02/rec2", "S02", "test", S02_EXPECTED)):
        for frame, labels in expected.items():
            example = examples[f"{prefix}/{frame:05d}"]
            assert example["split"] == split and example["subject"] == subject
            assert {AU_NAMES[i]: int(example["au"][i]) for i in np.flatnonzero(example["au_mask"])} == labels
            assert example["image"].shape == (48, 48, 3)
    a4_line = eaf(S01_TIERS, S01_SLOTS).split('ANNOTATION_ID="a4"')[0].count("\n") + 1
    assert Counter((r["file"], r["line"], r["reason"]) for r in manifest["skipped"]) == Counter([
        ("training/S01/S01.eaf", None, "no_face"),
        ("training/S01/S01.eaf", a4_line, "label_out_of_range"),
        ("development/S02/rec2.eaf", None, "unreadable_video"),
        ("training/S03/S03.eaf", 2, "unsafe_xml"),
        ("training/S04/S04.eaf", 3, "bad_row"),
        ("training/S05/S05.txt", None, "missing_file"),
        ("training/S06/S06.eaf", None, "missing_file"),
        ("training/S07/S07.eaf", None, "no_label"),
        ("training/S08/S08.txt", 1, "bad_row")])


def test_semaine_seeded_split_without_fera_folders_strict_and_layout(tmp_path):
    root = tmp_path / "flat"
    face = cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    for name, frame in (("S09", face), ("S10", np.full_like(face, 100))):
        session(root, f"{name}/{name}", {"AU12": [("e1", "ts1", "ts2")]}, {"ts1": 0, "ts2": 40}, "0 0")
        write_video(root / name / f"{name}.avi", [frame], fps=25)
    manifest = build("semaine", root, tmp_path / "out", progress=False, image_size=32)
    unit = int.from_bytes(hashlib.sha256(b"0:S09").digest()[:8], "big") / 2.0 ** 64
    expected = "test" if unit < 0.15 else "validation" if unit < 0.30 else "train"
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {expected: 1}
    assert manifest["splits"][expected]["labels"]["au_positive"]["AU12"] == 1
    assert [(r["file"], r["reason"]) for r in manifest["skipped"]] == [("S10/S10.eaf", "no_face")]
    with pytest.raises(BuildError, match="no_face"):
        build("semaine", root, tmp_path / "strict", progress=False, strict=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError) as error:
        build("semaine", tmp_path / "empty", tmp_path / "none", progress=False)
    assert "<session>/<rec>.eaf" in str(error.value)
