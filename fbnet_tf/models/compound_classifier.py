"""A compound-expression classifier on a trained FaceBehaviorNet (paper 4.5, few-shot): the network's features
after fc7 (and its dropout) with a softmax head over a class set. What `python -m fbnet_tf.compound fine-tune`
trains and saves; it names its output's columns like a family's network does, so export and predict handle it.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from fbnet_tf.models.facebehaviornet import network_of
from fbnet_tf.models.vggface import INITIALIZER

OUTPUT = "compound"
FEATURES = "facebehaviornet_features"


def features_of(model) -> keras.Model:
    """Image -> FaceBehaviorNet's fc7 features (after dropout7), sharing the weights of the network in `model`."""
    network = network_of(model)
    return keras.Model(network.input, network.get_layer("dropout7").output, name=FEATURES)


@keras.saving.register_keras_serializable(package="fbnet")
class CompoundClassifier(keras.Model):
    """Input "image" (as the base network's) -> {"compound": softmax [N, len(class_names)]}.

    Args:
        features: image -> feature vector (`features_of(trained model)`); freeze it for head-only fine-tuning.
        class_names: the classes of the head, in output order (`fbnet_tf.compound.class_set`).
    """

    def __init__(self, features: keras.Model, class_names: Sequence[str], **kwargs):
        class_names = [str(name) for name in class_names]
        if not class_names:
            raise ValueError("CompoundClassifier needs at least one class name")

        # === Layers ===
        images = keras.Input(shape=features.input_shape[1:], name="image")
        probabilities = layers.Dense(len(class_names), activation="softmax", kernel_initializer=INITIALIZER,
                                     name=OUTPUT)(features(images))
        frozen = not features.trainable  # head-only fine-tuning
        super().__init__(inputs=images, outputs={OUTPUT: probabilities},
                         name=kwargs.pop("name", "facebehaviornet_compound"), **kwargs)

        # === Config ===
        self.features = features
        # A model deserialized with trainable=False has the flag on itself, not on its layers, and setting the
        # same value again is a no-op: flip it so that it reaches every layer (a loaded head-only run stays frozen).
        self.features.trainable = frozen
        self.features.trainable = not frozen
        self.class_names = tuple(class_names)

    def label_names(self) -> dict[str, list[str]]:
        return {OUTPUT: list(self.class_names)}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "features": keras.saving.serialize_keras_object(self.features),
                "class_names": list(self.class_names)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["features"] = keras.saving.deserialize_keras_object(config["features"])
        return cls(**config)
