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
    render_world(again, seed=7, scale="tiny", workers=2, databases=("affwild2", "rafdb", "celeba", "bp4d", "semaine",
                                                                     "affwild"))
    first = _digest(tiny[0])
    second = _digest(again)
    assert second and all(first[name] == digest for name, digest in second.items())
    other = tmp_path / "other"
    render_world(other, seed=8, scale="tiny", workers=1, databases=("rafdb",))
    assert _digest(other) != {k: v for k, v in first.items() if k.startswith("rafdb")}


# ------------------------------------------------------------------------- AU45 and the CelebA attributes
def test_au45_closes_the_lids():
    blink = np.zeros(len(fm.MODEL_AUS), np.float32)
    neutral = fm.deform(MEAN, blink)
    blink[fm.MODEL_AUS.index(45)] = 1.0
    shut = fm.deform(MEAN, blink)
    blink[fm.MODEL_AUS.index(45)] = 0.5
    half = fm.deform(MEAN, blink)
    assert fm.MODEL_AUS[:len(AUS)] == AUS and fm.MODEL_AUS[-1] == 45
    assert lid_opening(neutral) > 0.08 and abs(lid_opening(shut)) < 1e-6  # the lids meet
    np.testing.assert_allclose(lid_opening(half), lid_opening(neutral) / 2, rtol=1e-5)
    assert (shut[[37, 38, 43, 44], 1] - neutral[[37, 38, 43, 44], 1]).min() > 0.05  # the upper lids come down
    moved_points = np.flatnonzero(np.abs(shut - neutral).max(axis=1) > 0)
    assert set(moved_points) == {37, 38, 40, 41, 43, 44, 46, 47}  # nothing but the lids
    # A canonical 17-long array is the same face with the eyes open, to the bit.
    np.testing.assert_array_equal(fm.deform(MEAN, np.zeros(len(AUS))), neutral)


def test_a_blink_shuts_the_eyes_in_the_picture():
    identity = fm.Identity()
    scene = rd.aligned(identity, np.zeros(len(AUS)), 112, template(112), background=1)
    blink = np.zeros(len(fm.MODEL_AUS), np.float32)
    open_eyes, _ = rd.render(identity, blink, scene)
    np.testing.assert_array_equal(open_eyes, rd.render(identity, np.zeros(len(AUS)), scene)[0])
    blink[-1] = 1.0
    closed, _ = rd.render(identity, blink, scene)
    eyes, mouth = (slice(44, 60), slice(28, 84)), (slice(80, 108), slice(30, 82))
    grey = lambda image: image.astype(float).mean(axis=2)  # noqa: E731
    # The white of the eye is gone (its brightest pixel drops to skin tone); below the eyes nothing changes.
    assert grey(open_eyes)[eyes].max() - grey(closed)[eyes].max() > 40
    assert np.abs(grey(closed)[eyes] - grey(open_eyes)[eyes]).mean() > 5
    assert np.abs(grey(closed)[mouth] - grey(open_eyes)[mouth]).max() == 0


def eye_gap_over_width(p):
    return ((p[[41, 40, 47, 46], 1] - p[[37, 38, 43, 44], 1]).mean()
            / (p[[39, 45], 0] - p[[36, 42], 0]).mean())


