"""Re-sampling a training stream towards balanced labels (FATAUVA-Net paper, 4.1.1), inside tf.data.

Every record gets a weight w from its labels; the stream then carries it floor(w) times plus once more with
probability w - floor(w): weights above 1 over-sample, weights below 1 under-sample (reject). The weights come
from the label statistics of the records themselves (`au_weights`, `va_weights`, computed once in numpy):

- AUs: an AU j whose positive rate p_j is below the target r gets the ratio rho_j = r (1 - p_j) / (p_j (1 - r));
  a record weighs keep * max(1, max over its positive rare AUs of rho_j), where `keep` is the fraction of the other
  records kept. For one AU this brings its positive rate to r exactly (positives rho x keep, negatives keep:
  p rho / (p rho + 1 - p) = r); with several AUs each rare AU's rate rises towards r (co-occurring AUs share one
  record, so the target is then approached, not met; `expected_positive_rate` says where it lands).
- V-A: both values quantised to -5..5 (round(5 v)); per dimension the ratio of the mean bin count (over the
  occupied bins) to the record's bin count, raised to `strength` (1 flattens, 0 leaves the histogram alone);
  a record weighs the product of its two ratios, which flattens both histograms exactly when valence and arousal
  are independent (and approximately otherwise): frequent values (valence 0 and 1, arousal 1) are under-sampled,
  rare ones over-sampled.
Weights are capped at `max_repeat`.
"""
from __future__ import annotations

import numpy as np

VA_BINS = 11  # -5..5


def au_ratios(au, au_mask, target_rate: float) -> np.ndarray:
    """[K] rho_j for AUs rarer than `target_rate` (1 for the others and for AUs never positive or never coded)."""
    au, au_mask = np.asarray(au, np.float64), np.asarray(au_mask, np.float64)
    coded = au_mask.sum(axis=0)
    positives = (au * au_mask).sum(axis=0)
    rate = np.divide(positives, coded, out=np.zeros_like(positives), where=coded > 0)
    r = float(target_rate)
    if not 0 < r < 1:
        raise ValueError(f"data.rebalance.au_target_rate={target_rate}: expected a rate in (0, 1)")
    rare = (rate > 0) & (rate < r)
    return np.where(rare, r * (1 - rate) / np.where(rare, rate * (1 - r), 1.0), 1.0)


def au_weights(au, au_mask, ratios, negative_keep: float, max_repeat: float):
    """Per-record weight (numpy or TF tensors [..., K] -> [...]): keep * max(1, max_j rho_j [positive j])."""
    import tensorflow as tf

    positive = tf.cast(au, tf.float32) * tf.cast(au_mask, tf.float32)
    boost = tf.reduce_max(tf.maximum(positive * tf.constant(ratios, tf.float32), 1.0), axis=-1)
    return tf.minimum(negative_keep * boost, float(max_repeat))


def va_bins(va):
    """[..., 2] values in [-1, 1] -> bin indices 0..10 (round(5 v) + 5)."""
    return np.clip(np.round(np.asarray(va, np.float64) * 5), -5, 5).astype(np.int64) + 5


def va_ratios(va, va_mask, strength: float) -> np.ndarray:
    """[2, 11] per-dimension ratio (mean occupied-bin count / bin count) ** strength (1 for empty bins)."""
    va, mask = np.asarray(va), np.asarray(va_mask) > 0
    bins = va_bins(va[mask])
    ratios = np.ones((2, VA_BINS))
    for d in range(2):
        counts = np.bincount(bins[:, d], minlength=VA_BINS).astype(np.float64)
        occupied = counts > 0
        if occupied.any():
            ratios[d, occupied] = (counts[occupied].mean() / counts[occupied]) ** float(strength)
    return ratios


def va_weights(va, va_mask, ratios, max_repeat: float):
    """Per-record weight (tensors [..., 2] -> [...]): ratio_valence * ratio_arousal; 1 without a V-A label."""
    import tensorflow as tf

    bins = tf.cast(tf.clip_by_value(tf.round(tf.cast(va, tf.float32) * 5.0), -5.0, 5.0), tf.int64) + 5
    table = tf.constant(ratios, tf.float32)
    w = tf.gather(table[0], bins[..., 0]) * tf.gather(table[1], bins[..., 1])
    return tf.where(tf.cast(va_mask, tf.float32) > 0, tf.minimum(w, float(max_repeat)), 1.0)


def expected_positive_rate(au, au_mask, weights) -> np.ndarray:
    """[K] positive rate of each AU in a stream where record i appears weights[i] times on average."""
    au, au_mask, w = (np.asarray(a, np.float64) for a in (au, au_mask, weights))
    coded = (au_mask * w[:, None]).sum(axis=0)
    return np.divide((au * au_mask * w[:, None]).sum(axis=0), coded, out=np.zeros(au.shape[1]), where=coded > 0)


def resample(dataset, weight_fn, seed: int = 0):
    """Repeat each element of `dataset` floor(w) + Bernoulli(w - floor(w)) times, w = weight_fn(element).

    Each pass over `dataset` (e.g. after `.repeat()`) draws anew. Elements are (x, targets) pairs or anything
    `weight_fn` takes as its single argument.
    """
    import tensorflow as tf

    def copies(*element):
        w = tf.cast(weight_fn(*element), tf.float32)
        whole = tf.floor(w)
        extra = tf.cast(tf.random.uniform([], seed=seed) < w - whole, tf.float32)
        return tf.cast(whole + extra, tf.int64)

    def repeat(*element):
        count = copies(*element)
        single = element[0] if len(element) == 1 else element
        return tf.data.Dataset.from_tensors(single).repeat(count)

    return dataset.flat_map(repeat)
