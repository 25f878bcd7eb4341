"""Inference speed and size of every export format of one model, in one run.

    python benchmarks/inference.py                      # the `paper` preset (96x96 VGG-FACE, 50.5 M params)
    python benchmarks/inference.py --representative demo_data/records/affectnet   # demo faces as inputs
    python benchmarks/inference.py --run-dir runs/demo  # a trained run instead of random weights

Measures batch-1 latency (best of N) and batch-64 throughput of Keras, the SavedModel, each TFLite variant and ONNX
Runtime, the file sizes, and each format's agreement with Keras (expression argmax, max |dVA|, max |dAU prob|) on
held-out images: the validation/test records of --run-dir or --representative, else smooth random images.
Target: dynamic-range TFLite >= 3x faster than fp32 TFLite at batch 1 with >= 99% expression argmax agreement.
The agreement needs a trained model (--run-dir): an untrained one gives near-uniform probabilities whose argmax is
decided by rounding (the printed top-2 margin shows it).
"""
import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def smooth_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Blurred noise images (float RGB 0..255): activations closer to a face crop's than white noise."""
    import cv2

    rng = np.random.default_rng(seed)
    images = [cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), 3)
              for _ in range(count)]
    return np.clip((np.stack(images) - 127.5) * 4 + 127.5, 0, 255).astype(np.float32)


def timed(fn, images, batch: int, repeats: int) -> float:
    """Best-of-`repeats` seconds of fn on one batch of `batch` images, after one warm-up call (the minimum: on a
    shared machine the other processes only ever add time)."""
    x = images[np.arange(batch) % len(images)]
    fn(x)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - started)
    return float(np.min(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--run-dir", help="benchmark this run's model (and use its records) instead")
    parser.add_argument("--representative", help="record dir for int8 calibration and parity images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats-b1", type=int, default=20)
    parser.add_argument("--repeats-b64", type=int, default=3)
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--out", help="keep the exported files here (default: a temporary dir)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from fbnet_tf import config, export

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.run_dir:
        model = export.load_model(args.run_dir)
    else:
        import keras

        from fbnet_tf.models import build_inference_model

        keras.utils.set_random_seed(0)
        model = build_inference_model(config.override(config.ExperimentConfig(), [f"model.preset={args.preset}"]))
    size = export.model_input_size(model)
    record_dirs = ([args.representative] if args.representative
                   else export.training_record_dirs(args.run_dir) if args.run_dir else None)
    if record_dirs:
        calibration, held = export.calibration_and_holdout(record_dirs, size, calibration=64, holdout=128)
    else:
        calibration, held = smooth_images(64, size, seed=1), smooth_images(128, size, seed=2)
    out = Path(args.out or tempfile.mkdtemp(prefix="fbnet-bench-"))
    print(f"model: {model.name}, {model.count_params() / 1e6:.1f} M params, input {size}x{size}; files in {out}")

    rows = []
    reference = export.run_batched(lambda x: {k: np.asarray(v) for k, v in model(x, training=False).items()}, held)

    def measure(name, runner, path, bytes_=None):
        agreement = export.parity(reference, export.run_batched(runner, held))
        b1 = timed(runner, held, 1, args.repeats_b1)
        b64 = timed(runner, held, 64, args.repeats_b64)
        size_mb = (bytes_ if bytes_ is not None else (export._dir_bytes(path) if path.is_dir()
                                                         else path.stat().st_size)) / 1e6
        rows.append((name, size_mb, b1 * 1e3, 64 / b64, agreement))
        print(f"  {name}: {b1 * 1e3:.1f} ms b1, {64 / b64:.1f} img/s b64", flush=True)

    measure("keras", lambda x: {k: np.asarray(v) for k, v in model.predict_on_batch(x).items()}, None,
            bytes_=export._parameter_bytes(model))
    version_dir = export.save_savedmodel(model, out / "fbnet" / "1")
    measure("savedmodel", export.savedmodel_runner(version_dir), version_dir)
    convert_seconds = {}
    for variant in export.TFLITE_VARIANTS:
        path = out / "tflite" / f"fbnet_{variant}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        path.write_bytes(export.convert_tflite(version_dir, variant, calibration))
        convert_seconds[variant] = time.time() - started
        measure(f"tflite_{variant}", export.tflite_runner(path, num_threads=args.threads), path)
        gc.collect()
    if not args.no_onnx:
        try:
            started = time.time()
            path = export.convert_onnx(version_dir, out / "onnx" / "fbnet.onnx")
            convert_seconds["onnx"] = time.time() - started
            measure("onnxruntime", export.onnx_runner(path, num_threads=args.threads), path)
        except RuntimeError as error:
            print(f"ONNX skipped: {error}")

    print(f"\n{'format':<16} {'size MB':>8} {'b1 ms':>8} {'b64 img/s':>10} {'argmax agree':>12} {'max|dVA|':>9} "
          f"{'max|dAU|':>9} {'max|dEXPR|':>10}")
    print("-" * 89)
    for name, size_mb, b1, b64, agreement in rows:
        print(f"{name:<16} {size_mb:8.1f} {b1:8.1f} {b64:10.1f} {agreement['expression_argmax_agreement']:12.3f} "
              f"{agreement['max_abs_d_va']:9.2e} {agreement['max_abs_d_au_prob']:9.2e} "
              f"{agreement['max_abs_d_expression']:10.2e}")
    # Argmax agreement only means something when the reference's top two expressions are further apart than the
    # conversion error; an untrained model's near-uniform probabilities make it a coin toss.
    top2 = np.sort(reference["expression"], axis=1)[:, -2:]
    print(f"\nreference expression top-2 margin: median {np.median(top2[:, 1] - top2[:, 0]):.2e}, "
          f"max probability median {np.median(top2[:, 1]):.3f}")
    by_name = {row[0]: row for row in rows}
    speedup = by_name["tflite_fp32"][2] / by_name["tflite_dynamic"][2]
    agreement = by_name["tflite_dynamic"][4]["expression_argmax_agreement"]
    print(f"\ndynamic-range vs fp32 TFLite at batch 1: {speedup:.2f}x faster, argmax agreement {agreement:.3f} "
          f"(target >= 3x, >= 0.99): {'MET' if speedup >= 3 and agreement >= 0.99 else 'NOT MET'}")
    print("conversion seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in convert_seconds.items()))
    print(f"threads: {args.threads}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