def test_the_ten_table2_attributes_follow_the_face():
    from dataclasses import replace

    from fbnet_tf.demo import attributes
    from fbnet_tf.demo.writers import celeba_face

    assert len(attributes.TABLE2) == 10 and set(attributes.TABLE2) <= set(attributes.RULES)
    rng = np.random.default_rng(5)
    people = [fm.sample_person(rng) for _ in range(400)]
    faces = [celeba_face(rng, person) for person in people]
    labels = [{name: attributes.RULES[name](attributes.Portrait(p, f)) for name in attributes.TABLE2}
              for p, f in zip(people, faces)]
    column = lambda name: np.array([label[name] for label in labels])  # noqa: E731
    # Read off the face: AU12 present <-> smiling; the lids' gap on the deformed landmarks <-> narrow eyes.
    au12 = np.array([f[AUS.index(12)] for f in faces])
    np.testing.assert_array_equal(column("Smiling"), au12 >= 2.0)
    points = [fm.deform(fm.identity_shape(p), f / 5) for p, f in zip(people, faces)]
    gaps = np.array([eye_gap_over_width(q) for q in points])
    np.testing.assert_array_equal(column("Narrow_Eyes"), gaps < attributes.NARROW_BELOW)
    lips = np.array([lip_gap(q) for q in points])
    assert lips[column("Mouth_Slightly_Open")].min() > lips[~column("Mouth_Slightly_Open")].mean()
    # Tied to identity parameters.
    np.testing.assert_array_equal(column("Male"), [p.male for p in people])
    np.testing.assert_array_equal(column("Eyeglasses"), [p.glasses > 0 for p in people])
    np.testing.assert_array_equal(column("No_Beard"), [p.full_beard == 0 for p in people])
    np.testing.assert_array_equal(column("Young"), [p.age < attributes.YOUNG_BELOW for p in people])
    assert not (column("Male") == 0)[~column("No_Beard")].any()  # beards only on men
    jaw = np.array([p.jaw_width for p in people])
    assert jaw[column("Male")].mean() > jaw[~column("Male")].mean() + 0.05
    brows = np.array([p.brow_thickness for p in people])
    assert brows[column("Bushy_Eyebrows")].min() > brows[~column("Bushy_Eyebrows")].max()
    # Attractive: average proportions and youth. Same person older -> not more attractive.
    older = [attributes.RULES["Attractive"](attributes.Portrait(replace(p, age=1.0), f)) for p, f in
             zip(people, faces)]
    assert not (np.array(older) & ~column("Attractive")).any()
    # Every attribute takes both values, at rates near CelebA's (Male 42 %, Young 78 %, Eyeglasses 6.5 % ...).
    rates = {name: column(name).mean() for name in attributes.TABLE2}
    assert all(0.02 < rate < 0.98 for rate in rates.values()), rates
    assert abs(rates["Male"] - 0.42) < 0.08 and abs(rates["Young"] - 0.78) < 0.08


def test_glasses_and_beard_are_drawn():
    from dataclasses import replace

    base = fm.Identity(male=True)
    scene = rd.aligned(base, np.zeros(len(AUS)), 112, template(112), background=1)
    plain, _ = rd.render(base, np.zeros(len(AUS)), scene)
    around_eyes, jaw = (slice(40, 64), slice(20, 92)), (slice(95, 112), slice(25, 87))
    for change, region, other in ((dict(glasses=1.0), around_eyes, jaw), (dict(full_beard=0.8), jaw, around_eyes)):
        image, _ = rd.render(replace(base, **change), np.zeros(len(AUS)), scene)
        difference = np.abs(image.astype(int) - plain.astype(int)).mean(axis=2)
        assert difference[region].mean() > 5 and difference[other].mean() < 0.5, change


