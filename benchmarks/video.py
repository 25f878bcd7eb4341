"""Video prediction end to end (decode, detect or track, align, model, CSV), in one run.

    python benchmarks/video.py [--frames 60] [--models-dir /tmp/fbnet-video-models]

Two synthetic 640x480 videos (one face: the astronaut's; three faces: hers and two demo-world faces), the faces
gliding across a plain background. For each video, model and face path, `predict.write_results` (what the CLI runs
after loading the model) is timed on a warm predictor: frames/s. Face paths: MTCNN's full cascade on every frame
(`--detector mtcnn --detect-every 1`, the reference and what predict did before tracking), MTCNN detecting every 5
frames and tracking in between, and the fast detector tracked the same way when it is installed
(`fbnet_tf.face.DETECTORS["fast"]`). Models: the paper preset (96 px, 50.5 M parameters) and the small preset, both
random-init and exported to dynamic-range TFLite (cached in --models-dir). Also: model throughput by batch size, and
the peak RSS of the `predict` CLI on the one-face video and on one 10x as long (memory must not grow with length).
Targets: the tracked fast path >= 10x MTCNN-every-frame; >= 25 frames/s on the one-face video with the paper model.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

SIZE = (480, 640)
FACE_PX = 150


def astronaut_portrait(face_px: int = FACE_PX) -> np.ndarray:
    """The astronaut's head and shoulders from skimage's photo, scaled so her face is about `face_px` tall, with
    the demo portraits' proportions."""
    import skimage.data

    image = skimage.data.astronaut()
    x, y, w, h = 182, 64, 83, 107  # MTCNN's box on it
    cx, cy = x + w / 2, y + h / 2
    half_w, half_h = h * 8 / 15, h * 2 / 3  # the portrait is 16/15 x 4/3 of the face height
    crop = image[int(cy - half_h):int(cy + half_h), int(cx - half_w):int(cx + half_w)]
    scale = face_px / h
    return cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA)


