"""The real builders read the demo world's trees: every registered demo database builds, with the counts the
written files imply (computed here from the files, independently of the builders)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fbnet_tf.demo import DATABASES, render_world

tfrecords_builder = pytest.importorskip("tfrecords_builder")


def registered(name):
    return name in tfrecords_builder.DATABASES


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_build") / "raw"
    render_world(out, seed=11, scale="tiny", workers=1,
                 databases=tuple(d for d in DATABASES if d != "disfa" or registered("disfa")))
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


EXPECTED = {"affectnet": lambda raw: expected_affectnet(raw / "affectnet"),
            "affwild2": lambda raw: expected_affwild2(raw / "affwild2"),
            "rafdb": lambda raw: expected_rafdb(raw / "rafdb", "basic"),
            "rafdb_compound": lambda raw: expected_rafdb(raw / "rafdb", "compound")}


@pytest.mark.parametrize("database", sorted(EXPECTED))
def test_the_builder_reads_the_demo_tree(database, raw, tmp_path):
    if not registered(database):
        pytest.skip(f"no {database!r} builder registered yet")
    folder = raw / ("rafdb" if database.startswith("rafdb") else database)
    manifest = tfrecords_builder.build(database, folder, tmp_path / database, workers=1, image_size=48,
                                       progress=False)
    total = sum(split["count"] for split in manifest["splits"].values())
    assert total == EXPECTED[database](raw)
    assert json.loads((tmp_path / database / "manifest.json").read_text())["database"] == database


@pytest.mark.slow
def test_the_disfa_builder_detects_the_rendered_faces(raw, tmp_path):
    if not registered("disfa"):
        pytest.skip("no 'disfa' builder registered yet")
    manifest = tfrecords_builder.build("disfa", raw / "disfa", tmp_path / "disfa", workers=1, image_size=48,
                                       progress=False)
    total = sum(split["count"] for split in manifest["splits"].values())
    assert total >= 0.9 * 2 * 12  # two subjects, 12 frames each; MTCNN must find nearly every face


@pytest.mark.slow
def test_prepare_renders_once_and_builds_once(tmp_path, capsys):
    from fbnet_tf.demo import prepare

    built = prepare(tmp_path, seed=3, scale="tiny", workers=1, image_size=48)
    demo_builders = [d for d in tfrecords_builder.DATABASES if d.startswith(DATABASES)]
    assert sorted(built) == sorted(demo_builders)
    stamps = {d: (path / "manifest.json").stat().st_mtime_ns for d, path in built.items()}
    raw_stamp = (tmp_path / "raw" / "demo_world.json").stat().st_mtime_ns
    again = prepare(tmp_path, seed=3, scale="tiny", workers=1, image_size=48)
    assert again == built
    assert {d: (path / "manifest.json").stat().st_mtime_ns for d, path in again.items()} == stamps
    assert (tmp_path / "raw" / "demo_world.json").stat().st_mtime_ns == raw_stamp
    if "disfa" not in tfrecords_builder.DATABASES:
        assert "no builder registered for 'disfa'" in capsys.readouterr().out
