"""Training under `tf.distribute.MultiWorkerMirroredStrategy` (several machines, TF_CONFIG): a custom loop.

Keras 3's `model.fit` does not run under MultiWorkerMirroredStrategy with TensorFlow 2.21 (keras-team/keras#20585:
"Attempt to convert a value (PerReplica...)", then "Invalid reduction dimension 0"). `fit` here does what
`model.fit` does for this project, with the same pieces: the trainer's own `compute_loss` and `compute_metrics`,
its optimizer, and the same Keras callbacks (NaN stop, checkpoints, CSV history, TensorBoard, BackupAndRestore),
driven through a `keras.callbacks.CallbackList`. One step is `strategy.run` of the replica step inside a
`tf.function`: each replica computes the loss of its rows, every loss term and metric over the GLOBAL batch (the
losses' sums and the metrics' rows are all-reduced / all-gathered across workers: `losses.global_sums`,
`metrics.global_batch`), and the optimizer sums the replicas' gradients. `model.fit` stays the single-machine path
(default and MirroredStrategy).

Every worker runs the same calls in the same order (saving reads variables collectively): the chief writes the run
directory, the others the same files into a folder of their own (`train.worker_run_dir`).
"""
from __future__ import annotations

import logging
from typing import Sequence

log = logging.getLogger("fbnet_tf.distributed")


def is_multi_worker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy (of any number of workers): the strategy `model.fit` cannot run."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def barrier(strategy) -> None:
    """Return once every worker has called it (a collective sum): e.g. after the chief repaired its backup."""
    import tensorflow as tf

    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


def train_step_function(trainer, strategy):
    """The compiled step: `step(iterator) -> logs` of the first local replica (every replica holds the global
    values), as `model.fit`'s train step computes them."""
    import tensorflow as tf

    loss_tracker = next(m for m in trainer.metrics if m.name == "loss")
    replicas = strategy.num_replicas_in_sync

    def replica_step(images, targets):
        with tf.GradientTape() as tape:
            outputs = trainer(images, training=True)
            # Divided by the number of replicas (the trainer's compute_loss): the optimizer sums the gradients.
            loss = trainer.compute_loss(images, targets, outputs, training=True)
            scaled = trainer.optimizer.scale_loss(loss)  # loss scaling under mixed precision, else the loss
        variables = trainer.trainable_variables
        gradients = tape.gradient(scaled, variables)
        trainer.optimizer.apply_gradients(zip(gradients, variables))
        loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(images)[0])
        return trainer.compute_metrics(images, targets, outputs)

    @tf.function
    def step(iterator):
        logs = strategy.run(replica_step, args=next(iterator))
        return {name: strategy.experimental_local_results(value)[0] for name, value in logs.items()}

    return step


def evaluate(evaluator, dataset, steps: int | None = None) -> dict:
    """{"val_loss", "val_<metric>": ...} of `evaluator` (a trainer built outside the strategy's scope around the
    trained network) over `dataset`, a plain local one: as `model.fit`'s validation computes them. Every worker
    evaluates the whole split, locally, without collectives, so every worker logs the same values."""
    import keras
    import tensorflow as tf

    total = keras.metrics.Mean(name="loss")

    @tf.function(reduce_retracing=True)
    def test_step(images, targets):
        outputs = evaluator(images, training=False)
        loss = evaluator.compute_loss(images, targets, outputs, training=False)
        total.update_state(loss, sample_weight=tf.shape(images)[0])
        evaluator.compute_metrics(images, targets, outputs)

    evaluator.reset_metrics()
    for images, targets in dataset.take(steps) if steps else dataset:
        test_step(images, targets)
    results = {"loss": total.result(), **evaluator.get_metrics_result()}
    return {f"val_{name}": float(value) for name, value in results.items()}


def fit(trainer, strategy, dataset, *, epochs: int, steps_per_epoch: int, callbacks: Sequence = (),
        verbose="auto", validation_data=None, validation_steps: int | None = None, evaluator=None):
    """`trainer.fit(dataset, epochs=, steps_per_epoch=, callbacks=, validation_data=)` under `strategy`, for a
    compiled trainer built in `strategy.scope()`; `dataset` a distributed dataset
    (`strategy.distribute_datasets_from_function`) of per-replica `(images, targets)` batches; `validation_data` a
    local dataset that `evaluator` (see `evaluate`) scores after each epoch. Starts at the epoch a
    BackupAndRestore callback restores. Returns the
    `keras.callbacks.History` of this call's epochs; raises RuntimeError saying what to do when another worker
    dies."""
    import keras
    import numpy as np
    import tensorflow as tf

    history = keras.callbacks.History()
    progress = verbose not in (0, "0")
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history], add_progbar=progress, model=trainer, epochs=epochs, steps=steps_per_epoch,
        verbose=1 if verbose in ("auto", 1) else 2)
    with strategy.scope():  # the optimizer's slots, before a backup is loaded into them
        trainer.optimizer.build(trainer.trainable_variables)
    step = train_step_function(trainer, strategy)
    trainer.stop_training = False
    trainer._initial_epoch = None  # BackupAndRestore sets it in on_train_begin, as model.fit reads it
    callback_list.on_train_begin()
    initial_epoch = trainer._initial_epoch or 0
    if initial_epoch:
        log.info("resuming after epoch %d of %d", initial_epoch, epochs)
    iterator = iter(dataset)
    logs = {}
    epoch = initial_epoch
    try:
        for epoch in range(initial_epoch, epochs):
            trainer.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for batch in range(steps_per_epoch):
                callback_list.on_train_batch_begin(batch)
                logs = {name: float(np.asarray(value)) for name, value in step(iterator).items()}
                callback_list.on_train_batch_end(batch, logs)
                if trainer.stop_training:
                    break
            if validation_data is not None and not trainer.stop_training:
                logs.update(evaluate(evaluator, validation_data, validation_steps))
            callback_list.on_epoch_end(epoch, dict(logs))
            if trainer.stop_training:
                break
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:  # a peer died (killed, preempted)
        raise RuntimeError(f"another worker of the cluster stopped during epoch {epoch + 1} "
                           f"({str(error).splitlines()[0][:200]}...); restart every worker with the same command: "
                           "they resume from the chief's backup at its last finished epoch") from None
    callback_list.on_train_end(logs)
    return history
