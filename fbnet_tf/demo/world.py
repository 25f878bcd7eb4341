"""What the demo world contains: people, the AUs their expressions activate, valence/arousal, scenes and videos.

Expressions activate AUs by Du et al.'s table (`relatedness.load("du2014")`): prototypical AUs always,
observational ones with their probability w, and any other AU rarely (spurious activations). An active AU has
intensity 2..5 on the FACS scale, an inactive one 0..1, so "occurrence = intensity >= 2" (DISFA's convention)
recovers exactly what was drawn. Intensities are handed to the renderer divided by 5. Videos of the FATAUVA-Net
releases also blink: `with_blinks` appends AU45 (`face_model.MODEL_AUS`), brief and frequent as in conversation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from fbnet_tf import relatedness
from fbnet_tf.demo import face_model as fm
from fbnet_tf.demo import render as rd
from fbnet_tf.face import template
from fbnet_tf.labels import AUS, EXPRESSIONS

OCCURRENCE = 2.0  # FACS intensity from which an AU counts as present
SPURIOUS = 0.03  # chance that an AU unrelated to the expression fires anyway

# Where each expression sits on the valence/arousal circumplex (Russell 1980, as annotators place them).
CIRCUMPLEX = {"Neutral": (0.0, 0.0), "Anger": (-0.5, 0.6), "Disgust": (-0.6, 0.3), "Fear": (-0.55, 0.7),
              "Happiness": (0.7, 0.35), "Sadness": (-0.6, -0.35), "Surprise": (0.25, 0.7)}
# How single AUs push valence and arousal beyond the expression's place (per unit of intensity / 5).
_VA_FROM_AU = {12: (0.15, 0.05), 6: (0.08, 0.03), 15: (-0.12, -0.05), 4: (-0.08, 0.04), 9: (-0.06, 0.02),
               5: (0.0, 0.12), 26: (0.0, 0.1), 25: (0.0, 0.05), 1: (-0.03, 0.04), 20: (-0.05, 0.08)}


@lru_cache(maxsize=1)
def tables() -> tuple[relatedness.RelatednessTable, relatedness.RelatednessTable]:
    """(basic, compound) relatedness tables the world is drawn from (read once per process)."""
    return relatedness.load("du2014"), relatedness.load("du2014_compound")


def sample_intensities(rng: np.random.Generator, weights: np.ndarray, *, spurious: float = SPURIOUS) -> np.ndarray:
    """FACS intensities [17] (0..5) for one face whose AU probabilities are the table row `weights` [17]."""
    weights = np.asarray(weights, np.float32)
    p = np.where(weights > 0, weights, spurious)
    active = rng.uniform(size=len(AUS)) < p
    level = np.where(active, rng.uniform(OCCURRENCE, 5.0, len(AUS)),
                     rng.uniform(0, 1.0, len(AUS)) * (rng.uniform(size=len(AUS)) < 0.3))
    return level.astype(np.float32)


def valence_arousal(rng: np.random.Generator, expressions, intensities: np.ndarray, noise: float = 0.07):
    """(valence, arousal) of a face: the mean circumplex place of `expressions` (names), scaled by how strongly
    the face shows them, plus AU-driven variation and annotator noise; clipped to [-1, 1]."""
    place = np.mean([CIRCUMPLEX[e] for e in expressions], axis=0)
    strength = 0.5 + 0.5 * float(np.clip(intensities[intensities >= OCCURRENCE].mean() / 5, 0, 1)
                                 if (intensities >= OCCURRENCE).any() else 0.0)
    va = place * strength
    for au, (dv, da) in _VA_FROM_AU.items():
        va = va + np.array([dv, da]) * intensities[AUS.index(au)] / 5
    return np.clip(va + rng.normal(0, noise, 2), -1, 1).astype(np.float32)


@dataclass(frozen=True)
class Face:
    """One rendered face's ground truth: who, which AUs how strongly (0..5), which expression, where in VA."""

    identity: fm.Identity
    intensities: np.ndarray  # [17] FACS 0..5
    expression: int  # canonical index, -1 for none (e.g. a compound or "other")
    va: np.ndarray  # [2]
    compound: int = -1  # index into the compound table rows, or -1

    @property
    def au(self) -> np.ndarray:
        """Occurrence 0/1 [17]."""
        return (self.intensities >= OCCURRENCE).astype(np.int64)


