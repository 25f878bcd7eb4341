"""FATAUVA-Net: rPoly algebra, the paper's branch wiring, layer names, the top-3 V-A decoding on hand-worked cases,
the losses against numpy, the inference outputs, and freezing per stage."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from fbnet_tf import config  # noqa: E402
from fbnet_tf.models import fatauvanet as fv  # noqa: E402

S = 32


def tiny(*overrides):
    return config.override(config.experiment("fatauvanet"), ["model.preset=fatauva_tiny", *overrides])


def images(n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, S, S, 3)).astype(np.float32)


def numpy_of(x):
    return keras.ops.convert_to_numpy(x)


# ---------------------------------------------------------------- rPoly blocks

@pytest.mark.parametrize("order", [2, 3])
def test_rpoly_with_shared_f_is_the_polynomial_of_one_residual(order):
    block = fv.RPolyBlock(order, filters=3, shared=True, name="block")
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 3)).astype(np.float32)
    y = numpy_of(block(x))
    assert len(block.expand) == len(block.project) == 1  # one F
    f = lambda t: block.residual(t)  # noqa: E731
    expected = x + f(x) + f(f(x)) + (f(f(f(x))) if order == 3 else 0)
    np.testing.assert_allclose(y, numpy_of(expected), rtol=1e-5, atol=1e-5)
    # F itself, by hand: scale * (relu(x * K3 + b3) * K1 + b1)
    k3, b3 = [numpy_of(w) for w in block.expand[0].weights]
    k1, b1 = [numpy_of(w) for w in block.project[0].weights]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((2, 5, 5, 3), np.float32)
    for i in range(5):
        for j in range(5):
            conv[:, i, j] = np.einsum("nhwc,hwco->no", padded[:, i:i + 3, j:j + 3], k3)
    hidden = np.maximum(conv + b3, 0)
    by_hand = 0.3 * (np.einsum("nhwc,co->nhwo", hidden, k1[0, 0]) + b1)
    np.testing.assert_allclose(numpy_of(f(x)), by_hand, rtol=1e-4, atol=1e-5)


def test_rpoly_unshared_gives_each_power_its_own_residual():
    block = fv.RPolyBlock(3, filters=2, shared=False)
    x = np.random.default_rng(2).normal(size=(1, 4, 4, 2)).astype(np.float32)
    y = numpy_of(block(x))
    assert len(block.expand) == 3
    f1 = numpy_of(block.residual(x, 1))
    f2 = numpy_of(block.residual(f1, 2))
    f3 = numpy_of(block.residual(f2, 3))
    np.testing.assert_allclose(y, x + f1 + f2 + f3, rtol=1e-5, atol=1e-5)
    assert not np.allclose(numpy_of(block.residual(x, 1)), numpy_of(block.residual(x, 2)))


# ---------------------------------------------------------------- the network

def test_layer_names_outputs_and_paper_layer_counts():
    net = fv.build_network(tiny())
    names = [layer.name for layer in net.layers]
    polys = {n: net.get_layer(n) for n in names if isinstance(net.get_layer(n), fv.RPolyBlock)}
    core = [n for n in polys if n.startswith("core_")]
    assert len(core) == 8 and all(polys[n].order == 2 for n in core)
    for branch in fv.ATTRIBUTE_BRANCHES:
        blocks = [n for n in polys if n.startswith(f"attribute_{branch}_")]
        assert len(blocks) == 2 and all(polys[n].order == 2 for n in blocks)
    for branch in fv.AU_BRANCHES:
        blocks = [n for n in polys if n.startswith(f"au_{branch.lower()}_")]
        assert len(blocks) == 2 and all(polys[n].order == 3 for n in blocks)
    for dim in ("valence", "arousal"):
        assert len([n for n in polys if n.startswith(f"va_{dim}_")]) == 2
        assert [f"va_{dim}_fc{k}" in names for k in (1, 2, 3)] == [True] * 3
    # every layer belongs to one part
    assert all(n == "image" or n.startswith(("core_", "attribute_", "au_", "va_")) or n in
               ("attribute_logits", "au_logits", "va_values", "va_features") for n in names)
    # three FC layers per label: 10 attributes, 14 AUs (Table 3 incl. AU45)
    assert len([n for n in names if n.startswith("attribute_") and n.endswith("_fc3")]) == 10
    assert len([n for n in names if n.startswith("au_") and n.endswith("_fc3")]) == 14
    assert fv.AUS == (1, 2, 4, 6, 7, 10, 12, 15, 17, 23, 24, 25, 26, 45)
    out = net(images(3))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "attribute_logits": (3, 10), "au_logits": (3, 14), "va_values": (3, 2), "va_features": (3, 2, 8)}


def _gradient_norms(net, output, column, layer_names):
    x = images(2)
    variables = {n: net.get_layer(n).trainable_weights for n in layer_names}
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(net(x, training=False)[output][..., column])
    grads = tape.gradient(value, [w for ws in variables.values() for w in ws])
    norms, i = {}, 0
    for n, ws in variables.items():
        norms[n] = sum(0.0 if g is None else float(np.abs(numpy_of(g)).sum()) for g in grads[i:i + len(ws)])
        i += len(ws)
    return norms


def test_each_au_head_reaches_only_its_own_part():
    keras.utils.set_random_seed(0)  # wide enough that no path is dead at init (ReLUs): the > 0 checks hold
    net = fv.build_network(tiny("model.fatauva.filters=4", "model.fc_units=32"))
    parts = [f"attribute_{b}_block{k}" for b in fv.ATTRIBUTE_BRANCHES for k in (1, 2)]
    au1 = _gradient_norms(net, "au_logits", fv.AUS.index(1), parts + ["core_block8"])
    assert au1["attribute_mouth_block1"] == au1["attribute_mouth_block2"] == 0.0  # exactly zero
    assert au1["attribute_eyes_block2"] == au1["attribute_face_block2"] == 0.0
    assert au1["attribute_eyebrows_block2"] > 0 and au1["core_block8"] > 0
    au25 = _gradient_norms(net, "au_logits", fv.AUS.index(25), parts)
    assert au25["attribute_mouth_block2"] > 0 and au25["attribute_eyebrows_block2"] == 0.0
    # Con_Aro has no Lip_c / Mouth_au / Lip_u: arousal reaches the mouth through Chin only
    aro = _gradient_norms(net, "va_values", 1, ["au_lip_c_block2", "au_mouth_au_block2", "au_lip_u_block2",
                                                "au_chin_block2", "au_au1_block2"])
    assert aro["au_lip_c_block2"] == aro["au_mouth_au_block2"] == aro["au_lip_u_block2"] == 0.0
    assert aro["au_chin_block2"] > 0 and aro["au_au1_block2"] > 0
    val = _gradient_norms(net, "va_values", 0, ["au_au1_block2", "au_au2_block2", "au_chin_block2",
                                                "au_lip_c_block2", "au_au6_7_block2"])
    assert val["au_au1_block2"] == val["au_au2_block2"] == val["au_chin_block2"] == 0.0
    assert val["au_lip_c_block2"] > 0 and val["au_au6_7_block2"] > 0
    # an attribute head reads its own branch only
    smile = _gradient_norms(net, "attribute_logits", fv.ATTRIBUTES.index("Smiling"), parts)
    assert smile["attribute_mouth_block2"] > 0 and smile["attribute_eyes_block2"] == 0.0


def test_fatva_has_no_au_layer_and_reads_the_attribute_branches():
    net = fv.build_network(tiny("model.fatauva.fatva=true", "model.fatauva.va_head=class"))
    assert not [layer for layer in net.layers if layer.name.startswith("au_")]
    assert [s[0] for s in net.stages()] == ["attribute", "va"]
    out = net(images(2))
    assert sorted(out) == ["attribute_logits", "va_logits"] and tuple(out["va_logits"].shape) == (2, 2, 11)
    model = fv.inference_model(net)
    assert sorted(model(images(2))) == ["attributes", "valence_arousal"]
    assert net.label_names() == {"valence_arousal": ["valence", "arousal"], "attributes": list(fv.ATTRIBUTES)}


# ---------------------------------------------------------------- V-A decoding

def _probs(pairs):
    p = np.full(11, 0.0, np.float32)
    for value, prob in pairs.items():
        p[value + 5] = prob
    rest = (1 - p.sum()) / (11 - len(pairs))
    p[p == 0] = rest
    return p


def test_top3_decoding_hand_worked_cases():
    cases = [
        # consecutive 1,2,3 (in order 2,1,3): (0.5*2 + 0.2*1 + 0.1*3) / 0.8 = 1.5/0.8 = 1.875 -> 0.375
        (_probs({2: 0.5, 1: 0.2, 3: 0.1}), 1.875 / 5),
        # consecutive -5,-4,-3 (1,3,2 order as the paper's example): (-4*.4 - 5*.3 - 3*.2)/.9 = -3.7/.9
        (_probs({-4: 0.4, -5: 0.3, -3: 0.2}), (-3.7 / 0.9) / 5),
        # 0, 2, 3 are not consecutive: the top-1 class, 0
        (_probs({0: 0.5, 2: 0.3, 3: 0.1}), 0.0),
        # 5, 4, 2 not consecutive: top-1 = 5 -> 1.0
        (_probs({5: 0.6, 4: 0.2, 2: 0.15}), 1.0),
    ]
    probs = np.stack([c[0] for c in cases])
    expected = np.array([c[1] for c in cases], np.float32)
    np.testing.assert_allclose(numpy_of(fv.decode_va_top3(probs)), expected, rtol=1e-5, atol=1e-6)
    # any leading shape: [2, 2, 11] -> [2, 2]
    np.testing.assert_allclose(numpy_of(fv.decode_va_top3(probs.reshape(2, 2, 11))), expected.reshape(2, 2),
                               rtol=1e-5, atol=1e-6)


def test_class_head_inference_decodes_the_softmax():
    net = fv.build_network(tiny("model.fatauva.va_head=class"))
    model = fv.inference_model(net)
    x = images(3)
    raw = {k: numpy_of(v) for k, v in net(x).items()}
    out = {k: numpy_of(v) for k, v in model(x).items()}
    e = np.exp(raw["va_logits"] - raw["va_logits"].max(-1, keepdims=True))
    np.testing.assert_allclose(out["valence_arousal"], numpy_of(fv.decode_va_top3(e / e.sum(-1, keepdims=True))),
                               atol=1e-5)
    np.testing.assert_allclose(out["action_units"], 1 / (1 + np.exp(-raw["au_logits"])), rtol=1e-5, atol=1e-6)
    assert net.label_names()["action_units"][-1] == "AU45"


# ---------------------------------------------------------------- losses

def test_center_loss_and_centre_update_against_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 2, 2, 5, 0, 10], np.int32)
    c = rng.normal(size=(11, 4)).astype(np.float32)
    expected = 0.5 * ((x - c[y]) ** 2).sum(axis=1)
    np.testing.assert_allclose(numpy_of(fv.center_loss(x, y, c)), expected, rtol=1e-5)
    w = np.array([1, 1, 0, 1, 1, 1], np.float32)  # the third sample has no label
    new = c.copy()
    for j in range(11):
        members = (y == j) & (w > 0)
        delta = (c[j] - x[members]).sum(axis=0) / (1 + members.sum())
        new[j] = c[j] - 0.5 * delta
    np.testing.assert_allclose(numpy_of(fv.centre_update(x, y, c, w, 0.5)), new, rtol=1e-5, atol=1e-6)


def test_smooth_l1_follows_equation_2_and_quantisation():
    d = np.array([-3.0, -0.5, 0.0, 0.4, 2.0], np.float32)
    t = 1.0
    expected = np.where(np.abs(d) < t, 0.5 * d ** 2, np.abs(d) - t + 0.5 * t ** 2)
    np.testing.assert_allclose(numpy_of(fv.smooth_l1(d, np.zeros_like(d), t)), expected)
    np.testing.assert_allclose(numpy_of(fv.smooth_l1(d, np.zeros_like(d), 0.5)),
                               np.where(np.abs(d) < 0.5, 0.5 * d ** 2, np.abs(d) - 0.5 + 0.125))
    np.testing.assert_array_equal(numpy_of(fv.quantise_va(np.array([-1.0, -0.31, 0.0, 0.29, 0.95, 1.0]))),
                                  [0, 3, 5, 6, 10, 10])


def stage_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return images(n, seed), {
        "attributes": (rng.random((n, 10)) > 0.5).astype(np.float32), "attributes_mask": np.ones((n, 10), np.float32),
        "au": (rng.random((n, 14)) > 0.7).astype(np.float32), "au_mask": np.ones((n, 14), np.float32),
        "va": rng.uniform(-1, 1, (n, 2)).astype(np.float32), "va_mask": np.ones(n, np.float32)}


def test_regression_stage_loss_is_smooth_l1_plus_weighted_center_loss():
    cfg = tiny("model.fatauva.center_weight=0.25")
    trainer = fv.build_trainer(cfg, stage="va")
    x, targets = stage_batch()
    targets["va_mask"][:3] = 0.0
    out = trainer.network(x)
    terms = {k: float(numpy_of(v)) for k, v in trainer.loss_terms(targets, out).items()}
    values, features = numpy_of(out["va_values"]), numpy_of(out["va_features"])
    m = targets["va_mask"] > 0
    d = np.abs(values - 5 * targets["va"])[m]
    np.testing.assert_allclose(terms["va"], np.where(d < 1, 0.5 * d ** 2, d - 0.5).mean(), rtol=1e-5)
    # centres start at 0: the center loss is 0.5 |x|^2 over the labelled samples
    np.testing.assert_allclose(terms["center"], (0.5 * (features[m] ** 2).sum(-1)).mean(), rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], terms["va"] + 0.25 * terms["center"], rtol=1e-5)


@pytest.mark.parametrize("stage,frozen,trained", [
    ("au", ("core_", "attribute_", "va_"), ("au_",)),
    ("va", ("core_", "attribute_", "au_"), ("va_",)),
    ("attribute", ("au_", "va_"), ("core_", "attribute_")),
])
def test_a_stage_trains_only_its_layers(stage, frozen, trained):
    cfg = tiny()
    trainer = fv.build_trainer(cfg, stage=stage)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    net = trainer.network
    before = {w.path: numpy_of(w).copy() for w in net.weights}
    x, targets = stage_batch(8)
    trainer.fit(x, targets, batch_size=4, epochs=2, verbose=0)
    changed = {path for path, value in before.items()
               if not np.array_equal(value, numpy_of(next(w for w in net.weights if w.path == path)))}
    for path in before:
        if path.startswith(frozen):
            assert path not in changed, f"{stage} changed frozen {path}"
    assert any(p.startswith(trained) for p in changed)


def test_family_presets_and_config_errors():
    from fbnet_tf.models import registry

    cfg = config.experiment("fatauvanet_demo")
    assert cfg.model.family == "fatauvanet" and cfg.model.fatauva.filters == 8 and cfg.model.image_size == 48
    assert cfg.data.all_record_dirs() == ["demo_data/records/celeba", "demo_data/records/bp4d",
                                          "demo_data/records/semaine", "demo_data/records/affwild"]
    assert registry.family(cfg) is fv and fv.stage_names(cfg) == ["attribute", "au", "va"]
    assert fv.stage_names(config.experiment("fatva")) == ["attribute", "va"]
    # a FaceBehaviorNet preset brings its family back
    assert config.override(cfg, ["model.preset=tiny"]).model.family == "facebehaviornet"
    assert registry.family(config.experiment("no_coupling")).stage_names(None) == ["joint"]
    with pytest.raises(ValueError, match="model.family='resnet'"):
        config.override(cfg, ["model.family=resnet"])
    with pytest.raises(ValueError, match="model.fatauva.va_head='ordinal'"):
        config.override(cfg, ["model.fatauva.va_head=ordinal"])
