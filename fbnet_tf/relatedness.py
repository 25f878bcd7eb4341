"""Expression <-> action-unit relatedness tables (paper Tables 1 and 3, Du et al. compound table).

A table says, per expression (or compound category), which AUs are prototypical (weight 1) and which are
observational (weight w = fraction of annotators, or of images, showing the AU). The built-in tables are JSON files
in `fbnet_tf/tables/`; a user's own table is a JSON file of the same shape or a CSV with columns
`expression,au,weight[,kind]`. Over the canonical spaces a table exposes three [rows, 17] arrays:
`membership` (0/1), `weights` (1 / w / 0) and `prototypical` (0/1).
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fbnet_tf.labels import AUS, COMPOUND_EXPRESSIONS, EXPRESSIONS, expression_index, parse_au_number

log = logging.getLogger(__name__)

_TABLE_DIR = Path(__file__).with_name("tables")
BUILTIN = {"du2014": "du2014_basic.json", "affwild2": "affwild2.json", "du2014_compound": "du2014_compound.json"}


@dataclass(frozen=True, eq=False)
class RelatednessTable:
    """A relatedness table over the canonical AUs. Rows are `EXPRESSIONS` (basic) or compound category names."""

    name: str
    rows: tuple[str, ...]
    weights: np.ndarray  # [rows, AUs]: 1 prototypical, w observational, 0 unrelated
    prototypical: np.ndarray  # [rows, AUs]: 0/1
    aus: tuple[int, ...] = AUS
    components: tuple[tuple[int, int], ...] | None = None  # compound rows: their two basic expressions

    @property
    def membership(self) -> np.ndarray:
        """[rows, AUs] 0/1: the AU is prototypical or observational for the row."""
        return (self.weights > 0).astype(np.float32)

    @property
    def observational(self) -> np.ndarray:
        return self.membership - self.prototypical

    def entries(self) -> dict[str, dict]:
        """The table as {row: {"prototypical": [AU numbers], "observational": {AU number: w}}}."""
        out = {}
        for r, row in enumerate(self.rows):
            proto = [self.aus[a] for a in np.flatnonzero(self.prototypical[r])]
            obs = {self.aus[a]: round(float(self.weights[r, a]), 4)
                   for a in np.flatnonzero(self.observational[r])}
            out[row] = {"prototypical": proto, "observational": obs}
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON in the format `load` reads."""
        entries = {row: {"prototypical": e["prototypical"],
                         "observational": {str(k): v for k, v in e["observational"].items()}}
                   for row, e in self.entries().items()}
        if self.components is not None:
            for row, (a, b) in zip(self.rows, self.components):
                entries[row]["components"] = [EXPRESSIONS[a], EXPRESSIONS[b]]
        kind = "expressions" if self.rows == EXPRESSIONS else "compound"
        Path(path).write_text(json.dumps({"name": self.name, "rows": kind, "aus": list(self.aus),
                                          "entries": entries}, indent=2))

    def __repr__(self) -> str:
        return f"RelatednessTable({self.name!r}, {len(self.rows)} rows, {int(self.membership.sum())} AU links)"


def load(name_or_path: str | os.PathLike, aus: Sequence[int] = AUS) -> RelatednessTable:
    """A built-in table ("du2014", "affwild2", "du2014_compound") or a user's JSON/CSV table file."""
    key = str(name_or_path)
    if key in BUILTIN:
        path = _TABLE_DIR / BUILTIN[key]
    else:
        path = Path(key)
        if not path.is_file():
            raise FileNotFoundError(f"relatedness table {key!r}: not a built-in name {sorted(BUILTIN)} "
                                    f"and no such file")
    if path.suffix.lower() == ".csv":
        name, entries, kind = path.stem, _read_csv(path), "expressions"
    else:
        try:
            spec = json.loads(path.read_text())
            name, entries, kind = spec.get("name", path.stem), spec["entries"], spec.get("rows", "expressions")
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise ValueError(f"{path}: expected JSON {{'entries': {{expression: {{'prototypical': [AU...], "
                             f"'observational': {{AU: weight}}}}}}}} ({err})") from err
    return _from_entries(name, entries, kind, tuple(aus), source=str(path))


