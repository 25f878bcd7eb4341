"""The tf.data input pipeline: the paper's three streams (VA-set, AU-set, EXPR-set) fed as one batch (section 4.1).

Each stream interleaves every TFRecord directory that carries its annotation and contributes a fixed share of every
batch, in proportion to the stream's size: the paper's 401/247/103 split of a 751 batch. One epoch is
`steps_per_epoch` batches, enough for one pass over the largest stream, and it visits every image of every stream
at least once: each stream's epoch is one whole shuffled pass topped up from a second one to the epoch's length,
so no pass drifts across an epoch boundary (Keras draws every epoch from one iterator), whatever the stream sizes,
the batch split or `deterministic`.

A stream reads its shards as segments of about equal length with up to READERS readers, merged in an exactly uniform
random order, then a shuffle buffer: a batch draws from all over the stream, so a VA batch mixes nearly as many
videos as uniform sampling would, although builders write each video's frames together. Only the record order is
built per epoch; decoding runs on across epochs and keeps the order, so an epoch's records make exactly its batches.

An image in a stream keeps only that stream's labels; its other labels are masked. An AffectNet image sits in the
VA stream and in the EXPR stream: it is fed once with its VA label and once with its expression, so neither loss
counts it twice and each stream's share of the batch means what its batch size says.

Images leave the pipeline as float32 RGB in 0..255; normalisation is the model's business.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from fbnet_tf.labels import AUS
from fbnet_tf.records import facs_dense, facs_spec, feature_spec

STREAMS = ("va", "au", "expr")
# Builders store 112x112 crops; the paper trains at 96x96: the margin between the two is the room random crops
# move in. Other sizes keep the same ratio (resize the stored crop to image_size * CROP_MARGIN, then crop).
CROP_MARGIN = 112 / 96
SHUFFLE_BUFFER = 4096
# A stream reads up to READERS segments of its shards at once, one record from each in turn. Segments hold about
# 1/READERS of the stream, and at least MIN_SEGMENT records: opening one (reader, file, skip to its start, which
# reads record headers only) costs ~0.7 ms, 11 us a record at 64 records, ~3 us (3% of a decode) at 256.
READERS = 256
MIN_SEGMENT = 256
LOCAL_READ_BUFFER = 64 * 1024  # bytes per open segment on a local disk (remote file systems keep TF's default)
_LABEL_KEYS = ("expr", "va", "va_mask", "au", "au_mask")
# The features that say which streams a record belongs to: parsed alone to select and count records.
_LABEL_SPEC = {k: v for k, v in feature_spec().items() if k in ("expr", "va_mask", "au_mask")}
_TRAINING_SPEC = {k: v for k, v in feature_spec().items() if k in ("image/encoded", *_LABEL_KEYS)}
_SELECT_SPEC = {**_LABEL_SPEC, "sample_id": feature_spec()["sample_id"]}
log = logging.getLogger("fbnet_tf.data")


# ---------------------------------------------------------------- record directories, manifests, stream sizes

def record_files(record_dir: str, split: str) -> list[str]:
    """The sorted shard files `<source>-<split>.tfrecord-000NN-of-000MM` of one split in one directory."""
    return sorted(glob.glob(os.path.join(record_dir, f"*-{split}.tfrecord*")))


def _read_manifest(record_dir: str) -> dict:
    path = os.path.join(record_dir, "manifest.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from err
    _check_manifest_covers_shards(record_dir, manifest)
    return manifest


def _check_manifest_covers_shards(record_dir: str, manifest: dict) -> None:
    """A folder's manifest sizes its epochs: shards it does not list (another database built into the same folder,
    an older build's leftovers) would be read but not counted. ValueError naming them."""
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(e, dict) and "shards" in e for e in splits.values()):
        return  # a manifest without shard lists (hand-written): nothing to compare
    listed = {shard.get("file") for entry in splits.values() for shard in entry["shards"]}
    unlisted = sorted(name for name in map(os.path.basename, glob.glob(os.path.join(record_dir, "*.tfrecord*")))
                      if name not in listed)
    if unlisted:
        raise ValueError(f"{record_dir}: {len(unlisted)} shard file(s) that its manifest.json "
                         f"({manifest.get('database', '?')}) does not list: {', '.join(unlisted[:5])}"
                         f"{' ...' if len(unlisted) > 5 else ''}; a record folder holds one database's build "
                         "(move them to their own folder, or rebuild)")


def _manifest_split(manifest: dict, split: str) -> dict | None:
    entry = (manifest.get("splits") or {}).get(split)
    return entry if isinstance(entry, dict) else None


