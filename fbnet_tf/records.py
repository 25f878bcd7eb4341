"""The one data contract: the `tf.train.Example` every builder writes and every reader parses (DESIGN.md).

Builders call `encode_example`; the input pipeline calls `parse_example`. Features may be added, never renamed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fbnet_tf.labels import AUS, EXPRESSIONS

NUM_ATTRIBUTES = 40  # CelebA
SPLITS = ("train", "validation", "test")


@dataclass
class Sample:
    """One labelled face, before encoding. Unset labels mean "not annotated"."""

    image: bytes  # encoded JPEG/PNG of the aligned face crop, RGB
    height: int
    width: int
    source: str
    split: str
    sample_id: str
    subject: str = ""
    expr: int = -1
    va: tuple[float, float] | None = None
    au: np.ndarray | None = None  # [17] 0/1
    au_mask: np.ndarray | None = None  # [17] 0/1
    au_intensity: np.ndarray | None = None  # [17] 0..5 or -1
    compound: int = -1
    attributes: np.ndarray | None = None  # [40] 0/1
    # Every FACS AU the database codes for this image, canonical or not: {AU number: (occurrence 0/1,
    # intensity 0..5 or -1 when not given)}. An AU marked unknown for this image is left out. When set and `au`
    # is not, `au`/`au_mask`/`au_intensity` are filled from it for the canonical AUs.
    facs: dict[int, tuple[float, float]] | None = None
    expr_native: int = -1  # the release's own expression index (ABAW's Other = 7, AffectNet's Contempt = 7)
    expr_native_name: str = ""
    extra: dict = field(default_factory=dict)  # further int/float/bytes features (e.g. clip ids)

    def __post_init__(self):
        # Filled here rather than at encoding, so every reader of the Sample (the builder's label counts in
        # manifest.json too) sees the canonical AUs that `facs` codes.
        if self.facs is not None:
            self.facs = dict(sorted((int(k), (float(o), float(i))) for k, (o, i) in self.facs.items()))
            if self.au is None:
                for name, value in canonical_from_facs(self.facs).items():
                    setattr(self, name, value)


def encode_example(sample: Sample) -> bytes:
    """Serialize a `Sample` as a `tf.train.Example` following the contract."""
    import tensorflow as tf

    if sample.split not in SPLITS:
        raise ValueError(f"{sample.sample_id}: split {sample.split!r} not in {SPLITS}")
    if not -1 <= sample.expr < len(EXPRESSIONS):
        raise ValueError(f"{sample.sample_id}: expr {sample.expr} outside -1..{len(EXPRESSIONS) - 1}")
    n = len(AUS)
    facs = sample.facs or {}
    au = np.zeros(n, np.float32) if sample.au is None else np.asarray(sample.au, np.float32)
    au_mask = np.zeros(n, np.float32) if sample.au_mask is None else np.asarray(sample.au_mask, np.float32)
    intensity = (np.full(n, -1.0, np.float32) if sample.au_intensity is None
                 else np.asarray(sample.au_intensity, np.float32))
    attributes = (np.zeros(NUM_ATTRIBUTES, np.float32) if sample.attributes is None
                  else np.asarray(sample.attributes, np.float32))
    va = (0.0, 0.0) if sample.va is None else tuple(float(v) for v in sample.va)

    def b(value: str | bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode() if isinstance(value, str)
                                                                     else value]))

    def i(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    def f(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    features = {
        "image/encoded": b(sample.image), "image/height": i(sample.height), "image/width": i(sample.width),
        "source": b(sample.source), "split": b(sample.split), "sample_id": b(sample.sample_id),
        "subject": b(sample.subject), "expr": i(sample.expr),
        "va": f(va), "va_mask": f([0.0 if sample.va is None else 1.0]),
        "au": f(au), "au_mask": f(au_mask), "au_intensity": f(intensity),
        "compound": i(sample.compound),
        "attributes": f(attributes), "attributes_mask": f([0.0 if sample.attributes is None else 1.0]),
        "facs/au": ints(facs), "facs/occurrence": f([o for o, _ in facs.values()]),
        "facs/intensity": f([i for _, i in facs.values()]),
        "expr_native": i(sample.expr_native), "expr_native_name": b(sample.expr_native_name),
    }
    for key, value in sample.extra.items():
        if key in features:
            raise ValueError(f"extra feature {key!r} would shadow a contract feature")
        if isinstance(value, (str, bytes)):
            features[key] = b(value)
        elif isinstance(value, (int, np.integer)):
            features[key] = i(value)
        else:
            features[key] = f(value)
    # deterministic: protobuf's map order otherwise varies between processes, and shards must be reproducible.
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def feature_spec() -> dict:
    """The `tf.io.parse_single_example` spec of the contract features (defaults make old records parse)."""
    import tensorflow as tf

    n = len(AUS)
    return {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "source": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "split": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "sample_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "subject": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "expr": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "va": tf.io.FixedLenFeature([2], tf.float32, default_value=[0.0, 0.0]),
        "va_mask": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        "au": tf.io.FixedLenFeature([n], tf.float32, default_value=[0.0] * n),
        "au_mask": tf.io.FixedLenFeature([n], tf.float32, default_value=[0.0] * n),
        "au_intensity": tf.io.FixedLenFeature([n], tf.float32, default_value=[-1.0] * n),
        "compound": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "attributes": tf.io.FixedLenFeature([NUM_ATTRIBUTES], tf.float32, default_value=[0.0] * NUM_ATTRIBUTES),
        "attributes_mask": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        "expr_native": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "expr_native_name": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


def facs_spec() -> dict:
    """The spec of the variable-length `facs/*` lists (kept out of `feature_spec`, whose features all batch)."""
    import tensorflow as tf

    return {"facs/au": tf.io.RaggedFeature(tf.int64), "facs/occurrence": tf.io.RaggedFeature(tf.float32),
            "facs/intensity": tf.io.RaggedFeature(tf.float32)}


def parse_example(serialized):
    """Parse one serialized example (a scalar string tensor) into a dict of tensors; the image stays encoded.

    Includes the `facs/*` lists as 1-D tensors of the image's own length (use `facs_dense` to get a fixed AU set).
    """
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, {**feature_spec(), **facs_spec()})


def canonical_from_facs(facs: dict[int, tuple[float, float]], aus=AUS) -> dict:
    """`au`, `au_mask`, `au_intensity` over `aus` from a {AU number: (occurrence, intensity)} dict."""
    au = np.zeros(len(aus), np.float32)
    mask = np.zeros(len(aus), np.float32)
    intensity = np.full(len(aus), -1.0, np.float32)
    for k, number in enumerate(aus):
        if number in facs:
            au[k], intensity[k] = facs[number]
            mask[k] = 1.0
    return {"au": au, "au_mask": mask, "au_intensity": intensity}


def facs_dense(facs_au, facs_occurrence, aus):
    """Dense occurrence and mask over any AU list from an image's `facs/*` lists (tensors or arrays).

    `facs_au` [..., K] AU numbers (padding with values not in `aus`, e.g. -1, is ignored), `facs_occurrence`
    [..., K]; returns (occurrence [..., len(aus)], mask [..., len(aus)]) as float32 tensors: mask 1 where the image
    codes that AU. Works inside tf.data maps, so a model can ask for its own AU set (FATAUVA-Net's 14).
    """
    import tensorflow as tf

    facs_au = tf.convert_to_tensor(facs_au, tf.int64)
    occurrence = tf.cast(tf.convert_to_tensor(facs_occurrence), tf.float32)
    match = tf.equal(facs_au[..., :, None], tf.constant(list(aus), tf.int64))  # [..., K, M]
    mask = tf.cast(tf.reduce_any(match, axis=-2), tf.float32)
    dense = tf.reduce_max(tf.where(match, occurrence[..., :, None], 0.0), axis=-2)
    return dense, mask


def decode_example(serialized: bytes) -> dict:
    """Eager, numpy view of one serialized example, with the image decoded to uint8 RGB (for tests and tools)."""
    import tensorflow as tf

    parsed = {k: v.numpy() for k, v in parse_example(tf.constant(serialized)).items()}
    parsed["image"] = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False).numpy()
    for key in ("source", "split", "sample_id", "subject", "expr_native_name"):
        parsed[key] = parsed[key].decode()
    return parsed


def damaged_record(path) -> str | None:
    """Where a TFRecord file is cut short or corrupt, in words ("truncated record at byte N ..."), or None.

    TensorFlow's DataLossError names no file; this finds the one. The framing (uint64 length, uint32 CRC, data,
    uint32 CRC per record) is walked first, by seeking; then TensorFlow reads every record to check the CRCs.
    """
    import os
    import struct

    import tensorflow as tf

    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        offset = 0
        while offset < size:
            handle.seek(offset)
            header = handle.read(12)
            if len(header) < 12:
                return f"truncated record at byte {offset} (the file ends inside its header, {size} bytes)"
            end = offset + 12 + struct.unpack("<Q", header[:8])[0] + 4
            if end > size:
                return f"truncated record at byte {offset} (it needs {end - offset} bytes, the file ends at {size})"
            offset = end
    try:
        for _ in tf.data.TFRecordDataset(str(path)):
            pass
    except tf.errors.DataLossError as error:
        return f"corrupt record ({str(error).splitlines()[0]})"
    return None
