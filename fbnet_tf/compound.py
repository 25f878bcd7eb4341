"""Compound expressions from a model trained on basic ones: the paper's zero-shot candidate score (section 4.5).

    python -m fbnet_tf.compound zero-shot --model RUN --data RECORDS [RECORDS ...] [--classes rafdb] [--out DIR]
    python -m fbnet_tf.compound fine-tune --model RUN --data RECORDS --run-dir DIR [--head-only] [--epochs 30]
    python -m fbnet_tf.export --run-dir DIR && python -m fbnet_tf.predict photo.jpg --model DIR/export/fbnet

For each candidate class c mixing basic expressions emo1 and emo2 (Du et al. 2014's compound categories):

    C_s(c) = sum_k p(AU_k|x) p(AU_k|c) / sum_k p(AU_k|c)  +  p(emo1|x) + p(emo2|x)  [+ 0.5 (v/|v| + 1)]

where p(AU_k|c) is the relatedness table's membership (1 for the class's prototypical and observational AUs) or,
as an option, its weights; the valence term is added for "Happily Surprised" and "Happily Disgusted" only and is 1
for a positive valence prediction, 0 for a negative one (and 0 for v = 0, where v/|v| is undefined). The prediction
is the arg-max over the class set. A basic class e in a mixed set (EmotioNet's 6 basic + 10 compound) is scored
with the basic table's row for e and emo1 = emo2 = e, so that basic and compound candidates are on one scale: the
paper does not say how it scored them.

Few-shot (`fine-tune`): the trained network's penultimate features (after fc7) with a new softmax head over the
class set (`models.compound_classifier.CompoundClassifier`), fine-tuned on the records' train split (every layer,
or the head alone with `--head-only`) and scored on their test split like the zero-shot route. `DIR` is a run
directory like a training run's: `config.yaml` (the base run's config with the records, epochs, learning rate and
seed of the fine-tuning, and a `compound` section: base model, class set, head-only), `model.keras` (output
`compound`, its class names carried by the model), `compound.json` and the confusion PNG; `fbnet_tf.export` and
`fbnet_tf.predict` take it as they take any run (a `compound` output and a `top_compound` column).

The compound table (`fbnet_tf/tables/du2014_compound.json`) could not be checked against Du et al.'s Table 1 here;
every entry is data a user can replace with `--relatedness FILE`.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

from fbnet_tf import relatedness
from fbnet_tf.labels import AUS, COMPOUND_EXPRESSIONS, EXPRESSIONS, RAFDB_COMPOUND

# Compound categories whose valence is positive (the paper's valence term).
POSITIVE_VALENCE = ("Happily Surprised", "Happily Disgusted")
# Class sets, by name. EmotioNet's track-2 set is 6 basic + 10 compound categories; which 10 is not confirmed
# (reference/relatedness.md): this default is RAF-DB's 11 less "Disgustedly Surprised"; pass your own list.
CLASS_SETS: dict[str, tuple[str, ...]] = {
    "rafdb": RAFDB_COMPOUND,
    "emotionet": ("Happiness", "Sadness", "Fear", "Anger", "Surprise", "Disgust", *RAFDB_COMPOUND[:10]),
    "du2014": COMPOUND_EXPRESSIONS,
}


def class_set(classes: str | Sequence[str]) -> tuple[str, ...]:
    """The class names of a named set ("rafdb", "emotionet", "du2014") or of a list of names.

    Every name must be a basic expression (`EXPRESSIONS`) or a Du et al. compound category
    (`COMPOUND_EXPRESSIONS`); ValueError naming the unknown ones otherwise."""
    if isinstance(classes, str):
        if classes not in CLASS_SETS:
            raise ValueError(f"unknown class set {classes!r}; expected one of {sorted(CLASS_SETS)} or a list of names")
        names = CLASS_SETS[classes]
    else:
        names = tuple(classes)
    unknown = [n for n in names if n not in EXPRESSIONS and n not in COMPOUND_EXPRESSIONS]
    if unknown:
        raise ValueError(f"class names {unknown} are neither basic expressions {list(EXPRESSIONS)} nor compound "
                         f"categories {list(COMPOUND_EXPRESSIONS)}")
    return names


def class_profiles(classes: Sequence[str], table: relatedness.RelatednessTable,
                   basic_table: relatedness.RelatednessTable, *, use_weights: bool = False):
    """Per class: p(AU|class) over the canonical AUs [C, 17] and its two basic expressions [C, 2]."""
    au_given_class = np.zeros((len(classes), len(AUS)), np.float32)
    components = np.zeros((len(classes), 2), np.int64)
    for c, name in enumerate(classes):
        if name in EXPRESSIONS:
            source, row, pair = basic_table, EXPRESSIONS.index(name), (EXPRESSIONS.index(name),) * 2
        else:
            if name not in table.rows:
                raise ValueError(f"compound class {name!r} is not a row of relatedness table {table.name!r} "
                                 f"(rows: {list(table.rows)})")
            row = table.rows.index(name)
            source, pair = table, table.components[row]
        au_given_class[c] = source.weights[row] if use_weights else source.membership[row]
        components[c] = pair
    return au_given_class, components


def candidate_scores(au_probs, expression_probs, valence, classes: str | Sequence[str] = "rafdb",
                     table: str | os.PathLike | relatedness.RelatednessTable = "du2014_compound", *,
                     basic_table: str | os.PathLike | relatedness.RelatednessTable = "du2014",
                     use_weights: bool = False) -> np.ndarray:
    """C_s for every image and class: `au_probs` [N, 17], `expression_probs` [N, 7], `valence` [N] -> [N, C].

    `classes`: a class-set name or a list of names (`class_set`); `table`: the compound relatedness table (a
    built-in name or a file); `use_weights`: p(AU|c) = the table's weights instead of its 0/1 membership.
    """
    names = class_set(classes)
    table = table if isinstance(table, relatedness.RelatednessTable) else relatedness.load(table)
    basic = basic_table if isinstance(basic_table, relatedness.RelatednessTable) else relatedness.load(basic_table)
    au_probs = np.asarray(au_probs, np.float64)
    expression_probs = np.asarray(expression_probs, np.float64)
    valence = np.asarray(valence, np.float64).reshape(-1)
    if au_probs.shape[1:] != (len(AUS),) or expression_probs.shape[1:] != (len(EXPRESSIONS),) \
            or not len(au_probs) == len(expression_probs) == len(valence):
        raise ValueError(f"candidate_scores: expected au_probs [N, {len(AUS)}], expression_probs "
                         f"[N, {len(EXPRESSIONS)}], valence [N]; got {au_probs.shape}, {expression_probs.shape}, "
                         f"{valence.shape}")
    au_given_class, components = class_profiles(names, table, basic, use_weights=use_weights)
    total = au_given_class.sum(axis=1)
    au_term = np.divide(au_probs @ au_given_class.T, total, out=np.zeros((len(au_probs), len(names))),
                        where=total > 0)
    expression_term = expression_probs[:, components[:, 0]] + expression_probs[:, components[:, 1]]
    positive = np.array([name in POSITIVE_VALENCE for name in names])
    valence_term = np.where(valence[:, None] > 0, 1.0, 0.0) * positive
    return au_term + expression_term + valence_term


def true_classes(expr, compound, classes: Sequence[str]) -> np.ndarray:
    """Index into `classes` of each record's label (its `compound`, else its basic `expr`), -1 when not in the set."""
    index = {name: i for i, name in enumerate(classes)}
    out = np.full(len(expr), -1, np.int64)
    for row, (e, c) in enumerate(zip(np.asarray(expr), np.asarray(compound))):
        name = COMPOUND_EXPRESSIONS[c] if c >= 0 else (EXPRESSIONS[e] if e >= 0 else None)
        out[row] = index.get(name, -1)
    return out


