"""Draw a demo face with OpenCV: anti-aliased polygons (cv2.LINE_AA, sub-pixel `shift`), blurred shading layers.

`render(identity, au, scene)` returns an RGB uint8 image and the 68 landmarks in its pixels. The scene says where
the head is (pose and a 2x3 model->pixel matrix), how it is lit and what surrounds it; `world.py` samples scenes.
Everything random about a picture comes from `scene.seed`, so one scene always gives the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fbnet_tf.demo import face_model as fm
from fbnet_tf.face import landmarks68_to_5, similarity_transform

_SHIFT = 4  # cv2 sub-pixel bits: coordinates are drawn at 1/16 pixel
_ONE = 1 << _SHIFT
_A = {au: i for i, au in enumerate(fm.MODEL_AUS)}


@dataclass(frozen=True)
class Scene:
    """Where and how a face is drawn. `matrix` maps rotated model coordinates to pixels."""

    height: int
    width: int
    matrix: tuple  # 2x3, row-major, as nested tuples so a scene pickles and hashes
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    light_angle: float = 0.0  # radians, direction the light comes from in the image plane
    light_strength: float = 0.15
    brightness: float = 1.0
    tint: tuple = (1.0, 1.0, 1.0)
    blur: float = 0.0  # Gaussian sigma in pixels
    noise: float = 0.0  # Gaussian noise std on 0..1 pixels
    gaze: tuple = (0.0, 0.0)
    occlusion: float = 0.0  # 0 = none, else the fraction of the face an occluder covers (roughly)
    background: int = 0  # 0 a random photo-like backdrop, 1 a plain studio backdrop
    face: bool = True  # False draws the background only ("no face")
    seed: int = 0

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.matrix, np.float32)


def placed(height: int, width: int, *, centre: tuple[float, float], face_px: float, **kwargs) -> Scene:
    """A scene with the face's middle (between eyes and mouth) at `centre` and about `face_px` pixels tall."""
    s = face_px / 2.1  # the face spans ~2.1 model units from hairline to chin
    matrix = ((s, 0.0, centre[0] - 0.0 * s), (0.0, s, centre[1] - 0.38 * s))
    return Scene(height, width, matrix, **kwargs)


def aligned(identity: fm.Identity, au, size, template5: np.ndarray, **kwargs) -> Scene:
    """A scene whose face's 5 points (eye centres, nose tip, mouth corners) land on `template5` (a size x size
    crop; `size` may also be (height, width), e.g. CelebA's 218 x 178 aligned images).

    The roll is taken out by the alignment, as a similarity-transform crop does; yaw and pitch remain.
    """
    height, width = (size, size) if np.isscalar(size) else size
    kwargs.setdefault("roll", 0.0)
    unit = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    points = landmarks_px(identity, au, Scene(height, width, unit, **kwargs))
    # Drawn at the unit matrix, so the similarity transform of its points is the scene's matrix itself.
    matrix = similarity_transform(landmarks68_to_5(points), template5)
    return Scene(height, width, tuple(map(tuple, matrix.tolist())), **kwargs)


def landmarks_px(identity: fm.Identity, au, scene: Scene) -> np.ndarray:
    """The 68 landmarks [68, 2] of this face in the scene's pixels."""
    shape = fm.deform(fm.identity_shape(identity), au)
    return fm.project(fm.to_3d(shape), scene.yaw, scene.pitch, scene.roll, scene.affine)


def _px(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32)


def _fill(img: np.ndarray, points, colour) -> None:
    cv2.fillPoly(img, [_px(points)], _u8(colour), cv2.LINE_AA, _SHIFT)


def _line(img: np.ndarray, points, colour, thickness: float, closed: bool = False) -> None:
    cv2.polylines(img, [_px(points)], closed, _u8(colour), max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)


def _u8(colour) -> tuple:
    if np.isscalar(colour):
        return (float(np.clip(colour, 0, 1) * 255),)
    return tuple(float(c) for c in np.clip(np.asarray(colour, np.float32) * 255, 0, 255))


