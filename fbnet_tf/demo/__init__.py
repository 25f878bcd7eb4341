"""The demo world: procedural AU-driven faces written as AffectNet, Aff-Wild2, DISFA and RAF-DB ship.

`render_world(out)` renders the four raw databases in their real layouts (`out/affectnet`, `out/affwild2`,
`out/disfa`, `out/rafdb`); `prepare(root)` also builds their TFRecords with the real builders. Command line:
`python -m fbnet_tf.demo render --out DIR` and `python -m fbnet_tf.demo sheet --out sheet.png`.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

DATABASES = ("affectnet", "affwild2", "disfa", "rafdb")
_DATABASE_KEYS = {name: k + 1 for k, name in enumerate(DATABASES)}
MARKER = "demo_world.json"

log = logging.getLogger(__name__)


def _call(job):
    function, args = job
    return function(*args)


def _init_worker(parent_pid):
    import cv2

    from fbnet_tf.processes import exit_with_parent

    exit_with_parent(parent_pid)  # a killed `demo render` must not leave its workers running
    cv2.setNumThreads(1)  # the pool provides the parallelism


def _run(jobs: list, workers: int, desc: str) -> list:
    """Results of `jobs` in order; in a spawn-started process pool when workers > 1 (safe beside TensorFlow)."""
    from tqdm import tqdm

    if workers <= 1:
        return [_call(job) for job in tqdm(jobs, desc=desc, unit="job")]
    context = multiprocessing.get_context("spawn")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(os.getpid(),)) as pool:
        # chunksize 1: a chunk holding several videos would keep one worker busy while the other idles.
        return list(tqdm(pool.map(_call, jobs, chunksize=1), total=len(jobs), desc=desc, unit="job"))


def render_world(out, *, seed: int = 0, scale: str = "small", workers: int = 2,
                 databases=DATABASES) -> dict:
    """Render the demo databases under `out` (one folder each, their real layouts); returns what was written.

    Deterministic for a seed whatever `workers` is: everything random is drawn here, per database from its own
    generator; the pool only draws and encodes. Writes `out/demo_world.json` (seed, scale, counts, timing) last.
    """
    from fbnet_tf.demo import writers

    if scale not in writers.SCALES:
        raise ValueError(f"scale must be one of {sorted(writers.SCALES)}, got {scale!r}")
    unknown = set(databases) - set(DATABASES)
    if unknown:
        raise ValueError(f"unknown demo databases {sorted(unknown)}; expected a subset of {DATABASES}")
    out = Path(out)
    start = time.perf_counter()
    plans = {}
    for name in databases:
        rng = np.random.default_rng([seed, _DATABASE_KEYS[name]])
        plans[name] = writers.PLANNERS[name](out / name, rng, writers.SCALES[scale][name])
    # Long video jobs first so the pool's last minutes are not one worker finishing a video alone.
    order = sorted(((name, k) for name, plan in plans.items() for k in range(len(plan.jobs))),
                   key=lambda item: item[0] not in ("affwild2", "disfa"))
    results = _run([plans[name].jobs[k] for name, k in order], workers, f"rendering the demo world ({scale})")
    per_database = {name: [None] * len(plan.jobs) for name, plan in plans.items()}
    for (name, k), result in zip(order, results):
        per_database[name][k] = result
    counts = {name: plans[name].finish(per_database[name]) for name in databases}
    summary = {"seed": seed, "scale": scale, "databases": counts,
               "render_seconds": round(time.perf_counter() - start, 1), "workers": workers}
    (out / MARKER).write_text(json.dumps(summary, indent=2))
    return summary


def prepare(root, *, seed: int = 0, scale: str = "small", workers: int = 2, image_size: int = 112) -> dict:
    """Render the demo world into `root/raw` (unless already there) and build TFRecords into
    `root/records/<database>` with `tfrecords_builder.build`; returns {database: records_dir}.

    Databases whose builder is not registered in `tfrecords_builder.DATABASES` are skipped with a message;
    a records folder that already holds a `manifest.json` is not rebuilt.
    """
    import tfrecords_builder

    root = Path(root)
    raw = root / "raw"
    if not (raw / MARKER).is_file():
        render_world(raw, seed=seed, scale=scale, workers=workers)
    registered = tuple(getattr(tfrecords_builder, "DATABASES", ()))
    built = {}
    for database in registered:
        folder = next((name for name in DATABASES if database == name or database.startswith(name)), None)
        if folder is None:
            continue
        out = root / "records" / database
        if not (out / "manifest.json").is_file():
            tfrecords_builder.build(database, raw / folder, out, workers=workers, image_size=image_size)
        built[database] = out
    for name in DATABASES:
        if not any(database == name or database.startswith(name) for database in registered):
            message = (f"demo: no builder registered for {name!r} in tfrecords_builder.DATABASES yet; "
                       f"its raw files are in {raw / name}, skipped")
            log.warning(message)
            print(message)
    return built
