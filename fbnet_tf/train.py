"""Train FaceBehaviorNet (or a single-task baseline) or FATAUVA-Net (in its stages) with `model.fit` into a run
directory.

    python -m fbnet_tf.train                                   # the demo: = --experiment demo --run-dir runs/demo
    python -m fbnet_tf.train --experiment demo --run-dir X     # the same demo into X (+ any --set overrides)
    python -m fbnet_tf.train --experiment soft_coannotation_distr_matching_du2014 \\
        --set data.record_dirs=[records/affectnet,records/disfa] --run-dir runs/fbnet
    python -m fbnet_tf.train --config my.yaml --set trainer.epochs=5 --set model.preset=small --run-dir runs/x

    python -m fbnet_tf.train --experiment fatauvanet --run-dir runs/fatauva [--stage 2] \\
        --set data.stage_record_dirs={attribute:[records/celeba],au:[records/bp4d,records/semaine],va:[records/affwild]}

Under MultiWorkerMirroredStrategy (TF_CONFIG set, several machines) the loop of `fbnet_tf.distributed` replaces
`model.fit`. A rerun with the same --run-dir resumes a killed run at the last finished epoch (BackupAndRestore).
The run dir holds config.yaml, checkpoints/, backup/, logs/ (TensorBoard), history.csv and, at the end,
model.keras.

A demo experiment (`demo`, `fatauvanet_demo`: `data.demo_world` set, record dirs inside it) first renders the demo
world's releases and builds their records where missing, and after training evaluates and exports the run: the
whole product, end to end, on data made on the spot. Pointed at other record dirs, it trains on them like any
experiment.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import math
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Sequence

from fbnet_tf import cli
from fbnet_tf import config as config_lib
from fbnet_tf import distributed, precision, runs

log = logging.getLogger("fbnet_tf.train")

DEMO_EXPERIMENT = "demo"  # what `python -m fbnet_tf.train` with no arguments runs, into runs/<experiment>


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; the message names it."""


def resolve_config(config_file: str | None = None, experiment: str | None = None,
                   overrides: Sequence[str] = ()) -> config_lib.ExperimentConfig:
    """Named experiment (default `no_coupling`), then the YAML file over it, then the `key=value` overrides."""
    cfg = config_lib.experiment(experiment or "no_coupling")
    if config_file:
        cfg = config_lib.load(config_file, base=cfg if experiment else None)
    return config_lib.override(cfg, overrides)


# ------------------------------------------------------------------------------------------- runtime choices

def configure_runtime(runtime: config_lib.RuntimeConfig) -> None:
    """Threads (only possible before TensorFlow runs its first op) and seeds."""
    import keras
    import tensorflow as tf

    try:
        if runtime.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(runtime.intra_op_threads)
        if runtime.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(runtime.inter_op_threads)
    except RuntimeError as err:  # TensorFlow already initialised in this process (a notebook, a test)
        log.warning("thread settings ignored: %s", err)
    keras.utils.set_random_seed(runtime.seed)


def make_strategy(name: str = "auto"):
    """"auto": MultiWorkerMirrored when TF_CONFIG is set, Mirrored with more than one GPU, else the default."""
    import tensorflow as tf

    if name == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        name = "multi_worker" if os.environ.get("TF_CONFIG") else "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"runtime.strategy={name!r}: expected auto, default, mirrored or multi_worker")


