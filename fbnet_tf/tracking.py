"""Faces followed across a video's frames, each with a `face_id` that stays the same while the person is visible.

    tracker = Tracker(face.detector("fast"), detect_every=5)
    for image in frames:                      # in order, one video at a time (a new video: a new Tracker)
        for tracked in tracker.update(image): # TrackedFace(face_id, face, detected)
            ...

The full detector (`Detector.detect`) runs on the first frame and then every `detect_every` frames; in between,
each visible face is only re-measured where its track expects it (`Detector.refine` on its box in the frame
before, moved on at the track's recent velocity: landmarks and a confidence, much cheaper than `detect`). A refine
whose confidence falls below `keep_score`, or two refined faces overlapping by more than `duplicate_iou` (two tracks
following one person), makes that frame a detection frame at once. So do faces whose expected boxes overlap: a
half-hidden face is followed by the detector alone (refine would slide onto the face in front of it), and the
velocity is not updated there (the hidden face's box is pulled off it).

Detections are associated to tracks greedily by IoU with the box each track expects: the pair with the largest IoU
first, then the next among the rest, down to `match_iou` (ties: the older track, the better-scored detection), so
the result never depends on set or dict order. A face seen a frame ago that the detector now misses (a turned
head) is kept if `refine` still finds it where expected and no detection is near. An unmatched detection starts a
track with a new id (ids count up from 0 in order of appearance); a track that is not found is lost (its expected
box keeps moving at its velocity, so a face hidden for a few frames while it walks behind another is picked up
again), and it ends after `max_lost` frames without being seen. There is no re-identification: a face that leaves
and comes back after its track has ended gets a new id.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fbnet_tf.face import Detector, Face, iou


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame: its track's id, where it is (`Face`), and whether `detect` (not `refine`) found it."""

    face_id: int
    face: Face
    detected: bool


@dataclass
class _Track:
    face_id: int
    face: Face
    lost: int = 0  # frames since it was last seen
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels a frame, smoothed over its sightings

    def expected_box(self) -> tuple[float, float, float, float]:
        """Where it should be in the next frame: its last box moved on at its velocity."""
        x, y, w, h = self.face.box
        frames = self.lost + 1
        return x + self.velocity[0] * frames, y + self.velocity[1] * frames, w, h

    def seen(self, face: Face, steady: bool = True):
        """Found at `face`; `steady`: where it is measured well enough to update its velocity (not next to another
        face, where part of it may be hidden and its box pulled off)."""
        if steady:
            frames = self.lost + 1
            (x0, y0, w0, h0), (x1, y1, w1, h1) = self.face.box, face.box
            step = ((x1 + w1 / 2 - x0 - w0 / 2) / frames, (y1 + h1 / 2 - y0 - h0 / 2) / frames)
            # Half the last step, half the earlier velocity: detector jitter of a pixel or two barely moves it.
            self.velocity = (0.5 * (self.velocity[0] + step[0]), 0.5 * (self.velocity[1] + step[1]))
        self.face, self.lost = face, 0


