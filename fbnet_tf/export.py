"""Export a trained run for deployment: a TF Serving SavedModel, TFLite variants and (optionally) ONNX.

    python -m fbnet_tf.export --run-dir runs/demo --formats savedmodel,tflite,onnx --out runs/demo/export

Layout written under `--out` (default `<run-dir>/export`):

    <model_name>/<n>/                           TF Serving model (saved_model.pb, variables/, assets/labels.json,
                                                assets.extra/tf_serving_warmup_requests)
    tflite/<n>/<model_name>_{fp32,dynamic,float16,int8}.tflite, tflite/<n>/labels.json
    onnx/<n>/<model_name>.onnx, onnx/<n>/labels.json
    parity-<n>.json                             every converted file against the SavedModel on held-out images

Each export is a new version n (the next free one, or `--version`): nothing of an earlier version is replaced, and
an export that fails leaves nothing behind (it is built in a scratch folder and moved into place at the end).

SavedModel signatures:
  serving_default  images: uint8 [N, H, W, 3] aligned face crops of any size -> valence_arousal [N,2],
                   expression [N,7], action_units [N,17]  (framing as in training, `data.centre_crop`, and
                   normalisation inside the graph)
  preprocessed     image: float32 [N, S, S, 3] RGB 0..255, framed at the model's input size -> the same outputs
  labels           () -> expression [7], action_units [17], valence_arousal [2] names (strings)
A FATAUVA-Net run has `valence_arousal`, `action_units` over its own 14 AUs (AU45 included) and `attributes` [N,10]
instead; a fine-tuned compound run (`fbnet_tf.compound fine-tune`) has `compound` [N,C] alone, over its class set;
`labels` and `assets/labels.json` name the columns of whatever outputs the model has.
The TFLite and ONNX files hold the `preprocessed` function (signature `serving_default`, input `image` float32
[N, S, S, 3], the same named outputs; frame crops with `data.centre_crop` first; int8 TFLite takes uint8 input).
The SavedModel is always written: it is the reference every other file is checked against.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from fbnet_tf import cli
from fbnet_tf.labels import AU_NAMES, EXPRESSIONS, VA_NAMES
from fbnet_tf.records import SPLITS

log = logging.getLogger(__name__)

OUTPUTS = ("valence_arousal", "expression", "action_units", "attributes", "compound")
FORMATS = ("savedmodel", "tflite", "onnx")
TFLITE_VARIANTS = ("fp32", "dynamic", "float16", "int8")
SERVING_INPUT = "images"
PREPROCESSED_INPUT = "image"
# Worst acceptable deviation from the SavedModel per variant: (max |dVA|, max |dprob|, min argmax agreement).
# fp32/ONNX must be the same function; float16 and the quantised variants are lossy by design, so they only warn.
PARITY_BOUNDS = {
    "fp32": (1e-3, 1e-3, 0.99), "onnx": (1e-3, 1e-3, 0.99), "float16": (2e-2, 2e-2, 0.95),
    "dynamic": (0.1, 0.1, 0.9), "int8": (0.25, 0.25, 0.8),
}
STRICT_VARIANTS = ("fp32", "onnx")


class ParityError(RuntimeError):
    """A converted model does not compute what the SavedModel computes (NaN, out of range, or off-bounds)."""


def labels_dict(model=None) -> dict[str, list[str]]:
    """The column names of each output, in output order: what `labels.json` and the `labels` signature carry.

    Those of `model`'s outputs (its family's own AU list, attributes ...); without a model, the canonical ones."""
    if model is None:
        return {"valence_arousal": list(VA_NAMES), "expression": list(EXPRESSIONS), "action_units": list(AU_NAMES)}
    from fbnet_tf.models.registry import label_names

    names = label_names(model)
    return {key: names[key] for key in OUTPUTS if key in names}


def model_input_size(model) -> int:
    """S of the model's fixed [N, S, S, 3] input."""
    shape = model.inputs[0].shape
    if shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"the inference model needs a fixed square input, got {tuple(shape)}")
    return int(shape[1])


