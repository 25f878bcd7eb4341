"""Write the demo world as the databases ship: one planner per database layout (shared/reference/datasets.md).

Each `plan_<database>(root, rng, size)` samples everything about its database in the calling process (so the
result depends on the seed only, never on the number of workers) and returns `Plan(jobs, finish)`: `jobs` are
picklable (function, args) pairs that render and write images or videos; `finish(results)` writes the annotation
files once every job is done, from the jobs' results in job order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fbnet_tf.demo import face_model as fm
from fbnet_tf.demo import render as rd
from fbnet_tf.demo import world
from fbnet_tf.face import align, landmarks68_to_5, template
from fbnet_tf.labels import ABAW2022_AUS, AUS, COMPOUND_EXPRESSIONS, expression_index

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

# How many of each thing a scale renders ("tiny" is for tests).
SCALES = {
    "tiny": dict(affectnet=(24, 2, 1), affwild2=(3, 20), disfa=(2, 12), rafdb=(10, 4, 6, 3)),
    "small": dict(affectnet=(1000, 25, 5), affwild2=(14, 90), disfa=(4, 150), rafdb=(480, 120, 240, 60)),
    "medium": dict(affectnet=(5000, 100, 20), affwild2=(30, 200), disfa=(8, 200), rafdb=(2400, 600, 800, 200)),
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
def _render_video_file(path: str, video: world.Video, height: int, width: int, seed: int, fps: float = 20.0):
    """One subject's frames as an MJPG .avi, the face moving a little inside the frame."""
    rng = np.random.default_rng(seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter could not open {path} (MJPG)")
    drift = world.smooth(rng.normal(0, 4.0, (len(video), 2)), 6.0)
    face_px = 0.75 * height
    try:
        for t in range(len(video)):
            yaw, pitch, roll = video.pose[t]
            scene = rd.placed(height, width, centre=(width / 2 + drift[t, 0], height * 0.52 + drift[t, 1]),
                              face_px=face_px, yaw=float(yaw), pitch=float(pitch), roll=float(roll),
                              **dict(video.look, seed=int(video.look["seed"])))
            image, _ = rd.render(video.identity, video.intensities[t] / 5, scene)
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


PLANNERS = {"affectnet": plan_affectnet, "affwild2": plan_affwild2, "disfa": plan_disfa, "rafdb": plan_rafdb}