def _manifest_stream_counts(manifest: dict, split: str) -> dict[str, int] | None:
    """Per-stream image counts of a split from the builders' manifest (`splits.<split>.labels`), or None.

    VA and expression counts are exact (one label per image). The manifest counts AUs per AU, not per image: the
    AU-stream size is exact only when every AU-annotated image has the same AU set (all nonzero per-AU counts
    equal, as in DISFA or BP4D); otherwise None, and the caller scans the records.
    """
    entry = _manifest_split(manifest, split) or {}
    labels = entry.get("labels")
    if not isinstance(labels, dict):
        return None
    va, expressions, au_annotated = labels.get("va"), labels.get("expression"), labels.get("au_annotated")
    if not (isinstance(va, int) and isinstance(expressions, dict) and isinstance(au_annotated, dict)):
        return None
    per_au = {n for n in au_annotated.values() if n > 0}
    if len(per_au) > 1:
        return None
    return {"va": va, "au": per_au.pop() if per_au else 0, "expr": sum(expressions.values()),
            "records": entry.get("count") if isinstance(entry.get("count"), int) else None}


def _scan_stream_counts(files: Sequence[str]) -> dict[str, int]:
    """Count the images of each stream (and all records) by parsing the label features (vectorised, no decode)."""
    counts = dict.fromkeys((*STREAMS, "records"), 0)
    if not files:
        return counts
    ds = tf.data.TFRecordDataset(list(files), num_parallel_reads=tf.data.AUTOTUNE).batch(4096)
    ds = ds.map(lambda s: tf.io.parse_example(s, _LABEL_SPEC), num_parallel_calls=tf.data.AUTOTUNE)
    for batch in ds.as_numpy_iterator():
        counts["va"] += int((batch["va_mask"] > 0).sum())
        counts["au"] += int((batch["au_mask"].sum(axis=1) > 0).sum())
        counts["expr"] += int((batch["expr"] >= 0).sum())
        counts["records"] += len(batch["expr"])
    return counts


def _dir_stream_counts(record_dir: str, split: str) -> dict[str, int | None]:
    """{"va", "au", "expr": images per stream, "records": all records (None when unknown)} of one directory."""
    counts = _manifest_stream_counts(_read_manifest(record_dir), split)
    return counts if counts is not None else _scan_stream_counts(record_files(record_dir, split))


def stream_sizes(record_dirs: str | Iterable[str], split: str = "train") -> dict[str, int]:
    """Images per stream {"va", "au", "expr"} over the given record directories (manifest counts, else a scan).

    An image annotated for two tasks counts in both streams.
    """
    totals = dict.fromkeys(STREAMS, 0)
    for record_dir in _as_list(record_dirs):
        counts = _dir_stream_counts(record_dir, split)
        for stream in STREAMS:
            totals[stream] += counts[stream]
    return totals


def _count_records(path: str) -> int:
    return int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1).numpy())


def shard_record_counts(record_dir: str, split: str) -> dict[str, int]:
    """{shard file: number of records} of one split of one directory: the manifest's per-shard counts when they
    list exactly the shards on disk, else counted."""
    files = record_files(record_dir, split)
    shards = (_manifest_split(_read_manifest(record_dir), split) or {}).get("shards") or []
    listed = {os.path.join(record_dir, str(s.get("file"))): s.get("count") for s in shards if isinstance(s, dict)}
    if set(listed) == set(files) and all(isinstance(n, int) for n in listed.values()):
        return {f: listed[f] for f in files}
    return {f: _count_records(f) for f in files}


