"""Each tracked face's outputs as a time series: optional smoothing over its frames, and the per-face summary.

Both work on `fbnet_tf.predict` rows as they stream past (one state per file and `face_id`, none per frame), so
memory grows with the number of faces seen, never with the length of a video.
"""
from __future__ import annotations

import re

import numpy as np

SMOOTHING_COLUMN = "smoothing"  # present (in every row, e.g. "ema:0.3") only when smoothing is on
_SPEC = re.compile(r"(window):(\d+)|(ema):([0-9.]+)")


class Smoother:
    """Causal smoothing of each face's output columns over its own frames (frames where it was not seen do not
    count): `window:N`, the mean of its last N values; `ema:ALPHA`, s = ALPHA * x + (1 - ALPHA) * s_previous,
    starting at the first value. Each arg-max column of `tops` (e.g. {"top_expression": the 7 expression names}) is
    recomputed from the smoothed probabilities."""

    def __init__(self, spec: str, columns: list[str], tops: dict[str, list[str]]):
        self.spec = spec
        self.kind, self.size = parse(spec)
        self.columns, self.tops = list(columns), {top: list(names) for top, names in tops.items() if names}
        self._state: dict[tuple, object] = {}

    def __call__(self, row: dict) -> dict:
        key = (row["file"], row["face_id"])
        values = np.array([row[c] for c in self.columns], np.float64)
        if self.kind == "window":
            history = self._state.setdefault(key, [])
            history.append(values)
            del history[:-int(self.size)]
            smoothed = np.mean(history, axis=0)
        else:
            previous = self._state.get(key)
            smoothed = values if previous is None else self.size * values + (1 - self.size) * previous
            self._state[key] = smoothed
        row = dict(row, **dict(zip(self.columns, smoothed.tolist())), **{SMOOTHING_COLUMN: self.spec})
        for top, names in self.tops.items():
            if top in row:
                row[top] = max(names, key=lambda name: row[name])
        return row


def parse(spec: str) -> tuple[str, float]:
    """`window:N` (N >= 1) -> ("window", N); `ema:ALPHA` (0 < ALPHA <= 1) -> ("ema", ALPHA); else ValueError."""
    match = _SPEC.fullmatch(spec.strip())
    if match and match.group(1) and int(match.group(2)) >= 1:
        return "window", int(match.group(2))
    if match and match.group(3):
        alpha = float(match.group(4))
        if 0 < alpha <= 1:
            return "ema", alpha
    raise ValueError(f"smoothing {spec!r}: expected window:N (N >= 1 frames) or ema:ALPHA (0 < ALPHA <= 1)")


class Summary:
    """One row per file and `face_id`: `frames`, `first_frame`, `last_frame`, `mean_<v>` for each valence/arousal
    column, `<Expression>_share` (the share of its frames with that top expression) and `<AU>_rate` (the share of
    its frames with that AU's probability >= 0.5). Fed rows in any order."""

    AU_THRESHOLD = 0.5

    def __init__(self, labels: dict[str, list[str]], smoothing: str = ""):
        self.va = list(labels.get("valence_arousal", []))
        self.expressions = list(labels.get("expression", []))
        self.aus = list(labels.get("action_units", []))
        self.smoothing = smoothing
        self._faces: dict[tuple, dict] = {}

    @property
    def columns(self) -> list[str]:
        return (["file", "face_id", "frames", "first_frame", "last_frame"] + [f"mean_{v}" for v in self.va]
                + [f"{e}_share" for e in self.expressions] + [f"{au}_rate" for au in self.aus]
                + ([SMOOTHING_COLUMN] if self.smoothing else []))

    def add(self, row: dict):
        key = (row["file"], row["face_id"])
        face = self._faces.get(key)
        if face is None:
            face = self._faces[key] = {"frames": 0, "first_frame": row["frame"], "last_frame": row["frame"],
                                       "va": np.zeros(len(self.va)), "top": dict.fromkeys(self.expressions, 0),
                                       "aus": np.zeros(len(self.aus))}
        face["frames"] += 1
        face["first_frame"] = min(face["first_frame"], row["frame"])
        face["last_frame"] = max(face["last_frame"], row["frame"])
        face["va"] += [row[v] for v in self.va]
        if row.get("top_expression") in face["top"]:
            face["top"][row["top_expression"]] += 1
        face["aus"] += [row[au] >= self.AU_THRESHOLD for au in self.aus]

    def rows(self) -> list[dict]:
        """The summary rows, by file then face_id."""
        rows = []
        for (file, face_id), face in sorted(self._faces.items()):
            n = face["frames"]
            row = {"file": file, "face_id": face_id, "frames": n, "first_frame": face["first_frame"],
                   "last_frame": face["last_frame"]}
            row.update({f"mean_{v}": value / n for v, value in zip(self.va, face["va"])})
            row.update({f"{e}_share": count / n for e, count in face["top"].items()})
            row.update({f"{au}_rate": count / n for au, count in zip(self.aus, face["aus"])})
            if self.smoothing:
                row[SMOOTHING_COLUMN] = self.smoothing
            rows.append(row)
        return rows
