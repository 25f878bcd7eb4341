"""RAF-DB builder over a tiny tree in RAF-DB's own layout (basic/ and compound/), written by the test."""
import hashlib
import json

import cv2
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf.labels import COMPOUND_EXPRESSIONS, EXPRESSIONS
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build
from tfrecords_builder.writer import BuildError, BuildInterrupted

# RAF-DB's native code tables, spelled out independently of the builder.
BASIC = {1: "Surprise", 2: "Fear", 3: "Disgust", 4: "Happiness", 5: "Sadness", 6: "Anger", 7: "Neutral"}
COMPOUND = {1: "Happily Surprised", 2: "Happily Disgusted", 3: "Sadly Fearful", 4: "Sadly Angry",
            5: "Sadly Surprised", 6: "Sadly Disgusted", 7: "Fearfully Angry", 8: "Fearfully Surprised",
            9: "Angrily Surprised", 10: "Angrily Disgusted", 11: "Disgustedly Surprised"}


def colour(index):
    return (index * 37 % 200 + 20, index * 91 % 200 + 20, index * 53 % 200 + 20)  # RGB


def write_part(root, part, rows, n_codes, digits):
    """Aligned 100x100 crops in a solid colour that encodes the row, and the label list."""
    (root / part / "EmoLabel").mkdir(parents=True)
    aligned = root / part / "Image" / "aligned"
    aligned.mkdir(parents=True)
    lines = []
    for index, (split, code) in enumerate(rows):
        name = f"{split}_{index + 1:0{digits}d}.jpg"
        image = np.zeros((100, 100, 3), np.uint8) + np.array(colour(index), np.uint8)
        cv2.imwrite(str(aligned / name.replace(".jpg", "_aligned.jpg")), image[..., ::-1])
        lines.append(f"{name} {code}")
    return lines, aligned


