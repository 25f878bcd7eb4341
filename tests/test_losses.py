"""Masked task losses and coupling losses against numpy and the paper's worked cases."""
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf import losses, relatedness
from fbnet_tf.labels import AUS, EXPRESSIONS

N_EXPR, N_AU = len(EXPRESSIONS), len(AUS)
E = {name: i for i, name in enumerate(EXPRESSIONS)}


def au_pos(number):
    return AUS.index(number)


def au_vector(numbers, annotated=None):
    """(labels, mask) [17] with `numbers` active and `annotated` (default: all) annotated."""
    labels, mask = np.zeros(N_AU, np.float32), np.zeros(N_AU, np.float32)
    labels[[au_pos(a) for a in numbers]] = 1.0
    if annotated is None:
        mask[:] = 1.0
    else:
        mask[[au_pos(a) for a in annotated]] = 1.0
    return labels, mask


@pytest.fixture(scope="module")
def table():
    return relatedness.load("du2014")


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def random_batch(rng, n=12):
    expr = rng.integers(-1, N_EXPR, n)
    au = (rng.random((n, N_AU)) < 0.4).astype(np.float32)
    au_mask = (rng.random((n, N_AU)) < 0.6).astype(np.float32)
    au_mask[:3] = 0.0  # some images with no AU label at all
    va_mask = (rng.random(n) < 0.6).astype(np.float32)
    va = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    targets = {"expr": expr, "au": au, "au_mask": au_mask, "va": va, "va_mask": va_mask}
    outputs = {"expression_logits": rng.normal(size=(n, N_EXPR)).astype(np.float32),
               "au_logits": rng.normal(size=(n, N_AU)).astype(np.float32),
               "valence_arousal": np.tanh(rng.normal(size=(n, 2))).astype(np.float32)}
    return targets, outputs


def empty_batch(n=4):
    rng = np.random.default_rng(1)
    targets, outputs = random_batch(rng, n)
    targets.update(expr=np.full(n, -1), au_mask=np.zeros((n, N_AU), np.float32), va_mask=np.zeros(n, np.float32))
    return targets, outputs


def np_ccc(x, y):
    return 2 * np.mean((x - x.mean()) * (y - y.mean())) / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


# ---------------------------------------------------------------- eq. 1

def test_task_losses_match_numpy():
    rng = np.random.default_rng(0)
    t, o = random_batch(rng)
    logp = log_softmax(o["expression_logits"])
    labelled = t["expr"] >= 0
    expected_expr = -logp[labelled, t["expr"][labelled]].mean()
    np.testing.assert_allclose(losses.expression_loss(t["expr"], o["expression_logits"]), expected_expr, rtol=1e-5)

    p = sigmoid(o["au_logits"].astype(np.float64))
    weights = rng.uniform(0.2, 1.0, (len(p), N_AU))
    per_image, per_image_w = [], []
    for i in range(len(p)):
        m = t["au_mask"][i] > 0
        if m.any():
            y = t["au"][i][m]
            bce = -(y * np.log(p[i][m]) + (1 - y) * np.log(1 - p[i][m]))
            per_image.append(bce.sum() / m.sum())
            per_image_w.append((bce * weights[i][m]).sum() / m.sum())
    np.testing.assert_allclose(losses.au_loss(t["au"], t["au_mask"], o["au_logits"]), np.mean(per_image), rtol=1e-5)
    np.testing.assert_allclose(losses.au_loss(t["au"], t["au_mask"], o["au_logits"], weights.astype(np.float32)),
                               np.mean(per_image_w), rtol=1e-5)

    m = t["va_mask"] > 0
    expected_va = 1 - 0.5 * (np_ccc(t["va"][m, 0], o["valence_arousal"][m, 0])
                             + np_ccc(t["va"][m, 1], o["valence_arousal"][m, 1]))
    np.testing.assert_allclose(losses.va_loss(t["va"], t["va_mask"], o["valence_arousal"]), expected_va, rtol=1e-5)
    one = np.zeros_like(t["va_mask"])
    one[0] = 1.0
    assert float(losses.va_loss(t["va"], one, o["valence_arousal"])) == 0.0


