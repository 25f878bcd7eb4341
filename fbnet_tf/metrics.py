"""Evaluation metrics as the papers and challenges compute them (shared/reference/relatedness.md, "Metrics"),
plus two Keras metrics that stream over an epoch for training logs.

The numpy functions take whole splits. Undefined cases return a documented value, never NaN and never a warning
(the one warning: `abaw2020_au_score` names the challenge AUs the records do not annotate):
- `ccc`: no samples -> 0.0; identical constant vectors (0 / 0) -> 1.0 (perfect agreement).
- per-AU F1: an AU never positive in truth nor prediction -> `zero_division` (0.0, as sklearn's default, which the
  challenge scripts use); `mean_f1` averages only over AUs with at least one annotated entry (the mask).
- expression metrics ignore entries whose true label is < 0 (no label). `macro_f1` averages over the classes that
  occur in the truth or the prediction (as sklearn's `f1_score(average="macro")` without `labels`); recall-based
  scores (`mean_diagonal`, `unweighted_average_recall`) over the classes that occur in the truth. No sample -> 0.0.
Predictions: AU arrays may be probabilities (thresholded at 0.5) or 0/1; expression predictions may be labels [N]
or scores [N, C] (argmax).

The ABAW scores follow the organisers' definitions:
- ABAW 2020 (Kollias, Schulc, Hajiyev & Zafeiriou, "Analysing Affective Behavior in the First ABAW 2020
  Competition", FG 2020, arXiv:2001.11409, section "Evaluation metrics"): EXPR = 0.67 F1 + 0.33 total accuracy over
  the 7 basic expressions (F1 the unweighted mean over the classes); AU = 0.5 F1 + 0.5 total accuracy over its 8 AUs
  1, 2, 4, 6, 12, 15, 20, 25 (F1 the unweighted mean over the 8 AUs, accuracy over all AU decisions).
- ABAW 2022+ (Kollias, "ABAW: Valence-Arousal Estimation, Expression Recognition, Action Unit Detection &
  Multi-Task Learning Challenges", CVPR-W 2022, arXiv:2202.10659, section "Evaluation metrics"; the same in the
  later editions): VA = (CCC_valence + CCC_arousal) / 2; EXPR = sum of the per-class F1 over the 8 classes
  (the 7 basic + "Other") / 8; AU = sum of the per-AU F1 over its 12 AUs / 12. Per-class F1 as sklearn's
  `f1_score` computes it (zero_division 0; the tests check against it).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

import warnings

from fbnet_tf.labels import ABAW2020_AUS, ABAW2022_AUS, ABAW2022_EXPRESSIONS, AUS


# ---------------------------------------------------------------- continuous affect

def ccc(y_true, y_pred):
    """Concordance correlation coefficient, population variances: a float for 1-D input, [D] for [N, D]."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"ccc: y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.shape[0] == 0:
        return 0.0 if y_true.ndim == 1 else np.zeros(y_true.shape[1:])
    mean_true, mean_pred = y_true.mean(axis=0), y_pred.mean(axis=0)
    covariance = ((y_true - mean_true) * (y_pred - mean_pred)).mean(axis=0)
    denominator = y_true.var(axis=0) + y_pred.var(axis=0) + (mean_true - mean_pred) ** 2
    safe = np.where(denominator > 0, denominator, 1.0)
    value = np.where(denominator > 0, 2.0 * covariance / safe, 1.0)
    return float(value) if value.ndim == 0 else value


def abaw2022_va_score(va_true, va_pred):
    """ABAW 2022+ VA score: mean of the valence and arousal CCCs."""
    return float(np.mean(ccc(np.asarray(va_true).reshape(-1, 2), np.asarray(va_pred).reshape(-1, 2))))


# ---------------------------------------------------------------- action units

def _au_arrays(y_true, y_pred, mask):
    y_true = np.asarray(y_true, np.float64) >= 0.5
    y_pred = np.asarray(y_pred, np.float64) >= 0.5
    if y_true.shape != y_pred.shape:
        raise ValueError(f"AU metrics: y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    mask = np.ones(y_true.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask) > 0, y_true.shape)
    return y_true, y_pred, mask


def _f1_from_counts(tp, fp, fn, zero_division):
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), zero_division).astype(np.float64)


def f1_per_au(y_true, y_pred, mask=None, zero_division=0.0):
    """[K] binary F1 per AU over the annotated entries (mask > 0); `zero_division` when an AU is never positive
    in truth nor prediction (or never annotated)."""
    y_true, y_pred, mask = _au_arrays(y_true, y_pred, mask)
    tp = (y_true & y_pred & mask).sum(axis=0)
    fp = (~y_true & y_pred & mask).sum(axis=0)
    fn = (y_true & ~y_pred & mask).sum(axis=0)
    return _f1_from_counts(tp, fp, fn, zero_division)