def load_model(run_dir_or_file):
    """The run's inference model: a run dir, a `.keras` file or a checkpoint (`fbnet_tf.runs`)."""
    from fbnet_tf.runs import load_inference_model

    return load_inference_model(run_dir_or_file)


def model_outputs(model) -> list[str]:
    """The named outputs the model has, in `OUTPUTS` order (a single-task baseline has a subset)."""
    return [key for key in OUTPUTS if key in model.output]


# ---------------------------------------------------------------- SavedModel

def _serving_module(model):
    """A tf.Module that tracks the Keras model once and exposes the three signatures."""
    import tensorflow as tf

    size = model_input_size(model)
    present = model_outputs(model)
    names = {key: value for key, value in labels_dict(model).items() if key in present}

    def run(image):
        outputs = model(image, training=False)
        return {key: tf.identity(outputs[key], name=key) for key in present}

    from fbnet_tf.data import centre_crop

    def serve(images):
        # The framing the model was trained and evaluated on: the crop resized to size * 112/96, centre window.
        return run(centre_crop(images, size))

    def labels():
        return {key: tf.constant(value) for key, value in names.items()}

    module = tf.Module()
    module.model = model
    module.serve = tf.function(serve, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name=SERVING_INPUT)])
    module.preprocessed = tf.function(run, input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name=PREPROCESSED_INPUT)])
    module.labels = tf.function(labels, input_signature=[])
    return module


def _parameter_bytes(model) -> int:
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def save_savedmodel(model, version_dir, warmup_images=None, model_name="fbnet") -> Path:
    """Write the TF Serving SavedModel to `version_dir` (`<out>/<model_name>/<version>`); returns it.

    `warmup_images`: a few uint8 [N, H, W, 3] crops written as TF Serving warm-up requests.
    Raises if the variables hold more than the model's parameters (weights stored twice).
    """
    import tensorflow as tf

    version_dir = Path(version_dir)
    if version_dir.exists() and any(version_dir.iterdir()):
        raise FileExistsError(f"{version_dir} exists and is not empty; pick another --version or --out")
    module = _serving_module(model)
    with tempfile.TemporaryDirectory() as scratch:
        labels_file = Path(scratch) / "labels.json"
        labels_file.write_text(json.dumps(labels_dict(model), indent=1))
        module.labels_asset = tf.saved_model.Asset(str(labels_file))  # copied to assets/labels.json
        tf.saved_model.save(module, str(version_dir), signatures={
            "serving_default": module.serve, "preprocessed": module.preprocessed, "labels": module.labels})

    variables, params = _dir_bytes(version_dir / "variables"), _parameter_bytes(model)
    if variables > 1.2 * params + 1_000_000:
        raise RuntimeError(f"{version_dir}: variables hold {variables} bytes for {params} bytes of parameters "
                           "(weights saved twice?)")
    log.info("SavedModel %s: variables %.1f MB for %.1f MB of parameters", version_dir, variables / 1e6,
             params / 1e6)
    if warmup_images is not None:
        write_warmup_requests(version_dir, warmup_images, model_name)
    return version_dir


# Minimal protobuf wire encoding of tensorflow_serving's PredictionLog{predict_log{request}}: the serving protos
# are not installable without the full TensorFlow, and this needs four length-delimited fields.
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def predict_request_bytes(inputs: dict, model_name: str, signature_name: str = "serving_default") -> bytes:
    """Serialized `tensorflow.serving.PredictRequest`: model_spec{name=1, signature_name=3}=1, inputs map=2."""
    import tensorflow as tf

    spec = _field(1, model_name.encode()) + _field(3, signature_name.encode())
    request = _field(1, spec)
    for key, value in inputs.items():
        tensor = tf.make_tensor_proto(value).SerializeToString()
        request += _field(2, _field(1, key.encode()) + _field(2, tensor))  # map entry: key=1, value=2
    return request


def prediction_log_bytes(request: bytes) -> bytes:
    """Serialized `tensorflow.serving.PredictionLog` with predict_log (=6) { request (=1) }."""
    return _field(6, _field(1, request))


