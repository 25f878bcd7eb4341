"""Models: the VGG-FACE backbone (+ published-weight loader), FaceBehaviorNet, its presets and baselines, and
FATAUVA-Net; `registry` maps `model.family` to a family's build functions.

Importing this package is cheap (presets are plain dicts); TensorFlow loads on first use of a model name.

    from fbnet_tf import config, models
    model = models.build_inference_model(config.experiment("no_coupling"))   # image -> named probabilities
"""
from fbnet_tf.models.baselines import SINGLE_TASK_EXPERIMENTS, single_task_experiment  # noqa: F401
from fbnet_tf.models.presets import EXPERIMENTS, MODEL_PRESETS  # noqa: F401

_LAZY = {
    "VGGFaceBackbone": "vggface", "FacePreprocessing": "vggface", "load_vggface_weights": "vggface",
    "FaceBehaviorNet": "facebehaviornet", "FaceBehaviorNetTrainer": "facebehaviornet",
    "ClipToUnitRange": "facebehaviornet", "inference_model": "facebehaviornet", "network_of": "facebehaviornet",
    "build_network": "facebehaviornet", "build_inference_model": "facebehaviornet",
    "build_trainer": "facebehaviornet",
    "FatauvaNet": "fatauvanet", "FatauvaNetTrainer": "fatauvanet", "RPolyBlock": "fatauvanet",
    "decode_va_top3": "fatauvanet", "CompoundClassifier": "compound_classifier",
    "family": "registry", "family_of": "registry", "label_names": "registry",
}

__all__ = sorted([*_LAZY, "EXPERIMENTS", "MODEL_PRESETS", "SINGLE_TASK_EXPERIMENTS", "single_task_experiment"])


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"fbnet_tf.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fbnet_tf.models' has no attribute {name!r}")


def register_serializables() -> None:
    """Import the modules whose Keras classes a saved `model.keras` refers to."""
    import fbnet_tf.models.compound_classifier  # noqa: F401
    import fbnet_tf.models.facebehaviornet  # noqa: F401
    import fbnet_tf.models.fatauvanet  # noqa: F401
    import fbnet_tf.models.vggface  # noqa: F401
