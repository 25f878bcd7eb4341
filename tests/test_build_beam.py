"""`--runner direct` (Apache Beam's DirectRunner) writes what the process pool writes: the same shard files byte for
byte, hence the same serialized examples, and the same manifest, skips with their reasons included."""
import hashlib
import json
from collections import Counter

import pytest

pytest.importorskip("apache_beam", reason="the `beam` extra is not installed (pip install -e \".[beam]\")")

import tensorflow as tf  # noqa: E402

from test_build_affwild2 import abaw2022  # noqa: E402,F401 - fixtures in the databases' own layouts
from test_build_disfa import disfa  # noqa: E402,F401
from test_build_rafdb import rafdb, write_part  # noqa: E402,F401
from tfrecords_builder import BuildError, UsageError, build  # noqa: E402
from tfrecords_builder.__main__ import main  # noqa: E402
from tfrecords_builder.disfa import Disfa  # noqa: E402


class ShortSegmentDisfa(Disfa):
    """DISFA built in 2-frame ranges, so that a 4-frame video is two work units whose skips are merged."""

    SEGMENT_FRAMES = 2


def shard_files(out):
    return sorted(path.name for path in out.glob("*.tfrecord-*"))


def serialized(out, name):
    return [bytes(record.numpy()) for record in tf.data.TFRecordDataset(str(out / name))]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_engine(manifest):
    """The manifest less the engine's arguments (runner, and the pool's workers)."""
    manifest = json.loads(json.dumps(manifest))
    del manifest["arguments"]["runner"], manifest["arguments"]["workers"]
    return manifest


def compare(name, pool_out, pool_manifest, beam_out, beam_manifest):
    """Asserts the two builds are the same and prints one line of the comparison."""
    files = shard_files(pool_out)
    assert files and shard_files(beam_out) == files
    pool_records = Counter(record for file in files for record in serialized(pool_out, file))
    beam_records = Counter(record for file in files for record in serialized(beam_out, file))
    assert beam_records == pool_records
    assert sum(pool_records.values()) == pool_manifest["total"] > 0
    identical = sum(sha256(pool_out / file) == sha256(beam_out / file) for file in files)
    assert identical == len(files)
    assert beam_manifest["arguments"]["runner"] == "direct" and pool_manifest["arguments"]["runner"] == "pool"
    assert without_engine(beam_manifest) == without_engine(pool_manifest)
    assert json.loads((beam_out / "manifest.json").read_text()) == beam_manifest
    skipped = beam_manifest["accounting"]["skipped"]
    assert skipped > 0 and beam_manifest["skipped_by_reason"] == pool_manifest["skipped_by_reason"]
    leftovers = [p.name for p in beam_out.rglob(".*") if p.name.endswith((".tmp", ".plan.pickle"))]
    assert leftovers == []
    print(f"\n{name:<9} {len(files)} shards, {identical} byte-identical; {sum(beam_records.values())} records, "
          f"multiset equal; {skipped} skipped by reason {dict(beam_manifest['skipped_by_reason'])}; "
          f"manifests equal but for arguments.runner/workers")


def test_direct_runner_writes_the_pools_shards_and_manifest(rafdb, abaw2022, disfa, tmp_path):
    # RAF-DB (images, 3 splits, 2 shards each, one skip of each kind) from the command line, options after `--`.
    pool = build("rafdb", rafdb, tmp_path / "rafdb-pool", shards=2, workers=2, progress=False)
    assert main(["rafdb", "--root", str(rafdb), "--out", str(tmp_path / "rafdb-beam"), "--shards", "2",
                 "--runner", "direct", "--no-progress", "--", "--direct_running_mode=multi_processing",
                 "--direct_num_workers=2"]) == 0
    beam = json.loads((tmp_path / "rafdb-beam" / "manifest.json").read_text())
    compare("rafdb", tmp_path / "rafdb-pool", pool, tmp_path / "rafdb-beam", beam)

    # Aff-Wild2 (frame folders: one item a video, 2 videos a shard) with the merged tasks' skips.
    pool = build("affwild2", abaw2022, tmp_path / "affwild2-pool", progress=False, allow_partial=True)
    beam = build("affwild2", abaw2022, tmp_path / "affwild2-beam", progress=False, allow_partial=True,
                 runner="direct")
    compare("affwild2", tmp_path / "affwild2-pool", pool, tmp_path / "affwild2-beam", beam)

    # DISFA (videos, MTCNN) in 2-frame ranges: a shard's items and their ranges are written in order by one worker.
    options = {"test_fraction": 0.34, "validation_fraction": 0.34, "progress": False, "allow_partial": True}
    pool = build(ShortSegmentDisfa, disfa, tmp_path / "disfa-pool", **options)
    beam = build(ShortSegmentDisfa, disfa, tmp_path / "disfa-beam", runner="direct", **options)
    compare("disfa", tmp_path / "disfa-pool", pool, tmp_path / "disfa-beam", beam)
    assert any("frames" in record for record in beam["skipped"])  # records of frame runs, merged as the pool does

    # Each engine resumes the other's build: same fingerprints, same bytes; nothing is rebuilt.
    for out, runner in (("affwild2-beam", "pool"), ("affwild2-pool", "direct")):
        resumed = build("affwild2", abaw2022, tmp_path / out, progress=False, allow_partial=True, runner=runner)
        assert resumed["resumed_shards"] == [entry["file"] for split in resumed["splits"].values()
                                             for entry in split["shards"]]


def test_runner_arguments_are_checked_before_any_work(rafdb, tmp_path):
    with pytest.raises(UsageError, match="--workers=2 is the process pool's"):
        build("rafdb", rafdb, tmp_path / "a", runner="direct", workers=2, progress=False)
    with pytest.raises(UsageError, match="need a Beam --runner"):
        build("rafdb", rafdb, tmp_path / "b", beam_options=["--direct_num_workers=2"], progress=False)
    with pytest.raises(UsageError, match="--runner='ray'"):
        build("rafdb", rafdb, tmp_path / "c", runner="ray", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_strict_stops_at_a_workers_skip_naming_its_line(tmp_path):
    root = tmp_path / "RAF-DB"
    lines, aligned = write_part(root, "basic", [("train", 1), ("train", 2), ("test", 3)], 7, 5)
    (aligned / "train_00002_aligned.jpg").write_bytes(b"not a jpeg")
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(BuildError, match="list_patition_label.txt:2: unreadable_image"):
        build("rafdb", root, tmp_path / "out", strict=True, runner="direct", progress=False)
    # The shard that met the skip is not there, nor its temporary; the driver's plan files are gone.
    assert not list((tmp_path / "out").glob("rafdb-train.tfrecord-*"))
    assert [p.name for p in (tmp_path / "out").rglob(".*") if p.is_file()] == []
