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
from conftest import write_slow_builder


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


@pytest.mark.slow  # a real SIGKILL of a subprocess that imports TensorFlow: ~10-30 s on a shared machine
def test_a_build_killed_for_real_resumes_to_identical_shards(tmp_path, monkeypatch):
    import importlib
    import os
    import signal
    import time

    write_slow_builder(tmp_path, "slow_builder", items=40, delay=0.03)
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


# --- helpers a builder shares (one place each) ------------------------------------------------------------------
def test_split_of_nests_the_holdouts_on_one_hash():
    import hashlib

    from tfrecords_builder.base import key_rank, split_of

    keys = [f"subject{i}" for i in range(20000)]
    splits = [split_of(k, 0.15, 0.15, seed=5) for k in keys]
    for name, fraction in (("test", 0.15), ("validation", 0.15), ("train", 0.70)):
        assert abs(splits.count(name) / len(keys) - fraction) < 0.01
    for key, split in zip(keys[:200], splits):  # against the hash computed here
        rank = int.from_bytes(hashlib.sha256(f"5:{key}".encode()).digest()[:8], "big") / 2.0 ** 64
        assert key_rank(key, 5) == rank
        assert split == ("test" if rank < 0.15 else "validation" if rank < 0.30 else "train")
    # No test fraction: the 85/15 division of a released training set, exactly `holdout`.
    assert all((split_of(k, 0.15, seed=5) == "validation") == holdout(k, 0.15, seed=5) for k in keys)
    assert split_of("x", 0.0, 0.0) == "train" and split_of("x", 0.0, 1.0) == "test"


def test_skip_count_is_pickled_and_summed_in_the_manifest(squares, tmp_path):
    import pickle

    skip = pickle.loads(pickle.dumps(Skip(Reason.NO_LABEL, "frames 3-7", "a.txt", 2, count=5)))
    assert (skip.reason, skip.file, skip.line, skip.count) == (Reason.NO_LABEL, "a.txt", 2, 5)
    assert skip.record()["count"] == 5 and Skip(Reason.BAD_ROW, "x").record()["count"] == 1

    class RunSquares(Squares):
        def examples(self, item):
            if item.key == "clipA":  # frames 0..2 have no label: one record standing for three frames
                yield Skip(Reason.NO_LABEL, "frames 0-2 (3 frames) are not annotated", count=3)
                return
            yield from super().examples(item)

    manifest = build(RunSquares, squares, tmp_path / "out", image_size=16, progress=False)
    assert [(r["sample_id"], r["count"]) for r in manifest["skipped"]] == [("clipA", 3)]
    assert manifest["skipped_by_reason"] == {"no_label": 3}
    assert manifest["splits"]["train"]["skipped"] == 3 and manifest["splits"]["train"]["count"] == 7
    assert "no_label                        3" in tfrecords_builder.format_summary(manifest)


def test_manifest_extra_lands_in_manifest_json(squares, tmp_path):
    class Described(Squares):
        def manifest_extra(self):
            return {"value_names": ["zero", "one"]}

    manifest = build(Described, squares, tmp_path / "out", image_size=16, progress=False)
    assert manifest["extra"] == {"value_names": ["zero", "one"]}
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["extra"] == manifest["extra"]
    assert build(Squares, squares, tmp_path / "plain", image_size=16, progress=False)["extra"] == {}


def test_video_frames_start_and_a_video_that_yields_no_frame(tmp_path, squares):
    write_video(tmp_path / "clip.avi")
    builder = Squares(squares, frame_stride=3)
    item = Item(split="train", key="clip", file="labels.txt", line=4)
    assert [i for i, _ in builder.video_frames(tmp_path / "clip.avi", item, start=2)] == [2, 5, 8]
    with pytest.raises(Skip) as skip:  # opened, but nothing from frame 12 on: not silently empty
        list(builder.video_frames(tmp_path / "clip.avi", item, start=12))
    assert (skip.value.reason, skip.value.file) == (Reason.UNREADABLE_VIDEO, "labels.txt")
    assert "has 10 frames, none from frame 12 on" in skip.value.message


