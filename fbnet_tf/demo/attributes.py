"""CelebA's 40 attributes of a demo face: read off the face model where it draws them, drawn at CelebA's rates
where it does not.

`RULES` says, for each attribute the face model renders, how its value follows from the face: the identity's
parameters (sex, age, glasses, beard, brow shape ...), the AU intensities (smiling = AU12 present) and the
landmarks they produce (narrow eyes and an open mouth are measured on the deformed face, so squinting or a blink
narrows the eyes as much as a narrow-eyed person's). `UNRENDERED_RATES` gives the others (hats, earrings, hair
texture ...) their CelebA base rates. The 10 attributes of FATAUVA-Net's Table 2 all follow the face.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fbnet_tf.demo import face_model as fm
from fbnet_tf.labels import FATAUVA_ATTRIBUTE_BRANCHES

# FATAUVA-Net's Table 2, grouped by the attribute branch that predicts them (face, eyebrows, eyes, mouth).
TABLE2 = tuple(name for names in FATAUVA_ATTRIBUTE_BRANCHES.values() for name in names)

OCCURRENCE = 2.0  # FACS intensity from which an AU is present (as in world.py)
YOUNG_BELOW = 0.6  # identity age
NARROW_BELOW = 0.2  # lid opening / eye width (AU7 at intensity 2 gives 0.23, AU45 at 2 gives 0.2)
OPEN_ABOVE = 0.06  # inner-lip gap / mouth width
ATTRACTIVE_ABOVE = -0.95  # `attractiveness` score: about half of `sample_person`'s people are above

# Identity proportions whose distance from the mean face (1.0) makes a face less "average", hence less attractive
# (averageness is the most replicated correlate of rated attractiveness).
_PROPORTIONS = ("face_width", "face_length", "jaw_width", "eye_spacing", "eye_size", "nose_length", "nose_width",
                "mouth_width")
_HAIR_NAMES = ("Black_Hair", "Brown_Hair", "Brown_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")  # fm._HAIR_COLOURS


@dataclass(frozen=True)
class Portrait:
    """What a CelebA rule can look at: who, which AUs how strongly (FACS 0..5 over `fm.MODEL_AUS`, or the
    canonical 17), and the picture's blur."""

    identity: fm.Identity
    intensities: np.ndarray
    blur: float = 0.0

    def au(self, number: int) -> float:
        index = fm.MODEL_AUS.index(number)
        return float(self.intensities[index]) if index < len(self.intensities) else 0.0

    @property
    def landmarks(self) -> np.ndarray:
        """The frontal face-plane landmarks [68, 2] with the AUs applied."""
        return fm.deform(fm.identity_shape(self.identity), np.asarray(self.intensities, np.float32) / 5)


def eye_opening(points: np.ndarray) -> float:
    """Mean gap between the lids over the mean eye width (both eyes), on 68 landmarks."""
    gap = points[[41, 40, 47, 46], 1] - points[[37, 38, 43, 44], 1]
    width = points[[39, 45], 0] - points[[36, 42], 0]
    return float(gap.mean() / width.mean())


def mouth_opening(points: np.ndarray) -> float:
    """Gap between the inner lips over the mouth width, on 68 landmarks."""
    gap = points[[67, 66, 65], 1] - points[[61, 62, 63], 1]
    return float(gap.mean() / (points[54, 0] - points[48, 0]))


def attractiveness(identity: fm.Identity) -> float:
    """Higher for average proportions and youth: -(mean squared deviation / 0.1^2) - 1.5 x age."""
    deviation = np.array([getattr(identity, name) - 1.0 for name in _PROPORTIONS]) / 0.1
    return float(-np.mean(deviation ** 2) - 1.5 * identity.age)


def hair_colour_name(identity: fm.Identity) -> str:
    """The CelebA hair-colour attribute of the palette colour nearest to the identity's hair."""
    palette = np.concatenate([fm._HAIR_COLOURS, fm.GREY_HAIR[None]])
    names = _HAIR_NAMES + ("Gray_Hair",)
    return names[int(np.argmin(np.linalg.norm(palette - identity.hair, axis=1)))]


def _bald(i: fm.Identity) -> bool:
    return i.hairline >= 0.12  # render.py draws no hair from there


