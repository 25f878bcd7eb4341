"""FATAUVA-Net exported and predicted through the same commands: SavedModel and TFLite outputs carry `attributes` and
its own 14 AUs, with their names in labels.json; predict writes the columns the model has, equal to Keras."""
import json

import numpy as np
import pytest
import skimage.data

tf = pytest.importorskip("tensorflow")

import fbnet_tf  # noqa: E402
from fbnet_tf import config, export, face, predict, runs  # noqa: E402
from fbnet_tf.models import fatauvanet as fv  # noqa: E402
from test_export import model_view, write_records  # noqa: E402


pytestmark = pytest.mark.slow  # a SavedModel and a TFLite conversion of the branchy graph: ~1.5 min on 2 cores


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("fatauva_export")
    records = write_records(root / "records")
    cfg = config.override(config.experiment("fatauvanet_cls"), ["model.preset=fatauva_tiny",
                                                                f"data.stage_record_dirs={{va: [{records}]}}"])
    keras.utils.set_random_seed(0)
    model = fv.build_inference_model(cfg)
    run = root / "run"
    run.mkdir()
    config.save(cfg, run / "config.yaml")
    model.save(run / "model.keras")
    result = export.export(run, "savedmodel,tflite", root / "out", model_name="fatauva", tflite_variants=["fp32"])
    return {"run": run, "result": result, "model": runs.load_inference_model(run), "out": root / "out"}


def test_savedmodel_and_tflite_carry_attributes_and_the_models_own_aus(exported):
    version_dir = exported["result"]["savedmodel"]
    expected = {"valence_arousal": ["valence", "arousal"], "action_units": list(fv.AU_NAMES),
                "attributes": list(fv.ATTRIBUTES)}
    assert json.loads((version_dir / "assets" / "labels.json").read_text()) == expected
    assert json.loads((exported["result"]["tflite"]["fp32"].parent / "labels.json").read_text()) == expected
    loaded = tf.saved_model.load(str(version_dir))
    names = {k: [x.decode() for x in v.numpy()] for k, v in loaded.signatures["labels"]().items()}
    assert names == expected and names["action_units"][-1] == "AU45"
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    served = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=tf.constant(crops)).items()}
    keras_out = {k: np.asarray(v) for k, v in exported["model"](model_view(crops), training=False).items()}
    assert sorted(served) == sorted(expected) and served["attributes"].shape == (3, 10)
    for key in expected:
        np.testing.assert_allclose(served[key], keras_out[key], atol=1e-5)
    parity = exported["result"]["parity"]["files"]["tflite_fp32"]
    assert parity["ok"] and parity["max_abs_d_attribute_prob"] < 1e-3


def test_predict_writes_the_columns_the_model_has(exported, tmp_path):
    astronaut = skimage.data.astronaut()
    expected_columns = (*predict.FACE_COLUMNS, "valence", "arousal", *fv.AU_NAMES, *fv.ATTRIBUTES)
    found = face.detect(astronaut)[0]
    crop = face.align(astronaut, found.landmarks, 112)
    keras_out = {k: np.asarray(v)[0] for k, v in exported["model"](model_view(crop[None]), training=False).items()}
    for source in (exported["result"]["savedmodel"], exported["result"]["tflite"]["fp32"], exported["run"]):
        table = fbnet_tf.Predictor(source).predict(astronaut)
        assert tuple(table.columns) == expected_columns and len(table) == 1, source
        row = table.iloc[0]
        np.testing.assert_allclose(row[list(fv.ATTRIBUTES)].astype(float), keras_out["attributes"], atol=1e-4)
        np.testing.assert_allclose(row[list(fv.AU_NAMES)].astype(float), keras_out["action_units"], atol=1e-4)
        np.testing.assert_allclose(row[["valence", "arousal"]].astype(float), keras_out["valence_arousal"],
                                   atol=1e-4)
    image = tmp_path / "astronaut.png"
    import cv2

    cv2.imwrite(str(image), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    predict.main([str(image), "--model", str(exported["result"]["savedmodel"]), "--out", str(tmp_path / "out"),
                  "--annotate"])
    header = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == expected_columns
    assert (tmp_path / "out" / "annotated" / "astronaut.png").is_file()
