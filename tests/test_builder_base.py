"""The builder framework: helpers, the engine (shards, skips, resume, stale files) and the CLI."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

import tfrecords_builder
from fbnet_tf.records import decode_example
from tfrecords_builder import Builder, Item, Reason, Skip, build, holdout
from tfrecords_builder.__main__ import main
from tfrecords_builder.base import read_image, resolve_in_root, video_frames


def test_holdout_is_seeded_stable_and_close_to_its_fraction():
    keys = [f"subject{i}" for i in range(20000)]
    chosen = [k for k in keys if holdout(k, 0.15, seed=3)]
    assert abs(len(chosen) / len(keys) - 0.15) < 0.01
    assert chosen == [k for k in reversed(keys) if holdout(k, 0.15, seed=3)][::-1]  # order independent
    assert chosen != [k for k in keys if holdout(k, 0.15, seed=4)]
    assert not any(holdout(k, 0.0) for k in keys) and all(holdout(k, 1.0) for k in keys)


def test_resolve_in_root_rejects_absolute_and_escaping_paths(tmp_path):
    assert resolve_in_root(tmp_path, "a/b.jpg") == tmp_path / "a" / "b.jpg"
    assert resolve_in_root(tmp_path, "a/../b.jpg") == tmp_path / "a" / ".." / "b.jpg"  # stays inside
    for bad in ("/etc/passwd", "../x.jpg", "a/../../x.jpg", "C:\\x.jpg", "", "a\\..\\..\\x.jpg"):
        with pytest.raises(Skip) as skip:
            resolve_in_root(tmp_path, bad, "list.txt", 7)
        assert (skip.value.reason, skip.value.file, skip.value.line) == (Reason.UNSAFE_PATH, "list.txt", 7)


def test_read_image_reasons(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "ok.png"), rgb[..., ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / "ok.png"), rgb)  # PNG is lossless: RGB order checked
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[:-300])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"GIF89a not really")
    expected = {"missing.jpg": Reason.MISSING_FILE, "cut.jpg": Reason.TRUNCATED_IMAGE,
                "empty.jpg": Reason.UNREADABLE_IMAGE, "junk.jpg": Reason.UNREADABLE_IMAGE}
    for name, reason in expected.items():
        with pytest.raises(Skip) as skip:
            read_image(tmp_path / name, "labels.csv", 3)
        assert (skip.value.reason, skip.value.line) == (reason, 3), name


def write_video(path, n_frames=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    for index in range(n_frames):
        writer.write(np.full((24, 32, 3), index * 20, np.uint8))
    writer.release()


def test_video_frames_reads_lazily_with_a_stride(tmp_path):
    write_video(tmp_path / "clip.avi")
    frames = list(video_frames(tmp_path / "clip.avi", stride=3))
    assert [index for index, _ in frames] == [0, 3, 6, 9]
    np.testing.assert_allclose([frame.mean() for _, frame in frames], [0, 60, 120, 180], atol=3)
    assert [i for i, _ in video_frames(tmp_path / "clip.avi", stride=4, start=2)] == [2, 6]
    with pytest.raises(Skip, match="missing_file"):
        list(video_frames(tmp_path / "none.avi"))
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    with pytest.raises(Skip, match="unreadable_video"):
        list(video_frames(tmp_path / "bad.avi"))


class Squares(Builder):
    """A test database: `labels.txt` rows `<name> <expr>`; `clip <n>` rows are videos of n frames."""

    NAME = "squares"
    EXPECTED_LAYOUT = ("labels.txt",)
    ITEMS_PER_SHARD = 3
    OPTIONS = {"fail_on": ""}

    def list_items(self):
        labels = self.root / "labels.txt"
        if not labels.is_file():
            raise self.layout_error()
        for line, text in enumerate(labels.read_text().splitlines(), start=1):
            name, value = text.split()
            split = "test" if name.startswith("t") else "train"
            yield Item(split=split, key=name, data={"value": int(value)}, file="labels.txt", line=line)

    def examples(self, item):
        if item.key == self.options["fail_on"]:
            raise ZeroDivisionError("a builder bug")
        if item.key.startswith("clip"):
            for frame in range(item.data["value"]):
                if frame == 1:
                    yield Skip(Reason.NO_FACE, f"no face in frame {frame}")
                    continue
                crop = np.full((self.image_size, self.image_size, 3), frame * 10, np.uint8)
                yield self.sample(item, crop, sample_id=f"{item.key}/{frame:05d}", subject=item.key)
            return
        crop = np.full((self.image_size, self.image_size, 3), item.data["value"] * 30, np.uint8)
        yield self.sample(item, crop, expr=item.data["value"], au=np.eye(17)[0], au_mask=np.eye(17)[0] + np.eye(17)[1])


@pytest.fixture
def squares(tmp_path):
    root = tmp_path / "squares"
    root.mkdir()
    rows = [f"img{i} {i % 7}" for i in range(7)] + ["test0 1", "test1 2", "clipA 3"]
    (root / "labels.txt").write_text("\n".join(rows) + "\n")
    return root


def test_engine_shards_counts_skips_and_frames(squares, tmp_path):
    import tensorflow as tf

    out = tmp_path / "out"
    manifest = build(Squares, squares, out, image_size=16, progress=False, fail_on="img3")
    assert [s["file"] for s in manifest["splits"]["train"]["shards"]] == [
        f"squares-train.tfrecord-0000{k}-of-00003" for k in range(3)]  # 8 items, 3 per shard
    # img3 raised a bug: counted as unexpected_error with its line, not a crash; clipA frame 1 had no face.
    assert sorted((r["sample_id"], r["line"], r["reason"]) for r in manifest["skipped"]) == [
        ("clipA", 10, "no_face"), ("img3", 4, "unexpected_error")]
    assert "ZeroDivisionError: a builder bug" in [r for r in manifest["skipped"] if r["sample_id"] == "img3"][0][
        "message"]
    assert manifest["splits"]["train"]["count"] == 6 + 2 and manifest["splits"]["test"]["count"] == 2
    labels = manifest["splits"]["train"]["labels"]
    assert labels["au_annotated"]["AU1"] == 6 and labels["au_annotated"]["AU2"] == 6
    assert labels["au_positive"]["AU1"] == 6 and labels["au_positive"]["AU2"] == 0
    assert labels["expression"] == {"Neutral": 1, "Anger": 1, "Disgust": 1, "Fear": 0, "Happiness": 1,
                                    "Sadness": 1, "Surprise": 1}
    files = sorted(str(p) for p in out.glob("squares-train.tfrecord-*"))
    examples = [decode_example(r.numpy()) for r in tf.data.TFRecordDataset(files)]
    assert [e["sample_id"] for e in examples] == ["clipA/00000", "clipA/00002"] + [f"img{i}" for i in
                                                                                    (0, 1, 2, 4, 5, 6)]
    assert examples[1]["subject"] == "clipA" and examples[1]["image"].shape == (16, 16, 3)
    assert json.loads((out / "manifest.json").read_text())["skipped_by_reason"] == {"no_face": 1,
                                                                                   "unexpected_error": 1}
    assert "unexpected_error" in tfrecords_builder.format_summary(manifest)


def test_resume_rebuilds_a_damaged_shard_and_removes_stale_ones(squares, tmp_path):
    out = tmp_path / "out"
    first = build(Squares, squares, out, image_size=16, progress=False)
    damaged = out / first["splits"]["train"]["shards"][1]["file"]
    original = damaged.read_bytes()
    damaged.write_bytes(original[:-5])  # checksum no longer matches: rebuilt, the others reused
    second = build(Squares, squares, out, image_size=16, progress=False)
    assert len(second["resumed_shards"]) == len(first["resumed_shards"]) + 4 - 1 == 3
    assert damaged.read_bytes() == original
    third = build(Squares, squares, out, image_size=16, progress=False, shards=1)  # other shard count
    assert sorted(p.name for p in out.glob("squares-*")) == ["squares-test.tfrecord-00000-of-00001",
                                                             "squares-train.tfrecord-00000-of-00001"]
    assert third["resumed_shards"] == ["squares-test.tfrecord-00000-of-00001"]  # same items, same name
    changed = build(Squares, squares, out, image_size=24, progress=False, shards=1)  # arguments changed
    assert changed["resumed_shards"] == []


def test_strict_and_unknown_options(squares, tmp_path):
    with pytest.raises(tfrecords_builder.BuildError, match=r"labels.txt:10: no_face"):
        build(Squares, squares, tmp_path / "out", image_size=16, progress=False, strict=True)
    with pytest.raises(TypeError, match="unknown option"):
        build(Squares, squares, tmp_path / "out", progress=False, colour="red")


def test_registry_and_cli(tmp_path, capsys):
    databases = tfrecords_builder.DATABASES
    assert {"rafdb", "rafdb_compound", "affectnet"} <= set(databases)
    assert all(issubclass(cls, Builder) and cls.NAME == name for name, cls in databases.items())
    with pytest.raises(KeyError, match="known: "):
        build("no_such_database", tmp_path, tmp_path / "out")
    assert main(["rafdb", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "basic/EmoLabel/list_patition_label.txt" in error and error.count("does not look like") == 1
    assert main(["rafdb", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--option", "colour=red"]) == 2
    help_text = subprocess.run([sys.executable, "-m", "tfrecords_builder", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for name in databases:
        assert f"  {name} " in help_text


SLOW_BUILDER = '''
import time
import numpy as np
from tfrecords_builder import Builder, Item


class Slow(Builder):
    NAME = "slow"
    ITEMS_PER_SHARD = 2

    def list_items(self):
        for index in range(40):
            yield Item(split="train", key=f"img{index:03d}", data={"value": index})

    def examples(self, item):
        time.sleep(0.03)
        crop = np.full((16, 16, 3), item.data["value"] * 6, np.uint8)
        yield self.sample(item, crop, expr=item.data["value"] % 7)
'''


@pytest.mark.slow  # a real SIGKILL of a subprocess that imports TensorFlow: ~10-30 s on a shared machine
def test_a_build_killed_for_real_resumes_to_identical_shards(tmp_path, monkeypatch):
    import importlib
    import os
    import signal
    import time

    (tmp_path / "slow_builder.py").write_text(SLOW_BUILDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    slow = importlib.import_module("slow_builder").Slow
    out = tmp_path / "killed"
    script = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {os.getcwd()!r}]\n"
              "from slow_builder import Slow\nfrom tfrecords_builder import build\n"
              f"build(Slow, {str(tmp_path)!r}, {str(out)!r}, image_size=16, progress=False)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((out / ".shards").glob("*.json"))) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)  # mid-build: some shards done, one being written
    process.wait()
    done = len(list((out / ".shards").glob("*.json")))
    assert 3 <= done < 20, "the build finished before it could be killed"
    assert not (out / "manifest.json").exists()

    resumed = build(slow, tmp_path, out, image_size=16, progress=False)
    reference = build(slow, tmp_path, tmp_path / "reference", image_size=16, progress=False)
    assert len(resumed["resumed_shards"]) == done and resumed["total"] == 40
    for shard in reference["splits"]["train"]["shards"]:
        assert (out / shard["file"]).read_bytes() == (tmp_path / "reference" / shard["file"]).read_bytes()
    assert not list(out.glob(".*.tmp"))  # the half-written shard of the killed run is gone
