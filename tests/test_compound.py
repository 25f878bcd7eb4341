"""Compound recognition: the paper's zero-shot candidate score on hand-worked inputs, the class sets, the command on
RAF-DB- and EmotioNet-style records; few-shot fine-tuning, whose run exports and predicts like any run."""
import json

import numpy as np
import pytest

from fbnet_tf import compound
from fbnet_tf.labels import AUS, COMPOUND_EXPRESSIONS, EXPRESSIONS, RAFDB_COMPOUND


def _au(*numbers):
    probs = np.zeros(len(AUS))
    for number in numbers:
        probs[AUS.index(number)] = 1.0
    return probs


def _expr(**probs):
    out = np.zeros(len(EXPRESSIONS))
    for name, p in probs.items():
        out[EXPRESSIONS.index(name)] = p
    return out


def test_happily_surprised_by_hand_with_either_valence():
    # Du et al.: Happily Surprised = 1, 2, 12, 25 prototypical, 5 and 26 observational -> 6 AUs in p(AU|c).
    au = _au(1, 2, 12, 25)
    expr = _expr(Happiness=0.5, Surprise=0.3, Neutral=0.2)
    scores = compound.candidate_scores(np.stack([au, au, au]), np.stack([expr] * 3), [0.4, -0.4, 0.0], "rafdb")
    hs = RAFDB_COMPOUND.index("Happily Surprised")
    np.testing.assert_allclose(scores[:, hs], [4 / 6 + 0.8 + 1.0, 4 / 6 + 0.8, 4 / 6 + 0.8])
    # Happily Disgusted (10, 12, 25 | 4, 6, 9): 2 of 6 AUs, p(happy) + p(disgust) = 0.5, the same valence term.
    hd = RAFDB_COMPOUND.index("Happily Disgusted")
    np.testing.assert_allclose(scores[:, hd], [2 / 6 + 0.5 + 1.0, 2 / 6 + 0.5, 2 / 6 + 0.5])
    # No other class gets a valence term: Sadly Surprised (1, 4, 25, 26 | 2, 6) = 3/6 AUs + p(surprise) 0.3.
    ss = RAFDB_COMPOUND.index("Sadly Surprised")
    np.testing.assert_allclose(scores[:, ss], [3 / 6 + 0.3] * 3)
    assert scores[0].argmax() == hs


def test_a_class_whose_aus_are_all_absent_scores_its_expressions_only():
    expr = _expr(Sadness=0.6, Anger=0.3, Fear=0.1)
    scores = compound.candidate_scores(np.zeros((1, len(AUS))), expr[None], [-1.0], "rafdb")
    sa = RAFDB_COMPOUND.index("Sadly Angry")
    assert scores[0, sa] == pytest.approx(0.9)
    assert scores[0].argmax() == sa


def test_table_weights_option():
    # Weighted p(AU|c): 1+1+1+1 prototypical, 0.64 (AU5) + 0.67 (AU26) observational.
    au = _au(1, 2, 12, 25, 5)
    scores = compound.candidate_scores(au[None], _expr(Neutral=1.0)[None], [-0.1], ["Happily Surprised"],
                                       use_weights=True)
    assert scores[0, 0] == pytest.approx((4 + 0.64) / (4 + 0.64 + 0.67))


def test_basic_classes_in_a_mixed_set_use_the_basic_table_twice():
    # Happiness (Du et al. basic): 12, 25 prototypical, 6 observational.
    scores = compound.candidate_scores(_au(12)[None], _expr(Happiness=0.7, Neutral=0.3)[None], [0.5], "emotionet")
    assert scores[0, compound.class_set("emotionet").index("Happiness")] == pytest.approx(1 / 3 + 1.4)


def test_class_sets_resolve_against_the_label_spaces():
    rafdb, emotionet = compound.class_set("rafdb"), compound.class_set("emotionet")
    assert len(rafdb) == 11 and set(rafdb) <= set(COMPOUND_EXPRESSIONS) and "Fearfully Disgusted" not in rafdb
    assert len(emotionet) == 16 and len(set(emotionet) & set(EXPRESSIONS)) == 6
    assert len(set(emotionet) & set(COMPOUND_EXPRESSIONS)) == 10
    with pytest.raises(ValueError, match="Gleefully Bored"):
        compound.class_set(["Happily Surprised", "Gleefully Bored"])


def test_true_classes_map_compound_then_basic_labels():
    names = compound.class_set("emotionet")
    truth = compound.true_classes(expr=[4, -1, -1, 0], compound=[-1, COMPOUND_EXPRESSIONS.index("Sadly Angry"),
                                                                    COMPOUND_EXPRESSIONS.index("Awed"), -1],
                                  classes=names)
    assert truth.tolist() == [names.index("Happiness"), names.index("Sadly Angry"), -1, -1]  # Awed, Neutral: not in