def worker_run_dir(strategy, run_dir: str | os.PathLike) -> Path:
    """The chief writes `run_dir`; other workers of a multi-worker run (which must save too: saving is collective)
    write `run_dir/workers/<type>-<id>`, so they never overwrite the chief's files, and remove it at the end."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type, task_id = getattr(resolver, "task_type", None), getattr(resolver, "task_id", 0)
    has_chief = bool(resolver and "chief" in resolver.cluster_spec().as_dict())
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and not has_chief)
    return Path(run_dir) if is_chief else Path(run_dir) / "workers" / f"{task_type}-{task_id}"


def use_jit(setting) -> bool:
    """XLA for `jit_compile="auto"` only on a GPU: on this CPU it is slower (8.9 vs 10.8 img/s, paper model)."""
    if str(setting) == "auto":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return str(setting) == "True"


# ------------------------------------------------------------------------------------------------ callbacks

def _stop_on_nan_callback(run: runs.RunDir):
    import keras
    import numpy as np

    class StopOnNaN(keras.callbacks.Callback):
        """Stop at the first batch whose logged loss terms are not finite, naming them. Raises before the epoch
        ends so that BackupAndRestore never saves the diverged weights."""

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            values = {k: float(np.asarray(v)) for k, v in logs.items() if k == "loss" or k.startswith("loss_")}
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                terms = [k[len("loss_"):] for k in bad if k != "loss"] or ["loss (total)"]
                raise TrainingDiverged(
                    f"loss term {', '.join(repr(t) for t in terms)} became "
                    f"{'NaN' if any(math.isnan(values[k]) for k in bad) else 'infinite'} at epoch "
                    f"{self._epoch + 1}, batch {batch + 1} (logged {', '.join(f'{k}={values[k]}' for k in bad)}); "
                    f"training stopped, {_saved_state(run)}")

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    return StopOnNaN()


def _saved_state(run: runs.RunDir) -> str:
    """Where the last good state of a stopped run is, naming only files that exist."""
    done = runs.completed_epochs(run.root)
    if not done:
        return "no epoch had finished, so nothing was saved"
    last = run.checkpoints / "last.weights.h5"
    return (f"the state after epoch {done} is in {run.backup} (a rerun resumes from it)"
            + (f" and its weights in {last}" if last.is_file() else ""))


def _resume_callback(backup_dir: Path, learning_rate: float):
    import keras

    class ResumeAsConfigured(keras.callbacks.BackupAndRestore):
        """BackupAndRestore, then the config's learning rate over the restored optimizer: the backup holds the
        first run's rate, and a rerun with another `trainer.learning_rate` (written to config.yaml) trains at it."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            optimizer = self.model.optimizer
            restored = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            if not math.isclose(restored, learning_rate, rel_tol=1e-6):  # the optimizer holds it as float32
                log.info("learning rate %g (trainer.learning_rate) replaces the backup's %g", learning_rate, restored)
                optimizer.learning_rate = learning_rate

    return ResumeAsConfigured(str(backup_dir), delete_checkpoint=False, double_checkpoint=True)


def callbacks_for(run: runs.RunDir, *, validation: bool, best_val_loss: float | None = None,
                  learning_rate: float | None = None) -> list:
    """NaN guard, checkpoints, CSV, TensorBoard, then the backup (restoring, then setting `learning_rate`).

    The backup runs LAST at each epoch end: a kill between the CSV row and the backup makes the rerun repeat that
    epoch, and `runs.trim_history` drops its old row first; the other order would lose the row for good.
    """
    import keras

    class NetworkCheckpoint(keras.callbacks.ModelCheckpoint):
        """Saves the network's weights only: the optimizer state (2x more for Adam) lives in backup/ already."""

        def set_model(self, model):
            super().set_model(getattr(model, "network", model))

    callbacks = [_stop_on_nan_callback(run),
                 NetworkCheckpoint(str(run.checkpoints / "last.weights.h5"), save_weights_only=True)]
    if validation:
        callbacks.append(NetworkCheckpoint(str(run.checkpoints / "best.weights.h5"), monitor="val_loss",
                                           save_best_only=True, save_weights_only=True,
                                           initial_value_threshold=best_val_loss))
    callbacks.append(keras.callbacks.CSVLogger(str(run.history), append=True))
    if importlib.util.find_spec("tensorboard") is not None:  # tensorflow-cpu 2.21 no longer pulls it in
        callbacks.append(keras.callbacks.TensorBoard(str(run.logs), update_freq="epoch"))
    else:
        log.warning("tensorboard is not installed: no TensorBoard logs in %s (pip install tensorboard)", run.logs)
    if learning_rate is None:
        callbacks.append(keras.callbacks.BackupAndRestore(str(run.backup), delete_checkpoint=False,
                                                          double_checkpoint=True))
    else:
        callbacks.append(_resume_callback(run.backup, learning_rate))
    return callbacks


# ------------------------------------------------------------------------------------------------- datasets

