"""The face detectors behind `face.detector(name)`: BlazeFace's anchors and decoding against hand-worked values, the
fast path's and ONet's 5 points against MTCNN's (astronaut, demo-world faces), and the builders' `--detector`."""
import json

import cv2
import numpy as np
import pytest
from skimage import data

from fbnet_tf import blazeface, face

ASTRONAUT = data.astronaut()
BLANK = np.full((240, 320, 3), 127, np.uint8)


def iod_error(points, reference):
    """Mean 5-point distance in units of the reference's inter-ocular distance (computed here, not imported)."""
    reference = np.asarray(reference, np.float64)
    return np.linalg.norm(np.asarray(points) - reference, axis=1).mean() / np.linalg.norm(reference[0] - reference[1])


@pytest.fixture(scope="module")
def mtcnn():
    return face.detector("mtcnn")


@pytest.fixture(scope="module")
def fast():
    return face.detector("fast")


def test_short_range_anchors_hand_worked():
    anchors = blazeface.ssd_anchors(blazeface.SHORT_RANGE)
    # stride 8: a 16x16 grid, 2 anchors a cell (512); strides 16, 16, 16: one 8x8 grid, 2 x 3 anchors a cell (384)
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[:4], [[0.5 / 16, 0.5 / 16]] * 2 + [[1.5 / 16, 0.5 / 16]] * 2)
    np.testing.assert_allclose(anchors[32], [0.5 / 16, 1.5 / 16])  # cell (row 1, column 0)
    np.testing.assert_allclose(anchors[511], [15.5 / 16, 15.5 / 16])
    np.testing.assert_allclose(anchors[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])
    full = blazeface.ssd_anchors(blazeface.FULL_RANGE)
    assert full.shape == (2304, 2)  # stride 4 on 192: 48x48 cells, one anchor each
    np.testing.assert_allclose(full[[0, 1, 48]], [[0.5 / 48, 0.5 / 48], [1.5 / 48, 0.5 / 48], [0.5 / 48, 1.5 / 48]])


def test_decode_and_weighted_nms_hand_worked():
    anchors = np.array([[0.25, 0.25], [0.5, 0.5]], np.float32)
    raw = np.zeros((2, 16), np.float32)
    raw[0, :4] = [12.8, -6.4, 32, 64]  # centre offset (0.1, -0.05), size (0.25, 0.5) of a 128 input
    raw[0, 4:6] = [-12.8, 0]           # keypoint 0: 0.1 left of the anchor
    boxes, keypoints, scores = blazeface.decode(raw, np.array([[0.0], [np.log(3)]]), anchors, 128)
    np.testing.assert_allclose(boxes[0], [0.35 - 0.125, 0.2 - 0.25, 0.35 + 0.125, 0.2 + 0.25], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0], [0.15, 0.25], atol=1e-6)
    np.testing.assert_allclose(keypoints[1], [[0.5, 0.5]] * 6)
    np.testing.assert_allclose(scores, [0.5, 0.75], atol=1e-6)

    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float64)
    points = np.arange(3 * 6 * 2, dtype=np.float64).reshape(3, 6, 2)
    kept_boxes, kept_points, kept_scores = blazeface.weighted_nms(boxes, points, np.array([0.6, 0.9, 0.8]))
    # box 1 (0.9) absorbs box 0 (IoU 9/11 > 0.3): weights 0.6 and 0.9 of 1.5; box 2 stands alone
    np.testing.assert_allclose(kept_boxes, [[0.6, 0, 10.6, 10], [50, 50, 60, 60]])
    np.testing.assert_allclose(kept_points[0], 0.4 * points[0] + 0.6 * points[1])
    np.testing.assert_allclose(kept_scores, [0.9, 0.8])


def test_region_matrix_maps_the_square_onto_the_input_and_levels_the_roll():
    centre, side, angle = (100.0, 60.0), 48.0, np.deg2rad(30)
    matrix = blazeface.region_matrix(centre, side, angle, 192)
    # the centre lands mid-input (pixel-centre indices: 95.5), a point along the rolled eye line lands level
    np.testing.assert_allclose(matrix[:, :2] @ centre + matrix[:, 2], [95.5, 95.5], atol=1e-9)
    along = np.array(centre) + 12 * np.array([np.cos(angle), np.sin(angle)])
    np.testing.assert_allclose(matrix[:, :2] @ along + matrix[:, 2], [95.5 + 48, 95.5], atol=1e-9)


def test_fast_path_agrees_with_mtcnn_on_the_astronaut(fast, mtcnn):
    reference = mtcnn.detect(ASTRONAUT)[0].landmarks
    found = fast.detect(ASTRONAUT)
    assert len(found) == 1 and 0.5 <= found[0].score <= 1
    assert iod_error(found[0].landmarks, reference) <= 0.08
    x, y, w, h = found[0].box  # the mesh's box holds MTCNN's points
    assert np.all((reference >= [x, y]) & (reference <= [x + w, y + h]))
    refined = fast.refine(ASTRONAUT, found[0].box)
    assert refined is not None and iod_error(refined.landmarks, reference) <= 0.08
    assert np.abs(refined.landmarks - found[0].landmarks).max() < 4  # the same face, a few pixels apart
    assert fast.detect(BLANK) == [] and fast.refine(BLANK, (100, 60, 80, 90)) is None
    short = face.detector("fast-short").detect(ASTRONAUT)  # the short-range BlazeFace: the same mesh after it
    assert len(short) == 1 and iod_error(short[0].landmarks, reference) <= 0.08