RULES: dict[str, Callable[[Portrait], bool]] = {
    # the 10 of Table 2
    "Attractive": lambda f: attractiveness(f.identity) > ATTRACTIVE_ABOVE,
    "Male": lambda f: f.identity.male,
    "No_Beard": lambda f: f.identity.full_beard == 0,
    "Young": lambda f: f.identity.age < YOUNG_BELOW,
    "Arched_Eyebrows": lambda f: f.identity.brow_arch > 0.035,
    "Bushy_Eyebrows": lambda f: f.identity.brow_thickness > 0.065,
    "Eyeglasses": lambda f: f.identity.glasses > 0,
    "Narrow_Eyes": lambda f: eye_opening(f.landmarks) < NARROW_BELOW,
    "Mouth_Slightly_Open": lambda f: mouth_opening(f.landmarks) > OPEN_ABOVE,
    "Smiling": lambda f: f.au(12) >= OCCURRENCE,
    # the others the face model draws
    "5_o_Clock_Shadow": lambda f: f.identity.beard > 0 and f.identity.full_beard == 0,
    "Mustache": lambda f: f.identity.full_beard > 0,
    "Goatee": lambda f: f.identity.full_beard > 0,
    "Sideburns": lambda f: f.identity.full_beard > 0.7,
    "Bags_Under_Eyes": lambda f: f.identity.age > 0.5,
    "Bald": lambda f: _bald(f.identity),
    "Receding_Hairline": lambda f: 0.05 < f.identity.hairline < 0.12,
    "Black_Hair": lambda f: not _bald(f.identity) and hair_colour_name(f.identity) == "Black_Hair",
    "Brown_Hair": lambda f: not _bald(f.identity) and hair_colour_name(f.identity) == "Brown_Hair",
    "Blond_Hair": lambda f: not _bald(f.identity) and hair_colour_name(f.identity) == "Blond_Hair",
    "Gray_Hair": lambda f: not _bald(f.identity) and hair_colour_name(f.identity) == "Gray_Hair",
    "Pale_Skin": lambda f: float(f.identity.skin.mean()) > 0.78,
    "Big_Nose": lambda f: f.identity.nose_width > 1.1,
    "Pointy_Nose": lambda f: f.identity.nose_length > 1.06 and f.identity.nose_width < 0.95,
    "Big_Lips": lambda f: f.identity.upper_lip + f.identity.lower_lip > 2.3,
    "Oval_Face": lambda f: f.identity.face_length / f.identity.face_width > 1.03 and f.identity.jaw_width < 1.0,
    "Chubby": lambda f: f.identity.face_width > 1.06 and f.identity.jaw_width > 1.02,
    "Double_Chin": lambda f: f.identity.face_width > 1.06 and f.identity.jaw_width > 1.02 and f.identity.age > 0.5,
    "High_Cheekbones": lambda f: f.au(6) >= OCCURRENCE,
    "Wearing_Lipstick": lambda f: f.identity.lipstick > 0,
    "Heavy_Makeup": lambda f: f.identity.lipstick > 0.55,
    "Blurry": lambda f: f.blur > 1.0,
}
# Not drawn by the face model: CelebA's rate of 1 (Straight_Hair and Wavy_Hair exclude each other, see `sample`).
UNRENDERED_RATES = {"Bangs": 0.15, "Rosy_Cheeks": 0.066, "Straight_Hair": 0.21, "Wavy_Hair": 0.32,
                    "Wearing_Earrings": 0.19, "Wearing_Hat": 0.048, "Wearing_Necklace": 0.12, "Wearing_Necktie": 0.07}


def sample(rng: np.random.Generator, portrait: Portrait, names) -> dict[str, bool]:
    """{name: value} for `names` (CelebA's 40): rules where the face shows it, else a draw at CelebA's rate."""
    unknown = set(names) - set(RULES) - set(UNRENDERED_RATES)
    if unknown:
        raise ValueError(f"no rule or rate for the attributes {sorted(unknown)}")
    drawn = {name: bool(rng.uniform() < rate) for name, rate in UNRENDERED_RATES.items()}
    drawn["Wavy_Hair"] &= not drawn["Straight_Hair"]
    return {name: bool(RULES[name](portrait)) if name in RULES else drawn[name] for name in names}
