"""The demo world: AUs move the face as FACS says, the sampler follows the relatedness table, the written trees
have the databases' real layouts, and rendering is deterministic for a seed whatever the number of workers."""
import csv
import hashlib
import re

import cv2
import numpy as np
import pytest

from fbnet_tf import relatedness
from fbnet_tf.demo import face_model as fm
from fbnet_tf.demo import render as rd
from fbnet_tf.demo import render_world, world
from fbnet_tf.face import landmarks68_to_5, template
from fbnet_tf.labels import AUS, EXPRESSIONS

MEAN = fm.identity_shape(fm.Identity())


def moved(au, intensity=1.0):
    """(neutral, with AU) landmark sets [68, 2] of the mean face; y grows downwards."""
    levels = np.zeros(len(AUS), np.float32)
    levels[AUS.index(au)] = intensity
    return fm.deform(MEAN, np.zeros(len(AUS))), fm.deform(MEAN, levels)


def lid_opening(p):
    return (p[[41, 40, 47, 46], 1] - p[[37, 38, 43, 44], 1]).mean()


def lip_gap(p):
    return (p[[67, 66, 65], 1] - p[[61, 62, 63], 1]).mean()


def red_of_lips(p):
    return (p[[59, 58, 57, 56, 55], 1] - p[[49, 50, 51, 52, 53], 1]).mean()


def width(p, left, right):
    return p[right, 0] - p[left, 0]


# (AU, what FACS says, check(neutral, moved)); brows 17-26 (21/22 inner), eyes 36-47, nose 31-35, lips 48-67.
FACS = [
    (1, "inner brows rise more than outer", lambda a, b: (a - b)[[21, 22], 1].min() > 0.08
     and (a - b)[[21, 22], 1].min() > (a - b)[[17, 26], 1].max() + 0.05),
    (2, "outer brows rise more than inner", lambda a, b: (a - b)[[17, 26], 1].min() > 0.08
     and (a - b)[[17, 26], 1].min() > (a - b)[[21, 22], 1].max() + 0.05),
    (4, "brows lower and draw together", lambda a, b: (b - a)[17:27, 1].min() > 0.02
     and width(b, 21, 22) < width(a, 21, 22) - 0.08),
    (5, "upper lids rise, eyes open", lambda a, b: (a - b)[[37, 38, 43, 44], 1].min() > 0.03
     and lid_opening(b) > lid_opening(a) + 0.03),
    (6, "cheeks push the lower lids up", lambda a, b: (a - b)[[40, 41, 46, 47], 1].min() > 0.02),
    (7, "lids tighten, eyes narrow", lambda a, b: lid_opening(b) < lid_opening(a) - 0.04),
    (9, "nose wrinkles: nostrils and upper lip rise", lambda a, b: (a - b)[31:36, 1].min() > 0.02
     and (a - b)[50:53, 1].min() > 0.02),
    (10, "upper lip rises", lambda a, b: (a - b)[[50, 51, 52], 1].min() > 0.05
     and abs((a - b)[57, 1]) < 0.01),
    (12, "lip corners pulled up and out", lambda a, b: (a - b)[[48, 54], 1].min() > 0.05
     and width(b, 48, 54) > width(a, 48, 54) + 0.08),
    (14, "lip corners drawn in", lambda a, b: width(b, 48, 54) < width(a, 48, 54) - 0.03),
    (15, "lip corners pulled down", lambda a, b: (b - a)[[48, 54], 1].min() > 0.05),
    (17, "chin and lower lip pushed up", lambda a, b: (a - b)[[8, 57], 1].min() > 0.03),
    (20, "lips stretched sideways, corners not raised", lambda a, b: width(b, 48, 54) > width(a, 48, 54) + 0.12
     and (b - a)[[48, 54], 1].min() >= 0),
    (23, "red of the lips narrowed", lambda a, b: red_of_lips(b) < red_of_lips(a) - 0.03),
    (24, "lips pressed: thinner, closed", lambda a, b: red_of_lips(b) < red_of_lips(a) - 0.05
     and lip_gap(b) <= lip_gap(a) + 1e-6),
    (25, "lips part", lambda a, b: lip_gap(b) > lip_gap(a) + 0.04),
    (26, "jaw drops: chin down, mouth opens", lambda a, b: (b - a)[8, 1] > 0.15 and lip_gap(b) > lip_gap(a) + 0.1),
]