class Tracker:
    """Follows the faces of one video; `update(image)` per frame, in order. Deterministic: the same frames give the
    same ids. See the module docstring for the rules.

    `min_score`: detections scoring less are ignored. `keep_score`: a refine scoring less counts as the face being
    lost, and triggers a detection on that frame. `match_iou`: the least IoU between a detection and the box a track
    expects to continue the track. `max_lost`: frames a track may go unseen before it ends (a face hidden longer comes
    back with a new id). `duplicate_iou`: a refined face overlapping another face by more than this is taken for
    that face (refine has slid onto a neighbour).
    """

    def __init__(self, detector: Detector, detect_every: int = 5, *, min_score: float = 0.9,
                 keep_score: float = 0.5, match_iou: float = 0.3, max_lost: int = 10, duplicate_iou: float = 0.3):
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detector, self.detect_every = detector, int(detect_every)
        self.min_score, self.keep_score = min_score, keep_score
        self.match_iou, self.max_lost, self.duplicate_iou = match_iou, max_lost, duplicate_iou
        self.tracks: list[_Track] = []
        self.next_id = 0
        self.since_detection = 0  # frames since the last detection frame
        self.detections = self.refines = 0  # calls made, for the benchmark and the tests

    def update(self, image_rgb: np.ndarray) -> list[TrackedFace]:
        """The faces in this frame (the next of the video), by `face_id`."""
        visible = [track for track in self.tracks if track.lost == 0]
        # Faces about to overlap are followed by the detector alone: refine on a half-hidden face slides onto the one
        # in front of it.
        close = self._close(visible)
        if 0 < self.since_detection < self.detect_every and not close:
            refined = self._refine(image_rgb, visible)
            if refined is not None:
                self.since_detection += 1
                for track in self.tracks:
                    if track.lost:
                        track.lost += 1
                self._end_lost()
                return [TrackedFace(track.face_id, track.face, False) for track in refined]
        return self._detect(image_rgb, close)

    @staticmethod
    def _close(visible: list[_Track]) -> set[int]:
        """The ids of the tracks whose expected box overlaps another's."""
        boxes = [track.expected_box() for track in visible]
        return {track.face_id for i, track in enumerate(visible)
                if any(iou(boxes[i], box) > 0 for j, box in enumerate(boxes) if j != i)}

    def _refine(self, image_rgb, visible: list[_Track]) -> list[_Track] | None:
        """Each visible track re-measured where it is expected; None when one is lost or two merge (detect
        instead)."""
        found = []
        for track in visible:
            face = self._refine_one(image_rgb, track)
            if face is None:
                return None
            found.append(face)
        for i, a in enumerate(found):
            if any(iou(a.box, b.box) > self.duplicate_iou for b in found[i + 1:]):
                return None
        for track, face in zip(visible, found):
            track.seen(face)
        return visible

    def _refine_one(self, image_rgb, track: _Track) -> Face | None:
        self.refines += 1
        face = self.detector.refine(image_rgb, track.expected_box(), self.keep_score)
        return face if face is not None and face.score >= self.keep_score else None

    def _detect(self, image_rgb, close: set[int] = frozenset()) -> list[TrackedFace]:
        self.detections += 1
        self.since_detection = 1
        found = self.detector.detect(image_rgb, self.min_score)
        pairs = sorted(((iou(track.expected_box(), face.box), t, d) for t, track in enumerate(self.tracks)
                        for d, face in enumerate(found)), key=lambda p: (-p[0], p[1], p[2]))
        detected, used = set(), set()  # track ids, detection indices
        for overlap, t, d in pairs:
            if overlap < self.match_iou:
                break
            track = self.tracks[t]
            if track.face_id in detected or d in used:
                continue
            detected.add(track.face_id)
            used.add(d)
            track.seen(found[d], steady=track.face_id not in close)
        taken = [face.box for face in found]  # faces already accounted for
        for track in self.tracks:
            if track.face_id in detected:
                continue
            # A face the detector missed (a turned head, say) that was seen a frame ago may still be where its track
            # says: kept if refine is confident there and what it found is not a face the detector did find. Not
            # tried next to another face: a half-hidden face is missed, and refine would slide onto its neighbour.
            alone = all(iou(track.expected_box(), face.box) == 0 for face in found)
            face = self._refine_one(image_rgb, track) if track.lost == 0 and alone else None
            if face is not None and all(iou(face.box, box) <= self.duplicate_iou for box in taken):
                track.seen(face, steady=track.face_id not in close)
                taken.append(face.box)
            else:
                track.lost += 1
        for d, face in enumerate(found):  # best score first, so the best-seen new face gets the lower id
            if d not in used:
                self.tracks.append(_Track(self.next_id, face))
                detected.add(self.next_id)
                self.next_id += 1
        self._end_lost()
        return [TrackedFace(track.face_id, track.face, track.face_id in detected) for track in self.tracks
                if track.lost == 0]

    def _end_lost(self):
        self.tracks = [track for track in self.tracks if track.lost <= self.max_lost]
