"""FATAUVA-Net (Chang et al., CVPRW 2017): core -> attribute -> AU -> V-A layers of rPoly blocks, trained in stages.

The paper's tables are data here: `ATTRIBUTE_BRANCHES` (its Table 2), `AU_BRANCHES` (Table 3, each AU branch
attached to its facial part's attribute branch) and `VA_BRANCHES` (section 3.3: Con_Val and Con_Aro).

Inner structure (the paper's Figure 7 and its input size are not in its text; chosen here, and why):
- Input 96x96 RGB 0..255, scaled to [-1, 1] in the model: the crops every fbnet builder writes (112 px, randomly
  cut to 96 in training), so both families train on the same records; at 96 px the core's 12x12 response maps
  still separate brows, eyes and mouth, which the part branches need.
- F, the residual of an rPoly block: 3x3 conv + ReLU, then a linear 1x1 conv, scaled by `residual_scale` (0.3,
  PolyNet's residual scaling, which keeps x + F + F^2 + F^3 of an unnormalised stack from growing). No batch
  normalisation: a frozen stage then computes exactly what it computed when it was trained.
  rPoly-2 = x + F(x) + F(F(x)), rPoly-3 = x + F(x) + F(F(x)) + F(F(F(x))); `shared=False` gives each power its own
  F (x + F1(x) + F2(F1(x)) [+ F3(F2(F1(x)))], PolyNet's mPoly form).
- Core layer: stem 3x3 conv (c filters) + 2x2 max pool, then 8 rPoly-2 blocks in three widths, 2 @ c, 3 @ 2c,
  3 @ 4c, each change of width a 1x1 conv + ReLU + 2x2 max pool (`core_transition<k>`): 96 -> 48 -> 24 -> 12.
- Attribute layer: per part (face, eyebrows, eyes, mouth) 2 rPoly-2 at 4c on the 12x12 map.
- AU layer: per AU branch a 1x1 conv to 4c + 2x2 pool (6x6) then 2 rPoly-3, on its part's attribute branch.
- V-A layer: per dimension, the concatenation of its AU branches (Con_Val, Con_Aro), a 1x1 conv to 4c (the
  paper's dimension reduction), 2 rPoly-3. FATVA (no AU layer) reads instead the attribute branches its AU
  branches sit on, pooled to the same 6x6.
- Heads: global average pooling and three FC layers per label (the paper's "FC_AU6 and FC_AU7 on top of AU6_7"):
  one logit per attribute and per AU (the paper's 2-way softmax is a sigmoid on one logit), and per V-A dimension
  11 class logits over -5..5 (`va_head="class"`) or one value in -5..5 units (`va_head="regression"`, whose
  second FC layer is the center loss's feature).

Layer names say which part they belong to (`core_*`, `attribute_<branch>_*`, `au_<branch>_*`, `va_<dim>_*`), and
`STAGES` maps each training stage to those prefixes.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from fbnet_tf.labels import FATAUVA_ATTRIBUTE_BRANCHES, VA_NAMES
from fbnet_tf.models.vggface import FacePreprocessing

# --------------------------------------------------------------------------------------------- the paper's tables

# Table 2: attribute layer branch -> the CelebA attributes its FC layers recognise (`labels`, which the demo
# world shares without importing TensorFlow).
ATTRIBUTE_BRANCHES = FATAUVA_ATTRIBUTE_BRANCHES
# Table 3: AU layer branch -> (the attribute branch it is attached to, the AUs its FC layers detect).
AU_BRANCHES: dict[str, tuple[str, tuple[int, ...]]] = {
    "AU6_7": ("eyes", (6, 7)),
    "AU45": ("eyes", (45,)),
    "AU1": ("eyebrows", (1,)),
    "AU2": ("eyebrows", (2,)),
    "AU4": ("eyebrows", (4,)),
    "Chin": ("mouth", (17, 26)),
    "Lip_c": ("mouth", (12, 15)),
    "Lip_u": ("mouth", (10,)),
    "Mouth_au": ("mouth", (23, 24, 25)),
}
# Section 3.3: Con_Val and Con_Aro, the AU branches each V-A dimension reads.
VA_BRANCHES: dict[str, tuple[str, ...]] = {
    "valence": ("AU6_7", "AU45", "AU4", "Lip_c", "Mouth_au"),
    "arousal": ("AU45", "AU1", "AU2", "AU4", "Chin"),
}

# Output orders: attributes by branch (Table 2's order), AUs by number.
ATTRIBUTES: tuple[str, ...] = tuple(a for names in ATTRIBUTE_BRANCHES.values() for a in names)
AUS: tuple[int, ...] = tuple(sorted(n for _, numbers in AU_BRANCHES.values() for n in numbers))
AU_NAMES: tuple[str, ...] = tuple(f"AU{n}" for n in AUS)
VA_CLASSES: tuple[int, ...] = tuple(range(-5, 6))  # the quantised V-A values of the class-based head
VA_SCALE = 5.0  # model units (-5..5) per unit of the records' [-1, 1]

# Training stages (paper section 3): name, the layer-name prefixes trained, the labels they learn from.
STAGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("attribute", ("core_", "attribute_"), "attributes"),
    ("au", ("au_",), "action_units"),
    ("va", ("va_",), "valence_arousal"),
)
VA_HEADS = ("class", "regression")
MIN_IMAGE_SIZE = 16  # four 2x2 poolings


def _layer_name(text: str) -> str:
    return text.lower()


# --------------------------------------------------------------------------------------------- rPoly blocks

@keras.saving.register_keras_serializable(package="fbnet")
class RPolyBlock(layers.Layer):
    """rPoly-n (n = 2 or 3): x + F(x) + F(F(x)) [+ F(F(F(x)))], F = scale * conv1x1(relu(conv3x3(.))).

    `shared=True` (the paper's reduced Poly block) applies one F n times; `shared=False` gives each power its own
    residual (F1, F2, ...). Keeps the shape of its input.
    """

    def __init__(self, order: int = 2, filters: int = 16, shared: bool = True, residual_scale: float = 0.3,
                 **kwargs):
        super().__init__(**kwargs)
        if order not in (2, 3):
            raise ValueError(f"RPolyBlock order={order}: expected 2 (rPoly-2) or 3 (rPoly-3)")
        self.order, self.filters, self.shared = int(order), int(filters), bool(shared)
        self.residual_scale = float(residual_scale)
        count = 1 if self.shared else self.order
        self.expand = [layers.Conv2D(self.filters, 3, padding="same", activation="relu",
                                     kernel_initializer="he_uniform", name=f"f{k + 1}_conv3x3") for k in range(count)]
        self.project = [layers.Conv2D(self.filters, 1, name=f"f{k + 1}_conv1x1") for k in range(count)]

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ValueError(f"{self.name}: rPoly blocks keep their width; input has {input_shape[-1]} channels, "
                             f"the block {self.filters}")
        shape = tuple(input_shape)
        for expand, project in zip(self.expand, self.project):
            expand.build(shape)
            project.build(shape[:-1] + (self.filters,))

    def residual(self, x, power: int = 1):
        """F_power(x): the shared F, or the power-th of the unshared ones."""
        k = 0 if self.shared else power - 1
        return self.residual_scale * self.project[k](self.expand[k](x))

    def call(self, x):
        out, term = x, x
        for power in range(1, self.order + 1):
            term = self.residual(term, power)
            out = out + term
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "order": self.order, "filters": self.filters, "shared": self.shared,
                "residual_scale": self.residual_scale}


@keras.saving.register_keras_serializable(package="fbnet")
class StackDimensions(layers.Layer):
    """[N, K] per V-A dimension -> [N, 2, K]."""

    def call(self, tensors):
        return ops.stack(tensors, axis=1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], len(input_shapes), input_shapes[0][-1])


# --------------------------------------------------------------------------------------------- the network

@keras.saving.register_keras_serializable(package="fbnet")
class FatauvaNet(keras.Model):
    """FATAUVA-Net: images RGB 0..255 [N, S, S, 3] -> raw outputs.

    Outputs: `attribute_logits` [N, 10] (order `ATTRIBUTES`), `au_logits` [N, 14] (order `AUS`; absent when
    `fatva`), and for the V-A layer either `va_logits` [N, 2, 11] (class head, classes `VA_CLASSES`) or
    `va_values` [N, 2] in -5..5 units plus `va_features` [N, 2, fc_units] (regression head; the features the
    center loss pulls to their class centre).

    Args:
        image_size: input side S (>= 16; 96 in the `fatauva_paper` preset).
        filters: c, the width of the first core stage (core widths c, 2c, 4c; the branches use 4c).
        fc_units: width of the first two of each head's three FC layers.
        va_head: "class" or "regression".
        fatva: True removes the AU layer (the paper's FATVA ablation): the V-A layer reads the attribute layer.
        shared: True shares F inside each rPoly block (the paper); False gives each power its own F.
        residual_scale: the factor on F's output.
    """

    def __init__(self, image_size: int = 96, filters: int = 32, fc_units: int = 128, va_head: str = "regression",
                 fatva: bool = False, shared: bool = True, residual_scale: float = 0.3, **kwargs):
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"FatauvaNet image_size={image_size}: four 2x2 poolings need >= {MIN_IMAGE_SIZE}")
        if va_head not in VA_HEADS:
            raise ValueError(f"FatauvaNet va_head={va_head!r}: expected one of {VA_HEADS}")
        wide = 4 * filters

        def poly(x, order, width, name):
            return RPolyBlock(order, width, shared=shared, residual_scale=residual_scale, name=name)(x)

        def transition(x, width, name):
            x = layers.Conv2D(width, 1, activation="relu", kernel_initializer="he_uniform", name=name)(x)
            return layers.MaxPooling2D(2, name=f"{name}_pool")(x)

        def head(x, units, prefix):
            x = layers.GlobalAveragePooling2D(name=f"{prefix}_gap")(x)
            x = layers.Dense(fc_units, activation="relu", kernel_initializer="he_uniform", name=f"{prefix}_fc1")(x)
            x = layers.Dense(fc_units, activation="relu", kernel_initializer="he_uniform", name=f"{prefix}_fc2")(x)
            # float32 outputs under a mixed precision policy (fbnet_tf.precision): the losses need their range.
            return layers.Dense(units, dtype="float32", name=f"{prefix}_fc3")(x), x

        # === Layers ===
        images = keras.Input(shape=(image_size, image_size, 3), name="image")
        x = FacePreprocessing("paper", name="core_preprocessing")(images)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_uniform",
                          name="core_stem")(x)
        x = layers.MaxPooling2D(2, name="core_stem_pool")(x)
        block = 0
        for stage, (count, width) in enumerate(((2, filters), (3, 2 * filters), (3, wide))):
            if stage:
                x = transition(x, width, f"core_transition{stage}")
            for _ in range(count):
                block += 1
                x = poly(x, 2, width, f"core_block{block}")

        parts, attribute_logits = {}, []
        for branch, names in ATTRIBUTE_BRANCHES.items():
            y = x
            for k in (1, 2):
                y = poly(y, 2, wide, f"attribute_{branch}_block{k}")
            parts[branch] = y
            for name in names:
                attribute_logits.append(head(y, 1, f"attribute_{branch}_{_layer_name(name)}")[0])
        outputs = {"attribute_logits": layers.Concatenate(dtype="float32", name="attribute_logits")(attribute_logits)}

        au_maps, au_logits = {}, {}
        if not fatva:
            for branch, (part, numbers) in AU_BRANCHES.items():
                prefix = f"au_{_layer_name(branch)}"
                y = transition(parts[part], wide, f"{prefix}_transition")
                for k in (1, 2):
                    y = poly(y, 3, wide, f"{prefix}_block{k}")
                au_maps[branch] = y
                for number in numbers:
                    au_logits[number] = head(y, 1, f"{prefix}_au{number}")[0]
            outputs["au_logits"] = layers.Concatenate(dtype="float32", name="au_logits")([au_logits[n] for n in AUS])

        va_out, va_features = [], []
        classes = len(VA_CLASSES) if va_head == "class" else 1
        for dimension, branches in VA_BRANCHES.items():
            prefix = f"va_{dimension}"
            if fatva:  # the attribute branches the AU branches would sit on, in first-use order
                sources = list(dict.fromkeys(AU_BRANCHES[b][0] for b in branches))
                y = layers.Concatenate(name=f"{prefix}_concat")([parts[p] for p in sources])
                y = layers.MaxPooling2D(2, name=f"{prefix}_concat_pool")(y)
            else:
                y = layers.Concatenate(name=f"{prefix}_concat")([au_maps[b] for b in branches])
            y = layers.Conv2D(wide, 1, activation="relu", kernel_initializer="he_uniform", name=f"{prefix}_reduce")(y)
            for k in (1, 2):
                y = poly(y, 3, wide, f"{prefix}_block{k}")
            logits, features = head(y, classes, prefix)
            va_out.append(logits)
            va_features.append(features)
        if va_head == "class":
            outputs["va_logits"] = StackDimensions(dtype="float32", name="va_logits")(va_out)
        else:
            outputs["va_values"] = layers.Concatenate(dtype="float32", name="va_values")(va_out)
            outputs["va_features"] = StackDimensions(dtype="float32", name="va_features")(va_features)
        super().__init__(inputs=images, outputs=outputs, name=kwargs.pop("name", "fatauvanet"), **kwargs)

        # === Config ===
        self.image_size = int(image_size)
        self.filters = int(filters)
        self.fc_units = int(fc_units)
        self.va_head = va_head
        self.fatva = bool(fatva)
        self.shared = bool(shared)
        self.residual_scale = float(residual_scale)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "image_size": self.image_size,
                "filters": self.filters, "fc_units": self.fc_units, "va_head": self.va_head, "fatva": self.fatva,
                "shared": self.shared, "residual_scale": self.residual_scale}

    def label_names(self) -> dict[str, list[str]]:
        """The names of each inference output's columns."""
        names = {"valence_arousal": list(VA_NAMES), "attributes": list(ATTRIBUTES)}
        if not self.fatva:
            names["action_units"] = list(AU_NAMES)
        return names

    def stages(self) -> list[tuple[str, tuple[str, ...], str]]:
        """The training stages this network has (FATVA has no AU stage)."""
        return [s for s in STAGES if not (self.fatva and s[0] == "au")]

    def stage_outputs(self, stage: str) -> keras.Model:
        """The part of the network a stage's loss needs (shared layers): image -> that stage's raw outputs only, so
        stage 1 does not run the AU and V-A layers, nor stage 2 the V-A layer."""
        wanted = {"attribute": ("attribute_logits",), "au": ("au_logits",),
                  "va": ("va_logits", "va_values", "va_features")}[stage]
        return keras.Model(self.input, {k: v for k, v in self.output.items() if k in wanted},
                           name=f"{self.name}_{stage}")

    def stage_layers(self, stage: str) -> list:
        prefixes = dict((name, p) for name, p, _ in STAGES)[stage]
        return [layer for layer in self.layers if layer.name.startswith(prefixes)]


# --------------------------------------------------------------------------------------------- V-A decoding

def decode_va_top3(probabilities):
    """[..., 11] class probabilities over -5..5 -> [...] values in [-1, 1] (paper 4.1.3).

    Take the three most probable classes; when they are consecutive integers (1,2,3 in any order) the value is
    their probability-weighted mean, else the top-1 class. The -5..5 value is then divided by 5.
    """
    p = ops.convert_to_tensor(probabilities)
    values = ops.convert_to_tensor(np.asarray(VA_CLASSES, np.float32), dtype=p.dtype)
    top_p, top_k = tf.math.top_k(p, k=3)
    top_v = ops.take(values, top_k)
    consecutive = ops.equal(ops.max(top_v, axis=-1) - ops.min(top_v, axis=-1), 2.0)
    weighted = ops.sum(top_p * top_v, axis=-1) / ops.maximum(ops.sum(top_p, axis=-1), 1e-12)
    return ops.where(consecutive, weighted, top_v[..., 0]) / VA_SCALE


@keras.saving.register_keras_serializable(package="fbnet")
class DecodeVATop3(layers.Layer):
    """va_logits [N, 2, 11] -> valence_arousal [N, 2] in [-1, 1] with `decode_va_top3` on the softmax."""

    def call(self, logits):
        return decode_va_top3(ops.softmax(logits, axis=-1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@keras.saving.register_keras_serializable(package="fbnet")
class VAFromRegression(layers.Layer):
    """va_values [N, 2] in -5..5 units -> [-1, 1] (divided by 5, clipped: the paper's "naive" mapping)."""

    def call(self, values):
        return ops.clip(values / VA_SCALE, -1.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def inference_model(network: FatauvaNet) -> keras.Model:
    """The deployable model: input "image" (RGB 0..255) -> "attributes" [N, 10] and "action_units" [N, 14]
    sigmoid probabilities, "valence_arousal" [N, 2] in [-1, 1], float32 under every precision policy. Shares
    `network`'s weights."""
    images = keras.Input(shape=network.input_shape[1:], name="image")
    raw = network(images)
    va = (DecodeVATop3(dtype="float32", name="valence_arousal")(raw["va_logits"]) if "va_logits" in raw
          else VAFromRegression(dtype="float32", name="valence_arousal")(raw["va_values"]))
    outputs = {"valence_arousal": va,
               "attributes": layers.Activation("sigmoid", dtype="float32", name="attributes")(raw["attribute_logits"])}
    if "au_logits" in raw:
        outputs["action_units"] = layers.Activation("sigmoid", dtype="float32", name="action_units")(raw["au_logits"])
    return keras.Model(images, outputs, name=f"{network.name}_inference")


def network_of(model: keras.Model) -> FatauvaNet:
    """The `FatauvaNet` inside an inference model, a trainer, or itself."""
    from fbnet_tf.models.registry import network_in

    return network_in(model, FatauvaNet)


# --------------------------------------------------------------------------------------------- losses

def quantise_va(va):
    """[-1, 1] values -> class indices 0..10 of `VA_CLASSES` (round(5 v) + 5), int32."""
    va = ops.convert_to_tensor(va, "float32")
    return ops.cast(ops.clip(ops.round(va * VA_SCALE), -VA_SCALE, VA_SCALE) + VA_SCALE, "int32")


def smooth_l1(prediction, target, turning_point: float = 1.0):
    """Paper eq. 2, elementwise: 0.5 d^2 where |d| < t, else |d| - t + 0.5 t^2 (d = prediction - target)."""
    d = ops.abs(prediction - target)
    t = turning_point
    return ops.where(d < t, 0.5 * d * d, d - t + 0.5 * t * t)


def center_loss(features, classes, centres):
    """Wen et al. 2016 (paper eq. 1, p = 2): per sample 0.5 ||x - c_y||^2.

    features [N, D], classes [N] int, centres [C, D] -> [N].
    """
    diff = features - ops.take(centres, classes, axis=0)
    return 0.5 * ops.sum(diff * diff, axis=-1)


def centre_update(features, classes, centres, weights, alpha: float):
    """Wen et al.'s centre step: c_j <- c_j - alpha * sum_i w_i (c_j - x_i) [y_i = j] / (1 + sum_i w_i [y_i = j]).

    `weights` [N] (0 for samples without a label) -> the new centres [C, D].
    """
    onehot = ops.one_hot(classes, ops.shape(centres)[0]) * weights[:, None]  # [N, C]
    counts = ops.sum(onehot, axis=0)  # [C]
    sums = ops.matmul(ops.transpose(onehot), features)  # [C, D]
    delta = (counts[:, None] * centres - sums) / (1.0 + counts[:, None])
    return centres - alpha * delta


def _masked_mean(values, weights):
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1.0)


def masked_binary_crossentropy(labels, logits, mask):
    """Mean binary cross-entropy over the annotated entries (mask 1) only; 0 when none is."""
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, logits.dtype), logits=logits)
    return _masked_mean(losses, tf.cast(mask, logits.dtype))


# --------------------------------------------------------------------------------------------- training side

class FatauvaNetTrainer(keras.Model):
    """`model.fit` wrapper for one stage: only that stage's layers train, only its labels give a loss.

    Targets (see `targets_from_features`): `attributes` [N, 10] + `attributes_mask` [N, 10], `au` [N, 14] +
    `au_mask` [N, 14], `va` [N, 2] in [-1, 1] + `va_mask` [N]. Losses: stage "attribute" and "au" masked binary
    cross-entropy; stage "va" the class head's cross-entropy over -5..5, or the regression head's smooth L1 (eq. 2,
    in -5..5 units) + `center_weight` x the center loss (eq. 1) on the penultimate features, whose class centres
    (one per dimension and quantised value) follow Wen et al.'s update with rate `center_alpha`.
    Logged: `loss`, `loss_<stage term>`, and `attribute_accuracy` / `au_f1` / `ccc_valence`, `ccc_arousal`.
    """

    def __init__(self, network: FatauvaNet, stage: str, *, turning_point: float = 1.0, center_weight: float = 0.01,
                 center_alpha: float = 0.5, **kwargs):
        from fbnet_tf.metrics import MaskedAUF1, StreamingCCC

        super().__init__(name=kwargs.pop("name", f"fatauvanet_{stage}_trainer"), **kwargs)
        names = [s[0] for s in network.stages()]
        if stage not in names:
            raise ValueError(f"stage {stage!r}: this network has stages {names}")
        self.network, self.stage = network, stage
        self.stage_network = network.stage_outputs(stage)
        self.turning_point, self.center_weight, self.center_alpha = turning_point, center_weight, center_alpha
        trained = set(network.stage_layers(stage))
        for layer in network.layers:
            layer.trainable = layer in trained
        self.regression = network.va_head == "regression"
        self.term_names = {"attribute": ("attributes",), "au": ("au",),
                           "va": ("va", "center") if self.regression else ("va",)}[stage]
        self.term_trackers = [keras.metrics.Mean(name=f"loss_{t}") for t in self.term_names]
        self.attribute_accuracy = self.au_f1 = self.valence_ccc = self.arousal_ccc = None
        if stage == "attribute":
            self.attribute_accuracy = keras.metrics.BinaryAccuracy(name="attribute_accuracy", threshold=0.0)
        elif stage == "au":
            self.au_f1 = MaskedAUF1(num_aus=len(AUS), name="au_f1")
        else:
            self.valence_ccc = StreamingCCC(dimension=0, name="ccc_valence")
            self.arousal_ccc = StreamingCCC(dimension=1, name="ccc_arousal")
        if self.regression:
            # Updated in the train step (Wen et al.), not by the optimizer; replicas average their updates.
            self.centres = self.add_weight(shape=(len(VA_NAMES), len(VA_CLASSES), network.fc_units),
                                           initializer="zeros", trainable=False, aggregation="mean",
                                           name="va_centres")

    def call(self, images, training=False):
        return self.stage_network(images, training=training)

    def loss_terms(self, targets, outputs) -> dict:
        if self.stage == "attribute":
            terms = {"attributes": masked_binary_crossentropy(targets["attributes"], outputs["attribute_logits"],
                                                              targets["attributes_mask"])}
        elif self.stage == "au":
            terms = {"au": masked_binary_crossentropy(targets["au"], outputs["au_logits"], targets["au_mask"])}
        else:
            terms = self._va_terms(targets, outputs)
        terms["loss"] = sum(terms.values()) if self.stage != "va" or not self.regression \
            else terms["va"] + self.center_weight * terms["center"]
        return terms

    def _va_terms(self, targets, outputs):
        mask = ops.cast(targets["va_mask"], "float32")[:, None] * ops.ones((1, len(VA_NAMES)))
        classes = quantise_va(targets["va"])  # [N, 2]
        if not self.regression:
            losses = keras.losses.sparse_categorical_crossentropy(classes, outputs["va_logits"], from_logits=True)
            return {"va": _masked_mean(losses, mask)}
        values = smooth_l1(outputs["va_values"], ops.cast(targets["va"], "float32") * VA_SCALE, self.turning_point)
        centre = ops.stack([center_loss(outputs["va_features"][:, d], classes[:, d], self.centres[d])
                            for d in range(len(VA_NAMES))], axis=1)
        return {"va": _masked_mean(values, mask), "center": _masked_mean(centre, mask)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(y, y_pred)
        # Weighted by the batch size, as Keras weighs `loss`: an evaluation over a dataset of unknown length ends
        # with an empty batch, which must not count as a batch of zero loss.
        batch = ops.cast(ops.shape(tf.nest.flatten(x)[0])[0], "float32") if x is not None else 1.0
        for name, tracker in zip(self.term_names, self.term_trackers):
            tracker.update_state(terms[name], sample_weight=batch)
        if training and self.regression and self.stage == "va":
            features = ops.stop_gradient(y_pred["va_features"])
            classes = quantise_va(y["va"])
            weights = ops.cast(y["va_mask"], "float32")
            self.centres.assign(ops.stack([centre_update(features[:, d], classes[:, d], self.centres[d], weights,
                                                         self.center_alpha) for d in range(len(VA_NAMES))]))
        total = terms["loss"]
        if self.losses:
            total = total + ops.sum(self.losses)
        return total / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, total.dtype)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if self.attribute_accuracy is not None:
            self.attribute_accuracy.update_state(y["attributes"], y_pred["attribute_logits"],
                                                 sample_weight=y["attributes_mask"])
        if self.au_f1 is not None:
            self.au_f1.update_state(y["au"], ops.sigmoid(y_pred["au_logits"]), y["au_mask"])
        if self.valence_ccc is not None:
            va = (decode_va_top3(ops.softmax(y_pred["va_logits"], axis=-1)) if not self.regression
                  else ops.clip(y_pred["va_values"] / VA_SCALE, -1.0, 1.0))
            self.valence_ccc.update_state(y["va"], va, y["va_mask"])
            self.arousal_ccc.update_state(y["va"], va, y["va_mask"])
        return self.get_metrics_result()


# --------------------------------------------------------------------------------------------- records -> targets

def targets_from_features(features) -> dict:
    """One parsed record (contract features incl. `facs/*`) -> this family's targets (unbatched).

    Attributes: the 10 of `ATTRIBUTES` picked by name from CelebA's 40, masked by `attributes_mask`. AUs: the 14 of
    `AUS` from the `facs/*` lists (AU45 included), masked where the database does not code them. VA: as stored.
    """
    from fbnet_tf.labels import CELEBA_ATTRIBUTES
    from fbnet_tf.records import facs_dense

    index = [CELEBA_ATTRIBUTES.index(a) for a in ATTRIBUTES]
    attributes = tf.gather(features["attributes"], index, axis=-1)
    attributes_mask = tf.ones_like(attributes) * features["attributes_mask"][..., None]
    au, au_mask = facs_dense(features["facs/au"], features["facs/occurrence"], AUS)
    return {"attributes": attributes, "attributes_mask": attributes_mask, "au": au, "au_mask": au_mask,
            "va": features["va"], "va_mask": features["va_mask"]}


# The record features `targets_from_features` reads, and which target says a record belongs to a stage.
TARGET_FEATURES = ("attributes", "attributes_mask", "va", "va_mask", "facs/au", "facs/occurrence")
STAGE_MASK = {"attribute": "attributes_mask", "au": "au_mask", "va": "va_mask"}


def stage_keep(stage: str):
    """targets -> True where the record has a label the stage learns from (works batched and per record)."""
    key = STAGE_MASK[stage]

    def keep(targets):
        mask = tf.convert_to_tensor(targets[key])
        return mask > 0 if key == "va_mask" else tf.reduce_max(mask, axis=-1) > 0

    return keep


def stage_record_dirs(config, stage: str) -> list[str]:
    dirs = config.data.stage_record_dirs.get(stage) or config.data.record_dirs
    if not dirs:
        raise ValueError(f"no record dirs for FATAUVA-Net stage {stage!r}: set data.stage_record_dirs.{stage} "
                         "(attribute: CelebA; au: BP4D, SEMAINE; va: Aff-Wild) or data.record_dirs")
    return [str(d) for d in dirs]


def stage_weight_fn(config, stage: str, targets: dict):
    """The re-sampling weight of the stage's records (paper 4.1.1), from their label statistics; None when off."""
    from fbnet_tf import rebalance

    settings = config.data.rebalance
    if stage == "au" and settings.au:
        ratios = rebalance.au_ratios(targets["au"], targets["au_mask"], settings.au_target_rate)
        return lambda t: rebalance.au_weights(t["au"], t["au_mask"], ratios, settings.au_negative_keep,
                                              settings.max_repeat)
    if stage == "va" and settings.va:
        ratios = rebalance.va_ratios(targets["va"], targets["va_mask"], settings.va_strength)
        return lambda t: rebalance.va_weights(t["va"], t["va_mask"], ratios, settings.max_repeat)
    return None


def training_data(config, stage: str, strategy):
    """(train dataset, steps per epoch, validation dataset or None) of one stage, from its record dirs."""
    import math

    from fbnet_tf import data

    dirs = stage_record_dirs(config, stage)
    keep = stage_keep(stage)
    common = dict(batch_size=config.data.batch_size, image_size=config.model.image_size,
                  label_features=TARGET_FEATURES, to_targets=targets_from_features, keep=keep)
    targets = data.scan_targets(dirs, "train", label_features=TARGET_FEATURES, to_targets=targets_from_features,
                                keep=keep)
    count = len(next(iter(targets.values()), []))
    if not count:
        raise ValueError(f"FATAUVA-Net stage {stage!r}: no training record in {dirs} carries its labels "
                         f"({STAGE_MASK[stage]})")
    weight_fn = stage_weight_fn(config, stage, targets)
    if weight_fn is not None:  # an epoch is one pass over the re-sampled stream
        count = float(np.sum(keras.ops.convert_to_numpy(weight_fn(targets))))
    steps = max(1, math.ceil(count / config.data.batch_size))
    train = data.labelled_dataset(dirs, split="train", training=True, augment=config.data.augment,
                                  weight_fn=weight_fn, deterministic=config.data.deterministic,
                                  seed=config.data.seed, **common)
    validation = None
    if config.data.validation and any(data.record_files(d, "validation") for d in dirs):
        validation = data.labelled_dataset(dirs, split="validation", training=False,
                                           **{**common, "batch_size": config.data.validation_batch_size})
    if strategy.num_replicas_in_sync > 1:
        train = strategy.experimental_distribute_dataset(train)
    return train, steps, validation


# --------------------------------------------------------------------------------------------- from a config

def build_network(model_config) -> FatauvaNet:
    """A `FatauvaNet` from a `config.ModelConfig` (or a full `ExperimentConfig`)."""
    cfg = getattr(model_config, "model", model_config)
    f = cfg.fatauva
    return FatauvaNet(image_size=cfg.image_size, filters=f.filters, fc_units=cfg.fc_units, va_head=f.va_head,
                      fatva=f.fatva, shared=f.shared, residual_scale=f.residual_scale)


def build_inference_model(config) -> keras.Model:
    return inference_model(build_network(config))


def build_trainer(config, network: FatauvaNet | None = None, stage: str = "attribute") -> FatauvaNetTrainer:
    network = network if network is not None else build_network(config.model)
    f = config.model.fatauva
    return FatauvaNetTrainer(network, stage, turning_point=f.turning_point, center_weight=f.center_weight,
                             center_alpha=f.center_alpha)


def stage_names(network_or_config) -> Sequence[str]:
    if isinstance(network_or_config, FatauvaNet):
        return [s[0] for s in network_or_config.stages()]
    fatva = network_or_config.model.fatauva.fatva
    return [s[0] for s in STAGES if not (fatva and s[0] == "au")]
