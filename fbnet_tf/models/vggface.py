"""VGG-FACE's 13 conv + 5 pool layers (Parkhi et al. 2015) as a Keras backbone, and the published-weight loader.

The layer names are the published ones (conv1_1 ... conv5_3, pool1 ... pool5), so the conv weights of the
rcmalli/keras-vggface release (`rcmalli_vggface_tf_notop_vgg16.h5` or `rcmalli_vggface_tf_vgg16.h5`) load by name.
The fully connected layers of that release are not used: fc6 expects 224x224 input (kernel 25088 x 4096) and
FaceBehaviorNet discards them (paper, section 3).

Normalisation lives inside the model (`FacePreprocessing`), so a model takes raw RGB pixels in 0..255.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import keras
import numpy as np
from keras import layers, ops

log = logging.getLogger(__name__)

# (convs per block, filters at full width): VGG-16's conv part.
BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
CONV_LAYERS = tuple(f"conv{b}_{i}" for b, (n, _) in enumerate(BLOCKS, 1) for i in range(1, n + 1))
LAYER_NAMES = tuple(name for b, (n, _) in enumerate(BLOCKS, 1)
                    for name in [f"conv{b}_{i}" for i in range(1, n + 1)] + [f"pool{b}"])
# rcmalli/keras-vggface `preprocess_input(version=1)`: RGB -> BGR, then subtract this per-channel (B, G, R) mean.
VGGFACE_MEAN_BGR = (93.5940, 104.7624, 129.1863)
PREPROCESSING_MODES = ("paper", "vggface")
MIN_IMAGE_SIZE = 2 ** len(BLOCKS)  # five 2x2 poolings
# Without published weights the 13-layer plain ReLU stack trains from scratch only with He initialisation
# (He et al. 2015); Keras' default Glorot init leaves it stuck at a constant output.
INITIALIZER = "he_uniform"


@keras.saving.register_keras_serializable(package="fbnet")
class FacePreprocessing(layers.Layer):
    """RGB pixels in 0..255 -> network input: "paper" scales to [-1, 1] (section 4), "vggface" is the published
    weights' own normalisation (RGB -> BGR minus the VGG-FACE mean)."""

    def __init__(self, mode: str = "paper", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"FacePreprocessing mode={mode!r}: expected one of {PREPROCESSING_MODES}")
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "paper":
            return images / 127.5 - 1.0
        return ops.flip(images, axis=-1) - ops.convert_to_tensor(VGGFACE_MEAN_BGR, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="fbnet")
class VGGFaceBackbone(keras.Model):
    """VGG-FACE conv backbone: `image` [N, S, S, 3] RGB 0..255 -> pool5 features [N, S/32, S/32, 512*width].

    Args:
        image_size: input side S (>= 32; the paper uses 96).
        width: multiplier on the filters 64, 128, 256, 512, 512 (1.0 = published; the demo uses 1/8).
        preprocessing: "paper" ([-1, 1]) or "vggface" (what the published weights were trained with).
    """

    def __init__(self, image_size: int = 96, width: float = 1.0, preprocessing: str = "paper", **kwargs):
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"VGGFaceBackbone image_size={image_size}: five 2x2 poolings need >= {MIN_IMAGE_SIZE}")
        if width <= 0:
            raise ValueError(f"VGGFaceBackbone width={width}: expected > 0")

        # === Layers ===
        images = keras.Input(shape=(image_size, image_size, 3), name="image")
        x = FacePreprocessing(preprocessing, name="preprocessing")(images)
        for block, (convs, filters) in enumerate(BLOCKS, 1):
            for i in range(1, convs + 1):
                x = layers.Conv2D(scaled_filters(filters, width), 3, padding="same", activation="relu",
                                  kernel_initializer=INITIALIZER, name=f"conv{block}_{i}")(x)
            x = layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)
        super().__init__(inputs=images, outputs=x, name=kwargs.pop("name", "vggface"), **kwargs)

        # === Config ===
        self.image_size = int(image_size)
        self.width = float(width)
        self.preprocessing = preprocessing

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "image_size": self.image_size,
                "width": self.width, "preprocessing": self.preprocessing}


