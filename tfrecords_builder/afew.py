"""AFEW (Dhall et al.; the EmotiW challenges): movie clips, one of 7 expressions per clip.

Layout (reference/datasets.md): `train_afew/<Class>/<9 digits>.avi` and `val_afew/<Class>/<9 digits>.avi`, classes
Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise (folder names matched case-insensitively and mapped onto the
canonical expressions by name); the `AlignedFaces_LBPTOP_Points*` folders some copies ship beside the class
folders are recognised, not read, and listed in the manifest (`extra.companion_folders`). Frames are read lazily
(`--frame-stride`), the face is detected and aligned per frame, and the clip's label applies to each frame.

Splits (the FaceBehaviorNet paper's convention; AFEW's test labels are not released): `val_afew` -> test,
`train_afew` -> train / validation 85/15 by clip (seeded hash of the clip id). Each frame keeps its clip:
sample_id = `<clip>/<frame:05d>` (0-based frame index), subject = the clip id and `extra["clip"]` = the clip id,
so frame predictions can be voted into clip accuracy. `expr_native` / `expr_native_name`: the class folder's
position in AFEW's seven (`AFEW_CLASSES`, EmotiW's alphabetical order) and its name.
"""
from __future__ import annotations

from fbnet_tf.labels import expression_index
from tfrecords_builder.base import VIDEO_DETECTOR, Builder, Item, Reason, Skip

SETS = {"train_afew": "train", "val_afew": "test"}
# Shipped beside the class folders: the organisers' aligned faces and LBP-TOP points
# (`AlignedFaces_LBPTOP_Points/`, `AlignedFaces_LBPTOP_Points_Val/`, or their .zip): not clips, not a label.
COMPANION_PREFIX = "alignedfaces_lbptop_points"
AFEW_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")  # the native index
VIDEO_SUFFIXES = (".avi",)


class Afew(Builder):
    """AFEW: 7 expressions per clip, applied to each frame; faces detected + aligned."""

    NAME = "afew"
    VERSION = "1.2.0"
    RELEASE_NOTES = {"1.0.0": "first release: val -> test, train 85/15 by clip, clip id kept per frame",
                     "1.1.0": "expr_native / expr_native_name: the class folder's index in AFEW's seven and its name",
                     "1.2.0": "option detector (--detector), default fast: BlazeFace + FaceMesh, was MTCNN"}
    DESCRIPTION = "AFEW (EmotiW) clip expressions (--root: the folder holding train_afew/ and val_afew/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request AFEW from the EmotiW organisers (https://sites.google.com/site/"
                                    "emotiwchallenge/), unpack it and point --root at the folder that holds "
                                    "train_afew/ and val_afew/.")
    EXPECTED_LAYOUT = ("train_afew/{Angry,Disgust,Fear,Happy,Neutral,Sad,Surprise}/<9 digits>.avi",
                       "val_afew/{Angry,Disgust,Fear,Happy,Neutral,Sad,Surprise}/<9 digits>.avi")
    ITEMS_PER_SHARD = 100  # one item = one clip (~1-5 s of video)
    OPTIONS = {"validation_fraction": 0.15, "seed": 0, "detector": VIDEO_DETECTOR}

    def list_items(self):
        self._companions = []
        folders = {p.name.lower(): p for p in self.root.iterdir() if p.is_dir()} if self.root.is_dir() else {}
        found = {name: folders[name] for name in SETS if name in folders}
        if not found:
            raise self.layout_error("neither train_afew/ nor val_afew/")
        for set_name, folder in sorted(found.items()):
            for class_dir in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
                where = {"file": self.relative(class_dir)}
                if class_dir.name.lower().startswith(COMPANION_PREFIX):
                    self._companions.append(self.relative(class_dir))  # listed in the manifest, not a clip
                    continue
                try:
                    expr = expression_index(class_dir.name) if class_dir.is_dir() else None
                except KeyError:
                    expr = None
                if expr is None:
                    yield Skip(Reason.LABEL_OUT_OF_RANGE, f"{class_dir.name!r} is not one of AFEW's class folders "
                                                          "Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise",
                               **where)
                    continue
                for clip in sorted(p for p in class_dir.iterdir() if not p.name.startswith(".")):
                    if clip.suffix.lower() not in VIDEO_SUFFIXES or not clip.is_file():
                        yield Skip(Reason.BAD_ROW, "not a .avi clip", file=self.relative(clip))
                        continue
                    split = SETS[set_name] if SETS[set_name] == "test" else self.seeded_split(clip.stem)
                    native = next((i for i, name in enumerate(AFEW_CLASSES) if expression_index(name) == expr), -1)
                    yield Item(split=split, key=clip.stem, file=self.relative(clip),
                               data={"clip": self.relative(clip), "expr": expr, "expr_native": native})

    def manifest_extra(self) -> dict:
        """The shipped companion folders (aligned faces, LBP-TOP points) the build recognised and did not read."""
        return {"companion_folders": getattr(self, "_companions", [])}

    def examples(self, item: Item):
        from fbnet_tf import video

        clip, path = item.key, self.root / item.data["clip"]
        frames = video.frame_count(path) if path.is_file() else 0  # every frame carries the clip's label
        # An unreadable clip counts as the frames its header declares (1 when it declares none).
        for index, frame in self.video_frames(path, item, labelled=range(frames) if frames else None):
            crop = self.detect_frame(frame, item, index, video=item.data["clip"])
            if isinstance(crop, Skip):
                yield crop
                continue
            native = item.data["expr_native"]
            yield self.sample(item, crop, sample_id=f"{clip}/{index:05d}", subject=clip, expr=item.data["expr"],
                              expr_native=native, expr_native_name=AFEW_CLASSES[native] if native >= 0 else "",
                              extra={"clip": clip})
