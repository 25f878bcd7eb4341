"""The paper's result tables in one command: Table 2's rows, Table 4's single-task baselines, Table 5's compound rows.

    python -m fbnet_tf.ablation --records DIR [DIR ...] --seeds 3 --out DIR [--preset small] [--set KEY=VALUE ...]
                                [--compound DIR ...] [--few-shot-epochs N] [--only NAME,...] [--dry-run]

Each (experiment, seed) trains into `<out>/<experiment>/seed<k>/` with `fbnet_tf.train.train` and is evaluated there
(`evaluation.json`). With `--compound`, the runs Table 5 compares (no coupling, both couplings) are also scored
zero-shot on those records (`compound.json`) and fine-tuned on each one's train split, all layers, into
`few_shot/<records>/` (`fbnet_tf.compound.fine_tune`: the few-shot rows). A single-task baseline gets as many steps
per epoch as the joint model (one pass over its own stream would be a third of the updates). A run whose results
exist is not run again, and a killed one resumes, so rerunning the command finishes what is missing. At the end it
prints and writes (`tables.md`, `ablation.json`, `ablation.png`) Tables 2, 4 and 5 with the mean and the spread
(sample standard deviation) over seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fbnet_tf import cli, runs
from fbnet_tf import config as config_lib

# Table 2: no coupling once, then each coupling under each relatedness table (the paper's row order).
TABLE2_ROWS = ("no_coupling",
               *(f"{coupling}_{table}" for coupling in ("coannotation", "soft_coannotation", "distr_matching",
                                                        "soft_coannotation_distr_matching")
                 for table in ("du2014", "affwild2")))
BASELINES = ("single_task_va", "single_task_expr", "single_task_au")
# Table 4 and Table 5 compare these against the baselines / against each other.
BOTH_COUPLINGS = ("soft_coannotation_distr_matching_du2014", "soft_coannotation_distr_matching_affwild2")
ZERO_SHOT_ROWS = ("no_coupling", *BOTH_COUPLINGS)


@dataclass(frozen=True)
class Run:
    experiment: str
    seed: int
    run_dir: Path

    @property
    def done(self) -> bool:
        return (self.run_dir / "evaluation.json").is_file()


def plan(out: str | os.PathLike, seeds: int, only: Sequence[str] | None = None) -> list[Run]:
    """Every (experiment, seed) run of the tables, in order; `only` keeps the named experiments."""
    names = [*TABLE2_ROWS, *BASELINES]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"--only {unknown}: expected names among {names}")
        names = [n for n in names if n in only]
    return [Run(name, seed, Path(out) / name / f"seed{seed}") for name in names for seed in range(seeds)]


def run_config(run: Run, records: Sequence[str], preset: str, overrides: Sequence[str]) -> config_lib.ExperimentConfig:
    cfg = config_lib.experiment(run.experiment)
    cfg = config_lib.override(cfg, [f"model.preset={preset}", *overrides])
    cfg = config_lib.from_dict({"data": {"record_dirs": [os.path.abspath(r) for r in records], "seed": run.seed},
                                "runtime": {"seed": run.seed}}, cfg)
    return cfg.validate()


def execute(run: Run, records: Sequence[str], preset: str, overrides: Sequence[str],
            compound_records: Sequence[str] = (), few_shot_epochs: int = 30) -> None:
    """Train (or resume) one run, then evaluate it into its run directory."""
    import keras

    from fbnet_tf import compound, evaluate, train

    cfg = run_config(run, records, preset, overrides)
    if run.experiment in BASELINES and cfg.trainer.steps_per_epoch is None:
        # An epoch of one stream is a third of the joint model's steps: give a baseline the same number of updates
        # as the runs it is compared with, or it is compared under-trained.
        from fbnet_tf import data

        joint = data.training_dataset(cfg.data.record_dirs, batch_size=cfg.data.batch_size,
                                      image_size=cfg.model.image_size)[1]
        cfg = config_lib.override(cfg, [f"trainer.steps_per_epoch={joint}"])
    keras.backend.clear_session()
    keras.utils.set_random_seed(run.seed)
    train.train(cfg, run.run_dir)
    model = runs.load_inference_model(run.run_dir)
    if compound_records and run.experiment in ZERO_SHOT_ROWS and "expr" in cfg.model.tasks:
        results = compound.zero_shot(model, compound_records, out_dir=str(run.run_dir), model_name=run.experiment)
        runs.write_json(run.run_dir / "compound.json", results)
        for records_dir in compound_records:
            few_shot = few_shot_dir(run, records_dir)
            if (few_shot / "compound.json").is_file():
                continue
            try:
                compound.fine_tune(str(run.run_dir), [records_dir], str(few_shot), epochs=few_shot_epochs,
                                   seed=run.seed)
            except ValueError as error:  # records for zero-shot only (no compound-labelled train split)
                print(f"ablation: no few-shot row from {records_dir}: {error}", file=sys.stderr)
    report = evaluate.evaluate(model, cfg.data.record_dirs, out_dir=None, row_name=run.experiment, verbose=False)
    if not report["databases"]:
        raise RuntimeError(f"{run.run_dir}: the evaluation found no test or validation records in {records}")
    runs.write_json(run.run_dir / "evaluation.json", report)  # last: its presence marks the run done


def few_shot_dir(run: Run, records_dir: str) -> Path:
    return run.run_dir / "few_shot" / Path(records_dir).resolve().name


# ---------------------------------------------------------------- tables

def collect(runs_: Sequence[Run]) -> dict:
    """{experiment: {"databases": {db: {metric: [values over seeds]}}, "compound": {db: {metric: [...]}},
    "few_shot": {db: {metric: [...]}}}} (compound: zero-shot)."""
    out: dict = {}
    for run in runs_:
        if not run.done:
            continue
        entry = out.setdefault(run.experiment, {"databases": {}, "compound": {}, "few_shot": {}, "seeds": []})
        entry["seeds"].append(run.seed)
        report = json.loads((run.run_dir / "evaluation.json").read_text())
        for db, scores in report["databases"].items():
            for metric, value in scores.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    entry["databases"].setdefault(db, {}).setdefault(metric, []).append(float(value))
        for route, files in (("compound", [run.run_dir / "compound.json"]),
                             ("few_shot", sorted(run.run_dir.glob("few_shot/*/compound.json")))):
            for compound_file in (f for f in files if f.is_file()):
                for db, scores in json.loads(compound_file.read_text()).items():
                    if isinstance(scores, dict) and "mean_diagonal" in scores:
                        for metric in ("f1", "uar", "mean_diagonal"):
                            entry[route].setdefault(db, {}).setdefault(metric, []).append(float(scores[metric]))
    return out


def cell(values: Sequence[float] | None) -> str:
    """'0.612' for one value, '0.612 ± 0.018' (sample std) for several, '-' for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _columns(results: dict) -> list[tuple[str, str, str]]:
    """(database key, column heading, metric key) of Table 2 for the databases some run evaluated."""
    from fbnet_tf.evaluate import TABLE_COLUMNS

    present = {db for entry in results.values() for db in entry["databases"]}
    return [(db, f"{heading} {column}", metric) for db, heading, columns in TABLE_COLUMNS if db in present
            for column, metric in columns]


