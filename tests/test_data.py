"""The three-stream pipeline on small record directories written here in the builders' layout."""
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf import data
from fbnet_tf.labels import AU_NAMES, AUS, EXPRESSIONS, au_mask_for
from fbnet_tf.records import Sample, encode_example

SIDE = 14  # stored crop side; image_size 12 * CROP_MARGIN rounds to 14, so eval crops leave colours untouched
IMAGE_SIZE = 12


def constant_png(red: int, green: int = 0, blue: int = 0, side: int = SIDE) -> bytes:
    """A lossless constant-colour image: the colour survives decode, resize and crop, so it identifies the image."""
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[...] = (red, green, blue)
    return tf.io.encode_png(pixels).numpy()


def manifest_labels(samples):
    """The `labels` block the builders' writer puts in manifest.json for one split."""
    expression = dict.fromkeys(EXPRESSIONS, 0)
    au_annotated = dict.fromkeys(AU_NAMES, 0)
    for s in samples:
        if s.expr >= 0:
            expression[EXPRESSIONS[s.expr]] += 1
        for i in np.flatnonzero(s.au_mask if s.au_mask is not None else []):
            au_annotated[AU_NAMES[i]] += 1
    return {"expression": expression, "va": sum(s.va is not None for s in samples), "au_annotated": au_annotated}