def segments(counts: Mapping[str, int], *, pieces: int = READERS, at_least: int = 1) -> list[tuple[str, int, int]]:
    """Cut shards {file: records} into (file, first record, records) segments of about equal length, in file
    order, each record in exactly one: about `pieces` of them (fewer where MIN_SEGMENT records each would be
    fewer), and at least `at_least` when there are that many records (one per input pipeline)."""
    total = sum(counts.values())
    length = max(math.ceil(total / max(pieces, 1)), MIN_SEGMENT)
    if at_least > 1:
        length = min(length, max(1, total // at_least))
    cut = []
    for path, n in counts.items():
        k = max(1, math.ceil(n / length))
        bounds = [n * i // k for i in range(k + 1)]
        cut += [(path, start, stop - start) for start, stop in zip(bounds, bounds[1:]) if stop > start]
    return cut


# Shard files go whole to the workers when the most loaded worker then reads at most this much more than the least.
FILE_SHARDING_BALANCE = 1.1


def worker_share(counts: Mapping[str, int], pipelines: int, pipeline_id: int, *,
                 whole_files: bool = True) -> tuple[list, tuple[int, int] | None]:
    """One input pipeline's (worker's) share of a stream's shards {file: records}: (its segments, None) when it
    reads whole files, or (every segment, (pipelines, pipeline_id)) when it keeps every `pipelines`-th record of
    each pass (`Dataset.shard`, after the stream's filter), as tf.data's auto-sharding does by file or by data.

    By file where the files allow: every record of them belongs to the stream (`whole_files`; a file may otherwise
    hold none of the stream's images, e.g. the AU-coded videos of a release all in one shard) and, dealt out
    largest first to the least loaded worker, the loads lie within FILE_SHARDING_BALANCE of each other."""
    loads, owned = [0] * pipelines, [set() for _ in range(pipelines)]
    for path in sorted(counts, key=lambda f: (-counts[f], f)):
        least = loads.index(min(loads))
        owned[least].add(path)
        loads[least] += counts[path]
    if whole_files and min(loads) > 0 and max(loads) <= FILE_SHARDING_BALANCE * min(loads):
        return segments({f: n for f, n in counts.items() if f in owned[pipeline_id]}), None
    return segments(counts), (pipelines, pipeline_id)


def stream_batch_sizes(sizes: Mapping[str, int], batch_size: int) -> dict[str, int]:
    """Split `batch_size` over the non-empty streams in proportion to their sizes (largest remainder, >= 1 each)."""
    present = {s: n for s, n in sizes.items() if n > 0}
    if not present:
        raise ValueError("no stream has any image: the record directories hold no labelled record for this split")
    if batch_size < len(present):
        raise ValueError(f"batch_size {batch_size} is smaller than the number of streams {len(present)}")
    total = sum(present.values())
    exact = {s: batch_size * n / total for s, n in present.items()}
    shares = {s: max(1, math.floor(x)) for s, x in exact.items()}
    # Hand the rounding leftovers to the largest remainders; when the minimum of 1 overshoots, take the excess
    # from the streams most above their exact share (never below 1).
    order = sorted(present, key=lambda s: exact[s] - math.floor(exact[s]), reverse=True)
    i = 0
    while sum(shares.values()) < batch_size:
        shares[order[i % len(order)]] += 1
        i += 1
    while sum(shares.values()) > batch_size:
        most_above = max((s for s in shares if shares[s] > 1), key=lambda s: shares[s] - exact[s])
        shares[most_above] -= 1
    return shares


# ---------------------------------------------------------------- per-example maps

def _decode(encoded):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def _stored_side(image_size: int) -> int:
    return int(round(image_size * CROP_MARGIN))


def _crop(encoded, image_size: int, corner):
    """The image_size x image_size window at `corner` ([2] int32, top-left) of the image at image_size * CROP_MARGIN:
    uint8 RGB.

    A JPEG already stored at that side (what the builders write for this size) is decoded only inside the window,
    which is cheaper than a full decode; anything else is decoded, resized to that side, rounded and cropped."""
    side = _stored_side(image_size)

    def crop_while_decoding():
        window = tf.concat([corner, [image_size, image_size]], axis=0)
        return tf.io.decode_and_crop_jpeg(encoded, window, channels=3)

    def decode_then_crop():
        image = _decode(encoded)
        resized = tf.cond(tf.reduce_all(tf.equal(tf.shape(image)[:2], side)), lambda: image,
                          lambda: tf.cast(tf.round(tf.clip_by_value(tf.image.resize(image, [side, side]), 0, 255)),
                                          tf.uint8))
        return tf.slice(resized, tf.concat([corner, [0]], axis=0), [image_size, image_size, 3])

    at_side = tf.cond(tf.io.is_jpeg(encoded), lambda: tf.reduce_all(tf.io.extract_jpeg_shape(encoded)[:2] == side),
                      lambda: tf.constant(False))
    return tf.ensure_shape(tf.cond(at_side, crop_while_decoding, decode_then_crop), [image_size, image_size, 3])


def _centre_corner(image_size: int):
    return tf.fill([2], (_stored_side(image_size) - image_size) // 2)


def centre_crop(crops, image_size: int):
    """Aligned face crops of any size [N, H, W, 3] -> the model's view of them, as training and evaluation frame
    it: resized (bilinear) to image_size * CROP_MARGIN and cut to the centre image_size window; float32 0..255.
    What the exported serving graph and `fbnet_tf.predict` do to the 112 px crops they are given."""
    side = _stored_side(image_size)
    offset = (side - image_size) // 2
    resized = tf.image.resize(tf.cast(crops, tf.float32), (side, side), method="bilinear")
    return resized[:, offset:offset + image_size, offset:offset + image_size, :]


def eval_image(encoded, image_size: int):
    """The centre image_size crop of the image at image_size * CROP_MARGIN: float32 RGB 0..255."""
    return tf.cast(_crop(encoded, image_size, _centre_corner(image_size)), tf.float32)


def train_image(encoded, image_size: int, seed):
    """A random image_size crop of the image at image_size * CROP_MARGIN, uint8, driven by a [2] stateless seed
    (reproducible anywhere). The flip and colour jitter come later, on the whole batch (`augment_batch`)."""
    corner = tf.random.stateless_uniform([2], seed, 0, _stored_side(image_size) - image_size + 1, dtype=tf.int32)
    return _crop(encoded, image_size, corner)


def random_flip(images, seed):
    """Mirror each image of a batch [B,S,S,3] left-right with probability 1/2. Expressions and AUs are symmetric
    labels here: a mirrored face keeps them."""
    mirror = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed) < 0.5
    return tf.where(mirror, tf.reverse(images, axis=[2]), images)


# Colour jitter ranges: brightness shift (0..255 scale), contrast and saturation factors.
BRIGHTNESS, CONTRAST, SATURATION = 25.0, (0.8, 1.2), (0.8, 1.2)
# Contrast scales about each image's per-channel mean, estimated on a 1-in-MEAN_STRIDE^2 pixel grid: a full-image
# reduction was the costliest step of the whole augmentation, for a reference point that needs no precision.
MEAN_STRIDE = 4
_LUMA = (0.299, 0.587, 0.114)


def colour_jitter(images, seed):
    """Per-image brightness, contrast and saturation jitter of a batch [B,S,S,3] (0..255) -> float32, vectorised.

    Brightness adds a shift, contrast scales each image about its per-channel mean (as `tf.image.adjust_contrast`,
    with the mean taken on a MEAN_STRIDE grid), saturation blends with the grey (luma) image (as torchvision). All
    three are affine in the pixel, so they are folded into one 3x3 matrix and offset per image: one pass over the
    pixels instead of a dozen.
    """
    images = tf.cast(images, tf.float32)
    n = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    brightness = tf.random.stateless_uniform([n, 1, 1], seeds[0], -BRIGHTNESS, BRIGHTNESS)
    contrast = tf.random.stateless_uniform([n, 1, 1], seeds[1], *CONTRAST)
    saturation = tf.random.stateless_uniform([n, 1, 1], seeds[2], *SATURATION)
    # saturation: x -> s x + (1 - s) (luma . x) 1, as a matrix M [B,3,3] acting on row vectors
    blend = saturation * tf.eye(3) + (1.0 - saturation) * tf.constant(_LUMA)[:, None] * tf.ones([1, 3])
    mean = tf.reduce_mean(images[:, ::MEAN_STRIDE, ::MEAN_STRIDE], axis=[1, 2])[:, None, :]  # [B,1,3]
    # M (c x + (1 - c) mean + b) = x (c M) + ((1 - c) mean + b) M
    offset = tf.matmul((1.0 - contrast) * mean + brightness, blend)[:, None]  # [B,1,1,3]
    matrix = (contrast * blend)[:, None, None]  # [B,1,1,3,3]: row k is what input channel k adds to each output
    # Written channel by channel (not a K=3 matmul or a reduce over a size-3 axis), XLA makes this one
    # vectorised pass, fused with the cast, the flip and the clip.
    pixels = sum(images[..., k:k + 1] * matrix[..., k, :] for k in range(3)) + offset
    return tf.clip_by_value(pixels, 0.0, 255.0)


def augment_batch(images, seed):
    """Flip and colour-jitter a batch of crops (uint8 or float 0..255) -> float32 0..255; [2] stateless seed."""
    flip_seed, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    return colour_jitter(random_flip(tf.cast(images, tf.float32), flip_seed), jitter_seed)


def _has_label(stream: str, features) -> tf.Tensor:
    if stream == "va":
        return features["va_mask"] > 0
    if stream == "au":
        return tf.reduce_sum(features["au_mask"]) > 0
    return features["expr"] >= 0


def keeps_au_labels(sample_id, fraction: float, seed: int = 0) -> tf.Tensor:
    """True for a seeded, stable `fraction` of sample ids (hash based: the same images whatever the order): the
    images whose AU labels `au_label_fraction` keeps."""
    bucket = tf.strings.to_hash_bucket_fast(tf.strings.join([str(seed), ":", sample_id]), 1_000_000)
    return bucket < int(round(fraction * 1_000_000))


def _selector(stream: str, au_label_fraction: float = 1.0, seed: int = 0):
    """predicate(label features incl. sample_id) -> the record is in `stream`; with `au_label_fraction` < 1 the AU
    stream keeps that seeded fraction of its images (the rest lose their AU labels for this run)."""
    if stream == "au" and au_label_fraction < 1.0:
        return lambda f: _has_label("au", f) & keeps_au_labels(f["sample_id"], au_label_fraction, seed)
    return lambda f: _has_label(stream, f)


def _count_selected(files: Sequence[str], predicate) -> int:
    ds = tf.data.TFRecordDataset(list(files)).map(lambda s: tf.io.parse_single_example(s, _SELECT_SPEC))
    return int(ds.reduce(np.int64(0), lambda n, f: n + tf.cast(predicate(f), tf.int64)).numpy())


def _has_any_label(features) -> tf.Tensor:
    return tf.reduce_any([_has_label(s, features) for s in STREAMS])


def _all_targets(features) -> dict:
    return {"expr": tf.cast(features["expr"], tf.int32), "va": features["va"], "va_mask": features["va_mask"],
            "au": features["au"], "au_mask": features["au_mask"]}


# The label features each stream carries through its per-image map; the masked rest is filled in per batch.
_STREAM_LABELS = {"va": ("va",), "au": ("au", "au_mask"), "expr": ("expr",)}


def _stream_targets(stream: str, labels) -> dict:
    """A stream's batch of its own labels -> the five targets, every other task masked (whole-batch ops: the
    per-image map stays as small as the baseline decode's)."""
    n, aus = tf.shape(next(iter(labels.values())))[0], len(AUS)
    targets = {"expr": -tf.ones([n], tf.int32), "va": tf.zeros([n, 2]), "va_mask": tf.zeros([n]),
               "au": tf.zeros([n, aus]), "au_mask": tf.zeros([n, aus])}
    if stream == "va":
        targets.update(va=labels["va"], va_mask=tf.ones([n]))
    elif stream == "au":
        targets.update(au=labels["au"], au_mask=labels["au_mask"])
    else:
        targets.update(expr=tf.cast(labels["expr"], tf.int32))
    if "sample_id" in labels:
        targets["sample_id"] = labels["sample_id"]
    return targets


def _parse(serialized):
    """The image and the five training targets only: skipping the other features makes the parse cheaper."""
    return tf.io.parse_single_example(serialized, _TRAINING_SPEC)


# ---------------------------------------------------------------- datasets

def _as_list(record_dirs) -> list[str]:
    return [str(record_dirs)] if isinstance(record_dirs, (str, os.PathLike)) else [str(d) for d in record_dirs]


# Shards on these file systems are read in parallel (their latency needs it); local shards are read in turn: on a
# local disk parallel reads only add threads (three streams' worth), measured ~5% slower overall on 2 cores.
REMOTE_PREFIXES = ("gs://", "s3://", "hdfs://", "http://", "https://")


def _records(files: Sequence[str], *, shuffle_seed: int | None = None):
    """The records of `files`, up to 8 shards at a time: in a fixed order (validation), or with the shards in a
    per-epoch shuffled order when `shuffle_seed` is given (a staged family's streams)."""
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    cycle = min(len(files), 8)
    if any(str(f).startswith(REMOTE_PREFIXES) for f in files):
        return ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True)
    return ds.interleave(tf.data.TFRecordDataset, cycle_length=cycle)  # in turn: deterministic anyway


def segment_table(cut: Sequence[tuple[str, int, int]]):
    """`segments(...)` as the (files, starts, lengths) tensors `stream_epoch_records` reads."""
    files, starts, lengths = zip(*cut)
    return (tf.constant(files, tf.string), tf.constant(starts, tf.int64), tf.constant(lengths, tf.int64))


def _seed_pair(stream_seed: int, epoch, draw: int):
    """[2] int64 stateless seed of one draw (0 = the epoch's pass, 1 = its top-up) of one stream's epoch."""
    return tf.stack([tf.constant(stream_seed, tf.int64), tf.cast(epoch, tf.int64) * 2 + draw])


def _stream_pass(table, seed_pair, shuffle_seed: int, *, select: str | None, remote: bool,
                 shard: tuple[int, int] | None = None):
    """One pass over a stream's segments (every record of them once), filtered to the stream `select` (when set)
    and shuffled.

    Up to READERS readers, each reading its segments in turn, are merged in an exactly uniform random order (a
    shuffled list of reader indices, each repeated by its number of records): every reader advances at the same
    rate and all of them end together, so every stretch of the pass draws from all over the stream."""
    files, starts, lengths = table
    count = int(files.shape[0])
    readers = min(count, READERS)

    def read(i):
        return tf.data.TFRecordDataset(files[i], buffer_size=None if remote else LOCAL_READ_BUFFER) \
            .skip(starts[i]).take(lengths[i])

    sources, totals = [], []
    for r in range(readers):  # reader r reads segments r, r + readers, ... in turn (the merge does the mixing)
        mine = range(r, count, readers)
        reader = read(mine[0])
        for i in mine[1:]:
            reader = reader.concatenate(read(i))
        sources.append(reader.prefetch(tf.data.AUTOTUNE) if remote else reader)  # remote: hide each read's latency
        totals.append(tf.reduce_sum(tf.gather(lengths, list(mine))))
    choice = tf.random.experimental.stateless_shuffle(
        tf.repeat(tf.range(readers, dtype=tf.int64), tf.stack(totals)), seed_pair)
    ds = tf.data.Dataset.choose_from_datasets(sources, tf.data.Dataset.from_tensor_slices(choice))
    if select is not None:  # on the label features alone; the full parse happens once, with the decode
        predicate = _selector(select) if isinstance(select, str) else select
        ds = ds.filter(lambda serialized: predicate(tf.io.parse_single_example(serialized, _SELECT_SPEC)))
    # A fixed op seed (a tensor one fails under a global seed, as `keras.utils.set_random_seed` sets): the merge
    # above already orders every pass differently.
    if shard is not None:  # (workers, this one): every worker merges the same order, and keeps its n-th records
        ds = ds.shard(*shard)
    return ds.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed)


def stream_epoch_records(table, *, epoch, per_epoch: int, stream_seed: int, select: str | None = None,
                         remote: bool = False, shard: tuple[int, int] | None = None):
    """The serialized records one stream feeds in epoch `epoch`: exactly `per_epoch` of them, one whole shuffled
    pass over the stream first (so every record is in every epoch when the pass is no longer than `per_epoch`),
    then the start of another pass (repeated for a stream much smaller than its share of the epoch).

    `table` is `segment_table(segments(...))`; `select` filters the records to one stream's labels (a stream name,
    or a predicate on the label features, see `_selector`)."""
    options = dict(select=select, remote=remote, shard=shard)
    first = _stream_pass(table, _seed_pair(stream_seed, epoch, 0), 2 * stream_seed, **options)
    top_up = _stream_pass(table, _seed_pair(stream_seed, epoch, 1), 2 * stream_seed + 1, **options).repeat()
    return first.concatenate(top_up).take(per_epoch)


def _stream_batches(stream, table, *, per_epoch: int, select, batch: int, image_size: int, augment: bool,
                    stream_seed: int, remote: bool, sample_ids: bool, shard: tuple[int, int] | None = None):
    """One stream's endless batches, epoch after epoch (`per_epoch` // `batch` of them each): its records decoded
    and cropped (at random when augmenting; uint8), with only this stream's labels.

    The parallel decode keeps the records' order, so an epoch's records make exactly its batches; only the record
    order is built per epoch (`stream_epoch_records`), and the decoding runs on across epoch boundaries."""
    records = tf.data.Dataset.counter().flat_map(
        lambda epoch: stream_epoch_records(table, epoch=epoch, per_epoch=per_epoch, stream_seed=stream_seed,
                                           select=select, remote=remote, shard=shard))
    centre = _centre_corner(image_size)
    keys = _STREAM_LABELS[stream] + (("sample_id",) if sample_ids else ())
    spec = {k: v for k, v in feature_spec().items() if k in ("image/encoded", *keys)}

    def to_example(index, serialized):
        features = tf.io.parse_single_example(serialized, spec)  # the image and this stream's labels only
        # uint8 crops until the batch is assembled: a quarter of the bytes to batch and concatenate.
        if augment:
            image = train_image(features["image/encoded"], image_size,
                                tf.stack([tf.cast(stream_seed, tf.int64), index]))
        else:
            image = _crop(features["image/encoded"], image_size, centre)
        return image, {k: features[k] for k in keys}

    ds = records.enumerate().map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch, drop_remainder=True).map(lambda images, labels: (images, _stream_targets(stream, labels)))