def _read_csv(path: Path) -> dict:
    entries: dict[str, dict] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"expression", "au", "weight"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}:1: expected a header with columns expression,au,weight[,kind]; "
                             f"missing {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                au, weight = parse_au_number(row["au"]), float(row["weight"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}:{line}: expected an AU label and a numeric weight ({err})") from err
            kind = (row.get("kind") or ("prototypical" if weight >= 1.0 else "observational")).strip().lower()
            if kind not in ("prototypical", "observational"):
                raise ValueError(f"{path}:{line}: kind must be 'prototypical' or 'observational', got {kind!r}")
            entry = entries.setdefault(row["expression"].strip(), {"prototypical": [], "observational": {}})
            if kind == "prototypical":
                entry["prototypical"].append(au)
            else:
                entry["observational"][au] = weight
    return entries


def _from_entries(name: str, entries: dict, kind: str, aus: tuple[int, ...], source: str) -> RelatednessTable:
    rows = EXPRESSIONS if kind == "expressions" else COMPOUND_EXPRESSIONS
    if kind == "compound" and set(entries) != set(rows):
        rows = tuple(entries)  # a user's compound table may carry its own categories
    weights = np.zeros((len(rows), len(aus)), np.float32)
    proto = np.zeros_like(weights)
    dropped: set[int] = set()
    components = [] if kind == "compound" else None
    for row_name, entry in entries.items():
        if kind == "expressions":
            index = expression_index(row_name)
            if index is None:
                raise ValueError(f"{source}: row {row_name!r} is not one of the 7 basic expressions")
        else:
            index = rows.index(row_name)
        for au in entry.get("prototypical", []):
            au = parse_au_number(au)
            if au not in aus:
                dropped.add(au)
                continue
            weights[index, aus.index(au)] = proto[index, aus.index(au)] = 1.0
        for au, w in entry.get("observational", {}).items():
            au, w = parse_au_number(au), float(w)
            if not 0.0 < w <= 1.0:
                raise ValueError(f"{source}: {row_name} AU{au}: weight {w} outside (0, 1]")
            if au not in aus:
                dropped.add(au)
                continue
            weights[index, aus.index(au)] = w
    if components is not None:
        for row_name in rows:
            names = entries[row_name].get("components")
            if not names or len(names) != 2:
                raise ValueError(f"{source}: compound row {row_name!r} needs 'components': [expr1, expr2]")
            components.append((expression_index(names[0]), expression_index(names[1])))
    if dropped:
        log.warning("relatedness table %s: dropped AUs outside the canonical set: %s", name,
                    ", ".join(f"AU{a}" for a in sorted(dropped)))
    return RelatednessTable(name, tuple(rows), weights, proto, aus,
                            None if components is None else tuple(components))


def infer(expr, au, au_mask, *, aus: Sequence[int] = AUS, min_support: int = 20, min_weight: float = 0.1,
          include_neutral: bool = False, name: str = "inferred") -> RelatednessTable:
    """Relatedness from co-annotated data (paper section 4.2).

    For each expression e and AU a, w(e, a) = fraction of the images labelled e, with AU a annotated, where a is
    active. A link is kept when at least `min_support` such images exist and w >= `min_weight`; kept links are
    observational with weight w (as in the paper's Table 3), never prototypical. Neutral gets no links unless
    `include_neutral` (the paper's table has none: a neutral face requires no AU). Images without an expression
    label (expr < 0) are ignored. Columns of `au` are the AU numbers `aus`; those outside the canonical set are
    dropped with one warning.
    """
    expr = np.asarray(expr).reshape(-1).astype(np.int64)
    au = np.asarray(au, np.float32)
    au_mask = np.asarray(au_mask, np.float32)
    if au.shape != au_mask.shape or au.shape[0] != expr.shape[0] or au.shape[1] != len(aus):
        raise ValueError(f"infer: expected expr [N], au and au_mask [N, {len(aus)}]; got {expr.shape}, "
                         f"{au.shape}, {au_mask.shape}")
    keep = [i for i, a in enumerate(aus) if a in AUS]
    if len(keep) < len(aus):
        log.warning("relatedness.infer: dropped AUs outside the canonical set: %s",
                    ", ".join(f"AU{a}" for i, a in enumerate(aus) if i not in keep))
    labelled = expr >= 0
    onehot = np.eye(len(EXPRESSIONS), dtype=np.float32)[expr[labelled]]  # [M, 7]
    support = onehot.T @ au_mask[labelled]  # [7, A]: images of e with a annotated
    active = onehot.T @ (au[labelled] * au_mask[labelled] >= 0.5).astype(np.float32)
    fraction = np.divide(active, support, out=np.zeros_like(active), where=support > 0)
    linked = (support >= min_support) & (fraction >= min_weight)
    if not include_neutral:
        linked[EXPRESSIONS.index("Neutral")] = False
    weights = np.zeros((len(EXPRESSIONS), len(AUS)), np.float32)
    for i in keep:
        weights[:, AUS.index(aus[i])] = np.where(linked[:, i], fraction[:, i], 0.0)
    return RelatednessTable(name, EXPRESSIONS, weights, np.zeros_like(weights), AUS)


