"""Per-database evaluation as the paper's Table 2 reports it (section 4, "Performance Measures").

    python -m fbnet_tf.evaluate --run-dir runs/x [--data DIR ...] [--split test] [--other-threshold P]

Runs the inference model over each record directory, groups the predictions by the records' `source`, and scores
each database with its own metric: CCC-V/CCC-A (Aff-Wild, Aff-Wild2, AffectNet), macro F1 (AffectNet), total
accuracy per clip from averaged frame probabilities (AFEW), mean diagonal of the confusion matrix (RAF-DB), the
EmotioNet challenge scores, mean F1 over the annotated AUs (DISFA, BP4D, BP4D+, Aff-Wild2) and the ABAW scores
(Aff-Wild2: the official ABAW 2022+ EXPR score over 8 classes with "Other", the 7-class F1 beside it, ABAW 2020's
scores over its own AUs). Every applicable metric is computed for every database; the table shows the paper's
columns. Writes `evaluation.json` (atomically) and PNG figures into the output (run) directory. The run's record
dirs are absolute in its config, so this works from any folder; an evaluation of no database exits 1 and leaves an
earlier `evaluation.json` as it was.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

if __name__ == "__main__":  # the command line: TensorFlow's import-time notices stay off the terminal
    from fbnet_tf.cli import quiet_tensorflow

    quiet_tensorflow()

from fbnet_tf import cli, metrics, plots, runs  # noqa: E402
from fbnet_tf.data import evaluation_dataset, record_count, record_files
from fbnet_tf.labels import (ABAW2020_AUS, AU_NAMES, CELEBA_ATTRIBUTES, EXPRESSIONS, FERA2015_AUS, FERA2017_AUS,
                             VA_NAMES, parse_au_number)

# Table 2 of the paper (plus Aff-Wild2 and its ABAW scores): (database key, heading, [(column, metric key)]).
TABLE_COLUMNS = (
    ("affwild", "Aff-Wild", (("CCC-V", "ccc_valence"), ("CCC-A", "ccc_arousal"))),
    ("affectnet", "AffectNet", (("CCC-V", "ccc_valence"), ("CCC-A", "ccc_arousal"), ("F1 Score", "expr_f1"))),
    ("afew", "AFEW", (("Total Accuracy", "clip_accuracy"),)),
    ("rafdb", "RAF-DB", (("Mean diag.", "mean_diagonal"),)),
    ("emotionet", "EmotioNet", (("F1 Score", "au_f1"), ("Accuracy", "au_accuracy"))),
    ("disfa", "DISFA", (("F1 Score", "au_f1"),)),
    ("bp4d", "BP4D", (("F1 Score", "au_f1"),)),
    ("bp4dplus", "BP4D+", (("F1 Score", "au_f1"),)),
    ("affwild2", "Aff-Wild2", (("CCC-V", "ccc_valence"), ("CCC-A", "ccc_arousal"), ("ABAW22 EXPR", "abaw2022_expr"),
                               ("EXPR F1 7cl", "expr_f1_7class"), ("AU F1", "au_f1"),
                               ("ABAW20 EXPR", "abaw2020_expr"), ("ABAW20 AU", "abaw2020_au"))),
)
_ALIASES = {"affwild1": "affwild", "raf": "rafdb", "rafdbbasic": "rafdb", "emotionnet": "emotionet",
            "bp4dspontaneous": "bp4d", "bp4d2": "bp4dplus", "afew6": "afew", "afew7": "afew"}
# Databases whose published AU F1 is over a challenge's AUs, not every AU the release codes (records keep them all).
CHALLENGE_AUS = {"bp4d": ("FERA 2015", FERA2015_AUS), "bp4dplus": ("FERA 2017", FERA2017_AUS)}
# Record features that can name the video an AFEW frame comes from, most specific first.
CLIP_FEATURES = ("clip", "clip_id", "video", "video_id")


def database_key(source: str) -> str:
    """Canonical database key of a record's `source`: 'BP4D+' -> 'bp4dplus', 'RAF-DB' -> 'rafdb'."""
    key = re.sub(r"[^a-z0-9]", "", source.lower().replace("+", "plus"))
    return _ALIASES.get(key, key)


# ---------------------------------------------------------------- predictions

