"""The canonical label spaces every builder maps into and every model predicts.

The orders are the project's contract (shared/reference/relatedness.md); nothing else in the code base may spell
them out. Databases name their labels differently ("happy", "Happiness", "AU 12", "'AU 12'", 12); the helpers here
map those names onto the canonical indices by name, never by position.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

# 7 basic expressions, the Aff-Wild2/ABAW order.
EXPRESSIONS: tuple[str, ...] = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")

# 17 action units: the union of the AU sets of the AU databases the paper trains on.
AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)
AU_NAMES: tuple[str, ...] = tuple(f"AU{n}" for n in AUS)
# The 8 AUs the ABAW 2020 challenge scores and the 12 the ABAW 2022+ challenges score (subsets of AUS).
ABAW2020_AUS: tuple[int, ...] = (1, 2, 4, 6, 12, 15, 20, 25)
ABAW2022_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)
# The AUs the FERA challenges score on BP4D (FERA 2015) and BP4D+ (FERA 2017): the F1 the papers' tables report.
FERA2015_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23)
FERA2017_AUS: tuple[int, ...] = (1, 4, 6, 7, 10, 12, 14, 15, 17, 23)
# ABAW 2022+'s 8 expression classes: the 7 basic ones in the canonical order, then "Other" (its native index 7).
ABAW2022_EXPRESSIONS: tuple[str, ...] = (*EXPRESSIONS, "Other")

VA_NAMES: tuple[str, ...] = ("valence", "arousal")

# CelebA's 40 attributes in its own order (line 2 of list_attr_celeba.txt): the order of the `attributes` feature.
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# FATAUVA-Net's Table 2: attribute layer branch -> the CelebA attributes its FC layers recognise.
FATAUVA_ATTRIBUTE_BRANCHES: dict[str, tuple[str, ...]] = {
    "face": ("Attractive", "Male", "No_Beard", "Young"),
    "eyebrows": ("Arched_Eyebrows", "Bushy_Eyebrows"),
    "eyes": ("Eyeglasses", "Narrow_Eyes"),
    "mouth": ("Mouth_Slightly_Open", "Smiling"),
}

# Du, Tao & Martinez 2014 compound categories, in their Table 1 order (the `compound` feature indexes this).
COMPOUND_EXPRESSIONS: tuple[str, ...] = (
    "Happily Surprised", "Happily Disgusted", "Sadly Fearful", "Sadly Angry", "Sadly Surprised",
    "Sadly Disgusted", "Fearfully Angry", "Fearfully Surprised", "Fearfully Disgusted", "Angrily Surprised",
    "Angrily Disgusted", "Disgustedly Surprised", "Appalled", "Hatred", "Awed",
)

# RAF-DB's 11 compound classes in its native order (codes 1..11): Du et al.'s first 11 less "Fearfully Disgusted".
RAFDB_COMPOUND: tuple[str, ...] = (
    "Happily Surprised", "Happily Disgusted", "Sadly Fearful", "Sadly Angry", "Sadly Surprised", "Sadly Disgusted",
    "Fearfully Angry", "Fearfully Surprised", "Angrily Surprised", "Angrily Disgusted", "Disgustedly Surprised",
)

# Every spelling of a basic expression seen in the databases and papers (adjective, noun, adverb stem).
_EXPRESSION_SYNONYMS = {
    "neutral": "Neutral",
    "anger": "Anger", "angry": "Anger", "angrily": "Anger",
    "disgust": "Disgust", "disgusted": "Disgust", "disgustedly": "Disgust",
    "fear": "Fear", "fearful": "Fear", "fearfully": "Fear", "afraid": "Fear",
    "happiness": "Happiness", "happy": "Happiness", "happily": "Happiness", "joy": "Happiness",
    "sadness": "Sadness", "sad": "Sadness", "sadly": "Sadness",
    "surprise": "Surprise", "surprised": "Surprise", "surprisedly": "Surprise",
}
# Labels some databases use that are deliberately *not* expressions: they mean "no expression label".
NOT_AN_EXPRESSION = frozenset({"contempt", "other", "none", "uncertain", "no-face", "noface", "no face"})


def _key(name: str) -> str:
    return name.strip().strip("'\"").strip().lower().replace("_", " ")


def expression_index(name: str) -> int | None:
    """Canonical index of an expression name in any common spelling; None for a non-expression label.

    Raises KeyError for a name that is neither, listing what is accepted.
    """
    key = _key(name)
    if key in NOT_AN_EXPRESSION or key.replace(" ", "-") in NOT_AN_EXPRESSION:
        return None
    if key in _EXPRESSION_SYNONYMS:
        return EXPRESSIONS.index(_EXPRESSION_SYNONYMS[key])
    raise KeyError(f"unknown expression name {name!r}; expected one of {sorted(_EXPRESSION_SYNONYMS)} "
                   f"or a non-expression label {sorted(NOT_AN_EXPRESSION)}")


def expression_map(native_names: Sequence[str]) -> np.ndarray:
    """Lookup array: native class code (its position in `native_names`) -> canonical index or -1."""
    out = [expression_index(n) for n in native_names]
    return np.array([-1 if i is None else i for i in out], dtype=np.int64)


_AU_PATTERN = re.compile(r"^\s*['\"]?\s*(?:AU)?\s*_?0*(\d+)\s*['\"]?\s*$", re.IGNORECASE)


def parse_au_number(label: str | int) -> int:
    """The AU number in 12, "12", "AU12", "AU 12", "'AU 12'", "au_012" -> 12. Raises ValueError otherwise."""
    if isinstance(label, (int, np.integer)):
        return int(label)
    match = _AU_PATTERN.match(str(label))
    if not match:
        raise ValueError(f"{label!r} is not an action unit label (expected e.g. 'AU12', 'AU 12' or 12)")
    return int(match.group(1))


def au_index(label: str | int, aus: Sequence[int] = AUS) -> int | None:
    """Canonical position of an AU label, or None when that AU is outside the canonical set."""
    number = parse_au_number(label)
    return aus.index(number) if number in aus else None


def au_columns(native_labels: Iterable[str | int], aus: Sequence[int] = AUS) -> dict[int, int]:
    """{native column position: canonical AU position} for the native AUs that are canonical.

    Native AUs outside the canonical set (AU28, AU43, AU45 ...) are simply absent from the result.
    """
    mapping = {}
    for column, label in enumerate(native_labels):
        index = au_index(label, aus)
        if index is not None:
            mapping[column] = index
    return mapping


def au_mask_for(native_aus: Iterable[int | str], aus: Sequence[int] = AUS) -> np.ndarray:
    """The 0/1 mask over the canonical AUs that a database annotating `native_aus` fills."""
    mask = np.zeros(len(aus), np.float32)
    for label in native_aus:
        index = au_index(label, aus)
        if index is not None:
            mask[index] = 1.0
    return mask


def describe(expr: int | None = None, au=None, au_mask=None, va=None, va_mask: float = 1.0) -> str:
    """One line of text for a label: 'Happiness | AU6 AU12 AU25 (of 12 annotated) | V +0.62 A +0.31'."""
    parts = []
    if expr is not None and int(expr) >= 0:
        parts.append(EXPRESSIONS[int(expr)])
    if au is not None:
        au = np.asarray(au, np.float32)
        mask = np.ones_like(au) if au_mask is None else np.asarray(au_mask, np.float32)
        if mask.sum() > 0:
            active = [AU_NAMES[i] for i in range(len(au)) if mask[i] > 0 and au[i] >= 0.5]
            parts.append(f"{' '.join(active) or 'no AU'} (of {int(mask.sum())} annotated)")
    if va is not None and va_mask > 0:
        parts.append(f"V {float(va[0]):+.2f} A {float(va[1]):+.2f}")
    return " | ".join(parts) if parts else "no label"