def write_record_dir(root, source, samples, *, split="train", num_shards=2, counts_in_manifest=True):
    """`<source>-<split>.tfrecord-000NN-of-000MM` shards plus a manifest.json, as the builders write them."""
    out = os.path.join(str(root), source)
    os.makedirs(out, exist_ok=True)
    for shard in range(num_shards):
        path = os.path.join(out, f"{source}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}")
        with tf.io.TFRecordWriter(path) as writer:
            for sample in samples[shard::num_shards]:
                writer.write(encode_example(sample))
    manifest_path = os.path.join(out, "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else {"database": source, "splits": {}}
    manifest["splits"][split] = {"count": len(samples)}
    if counts_in_manifest:
        manifest["splits"][split]["labels"] = manifest_labels(samples)
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    return out


def sample(k, source, *, split="train", va=None, expr=-1, aus=None, au=None, subject="", extra=None):
    """Sample number k: its image is the constant colour (k % 256, k // 256, 0)."""
    return Sample(image=constant_png(k % 256, k // 256), height=SIDE, width=SIDE, source=source, split=split,
                  sample_id=f"{source}/{k}", subject=subject, expr=expr, va=va,
                  au=None if aus is None else np.asarray(au, np.float32),
                  au_mask=None if aus is None else au_mask_for(aus), extra=extra or {})


DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)


@pytest.fixture(scope="module")
def three_streams(tmp_path_factory):
    """VA 70 (AffectNet 30 + Aff-Wild 40), AU 20 (DISFA), EXPR 40 (AffectNet 30 + RAF-DB 10); ids 0..119."""
    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    mask = au_mask_for(DISFA_AUS)
    affectnet = [sample(k, "affectnet", va=(k / 100, -k / 100), expr=k % 7) for k in range(0, 30)]
    affwild = [sample(k, "affwild", va=(k / 100, 0.5)) for k in range(30, 70)]
    disfa = [sample(k, "disfa", aus=DISFA_AUS, au=(rng.random(len(AUS)) > 0.5) * mask) for k in range(70, 90)]
    rafdb = [sample(k, "rafdb", expr=k % 7) for k in range(90, 100)]
    dirs = [write_record_dir(root, "affectnet", affectnet, num_shards=3),
            write_record_dir(root, "affwild", affwild, counts_in_manifest=False),
            write_record_dir(root, "disfa", disfa),
            write_record_dir(root, "rafdb", rafdb, num_shards=1, counts_in_manifest=False)]
    by_id = {int(s.sample_id.split("/")[1]): s for s in affectnet + affwild + disfa + rafdb}
    return dirs, by_id


def image_ids(images):
    """Recover k from the constant colours of a batch of (unaugmented) images."""
    centre = np.rint(images[:, IMAGE_SIZE // 2, IMAGE_SIZE // 2, :]).astype(int)
    return centre[:, 0] + 256 * centre[:, 1]


def test_paper_batch_split():
    assert data.stream_batch_sizes({"va": 401_000, "au": 247_000, "expr": 103_000}, 751) == \
        {"va": 401, "au": 247, "expr": 103}


@pytest.mark.parametrize("seed", range(5))
def test_batch_split_sums_to_batch_and_follows_sizes(seed):
    rng = np.random.default_rng(seed)
    sizes = dict(zip(data.STREAMS, rng.integers(1, 100_000, 3).tolist()))
    batch = int(rng.integers(3, 1000))
    shares = data.stream_batch_sizes(sizes, batch)
    assert sum(shares.values()) == batch
    total = sum(sizes.values())
    for stream, n in sizes.items():
        assert shares[stream] >= 1
        assert abs(shares[stream] - batch * n / total) < 1 + 1e-9


def test_au_stream_with_mixed_au_sets_is_scanned(tmp_path):
    # Per-AU manifest counts 2 and 1 cannot tell whether 2 or 3 images carry AUs: the records are counted.
    records = [sample(0, "emotionet", aus=(1, 2), au=np.zeros(len(AUS))),
               sample(1, "emotionet", aus=(1,), au=np.zeros(len(AUS))), sample(2, "emotionet", expr=4)]
    record_dir = write_record_dir(tmp_path, "emotionet", records)
    assert data.stream_sizes(record_dir) == {"va": 0, "au": 2, "expr": 1}


def test_tiny_stream_keeps_one_row():
    assert data.stream_batch_sizes({"va": 1_000_000, "au": 1, "expr": 1}, 3) == {"va": 1, "au": 1, "expr": 1}


def test_empty_stream_gets_no_share():
    assert data.stream_batch_sizes({"va": 10, "au": 0, "expr": 30}, 8) == {"va": 2, "expr": 6}


def test_stream_sizes_from_manifest_and_scan(three_streams):
    dirs, _ = three_streams
    assert data.stream_sizes(dirs, "train") == {"va": 70, "au": 20, "expr": 40}
    assert data.stream_sizes(dirs[1], "train") == {"va": 40, "au": 0, "expr": 0}  # no counts: scanned
    assert data.stream_sizes(dirs[3], "train") == {"va": 0, "au": 0, "expr": 10}


def take(ds, n):
    return [(images.numpy(), {k: v.numpy() for k, v in targets.items()}) for images, targets in ds.take(n)]


def test_epoch_covers_every_stream_with_masks(three_streams):
    dirs, by_id = three_streams
    ds, steps = data.training_dataset(dirs, batch_size=13, image_size=IMAGE_SIZE, augment=False,
                                      deterministic=True)
    # 13 = 7 VA + 2 AU + 4 EXPR (70:20:40); 10 steps see every image of every stream once.
    assert steps == 10
    seen = {"va": [], "au": [], "expr": []}
    for images, t in take(ds, steps):
        assert images.shape == (13, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.float32
        ids = image_ids(images)
        rows = {"va": slice(0, 7), "au": slice(7, 9), "expr": slice(9, 13)}
        np.testing.assert_array_equal(t["va_mask"], [1] * 7 + [0] * 6)
        np.testing.assert_array_equal(t["au_mask"][:7].sum(), 0)
        np.testing.assert_array_equal(t["au_mask"][7:9], [au_mask_for(DISFA_AUS)] * 2)
        np.testing.assert_array_equal(t["au_mask"][9:].sum(), 0)
        np.testing.assert_array_equal(t["expr"][:9], -1)  # AffectNet in the VA stream keeps only its VA
        assert (t["expr"][9:] >= 0).all() and t["expr"].dtype == np.int32
        for stream, rows_ in rows.items():
            seen[stream] += ids[rows_].tolist()
        for k, va, va_mask in zip(ids[rows["va"]], t["va"][rows["va"]], t["va_mask"]):
            np.testing.assert_allclose(va, by_id[k].va, atol=1e-6)
        for k, au in zip(ids[rows["au"]], t["au"][rows["au"]]):
            np.testing.assert_array_equal(au, by_id[k].au)
        for k, expr in zip(ids[rows["expr"]], t["expr"][rows["expr"]]):
            assert expr == by_id[k].expr
    assert sorted(seen["va"]) == list(range(0, 70))
    assert sorted(seen["au"]) == list(range(70, 90))
    assert sorted(seen["expr"]) == list(range(0, 30)) + list(range(90, 100))


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "nondeterministic"])
@pytest.mark.parametrize("batch_size", [12, 10])
def test_every_epoch_from_one_iterator_visits_every_image(three_streams, batch_size, deterministic):
    # 70/20/40 images over 12 = 6 + 2 + 4 rows -> 12 steps (72, 24, 48 rows an epoch); over 10 = 5 + 2 + 3 -> 14
    # steps (70, 28, 42): the streams' passes do not end on epoch boundaries, as Keras's one iterator would see.
    dirs, by_id = three_streams
    tf.random.set_seed(0)  # as training does (keras.utils.set_random_seed(0)): the pipeline builds under it
    try:
        ds, steps = data.training_dataset(dirs, batch_size=batch_size, image_size=IMAGE_SIZE, augment=False,
                                          deterministic=deterministic, sample_ids=True)
    finally:
        tf.random.set_seed(None)
    sizes = {"va": 70, "au": 20, "expr": 40}
    shares = data.stream_batch_sizes(sizes, batch_size)
    assert steps == max(math.ceil(sizes[s] / shares[s]) for s in sizes)  # about one pass over the largest stream
    expected = {"va": set(range(0, 70)), "au": set(range(70, 90)), "expr": set(range(0, 30)) | set(range(90, 100))}
    iterator = iter(ds)
    for epoch in range(3):
        seen = {stream: [] for stream in data.STREAMS}
        for _ in range(steps):
            _, targets = next(iterator)
            ids = [int(i.decode().split("/")[1]) for i in targets["sample_id"].numpy()]
            start = 0
            for stream in data.STREAMS:
                seen[stream] += ids[start:start + shares[stream]]
                start += shares[stream]
        for stream in data.STREAMS:
            assert set(seen[stream]) == expected[stream], (epoch, stream)
            assert len(seen[stream]) == steps * shares[stream]
            assert max(seen[stream].count(k) for k in expected[stream]) <= 2  # one pass, topped up from another


def test_segments_cover_every_record_once_in_about_equal_parts():
    counts = {"a": 10000, "b": 10, "c": 3333}
    cut = data.segments(counts, pieces=8)
    for path, n in counts.items():
        parts = sorted((start, length) for f, start, length in cut if f == path)
        assert parts[0][0] == 0 and sum(length for _, length in parts) == n
        assert all(a + la == b for (a, la), (b, _) in zip(parts, parts[1:]))  # contiguous, no overlap
    assert max(length for _, _, length in cut) <= math.ceil(13343 / 8) and len(cut) <= 8 + len(counts)
    assert len(data.segments(counts, pieces=1000)) == sum(math.ceil(n / data.MIN_SEGMENT) for n in counts.values())
    assert len(data.segments({"a": 10}, at_least=4)) >= 4  # one per input pipeline


def test_shard_record_counts_from_manifest_or_counted(three_streams, tmp_path):
    dirs, _ = three_streams
    counted = data.shard_record_counts(dirs[0], "train")  # the test manifest lists no shards: counted
    assert list(counted) == data.record_files(dirs[0], "train") and list(counted.values()) == [10, 10, 10]
    manifest = json.load(open(os.path.join(dirs[0], "manifest.json")))
    manifest["splits"]["train"]["shards"] = [{"file": os.path.basename(f), "count": 99} for f in counted]
    copy = tmp_path / "affectnet"
    copy.mkdir()
    for f in counted:
        (copy / os.path.basename(f)).write_bytes(open(f, "rb").read())
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert list(data.shard_record_counts(str(copy), "train").values()) == [99, 99, 99]  # the builders' counts


def test_deterministic_mode_repeats_batches(three_streams):
    dirs, _ = three_streams

    def batches(seed):
        ds, _ = data.training_dataset(dirs, batch_size=13, image_size=IMAGE_SIZE, deterministic=True, seed=seed)
        return take(ds, 3)

    first, again, other = batches(1), batches(1), batches(2)
    for (a_images, a_targets), (b_images, b_targets) in zip(first, again):
        np.testing.assert_array_equal(a_images, b_images)
        for key in a_targets:
            np.testing.assert_array_equal(a_targets[key], b_targets[key])
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_augmentation_stays_in_pixel_range_and_changes_images(three_streams):
    dirs, _ = three_streams
    ds, _ = data.training_dataset(dirs, batch_size=13, image_size=IMAGE_SIZE, deterministic=True)
    images, _ = take(ds, 1)[0]
    assert images.min() >= 0 and images.max() <= 255
    plain, _ = data.training_dataset(dirs, batch_size=13, image_size=IMAGE_SIZE, augment=False, deterministic=True)
    assert not np.allclose(images, take(plain, 1)[0][0])


def test_colour_jitter_is_brightness_then_contrast_then_saturation():
    images = np.random.default_rng(0).uniform(0, 255, (4, 9, 10, 3)).astype(np.float32)
    seed = tf.constant([3, 4], tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    b, c, s = (tf.random.stateless_uniform([4], seeds[i], lo, hi).numpy()[:, None, None, None]
               for i, (lo, hi) in enumerate([(-data.BRIGHTNESS, data.BRIGHTNESS), data.CONTRAST, data.SATURATION]))
    x = images + b  # step by step, in numpy
    mean = x[:, ::data.MEAN_STRIDE, ::data.MEAN_STRIDE].mean(axis=(1, 2), keepdims=True)
    x = (x - mean) * c + mean
    grey = (x * np.array([0.299, 0.587, 0.114])).sum(axis=-1, keepdims=True)
    expected = np.clip((x - grey) * s + grey, 0, 255)
    np.testing.assert_allclose(data.colour_jitter(tf.constant(images), seed).numpy(), expected, atol=1e-3)


def test_input_context_halves_the_replica_batch_and_shards_workers(three_streams):
    dirs, _ = three_streams
    one_worker = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    ds, steps = data.training_dataset(dirs, batch_size=26, image_size=IMAGE_SIZE, augment=False,
                                      deterministic=True, input_context=one_worker)
    images, targets = take(ds, 1)[0]
    assert images.shape[0] == 13 and targets["va_mask"].sum() == 7
    assert steps == 5  # 26 a global step: 70 VA images / 14

    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        ds, _ = data.training_dataset(dirs, batch_size=26, image_size=IMAGE_SIZE, tasks=("expr",), augment=False,
                                      deterministic=True, input_context=context)
        seen.append({int(k) for images, _ in take(ds, 20) for k in image_ids(images)})
    assert not seen[0] & seen[1]  # each worker reads its own shard
    assert seen[0] | seen[1] == set(range(0, 30)) | set(range(90, 100))


def test_single_task_streams(three_streams):
    dirs, _ = three_streams
    ds, steps = data.training_dataset(dirs, batch_size=8, image_size=IMAGE_SIZE, tasks=("au",), augment=False)
    images, targets = take(ds, 1)[0]
    assert steps == 3 and images.shape[0] == 8
    assert (targets["au_mask"].sum(axis=1) > 0).all() and targets["va_mask"].sum() == 0
    with pytest.raises(ValueError, match="unknown tasks"):
        data.training_dataset(dirs, batch_size=8, image_size=IMAGE_SIZE, tasks=("pose",))


def test_validation_dataset_is_finite_with_all_labels(tmp_path):
    records = [sample(k, "affectnet", split="validation", va=(0.1, 0.2), expr=k % 7) for k in range(5)]
    records.append(sample(5, "affectnet", split="validation"))  # unlabelled: left out
    record_dir = write_record_dir(tmp_path, "affectnet", records, split="validation")
    batches = take(data.validation_dataset(record_dir, batch_size=4, image_size=IMAGE_SIZE), 10)
    assert [b[0].shape[0] for b in batches] == [4, 1]
    targets = {k: np.concatenate([b[1][k] for b in batches]) for k in batches[0][1]}
    np.testing.assert_array_equal(targets["va_mask"], 1)  # both labels of an AffectNet image kept here
    assert sorted(targets["expr"].tolist()) == [0, 1, 2, 3, 4]


def test_evaluation_dataset_carries_ids_and_extra_features(tmp_path):
    records = [sample(k, "afew", split="validation", expr=3, subject="s1", extra={"clip": f"clip{k // 2}"})
               for k in range(4)]
    record_dir = write_record_dir(tmp_path, "afew", records, split="validation", num_shards=1)
    (images, fields), = take(data.evaluation_dataset(record_dir, split="validation", image_size=IMAGE_SIZE,
                                                     batch_size=8), 1)
    assert images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert [c.decode() for c in fields["clip"]] == ["clip0", "clip0", "clip1", "clip1"]
    assert [s.decode() for s in fields["sample_id"]] == [f"afew/{k}" for k in range(4)]
    assert {"source", "subject", "compound", "au_intensity", "va_mask"} <= set(fields)
    assert data.record_count(record_dir, "validation") == 4


def test_missing_split_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        data.validation_dataset(str(tmp_path), batch_size=4, image_size=IMAGE_SIZE)


class MaskedLossModel(keras.Model):
    """The smallest real model that trains on the pipeline's (images, targets) with its masks."""

    def __init__(self):
        super().__init__()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.heads = {"va": keras.layers.Dense(2), "expr": keras.layers.Dense(7), "au": keras.layers.Dense(len(AUS))}

    def call(self, images):
        features = self.pool(images / 255.0)
        return {name: head(features) for name, head in self.heads.items()}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        ops = keras.ops
        va = ops.sum(y["va_mask"][:, None] * (y_pred["va"] - y["va"]) ** 2) / ops.maximum(ops.sum(y["va_mask"]), 1.0)
        has_expr = ops.cast(y["expr"] >= 0, "float32")
        expr = keras.losses.sparse_categorical_crossentropy(ops.maximum(y["expr"], 0), y_pred["expr"], from_logits=True)
        au = ops.binary_crossentropy(y["au"], y_pred["au"], from_logits=True) * y["au_mask"]
        return (va + ops.sum(expr * has_expr) / ops.maximum(ops.sum(has_expr), 1.0)
                + ops.sum(au) / ops.maximum(ops.sum(y["au_mask"]), 1.0))


@pytest.mark.filterwarnings("ignore:`shuffle=True` was passed")  # Keras 3 says this for any tf.data input
@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # and this at the end of finite validation data
def test_model_fit_consumes_training_and_validation_datasets(three_streams, tmp_path):
    dirs, _ = three_streams
    validation = [sample(k, "affectnet", split="validation", va=(0.1, 0.2), expr=k % 7) for k in range(6)]
    validation_dir = write_record_dir(tmp_path, "affectnet", validation, split="validation")
    ds, steps = data.training_dataset(dirs, batch_size=13, image_size=IMAGE_SIZE)
    model = MaskedLossModel()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(ds, steps_per_epoch=steps, epochs=2, verbose=0,
                        validation_data=data.validation_dataset(validation_dir, batch_size=4, image_size=IMAGE_SIZE))
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all()


def test_record_level_sharding_when_workers_outnumber_files(three_streams):
    dirs, _ = three_streams  # RAF-DB has a single shard: two workers must split its records, not its files
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        ds, _ = data.training_dataset(dirs[3], batch_size=4, image_size=IMAGE_SIZE, augment=False,
                                      deterministic=True, input_context=context)
        seen.append({int(k) for images, _ in take(ds, 10) for k in image_ids(images)})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(90, 100))


def test_crop_while_decoding_equals_decode_then_crop():
    """The fast path (a JPEG at the stored side, decoded only inside the crop window) gives the pixels of the
    full decode followed by the same crop; other sizes and PNGs take the resize path and keep the output size."""
    import cv2

    rng = np.random.default_rng(3)
    side = data._stored_side(32)
    picture = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (5, 5), 0)
    jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    seed = tf.constant([7, 11], tf.int64)
    fast = data.train_image(tf.constant(jpeg), 32, seed).numpy()
    top, left = tf.random.stateless_uniform([2], seed, 0, side - 32 + 1, dtype=tf.int32).numpy()
    full = tf.io.decode_jpeg(jpeg, channels=3).numpy()[top:top + 32, left:left + 32]
    assert fast.dtype == np.uint8 and (top, left) != (0, 0)
    # libjpeg's windowed decode may round chroma edges differently
    assert np.abs(fast.astype(int) - full.astype(int)).max() <= 2
    for encoded in (cv2.imencode(".png", picture)[1].tobytes(),
                    cv2.imencode(".jpg", cv2.resize(picture, (50, 50)))[1].tobytes()):
        other = data.train_image(tf.constant(encoded), 32, seed).numpy()
        assert other.shape == (32, 32, 3) and other.dtype == np.uint8


def test_random_flip_mirrors_about_half_the_batch_reproducibly():
    images = tf.random.stateless_uniform([200, 5, 7, 3], [1, 2], 0, 255)
    seed = tf.constant([3, 4], tf.int64)
    flipped = data.random_flip(images, seed).numpy()
    same = np.all(flipped == images.numpy(), axis=(1, 2, 3))
    mirrored = np.all(flipped == images.numpy()[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ mirrored) and 70 < mirrored.sum() < 130
    np.testing.assert_array_equal(data.random_flip(images, seed).numpy(), flipped)


def test_centre_crop_frames_crops_as_evaluation_does():
    """The serving graph's `centre_crop` of a decoded crop equals `eval_image` of the same JPEG: a crop stored at
    the margin size keeps its pixels (identity resize), any other size is resized to it first."""
    import cv2

    rng = np.random.default_rng(4)
    for stored in (data._stored_side(32), 112):
        picture = cv2.GaussianBlur(rng.integers(0, 256, (stored, stored, 3), dtype=np.uint8), (5, 5), 0)
        png = cv2.imencode(".png", picture[..., ::-1])[1].tobytes()  # lossless, RGB as cv2's BGR
        served = data.centre_crop(picture[None], 32).numpy()[0]
        evaluated = data.eval_image(tf.constant(png), 32).numpy()
        assert served.shape == evaluated.shape == (32, 32, 3)
        assert np.abs(served - evaluated).max() <= 0.5  # eval_image rounds a resized crop to uint8
    top = (data._stored_side(32) - 32) // 2
    exact = rng.integers(0, 256, (1, data._stored_side(32), data._stored_side(32), 3), dtype=np.uint8)
    np.testing.assert_array_equal(data.centre_crop(exact, 32).numpy()[0], exact[0, top:top + 32, top:top + 32])


def test_au_label_fraction_keeps_a_seeded_share_of_the_au_stream(three_streams):
    """`au_label_fraction`: the AU stream holds exactly the AU images whose seeded hash is kept (computed here from
    the hash's definition), and one epoch visits each of them."""

    dirs, by_id = three_streams
    au_ids = [k for k in range(70, 90)]
    buckets = tf.strings.to_hash_bucket_fast([f"3:{by_id[k].sample_id}" for k in au_ids], 1_000_000).numpy()
    kept = sorted(k for k, b in zip(au_ids, buckets) if b < 500_000)
    assert 0 < len(kept) < len(au_ids)
    ds, steps = data.training_dataset(dirs, batch_size=13, image_size=IMAGE_SIZE, augment=False, seed=3,
                                      tasks=("au",), au_label_fraction=0.5)
    assert steps == -(-len(kept) // 13)
    seen = []
    for images, t in take(ds, steps):
        seen += image_ids(images).tolist()
    assert set(seen) == set(kept) and set(seen[:len(kept)]) == set(kept)
    with pytest.raises(ValueError, match="au_label_fraction"):
        data.training_dataset(dirs, batch_size=13, image_size=IMAGE_SIZE, au_label_fraction=0.0)
