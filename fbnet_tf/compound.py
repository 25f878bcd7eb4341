"""Compound expressions from a model trained on basic ones: the paper's zero-shot candidate score (section 4.5).

    python -m fbnet_tf.compound zero-shot --model RUN --data RECORDS [RECORDS ...] [--classes rafdb] [--out DIR]

For each candidate class c mixing basic expressions emo1 and emo2 (Du et al. 2014's compound categories):

    C_s(c) = sum_k p(AU_k|x) p(AU_k|c) / sum_k p(AU_k|c)  +  p(emo1|x) + p(emo2|x)  [+ 0.5 (v/|v| + 1)]

where p(AU_k|c) is the relatedness table's membership (1 for the class's prototypical and observational AUs) or,
as an option, its weights; the valence term is added for "Happily Surprised" and "Happily Disgusted" only and is 1
for a positive valence prediction, 0 for a negative one (and 0 for v = 0, where v/|v| is undefined). The prediction
is the arg-max over the class set. A basic class e in a mixed set (EmotioNet's 6 basic + 10 compound) is scored
with the basic table's row for e and emo1 = emo2 = e, so that basic and compound candidates are on one scale: the
paper does not say how it scored them.

The compound table (`fbnet_tf/tables/du2014_compound.json`) could not be checked against Du et al.'s Table 1 here;
every entry is data a user can replace with `--relatedness FILE`.
"""
from __future__ import annotations

import argparse
import json
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


def scores_table(results: dict) -> str:
    """The paper's Table 5 layout: one row, EmotioNet F1 and UAR, RAF-DB mean diagonal."""
    emotionet, rafdb = results.get("emotionet", {}), results.get("rafdb", {})

    def cell(value):
        return "-" if value is None else f"{value:.3f}"

    return ("| method | EmotioNet F1 | EmotioNet UAR | RAF-DB mean diag. |\n|---|---|---|---|\n"
            f"| zero-shot, {results.get('model', 'model')} | {cell(emotionet.get('f1'))} | "
            f"{cell(emotionet.get('uar'))} | {cell(rafdb.get('mean_diagonal'))} |")


def zero_shot(model, record_dirs: Sequence[str], *, classes: str | Sequence[str] | None = None,
              table: str = "du2014_compound", use_weights: bool = False, split: str | None = None,
              out_dir: str | None = None, model_name: str = "model") -> dict:
    """Score each database's compound-labelled records with `candidate_scores`; write confusion matrices as PNGs.

    `classes=None` takes "rafdb" for RAF-DB records and "emotionet" for EmotioNet records. Raises ValueError when
    no record carries a label of its class set (nothing would be evaluated).
    """
    from fbnet_tf import metrics, plots
    from fbnet_tf.evaluate import database_key, default_split, predict_records

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
        predicted = scores.argmax(axis=1)[labelled]
        truth = truth[labelled]
        n = len(names)
        entry = {"count": int(labelled.sum()), "classes": list(names),
                 "mean_diagonal": metrics.mean_diagonal(truth, predicted, n),
                 "f1": metrics.macro_f1(truth, predicted, n),
                 "uar": metrics.unweighted_average_recall(truth, predicted, n),
                 "accuracy": metrics.accuracy(truth, predicted),
                 "confusion": metrics.confusion_matrix(truth, predicted, n).tolist()}
        results[key] = entry
        results["splits"][str(record_dir)] = chosen
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            entry["figure"] = plots.plot_confusion_matrix(
                np.asarray(entry["confusion"]), os.path.join(out_dir, f"compound_confusion_{key}.png"),
                title=f"zero-shot compound, {key} (mean diag. {entry['mean_diagonal']:.3f})", labels=names)
    evaluated = [k for k in results if k not in ("model", "splits")]
    if not evaluated:
        raise ValueError(f"no compound-labelled records in {list(record_dirs)}: nothing was evaluated")
    results["table"] = scores_table(results)
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
    args = parser.parse_args(argv)

    from fbnet_tf import runs

    classes = None
    if args.classes:
        classes = args.classes if args.classes in CLASS_SETS else [c.strip() for c in args.classes.split(",")]
        try:
            class_set(classes)
        except ValueError as error:
            parser.error(f"--classes: {error}")
    out_dir = args.out or (args.model if os.path.isdir(args.model) else os.path.dirname(args.model) or ".")
    model = runs.load_inference_model(args.model)
    try:
        results = zero_shot(model, args.data, classes=classes, table=args.relatedness, use_weights=args.weights,
                            split=args.split, out_dir=out_dir,
                            model_name=os.path.basename(os.path.normpath(args.model)))
    except ValueError as error:
        print(f"compound zero-shot: {error}", file=sys.stderr)
        return 1
    print(results["table"])
    path = os.path.join(out_dir, "compound.json")
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    os.replace(temporary, path)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