def test_detect_frame_returns_the_crop_or_the_skip_of_that_frame(squares):
    from skimage.data import astronaut

    builder = Squares(squares, image_size=32)
    item = Item(split="train", key="clip", file="videos/clip.avi")
    crop = builder.detect_frame(astronaut(), item, 4, video="videos/clip.avi")
    assert isinstance(crop, np.ndarray) and crop.shape == (32, 32, 3)
    blank = np.full((120, 160, 3), 90, np.uint8)
    skip = builder.detect_frame(blank, item, 4, video="videos/clip.avi")
    assert (skip.reason, skip.file, skip.line) == (Reason.NO_FACE, "videos/clip.avi", 5)  # line = 1-based frame
    assert "videos/clip.avi frame 4" in skip.message
    listed = Item(split="train", key="rec", file="rec.eaf")  # no video: the item's own file, no line
    skip = builder.detect_frame(blank, listed, 4, what="rec.avi frame 4")
    assert (skip.file, skip.line) == ("rec.eaf", None) and "rec.avi frame 4" in skip.message


def test_paths_options_lines_and_digests(tmp_path, squares):
    import hashlib

    from tfrecords_builder.base import file_digest

    class Options(Squares):
        OPTIONS = {"fail_on": "", "camera": "left", "images": "images", "table": "t.csv"}

    builder = Options(squares, camera="both", table=str(tmp_path / "t.csv"))
    assert builder.relative_or_name(squares / "a" / "b.jpg") == "a/b.jpg"
    assert builder.relative_or_name(tmp_path / "elsewhere" / "b.jpg") == "b.jpg"
    assert builder.relative_or_name(tmp_path / "x" / "b.jpg", "x/b.jpg") == "x/b.jpg"
    assert builder.option_choice("camera", ("left", "right", "both")) == "both"
    with pytest.raises(ValueError, match=r"option camera='both'; expected left or right"):
        builder.option_choice("camera", ("left", "right"))
    with pytest.raises(tfrecords_builder.LayoutError, match=r"option images='images': .* is not a folder"):
        builder.option_path("images", folder=True)
    (squares / "images").mkdir()
    assert builder.option_path("images", folder=True) == squares / "images"
    with pytest.raises(tfrecords_builder.LayoutError, match="is not an existing file"):
        builder.option_path("table")
    (tmp_path / "t.csv").write_text("URL\n")
    assert builder.option_path("table") == tmp_path / "t.csv"  # absolute: not under the root
    (squares / "values.txt").write_text("0.5\n-0.25\n\n  \n")
    assert builder.read_lines("values.txt") == ["0.5", "-0.25"]
    with pytest.raises(Skip) as skip:
        builder.read_lines("absent.txt")
    assert (skip.value.reason, skip.value.file) == (Reason.MISSING_FILE, "absent.txt")
    assert file_digest(squares / "values.txt") == hashlib.sha256(b"0.5\n-0.25\n\n  \n").hexdigest()


def test_parse_int_names_the_field_and_the_row():
    from tfrecords_builder.base import parse_int

    assert parse_int(" 7", "label") == 7
    for bad in ("7.5", "x", "", None):
        with pytest.raises(Skip) as skip:
            parse_int(bad, "label", "list.txt", 3)
        assert (skip.value.reason, skip.value.file, skip.value.line) == (Reason.BAD_ROW, "list.txt", 3)
        assert skip.value.message == f"label {bad!r} is not an integer"


def test_frames_past_end_counts_the_labelled_frames_the_stride_keeps(squares):
    builder = Squares(squares, frame_stride=2)
    assert list(builder.frames_past_end(range(10), 9, "v.avi")) == []
    (skip,) = builder.frames_past_end(range(10), 3, "v.avi")  # 0-based: 4..9, stride keeps 4, 6, 8
    assert (skip.reason, skip.file, skip.count) == (Reason.MISSING_FILE, "v.avi", 3)
    assert skip.message == "labelled frames past the end of v.avi" and skip.frames == [4, 8]
    (skip,) = builder.frames_past_end({1, 2, 3, 4, 5, 6}, 3, "v.avi", first=1)  # 1-based: keeps 1, 3, 5
    assert skip.count == 1 and skip.record()["frames"] == [5, 5]


def test_sample_accepts_label_lists_from_item_data(squares):
    builder = Squares(squares, image_size=16)
    item = Item(split="train", key="img0")
    sample = builder.sample(item, np.zeros((16, 16, 3), np.uint8), au=[1] + [0] * 16, au_mask=[1.0] * 17,
                            au_intensity=None, va=[0.5, -0.25], attributes=[0, 1] * 20)
    assert sample.au.dtype == np.float32 and sample.au.tolist() == [1.0] + [0.0] * 16
    assert sample.au_intensity is None and sample.va == (0.5, -0.25)
    assert sample.attributes.shape == (40,) and sample.attributes.dtype == np.float32
