"""CelebA (Liu et al. 2015): the 40 binary face attributes FATAUVA-Net learns, from the aligned 178x218 images.

Layout (reference/datasets.md): `Anno/list_attr_celeba.txt` (line 1 the image count, line 2 the 40 attribute
names, then `000001.jpg` and 40 values in {1, -1} split on whitespace), `Eval/list_eval_partition.txt`
(`000001.jpg 0`: 0 train, 1 val, 2 test) and `Img/img_align_celeba/000001.jpg`; or the flat folder torchvision
lays out (`list_attr_celeba.txt`, `list_eval_partition.txt`, `img_align_celeba/` together, at the root or in
`celeba/`). Each of the three is looked for in that order; sample ids are image paths relative to the root.

Attributes are mapped by NAME onto the order of the `attribute_names` option (default: CelebA's own order,
`ATTRIBUTE_NAMES`), which the manifest records as the list `extra.attribute_names`; 1 -> 1, -1 -> 0, mask 1.

Face crop: the aligned images put every face at the same place (mean landmarks of `img_align_celeba`: eyes near
y=111, mouth near y=152, centred at x=89 in a 178-wide, 218-high image). The builder cuts the square whose eye
and mouth heights match the 5-point alignment template (`fbnet_tf.face.TEMPLATE_112`: eyes at 46%, mouth at 82%
of the side), i.e. side 0.65 x width, top at 0.255 x height, centred horizontally (116x116 at (31, 56) for
178x218), and resizes it to `--image-size`. The same fractions apply to copies resized to another size.
"""
from __future__ import annotations

import numpy as np

from fbnet_tf.labels import CELEBA_ATTRIBUTES
from tfrecords_builder.base import Builder, Item, Reason, Skip, resolve_in_root

ATTRIBUTE_FILE = "Anno/list_attr_celeba.txt"
PARTITION_FILE = "Eval/list_eval_partition.txt"
IMAGE_DIR = "Img/img_align_celeba"
# Where each part is looked for, in order: the official folders, the flat folder torchvision lays out
# (`list_attr_celeba.txt`, `list_eval_partition.txt` and `img_align_celeba/` together), at the root or in `celeba/`.
FLAT_PLACES = ("", "celeba/")
PLACES = {part: (path, *(place + path.rpartition("/")[2] for place in FLAT_PLACES))
          for part, path in (("attributes", ATTRIBUTE_FILE), ("partition", PARTITION_FILE), ("images", IMAGE_DIR))}
# CelebA's own attribute order (line 2 of list_attr_celeba.txt): the default order of the `attributes` feature.
ATTRIBUTE_NAMES = CELEBA_ATTRIBUTES
PARTITIONS = {"0": "train", "1": "validation", "2": "test"}
# The face square inside an aligned CelebA image, as fractions (see the module docstring).
FACE_SIDE_OF_WIDTH, FACE_TOP_OF_HEIGHT = 0.65, 0.255