def scores_table(results: dict, route: str = "zero-shot") -> str:
    """The paper's Table 5 layout: one row, EmotioNet F1 and UAR, RAF-DB mean diagonal."""
    emotionet, rafdb = results.get("emotionet", {}), results.get("rafdb", {})

    def cell(value):
        return "-" if value is None else f"{value:.3f}"

    return ("| method | EmotioNet F1 | EmotioNet UAR | RAF-DB mean diag. |\n|---|---|---|---|\n"
            f"| {route}, {results.get('model', 'model')} | {cell(emotionet.get('f1'))} | "
            f"{cell(emotionet.get('uar'))} | {cell(rafdb.get('mean_diagonal'))} |")


def score(truth, predicted, names: Sequence[str], out_dir: str | None, key: str, route: str) -> dict:
    """The compound metrics of predicted vs true class indices (Table 5's and more), with the confusion PNG."""
    from fbnet_tf import metrics, plots

    n = len(names)
    entry = {"count": int(len(truth)), "classes": list(names),
             "mean_diagonal": metrics.mean_diagonal(truth, predicted, n),
             "f1": metrics.macro_f1(truth, predicted, n),
             "uar": metrics.unweighted_average_recall(truth, predicted, n),
             "accuracy": metrics.accuracy(truth, predicted),
             "confusion": metrics.confusion_matrix(truth, predicted, n).tolist()}
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        entry["figure"] = plots.plot_confusion_matrix(
            np.asarray(entry["confusion"]), os.path.join(out_dir, f"compound_confusion_{key}.png"),
            title=f"{route} compound, {key} (mean diag. {entry['mean_diagonal']:.3f})", labels=names)
    return entry