def sample_face(rng: np.random.Generator, identity: fm.Identity, expression: int, *, spurious=SPURIOUS) -> Face:
    """A face showing canonical `expression` (0..6)."""
    basic, _ = tables()
    intensities = sample_intensities(rng, basic.weights[expression], spurious=spurious)
    va = valence_arousal(rng, [EXPRESSIONS[expression]], intensities)
    return Face(identity, intensities, expression, va)


def sample_compound_face(rng: np.random.Generator, identity: fm.Identity, compound: int) -> Face:
    """A face showing compound category `compound` (row of the Du et al. compound table)."""
    _, table = tables()
    intensities = sample_intensities(rng, table.weights[compound])
    first, second = table.components[compound]
    va = valence_arousal(rng, [EXPRESSIONS[first], EXPRESSIONS[second]], intensities)
    return Face(identity, intensities, -1, va, compound)


def sample_look(rng: np.random.Generator, size: int) -> dict:
    """Lighting, colour cast, blur, noise, gaze and occasional occlusion for a picture about `size` px wide."""
    return dict(light_angle=float(rng.uniform(0, 2 * np.pi)), light_strength=float(rng.uniform(0.05, 0.3)),
                brightness=float(rng.uniform(0.75, 1.15)), tint=tuple(float(t) for t in rng.normal(1, 0.05, 3)),
                blur=float(rng.uniform(0.3, 1.2) * size / 112 if rng.uniform() < 0.5 else 0.0),
                noise=float(rng.uniform(0, 0.03)), gaze=tuple(float(g) for g in np.clip(rng.normal(0, 0.3, 2), -1, 1)),
                occlusion=float(rng.uniform(0.1, 0.5) if rng.uniform() < 0.05 else 0.0),
                seed=int(rng.integers(2 ** 31)))


def sample_pose(rng: np.random.Generator, yaw=30.0, pitch=15.0, roll=15.0) -> dict:
    return dict(yaw=float(rng.uniform(-yaw, yaw)), pitch=float(rng.uniform(-pitch, pitch)),
                roll=float(rng.uniform(-roll, roll)))


def free_scene(rng: np.random.Generator, height: int, width: int, *, face_fraction=(0.45, 0.8), **look) -> rd.Scene:
    """A face somewhere in a height x width picture, turned and tilted: the builder must find and align it."""
    face_px = float(rng.uniform(*face_fraction) * min(height, width))
    margin = face_px * 0.45
    centre = (float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, height - margin)))
    return rd.placed(height, width, centre=centre, face_px=face_px, **sample_pose(rng), **look)


