"""Re-sampling in tf.data (FATAUVA-Net paper 4.1.1): the rebalanced stream's AU positive rate against its target and
against the numpy expectation of its weights, and the V-A histogram flattened."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fbnet_tf import rebalance  # noqa: E402


def stream(targets, weight_fn, passes=1, seed=0):
    """Every element of the re-sampled stream over `passes` passes, as numpy arrays."""
    ds = tf.data.Dataset.from_tensor_slices(targets)
    ds = rebalance.resample(ds, weight_fn, seed=seed).repeat(passes).batch(4096)
    parts = list(ds.as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts]) for k in targets}


def test_one_rare_au_reaches_its_target_rate_exactly_in_expectation():
    n, p, target, keep = 3000, 0.08, 0.4, 0.5
    rng = np.random.default_rng(0)
    au = (rng.random((n, 1)) < p).astype(np.float32)
    mask = np.ones_like(au)
    ratios = rebalance.au_ratios(au, mask, target)
    rate = au.mean()
    np.testing.assert_allclose(ratios, [target * (1 - rate) / (rate * (1 - target))])
    weights = rebalance.au_weights(au, mask, ratios, keep, max_repeat=100).numpy()
    np.testing.assert_allclose(rebalance.expected_positive_rate(au, mask, weights), [target], rtol=1e-6)
    out = stream({"au": au, "au_mask": mask},
                 lambda t: rebalance.au_weights(t["au"], t["au_mask"], ratios, keep, 100), passes=4)
    observed = out["au"].mean()
    sigma = np.sqrt(target * (1 - target) / len(out["au"]))
    assert abs(observed - target) < 4 * sigma + 0.01, (observed, target)
    # negatives under-sampled to `keep`, positives over-sampled: the stream's size follows the weights
    expected_size = 4 * weights.sum()
    assert abs(len(out["au"]) - expected_size) < 5 * np.sqrt(expected_size)
    assert out["au"].sum() > 4 * au.sum() and (1 - out["au"]).sum() < 4 * (1 - au).sum()


def test_several_aus_rise_towards_the_target_as_the_weights_predict():
    n = 4000
    rng = np.random.default_rng(1)
    common = rng.random(n) < 0.6  # AU25-like, above the target: not boosted
    rare = rng.random(n) < 0.05  # AU45-like
    rarer = (rng.random(n) < 0.02) | (rare & (rng.random(n) < 0.3))  # co-occurs with `rare`
    au = np.stack([common, rare, rarer], axis=1).astype(np.float32)
    mask = np.ones_like(au)
    mask[: n // 4, 2] = 0.0  # the rarer AU is not coded in a quarter of the images (another database)
    ratios = rebalance.au_ratios(au, mask, 0.3)
    assert ratios[0] == 1.0 and ratios[2] > ratios[1] > 1.0
    weight_fn = lambda t: rebalance.au_weights(t["au"], t["au_mask"], ratios, 0.5, 8)  # noqa: E731
    expected = rebalance.expected_positive_rate(au, mask, weight_fn({"au": au, "au_mask": mask}).numpy())
    out = stream({"au": au, "au_mask": mask}, weight_fn, passes=3)
    observed = (out["au"] * out["au_mask"]).sum(0) / out["au_mask"].sum(0)
    np.testing.assert_allclose(observed, expected, atol=0.02)
    before = (au * mask).sum(0) / mask.sum(0)
    assert observed[1] > 3 * before[1] and observed[2] > 3 * before[2]
    assert np.all(expected[1:] < 0.3 + 0.1)  # towards the target, not far past it


def test_va_histogram_is_flattened_per_dimension():
    n = 3000
    rng = np.random.default_rng(2)
    # valence piles up at 0 and 0.2 (the paper's Figure 6); arousal independent, skewed to 0.2
    valence = rng.choice([-0.6, -0.2, 0.0, 0.2, 0.6], n, p=[0.05, 0.1, 0.45, 0.3, 0.1])
    arousal = rng.choice([0.0, 0.2, 0.4], n, p=[0.2, 0.6, 0.2])
    va = np.stack([valence, arousal], axis=1).astype(np.float32)
    va_mask = np.ones(n, np.float32)
    ratios = rebalance.va_ratios(va, va_mask, strength=1.0)
    counts = np.bincount(rebalance.va_bins(va)[:, 0], minlength=11)
    occupied = counts > 0
    np.testing.assert_allclose(ratios[0, occupied], counts[occupied].mean() / counts[occupied])
    out = stream({"va": va, "va_mask": va_mask},
                 lambda t: rebalance.va_weights(t["va"], t["va_mask"], ratios, 50), passes=3)
    for d, bins in ((0, 5), (1, 3)):
        shares = np.bincount(rebalance.va_bins(out["va"])[:, d], minlength=11)
        shares = shares[shares > 0] / len(out["va"])
        assert len(shares) == bins
        np.testing.assert_allclose(shares, 1 / bins, atol=0.035)
    # strength 0 leaves the stream as it was
    assert np.all(rebalance.va_ratios(va, va_mask, strength=0.0) == 1.0)
    # no V-A label: weight 1
    assert rebalance.va_weights(va[:2], np.zeros(2, np.float32), ratios, 50).numpy().tolist() == [1.0, 1.0]


def test_target_rate_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="au_target_rate=1.5"):
        rebalance.au_ratios(np.ones((2, 1)), np.ones((2, 1)), 1.5)
