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
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import yaml

TASKS = ("va", "expr", "au")
COUPLINGS = ("none", "coannotation", "soft_coannotation", "distribution_matching",
             "soft_coannotation+distribution_matching")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # Keras dtype policies (fbnet_tf.precision)


class ConfigError(ValueError):
    """A config value the code cannot run with: one line naming the key, the value and what is expected."""


@dataclass(frozen=True)
class Range:
    """The interval a number must lie in (`low`/`high` None: unbounded), checked with the field's type."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def __contains__(self, value) -> bool:
        return ((self.low is None or value > self.low or (value == self.low and not self.low_open))
                and (self.high is None or value < self.high or (value == self.high and not self.high_open)))

    def __str__(self) -> str:
        if self.high is None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        elif self.low is None:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return f"{text} ({self.why})" if self.why else text


def ranged(default, **bounds):
    """A dataclass field whose value must lie in `Range(**bounds)`."""
    return field(default=default, metadata={"range": Range(**bounds)})


@dataclass
class RebalanceConfig:
    """Re-sampling of a stage's training stream (paper 4.1.1; `fbnet_tf.data.rebalance`)."""

    au: bool = False  # over-sample images positive for rare AUs, under-sample the others
    # The positive rate each rarer AU is brought to (exact for one AU).
    au_target_rate: float = ranged(0.3, low=0, high=1, low_open=True, high_open=True)
    # The fraction of images without a rare positive AU that is kept.
    au_negative_keep: float = ranged(0.5, low=0, high=1, low_open=True)
    va: bool = False  # flatten the histogram of the quantised (-5..5) valence and arousal
    # 0: no change, 1: flat (per dimension; a record weighs the product of the two).
    va_strength: float = ranged(1.0, low=0)
    max_repeat: int = ranged(8, low=1)  # cap on the copies of one image


@dataclass
class DataConfig:
    """Where the TFRecords are and how batches are drawn (sizes are GLOBAL, over all replicas)."""

    # Folders of TFRecord shards (one per database). A run stores them resolved (absolute: the run evaluates and
    # exports from any folder) and, beside them, `record_dirs_given`: the same folders as the user wrote them.
    record_dirs: list[str] = field(default_factory=list)
    record_dirs_given: list[str] = field(default_factory=list)
    # A staged family's record dirs per stage name (FATAUVA-Net: attribute, au, va); record_dirs when absent.
    stage_record_dirs: dict = field(default_factory=dict)
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)
    # A demo experiment: render the demo world's `demo_releases` into this folder and build their records there
    # (`fbnet_tf.demo.prepare`) before training, where they are missing.
    demo_world: str | None = None
    demo_releases: list[str] = field(default_factory=list)
    batch_size: int = ranged(751, low=1)  # the paper's 401 VA + 247 AU + 103 EXPR
    validation_batch_size: int = ranged(256, low=1)
    validation: bool = True  # evaluate on the `validation` split after each epoch when the records have one
    augment: bool = True
    deterministic: bool = False
    # AU labels kept for this seeded fraction of the AU stream's images (1: all): coupling when AU labels are scarce.
    au_label_fraction: float = ranged(1.0, low=0, high=1, low_open=True)
    seed: int = ranged(0, low=0)

    def all_record_dirs(self) -> list[str]:
        """`record_dirs` and every stage's, each once, in order: what a run trained on."""
        stages = [d for dirs in self.stage_record_dirs.values() for d in (dirs or [])]
        return [str(d) for d in dict.fromkeys([*self.record_dirs, *stages])]


FAMILIES = ("facebehaviornet", "fatauvanet")


@dataclass
class FatauvaConfig:
    """FATAUVA-Net's own choices (fbnet_tf/models/fatauvanet.py); `model.image_size` and `model.fc_units` size it."""

    filters: int = ranged(32, low=1)  # c: core widths c, 2c, 4c; branches 4c
    # "class" (softmax over -5..5, top-3 decoding) or "regression" (smooth L1 + center loss).
    va_head: Literal["class", "regression"] = "regression"
    fatva: bool = False  # True: no AU layer (the paper's FATVA ablation)
    shared: bool = True  # rPoly blocks share F across its powers (the paper); False: one F per power
    residual_scale: float = ranged(0.3, low=0, low_open=True)
    turning_point: float = ranged(1.0, low=0, low_open=True)  # t of the smooth L1 loss (eq. 2), in -5..5 units
    center_weight: float = ranged(0.01, low=0)  # weight of the center loss (eq. 1) beside the smooth L1 loss
    center_alpha: float = ranged(0.5, low=0, high=1)  # centre update rate (Wen et al.)