def write_warmup_requests(version_dir, images, model_name="fbnet", batch_sizes=(1, 8)) -> Path:
    """`assets.extra/tf_serving_warmup_requests`: one PredictRequest per batch size from real crops."""
    import tensorflow as tf

    images = np.asarray(images, np.uint8)
    path = Path(version_dir) / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batch_sizes:
            picked = images[np.arange(batch) % len(images)]
            writer.write(prediction_log_bytes(predict_request_bytes({SERVING_INPUT: picked}, model_name)))
    return path


# ---------------------------------------------------------------- data for calibration and parity

def record_files(record_dirs, splits=SPLITS) -> list[str]:
    """The `<source>-<split>.tfrecord-*` shards of the given splits in `record_dirs`, dealt round-robin over the
    directories (first shard of each, then the second of each, ...) so that any prefix spans every database."""
    import itertools

    from fbnet_tf.data import record_files as split_files

    per_dir = []
    for directory in record_dirs:
        if not split_files(directory, "*"):
            raise FileNotFoundError(f"{directory}: no <source>-<split>.tfrecord-* shards")
        per_dir.append([f for split in splits for f in split_files(directory, split)])
    return [f for group in itertools.zip_longest(*per_dir) for f in group if f is not None]


def record_images(files, size: int, count: int, skip: int = 0, *, model_view: bool = True) -> np.ndarray:
    """Up to `count` face crops from TFRecord shards, float32 RGB 0..255, taken in turn from every shard (so that
    every database is represented): as the model sees them at `size` (`fbnet_tf.data.eval_image`: the centre
    crop), or with `model_view=False` the whole stored crop resized to `size`."""
    import tensorflow as tf

    from fbnet_tf.data import eval_image
    from fbnet_tf.records import parse_example

    if not files:
        return np.zeros((0, size, size, 3), np.float32)

    def decode(serialized):
        encoded = parse_example(serialized)["image/encoded"]
        if model_view:
            return eval_image(encoded, size)
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")

    # One record from each of the first 32 shards in turn (record_files deals them round-robin over databases).
    dataset = (tf.data.Dataset.from_tensor_slices(list(files))
               .interleave(tf.data.TFRecordDataset, cycle_length=max(min(len(files), 32), 1))
               .skip(skip).take(count).map(decode))
    images = list(dataset.as_numpy_iterator())
    return np.stack(images).astype(np.float32) if images else np.zeros((0, size, size, 3), np.float32)


def calibration_and_holdout(record_dirs, size: int, calibration: int = 100, holdout: int = 64):
    """(representative images, held-out parity images): held-out from validation/test shards when there are any,
    else the training images after the calibration ones."""
    held_files = record_files(record_dirs, splits=("validation", "test"))
    train_files = record_files(record_dirs, splits=("train",)) or record_files(record_dirs)
    representative = record_images(train_files, size, calibration)
    held = (record_images(held_files, size, holdout) if held_files
            else record_images(train_files, size, holdout, skip=calibration))
    if len(representative) == 0 or len(held) == 0:
        raise ValueError(f"{list(record_dirs)}: too few records for calibration ({len(representative)}) "
                         f"and parity ({len(held)})")
    return representative, held


def training_record_dirs(run_dir) -> list[str]:
    """The record dirs the run was trained on (its config's `data.record_dirs` and per-stage ones), for the
    representative dataset.

    Relative paths were relative to wherever training ran: tried as given, then against the run dir's ancestors."""
    from fbnet_tf.runs import load_config

    run_dir = Path(run_dir).resolve()
    found, missing = [], []
    for directory in load_config(run_dir).data.all_record_dirs():
        candidates = [Path(directory)] + ([] if os.path.isabs(directory)
                                          else [base / directory for base in (run_dir, *run_dir.parents)])
        existing = [c for c in candidates if c.is_dir()]
        (found if existing else missing).append(str(existing[0]) if existing else directory)
    if not found:
        raise ValueError(f"{run_dir}/config.yaml: data.record_dirs {missing} not found (as given, nor under the run "
                         "dir's parents); pass --representative DIR")
    if missing:
        log.warning("record dirs of the run not found, left out: %s", missing)
    return found


# ---------------------------------------------------------------- runners and parity

