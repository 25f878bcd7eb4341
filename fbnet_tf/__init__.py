"""fbnet: FaceBehaviorNet and FATAUVA-Net in TensorFlow/Keras 3.

Importing the package is cheap; TensorFlow loads only when a module that needs it is imported.
"""
__version__ = "0.1.0"

from fbnet_tf.labels import AUS, AU_NAMES, COMPOUND_EXPRESSIONS, EXPRESSIONS  # noqa: F401


def __getattr__(name):
    # `fbnet_tf.Predictor` without importing TensorFlow at package import.
    if name == "Predictor":
        from fbnet_tf.predict import Predictor
        return Predictor
    raise AttributeError(name)