def _mask(shape: tuple[int, int], polygons) -> np.ndarray:
    """An anti-aliased float mask 0..1 of the union of `polygons`."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [_px(p) for p in polygons], 255, cv2.LINE_AA, _SHIFT)
    return mask.astype(np.float32) / 255.0


def _blend(img: np.ndarray, layer, mask: np.ndarray, alpha: float = 1.0) -> None:
    """img <- img + (layer - img) * mask * alpha, in place, only where the mask is nonzero.

    `layer` is a uint8 image like `img` or an RGB colour (0..1)."""
    rows, cols = np.nonzero(mask.max(axis=1) > 0)[0], np.nonzero(mask.max(axis=0) > 0)[0]
    if rows.size == 0:
        return
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = mask[r0:r1, c0:c1, None] * alpha
    base = img[r0:r1, c0:c1].astype(np.float32)
    if isinstance(layer, np.ndarray) and layer.ndim == 3:
        top = layer[r0:r1, c0:c1].astype(np.float32)
    else:
        top = np.asarray(_u8(layer), np.float32)
    img[r0:r1, c0:c1] = np.clip(base + (top - base) * m + 0.5, 0, 255)


def _curve(a, b, bend: float, n: int = 8) -> np.ndarray:
    """n points from a to b bowed sideways by `bend` (model units, positive = to the left of a->b)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    t = np.linspace(0, 1, n)[:, None]
    normal = np.array([-(b - a)[1], (b - a)[0]]) / (np.linalg.norm(b - a) + 1e-6)
    return a + (b - a) * t + normal * bend * np.sin(np.pi * t) * 1.0


def _ellipse(centre, axes, n: int = 24, start: float = 0.0, stop: float = 2 * np.pi) -> np.ndarray:
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * np.pi - 1e-6)
    return np.stack([centre[0] + axes[0] * np.cos(t), centre[1] + axes[1] * np.sin(t)], axis=1).astype(np.float32)


