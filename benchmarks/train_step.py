"""Images/s of FaceBehaviorNet's full multi-task training step against the bare network's, same batch, same run.

    python benchmarks/train_step.py                 # paper preset, 96x96, batch 32, 16 rounds (~4 min)
    python benchmarks/train_step.py --preset small --batch 64 --steps 20
    python benchmarks/train_step.py --mixed-precision mixed_bfloat16   # + the backbone and full step in bf16

Rows (all on the same images; every update is an Adam step with the optimizer training uses, FusedAdam):
- bare backbone, forward + backward: the 13 VGG-FACE conv layers, gradients of a plain MSE, no update.
- bare network:   backbone + FC 4096 x 2 + linear heads, plain Keras MSE loss on the raw outputs.
- full step:      FaceBehaviorNetTrainer: a three-stream batch (VA/AU/EXPR rows in the paper's 401:247:103
                  proportion) with its masks, eq. 1 + soft co-annotation + distribution matching, every loss term
                  and the streaming metrics logged.
- full step, keras.optimizers.Adam: the same with Keras's own Adam, whose update is a dozen passes over memory.
- with --mixed-precision P: the bare backbone and the full step again, built under the Keras policy P
  (`trainer.mixed_precision`; float32 weights, heads and losses), in the same rounds as their float32 rows.
Each round runs every row once, in a shuffled order, so that load from other processes and the order itself hit every
row alike; a row's ratio is the median over rounds of (reference step time / its step time) in the same round (step
times on this machine vary by +-10% from one step to the next, far more than the differences measured). The target is
full step >= 0.95 x the bare backbone's forward + backward images/s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fbnet_tf import config, precision  # noqa: E402
from fbnet_tf.labels import AUS, EXPRESSIONS  # noqa: E402
from fbnet_tf.models import facebehaviornet as fbn  # noqa: E402
from fbnet_tf.optimizers import FusedAdam  # noqa: E402

REFERENCE = "bare backbone, forward + backward (no update)"
FULL = "full step (3 streams, masks, eq.1 + soft co-ann. + DM)"


def three_stream_batch(n: int, size: int, seed: int = 0):
    """n images: VA rows, then AU rows, then EXPR rows, each with only its own labels (as fbnet_tf.data yields)."""
    rng = np.random.default_rng(seed)
    n_va = round(n * 401 / 751)
    n_au = round(n * 247 / 751)
    rows = np.arange(n)
    is_va, is_au = rows < n_va, (rows >= n_va) & (rows < n_va + n_au)
    is_expr = rows >= n_va + n_au
    images = rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32)
    targets = {"expr": np.where(is_expr, rng.integers(0, len(EXPRESSIONS), n), -1).astype(np.int32),
               "va": np.where(is_va[:, None], rng.uniform(-1, 1, (n, 2)), 0).astype(np.float32),
               "va_mask": is_va.astype(np.float32),
               "au": np.where(is_au[:, None], rng.random((n, len(AUS))) > 0.7, 0).astype(np.float32),
               "au_mask": np.repeat(is_au[:, None], len(AUS), axis=1).astype(np.float32)}
    return images, targets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--jit", action="store_true", help="XLA (slower on CPU, see stack notes)")
    parser.add_argument("--mixed-precision", choices=[p for p in config.PRECISIONS if p != "float32"],
                        help="also time the backbone and the full step under this policy")
    args = parser.parse_args(argv)

    cfg = config.override(config.experiment("soft_coannotation_distr_matching_du2014"),
                          [f"model.preset={args.preset}"])
    size = cfg.model.image_size
    images, targets = three_stream_batch(args.batch, size)

    def compiled(model, **kwargs):
        model.compile(optimizer=FusedAdam(1e-4), jit_compile=args.jit, **kwargs)
        return model

    trainer = compiled(fbn.build_trainer(cfg))
    keras_adam_trainer = fbn.build_trainer(cfg)
    keras_adam_trainer.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=args.jit)

    bare_network = fbn.build_network(cfg)
    network_outputs = bare_network(images[:1])
    compiled(bare_network, loss="mse")
    network_zeros = {k: np.zeros((args.batch, v.shape[-1]), np.float32) for k, v in network_outputs.items()}

    image_tensor = tf.constant(images)

    def backbone_step():
        backbone = fbn.build_network(cfg).backbone

        @tf.function(jit_compile=args.jit)
        def backbone_gradients(x):
            with tf.GradientTape() as tape:  # the mean in float32 whatever the backbone computes in
                loss = tf.reduce_mean(tf.square(tf.cast(backbone(x, training=True), tf.float32)))
            return tape.gradient(loss, backbone.trainable_variables)

        return lambda: backbone_gradients(image_tensor)

    rows = {
        REFERENCE: backbone_step(),
        "bare network (+FC, heads, MSE)": lambda: bare_network.train_on_batch(images, network_zeros),
        FULL: lambda: trainer.train_on_batch(images, targets),
        "full step, keras.optimizers.Adam": lambda: keras_adam_trainer.train_on_batch(images, targets),
    }
    if args.mixed_precision:
        with precision.policy(args.mixed_precision):
            rows[f"bare backbone, forward + backward, {args.mixed_precision}"] = backbone_step()
            mixed_trainer = compiled(fbn.build_trainer(cfg))
        rows[f"full step, {args.mixed_precision}"] = lambda: mixed_trainer.train_on_batch(images, targets)
    times = {name: [] for name in rows}
    print(f"preset={args.preset} ({size}x{size}, width {cfg.model.width}, FC {cfg.model.fc_units}), "
          f"batch {args.batch}, {args.steps} timed steps, jit_compile={args.jit}; warming up (tracing) ...",
          flush=True)
    order = np.random.default_rng(0)
    for step in range(args.steps + 1):
        for name in order.permutation(list(rows)):
            start = time.perf_counter()
            rows[name]()
            if step > 0:  # step 0 traces the function
                times[name].append(time.perf_counter() - start)
        if step > 0:
            print(f"  round {step}/{args.steps}: " + ", ".join(f"{t[-1]:.2f}s" for t in times.values()), flush=True)

    # Each row's step against the reference step of the same round: load from other processes drifts slowly, so
    # the median of these paired ratios is steadier than a ratio of medians.
    reference = times[REFERENCE]
    print()
    print(f"| {'training step':<56} | {'median s':>8} | {'img/s':>7} | {'best s':>6} | {'vs bare fwd+bwd':>15} |")
    print(f"|{'-' * 58}|{'-' * 10}|{'-' * 9}|{'-' * 8}|{'-' * 17}|")
    ratios = {}
    for name, values in times.items():
        ratios[name] = statistics.median(r / t for r, t in zip(reference, values))
        median = statistics.median(values)
        print(f"| {name:<56} | {median:>8.3f} | {args.batch / median:>7.2f} | {min(values):>6.3f} | "
              f"{ratios[name]:>15.3f} |")
    print(f"\nfull step / bare backbone forward + backward: {ratios[FULL]:.3f} (median of {args.steps} paired "
          f"steps); target >= 0.95")
    if args.mixed_precision:  # each mixed row against its float32 row of the same round: > 1 means faster
        for name, mixed in ((REFERENCE, f"bare backbone, forward + backward, {args.mixed_precision}"),
                            (FULL, f"full step, {args.mixed_precision}")):
            speedup = statistics.median(f / m for f, m in zip(times[name], times[mixed]))
            print(f"{mixed} / float32 speed: {speedup:.3f} (median of {args.steps} paired steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
