"""The real builders read the demo world's trees: every registered demo database builds, with the counts the
written files imply (computed here from the files, independently of the builders)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fbnet_tf.demo import BUILDERS, DATABASES, FACEBEHAVIORNET, FATAUVANET, render_world

tfrecords_builder = pytest.importorskip("tfrecords_builder")


def registered(name):
    return name in tfrecords_builder.DATABASES


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_build") / "raw"
    render_world(out, seed=11, scale="tiny", workers=1,
                 databases=tuple(d for d in DATABASES if d != "disfa" or registered("disfa")))
    # BP4D and SEMAINE are written in the FERA 2015 organisers' layouts; test_demo.py parses them by their rules.
    return out


def expected_affectnet(root: Path) -> int:
    """Rows with a face (code 10 is No-Face)."""
    total = 0
    for split in ("training", "validation"):
        with open(root / "Manually_Annotated_file_lists" / f"{split}.csv", newline="") as f:
            total += sum(int(row["expression"]) != 10 for row in csv.DictReader(f))
    return total


def expected_affwild2(root: Path) -> int:
    """Frames with an image and at least one annotated label (-5 / -1 mean not annotated)."""
    labelled = set()
    for path in root.glob("*_Challenge/*/*.txt"):
        for frame, line in enumerate(path.read_text().splitlines()[1:], start=1):
            values = np.array(line.split(","), float)
            if not (values == -5).all() and not (values == -1).all():
                labelled.add((path.stem, frame))
    images = {(p.parent.name, int(p.stem)) for p in root.glob("cropped_aligned/*/*.jpg")}
    return len(labelled & images)


def expected_rafdb(root: Path, part: str) -> int:
    return len((root / part / "EmoLabel" / "list_patition_label.txt").read_text().splitlines())


def expected_celeba(root: Path) -> int:
    """Every row of list_attr_celeba.txt (each has an image and a partition)."""
    return len((root / "Anno" / "list_attr_celeba.txt").read_text().splitlines()) - 2


def expected_affwild(root: Path) -> int:
    """Training frames that have both a video frame and a label line (test videos have no labels)."""
    import cv2

    total = 0
    for video in (root / "videos" / "train").iterdir():
        capture, frames = cv2.VideoCapture(str(video)), 0
        while capture.read()[0]:
            frames += 1
        total += min(frames, len((root / "annotations" / "train" / "valence" / f"{video.stem}.txt").read_text()
                                 .splitlines()))
    return total


EXPECTED = {"affectnet": lambda raw: expected_affectnet(raw / "affectnet"),
            "affwild2": lambda raw: expected_affwild2(raw / "affwild2"),
            "rafdb": lambda raw: expected_rafdb(raw / "rafdb", "basic"),
            "rafdb_compound": lambda raw: expected_rafdb(raw / "rafdb", "compound"),
            "celeba": lambda raw: expected_celeba(raw / "celeba"),
            "affwild": lambda raw: expected_affwild(raw / "affwild")}
DETECTED = {"affwild"}  # builders that detect the face (the fast path): a frame may be skipped as `no_face`


@pytest.mark.parametrize("database", sorted(EXPECTED))
def test_the_builder_reads_the_demo_tree(database, raw, tmp_path):
    if not registered(database):
        pytest.skip(f"no {database!r} builder registered yet")
    folder = raw / next(release for release, names in BUILDERS.items() if database in names)
    manifest = tfrecords_builder.build(database, folder, tmp_path / database, workers=1, image_size=48,
                                       progress=False)
    total = sum(split["count"] for split in manifest["splits"].values())
    no_face = manifest["skipped_by_reason"].get("no_face", 0) if database in DETECTED else 0
    assert total + no_face == EXPECTED[database](raw)
    assert no_face <= 0.1 * EXPECTED[database](raw)
    assert json.loads((tmp_path / database / "manifest.json").read_text())["database"] == database


def test_celeba_records_carry_the_written_attributes(raw, tmp_path):
    """The attributes the release writes reach the records: Smiling/Eyeglasses counts per split match the file."""
    if not registered("celeba"):
        pytest.skip("no 'celeba' builder registered yet")
    manifest = tfrecords_builder.build("celeba", raw / "celeba", tmp_path / "celeba", workers=1, image_size=32,
                                       progress=False)
    lines = (raw / "celeba" / "Anno" / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    values = np.array([line.split()[1:] for line in lines[2:]], int)
    partition = [line.split()[1] for line in (raw / "celeba" / "Eval" / "list_eval_partition.txt").read_text()
                 .splitlines()]
    for split, code in (("train", "0"), ("validation", "1"), ("test", "2")):
        assert manifest["splits"][split]["count"] == partition.count(code)
    assert manifest["extra"]["attribute_names"] == names
    assert values[:, names.index("Smiling")].max() == 1 and values[:, names.index("Smiling")].min() == -1


@pytest.mark.slow
def test_the_disfa_builder_detects_the_rendered_faces(raw, tmp_path):
    if not registered("disfa"):
        pytest.skip("no 'disfa' builder registered yet")
    manifest = tfrecords_builder.build("disfa", raw / "disfa", tmp_path / "disfa", workers=1, image_size=48,
                                       progress=False)
    total = sum(split["count"] for split in manifest["splits"].values())
    assert total >= 0.9 * 2 * 12  # two subjects, 12 frames each; the detector must find nearly every face


@pytest.mark.slow
def test_prepare_renders_once_and_builds_once(tmp_path, capsys):
    from fbnet_tf.demo import prepare

    built = prepare(tmp_path, seed=3, scale="tiny", workers=1, image_size=48)
    demo_builders = [d for release in FACEBEHAVIORNET for d in BUILDERS[release] if registered(d)]
    assert sorted(built) == sorted(demo_builders)
    assert not any((tmp_path / "raw" / release).exists() for release in FATAUVANET)  # rendered only when asked
    stamps = {d: (path / "manifest.json").stat().st_mtime_ns for d, path in built.items()}
    raw_stamp = (tmp_path / "raw" / "demo_world.json").stat().st_mtime_ns
    again = prepare(tmp_path, seed=3, scale="tiny", workers=1, image_size=48)
    assert again == built
    assert {d: (path / "manifest.json").stat().st_mtime_ns for d, path in again.items()} == stamps
    assert (tmp_path / "raw" / "demo_world.json").stat().st_mtime_ns == raw_stamp
    if "disfa" not in tfrecords_builder.DATABASES:
        assert "no builder registered for 'disfa'" in capsys.readouterr().out
