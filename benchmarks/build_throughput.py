"""Throughput of `tfrecords_builder.build`: images/s for an aligned database (RAF-DB aligned crops: decode, resize,
encode, write) and for the detect + align path (RAF-DB originals through MTCNN), with 1 and 2 workers.

    python benchmarks/build_throughput.py [--aligned 600] [--detect 40]

Wall time of the whole `build` call (listing, pool start-up, writing, manifest) is what a user waits for; the
second column subtracts one warm-up build of a single image (TensorFlow/MTCNN start-up) to show the steady rate.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def write_rafdb(root: Path, n: int, originals: bool) -> None:
    """A RAF-DB tree: noisy 100x100 aligned crops, or 256x256 crops of the astronaut photograph (a real face)."""
    (root / "basic" / "EmoLabel").mkdir(parents=True)
    folder = root / "basic" / "Image" / ("original" if originals else "aligned")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    if originals:
        from skimage.data import astronaut

        photo = astronaut()
    lines = []
    for index in range(n):
        name = f"train_{index + 1:05d}.jpg"
        if originals:
            x, y = (int(v) for v in rng.integers(60, 130, 2))
            image = photo[y - 40:y + 216, x:x + 256][..., ::-1]
            target = folder / name
        else:
            image = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
            target = folder / name.replace(".jpg", "_aligned.jpg")
        cv2.imwrite(str(target), np.ascontiguousarray(image))
        lines.append(f"{name} {index % 7 + 1}")
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")


def timed_build(root: Path, out: Path, workers: int, faces: str) -> tuple[float, int]:
    from tfrecords_builder import build

    start = time.perf_counter()
    manifest = build("rafdb", root, out, workers=workers, progress=False, faces=faces, validation_fraction=0.0)
    return time.perf_counter() - start, manifest["total"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aligned", type=int, default=600, help="images in the aligned database")
    parser.add_argument("--detect", type=int, default=40, help="images in the detect + align database")
    args = parser.parse_args(argv)
    import tensorflow  # noqa: F401  - loaded once, outside the timings

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for path, n, faces in (("aligned", args.aligned, "aligned"), ("detect+align", args.detect, "original")):
            root = scratch / path
            write_rafdb(root, n, originals=faces == "original")
            warm = scratch / f"{path}-warm"
            write_rafdb(warm, 1, originals=faces == "original")
            for workers in (1, 2):
                startup, _ = timed_build(warm, scratch / f"out-{path}-{workers}-warm", workers, faces)
                seconds, count = timed_build(root, scratch / f"out-{path}-{workers}", workers, faces)
                steady = count / max(seconds - startup, 1e-9) if seconds > startup else float("nan")
                rows.append((path, workers, count, seconds, count / seconds, steady))
    print(f"{'faces':<14}{'workers':>8}{'images':>8}{'wall s':>9}{'img/s':>9}{'img/s excl. start-up':>22}")
    for path, workers, count, seconds, rate, steady in rows:
        print(f"{path:<14}{workers:>8}{count:>8}{seconds:>9.2f}{rate:>9.1f}{steady:>22.1f}")
    print(f"(machine: {os.cpu_count()} cores, shared; image size 112)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
