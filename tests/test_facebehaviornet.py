"""FaceBehaviorNet: heads and names, the inference model, masks gating each loss, the logged metrics against numpy,
saving, single-task baselines, and (slow) the paper-size model."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from fbnet_tf import config  # noqa: E402
from fbnet_tf.losses import MultiTaskLoss  # noqa: E402
from fbnet_tf.models import facebehaviornet as fbn  # noqa: E402
from fbnet_tf.models.vggface import VGGFaceBackbone  # noqa: E402

S = 32


def tiny_config(*overrides):
    return config.override(config.experiment("no_coupling"), ["model.preset=tiny", *overrides])


def batch(n=12, seed=0, va=True, expr=True, au=True):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, S, S, 3)).astype(np.float32)
    targets = {
        "expr": rng.integers(0, 7, n).astype(np.int32) if expr else np.full(n, -1, np.int32),
        "va": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "va_mask": np.full(n, 1.0 if va else 0.0, np.float32),
        "au": (rng.random((n, 17)) > 0.6).astype(np.float32),
        "au_mask": np.full((n, 17), 1.0 if au else 0.0, np.float32),
    }
    return images, targets


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_heads_names_and_shapes():
    net = fbn.build_network(tiny_config())
    assert [layer.name for layer in net.layers[:7]] == ["image", "vggface", "flatten", "fc6", "dropout6", "fc7",
                                                         "dropout7"]
    assert {layer.name for layer in net.layers[7:]} == {"valence_arousal", "expression_logits", "au_logits"}
    assert net.get_layer("fc6").units == net.get_layer("fc7").units == 16
    assert net.get_layer("dropout6").rate == net.get_layer("dropout7").rate == 0.5
    out = net(np.zeros((3, S, S, 3), np.float32))
    assert {k: tuple(v.shape) for k, v in out.items()} == \
        {"valence_arousal": (3, 2), "expression_logits": (3, 7), "au_logits": (3, 17)}
    # the output layer is linear (no activation): the paper's logits and unbounded VA
    for name in ("valence_arousal", "expression_logits", "au_logits"):
        assert net.get_layer(name).activation is keras.activations.linear


def test_inference_model_applies_softmax_sigmoid_and_clip_to_the_same_weights():
    net = fbn.build_network(tiny_config())
    # make VA leave [-1, 1] so that the clip is visible
    kernel, bias = net.get_layer("valence_arousal").get_weights()
    net.get_layer("valence_arousal").set_weights([kernel * 50, bias + np.array([3.0, -0.2], np.float32)])
    model = fbn.inference_model(net)
    assert model.inputs[0].name == "image"
    images, _ = batch(6)
    raw = {k: keras.ops.convert_to_numpy(v) for k, v in net(images, training=False).items()}
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(images, training=False).items()}
    assert sorted(out) == ["action_units", "expression", "valence_arousal"]
    np.testing.assert_allclose(out["expression"], softmax(raw["expression_logits"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["action_units"], 1 / (1 + np.exp(-raw["au_logits"])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["valence_arousal"], np.clip(raw["valence_arousal"], -1, 1), atol=1e-6)
    assert (np.abs(raw["valence_arousal"][:, 0]) > 1).any()


def _head_gradients(net, loss_fn, images, targets, term):
    kernels = {n: net.get_layer(n).kernel for n in ("valence_arousal", "expression_logits", "au_logits")}
    trainer = fbn.FaceBehaviorNetTrainer(net, loss_fn)
    with tf.GradientTape() as tape:
        terms = trainer.loss_terms(targets, net(images, training=False))
    grads = tape.gradient(terms[term], list(kernels.values()))
    return {n: 0.0 if g is None else float(np.abs(keras.ops.convert_to_numpy(g)).max())
            for n, g in zip(kernels, grads)}, terms


def test_masks_gate_each_loss():
    net = fbn.build_network(tiny_config())
    loss_fn = MultiTaskLoss(coupling="none")
    images, au_only = batch(12, va=False, expr=False)
    grads, terms = _head_gradients(net, loss_fn, images, au_only, "expression")
    assert float(terms["expression"]) == 0.0 and float(terms["va"]) == 0.0 and float(terms["au"]) > 0
    assert grads["expression_logits"] == 0.0  # L_Emo leaves the expression head untouched without expr labels
    grads, _ = _head_gradients(net, loss_fn, images, au_only, "loss")
    assert grads["expression_logits"] == 0.0 and grads["valence_arousal"] == 0.0 and grads["au_logits"] > 0
    images, expr_only = batch(12, va=False, au=False)
    grads, _ = _head_gradients(net, loss_fn, images, expr_only, "loss")
    assert grads["au_logits"] == 0.0 and grads["valence_arousal"] == 0.0 and grads["expression_logits"] > 0
    # distribution matching couples the heads: the same AU-only batch now reaches the expression head
    grads, _ = _head_gradients(net, MultiTaskLoss(coupling="distribution_matching"), images, au_only, "loss")
    assert grads["expression_logits"] > 0


def test_logged_terms_and_metrics_equal_independent_computations():
    cfg = tiny_config("loss.coupling=soft_coannotation+distribution_matching")
    trainer = fbn.build_trainer(cfg)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
    images, targets = batch(16, seed=3)
    targets["expr"][:5] = -1  # some images without an expression label
    targets["va_mask"][10:] = 0
    targets["au_mask"][:, 3] = 0  # one AU never annotated
    logs = trainer.evaluate(images, targets, batch_size=16, return_dict=True, verbose=0)
    assert set(logs) == {"loss", "loss_expression", "loss_au", "loss_va", "loss_soft_coannotation",
                         "loss_distribution_matching", "ccc_valence", "ccc_arousal", "expr_accuracy", "au_f1"}
    raw = {k: keras.ops.convert_to_numpy(v) for k, v in trainer.network(images, training=False).items()}
    labelled = targets["expr"] >= 0
    p = softmax(raw["expression_logits"])
    ce = -np.log(p[labelled, targets["expr"][labelled]]).mean()
    np.testing.assert_allclose(logs["loss_expression"], ce, rtol=1e-4)
    accuracy = (p[labelled].argmax(1) == targets["expr"][labelled]).mean()
    np.testing.assert_allclose(logs["expr_accuracy"], accuracy, atol=1e-6)
    va_rows = targets["va_mask"] > 0
    for i, name in enumerate(("ccc_valence", "ccc_arousal")):
        t, y = targets["va"][va_rows, i].astype(np.float64), raw["valence_arousal"][va_rows, i].astype(np.float64)
        ccc = 2 * np.mean((t - t.mean()) * (y - y.mean())) / (t.var() + y.var() + (t.mean() - y.mean()) ** 2)
        np.testing.assert_allclose(logs[name], ccc, rtol=1e-3, atol=1e-5)
    from sklearn.metrics import f1_score
    au_pred = (1 / (1 + np.exp(-raw["au_logits"]))) >= 0.5
    f1 = np.mean([f1_score(targets["au"][:, k], au_pred[:, k], zero_division=0) for k in range(17) if k != 3])
    np.testing.assert_allclose(logs["au_f1"], f1, atol=1e-5)
    total = logs["loss_expression"] + logs["loss_au"] + logs["loss_va"] + logs["loss_soft_coannotation"] + \
        logs["loss_distribution_matching"]
    np.testing.assert_allclose(logs["loss"], total, rtol=1e-5)


def test_saved_inference_model_reloads_with_identical_outputs(tmp_path):
    from fbnet_tf.runs import load_inference_model

    model = fbn.build_inference_model(tiny_config())
    model.save(tmp_path / "model.keras")
    clone = load_inference_model(tmp_path / "model.keras")
    images, _ = batch(4)
    for key, value in model(images).items():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(images)[key]),
                                   keras.ops.convert_to_numpy(value), atol=1e-6)
    assert fbn.network_of(clone).backbone.width == 1 / 32


@pytest.mark.parametrize("task,head,output", [("va", "valence_arousal", "valence_arousal"),
                                              ("expr", "expression_logits", "expression"),
                                              ("au", "au_logits", "action_units")])
def test_single_task_baselines_are_the_same_machinery(task, head, output):
    cfg = config.override(config.experiment(f"single_task_{task}"), ["model.preset=tiny"])
    assert cfg.model.tasks == [task] and cfg.loss.coupling == "none"
    trainer = fbn.build_trainer(cfg)
    assert [l.name for l in trainer.network.layers][-1] == head
    assert list(fbn.inference_model(trainer.network).output) == [output]
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)  # eager: no tracing, tiny model
    images, targets = batch(8)
    logs = trainer.train_on_batch(images, targets, return_dict=True)
    term = {"va": "loss_va", "expr": "loss_expression", "au": "loss_au"}[task]
    assert [k for k in logs if k.startswith("loss_")] == [term]
    np.testing.assert_allclose(logs["loss"], logs[term], rtol=1e-5)  # the other tasks' labels are masked out
    with pytest.raises(ValueError, match="coupling"):
        config.override(cfg, ["loss.coupling=distribution_matching"])


def test_backbone_width_and_size_come_from_the_preset():
    small = fbn.build_network(config.with_model_preset(config.experiment("no_coupling"), "small"))
    assert isinstance(small.backbone, VGGFaceBackbone)
    assert small.input_shape == (None, 64, 64, 3)
    assert small.backbone.get_layer("conv1_1").filters == 8 and small.backbone.get_layer("conv5_3").filters == 64
    assert small.get_layer("fc6").units == 256


@pytest.mark.slow
def test_paper_preset_builds_trains_one_step_and_predicts():
    cfg = config.experiment("soft_coannotation_distr_matching_du2014")
    trainer = fbn.build_trainer(cfg)
    assert trainer.network.input_shape == (None, 96, 96, 3)
    assert trainer.network.get_layer("fc6").units == 4096
    assert 50.0e6 < trainer.network.count_params() < 51.0e6  # 50.5 M (stack notes)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4))
    rng = np.random.default_rng(0)
    n = 4
    images = rng.uniform(0, 255, (n, 96, 96, 3)).astype(np.float32)
    targets = {"expr": np.array([0, 4, -1, -1], np.int32), "va": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
               "va_mask": np.array([0, 0, 1, 1], np.float32), "au": (rng.random((n, 17)) > 0.5).astype(np.float32),
               "au_mask": np.ones((n, 17), np.float32)}
    before = trainer.network.get_layer("fc7").get_weights()[0].copy()
    logs = trainer.train_on_batch(images, targets, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert not np.array_equal(before, trainer.network.get_layer("fc7").get_weights()[0])
    out = fbn.inference_model(trainer.network).predict(images, verbose=0)
    assert out["expression"].shape == (n, 7) and out["action_units"].shape == (n, 17)
    np.testing.assert_allclose(out["expression"].sum(axis=1), 1.0, rtol=1e-5)