def default_split(record_dir: str) -> str | None:
    """`test` where the directory has one, else `validation` (the paper tests on released validation sets)."""
    for split in ("test", "validation"):
        if record_files(record_dir, split):
            return split
    return None


def predict_records(model, record_dir: str, split: str, *, batch_size: int = 64, aus=None) -> dict:
    """Run `model` over one split of one record directory: the records' fields and the model's outputs, numpy.

    Returns {field: [N, ...]} with the label and id fields of `evaluation_dataset` (strings decoded) plus
    `pred_<output>` for each output of the model (`valence_arousal`, `expression`, `action_units`, `attributes`);
    {} when the split is empty. `aus`: the model's own AU numbers when they are not the canonical 17 (the truth
    then comes from the records' `facs/*` lists).
    """
    image_size = int(model.input_shape[1])
    dataset = evaluation_dataset(record_dir, split=split, image_size=image_size, batch_size=batch_size, aus=aus)
    total = math.ceil(record_count(record_dir, split) / batch_size)
    parts: dict[str, list] = {}
    for images, fields in tqdm(dataset, total=total, desc=f"{os.path.basename(os.path.normpath(record_dir))}/{split}",
                               unit="batch", file=sys.stderr):
        outputs = model.predict_on_batch(images)
        for key, value in fields.items():
            parts.setdefault(key, []).append(value.numpy())
        for key, value in outputs.items():
            parts.setdefault(f"pred_{key}", []).append(np.asarray(value))
    if not parts:
        return {}
    collected = {key: np.concatenate(values) for key, values in parts.items()}
    for key, value in collected.items():
        if value.dtype == object:
            collected[key] = np.array([v.decode() for v in value])
    return collected


def _subset(collected: dict, rows: np.ndarray) -> dict:
    return {key: value[rows] for key, value in collected.items()}


def _merge(parts: Sequence[dict]) -> dict:
    keys = set.intersection(*(set(p) for p in parts))
    return {key: np.concatenate([p[key] for p in parts]) for key in keys}


# ---------------------------------------------------------------- metrics

def clip_ids(collected: dict) -> np.ndarray:
    """The clip (video) of each frame: a clip feature when the builder wrote one, else `subject`, else the
    folder of `sample_id`."""
    for feature in CLIP_FEATURES:
        if feature in collected:
            return collected[feature].astype(str)
    subjects = collected["subject"].astype(str)
    if all(subjects):
        return subjects
    return np.array([os.path.dirname(s) for s in collected["sample_id"]])


def clip_accuracy(probabilities, labels, clips) -> float:
    """Total accuracy per clip (EmotiW): the frames' probabilities are averaged per clip, the clip's prediction is
    their argmax and its label is its frames' label. Frames without a label (-1) are left out."""
    probabilities, labels, clips = np.asarray(probabilities), np.asarray(labels), np.asarray(clips)
    labelled = labels >= 0
    probabilities, labels, clips = probabilities[labelled], labels[labelled], clips[labelled]
    names, index = np.unique(clips, return_inverse=True)
    sums = np.zeros((len(names), probabilities.shape[1]))
    np.add.at(sums, index, probabilities)
    clip_labels = np.full(len(names), -1)
    clip_labels[index] = labels  # one label per clip: every frame carries it
    return metrics.accuracy(clip_labels, sums.argmax(axis=1))


def abaw2022_truth(collected: dict) -> np.ndarray:
    """ABAW 2022+ classes 0..7 of each record: the canonical expression, Other (7) where the release's own label
    is "Other" (`expr_native_name`; such frames have no canonical expression), else -1."""
    truth = collected["expr"].astype(np.int64).copy()
    names = np.char.lower(collected["expr_native_name"].astype(str)) if "expr_native_name" in collected else None
    if names is not None:
        truth[(truth < 0) & (names == "other")] = metrics.ABAW_OTHER
    return truth


def other_rule(other_threshold: float | None) -> str:
    if other_threshold is None:
        return "argmax of the 7 expression outputs; the model never predicts Other"
    return f"Other where the largest of the 7 expression probabilities is below {other_threshold:g}, else the argmax"