def _background(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """A photo-like backdrop: a colour gradient, low-frequency blotches and a few blurred shapes."""
    h, w = scene.height, scene.width
    if scene.background == 1:  # plain studio backdrop (the contact sheet)
        ramp = np.linspace(0.9, 0.75, h, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray(np.broadcast_to(ramp * np.array([230, 235, 242], np.float32), (h, w, 3)), np.uint8)
    c1, c2 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    angle = rng.uniform(0, 2 * np.pi)
    grid = np.linspace(-1, 1, 4)
    t = (grid[None, :] * np.cos(angle) + grid[:, None] * np.sin(angle) + 1.5) / 3  # a 4x4 linear ramp ...
    coarse = c1 * (1 - t[..., None]) + c2 * t[..., None] + rng.uniform(-0.15, 0.15, (4, 4, 3))  # ... + blotches
    img = cv2.resize(np.clip(coarse * 255, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 5))):
        colour = rng.uniform(0, 1, 3)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if rng.uniform() < 0.5:
            size = rng.uniform(0.1, 0.4) * np.array([w, h])
            _fill(img, [[x, y], [x + size[0], y], [x + size[0], y + size[1]], [x, y + size[1]]], colour)
        else:
            _fill(img, _ellipse((x, y), rng.uniform(0.05, 0.25, 2) * np.array([w, h])), colour)
    return cv2.GaussianBlur(img, (0, 0), max(h, w) * rng.uniform(0.005, 0.03))


class _Face:
    """Projects face-plane points of one face into the scene's pixels."""

    def __init__(self, identity: fm.Identity, au: np.ndarray, scene: Scene):
        self.identity, self.scene = identity, scene
        self.au = np.clip(np.asarray(au, np.float32), 0, 1)
        self.plane = fm.deform(fm.identity_shape(identity), self.au)  # [68, 2] face plane
        self.lm = fm.project(fm.to_3d(self.plane), scene.yaw, scene.pitch, scene.roll, scene.affine)
        self.scale = float(np.linalg.norm(scene.affine[:, 0]))
        self.rotation = fm.rotation(scene.yaw, scene.pitch, scene.roll)

    def a(self, au: int) -> float:
        """Intensity 0..1 of `au`; 0 for an AU past the end of a shorter (canonical 17) array."""
        index = _A[au]
        return float(self.au[index]) if index < len(self.au) else 0.0

    def px(self, points, lift: float = 0.0) -> np.ndarray:
        """Face-plane points (not landmarks) -> pixels, on the head's ellipsoid raised by `lift`."""
        points = np.asarray(points, np.float32).reshape(-1, 2)
        xyz = fm.to_3d(points)
        xyz[:, 2] += lift
        return (xyz @ self.rotation.T)[:, :2] @ self.scene.affine[:, :2].T + self.scene.affine[:, 2]


def render(identity: fm.Identity, au, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image [H, W, 3], landmarks [68, 2] in pixels) of `identity` showing AU intensities `au` (0..1)."""
    rng = np.random.default_rng(scene.seed)
    img = _background(scene, rng)
    face = _Face(identity, au, scene)
    if scene.face:
        _draw_head(img, face, rng)
    img = _finish(img, face, scene, rng)
    return img, face.lm.astype(np.float32)


def _draw_head(img: np.ndarray, f: _Face, rng: np.random.Generator) -> None:
    i, lm, p, s = f.identity, f.lm, f.plane, f.scale
    skin, hair = i.skin, i.hair
    w = i.face_width
    shape = img.shape[:2]
    # Body, neck, back of the hair, ears: behind the face.
    cloth = rng.uniform(0.05, 0.9, 3)
    _fill(img, f.px([[-1.5, 2.4], [-1.3, 1.65], [-0.35, 1.45], [0.35, 1.45], [1.3, 1.65], [1.5, 2.4],
                     [1.5, 4.0], [-1.5, 4.0]]), cloth)
    neck = f.px([[-0.36 * w, 0.8], [0.36 * w, 0.8], [0.38 * w, 1.65], [0, 1.75], [-0.38 * w, 1.65]])
    volume = i.hair_volume
    if i.hairline < 0.12 and i.hair_length > 0:  # long hair falls behind the neck to the shoulders
        bottom = 0.3 + i.hair_length
        _fill(img, f.px(np.concatenate([_ellipse((0, -0.12), (0.9 * w * volume, 1.1), 16, np.pi, 2 * np.pi),
                                        [[0.95 * w * volume, bottom], [0.55 * w, bottom + 0.1],
                                         [-0.55 * w, bottom + 0.1], [-0.95 * w * volume, bottom]]]), lift=-0.3),
              hair * 0.8)
    _fill(img, neck, skin * 0.8)
    if i.hairline < 0.12:
        _fill(img, f.px(_ellipse((0, -0.12), (0.86 * w * volume, 1.05 + 0.1 * volume), 32, np.pi * 0.85,
                                 np.pi * 2.15), lift=-0.3), hair * 0.85)
    for side in (-1, 1):
        ear = f.px(_ellipse((side * 0.76 * w, 0.12), (0.09, 0.19), 16))
        _fill(img, ear, skin * 0.92)
        _line(img, f.px(_ellipse((side * 0.775 * w, 0.12), (0.05, 0.13), 9, -1.2, 1.4)), skin * 0.7,
              0.012 * s)
    theta = np.linspace(0.04 * np.pi, 0.96 * np.pi, 15)
    forehead = np.stack([0.76 * w * np.cos(theta) * (1 + 0.02 * np.sin(theta)),
                         0.0 - 0.98 * np.sin(theta) ** 0.9], axis=1)
    outline = np.concatenate([lm[fm.JAW], f.px(forehead)])
    _fill(img, outline, skin)
    skin_mask = _mask(shape, [outline, neck])

    _shade_skin(img, f, skin_mask, outline)
    if i.beard > 0:
        stubble = np.concatenate([lm[3:14], f.px([[0.3, 0.5], [0.12, 0.48], [-0.12, 0.48], [-0.3, 0.5]])])
        soft = cv2.GaussianBlur(_mask(shape, [stubble]), (0, 0), max(0.5, 0.03 * s))
        _blend(img, hair * 0.6, soft, 0.4 * i.beard)
    if i.full_beard > 0:
        _draw_beard(img, f)
    # Hair over the forehead down to the hairline.
    top = 0.58 + i.hairline
    line = np.stack([0.8 * w * np.cos(theta), -0.15 - (top - 0.15) * np.sin(theta) ** 0.5], axis=1)
    crown = _ellipse((0, -0.12), (0.9 * w * volume, 1.08 + 0.1 * volume), 15, np.pi * 1.0, np.pi * 2.0)
    if i.hairline < 0.12:
        _fill(img, f.px(np.concatenate([line, crown]), lift=0.05), hair)
    _draw_brows(img, f)
    _draw_eyes(img, f)
    _draw_nose(img, f)
    _draw_mouth(img, f)
    if i.glasses > 0:
        _draw_glasses(img, f)


def _shade_skin(img: np.ndarray, f: _Face, skin_mask: np.ndarray, outline: np.ndarray) -> None:
    """Soft shading (sockets, nose, lips, cheeks, rim) and AU wrinkles, multiplied into the skin."""
    lm, p, s = f.lm, f.plane, f.scale
    h, w = img.shape[:2]
    shade = np.zeros((h, w), np.float32)  # drawn without AA: it is blurred below

    def blob(points, value):
        cv2.fillPoly(shade, [_px(points)], value, cv2.LINE_8, _SHIFT)

    for eye, side in ((fm.RIGHT_EYE, -1), (fm.LEFT_EYE, 1)):
        c = p[eye].mean(axis=0)
        blob(f.px(_ellipse(c + [0.0, -0.03], (0.19, 0.11))), -0.22)
        blob(f.px(_ellipse(c + [0.0, 0.08], (0.13, 0.04))), -0.08)  # lower lid hollow
        cheek_up = 0.07 * f.a(6) + 0.03 * f.a(12)
        blob(f.px(_ellipse((side * 0.36, 0.33 - cheek_up), (0.16, 0.11 + 0.02 * f.a(6)))), 0.05 + 0.035 * f.a(6))
        if f.a(6) > 0.05:
            blob(f.px(np.concatenate([_curve([side * 0.52, 0.42 - cheek_up], [side * 0.18, 0.5 - cheek_up], 0.04),
                                      _curve([side * 0.18, 0.56 - cheek_up], [side * 0.52, 0.5 - cheek_up], 0.0)])),
                 -0.14 * f.a(6))
    nose_side = 0.2 * np.sin(np.deg2rad(f.scene.yaw))
    for side in (-1, 1):  # the nose's sides, darker on the side turned away
        wing = p[31 if side < 0 else 35]
        strip = np.array([p[27] + [side * 0.04, 0.0], wing + [0.0, -0.05], wing + [side * 0.06, 0.0],
                          p[27] + [side * 0.1, 0.0]])
        blob(f.px(strip), -0.14 - side * nose_side)
    blob(f.px(_ellipse(p[33] + [0, 0.035], (0.11, 0.03))), -0.25)  # under the nose
    blob(np.concatenate([lm[27:31] + [-0.012 * s, 0], lm[30:26:-1] + [0.012 * s, 0]]), 0.1)  # bridge highlight
    blob(f.px(_ellipse(p[57] + [0, 0.06], (0.13, 0.035))), -0.2)  # under the lower lip
    blob(f.px(_ellipse((0, -0.45), (0.35, 0.18))), 0.06)
    chin = p[8] + [0, -0.16 + 0.03 * f.a(17)]
    blob(f.px(_ellipse(chin, (0.13, 0.08 + 0.02 * f.a(17)))), 0.05 + 0.12 * f.a(17))
    sigma = max(0.6, 0.035 * s)
    shade = cv2.GaussianBlur(shade, (0, 0), sigma)
    # Rounded look: darker towards the face outline, and a shadow on the neck under the jaw.
    rim = 1.0 - cv2.GaussianBlur(_mask((h, w), [outline]), (0, 0), 0.12 * s)
    shade -= 0.35 * rim
    jaw_shadow = cv2.GaussianBlur(_mask((h, w), [np.concatenate([f.lm[2:15], f.lm[14:1:-1] + [0, 0.12 * s]])]),
                                  (0, 0), 0.05 * s)
    shade -= 0.35 * jaw_shadow * (1 - _mask((h, w), [outline]))

    detail = np.zeros((h, w), np.uint8)
    _draw_wrinkles(detail, f)
    if f.identity.age > 0.35:
        _draw_age_lines(detail, f)
    detail = cv2.GaussianBlur(detail, (0, 0), max(0.5, 0.006 * s)).astype(np.float32) / 255.0
    factor = (1.0 + shade - 0.45 * detail) * skin_mask + (1 - skin_mask)
    img[:] = np.clip(img.astype(np.float32) * factor[..., None] + 0.5, 0, 255).astype(np.uint8)


def _draw_wrinkles(detail: np.ndarray, f: _Face) -> None:
    """FACS appearance changes that move no landmark: forehead lines, glabella, crow's feet, folds, dimples."""
    p, s = f.plane, f.scale
    width = max(1.0, 0.014 * s)

    def crease(points, strength, thickness=width):
        if strength > 0.02:
            _line(detail, f.px(points), min(1.0, strength), thickness)

    brow_top = p[17:27, 1].min()
    for k in range(3):  # forehead: inner lines for AU1, outer lines for AU2
        y = brow_top - 0.12 - 0.08 * k
        crease(_curve([-0.22, y], [0.22, y], -0.03 * f.a(1) - 0.01, 10), 0.9 * f.a(1))
        for side in (-1, 1):
            crease(_curve([side * 0.2, y + 0.01], [side * 0.55, y + 0.05], side * 0.02, 8), 0.9 * f.a(2))
    for side in (-1, 1):  # glabella: vertical lines for AU4, across the nose root for AU9
        inner = p[21 if side < 0 else 22]
        crease([[side * 0.045, inner[1] - 0.1], [side * 0.05, inner[1] + 0.05]], f.a(4))
        crease([[side * 0.09, inner[1] - 0.05], [side * 0.04, inner[1] + 0.04]], 0.6 * f.a(4))
    for k in range(3):
        y = p[27, 1] + 0.02 + 0.04 * k
        crease(_curve([-0.07, y], [0.07, y], 0.01), 0.9 * f.a(9))
    for eye, side in ((fm.RIGHT_EYE, -1), (fm.LEFT_EYE, 1)):
        corner = p[36 if side < 0 else 45] + [side * 0.04, 0.0]
        for angle in (-0.5, 0.0, 0.5):  # crow's feet for AU6
            end = corner + side * 0.1 * np.array([np.cos(angle), np.sin(angle) * side])
            crease([corner, end], 0.9 * f.a(6))
        lower = p[eye[[3, 4, 5, 0]] if side < 0 else eye[[0, 5, 4, 3]]]
        crease(lower + [0, 0.035], 0.25 + 0.5 * max(f.a(6), f.a(7)))  # lower lid bag
    fold = 0.25 + 0.6 * max(f.a(9), f.a(10), 0.8 * f.a(12), 0.5 * f.a(6), 0.5 * f.a(20))
    for side in (-1, 1):  # nasolabial folds, dimples, marionette lines, lip stretcher lines
        wing = p[31 if side < 0 else 35] + [side * 0.05, -0.02]
        corner = p[48 if side < 0 else 54]
        crease(_curve(wing, corner + [side * 0.07, 0.04], side * 0.03 * (1 + f.a(12)), 8), fold, width * 1.3)
        crease(_curve(corner + [side * 0.035, -0.03], corner + [side * 0.04, 0.04], side * 0.01, 5), f.a(14),
               width * 1.5)
        crease([corner + [side * 0.01, 0.02], corner + [side * 0.04, 0.14]], 0.8 * f.a(15))
        crease([corner + [side * 0.02, 0.0], corner + [side * 0.1, 0.015]], 0.7 * f.a(20))
    upper = p[[49, 50, 52, 53]]
    for x, y in upper:  # small vertical lines above the pressed or tightened upper lip
        crease([[x, y - 0.02], [x * 0.95, y - 0.06]], 0.7 * max(f.a(23), f.a(24)))
    crease(_curve(p[57] + [-0.1, 0.06], p[57] + [0.1, 0.06], -0.02), 0.4 + 0.5 * f.a(17))  # mentolabial sulcus
    for dx in (-0.05, 0.0, 0.05):  # chin dimpling
        crease(_ellipse(p[8] + [dx, -0.12], (0.012, 0.012), 6), 0.8 * f.a(17))


def _draw_age_lines(detail: np.ndarray, f: _Face) -> None:
    """Lines age leaves at rest: forehead lines, crow's feet, nasolabial folds, a line under the lower lids."""
    p, s = f.plane, f.scale
    strength = min(1.0, (f.identity.age - 0.35) * 1.6)
    width = max(1.0, 0.014 * s)

    def crease(points, k=1.0):
        _line(detail, f.px(points), min(1.0, strength * k), width)

    brow_top = p[17:27, 1].min()
    for k in range(3):
        y = brow_top - 0.13 - 0.08 * k
        crease(_curve([-0.4, y + 0.03], [0.4, y + 0.03], -0.04, 12), 0.7)
    for side, eye in ((-1, fm.RIGHT_EYE), (1, fm.LEFT_EYE)):
        corner = p[36 if side < 0 else 45] + [side * 0.05, 0.0]
        for angle in (-0.4, 0.3):
            crease([corner, corner + side * 0.09 * np.array([np.cos(angle), np.sin(angle) * side])], 0.8)
        crease(p[eye[[3, 4, 5, 0]] if side < 0 else eye[[0, 5, 4, 3]]] + [0, 0.06], 0.8)
        wing, corner = p[31 if side < 0 else 35] + [side * 0.05, -0.02], p[48 if side < 0 else 54]
        crease(_curve(wing, corner + [side * 0.08, 0.06], side * 0.04, 8), 1.0)


def _draw_beard(img: np.ndarray, f: _Face) -> None:
    """A full beard: jaw, chin and cheeks below the cheekbones, and a moustache over the upper lip."""
    i, lm, p, s = f.identity, f.lm, f.plane, f.scale
    cheeks = f.px([[0.6 * i.face_width, 0.3], [0.3, 0.45], [0.0, 0.5], [-0.3, 0.45], [-0.6 * i.face_width, 0.3]])
    beard = np.concatenate([lm[2:15], cheeks])
    moustache = f.px(np.concatenate([p[[48, 49, 50, 51, 52, 53, 54]] + [0, -0.01],
                                     p[[54, 53, 51, 49, 48]] + [[0.02, -0.06], [0.0, -0.09], [0, -0.1], [0, -0.09],
                                                                 [-0.02, -0.06]]]), lift=0.03)
    soft = cv2.GaussianBlur(_mask(img.shape[:2], [beard, moustache]), (0, 0), max(0.5, 0.025 * s))
    _blend(img, i.hair * 0.55, soft, i.full_beard)


def _draw_glasses(img: np.ndarray, f: _Face) -> None:
    """Spectacles: two rounded frames around the eyes, a bridge and the temples towards the ears."""
    i, p, s = f.identity, f.plane, f.scale
    thickness = max(1.0, 0.02 * s * i.glasses)
    frame = (0.08, 0.07, 0.07)
    rims = []
    for eye, side in ((fm.RIGHT_EYE, -1), (fm.LEFT_EYE, 1)):
        centre = p[eye].mean(axis=0) + [side * 0.01, 0.015]
        rims.append(f.px(_ellipse(centre, (0.17, 0.115), 24), lift=0.12))
        _line(img, f.px([centre + [side * 0.17, -0.02], [side * 0.74 * i.face_width, -0.02]], lift=0.06), frame,
              thickness)
    _blend(img, (0.75, 0.8, 0.85), _mask(img.shape[:2], rims), 0.12)  # a faint sheen on the lenses
    for rim in rims:
        _line(img, rim, frame, thickness, closed=True)
    bridge = f.px(_curve(p[39] + [0.06, -0.02], p[42] + [-0.06, -0.02], -0.03, 6), lift=0.14)
    _line(img, bridge, frame, thickness)


def _draw_brows(img: np.ndarray, f: _Face) -> None:
    i, p = f.identity, f.plane
    colour = np.clip(i.hair * 0.7 + i.skin * 0.15, 0, 1)
    profile = np.array([0.45, 0.75, 0.95, 1.0, 1.0])
    polys = []
    for brow in (fm.RIGHT_BROW, fm.LEFT_BROW):
        points = p[brow]
        taper = profile if brow[0] == 17 else profile[::-1]
        top = points - np.stack([np.zeros(5), i.brow_thickness * taper * 0.7], axis=1)
        bottom = points + np.stack([np.zeros(5), i.brow_thickness * taper * 0.45], axis=1)
        polys.append(f.px(np.concatenate([top, bottom[::-1]]), lift=0.02))
    _blend(img, colour, _mask(img.shape[:2], polys), 0.9)


def _draw_eyes(img: np.ndarray, f: _Face) -> None:
    i, lm, p, s = f.identity, f.lm, f.plane, f.scale
    shape = img.shape[:2]
    for eye in (fm.RIGHT_EYE, fm.LEFT_EYE):
        outline = lm[eye]
        centre = p[eye].mean(axis=0) + np.asarray(f.scene.gaze, np.float32) * 0.05
        radius = 0.058 * i.eye_size * s
        layer = np.full_like(img, _u8(np.array([0.93, 0.91, 0.88]) * 0.95))
        iris = f.px([centre])[0]
        cv2.circle(layer, tuple(_px(iris)), int(radius * _ONE), _u8(i.iris), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(layer, tuple(_px(iris)), int(radius * _ONE), _u8(i.iris * 0.5), max(1, int(0.01 * s)),
                   cv2.LINE_AA, _SHIFT)
        cv2.circle(layer, tuple(_px(iris)), int(radius * 0.45 * _ONE), (12, 10, 10), -1, cv2.LINE_AA, _SHIFT)
        glint = iris + np.array([-0.3, -0.35]) * radius
        cv2.circle(layer, tuple(_px(glint)), int(max(0.6, radius * 0.2) * _ONE), (250, 250, 250), -1,
                   cv2.LINE_AA, _SHIFT)
        # The upper lid shades the top of the eyeball.
        lid_shadow = np.concatenate([outline[:4], outline[[3, 2, 1, 0]] + [0, 0.025 * s]])
        _blend(layer, (0.0, 0.0, 0.0), _mask(shape, [lid_shadow]), 0.25)
        _blend(img, layer, _mask(shape, [outline]))
        crease_lift = 0.04 - 0.02 * f.a(5) + 0.01 * f.a(7)
        crease = np.concatenate([outline[:1], outline[1:3] - [0, crease_lift * s], outline[3:4]])
        _line(img, crease, i.skin * 0.62, 0.012 * s)
        _line(img, outline[:4], (0.08, 0.06, 0.05), 0.022 * s)  # upper lashes
        _line(img, np.concatenate([outline[3:], outline[:1]]), i.skin * 0.55, 0.01 * s)


def _draw_nose(img: np.ndarray, f: _Face) -> None:
    i, lm, p, s = f.identity, f.lm, f.plane, f.scale
    dark = i.skin * 0.45
    for side, wing in ((-1, 31), (1, 35)):
        nostril = f.px(_ellipse(p[wing] + [-side * 0.035, -0.005], (0.032 * i.nose_width, 0.017), 12), lift=0.12)
        _fill(img, nostril, dark * 0.6)
        alar = _curve(p[wing] + [side * 0.0, 0.01], p[wing] + [side * 0.01, -0.09], side * 0.045, 7)
        _line(img, f.px(alar, lift=0.1), i.skin * 0.62, 0.012 * s)
    tip = f.px(_ellipse(p[30], (0.035, 0.025), 10), lift=0.26)
    _blend(img, np.minimum(i.skin * 1.15, 1), _mask(img.shape[:2], [tip]), 0.5)


def _draw_mouth(img: np.ndarray, f: _Face) -> None:
    i, lm, p, s = f.identity, f.lm, f.plane, f.scale
    shape = img.shape[:2]
    lip = np.clip(i.skin * np.array([0.92, 0.6, 0.6]) + np.array([0.06, 0.0, 0.02]), 0, 1)
    if i.lipstick > 0:
        lip = lip + (np.array([0.72, 0.1, 0.18]) - lip) * i.lipstick
    upper = np.concatenate([lm[48:55], lm[[64, 63, 62, 61, 60]]])
    lower = np.concatenate([lm[54:60], lm[[48, 60, 67, 66, 65, 64]]])
    _fill(img, lower, lip)
    _fill(img, upper, lip * 0.88)
    highlight = f.px(_ellipse((p[57] + p[66]) / 2 + [0, -0.005], (0.06, 0.012), 10), lift=0.06)
    _blend(img, np.minimum(lip * 1.3, 1), _mask(shape, [highlight]), 0.5)
    inner = lm[60:68]
    gap = float(np.mean(p[[67, 66, 65], 1] - p[[61, 62, 63], 1]))
    if gap > 0.006:
        layer = np.full_like(img, _u8((0.22, 0.06, 0.07)))
        teeth_h = 0.055
        top = p[60:65]
        teeth = f.px(np.concatenate([top - [0, 0.02], (top + [0, teeth_h])[::-1]]))
        _fill(layer, teeth, (0.93, 0.9, 0.84))
        if gap > 0.09:
            bottom = p[[64, 65, 66, 67, 60]]
            _fill(layer, f.px(np.concatenate([bottom + [0, 0.02], (bottom - [0, 0.035])[::-1]])),
                  (0.85, 0.82, 0.76))
        _blend(img, layer, _mask(shape, [inner]))
    _line(img, np.concatenate([lm[60:65], lm[[65, 66, 67, 60]]]), lip * 0.45, max(1.0, 0.012 * s))
    _line(img, lm[[60, 61, 62, 63, 64]], lip * 0.45, max(1.0, 0.014 * s))


def _finish(img: np.ndarray, f: _Face, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Occluder, lighting, colour cast, blur and sensor noise over the whole picture; returns RGB uint8."""
    h, w = img.shape[:2]
    if scene.face and scene.occlusion > 0:
        s = f.scale
        centre = f.lm[rng.choice([30, 36, 45, 57, 8])] + rng.normal(0, 0.1 * s, 2)
        axes = np.array([rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.5)]) * s * (0.6 + scene.occlusion)
        colour = (f.identity.skin * rng.uniform(0.85, 1.0)) if rng.uniform() < 0.5 else rng.uniform(0, 1, 3)
        points = _ellipse(centre, axes, 20)
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        _fill(img, (points - centre) @ rot.T + centre, colour)
    out = img.astype(np.float32) / 255.0
    centre = f.lm.mean(axis=0)
    xs = (np.arange(w, dtype=np.float32) - centre[0]) * np.cos(scene.light_angle) / max(f.scale, 1.0)
    ys = (np.arange(h, dtype=np.float32) - centre[1]) * np.sin(scene.light_angle) / max(f.scale, 1.0)
    light = scene.brightness * (1 + scene.light_strength * np.clip(ys[:, None] + xs[None, :], -1.5, 1.5))
    out *= light[..., None] * np.asarray(scene.tint, np.float32)
    if scene.blur > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), scene.blur)
    if scene.noise > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(scene.noise)
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
