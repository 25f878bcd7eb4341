"""fbnet: FaceBehaviorNet in TensorFlow/Keras 3: one network for 7 basic expressions, 17 action units and
valence/arousal, trained jointly on many partially annotated face databases (Kollias et al., "Face Behavior a la
carte"), and FATAUVA-Net (Chang et al. 2017: attributes -> AUs -> valence/arousal, trained in stages), with TFRecord
builders, evaluation per database, zero/few-shot compound expressions and export to TF Serving / TFLite / ONNX.

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
