"""Evaluation metrics against sklearn / direct numpy formulas; streaming Keras metrics against the numpy ones."""
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from fbnet_tf import metrics
from fbnet_tf.labels import AUS, au_mask_for


def direct_ccc(x, y):
    """CCC straight from its definition (population moments via np.cov with bias=True)."""
    cov = np.cov(x, y, bias=True)
    return 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (np.mean(x) - np.mean(y)) ** 2)


@pytest.fixture
def au_data():
    rng = np.random.default_rng(0)
    n, k = 200, len(AUS)
    y_true = (rng.random((n, k)) < 0.3).astype(np.float32)
    probs = np.clip(y_true * 0.5 + rng.random((n, k)) * 0.6, 0, 1).astype(np.float32)
    mask = (rng.random((n, k)) < 0.7).astype(np.float32)
    mask[:, 3] = 0.0  # an AU this database does not annotate
    y_true[:, 5] = 0.0
    probs[:, 5] = 0.1  # an annotated AU never positive in truth nor prediction
    return y_true, probs, mask


@pytest.fixture
def expr_data():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 7, 300)
    y_pred = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 7, 300))
    return y_true, y_pred


def test_ccc_matches_direct_formula():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, 500)
    y = 0.6 * x + 0.2 + rng.normal(0, 0.3, 500)
    assert metrics.ccc(x, y) == pytest.approx(direct_ccc(x, y), rel=1e-12)
    both = metrics.ccc(np.stack([x, y], 1), np.stack([y, x[::-1]], 1))
    np.testing.assert_allclose(both, [direct_ccc(x, y), direct_ccc(y, x[::-1])], rtol=1e-12)
    assert metrics.abaw2022_va_score(np.stack([x, y], 1), np.stack([y, x[::-1]], 1)) == pytest.approx(both.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.ccc(np.full(5, 0.3), np.full(5, 0.3)) == 1.0  # identical constants: 0/0 -> 1
        assert metrics.ccc(np.full(5, 0.3), np.full(5, -0.2)) == 0.0  # constants that differ: well defined
        assert metrics.ccc(np.zeros(0), np.zeros(0)) == 0.0


def test_au_metrics_match_sklearn(au_data):
    y_true, probs, mask = au_data
    y_pred = (probs >= 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f1 = metrics.f1_per_au(y_true, probs, mask)
        acc = metrics.accuracy_per_au(y_true, probs, mask)
    expected_f1, expected_acc = [], []
    for k in range(len(AUS)):
        rows = mask[:, k] > 0
        if not rows.any():
            expected_f1.append(0.0)
            expected_acc.append(0.0)
            continue
        expected_f1.append(skm.f1_score(y_true[rows, k], y_pred[rows, k], zero_division=0.0))
        expected_acc.append(skm.accuracy_score(y_true[rows, k], y_pred[rows, k]))
    np.testing.assert_allclose(f1, expected_f1, rtol=1e-12)
    np.testing.assert_allclose(acc, expected_acc, rtol=1e-12)
    assert f1[5] == 0.0 and acc[5] == 1.0
    annotated = [k for k in range(len(AUS)) if k != 3]
    assert metrics.mean_f1(y_true, probs, mask) == pytest.approx(np.mean(np.array(expected_f1)[annotated]))
    assert metrics.emotionet_au_score(y_true, probs, mask) == pytest.approx(
        0.5 * np.mean(np.array(expected_f1)[annotated]) + 0.5 * np.mean(np.array(expected_acc)[annotated]))
    # ABAW 2020 scores its own 8 AUs, selected from the 17 columns (all 8 annotated here)
    eight = [AUS.index(a) for a in (1, 2, 4, 6, 12, 15, 20, 25)]
    decisions = mask[:, eight] > 0
    assert metrics.abaw2020_au_score(y_true, probs, mask) == pytest.approx(
        0.5 * np.mean(np.array(expected_f1)[eight])
        + 0.5 * skm.accuracy_score(y_true[:, eight][decisions], y_pred[:, eight][decisions]))
    # Without a mask, every entry counts: sklearn's per-column binary F1 averaged over the columns.
    assert metrics.mean_f1(y_true, probs) == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0.0))


def test_abaw2022_au_score_selects_its_12_aus(au_data):
    y_true, probs, _ = au_data
    columns = [AUS.index(a) for a in metrics.ABAW2022_AUS]
    expected = skm.f1_score(y_true[:, columns], (probs[:, columns] >= 0.5).astype(int), average="macro",
                            zero_division=0.0)
    assert metrics.abaw2022_au_score(y_true, probs) == pytest.approx(expected)
    assert metrics.abaw2022_au_score(y_true[:, columns], probs[:, columns]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="12 columns"):
        metrics.abaw2022_au_score(y_true[:, :5], probs[:, :5])


