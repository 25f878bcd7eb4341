"""The demo face's geometry: an identity plus 17 AU intensities -> 68 iBUG landmarks in 3-D model coordinates.

Model coordinates: x to the image's right, y down, z towards the camera; the eye centres sit at (-0.33, 0) and
(0.33, 0), so one unit is about 1.5 inter-ocular distances. Each AU is a blendshape: a displacement of the
landmarks it moves, in the direction FACS describes, scaled by its intensity in [0, 1] (FACS/DISFA 0..5 divided
by 5). Appearance changes that landmarks cannot carry (wrinkles, cheek bulges, teeth) are drawn in `render.py`
from the same intensities. Beyond the canonical 17, the model shows AU45 (blink: the lids close), so intensity
arrays run over `MODEL_AUS`; a 17-long array is the canonical AUs with the lids open.

An identity also carries what CelebA's attributes describe (sex, age, glasses, beard, make-up, brow shape, eye
openness); `sample_person` draws them together, `sample_identity` (the older sampler, kept draw for draw so the
earlier releases keep their bytes) leaves them at their defaults, which render exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fbnet_tf.labels import AUS

# The AUs the face model can show: the canonical 17, then AU45 (blink), which no canonical head predicts.
MODEL_AUS: tuple[int, ...] = (*AUS, 45)

# iBUG 68 index groups.
JAW = np.arange(0, 17)
RIGHT_BROW, LEFT_BROW = np.arange(17, 22), np.arange(22, 27)  # subject's right = image left
NOSE_BRIDGE, NOSTRILS = np.arange(27, 31), np.arange(31, 36)
RIGHT_EYE, LEFT_EYE = np.arange(36, 42), np.arange(42, 48)
OUTER_LIPS, INNER_LIPS = np.arange(48, 60), np.arange(60, 68)


def _neutral_face() -> np.ndarray:
    """The mean neutral frontal face, [68, 2]."""
    theta = np.pi * (-0.06 + 1.12 * np.arange(17) / 16)
    cos, sin = np.cos(theta), np.sin(theta)
    jaw = np.stack([-0.73 * np.sign(cos) * np.abs(cos) ** 0.8,
                    0.16 + 1.04 * np.sign(sin) * np.abs(sin) ** 1.15], axis=1)
    right_brow = np.array([[-0.60, -0.17], [-0.50, -0.245], [-0.38, -0.27], [-0.25, -0.26], [-0.13, -0.235]])
    left_brow = right_brow[::-1] * [-1, 1]
    nose = np.array([[0, -0.03], [0, 0.10], [0, 0.23], [0, 0.37],
                     [-0.12, 0.44], [-0.06, 0.46], [0, 0.47], [0.06, 0.46], [0.12, 0.44]])
    right_eye = np.array([[-0.47, 0.01], [-0.39, -0.05], [-0.27, -0.052], [-0.19, 0.01], [-0.27, 0.045],
                          [-0.39, 0.043]])
    left_eye = right_eye[[3, 2, 1, 0, 5, 4]] * [-1, 1]
    outer = np.array([[-0.27, 0.76], [-0.17, 0.705], [-0.07, 0.68], [0, 0.69], [0.07, 0.68], [0.17, 0.705],
                      [0.27, 0.76], [0.17, 0.835], [0.08, 0.865], [0, 0.87], [-0.08, 0.865], [-0.17, 0.835]])
    inner = np.array([[-0.245, 0.76], [-0.08, 0.752], [0, 0.754], [0.08, 0.752], [0.245, 0.76],
                      [0.08, 0.758], [0, 0.759], [-0.08, 0.758]])
    return np.concatenate([jaw, right_brow, left_brow, nose, right_eye, left_eye, outer, inner]).astype(np.float32)


NEUTRAL = _neutral_face()


def _mirror(index: int) -> int:
    """The iBUG index of the point mirrored across the face's midline."""
    pairs = [(0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),
             (17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34),
             (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
             (48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]
    table = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    return table.get(index, index)


def _blendshape(moves: dict[int, tuple[float, float]]) -> np.ndarray:
    """[68, 2] displacement from moves given for the image-left half (and midline); mirrored to the right half."""
    delta = np.zeros((68, 2), np.float32)
    for index, (dx, dy) in moves.items():
        delta[index] = (dx, dy)
        other = _mirror(index)
        if other != index:
            delta[other] = (-dx, dy)
    return delta


# Per AU, the landmark displacement at full intensity (5 on the FACS scale). "up" is -y; image-left points given.
_AU_MOVES: dict[int, dict[int, tuple[float, float]]] = {
    1: {21: (0.0, -0.13), 20: (0.0, -0.1), 19: (0.0, -0.05), 18: (0.0, -0.02), 38: (0, -0.01)},  # inner brow up
    2: {17: (-0.01, -0.12), 18: (0.0, -0.11), 19: (0.0, -0.07), 20: (0.0, -0.025), 37: (0, -0.01)},  # outer brow up
    4: {21: (0.06, 0.09), 20: (0.04, 0.085), 19: (0.02, 0.07), 18: (0.01, 0.05), 17: (0.0, 0.03),
        37: (0, 0.012), 38: (0, 0.015)},  # brows down and together
    5: {37: (0.0, -0.05), 38: (0.0, -0.05), 36: (-0.005, -0.005), 39: (0.005, -0.005)},  # upper lid up
    6: {40: (0.0, -0.03), 41: (0.0, -0.03), 36: (0.0, -0.012), 48: (0.0, -0.012), 17: (0, 0.02),
        18: (0, 0.015)},  # cheeks up, lower lids pushed up
    7: {40: (0.0, -0.045), 41: (0.0, -0.045), 37: (0.0, 0.02), 38: (0.0, 0.02), 36: (0.01, 0.0),
        39: (-0.005, 0.0)},  # lids tightened
    9: {31: (0.01, -0.045), 32: (0.0, -0.04), 33: (0.0, -0.035), 30: (0.0, -0.02), 29: (0.0, -0.01),
        49: (0.0, -0.035), 50: (0.0, -0.04), 51: (0.0, -0.04), 61: (0, -0.02), 62: (0, -0.02),
        21: (0.02, 0.05), 20: (0.01, 0.035), 48: (0, -0.01)},  # nose wrinkled, upper lip and inner brows follow
    10: {49: (0.0, -0.07), 50: (0.0, -0.08), 51: (0.0, -0.075), 61: (0.0, -0.06), 62: (0.0, -0.055),
         48: (0.005, -0.02), 60: (0.0, -0.02), 31: (0.0, -0.02), 32: (0.0, -0.015)},  # upper lip up
    12: {48: (-0.07, -0.09), 60: (-0.065, -0.085), 49: (-0.025, -0.03), 59: (-0.03, -0.04), 61: (-0.02, -0.025),
         67: (-0.02, -0.03), 58: (0, -0.015), 41: (0, -0.01)},  # lip corners pulled up and out
    14: {48: (0.025, -0.015), 60: (0.025, -0.015), 49: (0.01, 0.005), 59: (0.01, -0.005)},  # corners in, dimples
    15: {48: (-0.01, 0.075), 60: (-0.01, 0.07), 49: (0.0, 0.02), 59: (-0.005, 0.035), 61: (0, 0.015),
         67: (0, 0.02)},  # lip corners down
    17: {55: (0.0, -0.045), 56: (0.0, -0.065), 57: (0.0, -0.075), 58: (0.0, -0.065), 59: (0.0, -0.045),
         65: (0.0, -0.03), 66: (0.0, -0.035), 67: (0.0, -0.03), 7: (0.0, -0.04), 8: (0.0, -0.045),
         6: (0.0, -0.025), 48: (0.0, 0.015), 50: (0, -0.015), 51: (0, -0.015)},  # chin and lower lip pushed up
    20: {48: (-0.085, 0.015), 60: (-0.08, 0.015), 49: (-0.03, 0.012), 59: (-0.035, -0.01), 61: (-0.015, 0.005),
         67: (-0.015, 0.0), 58: (0, -0.008), 50: (0, 0.01), 51: (0, 0.01)},  # lips stretched sideways
    23: {49: (0.02, 0.035), 50: (0.0, 0.04), 51: (0.0, 0.04), 59: (0.02, -0.04), 58: (0.0, -0.045),
         57: (0.0, -0.045), 48: (0.04, 0.0), 60: (0.035, 0.0)},  # lips narrowed and drawn in
    24: {49: (0.0, 0.035), 50: (0.0, 0.045), 51: (0.0, 0.045), 59: (0.0, -0.035), 58: (0.0, -0.045),
         57: (0.0, -0.045), 48: (0.015, 0.0), 60: (0.015, 0.0)},  # lips pressed together
    25: {61: (0.0, -0.015), 62: (0.0, -0.018), 65: (0.0, 0.065), 66: (0.0, 0.07), 67: (0.0, 0.065),
         55: (0.0, 0.05), 56: (0.0, 0.058), 57: (0.0, 0.058), 58: (0.0, 0.058), 59: (0.0, 0.05),
         60: (0.005, 0.003), 8: (0, 0.015), 7: (0, 0.012)},  # lips parted
    26: {8: (0.0, 0.19), 7: (0.0, 0.17), 6: (0.01, 0.13), 5: (0.015, 0.08), 4: (0.015, 0.04), 3: (0.005, 0.01),
         57: (0.0, 0.17), 56: (0.0, 0.165), 58: (0.0, 0.165), 55: (0.0, 0.13), 59: (0.005, 0.13),
         66: (0.0, 0.16), 65: (0.0, 0.15), 67: (0.0, 0.15), 48: (0.03, 0.05), 60: (0.03, 0.05),
         49: (0.005, 0.01), 61: (0.005, 0.01)},  # jaw dropped, mouth open
}
AU_BLENDSHAPES = np.stack([_blendshape(_AU_MOVES[au]) for au in AUS])  # [17, 68, 2]


@dataclass(frozen=True)
class Identity:
    """One person: face proportions and colours. All fields are plain floats so an identity pickles cheaply."""

    face_width: float = 1.0
    face_length: float = 1.0
    jaw_width: float = 1.0
    eye_spacing: float = 1.0
    eye_size: float = 1.0
    brow_height: float = 0.0
    brow_thickness: float = 0.05
    brow_arch: float = 0.0
    nose_length: float = 1.0
    nose_width: float = 1.0
    mouth_width: float = 1.0
    mouth_height: float = 0.0
    upper_lip: float = 1.0
    lower_lip: float = 1.0
    skin_r: float = 0.85
    skin_g: float = 0.67
    skin_b: float = 0.55
    hair_r: float = 0.2
    hair_g: float = 0.13
    hair_b: float = 0.08
    iris_r: float = 0.3
    iris_g: float = 0.2
    iris_b: float = 0.1
    hairline: float = 0.0
    hair_volume: float = 1.0
    hair_length: float = 0.0  # 0 short; else how far below the ears long hair falls (model units)
    beard: float = 0.0  # stubble strength
    # What CelebA's attributes describe; the defaults render exactly as identities did before these existed.
    male: bool = False
    age: float = 0.0  # 0 the youngest adult .. 1 old: wrinkles and sagging lines grow from about 0.35
    eye_openness: float = 1.0  # vertical size of the eye opening (narrow eyes < 0.8)
    glasses: float = 0.0  # 0 none, else the frame's weight (0.5..1.5)
    full_beard: float = 0.0  # 0 none, else the opacity of a full beard with moustache
    lipstick: float = 0.0  # 0 none, else how strongly the lips are coloured

    @property
    def skin(self) -> np.ndarray:
        return np.array([self.skin_r, self.skin_g, self.skin_b], np.float32)

    @property
    def hair(self) -> np.ndarray:
        return np.array([self.hair_r, self.hair_g, self.hair_b], np.float32)

    @property
    def iris(self) -> np.ndarray:
        return np.array([self.iris_r, self.iris_g, self.iris_b], np.float32)


# Skin tones (RGB 0..1) from pale to dark; an identity interpolates between two neighbours.
_SKIN_TONES = np.array([[0.96, 0.80, 0.70], [0.90, 0.72, 0.60], [0.82, 0.62, 0.48], [0.70, 0.50, 0.36],
                        [0.55, 0.38, 0.27], [0.40, 0.27, 0.19]], np.float32)
_HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.22, 0.14, 0.08], [0.42, 0.27, 0.13], [0.70, 0.55, 0.33],
                          [0.55, 0.25, 0.10], [0.55, 0.55, 0.55]], np.float32)
