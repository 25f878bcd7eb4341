"""SEMAINE (FERA 2015) builder over a tiny tree: session folders with an ELAN .eaf, a frame range and a video."""
import hashlib
from collections import Counter

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage.data import astronaut

from fbnet_tf.labels import AU_NAMES
from fbnet_tf.records import decode_example, facs_dense
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


# The organisers' rule (ParseSEMAINEAnnotations.m, extract_SEMAINE_labels.m), worked by hand at 50 fps (20 ms a
# frame): an interval [t1, t2] ms marks frames floor(t1/20)..floor(t2/20) when both lie in 1..last, last =
# floor(latest slot / 20); the labelled frames are start..end-1 of the range file.
# rec9 (organisers' layout, a FERA devel recording -> test): latest slot 200 ms -> last frame 10.
REC9_SLOTS = {"ts1": 0, "ts2": 50, "ts3": 30, "ts4": 110, "ts5": 130, "ts6": 170, "ts7": 200}
REC9_TIERS = {"AU2": [("a1", "ts1", "ts2")],    # 0..50 ms -> frames 0..2: frame 0 is not in 1..10 -> nothing
              "AU12": [("a2", "ts3", "ts4")],   # 30..110 ms -> frames 1 (1.5) .. 5 (5.5)
              "AU25": [],                       # coded, never active
              "AU28": [("a3", "ts4", "ts7")],   # 110..200 ms -> frames 5 (5.5) .. 10
              "AU45": [("a4", "ts5", "ts6")]}   # 130..170 ms -> frames 6 (6.5) .. 8 (8.5)
# Range file "2 7" -> frames 2..6; frame 4 of the video is blank (no face).
REC9_EXPECTED = {2: {"AU2": 0, "AU12": 1, "AU25": 0, "AU28": 0, "AU45": 0},
                 3: {"AU2": 0, "AU12": 1, "AU25": 0, "AU28": 0, "AU45": 0},
                 5: {"AU2": 0, "AU12": 1, "AU25": 0, "AU28": 1, "AU45": 0},
                 6: {"AU2": 0, "AU12": 0, "AU25": 0, "AU28": 1, "AU45": 1}}
# S01 (range file inside the folder): latest slot 139 ms -> last frame 6; AU17's only annotation is unaligned.
S01_SLOTS = {"ts1": 40, "ts2": 100, "ts3": 120, "ts4": None, "ts5": 139}
S01_TIERS = {"AU2": [("b1", "ts1", "ts2")],                        # frames 2..5
             "AU12": [("b2", "ts2", "ts3"), ("b3", "ts3", "ts5")],  # frames 5..6, 6..6
             "AU17": [("b4", "ts1", "ts4")], "AU45": [("b5", "ts1", "ts3")]}  # AU45: frames 2..6
# Range "3 50": the annotation ends first (last + 1 = 7 < 50) -> end 7 -> frames 3..6.
S01_EXPECTED = {3: {"AU2": 1, "AU12": 0, "AU45": 1}, 4: {"AU2": 1, "AU12": 0, "AU45": 1},
                5: {"AU2": 1, "AU12": 1, "AU45": 1}, 6: {"AU2": 0, "AU12": 1, "AU45": 1}}
