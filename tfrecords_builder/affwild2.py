"""Aff-Wild2 (Kollias & Zafeiriou; the ABAW challenges): valence/arousal, expressions and AUs per video frame.

`--root` is the folder holding `cropped_aligned/<video>/00001.jpg ...` (the aligned crops ABAW ships, resized
here) and one of three annotation releases (reference/datasets.md), found at the root, in any folder directly
under it (`annotations/`) or, when none is there, one level deeper (`3rd ABAW Annotations/Third ABAW
Annotations/`, `annotations/annotations/`); `--option annotations=PATH` names the folder (also outside the root):

- ABAW 2020: `{VA_Set,EXPR_Set,AU_Set}/{Training_Set,Validation_Set}/<video>.txt` (8 AUs, 7 expressions);
- ABAW 2022+: `{VA_Estimation_Challenge,EXPR_Recognition_Challenge|EXPR_Classification_Challenge,
  AU_Detection_Challenge}/{Train_Set|Training_Set,Validation_Set}/<video>.txt` (12 AUs; expression 7 "Other" is
  no basic expression: `expr` -1, and the frame is still written with `expr_native` 7, as ABAW's score counts it);
- ABAW 2022 multi-task: `training_set_annotations_22.txt` / `validation_set_annotations_22.txt` (also without
  `_22`), rows `image,valence,arousal,expression,AU1..AU12` with image = `<video>/<frame>.jpg`.

In every per-task file line 1 is the header (labels are mapped by its names) and the k-th row after it is frame
k, whose image is `cropped_aligned/<video>/{k:05d}.jpg`. -5 (VA) and -1 (expression, AU) mean "not annotated".
Every expression keeps the release's own code and name (`expr_native`, `expr_native_name`); every AU column goes
to `facs/*` (occurrence, intensity -1) and the canonical `au`/`au_mask` come from them.
A frame annotated in several task files is ONE example carrying all its labels; subject = the video folder name
(`_left`/`_right` kept: the two people of one video are two subjects). Training -> train, Validation ->
validation; ABAW's test labels are not public, so there is no test split (a `Test_Set` folder, if a release
ever ships one, becomes test). A video a task puts in validation and another in training goes to validation
with all its labels (no image is in two splits). `--frame-stride k` keeps frames 1, 1+k, 1+2k ...

Skips: a labelled frame without an image (the face detector found none) is counted as `missing_file`, and a
frame every task marks "not annotated" as `no_label`, both as one record per run of consecutive frames (the
message gives the frame range; the record's `count`, the run's length, is what the summary adds up); images
without any label row (and whole videos in no annotation file, e.g. the test set) are counted as
`unlabelled_images`, one record per video counting its images; malformed rows and codes out of range are
recorded per line, and only that task's label of the frame is dropped.
"""
from __future__ import annotations

import os
import re

from fbnet_tf.labels import expression_index, expression_map, parse_au_number
from fbnet_tf.records import SPLITS
from tfrecords_builder.base import Builder, Item, Option, Reason, Skip, file_digest, parse_int, resolve_in_root

RELEASES = {  # release -> task -> accepted folder names
    "2020": {"va": ("VA_Set",), "expr": ("EXPR_Set",), "au": ("AU_Set",)},
    "2022": {"va": ("VA_Estimation_Challenge",),
             "expr": ("EXPR_Recognition_Challenge", "EXPR_Classification_Challenge"),
             "au": ("AU_Detection_Challenge",)},
}
SPLIT_FOLDERS = {"training_set": "train", "train_set": "train", "validation_set": "validation",
                 "test_set": "test"}
# The multi-task files (the `_22` suffix as released in 2022; also accepted without it).
MTL_FILES = {f"{name}_set_annotations{suffix}.txt": split for name, split in (("training", "train"),
                                                                              ("validation", "validation"))
             for suffix in ("_22", "")}
# The multi-task file's expression codes 0..7 (ABAW 2022 order; "Other" is not a basic expression).
MTL_EXPRESSIONS = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
IMAGES = "cropped_aligned"
VA_MISSING, CODE_MISSING = -5.0, -1
SPLIT_PRIORITY = {split: rank for rank, split in enumerate(SPLITS)}  # a video in several splits goes to the highest
_FRAME_IMAGE = re.compile(r"^(\d+)\.jpg$", re.IGNORECASE)


