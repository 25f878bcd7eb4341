"""Training images/s on a GPU with and without XLA in each precision, and whether the input pipeline keeps up.

    python benchmarks/gpu.py                                   # the paper: paper preset, 96x96, batch 751
    python benchmarks/gpu.py --preset tiny --batch 24 --steps 2 --images 480 --batches 2   # a smoke test on a CPU

Training rows: FaceBehaviorNetTrainer's full step (three-stream batch of 401 VA + 247 AU + 103 EXPR rows for 751,
the same proportion otherwise, with masks; eq. 1 + soft co-annotation + distribution matching; FusedAdam, behind a
LossScaleOptimizer under mixed_float16) for `trainer.jit_compile` False / True x `trainer.mixed_precision`
float32 / mixed_float16 / mixed_bfloat16. The batch is placed on the device once, so a row times the step alone; a
row is the median of `--steps` steps after two warm-up steps (tracing, XLA compilation, autotuning). mixed_float16
is refused without a GPU, as training refuses it.

Pipeline row: `fbnet_tf.data.training_dataset` (three streams, augmented, the same batch) over synthetic 112 px JPEG
records (benchmarks/pipeline.py), on every CPU core of the machine, against the fastest training row: below 1x the
GPU waits for its input.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fbnet_tf import config, precision  # noqa: E402
from fbnet_tf.models import facebehaviornet as fbn  # noqa: E402
from fbnet_tf.optimizers import FusedAdam  # noqa: E402
from pipeline import throughput, write_synthetic  # noqa: E402
from train_step import three_stream_batch  # noqa: E402


def device_name() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU only ({os.cpu_count()} cores)"
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return f"{len(gpus)} GPU: {', '.join(names)} (timed on the first)"


def step_seconds(cfg, policy: str, jit: bool, images, targets, steps: int) -> list[float]:
    """Seconds of each timed training step of a fresh trainer built under `policy`."""
    with precision.policy(policy):
        trainer = fbn.build_trainer(cfg)
        trainer.compile(optimizer=FusedAdam(1e-4), jit_compile=jit)
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        logs = trainer.train_on_batch(images, targets, return_dict=True)  # returns numbers: the step has finished
        if step >= 2:
            times.append(time.perf_counter() - start)
    if not np.isfinite(logs["loss"]):
        raise RuntimeError(f"{policy}, jit_compile={jit}: the loss became {logs['loss']}")
    return times


def pipeline_rate(batch: int, image_size: int, images: int, batches: int) -> float:
    """Images/s of the augmented three-stream pipeline at `batch` on this machine's CPU cores."""
    from fbnet_tf import data

    with tempfile.TemporaryDirectory() as scratch:
        dirs = write_synthetic(scratch, images, 112)
        dataset = data.training_dataset(dirs, batch_size=batch, image_size=image_size, augment=True)[0]
        return throughput(dataset, batches, warmup=min(4, batches))[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper", help="model preset (paper: 96x96, VGG-FACE widths, FC 4096)")
    parser.add_argument("--batch", type=int, default=751, help="global batch (the paper's 401 + 247 + 103)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row, after 2 warm-up steps")
    parser.add_argument("--policies", default=",".join(config.PRECISIONS),
                        help="comma-separated trainer.mixed_precision values")
    parser.add_argument("--images", type=int, default=15020, help="synthetic records for the pipeline row")
    parser.add_argument("--batches", type=int, default=20, help="timed pipeline batches (after warm-up ones)")
    args = parser.parse_args(argv)
    unknown = set(args.policies.split(",")) - set(config.PRECISIONS)
    if unknown:
        parser.error(f"--policies: unknown {sorted(unknown)}; expected some of {', '.join(config.PRECISIONS)}")

    cfg = config.override(config.experiment("soft_coannotation_distr_matching_du2014"),
                          [f"model.preset={args.preset}"])
    size = cfg.model.image_size
    print(f"{device_name()}; TensorFlow {tf.__version__}; preset {args.preset} ({size}x{size}, width "
          f"{cfg.model.width}, FC {cfg.model.fc_units}), batch {args.batch}, {args.steps} timed steps a row",
          flush=True)
    host_images, host_targets = three_stream_batch(args.batch, size)
    with tf.device("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"):
        images = tf.identity(tf.constant(host_images))  # on the device once: the rows time the step alone
        targets = {k: tf.identity(tf.constant(v)) for k, v in host_targets.items()}

    rows = {}
    for policy in args.policies.split(","):
        for jit in (False, True):
            name = f"{policy}, jit_compile={jit}"
            try:
                precision.check_available(policy)
            except precision.PrecisionUnavailable as err:
                rows[name] = "refused: no GPU"
                print(f"  {name}: skipped ({err})", flush=True)
                continue
            rows[name] = statistics.median(step_seconds(cfg, policy, jit, images, targets, args.steps))
            keras.backend.clear_session()  # free the row's trainer (weights, Adam state) before the next one
            print(f"  {name}: {rows[name]:.3f} s a step", flush=True)
    timed = {k: v for k, v in rows.items() if isinstance(v, float)}
    if not timed:
        print("error: no training row ran (check --policies)", file=sys.stderr)
        return 1
    baseline = timed.get("float32, jit_compile=False")
    print(f"  input pipeline ({os.cpu_count()} CPU cores) ...", flush=True)
    feed = pipeline_rate(args.batch, size, args.images, args.batches)

    print()
    print(f"| {'training step':<36} | {'s/step':>7} | {'images/s':>9} | {'vs float32, no XLA':>18} |")
    print(f"|{'-' * 38}|{'-' * 9}|{'-' * 11}|{'-' * 20}|")
    for name, seconds in rows.items():
        if isinstance(seconds, float):
            versus = f"{baseline / seconds:.2f}x" if baseline else "-"
            print(f"| {name:<36} | {seconds:>7.3f} | {args.batch / seconds:>9.1f} | {versus:>18} |")
        else:
            print(f"| {name:<36} | {'-':>7} | {'-':>9} | {seconds:>18} |")
    fastest = max(args.batch / s for s in timed.values())
    print(f"| {'input pipeline, augmented':<36} | {args.batch / feed:>7.3f} | {feed:>9.1f} | {'':>18} |")
    verdict = "keeps up" if feed >= fastest else "is the bottleneck"
    print(f"\ninput pipeline / fastest training step: {feed / fastest:.2f}x ({feed:.0f} vs {fastest:.0f} images/s on "
          f"{os.cpu_count()} CPU cores): the pipeline {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