def _annotated_aus(mask, shape):
    return np.ones(shape[1], bool) if mask is None else (np.broadcast_to(np.asarray(mask) > 0, shape).any(axis=0))


def mean_f1(y_true, y_pred, mask=None, zero_division=0.0):
    """Mean per-AU F1 over the AUs with at least one annotated entry (0.0 when none is)."""
    scores = f1_per_au(y_true, y_pred, mask, zero_division)
    used = _annotated_aus(mask, np.shape(y_true))
    return float(scores[used].mean()) if used.any() else 0.0


def auc_per_au(y_true, y_score, mask=None):
    """[K] ROC AUC per AU over its annotated entries (the FATAUVA-Net paper's Table 5): the probability that a
    positive scores above a negative, ties counting one half (sklearn's `roc_auc_score`). An AU whose annotated
    entries are all of one class has no AUC: NaN (left out of `mean_auc`)."""
    y_true = np.asarray(y_true, np.float64) >= 0.5
    y_score = np.asarray(y_score, np.float64)
    mask = np.ones(y_true.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask) > 0, y_true.shape)
    scores = np.full(y_true.shape[1], np.nan)
    for j in range(y_true.shape[1]):
        rows = mask[:, j]
        positives, negatives = y_score[rows & y_true[:, j], j], y_score[rows & ~y_true[:, j], j]
        if len(positives) and len(negatives):
            # rank statistic (Mann-Whitney U) with average ranks for ties
            values = np.concatenate([positives, negatives])
            order = values.argsort(kind="mergesort")
            ranks = np.empty(len(values))
            sorted_values = values[order]
            _, first, counts = np.unique(sorted_values, return_index=True, return_counts=True)
            average = first + (counts + 1) / 2.0
            ranks[order] = np.repeat(average, counts)
            u = ranks[:len(positives)].sum() - len(positives) * (len(positives) + 1) / 2.0
            scores[j] = u / (len(positives) * len(negatives))
    return scores


def mean_auc(y_true, y_score, mask=None) -> float:
    """Mean of `auc_per_au` over the AUs that have one (0.0 when none has)."""
    scores = auc_per_au(y_true, y_score, mask)
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else 0.0


def mse(y_true, y_pred):
    """Mean squared error per column ([N, D] -> [D]); 0.0 without samples."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return ((y_true - y_pred) ** 2).mean(axis=0) if len(y_true) else np.zeros(y_true.shape[1:])


def accuracy_per_au(y_true, y_pred, mask=None):
    """[K] fraction of correct decisions per AU over its annotated entries (0.0 for a never-annotated AU)."""
    y_true, y_pred, mask = _au_arrays(y_true, y_pred, mask)
    correct = ((y_true == y_pred) & mask).sum(axis=0)
    count = mask.sum(axis=0)
    return np.where(count > 0, correct / np.maximum(count, 1), 0.0)


def emotionet_au_score(y_true, y_pred, mask=None):
    """EmotioNet challenge AU score: mean of (mean F1 over AUs, mean accuracy over AUs)."""
    used = _annotated_aus(mask, np.shape(y_true))
    accuracies = accuracy_per_au(y_true, y_pred, mask)[used]
    return 0.5 * (mean_f1(y_true, y_pred, mask) + (float(accuracies.mean()) if used.any() else 0.0))


def challenge_au_columns(y_true, y_pred, mask, challenge_aus, aus=AUS, *, name="AU score"):
    """(y_true, y_pred, mask) reduced to a challenge's AU columns, and the challenge AUs annotated in them.

    Arrays with len(challenge_aus) columns are taken as those AUs; arrays whose columns are `aus` (the canonical 17
    by default) are reduced to them. A challenge AU is annotated when some entry of its column has mask > 0 (all
    entries count when mask is None)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    width = y_true.shape[1] if y_true.ndim == 2 else -1
    if width != len(challenge_aus):
        outside = [a for a in challenge_aus if a not in aus]
        if outside or width != len(aus):
            raise ValueError(f"{name}: expected {len(challenge_aus)} columns {tuple(challenge_aus)} or "
                             f"{len(aus)} columns {tuple(aus)}; got shape {y_true.shape}")
        columns = [list(aus).index(a) for a in challenge_aus]
        y_true, y_pred = y_true[:, columns], y_pred[:, columns]
        mask = None if mask is None else np.broadcast_to(np.asarray(mask), (len(y_true), len(aus)))[:, columns]
    annotated = _annotated_aus(mask, y_true.shape)
    return y_true, y_pred, mask, [a for a, used in zip(challenge_aus, annotated) if used]


