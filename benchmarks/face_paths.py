"""The face paths compared: time per call, 5-point agreement with MTCNN, faces found on group photos.

    python benchmarks/face_paths.py [--faces 40] [--photos 6] [--repeats 30]

- ms per call on one 640x480 frame with 1 face (`skimage.data.astronaut()`) and with 3 (demo-world faces):
  MTCNN's full cascade (`mtcnn` detect), its last stage alone on each face's box (`mtcnn` refine = ONet),
  BlazeFace + FaceMesh (`fast` detect: the full-range BlazeFace; `fast-short`: the short-range one) and FaceMesh
  alone on each face's box (`fast` refine).
- The 5 points of each path against MTCNN's detect, in % of the inter-ocular distance (mean, median) over the
  astronaut and `--faces` demo faces in 640x480 frames (turned up to 30 degrees, rolled up to 15); for demo faces
  also every path against the renderer's own points (the truth MTCNN is measured by too).
- A demo-world DISFA build (4 subjects x 150 frames, 1 worker, 64 px crops) with `--detector mtcnn` and `fast`:
  frames/s of the whole build, and how far apart the two paths put the 5 points on those frames (skip: --no-build).
- Faces found on `--photos` ~1000x700 "group photos" of 6-10 faces 80-140 px tall (demo faces and astronaut
  crops pasted on a background): a face counts as found when a detection's 5 points lie within half its
  inter-ocular distance of the truth on average.

Timings are medians of `--repeats` calls, measured on whatever CPU runs it (the README's: 2 shared cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

PATHS = ("mtcnn", "fast", "fast-short")


def demo_face(rng: np.random.Generator, height: int, width: int, face_fraction=(0.3, 0.6)):
    """A demo-world face somewhere in a height x width picture: (RGB image, its true 5 points)."""
    from fbnet_tf import face
    from fbnet_tf.demo import face_model as fm
    from fbnet_tf.demo import render as rd
    from fbnet_tf.demo import world

    person = world.sample_face(rng, fm.sample_identity(rng), int(rng.integers(7)))
    scene = world.free_scene(rng, height, width, face_fraction=face_fraction, **world.sample_look(rng, 300))
    image, points68 = rd.render(person.identity, person.intensities / 5, scene)
    return image, face.landmarks68_to_5(points68)


def astronaut_frame() -> np.ndarray:
    """640x480: the astronaut photo's top 480 rows, centred on a grey canvas."""
    from skimage import data

    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[:, 64:576] = data.astronaut()[:480]
    return frame


def three_face_frame(rng: np.random.Generator) -> np.ndarray:
    """640x480: three demo faces side by side (each in its own 480x213 picture)."""
    tiles = [demo_face(rng, 480, 214, face_fraction=(0.6, 0.75))[0] for _ in range(3)]
    return np.concatenate(tiles, axis=1)[:, :640]


