"""The demo world: procedural AU-driven faces written as the databases ship.

The releases FaceBehaviorNet trains on (AffectNet, Aff-Wild2, DISFA, RAF-DB) and those FATAUVA-Net trains on
(CelebA, BP4D in the FERA 2015 layout, SEMAINE as FERA 2015 ships it, Aff-Wild v1). `render_world(out)` renders
them in their real layouts (`out/<release>/`); `prepare(root, releases=...)` renders what is missing and builds
their TFRecords with the real builders. Command line: `python -m fbnet_tf.demo render --out DIR [--only R,R]`,
`python -m fbnet_tf.demo sheet --out sheet.png` and `python -m fbnet_tf.demo check --root DIR`.
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

FACEBEHAVIORNET = ("affectnet", "affwild2", "disfa", "rafdb")
FATAUVANET = ("celeba", "bp4d", "semaine", "affwild")
DATABASES = FACEBEHAVIORNET + FATAUVANET
# Each release draws from its own generator, keyed by its place here: appending a release changes no other's bytes.
_DATABASE_KEYS = {name: k + 1 for k, name in enumerate(DATABASES)}
# The builders (tfrecords_builder.DATABASES) that read each release's folder.
BUILDERS = {"affectnet": ("affectnet",), "affwild2": ("affwild2",), "disfa": ("disfa",),
            "rafdb": ("rafdb", "rafdb_compound"), "celeba": ("celeba",), "bp4d": ("bp4d",), "semaine": ("semaine",),
            "affwild": ("affwild",)}
_VIDEOS = ("affwild2", "disfa", "bp4d", "semaine", "affwild")  # long jobs: started first
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

    Deterministic for a seed whatever `workers` is and whichever releases are rendered together: everything
    random is drawn here, per database from its own generator; the pool only draws and encodes. Writes
    `out/demo_world.json` (seed, scale, counts of every release rendered there so far, timing) last.
    """
    from fbnet_tf.demo import writers

    if scale not in writers.SCALES:
        raise ValueError(f"scale must be one of {sorted(writers.SCALES)}, got {scale!r}")
    unknown = set(databases) - set(DATABASES)
    if unknown:
        raise ValueError(f"unknown demo databases {sorted(unknown)}; expected a subset of {DATABASES}")
    out = Path(out)
    earlier = read_marker(out)
    if earlier and (earlier["seed"], earlier["scale"]) != (seed, scale):
        raise ValueError(f"{out / MARKER} says seed {earlier['seed']}, scale {earlier['scale']!r}; rendering seed "
                         f"{seed}, scale {scale!r} into the same folder would mix two worlds: use another --out")
    start = time.perf_counter()
    plans = {}
    for name in databases:
        rng = np.random.default_rng([seed, _DATABASE_KEYS[name]])
        plans[name] = writers.PLANNERS[name](out / name, rng, writers.SCALES[scale][name])
    # Long video jobs first so the pool's last minutes are not one worker finishing a video alone.
    order = sorted(((name, k) for name, plan in plans.items() for k in range(len(plan.jobs))),
                   key=lambda item: item[0] not in _VIDEOS)
    results = _run([plans[name].jobs[k] for name, k in order], workers, f"rendering the demo world ({scale})")
    per_database = {name: [None] * len(plan.jobs) for name, plan in plans.items()}
    for (name, k), result in zip(order, results):
        per_database[name][k] = result
    counts = {name: plans[name].finish(per_database[name]) for name in databases}
    summary = {"seed": seed, "scale": scale,
               "databases": {**(earlier or {}).get("databases", {}), **counts},
               "render_seconds": round(time.perf_counter() - start, 1), "workers": workers}
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f"{MARKER}.partial"
    temporary.write_text(json.dumps(summary, indent=2))
    temporary.replace(out / MARKER)
    return summary


def read_marker(out) -> dict | None:
    """The `demo_world.json` of a rendered folder (seed, scale, the releases rendered), or None."""
    path = Path(out) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def prepare(root, *, seed: int = 0, scale: str = "small", workers: int = 2, image_size: int = 112,
            releases=FACEBEHAVIORNET) -> dict:
    """Render the `releases` missing from `root/raw` and build TFRecords into `root/records/<database>` with
    `tfrecords_builder.build` (every builder of `BUILDERS[release]`); returns {database: records_dir}.

    Builders not registered in `tfrecords_builder.DATABASES` are skipped with a message; a records folder that
    already holds a `manifest.json` is not rebuilt. FATAUVA-Net's demo passes `releases=FATAUVANET`.
    """
    import tfrecords_builder

    root = Path(root)
    raw = root / "raw"
    rendered = (read_marker(raw) or {}).get("databases", {})
    missing = tuple(name for name in releases if name not in rendered)
    if missing:
        render_world(raw, seed=seed, scale=scale, workers=workers, databases=missing)
    registered = tuple(getattr(tfrecords_builder, "DATABASES", ()))
    built = {}
    for release in releases:
        for database in BUILDERS[release]:
            if database not in registered:
                message = (f"demo: no builder registered for {database!r} in tfrecords_builder.DATABASES yet; "
                           f"its raw files are in {raw / release}, skipped")
                log.warning(message)
                print(message)
                continue
            out = root / "records" / database
            if not (out / "manifest.json").is_file():
                tfrecords_builder.build(database, raw / release, out, workers=workers, image_size=image_size)
            built[database] = out
    return built
