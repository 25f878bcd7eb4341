"""How many videos a VA batch draws from: the training pipeline's record order next to uniform sampling.

    python benchmarks/video_mixing.py                    # a demo Aff-Wild2 build + a release-shaped record set
    python benchmarks/video_mixing.py --records DIR      # any video record directory (train split, VA stream)

The batch CCC of the paper's eq. 1 is computed over one batch's VA rows: a batch drawn from a handful of videos
sees a handful of faces and recording conditions per step. This measures, per VA batch, the number of distinct
videos (the folder of `sample_id`, `<video>/<frame>`) for
- this pipeline (`fbnet_tf.data.stream_epoch_records`: up to READERS segments of the shards read at once, one
  record each in turn, then the 4096-record shuffle buffer), exactly the record order `training_dataset` decodes;
- the reading it replaced (up to 8 shards interleaved, then the same buffer);
- uniform sampling (batches of a random permutation of the stream's frames).
Only the records' ids are parsed (no image decode). Two record sets: a demo Aff-Wild2 build (rendered and built
here, once, into --work), and a release-shaped set written here: videos of Aff-Wild2-like lengths, two per shard in
frame order as `tfrecords_builder.affwild2` writes them, records holding ids only.
"""
import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def release_shaped(out: str, videos: int, mean_frames: int, seed: int = 0) -> str:
    """`affwild2-train.tfrecord-*` shards of `videos` videos (log-normal lengths, mean `mean_frames`), two videos
    a shard, frames in order, every frame VA-labelled; records carry ids and labels only."""
    import tensorflow as tf

    from fbnet_tf.records import Sample, encode_example

    rng = np.random.default_rng(seed)
    lengths = np.maximum(50, rng.lognormal(np.log(mean_frames) - 0.5, 1.0, videos)).astype(int)
    shards = (videos + 1) // 2
    os.makedirs(out, exist_ok=True)
    for shard in range(shards):
        path = os.path.join(out, f"affwild2-train.tfrecord-{shard:05d}-of-{shards:05d}")
        with tf.io.TFRecordWriter(path) as writer:
            for video in range(2 * shard, min(2 * shard + 2, videos)):
                for frame in range(lengths[video]):
                    writer.write(encode_example(Sample(image=b"", height=0, width=0, source="affwild2",
                                                       split="train", sample_id=f"video{video:03d}/{frame:05d}",
                                                       va=(0.0, 0.0))))
    return out


def demo_build(work: str, scale: str) -> str:
    """The demo world's Aff-Wild2 (rendered and built with the real builder, once)."""
    import tfrecords_builder
    from fbnet_tf.demo import render_world

    raw, out = os.path.join(work, f"raw-{scale}"), os.path.join(work, f"records-{scale}", "affwild2")
    if not os.path.exists(os.path.join(raw, "demo_world.json")):
        render_world(raw, seed=0, scale=scale, databases=("affwild2",))
    if not os.path.exists(os.path.join(out, "manifest.json")):
        tfrecords_builder.build("affwild2", os.path.join(raw, "affwild2"), out, workers=2, progress=False)
    return out


def _videos(serialized_batches) -> list[int]:
    """Distinct videos of each batch of serialized records."""
    import tensorflow as tf

    spec = {"sample_id": tf.io.FixedLenFeature([], tf.string), "va_mask": tf.io.FixedLenFeature([], tf.float32)}
    counts = []
    for batch in serialized_batches:
        ids = tf.io.parse_example(batch, spec)["sample_id"].numpy()
        counts.append(len({i.rsplit(b"/", 1)[0] for i in ids}))
    return counts


def va_frames(record_dir: str) -> list[str]:
    """The video of every VA-labelled train record."""
    import tensorflow as tf

    from fbnet_tf import data

    spec = {"sample_id": tf.io.FixedLenFeature([], tf.string), "va_mask": tf.io.FixedLenFeature([], tf.float32)}
    videos = []
    for batch in tf.data.TFRecordDataset(data.record_files(record_dir, "train")).batch(4096):
        parsed = tf.io.parse_example(batch, spec)
        videos += [i.rsplit(b"/", 1)[0] for i, m in zip(parsed["sample_id"].numpy(), parsed["va_mask"].numpy())
                   if m > 0]
    return videos