def _compound_records(directory, splits=(("test", 33),), source="rafdb_compound", classes=RAFDB_COMPOUND):
    """Compound-labelled records of `source`: smooth random crops, the i-th labelled `classes[i % len(classes)]`
    (a basic class as the record's `expr`, a compound one as its `compound`), as the builders write them."""
    import cv2
    import tensorflow as tf

    from fbnet_tf.records import Sample, encode_example

    directory.mkdir()
    rng = np.random.default_rng(1)
    for split, count in splits:
        with tf.io.TFRecordWriter(str(directory / f"{source}-{split}.tfrecord-00000-of-00001")) as writer:
            for i in range(count):
                image = cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 2)
                name = classes[i % len(classes)]
                labels = {"expr": EXPRESSIONS.index(name)} if name in EXPRESSIONS \
                    else {"compound": COMPOUND_EXPRESSIONS.index(name)}
                writer.write(encode_example(Sample(cv2.imencode(".jpg", image)[1].tobytes(), 112, 112,
                                                   source, split, f"{split}_{i}.jpg", **labels)))
    return directory


@pytest.mark.slow
def test_zero_shot_command_on_compound_records(tmp_path):
    """The CLI on RAF-DB-compound-style records: its mean diagonal equals sklearn's on the scores' arg-max."""
    from sklearn.metrics import confusion_matrix

    from fbnet_tf import runs
    from fbnet_tf.evaluate import predict_records
    from test_export import make_run_dir, write_records

    run = make_run_dir(tmp_path)
    records = _compound_records(tmp_path / "rafdb_compound")
    assert compound.main(["zero-shot", "--model", str(run), "--data", str(records), "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "compound.json").read_text())["rafdb"]
    assert written["count"] == 33 and (tmp_path / "compound_confusion_rafdb.png").stat().st_size > 0

    collected = predict_records(runs.load_inference_model(run), str(records), "test")
    scores = compound.candidate_scores(collected["pred_action_units"], collected["pred_expression"],
                                       collected["pred_valence_arousal"][:, 0], "rafdb")
    truth = np.arange(33) % 11
    matrix = confusion_matrix(truth, scores.argmax(1), labels=range(11))
    assert written["mean_diagonal"] == pytest.approx(np.mean(np.diag(matrix) / matrix.sum(1)))

    # records without a compound label: nothing to evaluate -> a non-zero exit
    empty = tmp_path / "basic"
    write_records(empty, source="rafdb", counts=(("test", 4),))
    assert compound.main(["zero-shot", "--model", str(run), "--data", str(empty), "--out", str(tmp_path / "x")]) == 1


@pytest.mark.slow
def test_zero_shot_on_emotionet_records_prints_f1_and_uar_over_its_16_classes(tmp_path, capsys):
    """EmotioNet-style records (6 basic + 10 compound classes, and Neutral, which is not one of them): the printed
    Table 5 row's F1 and UAR are sklearn's on the candidate scores' arg-max over the 16 classes."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from fbnet_tf import runs
    from fbnet_tf.evaluate import predict_records
    from test_export import make_run_dir

    run = make_run_dir(tmp_path)
    names = compound.class_set("emotionet")
    records = _compound_records(tmp_path / "emotionet", (("test", 35),), "emotionet", [*names, "Neutral"])
    assert compound.main(["zero-shot", "--model", str(run), "--data", str(records), "--out", str(tmp_path)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| zero-shot")]
    f1, uar, rafdb = [cell.strip() for cell in row[0].strip("|").split("|")[1:]]
    written = json.loads((tmp_path / "compound.json").read_text())["emotionet"]
    assert written["count"] == 33 and written["classes"] == list(names) and rafdb == "-"  # Neutral left out

    collected = predict_records(runs.load_inference_model(run), str(records), "test")
    predicted = compound.candidate_scores(collected["pred_action_units"], collected["pred_expression"],
                                          collected["pred_valence_arousal"][:, 0], "emotionet").argmax(1)
    truth = np.arange(35) % 17
    labelled = truth < 16
    expected_f1 = f1_score(truth[labelled], predicted[labelled], average="macro", zero_division=0)
    expected_uar = balanced_accuracy_score(truth[labelled], predicted[labelled])
    assert (f1, uar) == (f"{expected_f1:.3f}", f"{expected_uar:.3f}")
    assert (written["f1"], written["uar"]) == (pytest.approx(expected_f1), pytest.approx(expected_uar))


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """A tiny run fine-tuned head-only, through the CLI, on RAF-DB-compound-style train (44) and test (22) records."""
    from test_export import make_run_dir

    root = tmp_path_factory.mktemp("few_shot")
    run = make_run_dir(root)
    records = _compound_records(root / "rafdb_compound", (("train", 44), ("test", 22)))
    out = root / "few_shot"
    assert compound.main(["fine-tune", "--model", str(run), "--data", str(records), "--run-dir", str(out),
                          "--head-only", "--epochs", "3", "--learning-rate", "1e-2", "--batch-size", "11"]) == 0
    return {"run": run, "records": records, "out": out}


def _test_crops(records):
    """The records' test crops as stored (uint8 112x112), in record order."""
    from fbnet_tf import data, export

    return np.round(export.record_images(data.record_files(str(records), "test"), 112, 100,
                                         model_view=False)).astype(np.uint8)


@pytest.mark.slow
def test_fine_tune_head_only_keeps_the_features_and_scores_the_test_split(fine_tuned):
    import keras
    from sklearn.metrics import recall_score

    from fbnet_tf import runs
    from fbnet_tf.models.facebehaviornet import network_of

    run, records, out = fine_tuned["run"], fine_tuned["records"], fine_tuned["out"]
    tuned = keras.models.load_model(out / "model.keras")
    assert [w.path for w in tuned.trainable_weights] == ["compound/kernel", "compound/bias"]  # still head-only
    images = np.stack([x for x, _ in compound.compound_dataset([str(records)], "test", RAFDB_COMPOUND, 32, 64,
                                                               training=False).unbatch().as_numpy_iterator()])
    network = network_of(runs.load_inference_model(run))
    trained_features = keras.Model(network.input, network.get_layer("dropout7").output)
    # frozen: the fine-tuned model's features are the trained network's, exactly
    np.testing.assert_array_equal(tuned.get_layer("facebehaviornet_features")(images, training=False).numpy(),
                                  trained_features(images, training=False).numpy())
    written = json.loads((out / "compound.json").read_text())["rafdb"]
    predicted = np.asarray(tuned.predict(images, verbose=0)["compound"]).argmax(1)
    truth = np.arange(22) % 11
    assert written["count"] == 22
    assert written["uar"] == pytest.approx(recall_score(truth, predicted, average="macro", labels=range(11),
                                                        zero_division=0))


@pytest.mark.slow
def test_a_fine_tuned_run_exports_and_predicts_its_compound_classes(fine_tuned, tmp_path, capsys):
    """The fine-tuned run is a run: its config says what it is, export writes the class names beside a SavedModel
    and a TFLite file that compute the Keras model's probabilities, and predict writes them as columns."""
    import skimage.data
    import tensorflow as tf

    from fbnet_tf import Predictor, export, face, predict, runs
    from test_export import model_view

    out, records = fine_tuned["out"], fine_tuned["records"]
    cfg = runs.load_config(out)
    assert cfg.compound.base == str(fine_tuned["run"].absolute()) and cfg.compound.head_only
    assert cfg.compound.classes == list(RAFDB_COMPOUND) and cfg.data.record_dirs == [str(records.absolute())]
    assert (cfg.trainer.epochs, cfg.trainer.learning_rate, cfg.data.batch_size) == (3, 1e-2, 11)

    result = export.export(out, "savedmodel,tflite", tmp_path / "export", tflite_variants=["fp32"])
    model = runs.load_inference_model(out)
    crops = _test_crops(records)
    expected = np.asarray(model(model_view(crops), training=False)["compound"])
    assert expected.shape == (22, 11)
    loaded = tf.saved_model.load(str(result["savedmodel"]))
    labels = {k: [n.decode() for n in v.numpy()] for k, v in loaded.signatures["labels"]().items()}
    assert labels == {"compound": list(RAFDB_COMPOUND)}
    served = loaded.signatures["serving_default"](images=tf.constant(crops))["compound"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    tflite = result["tflite"]["fp32"]
    assert json.loads((tflite.parent / "labels.json").read_text()) == labels
    np.testing.assert_allclose(export.tflite_runner(tflite)(model_view(crops))["compound"], expected, atol=1e-5)

    # predict: the class names as columns, the arg-max as top_compound, the Keras model's values on the crop
    astronaut = skimage.data.astronaut()
    table = Predictor(result["savedmodel"]).predict(astronaut)
    assert list(table.columns) == [*predict.FACE_COLUMNS, "top_compound", *RAFDB_COMPOUND] and len(table) == 1
    crop = face.align(astronaut, face.detect(astronaut)[0].landmarks, 112)
    on_crop = np.asarray(model(model_view(crop[None]), training=False)["compound"])[0]
    np.testing.assert_allclose(table.loc[0, list(RAFDB_COMPOUND)].astype(float), on_crop, atol=1e-5)
    assert table.loc[0, "top_compound"] == RAFDB_COMPOUND[int(on_crop.argmax())]
    written = tmp_path / "predicted"
    assert predict.main([str(_image_file(tmp_path, astronaut)), "--model", str(tflite), "--out", str(written)]) == 0
    with open(written / "predictions.csv") as handle:
        header = handle.readline().strip().split(",")
    assert header == [*predict.FACE_COLUMNS, "top_compound", *RAFDB_COMPOUND]

    # the candidate score needs the base model's outputs: a fine-tuned run is refused, with the reason
    assert compound.main(["zero-shot", "--model", str(out), "--data", str(records), "--out", str(tmp_path)]) == 1
    # nor is there anything for evaluate to score: it says so and exits 1, leaving compound.json alone
    from fbnet_tf import evaluate

    assert evaluate.main(["--run-dir", str(out), "--data", str(records)]) == 1
    assert "none that evaluate scores" in capsys.readouterr().err and not (out / "evaluation.json").exists()


def _image_file(folder, image):
    import cv2

    path = folder / "face.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path
