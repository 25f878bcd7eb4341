"""Peak memory of `python -m fbnet_tf.predict` on one large photograph, with faces searched at full size and on a
copy scaled down to `--detect-max-side` (the default, 1920), crops aligned from the original either way.

    python benchmarks/predict_memory.py [--width 6000 --height 4000]

Each setting runs in its own process (the `predict` CLI on a tiny model); the peak resident set size comes from
`resource.getrusage(RUSAGE_CHILDREN)`, so it includes TensorFlow and MTCNN.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def write_photo(path: Path, width: int, height: int) -> None:
    """The astronaut photograph scaled up to fill a `width` x `height` JPEG (one large face)."""
    import skimage.data

    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    side = min(width, height)
    canvas = np.full((height, width, 3), 96, np.uint8)
    canvas[:side, :side] = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])


def write_model(path: Path) -> None:
    import keras

    from fbnet_tf import config
    from fbnet_tf.models import build_inference_model

    keras.utils.set_random_seed(0)
    build_inference_model(config.override(config.ExperimentConfig(), ["model.preset=tiny"])).save(path)


def peak_rss_mb(photo: Path, model: Path, out: Path, detect_max_side: int) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, face rows) of one predict process."""
    script = ("import resource, subprocess, sys; "
              "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    command = [sys.executable, "-m", "fbnet_tf.predict", str(photo), "--model", str(model), "--out", str(out),
               "--detect-max-side", str(detect_max_side)]
    started = time.time()
    done = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    seconds = time.time() - started
    rows = sum(1 for _ in open(out / "predictions.csv")) - 1
    return int(done.stdout.split()[-1]) / 1024, seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        photo, model = scratch / "photo.jpg", scratch / "model.keras"
        write_photo(photo, args.width, args.height)
        write_model(model)
        print(f"{args.width}x{args.height} JPEG ({photo.stat().st_size / 1e6:.1f} MB), tiny model")
        print(f"{'faces searched at':<22} {'peak RSS MB':>12} {'seconds':>8} {'rows':>5}")
        for side, label in ((0, "full size"), (1920, "longer side 1920")):
            rss, seconds, rows = peak_rss_mb(photo, model, scratch / f"out{side}", side)
            print(f"{label:<22} {rss:12.0f} {seconds:8.1f} {rows:5d}")


if __name__ == "__main__":
    main()
