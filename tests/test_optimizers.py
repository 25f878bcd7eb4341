"""FusedAdam takes exactly Adam's steps: against a numpy Adam written from Kingma & Ba (with Keras's epsilon
placement) and against keras.optimizers.Adam, also compiled under a distribution strategy and with XLA."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf.optimizers import FusedAdam


def numpy_adam(params, gradients, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(gradients, start=1):
        step = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        for i, g in enumerate(grads):
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
            params[i] -= step * m[i] / (np.sqrt(v[i]) + epsilon)
    return params


def run(optimizer, params, gradients):
    variables = [keras.Variable(p) for p in params]
    for grads in gradients:
        optimizer.apply([tf.constant(g) for g in grads], variables)
    return [v.numpy() for v in variables]


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    gradients = [[rng.normal(size=p.shape).astype(np.float32) for p in params] for _ in range(6)]
    return params, gradients


def test_fused_adam_matches_numpy_and_keras_adam(problem):
    params, gradients = problem
    fused = run(FusedAdam(learning_rate=0.05), params, gradients)
    for got, want in zip(fused, numpy_adam(params, gradients, lr=0.05)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(fused, run(keras.optimizers.Adam(learning_rate=0.05), params, gradients)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The weights moved: a step of about lr per update for each entry.
    assert np.abs(fused[0] - params[0]).mean() > 0.1


def test_fused_adam_amsgrad_takes_the_keras_path(problem):
    params, gradients = problem
    for got, want in zip(run(FusedAdam(0.05, amsgrad=True), params, gradients),
                         run(keras.optimizers.Adam(0.05, amsgrad=True), params, gradients)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_fused_adam_in_fit_under_a_strategy_with_xla():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.normal(size=(64, 2)).astype(np.float32)
    weights = {}
    for name, make in (("keras", keras.optimizers.Adam), ("fused", FusedAdam)):
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            model.compile(make(1e-2), "mse", jit_compile=True)
        model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
        weights[name] = model.get_weights()
    for got, want in zip(weights["fused"], weights["keras"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