def zero_shot(model, record_dirs: Sequence[str], *, classes: str | Sequence[str] | None = None,
              table: str = "du2014_compound", use_weights: bool = False, split: str | None = None,
              out_dir: str | None = None, model_name: str = "model") -> dict:
    """Score each database's compound-labelled records with `candidate_scores`; write confusion matrices as PNGs.

    `classes=None` takes "rafdb" for RAF-DB records and "emotionet" for EmotioNet records. Raises ValueError when
    no record carries a label of its class set (nothing would be evaluated).
    """
    from fbnet_tf.evaluate import database_key, default_split, predict_records

    needed = ("valence_arousal", "expression", "action_units")
    if any(key not in model.output for key in needed):
        raise ValueError(f"{model_name}: the candidate score needs a model with outputs {list(needed)}, it has "
                         f"{sorted(model.output)} (a fine-tuned compound run was scored by fine-tune: its "
                         "compound.json)")
    results: dict = {"model": model_name, "splits": {}}
    for record_dir in record_dirs:
        chosen = split or default_split(record_dir)
        collected = predict_records(model, record_dir, chosen) if chosen else {}
        if not collected:
            print(f"compound: {record_dir} has no {chosen or 'test or validation'} records; skipped", file=sys.stderr)
            continue
        # "rafdb_compound" -> "rafdb": the Table 5 column it fills
        key = database_key(str(collected["source"][0]))
        key = next((name for name in ("emotionet", "rafdb") if key.startswith(name)), key)
        names = class_set(classes or ("emotionet" if key == "emotionet" else "rafdb"))
        truth = true_classes(collected["expr"], collected["compound"], names)
        labelled = truth >= 0
        if not labelled.any():
            print(f"compound: {record_dir}: no record is labelled with one of {len(names)} classes; skipped",
                  file=sys.stderr)
            continue
        scores = candidate_scores(collected["pred_action_units"], collected["pred_expression"],
                                  collected["pred_valence_arousal"][:, 0], names, table, use_weights=use_weights)
        results[key] = score(truth[labelled], scores.argmax(axis=1)[labelled], names, out_dir, key, "zero-shot")
        results["splits"][str(record_dir)] = chosen
    evaluated = [k for k in results if k not in ("model", "splits")]
    if not evaluated:
        raise ValueError(f"no compound-labelled records in {list(record_dirs)}: nothing was evaluated")
    results["table"] = scores_table(results)
    return results


