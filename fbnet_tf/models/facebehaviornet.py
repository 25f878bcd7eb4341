"""FaceBehaviorNet (paper, section 3 and Fig. 1): VGG-FACE conv layers -> FC 4096 -> FC 4096 -> one linear output of
2 valence/arousal values, 7 expression logits and 17 AU logits, all pooled from the same features.

Three pieces share one set of weights:
- `FaceBehaviorNet`: images -> raw outputs {"valence_arousal", "expression_logits", "au_logits"} (what the losses
  take). `tasks` picks the heads: all three for FaceBehaviorNet, one for a single-task baseline.
- `inference_model(network)`: input "image" -> {"valence_arousal" clipped to [-1, 1], "expression" softmax,
  "action_units" sigmoid}; this is what is saved, exported and served.
- `FaceBehaviorNetTrainer`: the `model.fit` side. Takes `(images, targets)` batches, computes eq. 1 and the
  coupling losses with `MultiTaskLoss` (masks included) and logs every loss term and the streaming metrics.
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf
from keras import layers, ops

from fbnet_tf.config import TASKS
from fbnet_tf.labels import AU_NAMES, AUS, EXPRESSIONS, VA_NAMES
from fbnet_tf.models.vggface import INITIALIZER, VGGFaceBackbone

# task -> (raw output name, units). The paper's single linear output layer is these three Dense layers side by
# side: the same 26 linear units, split so that each task's head (and its gradient) has a name.
HEADS = {"va": ("valence_arousal", len(VA_NAMES)), "expr": ("expression_logits", len(EXPRESSIONS)),
         "au": ("au_logits", len(AUS))}


@keras.saving.register_keras_serializable(package="fbnet")
class FaceBehaviorNet(keras.Model):
    """VGG-FACE backbone + FC-dropout-FC-dropout + linear heads; outputs raw values (logits, unbounded VA).

    Args:
        backbone: a `VGGFaceBackbone` (its input is the raw image).
        fc_units: width of the two fully connected layers (4096 in the paper).
        dropout: dropout rate after each of them (0.5).
        tasks: which heads, among "va", "expr", "au".
    """

    def __init__(self, backbone: VGGFaceBackbone, fc_units: int = 4096, dropout: float = 0.5,
                 tasks: Sequence[str] = TASKS, **kwargs):
        tasks = [t for t in TASKS if t in tasks]  # canonical order, whatever order was given
        if not tasks:
            raise ValueError(f"FaceBehaviorNet tasks: expected a non-empty subset of {TASKS}")

        # === Layers ===
        images = keras.Input(shape=backbone.input_shape[1:], name="image")
        x = layers.Flatten(name="flatten")(backbone(images))
        x = layers.Dense(fc_units, activation="relu", kernel_initializer=INITIALIZER, name="fc6")(x)
        x = layers.Dropout(dropout, name="dropout6")(x)
        x = layers.Dense(fc_units, activation="relu", kernel_initializer=INITIALIZER, name="fc7")(x)
        x = layers.Dropout(dropout, name="dropout7")(x)
        # float32 heads under a mixed precision policy (fbnet_tf.precision): the losses and metrics need its range.
        outputs = {HEADS[t][0]: layers.Dense(HEADS[t][1], dtype="float32", name=HEADS[t][0])(x) for t in tasks}
        super().__init__(inputs=images, outputs=outputs, name=kwargs.pop("name", "facebehaviornet"), **kwargs)

        # === Config ===
        self.backbone = backbone
        self.fc_units = int(fc_units)
        self.dropout = float(dropout)
        self.tasks = tuple(tasks)

    def label_names(self) -> dict[str, list[str]]:
        """The names of each inference output's columns (the tasks this network has)."""
        names = {"va": ("valence_arousal", VA_NAMES), "expr": ("expression", EXPRESSIONS),
                 "au": ("action_units", AU_NAMES)}
        return {names[t][0]: list(names[t][1]) for t in TASKS if t in self.tasks}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "fc_units": self.fc_units, "dropout": self.dropout, "tasks": list(self.tasks)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="fbnet")