def scaled_filters(filters: int, width: float) -> int:
    return max(1, int(round(filters * width)))


# ------------------------------------------------------------------------------------------ published weights

def load_vggface_weights(backbone: VGGFaceBackbone, path: str | os.PathLike) -> list[str]:
    """Copy the 13 conv layers' kernels and biases from a published VGGFace h5 file into `backbone`.

    Reads the Keras-2 legacy layout of `rcmalli_vggface_tf_notop_vgg16.h5` / `rcmalli_vggface_tf_vgg16.h5`: root
    attribute `layer_names`, one group per layer with attribute `weight_names` (`conv1_1/kernel:0`, ...), kernels
    HWIO. Layers other than the convs (pools, flatten, fc6-fc8 of the with-top file) are ignored. Returns the names
    of the loaded layers. Raises ValueError naming the file and what was expected for any other layout.
    """
    path = Path(path)
    if getattr(backbone, "width", 1.0) != 1.0:
        raise ValueError(f"{path}: the published VGG-FACE weights are full width, but the backbone has "
                         f"width={backbone.width}; build it with width=1.0 (model.width=1.0)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: VGGFace weight file not found (expected rcmalli_vggface_tf_notop_vgg16.h5 "
                                "or rcmalli_vggface_tf_vgg16.h5 from the rcmalli/keras-vggface v2.0 release)")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not an HDF5 file ({err}); expected a Keras-2 VGGFace weight file") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle  # a full-model save nests them
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path}: no root attribute 'layer_names'; expected the Keras-2 legacy h5 layout of "
                             f"rcmalli_vggface_tf_(notop_)vgg16.h5 (one group per layer with 'weight_names'). "
                             f"Found top-level keys {sorted(handle.keys())[:8]}")
        names = [_text(n) for n in root.attrs["layer_names"]]
        missing = [name for name in CONV_LAYERS if name not in names or name not in root]
        if missing:
            raise ValueError(f"{path}: layers {missing} missing; expected VGG-FACE's conv1_1 ... conv5_3, found "
                             f"layer_names {names}")
        values = {name: _conv_weights(path, root[name], name) for name in CONV_LAYERS}

    for name, (kernel, bias) in values.items():
        layer = backbone.get_layer(name)
        expected = [tuple(w.shape) for w in layer.weights]
        if [kernel.shape, bias.shape] != expected:
            raise ValueError(f"{path}: layer {name} holds kernel {kernel.shape} and bias {bias.shape}; the backbone "
                             f"expects {expected[0]} and {expected[1]} (HWIO)")
        layer.set_weights([kernel, bias])
    if backbone.preprocessing != "vggface":
        log.warning("VGGFace weights loaded into a backbone with preprocessing=%r; they were trained with "
                    "'vggface' (BGR minus mean)", backbone.preprocessing)
    return list(values)


def _conv_weights(path: Path, group, name: str) -> tuple[np.ndarray, np.ndarray]:
    if "weight_names" not in group.attrs:
        raise ValueError(f"{path}: group {name!r} has no 'weight_names' attribute (Keras-2 legacy h5 expected)")
    arrays = {}
    for weight_name in (_text(w) for w in group.attrs["weight_names"]):
        short = weight_name.split("/")[-1].split(":")[0]  # "conv1_1/kernel:0" -> "kernel"
        if weight_name not in group:
            raise ValueError(f"{path}: layer {name!r} lists weight {weight_name!r} but the dataset is missing")
        arrays[short] = np.asarray(group[weight_name], dtype=np.float32)
    if set(arrays) != {"kernel", "bias"}:
        raise ValueError(f"{path}: layer {name!r} has weights {sorted(arrays)}; expected kernel and bias")
    return arrays["kernel"], arrays["bias"]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
