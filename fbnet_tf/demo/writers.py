"""Write the demo world as the databases ship: one planner per database layout (shared/reference/datasets.md).

Each `plan_<database>(root, rng, size)` samples everything about its database in the calling process (so the
result depends on the seed only, never on the number of workers) and returns `Plan(jobs, finish)`: `jobs` are
picklable (function, args) pairs that render and write images or videos; `finish(results)` writes the annotation
files once every job is done, from the jobs' results in job order.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fbnet_tf.demo import attributes
from fbnet_tf.demo import face_model as fm
from fbnet_tf.demo import render as rd
from fbnet_tf.demo import world
from fbnet_tf.face import TEMPLATE_112, align, landmarks68_to_5, template
from fbnet_tf.labels import ABAW2022_AUS, AUS, COMPOUND_EXPRESSIONS, EXPRESSIONS, expression_index
from tfrecords_builder.celeba import ATTRIBUTE_NAMES as CELEBA_ATTRIBUTES

AFFECTNET_CODES = ("Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger", "Contempt", "None",
                   "Uncertain", "No-Face")
AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
                    "valence,arousal")
ABAW_AUS = ABAW2022_AUS  # the AU_Detection_Challenge header
ABAW_EXPR = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
ABAW_TASKS = {"VA_Estimation_Challenge": "valence,arousal",
              "EXPR_Recognition_Challenge": ",".join(ABAW_EXPR),
              "AU_Detection_Challenge": ",".join(f"AU{a}" for a in ABAW_AUS)}
DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
DISFA_SUBJECTS = ("SN001", "SN002", "SN003", "SN004", "SN005", "SN006", "SN007", "SN008", "SN009", "SN010",
                  "SN011", "SN012", "SN013", "SN016", "SN017", "SN018", "SN021", "SN023", "SN024", "SN025",
                  "SN026", "SN027", "SN028", "SN029", "SN030", "SN031", "SN032")
RAF_BASIC = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")  # codes 1..7
RAF_COMPOUND = COMPOUND_EXPRESSIONS[:8] + COMPOUND_EXPRESSIONS[9:12]  # codes 1..11 (no "Fearfully Disgusted")

# BP4D-Spontaneous: subjects F001-F023 and M001-M018 (odd numbers FERA 2015 train, even devel), tasks T1-T8,
# each task an emotion induction (Zhang et al. 2014): the expressions its frames are drawn from (canonical order).
# (Listed odd/even pairs first, F001 F002 M001 M002 F003 ...: any prefix has both FERA partitions.)
BP4D_SUBJECTS = tuple(sorted((f"{sex}{k:03d}" for sex, n in (("F", 23), ("M", 18)) for k in range(1, n + 1)),
                             key=lambda name: ((int(name[1:]) - 1) // 2, name)))
BP4D_TASKS = {"T1": {"Happiness": 0.7, "Neutral": 0.3}, "T2": {"Sadness": 0.6, "Neutral": 0.4},
              "T3": {"Surprise": 0.6, "Fear": 0.1, "Neutral": 0.3}, "T4": {"Happiness": 0.4, "Neutral": 0.6},
              "T5": {"Fear": 0.6, "Surprise": 0.1, "Neutral": 0.3},
              "T6": {"Disgust": 0.3, "Anger": 0.3, "Neutral": 0.4},
              "T7": {"Anger": 0.6, "Neutral": 0.4}, "T8": {"Disgust": 0.6, "Neutral": 0.4}}
# The 27 AUs BP4D codes [assumed: the list is not in the reference; FERA 2015 scores 11 of them, and FATAUVA-Net
# takes AU26 from BP4D, SEMAINE not coding it]. The occurrence files have one column per AU number 1..45 (AU k in
# column k+1, uncoded numbers all 9: real files carry uncoded columns past AU39), then an occlusion flag.
BP4D_CODED = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 30, 32)
BP4D_COLUMNS = tuple(range(1, 46))
BP4D_INTENSITY = (6, 10, 12, 14, 17)  # FERA 2015's intensity AUs ("AU Intensity Codes3.0/AU06/...")
BP4D_FPS = 25.0
# SEMAINE as FERA 2015 ships it: the recordings of its train and devel partitions, the six AU tiers, 50 fps.
SEMAINE_TRAIN = ("rec1", "rec12", "rec14", "rec19", "rec23", "rec25", "rec37", "rec39")
SEMAINE_DEVEL = ("rec9", "rec13", "rec15", "rec20", "rec24", "rec26", "rec38", "rec42")
SEMAINE_AUS = (2, 12, 17, 25, 28, 45)
SEMAINE_FPS = 50.0
# The SEMAINE operators' characters set the user's mood: Poppy cheerful, Spike angry, Obadiah gloomy, Prudence calm.
SEMAINE_MOODS = ({"Happiness": 0.6, "Neutral": 0.3, "Surprise": 0.1}, {"Anger": 0.5, "Disgust": 0.2, "Neutral": 0.3},
                 {"Sadness": 0.6, "Neutral": 0.4}, {"Neutral": 0.6, "Happiness": 0.3, "Surprise": 0.1})
AFFWILD_FPS = 30.0
# CelebA's aligned images: 218 x 178, faces placed by their 5 points at CelebA's mean positions (eyes at y ~111,
# mouth at y ~152, centred at x = 89): the project's 5-point template scaled and moved there.
CELEBA_SIZE = (218, 178)
CELEBA_SPLITS = (0.8, 0.1, 0.1)  # list_eval_partition.txt: 162,770 / 19,867 / 19,962, by identity, in file order

# How many of each thing a scale renders ("tiny" is for tests).
SCALES = {
    "tiny": dict(affectnet=(24, 2, 1), affwild2=(3, 20), disfa=(2, 12), rafdb=(10, 4, 6, 3),
                 celeba=(30, 3), bp4d=(2, 1, 12), semaine=(2, 40), affwild=(2, 1, 12)),
    "small": dict(affectnet=(1000, 25, 5), affwild2=(14, 90), disfa=(4, 150), rafdb=(480, 120, 240, 60),
                  celeba=(1200, 4), bp4d=(6, 2, 50), semaine=(4, 300), affwild=(8, 2, 80)),
    "medium": dict(affectnet=(5000, 100, 20), affwild2=(30, 200), disfa=(8, 200), rafdb=(2400, 600, 800, 200),
                   celeba=(6000, 6), bp4d=(12, 4, 100), semaine=(8, 400), affwild=(20, 4, 200)),
}


@dataclass
class Plan:
    """Jobs to run (in any process) and the step that writes the annotations from their results."""

    jobs: list
    finish: Callable[[list], dict]


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"could not write {path}")


def _lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# ----------------------------------------------------------------------------------------------------- AffectNet
def _render_still(path: str, identity: fm.Identity, intensities: np.ndarray, scene: rd.Scene, quality: int = 90):
    image, landmarks = rd.render(identity, intensities / 5, scene)
    _write_jpeg(Path(path), image, quality)
    return landmarks


def _affectnet_face(rng, code: int) -> world.Face:
    identity = fm.sample_identity(rng)
    name = AFFECTNET_CODES[code]
    index = expression_index(name) if code < 7 else None
    if index is not None:
        return world.sample_face(rng, identity, index)
    if name == "Uncertain":
        return world.sample_face(rng, identity, int(rng.integers(7)))
    intensities = world.sample_intensities(rng, np.zeros(len(AUS)), spurious=0.1)
    if name == "Contempt":  # dimpler with a hint of a smile
        intensities[AUS.index(14)] = rng.uniform(2.5, 5)
        intensities[AUS.index(12)] = rng.uniform(0.5, 1.8)
    return world.Face(identity, intensities, -1, world.valence_arousal(rng, ["Neutral"], intensities))


def plan_affectnet(root: Path, rng: np.random.Generator, size: tuple) -> Plan:
    """AffectNet original release: two CSVs and `Manually_Annotated_Images/<int>/<56 hex>.jpg`, faces unaligned."""
    n_train, val_per_code, val_per_extra = size
    train_p = np.array([0.18, 0.22, 0.1, 0.09, 0.08, 0.07, 0.1, 0.04, 0.05, 0.03, 0.04])
    codes = {"training": rng.choice(11, n_train, p=train_p / train_p.sum()),
             "validation": np.repeat(np.arange(11), [val_per_code] * 8 + [val_per_extra] * 3)}
    rows, jobs = {"training": [], "validation": []}, []
    for split, split_codes in codes.items():
        for code in split_codes:
            face = _affectnet_face(rng, int(code))
            height, width = (int(v) for v in rng.integers(180, 280, 2))
            scene = world.free_scene(rng, height, width, face=code != 10, **world.sample_look(rng, 180))
            relative = f"{int(rng.integers(1, 1000))}/{rng.bytes(28).hex()}.jpg"
            va = face.va if code != 10 and rng.uniform() > 0.01 else np.array([-2.0, -2.0])
            rows[split].append((relative, int(code), va))
            jobs.append((_render_still, (str(root / "Manually_Annotated_Images" / relative), face.identity,
                                         face.intensities, scene, 85)))

    def finish(results):
        landmarks = iter(results)
        for split, split_rows in rows.items():
            lines = [AFFECTNET_HEADER]
            for relative, code, va in split_rows:
                points = next(landmarks)
                x0, y0 = points[:, 0].min(), points[17:27, 1].min()
                x1, y1 = points[:, 0].max(), points[:, 1].max()
                y0 = max(0.0, y0 - 0.3 * (y1 - y0))  # the box covers the forehead, inside the picture
                box = [int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1 - x0)), int(np.ceil(y1 - y0))]
                flat = ";".join(f"{v:.2f}" for v in points.reshape(-1))
                lines.append(f"{relative},{box[0]},{box[1]},{box[2]},{box[3]},{flat},{code},"
                             f"{va[0]:.6f},{va[1]:.6f}")
            _lines(root / "Manually_Annotated_file_lists" / f"{split}.csv", lines)
        return {split: len(split_rows) for split, split_rows in rows.items()}

    return Plan(jobs, finish)


# ----------------------------------------------------------------------------------------------------- Aff-Wild2
def _render_aligned_video(folder: str, video: world.Video, has_image: np.ndarray, seed: int, size: int = 112):
    """cropped_aligned/<video>/00001.jpg ...: every frame with a face, aligned to the 5-point template."""
    rng = np.random.default_rng(seed)
    jitter = world.smooth(rng.normal(0, 0.012 * size, (len(video), 10)), 2.0).reshape(-1, 5, 2)
    base = template(size)
    for t in np.flatnonzero(has_image):
        yaw, pitch, _ = video.pose[t]
        look = dict(video.look, seed=int(video.look["seed"]) + int(t))
        scene = rd.aligned(video.identity, video.intensities[t] / 5, size, base + jitter[t].astype(np.float32),
                           yaw=float(yaw), pitch=float(pitch), **look)
        image, _ = rd.render(video.identity, video.intensities[t] / 5, scene)
        _write_jpeg(Path(folder) / f"{t + 1:05d}.jpg", image)
    return int(has_image.sum())


def _gap(rng, frames: int, low: int, high: int) -> np.ndarray:
    """A run of frames [start, start + length) as a boolean mask."""
    mask = np.zeros(frames, bool)
    length = int(rng.integers(low, high))
    start = int(rng.integers(0, frames - length))
    mask[start:start + length] = True
    return mask


def plan_affwild2(root: Path, rng: np.random.Generator, size: tuple) -> Plan:
    """ABAW 2022+: three challenge folders of per-video txt files and `cropped_aligned/<video>/%05d.jpg`."""
    n_videos, frames = size
    names = [f"{k + 1}-30-{rng.choice(['640x360', '1280x720', '1920x1080'])}" for k in range(n_videos)]
    names += [f"{n_videos + 1}-30-1280x720_left", f"{n_videos + 1}-30-1280x720_right"]  # two people, one video
    split = ["Validation_Set" if k % 3 == 2 else "Train_Set" for k in range(n_videos)] + ["Train_Set"] * 2
    membership = {task: rng.uniform(size=len(names)) < p
                  for task, p in zip(ABAW_TASKS, (0.85, 0.75, 0.75))}
    for task in ABAW_TASKS:  # every task has a train and a validation video
        membership[task][[0, 2]] = True
    membership["EXPR_Recognition_Challenge"][[-2, -1]] = True
    jobs, labels = [], {}
    for k, name in enumerate(names):
        length = frames + int(rng.integers(-frames // 5, frames // 5))
        video = world.sample_video(rng, fm.sample_identity(rng), length + 3)  # 3 trailing images without label
        has_image = rng.uniform(size=len(video)) > 0.02
        if k % 3 == 0:  # a stretch where the detector found no face
            has_image[:length] &= ~_gap(rng, length, 4, 9)
        labels[name] = (video, length, {task: _gap(rng, length, 3, 8) if rng.uniform() < 0.5
                                        else np.zeros(length, bool) for task in ABAW_TASKS})
        jobs.append((_render_aligned_video, (str(root / "cropped_aligned" / name), video, has_image,
                                             int(rng.integers(2 ** 31)))))

    def finish(results):
        counts = {"videos": len(names), "images": int(sum(results)), "frames_labelled": {}}
        for task, header in ABAW_TASKS.items():
            n = 0
            for k, name in enumerate(names):
                if not membership[task][k]:
                    continue
                video, length, missing = labels[name]
                rows = [header]
                for t in range(length):
                    if task == "VA_Estimation_Challenge":
                        v, a = video.va[t]
                        rows.append("-5,-5" if missing[task][t] else f"{v:.3f},{a:.3f}")
                    elif task == "EXPR_Recognition_Challenge":
                        rows.append("-1" if missing[task][t] else str(int(video.expression[t])))
                    else:
                        occurrence = video.intensities[t, [AUS.index(a) for a in ABAW_AUS]] >= world.OCCURRENCE
                        rows.append(",".join(["-1"] * 12 if missing[task][t] else map(str, occurrence.astype(int))))
                _lines(root / task / split[k] / f"{name}.txt", rows)
                n += length
            counts["frames_labelled"][task] = n
        return counts

    return Plan(jobs, finish)


# ----------------------------------------------------------------------------------------------------- DISFA
def _placed_frames(video: world.Video, height: int, width: int, seed: int, *, face_fraction: float = 0.75,
                   wander: float = 4.0):
    """The video's frames (RGB), the face `face_fraction` of the height tall, wandering by about `wander` px."""
    rng = np.random.default_rng(seed)
    drift = world.smooth(rng.normal(0, wander, (len(video), 2)), 6.0)
    face_px = face_fraction * height
    for t in range(len(video)):
        yaw, pitch, roll = video.pose[t]
        scene = rd.placed(height, width, centre=(width / 2 + drift[t, 0], height * 0.52 + drift[t, 1]),
                          face_px=face_px, yaw=float(yaw), pitch=float(pitch), roll=float(roll),
                          **dict(video.look, seed=int(video.look["seed"])))
        yield rd.render(video.identity, video.intensities[t] / 5, scene)[0]


