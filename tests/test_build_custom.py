"""The `custom` builder: a user's own images with a labels.csv / labels.jsonl table, trees written by the test.

Expected labels are computed here from the rows written (expression names through a table spelled out below,
AU occurrences by the stated rule, splits by the seeded hash), never by the builder. Faces come from landmarks
(coloured markers that must land on the template), from a box (cropped, or detected inside it), or from MTCNN on
the whole image (`skimage.data.astronaut()`).
"""
import csv
import hashlib
import json

import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from fbnet_tf import face
from fbnet_tf.labels import AUS, EXPRESSIONS
from fbnet_tf.records import decode_example
from test_build_affectnet import assert_aligned, unaligned_face
from tfrecords_builder import LayoutError, build
from tfrecords_builder.__main__ import main
from tfrecords_builder.writer import BuildError

# The names the rows use -> the canonical expression (None: not a basic expression), independent of the builder.
CANONICAL = {"happy": "Happiness", "Sadness": "Sadness", "contempt": None, "Angry": "Anger"}


def five_points(landmarks68):
    """The 5 template points of 68 iBUG landmarks: eye centres, nose tip, mouth corners."""
    return np.stack([landmarks68[36:42].mean(0), landmarks68[42:48].mean(0), landmarks68[30], landmarks68[48],
                     landmarks68[54]])