_IRIS_COLOURS = np.array([[0.25, 0.15, 0.07], [0.12, 0.08, 0.05], [0.25, 0.40, 0.55], [0.30, 0.42, 0.25]],
                         np.float32)


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random person: proportions within about +-10 % of the mean face, a skin tone, hair and eye colour."""
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    low = int(tone)
    skin = _SKIN_TONES[low] + (tone - low) * (_SKIN_TONES[min(low + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[low])
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=[0.3, 0.25, 0.15, 0.1, 0.1, 0.1])]
    hair = np.clip(hair * rng.uniform(0.85, 1.15), 0, 1)
    iris = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))]
    u = lambda low, high: float(rng.uniform(low, high))  # noqa: E731
    return Identity(
        face_width=u(0.9, 1.1), face_length=u(0.92, 1.08), jaw_width=u(0.85, 1.1), eye_spacing=u(0.93, 1.07),
        eye_size=u(0.85, 1.15), brow_height=u(-0.03, 0.03), brow_thickness=u(0.03, 0.065), brow_arch=u(-0.02, 0.03),
        nose_length=u(0.9, 1.12), nose_width=u(0.85, 1.2), mouth_width=u(0.88, 1.12), mouth_height=u(-0.03, 0.03),
        upper_lip=u(0.7, 1.3), lower_lip=u(0.75, 1.35),
        skin_r=float(skin[0]), skin_g=float(skin[1]), skin_b=float(skin[2]),
        hair_r=float(hair[0]), hair_g=float(hair[1]), hair_b=float(hair[2]),
        iris_r=float(iris[0]), iris_g=float(iris[1]), iris_b=float(iris[2]),
        hairline=u(-0.08, 0.15), hair_volume=u(0.8, 1.25), hair_length=float(rng.uniform() < 0.4) * u(0.6, 1.6),
        beard=float(rng.uniform(0, 1) < 0.15) * u(0.2, 0.6))


def identity_shape(identity: Identity) -> np.ndarray:
    """The identity's neutral frontal face [68, 2]: the mean face reshaped by its proportions."""
    p = NEUTRAL.copy()
    i = identity
    # Jaw: wider or narrower below the cheekbones, longer or shorter below the eyes.
    low = np.clip((p[JAW, 1] - 0.2) / 0.9, 0, 1)
    p[JAW, 0] *= 1 + (i.jaw_width - 1) * low
    for group in (RIGHT_EYE, LEFT_EYE):
        centre = p[group].mean(axis=0)
        p[group] = centre * [i.eye_spacing, 1] + (p[group] - centre) * i.eye_size
        if i.eye_openness != 1.0:  # (skipped at 1 so that default identities keep their exact coordinates)
            middle = p[group, 1].mean()
            p[group, 1] = middle + (p[group, 1] - middle) * i.eye_openness
    for group in (RIGHT_BROW, LEFT_BROW):
        p[group, 0] *= i.eye_spacing
        p[group, 1] += i.brow_height
        p[group[1:4], 1] -= i.brow_arch * np.array([0.6, 1.0, 0.7])
    nose = np.concatenate([NOSE_BRIDGE, NOSTRILS])
    p[nose, 1] = p[27, 1] + (p[nose, 1] - p[27, 1]) * i.nose_length
    p[NOSTRILS, 0] *= i.nose_width
    mouth = np.concatenate([OUTER_LIPS, INNER_LIPS])
    p[mouth, 0] *= i.mouth_width
    p[mouth, 1] += i.mouth_height + (i.nose_length - 1) * 0.3
    lip_line = p[INNER_LIPS, 1].mean()
    upper, lower = np.arange(49, 54), np.arange(55, 60)
    p[upper, 1] = lip_line + (p[upper, 1] - lip_line) * i.upper_lip
    p[lower, 1] = lip_line + (p[lower, 1] - lip_line) * i.lower_lip
    p[:, 0] *= i.face_width
    p[:, 1] = p[:, 1] * np.where(p[:, 1] > 0, i.face_length, 1.0)
    return p