@tf.function(jit_compile=True)
def _augment(images, seed):
    # XLA fuses the uint8 -> float cast, the flip and the jitter into one pass over the pixels (plus the sparse
    # mean), where per-image ops would cost a pass and the tf.data function overhead each.
    return augment_batch(images, seed)


def _assemble(augment: bool, seed: int):
    """(batch index, per-stream batches) -> one batch: streams concatenated as float32, flipped and
    colour-jittered when augmenting."""
    augment_seed = tf.constant(seed + 1_000_003, tf.int64)

    def assemble(index, batches):
        # The concatenation stays outside XLA: a plain copy there, a slow per-element select inside.
        images = tf.concat([b[0] for b in batches], axis=0)
        images = (_augment(images, tf.stack([augment_seed, index])) if augment
                  else tf.cast(images, tf.float32))
        return images, {k: tf.concat([b[1][k] for b in batches], axis=0) for k in batches[0][1]}

    return assemble


def training_dataset(record_dirs, *, batch_size: int, image_size: int, split: str = "train",
                     tasks: Sequence[str] = ("va", "au", "expr"), augment: bool = True, deterministic: bool = False,
                     seed: int = 0, input_context: tf.distribute.InputContext | None = None,
                     sample_ids: bool = False, au_label_fraction: float = 1.0):
    """The three-stream training dataset and the number of steps that makes one epoch.

    Returns `(dataset, steps_per_epoch)`. The dataset is infinite and yields
    `(images float32 [B,S,S,3] RGB 0..255, {"expr" int32 [B] (-1 = none), "va" [B,2], "va_mask" [B],
    "au" [B,17], "au_mask" [B,17]})`, the streams' rows in the order va, au, expr (`sample_ids=True` adds
    "sample_id" string [B], to inspect what a batch holds). `steps_per_epoch` is one pass over the largest stream;
    every `steps_per_epoch` consecutive batches from one iterator (one Keras epoch) hold every image of every
    stream at least once.

    `batch_size` is global; with an `input_context` (from `strategy.distribute_datasets_from_function`) the
    dataset yields this worker's share of every stream (`worker_share`: whole files, or every n-th record of each
    pass) in per-replica batches, and each worker's epoch covers its share when the workers' shares of a stream
    are about equal (they are, within FILE_SHARDING_BALANCE or one record). `tasks` restricts the streams
    (single-task baselines). `au_label_fraction` < 1 keeps AU labels for that seeded fraction of the AU stream's
    images only (`keeps_au_labels`): the setting where AU labels are scarce. The same seed gives the same batches whatever `deterministic` is (augmentation uses
    stateless per-image seeds; the record order is seeded and the parallel maps keep it, which is also what keeps
    an epoch's images in it); `deterministic` sets tf.data's option of that name for the rest.
    """
    dirs = _as_list(record_dirs)
    unknown = set(tasks) - set(STREAMS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; expected a subset of {STREAMS}")
    if not 0.0 < au_label_fraction <= 1.0:
        raise ValueError(f"au_label_fraction={au_label_fraction}: expected a number in (0, 1]")
    per_dir = {d: _dir_stream_counts(d, split) for d in dirs}
    sizes = {s: sum(c[s] for c in per_dir.values()) for s in STREAMS if s in tasks}
    scarce = "au" in sizes and au_label_fraction < 1.0
    if scarce:
        sizes["au"] = _count_selected([f for d in dirs if per_dir[d]["au"] for f in record_files(d, split)],
                                      _selector("au", au_label_fraction, seed))
    replicas = 1 if input_context is None else input_context.num_replicas_in_sync
    pipelines = 1 if input_context is None else input_context.num_input_pipelines
    replica_batch = batch_size if input_context is None else input_context.get_per_replica_batch_size(batch_size)
    shares = stream_batch_sizes(sizes, replica_batch)
    steps_per_epoch = max(math.ceil(sizes[s] / (b * replicas)) for s, b in shares.items())
    # This pipeline's batches per epoch: each global step takes one per replica it feeds.
    batches_per_epoch = steps_per_epoch * max(1, replicas // pipelines)

    plans = []
    for stream in (s for s in STREAMS if s in shares):
        carriers = [d for d in dirs if per_dir[d][stream] > 0]
        counts = {f: n for d in carriers for f, n in shard_record_counts(d, split).items()}
        filtered = any(per_dir[d][stream] != per_dir[d]["records"] for d in carriers) or \
            (stream == "au" and scarce)
        cut, shard = segments(counts), None
        if input_context is not None:
            if sizes[stream] < pipelines:
                raise ValueError(f"the {stream} stream has {sizes[stream]} images: fewer than the {pipelines} "
                                 "input pipelines (workers)")
            cut, shard = worker_share(counts, pipelines, input_context.input_pipeline_id, whole_files=not filtered)
            log.info("%s stream: %d shard file(s), %d images, sharded by %s over %d input pipelines (workers)",
                     stream, len(counts), sizes[stream], "data" if shard else "file", pipelines)
        plans.append(dict(stream=stream, table=segment_table(cut), per_epoch=batches_per_epoch * shares[stream],
                          shard=shard,
                          batch=shares[stream],
                          select=_selector(stream, au_label_fraction, seed) if filtered else None,
                          remote=any(f.startswith(REMOTE_PREFIXES) for f, _, _ in cut),
                          stream_seed=seed * len(STREAMS) + STREAMS.index(stream)))

    streams = tuple(_stream_batches(image_size=image_size, augment=augment, sample_ids=sample_ids, **plan)
                    for plan in plans)
    ds = tf.data.Dataset.zip(streams).enumerate()
    # Ordered, as the decode: batch k of every stream belongs to epoch k // batches_per_epoch.
    ds = ds.map(_assemble(augment, seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = _options(deterministic, sharded=input_context is not None)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options), steps_per_epoch


def _options(deterministic: bool, sharded: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    if sharded:  # we shard per worker ourselves; auto-sharding on top would drop data twice
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _split_files(dirs: Sequence[str], split: str) -> list[str]:
    files = [f for d in dirs for f in record_files(d, split)]
    if not files:
        raise FileNotFoundError(f"no '*-{split}.tfrecord*' shards in {', '.join(dirs)}")
    return files


def validation_dataset(record_dirs, *, batch_size: int, image_size: int, split: str = "validation"):
    """Every labelled image of the split once, centre-cropped, with all of its labels: for `fit(validation_data=)`.

    Same element structure as `training_dataset`; finite; deterministic order.
    """
    files = _split_files(_as_list(record_dirs), split)
    ds = _records(files).map(_parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(_has_any_label).map(lambda f: (eval_image(f["image/encoded"], image_size), _all_targets(f)),
                                       num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _extra_feature_spec(files: Sequence[str]) -> dict:
    """Spec of the features beyond the contract that the first record carries (e.g. a clip id)."""
    known = {**feature_spec(), **facs_spec()}
    first = next(iter(tf.data.TFRecordDataset(files[:1]).take(1)), None)
    if first is None:
        return {}
    example = tf.train.Example.FromString(first.numpy())
    spec = {}
    for key, feature in example.features.feature.items():
        if key in known:
            continue
        kind = feature.WhichOneof("kind")
        if kind is None:
            continue
        dtype, values = {"bytes_list": (tf.string, feature.bytes_list.value),
                         "int64_list": (tf.int64, feature.int64_list.value),
                         "float_list": (tf.float32, feature.float_list.value)}[kind]
        if not values:
            continue
        shape = [] if len(values) == 1 else [len(values)]
        spec[key] = tf.io.FixedLenFeature(shape, dtype)
    return spec


def evaluation_dataset(record_dir: str, *, split: str, image_size: int, batch_size: int,
                       aus: Sequence[int] | None = None):
    """One database split in record order: `(images, fields)` with every label, id and extra feature.

    `fields` holds `source`, `split`, `sample_id`, `subject` (strings), `expr`, `va`, `va_mask`, `au`, `au_mask`,
    `au_intensity`, `compound`, `attributes`, `attributes_mask`, plus any feature a builder added (e.g. a clip id).
    With `aus` (a model's own AU list, e.g. FATAUVA-Net's 14 with AU45), `au`/`au_mask` are over those AUs, read
    from the records' `facs/*` lists. Unlabelled images included.
    """
    files = _split_files([str(record_dir)], split)
    spec = {**feature_spec(), **_extra_feature_spec(files)}
    if aus is not None:
        spec.update(facs_spec())
    drop = ("image/encoded", "image/height", "image/width", *facs_spec())

    def to_example(serialized):
        features = tf.io.parse_single_example(serialized, spec)
        fields = {k: v for k, v in features.items() if k not in drop}
        fields["expr"] = tf.cast(fields["expr"], tf.int32)
        if aus is not None:
            fields["au"], fields["au_mask"] = facs_dense(features["facs/au"], features["facs/occurrence"], aus)
            fields.pop("au_intensity")
        return eval_image(features["image/encoded"], image_size), fields

    ds = tf.data.TFRecordDataset(files).map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def record_count(record_dir: str, split: str) -> int:
    """Number of records in one split of one directory (the manifest's count, else a count of the shards)."""
    count = (_manifest_split(_read_manifest(record_dir), split) or {}).get("count")
    if isinstance(count, int):
        return count
    files = record_files(record_dir, split)
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1).numpy()) if files else 0


# ---------------------------------------------------------------- one labelled stream (staged families)

def _pad_ragged(features: dict) -> dict:
    """Batched `facs/*` lists come ragged: pad them (AU -1, occurrence 0) so that dense label code can read them."""
    return {k: (v.to_tensor(default_value=-1 if k == "facs/au" else 0) if isinstance(v, tf.RaggedTensor) else v)
            for k, v in features.items()}


def _label_spec(label_features: Sequence[str]) -> dict:
    spec = {**feature_spec(), **facs_spec()}
    unknown = [k for k in label_features if k not in spec]
    if unknown:
        raise ValueError(f"label features {unknown} are not in the TFRecord contract")
    return {k: spec[k] for k in label_features}


def scan_targets(record_dirs, split: str, *, label_features: Sequence[str], to_targets, keep) -> dict:
    """The targets of every record of a split that `keep` accepts, as numpy arrays (labels only, no decode)."""
    files = [f for d in _as_list(record_dirs) for f in record_files(d, split)]
    if not files:
        return {}
    spec = _label_spec(label_features)
    ds = tf.data.TFRecordDataset(files).batch(4096)
    ds = ds.map(lambda s: to_targets(_pad_ragged(tf.io.parse_example(s, spec))))
    parts: dict[str, list] = {}
    for batch in ds.as_numpy_iterator():
        rows = np.asarray(keep(batch))
        for key, value in batch.items():
            parts.setdefault(key, []).append(value[rows])
    return {key: np.concatenate(values) for key, values in parts.items()}


def labelled_dataset(record_dirs, *, split: str, batch_size: int, image_size: int, label_features: Sequence[str],
                     to_targets, keep, training: bool = True, augment: bool = True, weight_fn=None,
                     deterministic: bool = False, seed: int = 0):
    """One stream of the records whose targets `keep` accepts: `(images float32 [B,S,S,3] 0..255, targets)`.

    `to_targets(parsed label features) -> dict` and `keep(targets) -> bool` define the labels (a staged family's
    stage); `weight_fn(targets)`, when given, re-samples the stream (`fbnet_tf.rebalance.resample`). Training:
    shuffled, re-sampled, repeated forever, random crops (+ flip and colour jitter when `augment`). Otherwise one
    ordered pass with centre crops.
    """
    from fbnet_tf.rebalance import resample

    files = _split_files(_as_list(record_dirs), split)
    spec = _label_spec(label_features)
    ds = _records(files, shuffle_seed=seed if training else None)
    ds = ds.map(lambda s: (s, to_targets(tf.io.parse_single_example(s, spec))),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or not training)
    ds = ds.filter(lambda s, targets: keep(targets))
    if training:
        if weight_fn is not None:
            ds = resample(ds, lambda s, targets: weight_fn(targets), seed=seed)
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()
    centre = _centre_corner(image_size)
    image_spec = {"image/encoded": feature_spec()["image/encoded"]}

    def to_example(index, serialized, targets):
        encoded = tf.io.parse_single_example(serialized, image_spec)["image/encoded"]
        image = (train_image(encoded, image_size, tf.stack([tf.cast(seed, tf.int64), index])) if training
                 else _crop(encoded, image_size, centre))
        return image, targets

    ds = ds.enumerate().map(lambda i, pair: to_example(i, *pair), num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=deterministic or not training)
    ds = ds.batch(batch_size, drop_remainder=training)
    augment_seed = tf.constant(seed + 1_000_003, tf.int64)
    if training and augment:
        ds = ds.enumerate().map(lambda i, b: (_augment(b[0], tf.stack([augment_seed, i])), b[1]),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        ds = ds.map(lambda images, targets: (tf.cast(images, tf.float32), targets))
    return ds.prefetch(tf.data.AUTOTUNE)