def test_expression_metrics_match_sklearn(expr_data):
    y_true, y_pred = expr_data
    labels = list(range(7))
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred, 7),
                                  skm.confusion_matrix(y_true, y_pred, labels=labels))
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    uar = skm.recall_score(y_true, y_pred, average="macro")
    assert metrics.unweighted_average_recall(y_true, y_pred, 7) == pytest.approx(uar)
    row_normalised = skm.confusion_matrix(y_true, y_pred, labels=labels, normalize="true")
    assert metrics.mean_diagonal(y_true, y_pred, 7) == pytest.approx(np.diag(row_normalised).mean())
    f1 = skm.f1_score(y_true, y_pred, average="macro")
    assert metrics.macro_f1(y_true, y_pred, 7) == pytest.approx(f1)
    assert metrics.emotionet_expression_score(y_true, y_pred, 7) == pytest.approx(0.5 * (f1 + uar))
    assert metrics.abaw2020_expr_score(y_true, y_pred) == pytest.approx(
        0.67 * f1 + 0.33 * skm.accuracy_score(y_true, y_pred))
    # ABAW 2022+: the F1 of all 8 classes / 8; Other (7) occurs nowhere here and adds 0
    assert metrics.abaw2022_expr_score(y_true, y_pred) == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=list(range(8)), average="macro", zero_division=0.0))

    scores = np.eye(7)[y_pred] + 0.01  # [N, C] scores are argmaxed
    assert metrics.accuracy(y_true, scores) == metrics.accuracy(y_true, y_pred)
    unlabelled = np.concatenate([y_true, [-1, -1]])  # entries without a label are ignored
    assert metrics.macro_f1(unlabelled, np.concatenate([y_pred, [0, 3]]), 7) == pytest.approx(f1)


def test_abaw2022_expr_score_counts_other_frames():
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 8, 400)  # 7 = Other
    probabilities = rng.dirichlet(np.ones(7), 400)
    probabilities[np.arange(400), np.minimum(y_true, 6)] += rng.random(400)  # some skill on the basic classes
    probabilities /= probabilities.sum(1, keepdims=True)
    argmax = probabilities.argmax(1)
    official = metrics.abaw2022_expr_score(y_true, probabilities)
    assert official == pytest.approx(skm.f1_score(y_true, argmax, labels=list(range(8)), average="macro",
                                                  zero_division=0.0))
    # A 7-output model never predicts Other: every Other frame is a miss and its F1 is 0
    assert metrics.f1_per_class(y_true, probabilities, 8)[7] == 0.0
    basic = y_true < 7
    seven = metrics.macro_f1(y_true[basic], argmax[basic], 7)
    assert official < seven  # the 7-class score over the non-Other frames is not the official one
    # A rule that predicts Other below a probability threshold
    predictions = metrics.abaw2022_expr_predictions(probabilities, other_threshold=0.3)
    np.testing.assert_array_equal(predictions, np.where(probabilities.max(1) < 0.3, 7, argmax))
    assert 0 < (predictions == 7).sum() < 400
    assert metrics.abaw2022_expr_score(y_true, predictions) == pytest.approx(
        skm.f1_score(y_true, predictions, labels=list(range(8)), average="macro", zero_division=0.0))
    assert metrics.abaw2022_expr_score(np.concatenate([y_true, [-1]]), np.concatenate([predictions, [3]])) == \
        pytest.approx(metrics.abaw2022_expr_score(y_true, predictions))  # unlabelled frames left out


