"""One experiment config that the training CLI, a notebook and the tests all build from.

Nested dataclasses (data, model, loss, trainer, runtime) in the TF Model Garden manner: a named experiment gives a
starting point, a YAML file and `key=value` overrides (dotted keys, values parsed as YAML) refine it, and the resolved
config is written into the run directory so the run can be reproduced from its own folder.

    cfg = config.experiment("soft_coannotation_distr_matching_du2014")
    cfg = config.override(cfg, ["trainer.epochs=5", "model.preset=small"])
    config.save(cfg, "runs/x/config.yaml"); config.load("runs/x/config.yaml") == cfg
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

TASKS = ("va", "expr", "au")
COUPLINGS = ("none", "coannotation", "soft_coannotation", "distribution_matching",
             "soft_coannotation+distribution_matching")


@dataclass
class DataConfig:
    """Where the TFRecords are and how batches are drawn (sizes are GLOBAL, over all replicas)."""

    # Folders of TFRecord shards (one per database). A run stores them resolved (absolute: the run evaluates and
    # exports from any folder) and, beside them, `record_dirs_given`: the same folders as the user wrote them.
    record_dirs: list[str] = field(default_factory=list)
    record_dirs_given: list[str] = field(default_factory=list)
    batch_size: int = 751  # the paper's 401 VA + 247 AU + 103 EXPR
    validation_batch_size: int = 256
    validation: bool = True  # evaluate on the `validation` split after each epoch when the records have one
    augment: bool = True
    deterministic: bool = False
    seed: int = 0


@dataclass
class ModelConfig:
    """The network. `preset` names the starting sizes (models/presets.py); the fields below are what is built."""

    preset: str = "paper"
    image_size: int = 96
    width: float = 1.0  # multiplier on VGG-FACE's 64..512 conv filters; 1.0 to load the published weights
    fc_units: int = 4096
    dropout: float = 0.5
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # a subset gives a single-task baseline
    preprocessing: str = "auto"  # "paper" ([-1, 1]), "vggface" (BGR minus mean), "auto": vggface iff weights
    weights: str | None = None  # path of rcmalli_vggface_tf_(notop_)vgg16.h5 to initialise the conv layers

    def resolved_preprocessing(self) -> str:
        if self.preprocessing == "auto":
            return "vggface" if self.weights else "paper"
        return self.preprocessing


@dataclass
class LossConfig:
    """Arguments of `fbnet_tf.losses.MultiTaskLoss` (eq. 1 plus the coupling terms)."""

    lambda_au: float = 1.0
    lambda_va: float = 1.0
    coupling: str = "none"
    relatedness: str = "du2014"  # "du2014", "affwild2" or a table file path
    temperature: float = 1.0
    reweight: bool = True
    dm_variant: str = "membership"
    dm_form: str = "bernoulli"
    coupling_weight: float = 1.0
    coannotation_missing: str = "absent"  # required-but-unannotated AUs count as absent ("ignore": judge the rest)
    dm_skip_unlinked: bool = False  # True: AUs no expression links to (AU14 in du2014) leave distribution matching
    # Soft co-annotation, an AU of e the image does not annotate: "absent" (y = 0, weight kept in the denominator:
    # the paper's formula read literally) or "ignore" (left out of numerator and denominator).
    soft_coannotation_unannotated: str = "absent"


@dataclass
class TrainerConfig:
    """The optimisation: Adam at the paper's 1e-4 (`fbnet_tf.optimizers.FusedAdam`, Keras's Adam in one pass)."""

    epochs: int = 20
    learning_rate: float = 1e-4
    steps_per_epoch: int | None = None  # None: one pass over the largest stream, as the pipeline computes
    validation_steps: int | None = None  # None: the whole validation split
    jit_compile: str | bool = "auto"  # "auto": XLA on GPU only (on CPU it is slower, 8.9 vs 10.8 img/s)
    verbose: str | int = "auto"  # Keras progress: "auto", 0 silent, 1 bar, 2 one line per epoch


@dataclass
class RuntimeConfig:
    """Where the run executes."""

    strategy: str = "auto"  # "auto": multi-worker if TF_CONFIG, mirrored if >1 GPU, else default; or name one
    seed: int = 0
    intra_op_threads: int = 0  # 0 leaves TensorFlow's default
    inter_op_threads: int = 0


@dataclass
class ExperimentConfig:
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> "ExperimentConfig":
        """Raise ValueError naming the field for a value the code cannot run with."""
        bad = [t for t in self.model.tasks if t not in TASKS]
        if bad or not self.model.tasks:
            raise ValueError(f"model.tasks={self.model.tasks}: expected a non-empty subset of {list(TASKS)}")
        if self.loss.coupling not in COUPLINGS:
            raise ValueError(f"loss.coupling={self.loss.coupling!r}: expected one of {list(COUPLINGS)}")
        if self.loss.coupling != "none" and not {"expr", "au"} <= set(self.model.tasks):
            raise ValueError(f"loss.coupling={self.loss.coupling!r} couples expressions and AUs, but "
                             f"model.tasks={self.model.tasks} lacks one of them; use coupling=none")
        if self.model.preprocessing not in ("auto", "paper", "vggface"):
            raise ValueError(f"model.preprocessing={self.model.preprocessing!r}: expected auto, paper or vggface")
        if self.model.image_size < 32:
            raise ValueError(f"model.image_size={self.model.image_size}: VGG-FACE halves it 5 times, need >= 32")
        if self.model.weights and self.model.width != 1.0:
            raise ValueError(f"model.weights is set but model.width={self.model.width}: the published VGG-FACE "
                             "weights exist for width 1.0 only")
        if str(self.trainer.jit_compile) not in ("auto", "True", "False"):
            raise ValueError(f"trainer.jit_compile={self.trainer.jit_compile!r}: expected auto, true or false")
        return self


# --------------------------------------------------------------------------------------------- paths

def resolve_record_dirs(cfg: ExperimentConfig, base: str | os.PathLike | None = None) -> ExperimentConfig:
    """`cfg` with `data.record_dirs` absolute (relative ones taken from `base`, default the working folder) and
    `data.record_dirs_given` holding each folder as the user wrote it (kept from an earlier resolution when the
    folder is still the one it names). A folder that does not exist raises FileNotFoundError naming it and the
    folder it was resolved from."""
    base = Path(base if base is not None else os.getcwd()).absolute()
    given_before = cfg.data.record_dirs_given if len(cfg.data.record_dirs_given) == len(cfg.data.record_dirs) \
        else [None] * len(cfg.data.record_dirs)
    resolved, given, missing = [], [], []
    for directory, spelled in zip(cfg.data.record_dirs, given_before):
        path = Path(os.path.normpath(base / os.path.expanduser(str(directory))))
        written = str(directory)
        if spelled and os.path.isabs(written) and Path(written).parts[-len(Path(spelled).parts):] == \
                Path(os.path.normpath(spelled)).parts:
            written = spelled  # already resolved: keep the user's spelling
        resolved.append(str(path))
        given.append(written)
        if not path.is_dir():
            missing.append(f"{written!r} (resolved from {base} to {path})")
    if missing:
        raise FileNotFoundError(f"data.record_dirs: no such directory: {'; '.join(missing)}")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, record_dirs=resolved, record_dirs_given=given))


# --------------------------------------------------------------------------------------------- dict / YAML

def to_dict(cfg: ExperimentConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: Mapping[str, Any], base: ExperimentConfig | None = None, *,
              source: str = "config") -> ExperimentConfig:
    """A config from nested dicts (missing keys keep `base`'s values). Unknown keys raise, naming them."""
    cfg = base if base is not None else ExperimentConfig()
    return _merge(cfg, values, source, prefix="")


def _merge(obj, values: Mapping[str, Any], source: str, prefix: str):
    if not isinstance(values, Mapping):
        raise ValueError(f"{source}: {prefix.rstrip('.') or 'top level'} should be a mapping, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"{source}: unknown key '{prefix}{key}'; expected one of {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value or {}, source, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(current, value, f"{prefix}{key}", source)
    return dataclasses.replace(obj, **changes)


def _coerce(current, value, key: str, source: str):
    # YAML reads "1e-4" as a string and 3 where 3.0 was meant: coerce to the default's type.
    if value is None or current is None:
        return value
    if isinstance(current, bool) and isinstance(value, bool):
        return value
    if isinstance(current, float) and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: {key}={value!r} is not a number") from None
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(current, list) and isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(current, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def load(path: str | os.PathLike, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Read a YAML config (a full resolved one, or a partial one applied over `base` or `experiment:` in it)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}, line 1: expected a mapping of sections (data, model, loss, trainer, runtime)")
    values = dict(values)
    if "experiment" in values:  # a partial file may start from a named experiment
        base = experiment(values.pop("experiment"))
    return from_dict(values, base, source=str(path)).validate()


def save(cfg: ExperimentConfig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def override(cfg: ExperimentConfig, assignments: Iterable[str]) -> ExperimentConfig:
    """Apply `section.key=value` strings (value parsed as YAML: `5`, `1e-4`, `[va, au]`, `null`, `true`).

    Setting `model.preset` first resets the model sizes to that preset, so later keys still win.
    """
    for text in assignments:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {text!r}: expected key=value, e.g. trainer.epochs=5")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if key == "model.preset":
            cfg = with_model_preset(cfg, value)
            continue
        nested: dict = {}
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        cfg = from_dict(nested, cfg, source=f"--set {text}")
    return cfg.validate()


# --------------------------------------------------------------------------------------------- experiments

def with_model_preset(cfg: ExperimentConfig, preset: str) -> ExperimentConfig:
    """`cfg` with the model sizes of a preset (paper, small, tiny), keeping tasks, weights and preprocessing."""
    from fbnet_tf.models.presets import MODEL_PRESETS  # plain dicts; imports no TensorFlow

    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; expected one of {sorted(MODEL_PRESETS)}")
    sizes = MODEL_PRESETS[preset]["config"]
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, preset=preset, **sizes))


def experiment(name: str) -> ExperimentConfig:
    """A named experiment: `demo`, a Table 2 row `<coupling>_<relatedness>` or a single-task baseline."""
    from fbnet_tf.models.presets import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}")
    spec = EXPERIMENTS[name]
    cfg = with_model_preset(ExperimentConfig(name=name), spec.get("model", {}).get("preset", "paper"))
    return from_dict(spec, cfg, source=f"experiment {name}").validate()


def experiment_names() -> list[str]:
    from fbnet_tf.models.presets import EXPERIMENTS

    return sorted(EXPERIMENTS)