@pytest.fixture
def rafdb(tmp_path):
    root = tmp_path / "RAF-DB"
    rows = [("train", code) for code in range(1, 8)] * 3 + [("test", code) for code in range(1, 8)]
    lines, aligned = write_part(root, "basic", rows, 7, 5)
    # Bad input, one of each kind, each must be skipped and counted with its line.
    (aligned / "train_09001_aligned.jpg").write_bytes(b"not a jpeg at all")
    noise = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    good = cv2.imencode(".jpg", noise)[1].tobytes()
    (aligned / "train_09002_aligned.jpg").write_bytes(good[: len(good) // 2])
    lines += [
        "train_09001.jpg 3",                # corrupt image                     line 29
        "train_09002.jpg 3",                # truncated JPEG                    line 30
        "train_09003.jpg 3",                # missing file                      line 31
        "train_09004.jpg",                  # wrong column count                line 32
        "train_09005.jpg 8",                # label outside 1..7                line 33
        "train_09006.jpg x",                # not an integer                    line 34
        "val_09007.jpg 1",                  # neither train_ nor test_          line 35
        "train_x/../../../../escape.jpg 1",  # escapes the root                  line 36
        "train_00001.jpg 1",                # duplicate of line 1               line 37
    ]
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    compound_rows = [("train", code) for code in range(1, 12)] + [("test", code) for code in (1, 11)]
    compound_lines, _ = write_part(root, "compound", compound_rows, 11, 4)
    compound_lines.append("train_0099.jpg 12")
    (root / "compound" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(compound_lines) + "\n")
    return root


def read_split(out, source, split):
    files = sorted(out.glob(f"{source}-{split}.tfrecord-*"))
    return [decode_example(record.numpy()) for record in tf.data.TFRecordDataset([str(f) for f in files])]


def expected_validation(name, fraction=0.15, seed=0):
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def test_rafdb_basic_counts_labels_masks_splits_and_skips(rafdb, tmp_path):
    out = tmp_path / "out"
    manifest = build("rafdb", rafdb, out, shards=2, progress=False)

    train_names = [f"train_{i + 1:05d}.jpg" for i in range(21)]
    n_validation = sum(expected_validation(name) for name in train_names)
    assert 0 < n_validation < 21  # the seeded 15% actually carves something out of 21 images
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {
        "train": 21 - n_validation, "validation": n_validation, "test": 7}

    by_id = {}
    for split in ("train", "validation", "test"):
        for example in read_split(out, "rafdb", split):
            assert example["split"] == split and example["source"] == "rafdb"
            by_id[example["sample_id"]] = example
    assert len(by_id) == 28
    for index in range(28):
        split, code = ("train", index % 7 + 1) if index < 21 else ("test", index - 21 + 1)
        name = f"{split}_{index + 1:05d}.jpg"
        example = by_id[f"basic/Image/aligned/{name.replace('.jpg', '_aligned.jpg')}"]
        if split == "train":
            assert example["split"] == ("validation" if expected_validation(name) else "train")
        assert EXPRESSIONS[example["expr"]] == BASIC[code], name
        assert example["expr_native"] == code and example["expr_native_name"] == BASIC[code]
        assert example["compound"] == -1
        assert example["va_mask"] == 0 and not example["au_mask"].any() and example["attributes_mask"] == 0
        assert example["image"].shape == (112, 112, 3)
        np.testing.assert_allclose(example["image"].reshape(-1, 3).mean(0), colour(index), atol=4)

    skipped = {(record["line"], record["reason"]) for record in manifest["skipped"]}
    assert skipped == {(29, "unreadable_image"), (30, "truncated_image"), (31, "missing_file"), (32, "bad_row"),
                       (33, "label_out_of_range"), (34, "bad_row"), (35, "bad_row"), (36, "unsafe_path"),
                       (37, "duplicate")}
    assert all(record["file"] == "basic/EmoLabel/list_patition_label.txt" for record in manifest["skipped"])
    assert manifest["splits"]["test"]["labels"]["expression"] == {name: 1 for name in EXPRESSIONS}
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["skipped_by_reason"] == {"bad_row": 3, "duplicate": 1, "label_out_of_range": 1,
                                            "missing_file": 1, "truncated_image": 1, "unreadable_image": 1,
                                            "unsafe_path": 1}
    for entry in on_disk["splits"].values():
        for shard in entry["shards"]:
            assert shard["sha256"] == hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest()


def test_rafdb_compound_maps_onto_du_order_by_name(rafdb, tmp_path):
    manifest = build("rafdb_compound", rafdb, tmp_path / "out", progress=False, validation_fraction=0.0)
    assert manifest["splits"]["train"]["count"] == 11 and manifest["splits"]["test"]["count"] == 2
    assert [(r["line"], r["reason"]) for r in manifest["skipped"]] == [(14, "label_out_of_range")]
    examples = read_split(tmp_path / "out", "rafdb_compound", "train")
    for example in examples:
        code = int(example["sample_id"].split("_")[1]) - 0  # train_0001 .. train_0011 carry codes 1..11
        assert COMPOUND_EXPRESSIONS[example["compound"]] == COMPOUND[code]
        assert example["expr"] == -1
        assert example["expr_native"] == code and example["expr_native_name"] == COMPOUND[code]
    assert manifest["splits"]["train"]["labels"]["compound"] == {name: 1 for name in COMPOUND.values()}


def test_strict_fails_and_wrong_root_lists_expected_paths(rafdb, tmp_path):
    with pytest.raises(BuildError, match=r"list_patition_label.txt:29: unreadable_image|:\d+: "):
        build("rafdb", rafdb, tmp_path / "strict", strict=True, progress=False)
    with pytest.raises(LayoutError) as error:
        build("rafdb", tmp_path, tmp_path / "nothing", progress=False)
    assert "basic/EmoLabel/list_patition_label.txt" in str(error.value)
    assert "basic/Image/aligned" in str(error.value)


def test_killed_build_resumes_to_identical_shards_and_workers_do_not_change_bytes(rafdb, tmp_path):
    reference = build("rafdb", rafdb, tmp_path / "reference", shards=3, progress=False)
    with pytest.raises(BuildInterrupted):
        build("rafdb", rafdb, tmp_path / "resumed", shards=3, progress=False, _stop_after_shards=2)
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    resumed = build("rafdb", rafdb, tmp_path / "resumed", shards=3, progress=False)
    assert len(resumed["resumed_shards"]) == 2
    parallel = build("rafdb", rafdb, tmp_path / "parallel", shards=3, workers=2, progress=False)
    names = [shard["file"] for entry in reference["splits"].values() for shard in entry["shards"]]
    assert len(names) == 3 + min(3, reference["splits"]["validation"]["items"]) + 3
    for name in names:
        expected = (tmp_path / "reference" / name).read_bytes()
        assert (tmp_path / "resumed" / name).read_bytes() == expected, name
        assert (tmp_path / "parallel" / name).read_bytes() == expected, name
    assert resumed["splits"] == reference["splits"] == parallel["splits"]
    # A rerun with nothing changed rewrites nothing.
    again = build("rafdb", rafdb, tmp_path / "reference", shards=3, progress=False)
    assert len(again["resumed_shards"]) == len(names)


def test_a_label_list_saved_with_a_utf8_bom_keeps_its_first_row(rafdb, tmp_path):
    labels = rafdb / "compound" / "EmoLabel" / "list_patition_label.txt"
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())  # as Windows editors save "UTF-8"
    manifest = build("rafdb_compound", rafdb, tmp_path / "out", progress=False, validation_fraction=0.0)
    assert manifest["splits"]["train"]["count"] == 11 and manifest["splits"]["test"]["count"] == 2
    assert [(r["line"], r["reason"]) for r in manifest["skipped"]] == [(14, "label_out_of_range")]
