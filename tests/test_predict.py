"""Predict on images, folders and videos with every model format: one row per face per frame, valid ranges, values
equal to the Keras model on the same aligned crop, and unreadable inputs reported instead of crashing."""
import csv

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data

import fbnet_tf
from fbnet_tf import export, face, predict, runs
from fbnet_tf.labels import AU_NAMES, EXPRESSIONS
from test_export import make_run_dir, model_view

ASTRONAUT_BOX = (182, 64, 83, 107)  # MTCNN 1.0 on skimage's astronaut (stack-notes.md)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    run = make_run_dir(root, seed=1)
    result = export.export(run, "savedmodel,tflite", root / "out", tflite_variants=["fp32"])
    return {"run": run, "savedmodel_root": root / "out" / "fbnet", "tflite": result["tflite"]["fp32"],
            "model": runs.load_inference_model(run)}


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def check_ranges(table: pd.DataFrame):
    assert table[list(EXPRESSIONS) + list(AU_NAMES)].apply(lambda c: c.between(0, 1)).all().all()
    np.testing.assert_allclose(table[list(EXPRESSIONS)].sum(axis=1), 1.0, atol=1e-4)
    assert table[["valence", "arousal"]].apply(lambda c: c.between(-1, 1)).all().all()
    assert (table["top_expression"] == table[list(EXPRESSIONS)].idxmax(axis=1)).all()


def test_astronaut_has_one_face_whose_values_are_the_keras_model_on_its_aligned_crop(models, astronaut):
    table = fbnet_tf.Predictor(models["savedmodel_root"]).predict(astronaut)
    assert list(table.columns) == list(predict.COLUMNS) and len(table) == 1
    row = table.iloc[0]
    np.testing.assert_allclose([row.x, row.y, row.w, row.h], ASTRONAUT_BOX, atol=4)
    assert row.face_score > 0.99 and row.frame == 0
    check_ranges(table)
    # Independently: detect, align at 112, resize to round(S * 112 / 96) and keep the centre S (the framing
    # training used), Keras.
    found = face.detect(astronaut)[0]
    crop = face.align(astronaut, found.landmarks, 112)
    expected = {k: np.asarray(v)[0] for k, v in models["model"](model_view(crop[None]), training=False).items()}
    np.testing.assert_allclose(row[["valence", "arousal"]].astype(float), expected["valence_arousal"], atol=1e-5)
    np.testing.assert_allclose(row[list(EXPRESSIONS)].astype(float), expected["expression"], atol=1e-5)
    np.testing.assert_allclose(row[list(AU_NAMES)].astype(float), expected["action_units"], atol=1e-5)


def test_savedmodel_tflite_and_run_dir_give_the_same_rows(models, astronaut):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    tables = {kind: fbnet_tf.Predictor(models[kind]).predict([small, small])
              for kind in ("savedmodel_root", "tflite", "run")}
    reference = tables["savedmodel_root"]
    assert len(reference) == 2 and list(reference["frame"]) == [0, 1]
    numeric = ["valence", "arousal", *EXPRESSIONS, *AU_NAMES]
    for kind, table in tables.items():
        np.testing.assert_allclose(table[numeric].to_numpy(float), reference[numeric].to_numpy(float), atol=1e-4,
                                   err_msg=kind)


