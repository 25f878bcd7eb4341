"""The run directory: everything a training run writes, in one folder from which it can be resumed or reproduced.

    <run_dir>/config.yaml     the resolved ExperimentConfig
    <run_dir>/checkpoints/    the network's weights: last.weights.h5 every epoch, best.weights.h5 on the lowest val_loss
    <run_dir>/backup/         keras.callbacks.BackupAndRestore state (weights, optimizer, epoch) for resuming
    <run_dir>/logs/           TensorBoard
    <run_dir>/history.csv     one row per finished epoch (CSVLogger)
    <run_dir>/model.keras     the final inference model (image -> valence_arousal, expression, action_units)
    <run_dir>/stages/<n>-<name>/   a staged family's stage (FATAUVA-Net): a run directory of its own, plus
                              model.weights.h5, the network's weights when the stage ended
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fbnet_tf import config as config_lib

CONFIG_FILE = "config.yaml"
CHECKPOINTS_DIR = "checkpoints"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def backup(self) -> Path:
        return self.root / BACKUP_DIR

    @property
    def logs(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    def create(self) -> "RunDir":
        for folder in (self.root, self.checkpoints, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def run_dir(path: str | os.PathLike) -> RunDir:
    return RunDir(Path(path))


def load_config(run_dir_path: str | os.PathLike) -> config_lib.ExperimentConfig:
    """The resolved config a run was trained with (its `config.yaml`)."""
    path = run_dir(run_dir_path).config
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.yaml; is {run_dir_path} a run directory of fbnet_tf.train?")
    return config_lib.load(path)


def load_inference_model(run_dir_or_file: str | os.PathLike):
    """The inference model of a run (image -> named probabilities), as a `keras.Model`.

    Accepts a run directory (its `model.keras`), a `.keras` file, or a checkpoint `*.weights.h5` inside a run's
    `checkpoints/` (the network is rebuilt from the run's config and the weights loaded into it).
    """
    import keras

    from fbnet_tf.models import register_serializables

    register_serializables()
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = run_dir(path).model
        if not path.is_file():
            checkpoints = sorted(str(p) for p in (path.parent / CHECKPOINTS_DIR).glob("*.weights.h5"))
            raise FileNotFoundError(f"{path}: no final model yet (training unfinished?); " + (
                f"pass a checkpoint instead (--model {checkpoints[0]})" if checkpoints
                else "and no checkpoint either: no epoch has finished"))
    if path.name.endswith(".weights.h5"):
        return _from_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file (expected a run dir, a .keras or a .weights.h5)")
    return keras.models.load_model(path, compile=False)


def _from_checkpoint(path: Path):
    from fbnet_tf.models.registry import family

    # checkpoints/<x>.weights.h5 of a run or of a stage (stages/<n>-<name>/), or a stage's final model.weights.h5
    run_root = path.parent if (path.parent / CONFIG_FILE).is_file() else path.parent.parent
    cfg = load_config(run_root)
    cfg = config_lib.override(cfg, ["model.weights=null"])  # the checkpoint holds every weight
    models = family(cfg)
    network = models.build_network(cfg.model)
    network.load_weights(path)
    return models.inference_model(network)


STAGES_DIR = "stages"
STAGE_WEIGHTS = "model.weights.h5"


def stage_dir(run_dir_path: str | os.PathLike, number: int, name: str) -> Path:
    """`<run_dir>/stages/<n>-<name>`: one stage of a staged family, itself a run directory."""
    return Path(run_dir_path) / STAGES_DIR / f"{number}-{name}"


def stage_weights(run_dir_path: str | os.PathLike, number: int, name: str) -> Path:
    """The final weights of a finished stage (the whole network after it)."""
    return stage_dir(run_dir_path, number, name) / STAGE_WEIGHTS


# ------------------------------------------------------------------------------------------------ resuming

BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"
PREVIOUS = ".bkp"  # BackupAndRestore(double_checkpoint=True) keeps the state before the last one under this suffix


def completed_epochs(run_dir_path: str | os.PathLike) -> int:
    """Epochs whose end state BackupAndRestore has saved (0 for a fresh run): where a rerun continues."""
    metadata = run_dir(run_dir_path).backup / BACKUP_METADATA
    if not metadata.is_file():
        return 0
    return int(json.loads(metadata.read_text())["epoch"])


def repair_backup(run_dir_path: str | os.PathLike) -> str | None:
    """Make the backup loadable after a kill in the middle of writing it.

    A kill while BackupAndRestore writes leaves a truncated weights file or metadata. Then the previous state
    (kept by `double_checkpoint=True`) replaces both; without one the backup is dropped and the run starts over.
    Returns what was done (None when the backup was fine or absent).
    """
    import h5py

    backup = run_dir(run_dir_path).backup
    weights, metadata = backup / BACKUP_WEIGHTS, backup / BACKUP_METADATA
    if not metadata.is_file() and not weights.is_file():
        return None
    if _readable(weights, metadata, h5py):
        return None
    previous_weights, previous_metadata = (Path(f"{p}{PREVIOUS}") for p in (weights, metadata))
    if _readable(previous_weights, previous_metadata, h5py):
        for source, target in ((previous_weights, weights), (previous_metadata, metadata)):
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(source.read_bytes())
            os.replace(tmp, target)
        return f"{backup}: the last backup was cut short; restored the one before it"
    for path in (weights, metadata, previous_weights, previous_metadata):
        path.unlink(missing_ok=True)
    return f"{backup}: unreadable backup and no previous one; starting over"


def copy_backup(source_run_dir: str | os.PathLike, run_dir_path: str | os.PathLike) -> None:
    """Make `run_dir_path`'s backup a copy of `source_run_dir`'s (a multi-worker run's workers resume from the
    chief's); without a source backup, remove the target's (the chief starts over, so must every worker)."""
    source, target = run_dir(source_run_dir).backup, run_dir(run_dir_path).backup
    target.mkdir(parents=True, exist_ok=True)
    for name in (BACKUP_WEIGHTS, BACKUP_METADATA):
        for path in (source / name, source / f"{name}{PREVIOUS}"):
            copy = target / path.name
            if path.is_file():
                tmp = copy.with_name(copy.name + ".tmp")
                tmp.write_bytes(path.read_bytes())
                os.replace(tmp, copy)
            else:
                copy.unlink(missing_ok=True)


def _readable(weights: Path, metadata: Path, h5py) -> bool:
    try:
        int(json.loads(metadata.read_text())["epoch"])
        with h5py.File(weights, "r") as handle:
            handle.visit(lambda name: None)  # walks every object header
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def trim_history(run_dir_path: str | os.PathLike, epochs: int) -> int:
    """Drop rows of `history.csv` for epochs >= `epochs` (a kill can land between the CSV row and the backup, and
    the resumed run logs that epoch again). Returns the number of rows kept."""
    path = run_dir(run_dir_path).history
    if not path.is_file():
        return 0
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
        fields = rows and list(rows[0].keys())
    kept = [row for row in rows if _epoch(row) is not None and _epoch(row) < epochs and None not in row.values()]
    if len(kept) == len(rows):
        return len(kept)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        if kept:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
    os.replace(tmp, path)
    if not kept:
        path.unlink()  # CSVLogger writes the header again when the file is absent
    return len(kept)


def _epoch(row: dict) -> int | None:
    try:
        return int(row["epoch"])
    except (KeyError, TypeError, ValueError):  # a row cut short by a kill
        return None


def best_logged(run_dir_path: str | os.PathLike, column: str) -> float | None:
    """The lowest value of `column` in `history.csv` (None without one): a resumed "best" checkpoint must beat it."""
    path = run_dir(run_dir_path).history
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        values = [_number(row.get(column)) for row in csv.DictReader(handle)]
    values = [v for v in values if v is not None]  # CSVLogger writes "NA" for epochs without validation
    return min(values) if values else None


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value else None


def write_json(path, value) -> None:
    """Write a result file atomically (a temporary file renamed over it): a crash never leaves it half written."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1)
    os.replace(temporary, path)