def pipeline_arguments(cfg: config_lib.ExperimentConfig) -> dict:
    """The keyword arguments of `data.training_dataset` (besides record dirs and input context) for a config."""
    return dict(batch_size=cfg.data.batch_size, image_size=cfg.model.image_size, split="train",
                tasks=tuple(cfg.model.tasks), augment=cfg.data.augment, deterministic=cfg.data.deterministic,
                seed=cfg.data.seed, au_label_fraction=cfg.data.au_label_fraction)


def datasets(cfg: config_lib.ExperimentConfig, strategy):
    """(training dataset, steps per epoch, validation dataset or None) from the config's record dirs."""
    from fbnet_tf import data

    dirs = cfg.data.record_dirs
    if not dirs:
        raise ValueError("data.record_dirs is empty: give the TFRecord folders, e.g. "
                         "--set data.record_dirs=[records/affectnet,records/disfa]")
    kwargs = pipeline_arguments(cfg)
    if strategy.num_replicas_in_sync > 1:
        # Each worker reads its own shard in per-replica batches (the pipeline splits the global batch).
        steps = {}

        def per_worker(context):
            dataset, steps["n"] = data.training_dataset(dirs, input_context=context, **kwargs)
            return dataset

        train_ds = strategy.distribute_datasets_from_function(per_worker)
        steps_per_epoch = steps.get("n") or data.training_dataset(dirs, **kwargs)[1]
    else:
        train_ds, steps_per_epoch = data.training_dataset(dirs, **kwargs)
    validation_ds = None
    if cfg.data.validation and any(data.record_files(d, "validation") for d in dirs):
        validation_ds = data.validation_dataset(dirs, batch_size=cfg.data.validation_batch_size,
                                                image_size=cfg.model.image_size)
    return train_ds, steps_per_epoch, validation_ds


# ---------------------------------------------------------------------------------------------------- train

def _check_inputs(cfg: config_lib.ExperimentConfig, own_pipeline: bool) -> None:
    """The files the config names exist (before the run dir is created)."""
    if cfg.model.weights and not Path(cfg.model.weights).is_file():
        raise config_lib.ConfigError(f"model.weights={cfg.model.weights!r}: no such file (expected "
                                     "rcmalli_vggface_tf_(notop_)vgg16.h5)")
    if not own_pipeline:
        return
    if not cfg.data.all_record_dirs():
        raise config_lib.ConfigError("data.record_dirs is empty: give the TFRecord folders, e.g. "
                                     "--set data.record_dirs=[records/affectnet,records/disfa]")


def _check_resumable(run: runs.RunDir, cfg: config_lib.ExperimentConfig, stage: str) -> None:
    done = runs.completed_epochs(run.root)
    if not run.config.is_file() or done == 0:
        return
    epochs, setting = _epochs(cfg, stage)
    if epochs < done:
        raise config_lib.ConfigError(f"{setting}={epochs}: the run in {run.root} has already finished {done} "
                                     f"epochs; ask for {done} or more, or use another --run-dir")
    previous = config_lib.to_dict(runs.load_config(run.root))
    current = config_lib.to_dict(cfg)
    changed = [f"{section}.{key}" for section in ("model", "loss") for key in current[section]
               if key != "weights" and previous[section][key] != current[section][key]]
    scaled = [c["trainer"]["mixed_precision"] == "mixed_float16" for c in (previous, current)]
    if scaled[0] != scaled[1]:  # a LossScaleOptimizer's backup holds other variables than a plain optimizer's
        changed.append("trainer.mixed_precision")
    if changed:
        raise config_lib.ConfigError(f"{run.config}: the run in {run.root} was started with different "
                                     f"{', '.join(changed)}; its backup cannot resume this config. "
                                     "Use another --run-dir")


def _epochs(cfg: config_lib.ExperimentConfig, stage: str) -> tuple[int, str]:
    """How many epochs `stage` trains for, and the setting that says so (a staged family's own, else the run's)."""
    if stage in cfg.trainer.stage_epochs:
        return int(cfg.trainer.stage_epochs[stage]), f"trainer.stage_epochs.{stage}"
    return int(cfg.trainer.epochs), "trainer.epochs"


