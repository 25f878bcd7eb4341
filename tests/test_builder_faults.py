"""Fault injection on the build engine (issue 12): what a user sees after corrupt bytes, repaired inputs, bad
arguments, a second database or a second build in one folder, a mostly-skipped build, a killed build, and video
skip accounting (labelled inputs = written + skipped, whatever the number of workers or frame ranges)."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf.records import decode_example
from tfrecords_builder import build
from tfrecords_builder.__main__ import main
from tfrecords_builder.disfa import Disfa
from tfrecords_builder.writer import BuildError, PartialBuild

from conftest import write_slow_builder

LIST = "basic/EmoLabel/list_patition_label.txt"
ALIGNED = "basic/Image/aligned"


def write_rafdb(root, n=12, *, absent=(), corrupt=(), extra_rows=()):
    """A RAF-DB tree (basic/ list + aligned crops) of `n` training images; `absent` rows have no image file,
    `corrupt` rows a JPEG whose scan data is overwritten by 200 random bytes (end marker intact)."""
    (root / ALIGNED).mkdir(parents=True, exist_ok=True)
    (root / "basic" / "EmoLabel").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        name = f"train_{index + 1:05d}.jpg"
        rows.append(f"{name} {index % 7 + 1}")
        path = root / ALIGNED / name.replace(".jpg", "_aligned.jpg")
        if index in absent:
            continue
        if index in corrupt:
            path.write_bytes(scribbled_jpeg(seed=index))
        else:
            cv2.imwrite(str(path), np.full((32, 32, 3), (20 + 15 * index) % 250, np.uint8))
    (root / LIST).write_text("\n".join(rows + list(extra_rows)) + "\n")
    return rows


def scribbled_jpeg(seed=0) -> bytes:
    from skimage import data

    jpeg = cv2.imencode(".jpg", data.astronaut()[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    rng = np.random.default_rng(seed)
    scan = jpeg.rfind(b"\xff\xda")
    start = int(rng.integers(scan + 100, len(jpeg) - 300))
    damaged = bytearray(jpeg)
    damaged[start:start + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    assert damaged[-2:] == b"\xff\xd9" and cv2.imdecode(np.frombuffer(damaged, np.uint8), 1) is not None
    return bytes(damaged)


def sample_ids(out):
    files = sorted(str(p) for p in out.glob("*.tfrecord-*"))
    return sorted(decode_example(r.numpy())["sample_id"] for r in tf.data.TFRecordDataset(files))


# --- 12.3: corrupt but decodable -----------------------------------------------------------------------------
def test_an_image_with_scribbled_scan_data_is_one_listed_corrupt_image_skip(tmp_path):
    write_rafdb(tmp_path / "raf", 6, corrupt={2})
    manifest = build("rafdb", tmp_path / "raf", tmp_path / "out", image_size=16, progress=False,
                     validation_fraction=0.0)
    assert [(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]] == [(LIST, 3, "corrupt_image")]
    assert manifest["skipped_by_reason"] == {"corrupt_image": 1} and manifest["total"] == 5
    assert "basic/Image/aligned/train_00003_aligned.jpg" not in sample_ids(tmp_path / "out")


# --- 12.7 (image lists): labelled inputs = written + skipped ---------------------------------------------------
def test_image_list_inputs_are_written_plus_skipped(tmp_path):
    write_rafdb(tmp_path / "raf", 10, absent={1}, corrupt={4}, extra_rows=["train_00099.jpg 9", "train_00098.jpg"])
    rows = [line for line in (tmp_path / "raf" / LIST).read_text().splitlines() if line.strip()]
    manifest = build("rafdb", tmp_path / "raf", tmp_path / "out", image_size=16, progress=False)
    written = len(sample_ids(tmp_path / "out"))
    assert manifest["accounting"] == {"inputs": len(rows), "written": written, "skipped": len(rows) - written,
                                      "equation": f"{len(rows)} inputs = {written} written + {len(rows) - written} "
                                                  "skipped", "records_without_lost_input": 0}
    assert (written, manifest["skipped_by_reason"]) == (8, {"bad_row": 1, "corrupt_image": 1,
                                                            "label_out_of_range": 1, "missing_file": 1})
    per_split = manifest["splits"]
    assert sum(e["inputs"] for e in per_split.values()) + 2 == len(rows)  # + the two bad rows (no split)


# --- 12.4: reruns pick up repaired inputs ----------------------------------------------------------------------
def test_restored_images_are_written_by_a_rerun_and_force_rebuilds_everything(tmp_path):
    root, out = tmp_path / "raf", tmp_path / "out"
    missing = {1, 4, 7, 10, 13}  # in shards 0, 1, 2, 2, 3 of 6 (four images each)
    write_rafdb(root, 24, absent=missing)
    options = dict(image_size=16, progress=False, shards=6, validation_fraction=0.0)
    first = build("rafdb", root, out, **options)
    assert first["skipped_by_reason"] == {"missing_file": 5} and first["total"] == 19

    complete = tmp_path / "complete"
    write_rafdb(complete, 24)
    for index in missing:  # the user restores the five images
        name = f"train_{index + 1:05d}_aligned.jpg"
        (root / ALIGNED / name).write_bytes((complete / ALIGNED / name).read_bytes())
    second = build("rafdb", root, out, **options)
    assert second["skipped"] == [] and second["skipped_by_reason"] == {} and second["total"] == 24
    assert len(second["resumed_shards"]) == 2  # shards 4 and 5 had no missing image
    assert sample_ids(out) == sorted(f"basic/Image/aligned/train_{i + 1:05d}_aligned.jpg" for i in range(24))
    reference = build("rafdb", complete, tmp_path / "reference", **options)
    for shard in reference["splits"]["train"]["shards"]:
        assert (out / shard["file"]).read_bytes() == (tmp_path / "reference" / shard["file"]).read_bytes()

    assert len(build("rafdb", root, out, **options)["resumed_shards"]) == 6  # nothing changed: all kept
    forced = build("rafdb", root, out, force=True, **options)
    assert forced["resumed_shards"] == [] and forced["total"] == 24


def test_a_rerun_rebuilds_only_the_shards_whose_inputs_changed(tmp_path):
    root, out = tmp_path / "raf", tmp_path / "out"
    write_rafdb(root, 12, absent={5})
    options = dict(image_size=16, progress=False, shards=4, validation_fraction=0.0)
    assert build("rafdb", root, out, **options)["skipped_by_reason"] == {"missing_file": 1}
    cv2.imwrite(str(root / ALIGNED / "train_00006_aligned.jpg"), np.full((32, 32, 3), 99, np.uint8))
    second = build("rafdb", root, out, **options)
    assert second["skipped"] == [] and second["total"] == 12
    assert len(second["resumed_shards"]) == 3  # only the shard that held train_00006 was rebuilt
    assert "basic/Image/aligned/train_00006_aligned.jpg" in sample_ids(out)


# --- 12.5: arguments checked before any work -------------------------------------------------------------------
@pytest.mark.parametrize("arguments, expected", [
    (["--image-size", "0"], "--image-size=0: expected an integer in 16..4096"),
    (["--workers", "0"], "--workers=0: expected an integer >= 1"),
    (["--workers", "-1"], "--workers=-1: expected an integer >= 1"),
    (["--shards", "0"], "--shards=0: expected an integer >= 1"),
    (["--frame-stride", "0"], "--frame-stride=0: expected an integer >= 1"),
    (["--option", "validation_fraction=1.5"], "rafdb: option validation_fraction=1.5: expected a number in [0, 1)"),
    (["--option", "validation_fraction=abc"], "rafdb: option validation_fraction='abc': expected a number"),
    (["--option", "seed=2.5"], "rafdb: option seed='2.5': expected an integer"),
    (["--option", "faces=both"], "rafdb: option faces='both': expected one of aligned, original"),
])
def test_bad_arguments_exit_2_with_one_line_before_any_work(tmp_path, capsys, arguments, expected):
    write_rafdb(tmp_path / "raf", 2)
    out = tmp_path / "out"
    assert main(["rafdb", "--root", str(tmp_path / "raf"), "--out", str(out), "--no-progress", *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: {expected}" or (error.startswith(f"error: {expected}") and "\n" not in error)
    assert not out.exists()


def test_builder_options_are_checked_against_their_declarations(tmp_path):
    from tfrecords_builder.base import UsageError

    (tmp_path / "d").mkdir()
    for options, expected in (({"threshold": 0}, "disfa: option threshold=0: expected an integer in 1..5"),
                              ({"threshold": "abc"}, "disfa: option threshold='abc': expected an integer in 1..5"),
                              ({"camera": "top"}, "disfa: option camera='top': expected one of left, right, both"),
                              ({"validation_fraction": 0.6, "test_fraction": 0.4}, "sum to 1; expected a sum below 1"),
                              ({"validation_fraction": -0.1}, "expected a number in [0, 1)")):
        with pytest.raises(UsageError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            build("disfa", tmp_path / "d", tmp_path / "out", progress=False, **options)
    assert not (tmp_path / "out").exists()
    from tfrecords_builder.disfa import Disfa

    assert Disfa(tmp_path, threshold="3", camera="both").options["threshold"] == 3  # CLI strings are converted


# --- 12.6: one output folder, one database; one build at a time --------------------------------------------------
def test_a_second_database_into_the_same_folder_is_refused_and_readers_notice_foreign_shards(tmp_path):
    from fbnet_tf import data

    root = tmp_path / "raf"
    write_rafdb(root, 4)
    (root / "compound" / "EmoLabel").mkdir(parents=True)
    (root / "compound" / "Image" / "aligned").mkdir(parents=True)
    for index in range(3):
        cv2.imwrite(str(root / "compound" / "Image" / "aligned" / f"train_{index + 1:04d}_aligned.jpg"),
                    np.full((32, 32, 3), 60, np.uint8))
    (root / "compound" / "EmoLabel" / "list_patition_label.txt").write_text(
        "".join(f"train_{index + 1:04d}.jpg {index + 1}\n" for index in range(3)))
    out = tmp_path / "out"
    build("rafdb", root, out, image_size=16, progress=False, validation_fraction=0.0)
    with pytest.raises(BuildError, match=r"holds a build of rafdb; refusing to write rafdb_compound"):
        build("rafdb_compound", root, out, image_size=16, progress=False)
    assert json.loads((out / "manifest.json").read_text())["database"] == "rafdb"  # untouched

    build("rafdb_compound", root, tmp_path / "compound", image_size=16, progress=False, validation_fraction=0.0)
    assert data.stream_sizes([str(out)])["expr"] == 4
    foreign = next((tmp_path / "compound").glob("rafdb_compound-train.tfrecord-*"))
    (out / foreign.name).write_bytes(foreign.read_bytes())  # copied in by hand: no manifest accounts for it
    with pytest.raises(ValueError, match=rf"does not list: {foreign.name}"):
        data.stream_sizes([str(out)])


def test_a_live_lock_stops_a_second_build_and_a_stale_one_is_taken_over(tmp_path):
    root, out = tmp_path / "raf", tmp_path / "out"
    write_rafdb(root, 3)
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (out / ".lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        with pytest.raises(BuildError, match=rf"another build \(PID {holder.pid}\) is writing {out}"):
            build("rafdb", root, out, image_size=16, progress=False)
        assert not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    manifest = build("rafdb", root, out, image_size=16, progress=False)  # the holder is gone: lock taken over
    assert manifest["total"] == 3 and not (out / ".lock").exists()


# --- 10.7: never silently empty --------------------------------------------------------------------------------
def test_an_empty_or_mostly_skipped_build_fails_naming_its_reasons(tmp_path, capsys):
    root = tmp_path / "raf"
    write_rafdb(root, 8, absent={0, 1, 2, 3, 4}, corrupt={5}, extra_rows=["train_09999.jpg 42"])
    arguments = ["rafdb", "--root", str(root), "--out", str(tmp_path / "out"), "--no-progress",
                 "--image-size", "16"]
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert "skipped 7 of its 9 inputs (more than 50%); 9 inputs = 2 written + 7 skipped" in error
    lines = error.splitlines()
    reasons = [line.split(":")[0].strip() for line in lines if line.startswith("  ") and not line.startswith("    ")]
    assert reasons == ["missing_file", "corrupt_image", "label_out_of_range"]  # commonest first
    assert "  missing_file: 5  (e.g. basic/EmoLabel/list_patition_label.txt:1: missing_file:" in error
    assert "hint: check that --root is the folder" in error and "--allow-partial" in error
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["total"] == 2  # inspectable
    assert main(arguments + ["--allow-partial"]) == 0

    empty = tmp_path / "empty"
    write_rafdb(empty, 2, absent={0, 1})
    with pytest.raises(PartialBuild, match="wrote 0 examples"):
        build("rafdb", empty, tmp_path / "none", image_size=16, progress=False)


# --- 12.7 + 12.11 (videos): labelled frames = written + skipped, in frame ranges, any workers -------------------
DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)


def write_disfa(root):
    """SN001: 6 face frames, labels for frames 1-8 (7-8 past the video's end), AU26's file missing.
    SN002: labels for frames 1-5, an unreadable video. SN003: frames 1-4 labelled, frames 5-6 of its video not."""
    from skimage import data

    face = cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)[..., ::-1]
    labelled = {"SN001": range(1, 9), "SN002": range(1, 6), "SN003": range(1, 5)}
    for subject, frames in labelled.items():
        folder = root / "ActionUnit_Labels" / subject
        folder.mkdir(parents=True)
        for au in DISFA_AUS:
            if (subject, au) != ("SN001", 26):
                (folder / f"{subject}_au{au}.txt").write_text("".join(f"{f},{(au + f) % 6}\n" for f in frames))
    videos = root / "Videos_LeftCamera"
    videos.mkdir()
    for subject, count in (("SN001", 6), ("SN003", 6)):
        writer = cv2.VideoWriter(str(videos / f"LeftVideo{subject}_comp.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                                 (128, 128))
        for index in range(count):
            writer.write(np.ascontiguousarray(np.roll(face, 2 * index, axis=1)))
        writer.release()
    (videos / "LeftVideoSN002_comp.avi").write_bytes(b"RIFF not really a video")
    return {subject: len(frames) for subject, frames in labelled.items()}


def labelled_frames_in(root) -> int:
    """Frames with a row in at least one of the subject's label files, counted from the files themselves."""
    total = 0
    for folder in sorted((root / "ActionUnit_Labels").iterdir()):
        frames = set()
        for path in folder.glob("*.txt"):
            frames |= {int(line.split(",")[0]) for line in path.read_text().splitlines() if line.strip()}
        total += len(frames)
    return total


@pytest.fixture(scope="module")
def disfa_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "DISFA"
    write_disfa(root)
    return root


class DisfaWhole(Disfa):
    SEGMENT_FRAMES = 0  # every video one piece of work


class DisfaInRangesOf2(Disfa):
    SEGMENT_FRAMES = 2  # a 6-frame video in three ranges (module level: spawned workers import it by name)


def segmented(length):
    return {0: DisfaWhole, 2: DisfaInRangesOf2}[length]


def test_video_inputs_are_labelled_frames_and_add_up_in_any_frame_ranges(disfa_tree, tmp_path):
    options = dict(image_size=16, progress=False, allow_partial=True, validation_fraction=0.0, test_fraction=0.0)
    whole = build(segmented(0), disfa_tree, tmp_path / "whole", **options)
    accounting = whole["accounting"]
    assert accounting["inputs"] == labelled_frames_in(disfa_tree) == 8 + 5 + 4
    assert accounting["inputs"] == accounting["written"] + accounting["skipped"]
    assert accounting["written"] == 6 + 4 and accounting["written"] == len(sample_ids(tmp_path / "whole"))
    by_file = {(r["file"], r["reason"]): r["count"] for r in whole["skipped"]}
    assert by_file[("Videos_LeftCamera/LeftVideoSN002_comp.avi", "unreadable_video")] == 5  # its labelled frames
    assert by_file[("Videos_LeftCamera/LeftVideoSN001_comp.avi", "missing_file")] == 2  # frames 7-8 past the end
    assert by_file[("ActionUnit_Labels/SN001/SN001_au26.txt", "missing_file")] == 0  # AU26 masked: no frame lost
    assert by_file[("Videos_LeftCamera/LeftVideoSN003_comp.avi", "no_label")] == 0  # frames 5-6: not labelled

    # Cut into ranges of 2 frames (three workers' worth for a 6-frame video): the same bytes, the same records.
    parts = build(segmented(2), disfa_tree, tmp_path / "parts", **options)
    assert parts["accounting"] == accounting and parts["skipped"] == whole["skipped"]
    for shard in whole["splits"]["train"]["shards"]:
        assert (tmp_path / "parts" / shard["file"]).read_bytes() == (tmp_path / "whole" / shard["file"]).read_bytes()
    assert {r["file"]: r.get("frames") for r in parts["skipped"] if r["reason"] == "missing_file"}[
        "Videos_LeftCamera/LeftVideoSN001_comp.avi"] == [7, 8]


@pytest.mark.slow  # spawns two workers that import TensorFlow and MTCNN
def test_video_shards_are_byte_identical_with_one_or_two_workers(disfa_tree, tmp_path):
    options = dict(image_size=16, progress=False, allow_partial=True, validation_fraction=0.0, test_fraction=0.0)
    one = build(segmented(2), disfa_tree, tmp_path / "one", workers=1, **options)
    two = build(segmented(2), disfa_tree, tmp_path / "two", workers=2, **options)
    assert one["skipped"] == two["skipped"] and one["accounting"] == two["accounting"]
    for shard in one["splits"]["train"]["shards"]:
        assert (tmp_path / "one" / shard["file"]).read_bytes() == (tmp_path / "two" / shard["file"]).read_bytes()


# --- 12.2 / 12.6: a killed build leaves no worker; two builds at once --------------------------------------------
def start_slow_build(tmp_path, out, workers):
    write_slow_builder(tmp_path, "slow_faults_builder", items=400, delay=0.05)
    script = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {os.getcwd()!r}]\n"
              "from slow_faults_builder import Slow\nfrom tfrecords_builder import build\n"
              f"if __name__ == '__main__':\n"
              f"    build(Slow, {str(tmp_path)!r}, {str(out)!r}, image_size=16, progress=False, workers={workers})\n")
    (tmp_path / "run_slow.py").write_text(script)
    return subprocess.Popen([sys.executable, str(tmp_path / "run_slow.py")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is `pid`, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def workers_of(pid: int) -> set[int]:
    """The spawned pool workers among `pid`'s children (not the resource tracker)."""
    def cmdline(child):
        try:
            return open(f"/proc/{child}/cmdline", "rb").read()
        except OSError:
            return b""
    return {child for child in children_of(pid) if b"spawn_main" in cmdline(child)}


@pytest.mark.slow  # a real SIGKILL of a process with two spawned workers: ~10-30 s on a shared machine
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
@pytest.mark.parametrize("command", ["build", "demo render"])
def test_a_killed_parent_takes_its_workers_with_it(tmp_path, command):
    out = tmp_path / "out"
    if command == "build":
        process = start_slow_build(tmp_path, out, workers=2)
    else:
        process = subprocess.Popen([sys.executable, "-m", "fbnet_tf.demo", "render", "--out", str(out), "--workers",
                                    "2", "--databases", "disfa", "rafdb"], cwd=os.getcwd(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None and len(workers_of(process.pid)) < 2:
            time.sleep(0.05)
        time.sleep(2)  # the workers are busy now
        children = children_of(process.pid)
        assert process.poll() is None and len(workers_of(process.pid)) == 2, "it ended before it could be killed"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)], "processes outlived their killed parent"


@pytest.mark.slow  # a subprocess build that imports TensorFlow
def test_two_builds_at_once_the_second_is_told_the_folder_is_held(tmp_path, monkeypatch):
    out = tmp_path / "out"
    process = start_slow_build(tmp_path, out, workers=1)
    try:
        deadline = time.time() + 120
        while not (out / ".lock").exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
        monkeypatch.syspath_prepend(str(tmp_path))
        from slow_faults_builder import Slow

        with pytest.raises(BuildError, match=rf"another build \(PID {process.pid}\) is writing"):
            build(Slow, tmp_path, out, image_size=16, progress=False)
    finally:
        process.kill()
        process.wait()
    assert build(Slow, tmp_path, out, image_size=16, progress=False)["total"] == 400  # stale lock taken over
