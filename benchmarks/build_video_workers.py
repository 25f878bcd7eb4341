"""Frames/s of a video database build (DISFA layout: detect + align every labelled frame) with 1 and 2 workers.

    python benchmarks/build_video_workers.py [--root DISFA_DIR] [--frames-per-range 500] [--detector fast]

Without --root it renders the demo world's DISFA (4 subjects x 150 frames) into a scratch folder. Videos are cut
into ranges of `--frames-per-range` frames (the builder's SEGMENT_FRAMES) and each range is one task of the
pool, so two workers share even a single long video; the shards are byte-identical whatever the number of
workers (checked here too). Wall time of the whole `build` call is what a user waits for.
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

from tfrecords_builder.disfa import Disfa  # noqa: E402


class DisfaRanges(Disfa):
    """DISFA with the range length of the command line (set in `main`, read by the spawned workers too)."""

    SEGMENT_FRAMES = int(os.environ.get("FBNET_BENCH_SEGMENT_FRAMES", Disfa.SEGMENT_FRAMES))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="a DISFA-style folder (default: render the demo world's DISFA)")
    parser.add_argument("--frames-per-range", type=int, default=Disfa.SEGMENT_FRAMES)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--detector", default="fast", help="the builder's face detector: fast, fast-short or mtcnn")
    args = parser.parse_args(argv)
    os.environ["FBNET_BENCH_SEGMENT_FRAMES"] = str(args.frames_per_range)
    DisfaRanges.SEGMENT_FRAMES = args.frames_per_range
    import tensorflow  # noqa: F401  - loaded once, outside the timings

    from tfrecords_builder import build

    rows, shards = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        root = Path(args.root) if args.root else None
        if root is None:
            from fbnet_tf.demo import render_world

            render_world(scratch / "world", seed=0, scale="small", workers=1, databases=("disfa",))
            root = scratch / "world" / "disfa"
        for workers in (1, 2):
            out = scratch / f"out-{workers}"
            start = time.perf_counter()
            manifest = build(DisfaRanges, root, out, workers=workers, image_size=args.image_size, progress=False,
                             allow_partial=True, detector=args.detector)
            seconds = time.perf_counter() - start
            rows.append((workers, manifest["accounting"]["inputs"], manifest["total"], seconds))
            shards[workers] = {p.name: p.read_bytes() for p in out.glob("*.tfrecord-*")}
    print(f"{'workers':>8}{'frames':>8}{'written':>9}{'wall s':>9}{'frames/s':>10}")
    for workers, frames, written, seconds in rows:
        print(f"{workers:>8}{frames:>8}{written:>9}{seconds:>9.1f}{frames / seconds:>10.2f}")
    print(f"speed-up x{rows[0][3] / rows[1][3]:.2f}; shards byte-identical: {shards[1] == shards[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