def _abaw2022_expr(collected: dict, other_threshold: float | None) -> dict:
    truth = abaw2022_truth(collected)
    rows = truth >= 0
    if not rows.any():
        return {}
    predictions = metrics.abaw2022_expr_predictions(collected["pred_expression"][rows], other_threshold)
    others = int((truth == metrics.ABAW_OTHER).sum())
    result = {"abaw2022_expr": metrics.abaw2022_expr_score(truth[rows], predictions),
              "abaw2022_expr_count": int(rows.sum()), "abaw2022_other_count": others,
              "abaw2022_expr_rule": other_rule(other_threshold)}
    if not others:
        result["abaw2022_expr_note"] = ("no frame labelled Other in these records (an ABAW 2020 release, or records "
                                        "built without expr_native): Other's F1 counts as 0 of the 8")
    return result


def canonical_labels() -> dict[str, list[str]]:
    return {"valence_arousal": list(VA_NAMES), "expression": list(EXPRESSIONS), "action_units": list(AU_NAMES)}


def database_metrics(key: str, collected: dict, labels: dict | None = None,
                     other_threshold: float | None = None) -> dict:
    """Every metric that applies to the labels this database has and the outputs the model gives.

    `labels`: the model's column names per output (`models.registry.label_names`); the canonical ones by default.

    Aff-Wild2 also gets the challenges' own scores: `abaw2022_expr`, the official ABAW 2022+ macro F1 over 8
    classes with "Other" frames counted (`other_threshold` None: the model never predicts Other; a float: Other
    where the top probability is below it; `abaw2022_expr_rule` says which), beside `expr_f1_7class` (macro F1 over
    the 7 basic classes, Other frames left out); `abaw2020_expr`, `abaw2020_au` (over its 8 AUs, those annotated
    listed in `abaw2020_au_aus`) and `abaw2022_au`."""
    labels = labels or canonical_labels()
    result: dict = {"count": int(len(collected["sample_id"]))}
    va_rows = collected["va_mask"] > 0
    if va_rows.any() and "pred_valence_arousal" in collected:
        va_true, va_pred = collected["va"][va_rows], collected["pred_valence_arousal"][va_rows]
        valence, arousal = metrics.ccc(va_true, va_pred)
        mse_valence, mse_arousal = metrics.mse(va_true, va_pred)
        result.update(va_count=int(va_rows.sum()), ccc_valence=float(valence), ccc_arousal=float(arousal),
                      ccc_mean=metrics.abaw2022_va_score(va_true, va_pred), mse_valence=float(mse_valence),
                      mse_arousal=float(mse_arousal))
    expr_rows = collected["expr"] >= 0
    if expr_rows.any() and "pred_expression" in collected:
        truth, scores = collected["expr"][expr_rows], collected["pred_expression"][expr_rows]
        n = len(EXPRESSIONS)
        result.update(expr_count=int(expr_rows.sum()), expr_accuracy=metrics.accuracy(truth, scores),
                      expr_f1=metrics.macro_f1(truth, scores, n), mean_diagonal=metrics.mean_diagonal(truth, scores, n),
                      expr_uar=metrics.unweighted_average_recall(truth, scores, n),
                      confusion_matrix=metrics.confusion_matrix(truth, scores, n).tolist())
        if key == "afew":
            result["clip_accuracy"] = clip_accuracy(collected["pred_expression"], collected["expr"],
                                                    clip_ids(collected))
        if key == "emotionet":
            result["emotionet_expr_score"] = metrics.emotionet_expression_score(truth, scores, n)
        if key == "affwild2":
            result["expr_f1_7class"] = result["expr_f1"]
            result["abaw2020_expr"] = metrics.abaw2020_expr_score(truth, scores, n)
    if key == "affwild2" and "pred_expression" in collected:
        result.update(_abaw2022_expr(collected, other_threshold))
    au_rows = collected["au_mask"].sum(axis=1) > 0
    if au_rows.any() and "pred_action_units" in collected:
        truth, probabilities = collected["au"][au_rows], collected["pred_action_units"][au_rows]
        mask = collected["au_mask"][au_rows]
        annotated = mask.max(axis=0) > 0
        numbers = [parse_au_number(name) for name in labels["action_units"]]
        auc = metrics.auc_per_au(truth, probabilities, mask)
        result.update(au_count=int(au_rows.sum()), au_annotated=[a for a, used in zip(numbers, annotated) if used],
                      au_f1=metrics.mean_f1(truth, probabilities, mask),
                      au_accuracy=float(metrics.accuracy_per_au(truth, probabilities, mask)[annotated].mean()),
                      au_f1_per_au=metrics.f1_per_au(truth, probabilities, mask).tolist(),
                      au_auc=metrics.mean_auc(truth, probabilities, mask),
                      au_auc_per_au=[None if np.isnan(v) else float(v) for v in auc], au_numbers=numbers)
        if key in CHALLENGE_AUS:  # `au_f1` is the challenge's; every coded AU's F1 stays beside it
            challenge, subset = CHALLENGE_AUS[key]
            in_subset = np.isin(numbers, subset).astype(np.float32)
            result.update(au_f1_all_coded=result["au_f1"], au_f1_aus=challenge,
                          au_f1=metrics.mean_f1(truth, probabilities, mask * in_subset))
        if key == "emotionet":
            result["emotionet_au_score"] = metrics.emotionet_au_score(truth, probabilities, mask)
        if key == "affwild2":
            _, _, _, used = metrics.challenge_au_columns(truth, probabilities, mask, ABAW2020_AUS)
            with warnings.catch_warnings():  # the missing AUs are recorded instead
                warnings.simplefilter("ignore")
                result["abaw2020_au"] = metrics.abaw2020_au_score(truth, probabilities, mask)
            result["abaw2020_au_aus"] = used
            result["abaw2022_au"] = metrics.abaw2022_au_score(truth, probabilities, mask)
    attribute_rows = collected.get("attributes_mask", np.zeros(0)) > 0
    if attribute_rows.any() and "pred_attributes" in collected:
        names = labels["attributes"]
        truth = collected["attributes"][attribute_rows][:, [CELEBA_ATTRIBUTES.index(n) for n in names]] >= 0.5
        predicted = collected["pred_attributes"][attribute_rows] >= 0.5
        per_attribute = (truth == predicted).mean(axis=0)
        result.update(attribute_count=int(attribute_rows.sum()), attribute_accuracy=float(per_attribute.mean()),
                      attribute_accuracy_per_attribute=dict(zip(names, per_attribute.astype(float).tolist())))
    return result


