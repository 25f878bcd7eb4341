"""The one build engine: list a builder's items, shard them, turn them into examples (in a process pool),
write the shards atomically, resume, and account for every skipped input in `manifest.json`.

Determinism: items are sorted by key within their split and cut into contiguous shards; results come back in
item order (a long video's frame ranges in frame order) whatever the number of workers, and the parent encodes
them with sorted feature keys, so the bytes of every shard depend on the input and the arguments only, never on
`workers`. Resume: each finished shard leaves a small state file (fingerprint of its items and of the arguments,
its sha256, counts, skips, and the size and mtime of every file its examples read) under `<out>/.shards/`; a rerun
keeps a shard whose file still has that checksum and whose inputs are unchanged (`force` rebuilds all).
Beyond one machine, `runner` = direct|dataflow|flink|spark writes the same shards and manifest with an Apache Beam
pipeline over the pending shards (`tfrecords_builder.beam_pipeline`); listing, planning and the manifest stay here.
Accounting: labelled inputs = written + skipped (`manifest["accounting"]`); a build that writes nothing or skips
more than half of its inputs raises `PartialBuild` unless `allow_partial`. One build at a time holds `<out>/.lock`,
and a folder holds one database's build.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import traceback
import uuid
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fbnet_tf.labels import AU_NAMES, COMPOUND_EXPRESSIONS, EXPRESSIONS
from fbnet_tf.records import SPLITS, encode_example
from tfrecords_builder.base import SHARDS, SKIP_HINTS, WORKERS, Builder, Item, Option, Reason, Skip, UsageError
from tfrecords_builder.registry import get_builder

MANIFEST = "manifest.json"
STATE_DIR = ".shards"
LOCK = ".lock"  # holds the PID of the build writing the folder
PARTIAL_LIMIT = 0.5  # a build skipping more than this fraction of its inputs fails unless allow_partial
UNEXPECTED_ERROR = "unexpected_error"  # a builder raised something other than Skip: counted, never a crash
RUNNER = Option("pool", choices=("pool", "direct", "dataflow", "flink", "spark"))  # pool: this machine's processes


class BuildError(RuntimeError):
    """The build cannot go on (strict mode met a skip, or the output folder is unusable)."""


class BuildInterrupted(RuntimeError):
    """Raised by the internal `_stop_after_shards` option (resume tests): the shards written so far stay."""


class PartialBuild(BuildError):
    """The build wrote nothing, or skipped more than half of its inputs (the manifest is written all the same)."""


def build(database: str | type[Builder], root, out, *, workers: int = 1, image_size: int = 112, strict: bool = False,
          shards: int | None = None, frame_stride: int = 1, progress: bool = True, force: bool = False,
          allow_partial: bool = False, runner: str = "pool", beam_options=(), **builder_options) -> dict:
    """Build the TFRecords of one database; returns the manifest (also written to `<out>/manifest.json`).

    `database` is a name in `tfrecords_builder.DATABASES` (or a `Builder` subclass); `root` the folder the user
    downloaded; `shards` the number of shards per split (default: one per `ITEMS_PER_SHARD` items); `strict`
    turns any skip into a `BuildError`; `force` rebuilds every shard instead of resuming; `allow_partial`
    accepts a build that wrote nothing or skipped more than half of its inputs (else `PartialBuild`, after the
    manifest is written); `runner` "pool" (`workers` processes here) or a Beam runner (direct, dataflow, flink,
    spark: the `beam` extra) with `beam_options`, Beam's own pipeline options as command-line strings; other
    keyword arguments are the builder's own options (`Builder.OPTIONS`).
    Arguments are checked before any work (`UsageError`). Call it under `if __name__ == "__main__":` in scripts
    when `workers > 1` (spawned workers re-import `__main__`).
    """
    stop_after = builder_options.pop("_stop_after_shards", None)
    workers = WORKERS.check(workers, "--workers")
    shards = None if shards is None else SHARDS.check(shards, "--shards")
    runner, beam_options = _check_runner(runner, workers, beam_options)
    builder_class = database if isinstance(database, type) else get_builder(database)
    builder = builder_class(root, image_size=image_size, frame_stride=frame_stride, **builder_options)
    if not builder.root.is_dir():
        raise builder.layout_error(f"{builder.root} is not a directory")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _FolderLock(out):
        _check_one_database(out, builder.NAME)
        manifest = _build(builder_class, builder, out, workers, shards, strict, progress, force, stop_after,
                          runner, beam_options)
    if not allow_partial:
        _check_not_partial(manifest, builder, out)
    return manifest


def _check_runner(runner, workers: int, beam_options) -> tuple[str, list[str]]:
    runner = RUNNER.check(runner, "--runner")
    beam_options = [beam_options] if isinstance(beam_options, str) else [str(option) for option in beam_options]
    if runner == "pool":
        if beam_options:
            raise UsageError(f"Beam pipeline options {beam_options} need a Beam --runner "
                             f"({', '.join(RUNNER.choices[1:])})")
        return runner, beam_options
    if workers > 1:
        raise UsageError(f"--workers={workers} is the process pool's; with --runner {runner} the runner's own "
                         "options set the parallelism (e.g. -- --direct_num_workers=2)")
    try:
        import apache_beam  # noqa: F401
    except ImportError:
        raise UsageError(f"--runner {runner} needs Apache Beam: pip install -e \".[beam]\" (Dataflow also needs "
                         "\"apache-beam[gcp]\")") from None
    return runner, beam_options


def _build(builder_class, builder, out, workers, shards, strict, progress, force, stop_after, runner,
           beam_options) -> dict:
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    items, listing_skips = _list(builder, strict, progress)
    arguments = {"root": str(builder.root.resolve()), "image_size": builder.image_size,
                 "frame_stride": builder.frame_stride, "shards": shards, "strict": strict, "workers": workers,
                 "runner": runner, "options": builder.options}
    plan = _plan(builder, items, shards)
    resumed = [shard for shard in plan if not force and _is_complete(out, shard, builder)]
    pending = [shard for shard in plan if "state" not in shard]
    if pending:  # a manifest must never describe shards that are being rewritten
        (out / MANIFEST).unlink(missing_ok=True)

    import tensorflow  # noqa: F401  - loaded before the bars start, so they time the work, not the import

    if runner == "pool":
        _build_in_pool(builder_class, builder, out, workers, plan, pending, strict, progress, stop_after)
    elif pending:
        from tfrecords_builder.beam_pipeline import build_shards

        build_shards(builder_class, builder, out, pending, strict, runner, beam_options, progress)
    manifest = _manifest(builder, plan, listing_skips, arguments, [s["file"] for s in resumed])
    _remove_stale(out, builder, plan)
    _atomic_write(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())
    if progress:
        print(format_summary(manifest), file=sys.stderr)
    return manifest


def _build_in_pool(builder_class, builder, out, workers, plan, pending, strict, progress, stop_after) -> None:
    written = 0
    with _Executor(builder_class, builder, workers) as run, _ProgressBars(builder, plan, progress) as bars:
        for shard in pending:  # once per item: a video's header is opened in this process
            shard["segments"] = [_segments(builder, item) for item in shard["items"]]
        results = run((item, segment) for shard in pending for item, segments in zip(shard["items"], shard["segments"])
                      for segment in segments)
        for shard in pending:
            _write_shard(out, shard, results, bars.bar(shard["split"]), strict)
            written += 1
            if stop_after is not None and written >= stop_after and shard is not pending[-1]:
                raise BuildInterrupted(f"stopped after {written} shard(s) as asked")


# --- one build, one database per output folder ------------------------------------------------------------------
class _FolderLock:
    """`<out>/.lock` holding this process's PID while it builds: a second build into the same folder stops with
    an error naming the holder; the lock of a process that no longer runs (a killed build) is taken over."""

    def __init__(self, out: Path):
        self.path, self.held = out / LOCK, False

    def __enter__(self):
        mine = f"{os.getpid()} {_host()}\n"
        for _ in range(3):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.path)
                if holder is not None:
                    pid, host = holder
                    raise BuildError(f"another build (PID {pid}{'' if host == _host() else ' on ' + host}) is "
                                     f"writing {self.path.parent}; wait for it to finish or choose another --out "
                                     f"(if no build runs, delete {self.path})")
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(handle, "w") as file:
                file.write(mine)
            self.held = True
            return self
        raise BuildError(f"cannot take the lock {self.path}: other builds keep taking it")

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)
        return False


def _host() -> str:
    import socket

    return socket.gethostname()


def _lock_holder(path: Path) -> tuple[int, str] | None:
    """(pid, host) of a live lock holder, or None when the lock is stale (its process is gone) or unreadable."""
    try:
        fields = path.read_text().split()
        pid, host = int(fields[0]), fields[1] if len(fields) > 1 else _host()
    except (OSError, ValueError, IndexError):
        return None
    if host != _host():
        return pid, host  # cannot tell from here: assume it runs
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid, host


def shard_database(name: str) -> str | None:
    """The database a shard file `<database>-<split>.tfrecord-0000k-of-0000n` belongs to (None: not a shard)."""
    stem, sep, _ = name.partition(".tfrecord-")
    database, dash, split = stem.rpartition("-")
    return database if sep and dash and split in SPLITS else None


def _check_one_database(out: Path, name: str) -> None:
    """Refuse to write `name` into a folder that holds another database's build (its manifest, shards or the
    shard states of a killed build): readers size epochs and streams from one manifest per folder."""
    others = set()
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            others.add(json.loads(manifest.read_text()).get("database"))
        except (OSError, ValueError):
            pass
    for path in list(out.glob("[!.]*.tfrecord-*")) + list((out / STATE_DIR).glob("[!.]*.tfrecord-*.json")):
        others.add(shard_database(path.name.removesuffix(".json")))
    others -= {name, None}
    if others:
        raise BuildError(f"{out} holds a build of {', '.join(sorted(others))}; refusing to write {name} into the "
                         f"same folder (one output folder per database: choose another --out)")


def _check_not_partial(manifest: dict, builder: Builder, out: Path) -> None:
    accounting = manifest["accounting"]
    inputs, written, skipped = accounting["inputs"], accounting["written"], accounting["skipped"]
    if written > 0 and skipped <= PARTIAL_LIMIT * inputs:
        return
    what = ("wrote 0 examples" if written == 0
            else f"skipped {skipped} of its {inputs} inputs (more than {PARTIAL_LIMIT:.0%})")
    raise PartialBuild(f"{builder.NAME}: the build {what}; {accounting['equation']}.\n"
                       f"{_commonest_reasons(manifest, builder)}\n"
                       f"Every skip is listed in {out / MANIFEST}. Rerun with --allow-partial to accept this build.")


def _commonest_reasons(manifest: dict, builder: Builder, top: int = 3) -> str:
    """The `top` commonest skip reasons with their counts, an example record and a hint where one is known."""
    hints = {**SKIP_HINTS, **builder.HINTS}
    counted = [record for record in manifest["skipped"] if record.get("count", 1) > 0]
    if not counted:
        return ("nothing was skipped: the annotation files describe no labelled input "
                "(check --root and the builder's options)")
    lines = ["commonest skip reasons:"]
    for reason, count in Counter(manifest["skipped_by_reason"]).most_common(top):
        example = next(record for record in counted if record["reason"] == reason)
        lines.append(f"  {reason}: {count}  (e.g. {_describe(example)})")
        if reason in hints:
            lines.append(f"    hint: {hints[reason]}")
    return "\n".join(lines)


# --- listing and planning --------------------------------------------------------------------------------------
def _list(builder: Builder, strict: bool, progress: bool) -> tuple[dict[str, list[Item]], list[dict]]:
    items: dict[str, list[Item]] = {split: [] for split in SPLITS}
    skips, seen = [], set()
    entries = builder.list_items()
    if progress:
        from tqdm import tqdm

        entries = tqdm(entries, desc=f"{builder.NAME} annotations", unit="row", file=sys.stderr)
    for entry in entries:
        if isinstance(entry, Skip):
            skips.append(entry.record(split=None, sample_id=None))
        elif entry.key in seen:
            skips.append(Skip(Reason.DUPLICATE, f"{entry.key} is listed more than once; the first is kept",
                              entry.file, entry.line).record(split=entry.split, sample_id=entry.key))
        else:
            seen.add(entry.key)
            items[entry.split].append(entry)
        if strict and skips:
            raise BuildError(f"--strict: {_describe(skips[0])}")
    for split in items:
        items[split].sort(key=lambda item: item.key)
    return items, skips


def _plan(builder: Builder, items: dict[str, list[Item]], shards: int | None) -> list[dict]:
    plan = []
    for split in SPLITS:
        split_items = items[split]
        if not split_items:
            continue
        count = shards or math.ceil(len(split_items) / builder.ITEMS_PER_SHARD)
        count = max(1, min(int(count), len(split_items)))
        for index in range(count):
            chunk = split_items[index * len(split_items) // count:(index + 1) * len(split_items) // count]
            name = f"{builder.NAME}-{split}.tfrecord-{index:05d}-of-{count:05d}"
            fingerprint = hashlib.sha256(json.dumps({
                "builder": builder.NAME, "version": builder.VERSION, "jpeg_quality": builder.JPEG_QUALITY,
                "image_size": builder.image_size,
                "frame_stride": builder.frame_stride, "options": builder.options, "shard": name,
                "items": [asdict(item) for item in chunk]}, sort_keys=True, default=str).encode()).hexdigest()
            plan.append({"split": split, "file": name, "items": chunk, "fingerprint": fingerprint})
    return plan


def _segments(builder: Builder, item: Item) -> list[tuple[int, int | None]]:
    """The frame ranges one item is built in: [(0, None)] (whole), or `SEGMENT_FRAMES`-long ranges of a long video
    (the last open-ended) so that several workers share it. Depends on the item only, never on `workers`."""
    span = builder.frame_range(item) if builder.SEGMENT_FRAMES > 0 else None
    if not span:
        return [(0, None)]
    length = builder.SEGMENT_FRAMES
    cuts = list(range(max(0, span[0]) + length, span[1], length))
    return [(low, high) for low, high in zip([0] + cuts, cuts + [None])]


def _is_complete(out: Path, shard: dict, builder: Builder) -> bool:
    """True (and its state attached) when a shard of an earlier run is there, intact, for the same items and
    arguments, and the files its examples read (images, videos, label files) are unchanged: a restored or
    replaced input rebuilds the shard."""
    state_path, shard_path = out / STATE_DIR / (shard["file"] + ".json"), out / shard["file"]
    if not (state_path.is_file() and shard_path.is_file()):
        return False
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return False
    if state.get("fingerprint") != shard["fingerprint"] or state.get("sha256") != _sha256(shard_path):
        return False
    if "inputs" not in state or any(_file_state(builder.root, name) != recorded
                                    for name, recorded in state["inputs"].items()):
        return False
    shard["state"] = state
    return True


def _file_state(root: Path, name: str) -> list | None:
    """[size, mtime_ns] of an input file (`Builder.depends_on`), or None when it is absent."""
    try:
        stat = (Path(name) if Path(name).is_absolute() else root / name).stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


# --- processing ------------------------------------------------------------------------------------------------
_worker_builder: Builder | None = None


def _init_worker(builder_class, root, image_size, frame_stride, options, parent_pid):
    global _worker_builder
    import cv2

    from fbnet_tf.processes import exit_with_parent

    exit_with_parent(parent_pid)  # a killed build must not leave workers running
    cv2.setNumThreads(1)
    _worker_builder = builder_class(root, image_size=image_size, frame_stride=frame_stride, **options)


def _process_chunk_in_worker(units: list[tuple[Item, tuple]]) -> list[list]:
    return [process_item(_worker_builder, item, segment) for item, segment in units]


def process_item(builder: Builder, item: Item, segment: tuple[int, int | None] = (0, None)) -> list[tuple]:
    """One item (or one frame range of a video item) -> [("sample", Sample) | ("skip", record)] and, last,
    ("inputs", {file: [size, mtime_ns] | None}) of the files it read; never raising.

    The per-example function of both engines: the process pool here, the Beam pipeline (`beam_pipeline`) beyond.
    """
    results = []
    builder.segment, builder.inputs_read = tuple(segment), {}

    def skip_record(skip: Skip) -> tuple:
        if skip.file is None:
            skip.file, skip.line = item.file, item.line
        return ("skip", skip.record(split=item.split, sample_id=item.key))

    try:
        for entry in builder.examples(item):
            if isinstance(entry, Skip):
                results.append(skip_record(entry))
            else:
                results.append(("sample", entry))
    except Skip as skip:
        results.append(skip_record(skip))
    except Exception as error:  # noqa: BLE001 - bad input must never crash a build; it is counted instead
        where = traceback.extract_tb(error.__traceback__)[-1]
        results.append(skip_record(Skip(UNEXPECTED_ERROR, f"{type(error).__name__}: {error} "
                                                          f"(at {Path(where.filename).name}:{where.lineno})")))
    results.append(("inputs", dict(builder.inputs_read)))
    builder.segment = (0, None)
    return results


def _merge_records(records: list[dict]) -> list[dict]:
    """One item's skip records with the records that differ only in `count` and `frames` (the same problem met in
    each frame range of a video) merged: counts summed, frame runs joined."""
    merged: dict[tuple, dict] = {}
    for record in records:
        key = tuple((k, json.dumps(v, sort_keys=True)) for k, v in record.items() if k not in ("count", "frames"))
        if key not in merged:
            merged[key] = dict(record)
            continue
        into = merged[key]
        into["count"] = into.get("count", 1) + record.get("count", 1)
        if "frames" in record:
            runs = [into["frames"], record["frames"]] if "frames" in into else [record["frames"]]
            into["frames"] = [min(r[0] for r in runs), max(r[1] for r in runs)]
    return list(merged.values())


_WORKER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                       "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


class _Executor:
    """`run(items)` -> iterator of per-item results in item order; in-process, or a spawn process pool.

    A bounded window of chunks is in flight, so memory stays flat for any database size; a worker that dies
    (or cannot start) raises BrokenProcessPool instead of hanging the build.
    """

    CHUNK = 4  # items per task: amortizes the inter-process round trip for small images
    WINDOW = 8  # chunks in flight per worker

    def __init__(self, builder_class, builder: Builder, workers: int):
        self.builder_class, self.builder, self.workers, self.pool = builder_class, builder, int(workers), None

    def __enter__(self):
        if self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the parent may already hold TensorFlow's threads. One thread per worker (numpy,
            # OpenCV, TensorFlow when a builder detects faces): the pool is the parallelism. Workers only
            # make samples; the parent encodes them, so an aligned-crop build never imports TF in a worker.
            saved = {name: os.environ.get(name) for name in _WORKER_ENVIRONMENT}
            os.environ.update(_WORKER_ENVIRONMENT)
            try:
                self.pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                    initargs=(self.builder_class, str(self.builder.root), self.builder.image_size,
                              self.builder.frame_stride, self.builder.options, os.getpid()))
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
        return self

    def __call__(self, units):
        """Results of (item, frame range) units, in order."""
        if self.pool is None:
            return (process_item(self.builder, item, segment) for item, segment in units)
        return self._ordered(units)

    def _ordered(self, units):
        from collections import deque
        from itertools import islice

        # A video (or a range of one) is a task of its own: four in one task would keep one worker busy alone.
        chunk_size = 1 if self.builder.SEGMENT_FRAMES > 0 else self.CHUNK
        units, in_flight = iter(units), deque()
        while True:
            while len(in_flight) < self.workers * self.WINDOW:
                chunk = list(islice(units, chunk_size))
                if not chunk:
                    break
                in_flight.append(self.pool.submit(_process_chunk_in_worker, chunk))
            if not in_flight:
                return
            yield from in_flight.popleft().result()

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
        return False


def _write_shard(out: Path, shard: dict, results, bar, strict: bool) -> None:
    import tensorflow as tf

    # A unique temporary: a Beam runner may run one shard twice at once (a retry, a straggler's backup).
    final, temporary = out / shard["file"], out / f".{shard['file']}.{uuid.uuid4().hex[:12]}.tmp"
    count, skips, labels, inputs = 0, [], _LabelCounter(), {}
    try:
        with tf.io.TFRecordWriter(str(temporary)) as writer:
            for segments in shard["segments"]:
                item_skips = []
                for _ in segments:
                    for result in next(results):
                        if result[0] == "sample":
                            writer.write(encode_example(result[1]))
                            labels.add(_label_summary(result[1]))
                            count += 1
                        elif result[0] == "inputs":
                            inputs.update(result[1])
                        else:
                            if strict:
                                raise BuildError(f"--strict: {_describe(result[1])}")
                            item_skips.append(result[1])
                skips.extend(_merge_records(item_skips))
                if bar is not None:
                    bar.update(1)
    except BaseException:  # a strict stop, Ctrl-C: no half-written file left (a killed run's: `_remove_stale`)
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, final)
    state = {"fingerprint": shard["fingerprint"], "file": shard["file"], "sha256": _sha256(final),
             "count": count, "labels": labels.counts, "skipped": skips, "inputs": dict(sorted(inputs.items()))}
    _atomic_write(out / STATE_DIR / (shard["file"] + ".json"), json.dumps(state).encode())
    shard["state"] = state


# --- accounting ------------------------------------------------------------------------------------------------
def _label_summary(sample) -> dict:
    au_mask = None if sample.au_mask is None else np.asarray(sample.au_mask, np.float32)
    au = None if sample.au is None else np.asarray(sample.au, np.float32)
    return {"expr": int(sample.expr), "compound": int(sample.compound), "va": sample.va is not None,
            "au_annotated": [] if au_mask is None else [int(i) for i in np.flatnonzero(au_mask > 0)],
            "au_positive": [] if au is None or au_mask is None
            else [int(i) for i in np.flatnonzero((au >= 0.5) & (au_mask > 0))],
            # every AU the release codes (`facs/*`), the canonical 17 or not (BP4D+'s 34, AU28/43/45)
            "facs_annotated": sorted((sample.facs or {})),
            "facs_positive": sorted(au for au, (occurrence, _) in (sample.facs or {}).items() if occurrence >= 0.5),
            "attributes": sample.attributes is not None}


class _LabelCounter:
    def __init__(self):
        self.counts = {"expression": {name: 0 for name in EXPRESSIONS}, "compound": {}, "va": 0,
                       "au_annotated": {name: 0 for name in AU_NAMES}, "au_positive": {name: 0 for name in AU_NAMES},
                       "facs_annotated": {}, "facs_positive": {}, "attributes": 0}

    def add(self, summary: dict) -> None:
        counts = self.counts
        if summary["expr"] >= 0:
            counts["expression"][EXPRESSIONS[summary["expr"]]] += 1
        if summary["compound"] >= 0:
            name = COMPOUND_EXPRESSIONS[summary["compound"]]
            counts["compound"][name] = counts["compound"].get(name, 0) + 1
        counts["va"] += int(summary["va"])
        counts["attributes"] += int(summary["attributes"])
        for index in summary["au_annotated"]:
            counts["au_annotated"][AU_NAMES[index]] += 1
        for index in summary["au_positive"]:
            counts["au_positive"][AU_NAMES[index]] += 1
        for key in ("facs_annotated", "facs_positive"):
            for au in summary[key]:
                counts[key][f"AU{au}"] = counts[key].get(f"AU{au}", 0) + 1

    def merge(self, other: dict) -> None:
        for key, value in other.items():
            if isinstance(value, dict):
                for name, n in value.items():
                    self.counts[key][name] = self.counts[key].get(name, 0) + n
                if key.startswith("facs_"):  # by AU number, whichever shard named an AU first
                    self.counts[key] = dict(sorted(self.counts[key].items(), key=lambda item: int(item[0][2:])))
            else:
                self.counts[key] += value


def _manifest(builder, plan, listing_skips, arguments, resumed) -> dict:
    splits, skipped = {}, list(listing_skips)
    for shard in plan:
        state = shard["state"]
        entry = splits.setdefault(shard["split"], {"count": 0, "items": 0, "skipped": 0, "inputs": 0, "shards": [],
                                                   "_labels": _LabelCounter()})
        entry["count"] += state["count"]
        entry["items"] += len(shard["items"])
        entry["skipped"] += _skip_count(state["skipped"])
        entry["inputs"] = entry["count"] + entry["skipped"]
        entry["shards"].append({"file": state["file"], "count": state["count"], "sha256": state["sha256"]})
        entry["_labels"].merge(state["labels"])
        skipped.extend(state["skipped"])
    for entry in splits.values():
        entry["labels"] = entry.pop("_labels").counts
    written = sum(entry["count"] for entry in splits.values())
    lost = _skip_count(skipped)
    return {
        "format": "fbnet-tfrecords/1",
        "database": builder.NAME,
        "builder": f"{type(builder).__module__}.{type(builder).__qualname__}",
        "builder_version": builder.VERSION,
        "arguments": arguments,
        "extra": builder.manifest_extra(),
        "splits": splits,
        "total": written,
        # Every labelled input the annotation files describe is written or skipped (a record of a run of N
        # frames counts N; records with count 0 lose no input: a missing AU file masks that AU, a file that
        # carries no label, a split the release does not label).
        "accounting": {"inputs": written + lost, "written": written, "skipped": lost,
                       "equation": f"{written + lost} inputs = {written} written + {lost} skipped",
                       "records_without_lost_input": sum(1 for r in skipped if r.get("count", 1) == 0)},
        "skipped_by_reason": dict(sorted(_skips_by_reason(skipped).items())),
        "skipped": skipped,
        "resumed_shards": resumed,
    }


def _skip_count(records) -> int:
    """Inputs the skip records stand for (a record of a run of N frames counts N)."""
    return sum(record.get("count", 1) for record in records)


def _skips_by_reason(records) -> Counter:
    counts = Counter()
    for record in records:
        if record.get("count", 1) > 0:
            counts[record["reason"]] += record.get("count", 1)
    return counts


def format_summary(manifest: dict) -> str:
    """The end-of-build table: kept per split, skipped per reason."""
    lines = [f"{manifest['database']} {manifest['builder_version']}: {manifest['total']} examples "
             f"({manifest['accounting']['equation']})",
             f"  {'split':<12}{'kept':>9}{'skipped':>9}{'shards':>8}"]
    for split, entry in manifest["splits"].items():
        lines.append(f"  {split:<12}{entry['count']:>9}{entry['skipped']:>9}{len(entry['shards']):>8}")
    listing = _skip_count(record for record in manifest["skipped"] if record.get("split") is None)
    if listing:
        lines.append(f"  {'(annotation rows)':<12}{'':>9}{listing:>9}")
    if manifest["skipped_by_reason"]:
        lines.append(f"  {'skip reason':<24}{'count':>9}")
        for reason, n in manifest["skipped_by_reason"].items():
            lines.append(f"  {reason:<24}{n:>9}")
    noted = manifest["accounting"]["records_without_lost_input"]
    if noted:
        lines.append(f"  {noted} record(s) of problems that lost no input (count 0) are listed in the manifest")
    if manifest["resumed_shards"]:
        lines.append(f"  resumed {len(manifest['resumed_shards'])} complete shard(s)")
    return "\n".join(lines)


# --- files -----------------------------------------------------------------------------------------------------
class _ProgressBars:
    """One tqdm bar per split, opened when the split's first pending shard starts (items, resumed ones counted)."""

    def __init__(self, builder, plan, progress: bool):
        self.name, self.enabled, self.current, self.split = builder.NAME, progress, None, None
        self.totals, self.done = Counter(), Counter()
        for shard in plan:
            self.totals[shard["split"]] += len(shard["items"])
            if "state" in shard:
                self.done[shard["split"]] += len(shard["items"])

    def bar(self, split: str):
        if not self.enabled:
            return None
        if split != self.split:
            self.close()
            from tqdm import tqdm

            self.split = split
            self.current = tqdm(total=self.totals[split], initial=self.done[split], desc=f"{self.name} {split}",
                                unit="item", file=sys.stderr)
        return self.current

    def close(self):
        if self.current is not None:
            self.current.close()
            self.current = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _remove_stale(out: Path, builder: Builder, plan: list[dict]) -> None:
    """Shards of an earlier run with another shard count, and temp files of a killed run, would mislead readers."""
    keep = {shard["file"] for shard in plan}
    prefixes = {f"{builder.NAME}-{split}" for split in SPLITS}
    for path in out.glob(f"{builder.NAME}-*.tfrecord-*-of-*"):
        if path.name not in keep and path.name.split(".tfrecord-")[0] in prefixes:
            path.unlink()
            (out / STATE_DIR / (path.name + ".json")).unlink(missing_ok=True)
    for path in out.glob(f".{builder.NAME}-*.tfrecord-*.tmp"):
        path.unlink()


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe(record: dict) -> str:
    where = f"{record.get('file') or '?'}{':' + str(record['line']) if record.get('line') else ''}"
    return f"{where}: {record['reason']}: {record['message']}"
