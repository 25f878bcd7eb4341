"""Export: the TF Serving SavedModel (fresh process, saved_model_cli, warm-up protos, labels, no duplicated weights),
the TFLite variants and ONNX against it, and the parity check that stops a broken conversion."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf import config, export, runs
from fbnet_tf.labels import AU_NAMES, EXPRESSIONS, VA_NAMES
from fbnet_tf.records import Sample, encode_example

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # the `tiny` preset


def write_records(directory: Path, source="demo", counts=(("train", 24), ("validation", 12)), seed=0):
    """`<source>-<split>.tfrecord-00000-of-00001` shards of smooth random 112x112 JPEG crops."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in counts:
        with tf.io.TFRecordWriter(str(directory / f"{source}-{split}.tfrecord-00000-of-00001")) as writer:
            for i in range(count):
                image = cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 2)
                encoded = cv2.imencode(".jpg", image)[1].tobytes()
                writer.write(encode_example(Sample(encoded, 112, 112, source, split, f"{split}/{i}", expr=i % 7)))
    return directory


def make_run_dir(root: Path, seed=0) -> Path:
    """A run directory as fbnet_tf.train leaves it (config.yaml, model.keras) with the `tiny` preset and records.

    The head weights are scaled up so the untrained model's outputs are spread out (near-uniform probabilities make
    argmax agreement a coin toss)."""
    import keras

    from fbnet_tf.models import build_inference_model

    run = root / "run"
    records = write_records(root / "records", seed=seed)
    cfg = config.override(config.ExperimentConfig(), ["model.preset=tiny"])
    cfg.data.record_dirs = [str(records)]
    keras.utils.set_random_seed(seed)
    model = build_inference_model(cfg)
    for weight in model.weights:
        if weight.path.endswith("kernel") and len(weight.shape) == 2:
            weight.assign(weight.numpy() * 4.0)
    run.mkdir(parents=True)
    config.save(cfg, run / "config.yaml")
    model.save(run / "model.keras")
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = make_run_dir(root)
    export.main(["--run-dir", str(run), "--formats", "savedmodel,tflite", "--out", str(root / "out"),
                 "--model-name", "fbnet", "--version", "3"])
    return {"run": run, "out": root / "out", "version_dir": root / "out" / "fbnet" / "3",
            "model": runs.load_inference_model(run)}


def model_view(crops_uint8):
    """The training framing, done independently: resize bilinear to round(S * 112 / 96), keep the centre S."""
    side = round(SIZE * 112 / 96)
    top = (side - SIZE) // 2
    resized = tf.image.resize(tf.cast(crops_uint8, tf.float32), (side, side), method="bilinear").numpy()
    return resized[:, top:top + SIZE, top:top + SIZE]


def keras_outputs(model, crops_uint8):
    """What the serving signature must compute: the training framing, then the Keras model."""
    return {k: np.asarray(v) for k, v in model(model_view(crops_uint8), training=False).items()}


