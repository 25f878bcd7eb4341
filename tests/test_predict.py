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
from fbnet_tf.demo import moving
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
    assert sorted(p.name for p in out.iterdir()) == ["annotated", "errors.csv", "predictions.csv", "summary.csv"]
    annotated = cv2.imread(str(out / "annotated" / "astronaut.png"))
    assert annotated.shape == astronaut.shape
    x, y, w, h = ASTRONAUT_BOX
    changed = np.abs(annotated.astype(int) - cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)).sum(-1) > 30
    assert changed[y - 3:y + h + 3, x - 3:x + w + 3].any()  # the box
    assert changed[:100, :100].mean() > 0.05  # the circumplex inset
    assert not changed[400:, 400:].any()  # far from the face: untouched
    # No face in any input: exit 1, saying so, and the tables written above stay as they were.
    before = {name: (out / name).read_bytes() for name in ("predictions.csv", "summary.csv", "errors.csv")}
    assert predict.main([str(folder / "wall.png"), "--model", str(models["tflite"]), "--out", str(out)]) == 1
    assert before == {name: (out / name).read_bytes() for name in before}


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
                 [str(photos), *model, "--min-face-score", "1.5"], [str(photos), *model, "--smooth", "median:3"],
                 [str(photos), *model, "--detector", "haar"]):
        with pytest.raises(SystemExit) as stop:
            predict.main(argv)
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "photo_misspelt.jpg: no such file or folder" in err and "nothing.tflite" in err
    assert f"{out}: holds no image (.bmp, .jpeg" in err
    assert "argument --every: expected an integer >= 1, got '0'" in err
    assert "smoothing 'median:3': expected window:N (N >= 1 frames) or ema:ALPHA (0 < ALPHA <= 1)" in err
    assert "argument --detector: invalid choice: 'haar'" in err
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


# ---------------------------------------------------------------- videos: face ids, summary, smoothing, --fps

CROSSING = 16  # frames in which A walks right along the top and B walks left lower down, passing in front of A
GONE = 20  # frames B is then out of the picture, before it comes back for RETURN frames
RETURN = 4


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    """A 320x240 video of two demo faces crossing, then B leaving for GONE frames and coming back; and the CLI's
    output folder for it (MTCNN, detection every 5 frames, tracking in between)."""
    root = tmp_path_factory.mktemp("crossing")
    people = moving.portraits(2, face_px=90, seed=0)
    h, w = people[0].shape[:2]
    a = moving.glide((10, 40), (320 - w - 10, 40), CROSSING)
    b = moving.glide((320 - w - 10, 40 + 0.45 * h), (10, 40 + 0.45 * h), CROSSING)
    positions = ([[a[t], b[t]] for t in range(CROSSING)] + [[a[-1], None]] * GONE + [[a[-1], b[-1]]] * RETURN)
    video = moving.write_video(root / "crossing.avi", (moving.compose(people, p, (240, 320)) for p in positions),
                               fps=10.0)
    return {"video": video, "positions": positions, "height": h, "width": w, "root": root}


@pytest.fixture(scope="module")
def crossing_out(models, crossing):
    """detector name -> the CLI's output folder for the crossing video (detection every 5 frames, tracked)."""
    outs = {}

    def run(detector):
        if detector not in outs:
            outs[detector] = crossing["root"] / f"out_{detector}"
            assert predict.main([str(crossing["video"]), "--model", str(models["tflite"]), "--out",
                                 str(outs[detector]), "--detector", detector, "--annotate"]) == 0
        return outs[detector]
    return run