# ---------------------------------------------------------------- outputs

def format_table(results: dict, row_name: str = "FaceBehaviorNet") -> str:
    """Table 2's layout as text: database headings, metric headings, one row of values ('-' = absent)."""
    groups = []
    for key, heading, columns in TABLE_COLUMNS:
        scores = results.get(key, {})
        cells = [(name, "-" if metric not in scores else f"{scores[metric]:.2f}") for name, metric in columns]
        widths = [max(len(name), len(value)) for name, value in cells]
        inner = sum(widths) + 2 * (len(widths) - 1)
        if len(heading) > inner:  # widen the last column so the heading fits
            widths[-1] += len(heading) - inner
            inner = len(heading)
        groups.append((heading.center(inner), "  ".join(n.rjust(w) for (n, _), w in zip(cells, widths)),
                       "  ".join(v.rjust(w) for (_, v), w in zip(cells, widths))))
    first = max(len("Databases"), len(row_name))
    lines = [" | ".join([title.ljust(first)] + [group[i] for group in groups])
             for i, title in enumerate(("Databases", "", row_name))]
    return "\n".join(lines)


def _draw(key: str, heading: str, scores: dict, collected: dict, out_dir: str) -> list[str]:
    paths = []
    if "confusion_matrix" in scores:
        paths.append(plots.plot_confusion_matrix(scores["confusion_matrix"],
                                                 os.path.join(out_dir, f"confusion_matrix-{key}.png"),
                                                 f"{heading}: expressions (row-normalised)"))
    if "ccc_valence" in scores:
        rows = collected["va_mask"] > 0
        paths.append(plots.plot_va_histogram(collected["va"][rows], collected["pred_valence_arousal"][rows],
                                             os.path.join(out_dir, f"va_histogram-{key}.png"),
                                             f"{heading}: CCC-V {scores['ccc_valence']:.2f}, "
                                             f"CCC-A {scores['ccc_arousal']:.2f}"))
    if "au_f1_per_au" in scores:
        annotated = np.isin(scores["au_numbers"], scores["au_annotated"])
        paths.append(plots.plot_au_f1(scores["au_f1_per_au"], annotated, os.path.join(out_dir, f"au_f1-{key}.png"),
                                      f"{heading}: F1 per AU", au_names=[f"AU{n}" for n in scores["au_numbers"]]))
    return paths