def _render_video_file(path: str, video: world.Video, height: int, width: int, seed: int, fps: float = 20.0,
                       codec: str = "MJPG", face_fraction: float = 0.75, wander: float = 4.0):
    """One subject's frames as a video file (MJPG .avi, or mp4v .mp4), the face moving a little inside the frame."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter could not open {path} ({codec})")
    try:
        for image in _placed_frames(video, height, width, seed, face_fraction=face_fraction, wander=wander):
            writer.write(np.ascontiguousarray(image[..., ::-1]))
    finally:
        writer.release()
    return len(video)


def plan_disfa(root: Path, rng: np.random.Generator, size: tuple) -> Plan:
    """DISFA: `ActionUnit_Labels/SN0xx/SN0xx_au<k>.txt` (frame,intensity) and a left-camera video per subject."""
    n_subjects, frames = size
    jobs, videos = [], {}
    for subject in DISFA_SUBJECTS[:n_subjects]:
        video = world.sample_video(rng, fm.sample_identity(rng), frames, other=0.0, max_yaw=15.0)
        # DISFA is filmed in a lab: steady light, no occluders.
        video.look.update(occlusion=0.0, blur=0.0, light_strength=0.1)
        videos[subject] = video
        jobs.append((_render_video_file, (str(root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi"), video,
                                          160, 200, int(rng.integers(2 ** 31)))))

    def finish(results):
        for subject, video in videos.items():
            for au in DISFA_AUS:
                levels = np.clip(np.round(video.intensities[:, AUS.index(au)]), 0, 5).astype(int)
                _lines(root / "ActionUnit_Labels" / subject / f"{subject}_au{au}.txt",
                       (f"{t + 1},{level}" for t, level in enumerate(levels)))
        return {"subjects": len(videos), "frames": int(sum(results))}

    return Plan(jobs, finish)


# ----------------------------------------------------------------------------------------------------- RAF-DB
def _render_raf(original: str, aligned_path: str, identity, intensities, scene: rd.Scene, aligned_size: int = 100):
    image, landmarks = rd.render(identity, intensities / 5, scene)
    _write_jpeg(Path(original), image)
    _write_jpeg(Path(aligned_path), align(image, landmarks68_to_5(landmarks), aligned_size))
    return 1


def plan_rafdb(root: Path, rng: np.random.Generator, size: tuple) -> Plan:
    """RAF-DB basic and compound: `EmoLabel/list_patition_label.txt`, `Image/original/`, `Image/aligned/` (100x100)."""
    n_train, n_test, n_ctrain, n_ctest = size
    basic_p = np.array([0.12, 0.07, 0.1, 0.25, 0.15, 0.1, 0.21])
    jobs, lists = [], {"basic": [], "compound": []}
    for part, counts in (("basic", (n_train, n_test)), ("compound", (n_ctrain, n_ctest))):
        for split, n in zip(("train", "test"), counts):
            digits = 5 if (part, split) == ("basic", "train") else 4  # as the real file names
            for k in range(n):
                identity = fm.sample_identity(rng)
                if part == "basic":
                    code = int(rng.choice(7, p=basic_p)) + 1
                    face = world.sample_face(rng, identity, expression_index(RAF_BASIC[code - 1]))
                else:
                    code = int(rng.integers(11)) + 1
                    face = world.sample_compound_face(rng, identity, COMPOUND_EXPRESSIONS.index(RAF_COMPOUND[code - 1]))
                height, width = (int(v) for v in rng.integers(150, 240, 2))
                scene = world.free_scene(rng, height, width, face_fraction=(0.6, 0.85),
                                         **world.sample_look(rng, 150))
                stem = f"{split}_{k + 1:0{digits}d}"
                lists[part].append(f"{stem}.jpg {code}")
                image_dir = root / part / "Image"
                jobs.append((_render_raf, (str(image_dir / "original" / f"{stem}.jpg"),
                                           str(image_dir / "aligned" / f"{stem}_aligned.jpg"), face.identity,
                                           face.intensities, scene)))

    def finish(results):
        for part, lines in lists.items():
            _lines(root / part / "EmoLabel" / "list_patition_label.txt", lines)
        return {part: {"train": sum(l.startswith("train_") for l in lines),
                       "test": sum(l.startswith("test_") for l in lines)} for part, lines in lists.items()}

    return Plan(jobs, finish)


# ----------------------------------------------------------------------------------------------------- CelebA
def celeba_points() -> np.ndarray:
    """CelebA's mean 5 points in its 218 x 178 aligned images: the template with eyes at y = 111, mouth at y = 152."""
    eyes, mouth = TEMPLATE_112[:2, 1].mean(), TEMPLATE_112[3:, 1].mean()
    scale = (152.0 - 111.0) / (mouth - eyes)
    points = (TEMPLATE_112 - [TEMPLATE_112[:2, 0].mean(), eyes]) * scale + [89.0, 111.0]
    return points.astype(np.float32)