# ---------------------------------------------------------------- few-shot

def compound_dataset(record_dirs: Sequence[str], split: str, classes: Sequence[str], image_size: int,
                     batch_size: int, *, training: bool, seed: int = 0):
    """(images, class index) batches of the records labelled with one of `classes`; training: shuffled, repeated,
    random crops, flips and colour jitter (as FaceBehaviorNet's training); else: centre crops in record order."""
    import tensorflow as tf

    from fbnet_tf import data
    from fbnet_tf.records import feature_spec

    files = [f for d in record_dirs for f in data.record_files(d, split)]
    index = {name: i for i, name in enumerate(classes)}
    from_compound = tf.constant([index.get(n, -1) for n in COMPOUND_EXPRESSIONS], tf.int64)
    from_expr = tf.constant([index.get(n, -1) for n in EXPRESSIONS], tf.int64)
    spec = {k: v for k, v in feature_spec().items() if k in ("image/encoded", "expr", "compound")}

    def parse(serialized):
        f = tf.io.parse_single_example(serialized, spec)
        label = tf.where(f["compound"] >= 0, tf.gather(from_compound, tf.maximum(f["compound"], 0)),
                         tf.where(f["expr"] >= 0, tf.gather(from_expr, tf.maximum(f["expr"], 0)), -1))
        return f["image/encoded"], label

    ds = tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda _, label: label >= 0)
    if not training:
        ds = ds.map(lambda encoded, label: (data.eval_image(encoded, image_size), label),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True).repeat().enumerate()
    ds = ds.map(lambda k, x: (data.train_image(x[0], image_size, tf.stack([tf.cast(seed, tf.int64), k])), x[1]),
                num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).enumerate()
    ds = ds.map(lambda k, x: (data.augment_batch(x[0], tf.stack([tf.cast(seed, tf.int64) + 1, k])), x[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def labelled_count(record_dirs: Sequence[str], split: str, classes: Sequence[str]) -> int:
    return sum(1 for _ in compound_dataset(record_dirs, split, classes, 32, 1024, training=False).unbatch())


def compound_model(base, class_names: Sequence[str], *, head_only: bool = False):
    """Image -> {"compound": softmax over `class_names`}, on `base`'s FaceBehaviorNet features (after fc7 and its
    dropout); `head_only` freezes those features."""
    from fbnet_tf.models.compound_classifier import CompoundClassifier, features_of

    features = features_of(base)
    features.trainable = not head_only
    return CompoundClassifier(features, class_names)


def fine_tune_config(model_path: str, record_dirs: Sequence[str], class_names: Sequence[str], *, head_only: bool,
                     epochs: int, learning_rate: float, batch_size: int, seed: int):
    """The fine-tuned run's `config.yaml`: the base run's config (the network it holds; the defaults for a bare
    .keras file) with the fine-tuning's records, epochs, learning rate, batch size and seed, the default loss
    section (the head trains on cross-entropy alone), and its `compound` section. Record dirs are resolved
    (ConfigError for a missing one)."""
    import dataclasses
    from pathlib import Path

    from fbnet_tf import config as config_lib

    path = Path(model_path).absolute()
    # a run dir, its model.keras, or one of its checkpoints/*.weights.h5
    owners = [folder for folder in (path, path.parent, path.parent.parent) if (folder / "config.yaml").is_file()]
    cfg = config_lib.load(owners[0] / "config.yaml") if owners else config_lib.ExperimentConfig()
    cfg = dataclasses.replace(
        cfg, name="compound_fine_tune",
        data=dataclasses.replace(cfg.data, record_dirs=[str(d) for d in record_dirs], record_dirs_given=[],
                                 stage_record_dirs={}, demo_world=None, demo_releases=[], batch_size=batch_size,
                                 seed=seed),
        trainer=dataclasses.replace(cfg.trainer, epochs=epochs, learning_rate=learning_rate, stage_epochs={},
                                    steps_per_epoch=None),
        loss=config_lib.LossConfig(),  # the head's cross-entropy: no multi-task loss, no coupling
        runtime=dataclasses.replace(cfg.runtime, seed=seed),
        compound=config_lib.CompoundConfig(base=str(path), classes=list(class_names), head_only=head_only))
    return config_lib.resolve_record_dirs(cfg).validate()


def check_resumable(run_dir: str, cfg) -> None:
    """ConfigError when `run_dir` holds the backup of a killed fine-tune of another network, class set, base or
    head-only choice: its weights cannot resume this one."""
    from fbnet_tf import config as config_lib
    from fbnet_tf import runs

    if not runs.completed_epochs(run_dir) or not runs.run_dir(run_dir).config.is_file():
        return
    previous, current = config_lib.to_dict(runs.load_config(run_dir)), config_lib.to_dict(cfg)
    changed = [f"{section}.{key}" for section in ("model", "compound") for key in current[section]
               if previous[section][key] != current[section][key]]
    if changed:
        raise config_lib.ConfigError(f"{run_dir}: its backup is of a fine-tune with different {', '.join(changed)}; "
                                     "it cannot resume this one. Use another --run-dir")


def fine_tune(model_path: str, record_dirs: Sequence[str], run_dir: str, *, classes=None, head_only: bool = False,
              epochs: int = 30, learning_rate: float = 1e-3, batch_size: int = 32, seed: int = 0) -> dict:
    """Few-shot compound recognition (paper 4.5): fine-tune on the train split, score the test split.

    Writes a run directory (`config.yaml`, `model.keras`, `compound.json`, the confusion PNG) that
    `fbnet_tf.export` and `fbnet_tf.predict` take like any run. Resumable (a killed run continues from its last
    epoch). Raises ValueError when the train or test split has no image of the class set."""
    import keras

    from fbnet_tf import config as config_lib
    from fbnet_tf import runs
    from fbnet_tf.evaluate import database_key
    from fbnet_tf.optimizers import FusedAdam

    keras.utils.set_random_seed(seed)
    base = runs.load_inference_model(model_path)
    image_size = int(base.input_shape[1])
    key = database_key(os.path.basename(os.path.normpath(record_dirs[0])))
    key = next((name for name in ("emotionet", "rafdb") if key.startswith(name)), key)
    names = class_set(classes or ("emotionet" if key == "emotionet" else "rafdb"))
    count = labelled_count(record_dirs, "train", names)
    test_split = "test" if labelled_count(record_dirs, "test", names) else "validation"
    if not count or not labelled_count(record_dirs, test_split, names):
        raise ValueError(f"{list(record_dirs)}: fine-tuning needs train and test (or validation) images labelled "
                         f"with one of {list(names)}; found {count} train images")
    cfg = fine_tune_config(model_path, record_dirs, names, head_only=head_only, epochs=epochs,
                           learning_rate=learning_rate, batch_size=batch_size, seed=seed)
    check_resumable(run_dir, cfg)
    os.makedirs(run_dir, exist_ok=True)
    config_lib.save(cfg, runs.run_dir(run_dir).config)
    model = compound_model(base, names, head_only=head_only)
    model.compile(optimizer=FusedAdam(learning_rate), loss={"compound": "sparse_categorical_crossentropy"},
                  metrics={"compound": ["accuracy"]})
    train = compound_dataset(record_dirs, "train", names, image_size, batch_size, training=True, seed=seed)
    model.fit(train, epochs=epochs, steps_per_epoch=max(1, -(-count // batch_size)), verbose=2,
              callbacks=[keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"))])
    model.save(runs.run_dir(run_dir).model)

    truth, predicted = [], []
    for images, labels in compound_dataset(record_dirs, test_split, names, image_size, 256, training=False):
        truth.append(labels.numpy())
        predicted.append(np.asarray(model.predict_on_batch(images)["compound"]).argmax(axis=1))
    results = {"model": f"fine-tuned {'head' if head_only else 'all layers'}, {os.path.basename(model_path)}",
               "splits": {str(d): test_split for d in record_dirs},
               "fine_tune": {"base": str(model_path), "head_only": head_only, "epochs": epochs,
                             "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed,
                             "train_images": count}}
    results[key] = score(np.concatenate(truth), np.concatenate(predicted), names, run_dir, key, "few-shot")
    results["table"] = scores_table(results, "few-shot")
    runs.write_json(os.path.join(run_dir, "compound.json"), results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.compound", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    zs = commands.add_parser("zero-shot", help="candidate-score compound recognition (paper 4.5, Table 5)")
    zs.add_argument("--model", required=True, help="a run directory or a .keras model")
    zs.add_argument("--data", nargs="+", required=True, metavar="DIR", help="compound-labelled TFRecord dirs")
    zs.add_argument("--classes", help="class set: rafdb, emotionet, du2014, or comma-separated names "
                                      "(default: by database)")
    zs.add_argument("--relatedness", default="du2014_compound", help="compound table: built-in name or JSON/CSV file")
    zs.add_argument("--weights", action="store_true", help="p(AU|class) = the table's weights, not 0/1 membership")
    zs.add_argument("--split", help="split to score (default: test, else validation)")
    zs.add_argument("--out", help="folder for compound.json and the confusion-matrix PNGs (default: the run dir)")
    ft = commands.add_parser("fine-tune", help="few-shot: a compound head on the network's features (paper 4.5)")
    ft.add_argument("--model", required=True, help="a run directory or a .keras model (FaceBehaviorNet)")
    ft.add_argument("--data", nargs="+", required=True, metavar="DIR", help="compound-labelled TFRecord dirs")
    ft.add_argument("--run-dir", required=True, help="the run directory to write (config.yaml, model.keras, "
                                                      "compound.json): export and predict take it")
    ft.add_argument("--classes", help="class set (default: by database)")
    ft.add_argument("--head-only", action="store_true", help="train the new head only (features frozen)")
    # On the demo world these beat the zero-shot score (README); the paper does not give its schedule.
    ft.add_argument("--epochs", type=int, default=30)
    ft.add_argument("--learning-rate", type=float, default=1e-3)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from fbnet_tf import runs

    classes = None
    if args.classes:
        classes = args.classes if args.classes in CLASS_SETS else [c.strip() for c in args.classes.split(",")]
        try:
            class_set(classes)
        except ValueError as error:
            parser.error(f"--classes: {error}")
    if args.command == "fine-tune":
        if args.epochs < 1 or args.batch_size < 1 or not args.learning_rate > 0:
            parser.error("--epochs and --batch-size must be >= 1 and --learning-rate > 0")
        try:
            results = fine_tune(args.model, args.data, args.run_dir, classes=classes, head_only=args.head_only,
                                epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
                                seed=args.seed)
        except (FileNotFoundError, ValueError) as error:  # ConfigError included
            print(f"compound fine-tune: {error}", file=sys.stderr)
            return 1
        print(results["table"])
        print(f"wrote the run {args.run_dir} (config.yaml, model.keras, compound.json); export it with "
              f"python -m fbnet_tf.export --run-dir {args.run_dir}", file=sys.stderr)
        return 0
    out_dir = args.out or (args.model if os.path.isdir(args.model) else os.path.dirname(args.model) or ".")
    try:
        model = runs.load_inference_model(args.model)
        results = zero_shot(model, args.data, classes=classes, table=args.relatedness, use_weights=args.weights,
                            split=args.split, out_dir=out_dir,
                            model_name=os.path.basename(os.path.normpath(args.model)))
    except (FileNotFoundError, ValueError) as error:
        print(f"compound zero-shot: {error}", file=sys.stderr)
        return 1
    print(results["table"])
    path = os.path.join(out_dir, "compound.json")
    runs.write_json(path, results)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