# ---------------------------------------------------------------- soft co-annotation

def test_soft_coannotation_happiness_worked_case(table):
    cases = [  # (active AUs, annotated AUs or None, happiness score: default "absent", option "ignore")
        ([12, 25], None, 2 / 2.51, 2 / 2.51),
        ([12, 25, 6], None, 1.0, 1.0),
        ([12, 6], None, 1.51 / 2.51, 1.51 / 2.51),
        ([12, 25], [12, 25, 1, 2], 2 / 2.51, 1.0),  # AU6 not annotated: absent, or out of both sums
        ([12], [12, 6], 1 / 2.51, 1 / 1.51),
        ([], [1, 2], 0.0, 0.0),  # none of happiness's AUs annotated
    ]
    au, mask = map(np.stack, zip(*[au_vector(a, m) for a, m, _, _ in cases]))
    scores = losses.soft_coannotation_scores(au, mask, table).numpy()
    np.testing.assert_allclose(scores[:, E["Happiness"]], [c[2] for c in cases], rtol=1e-6)
    ignored = losses.soft_coannotation_scores(au, mask, table, unannotated="ignore").numpy()
    np.testing.assert_allclose(ignored[:, E["Happiness"]], [c[3] for c in cases], rtol=1e-6)
    assert np.all(scores[:, E["Neutral"]] == 0.0) and np.all(ignored[:, E["Neutral"]] == 0.0)
    unweighted = losses.soft_coannotation_scores(au, mask, table, reweight=False).numpy()
    np.testing.assert_allclose(unweighted[:3, E["Happiness"]], [2 / 3, 1.0, 2 / 3], rtol=1e-6)
    # fear = (y1 + y4 + y20 + y25 + .57 y2 + .63 y5 + .33 y26) / (4 + .57 + .63 + .33) for the first case
    np.testing.assert_allclose(scores[0, E["Fear"]], 1 / 5.53, rtol=1e-6)
    for temperature in (1.0, 0.25):
        soft = losses.soft_coannotation_targets(au, mask, table, temperature=temperature).numpy()
        expected = np.exp(log_softmax(scores / temperature))
        np.testing.assert_allclose(soft, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="unannotated='skip'"):
        losses.soft_coannotation_scores(au, mask, table, unannotated="skip")


DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)


def test_soft_coannotation_disfa_frame_with_au4_and_au17(table):
    # The example: DISFA never codes AU7, AU23, AU24 (anger) nor AU11 (sadness, and not among the 17).
    # Anger = (AU4 1 + AU17 0.52) / (4 + 7 + 24 + 0.26 AU10 + 0.52 AU17 + 0.29 AU23 -> 4.07) = 0.373;
    # Sadness = (AU4 1 + AU17 0.67) / (4 + 15 + 0.60 AU1 + 0.50 AU6 + 0.67 AU17 -> 3.77) = 0.443.
    au, mask = au_vector([4, 17], DISFA_AUS)
    scores = losses.soft_coannotation_scores(au[None], mask[None], table).numpy()[0]
    np.testing.assert_allclose(scores[E["Anger"]], 1.52 / 4.07, rtol=1e-6)
    np.testing.assert_allclose(scores[E["Sadness"]], 1.67 / 3.77, rtol=1e-6)
    assert round(float(scores[E["Anger"]]), 3) == 0.373 and round(float(scores[E["Sadness"]]), 3) == 0.443
    # The "ignore" reading judges anger on AU4 + AU17 alone: a full anger pattern, 1.0.
    ignored = losses.soft_coannotation_scores(au[None], mask[None], table, unannotated="ignore").numpy()[0]
    np.testing.assert_allclose(ignored[E["Anger"]], 1.0, rtol=1e-6)
    np.testing.assert_allclose(ignored[E["Sadness"]], 1.67 / (2 + 0.60 + 0.50 + 0.67), rtol=1e-6)
    # MultiTaskLoss takes the reading from its (config) argument; the default is the literal one.
    targets = {"expr": np.array([-1]), "au": au[None], "au_mask": mask[None], "va": np.zeros((1, 2), np.float32),
               "va_mask": np.zeros(1, np.float32)}
    outputs = {"expression_logits": np.zeros((1, N_EXPR), np.float32), "au_logits": np.zeros((1, N_AU), np.float32),
               "valence_arousal": np.zeros((1, 2), np.float32)}
    for reading, expected_scores in (("absent", scores), ("ignore", ignored)):
        kwargs = {} if reading == "absent" else {"soft_coannotation_unannotated": reading}
        loss = losses.MultiTaskLoss(coupling="soft_coannotation", **kwargs)
        assert loss.get_config()["soft_coannotation_unannotated"] == reading
        soft = np.exp(log_softmax(expected_scores))
        np.testing.assert_allclose(loss(targets, outputs)["soft_coannotation"], -(soft * np.log(1 / 7)).sum(),
                                   rtol=1e-5)