def group_photo(rng: np.random.Generator, height: int = 700, width: int = 1000):
    """6-10 faces 80-140 px tall pasted on a smooth textured background: (image, [true 5 points per face])."""
    from skimage import data

    from fbnet_tf import face

    noise = rng.normal(0, 1, (height // 40, width // 40, 1)) + 0.3 * rng.normal(0, 1, (height // 40, width // 40, 3))
    background = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(120 + 30 * background, 0, 255).astype(np.uint8)
    astronaut = data.astronaut()
    astronaut_points = face.detect(astronaut)[0].landmarks
    count = int(rng.integers(6, 11))
    columns = 5
    cell_w, cell_h = width // columns, height // 2
    truths = []
    for index, cell in enumerate(rng.permutation(2 * columns)[:count]):
        face_px = float(rng.uniform(80, 140))
        tile = int(round(face_px * 1.4))
        if index % 3 == 2:  # an astronaut crop, scaled so her face is ~face_px tall
            scale = face_px / 110.0
            small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            centre = astronaut_points.mean(axis=0) * scale
            x0, y0 = (np.round(centre - tile / 2)).astype(int)
            x0, y0 = max(0, x0), max(0, y0)
            picture, points = small[y0:y0 + tile, x0:x0 + tile], astronaut_points * scale - [x0, y0]
        else:
            picture, points = demo_face(rng, tile, tile, face_fraction=(face_px / tile, face_px / tile))
        h, w = picture.shape[:2]
        left = int((cell % columns) * cell_w + rng.integers(0, max(1, cell_w - w)))
        top = int((cell // columns) * cell_h + rng.integers(0, max(1, cell_h - h)))
        image[top:top + h, left:left + w] = picture
        truths.append(np.asarray(points, np.float32) + [left, top])
    return image, truths


def error(points, reference) -> float:
    """Mean distance of 5 points from the reference's, in units of the reference's inter-ocular distance."""
    reference = np.asarray(reference, np.float64)
    iod = np.linalg.norm(reference[0] - reference[1])
    return float(np.linalg.norm(np.asarray(points, np.float64) - reference, axis=1).mean() / iod)


def closest(faces, reference):
    """The face whose points are closest to the reference's, or None."""
    return min(faces, key=lambda f: error(f.landmarks, reference), default=None)


def ms_per_call(calls: dict, repeats: int) -> dict:
    """{label: (median, fastest) ms} of each function, called round-robin (a load spike on a shared machine hits
    all of them alike; the fastest call is what it costs on an idle core)."""
    for function in calls.values():
        function()  # warm-up (tracing, first-call allocation)
    times = {label: [] for label in calls}
    for _ in range(repeats):
        for label, function in calls.items():
            start = time.perf_counter()
            function()
            times[label].append(time.perf_counter() - start)
    return {label: (1000 * float(np.median(values)), 1000 * min(values)) for label, values in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=40, help="demo faces for the agreement rows")
    parser.add_argument("--photos", type=int, default=6, help="group photos")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-build", action="store_true", help="skip the DISFA build rows")
    args = parser.parse_args(argv)
    from fbnet_tf import face
    from fbnet_tf.blazeface import BlazeFaceDetector

    rng = np.random.default_rng(args.seed)
    detectors = {name: face.detector(name) for name in PATHS}
    mtcnn, fast = detectors["mtcnn"], detectors["fast"]

    print(f"ms per call, one 640x480 frame: median (fastest) of {args.repeats} calls, round-robin")
    frames = {1: astronaut_frame(), 3: three_face_frame(rng)}
    print(f"{'path':<34}{'1 face':>14}{'3 faces':>14}")
    calls = {}
    for name, detector in [*detectors.items(), ("fast, 2 threads", BlazeFaceDetector(num_threads=2))]:
        for n, frame in frames.items():
            calls[f"{name} detect", n] = lambda detector=detector, frame=frame: detector.detect(frame)
    for name, detector in (("mtcnn", mtcnn), ("fast", fast)):
        label = "mtcnn refine (ONet on each box)" if name == "mtcnn" else "fast refine (FaceMesh on each box)"
        for n, frame in frames.items():
            boxes = [f.box for f in detector.detect(frame)]
            if len(boxes) != n:
                print(f"  ({name} found {len(boxes)} faces on the {n}-face frame)")
            calls[label, n] = lambda detector=detector, frame=frame, boxes=boxes: [detector.refine(frame, box)
                                                                                   for box in boxes]
    timed = ms_per_call(calls, args.repeats)
    rows = {}
    for (label, n), ms in timed.items():
        rows.setdefault(label, {})[n] = ms
    for label, cells in rows.items():
        print(f"{label:<34}" + "".join(f"{f'{cells[n][0]:.1f} ({cells[n][1]:.1f})':>14}" for n in (1, 3)))

    print(f"\n5-point disagreement in % of the inter-ocular distance: the astronaut + {args.faces} demo faces")
    against_mtcnn = {key: [] for key in ("fast detect", "fast-short detect", "fast refine", "mtcnn refine (ONet)")}
    against_truth = {key: [] for key in ("mtcnn detect", "fast detect", "fast-short detect")}
    missed = {name: 0 for name in PATHS}
    pictures = [(frames[1], None)] + [demo_face(rng, 480, 640) for _ in range(args.faces)]
    for image, truth in pictures:
        found = {name: detector.detect(image) for name, detector in detectors.items()}
        for name in PATHS:
            missed[name] += not found[name]
        if not found["mtcnn"]:
            continue
        reference = found["mtcnn"][0].landmarks
        for name in ("fast", "fast-short"):
            best = closest(found[name], reference)
            if best is not None:
                against_mtcnn[f"{name} detect"].append(error(best.landmarks, reference))
        if found["fast"]:
            refined = fast.refine(image, closest(found["fast"], reference).box)
            if refined is not None:
                against_mtcnn["fast refine"].append(error(refined.landmarks, reference))
        onet = mtcnn.refine(image, found["mtcnn"][0].box)
        if onet is not None:
            against_mtcnn["mtcnn refine (ONet)"].append(error(onet.landmarks, reference))
        if truth is not None:
            for name in PATHS:
                best = closest(found[name], truth)
                if best is not None:
                    against_truth[f"{name} detect"].append(error(best.landmarks, truth))
    print(f"{'path':<34}{'mean':>8}{'median':>8}{'faces':>7}")
    for title, table in (("vs MTCNN detect", against_mtcnn), ("vs the renderer's points (demo)", against_truth)):
        print(f"  {title}")
        for label, values in ((label, values) for label, values in table.items() if values):
            print(f"{label:<34}{100 * np.mean(values):>8.1f}{100 * np.median(values):>8.1f}{len(values):>7}")
    print("pictures without a face found: " + ", ".join(f"{name} {count}" for name, count in missed.items()))

    if args.photos:
        group_photos(args.photos, detectors, rng)
    if not args.no_build:
        disfa_build(detectors)
    return 0


def group_photos(photos: int, detectors, rng) -> None:
    """Faces found (and false detections) by each path on `photos` synthetic group photos."""
    print(f"\nfaces found on {photos} group photos (~1000x700, 6-10 faces of 80-140 px)")
    truth_total, found_total, false_total = 0, {name: 0 for name in PATHS}, {name: 0 for name in PATHS}
    seconds = {name: [] for name in PATHS}
    for _ in range(photos):
        image, truths = group_photo(rng)
        truth_total += len(truths)
        for name, detector in detectors.items():
            start = time.perf_counter()
            faces = detector.detect(image)
            seconds[name].append(time.perf_counter() - start)
            hits = sum(any(error(f.landmarks, t) < 0.5 for f in faces) for t in truths)
            found_total[name] += hits
            false_total[name] += sum(all(error(f.landmarks, t) >= 0.5 for t in truths) for f in faces)
    print(f"{'path':<14}{'found':>12}{'false':>7}{'ms/photo':>10}")
    for name in PATHS:
        print(f"{name:<14}{found_total[name]:>6} / {truth_total:<4}{false_total[name]:>7}"
              f"{1000 * np.median(seconds[name]):>10.0f}")


def disfa_build(detectors) -> None:
    """A demo-world DISFA build with each video path; then the two paths' 5 points on the same frames."""
    import tempfile

    from fbnet_tf import video
    from fbnet_tf.demo import render_world
    from tfrecords_builder import build

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        render_world(scratch / "world", seed=0, scale="small", workers=1, databases=("disfa",))
        root = scratch / "world" / "disfa"
        print("\ndemo-world DISFA build, 1 worker, 64 px crops")
        print(f"{'detector':<10}{'frames':>8}{'written':>9}{'wall s':>9}{'frames/s':>10}")
        for name in ("mtcnn", "fast", "fast-short"):
            start = time.perf_counter()
            manifest = build("disfa", root, scratch / f"out-{name}", image_size=64, progress=False,
                             allow_partial=True, detector=name)
            seconds = time.perf_counter() - start
            frames = manifest["accounting"]["inputs"]
            print(f"{name:<10}{frames:>8}{manifest['total']:>9}{seconds:>9.1f}{frames / seconds:>10.1f}")
        errors = []
        for path in sorted(root.rglob("*.avi")):
            for _, frame in video.frames(path):
                found = {name: detectors[name].detect(frame) for name in ("mtcnn", "fast")}
                if found["mtcnn"] and found["fast"]:
                    errors.append(error(found["fast"][0].landmarks, found["mtcnn"][0].landmarks))
        print(f"fast vs mtcnn 5 points on those {len(errors)} frames: mean {100 * np.mean(errors):.1f}%, median "
              f"{100 * np.median(errors):.1f}% of the inter-ocular distance")


if __name__ == "__main__":
    sys.exit(main())
