"""Drawing predictions onto a frame: a box, the face id and the top expression per face, its AU probabilities as
bars, and every face's valence/arousal as a point on a circumplex inset (Russell's circle: valence right, arousal
up)."""
from __future__ import annotations

import math
import re

import cv2
import numpy as np

from fbnet_tf.labels import AU_NAMES

_AU_COLUMN = re.compile(r"AU\d+")

# One colour per expression (RGB), so a face's box and its point on the circumplex match.
EXPRESSION_COLOURS = {
    "Neutral": (200, 200, 200), "Anger": (230, 40, 40), "Disgust": (120, 170, 40), "Fear": (150, 80, 200),
    "Happiness": (250, 200, 30), "Sadness": (50, 110, 230), "Surprise": (250, 130, 200), "": (255, 255, 255),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def annotate(image_rgb: np.ndarray, rows: list[dict]) -> np.ndarray:
    """A copy of `image_rgb` with every face of `rows` (the columns of `fbnet_tf.predict.COLUMNS`) drawn on it."""
    image = np.ascontiguousarray(image_rgb, np.uint8).copy()
    scale = max(image.shape[:2]) / 640.0
    for row in rows:
        _draw_face(image, row, scale)
    if rows:
        _draw_circumplex(image, rows, scale)
    return image


def _draw_face(image, row, scale):
    """The box in the top expression's colour, labelled with the face's id (`#3`) and top expression (a compound
    model's top compound class)."""
    x, y, w, h = (int(round(row[k])) for k in ("x", "y", "w", "h"))
    top = row.get("top_expression") or row.get("top_compound") or ""
    colour = EXPRESSION_COLOURS.get(top, (255, 255, 255))
    thickness = max(1, int(round(2 * scale)))
    cv2.rectangle(image, (x, y), (x + w, y + h), colour, thickness)
    face_id = row.get("face_id")
    label = " ".join(([f"#{int(face_id)}"] if face_id is not None and face_id == face_id else [])  # NaN: no id
                     + ([f"{top} {row[top]:.2f}"] if top else []))
    if label:
        font_scale = 0.5 * scale
        (text_w, text_h), _ = cv2.getTextSize(label, FONT, font_scale, thickness)
        ty = max(y - 4, text_h + 4)
        cv2.rectangle(image, (x, ty - text_h - 4), (x + text_w + 4, ty + 2), colour, -1)
        cv2.putText(image, label, (x + 2, ty - 1), FONT, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
    _draw_au_bars(image, row, (x, y, w, h), scale)


def _draw_au_bars(image, row, box, scale):
    """One horizontal bar per AU column of the row (the model's own AU list; the canonical 17 when it has none)
    beside the box (right side, or left when there is no room), length = probability."""
    names = [key for key in row if _AU_COLUMN.fullmatch(str(key))] or list(AU_NAMES)
    probabilities = [row.get(name, math.nan) for name in names]
    if all(math.isnan(p) for p in probabilities):
        return
    x, y, w, h = box
    bar_h = max(int(round(10 * scale)), 8, int(round(h / len(names))))  # readable labels even on small boxes
    font_scale = bar_h / 28.0
    label_w = cv2.getTextSize("AU26", FONT, font_scale, 1)[0][0] + 4
    bar_w = int(50 * scale) + 10
    left = x + w + 4 if x + w + 4 + label_w + bar_w < image.shape[1] else max(0, x - 4 - label_w - bar_w)
    bottom = min(image.shape[0], y + len(names) * bar_h)
    panel = image[max(0, y):bottom, left:left + label_w + bar_w]
    panel[:] = (panel * 0.35).astype(np.uint8)  # dark backing so the labels read on any background
    for i, (name, p) in enumerate(zip(names, probabilities)):
        top = y + i * bar_h
        if top + bar_h > image.shape[0]:
            break
        cv2.putText(image, name, (left, top + bar_h - 1), FONT, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
        start = left + label_w
        cv2.rectangle(image, (start, top + 1), (start + bar_w, top + bar_h - 1), (60, 60, 60), -1)
        if not math.isnan(p):
            cv2.rectangle(image, (start, top + 1), (start + int(round(p * bar_w)), top + bar_h - 1),
                          (80, 220, 120) if p >= 0.5 else (200, 200, 80), -1)


def _draw_circumplex(image, rows, scale):
    """Inset in the top-left corner: unit circle, valence/arousal axes, one dot per face (its box colour)."""
    radius = max(20, int(60 * scale))
    margin = int(8 * scale) + 2
    cx, cy = margin + radius, margin + radius
    inset = image[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
    inset[:] = (inset * 0.4).astype(np.uint8)  # darken for contrast
    cv2.circle(image, (cx, cy), radius, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.line(image, (cx - radius, cy), (cx + radius, cy), (160, 160, 160), 1)
    cv2.line(image, (cx, cy - radius), (cx, cy + radius), (160, 160, 160), 1)
    font_scale = 0.35 * max(scale, 0.8)
    cv2.putText(image, "V", (cx + radius - 10, cy - 3), FONT, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(image, "A", (cx + 3, cy - radius + 10), FONT, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    for row in rows:
        valence, arousal = row.get("valence", math.nan), row.get("arousal", math.nan)
        if math.isnan(valence) or math.isnan(arousal):
            continue
        point = (int(round(cx + valence * radius)), int(round(cy - arousal * radius)))
        cv2.circle(image, point, max(3, int(4 * scale)), EXPRESSION_COLOURS.get(row.get("top_expression", ""),
                                                                              (255, 255, 255)), -1, cv2.LINE_AA)