@dataclass
class ModelConfig:
    """The network. `preset` names the starting sizes (models/presets.py); the fields below are what is built."""

    preset: str = "paper"
    family: Literal[FAMILIES] = "facebehaviornet"  # fbnet_tf.models.registry
    image_size: int = ranged(96, low=32, why="VGG-FACE halves it 5 times")
    # Multiplier on VGG-FACE's 64..512 conv filters; 1.0 to load the published weights.
    width: float = ranged(1.0, low=0, low_open=True)
    fc_units: int = ranged(4096, low=1)
    dropout: float = ranged(0.5, low=0, high=1, high_open=True)
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # a subset gives a single-task baseline
    # "paper" ([-1, 1]), "vggface" (BGR minus mean), "auto": vggface iff weights
    preprocessing: Literal["auto", "paper", "vggface"] = "auto"
    weights: str | None = None  # path of rcmalli_vggface_tf_(notop_)vgg16.h5 to initialise the conv layers
    fatauva: FatauvaConfig = field(default_factory=FatauvaConfig)

    def resolved_preprocessing(self) -> str:
        if self.preprocessing == "auto":
            return "vggface" if self.weights else "paper"
        return self.preprocessing


@dataclass
class LossConfig:
    """Arguments of `fbnet_tf.losses.MultiTaskLoss` (eq. 1 plus the coupling terms)."""

    lambda_au: float = ranged(1.0, low=0)
    lambda_va: float = ranged(1.0, low=0)
    coupling: Literal[COUPLINGS] = "none"
    relatedness: str = "du2014"  # "du2014", "affwild2" or a table file path
    temperature: float = ranged(1.0, low=0, low_open=True)
    reweight: bool = True
    dm_variant: Literal["membership", "normalised", "weighted"] = "membership"  # losses.DM_VARIANTS
    dm_form: Literal["bernoulli", "literal"] = "bernoulli"  # losses.DM_FORMS
    coupling_weight: float = ranged(1.0, low=0)
    # Required-but-unannotated AUs count as absent ("ignore": judge the rest).
    coannotation_missing: Literal["absent", "ignore"] = "absent"
    dm_skip_unlinked: bool = False  # True: AUs no expression links to (AU14 in du2014) leave distribution matching
    # Soft co-annotation, an AU of e the image does not annotate: "absent" (y = 0, weight kept in the denominator:
    # the paper's formula read literally) or "ignore" (left out of numerator and denominator).
    soft_coannotation_unannotated: Literal["absent", "ignore"] = "absent"


@dataclass
class TrainerConfig:
    """The optimisation: Adam at the paper's 1e-4 (`fbnet_tf.optimizers.FusedAdam`, Keras's Adam in one pass)."""

    epochs: int = ranged(20, low=1)
    stage_epochs: dict = field(default_factory=dict)  # a staged family's epochs per stage name (else `epochs`)
    learning_rate: float = ranged(1e-4, low=0, low_open=True)
    # None: one pass over the largest stream, as the pipeline computes.
    steps_per_epoch: int | None = ranged(None, low=1)
    validation_steps: int | None = ranged(None, low=1)  # None: the whole validation split
    jit_compile: Literal["auto"] | bool = "auto"  # "auto": XLA on GPU only (on CPU it is slower, 8.9 vs 10.8 img/s)
    # Keras dtype policy of the network (fbnet_tf.precision); heads, losses and weights stay float32 under every one.
    # mixed_float16 (loss-scaled) needs a GPU.
    mixed_precision: Literal[PRECISIONS] = "float32"
    verbose: Literal["auto", 0, 1, 2] = "auto"  # Keras progress: "auto", 0 silent, 1 bar, 2 one line per epoch