def test_blinks_are_frequent_and_brief():
    rng = np.random.default_rng(6)
    for fps in (50.0, 25.0):
        level = world.sample_blinks(rng, int(120 * fps), fps)  # two minutes
        present = level >= 2.0
        edges = np.diff(np.concatenate([[0], present.astype(int), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        per_minute = len(starts) / 2
        durations_ms = (ends - starts) * 1000 / fps
        assert 12 <= per_minute <= 40, per_minute  # people in conversation blink 15-30 times a minute
        assert 60 <= durations_ms.min() and durations_ms.max() <= 400, durations_ms
        assert present.mean() < 0.15


# ------------------------------------------------------------------------ the FATAUVA-Net releases
CELEBA_NAMES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
                "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
                "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
                "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
                "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def test_celeba_layout(tiny):
    root = tiny[0] / "celeba"
    lines = (root / "Anno" / "list_attr_celeba.txt").read_text().splitlines()
    assert int(lines[0]) == len(lines) - 2 == 30
    assert lines[1].split() == CELEBA_NAMES
    rows = {}
    for line in lines[2:]:
        name, *values = line.split()
        assert re.fullmatch(r"\d{6}\.jpg", name) and len(values) == 40 and set(values) <= {"1", "-1"}
        rows[name] = np.array(values, int)
    assert sorted(rows) == [f"{k:06d}.jpg" for k in range(1, 31)]
    partition = [line.split() for line in (root / "Eval" / "list_eval_partition.txt").read_text().splitlines()]
    assert [name for name, _ in partition] == sorted(rows)
    splits = np.array([int(split) for _, split in partition])
    assert set(splits) == {0, 1, 2} and (np.diff(splits) >= 0).all()  # train, then val, then test, in file order
    identity = dict(line.split() for line in (root / "Anno" / "identity_CelebA.txt").read_text().splitlines())
    for split in (0, 1):  # no person in two partitions
        here = {identity[name] for (name, _), s in zip(partition, splits) if s == split}
        later = {identity[name] for (name, _), s in zip(partition, splits) if s > split}
        assert not here & later
    # Attributes of the person (not of the photo) are the same in every photo of them.
    for attribute in ("Male", "Young", "No_Beard", "Eyeglasses", "Arched_Eyebrows", "Bushy_Eyebrows", "Attractive"):
        j = CELEBA_NAMES.index(attribute)
        per_person = {}
        for name, values in rows.items():
            per_person.setdefault(identity[name], set()).add(values[j])
        assert all(len(v) == 1 for v in per_person.values()), attribute
    marks = (root / "Anno" / "list_landmarks_align_celeba.txt").read_text().splitlines()
    assert int(marks[0]) == 30 and marks[1].split()[:2] == ["lefteye_x", "lefteye_y"]
    points = np.array([line.split()[1:] for line in marks[2:]], float).reshape(-1, 5, 2)
    # Aligned as CelebA's are: eyes level near y = 111, mouth near y = 152, centred at x = 89.
    assert np.abs(points[:, :2, 1] - 111).max() < 6 and np.abs(points[:, 3:, 1] - 152).max() < 8
    assert np.abs(points[:, :2, 0].mean(axis=1) - 89).max() < 6
    image = cv2.imread(str(root / "Img" / "img_align_celeba" / "000001.jpg"))
    assert image.shape == (218, 178, 3)


def test_bp4d_layout_fera2015(tiny):
    root = tiny[0] / "bp4d"
    files = sorted((root / "AUCoding").glob("*.csv"))
    subjects = [re.fullmatch(r"([FM]\d{3})_(T[1-8])\.csv", f.name).group(1) for f in files]
    assert {int(s[1:]) % 2 for s in subjects} == {0, 1}  # FERA 2015 train (odd) and devel (even) subjects
    for path in files:
        rows = [line.split(",") for line in path.read_text().splitlines()]
        header = rows[0]
        numbers = [int(cell) for cell in header[1:-1]]
        assert numbers == list(range(1, len(numbers) + 1))  # AU k in column k+1 (1-based), the last column occlusion
        table = np.array(rows[1:], int)
        frames = table[:, 0]
        assert (np.diff(frames) == 1).all()  # consecutive frame numbers, not necessarily from 1
        codes = table[:, 1:-1]
        assert set(np.unique(codes)) <= {0, 1, 9} and set(np.unique(table[:, -1])) <= {0, 1}
        coded = [au for au in numbers if (codes[:, au - 1] != 9).any()]
        assert len(coded) == 27 and 24 in coded and 45 not in coded
        # AUs change smoothly: a coded AU flips between consecutive frames rarely.
        for au in (12, 6, 4):
            column = codes[:, au - 1]
            known = column != 9
            flips = np.sum(column[1:][known[1:] & known[:-1]] != column[:-1][known[1:] & known[:-1]])
            assert flips <= max(2, len(column) // 4)
        subject, task = path.stem.split("_")
        folder = root / "BP4D" / "BP4D-training" / subject / task
        images = {int(p.stem): p for p in folder.glob("*.jpg")}
        assert sorted(images) == frames.tolist()
        assert cv2.imread(str(images[frames[0]])).shape == (200, 150, 3)
        for au in (6, 10, 12, 14, 17):
            intensity = np.array([line.split(",") for line in (root / "AU Intensity Codes3.0" / f"AU{au:02d}" /
                                                               f"{path.stem}_AU{au:02d}.csv").read_text().split()], int)
            assert (intensity[:, 0] == frames).all() and set(np.unique(intensity[:, 1])) <= {0, 1, 2, 3, 4, 5, 9}
            occurrence = codes[:, au - 1]
            known = occurrence != 9
            # Intensity 9 exactly where occurrence is 9; otherwise intensity >= 1 (A..E) <=> occurrence 1.
            np.testing.assert_array_equal(intensity[:, 1] == 9, ~known)
            np.testing.assert_array_equal(intensity[known, 1] >= 1, occurrence[known] == 1)


def organisers_labels(eaf, frames):
    """{AU: 0/1 per frame} by the FERA 2015 organisers' rule: an interval [t1, t2] ms covers frames
    floor(t1 * 50 / 1000) .. floor(t2 * 50 / 1000), inclusive. Also returns the labels by the start-time rule and
    the latest time slot (ms), where the organisers' parser ends the recording."""
    import xml.etree.ElementTree as ElementTree

    document = ElementTree.parse(eaf).getroot()
    assert document.tag == "ANNOTATION_DOCUMENT" and document.find("HEADER").get("TIME_UNITS") == "milliseconds"
    slots = {slot.get("TIME_SLOT_ID"): int(slot.get("TIME_VALUE")) for slot in document.iter("TIME_SLOT")}
    organisers, start_time = {}, {}
    for tier in document.iter("TIER"):
        au = int(tier.get("TIER_ID")[2:])
        organisers[au], start_time[au] = np.zeros(frames, int), np.zeros(frames, int)
        for annotation in tier.iter("ALIGNABLE_ANNOTATION"):
            t1, t2 = slots[annotation.get("TIME_SLOT_REF1")], slots[annotation.get("TIME_SLOT_REF2")]
            assert t1 <= t2
            organisers[au][t1 * 50 // 1000:t2 * 50 // 1000 + 1] = 1
            starts = np.arange(frames) * 1000 / 50
            start_time[au] |= (t1 <= starts) & (starts < t2)
    return organisers, start_time, max(slots.values())


def test_semaine_layout_fera2015(tiny):
    sessions = tiny[0] / "semaine" / "SEMAINE-Sessions"
    recordings = sorted(p for p in sessions.iterdir() if p.is_dir())
    assert [p.name for p in recordings] == ["rec1", "rec9"]  # one FERA 2015 train and one devel recording
    blinks = 0
    for folder in recordings:
        start, end = map(int, (sessions / f"{folder.name}.txt").read_text().split())  # beside the folder
        (eaf,), (video,) = folder.glob("*.eaf"), folder.glob("*.avi")
        capture = cv2.VideoCapture(str(video))
        assert capture.get(cv2.CAP_PROP_FPS) == 50
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        assert 0 <= start < end <= frames
        organisers, start_time, latest = organisers_labels(eaf, frames)
        assert latest * 50 // 1000 + 1 >= end  # the annotation spans the range: the parser does not cut it short
        assert sorted(organisers) == [2, 12, 17, 25, 28, 45]
        for au in organisers:  # both readings of the intervals agree frame for frame
            np.testing.assert_array_equal(organisers[au], start_time[au], err_msg=f"AU{au}")
        assert organisers[28].sum() == 0  # lip suck: the face model never shows it
        blinks += int(np.sum(np.diff(np.concatenate([[0], organisers[45]])) == 1))
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], organisers[45], [0]]))))[::2]
        assert (runs <= 20).all()  # at 50 fps a blink lasts well under half a second
    assert blinks >= 1