def test_cli_on_a_folder_reports_corrupt_files_and_writes_annotated_images(models, astronaut, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "empty.png").write_bytes(b"")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    damaged = bytearray(jpeg.tobytes())  # a face, its scan data overwritten in the middle: decodable, but garbage
    damaged[len(damaged) // 2:len(damaged) // 2 + 200] = np.random.default_rng(0).integers(0, 256, 200, np.uint8).tobytes()
    (folder / "damaged.jpg").write_bytes(bytes(damaged))
    (folder / "cut.jpg").write_bytes(jpeg.tobytes()[:len(jpeg) // 2])
    cv2.imwrite(str(folder / "wall.png"), np.full((64, 64, 3), 128, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / "more").mkdir()
    out = tmp_path / "out"
    assert predict.main([str(folder), "--model", str(models["tflite"]), "--out", str(out), "--annotate"]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 1 and table["file"][0].endswith("astronaut.png")
    check_ranges(table)
    with open(out / "errors.csv", newline="") as handle:
        errors = {row["file"].rsplit("/", 1)[-1]: row["reason"] for row in csv.DictReader(handle)}
    # Every entry of the folder but the one with a face is listed, with why.
    assert {name: reason.split(":")[0] for name, reason in errors.items()} == {
        "broken.jpg": "unreadable_image", "empty.png": "unreadable_image", "damaged.jpg": "corrupt_image",
        "cut.jpg": "truncated_image", "wall.png": "no_face", "notes.txt": "unsupported_file", "more": "subfolder"}
    assert sorted(p.name for p in out.iterdir()) == ["annotated", "errors.csv", "predictions.csv"]
    annotated = cv2.imread(str(out / "annotated" / "astronaut.png"))
    assert annotated.shape == astronaut.shape
    x, y, w, h = ASTRONAUT_BOX
    changed = np.abs(annotated.astype(int) - cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)).sum(-1) > 30
    assert changed[y - 3:y + h + 3, x - 3:x + w + 3].any()  # the box
    assert changed[:100, :100].mean() > 0.05  # the circumplex inset
    assert not changed[400:, 400:].any()  # far from the face: untouched


def write_video(path, frames, fps=10.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_gives_one_row_per_frame_and_every_skips_frames(models, astronaut, tmp_path):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    shifts = [0, 4, 8, 12]
    write_video(tmp_path / "clip.avi", [np.roll(small, s, axis=1) for s in shifts])
    out = tmp_path / "out"
    predict.main([str(tmp_path / "clip.avi"), "--model", str(models["savedmodel_root"]), "--out", str(out),
                  "--annotate", "--batch-size", "3"])
    table = pd.read_csv(out / "predictions.csv")
    assert list(table["frame"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(table["time"], [0.0, 0.1, 0.2, 0.3], atol=1e-6)
    # The face moves with the frame (MTCNN boxes jitter by a pixel or two between frames).
    np.testing.assert_allclose(table["x"] - table["x"][0], shifts, atol=3)
    check_ranges(table)
    capture = cv2.VideoCapture(str(out / "annotated" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    capture.release()

    every = fbnet_tf.Predictor(models["tflite"]).predict(tmp_path / "clip.avi", every=2)
    assert list(every["frame"]) == [0, 2]


def test_unreadable_video_is_reported_not_raised(models, tmp_path):
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    predictor = fbnet_tf.Predictor(models["tflite"])
    table = predictor.predict(tmp_path / "garbage.mp4")
    assert table.empty and list(table.columns) == list(predict.COLUMNS)
    assert len(predictor.errors) == 1
    error = predictor.errors.iloc[0]
    assert error.file.endswith("garbage.mp4") and "video" in error.reason


def test_missing_model_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.tflite"):
        fbnet_tf.Predictor(tmp_path / "nothing.tflite")


def test_frames_are_consumed_lazily_from_an_endless_stream(models, astronaut):
    import itertools

    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    pulled = []

    def endless():
        for index in itertools.count():
            pulled.append(index)
            yield small

    rows = list(itertools.islice(fbnet_tf.Predictor(models["tflite"], batch_size=2).iter_rows(endless()), 3))
    assert [row["frame"] for row in rows] == [0, 1, 2]
    assert len(pulled) <= 4  # at most one batch ahead: memory does not grow with the stream


def test_cli_refuses_bad_input_before_touching_out_and_never_replaces_results_with_nothing(models, astronaut,
                                                                                            tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("earlier results\n")
    (out / "errors.csv").write_text("earlier errors\n")
    model = ["--model", str(models["tflite"]), "--out", str(out)]
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    for argv in ([str(tmp_path / "photo_misspelt.jpg"), *model],
                 [str(photos), "--model", str(tmp_path / "nothing.tflite"), "--out", str(out)],
                 [str(out), *model],  # a folder with nothing to read
                 [str(photos), *model, "--every", "0"], [str(photos), *model, "--batch-size", "-1"],
                 [str(photos), *model, "--min-face-score", "1.5"]):
        with pytest.raises(SystemExit) as stop:
            predict.main(argv)
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "photo_misspelt.jpg: no such file or folder" in err and "nothing.tflite" in err
    assert f"{out}: holds no image (.bmp, .jpeg" in err
    assert "argument --every: expected an integer >= 1, got '0'" in err
    folder = tmp_path / "unreadable"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    assert predict.main([str(folder), *model]) == 1  # nothing could be processed: nothing is replaced
    assert "none of the inputs" in capsys.readouterr().err
    assert (out / "predictions.csv").read_text() == "earlier results\n"
    assert (out / "errors.csv").read_text() == "earlier errors\n"
    assert sorted(p.name for p in out.iterdir()) == ["errors.csv", "predictions.csv"]


def test_large_frames_are_searched_scaled_down_and_aligned_from_the_original(models, astronaut):
    table = fbnet_tf.Predictor(models["run"], detect_max_side=256).predict(astronaut)  # 512 px: searched at 256
    assert len(table) == 1
    # Independently: MTCNN on the half-size image, its landmarks doubled, the crop aligned from the full image.
    found = face.detect(cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA))[0]
    x, y, w, h = found.box
    np.testing.assert_allclose(table.loc[0, ["x", "y", "w", "h"]].astype(float), [2 * x, 2 * y, 2 * w, 2 * h],
                               rtol=1e-5)
    np.testing.assert_allclose(table.loc[0, ["x", "y", "w", "h"]].astype(float), ASTRONAUT_BOX, atol=6)
    crop = face.align(astronaut, found.landmarks * 2, 112)
    expected = models["model"](model_view(crop[None]), training=False)
    np.testing.assert_allclose(table.loc[0, list(EXPRESSIONS)].astype(float), np.asarray(expected["expression"])[0],
                               atol=1e-5)