@pytest.mark.parametrize("au,meaning,check", FACS, ids=[f"AU{a}" for a, _, _ in FACS])
def test_each_au_moves_the_landmarks_facs_names(au, meaning, check):
    neutral, active = moved(au)
    assert check(neutral, active), meaning
    half = moved(au, 0.5)[1]
    # Intensity is graded: half-strength moves the face half as far.
    np.testing.assert_allclose(np.abs(half - neutral).max(), np.abs(active - neutral).max() / 2, rtol=0.35)


def test_every_canonical_au_has_a_blendshape():
    assert fm.AU_BLENDSHAPES.shape == (len(AUS), 68, 2)
    assert (np.abs(fm.AU_BLENDSHAPES).reshape(len(AUS), -1).max(axis=1) > 0.02).all()
    # Symmetric faces: mirrored points move mirrored.
    np.testing.assert_allclose(fm.AU_BLENDSHAPES[:, 48, 0], -fm.AU_BLENDSHAPES[:, 54, 0])
    np.testing.assert_allclose(fm.AU_BLENDSHAPES[:, 21, 1], fm.AU_BLENDSHAPES[:, 22, 1])


def _portrait(au=None, level=5.0):
    """The mean face with one AU, drawn in the neutral face's aligned scene (so nothing moves but the AU)."""
    identity = fm.Identity()
    scene = rd.aligned(identity, np.zeros(len(AUS)), 112, template(112), background=1)
    intensities = np.zeros(len(AUS), np.float32)
    if au is not None:
        intensities[AUS.index(au)] = level
    return rd.render(identity, intensities / 5, scene)


def test_aus_change_the_pixels_where_they_act():
    neutral, _ = _portrait()
    brows = (slice(25, 50), slice(25, 87))  # rows, columns of a 112 crop (template eyes at y ~52)
    mouth = (slice(80, 108), slice(30, 82))
    for au, region, elsewhere in ((1, brows, mouth), (2, brows, mouth), (4, brows, mouth), (12, mouth, brows),
                                  (15, mouth, brows), (26, mouth, brows)):
        image, _ = _portrait(au)
        change = np.abs(image.astype(int) - neutral.astype(int)).mean(axis=2)
        assert change[region].mean() > 4 * change[elsewhere].mean() + 0.5, f"AU{au}"


def test_aligned_scene_puts_the_five_points_on_the_template():
    rng = np.random.default_rng(3)
    for size in (112, 100):
        identity = fm.sample_identity(rng)
        face = world.sample_face(rng, identity, 4)
        scene = world.aligned_scene(rng, face, size, jitter=0.0, **world.sample_look(rng, size))
        points = rd.landmarks_px(identity, face.intensities / 5, scene)
        _, drawn = rd.render(identity, face.intensities / 5, scene)
        np.testing.assert_allclose(drawn, points, atol=1e-4)
        # Least squares over 5 points with yaw: within a few pixels of the template, eyes within 2.5 px.
        error = np.linalg.norm(landmarks68_to_5(points) - template(size), axis=1)
        assert error.max() < 0.06 * size and error[:2].max() < 2.5