def deform(shape: np.ndarray, au: np.ndarray) -> np.ndarray:
    """The face [.., 68, 2] with AU intensities `au` [.., 17 or 18] (0..1, `MODEL_AUS` order) applied.

    Vectorised over leading batch axes. Displacement grows as intensity**0.75: FACS's lowest scored levels
    (A, B) are already visible changes. After the blendshapes, the inner lips are kept from crossing (a pressed
    mouth stays closed, a lip never passes through the other), then AU45 closes the lids.
    """
    au = np.clip(np.asarray(au, np.float32), 0, 1)
    blink = au[..., len(AUS):]
    au = au[..., :len(AUS)] ** 0.75
    points = shape + np.einsum("...k,kpd->...pd", au, AU_BLENDSHAPES)
    upper_inner, lower_inner = points[..., [61, 62, 63], 1], points[..., [67, 66, 65], 1]
    gap = np.maximum(lower_inner - upper_inner, 0.0)
    press = au[..., AUS.index(24), None] * 0.9 + au[..., AUS.index(23), None] * 0.4
    gap = gap * np.clip(1 - press, 0.1, 1)
    middle = (upper_inner + lower_inner) / 2
    points[..., [61, 62, 63], 1] = middle - gap / 2
    points[..., [67, 66, 65], 1] = middle + gap / 2
    # The lips' red keeps a minimum thickness outside the inner line.
    points[..., [49, 50, 51, 52, 53], 1] = np.minimum(points[..., [49, 50, 51, 52, 53], 1],
                                                      points[..., [61, 61, 62, 63, 63], 1] - 0.012)
    points[..., [59, 58, 57, 56, 55], 1] = np.maximum(points[..., [59, 58, 57, 56, 55], 1],
                                                      points[..., [67, 67, 66, 65, 65], 1] + 0.012)
    if blink.shape[-1]:
        points = close_lids(points, blink[..., 0])
    return points