@contextlib.contextmanager
def _damaged_shards_named(cfg: config_lib.ExperimentConfig):
    """A DataLossError from the record dirs becomes a RuntimeError naming the damaged shard."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.DataLossError as error:
        raise RuntimeError(_damaged_records(cfg, error)) from None


def _damaged_records(cfg: config_lib.ExperimentConfig, error) -> str:
    """One line naming the shard behind a DataLossError (TensorFlow's message names none)."""
    from fbnet_tf import data
    from fbnet_tf.records import damaged_record

    files = [f for d in cfg.data.all_record_dirs() for f in data.record_files(d, "*")]
    for path in files:
        damage = damaged_record(path)
        if damage:
            return f"{path}: {damage}; rebuild it with python -m tfrecords_builder (or remove its folder)"
    return (f"a TFRecord shard is damaged, but none of the {len(files)} shards of data.record_dirs shows it now: "
            f"{str(error).splitlines()[0]}")


def train(cfg: config_lib.ExperimentConfig, run_dir: str | os.PathLike, *, train_data=None, steps_per_epoch=None,
          validation_data=None, callbacks: Sequence = (), stage: int | None = None):
    """Train `cfg` into `run_dir` with `model.fit`; resume from it if a previous run was killed.

    By default the data come from the config's record dirs (the family's `training_data`). A notebook or a test may
    pass its own `train_data` (a tf.data.Dataset of (images, targets) batches) with `steps_per_epoch`, and
    `validation_data`. A family trained in stages (FATAUVA-Net: attribute, au, va) runs them in order, each a run
    directory of its own, `run_dir/stages/<n>-<name>/`, started from the previous stage's final weights and ending
    with its own in `model.weights.h5`; a finished stage is skipped on a rerun; `stage=N` runs only the N-th.
    The inference model of the last stage goes to `run_dir/model.keras`.
    Returns (trainer, keras History of this call's epochs) of the last stage run. Raises TrainingDiverged naming
    a NaN loss term.
    """
    from fbnet_tf.models import registry

    cfg = cfg.validate()
    _check_inputs(cfg, own_pipeline=train_data is None)
    precision.check_available(cfg.trainer.mixed_precision)
    if cfg.data.all_record_dirs():  # stored absolute: the run evaluates and exports from any folder
        cfg = config_lib.resolve_record_dirs(cfg)
    configure_runtime(cfg.runtime)
    strategy = make_strategy(cfg.runtime.strategy)
    root = worker_run_dir(strategy, run_dir)
    family = registry.family(cfg)
    names = list(family.stage_names(cfg))
    if len(names) > 1 and distributed.is_multi_worker(strategy):
        # Its trainer's losses and metrics are not reduced across workers (FaceBehaviorNet's are): refuse rather
        # than train something other than what one machine trains.
        raise config_lib.ConfigError(f"model.family={cfg.model.family}: a family trained in stages runs on one "
                                     "machine (runtime.strategy=default or mirrored); multi-worker training is "
                                     "FaceBehaviorNet's")
    given = dict(train_data=train_data, steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                 callbacks=callbacks)
    if stage is not None and not 1 <= stage <= len(names):
        raise ValueError(f"--stage {stage}: this model trains in {len(names)} stage(s): "
                         + ", ".join(f"{n} {name}" for n, name in enumerate(names, 1)))
    if len(names) == 1:
        run = runs.run_dir(root)
        trainer, history = _fit(cfg, run, family, names[0], strategy, chief_run=runs.run_dir(run_dir), **given)
        if root == Path(run_dir):
            family.inference_model(trainer.network).save(run.model)
            log.info("saved the inference model to %s", run.model)
        else:  # a worker's copies of the chief's files: only needed while it trains
            shutil.rmtree(root, ignore_errors=True)
            with contextlib.suppress(OSError):
                root.parent.rmdir()  # workers/, once the last worker is done
        return trainer, history

    runs.run_dir(root).create()
    config_lib.save(cfg, runs.run_dir(root).config)
    trainer = history = None
    for n, name in enumerate(names, 1):
        if stage is not None and n != stage:
            continue
        stage_run = runs.run_dir(runs.stage_dir(root, n, name))
        final = runs.stage_weights(root, n, name)
        if final.is_file():
            log.info("stage %d (%s) already finished: %s", n, name, final)
            continue
        previous = runs.stage_weights(root, n - 1, names[n - 2]) if n > 1 else None
        if previous is not None and not previous.is_file():
            raise ValueError(f"stage {n} ({name}) starts from stage {n - 1}'s weights, but {previous} does not "
                             f"exist: run --stage {n - 1} first")
        log.info("stage %d of %d: %s", n, len(names), name)
        trainer, history = _fit(cfg, stage_run, family, name, strategy, init_weights=previous,
                                chief_run=runs.run_dir(runs.stage_dir(run_dir, n, name)), **given)
        _save_weights_atomically(trainer.network, final)
        log.info("stage %d (%s) finished: %s", n, name, final)
    last = runs.stage_weights(root, len(names), names[-1])
    if last.is_file():
        network = trainer.network if trainer is not None and stage in (None, len(names)) else None
        if network is None:
            network = family.build_network(config_lib.override(cfg, ["model.weights=null"]).model)
            network.load_weights(last)
        family.inference_model(network).save(runs.run_dir(root).model)
        log.info("saved the inference model to %s", runs.run_dir(root).model)
    return trainer, history


def _save_weights_atomically(network, path: Path) -> None:
    tmp = path.with_name(f"partial-{path.name}")  # Keras wants the .weights.h5 ending
    network.save_weights(tmp)
    os.replace(tmp, path)


def _fit(cfg, run: runs.RunDir, family, stage: str, strategy, *, init_weights=None, train_data=None,
         steps_per_epoch=None, validation_data=None, callbacks: Sequence = (),
         chief_run: runs.RunDir | None = None):
    """One `model.fit` into `run` (resumed when its backup holds finished epochs): the whole of a jointly trained
    family, or one stage of a staged one. Under MultiWorkerMirroredStrategy the same with `distributed.fit`; a
    worker other than the chief writes `run` and resumes from `chief_run`'s backup."""
    from fbnet_tf.optimizers import FusedAdam

    run.create()
    repaired = runs.repair_backup(run.root)  # a kill may have cut the last backup short
    if repaired:
        log.warning(repaired)
    multi_worker = distributed.is_multi_worker(strategy)
    if multi_worker:
        # Every worker resumes from the chief's backup (a kill may have stopped the workers' own ones at different
        # epochs), once the chief has repaired it (the barrier).
        distributed.barrier(strategy)
        if chief_run is not None and chief_run.root != run.root:
            runs.copy_backup(chief_run.root, run.root)
    _check_resumable(run, cfg, stage)
    config_lib.save(cfg, run.config)

    own_pipeline = train_data is None
    if own_pipeline:
        with _damaged_shards_named(cfg):
            train_data, data_steps, validation_data = family.training_data(cfg, stage, strategy)
        steps_per_epoch = cfg.trainer.steps_per_epoch or data_steps
    else:
        steps_per_epoch = cfg.trainer.steps_per_epoch or steps_per_epoch
    epochs, _ = _epochs(cfg, stage)

    # Layers take the policy they are built under and keep it (their weights stay float32); the global policy is
    # restored at once so that nothing else in the process (a notebook's next model, a test) inherits it.
    with precision.policy(cfg.trainer.mixed_precision), strategy.scope():
        trainer = family.build_trainer(cfg, stage=stage)
        trainer.compile(optimizer=FusedAdam(cfg.trainer.learning_rate),
                        jit_compile=use_jit(cfg.trainer.jit_compile) and not multi_worker)
        trainer.build((None, cfg.model.image_size, cfg.model.image_size, 3))
    if init_weights is not None:  # the previous stage's result; a resumed backup overrides it
        trainer.network.load_weights(init_weights)

    # A kill may fall between an epoch's CSV row and its backup: keep only the epochs the backup holds.
    done = runs.completed_epochs(run.root)
    runs.trim_history(run.root, done)
    if done:
        log.info("resuming %s after epoch %d of %d", run.root, done, epochs)
    with warnings.catch_warnings():
        if own_pipeline:  # our training stream repeats forever; only the (finite) validation split "runs out"
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        all_callbacks = [*callbacks_for(run, validation=validation_data is not None,
                                        best_val_loss=runs.best_logged(run.root, "val_loss"),
                                        learning_rate=cfg.trainer.learning_rate), *callbacks]
        with _damaged_shards_named(cfg) if own_pipeline else contextlib.nullcontext():
            if multi_worker:  # model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585)
                if not own_pipeline:
                    train_data = strategy.experimental_distribute_dataset(train_data)
                # Validation: every worker scores the whole split locally, with a trainer of its own around the
                # trained network (metrics outside the strategy's scope, no collectives).
                evaluator = family.build_trainer(cfg, network=trainer.network, stage=stage) \
                    if validation_data is not None else None
                history = distributed.fit(trainer, strategy, train_data, epochs=epochs,
                                          steps_per_epoch=steps_per_epoch, callbacks=all_callbacks,
                                          verbose=cfg.trainer.verbose, validation_data=validation_data,
                                          validation_steps=cfg.trainer.validation_steps, evaluator=evaluator)
            else:
                history = trainer.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                      validation_data=validation_data,
                                      validation_steps=cfg.trainer.validation_steps, callbacks=all_callbacks,
                                      verbose=cfg.trainer.verbose)
    return trainer, history