def abaw2020_au_score(y_true, y_pred, mask=None, aus=AUS):
    """ABAW 2020 AU score over its 8 AUs (1, 2, 4, 6, 12, 15, 20, 25), whatever release the records came from:
    0.5 mean F1 over those AUs + 0.5 accuracy over all their (annotated) decisions.

    Takes the 8 columns, or the `aus` columns (the canonical 17) and selects the 8 itself. Averages over the 8 AUs
    that are annotated; when some is not (ABAW 2022+ releases do not code AU20), it warns naming them (see
    `challenge_au_columns` for the list). 0.0 when none is annotated."""
    t, p, m, used = challenge_au_columns(y_true, y_pred, mask, ABAW2020_AUS, aus, name="abaw2020_au_score")
    if len(used) < len(ABAW2020_AUS):
        missing = [f"AU{a}" for a in ABAW2020_AUS if a not in used]
        warnings.warn(f"abaw2020_au_score: {', '.join(missing)} not annotated in these records; the score "
                      f"averages over {len(used)} of ABAW 2020's 8 AUs", stacklevel=2)
    t, p, m = _au_arrays(t, p, m)
    total_accuracy = float((t == p)[m].mean()) if m.any() else 0.0
    return 0.5 * mean_f1(t, p, m) + 0.5 * total_accuracy


def abaw2022_au_score(y_true, y_pred, mask=None, aus=AUS):
    """ABAW 2022+ AU score: mean F1 over its 12 AUs. Arrays with 12 columns are taken as those AUs; arrays whose
    columns are `aus` (the canonical 17 by default) are reduced to them."""
    t, p, m, _ = challenge_au_columns(y_true, y_pred, mask, ABAW2022_AUS, aus, name="abaw2022_au_score")
    return mean_f1(t, p, m)


# ---------------------------------------------------------------- expressions

def _labels(y_true, y_pred):
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred)
    y_pred = (y_pred.argmax(axis=-1) if y_pred.ndim == 2 else y_pred.reshape(-1)).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"expression metrics: {y_true.shape[0]} true labels but {y_pred.shape[0]} predictions")
    labelled = y_true >= 0
    return y_true[labelled], y_pred[labelled]