def write_marker(path, seed):
    image, landmarks68 = unaligned_face(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    return landmarks68


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def read_all(out):
    files = sorted(str(f) for f in out.glob("custom-*.tfrecord-*"))
    return {e["sample_id"]: e for e in (decode_example(r.numpy()) for r in tf.data.TFRecordDataset(files))}


def facs_of(example):
    return {int(n): (float(o), float(i)) for n, o, i in
            zip(example["facs/au"], example["facs/occurrence"], example["facs/intensity"])}


def seeded_split(key, validation=0.15, test=0.15, seed=0):
    rank = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "test" if rank < test else "validation" if rank < test + validation else "train"


HEADER = ["image", "expression", "valence", "arousal", "AU1", "AU 12", "au_45", "subject", "split", "landmarks"]


@pytest.fixture
def csv_tree(tmp_path):
    """labels.csv with good rows (5- and 68-point landmarks) and one bad row of each kind."""
    root = tmp_path / "my data"
    good = {}  # image -> (expression, va, {AU: occurrence}, subject, split)
    rows = []
    for index, (expression, va, aus, split) in enumerate([
            ("happy", (0.5, -0.25), {1: 1, 12: 0, 45: 1}, "train"),
            ("Sadness", None, {}, "validation"),
            ("contempt", (0.1, 0.2), {12: 1}, "test"),
            ("", (-0.3, 0.4), {1: 0, 12: 1}, "train"),
            ("Angry", None, {45: 0}, "Training")]):
        image = f"images/{index}.jpg"
        landmarks68 = write_marker(root / image, index)
        points = landmarks68 if index % 2 else five_points(landmarks68)  # 68 points on odd rows, 5 on even
        separator = " " if index % 2 else ";"
        rows.append([image, expression, *(["", ""] if va is None else va),
                     *(aus.get(n, "") for n in (1, 12, 45)), f"s{index % 2}", split,
                     separator.join(f"{v:.3f}" for v in np.ravel(points))])
        good[image] = (expression, va, aus, f"s{index % 2}", "train" if split == "Training" else split)
    five = ";".join(f"{v:.3f}" for v in np.ravel(five_points(unaligned_face(0)[1])))
    bad = [  # (row, line, reason)
        (["", "happy", "", "", "1", "", "", "s", "train", five], 7, "bad_row"),                # no image
        (["images/0.jpg", "smirk", "", "", "1", "", "", "s", "train", five], 8, "label_out_of_range"),
        (["images/0.jpg", "3", "", "", "1", "", "", "s", "train", five], 9, "bad_row"),        # a bare code
        (["images/0.jpg", "", "1.5", "0", "", "", "", "s", "train", five], 10, "label_out_of_range"),
        (["images/0.jpg", "", "0.5", "", "", "", "", "s", "train", five], 11, "bad_row"),      # arousal blank
        (["images/0.jpg", "", "", "", "", "2", "", "s", "train", five], 12, "label_out_of_range"),  # AU12 = 2
        (["images/0.jpg", "", "", "", "x", "", "", "s", "train", five], 13, "bad_row"),        # AU1 = x
        (["images/0.jpg", "happy", "", "", "", "", "", "s", "holdout", five], 14, "bad_row"),
        (["images/0.jpg", "happy", "", "", "", "", "", "s", "train", "1;2;3;4;5;6"], 15, "bad_landmarks"),
        (["images/9.jpg", "", "", "", "", "", "", "s", "train", five], 16, "no_label"),
        (["../escape.jpg", "happy", "", "", "", "", "", "s", "train", five], 17, "unsafe_path"),
        (["images/missing.jpg", "happy", "", "", "", "", "", "s", "train", five], 18, "missing_file"),
        (["./images/0.jpg", "happy", "", "", "", "", "", "s", "train", five], 19, "duplicate"),  # same image
        (["images/0.jpg", "happy"], 20, "bad_row"),                                             # 2 fields
    ]
    write_csv(root / "labels.csv", HEADER, rows + [row for row, _, _ in bad])
    return root, good, {(line, reason) for _, line, reason in bad}


def test_csv_labels_masks_facs_native_expression_alignment_and_skips(csv_tree, tmp_path):
    root, good, bad = csv_tree
    manifest = build("custom", root / "labels.csv", tmp_path / "out", progress=False, allow_partial=True)
    examples = read_all(tmp_path / "out")
    assert sorted(examples) == sorted(good)
    vocabulary = sorted({expression for expression, *_ in good.values() if expression})
    assert manifest["extra"]["expression_names"] == vocabulary
    assert manifest["extra"]["table"] == "labels.csv"
    for image, (expression, va, aus, subject, split) in good.items():
        example = examples[image]
        assert example["split"] == split and example["subject"] == subject and example["source"] == "custom"
        canonical = CANONICAL.get(expression)
        assert (EXPRESSIONS[example["expr"]] if example["expr"] >= 0 else None) == canonical
        assert example["expr_native_name"] == expression
        assert example["expr_native"] == (vocabulary.index(expression) if expression else -1)
        if va is None:
            assert example["va_mask"] == 0
        else:
            assert example["va_mask"] == 1
            np.testing.assert_allclose(example["va"], va, atol=1e-6)
        assert facs_of(example) == {n: (float(o), -1.0) for n, o in aus.items()}  # AU45 kept, outside the 17
        mask = {AUS[k] for k in np.flatnonzero(example["au_mask"])}
        assert mask == set(aus) & set(AUS)
        assert {AUS[k] for k in np.flatnonzero(example["au"])} == {n for n, o in aus.items() if o == 1 and n in AUS}
        assert (example["au_intensity"] == -1).all()
        assert_aligned(example["image"])

    assert {(r["line"], r["reason"]) for r in manifest["skipped"]} == bad
    assert all(r["file"] == "labels.csv" for r in manifest["skipped"])
    messages = {r["line"]: r["message"] for r in manifest["skipped"]}
    assert "'expression'" in messages[8] and "'smirk'" in messages[8]
    assert "'valence'" in messages[10] and "[-1, 1]" in messages[10]
    assert "'au 12'" in messages[12] and "au_threshold" in messages[12]
    assert "'split'" in messages[14] and "train, validation or test" in messages[14]
    assert "'landmarks'" in messages[15] and "got 6 values" in messages[15]

    # --root as the folder holding labels.csv: the same shards, byte for byte.
    folder = build("custom", root, tmp_path / "folder", progress=False, allow_partial=True)
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            assert (tmp_path / "folder" / shard["file"]).read_bytes() == (tmp_path / "out" / shard["file"]).read_bytes()
    assert folder["splits"] == manifest["splits"]
    with pytest.raises(BuildError, match="labels.csv:7: bad_row"):
        build("custom", root, tmp_path / "strict", strict=True, progress=False)


def test_jsonl_intensities_declared_codes_seeded_split_and_box_crop(tmp_path):
    root = tmp_path / "jsonl"
    names = ("Neutral", "Happy", "Pain")  # the user's own categories; Pain is not a basic expression
    objects, expected = [], {}
    for index in range(6):
        image = f"faces/{index}.png"
        landmarks68 = write_marker(root / image, 10 + index)
        code = (1, 2, "pain", "NEUTRAL", None, 1)[index]
        intensities = {6: 3, 12: 1, 43: 2.5} if index % 2 else {6: 0}
        subject = f"person{index // 2}"
        points = five_points(landmarks68)
        landmarks = points.tolist() if index % 2 else points.ravel().tolist()  # [x, y] pairs or flat
        objects.append({"image": image, "expression": code, "subject": subject, "landmarks": landmarks,
                        **{f"AU{n}": v for n, v in intensities.items()}, "valence": None})
        native = code if isinstance(code, int) else None if code is None else [n.lower() for n in names].index(
            code.lower())
        expected[image] = (native, intensities, seeded_split(subject))
    # A box and no landmarks, cropped (--option box=crop): the box in red on black.
    box_image = np.zeros((120, 100, 3), np.uint8)
    box_image[30:90, 20:70] = (200, 30, 30)
    cv2.imwrite(str(root / "faces" / "box.png"), box_image[..., ::-1])
    objects.append({"image": "faces/box.png", "face_x": 20, "face_y": 30, "face_w": 50, "face_h": 60,
                    "AU1": 4, "subject": "person9"})
    expected["faces/box.png"] = (None, {1: 4}, seeded_split("person9"))
    lines = [json.dumps(o) for o in objects]
    lines += ['{"image": "faces/0.png", "AU6": ', '["faces/0.png", 1]',                  # lines 8, 9
              json.dumps({"image": "faces/1.png", "AU6": 7}),                             # line 10: intensity > 5
              json.dumps({"image": "faces/1.png", "expression": 3}),                      # line 11: code outside 0..2
              json.dumps({"image": "faces/1.png", "face_x": 1, "face_y": 1, "face_w": 5})]  # line 12: part of a box
    (root / "labels.jsonl").write_text("\n".join(lines) + "\n")

    manifest = build("custom", root, tmp_path / "out", progress=False, au_threshold="2", box="crop",
                     expression_names=",".join(names))
    assert {(r["line"], r["reason"]) for r in manifest["skipped"]} == {
        (8, "bad_row"), (9, "bad_row"), (10, "label_out_of_range"), (11, "label_out_of_range"), (12, "bad_row")}
    assert manifest["extra"]["expression_names"] == list(names)
    assert manifest["extra"]["expression_canonical"] == {"Neutral": "Neutral", "Happy": "Happiness", "Pain": None}
    examples = read_all(tmp_path / "out")
    assert sorted(examples) == sorted(expected)
    canonical = {0: "Neutral", 1: "Happiness", 2: None}
    for image, (native, intensities, split) in expected.items():
        example = examples[image]
        assert example["split"] == split
        assert example["expr_native"] == (-1 if native is None else native)
        assert example["expr_native_name"] == ("" if native is None else names[native])
        assert (EXPRESSIONS[example["expr"]] if example["expr"] >= 0 else None) == (
            None if native is None else canonical[native])
        assert facs_of(example) == {n: (float(v >= 2), float(v)) for n, v in intensities.items()}
        for n, v in intensities.items():
            if n in AUS:
                k = AUS.index(n)
                assert example["au_mask"][k] == 1 and example["au"][k] == float(v >= 2)
                assert example["au_intensity"][k] == v
        assert example["va_mask"] == 0
        if image != "faces/box.png":
            assert_aligned(example["image"])
    # The 50x60 box in a 60-pixel square: its middle columns are the box's red, its outer columns black.
    box_crop = examples["faces/box.png"]["image"]
    np.testing.assert_allclose(box_crop[:, 12:100].reshape(-1, 3).mean(0), (200, 30, 30), atol=12)
    assert box_crop[:, :6].mean() < 20 and box_crop[:, -6:].mean() < 20


def test_faces_detected_in_the_image_or_inside_the_box(tmp_path):
    """MTCNN on the whole image when a row gives no face; inside the box when it gives one (of two faces)."""
    root = tmp_path / "detect"
    root.mkdir()
    person = cv2.resize(data.astronaut(), (200, 200), interpolation=cv2.INTER_AREA)
    tinted = np.ascontiguousarray(person[:, ::-1, ::-1])  # mirrored, red and blue swapped: a second, bluish face
    pair = np.hstack([person, tinted])
    cv2.imwrite(str(root / "one.png"), person[..., ::-1])
    cv2.imwrite(str(root / "pair.png"), pair[..., ::-1])
    (root / "pair_b.png").write_bytes((root / "pair.png").read_bytes())
    write_csv(root / "labels.csv", ["image", "expression", "face_x", "face_y", "face_w", "face_h"],
              [["one.png", "happy", "", "", "", ""], ["pair.png", "sad", 280, 10, 70, 70],
               ["pair_b.png", "sad", 0, 150, 40, 40]])  # a box on the shirt: no face there

    manifest = build("custom", root, tmp_path / "out", progress=False, image_size=64)
    assert [(r["line"], r["reason"]) for r in manifest["skipped"]] == [(4, "no_face")]
    assert "--option box=crop" in manifest["skipped"][0]["message"]
    examples = read_all(tmp_path / "out")

    (whole,) = face.detect(person)[:1]
    reference = face.align(person, whole.landmarks, 64)
    assert np.abs(examples["one.png"]["image"].astype(float) - reference).mean() < 6
    right = face.detect(pair[:, 200:])[0]
    reference = face.align(pair, right.landmarks + np.array([200, 0], np.float32), 64)
    crop = examples["pair.png"]["image"].astype(float)
    assert np.abs(crop - reference).mean() < 12
    assert crop[..., 2].mean() > crop[..., 0].mean() + 20  # the bluish face inside the box, not the other one


def test_layout_errors_and_command_line(csv_tree, tmp_path):
    root, _, _ = csv_tree
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="no labels.csv or labels.jsonl"):
        build("custom", tmp_path / "empty", tmp_path / "o0", progress=False)
    table = root / "labels.csv"
    text = table.read_text().splitlines()
    table.write_text("\n".join([text[0] + ",valance,notes"] + [line + ",0.1,x" for line in text[1:6]]) + "\n")
    with pytest.raises(LayoutError, match="unknown column.s. notes, valance.*ignore_columns"):
        build("custom", table, tmp_path / "o1", progress=False)
    ignored = build("custom", table, tmp_path / "o2", progress=False, ignore_columns="valance, notes")
    assert ignored["total"] == 5
    five = five_points(unaligned_face(0)[1]).tolist()
    (root / "labels.jsonl").write_text(json.dumps({"image": "images/0.jpg", "expression": "happy",
                                                   "landmarks": five}) + "\n")
    with pytest.raises(LayoutError, match="both labels.csv and labels.jsonl"):
        build("custom", root, tmp_path / "o3", progress=False)
    write_csv(tmp_path / "no_image.csv", ["file", "expression"], [["images/0.jpg", "happy"]])
    with pytest.raises(LayoutError, match="unknown column.s. file"):
        build("custom", tmp_path / "no_image.csv", tmp_path / "o4", progress=False)
    with pytest.raises(LayoutError, match="no_image.csv has no 'image' column"):
        build("custom", tmp_path / "no_image.csv", tmp_path / "o5", progress=False, ignore_columns="file")

    # The command line: --root names the table; exit 0 and the shards written.
    assert main(["custom", "--root", str(root / "labels.jsonl"), "--out", str(tmp_path / "cli"),
                 "--no-progress"]) == 0
    assert list(read_all(tmp_path / "cli")) == ["images/0.jpg"]
    assert main(["custom", "--root", str(root), "--out", str(tmp_path / "cli2"), "--no-progress"]) == 1

    # --option name= is the records' source (two datasets of your own are scored apart), never a known database's.
    assert main(["custom", "--root", str(root / "labels.jsonl"), "--out", str(tmp_path / "named"),
                 "--no-progress", "--option", "name=clinic_a"]) == 0
    assert [e["source"] for e in read_all(tmp_path / "named").values()] == ["clinic_a"]
    for bad in ("bp4d", "Clinic A"):
        with pytest.raises(ValueError, match=f"option name='{bad}'"):
            build("custom", root / "labels.jsonl", tmp_path / "bad", progress=False, name=bad)


