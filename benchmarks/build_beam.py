"""Wall time of one build on each engine of this machine: the process pool (1 and 2 workers) and Apache Beam's
DirectRunner (in this process, and 2 worker processes), with the shards of every engine checked byte-identical
to the 1-worker pool's. Needs the `beam` extra.

    python benchmarks/build_beam.py [--aligned 600] [--detect 40]

The DirectRunner is for testing that a build runs on Beam, not for speed: each shard is one element, so the
parallelism of a Beam run is the number of shards (`--shards`), and its worker processes start TensorFlow anew.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from build_throughput import write_rafdb  # noqa: E402

ENGINES = {  # name -> build() arguments
    "pool, 1 worker": {"workers": 1},
    "pool, 2 workers": {"workers": 2},
    "direct, in-process": {"runner": "direct"},
    "direct, 2 processes": {"runner": "direct", "beam_options": ["--direct_running_mode=multi_processing",
                                                                  "--direct_num_workers=2"]},
}


def shard_digests(out: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(out.glob("*.tfrecord-*"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aligned", type=int, default=600, help="images in the aligned database")
    parser.add_argument("--detect", type=int, default=40, help="images in the detect + align database")
    parser.add_argument("--shards", type=int, default=4, help="shards of the train split")
    args = parser.parse_args(argv)
    import logging

    import tensorflow  # noqa: F401  - loaded once, outside the timings

    from tfrecords_builder import build

    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for faces, n in (("aligned", args.aligned), ("original", args.detect)):
            root = scratch / faces
            write_rafdb(root, n, originals=faces == "original")
            reference = None
            for engine, arguments in ENGINES.items():
                out = scratch / f"out-{faces}-{len(rows)}"
                start = time.perf_counter()
                manifest = build("rafdb", root, out, shards=args.shards, progress=False, faces=faces,
                                 validation_fraction=0.0, **arguments)
                seconds = time.perf_counter() - start
                digests = shard_digests(out)
                reference = reference or digests
                rows.append((faces, engine, manifest["total"], seconds, digests == reference))
    print(f"{'faces':<10}{'engine':<22}{'images':>8}{'wall s':>9}{'img/s':>8}  shards as pool/1")
    for faces, engine, count, seconds, same in rows:
        print(f"{faces:<10}{engine:<22}{count:>8}{seconds:>9.2f}{count / seconds:>8.1f}  "
              f"{'byte-identical' if same else 'DIFFERENT'}")
    print(f"(machine: {os.cpu_count()} cores, shared; image size 112; {args.shards} train shards)", file=sys.stderr)
    return 0 if all(row[-1] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
