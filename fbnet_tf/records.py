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
    extra: dict = field(default_factory=dict)  # further int/float/bytes features (e.g. clip ids)


def encode_example(sample: Sample) -> bytes:
    """Serialize a `Sample` as a `tf.train.Example` following the contract."""
    import tensorflow as tf

    if sample.split not in SPLITS:
        raise ValueError(f"{sample.sample_id}: split {sample.split!r} not in {SPLITS}")
    if not -1 <= sample.expr < len(EXPRESSIONS):
        raise ValueError(f"{sample.sample_id}: expr {sample.expr} outside -1..{len(EXPRESSIONS) - 1}")
    n = len(AUS)
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

    features = {
        "image/encoded": b(sample.image), "image/height": i(sample.height), "image/width": i(sample.width),
        "source": b(sample.source), "split": b(sample.split), "sample_id": b(sample.sample_id),
        "subject": b(sample.subject), "expr": i(sample.expr),
        "va": f(va), "va_mask": f([0.0 if sample.va is None else 1.0]),
        "au": f(au), "au_mask": f(au_mask), "au_intensity": f(intensity),
        "compound": i(sample.compound),
        "attributes": f(attributes), "attributes_mask": f([0.0 if sample.attributes is None else 1.0]),
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
    }


def parse_example(serialized):
    """Parse one serialized example (a scalar string tensor) into a dict of tensors; the image stays encoded."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, feature_spec())


def decode_example(serialized: bytes) -> dict:
    """Eager, numpy view of one serialized example, with the image decoded to uint8 RGB (for tests and tools)."""
    import tensorflow as tf

    parsed = {k: v.numpy() for k, v in parse_example(tf.constant(serialized)).items()}
    parsed["image"] = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False).numpy()
    for key in ("source", "split", "sample_id", "subject"):
        parsed[key] = parsed[key].decode()
    return parsed