# --------------------------------------------------------------------------------------------------- the CLI

def demo_record_dirs(cfg: config_lib.ExperimentConfig) -> list[str]:
    """The record dirs of `cfg` inside its demo world (`data.demo_world`): none for a config without one, or
    whose record dirs point at other data."""
    if not cfg.data.demo_world:
        return []
    root = Path(cfg.data.demo_world).resolve()
    return [d for d in cfg.data.all_record_dirs() if Path(d).resolve().is_relative_to(root)]


def prepare_demo_world(cfg: config_lib.ExperimentConfig) -> None:
    """Render and build the demo releases a demo experiment trains on (`data.demo_world`), where missing; raise
    RuntimeError naming the record dirs still missing after that."""
    from fbnet_tf import demo

    root, releases = cfg.data.demo_world, tuple(cfg.data.demo_releases)
    demo.prepare(root, releases=releases) if releases else demo.prepare(root)
    missing = [d for d in demo_record_dirs(cfg) if not (Path(d) / "manifest.json").is_file()]
    if missing:
        raise RuntimeError(f"the demo world in {root} has no records in {missing} (is its release among the demo "
                           f"world's, and its builder registered in tfrecords_builder?)")


def evaluate_and_export(run_dir: str | os.PathLike) -> None:
    """The end of a demo: `fbnet_tf.evaluate` and `fbnet_tf.export` on the trained run. RuntimeError naming the
    step(s) that failed (the trained run stays usable)."""
    failed = []
    for name in ("evaluate", "export"):
        module = importlib.import_module(f"fbnet_tf.{name}")
        log.info("running fbnet_tf.%s on %s", name, run_dir)
        try:
            code = module.main(["--run-dir", str(run_dir)])
        except Exception:  # say which step broke and go on to the next
            log.exception("fbnet_tf.%s failed on %s", name, run_dir)
            code = 1
        if code:
            failed.append(name)
    if failed:
        raise RuntimeError(f"the demo trained {run_dir}, but {' and '.join(failed)} failed (see above)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config file (a resolved config.yaml, or a partial one)")
    parser.add_argument("--experiment", help=f"named experiment, one of: {', '.join(config_lib.experiment_names())}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, dotted key, YAML value (e.g. trainer.epochs=5)")
    parser.add_argument("--run-dir", help="run directory (created; a rerun resumes it)")
    parser.add_argument("--stage", type=int, help="a staged model (FATAUVA-Net): run only stage N (1-based)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """0 trained, 1 training failed, 2 a usage error (an option or config value, before any work)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv or ["--experiment", DEMO_EXPERIMENT])
        cfg = resolve_config(args.config, args.experiment, args.overrides)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(config_lib.to_dict(cfg), sort_keys=False))
            return 0
        precision.check_available(cfg.trainer.mixed_precision)  # before the demo renders anything
        demo = bool(demo_record_dirs(cfg))
        run_dir = args.run_dir or (os.path.join("runs", cfg.name) if demo else None)
        if not run_dir:
            raise config_lib.ConfigError("--run-dir is required (the folder for config, checkpoints, logs and "
                                         "the model)")
        cli.quiet_tensorflow()
        if demo:
            prepare_demo_world(cfg)
        train(cfg, run_dir, stage=args.stage)
        if demo and runs.run_dir(run_dir).model.is_file():  # a staged demo's last stage has run
            evaluate_and_export(run_dir)
        return 0
    except config_lib.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return cli.USAGE
    except (TrainingDiverged, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return cli.FAILED


if __name__ == "__main__":
    sys.exit(main())