@dataclass
class RuntimeConfig:
    """Where the run executes."""

    # "auto": multi-worker if TF_CONFIG, mirrored if >1 GPU, else default; or name one.
    strategy: Literal[STRATEGIES] = "auto"
    seed: int = ranged(0, low=0)
    intra_op_threads: int = ranged(0, low=0)  # 0 leaves TensorFlow's default
    inter_op_threads: int = ranged(0, low=0)


@dataclass
class CompoundConfig:
    """A few-shot compound run (`python -m fbnet_tf.compound fine-tune`): a softmax head over `classes` on the
    features of the trained model `base`; `trainer`, `data` and `runtime` hold its epochs, learning rate, records
    and seed. Empty `base`: not a compound run."""

    base: str | None = None  # the run dir or .keras file whose features were fine-tuned
    classes: list[str] = field(default_factory=list)  # the head's class names, in output order
    head_only: bool = False  # True: the features were frozen, only the head trained


@dataclass
class ExperimentConfig:
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    compound: CompoundConfig = field(default_factory=CompoundConfig)

    def validate(self) -> "ExperimentConfig":
        """Raise ConfigError naming the field for a value the code cannot run with: every field against its
        type, choices and range, then the rules that tie fields together."""
        _check_all(self, "", "config")
        from fbnet_tf.models.presets import MODEL_PRESETS  # plain dicts; imports no TensorFlow

        if self.model.preset not in MODEL_PRESETS:
            raise ConfigError(f"model.preset={self.model.preset!r}: expected one of {sorted(MODEL_PRESETS)}")
        bad = [t for t in self.model.tasks if t not in TASKS]
        if bad or not self.model.tasks or len(set(self.model.tasks)) != len(self.model.tasks):
            raise ConfigError(f"model.tasks={self.model.tasks}: expected a non-empty subset of {list(TASKS)}")
        if self.loss.coupling != "none" and not {"expr", "au"} <= set(self.model.tasks):
            raise ConfigError(f"loss.coupling={self.loss.coupling!r} couples expressions and AUs, but "
                              f"model.tasks={self.model.tasks} lacks one of them; use coupling=none")
        if self.model.weights and self.model.width != 1.0:
            raise ConfigError(f"model.weights is set but model.width={self.model.width}: the published VGG-FACE "
                              "weights exist for width 1.0 only")
        return self


# --------------------------------------------------------------------------------------------- paths

def resolve_record_dirs(cfg: ExperimentConfig, base: str | os.PathLike | None = None) -> ExperimentConfig:
    """`cfg` with `data.record_dirs` (and every stage's) absolute, relative ones taken from `base` (default the
    working folder), and `data.record_dirs_given` holding each folder as the user wrote it (kept from an earlier
    resolution when the folder is still the one it names). A folder that does not exist raises ConfigError naming
    it and the folder it was resolved from."""
    base = Path(base if base is not None else os.getcwd()).absolute()
    missing = []

    def absolute(directory) -> str:
        path = Path(os.path.normpath(base / os.path.expanduser(str(directory))))
        if not path.is_dir():
            missing.append(f"{str(directory)!r} (resolved from {base} to {path})")
        return str(path)

    given_before = cfg.data.record_dirs_given if len(cfg.data.record_dirs_given) == len(cfg.data.record_dirs) \
        else [None] * len(cfg.data.record_dirs)
    resolved, given = [], []
    for directory, spelled in zip(cfg.data.record_dirs, given_before):
        written = str(directory)
        if spelled and os.path.isabs(written) and Path(written).parts[-len(Path(spelled).parts):] == \
                Path(os.path.normpath(spelled)).parts:
            written = spelled  # already resolved: keep the user's spelling
        resolved.append(absolute(directory))
        given.append(written)
    stages = {name: [absolute(d) for d in (dirs or [])] for name, dirs in cfg.data.stage_record_dirs.items()}
    if missing:
        raise ConfigError(f"data.record_dirs: no such folder {'; '.join(missing)}")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, record_dirs=resolved, record_dirs_given=given,
                                                             stage_record_dirs=stages))


# --------------------------------------------------------------------------------------------- dict / YAML

def to_dict(cfg: ExperimentConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: Mapping[str, Any], base: ExperimentConfig | None = None, *,
              source: str = "config") -> ExperimentConfig:
    """A config from nested dicts (missing keys keep `base`'s values). Unknown keys and values of the wrong type
    or out of range raise ConfigError, naming them and `source`."""
    cfg = base if base is not None else ExperimentConfig()
    return _merge(cfg, values, source, prefix="")