@pytest.mark.parametrize("detector", ["fast", "mtcnn"])
def test_two_crossing_faces_keep_their_ids_and_one_that_returns_after_20_frames_gets_a_new_one(crossing,
                                                                                               crossing_out,
                                                                                               detector):
    out = crossing_out(detector)
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == list(predict.COLUMNS)
    # Whose face a row is: the person whose portrait's middle is nearest the box's (and near it).
    size = np.array([crossing["width"], crossing["height"]])

    def person(row):
        centre = np.array([row.x + row.w / 2, row.y + row.h / 2])
        distances = {name: np.linalg.norm(centre - position - size / 2)
                     for name, position in zip("AB", crossing["positions"][row.frame]) if position is not None}
        name = min(distances, key=distances.get)
        return name if distances[name] < 0.25 * crossing["height"] else "?"

    table["person"] = table.apply(person, axis=1)
    assert "?" not in set(table["person"])
    ids = table.groupby("face_id")["person"].agg(set)
    assert len(ids) == 3 and all(len(people) == 1 for people in ids)  # no id ever moved to the other person
    first = table.groupby("face_id")["frame"].min()
    a_id, b_id, returned = (ids[ids == {"A"}].index[0], *sorted(ids[ids == {"B"}].index))
    assert first[a_id] == first[b_id] == 0 and first[returned] >= CROSSING + GONE
    # A is seen through the crossing (where B hides its lower half: the fast detector misses it there for a few
    # frames) and to the end.
    frames_of_a = set(table.loc[table.face_id == a_id, "frame"])
    assert len(frames_of_a) >= CROSSING + GONE + RETURN - 8 and max(frames_of_a) == CROSSING + GONE + RETURN - 1
    # B in every frame of the crossing (B is in front).
    assert set(range(CROSSING)) <= set(table.loc[table.face_id == b_id, "frame"])
    # Annotated video: one frame per input frame, the id drawn.
    capture = cv2.VideoCapture(str(out / "annotated" / "crossing.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == CROSSING + GONE + RETURN
    capture.release()


def test_summary_is_the_per_frame_rows_grouped_by_file_and_face(crossing_out):
    table = pd.read_csv(crossing_out("fast") / "predictions.csv")
    summary = pd.read_csv(crossing_out("fast") / "summary.csv")
    expected_columns = (["file", "face_id", "frames", "first_frame", "last_frame", "mean_valence", "mean_arousal"]
                        + [f"{e}_share" for e in EXPRESSIONS] + [f"{au}_rate" for au in AU_NAMES])
    assert list(summary.columns) == expected_columns
    groups = table.groupby(["file", "face_id"])
    expected = pd.DataFrame({"frames": groups.size(), "first_frame": groups["frame"].min(),
                             "last_frame": groups["frame"].max(), "mean_valence": groups["valence"].mean(),
                             "mean_arousal": groups["arousal"].mean()})
    for name in EXPRESSIONS:
        expected[f"{name}_share"] = (table["top_expression"] == name).groupby([table.file, table.face_id]).mean()
    for au in AU_NAMES:
        expected[f"{au}_rate"] = (table[au] >= 0.5).groupby([table.file, table.face_id]).mean()
    summary = summary.set_index(["file", "face_id"])
    assert len(summary) == 3 and list(summary.index) == list(expected.index)
    np.testing.assert_allclose(summary[expected.columns].to_numpy(float), expected.to_numpy(float), atol=1e-6)
    assert (summary[[f"{e}_share" for e in EXPRESSIONS]].sum(axis=1) == 1).all()


def test_smoothing_is_each_faces_trailing_mean_or_ema_over_its_own_frames(models, crossing, tmp_path):
    frames = [frame for _, frame in zip(range(6), predict.video.frames(crossing["video"]))]
    images = [image for _, image in frames]
    raw = fbnet_tf.Predictor(models["tflite"], detector="mtcnn").predict(images)
    assert sorted(set(raw.face_id)) == [0, 1] and len(raw) == 12
    outputs = ["valence", "arousal", *EXPRESSIONS, *AU_NAMES]
    smoothing = fbnet_tf.Predictor(models["tflite"], detector="mtcnn", smoothing="window:3")
    window = smoothing.predict(images)
    pd.testing.assert_frame_equal(smoothing.predict(images), window)  # each call starts from no history
    ema = fbnet_tf.Predictor(models["tflite"], detector="mtcnn", smoothing="ema:0.4").predict(images)
    for table, spec in ((window, "window:3"), (ema, "ema:0.4")):
        assert list(table.columns) == [*predict.COLUMNS, "smoothing"] and set(table.smoothing) == {spec}
        assert (table[["frame", "face_id", "x"]].to_numpy() == raw[["frame", "face_id", "x"]].to_numpy()).all()
    for face_id in (0, 1):
        values = raw.loc[raw.face_id == face_id, outputs].to_numpy(float)
        trailing = np.stack([values[max(0, t - 2):t + 1].mean(axis=0) for t in range(len(values))])
        np.testing.assert_allclose(window.loc[window.face_id == face_id, outputs].to_numpy(float), trailing,
                                   atol=1e-6)
        expected = [values[0]]
        for value in values[1:]:
            expected.append(0.4 * value + 0.6 * expected[-1])
        np.testing.assert_allclose(ema.loc[ema.face_id == face_id, outputs].to_numpy(float), np.stack(expected),
                                   atol=1e-6)
    smoothed = window[list(EXPRESSIONS)].to_numpy(float)
    assert (window["top_expression"] == np.array(EXPRESSIONS)[smoothed.argmax(axis=1)]).all()


def test_fps_keeps_the_stride_of_the_container_rate_and_still_faces_are_numbered_by_score(models, astronaut,
                                                                                          tmp_path, capsys):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    write_video(tmp_path / "clip20.avi", [np.roll(small, s, axis=1) for s in range(0, 20, 2)], fps=20.0)
    assert predict.video_stride(tmp_path / "clip20.avi", fps=5) == 4  # 20 frames/s kept at about 5/s
    assert predict.video_stride(tmp_path / "clip20.avi", fps=7) == 3  # the closest stride: 6.7 frames/s
    assert predict.video_stride(tmp_path / "clip20.avi", fps=50) == 1
    table = fbnet_tf.Predictor(models["tflite"], detector="mtcnn").predict(tmp_path / "clip20.avi", fps=5)
    assert list(table.frame) == [0, 4, 8] and set(table.face_id) == {0}
    np.testing.assert_allclose(table.time, [0.0, 0.2, 0.4], atol=1e-6)
    with pytest.raises(SystemExit):
        predict.main([str(tmp_path / "clip20.avi"), "--model", str(models["tflite"]), "--fps", "5", "--every", "2"])
    assert "not allowed with argument" in capsys.readouterr().err
    # A still image with two faces: ids 0, 1 in the order of their scores.
    people = moving.portraits(2, face_px=90, seed=0)
    two = moving.compose(people, [(10, 40), (170, 60)], (240, 320))
    table = fbnet_tf.Predictor(models["tflite"], detector="mtcnn").predict(two)
    assert list(table.face_id) == [0, 1] and table.face_score.is_monotonic_decreasing


def test_tracked_frames_larger_than_detect_max_side_are_refined_on_the_scaled_copy_too(models, astronaut):
    # Frame 0 is detected, frame 1 refined, both on a 256 px copy of the 512 px frame, in full-size pixels.
    table = fbnet_tf.Predictor(models["tflite"], detector="mtcnn", detect_max_side=256).predict([astronaut] * 2)
    assert list(table.face_id) == [0, 0]
    np.testing.assert_allclose(table.loc[:, ["x", "y", "w", "h"]].astype(float), [ASTRONAUT_BOX] * 2, atol=8)