def write_videos(folder: Path, frames: int, repeat: int = 1, only=None) -> dict[str, Path]:
    """{"1 face": path, "3 faces": path}: `frames` x `repeat` frames at 25 fps, the faces going back and forth.
    One face: the astronaut, FACE_PX tall, crossing the frame. Three faces, 100 px tall: the astronaut and two demo
    faces, each in its own horizontal lane (they never overlap: see the tracker's README section for crossings)."""
    from fbnet_tf.demo import moving

    height, width = SIZE
    one = astronaut_portrait()
    three = [astronaut_portrait(100), *moving.portraits(2, face_px=100, seed=3)]

    def back_and_forth(start, end):
        there = moving.glide(start, end, frames)
        return (there + there[::-1]) * (repeat // 2) + there * (repeat % 2)

    ph, pw = one.shape[:2]
    lane_h, lane_w = three[0].shape[:2]
    scenes = {"1 face": ([one], [back_and_forth((20, 60), (width - pw - 20, 120))]),
              "3 faces": (three, [back_and_forth((10, 8 + 158 * lane), (width - lane_w - 10 - 90 * lane,
                                                                         12 + 158 * lane)) for lane in range(3)])}
    videos = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, (people, tracks) in scenes.items():
        if only and name != only:
            continue
        videos[name] = moving.write_video(
            folder / f"{name.replace(' ', '_')}_x{repeat}.mp4",
            (moving.compose(people, positions, SIZE) for positions in zip(*tracks)), fps=25.0)
    return videos


def export_models(folder: Path) -> dict[str, Path]:
    """{"paper": .tflite, "small": .tflite}: random-init presets as dynamic-range TFLite (built once per folder)."""
    paths = {}
    for preset in ("paper", "small"):
        path = folder / preset / "fbnet_dynamic.tflite"
        if not path.exists():
            import keras

            from fbnet_tf import config, export
            from fbnet_tf.models import build_inference_model

            keras.utils.set_random_seed(0)
            model = build_inference_model(config.override(config.ExperimentConfig(), [f"model.preset={preset}"]))
            version = export.save_savedmodel(model, folder / preset / "savedmodel" / "1")
            path.write_bytes(export.convert_tflite(version, "dynamic"))
            print(f"exported {preset} -> {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
        paths[preset] = path
    return paths


def batch_sweep(model_path: Path, crops: np.ndarray, sizes=(1, 2, 4, 8, 16, 32), repeats: int = 3) -> dict:
    """Crops/s of predict's model wrapper at each batch size (best of `repeats` passes over the crops)."""
    from fbnet_tf import predict

    model = predict._Model(model_path)
    rates = {}
    for size in sizes:
        batches = [crops[i:i + size] for i in range(0, len(crops) - size + 1, size)]
        model(batches[0])
        best = min(_seconds(lambda: [model(b) for b in batches]) for _ in range(repeats))
        rates[size] = len(batches) * size / best
    return rates


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def warm_predictor(model_path: Path, video: Path, detector: str, detect_every: int):
    """A Predictor that has run once on the video's first frame (detector loaded, functions traced)."""
    from fbnet_tf import predict, video as video_io

    predictor = predict.Predictor(model_path, detector=detector, detect_every=detect_every)
    first = next(video_io.frames(video))[1]
    predictor.predict([first, first])
    return predictor


def end_to_end(predictor, video: Path, out: Path) -> tuple[float, int]:
    """(frames/s, face rows) of predict.write_results (what the CLI runs once the model is loaded)."""
    from fbnet_tf import predict

    started = time.perf_counter()
    faces, _ = predict.write_results(predictor, video, out, progress=False)
    return predictor.frames_read / (time.perf_counter() - started), faces


def face_path_alone(video: Path, detector: str, detect_every: int) -> float:
    """Frames/s of decoding, detecting or tracking and aligning alone (no model, no CSV)."""
    from fbnet_tf import face, video as video_io
    from fbnet_tf.tracking import Tracker

    found = face.detector(detector)
    first = next(video_io.frames(video))[1]
    Tracker(found, detect_every).update(first)  # warm-up
    tracker, frames = Tracker(found, detect_every), 0
    started = time.perf_counter()
    for _, image in video_io.frames(video):
        for tracked in tracker.update(image):
            face.align(image, tracked.face.landmarks)
        frames += 1
    return frames / (time.perf_counter() - started)


def peak_rss_mb(video: Path, model: Path, out: Path, extra=()) -> tuple[float, float]:
    """(peak RSS MB, wall seconds) of one `python -m fbnet_tf.predict` process."""
    script = ("import resource, subprocess, sys; "
              "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    command = [sys.executable, "-m", "fbnet_tf.predict", str(video), "--model", str(model), "--out", str(out),
               *extra]
    started = time.time()
    done = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    return int(done.stdout.split()[-1]) / 1024, time.time() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="frames of each timed video")
    parser.add_argument("--memory-repeat", type=int, default=10, help="the long video is this many times longer")
    parser.add_argument("--models-dir", default=str(Path(tempfile.gettempdir()) / "fbnet-video-models"))
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved repetitions; the best is kept (other processes only ever add time)")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)

    from fbnet_tf import cli, face, predict

    cli.quiet_tensorflow()
    models = export_models(Path(args.models_dir))
    paths = [("mtcnn, every frame", "mtcnn", 1), ("mtcnn, tracked (detect every 5)", "mtcnn", predict.DETECT_EVERY)]
    if "fast" in face.DETECTORS:
        paths.append(("fast, tracked (detect every 5)", "fast", predict.DETECT_EVERY))
    else:
        print("note: no `fast` detector registered in fbnet_tf.face.DETECTORS: only MTCNN paths are measured")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        videos = write_videos(scratch, args.frames)

        # Model throughput by batch size, on aligned crops of the three-face video.
        frames = [image for _, (_, image) in zip(range(12), predict.video.frames(videos["3 faces"]))]
        crops = np.stack([face.align(f, found.landmarks) for f in frames for found in face.detect(f)])
        crops = crops[np.arange(64) % len(crops)]
        print(f"\nmodel crops/s by batch size ({len(crops)} aligned crops, dynamic-range TFLite)")
        print(f"{'model':<8}" + "".join(f"{f'b{size}':>8}" for size in (1, 2, 4, 8, 16, 32)))
        for name, path in models.items():
            rates = batch_sweep(path, crops)
            print(f"{name:<8}" + "".join(f"{rate:8.1f}" for rate in rates.values()), flush=True)

        print(f"\nend to end, {args.frames} frames of 640x480 at 25 fps (decode, detect/track, align, model, CSV), "
              f"best of {args.rounds} interleaved rounds")
        predictors = {(v, m, p): warm_predictor(models[m], videos[v], detector, every)
                      for v in videos for m in models for p, detector, every in paths}
        results, alone, rows = {}, {}, {}
        for round_ in range(args.rounds):
            for video_name, video_path in videos.items():
                for path_name, detector, every in paths:
                    fps = face_path_alone(video_path, detector, every)
                    alone[video_name, path_name] = max(fps, alone.get((video_name, path_name), 0))
                    for model_name in models:
                        key = video_name, model_name, path_name
                        fps, rows[key] = end_to_end(predictors[key], video_path, scratch / "out")
                        results[key] = max(fps, results.get(key, 0))
            print(f"  round {round_ + 1} done", flush=True)
        reference = paths[0][0]
        print(f"\n{'video':<8} {'model':<6} {'face path':<32} {'frames/s':>9} {'vs mtcnn every frame':>21} "
              f"{'face path alone':>16} {'vs mtcnn':>9}")
        print("-" * 107)
        for video_name in videos:
            for model_name in models:
                for path_name, _, _ in paths:
                    fps, bare = results[video_name, model_name, path_name], alone[video_name, path_name]
                    ratio = fps / results[video_name, model_name, reference]
                    print(f"{video_name:<8} {model_name:<6} {path_name:<32} {fps:9.1f} {ratio:20.1f}x {bare:16.1f} "
                          f"{bare / alone[video_name, reference]:8.1f}x")
        print("face rows: " + ", ".join(f"{v}/{m}/{p.split(',')[0]}{' tracked' if 'tracked' in p else ''}: {n}"
                                        for (v, m, p), n in rows.items()))
        best = paths[-1][0]
        single = results["1 face", "paper", best]
        speedups = [results[v, m, best] / results[v, m, reference] for v in videos for m in models]
        print(f"\n{best}: {min(speedups):.1f}-{max(speedups):.1f}x MTCNN every frame (target >= 10x); "
              f"1 face, paper model: {single:.1f} frames/s (target >= 25)")

        if not args.skip_memory:
            print(f"\npeak RSS of the predict CLI (small model, default face path), 1x vs "
                  f"{args.memory_repeat}x video length")
            print(f"{'video':<28} {'frames':>7} {'peak RSS MB':>12} {'seconds':>8}")
            for repeat in (1, args.memory_repeat):
                video = write_videos(scratch / f"x{repeat}", args.frames, repeat, "1 face")["1 face"] if repeat > 1 \
                    else videos["1 face"]
                rss, seconds = peak_rss_mb(video, models["small"], scratch / f"memory{repeat}")
                print(f"{video.name:<28} {args.frames * repeat:7d} {rss:12.0f} {seconds:8.1f}", flush=True)
    print(f"\nload average now {os.getloadavg()[0]:.1f} (2-core machine shared with other work)")


if __name__ == "__main__":
    main()