def face_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the face square in an aligned CelebA image of that size."""
    side = min(int(round(FACE_SIDE_OF_WIDTH * width)), height, width)
    top = min(max(0, int(round(FACE_TOP_OF_HEIGHT * height))), height - side)
    left = (width - side) // 2
    return top, left, side


class CelebA(Builder):
    """CelebA attributes: 40 binary attributes mapped by name, official train/val/test partition."""

    NAME = "celeba"
    VERSION = "1.0.0"
    RELEASE_NOTES = {"1.0.0": "first release: fixed face square of the aligned images, official partition"}
    DESCRIPTION = "CelebA 40 attributes (--root: the folder holding Anno/, Eval/ and Img/, or torchvision's celeba/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Download CelebA from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
                                    "(Anno/, Eval/ and Img/img_align_celeba.zip unpacked in Img/) and point --root "
                                    "at the folder that holds Anno/.")
    EXPECTED_LAYOUT = (ATTRIBUTE_FILE, PARTITION_FILE, f"{IMAGE_DIR}/000001.jpg",
                       "(or, as torchvision lays it out) list_attr_celeba.txt, list_eval_partition.txt, "
                       "img_align_celeba/000001.jpg, at the root or in celeba/")
    OPTIONS = {"attribute_names": ",".join(ATTRIBUTE_NAMES)}

    def _attribute_order(self) -> list[str]:
        names = [name.strip() for name in self.options["attribute_names"].split(",") if name.strip()]
        if len(names) != len(ATTRIBUTE_NAMES) or len(set(names)) != len(names):
            raise ValueError(f"{self.NAME}: option attribute_names lists {len(names)} names "
                             f"({len(set(names))} distinct); expected {len(ATTRIBUTE_NAMES)} distinct names")
        return names

    def manifest_extra(self) -> dict:
        """The attribute order of the `attributes` feature, so readers need not parse the option string."""
        return {"attribute_names": self._attribute_order()}

    def _layout(self) -> dict[str, str]:
        """{"attributes" | "partition" | "images": its path relative to the root}, each found in `PLACES` order."""
        found = {part: next((path for path in paths if (self.root / path).exists()), None)
                 for part, paths in PLACES.items()}
        missing = [" or ".join(PLACES[part]) for part, path in found.items() if path is None]
        if missing:
            raise self.layout_error(f"missing {'; '.join(missing)}")
        return found

    def _partition(self, partition_file: str) -> tuple[dict, list[Skip]]:
        """{image name: split} from list_eval_partition.txt, and the skips of its bad lines."""
        splits, skips = {}, []
        for number, line in enumerate((self.root / partition_file).read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            where = {"file": partition_file, "line": number}
            if len(fields) != 2:
                skips.append(Skip(Reason.BAD_ROW, f"{len(fields)} fields in {line!r}; expected '<name>.jpg <0|1|2>'",
                                  **where))
            elif fields[1] not in PARTITIONS:
                skips.append(Skip(Reason.LABEL_OUT_OF_RANGE, f"partition {fields[1]!r}; expected 0, 1 or 2",
                                  **where))
            else:
                splits.setdefault(fields[0], PARTITIONS[fields[1]])
        return splits, skips

    def list_items(self):
        layout = self._layout()
        attribute_file, partition_file = layout["attributes"], layout["partition"]
        order = self._attribute_order()
        partition, skips = self._partition(partition_file)
        yield from skips
        lines = (self.root / attribute_file).read_text(encoding="utf-8-sig", errors="replace").splitlines()
        header = lines[1].split() if len(lines) > 1 else []
        if sorted(header) != sorted(order):
            raise self.layout_error(f"{attribute_file} line 2 names {len(header)} attributes "
                                    f"({', '.join(sorted(set(header) ^ set(order))[:6])} differ); expected the 40 "
                                    f"CelebA attribute names")
        position = [header.index(name) for name in order]  # canonical position -> native column (after the name)
        rows = 0
        for number, line in enumerate(lines[2:], start=3):
            fields = line.split()
            if not fields:
                continue
            rows += 1
            where = {"file": attribute_file, "line": number}
            if len(fields) != len(header) + 1:
                yield Skip(Reason.BAD_ROW, f"{len(fields)} fields; expected the image name and {len(header)} "
                                           "values", **where)
                continue
            name, values = fields[0], fields[1:]
            if any(value not in ("1", "-1") for value in values):
                bad = next(f"{header[i]}={v}" for i, v in enumerate(values) if v not in ("1", "-1"))
                yield Skip(Reason.LABEL_OUT_OF_RANGE, f"{bad}; expected 1 or -1", **where)
                continue
            if name not in partition:
                yield Skip(Reason.NO_LABEL, f"{name} is not in {partition_file}: no split", **where)
                continue
            try:
                image = resolve_in_root(self.root / layout["images"], name, **where)
            except Skip as skip:
                yield skip
                continue
            attributes = [int(values[column] == "1") for column in position]
            yield Item(split=partition[name], key=self.relative(image), data={"attributes": attributes}, **where)
        count = lines[0].strip() if lines else ""
        if count != str(rows):
            # The rows present are still built; the mismatch is recorded so that a cut-off download is noticed.
            yield Skip("count_mismatch", f"line 1 says {count!r} images, the file has {rows} rows",
                       file=attribute_file, line=1)

    def examples(self, item: Item):
        image = self.read_image(self.root / item.key, item)
        top, left, side = face_square(*image.shape[:2])
        crop = self.resize_aligned(np.ascontiguousarray(image[top:top + side, left:left + side]))
        yield self.sample(item, crop, attributes=item.data["attributes"])