class AffWild2(Builder):
    """Aff-Wild2 / ABAW: VA, 7 expressions and 8 or 12 AUs per frame, aligned crops resized."""

    NAME = "affwild2"
    VERSION = "1.1.0"
    RELEASE_NOTES = {"1.0.0": "first release: ABAW 2020, ABAW 2022+ and 2022 multi-task annotation forms",
                     "1.1.0": "expr_native / expr_native_name (the release's own code and name); frames labelled "
                              "only 'Other' are written (expr -1, expr_native 7); AU columns in facs/*"}
    DESCRIPTION = "Aff-Wild2 (ABAW) VA/expressions/AUs (--root: the folder holding cropped_aligned/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Request Aff-Wild2 through the ABAW challenge (https://ibug.doc.ic.ac.uk/resources/aff-wild2/), unpack the "
        "cropped_aligned images and the annotations into one folder and point --root at it.")
    EXPECTED_LAYOUT = (
        f"{IMAGES}/<video>/00001.jpg",
        "annotations/{VA_Set,EXPR_Set,AU_Set}/{Training_Set,Validation_Set}/<video>.txt   (ABAW 2020), or",
        "{VA_Estimation_Challenge,EXPR_Recognition_Challenge,AU_Detection_Challenge}/{Train_Set,Validation_Set}/"
        "<video>.txt   (ABAW 2022+; at the root or up to two folders down, or --option annotations=PATH), or",
        "training_set_annotations_22.txt, validation_set_annotations_22.txt   (ABAW 2022 multi-task)")
    ITEMS_PER_SHARD = 2  # one item = one video (up to ~50k frames)
    OPTIONS = {"release": Option("auto", choices=("auto", "2020", "2022", "mtl")), "annotations": ""}

    # --- listing (main process) ----------------------------------------------------------------------------
    def list_items(self):
        image_roots = sorted(p for p in self.root.glob(f"{IMAGES}*") if p.is_dir())
        release, found = self._find_release()
        if not image_roots:
            raise self.layout_error(f"no {IMAGES}/ folder")
        videos: dict[str, dict] = {}
        if release == "mtl":
            yield from self._list_multitask(found, image_roots, videos)
        else:
            yield from self._list_task_folders(found, videos)
        for video in sorted(videos):
            entry = videos[video]
            image_dir = next((r / video for r in image_roots if (r / video).is_dir()), None)
            if image_dir is None:
                yield Skip(Reason.MISSING_FILE, f"video {video} is annotated but has no image folder "
                                                f"{IMAGES}/{video}/", **entry.pop("where"))
                continue
            split, where = max(entry.pop("splits"), key=SPLIT_PRIORITY.get), entry.pop("where")
            yield Item(split=split, key=video, data={"video": video, "images": self.relative(image_dir), **entry},
                       **where)
        for image_root in image_roots:
            for folder in sorted(p for p in image_root.iterdir() if p.is_dir() and p.name not in videos):
                count = sum(1 for name in os.listdir(folder) if _FRAME_IMAGE.match(name))
                yield Skip("unlabelled_images", f"{count} images of video {folder.name}: the video is in no "
                                                "annotation file (ABAW's test labels are not public)",
                           file=self.relative(folder), count=0)  # images with no label are not inputs

    def _find_release(self) -> tuple[str, dict]:
        """(release, {task: folder} or {split: multi-task file}) found under the root (or `annotations=PATH`)."""
        wanted = self.option_choice("release", ("auto", "2020", "2022", "mtl"))
        candidates = {}
        for places in self._annotation_places():  # the shallowest level that holds the release(s) is the one read
            candidates = {release: found for release, found in _releases_in(places).items()
                          if wanted in ("auto", release)}
            if candidates:
                break
        if not candidates and wanted != "auto":
            raise self.layout_error(f"no ABAW {wanted} annotations")
        if not candidates:
            raise self.layout_error("no annotation folders or files of any ABAW release")
        if len(candidates) > 1:
            raise self.layout_error(f"several annotation releases found ({', '.join(sorted(candidates))}); "
                                    "choose one with --option release=2020|2022|mtl")
        release, found = next(iter(candidates.items()))
        for task, paths in sorted(found.items()):
            if len(paths) > 1:  # two copies of one task's annotations: which one is meant is the user's call
                raise self.layout_error(f"ABAW {release} {task} annotations found in several folders ("
                                        f"{', '.join(self._name(p) for p in paths)}); point --option "
                                        "annotations=PATH at the folder to read")
        return release, {task: paths[0] for task, paths in found.items()}

    def _annotation_places(self):
        """The folders that may hold the annotations, level by level (a level is listed only when the one above
        holds none): the root and every folder directly under it (`annotations/`, `3rd ABAW Annotations/` ...),
        then one level deeper (`3rd ABAW Annotations/Third ABAW Annotations/`, `annotations/annotations/`).
        With `annotations=PATH`: that folder, then its subfolders."""
        if self.options["annotations"]:
            chosen = self.option_path("annotations", folder=True)
            yield [chosen]
            yield _subfolders(chosen)
            return
        first = _subfolders(self.root) if self.root.is_dir() else []
        yield [self.root, *first]
        yield [folder for parent in first for folder in _subfolders(parent)]

    def _name(self, path) -> str:
        """How records name an annotation file: relative to the root, or its full path when kept elsewhere."""
        return self.relative_or_name(path, str(path))

    def _list_task_folders(self, folders: dict, videos: dict):
        for task, folder in sorted(folders.items()):
            for split_dir in sorted(folder.iterdir()):
                if split_dir.name.startswith("."):
                    continue
                split = SPLIT_FOLDERS.get(split_dir.name.lower())
                if split is None or not split_dir.is_dir():
                    yield Skip(Reason.BAD_ROW, f"{split_dir.name} is not a split folder; expected "
                                               "Training_Set/Train_Set or Validation_Set",
                               file=self._name(split_dir))
                    continue
                for path in sorted(split_dir.iterdir()):
                    if path.name.startswith("."):
                        continue
                    where = {"file": self._name(path), "line": None}
                    if path.suffix.lower() != ".txt" or not path.is_file():
                        yield Skip(Reason.BAD_ROW, "not a <video>.txt annotation file", **where)
                        continue
                    entry = videos.setdefault(path.stem, {"tasks": {}, "splits": set(), "where": where})
                    if task in entry["tasks"]:
                        yield Skip(Reason.DUPLICATE, f"video {path.stem} is annotated twice for {task}; the first "
                                                     f"({entry['tasks'][task]['file']}) is kept", **where)
                        continue
                    entry["tasks"][task] = {"file": where["file"], "sha256": file_digest(path)}
                    entry["splits"].add(split)

    def _list_multitask(self, files: dict, image_roots: list, videos: dict):
        for split, path in sorted(files.items()):
            rel = self._name(path)
            lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
            header = [h.strip().lower() for h in (lines[0].split(",") if lines else [])]
            columns = {name: header.index(name) for name in ("image", "valence", "arousal", "expression")
                       if name in header}
            au_header = [h for h in header if h.startswith("au")]
            au_positions = [header.index(h) for h in au_header]
            if len(columns) < 4 or not au_header:
                yield Skip(Reason.BAD_ROW, f"header {lines[:1]} is not "
                                           "'image,valence,arousal,expression,AU1,...,AU26'", file=rel, line=1)
                continue
            for line_number, line in enumerate(lines[1:], start=2):
                fields = [f.strip() for f in line.split(",")]
                where = {"file": rel, "line": line_number}
                if not line.strip():
                    continue
                if len(fields) != len(header):
                    yield Skip(Reason.BAD_ROW, f"{len(fields)} fields; expected {len(header)} ({','.join(header)})",
                               **where)
                    continue
                image = fields[columns["image"]]
                try:
                    resolve_in_root(image_roots[0], image, **where)
                except Skip as skip:
                    yield skip
                    continue
                video, _, name = image.replace("\\", "/").rpartition("/")
                match = _FRAME_IMAGE.match(name)
                if not video or not match or "/" in video:
                    yield Skip(Reason.BAD_ROW, f"image {image!r} is not '<video>/<frame>.jpg'", **where)
                    continue
                entry = videos.setdefault(video, {"rows": [], "splits": set(), "where": where})
                entry["splits"].add(split)
                entry["rows"].append([rel, line_number, int(match.group(1)),
                                      fields[columns["valence"]], fields[columns["arousal"]],
                                      fields[columns["expression"]]]
                                     + [fields[i] for i in au_positions])
                entry.setdefault("au_headers", {})[rel] = au_header

    # --- examples (worker) ---------------------------------------------------------------------------------
    def examples(self, item: Item):
        video, image_dir = item.data["video"], self.root / item.data["images"]
        try:
            names = os.listdir(image_dir)
        except OSError as error:
            raise Skip(Reason.MISSING_FILE, f"cannot list {item.data['images']}: {error}") from None
        images = {int(m.group(1)): name for name in names if (m := _FRAME_IMAGE.match(name))}
        # frame -> {task: label or None (not annotated), "where": (file, line) of its first row, "bad": a bad row}
        frames: dict[int, dict] = {}
        for problem in self._read_labels(item, frames):
            yield problem
        missing, unannotated = [], []
        for frame in sorted(frames):
            if (frame - 1) % self.frame_stride:
                continue
            labels = frames[frame]
            usable = {task: value for task, value in labels.items()
                      if task in ("va", "expr", "au") and value is not None}
            if not usable:
                if not labels.get("bad"):  # a frame with a bad row is already recorded by that row
                    unannotated.append((frame, labels["where"]))
                continue
            if frame not in images:
                missing.append((frame, labels["where"]))
                continue
            try:
                image = self.read_image(image_dir / images[frame], item)
            except Skip as skip:  # one bad image drops its frame, not the video
                skip.file, skip.line = labels["where"]
                yield skip
                continue
            yield self.sample(item, self.resize_aligned(image), sample_id=f"{video}/{frame:05d}", subject=video,
                              va=usable.get("va"), facs=usable.get("au"), **usable.get("expr", {}))
        folder = item.data["images"]
        for run in _runs(missing):
            (first, (file, line)), last = run[0], run[-1][0]
            yield Skip(Reason.MISSING_FILE, f"frames {first}-{last} ({len(run)} frames) of {video} are labelled but "
                                            f"have no image {folder}/{first:05d}.jpg..{last:05d}.jpg", file, line,
                       count=len(run))
        for run in _runs(unannotated):
            (first, (file, line)), last = run[0], run[-1][0]
            yield Skip(Reason.NO_LABEL, f"frames {first}-{last} ({len(run)} frames) of {video}: every task marks "
                                        "them not annotated (-5 / -1)", file, line, count=len(run))
        unlabelled = sorted(set(images) - set(frames))
        if unlabelled:
            yield Skip("unlabelled_images", f"{len(unlabelled)} images of video {video} have no label row "
                                            f"(frames {_ranges(unlabelled)})", file=folder, count=0)  # not inputs

    def _read_labels(self, item: Item, frames: dict):
        """Fill `frames` from the item's annotation rows; yield a Skip per malformed header or row."""
        if "rows" in item.data:  # the multi-task file: one row carries every task
            au_tables = {file: _au_table(names) for file, names in item.data["au_headers"].items()}
            expressions = (expression_map(MTL_EXPRESSIONS), MTL_EXPRESSIONS)
            for file, line, frame, valence, arousal, expression, *aus in item.data["rows"]:
                labels = frames.setdefault(frame, {"where": (file, line)})
                for task, parse, fields in (("va", _parse_va, [valence, arousal]),
                                            ("expr", _parse_expr, [expression]), ("au", _parse_au, aus)):
                    try:
                        labels[task] = parse(fields, expressions if task == "expr" else au_tables[file])
                    except Skip as skip:
                        skip.file, skip.line, labels["bad"] = file, line, True
                        yield skip
            return
        for task, source in sorted(item.data["tasks"].items()):
            file = source["file"]
            try:
                lines = self.read_lines(file)
            except Skip as skip:
                yield skip
                continue
            try:
                parse, table = _header(task, lines[0] if lines else "")
            except Skip as skip:
                skip.file, skip.line = file, 1
                yield skip
                continue
            for frame, line in enumerate(lines[1:], start=1):
                labels = frames.setdefault(frame, {"where": (file, frame + 1)})
                try:
                    labels[task] = parse([f.strip() for f in line.split(",")], table)
                except Skip as skip:
                    skip.file, skip.line, labels["bad"] = file, frame + 1, True
                    yield skip


