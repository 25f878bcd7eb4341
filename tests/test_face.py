"""Face alignment against independent computations, and the MTCNN detector on a real photograph."""
import cv2
import numpy as np
import pytest

from fbnet_tf import face
from fbnet_tf.face import TEMPLATE_112

ASTRONAUT_LANDMARKS = np.array([[204, 100], [245, 102], [224, 126], [202, 139], [244, 140]], float)


def test_template_scales_with_size():
    np.testing.assert_allclose(face.template(112), TEMPLATE_112)
    np.testing.assert_allclose(face.template(224), TEMPLATE_112 * 2, rtol=1e-6)
    np.testing.assert_allclose(face.template(96)[0], [38.2946 * 96 / 112, 51.6963 * 96 / 112], rtol=1e-5)


def test_landmarks68_to_5_hand_worked():
    points = np.zeros((68, 2))
    points[36:42] = [[10, 20], [12, 20], [14, 20], [16, 20], [14, 22], [12, 22]]  # mean (13, 20.667)
    points[42:48] = [[30, 20]] * 6
    points[30], points[48], points[54] = [21, 30], [15, 40], [28, 41]
    np.testing.assert_allclose(face.landmarks68_to_5(points),
                               [[13, 62 / 3], [30, 20], [21, 30], [15, 40], [28, 41]], rtol=1e-6)
    np.testing.assert_allclose(face.landmarks68_to_5(points.ravel()), face.landmarks68_to_5(points))


def test_similarity_transform_matches_opencv_and_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = rng.uniform(0, 100, (5, 2))
    target = source @ rotation.T + shift
    matrix = face.similarity_transform(source, target)
    np.testing.assert_allclose(matrix, np.hstack([rotation, shift[:, None]]), atol=1e-9)
    noisy = target + rng.normal(0, 0.5, target.shape)
    opencv, _ = cv2.estimateAffinePartial2D(source.astype(np.float32), noisy.astype(np.float32),
                                            method=cv2.LMEDS)
    ours = face.similarity_transform(source, noisy)
    np.testing.assert_allclose(ours, opencv, atol=0.05 * np.abs(opencv).max())


def test_align_puts_marked_points_on_the_template():
    canvas = np.zeros((300, 300, 3), np.uint8)
    angle = np.deg2rad(15)
    rotation = 1.8 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = TEMPLATE_112 @ rotation.T + [70, 40]  # the template, rotated, scaled and moved
    for x, y in np.round(points).astype(int):
        canvas[y - 2:y + 3, x - 2:x + 3] = 255
    crop = face.align(canvas, points, size=112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for x, y in TEMPLATE_112:
        assert crop[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2].max() > 100
    with pytest.raises(ValueError):
        face.align(canvas, np.full((5, 2), np.nan))


def test_detect_finds_the_astronaut_and_alignment_lands_on_the_template():
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    faces = face.detect(image)
    assert len(faces) == 1
    found = faces[0]
    assert isinstance(found.score, float) and found.score > 0.99
    assert all(isinstance(v, float) for v in found.box)
    np.testing.assert_allclose(found.landmarks, ASTRONAUT_LANDMARKS, atol=3)
    matrix = face.similarity_transform(found.landmarks, TEMPLATE_112)
    mapped = found.landmarks @ matrix[:, :2].T + matrix[:, 2]
    residual = np.linalg.norm(mapped - TEMPLATE_112, axis=1)
    assert residual.max() < 7 and residual.mean() < 5  # 5 real points, 4 degrees of freedom: close, not exact
    crop = face.align(image, found.landmarks, 112)
    again = face.detect(crop)  # the aligned crop is still a face, with its points on the template
    assert again and np.abs(again[0].landmarks - TEMPLATE_112).max() < 6
    assert face.detect(np.full((200, 200, 3), 127, np.uint8)) == []
