"""The contact sheet: one row per expression (several people), one row per AU at rising intensity (the canonical 17
and AU45), and one row per CelebA attribute of FATAUVA-Net's Table 2 (faces without it, then with it)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fbnet_tf.demo import attributes
from fbnet_tf.demo import face_model as fm
from fbnet_tf.demo import render as rd
from fbnet_tf.demo import world
from fbnet_tf.face import template
from fbnet_tf.labels import AUS, EXPRESSIONS

FACS_NAMES = {1: "inner brow raiser", 2: "outer brow raiser", 4: "brow lowerer", 5: "upper lid raiser",
              6: "cheek raiser", 7: "lid tightener", 9: "nose wrinkler", 10: "upper lip raiser",
              12: "lip corner puller", 14: "dimpler", 15: "lip corner depressor", 17: "chin raiser",
              20: "lip stretcher", 23: "lip tightener", 24: "lip pressor", 25: "lips part", 26: "jaw drop",
              45: "blink"}
_LABEL_W = 124
_INK = (30, 30, 30)


def _portrait(identity: fm.Identity, intensities: np.ndarray, tile: int, yaw: float = 0.0, seed: int = 0):
    """A frontal, evenly lit, aligned face on a plain backdrop (so the sheet shows the face, not the scene)."""
    face = world.Face(identity, intensities, -1, np.zeros(2, np.float32))
    target = template(tile) * 0.9 + tile * 0.05  # a little more margin than a training crop
    scene = rd.aligned(face.identity, intensities / 5, tile, target, yaw=yaw, background=1, seed=seed,
                       light_strength=0.08)
    image, _ = rd.render(identity, intensities / 5, scene)
    return image


def _label(width: int, height: int, lines: list[str]) -> np.ndarray:
    """A white label: a title line, then the rest wrapped at `width`."""
    panel = np.full((height, width, 3), 255, np.uint8)
    title, words = lines[0], " ".join(lines[1:]).split()
    wrapped, current = [], ""
    for word in words:
        candidate = f"{current} {word}".strip()
        if cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, 0.36, 1)[0][0] > width - 8 and current:
            wrapped.append(current)
            candidate = word
        current = candidate
    wrapped += [current] if current else []
    top = height // 2 - 8 * len(wrapped)
    cv2.putText(panel, title, (5, top), cv2.FONT_HERSHEY_SIMPLEX, 0.42, _INK, 1, cv2.LINE_AA)
    for k, text in enumerate(wrapped):
        cv2.putText(panel, text, (5, top + 16 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.36, _INK, 1, cv2.LINE_AA)
    return panel


def expression_rows(tile: int, people: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One row per expression, `people` faces each (AUs drawn from the Du et al. table), plus two compounds."""
    basic, compound = world.tables()
    identities = [fm.sample_identity(rng) for _ in range(people)]
    rows = []
    for index, name in enumerate(EXPRESSIONS):
        tiles = [_portrait(identity, world.sample_face(rng, identity, index).intensities, tile,
                           yaw=(-12, 0, 12)[k % 3], seed=k) for k, identity in enumerate(identities)]
        active = [f"AU{a}" for a, w in zip(AUS, basic.prototypical[index]) if w > 0]
        rows.append(np.concatenate([_label(_LABEL_W, tile, [name, " ".join(active) or "no AU"])] + tiles, axis=1))
    for name in ("Happily Surprised", "Sadly Angry"):
        row = compound.rows.index(name)
        tiles = [_portrait(identity, world.sample_compound_face(rng, identity, row).intensities, tile, seed=k)
                 for k, identity in enumerate(identities)]
        active = [f"AU{a}" for a, w in zip(AUS, compound.prototypical[row]) if w > 0]
        rows.append(np.concatenate([_label(_LABEL_W, tile, [name, " ".join(active)])] + tiles, axis=1))
    return rows


def au_rows(tile: int, levels=(0, 1.25, 2.5, 3.75, 5)) -> list[np.ndarray]:
    """One row per AU the face model shows: the mean face with that AU alone at rising FACS intensity (0 to 5)."""
    identity = fm.Identity(hairline=0.05)
    rows = []
    for index, au in enumerate(fm.MODEL_AUS):
        tiles = []
        for level in levels:
            intensities = np.zeros(len(fm.MODEL_AUS), np.float32)
            intensities[index] = level
            tiles.append(_portrait(identity, intensities, tile))
        rows.append(np.concatenate([_label(_LABEL_W, tile, [f"AU{au}", FACS_NAMES[au]])] + tiles, axis=1))
    return rows


def attribute_rows(tile: int, rng: np.random.Generator, without: int = 2, with_: int = 3) -> list[np.ndarray]:
    """One row per attribute of Table 2: CelebA-like people (`writers.celeba_face`) whose label, by the rules the
    CelebA release writes, is -1 (`without` faces) and then 1 (`with_` faces)."""
    from fbnet_tf.demo.writers import celeba_face

    rows = []
    for name in attributes.TABLE2:
        tiles = []
        for wanted, count in ((False, without), (True, with_)):
            found = 0
            for _ in range(2000):
                person = fm.sample_person(rng)
                intensities = celeba_face(rng, person)
                if attributes.RULES[name](attributes.Portrait(person, intensities)) == wanted:
                    tiles.append(_portrait(person, intensities, tile, seed=found))
                    found += 1
                    if found == count:
                        break
            tiles += [np.full((tile, tile, 3), 255, np.uint8)] * (count - found)
        title, rest = name.replace("_", " "), ""
        if cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)[0][0] > _LABEL_W - 8:
            title, rest = title.rsplit(" ", 1)
        label = _label(_LABEL_W, tile, [title, f"{rest}," if rest else "", f"{without} without, {with_} with"])
        rows.append(np.concatenate([label] + tiles, axis=1))
    return rows


def _panel(title: str, rows: list[np.ndarray], height: int) -> np.ndarray:
    body = np.concatenate(rows, axis=0)
    body = np.pad(body, ((0, height - body.shape[0]), (0, 12), (0, 0)), constant_values=255)
    header = np.full((26, body.shape[1], 3), 255, np.uint8)
    cv2.putText(header, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _INK, 1, cv2.LINE_AA)
    return np.concatenate([header, body], axis=0)


def contact_sheet(path, *, seed: int = 0, tile: int = 80) -> Path:
    """Draw and save the sheet (PNG): expressions (5 people each), the 17 AUs and AU45 at rising intensity, and
    the 10 CelebA attributes of FATAUVA-Net's Table 2."""
    rng = np.random.default_rng(seed)
    expressions, aus = expression_rows(tile, 5, rng), au_rows(tile)
    traits = attribute_rows(tile, np.random.default_rng([seed, 1]))
    half = (len(aus) + 1) // 2
    height = tile * max(len(expressions), half, len(traits))
    sheet = np.concatenate([_panel("expressions (Du et al. 2014 AUs), 5 people", expressions, height),
                            _panel("single AUs, FACS intensity 0 -> 5", aus[:half], height),
                            _panel("single AUs, FACS intensity 0 -> 5", aus[half:], height),
                            _panel("CelebA attributes (FATAUVA-Net Table 2)", traits, height)], axis=1)
    sheet = (sheet & 0xFC) + 2  # 6 bits a channel: invisible to the eye, and a much smaller PNG
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(sheet[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
