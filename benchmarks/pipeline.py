"""Throughput of the three-stream training pipeline next to plain JPEG decoding of the same records.

    python benchmarks/pipeline.py                         # synthetic 112x112 JPEG records, the paper's 751 batch
    python benchmarks/pipeline.py --records DIR [DIR ...] # real record directories instead

The baseline reads every shard (parallel reads), parses, decodes the JPEG and batches: the least any pipeline must
do. The pipeline adds the stream filters, shuffling, the crop/flip/colour-jitter augmentation and the zip+concat of
the three streams. Target: pipeline (augmented) >= 0.9x the baseline's images/s.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (database, stream) of the synthetic record directories, sized as the paper's 401/247/103 batch split.
SYNTHETIC = (("affwild", "va", 401), ("disfa", "au", 247), ("rafdb", "expr", 103))


def face_like_jpeg(rng, side: int) -> bytes:
    """A blurred-noise JPEG of about the size of an aligned face crop (~6 KB at 112x112, quality 90)."""
    import cv2

    pixels = cv2.GaussianBlur(rng.uniform(0, 255, (side, side, 3)).astype(np.float32), (0, 0), 2)
    pixels = np.clip((pixels - 127.5) * 5 + 127.5, 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def write_synthetic(root: str, images: int, side: int, shards: int = 4) -> list[str]:
    import tensorflow as tf

    from fbnet_tf.labels import au_mask_for
    from fbnet_tf.records import Sample, encode_example

    rng = np.random.default_rng(0)
    jpegs = [face_like_jpeg(rng, side) for _ in range(64)]  # reused: decode cost does not depend on content
    total = sum(share for _, _, share in SYNTHETIC)
    dirs = []
    for source, stream, share in SYNTHETIC:
        out = os.path.join(root, source)
        os.makedirs(out)
        count = images * share // total
        for shard in range(shards):
            path = os.path.join(out, f"{source}-train.tfrecord-{shard:05d}-of-{shards:05d}")
            with tf.io.TFRecordWriter(path) as writer:
                for k in range(shard, count, shards):
                    labels = {"va": {"va": tuple(rng.uniform(-1, 1, 2))}, "expr": {"expr": int(k % 7)},
                              "au": {"au_mask": au_mask_for((1, 2, 4, 6, 12, 25)),
                                     "au": au_mask_for((1, 12) if k % 2 else (4,))}}[stream]
                    writer.write(encode_example(Sample(image=jpegs[k % len(jpegs)], height=side, width=side,
                                                       source=source, split="train", sample_id=f"{source}/{k}",
                                                       **labels)))
        dirs.append(out)
    return dirs


def throughput(dataset, batches: int, warmup: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process): on a shared machine the second is the
    stable measure of the pipeline's own cost."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    count, started, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(batches):
        images = next(iterator)[0]
        count += int(images.shape[0])
    return count / (time.perf_counter() - started), count / (time.process_time() - cpu)


def decode_only(files, batch_size: int):
    import tensorflow as tf

    from fbnet_tf.records import parse_example

    def decode(serialized):
        features = parse_example(serialized)
        image = tf.io.decode_image(features["image/encoded"], channels=3, expand_animations=False)
        return tf.cast(image, tf.float32), features["expr"]

    ds = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).repeat()
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", nargs="+", metavar="DIR", help="record directories (default: synthetic)")
    parser.add_argument("--images", type=int, default=7510, help="synthetic images in all")
    parser.add_argument("--stored-size", type=int, default=112)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=751)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=8, help="batches before timing (tf.data's autotuning settles)")
    parser.add_argument("--repeats", type=int, default=5, help="median of this many timings per pipeline")
    args = parser.parse_args(argv)

    from fbnet_tf import data

    with tempfile.TemporaryDirectory() as scratch:
        dirs = args.records or write_synthetic(scratch, args.images, args.stored_size)
        files = [f for d in dirs for f in data.record_files(d, "train")]
        sizes = data.stream_sizes(dirs, "train")
        shares = data.stream_batch_sizes(sizes, args.batch_size)
        candidates = {
            "JPEG decode only (baseline)": lambda: decode_only(files, args.batch_size),
            "three streams, eval crop": lambda: data.training_dataset(
                dirs, batch_size=args.batch_size, image_size=args.image_size, augment=False)[0],
            "three streams, augmented": lambda: data.training_dataset(
                dirs, batch_size=args.batch_size, image_size=args.image_size, augment=True)[0],
            "three streams, augmented, deterministic": lambda: data.training_dataset(
                dirs, batch_size=args.batch_size, image_size=args.image_size, augment=True, deterministic=True)[0],
        }
        timings = {name: [] for name in candidates}
        for _ in range(args.repeats):  # interleave the candidates so a busy neighbour hurts all alike
            for name, make in candidates.items():
                timings[name].append(throughput(make(), args.batches, args.warmup))
        # Medians: single timings of the same pipeline vary by +-10% on this machine.
        rates = {name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
                 for name, runs in timings.items()}

    baseline_wall, baseline_cpu = rates["JPEG decode only (baseline)"]
    print(f"records: {len(files)} shards in {len(dirs)} dirs; streams {sizes}; batch {args.batch_size} = "
          f"{' + '.join(f'{shares[s]} {s}' for s in shares)}; {args.stored_size} -> {args.image_size} px; "
          f"{os.cpu_count()} CPUs")
    print(f"{'pipeline':<42}{'images/s':>10}{'ms/batch':>10}{'vs decode':>11}{'img/CPU-s':>11}{'vs decode':>11}")
    for name, (wall, cpu) in rates.items():
        print(f"{name:<42}{wall:>10.0f}{1000 * args.batch_size / wall:>10.1f}{wall / baseline_wall:>10.2f}x"
              f"{cpu:>11.0f}{cpu / baseline_cpu:>10.2f}x")
    print(f"target: augmented >= 0.90x decode only (load average now {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs: wall rates move with it, CPU-second rates much less)")


if __name__ == "__main__":
    main()