def _merge(obj, values: Mapping[str, Any], source: str, prefix: str):
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} should be a mapping, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'; expected one of {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value or {}, source, f"{prefix}{key}.")
        else:
            changes[key] = _checked(value, hints[key], names[key], f"{prefix}{key}", source)
    return dataclasses.replace(obj, **changes)


def _check_all(obj, prefix: str, source: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for spec in dataclasses.fields(obj):
        value = getattr(obj, spec.name)
        if dataclasses.is_dataclass(value):
            _check_all(value, f"{prefix}{spec.name}.", source)
        else:  # set in Python rather than parsed: normalised like a parsed value ("1e-4" -> 1e-4)
            setattr(obj, spec.name, _checked(value, hints[spec.name], spec, f"{prefix}{spec.name}", source))


def _checked(value, hint, spec: dataclasses.Field, key: str, source: str):
    """`value` as the field's type (YAML reads "1e-4" as a string and 3 where 3.0 was meant), else ConfigError."""
    converted = _convert(value, hint)
    bounds = spec.metadata.get("range")
    if converted is _INVALID or (bounds is not None and converted is not None and converted not in bounds):
        where = "" if source == "config" else f" ({source})"
        raise ConfigError(f"{key}={value!r}{where}: expected {_expected(hint, bounds)}")
    return converted


_INVALID = object()
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _convert(value, hint):
    """`value` in the type `hint` describes, or _INVALID. Booleans are never numbers, numbers never booleans."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            converted = _convert(value, option)
            if converted is not _INVALID:
                return converted
        return _INVALID
    if origin is Literal:
        return value if any(value == a and type(value) is type(a) for a in args) else _INVALID
    if origin is list:
        if isinstance(value, str):  # `a, b` on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return _INVALID
        items = [_convert(v, args[0]) for v in value]
        return _INVALID if any(v is _INVALID for v in items) else items
    if hint is type(None):
        return None if value is None else _INVALID
    if isinstance(value, bool) or value is None:
        return value if hint is bool else _INVALID
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else _INVALID
    if hint is float:
        try:
            number = float(value) if isinstance(value, (int, float, str)) else math.nan
        except ValueError:
            return _INVALID
        return number if math.isfinite(number) else _INVALID
    return value if isinstance(value, hint) else _INVALID


def _expected(hint, bounds: Range | None = None) -> str:
    """What a field takes, in words: "an integer >= 1 or null", "one of 'auto', 'paper'", "a list of strings"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a, None if a is type(None) else bounds) for a in args)
    if origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in args)
    elif origin is list:
        text = f"a list of {_NAMES[args[0]].split(' ', 1)[1]}s"
    else:
        text = _NAMES[hint]
    return f"{text} {bounds}" if bounds is not None else text


def load(path: str | os.PathLike, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Read a YAML config (a full resolved one, or a partial one applied over `base` or `experiment:` in it)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}, line 1: expected a mapping of sections (data, model, loss, trainer, runtime)")
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
            raise ConfigError(f"--set {text!r}: expected key=value, e.g. trainer.epochs=5")
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
        raise ConfigError(f"model.preset={preset!r}: unknown model preset; expected one of {sorted(MODEL_PRESETS)}")
    sizes = MODEL_PRESETS[preset]["config"]
    return from_dict({"model": {"preset": preset, "family": "facebehaviornet", **sizes}}, cfg,
                     source=f"model preset {preset}")


def experiment(name: str) -> ExperimentConfig:
    """A named experiment: `demo`, a Table 2 row `<coupling>_<relatedness>` or a single-task baseline."""
    from fbnet_tf.models.presets import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; expected one of {sorted(EXPERIMENTS)}")
    spec = EXPERIMENTS[name]
    cfg = with_model_preset(ExperimentConfig(name=name), spec.get("model", {}).get("preset", "paper"))
    return from_dict(spec, cfg, source=f"experiment {name}").validate()


def experiment_names() -> list[str]:
    from fbnet_tf.models.presets import EXPERIMENTS

    return sorted(EXPERIMENTS)