def savedmodel_runner(version_dir):
    """fn(float32 [N,S,S,3]) -> dict of numpy outputs, through the SavedModel's `preprocessed` signature."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures["preprocessed"]
    return lambda images: {k: v.numpy() for k, v in signature(**{PREPROCESSED_INPUT: tf.constant(images)}).items()}


def tflite_runner(path, num_threads: int | None = None):
    """fn(float32 [N,S,S,3]) -> dict of numpy outputs through a .tflite file (the `preprocessed` function).

    Handles quantised (uint8/int8) inputs and outputs with their scale and zero point; `fn.input_size` is S.
    """
    import tensorflow as tf

    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": it still is the runtime TF ships
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
        runner = interpreter.get_signature_runner()  # the file's one signature
    (input_name, in_detail), = runner.get_input_details().items()
    out_details = runner.get_output_details()

    def run(images):
        x = np.asarray(images, np.float32)
        scale, zero = in_detail["quantization"]
        if in_detail["dtype"] != np.float32:
            info = np.iinfo(in_detail["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        outputs = runner(**{input_name: x.astype(in_detail["dtype"])})
        result = {}
        for key, value in outputs.items():
            scale, zero = out_details[key]["quantization"]
            result[key] = (value.astype(np.float32) - zero) * scale if value.dtype != np.float32 else value
        return result

    run.input_size = int(in_detail["shape"][1])
    return run


def onnx_runner(path, num_threads: int | None = None):
    """fn(float32 [N,S,S,3]) -> dict of numpy outputs through ONNX Runtime; `fn.input_size` is S."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def run(images):
        values = session.run(names, {input_name: np.asarray(images, np.float32)})
        return {_output_key(name): value for name, value in zip(names, values)}

    run.input_size = int(session.get_inputs()[0].shape[1])
    return run


def _output_key(name: str) -> str:
    for key in OUTPUTS:
        if key in name:
            return key
    raise KeyError(f"ONNX output {name!r} is none of {OUTPUTS}")