def test_sampled_aus_follow_the_du_table():
    rng = np.random.default_rng(0)
    table = relatedness.load("du2014")
    identity = fm.Identity()
    faces = [world.sample_face(rng, identity, e) for e in range(7) for _ in range(400)]
    expr = np.array([f.expression for f in faces])
    au = np.stack([f.au for f in faces])
    inferred = relatedness.infer(expr, au, np.ones_like(au), min_weight=0.1)
    rows = [EXPRESSIONS.index(e) for e in EXPRESSIONS if e != "Neutral"]
    np.testing.assert_array_equal(inferred.membership[rows], table.membership[rows])
    np.testing.assert_allclose(inferred.weights[rows], table.weights[rows], atol=0.08)
    # Intensities split cleanly at the occurrence threshold.
    levels = np.stack([f.intensities for f in faces])
    assert levels[au == 1].min() >= 2.0 and levels[au == 0].max() < 1.0 + 1e-6


def test_valence_arousal_sit_on_the_circumplex():
    rng = np.random.default_rng(1)
    identity = fm.Identity()
    va = {e: np.mean([world.sample_face(rng, identity, EXPRESSIONS.index(e)).va for _ in range(200)], axis=0)
          for e in EXPRESSIONS}
    assert va["Happiness"][0] > 0.4 and va["Sadness"][0] < -0.3 and va["Anger"][0] < -0.2
    assert va["Surprise"][1] > va["Neutral"][1] + 0.3 and va["Fear"][1] > va["Sadness"][1] + 0.5
    assert abs(va["Neutral"]).max() < 0.15


def test_compound_faces_use_the_compound_table():
    rng = np.random.default_rng(2)
    _, table = world.tables()
    row = table.rows.index("Happily Surprised")
    faces = [world.sample_compound_face(rng, fm.Identity(), row) for _ in range(300)]
    rate = np.mean([f.au for f in faces], axis=0)
    for a in (1, 2, 12, 25):
        assert rate[AUS.index(a)] == 1.0
    assert abs(rate[AUS.index(26)] - table.weights[row, AUS.index(26)]) < 0.1
    assert all(f.compound == row and f.expression == -1 for f in faces)


def test_video_labels_vary_smoothly():
    rng = np.random.default_rng(4)
    video = world.sample_video(rng, fm.Identity(), 120)
    assert video.intensities.shape == (120, len(AUS)) and video.va.shape == (120, 2)
    assert np.abs(np.diff(video.intensities, axis=0)).max() < 1.5  # FACS units per frame
    assert np.abs(np.diff(video.pose, axis=0)).max() < 3.0  # degrees per frame
    assert len(set(video.expression.tolist())) > 1


# ------------------------------------------------------------------------------------------- the written trees
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "raw"
    summary = render_world(out, seed=7, scale="tiny", workers=1)
    return out, summary