def test_affwild_layout(tiny):
    root = tiny[0] / "affwild"
    train = sorted((root / "videos" / "train").iterdir())
    test = sorted((root / "videos" / "test").iterdir())
    assert len(train) == 2 and len(test) == 1 and {p.suffix for p in train + test} <= {".mp4", ".avi"}
    assert {p.suffix for p in train + test} == {".mp4", ".avi"}
    assert not (root / "annotations" / "test").exists()  # the public release has no test labels
    for video in train:
        capture = cv2.VideoCapture(str(video))
        frames = 0
        while capture.read()[0]:
            frames += 1
        lines = {d: (root / "annotations" / "train" / d / f"{video.stem}.txt").read_text().splitlines()
                 for d in ("valence", "arousal")}
        assert len(lines["valence"]) == len(lines["arousal"]) and frames - 2 <= len(lines["valence"]) <= frames
        values = np.array([lines["valence"], lines["arousal"]], float)
        assert np.abs(values).max() <= 1 and values.std(axis=1).min() > 0.01
        assert np.abs(np.diff(values, axis=1)).max() < 0.3  # valence and arousal glide from frame to frame


def test_only_and_the_marker(tmp_path):
    from fbnet_tf.demo import FATAUVANET, read_marker
    from fbnet_tf.demo.__main__ import _releases

    assert _releases("fatauvanet") == FATAUVANET == ("celeba", "bp4d", "semaine", "affwild")
    assert _releases("semaine,CelebA") == ("celeba", "semaine")
    with pytest.raises(Exception, match="unknown release 'celeb'"):
        _releases("celeb")
    render_world(tmp_path, seed=2, scale="tiny", workers=1, databases=("semaine",))
    render_world(tmp_path, seed=2, scale="tiny", workers=1, databases=("bp4d",))
    assert sorted(read_marker(tmp_path)["databases"]) == ["bp4d", "semaine"]
    with pytest.raises(ValueError, match="mix two worlds"):
        render_world(tmp_path, seed=3, scale="tiny", workers=1, databases=("affwild",))