def _subfolders(folder) -> list:
    """The folders directly in `folder` that may hold annotations (not hidden, not the image folders)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", IMAGES)))


def _releases_in(places: list) -> dict[str, dict[str, list]]:
    """{release: {task (or split, for the multi-task files): [the folders (files) holding it]}} over `places`;
    within one place the first accepted name wins."""
    found: dict[str, dict[str, list]] = {}
    for place in places:
        for release, tasks in RELEASES.items():
            for task, names in tasks.items():
                folder = next((place / name for name in names if (place / name).is_dir()), None)
                if folder is not None:
                    found.setdefault(release, {}).setdefault(task, []).append(folder)
        for split in sorted(set(MTL_FILES.values())):
            file = next((place / name for name, s in MTL_FILES.items() if s == split and (place / name).is_file()),
                        None)
            if file is not None:
                found.setdefault("mtl", {}).setdefault(split, []).append(file)
    return found


def _header(task: str, header: str):
    """(row parser, its lookup table) for a per-task file's header; Skip(BAD_ROW) for a header that isn't one."""
    names = [h.strip() for h in header.split(",")]
    expected = {"va": "valence,arousal", "expr": "Neutral,Anger,...,Surprise[,Other]", "au": "AU1,AU2,..."}[task]
    try:
        if task == "va" and [n.lower() for n in names] == ["valence", "arousal"]:
            return _parse_va, None
        if task == "expr" and all(expression_index(n) is not None or n.lower() == "other" for n in names):
            return _parse_expr, (expression_map(names), tuple(names))
        if task == "au" and names and all(parse_au_number(n) for n in names):
            return _parse_au, _au_table(names)
    except (KeyError, ValueError):
        pass
    raise Skip(Reason.BAD_ROW, f"header {header!r} is not the {task.upper()} header; expected '{expected}'")


def _parse_va(fields: list, _table):
    if len(fields) != 2:
        raise Skip(Reason.BAD_ROW, f"{len(fields)} fields; expected 'valence,arousal'")
    try:
        valence, arousal = float(fields[0]), float(fields[1])
    except ValueError:
        raise Skip(Reason.BAD_ROW, f"valence/arousal {fields} are not numbers") from None
    if VA_MISSING in (valence, arousal):
        return None
    if not (-1.0 <= valence <= 1.0 and -1.0 <= arousal <= 1.0):
        raise Skip(Reason.LABEL_OUT_OF_RANGE, f"valence/arousal ({valence}, {arousal}) outside [-1, 1] (and not -5)")
    return valence, arousal


def _parse_expr(fields: list, table):
    """{"expr": canonical index or -1 ("Other"), "expr_native": the code, "expr_native_name": its header name}, or
    None for -1 (not annotated)."""
    expressions, names = table
    if len(fields) != 1:
        raise Skip(Reason.BAD_ROW, f"{len(fields)} fields; expected one expression code")
    code = parse_int(fields[0], "expression code")
    if code == CODE_MISSING:
        return None
    if not 0 <= code < len(expressions):
        raise Skip(Reason.LABEL_OUT_OF_RANGE, f"expression code {code} outside 0..{len(expressions) - 1} (and not -1)")
    return {"expr": int(expressions[code]), "expr_native": code, "expr_native_name": names[code]}


def _au_table(names: list) -> list[int]:
    """The AU number of each column of an AU header."""
    return [parse_au_number(name) for name in names]


def _parse_au(fields: list, numbers: list[int]):
    """{AU number: (occurrence, -1)} of the annotated AUs of a row, or None when every AU is -1."""
    if len(fields) != len(numbers):
        raise Skip(Reason.BAD_ROW, f"{len(fields)} fields; expected {len(numbers)} AU codes")
    try:
        codes = [int(f) for f in fields]
    except ValueError:
        raise Skip(Reason.BAD_ROW, f"AU codes {fields} are not integers") from None
    if any(code not in (CODE_MISSING, 0, 1) for code in codes):
        raise Skip(Reason.LABEL_OUT_OF_RANGE, f"AU codes {codes} outside 0/1 (and not -1)")
    facs = {number: (float(code), -1.0) for number, code in zip(numbers, codes) if code != CODE_MISSING}
    return facs or None


def _runs(frames: list) -> list[list]:
    """[(frame, where), ...] sorted by frame -> runs of consecutive frames."""
    runs = []
    for entry in frames:
        if runs and entry[0] == runs[-1][-1][0] + 1:
            runs[-1].append(entry)
        else:
            runs.append([entry])
    return runs


def _ranges(numbers: list[int], limit: int = 8) -> str:
    """'1-3, 7, 9-12' (the first `limit` runs)."""
    runs = _runs([(n, None) for n in numbers])
    text = [f"{r[0][0]}-{r[-1][0]}" if len(r) > 1 else f"{r[0][0]}" for r in runs[:limit]]
    return ", ".join(text) + (", ..." if len(runs) > limit else "")