def run_batched(runner, images, batch_size: int = 16) -> dict:
    parts = [runner(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def parity(reference: dict, candidate: dict) -> dict:
    """Agreement of a converted model's outputs with the reference's on the same images (outputs it has)."""
    def max_diff(key):
        return float(np.max(np.abs(reference[key] - candidate[key]))) if key in reference else 0.0

    def argmax_agreement(key):
        return float(np.mean(reference[key].argmax(1) == candidate[key].argmax(1))) if key in reference else 1.0

    report = {"images": int(len(next(iter(reference.values())))),
              "finite": bool(all(np.isfinite(candidate[k]).all() for k in reference)),
              # Probabilities in [0, 1] and VA in [-1, 1] (quantisation may overshoot by a step, hence the slack).
              "in_range": bool(all(np.all(np.abs(candidate[k] - 0.5 * (k != "valence_arousal"))
                                          <= (1.0 if k == "valence_arousal" else 0.5) + 1e-2) for k in reference)),
              "expression_argmax_agreement": argmax_agreement("expression"),
              "compound_argmax_agreement": argmax_agreement("compound")}
    report.update(max_abs_d_va=max_diff("valence_arousal"), max_abs_d_expression=max_diff("expression"),
                  max_abs_d_au_prob=max_diff("action_units"), max_abs_d_attribute_prob=max_diff("attributes"),
                  max_abs_d_compound=max_diff("compound"))
    return report


def check_parity(name: str, variant: str, reference: dict, candidate: dict) -> dict:
    """`parity` plus the verdict; raises ParityError for NaN/Inf or a strict variant off its bounds."""
    report = parity(reference, candidate)
    va_bound, prob_bound, agreement_bound = PARITY_BOUNDS[variant]
    report["bounds"] = {"max_abs_d_va": va_bound, "max_abs_d_prob": prob_bound,
                        "expression_argmax_agreement": agreement_bound}
    report["ok"] = bool(report["finite"] and report["max_abs_d_va"] <= va_bound
                        and max(report["max_abs_d_expression"], report["max_abs_d_au_prob"],
                                report["max_abs_d_attribute_prob"], report["max_abs_d_compound"]) <= prob_bound
                        and min(report["expression_argmax_agreement"],
                                report["compound_argmax_agreement"]) >= agreement_bound)
    if not report["finite"]:
        raise ParityError(f"{name}: outputs NaN/Inf on the parity images (a broken conversion)")
    if not report["in_range"]:
        raise ParityError(f"{name}: outputs outside their range (probabilities [0, 1], VA [-1, 1])")
    if not report["ok"]:
        message = f"{name}: outside the {variant} parity bounds: {report}"
        if variant in STRICT_VARIANTS:
            raise ParityError(message)
        log.warning(message)
    return report


# ---------------------------------------------------------------- TFLite and ONNX

def convert_tflite(version_dir, variant: str, representative=None) -> bytes:
    """One TFLite variant of the SavedModel's `preprocessed` signature.

    fp32: as is; dynamic: int8 weights, float activations; float16: fp16 weights; int8: full-integer with uint8
    image input (pixels are 0..255 already) and float outputs, calibrated on `representative` images.
    """
    import tensorflow as tf

    # Not `from_saved_model`: on TF 2.21 it drops the variables of a tf.Module-wrapped Keras 3 model and writes a
    # ~8 KB file that outputs NaN; converting the loaded signature keeps them (parity is checked anyway).
    loaded = tf.saved_model.load(str(version_dir))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([loaded.signatures["preprocessed"]], loaded)
    if variant != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("int8 TFLite needs representative images (--representative DIR)")

        def samples():
            for image in representative:
                yield {PREPROCESSED_INPUT: image[None].astype(np.float32)}

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    elif variant not in ("fp32", "dynamic"):
        raise ValueError(f"unknown TFLite variant {variant!r}; expected one of {TFLITE_VARIANTS}")
    with warnings.catch_warnings():  # calibration runs the deprecated tf.lite.Interpreter
        warnings.simplefilter("ignore")
        return converter.convert()


def convert_onnx(version_dir, path, opset: int = 17) -> Path:
    """ONNX of the `preprocessed` signature through tf2onnx (the `onnx` extra), in a subprocess."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"ONNX export needs tf2onnx and onnxruntime: pip install -e .[onnx] ({error})") from error
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(version_dir),
               "--signature_def", "preprocessed", "--opset", str(opset), "--output", str(path)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not path.exists():
        raise RuntimeError(f"tf2onnx failed on {version_dir} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return path


# ---------------------------------------------------------------- the whole export

def export(run_dir, formats=FORMATS, out=None, model_name: str = "fbnet", version: int | None = None,
           representative=None, tflite_variants=TFLITE_VARIANTS, model=None) -> dict:
    """Export a run as version `version` (default: the next free one); returns {"savedmodel": dir,
    "tflite": {variant: file}, "onnx": file, "parity": report, "parity_file": path, "version": n}.

    `representative`: record dirs for int8 calibration and the held-out parity images (default: the run's training
    record dirs). `model` overrides the run's model (the run dir then only names where to write).
    Every converted file is checked against the SavedModel; the report lands in `out/parity-<n>.json`. Everything
    is built in a scratch folder inside `out` and moved into place only when all of it passed: a failed export
    (a conversion error, a ParityError) leaves no version behind.
    """
    formats, tflite_variants = check_choices(formats, tflite_variants)
    out = Path(out) if out else Path(run_dir) / "export"
    if version is None:
        version = next_version(out, model_name)
    elif version < 1:
        raise ValueError(f"version={version}: expected an integer >= 1")
    finals = version_paths(out, model_name, version)
    taken = [str(p) for p in finals.values() if p.exists()]
    if taken:
        raise FileExistsError(f"version {version} exists already ({', '.join(taken)}); pick another --version "
                              "or --out")
    model = model if model is not None else load_model(run_dir)
    size = model_input_size(model)
    if representative is None:
        record_dirs = training_record_dirs(run_dir)
    else:
        record_dirs = [str(d) for d in ([representative] if isinstance(representative, (str, Path))
                                        else representative)]
    calibration, held = calibration_and_holdout(record_dirs, size)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=out))
    try:
        report = _build_version(model, scratch, out, model_name, version, formats, tflite_variants, record_dirs,
                                calibration, held)
        moved = {key: path for key, path in version_paths(scratch, model_name, version).items() if path.exists()}
        for key, path in moved.items():  # the SavedModel last: the next export numbers versions by all four
            finals[key].parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, finals[key])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(parity_table(report))
    return {"savedmodel": finals["savedmodel"], "version": version, "parity_file": finals["parity"],
            "tflite": {v: finals["tflite"] / f"{model_name}_{v}.tflite" for v in tflite_variants
                       if "tflite" in formats},
            "onnx": finals["onnx"] / f"{model_name}.onnx" if "onnx" in formats else None, "parity": report}


def check_choices(formats, tflite_variants) -> tuple[list[str], list[str]]:
    """The formats and TFLite variants as lists; ValueError naming any unknown one (before any work)."""
    if isinstance(formats, str):
        formats = formats.split(",")
    if isinstance(tflite_variants, str):
        tflite_variants = tflite_variants.split(",")
    formats = [name.strip() for name in formats if name.strip()]
    tflite_variants = [name.strip() for name in tflite_variants if name.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats {formats}: expected some of {', '.join(FORMATS)}")
    unknown = sorted(set(tflite_variants) - set(TFLITE_VARIANTS))
    if unknown:
        raise ValueError(f"TFLite variants {unknown}: expected some of {', '.join(TFLITE_VARIANTS)}")
    return formats, tflite_variants


def version_paths(out, model_name: str, version: int) -> dict[str, Path]:
    """Where version `version` lives: its SavedModel (TF Serving layout), TFLite and ONNX folders, parity report.
    Ordered so that the SavedModel comes last."""
    out = Path(out)
    return {"tflite": out / "tflite" / str(version), "onnx": out / "onnx" / str(version),
            "parity": out / f"parity-{version}.json", "savedmodel": out / model_name / str(version)}


def next_version(out, model_name: str) -> int:
    """One more than the highest version any part of an export in `out` holds (1 for a fresh folder)."""
    out = Path(out)
    taken = [int(p.name) for folder in (out / model_name, out / "tflite", out / "onnx") if folder.is_dir()
             for p in folder.iterdir() if p.name.isdigit()]
    taken += [int(p.stem.split("-", 1)[1]) for p in out.glob("parity-*.json") if p.stem.split("-", 1)[1].isdigit()]
    return max(taken, default=0) + 1


def _build_version(model, root: Path, out: Path, model_name: str, version: int, formats, tflite_variants,
                   record_dirs, calibration, held) -> dict:
    """Write every file of one version under `root` (a scratch folder); return the parity report, whose paths
    name where the files will be once moved to `out`."""
    paths = version_paths(root, model_name, version)
    size = model_input_size(model)
    report = {"model": model_name, "version": version, "input_size": size, "outputs": model_outputs(model),
              "parity_images": len(held), "record_dirs": record_dirs, "files": {}}

    def final(path: Path) -> str:
        return str(out / path.relative_to(root))

    # The SavedModel is the reference every other format is checked against, so it is always written.
    # Warm-up requests carry real crops at their stored size (112), so they exercise the in-graph resize too.
    warmup = np.clip(np.round(record_images(record_files(record_dirs), 112, 8, model_view=False)), 0,
                     255).astype(np.uint8)
    version_dir = save_savedmodel(model, paths["savedmodel"], warmup, model_name)
    reference = run_batched(savedmodel_runner(version_dir), held)
    keras_outputs = {k: np.asarray(v) for k, v in model.predict(held, verbose=0).items()}
    report["files"]["savedmodel"] = {"path": final(version_dir), "bytes": _dir_bytes(version_dir),
                                     "parameter_bytes": _parameter_bytes(model),
                                     **check_parity("SavedModel vs Keras", "fp32", keras_outputs, reference)}

    labels_json = json.dumps(labels_dict(model), indent=1)
    if "tflite" in formats:
        from tqdm import tqdm

        paths["tflite"].mkdir(parents=True, exist_ok=True)
        (paths["tflite"] / "labels.json").write_text(labels_json)  # the files carry no names: predict reads these
        for variant in tqdm(tflite_variants, desc="TFLite", unit="variant"):
            path = paths["tflite"] / f"{model_name}_{variant}.tflite"
            path.parent.mkdir(parents=True, exist_ok=True)
            started = time.time()
            path.write_bytes(convert_tflite(version_dir, variant, calibration))
            candidate = run_batched(tflite_runner(path), held)
            report["files"][f"tflite_{variant}"] = {
                "path": final(path), "bytes": path.stat().st_size,
                "convert_seconds": round(time.time() - started, 1),
                **check_parity(f"TFLite {variant} (version {version})", variant, reference, candidate)}
    if "onnx" in formats:
        paths["onnx"].mkdir(parents=True, exist_ok=True)
        (paths["onnx"] / "labels.json").write_text(labels_json)
        path = convert_onnx(version_dir, paths["onnx"] / f"{model_name}.onnx")
        candidate = run_batched(onnx_runner(path), held)
        report["files"]["onnx"] = {"path": final(path), "bytes": path.stat().st_size,
                                   **check_parity(f"ONNX (version {version})", "onnx", reference, candidate)}
    paths["parity"].write_text(json.dumps(report, indent=1))
    return report


def parity_table(report: dict) -> str:
    """The parity report as a fixed-width table (argmax agreement: of the expression and compound outputs)."""
    compound = "compound" in report.get("outputs", ())
    lines = [f"{'file':<16} {'MB':>8} {'argmax agree':>12} {'max|dVA|':>10} {'max|dAU|':>10} {'max|dEXPR|':>10}"
             + (f" {'max|dCOMP|':>10}" if compound else "") + "  ok", "-" * (87 if compound else 76)]
    for name, row in report["files"].items():
        agreement = min(row["expression_argmax_agreement"], row.get("compound_argmax_agreement", 1.0))
        lines.append(f"{name:<16} {row['bytes'] / 1e6:8.2f} {agreement:12.3f} "
                     f"{row['max_abs_d_va']:10.2e} {row['max_abs_d_au_prob']:10.2e} "
                     f"{row['max_abs_d_expression']:10.2e}" + (f" {row['max_abs_d_compound']:10.2e}" if compound
                                                                else "") + f"  {'yes' if row['ok'] else 'NO'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """0 exported, 1 the export failed (no version left behind), 2 a usage error."""
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="run directory holding config.yaml and model.keras")
    parser.add_argument("--model", help="the model to export: a .keras file or a checkpoint such as "
                                        "<run-dir>/checkpoints/last.weights.h5 (default: the run's model.keras)")
    parser.add_argument("--formats", default="savedmodel,tflite", help=f"comma-separated subset of {FORMATS}")
    parser.add_argument("--out", help="output directory (default: <run-dir>/export)")
    parser.add_argument("--model-name", default="fbnet")
    parser.add_argument("--version", type=cli.integer(1), help="TF Serving version number (default: next free)")
    parser.add_argument("--representative", action="append",
                        help="record dir for int8 calibration and parity (repeatable; default: the run's)")
    parser.add_argument("--tflite-variants", default=",".join(TFLITE_VARIANTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        formats, variants = check_choices(args.formats, args.tflite_variants)
    except ValueError as error:
        parser.error(str(error))
    for folder in [args.run_dir, *(args.representative or [])]:
        if not Path(folder).is_dir():
            parser.error(f"{folder}: no such folder")
    cli.quiet_tensorflow()
    try:
        model = load_model(args.model or args.run_dir)
        result = export(args.run_dir, formats, args.out, args.model_name, args.version, args.representative,
                        variants, model=model)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as error:  # ParityError included
        print(f"error: {error}", file=sys.stderr)
        return cli.FAILED
    print(f"SavedModel: {result['savedmodel']}")
    for variant, path in result["tflite"].items():
        print(f"TFLite {variant}: {path}")
    if result["onnx"]:
        print(f"ONNX: {result['onnx']}")
    print(f"parity report: {result['parity_file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
