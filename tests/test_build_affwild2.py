"""Aff-Wild2 builder over tiny trees in the three ABAW annotation forms (2020, 2022+, 2022 multi-task)."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf.labels import AU_NAMES, EXPRESSIONS
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build
from tfrecords_builder.writer import BuildError

# ABAW's native tables, spelled out independently of the builder.
EXPR_2022 = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
EXPR_2020 = EXPR_2022[:7]
AUS_2022 = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
AUS_2020 = ("AU1", "AU2", "AU4", "AU6", "AU12", "AU15", "AU20", "AU25")


def colour(video, frame):
    return ((video * 50 + 30) % 256, (frame * 23 + 10) % 256, 128)  # RGB


def write_images(root, video_index, video, frames):
    folder = root / "cropped_aligned" / video
    folder.mkdir(parents=True)
    for frame in frames:
        image = np.zeros((48, 48, 3), np.uint8) + np.array(colour(video_index, frame), np.uint8)
        cv2.imwrite(str(folder / f"{frame:05d}.jpg"), image[..., ::-1])


def write_rows(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + rows) + "\n")


def read_all(out, source="affwild2"):
    examples = {}
    for split in ("train", "validation", "test"):
        files = sorted(str(f) for f in out.glob(f"{source}-{split}.tfrecord-*"))
        for record in tf.data.TFRecordDataset(files):
            example = decode_example(record.numpy())
            assert example["split"] == split
            examples[example["sample_id"]] = example
    return examples


def au_row(on=(), missing=False, names=AUS_2022):
    return ",".join("-1" if missing else ("1" if name in on else "0") for name in names)


def assert_aus(example, on, annotated):
    positive = {AU_NAMES[i] for i in np.flatnonzero(example["au"] > 0.5)}
    assert positive == set(on)
    assert {AU_NAMES[i] for i in np.flatnonzero(example["au_mask"])} == set(annotated)
    assert (example["au_intensity"] == -1).all()


@pytest.fixture
def abaw2022(tmp_path):
    root = tmp_path / "affwild2"
    va, ex, au = (root / "annotations" / name for name in
                  ("VA_Estimation_Challenge", "EXPR_Recognition_Challenge", "AU_Detection_Challenge"))
    # v1: 8 labelled frames; image 5 missing (no face), images 9, 10 without a label row.
    write_images(root, 1, "v1", [1, 2, 3, 4, 6, 7, 8, 9, 10])
    write_rows(va / "Train_Set" / "v1.txt", "valence,arousal",
               ["0.5,-0.25", "-5,-5", "2.0,0.1", "0.1", "0.3,0.3", "-5,-5", "-5,-5", "0.1,0.2"])
    write_rows(ex / "Train_Set" / "v1.txt", ",".join(EXPR_2022), ["4", "7", "-1", "9", "1", "-1", "-1", "6"])
    write_rows(au / "Train_Set" / "v1.txt", ",".join(AUS_2022),
               [au_row({"AU6", "AU12"}), au_row(missing=True), au_row({"AU26"}), au_row(missing=True),
                au_row(), au_row(missing=True), au_row(missing=True), au_row({"AU1", "AU2"})])
    # Two people in one video: two subjects, expression only; the AU file of _left has a broken header.
    for index, video in ((2, "v2_left"), (3, "v2_right")):
        write_images(root, index, video, [1, 2])
        write_rows(ex / "Train_Set" / f"{video}.txt", ",".join(EXPR_2022), ["0", "5"])
    write_rows(au / "Train_Set" / "v2_left.txt", "foo,bar", ["1,0", "0,1"])
    (root / "cropped_aligned" / "v2_right" / "00002.jpg").write_bytes(b"not a jpeg")
    # v3: VA in validation, expression in training -> validation, one example per frame with both labels.
    write_images(root, 4, "v3", [1, 2])
    write_rows(va / "Validation_Set" / "v3.txt", "valence,arousal", ["-0.5,0.5", "0.25,0.75"])
    write_rows(ex / "Train_Set" / "v3.txt", ",".join(EXPR_2022), ["2", "3"])
    # v4: images only (a test video); v5: labels only (no image folder); a stray file in a split folder.
    write_images(root, 5, "v4", [1, 2, 3])
    write_rows(au / "Validation_Set" / "v5.txt", ",".join(AUS_2022), [au_row({"AU4"})])
    (va / "Train_Set" / "notes.md").write_text("not an annotation file")
    return root


def test_abaw2022_merges_tasks_maps_names_and_counts_every_skip(abaw2022, tmp_path):
    out = tmp_path / "out"
    manifest = build("affwild2", abaw2022, out, progress=False, allow_partial=True)
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {"train": 7, "validation": 2}
    examples = read_all(out)
    assert sorted(examples) == ["v1/00001", "v1/00002", "v1/00003", "v1/00008", "v2_left/00001", "v2_left/00002",
                                "v2_right/00001", "v3/00001", "v3/00002"]

    first = examples["v1/00001"]  # VA + expression 4 + AUs: one example with all three
    np.testing.assert_allclose(first["va"], [0.5, -0.25])
    assert first["va_mask"] == 1 and EXPRESSIONS[first["expr"]] == EXPR_2022[4]
    assert_aus(first, {"AU6", "AU12"}, AUS_2022)
    assert (first["expr_native"], first["expr_native_name"]) == (4, "Happiness")
    assert first["facs/au"].tolist() == [int(name[2:]) for name in AUS_2022]  # every column, in AU order
    assert first["facs/occurrence"].tolist() == [float(name in ("AU6", "AU12")) for name in AUS_2022]
    assert (first["facs/intensity"] == -1).all()
    assert first["subject"] == "v1" and first["image"].shape == (112, 112, 3)
    other = examples["v1/00002"]  # VA -5, expression 7 "Other", AUs -1: written for ABAW's score, expr -1
    assert (other["expr"], other["expr_native"], other["expr_native_name"]) == (-1, 7, "Other")
    assert other["va_mask"] == 0 and not other["au_mask"].any() and other["facs/au"].size == 0
    np.testing.assert_allclose(first["image"].reshape(-1, 3).mean(0), colour(1, 1), atol=4)
    third = examples["v1/00003"]  # VA out of range dropped, expression -1: only its AUs remain
    assert third["va_mask"] == 0 and third["expr"] == -1
    assert_aus(third, {"AU26"}, AUS_2022)
    eighth = examples["v1/00008"]
    assert EXPRESSIONS[eighth["expr"]] == EXPR_2022[6] and eighth["va_mask"] == 1
    assert_aus(eighth, {"AU1", "AU2"}, AUS_2022)
    np.testing.assert_allclose(eighth["image"].reshape(-1, 3).mean(0), colour(1, 8), atol=4)
    assert [EXPRESSIONS[examples[f"v2_left/{k:05d}"]["expr"]] for k in (1, 2)] == ["Neutral", "Sadness"]
    assert EXPRESSIONS[examples["v2_right/00001"]["expr"]] == "Neutral"
    for video in ("v2_left", "v2_right"):
        assert examples[f"{video}/00001"]["subject"] == video
        assert not examples[f"{video}/00001"]["au_mask"].any() and examples[f"{video}/00001"]["va_mask"] == 0
    for k, (v, a), code in ((1, (-0.5, 0.5), 2), (2, (0.25, 0.75), 3)):
        example = examples[f"v3/{k:05d}"]
        assert example["split"] == "validation"
        np.testing.assert_allclose(example["va"], [v, a])
        assert EXPRESSIONS[example["expr"]] == EXPR_2022[code]

    skips = {(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]}
    assert skips == {
        ("annotations/VA_Estimation_Challenge/Train_Set/v1.txt", 4, "label_out_of_range"),   # 2.0,0.1
        ("annotations/VA_Estimation_Challenge/Train_Set/v1.txt", 5, "bad_row"),              # one field
        ("annotations/EXPR_Recognition_Challenge/Train_Set/v1.txt", 5, "label_out_of_range"),  # code 9
        ("annotations/AU_Detection_Challenge/Train_Set/v1.txt", 6, "missing_file"),          # frame 5: no image
        ("annotations/AU_Detection_Challenge/Train_Set/v1.txt", 7, "no_label"),              # frames 6-7
        ("cropped_aligned/v1", None, "unlabelled_images"),                                   # images 9, 10
        ("annotations/AU_Detection_Challenge/Train_Set/v2_left.txt", 1, "bad_row"),          # header
        ("annotations/EXPR_Recognition_Challenge/Train_Set/v2_right.txt", 3, "unreadable_image"),  # frame 2
        ("annotations/AU_Detection_Challenge/Validation_Set/v5.txt", None, "missing_file"),  # no image folder
        ("cropped_aligned/v4", None, "unlabelled_images"),                                   # test video
        ("annotations/VA_Estimation_Challenge/Train_Set/notes.md", None, "bad_row"),
    }
    messages = {r["file"] + str(r["line"]): r["message"] for r in manifest["skipped"]}
    assert "frames 6-7 (2 frames)" in messages["annotations/AU_Detection_Challenge/Train_Set/v1.txt7"]
    assert messages["cropped_aligned/v1None"].startswith("2 images") and "9-10" in messages["cropped_aligned/v1None"]
    assert messages["cropped_aligned/v4None"].startswith("3 images")
    labels = manifest["splits"]["train"]["labels"]
    assert labels["va"] == 2 and labels["au_annotated"]["AU7"] == 3 and labels["au_annotated"]["AU20"] == 0
    assert labels["expression"] == {**{name: 0 for name in EXPRESSIONS}, "Neutral": 2, "Sadness": 1,
                                    "Happiness": 1, "Surprise": 1}

    with pytest.raises(BuildError, match="v1.txt:4: label_out_of_range|v2_left.txt:1: bad_row|notes.md"):
        build("affwild2", abaw2022, tmp_path / "strict", strict=True, progress=False)


def test_abaw2020_folders_eight_aus_and_frame_stride(tmp_path):
    root = tmp_path / "Aff-Wild2"
    annotations = root / "annotations"
    write_images(root, 1, "train_video", [1, 2, 3, 4, 5])
    write_images(root, 2, "val_video", [1, 2])
    write_rows(annotations / "AU_Set" / "Training_Set" / "train_video.txt", ",".join(AUS_2020),
               [au_row({"AU20", "AU25"}, names=AUS_2020), au_row({"AU1"}, names=AUS_2020),
                au_row({"AU15"}, names=AUS_2020), au_row(names=AUS_2020), au_row({"AU4"}, names=AUS_2020)])
    write_rows(annotations / "EXPR_Set" / "Validation_Set" / "val_video.txt", ",".join(EXPR_2020), ["3", "6"])
    write_rows(annotations / "VA_Set" / "Validation_Set" / "val_video.txt", "valence,arousal", ["0,0", "1,-1"])

    manifest = build("affwild2", root, tmp_path / "out", progress=False)
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {"train": 5, "validation": 2}
    assert manifest["skipped"] == []
    examples = read_all(tmp_path / "out")
    assert_aus(examples["train_video/00001"], {"AU20", "AU25"}, AUS_2020)
    assert_aus(examples["train_video/00003"], {"AU15"}, AUS_2020)
    assert_aus(examples["train_video/00004"], set(), AUS_2020)
    val = examples["val_video/00002"]
    assert EXPRESSIONS[val["expr"]] == "Surprise" and val["va_mask"] == 1
    np.testing.assert_allclose(val["va"], [1, -1])
    assert EXPRESSIONS[examples["val_video/00001"]["expr"]] == "Fear"
    assert (val["expr_native"], val["expr_native_name"]) == (6, "Surprise")  # ABAW 2020's own code
    assert examples["train_video/00001"]["facs/au"].tolist() == [int(name[2:]) for name in AUS_2020]

    strided = build("affwild2", root, tmp_path / "strided", frame_stride=2, progress=False)
    assert sorted(read_all(tmp_path / "strided")) == ["train_video/00001", "train_video/00003",
                                                      "train_video/00005", "val_video/00001"]
    assert strided["splits"]["train"]["count"] == 3


def test_multitask_file_form(tmp_path):
    root = tmp_path / "MTL"
    write_images(root, 1, "a", [1, 2, 3])
    write_images(root, 2, "b_right", [7])
    header = "image,valence,arousal,expression," + ",".join(AUS_2022)
    write_rows(root / "training_set_annotations_22.txt", header, [
        f"a/00001.jpg,0.5,0.5,4,{au_row({'AU12'})}",
        f"a/00002.jpg,-5,-5,7,{au_row({'AU24'})}",            # VA missing, Other: AUs only
        f"a/00003.jpg,-5,-5,-1,{au_row(missing=True)}",        # nothing annotated
        f"a/00004.jpg,0.1,0.1,0,{au_row()}",                   # labelled, no image
        "a/00005.jpg,0.1,0.1,0",                               # wrong column count
        f"../../etc/00001.jpg,0.1,0.1,0,{au_row()}",           # escapes the root
        f"a/x.jpg,0.1,0.1,0,{au_row()}",                       # not a frame number
    ])
    write_rows(root / "validation_set_annotations_22.txt", header, [f"b_right/00007.jpg,-0.2,0.3,1,{au_row()}"])
    manifest = build("affwild2", root, tmp_path / "out", progress=False, allow_partial=True)
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {"train": 2, "validation": 1}
    examples = read_all(tmp_path / "out")
    assert EXPRESSIONS[examples["a/00001"]["expr"]] == "Happiness"
    assert_aus(examples["a/00001"], {"AU12"}, AUS_2022)
    assert examples["a/00002"]["expr"] == -1 and examples["a/00002"]["va_mask"] == 0
    assert (examples["a/00002"]["expr_native"], examples["a/00002"]["expr_native_name"]) == (7, "Other")
    assert_aus(examples["a/00002"], {"AU24"}, AUS_2022)
    b = examples["b_right/00007"]
    assert b["subject"] == "b_right" and EXPRESSIONS[b["expr"]] == "Anger"
    np.testing.assert_allclose(b["va"], [-0.2, 0.3])
    np.testing.assert_allclose(b["image"].reshape(-1, 3).mean(0), colour(2, 7), atol=4)
    assert {(r["line"], r["reason"]) for r in manifest["skipped"]} == {
        (4, "no_label"), (5, "missing_file"), (6, "bad_row"), (7, "unsafe_path"), (8, "bad_row")}
    assert all(r["file"] == "training_set_annotations_22.txt" for r in manifest["skipped"])


def test_layout_errors_list_expected_paths(abaw2022, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError) as error:
        build("affwild2", empty, tmp_path / "o1", progress=False)
    for expected in ("cropped_aligned/<video>/00001.jpg", "VA_Set", "VA_Estimation_Challenge",
                     "training_set_annotations_22.txt"):
        assert expected in str(error.value)
    write_rows(abaw2022 / "annotations" / "EXPR_Set" / "Training_Set" / "v1.txt", ",".join(EXPR_2020), ["0"])
    with pytest.raises(LayoutError, match="several annotation releases found .2020, 2022."):
        build("affwild2", abaw2022, tmp_path / "o2", progress=False)
    chosen = build("affwild2", abaw2022, tmp_path / "o3", progress=False, release="2020")
    assert chosen["total"] == 1 and EXPRESSIONS[read_all(tmp_path / "o3")["v1/00001"]["expr"]] == "Neutral"


def test_reads_the_demo_worlds_affwild2(tmp_path):
    """The demo world writes the ABAW 2022+ form: the builder reads it, every labelled frame with an image."""
    writers = pytest.importorskip("fbnet_tf.demo.writers")
    if not hasattr(writers, "plan_affwild2"):
        pytest.skip("the demo world has no Aff-Wild2 writer")
    root = tmp_path / "demo" / "affwild2"
    plan = writers.plan_affwild2(root, np.random.default_rng(0), (2, 20))
    plan.finish([function(*arguments) for function, arguments in plan.jobs])

    expected = set()  # frames with an image and at least one annotated label, from the files themselves
    for folder in root.glob("*_Challenge"):
        for path in folder.glob("*/*.txt"):
            for k, row in enumerate(path.read_text().splitlines()[1:], start=1):
                values = [float(v) for v in row.split(",")]
                annotated = (folder.name.startswith("VA") and -5 not in values
                             or folder.name.startswith("EXPR") and values[0] not in (-1, 7)
                             or folder.name.startswith("AU") and -1 not in values)
                if annotated and (root / "cropped_aligned" / path.stem / f"{k:05d}.jpg").is_file():
                    expected.add(f"{path.stem}/{k:05d}")
    manifest = build("affwild2", root, tmp_path / "out", progress=False)
    examples = read_all(tmp_path / "out")
    assert set(examples) == expected and manifest["total"] == len(expected) > 50
    assert set(manifest["skipped_by_reason"]) <= {"missing_file", "no_label", "unlabelled_images"}
    assert {example["subject"] for example in examples.values()} == {path.name for path in
                                                                     (root / "cropped_aligned").iterdir()}