def test_the_readme_example_table_parses_as_documented(tmp_path):
    """The README's example labels.csv lists three images with the labels its text describes."""
    from pathlib import Path

    from tfrecords_builder.custom import Custom

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme.split("### Your own data", 1)[1].split("```csv\n", 1)[1].split("```", 1)[0]
    (tmp_path / "labels.csv").write_text(table)
    items = {item.key: item for item in Custom(tmp_path / "labels.csv").list_items()}
    assert sorted(items) == ["photos/ann_01.jpg", "photos/ann_02.jpg", "photos/bob_01.jpg"]
    ann1, ann2, bob = (items[key].data for key in sorted(items))
    assert [items[key].split for key in sorted(items)] == ["train", "train", "test"]
    assert ann1["expr"] == EXPRESSIONS.index("Happiness") and ann1["va"] == [0.6, 0.3]
    assert ann1["facs"] == [[1, 0.0, -1.0], [12, 1.0, -1.0], [45, 0.0, -1.0]] and len(ann1["landmarks"]) == 10
    assert ann2["expr"] == EXPRESSIONS.index("Sadness") and ann2["box"] == [120, 80, 96, 110]
    assert ann2["va"] is None and ann2["facs"] == [[1, 1.0, -1.0], [12, 0.0, -1.0]]
    assert bob["expr"] == -1 and bob["facs"] == [[45, 1.0, -1.0]] and bob["landmarks"] is None and bob["box"] is None


def test_a_nameless_index_column_as_pandas_writes_it_is_left_out(tmp_path):
    from tfrecords_builder.custom import Custom

    write_csv(tmp_path / "labels.csv", ["", "image", "expression"], [[0, "a.jpg", "joy"], [1, "b.jpg", "fearful"]])
    items = list(Custom(tmp_path).list_items())
    assert [(item.key, EXPRESSIONS[item.data["expr"]]) for item in items] == [("a.jpg", "Happiness"),
                                                                             ("b.jpg", "Fear")]