# The FATAUVA-Net paper's tables: the row names of its Table 4 (attribute accuracy), in its order.
ATTRIBUTE_ROWS = {"Arched_Eyebrows": "arched eyebrows", "Attractive": "attractive", "Bushy_Eyebrows": "bushy eyebrows",
                  "Eyeglasses": "eyeglasses", "Male": "male", "Mouth_Slightly_Open": "mouth slightly open",
                  "Narrow_Eyes": "narrow eyes", "No_Beard": "no beard", "Smiling": "smile", "Young": "young"}


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), *(line(r) for r in rows)])


def _cell(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def attribute_table(results: dict) -> str | None:
    """The paper's Table 4: accuracy per attribute (its rows, alphabetical) and AVG, one column per database."""
    keys = [k for k, r in results.items() if "attribute_accuracy_per_attribute" in r]
    if not keys:
        return None
    names = sorted({n for k in keys for n in results[k]["attribute_accuracy_per_attribute"]},
                   key=lambda n: ATTRIBUTE_ROWS.get(n, n.lower().replace("_", " ")))
    rows = [[ATTRIBUTE_ROWS.get(n, n), *(_cell(results[k]["attribute_accuracy_per_attribute"].get(n)) for k in keys)]
            for n in names]
    rows.append(["AVG", *(_cell(results[k]["attribute_accuracy"]) for k in keys)])
    return _grid(["Attribute", *(_heading(k) for k in keys)], rows)


def au_tables(results: dict) -> str | None:
    """The paper's Tables 5 and 6: AUC and F1 per AU and their AVG, one column pair per database."""
    keys = [k for k, r in results.items() if "au_auc_per_au" in r]
    if not keys:
        return None
    numbers = sorted({n for k in keys for n in results[k]["au_annotated"]})
    rows = []
    for n in numbers:
        cells = [str(n)]
        for k in keys:
            r = results[k]
            j = r["au_numbers"].index(n) if n in r["au_annotated"] else None
            cells += [_cell(None if j is None else r["au_auc_per_au"][j]),
                      _cell(None if j is None else r["au_f1_per_au"][j], 3)]
        rows.append(cells)
    rows.append(["AVG", *(c for k in keys for c in (_cell(results[k]["au_auc"]), _cell(results[k]["au_f1"], 3)))])
    return _grid(["AU", *(f"{_heading(k)} {m}" for k in keys for m in ("AUC", "F1"))], rows)


VA_COLUMNS = (("MSE-V", "mse_valence"), ("MSE-A", "mse_arousal"), ("CCC-V", "ccc_valence"), ("CCC-A", "ccc_arousal"))


def va_table(rows: dict) -> str | None:
    """The paper's Figures 9-10 as a table: {row name: scores} -> MSE and CCC of valence and arousal."""
    if not rows:
        return None
    return _grid(["", *(c for c, _ in VA_COLUMNS)], [[name, *(_cell(r.get(m), 3) for _, m in VA_COLUMNS)]
                                                    for name, r in rows.items()])


def label_tables(results: dict) -> str:
    """The per-label tables of whatever the model predicts: attributes (Table 4), AUs (Tables 5-6), V-A MSE/CCC
    per database (Figures 9-10) -- the FATAUVA-Net paper's layouts, for any model that has those outputs."""
    va = {_heading(k): r for k, r in results.items() if "mse_valence" in r}
    parts = [("Attribute accuracy (FATAUVA-Net Table 4)", attribute_table(results)),
             ("AU detection: AUC and F1 per AU (FATAUVA-Net Tables 5-6)", au_tables(results)),
             ("Valence-arousal: MSE and CCC (FATAUVA-Net Figures 9-10)", va_table(va))]
    return "\n\n".join(f"{title}\n{text}" for title, text in parts if text)


def compare_va(reports: dict, database: str | None = None, out_dir: str | None = None) -> dict:
    """Figures 9-10 across models: {model name: evaluation report (or its evaluation.json path)} -> the V-A scores
    of each on one database (default: the first one all of them scored on V-A), as a table and a bar chart."""
    loaded = {}
    for name, report in reports.items():
        if isinstance(report, (str, os.PathLike)):
            path = os.path.join(report, "evaluation.json") if os.path.isdir(report) else report
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
        loaded[name] = report["databases"]
    common = [k for k in next(iter(loaded.values()), {}) if all("mse_valence" in d.get(k, {}) for d in loaded.values())]
    if database is None:
        if not common:
            raise ValueError(f"no database has V-A scores in every report of {sorted(reports)}")
        database = common[0]
    elif database not in common:
        raise ValueError(f"database {database!r} lacks V-A scores in some report; those with them: {common}")
    rows = {name: {m: d[database][m] for _, m in VA_COLUMNS} for name, d in loaded.items()}
    result = {"database": database, "rows": rows, "table": va_table(rows)}
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        result["figure"] = plots.plot_va_comparison(rows, os.path.join(out_dir, f"va_comparison-{database}.png"),
                                                    f"{_heading(database)}: valence and arousal")
        with open(os.path.join(out_dir, "va_comparison.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


def _heading(key: str) -> str:
    return next((heading for k, heading, _ in TABLE_COLUMNS if k == key), key)


# The model outputs this module scores; others (a fine-tuned compound head) have their own command.
SCORED_OUTPUTS = ("valence_arousal", "expression", "action_units", "attributes")


class NothingEvaluated(ValueError):
    """No database of the given record directories had a split to evaluate; the message lists why."""


def evaluate(model, record_dirs: str | Iterable[str], split: str | None = None, out_dir: str | None = None, *,
             batch_size: int = 64, row_name: str = "FaceBehaviorNet", verbose: bool = True,
             other_threshold: float | None = None) -> dict:
    """Score `model` (the inference model: image -> named outputs) on each database of `record_dirs`.

    `split=None` takes each directory's `test` split, else its `validation` split. `other_threshold`: the rule
    that predicts ABAW's "Other" for the official Aff-Wild2 score (see `database_metrics`). Returns
    {"databases": {database key: {metric: value, ...}}, "splits": {record dir: split}, "skipped": {record dir:
    reason}, "table": text}; with `out_dir`, also writes `evaluation.json` (atomically) and the PNG figures there.
    A record directory that does not exist raises FileNotFoundError; when no database could be evaluated,
    NothingEvaluated is raised and nothing is written (an earlier `evaluation.json` stays as it was).
    """
    from fbnet_tf.models.registry import label_names

    dirs = [record_dirs] if isinstance(record_dirs, (str, os.PathLike)) else [str(d) for d in record_dirs]
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        raise FileNotFoundError(f"record directories not found: {', '.join(map(str, missing))} "
                                f"(relative paths are taken from {os.getcwd()})")
    labels = {**canonical_labels(), **label_names(model)}
    own_aus = labels["action_units"] != list(AU_NAMES)
    aus = [parse_au_number(n) for n in labels["action_units"]] if own_aus else None
    by_database: dict[str, list[dict]] = {}
    splits, skipped = {}, {}
    for record_dir in dirs:
        chosen = split or default_split(record_dir)
        if chosen is None or not record_files(record_dir, chosen):
            skipped[str(record_dir)] = f"no {chosen or 'test or validation'} split"
            print(f"evaluate: {record_dir} has no {chosen or 'test or validation'} split; skipped", file=sys.stderr)
            continue
        splits[str(record_dir)] = chosen
        collected = predict_records(model, record_dir, chosen, batch_size=batch_size, aus=aus)
        if not collected:
            skipped[str(record_dir)] = f"its {chosen} split holds no record"
            continue
        outputs = sorted(key.removeprefix("pred_") for key in collected if key.startswith("pred_"))
        if not set(outputs) & set(SCORED_OUTPUTS):
            raise NothingEvaluated(f"the model's outputs ({', '.join(outputs)}) are none that evaluate scores "
                                   f"({', '.join(SCORED_OUTPUTS)})" + ("; a fine-tuned compound run is scored by "
                                   "`python -m fbnet_tf.compound fine-tune` (its compound.json)"
                                   if "compound" in outputs else ""))
        keys = np.array([database_key(s) for s in collected["source"]])
        for key in np.unique(keys):
            by_database.setdefault(str(key), []).append(_subset(collected, keys == key))
    if not by_database:
        reasons = "; ".join(f"{d}: {why}" for d, why in skipped.items()) or "no record directory given"
        raise NothingEvaluated(f"nothing to evaluate ({reasons})"
                               + (f"; {os.path.join(out_dir, 'evaluation.json')} left as it was" if out_dir else ""))
    merged = {key: _merge(parts) for key, parts in by_database.items()}
    results = {key: database_metrics(key, collected, labels, other_threshold) for key, collected in merged.items()}
    table = format_table(results, row_name)
    report = {"databases": results, "splits": splits, "skipped": skipped, "table": table,
              "label_tables": label_tables(results)}
    if verbose:
        print(table)
        print(report["label_tables"])
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        report["figures"] = [p for key in results
                             for p in _draw(key, _heading(key), results[key], merged[key], out_dir)]
        runs.write_json(os.path.join(out_dir, "evaluation.json"), report)
    return report


def _record_dirs_of_run(run_dir: str) -> list[str]:
    """The run's record directories, every stage's included (absolute in configs written since they are resolved;
    an older config's relative ones are taken from the working folder)."""
    from fbnet_tf import config as config_lib

    cfg = runs.load_config(run_dir)
    if not cfg.data.all_record_dirs():
        raise ValueError(f"{run_dir}: its config names no data.record_dirs; pass --data DIR ...")
    try:
        return config_lib.resolve_record_dirs(cfg).data.all_record_dirs()
    except config_lib.ConfigError as err:
        raise FileNotFoundError(f"{runs.run_dir(run_dir).config}: {err}; pass --data DIR ... to point at the "
                                f"records on this machine") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="the run directory (model, config.yaml); results go here")
    parser.add_argument("--data", nargs="+", metavar="DIR",
                        help="TFRecord directories (default: the record dirs the run trained on)")
    parser.add_argument("--split", choices=("train", "validation", "test"),
                        help="split to score (default: test where a directory has one, else validation)")
    parser.add_argument("--batch-size", type=cli.integer(1), default=64)
    parser.add_argument("--model", help="the model to score: a .keras file or a checkpoint such as "
                                        "<run-dir>/checkpoints/best.weights.h5 (default: the run's model.keras)")
    parser.add_argument("--other-threshold", type=cli.number(0.0, 1.0), metavar="P",
                        help="ABAW 2022+ EXPR: predict 'Other' where the top expression probability is below P "
                             "(default: never predict it)")
    parser.add_argument("--compare", nargs="+", metavar="NAME=RUN_DIR",
                        help="compare evaluated runs on V-A (FATAUVA-Net Figures 9-10), e.g. FATAUVA_Reg=runs/reg "
                             "FATAUVA_Cls=runs/cls FATVA=runs/fatva; writes into --out")
    parser.add_argument("--database", help="with --compare: the database to compare on (default: the first "
                                           "one every run has V-A scores for)")
    parser.add_argument("--out", help="with --compare: output folder (default: the current one)")
    args = parser.parse_args(argv)

    if args.compare:
        pairs = [item.partition("=") for item in args.compare]
        bad = [name for name, sep, path in pairs if not sep or not name or not path]
        if bad:
            parser.error(f"--compare expects NAME=RUN_DIR, got {bad}")
        result = compare_va({name: path for name, _, path in pairs}, args.database, args.out or ".")
        print(f"{_heading(result['database'])}\n{result['table']}")
        print(f"wrote {result['figure']}", file=sys.stderr)
        return 0
    if not args.run_dir:
        parser.error("--run-dir is required (or --compare)")

    from fbnet_tf import config as config_lib

    cli.quiet_tensorflow()
    try:
        model = runs.load_inference_model(args.model or args.run_dir)
    except FileNotFoundError as error:
        parser.error(str(error))
    try:
        if args.data:
            cfg = config_lib.from_dict({"data": {"record_dirs": list(args.data)}})
            data_dirs = config_lib.resolve_record_dirs(cfg).data.record_dirs
        else:
            data_dirs = _record_dirs_of_run(args.run_dir)
        report = evaluate(model, data_dirs, split=args.split, out_dir=args.run_dir, batch_size=args.batch_size,
                          row_name=os.path.basename(os.path.normpath(args.run_dir)),
                          other_threshold=args.other_threshold)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.join(args.run_dir, 'evaluation.json')} and {len(report['figures'])} figures",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