def this_pipeline(record_dir: str, batch: int, epochs: int) -> list[int]:
    import tensorflow as tf

    from fbnet_tf import data

    counts = data.shard_record_counts(record_dir, "train")
    table = data.segment_table(data.segments(counts))
    select = "va" if data.stream_sizes(record_dir)["va"] != sum(counts.values()) else None
    size = data.stream_sizes(record_dir)["va"]
    per_epoch = -(-size // batch) * batch
    result = []
    for epoch in range(epochs):
        records = data.stream_epoch_records(table, epoch=tf.constant(epoch, tf.int64), per_epoch=per_epoch,
                                            stream_seed=0, select=select)
        result += _videos(records.batch(batch, drop_remainder=True))
    return result


def replaced_pipeline(record_dir: str, batch: int, epochs: int) -> list[int]:
    """The reading before: shards in a shuffled order, 8 interleaved in turn, the label filter, the buffer."""
    import tensorflow as tf

    from fbnet_tf import data

    files = data.record_files(record_dir, "train")
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=0)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8))
    ds = ds.filter(lambda s: tf.io.parse_single_example(s, data._LABEL_SPEC)["va_mask"] > 0)
    ds = ds.shuffle(data.SHUFFLE_BUFFER, seed=0).repeat()
    size = data.stream_sizes(record_dir)["va"]
    return _videos(ds.take(epochs * (size // batch) * batch).batch(batch))


def uniform(videos: list, batch: int, epochs: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    videos = np.asarray(videos, dtype=object)
    result = []
    for _ in range(epochs):
        order = videos[rng.permutation(len(videos))]
        result += [len(set(order[i:i + batch])) for i in range(0, len(order) - batch + 1, batch)]
    return result


def report(name: str, record_dir: str, batch: int, epochs: int) -> list[str]:
    from fbnet_tf import data

    videos = va_frames(record_dir)
    rows = {"this pipeline": this_pipeline(record_dir, batch, epochs),
            "before (8 shards interleaved + 4096 buffer)": replaced_pipeline(record_dir, batch, epochs),
            "uniform sampling": uniform(videos, batch, epochs)}
    lines = [f"{name}: {len(set(videos))} videos, {len(videos)} VA frames, "
             f"{len(data.record_files(record_dir, 'train'))} shards; "
             f"VA batch {batch}, {epochs} epochs",
             f"  {'order':<46}{'median':>8}{'p10':>6}{'p90':>6}{'batches':>9}"]
    for label, counts in rows.items():
        lines.append(f"  {label:<46}{statistics.median(counts):>8.0f}{np.percentile(counts, 10):>6.0f}"
                     f"{np.percentile(counts, 90):>6.0f}{len(counts):>9}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", metavar="DIR", help="a video record directory instead of the two sets")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "fbnet_video_mixing"),
                        help="where the demo build and the release-shaped set are written (kept for reruns)")
    parser.add_argument("--demo-scale", default="medium", help="demo world scale (tiny, small, medium)")
    parser.add_argument("--demo-batch", type=int, default=64)
    parser.add_argument("--videos", type=int, default=240, help="release-shaped set: videos")
    parser.add_argument("--mean-frames", type=int, default=2000, help="release-shaped set: mean frames a video")
    parser.add_argument("--batch", type=int, default=401, help="VA batch (the paper's 401 of 751)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    lines = []
    if args.records:
        lines += report(args.records, args.records, args.batch, args.epochs)
    else:
        lines += report(f"demo Aff-Wild2 build ({args.demo_scale})", demo_build(args.work, args.demo_scale),
                        args.demo_batch, args.epochs)
        shaped = os.path.join(args.work, f"release-{args.videos}x{args.mean_frames}")
        if not os.path.exists(shaped):
            release_shaped(shaped + ".tmp", args.videos, args.mean_frames)
            os.replace(shaped + ".tmp", shaped)
        lines += report(f"release-shaped set ({args.videos} videos, 2 a shard)", shaped, args.batch, args.epochs)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