def test_soft_coannotation_loss_is_soft_cross_entropy(table):
    rng = np.random.default_rng(2)
    t, o = random_batch(rng)
    soft = losses.soft_coannotation_targets(t["au"], t["au_mask"], table).numpy()
    has_au = t["au_mask"].sum(1) > 0
    expected = -(soft * log_softmax(o["expression_logits"])).sum(1)[has_au].mean()
    got = losses.soft_coannotation_loss(t["au"], t["au_mask"], o["expression_logits"], table)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ---------------------------------------------------------------- distribution matching

def test_distribution_matching_q_paper_cases(table):
    happy = np.eye(N_EXPR, dtype=np.float32)[[E["Happiness"]]]
    q = losses.distribution_matching_q(happy, table).numpy()[0]
    on = [au_pos(a) for a in (12, 25, 6)]
    np.testing.assert_array_equal(q[on], 1.0)
    np.testing.assert_array_equal(np.delete(q, on), 0.0)

    probs = np.random.default_rng(3).dirichlet(np.ones(N_EXPR), 5).astype(np.float32)
    surprise_fear = probs[:, E["Surprise"]] + probs[:, E["Fear"]]
    au2 = au_pos(2)
    np.testing.assert_allclose(losses.distribution_matching_q(probs, table)[:, au2], surprise_fear, rtol=1e-6)
    np.testing.assert_allclose(losses.distribution_matching_q(probs, table, "normalised")[:, au2],
                               surprise_fear / 2, rtol=1e-6)
    np.testing.assert_allclose(losses.distribution_matching_q(probs, table, "weighted")[:, au2],
                               probs[:, E["Surprise"]] + 0.57 * probs[:, E["Fear"]], rtol=1e-6)
    # AU25 is shared by happiness, fear, surprise: normalised divides by 3
    au25 = au_pos(25)
    shared = probs[:, [E["Happiness"], E["Fear"], E["Surprise"]]].sum(1)
    np.testing.assert_allclose(losses.distribution_matching_q(probs, table, "normalised")[:, au25], shared / 3,
                               rtol=1e-6)


def test_distribution_matching_loss_and_gradients(table):
    rng = np.random.default_rng(4)
    expr_logits = tf.constant(rng.normal(size=(6, N_EXPR)), tf.float32)
    au_logits = tf.constant(rng.normal(size=(6, N_AU)), tf.float32)
    membership = table.membership.astype(np.float64)
    q = np.clip(np.exp(log_softmax(expr_logits.numpy().astype(np.float64))) @ membership, 1e-7, 1 - 1e-7)
    p = sigmoid(au_logits.numpy().astype(np.float64))
    expected = {"bernoulli": (-(p * np.log(q) + (1 - p) * np.log(1 - q))).sum(1).mean(),
                "literal": (-(p * np.log(q))).sum(1).mean()}
    for form, value in expected.items():
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([expr_logits, au_logits])
            loss = losses.distribution_matching_loss(tf.nn.softmax(expr_logits), tf.sigmoid(au_logits), table,
                                                     form=form)
        np.testing.assert_allclose(loss, value, rtol=1e-4)
        for grad in tape.gradient(loss, [expr_logits, au_logits]):  # both heads receive a gradient
            assert np.all(np.isfinite(grad)) and np.abs(grad.numpy()).sum() > 0
    linked = table.membership.max(axis=0) > 0
    assert not linked[au_pos(14)]  # AU14 is in no du2014 row
    skipped = losses.distribution_matching_loss(tf.nn.softmax(expr_logits), tf.sigmoid(au_logits), table,
                                                skip_unlinked=True)
    np.testing.assert_allclose(skipped, (-(p * np.log(q) + (1 - p) * np.log(1 - q)))[:, linked].sum(1).mean(),
                               rtol=1e-4)


