"""The training precision (`trainer.mixed_precision`): a Keras dtype policy set while a model is built.

    with precision.policy("mixed_bfloat16"):   # layers built here compute in bfloat16, keep float32 weights
        trainer = family.build_trainer(cfg)
    # the previous global policy is back: other models, tests and processes are not affected

Under a mixed policy the conv and FC layers compute in 16 bits while every weight, the optimizer state, the heads
(the VA/AU/expression outputs, `dtype="float32"` in the models) and so the losses and metrics stay float32.
`mixed_float16` needs loss scaling, which Keras's `compile` adds (`keras.optimizers.LossScaleOptimizer` around
`FusedAdam`) for a model built under that policy; it is refused on a machine without a GPU, where float16 has no
fast kernels (the demo model's step took 6.8x as long as in float32 on the development CPU). `mixed_bfloat16` has
float32's range and needs no scaling.
"""
from __future__ import annotations

import contextlib

from fbnet_tf.config import PRECISIONS as POLICIES, ConfigError


class PrecisionUnavailable(ConfigError):
    """A precision this machine cannot train in; the message names the setting and the alternatives."""


def check_available(name: str, gpus: int | None = None) -> None:
    """Raise PrecisionUnavailable for `mixed_float16` without a GPU (`gpus`: the count, default the visible ones)."""
    if name not in POLICIES:
        raise PrecisionUnavailable(f"trainer.mixed_precision={name!r}: expected one of {', '.join(POLICIES)}")
    if name != "mixed_float16":
        return
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    if not gpus:
        raise PrecisionUnavailable("trainer.mixed_precision='mixed_float16' needs a GPU (this machine has none: "
                                   "on a CPU float16 trains several times slower than float32); use float32 or "
                                   "mixed_bfloat16")


@contextlib.contextmanager
def policy(name: str):
    """Set Keras's global dtype policy to `name` for the `with` block, then restore the one before."""
    import keras

    check_available(name)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield keras.mixed_precision.global_policy()
    finally:
        keras.mixed_precision.set_global_policy(previous)