# S02 (devel folder): latest 100 ms -> last 5; "AU 12" 20..60 ms -> frames 1..3; range "0 4" -> frames 0..3, frame 0
# has no label (the parser's header row); the video has 2 frames: frames 2..3 are missing.
S02_SLOTS = {"t1": 0, "t2": 20, "t3": 60, "t4": 100}
S02_TIERS = {"AU2": [], "AU 12": [("c1", "t2", "t3")]}
S02_EXPECTED = {1: {"AU2": 0, "AU12": 1}}


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
    face = cv2.resize(astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
    blank = np.full_like(face, 100)
    sessions = root / "SEMAINE-Sessions"
    session(sessions, "rec9/rec9_session", REC9_TIERS, REC9_SLOTS)
    (sessions / "rec9.txt").write_text("2 7\n")  # beside the recording's folder
    write_video(sessions / "rec9" / "rec9_session.avi", [face] * 4 + [blank] + [face] * 3, fps=50)
    session(root, "training/S01/S01", S01_TIERS, S01_SLOTS, "3 50")
    write_video(root / "training/S01/S01.avi", [face] * 7, fps=50)
    session(root, "development/S02/rec2", S02_TIERS, S02_SLOTS, "0 4")
    write_video(root / "development/S02/session.avi", [face, face], fps=50)  # the folder's only video
    ok = {"AU12": [("d1", "ts1", "ts2")]}
    session(root, "training/S03/S03", ok, S01_SLOTS, "0 1",
            doctype='<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n')           # line 2: refused
    session(root, "training/S04/S04", ok, S01_SLOTS, "0 1", text="<ANNOTATION_DOCUMENT>\n<TIER>\n")  # not XML
    session(root, "training/S05/S05", ok, S01_SLOTS)                                        # no range file
    session(root, "training/S06/S06", ok, S01_SLOTS, "0 1")                                 # no video
    session(root, "training/S07/S07", {"Speech": [("e1", "ts1", "ts2")]}, S01_SLOTS, "0 1")  # no AU tier
    session(root, "training/S08/S08", ok, S01_SLOTS, "5")                                   # one number
    return root


def test_semaine_organisers_frames_layouts_splits_and_skips(semaine, tmp_path):
    out = tmp_path / "out"
    manifest = build("semaine", semaine, out, progress=False, allow_partial=True, image_size=32)
    unit = int.from_bytes(hashlib.sha256(b"0:S01").digest()[:8], "big") / 2.0 ** 64
    s01_split = "validation" if unit < 0.15 else "train"
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {s01_split: 4, "test": 5}
    examples = {}
    for split in ("train", "validation", "test"):
        for record in tf.data.TFRecordDataset(sorted(str(f) for f in out.glob(f"semaine-{split}.tfrecord-*"))):
            example = decode_example(record.numpy())
            examples[example["sample_id"]] = example
    assert set(examples) == ({f"SEMAINE-Sessions/rec9/rec9_session/{i:05d}" for i in REC9_EXPECTED}
                             | {f"training/S01/S01/{i:05d}" for i in S01_EXPECTED}
                             | {f"development/S02/rec2/{i:05d}" for i in S02_EXPECTED})
    for prefix, subject, split, expected in (("SEMAINE-Sessions/rec9/rec9_session", "rec9", "test", REC9_EXPECTED),
                                             ("training/S01/S01", "S01", s01_split, S01_EXPECTED),
                                             ("development/S02/rec2", "S02", "test", S02_EXPECTED)):
        for frame, labels in expected.items():
            example = examples[f"{prefix}/{frame:05d}"]
            assert example["split"] == split and example["subject"] == subject
            facs = dict(zip(example["facs/au"].tolist(), example["facs/occurrence"].tolist()))
            assert facs == {int(name[2:]): value for name, value in labels.items()}
            assert (example["facs/intensity"] == -1).all()
            canonical = {name: value for name, value in labels.items() if name not in ("AU28", "AU45")}
            assert {AU_NAMES[i]: int(example["au"][i]) for i in np.flatnonzero(example["au_mask"])} == canonical
            assert example["image"].shape == (32, 32, 3)
    # the manifest counts every AU the records code, AU28/AU45 too (outside the canonical 17), per split
    for split, entry in manifest["splits"].items():
        coded, present = Counter(), Counter()
        for example in (e for e in examples.values() if e["split"] == split):
            for au, occurrence in zip(example["facs/au"].tolist(), example["facs/occurrence"].tolist()):
                coded[au] += 1
                present[au] += occurrence >= 0.5
        assert entry["labels"]["facs_annotated"] == {f"AU{au}": n for au, n in sorted(coded.items())}
        assert entry["labels"]["facs_positive"] == {f"AU{au}": n for au, n in sorted(present.items()) if n}
    assert "AU45" in manifest["splits"]["test"]["labels"]["facs_annotated"]
    # FATAUVA-Net's AU45 comes through, and facs_dense gives it as a dense column.
    last = examples["SEMAINE-Sessions/rec9/rec9_session/00006"]
    dense, mask = facs_dense(last["facs/au"], last["facs/occurrence"], (45, 17))
    assert dense.numpy().tolist() == [1.0, 0.0] and mask.numpy().tolist() == [1.0, 0.0]
    b4_line = eaf(S01_TIERS, S01_SLOTS).split('ANNOTATION_ID="b4"')[0].count("\n") + 1
    assert Counter((r["file"], r["line"], r["reason"], r["count"]) for r in manifest["skipped"]) == Counter([
        ("SEMAINE-Sessions/rec9/rec9_session.eaf", None, "no_face", 1),
        ("training/S01/S01.eaf", b4_line, "label_out_of_range", 1),
        ("development/S02/rec2.eaf", None, "no_label", 1),          # frame 0
        ("development/S02/rec2.eaf", None, "unreadable_video", 2),  # frames 2..3
        ("training/S03/S03.eaf", 2, "unsafe_xml", 1),
        ("training/S04/S04.eaf", 3, "bad_row", 1),
        ("training/S05.txt", None, "missing_file", 1),
        ("training/S06/S06.eaf", None, "missing_file", 1),
        ("training/S07/S07.eaf", None, "no_label", 1),
        ("training/S08/S08.txt", 1, "bad_row", 1)])


def test_semaine_seeded_split_without_fera_folders_strict_and_layout(tmp_path):
    root = tmp_path / "flat"
    face = cv2.resize(astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    for name, frame in (("S09", face), ("S10", np.full_like(face, 100))):
        # 20..40 ms at 50 fps -> frames 1..2 (last frame 2); range "1 2" -> frame 1
        session(root, f"{name}/{name}", {"AU12": [("e1", "ts1", "ts2")]}, {"ts1": 20, "ts2": 40}, "1 2")
        write_video(root / name / f"{name}.avi", [frame, frame], fps=25)
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
