"""The build's pending shards as an Apache Beam pipeline (`--runner direct|dataflow|flink|spark`), the way
tensorflow_datasets builds its large datasets; needs the `beam` extra.

The driver (the `build` call) lists, plans and assembles the manifest exactly as for the process pool; the pipeline
only maps over shard names. Each shard is one element: a worker reads the shard's items from a plan file the
driver wrote under `<out>/.shards/` (so the pipeline graph stays small however many items a database has), runs
the same per-example function (`writer.process_item`) over them in order and writes the shard and its state file
atomically with the pool's own `_write_shard`. The shards are therefore byte for byte the pool's, and the driver
reads the per-shard results (count, labels, skips, inputs, sha256) back from the state files. `--root` and `--out`
must be paths every worker sees (a shared filesystem).
"""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from tfrecords_builder.writer import STATE_DIR, BuildError, _atomic_write, _segments, _write_shard, process_item

# --runner value -> Beam's runner ("pool" is writer's process pool, not Beam).
RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}


def build_shards(builder_class, builder, out: Path, shards: list[dict], strict: bool, runner: str,
                 beam_options, progress: bool) -> None:
    """Write `shards` (writer's plan entries) with a Beam pipeline on `runner`; `beam_options` are Beam's own
    pipeline options (e.g. ["--project=p", "--region=r", "--temp_location=gs://b/tmp"]). Each shard's state is
    attached to its entry afterwards, as the pool does; BuildError when the pipeline fails or misses a shard."""
    for shard in shards:  # a state left by an earlier run must not pass for this run's result
        (out / STATE_DIR / (shard["file"] + ".json")).unlink(missing_ok=True)
        plan = {key: shard[key] for key in ("split", "file", "fingerprint", "items")}
        _atomic_write(_plan_path(out, shard["file"]), pickle.dumps(plan))  # as the pool sends items: types kept
    if progress:
        print(f"{builder.NAME}: {len(shards)} shard(s) on Beam's {RUNNERS[runner]}", file=sys.stderr)
    options = PipelineOptions([f"--runner={RUNNERS[runner]}", *beam_options])
    write = WriteShard(builder_class, str(builder.root), builder.image_size, builder.frame_stride,
                        builder.options, str(out), strict)
    try:
        with beam.Pipeline(options=options) as pipeline:
            # Reshuffle: without it a runner may fuse the whole pipeline into one worker.
            _ = (pipeline | "shards" >> beam.Create([shard["file"] for shard in shards])
                 | "spread" >> beam.Reshuffle() | "write" >> beam.ParDo(write))
    except Exception as error:  # noqa: BLE001 - a runner reports a worker's failure as its own exception type
        raise BuildError(f"{builder.NAME}: the Beam pipeline on {RUNNERS[runner]} failed: {error}") from error
    finally:
        for shard in shards:
            _plan_path(out, shard["file"]).unlink(missing_ok=True)
    missing = [shard["file"] for shard in shards if not _attach_state(out, shard)]
    if missing:
        raise BuildError(f"{builder.NAME}: the Beam pipeline finished but {len(missing)} shard(s) have no valid "
                         f"state in {out / STATE_DIR} (first: {missing[0]}); do the workers see {out}?")


def _attach_state(out: Path, shard: dict) -> bool:
    """The state a worker wrote for this run's shard, attached to its entry (its sha256 was taken by the worker:
    the driver does not read the shards again)."""
    try:
        state = json.loads((out / STATE_DIR / (shard["file"] + ".json")).read_text())
    except (OSError, ValueError):
        return False
    if state.get("fingerprint") != shard["fingerprint"] or not (out / shard["file"]).is_file():
        return False
    shard["state"] = state
    return True


def _plan_path(out: Path, shard_file: str) -> Path:
    return out / STATE_DIR / f".{shard_file}.plan.pickle"  # dot: not a shard state (`_check_one_database`)


class WriteShard(beam.DoFn):
    """Shard name -> the shard and its state file on disk (yields the name). One builder per worker."""

    def __init__(self, builder_class, root, image_size, frame_stride, options, out, strict):
        super().__init__()
        self.builder_class, self.root, self.out, self.strict = builder_class, root, out, strict
        self.arguments = {"image_size": image_size, "frame_stride": frame_stride, **options}
        self.builder = None

    def setup(self):
        self.builder = self.builder_class(self.root, **self.arguments)

    def process(self, name):
        yield write_shard(self.builder, Path(self.out), name, self.strict)


def write_shard(builder, out: Path, name: str, strict: bool) -> str:
    """One shard from its plan file, as the pool writes it: its items' frame ranges in order, one worker."""
    shard = pickle.loads(_plan_path(out, name).read_bytes())  # written by this build's driver
    shard["segments"] = [_segments(builder, item) for item in shard["items"]]
    results = (process_item(builder, item, segment)
               for item, segments in zip(shard["items"], shard["segments"]) for segment in segments)
    _write_shard(out, shard, results, None, strict)
    return name