def test_affectnet_layout(tiny):
    root = tiny[0] / "affectnet"
    header = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,"
              "arousal")
    codes = []
    for split, n in (("training", 24), ("validation", 2 * 8 + 3)):
        path = root / "Manually_Annotated_file_lists" / f"{split}.csv"
        assert path.read_text().splitlines()[0] == header
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n
        for row in rows:
            assert re.fullmatch(r"\d+/[0-9a-f]{56}\.jpg", row["subDirectory_filePath"])
            image = cv2.imread(str(root / "Manually_Annotated_Images" / row["subDirectory_filePath"]))
            points = np.array(row["facial_landmarks"].split(";"), float).reshape(68, 2)
            code, va = int(row["expression"]), (float(row["valence"]), float(row["arousal"]))
            codes.append(code)
            assert 0 <= code <= 10
            assert va == (-2.0, -2.0) or (max(map(abs, va)) <= 1)
            if code == 10:
                assert va == (-2.0, -2.0)
                continue
            x, y, w, h = (int(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
            assert (points[:, 0] >= x - 1).all() and (points[:, 0] <= x + w + 1).all()
            assert (points[:, 1] >= y - 1).all() and (points[:, 1] <= y + h + 1).all()
            # iBUG order: image-left eye left of the right eye, brows above eyes, nose above mouth, chin lowest.
            assert points[36:42, 0].mean() < points[42:48, 0].mean() or abs(points[0, 0] - points[16, 0]) < 5
            assert image is not None and image.shape[0] > 150 and w < image.shape[1]
    assert set(codes) >= {8, 9, 10}


def test_affwild2_layout(tiny):
    root = tiny[0] / "affwild2"
    headers = {"VA_Estimation_Challenge": "valence,arousal",
               "EXPR_Recognition_Challenge": "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
               "AU_Detection_Challenge": "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"}
    videos = sorted(p.name for p in (root / "cropped_aligned").iterdir())
    assert any(v.endswith("_left") for v in videos) and any(v.endswith("_right") for v in videos)
    no_image = unlabelled = 0
    for task, header in headers.items():
        for split in ("Train_Set", "Validation_Set"):
            files = sorted((root / task / split).glob("*.txt"))
            assert files, f"{task}/{split} is empty"
            for path in files:
                lines = path.read_text().splitlines()
                assert lines[0] == header and path.stem in videos
                rows = [line.split(",") for line in lines[1:]]
                width = {"VA_Estimation_Challenge": 2, "EXPR_Recognition_Challenge": 1}.get(task, 12)
                assert all(len(r) == width for r in rows)
                values = np.array(rows, float)
                if task == "VA_Estimation_Challenge":
                    assert ((np.abs(values) <= 1) | (values == -5)).all()
                elif task == "EXPR_Recognition_Challenge":
                    assert set(values.ravel()) <= set(range(-1, 8))
                else:
                    assert set(values.ravel()) <= {-1, 0, 1}
                images = {p.name for p in (root / "cropped_aligned" / path.stem).glob("*.jpg")}
                frames = {f"{k:05d}.jpg" for k in range(1, len(rows) + 1)}
                no_image += len(frames - images)
                unlabelled += len(images - frames)
    assert no_image > 0 and unlabelled > 0
    crop = cv2.imread(str(next((root / "cropped_aligned" / videos[0]).glob("*.jpg"))))
    assert crop.shape == (112, 112, 3)


def test_disfa_layout(tiny):
    root = tiny[0] / "disfa"
    for subject in ("SN001", "SN002"):
        files = sorted((root / "ActionUnit_Labels" / subject).glob("*.txt"))
        assert sorted(int(re.fullmatch(rf"{subject}_au(\d+)\.txt", f.name).group(1)) for f in files) == (
            [1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26])
        for f in files:
            rows = np.array([line.split(",") for line in f.read_text().splitlines()], int)
            assert (rows[:, 0] == np.arange(1, 13)).all() and rows[:, 1].min() >= 0 and rows[:, 1].max() <= 5
        capture = cv2.VideoCapture(str(root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi"))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        assert len(frames) == 12 and frames[0].shape == (160, 200, 3)


def test_rafdb_layout(tiny):
    root = tiny[0] / "rafdb"
    for part, codes, counts in (("basic", range(1, 8), (10, 4)), ("compound", range(1, 12), (6, 3))):
        lines = (root / part / "EmoLabel" / "list_patition_label.txt").read_text().splitlines()
        assert len(lines) == sum(counts)
        for line in lines:
            name, code = line.split(" ")
            assert re.fullmatch(r"(train_\d{5}|train_\d{4}|test_\d{4})\.jpg", name) and int(code) in codes
            stem = name[:-4]
            aligned = cv2.imread(str(root / part / "Image" / "aligned" / f"{stem}_aligned.jpg"))
            assert aligned.shape == (100, 100, 3)
            assert (root / part / "Image" / "original" / name).is_file()
        assert sum(line.startswith("train_") for line in lines) == counts[0]


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "demo_world.json"}


def test_rendering_is_deterministic_whatever_the_workers(tiny, tmp_path):
    again = tmp_path / "raw"
    render_world(again, seed=7, scale="tiny", workers=2, databases=("affwild2", "rafdb"))
    first = _digest(tiny[0])
    second = _digest(again)
    assert second and all(first[name] == digest for name, digest in second.items())
    other = tmp_path / "other"
    render_world(other, seed=8, scale="tiny", workers=1, databases=("rafdb",))
    assert _digest(other) != {k: v for k, v in first.items() if k.startswith("rafdb")}
