"""AffectNet builder over tiny trees in both releases' real layouts, faces aligned from the shipped landmarks."""
import hashlib

import cv2
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf.face import TEMPLATE_112
from fbnet_tf.labels import EXPRESSIONS
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build

# AffectNet's codes, spelled out independently of the builder; None = not a basic expression.
CODES = {0: "Neutral", 1: "Happiness", 2: "Sadness", 3: "Surprise", 4: "Fear", 5: "Disgust", 6: "Anger",
         7: None, 8: None, 9: None}
NATIVE = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger", "Contempt", "None", "Uncertain",
          "No-Face")
HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
MARKERS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]], np.uint8)


def unaligned_face(seed):
    """A 240x200 image holding the template's 5 points as coloured squares after a known similarity transform,
    and 68 iBUG landmarks whose eye centres / nose tip / mouth corners are those transformed points."""
    rng = np.random.default_rng(seed)
    canvas = np.full((112, 112, 3), 90, np.uint8)
    for (x, y), colour in zip(TEMPLATE_112, MARKERS):
        canvas[int(round(y)) - 4:int(round(y)) + 5, int(round(x)) - 4:int(round(x)) + 5] = colour
    angle, scale = np.deg2rad(rng.uniform(-25, 25)), rng.uniform(1.2, 1.6)
    matrix = np.array([[scale * np.cos(angle), -scale * np.sin(angle), rng.uniform(20, 40)],
                       [scale * np.sin(angle), scale * np.cos(angle), rng.uniform(20, 40)]])
    image = cv2.warpAffine(canvas, matrix, (200, 240), flags=cv2.INTER_NEAREST, borderValue=(90, 90, 90))
    points5 = TEMPLATE_112 @ matrix[:, :2].T + matrix[:, 2]
    landmarks = rng.uniform(0, 200, (68, 2))
    offsets = np.array([[-3, 0], [3, 0], [0, -1], [0, 1], [-1, -1], [1, 1]], float)  # mean zero
    landmarks[36:42], landmarks[42:48] = points5[0] + offsets, points5[1] + offsets
    landmarks[30], landmarks[48], landmarks[54] = points5[2], points5[3], points5[4]
    return image, landmarks


def assert_aligned(crop):
    for (x, y), colour in zip(TEMPLATE_112, MARKERS):
        patch = crop[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3].reshape(-1, 3)
        np.testing.assert_allclose(patch.mean(0), colour, atol=40)


def in_validation(key, fraction=0.15, seed=0):
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def read_all(out):
    records = tf.data.TFRecordDataset(sorted(str(p) for p in out.glob("affectnet-*.tfrecord-*")))
    return {e["sample_id"]: e for e in (decode_example(r.numpy()) for r in records)}


def csv_row(relative, landmarks, code, valence, arousal, box=(10, 10, 150, 150)):
    flat = landmarks if isinstance(landmarks, str) else ";".join(f"{v:.3f}" for v in np.ravel(landmarks))
    return f"{relative},{box[0]},{box[1]},{box[2]},{box[3]},{flat},{code},{valence},{arousal}"


@pytest.fixture
def original(tmp_path):
    root = tmp_path / "AffectNet"
    images = root / "Manually_Annotated_Images"
    training, validation, expected = [HEADER], [], {}
    for index in range(16):
        image, landmarks = unaligned_face(index)
        relative = f"{index % 3 + 1}/{hashlib.sha256(bytes([index])).hexdigest()[:56]}.jpg"
        (images / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / relative), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
        if index < 13:
            code = index % 8  # 0..6 basic, 7 Contempt
            # index 7: Contempt without valence/arousal, written for its native label
            va = (round(0.1 * (index - 6), 2), round(0.05 * index, 2)) if index not in (3, 7) else (-2, -2)
            training.append(csv_row(relative, landmarks, code, *va))
        else:
            code = (0, 1, 9)[index - 13]
            va = (0.5, -0.5)
            validation.append(csv_row(relative, landmarks, code, *va))
        expected[f"Manually_Annotated_Images/{relative}"] = (code, va)
    first = next(iter(expected))[len("Manually_Annotated_Images/"):]
    image, landmarks = unaligned_face(0)
    training += [
        csv_row(first.replace(".jpg", "b.jpg"), landmarks, 9, -2, -2),       # line 15: Uncertain, no VA -> no_label
        csv_row(first.replace(".jpg", "c.jpg"), landmarks, 10, -2, -2),      # line 16: No-Face -> no_face
        csv_row(first.replace(".jpg", "d.jpg"), landmarks, 11, 0.1, 0.1),    # line 17: label_out_of_range
        "1/abc.jpg,1,2,3,4,5",                                               # line 18: bad_row
        csv_row("../../outside.jpg", landmarks, 1, 0.1, 0.1),               # line 19: unsafe_path
        csv_row("/etc/passwd", landmarks, 1, 0.1, 0.1),                     # line 20: unsafe_path
        csv_row("9/missing.jpg", landmarks, 1, 0.1, 0.1),                   # line 21: missing_file
        csv_row(first.replace(".jpg", "e.jpg"), landmarks, "happy", 0, 0),   # line 22: bad_row
        csv_row(first, "1;2;3", 1, 0.1, 0.1, box=("x", 0, 0, 0)),          # line 23: bad_landmarks (dup path)
        csv_row("1/box_only.jpg", "", 4, 0.3, 0.3, box=(50, 60, 80, 100)),  # line 24: kept, cropped from its box
    ]
    box_image = np.zeros((240, 200, 3), np.uint8)
    box_image[60:160, 50:130] = (200, 30, 30)  # the box, in red, on black
    cv2.imwrite(str(images / "1" / "box_only.jpg"), box_image[..., ::-1])
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    (lists / "training.csv").write_text("\n".join(training) + "\n")
    (lists / "validation.csv").write_text("\n".join(validation) + "\n")  # no header, as some copies
    return root, expected