def accuracy(y_true, y_pred):
    """Total accuracy over the labelled entries (AFEW)."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else 0.0


def confusion_matrix(y_true, y_pred, num_classes):
    """[C, C] counts, rows = truth, columns = prediction (sklearn's convention)."""
    y_true, y_pred = _labels(y_true, y_pred)
    if y_true.size and (y_true.max() >= num_classes or y_pred.min() < 0 or y_pred.max() >= num_classes):
        raise ValueError(f"confusion_matrix: labels must lie in [0, {num_classes}); got truth up to "
                         f"{y_true.max()} and predictions in [{y_pred.min()}, {y_pred.max()}]")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _recalls(y_true, y_pred, num_classes):
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return np.diag(matrix)[present] / support[present]


def mean_diagonal(y_true, y_pred, num_classes):
    """Mean diagonal of the row-normalised confusion matrix (RAF-DB), over the classes present in the truth."""
    recalls = _recalls(y_true, y_pred, num_classes)
    return float(recalls.mean()) if recalls.size else 0.0


def unweighted_average_recall(y_true, y_pred, num_classes):
    """Mean recall over the classes present in the truth (equal to `mean_diagonal`)."""
    return mean_diagonal(y_true, y_pred, num_classes)


def macro_f1(y_true, y_pred, num_classes):
    """Mean one-vs-rest F1 over the classes occurring in the truth or the prediction."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(matrix)
    fp, fn = matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
    occurring = (tp + fp + fn) > 0
    scores = _f1_from_counts(tp, fp, fn, 0.0)[occurring]
    return float(scores.mean()) if scores.size else 0.0


def emotionet_expression_score(y_true, y_pred, num_classes):
    """EmotioNet challenge expression score: mean of (macro F1, unweighted average recall)."""
    return 0.5 * (macro_f1(y_true, y_pred, num_classes) + unweighted_average_recall(y_true, y_pred, num_classes))


def abaw2020_expr_score(y_true, y_pred, num_classes=7):
    """ABAW 2020 EXPR score: 0.67 macro F1 + 0.33 accuracy."""
    return 0.67 * macro_f1(y_true, y_pred, num_classes) + 0.33 * accuracy(y_true, y_pred)


ABAW_OTHER = ABAW2022_EXPRESSIONS.index("Other")


def f1_per_class(y_true, y_pred, num_classes):
    """[C] one-vs-rest F1 of every class (0 for a class absent from both truth and prediction)."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(matrix)
    return _f1_from_counts(tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp, 0.0)


def abaw2022_expr_score(y_true, y_pred):
    """ABAW 2022+ EXPR score: the per-class F1 summed over its 8 classes (7 basic + Other = 7) and divided by 8,
    as the organisers define it: a class absent from both truth and prediction adds 0.

    `y_true` in 0..7 (-1 = no label, left out). `y_pred`: labels 0..7 or scores [N, 7 or 8] (argmax). Scores of a
    7-output model never predict Other, so every frame labelled Other counts as a miss: see
    `abaw2022_expr_predictions` for a rule that predicts it."""
    return float(f1_per_class(y_true, y_pred, len(ABAW2022_EXPRESSIONS)).mean())


def abaw2022_expr_predictions(probabilities, other_threshold: float | None = None) -> np.ndarray:
    """ABAW 2022+ class predictions 0..7 from 7 expression probabilities [N, 7]: the argmax, or Other (7) where
    `other_threshold` is given and the largest probability is below it."""
    probabilities = np.asarray(probabilities)
    predictions = probabilities.argmax(axis=-1)
    if other_threshold is not None:
        predictions = np.where(probabilities.max(axis=-1) < other_threshold, ABAW_OTHER, predictions)
    return predictions


# ---------------------------------------------------------------- streaming Keras metrics (training logs)

def _weights(mask, sample_weight, shape_like):
    weight = ops.ones_like(shape_like)
    for extra in (mask, sample_weight):
        if extra is not None:
            weight = weight * ops.cast(ops.convert_to_tensor(extra) > 0, "float32")
    return weight


def global_batch(values):
    """A nest of [N, ...] tensors -> the global batch's rows: inside `strategy.run` with several replicas (GPUs,
    workers), every replica's rows gathered (in replica order); elsewhere `values` as given. Metrics updated with
    it hold the same, global state on every replica: the epoch's CCC and F1 over all workers' images."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    # An all-reduce of each replica's rows placed in its own block of zeros: exact, and unlike `all_gather` it
    # runs under MultiWorkerMirroredStrategy in TF 2.21 ("destinations can not be empty"). Replicas' batches
    # have the same number of rows (the pipelines drop remainders).
    replicas = context.num_replicas_in_sync
    place = tf.one_hot(context.replica_id_in_sync_group, replicas)  # [R], 1 at this replica

    flat = [tf.convert_to_tensor(v) for v in tf.nest.flatten(values)]
    rows = [tf.cast(v, tf.float32) for v in flat]
    spread = [tf.reshape(place, [replicas, *([1] * r.shape.rank)]) * r[None] for r in rows]
    totals = context.all_reduce(tf.distribute.ReduceOp.SUM, spread)
    return tf.nest.pack_sequence_as(values, [
        tf.cast(tf.reshape(t, tf.concat([[-1], tf.shape(r)[1:]], axis=0)), v.dtype)
        for t, r, v in zip(totals, rows, flat)])


@keras.saving.register_keras_serializable(package="fbnet")
class StreamingCCC(keras.metrics.Metric):
    """CCC over every sample seen since the last reset (not a mean of batch CCCs), per column of y [N, D].

    Running count, means, squared deviations and co-deviation are merged batch by batch (Chan et al.), which
    stays exact in float32. `dimension=None` reports the mean CCC over the columns, an int that column's CCC.
    `update_state(y_true, y_pred, mask)`: rows with mask 0 (no VA label) are skipped. Same undefined values as
    `ccc`: no sample -> 0, zero denominator -> 1.

    Under a distribution strategy its state is not a sum over replicas (means are not additive): the trainers
    update it with the global batch (`global_batch`), so every replica holds the same state, and a read across
    replicas takes their mean, which is that state.
    """

    def __init__(self, dimension=None, num_dimensions=2, name="ccc", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.dimension, self.num_dimensions = dimension, num_dimensions
        shape = (num_dimensions,)
        state = dict(initializer="zeros", aggregation="mean")
        self.count = self.add_variable(shape=(), name="count", **state)
        self.mean_true = self.add_variable(shape=shape, name="mean_true", **state)
        self.mean_pred = self.add_variable(shape=shape, name="mean_pred", **state)
        self.m2_true = self.add_variable(shape=shape, name="m2_true", **state)
        self.m2_pred = self.add_variable(shape=shape, name="m2_pred", **state)
        self.co_moment = self.add_variable(shape=shape, name="co_moment", **state)

    def update_state(self, y_true, y_pred, mask=None, sample_weight=None):
        y_true = ops.reshape(ops.cast(y_true, "float32"), (-1, self.num_dimensions))
        y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1, self.num_dimensions))
        w = ops.reshape(_weights(mask, sample_weight, y_true[:, 0]), (-1, 1))
        n_b = ops.sum(w)
        safe_b = ops.maximum(n_b, 1.0)
        mean_t_b = ops.sum(y_true * w, axis=0) / safe_b
        mean_p_b = ops.sum(y_pred * w, axis=0) / safe_b
        dev_t, dev_p = (y_true - mean_t_b) * w, (y_pred - mean_p_b) * w
        n_a = self.count
        n = n_a + n_b
        share = n_b / ops.maximum(n, 1.0)
        cross = n_a * share  # n_a n_b / n
        delta_t, delta_p = mean_t_b - self.mean_true, mean_p_b - self.mean_pred
        self.m2_true.assign_add(ops.sum(dev_t ** 2, axis=0) + delta_t ** 2 * cross)
        self.m2_pred.assign_add(ops.sum(dev_p ** 2, axis=0) + delta_p ** 2 * cross)
        self.co_moment.assign_add(ops.sum(dev_t * dev_p, axis=0) + delta_t * delta_p * cross)
        self.mean_true.assign_add(delta_t * share)
        self.mean_pred.assign_add(delta_p * share)
        self.count.assign(n)

    def per_dimension(self):
        """[D] CCC of each column so far."""
        n = ops.maximum(self.count, 1.0)
        denominator = (self.m2_true + self.m2_pred) / n + (self.mean_true - self.mean_pred) ** 2
        value = 2.0 * (self.co_moment / n) / ops.where(denominator > 0, denominator, 1.0)
        value = ops.where(denominator > 0, value, 1.0)
        return ops.where(self.count > 0, value, 0.0)

    def result(self):
        values = self.per_dimension()
        return ops.mean(values) if self.dimension is None else values[self.dimension]

    def get_config(self):
        return {**super().get_config(), "dimension": self.dimension, "num_dimensions": self.num_dimensions}


@keras.saving.register_keras_serializable(package="fbnet")
class MaskedAUF1(keras.metrics.Metric):
    """Mean per-AU F1 over the epoch from running TP/FP/FN counts, counting only annotated (mask > 0) entries.

    `update_state(y_true, y_pred, mask)` with y_pred probabilities (thresholded at `threshold`) or 0/1. The mean
    runs over the AUs annotated at least once; an annotated AU never positive in truth nor prediction scores 0,
    as in `mean_f1`.
    """

    def __init__(self, num_aus=len(AUS), threshold=0.5, name="au_f1", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.num_aus, self.threshold = num_aus, threshold
        self.true_positives = self.add_variable(shape=(num_aus,), initializer="zeros", name="true_positives")
        self.false_positives = self.add_variable(shape=(num_aus,), initializer="zeros", name="false_positives")
        self.false_negatives = self.add_variable(shape=(num_aus,), initializer="zeros", name="false_negatives")
        self.annotated = self.add_variable(shape=(num_aus,), initializer="zeros", name="annotated")

    def update_state(self, y_true, y_pred, mask=None, sample_weight=None):
        y_true = ops.cast(ops.cast(y_true, "float32") >= 0.5, "float32")
        y_pred = ops.cast(ops.cast(y_pred, "float32") >= self.threshold, "float32")
        w = _weights(mask, None, y_true)
        if sample_weight is not None:
            w = w * ops.reshape(ops.cast(ops.convert_to_tensor(sample_weight) > 0, "float32"), (-1, 1))
        self.true_positives.assign_add(ops.sum(y_true * y_pred * w, axis=0))
        self.false_positives.assign_add(ops.sum((1.0 - y_true) * y_pred * w, axis=0))
        self.false_negatives.assign_add(ops.sum(y_true * (1.0 - y_pred) * w, axis=0))
        self.annotated.assign_add(ops.sum(w, axis=0))

    def per_au(self):
        """[K] F1 of each AU so far."""
        denominator = 2.0 * self.true_positives + self.false_positives + self.false_negatives
        return ops.where(denominator > 0, 2.0 * self.true_positives / ops.maximum(denominator, 1.0), 0.0)

    def result(self):
        used = ops.cast(self.annotated > 0, "float32")
        return ops.sum(self.per_au() * used) / ops.maximum(ops.sum(used), 1.0)

    def get_config(self):
        return {**super().get_config(), "num_aus": self.num_aus, "threshold": self.threshold}