def celeba_face(rng, identity: fm.Identity) -> np.ndarray:
    """FACS intensities [18] of one CelebA photo: about half smile; lips part on their own as often as in CelebA,
    and a few photos catch a blink."""
    expression = int(rng.choice(len(EXPRESSIONS), p=[0.36, 0.04, 0.04, 0.04, 0.42, 0.05, 0.05]))
    intensities = world.sample_face(rng, identity, expression).intensities
    if rng.uniform() < 0.2:  # a closed-mouth smile, or lips parted at rest
        intensities[[AUS.index(25), AUS.index(26)]] = (0.0, 0.0) if expression == 4 else (rng.uniform(2, 4), 0.0)
    blink = rng.uniform(1.5, 3.5) if rng.uniform() < 0.05 else 0.0
    return np.append(intensities, np.float32(blink))


def plan_celeba(root: Path, rng: np.random.Generator, size: tuple) -> Plan:
    """CelebA: `Img/img_align_celeba/000001.jpg` (218 x 178, aligned), `Anno/list_attr_celeba.txt` (count, the 40
    names, `1`/`-1`), `Anno/identity_CelebA.txt`, `Anno/list_landmarks_align_celeba.txt`,
    `Eval/list_eval_partition.txt` (identity-disjoint, in file order)."""
    n_images, per_identity = size
    n_identities = max(3, n_images // per_identity)
    people = [fm.sample_person(rng) for _ in range(n_identities)]
    cut = np.cumsum(np.round(np.array(CELEBA_SPLITS) * n_identities)).astype(int)
    partition_of = np.searchsorted(cut, np.arange(n_identities), side="right").clip(0, 2)
    owners = np.sort(rng.integers(0, n_identities, n_images))  # train identities first, then val, then test ...
    for split in range(3):  # ... shuffled within each split, as CelebA's own order is
        where = np.flatnonzero(partition_of[owners] == split)
        owners[where] = rng.permutation(owners[where])
    points = celeba_points()
    rows, jobs = [], []
    for k, owner in enumerate(owners):
        person = people[owner]
        intensities = celeba_face(rng, person)
        look = world.sample_look(rng, CELEBA_SIZE[1])
        target = points + rng.normal(0, 1.2, (5, 2)).astype(np.float32)
        pose = world.sample_pose(rng, yaw=20.0, pitch=10.0, roll=0.0)
        scene = rd.aligned(person, intensities / 5, CELEBA_SIZE, target, **pose, **look)
        portrait = attributes.Portrait(person, intensities, blur=look["blur"])
        values = attributes.sample(rng, portrait, CELEBA_ATTRIBUTES)
        name = f"{k + 1:06d}.jpg"
        rows.append((name, int(owner) + 1, int(partition_of[owner]), [values[a] for a in CELEBA_ATTRIBUTES]))
        jobs.append((_render_still, (str(root / "Img" / "img_align_celeba" / name), person, intensities, scene, 90)))

    def finish(results):
        _lines(root / "Anno" / "list_attr_celeba.txt",
               [str(len(rows)), " ".join(CELEBA_ATTRIBUTES) + " "]
               + [f"{name} " + " ".join(f"{1 if v else -1:2d}" for v in values) for name, _, _, values in rows])
        _lines(root / "Eval" / "list_eval_partition.txt", (f"{name} {split}" for name, _, split, _ in rows))
        _lines(root / "Anno" / "identity_CelebA.txt", (f"{name} {owner}" for name, owner, _, _ in rows))
        names = " ".join(f"{part}_{axis}" for part in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
                         for axis in "xy")
        _lines(root / "Anno" / "list_landmarks_align_celeba.txt",
               [str(len(rows)), names] + [f"{row[0]} " + " ".join(f"{int(round(v)):4d}" for v in
                                                                   landmarks68_to_5(landmarks).reshape(-1))
                                          for row, landmarks in zip(rows, results)])
        splits = np.bincount([split for _, _, split, _ in rows], minlength=3)
        return {"images": len(rows), "identities": n_identities,
                **{name: int(n) for name, n in zip(("train", "val", "test"), splits)},
                "positives": {a: int(sum(values[j] for *_, values in rows)) for j, a in enumerate(CELEBA_ATTRIBUTES)
                              if a in attributes.TABLE2}}

    return Plan(jobs, finish)


# ----------------------------------------------------------------------------------------------------- BP4D
def _expression_p(mix: dict) -> np.ndarray:
    return np.array([mix.get(name, 0.0) for name in EXPRESSIONS])


def bp4d_intensity_code(intensity: float) -> int:
    """BP4D's 0..5 intensity code (0 absent, 1-5 = FACS A-E) of a FACS intensity 0..5 (present from 2)."""
    if intensity < world.OCCURRENCE:
        return 0
    return int(np.clip(np.ceil((intensity - world.OCCURRENCE) / (5 - world.OCCURRENCE) * 5), 1, 5))


def _render_frame_folder(folder: str, video: world.Video, frames: list, height: int, width: int, seed: int):
    """Frames as numbered JPEGs `folder/<name>` (names given: BP4D's zero padding varies by sequence)."""
    for name, image in zip(frames, _placed_frames(video, height, width, seed, face_fraction=0.6, wander=3.0)):
        _write_jpeg(Path(folder) / name, image)
    return len(frames)


def plan_bp4d(root: Path, rng: np.random.Generator, size: tuple) -> Plan:
    """BP4D-Spontaneous as the FERA 2015 organisers ship it: `AUCoding/<subject>_<task>.csv` (header of AU numbers,
    column 1 the frame, AU k in column k+1, 9 = not coded, last column occlusion), `AU Intensity Codes3.0/AU06/
    F001_T1_AU06.csv` (`frame,intensity`, 9 invalid), frames `BP4D/BP4D-training/<subject>/<task>/<frame>.jpg`."""
    n_subjects, n_tasks, frames = size
    jobs, sequences = [], []
    for subject in BP4D_SUBJECTS[:n_subjects]:
        person = fm.sample_person(rng)
        for task in list(BP4D_TASKS)[:n_tasks]:
            video = world.sample_video(rng, person, frames, expression_p=_expression_p(BP4D_TASKS[task]),
                                       other=0.0, max_yaw=15.0)
            video = world.with_blinks(video, rng, BP4D_FPS)
            video.look.update(occlusion=0.0, blur=0.0, light_strength=0.1)  # a lab: steady light, no occluder
            first = int(rng.integers(1, 900))  # coded segments start anywhere in the task
            padding = int(rng.choice([0, 3, 4]))
            numbers = list(range(first, first + frames))
            missing = {au: _gap(rng, frames, 2, 6) if rng.uniform() < 0.1 else np.zeros(frames, bool)
                       for au in BP4D_CODED}  # short stretches a coder left uncoded (9)
            sequences.append((subject, task, video, numbers, missing))
            jobs.append((_render_frame_folder, (str(root / "BP4D" / "BP4D-training" / subject / task), video,
                                                [f"{n:0{padding}d}.jpg" for n in numbers], 200, 150,
                                                int(rng.integers(2 ** 31)))))

    def finish(results):
        header = ",".join([""] + [str(au) for au in BP4D_COLUMNS] + ["Occlusion"])
        for subject, task, video, numbers, missing in sequences:
            rows = [header]
            for t, number in enumerate(numbers):
                codes = []
                for au in BP4D_COLUMNS:
                    if au not in BP4D_CODED or missing[au][t]:
                        codes.append(9)
                    else:
                        codes.append(int(au in fm.MODEL_AUS and
                                         video.intensities[t, fm.MODEL_AUS.index(au)] >= world.OCCURRENCE))
                rows.append(",".join(map(str, [number, *codes, 0])))
            _lines(root / "AUCoding" / f"{subject}_{task}.csv", rows)
            for au in BP4D_INTENSITY:
                levels = (9 if missing[au][t] else bp4d_intensity_code(video.intensities[t, fm.MODEL_AUS.index(au)])
                          for t in range(len(numbers)))
                _lines(root / "AU Intensity Codes3.0" / f"AU{au:02d}" / f"{subject}_{task}_AU{au:02d}.csv",
                       (f"{number},{level}" for number, level in zip(numbers, levels)))
        return {"subjects": n_subjects, "sequences": len(sequences), "frames": int(sum(results))}

    return Plan(jobs, finish)


# ----------------------------------------------------------------------------------------------------- SEMAINE
def active_runs(active: np.ndarray) -> list[tuple[int, int]]:
    """[(first, last), ...] inclusive frame runs where `active` [T] is True."""
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def eaf_document(tiers: dict[str, list[tuple[int, int]]], media: str, media_end: int) -> bytes:
    """An ELAN 2.7 annotation document: one tier per name, each interval (start ms, end ms) an annotation, and a
    last time slot at `media_end` ms (the organisers' parser ends the recording at the latest time slot)."""
    document = ElementTree.Element("ANNOTATION_DOCUMENT", {
        "AUTHOR": "", "DATE": "2010-01-01T00:00:00+00:00", "FORMAT": "2.7", "VERSION": "2.7",
        "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsi:noNamespaceSchemaLocation": "http://www.mpi.nl/tools/elan/EAFv2.7.xsd"})
    header = ElementTree.SubElement(document, "HEADER", {"MEDIA_FILE": "", "TIME_UNITS": "milliseconds"})
    ElementTree.SubElement(header, "MEDIA_DESCRIPTOR", {"MEDIA_URL": f"file:///{media}", "MIME_TYPE": "video/x-msvideo",
                                                        "RELATIVE_MEDIA_URL": f"./{media}"})
    order = ElementTree.SubElement(document, "TIME_ORDER")  # every time slot first, then the tiers that use them
    slots = annotations = 0
    tier_elements = []
    for name, intervals in tiers.items():
        tier = ElementTree.Element("TIER", {"DEFAULT_LOCALE": "en", "LINGUISTIC_TYPE_REF": "default-lt",
                                            "TIER_ID": name})
        for start, end in intervals:
            refs = []
            for value in (start, end):
                slots += 1
                ElementTree.SubElement(order, "TIME_SLOT", {"TIME_SLOT_ID": f"ts{slots}", "TIME_VALUE": str(value)})
                refs.append(f"ts{slots}")
            annotations += 1
            wrapper = ElementTree.SubElement(tier, "ANNOTATION")
            aligned = ElementTree.SubElement(wrapper, "ALIGNABLE_ANNOTATION", {
                "ANNOTATION_ID": f"a{annotations}", "TIME_SLOT_REF1": refs[0], "TIME_SLOT_REF2": refs[1]})
            ElementTree.SubElement(aligned, "ANNOTATION_VALUE").text = name
        tier_elements.append(tier)
    ElementTree.SubElement(order, "TIME_SLOT", {"TIME_SLOT_ID": f"ts{slots + 1}", "TIME_VALUE": str(media_end)})
    document.extend(tier_elements)
    ElementTree.SubElement(document, "LINGUISTIC_TYPE", {"GRAPHIC_REFERENCES": "false",
                                                         "LINGUISTIC_TYPE_ID": "default-lt", "TIME_ALIGNABLE": "true"})
    ElementTree.SubElement(document, "LOCALE", {"COUNTRY_CODE": "US", "LANGUAGE_CODE": "en"})
    ElementTree.indent(document)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(document, encoding="utf-8") + b"\n"


def semaine_interval(first: int, last: int, rng: np.random.Generator, fps: float = SEMAINE_FPS) -> tuple[int, int]:
    """(start ms, end ms) of an annotation covering frames first..last under the organisers' rule (frames
    floor(t1 fps / 1000) .. floor(t2 fps / 1000)) and under the start-time rule (frame i, starting at 1000 i / fps,
    is active when t1 <= 1000 i / fps < t2): t1 on frame `first`'s start, t2 inside frame `last`. The organisers'
    parser drops an interval starting in frame 0, so a run from frame 0 starts at frame 1 (frame 0 is never
    labelled there anyway)."""
    step = 1000.0 / fps
    start = int(round(max(first, 1) * step))
    end = int(round(last * step)) + int(rng.integers(1, int(step)))
    return start, end


def plan_semaine(root: Path, rng: np.random.Generator, size: tuple) -> Plan:
    """SEMAINE as the FERA 2015 organisers ship it: `SEMAINE-Sessions/<rec>/<session>.eaf` (ELAN, tiers AU2, AU12,
    AU17, AU25, AU28, AU45, intervals in ms) with the user's video `<session>_User.avi` (50 fps), and
    `SEMAINE-Sessions/<rec>.txt` (`start end`: labels are used for frames start .. end-1) beside the folder."""
    n_sessions, frames = size
    recordings = [r for pair in zip(SEMAINE_TRAIN, SEMAINE_DEVEL) for r in pair][:n_sessions]
    sessions = root / "SEMAINE-Sessions"
    jobs, written = [], []
    for k, rec in enumerate(recordings):
        person = fm.sample_person(rng)
        video = world.sample_video(rng, person, frames, expression_p=_expression_p(SEMAINE_MOODS[k % 4]),
                                   other=0.1, max_yaw=20.0)
        video = world.with_blinks(video, rng, SEMAINE_FPS)
        video.look.update(occlusion=0.0, light_strength=0.1)
        hour, minute, second = (int(v) for v in rng.integers((9, 0, 0), (18, 60, 60)))
        stamp = f"2009.{1 + k // 28:02d}.{1 + k % 28:02d}.{hour:02d}.{minute:02d}.{second:02d}"  # SEMAINE's names
        frame_range = (int(rng.integers(2, 8)), frames - int(rng.integers(0, 6)))
        tiers = {}
        for au in SEMAINE_AUS:
            if au in fm.MODEL_AUS:
                active = video.intensities[:, fm.MODEL_AUS.index(au)] >= world.OCCURRENCE
                tiers[f"AU{au}"] = [semaine_interval(a, b, rng) for a, b in active_runs(active)]
            else:  # AU28 (lip suck): the face model never shows it, the tier stays empty
                tiers[f"AU{au}"] = []
        written.append((rec, stamp, frame_range, tiers))
        jobs.append((_render_video_file, (str(sessions / rec / f"{stamp}_User.avi"), video, 144, 192,
                                          int(rng.integers(2 ** 31)), SEMAINE_FPS, "MJPG")))

    def finish(results):
        for rec, stamp, (start, end), tiers in written:
            (sessions / rec).mkdir(parents=True, exist_ok=True)
            (sessions / rec / f"{stamp}.eaf").write_bytes(eaf_document(tiers, f"{stamp}_User.avi",
                                                                       int(round(frames * 1000 / SEMAINE_FPS))))
            _lines(sessions / f"{rec}.txt", [f"{start} {end}"])
        return {"sessions": len(written), "frames": int(sum(results)),
                "blinks": sum(len(tiers["AU45"]) for *_, tiers in written)}

    return Plan(jobs, finish)


# ----------------------------------------------------------------------------------------------------- Aff-Wild
def plan_affwild(root: Path, rng: np.random.Generator, size: tuple) -> Plan:
    """Aff-Wild (v1): `videos/{train,test}/<video>.mp4|.avi` in the wild (the face moves, turns and changes size)
    and `annotations/train/{valence,arousal}/<video>.txt` (one value in [-1, 1] per frame, line i = frame i)."""
    n_train, n_test, frames = size
    names = [str(v) for v in rng.choice(np.arange(100, 400), n_train + n_test, replace=False)]
    jobs, labels = [], {}
    for k, name in enumerate(names):
        split = "train" if k < n_train else "test"
        length = frames + int(rng.integers(-frames // 5, frames // 5 + 1))
        video = world.sample_video(rng, fm.sample_person(rng), length, max_yaw=35.0)
        video = world.with_blinks(video, rng, AFFWILD_FPS)
        suffix, codec = (".mp4", "mp4v") if k % 2 else (".avi", "MJPG")
        height, width = (160, 240) if rng.uniform() < 0.7 else (180, 180)
        if split == "train":
            labels[name] = video.va[:length - (2 if k == 0 else 0)]  # one video's labels stop 2 frames early
        # In the wild: the face wanders further and fills less of the picture than in a lab.
        jobs.append((_render_video_file, (str(root / "videos" / split / f"{name}{suffix}"), video, height, width,
                                          int(rng.integers(2 ** 31)), AFFWILD_FPS, codec,
                                          float(rng.uniform(0.45, 0.7)), 10.0)))

    def finish(results):
        for name, va in labels.items():
            for j, dimension in enumerate(("valence", "arousal")):
                _lines(root / "annotations" / "train" / dimension / f"{name}.txt", (f"{v:.4f}" for v in va[:, j]))
        return {"train_videos": n_train, "test_videos": n_test, "frames": int(sum(results)),
                "frames_labelled": int(sum(len(va) for va in labels.values()))}

    return Plan(jobs, finish)


PLANNERS = {"affectnet": plan_affectnet, "affwild2": plan_affwild2, "disfa": plan_disfa, "rafdb": plan_rafdb,
            "celeba": plan_celeba, "bp4d": plan_bp4d, "semaine": plan_semaine, "affwild": plan_affwild}