def test_fast_path_agrees_with_mtcnn_on_demo_faces(fast, mtcnn):
    from fbnet_tf.demo import face_model as fm
    from fbnet_tf.demo import render as rd
    from fbnet_tf.demo import world

    rng = np.random.default_rng(0)
    errors = []
    for _ in range(6):  # turned up to 30 degrees, rolled up to 15, lit, blurred and tinted as the demo world does
        person = world.sample_face(rng, fm.sample_identity(rng), int(rng.integers(7)))
        scene = world.free_scene(rng, 480, 640, face_fraction=(0.3, 0.6), **world.sample_look(rng, 300))
        image, _ = rd.render(person.identity, person.intensities / 5, scene)
        reference, found = mtcnn.detect(image), fast.detect(image)
        assert reference and found
        errors.append(iod_error(found[0].landmarks, reference[0].landmarks))
    assert np.mean(errors) <= 0.08, errors


def test_fast_refine_levels_a_rolled_face(fast):
    rolled = cv2.warpAffine(ASTRONAUT, cv2.getRotationMatrix2D((224, 120), 35, 1.0), (512, 512))
    found = fast.detect(rolled)
    assert len(found) == 1
    eyes = found[0].landmarks[1] - found[0].landmarks[0]
    assert abs(np.degrees(np.arctan2(eyes[1], eyes[0])) + 35) < 6  # counter-clockwise in the picture
    refined = fast.refine(rolled, found[0].box)
    assert np.abs(refined.landmarks - found[0].landmarks).max() < 4


def test_mtcnn_refine_is_onet_on_the_earlier_box(mtcnn):
    detected = mtcnn.detect(ASTRONAUT)[0]
    refined = mtcnn.refine(ASTRONAUT, detected.box)
    assert refined is not None and refined.score > 0.99
    assert np.abs(refined.landmarks - detected.landmarks).max() < 3
    assert face.iou(refined.box, detected.box) > 0.8
    moved = tuple(np.add(detected.box, (6, -4, 0, 0)))  # the face moved a little since: ONet still finds it
    assert np.abs(mtcnn.refine(ASTRONAUT, moved).landmarks - detected.landmarks).max() < 4
    assert mtcnn.refine(BLANK, (100, 60, 80, 90)) is None


def test_detector_by_name():
    assert set(face.DETECTORS) >= {"mtcnn", "fast", "fast-short"}
    assert face.detector("fast") is face.detector("fast")
    with pytest.raises(ValueError, match="unknown detector 'haar'"):
        face.detector("haar")


def test_video_builders_record_their_detector(tmp_path):
    import tensorflow as tf

    from fbnet_tf.records import decode_example
    from tfrecords_builder import build
    from tfrecords_builder.__main__ import main

    root = tmp_path / "DISFA"
    (root / "ActionUnit_Labels" / "SN001").mkdir(parents=True)
    for au in (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26):
        (root / "ActionUnit_Labels" / "SN001" / f"SN001_au{au}.txt").write_text("1,0\n2,3\n")
    (root / "Videos_LeftCamera").mkdir()
    frame = np.ascontiguousarray(cv2.resize(ASTRONAUT, (256, 256), interpolation=cv2.INTER_AREA)[..., ::-1])
    writer = cv2.VideoWriter(str(root / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi"),
                             cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for _ in range(2):
        writer.write(frame)
    writer.release()
    crops = {}
    for detector in ("mtcnn", None):
        options = {} if detector is None else {"detector": detector}
        out = tmp_path / f"out-{detector}"
        manifest = build("disfa", root, out, image_size=64, progress=False, **options)
        assert manifest["total"] == 2
        written = json.loads((out / "manifest.json").read_text())
        assert written["arguments"]["options"]["detector"] == (detector or "fast")
        crops[detector] = [decode_example(record.numpy())["image"] for path in sorted(out.glob("disfa-*.tfrecord-*"))
                           for record in tf.data.TFRecordDataset(str(path))]
    # the two paths align the same face alike: the crops differ by a few grey levels, not by a shift
    assert len(crops["mtcnn"]) == len(crops[None]) == 2
    assert np.abs(crops["mtcnn"][0].astype(float) - crops[None][0]).mean() < 20
    assert main(["rafdb", "--root", str(tmp_path), "--out", str(tmp_path / "x"), "--detector", "fast"]) == 2
    assert main(["disfa", "--root", str(root), "--out", str(tmp_path / "y"), "--detector", "haar"]) == 2