def test_savedmodel_round_trip_in_a_fresh_process_that_imports_only_tensorflow(exported, tmp_path):
    crops = np.random.default_rng(5).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    odd = np.random.default_rng(6).integers(0, 256, (2, 80, 57, 3), dtype=np.uint8)  # any H, W
    np.save(tmp_path / "crops.npy", crops)
    np.save(tmp_path / "odd.npy", odd)
    script = f"""
import json, sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load({str(exported['version_dir'])!r})
out = {{}}
for name in ("crops", "odd"):
    images = np.load({str(tmp_path)!r} + "/" + name + ".npy")
    result = loaded.signatures["serving_default"](images=tf.constant(images))
    out[name] = {{k: v.numpy().tolist() for k, v in result.items()}}
out["labels"] = {{k: [s.decode() for s in v.numpy()] for k, v in loaded.signatures["labels"]().items()}}
out["foreign"] = sorted(m for m in sys.modules if m.split(".")[0] in ("fbnet_tf", "keras"))
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [m for m in result["foreign"] if m.startswith("fbnet_tf")]
    for name, images in (("crops", crops), ("odd", odd)):
        expected = keras_outputs(exported["model"], images)
        assert set(result[name]) == {"valence_arousal", "expression", "action_units"}
        for key, value in expected.items():
            np.testing.assert_allclose(np.array(result[name][key]), value, atol=1e-5)
    assert result["labels"] == {"expression": list(EXPRESSIONS), "action_units": list(AU_NAMES),
                                "valence_arousal": list(VA_NAMES)}


def test_saved_model_cli_lists_the_signatures(exported):
    cli = Path(sys.executable).parent / "saved_model_cli"
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    done = subprocess.run(command + ["show", "--dir", str(exported["version_dir"]), "--all"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    for signature in ("serving_default", "preprocessed", "labels"):
        assert f"signature_def['{signature}']" in text
    serving = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['images'] tensor_info:" in serving and "dtype: DT_UINT8" in serving
    assert "shape: (-1, -1, -1, 3)" in serving
    for output in ("valence_arousal", "expression", "action_units"):
        assert f"outputs['{output}']" in serving
    preprocessed = text.split("signature_def['preprocessed']")[1].split("signature_def[")[0]
    assert f"shape: (-1, {SIZE}, {SIZE}, 3)" in preprocessed and "DT_FLOAT" in preprocessed


def test_serving_layout_labels_asset_and_weights_stored_once(exported):
    version_dir = exported["version_dir"]
    assert (version_dir / "saved_model.pb").is_file()
    labels = json.loads((version_dir / "assets" / "labels.json").read_text())
    assert labels == {"valence_arousal": list(VA_NAMES), "expression": list(EXPRESSIONS),
                      "action_units": list(AU_NAMES)}
    # Every tensor in the checkpoint, counted by the checkpoint reader: exactly the model's parameters, once
    # (Keras' model.export() stores them twice).
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    dtypes = reader.get_variable_to_dtype_map()
    stored = sum(int(np.prod(shape)) * dtypes[name].size for name, shape in reader.get_variable_to_shape_map().items()
                 if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert stored == 4 * exported["model"].count_params()


def _prediction_log_classes():
    """PredictionLog / PredictRequest built from descriptors (tensorflow_serving's protos are not installable here),
    independent of the hand-written encoder in fbnet_tf.export."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorflow.core.framework import tensor_pb2

    pool = descriptor_pool.DescriptorPool()
    pending = [tensor_pb2.DESCRIPTOR]
    seen = set()
    while pending:  # tensor.proto and what it imports, dependencies first
        file = pending[-1]
        missing = [d for d in file.dependencies if d.name not in seen]
        if missing:
            pending.extend(missing)
            continue
        pending.pop()
        if file.name not in seen:
            proto = descriptor_pb2.FileDescriptorProto()
            file.CopyToProto(proto)
            pool.Add(proto)
            seen.add(file.name)
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="serving_test.proto", package="tensorflow.serving",
                                               dependency=["tensorflow/core/framework/tensor.proto"], syntax="proto3")

    def message(name, *fields):
        m = proto.message_type.add(name=name)
        for number, field_name, kind, type_name, label in fields:
            m.field.add(name=field_name, number=number, type=kind, type_name=type_name, label=label)
        return m

    optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("ModelSpec", (1, "name", F.TYPE_STRING, None, optional),
            (3, "signature_name", F.TYPE_STRING, None, optional))
    request = message("PredictRequest",
                      (1, "model_spec", F.TYPE_MESSAGE, ".tensorflow.serving.ModelSpec", optional),
                      (2, "inputs", F.TYPE_MESSAGE, ".tensorflow.serving.PredictRequest.InputsEntry", repeated))
    entry = request.nested_type.add(name="InputsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=".tensorflow.TensorProto", label=optional)
    message("PredictLog", (1, "request", F.TYPE_MESSAGE, ".tensorflow.serving.PredictRequest", optional))
    message("PredictionLog", (6, "predict_log", F.TYPE_MESSAGE, ".tensorflow.serving.PredictLog", optional))
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.PredictionLog"))


def test_warmup_requests_parse_back_as_prediction_logs_of_real_crops(exported):
    PredictionLog = _prediction_log_classes()
    path = exported["version_dir"] / "assets.extra" / "tf_serving_warmup_requests"
    records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    assert len(records) == 2
    signature = tf.saved_model.load(str(exported["version_dir"])).signatures["serving_default"]
    for raw, batch in zip(records, (1, 8)):
        log = PredictionLog.FromString(raw)
        request = log.predict_log.request
        assert request.model_spec.name == "fbnet" and request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["images"]
        images = tf.make_ndarray(request.inputs["images"])
        assert images.dtype == np.uint8 and images.shape == (batch, 112, 112, 3)  # crops as a client sends them
        assert images.std() > 5  # real crops, not zeros
        outputs = signature(images=tf.constant(images))  # the request is servable as is
        assert outputs["expression"].shape == (batch, 7)


def test_every_tflite_variant_agrees_with_the_savedmodel_within_the_reported_bounds(exported):
    report = json.loads((exported["out"] / "parity-3.json").read_text())
    assert set(report["files"]) == {"savedmodel", *(f"tflite_{v}" for v in export.TFLITE_VARIANTS)}
    # Recompute parity independently on fresh images, and hold the strict variants to their bounds.
    images = np.random.default_rng(9).uniform(0, 255, (16, SIZE, SIZE, 3)).astype(np.float32)
    reference = {k: np.asarray(v) for k, v in exported["model"](images, training=False).items()}
    for variant in export.TFLITE_VARIANTS:
        row = report["files"][f"tflite_{variant}"]
        path = Path(row["path"])
        assert path.stat().st_size == row["bytes"] and row["finite"]
        got = export.tflite_runner(path)(images)
        va_bound, prob_bound, agreement_bound = export.PARITY_BOUNDS[variant]
        assert np.isfinite(got["expression"]).all()
        np.testing.assert_allclose(got["expression"].sum(1), 1.0, atol=0.02)
        if variant != "int8":  # full-integer may drift past its bounds on an untrained model; it only warns
            assert row["ok"]
            assert np.abs(got["valence_arousal"] - reference["valence_arousal"]).max() <= va_bound
            assert np.abs(got["action_units"] - reference["action_units"]).max() <= prob_bound
            assert np.mean(got["expression"].argmax(1) == reference["expression"].argmax(1)) >= agreement_bound
    sizes = {v: report["files"][f"tflite_{v}"]["bytes"] for v in export.TFLITE_VARIANTS}
    assert sizes["dynamic"] < sizes["fp32"] and sizes["int8"] < sizes["fp32"]


def test_parity_check_stops_a_conversion_that_outputs_nan():
    reference = {"valence_arousal": np.zeros((4, 2)), "expression": np.eye(7)[:4],
                 "action_units": np.full((4, 17), 0.5)}
    broken = {k: np.full_like(v, np.nan) for k, v in reference.items()}
    with pytest.raises(export.ParityError, match="NaN"):
        export.check_parity("broken.tflite", "dynamic", reference, broken)
    shifted = {**reference, "action_units": reference["action_units"] + 0.01}
    with pytest.raises(export.ParityError, match="fp32"):
        export.check_parity("off.tflite", "fp32", reference, shifted)
    with pytest.raises(export.ParityError, match="range"):
        export.check_parity("wild.tflite", "int8", reference, {**reference, "expression": reference["expression"] * 3})
    report = export.check_parity("ok.tflite", "dynamic", reference, shifted)
    assert report["ok"] and report["max_abs_d_au_prob"] == pytest.approx(0.01)
    assert report["expression_argmax_agreement"] == 1.0


@pytest.mark.slow  # tf2onnx takes ~10 s even on the tiny model
def test_onnx_export_agrees_with_the_savedmodel(exported, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    path = export.convert_onnx(exported["version_dir"], tmp_path / "fbnet.onnx")
    images = np.random.default_rng(3).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    got = export.onnx_runner(path)(images)
    expected = export.savedmodel_runner(exported["version_dir"])(images)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)


def test_export_refuses_to_overwrite_a_version(exported):
    with pytest.raises(FileExistsError, match="version"):
        export.save_savedmodel(exported["model"], exported["version_dir"])


def test_training_record_dirs_resolve_paths_relative_to_where_training_ran(tmp_path):
    # Training ran in `project/` with record_dirs=["data/records"]; the run lives in project/runs/demo.
    (tmp_path / "project" / "data" / "records").mkdir(parents=True)
    run = tmp_path / "project" / "runs" / "demo"
    run.mkdir(parents=True)
    cfg = config.ExperimentConfig()
    cfg.data.record_dirs = ["data/records", "data/missing"]
    config.save(cfg, run / "config.yaml")
    assert export.training_record_dirs(run) == [str(tmp_path / "project" / "data" / "records")]
    cfg.data.record_dirs = ["data/missing"]
    config.save(cfg, run / "config.yaml")
    with pytest.raises(ValueError, match="--representative"):
        export.training_record_dirs(run)


def test_each_export_is_a_new_version_with_its_own_parity_report(exported):
    out = exported["out"]
    before = (out / "parity-3.json").read_bytes()
    assert export.main(["--run-dir", str(exported["run"]), "--out", str(out), "--tflite-variants", "fp32"]) == 0
    assert (out / "parity-3.json").read_bytes() == before  # version 3's report and files are left alone
    report = json.loads((out / "parity-4.json").read_text())
    assert report["version"] == 4 and set(report["files"]) == {"savedmodel", "tflite_fp32"}
    assert report["files"]["savedmodel"]["path"] == str(out / "fbnet" / "4")
    assert report["files"]["tflite_fp32"]["path"] == str(out / "tflite" / "4" / "fbnet_fp32.tflite")
    assert (out / "fbnet" / "4" / "saved_model.pb").is_file()
    assert Path(report["files"]["tflite_fp32"]["path"]).stat().st_size == report["files"]["tflite_fp32"]["bytes"]
    assert sorted(p.name for p in (out / "tflite").iterdir()) == ["3", "4"]
    assert not list(out.glob(".export-*"))


def test_a_failed_export_leaves_no_version_behind(tmp_path, capsys):
    import keras

    # A diverged run: NaN in its first kernel. The SavedModel is written (its outputs stay finite on this CPU),
    # then the TFLite file, which outputs NaN: the parity check refuses it.
    run = make_run_dir(tmp_path)
    model = keras.models.load_model(run / "model.keras", compile=False)
    kernel = next(w for w in model.weights if w.path.endswith("kernel"))
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    model.save(run / "model.keras")
    out = tmp_path / "out"
    (out / "fbnet" / "1").mkdir(parents=True)  # an earlier, good version
    (out / "fbnet" / "1" / "saved_model.pb").write_bytes(b"earlier")
    assert export.main(["--run-dir", str(run), "--out", str(out), "--tflite-variants", "fp32"]) == 1
    err = capsys.readouterr().err
    assert "error: TFLite fp32 (version 2): outputs NaN/Inf on the parity images" in err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["fbnet", "fbnet/1", "fbnet/1/saved_model.pb"]


def test_export_arguments_are_checked_before_any_work(exported, tmp_path, capsys):
    for argv in (["--formats", "savedmodel,tflite,onnnx"], ["--tflite-variants", "fp32,int4"], ["--version", "0"],
                 ["--representative", str(tmp_path / "nowhere")]):
        with pytest.raises(SystemExit) as stop:
            export.main(["--run-dir", str(exported["run"]), "--out", str(tmp_path / "out"), *argv])
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "expected some of savedmodel, tflite, onnx" in err and "['int4']" in err
    assert "argument --version: expected an integer >= 1, got '0'" in err and "nowhere: no such folder" in err
    assert not (tmp_path / "out").exists()