class ClipToUnitRange(layers.Layer):
    """Valence/arousal are trained as linear outputs (paper); at inference they are clipped to their [-1, 1] range,
    which leaves every in-range prediction exactly as trained (a tanh would bend them)."""

    def call(self, x):
        return ops.clip(x, -1.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def inference_model(network: FaceBehaviorNet) -> keras.Model:
    """The deployable model: input "image" (float RGB 0..255, [N, S, S, 3]) -> named probabilities, float32 under
    every precision policy.

    Outputs (those of `network.tasks`): "valence_arousal" [N, 2] clipped to [-1, 1], "expression" [N, 7] softmax
    (order `labels.EXPRESSIONS`), "action_units" [N, 17] sigmoid (order `labels.AUS`). Shares `network`'s weights.
    """
    images = keras.Input(shape=network.input_shape[1:], name="image")
    raw = network(images)
    outputs = {}
    if "valence_arousal" in raw:
        outputs["valence_arousal"] = ClipToUnitRange(dtype="float32", name="valence_arousal")(raw["valence_arousal"])
    if "expression_logits" in raw:
        outputs["expression"] = layers.Activation("softmax", dtype="float32", name="expression")(
            raw["expression_logits"])
    if "au_logits" in raw:
        outputs["action_units"] = layers.Activation("sigmoid", dtype="float32", name="action_units")(
            raw["au_logits"])
    return keras.Model(images, outputs, name=f"{network.name}_inference")


def network_of(model: keras.Model) -> FaceBehaviorNet:
    """The `FaceBehaviorNet` inside an inference model, a trainer, or itself."""
    from fbnet_tf.models.registry import network_in

    return network_in(model, FaceBehaviorNet)


# --------------------------------------------------------------------------------------------- training side

# Loss-term keys of MultiTaskLoss -> the task whose head they need.
_TERM_TASK = {"expression": "expr", "au": "au", "va": "va"}


class FaceBehaviorNetTrainer(keras.Model):
    """`model.fit` wrapper: `(images, targets)` batches -> eq. 1 + coupling losses, masked per task.

    `targets` is the pipeline's dict (`expr` [N] with -1 for none, `va` [N, 2], `va_mask` [N], `au` [N, 17],
    `au_mask` [N, 17]). Targets of tasks the network has no head for are masked out and their outputs filled with
    zeros, so a single-task baseline runs the same code. Logged per epoch: `loss` (total), `loss_<term>` for every
    term `MultiTaskLoss` returns, `ccc_valence`, `ccc_arousal` (over the epoch, not a mean of batch CCCs),
    `expr_accuracy` (over images with an expression label) and `au_f1` (mean per-AU F1 over annotated entries).
    """

    def __init__(self, network: FaceBehaviorNet, loss, **kwargs):
        from fbnet_tf.metrics import MaskedAUF1, StreamingCCC

        super().__init__(name=kwargs.pop("name", "facebehaviornet_trainer"), **kwargs)
        self.network = network
        self.multitask_loss = loss
        self.tasks = tuple(network.tasks)
        coupling_terms = tuple(getattr(loss, "terms", ()))
        self.term_names = tuple(t for t, task in _TERM_TASK.items() if task in self.tasks) + coupling_terms
        self.term_trackers = [keras.metrics.Mean(name=f"loss_{t}") for t in self.term_names]
        # Streaming metrics of the tasks the network has (None for the others).
        has = set(self.tasks)
        self.valence_ccc = StreamingCCC(dimension=0, name="ccc_valence") if "va" in has else None
        self.arousal_ccc = StreamingCCC(dimension=1, name="ccc_arousal") if "va" in has else None
        self.expr_accuracy = keras.metrics.SparseCategoricalAccuracy(name="expr_accuracy") if "expr" in has else None
        self.au_f1 = MaskedAUF1(name="au_f1") if "au" in has else None

    def call(self, images, training=False):
        return self.network(images, training=training)

    def loss_terms(self, targets, outputs) -> dict:
        """Every `MultiTaskLoss` term (unscaled) for a batch; targets of absent tasks are masked out."""
        targets, outputs = self._complete(targets, outputs)
        return self.multitask_loss(targets, outputs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(y, y_pred)
        # Weighted by the batch size, as Keras weighs `loss`: an evaluation over a dataset of unknown length ends
        # with an empty batch, which must not count as a batch of zero loss.
        batch = ops.cast(ops.shape(tf.nest.flatten(x)[0])[0], "float32") if x is not None else 1.0
        for name, tracker in zip(self.term_names, self.term_trackers):
            tracker.update_state(terms[name], sample_weight=batch)
        total = terms["loss"]
        if self.losses:
            total = total + ops.sum(self.losses)
        # Gradients are summed over replicas; the base train_step unscales this again for the `loss` log.
        return total / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, total.dtype)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        from fbnet_tf.metrics import global_batch

        # Over the global batch (all replicas' rows, the same on each): see `metrics.global_batch`.
        y, y_pred = global_batch(({k: y[k] for k in ("expr", "va", "va_mask", "au", "au_mask")}, dict(y_pred)))
        if self.valence_ccc is not None:
            self.valence_ccc.update_state(y["va"], y_pred["valence_arousal"], y["va_mask"])
            self.arousal_ccc.update_state(y["va"], y_pred["valence_arousal"], y["va_mask"])
        if self.expr_accuracy is not None:  # over the images with an expression label only
            labelled = ops.cast(ops.reshape(y["expr"], (-1,)) >= 0, "float32")
            self.expr_accuracy.update_state(ops.maximum(y["expr"], 0), y_pred["expression_logits"],
                                            sample_weight=labelled)
        if self.au_f1 is not None:
            self.au_f1.update_state(y["au"], ops.sigmoid(y_pred["au_logits"]), y["au_mask"])
        return self.get_metrics_result()

    def _complete(self, targets, outputs):
        """Mask the targets of tasks without a head and give the loss zeros for their outputs."""
        targets, outputs = dict(targets), dict(outputs)
        batch = ops.shape(targets["va_mask"])[0]
        if "va" not in self.tasks:
            targets["va_mask"] = ops.zeros_like(targets["va_mask"])
            outputs["valence_arousal"] = ops.zeros((batch, len(VA_NAMES)))
        if "expr" not in self.tasks:
            targets["expr"] = -ops.ones_like(targets["expr"])
            outputs["expression_logits"] = ops.zeros((batch, len(EXPRESSIONS)))
        if "au" not in self.tasks:
            targets["au_mask"] = ops.zeros_like(targets["au_mask"])
            outputs["au_logits"] = ops.zeros((batch, len(AUS)))
        return targets, outputs


# --------------------------------------------------------------------------------------------- from a config

def build_network(model_config) -> FaceBehaviorNet:
    """A `FaceBehaviorNet` from a `config.ModelConfig` (or a full `ExperimentConfig`), with the VGGFace weights
    loaded into the conv layers when `weights` names a file."""
    from fbnet_tf.models.vggface import load_vggface_weights

    cfg = getattr(model_config, "model", model_config)
    backbone = VGGFaceBackbone(image_size=cfg.image_size, width=cfg.width,
                               preprocessing=cfg.resolved_preprocessing())
    if cfg.weights:
        load_vggface_weights(backbone, cfg.weights)
    return FaceBehaviorNet(backbone, fc_units=cfg.fc_units, dropout=cfg.dropout, tasks=cfg.tasks)


def build_inference_model(config) -> keras.Model:
    """The inference model (see `inference_model`) for a config: images in, named probabilities out."""
    return inference_model(build_network(config))


def build_trainer(config, network: FaceBehaviorNet | None = None, stage: str | None = None) -> FaceBehaviorNetTrainer:
    """A trainer from an `ExperimentConfig` (its model and loss sections); not compiled. One stage: all tasks at
    once."""
    import dataclasses

    from fbnet_tf.losses import MultiTaskLoss

    network = network if network is not None else build_network(config.model)
    loss = MultiTaskLoss(**dataclasses.asdict(config.loss))
    return FaceBehaviorNetTrainer(network, loss)


def stage_names(config) -> list[str]:
    """FaceBehaviorNet trains every task at once: one stage."""
    return ["joint"]


def training_data(config, stage, strategy):
    """The three-stream pipeline (`fbnet_tf.data.training_dataset`) over `data.record_dirs`."""
    from fbnet_tf.train import datasets

    return datasets(config, strategy)