def _markdown(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tables(results: dict) -> str:
    """Tables 2, 4 and 5 as markdown from `collect`'s results."""
    columns = _columns(results)
    header = ["", *(heading for _, heading, _ in columns)]

    def row(name: str, label: str | None = None, sources: dict | None = None) -> list[str]:
        cells = []
        for db, _, metric in columns:
            source = (sources or {}).get(db, name)
            cells.append(cell(results.get(source, {}).get("databases", {}).get(db, {}).get(metric)))
        return [label or name, *cells]

    parts = [_markdown("Table 2: FaceBehaviorNet with and without coupling losses", header,
                       [row(name) for name in TABLE2_ROWS if name in results])]
    # The (3x) single-task row: each database's columns from the baseline of the task that database scores.
    task_of_metric = {"ccc_valence": "single_task_va", "ccc_arousal": "single_task_va", "au_f1": "single_task_au",
                      "au_accuracy": "single_task_au"}
    baseline_cells = ["(3 x) single-task"]
    for db, _, metric in columns:
        source = task_of_metric.get(metric, "single_task_expr")
        baseline_cells.append(cell(results.get(source, {}).get("databases", {}).get(db, {}).get(metric)))
    table4 = [baseline_cells] if any(b in results for b in BASELINES) else []
    table4 += [row(name) for name in ("no_coupling", *BOTH_COUPLINGS) if name in results]
    parts.append(_markdown("Table 4: single-task baselines against FaceBehaviorNet", header, table4))
    compound_rows = [[f"{label}, {name}",
                      cell(results[name][route].get("emotionet", {}).get("f1")),
                      cell(results[name][route].get("emotionet", {}).get("uar")),
                      cell(results[name][route].get("rafdb", {}).get("mean_diagonal"))]
                     for route, label in (("compound", "zero-shot"), ("few_shot", "fine-tuned"))
                     for name in ZERO_SHOT_ROWS if results.get(name, {}).get(route)]
    if compound_rows:
        parts.append(_markdown("Table 5: compound expressions, zero-shot and fine-tuned (all layers)",
                               ["", "EmotioNet F1", "EmotioNet UAR", "RAF-DB mean diag."], compound_rows))
    return "\n\n".join(parts)


def plot(results: dict, path: str | os.PathLike) -> str:
    """One bar chart per Table 2 column: each experiment's mean with its spread over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = _columns(results)
    names = [n for n in (*TABLE2_ROWS, *BASELINES) if n in results]
    cols = min(3, max(1, len(columns)))
    grid_rows = max(1, -(-len(columns) // cols))
    figure = Figure(figsize=(5.5 * cols, 0.32 * len(names) * grid_rows + 1.5 * grid_rows))
    FigureCanvasAgg(figure)
    for k, (db, heading, metric) in enumerate(columns):
        axes = figure.add_subplot(grid_rows, cols, k + 1)
        values = [results[n]["databases"].get(db, {}).get(metric) or [np.nan] for n in names]
        means = [np.mean(v) for v in values]
        spreads = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        axes.barh(range(len(names)), means, xerr=spreads, color="tab:blue", alpha=0.8)
        axes.set_yticks(range(len(names)), names if k % cols == 0 else [""] * len(names), fontsize=7)
        axes.invert_yaxis()
        axes.set_title(heading, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fbnet_tf.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", nargs="+", required=True, metavar="DIR", help="TFRecord dirs to train on")
    parser.add_argument("--out", required=True, help="folder of the runs and the tables")
    parser.add_argument("--seeds", type=int, default=3, help="runs per experiment (seeds 0..N-1)")
    parser.add_argument("--preset", default="small", help="model preset of every run (paper, small, tiny)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (e.g. trainer.epochs=6)")
    parser.add_argument("--compound", nargs="+", default=[], metavar="DIR",
                        help="compound-labelled records: add Table 5's zero-shot and fine-tuned rows")
    parser.add_argument("--few-shot-epochs", type=cli.integer(1), default=30,
                        help="epochs of each fine-tuned row (all layers, the compound fine-tune default)")
    parser.add_argument("--only", help="comma-separated experiments to run (default: all of Tables 2 and 4)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: expected an integer >= 1")
    missing = [d for d in [*args.records, *args.compound] if not Path(d).is_dir()]
    if missing:
        parser.error(f"record directories not found: {missing}")
    try:
        runs_ = plan(args.out, args.seeds, args.only.split(",") if args.only else None)
        for run in runs_:  # every config is checked before the first run starts
            run_config(run, args.records, args.preset, args.overrides)
    except ValueError as error:
        parser.error(str(error))
    if args.dry_run:
        for run in runs_:
            print(f"{'done' if run.done else 'todo'}  {run.experiment:45s} seed {run.seed}  {run.run_dir}")
        return 0

    todo = [run for run in runs_ if not run.done]
    print(f"ablation: {len(runs_)} runs, {len(runs_) - len(todo)} already done", file=sys.stderr)
    for k, run in enumerate(todo, start=1):
        print(f"ablation [{k}/{len(todo)}] {run.experiment} seed {run.seed} -> {run.run_dir}", file=sys.stderr)
        execute(run, args.records, args.preset, args.overrides, args.compound, args.few_shot_epochs)
    results = collect(runs_)
    if not results:
        print("ablation: no run has results", file=sys.stderr)
        return 1
    text = tables(results)
    print(text)
    out = Path(args.out)
    (out / "tables.md.tmp").write_text(text + "\n")
    os.replace(out / "tables.md.tmp", out / "tables.md")
    runs.write_json(out / "ablation.json", results)
    print(f"wrote {out / 'tables.md'}, {out / 'ablation.json'} and {plot(results, out / 'ablation.png')}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