# Upper-lid points and the lower-lid points facing them (iBUG), both eyes.
_UPPER_LIDS, _LOWER_LIDS = [37, 38, 43, 44], [41, 40, 47, 46]


def close_lids(points: np.ndarray, closure) -> np.ndarray:
    """The lids [.., 68, 2] closed by `closure` (0 open .. 1 shut): the upper lid comes down to meet the lower lid,
    which rises a little, as in a blink. closure 0 leaves the points exactly as they were."""
    closure = np.asarray(closure, np.float32)[..., None]
    upper, lower = points[..., _UPPER_LIDS, 1], points[..., _LOWER_LIDS, 1]
    meet = lower - 0.2 * (lower - upper)
    points = points.copy()
    points[..., _UPPER_LIDS, 1] = upper + (meet - upper) * closure
    points[..., _LOWER_LIDS, 1] = lower + (meet - lower) * closure
    return points


def depth(points: np.ndarray) -> np.ndarray:
    """z of each landmark [.., 68]: an ellipsoidal head with the nose, lips and chin standing out."""
    x, y = points[..., 0], points[..., 1]
    z = 0.72 * np.sqrt(np.clip(1 - (x / 0.85) ** 2 - ((y - 0.15) / 1.45) ** 2, 0.04, 1))
    bump = np.zeros(68, np.float32)
    bump[27:31] = [0.04, 0.10, 0.17, 0.25]
    bump[31:36] = [0.08, 0.13, 0.16, 0.13, 0.08]
    bump[36:48] = -0.04
    bump[48:68] = 0.04
    bump[[50, 51, 52]] += 0.02
    bump[[7, 8, 9]] = 0.03
    return z + bump


