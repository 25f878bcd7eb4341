"""The tracker's rules on scenes whose faces are known: ids survive a crossing (one face hidden behind the other for
a few frames), a face gone longer than `max_lost` frames comes back with a new id, detection runs every k frames
and at once when a refine loses its face. The detector here reads the scene's boxes (a stand-in for a real one:
the end-to-end test with MTCNN on a video file is in test_predict.py)."""
import numpy as np
import pytest

from fbnet_tf import face
from fbnet_tf.tracking import Tracker


class SceneDetector(face.Detector):
    """Faces of a synthetic scene: `scene[t]` maps a person to their box in frame t; `now` is the frame the tracker
    is looking at. A person hidden behind a later one (boxes overlapping by IoU > `occluded_iou`) is not found."""

    def __init__(self, scene, occluded_iou=0.1, low_refine=()):
        self.scene, self.now, self.occluded_iou = scene, 0, occluded_iou
        self.low_refine = set(low_refine)  # frames where refine's confidence drops
        self.detected_on, self.refined_on = [], []

    def visible(self):
        people = list(self.scene[self.now].items())
        return [(person, box) for i, (person, box) in enumerate(people)
                if not any(face.iou(box, other) > self.occluded_iou for _, other in people[i + 1:])]

    def detect(self, image_rgb, min_score=0.9):
        self.detected_on.append(self.now)
        return [as_face(box, 0.99) for _, box in self.visible()]

    def refine(self, image_rgb, box, min_score=0.5):
        self.refined_on.append(self.now)
        overlaps = [(face.iou(box, found), found) for _, found in self.visible()]
        overlap, found = max(overlaps, default=(0.0, None))
        if overlap < 0.3:
            return None
        score = 0.2 if self.now in self.low_refine else 0.95
        return as_face(found, score) if score >= min_score else None


def as_face(box, score):
    x, y, w, h = box
    points = np.float32([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]) * [w, h] + [x, y]
    return face.Face(box=tuple(float(v) for v in box), landmarks=points, score=score)


def run(tracker, detector, frames):
    """Per frame: {person: face_id} (the person found by their exact box)."""
    image = np.zeros((4, 4, 3), np.uint8)  # the scene detector does not look at pixels
    seen = []
    for t in range(frames):
        detector.now = t
        boxes = {box: person for person, box in detector.scene[t].items()}
        seen.append({boxes[tracked.face.box]: tracked.face_id for tracked in tracker.update(image)})
    return seen


def crossing_scene(frames=40, speed=8.0):
    """A walks right, B walks left a little lower; mid-way B passes in front of A and hides it for a few frames."""
    scene = []
    for t in range(frames):
        scene.append({"A": (20 + speed * t, 100, 100, 120), "B": (20 + speed * (frames - 1 - t), 140, 100, 120)})
    return scene


def test_two_faces_crossing_keep_their_ids():
    detector = SceneDetector(crossing_scene())
    seen = run(Tracker(detector, detect_every=5), detector, 40)
    hidden = [t for t, ids in enumerate(seen) if "A" not in ids]
    assert 2 <= len(hidden) <= 10 and hidden == list(range(hidden[0], hidden[-1] + 1))  # hidden in the middle
    # Picked up again where its velocity took it (its last box is 80 px behind by then: IoU 0).
    assert {ids["A"] for ids in seen if "A" in ids} == {0}
    assert {ids["B"] for ids in seen} == {1}


def test_a_face_gone_for_20_frames_returns_with_a_new_id_and_one_gone_for_3_keeps_it():
    box = (200, 100, 100, 120)
    scene = [{"A": box} if not (10 <= t < 13 or 30 <= t < 50) else {} for t in range(70)]
    detector = SceneDetector(scene)
    seen = run(Tracker(detector, detect_every=5, max_lost=10), detector, 70)
    # A face that reappears is found on the next detection frame (every 5th: 15 and 50).
    assert [ids.get("A") for ids in seen] == [0] * 10 + [None] * 5 + [0] * 15 + [None] * 20 + [1] * 20


def test_detection_every_k_frames_and_at_once_when_refine_loses_confidence():
    scene = [{"A": (100 + t, 100, 100, 120), "B": (300, 100 + t, 100, 120)} for t in range(20)]
    detector = SceneDetector(scene, low_refine={7})
    tracker = Tracker(detector, detect_every=5)
    seen = run(tracker, detector, 20)
    assert detector.detected_on == [0, 5, 7, 12, 17]
    # Refine on every other frame, for each of the two faces (frame 7: A's refine fails, B's is not tried;
    # on a detection frame the detector found both, so no refine is needed).
    assert detector.refined_on == sorted([t for t in range(20) if t not in (0, 5, 7, 12, 17) for _ in "AB"] + [7])
    assert all(ids == {"A": 0, "B": 1} for ids in seen)
    assert tracker.detections == 5 and tracker.refines == len(detector.refined_on)


def test_detect_every_1_detects_every_frame_and_ids_are_deterministic():
    runs = []
    for _ in range(2):
        detector = SceneDetector(crossing_scene())
        runs.append(run(Tracker(detector, detect_every=1), detector, 40))
        assert detector.detected_on == list(range(40))
    assert runs[0] == runs[1]


def test_new_faces_get_ids_in_order_of_score_and_bad_settings_are_refused():
    detector = SceneDetector([{"A": (0, 0, 50, 50), "B": (100, 0, 50, 50), "C": (200, 0, 50, 50)}])
    assert run(Tracker(detector), detector, 1) == [{"A": 0, "B": 1, "C": 2}]
    with pytest.raises(ValueError, match="detect_every must be >= 1"):
        Tracker(detector, detect_every=0)