# ---------------------------------------------------------------- hard co-annotation

def test_coannotate_from_expression(table):
    expr = np.array([E["Happiness"], E["Neutral"], -1, E["Sadness"]])
    au, mask, weights = (x.numpy() for x in losses.coannotate_from_expression(expr, table))
    expected_mask = np.zeros((4, N_AU), np.float32)
    expected_mask[0, [au_pos(a) for a in (12, 25, 6)]] = 1.0
    expected_mask[3, [au_pos(a) for a in (4, 15, 1, 6, 17)]] = 1.0  # AU11 is outside the canonical 17
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(au, expected_mask)  # co-annotated AUs are positives
    np.testing.assert_allclose(weights[0, [au_pos(a) for a in (12, 25, 6)]], [1.0, 1.0, 0.51])
    np.testing.assert_allclose(weights[3, [au_pos(a) for a in (4, 15, 1, 6, 17)]], [1, 1, 0.6, 0.5, 0.67])
    assert weights[1:3].sum() == 0.0


def test_coannotate_from_aus(table):
    fear_and_surprise = [1, 2, 4, 5, 20, 25, 26]  # every AU of fear (7) and of surprise (5)
    rows = [
        au_vector(fear_and_surprise),  # both qualify: fear has more required AUs
        au_vector([1, 2, 5, 25, 26]),  # surprise only
        au_vector([12, 25, 6]),  # happiness
        au_vector([12, 25]),  # AU6 annotated and absent: nothing
        au_vector([12, 25], annotated=[12, 25, 1]),  # AU6 not annotated
        au_vector([]),  # no AU active: neutral is never inferred
        au_vector([12, 25, 6], annotated=[]),  # nothing annotated
    ]
    au, mask = map(np.stack, zip(*rows))
    strict = losses.coannotate_from_aus(au, mask, table).numpy()
    np.testing.assert_array_equal(strict, [E["Fear"], E["Surprise"], E["Happiness"], -1, -1, -1, -1])
    lenient = losses.coannotate_from_aus(au, mask, table, missing="ignore").numpy()
    np.testing.assert_array_equal(lenient, [E["Fear"], E["Surprise"], E["Happiness"], -1, E["Happiness"], -1, -1])


# ---------------------------------------------------------------- MultiTaskLoss

def test_multitask_total_and_coannotation_merge(table):
    rng = np.random.default_rng(5)
    t, o = random_batch(rng, 8)
    result = losses.MultiTaskLoss(lambda_au=0.5, lambda_va=2.0, coupling="soft_coannotation+distribution_matching",
                                  coupling_weight={"soft_coannotation": 0.3, "distribution_matching": 0.7})(t, o)
    assert set(result) == {"loss", "expression", "au", "va", "soft_coannotation", "distribution_matching"}
    expected = (result["expression"] + 0.5 * result["au"] + 2.0 * result["va"]
                + 0.3 * result["soft_coannotation"] + 0.7 * result["distribution_matching"])
    np.testing.assert_allclose(result["loss"], expected, rtol=1e-6)

    # image 0: happiness label, no AU label; image 1: fear AUs, no expression; image 2: both, real labels win
    fear_au, full = au_vector([1, 2, 4, 5, 20, 25, 26])
    happy_au, _ = au_vector([12, 25, 6])
    t = {"expr": np.array([E["Happiness"], -1, E["Sadness"]]),
         "au": np.stack([np.zeros(N_AU, np.float32), fear_au, happy_au]),
         "au_mask": np.stack([np.zeros(N_AU, np.float32), full, full]),
         "va": np.zeros((3, 2), np.float32), "va_mask": np.zeros(3, np.float32)}
    o = {k: v[:3] for k, v in random_batch(rng, 3)[1].items()}
    weight = 0.5
    result = losses.MultiTaskLoss(coupling="coannotation", coupling_weight=weight)(t, o)
    logp = log_softmax(o["expression_logits"].astype(np.float64))
    expected_expr = (-logp[0, E["Happiness"]] - weight * logp[1, E["Fear"]] - logp[2, E["Sadness"]]) / 3
    np.testing.assert_allclose(result["expression"], expected_expr, rtol=1e-5)
    p = sigmoid(o["au_logits"].astype(np.float64))
    happy = [au_pos(a) for a in (12, 25, 6)]
    image0 = -(weight * np.array([1, 1, 0.51]) * np.log(p[0, happy])).sum() / 3
    full_bce = [-(y * np.log(p[i]) + (1 - y) * np.log(1 - p[i])).mean() for i, y in ((1, fear_au), (2, happy_au))]
    np.testing.assert_allclose(result["au"], (image0 + sum(full_bce)) / 3, rtol=1e-5)
    assert float(result["va"]) == 0.0