def format_table(table: RelatednessTable) -> str:
    """The table as the paper's Table 3 prints it: one row per expression, its AUs by decreasing weight."""
    lines = ["| emotion | AUs (weight) |", "|---|---|"]
    for r, row in enumerate(table.rows):
        linked = sorted(np.flatnonzero(table.weights[r]), key=lambda a: -table.weights[r, a])
        cells = ", ".join(f"{table.aus[a]} ({table.weights[r, a]:.2f})" for a in linked)
        lines.append(f"| {row} | {cells or '-'} |")
    return "\n".join(lines)


def _record_labels(record_dirs: Sequence[str], split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """expr [N], au [N, 17], au_mask [N, 17] of every record of `split` in `record_dirs` (images not decoded)."""
    import tensorflow as tf

    from fbnet_tf.data import record_files
    from fbnet_tf.records import feature_spec

    spec = {k: v for k, v in feature_spec().items() if k in ("expr", "au", "au_mask")}
    files = [f for d in record_dirs for f in record_files(d, split)]
    parts = {"expr": [], "au": [], "au_mask": []}
    if files:
        dataset = tf.data.TFRecordDataset(files).batch(4096).map(lambda s: tf.io.parse_example(s, spec))
        for batch in dataset.as_numpy_iterator():
            for key in parts:
                parts[key].append(batch[key])
    if not parts["expr"]:
        return np.zeros(0, np.int64), np.zeros((0, len(AUS)), np.float32), np.zeros((0, len(AUS)), np.float32)
    return tuple(np.concatenate(parts[key]) for key in ("expr", "au", "au_mask"))


def _model_labels(model_path: str, record_dirs: Sequence[str], split: str):
    """The paper's route: expression-labelled images annotated with a trained model's AU predictions (>= 0.5)."""
    from fbnet_tf import runs
    from fbnet_tf.evaluate import predict_records

    model = runs.load_inference_model(model_path)
    expr, au = [], []
    for record_dir in record_dirs:
        collected = predict_records(model, record_dir, split)
        if collected:
            labelled = collected["expr"] >= 0
            expr.append(collected["expr"][labelled])
            au.append((collected["pred_action_units"][labelled] >= 0.5).astype(np.float32))
    if not expr:
        return np.zeros(0, np.int64), np.zeros((0, len(AUS)), np.float32), np.zeros((0, len(AUS)), np.float32)
    au = np.concatenate(au)
    return np.concatenate(expr), au, np.ones_like(au)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.relatedness",
                                     description="Relatedness tables: infer one from data (paper section 4.2).")
    commands = parser.add_subparsers(dest="command", required=True)
    inferring = commands.add_parser("infer", help="w(e, AU) = fraction of e's images with the AU active")
    inferring.add_argument("--data", nargs="+", required=True, metavar="DIR", help="TFRecord directories")
    inferring.add_argument("--from-model", metavar="RUN",
                           help="annotate expression-labelled images with this run's AU predictions first")
    inferring.add_argument("--split", default="train")
    inferring.add_argument("--out", required=True, help="the JSON table to write (usable as loss.relatedness=FILE)")
    inferring.add_argument("--min-support", type=int, default=20, help="images of e with the AU annotated (>= 1)")
    inferring.add_argument("--min-weight", type=float, default=0.1, help="weakest link kept, in (0, 1]")
    args = parser.parse_args(argv)
    if args.min_support < 1 or not 0.0 < args.min_weight <= 1.0:
        parser.error(f"--min-support {args.min_support} must be >= 1 and --min-weight {args.min_weight} in (0, 1]")

    if args.from_model:
        expr, au, mask = _model_labels(args.from_model, args.data, args.split)
    else:
        expr, au, mask = _record_labels(args.data, args.split)
    both = (expr >= 0) & (mask.sum(axis=1) > 0)
    if not both.any():
        print(f"relatedness infer: no {args.split} image in {args.data} carries both an expression and AU labels"
              + ("" if args.from_model else " (pass --from-model RUN to annotate AUs with a trained model)"),
              file=sys.stderr)
        return 1
    table = infer(expr, au, mask, min_support=args.min_support, min_weight=args.min_weight,
                  name=Path(args.out).stem)
    print(format_table(table))
    temporary = Path(f"{args.out}.tmp")
    table.save(temporary)
    os.replace(temporary, args.out)
    print(f"{int(both.sum())} images -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