def test_original_release_labels_va_splits_alignment_and_skips(original, tmp_path):
    root, expected = original
    manifest = build("affectnet", root, tmp_path / "out", progress=False)
    examples = read_all(tmp_path / "out")

    box_only = examples.pop("Manually_Annotated_Images/1/box_only.jpg")
    assert EXPRESSIONS[box_only["expr"]] == "Fear"
    # The 80x100 box, centred in a 100-pixel square, fills the crop's middle 80% of columns and all rows.
    np.testing.assert_allclose(box_only["image"][:, 20:92].reshape(-1, 3).mean(0), (200, 30, 30), atol=12)
    assert box_only["image"][:, :8].mean() < 20 and box_only["image"][:, -8:].mean() < 20
    kept = {key: value for key, value in expected.items()}
    assert set(examples) == set(kept)
    for key, (code, va) in kept.items():
        example = examples[key]
        if code in (0, 1) and key in list(expected)[13:]:
            assert example["split"] == "test"
        elif key in list(expected)[13:]:
            assert example["split"] == "test"
        else:
            listed = key[len("Manually_Annotated_Images/"):]  # the CSV's subDirectory_filePath
            assert example["split"] == ("validation" if in_validation(listed) else "train")
        name = CODES[code]
        assert (EXPRESSIONS[example["expr"]] if example["expr"] >= 0 else None) == name, key
        assert (example["expr_native"], example["expr_native_name"]) == (code, NATIVE[code])
        if va == (-2, -2):
            assert example["va_mask"] == 0 and list(example["va"]) == [0, 0]
        else:
            assert example["va_mask"] == 1
            np.testing.assert_allclose(example["va"], va, atol=1e-6)
        assert not example["au_mask"].any()
        assert example["image"].shape == (112, 112, 3)
        assert_aligned(example["image"])

    test_count = manifest["splits"]["test"]["count"]
    assert test_count == 3
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["validation"]["count"] == 14
    assert sorted((r["line"], r["reason"]) for r in manifest["skipped"]) == [
        (15, "no_label"), (16, "no_face"), (17, "label_out_of_range"), (18, "bad_row"), (19, "unsafe_path"),
        (20, "unsafe_path"), (21, "missing_file"), (22, "bad_row"), (23, "bad_landmarks")]
    assert all(r["file"] == "Manually_Annotated_file_lists/training.csv" for r in manifest["skipped"])
    labels = manifest["splits"]["test"]["labels"]
    assert labels["expression"]["Neutral"] == 1 and labels["expression"]["Happiness"] == 1 and labels["va"] == 3


def test_newer_release_npy_annotations(tmp_path):
    root = tmp_path / "AffectNet"
    rows = {("train_set", 1): (0, 0.2, 0.3), ("train_set", 2): ("5", 0.1, -0.1), ("train_set", 3): (7, -0.4, 0.6),
            ("train_set", 4): (2, -2.0, -2.0), ("val_set", 5): (6, -0.7, 0.8), ("val_set", 6): (8, 0.1, 0.1)}
    for (folder, image_id), (code, valence, arousal) in rows.items():
        image, landmarks = unaligned_face(image_id)
        (root / folder / "images").mkdir(parents=True, exist_ok=True)
        (root / folder / "annotations").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / folder / "images" / f"{image_id}.jpg"), image[..., ::-1])
        base = root / folder / "annotations" / str(image_id)
        np.save(f"{base}_exp.npy", np.array(code))
        np.save(f"{base}_val.npy", np.array(valence))
        np.save(f"{base}_aro.npy", np.array(arousal))
        np.save(f"{base}_lnd.npy", landmarks.reshape(-1))
    np.save(root / "train_set" / "annotations" / "99_exp.npy", np.array(1))           # no image
    cv2.imwrite(str(root / "val_set" / "images" / "77.jpg"), np.zeros((8, 8, 3), np.uint8))  # no annotation

    manifest = build("affectnet", root, tmp_path / "out", progress=False)
    examples = read_all(tmp_path / "out")
    by_id = {int(key.split("/")[-1][:-4]): example for key, example in examples.items()}
    assert sorted(by_id) == [1, 2, 3, 4, 5]  # 6: code 8 "None" is not in the newer release's 0..7
    assert EXPRESSIONS[by_id[1]["expr"]] == "Neutral" and EXPRESSIONS[by_id[2]["expr"]] == "Disgust"
    assert by_id[3]["expr"] == -1 and by_id[3]["va_mask"] == 1  # Contempt, with its valence/arousal
    assert (by_id[3]["expr_native"], by_id[3]["expr_native_name"]) == (7, "Contempt")
    assert EXPRESSIONS[by_id[4]["expr"]] == "Sadness" and by_id[4]["va_mask"] == 0
    assert EXPRESSIONS[by_id[5]["expr"]] == "Anger" and by_id[5]["split"] == "test"
    np.testing.assert_allclose(by_id[5]["va"], (-0.7, 0.8), atol=1e-6)
    for example in by_id.values():
        assert_aligned(example["image"])
    assert sorted(r["reason"] for r in manifest["skipped"]) == ["label_out_of_range", "missing_file", "no_label"]


def test_unknown_layout_lists_both_releases(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError) as error:
        build("affectnet", tmp_path / "empty", tmp_path / "out", progress=False)
    assert "Manually_Annotated_file_lists/training.csv" in str(error.value)
    assert "train_set/annotations" in str(error.value)
