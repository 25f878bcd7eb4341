"""`trainer.mixed_precision`: the policy is applied while the model is built and restored after, the outputs and the
losses stay float32, a tiny run trains under mixed_bfloat16, and mixed_float16 is loss-scaled (and refused on CPU)."""
import numpy as np
import pytest

from fbnet_tf import config


def test_config_takes_the_three_policies_and_refuses_others():
    base = config.experiment("demo")
    assert base.trainer.mixed_precision == "float32"
    for name in config.PRECISIONS:
        assert config.override(base, [f"trainer.mixed_precision={name}"]).trainer.mixed_precision == name
    with pytest.raises(config.ConfigError, match=r"trainer\.mixed_precision='bfloat16'.*'mixed_bfloat16'"):
        config.override(base, ["trainer.mixed_precision=bfloat16"])


def test_policy_is_applied_in_the_block_and_restored_after_it_even_on_error():
    import keras

    from fbnet_tf import precision

    before = keras.mixed_precision.global_policy().name
    with precision.policy("mixed_bfloat16") as policy:
        assert policy.name == keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert keras.layers.Dense(2).compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == before == "float32"
    with pytest.raises(RuntimeError), precision.policy("mixed_bfloat16"):
        raise RuntimeError("inside")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_mixed_float16_is_refused_without_a_gpu_before_the_run_dir_exists(tmp_path, monkeypatch):
    from fbnet_tf import precision, train

    precision.check_available("mixed_float16", gpus=1)  # a GPU: fine
    with pytest.raises(precision.PrecisionUnavailable, match="needs a GPU.*mixed_bfloat16"):
        precision.check_available("mixed_float16", gpus=0)
    if not __import__("tensorflow").config.list_physical_devices("GPU"):
        cfg = config.override(config.experiment("no_coupling"),
                              ["model.preset=tiny", "trainer.mixed_precision=mixed_float16"])
        with pytest.raises(config.ConfigError, match="needs a GPU"):
            train.train(cfg, tmp_path / "run", train_data=object(), steps_per_epoch=1)
        assert not (tmp_path / "run").exists()
        monkeypatch.chdir(tmp_path)
        code = train.main(["--experiment", "demo", "--set", "trainer.mixed_precision=mixed_float16",
                           "--run-dir", str(tmp_path / "demo")])  # refused before the demo renders its world
        assert code == 2 and not (tmp_path / "demo").exists() and not (tmp_path / "demo_data").exists()


def test_outputs_are_float32_under_mixed_bfloat16_for_both_families():
    import keras

    from fbnet_tf import precision
    from fbnet_tf.models import facebehaviornet as fbn
    from fbnet_tf.models import fatauvanet

    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    with precision.policy("mixed_bfloat16"):
        network = fbn.build_network(config.with_model_preset(config.ExperimentConfig(), "tiny").model)
        fatauva = fatauvanet.build_network(config.with_model_preset(config.ExperimentConfig(), "fatauva_tiny").model)
    assert network.get_layer("fc7").compute_dtype == "bfloat16"
    assert {w.dtype for w in network.weights} == {"float32"}  # weights (and so checkpoints) stay float32
    for model in (network, fbn.inference_model(network), fatauva, fatauvanet.inference_model(fatauva)):
        size = model.input_shape[1]
        outputs = model(images[:, :size, :size], training=False)
        assert {name: v.dtype.name for name, v in outputs.items()} == {name: "float32" for name in outputs}, model.name
    assert keras.mixed_precision.global_policy().name == "float32"


def test_a_tiny_run_trains_under_mixed_bfloat16_and_saves_a_float32_model(tmp_path):
    import keras
    import tensorflow as tf

    from fbnet_tf import runs, train
    from test_train import random_batches, tiny

    data, _ = random_batches()
    cfg = tiny("trainer.epochs=4", "trainer.mixed_precision=mixed_bfloat16")
    trainer, history = train.train(cfg, tmp_path / "run", train_data=data, steps_per_epoch=2)
    assert keras.mixed_precision.global_policy().name == "float32"  # not leaked to the rest of the process
    assert trainer.network.get_layer("fc6").compute_dtype == "bfloat16"
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    for term in ("loss_expression", "loss_au", "loss_va"):
        assert np.all(np.isfinite(history.history[term])), term
    # The saved model is float32 (rebuilt under the loading process's policy) and agrees with the bf16 network
    # to bfloat16's precision (8 significant bits).
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    model = runs.load_inference_model(tmp_path / "run")
    assert model.get_layer("facebehaviornet").get_layer("fc6").compute_dtype == "float32"
    saved = model(images)["expression"].numpy()
    trained = tf.nn.softmax(trainer.network(images)["expression_logits"]).numpy()
    assert saved.dtype == np.float32
    np.testing.assert_allclose(saved, trained, atol=0.03)


def test_mixed_float16_scales_the_loss_around_fused_adam():
    import keras

    from fbnet_tf.models import facebehaviornet as fbn
    from fbnet_tf.optimizers import FusedAdam
    from test_train import random_batches, tiny

    _, targets = random_batches(n=6)
    images = np.random.default_rng(2).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    keras.mixed_precision.set_global_policy("mixed_float16")  # precision.policy refuses it on a CPU-only machine
    try:
        trainer = fbn.build_trainer(tiny())
        trainer.compile(optimizer=FusedAdam(1e-2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(trainer.optimizer.inner_optimizer, FusedAdam)
    before = [w.numpy().copy() for w in trainer.network.trainable_weights]
    logs = trainer.train_on_batch(images, targets, return_dict=True)
    assert np.isfinite(logs["loss"]) and float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** 15
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, trainer.network.trainable_weights)]
    assert all(changed)  # every weight took a finite (unscaled) Adam step
    assert {w.dtype for w in trainer.network.weights} == {"float32"}