def to_3d(points: np.ndarray) -> np.ndarray:
    """[.., N, 2] face-plane points -> [.., N, 3] on the head's surface.

    Landmarks (N = 68) get `depth` (nose, lips, chin stand out); other points lie on the ellipsoid."""
    if points.shape[-2] == 68:
        z = depth(points)
    else:
        x, y = points[..., 0], points[..., 1]
        z = 0.72 * np.sqrt(np.clip(1 - (x / 0.85) ** 2 - ((y - 0.15) / 1.45) ** 2, 0.04, 1))
    return np.concatenate([points, z[..., None]], axis=-1)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (degrees): yaw about y (turning the head), pitch about x (nodding), roll in the image plane."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return (rz @ rx @ ry).astype(np.float32)


def project(points3d: np.ndarray, yaw: float, pitch: float, roll: float, matrix: np.ndarray) -> np.ndarray:
    """Rotate the head, project orthographically, then apply the 2x3 image `matrix` (scale, position)."""
    rotated = points3d @ rotation(yaw, pitch, roll).T
    return rotated[..., :2] @ matrix[:, :2].T + matrix[:, 2]


GREY_HAIR = np.array([0.62, 0.61, 0.6], np.float32)


def sample_person(rng: np.random.Generator) -> Identity:
    """A random person with what CelebA's attributes describe, at about CelebA's rates: male 42 %, young 78 %,
    eyeglasses 6.5 %, a full beard on 30 % of men, make-up on 80 % of women, arched brows 27 %, bushy brows 14 %,
    narrow eyes 12 %. Men get wider jaws and thicker brows, older people grey hair, lines and receding hairlines.
    (Draws `sample_identity` first, then the rest: the same generator state gives the same proportions.)"""
    base = sample_identity(rng)
    male = bool(rng.uniform() < 0.42)
    age = float(rng.uniform() ** 2)  # P(age < 0.6) = 0.77
    u = lambda low, high: float(rng.uniform(low, high))  # noqa: E731
    chance = lambda p: bool(rng.uniform() < p)  # noqa: E731
    hair = GREY_HAIR * u(0.9, 1.2) if age > 0.6 and chance(0.6) else base.hair
    arched, bushy = chance(0.1 if male else 0.4), chance(0.25 if male else 0.06)
    return replace(
        base, male=male, age=age,
        jaw_width=base.jaw_width * (1.06 if male else 0.96), face_length=base.face_length * (1.03 if male else 0.98),
        brow_arch=u(0.05, 0.08) if arched else u(-0.02, 0.02),
        brow_thickness=u(0.08, 0.11) if bushy else u(0.03, 0.058),
        eye_openness=u(0.45, 0.65) if chance(0.12) else u(0.92, 1.15),
        glasses=u(0.6, 1.4) if chance(0.065) else 0.0,
        hair_r=float(hair[0]), hair_g=float(hair[1]), hair_b=float(hair[2]),
        hairline=u(0.0, 0.25) if male and age > 0.45 and chance(0.5) else u(-0.08, 0.06),
        hair_length=(u(0.6, 1.6) if chance(0.1 if male else 0.75) else 0.0),
        beard=u(0.3, 0.6) if male and chance(0.3) else 0.0,
        full_beard=u(0.55, 0.9) if male and chance(0.3) else 0.0,
        lipstick=u(0.3, 0.8) if not male and chance(0.8) else 0.0)