def aligned_scene(rng: np.random.Generator, face: Face, size: int, *, jitter: float = 0.015, **look) -> rd.Scene:
    """A size x size crop aligned to the 5-point template (as a detector + similarity transform would make it)."""
    target = template(size) + rng.normal(0, jitter * size, (5, 2)).astype(np.float32)
    pose = sample_pose(rng, yaw=25.0, pitch=12.0, roll=0.0)
    return rd.aligned(face.identity, face.intensities / 5, size, target, **pose, **look)


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (time), edges padded by repetition."""
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(values[:1], radius, 0), values, np.repeat(values[-1:], radius, 0)])
    return np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(values.shape[1])], axis=1)


@dataclass(frozen=True)
class Video:
    """A person's clip: per-frame expression (the segment's, also while AUs glide into it), FACS intensities
    [T, 17], VA [T, 2] and head pose [T, 3] (yaw, pitch, roll), all varying smoothly."""

    identity: fm.Identity
    expression: np.ndarray  # [T] canonical index, 7 = "other"
    intensities: np.ndarray  # [T, 17]
    va: np.ndarray  # [T, 2]
    pose: np.ndarray  # [T, 3]
    look: dict

    def __len__(self) -> int:
        return len(self.expression)


def sample_video(rng: np.random.Generator, identity: fm.Identity, frames: int, *, other: float = 0.05,
                 expression_p=None, max_yaw: float = 25.0) -> Video:
    """Segments of 8-30 frames, each an expression (or "other" = 7 with probability `other`); AUs and VA glide
    between segments (Gaussian smoothing over ~3 frames), the head wanders slowly."""
    basic, _ = tables()
    p = np.asarray(expression_p if expression_p is not None else [0.25, 0.12, 0.1, 0.1, 0.19, 0.12, 0.12])
    labels, targets, places = [], [], []
    while len(labels) < frames:
        length = int(rng.integers(8, 31))
        if rng.uniform() < other:
            expression, row = 7, (rng.uniform(size=len(AUS)) < 0.15) * rng.uniform(0.3, 1, len(AUS))
            place = rng.uniform(-0.4, 0.4, 2)
        else:
            expression = int(rng.choice(7, p=p / p.sum()))
            row, place = basic.weights[expression], np.array(CIRCUMPLEX[EXPRESSIONS[expression]])
        level = sample_intensities(rng, row)
        labels += [expression] * length
        targets.append(np.repeat(level[None], length, 0))
        places.append(np.repeat(place[None] * (0.5 + 0.5 * rng.uniform()), length, 0))
    intensities = np.clip(smooth(np.concatenate(targets)[:frames], 2.5), 0, 5).astype(np.float32)
    va = smooth(np.concatenate(places)[:frames], 4.0)
    for au, (dv, da) in _VA_FROM_AU.items():
        va = va + np.outer(intensities[:, AUS.index(au)] / 5, [dv, da])
    va = np.clip(va + smooth(rng.normal(0, 0.12, (frames, 2)), 2.0), -1, 1).astype(np.float32)
    t = np.arange(frames)[:, None]
    phases, periods = rng.uniform(0, 2 * np.pi, 3), rng.uniform(40, 120, 3)
    amplitude = np.array([max_yaw, 10.0, 8.0]) * rng.uniform(0.3, 1.0, 3)
    pose = (amplitude * np.sin(2 * np.pi * t / periods + phases)).astype(np.float32)
    look = sample_look(rng, 112)
    return Video(identity, np.array(labels[:frames], np.int64), intensities, va, pose, look)


def sample_blinks(rng: np.random.Generator, frames: int, fps: float, per_minute=(15.0, 35.0)) -> np.ndarray:
    """AU45 intensity [frames] (FACS 0..5) of a person blinking `per_minute` times a minute (conversation raises
    the resting rate of ~17/min): each blink shuts the lids in 60-100 ms, holds 20-60 ms and reopens in 100-200 ms,
    so at 50 fps it is present (intensity >= 2) for about 5-10 frames."""
    rate = rng.uniform(*per_minute) / 60.0 / fps  # blinks per frame
    level = np.zeros(frames, np.float32)
    t = rng.exponential(1 / rate) * rng.uniform()
    while t < frames:
        close, hold, reopen = (max(1.0, d * fps) for d in (rng.uniform(0.06, 0.1), rng.uniform(0.02, 0.06),
                                                           rng.uniform(0.1, 0.2)))
        times = np.arange(frames) - t  # shut from 0 to `hold`
        profile = np.clip(np.minimum((times + close) / close, (hold + reopen - times) / reopen), 0, 1)
        level = np.maximum(level, 5.0 * profile)
        t += close + hold + reopen + rng.exponential(1 / rate)
    return level


def with_blinks(video: Video, rng: np.random.Generator, fps: float) -> Video:
    """The video with AU45 (blinks at `fps`) appended: intensities [T, 18] over `face_model.MODEL_AUS`."""
    blinks = sample_blinks(rng, len(video), fps)
    return replace(video, intensities=np.concatenate([video.intensities, blinks[:, None]], axis=1))