def test_multitask_config_roundtrip():
    loss = losses.MultiTaskLoss(lambda_au=2.0, coupling="distribution_matching", dm_variant="normalised",
                                dm_form="literal", coupling_weight={"distribution_matching": 0.1},
                                dm_skip_unlinked=True)
    config = loss.get_config()
    assert all(isinstance(v, (int, float, str, bool, dict)) for v in config.values())
    assert losses.MultiTaskLoss.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="coupling"):
        losses.MultiTaskLoss(coupling="mixup")
    with pytest.raises(ValueError, match="7 basic expressions"):
        losses.MultiTaskLoss(coupling="coannotation", relatedness="du2014_compound")


def _loss_and_gradients(loss_fn, targets, outputs):
    outputs = {k: tf.convert_to_tensor(v) for k, v in outputs.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(outputs.values()))
        result = loss_fn(targets, outputs)
    grads = tape.gradient(result["loss"], list(outputs.values()), unconnected_gradients="zero")
    return result, grads


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_empty_masks_give_zero_terms_and_finite_gradients(table, jit):
    targets, outputs = empty_batch()
    targets = {k: tf.constant(v) for k, v in targets.items()}

    def single_terms(t, o):
        return {
            "expression": losses.expression_loss(t["expr"], o["expression_logits"]),
            "au": losses.au_loss(t["au"], t["au_mask"], o["au_logits"]),
            "va": losses.va_loss(t["va"], t["va_mask"], o["valence_arousal"]),
            "soft_coannotation": losses.soft_coannotation_loss(t["au"], t["au_mask"], o["expression_logits"], table),
            "co_expr": tf.reduce_sum(tf.cast(losses.coannotate_from_aus(t["au"], t["au_mask"], table) + 1,
                                             tf.float32)),
            "co_au": tf.reduce_sum(losses.coannotate_from_expression(t["expr"], table)[1]),
        }

    def with_total(fn):
        def run(t, o):
            terms = fn(t, o)
            return {"loss": tf.add_n(list(terms.values())), **terms}
        return run

    candidates = {"single": with_total(single_terms)}
    for coupling in losses.COUPLINGS:
        candidates[coupling] = losses.MultiTaskLoss(coupling=coupling, relatedness=table)
    for coupling in losses.COUPLINGS:  # `terms` names exactly the keys added beyond eq. 1's
        keys = set(candidates[coupling](targets, outputs))
        assert keys == {"loss", "expression", "au", "va", *candidates[coupling].terms}, coupling
    for name, fn in candidates.items():
        step = tf.function(lambda t, o, fn=fn: _loss_and_gradients(fn, t, o), jit_compile=True) if jit else \
            (lambda t, o, fn=fn: _loss_and_gradients(fn, t, o))
        result, grads = step(targets, outputs)
        for term, value in result.items():
            assert np.isfinite(value.numpy()), (name, term)
            if term not in ("distribution_matching", "loss"):  # DM uses every image, labelled or not
                assert float(value) == 0.0, (name, term, float(value))
        if "distribution_matching" not in name:
            assert float(result["loss"]) == 0.0, name
        for grad in grads:
            assert np.all(np.isfinite(grad.numpy())), name