def test_abaw2020_au_score_over_its_8_aus_from_a_2022_release(au_data):
    y_true, probs, _ = au_data
    y_pred = (probs >= 0.5).astype(int)
    # An ABAW 2022+ release annotates 12 AUs, not AU20: the 2020 score averages over the 7 of its 8 it has
    mask = np.tile(au_mask_for((1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)), (len(y_true), 1))
    seven = [AUS.index(a) for a in (1, 2, 4, 6, 12, 15, 25)]
    expected = 0.5 * skm.f1_score(y_true[:, seven], y_pred[:, seven], average="macro", zero_division=0.0) \
        + 0.5 * skm.accuracy_score(y_true[:, seven].ravel(), y_pred[:, seven].ravel())
    with pytest.warns(UserWarning, match=r"AU20 not annotated.*7 of ABAW 2020's 8 AUs"):
        assert metrics.abaw2020_au_score(y_true, probs, mask) == pytest.approx(expected)
    # Given its 8 columns directly, all annotated: no warning
    eight = [AUS.index(a) for a in (1, 2, 4, 6, 12, 15, 20, 25)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.abaw2020_au_score(y_true[:, eight], probs[:, eight]) == pytest.approx(
            0.5 * skm.f1_score(y_true[:, eight], y_pred[:, eight], average="macro", zero_division=0.0)
            + 0.5 * skm.accuracy_score(y_true[:, eight].ravel(), y_pred[:, eight].ravel()))
    with pytest.raises(ValueError, match="8 columns"):
        metrics.abaw2020_au_score(y_true[:, :5], probs[:, :5])


def test_expression_metrics_with_missing_classes():
    y_true, y_pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # class 5 occurs only in the prediction: its F1 (0) counts, classes 3, 4, 6 occur nowhere and do not
        assert metrics.macro_f1(y_true, y_pred, 7) == pytest.approx(
            skm.f1_score(y_true, y_pred, average="macro", zero_division=0.0))
        # recall is averaged over the classes present in the truth: (1/2 + 1 + 0) / 3
        assert metrics.mean_diagonal(y_true, y_pred, 7) == pytest.approx(0.5)
        assert metrics.accuracy([], []) == 0.0 and metrics.macro_f1([], [], 7) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        metrics.confusion_matrix([0, 1], [0, 9], 7)


def test_streaming_ccc_equals_ccc_of_concatenation():
    rng = np.random.default_rng(3)
    batches = []
    for size in (5, 17, 1, 30, 8):
        va = rng.uniform(-1, 1, (size, 2)).astype(np.float32)
        pred = np.clip(va * 0.7 + 0.1 + rng.normal(0, 0.3, (size, 2)), -1, 1).astype(np.float32)
        batches.append((va, pred, (rng.random(size) < 0.7).astype(np.float32)))
    both, valence = metrics.StreamingCCC(), metrics.StreamingCCC(dimension=0, name="ccc_valence")
    for va, pred, mask in batches:
        both.update_state(va, pred, mask)
        valence.update_state(va, pred, mask)
    va, pred, mask = (np.concatenate(x) for x in zip(*batches))
    keep = mask > 0
    expected = [direct_ccc(va[keep, d].astype(np.float64), pred[keep, d].astype(np.float64)) for d in (0, 1)]
    np.testing.assert_allclose(both.per_dimension(), expected, rtol=1e-5)
    assert float(both.result()) == pytest.approx(np.mean(expected), rel=1e-5)
    assert float(valence.result()) == pytest.approx(expected[0], rel=1e-5)
    batch_mean = np.mean([direct_ccc(v[m > 0, 0], p[m > 0, 0]) for v, p, m in batches if (m > 0).sum() > 2])
    assert abs(batch_mean - expected[0]) > 1e-3  # the streaming value is not a mean of batch CCCs
    both.reset_state()
    assert float(both.result()) == 0.0


def test_masked_au_f1_streams_to_mean_f1(au_data):
    y_true, probs, mask = au_data
    metric = metrics.MaskedAUF1()
    for start in range(0, len(y_true), 64):
        rows = slice(start, start + 64)
        metric.update_state(y_true[rows], probs[rows], mask[rows])
    assert float(metric.result()) == pytest.approx(metrics.mean_f1(y_true, probs, mask), rel=1e-6)
    np.testing.assert_allclose(metric.per_au(), metrics.f1_per_au(y_true, probs, mask), rtol=1e-6)


def test_streaming_metrics_inside_compiled_step(au_data):
    import tensorflow as tf
    y_true, probs, mask = au_data
    rng = np.random.default_rng(4)
    va = rng.uniform(-1, 1, (len(y_true), 2)).astype(np.float32)
    va_pred = (0.5 * va + rng.normal(0, 0.2, va.shape)).astype(np.float32)
    va_mask = (rng.random(len(y_true)) < 0.5).astype(np.float32)
    f1, ccc = metrics.MaskedAUF1(), metrics.StreamingCCC()

    @tf.function(jit_compile=True)
    def step(t, p, m, v, vp, vm):
        f1.update_state(t, p, m)
        ccc.update_state(v, vp, vm)

    for rows in (slice(0, 100), slice(100, None)):
        step(y_true[rows], probs[rows], mask[rows], va[rows], va_pred[rows], va_mask[rows])
    assert float(f1.result()) == pytest.approx(metrics.mean_f1(y_true, probs, mask), rel=1e-6)
    keep = va_mask > 0
    assert float(ccc.result()) == pytest.approx(np.mean(metrics.ccc(va[keep], va_pred[keep])), rel=1e-5)
