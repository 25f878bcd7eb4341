"""CelebA builder over a tiny tree in CelebA's own layout (Anno/, Eval/, Img/img_align_celeba/), written by the test."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build
from tfrecords_builder.writer import BuildError

# CelebA's header, spelled out independently of the builder.
NAMES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
         "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
         "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
         "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
         "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
PARTITION = {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: 2, 8: 2, 9: 2}  # image number -> 0 train, 1 val, 2 test
FACE = (56, 31, 116)  # top, left, side of the face square in a 218x178 aligned image (documented in the builder)


def colour(index):
    return (index * 37 % 200 + 20, index * 91 % 200 + 20, index * 53 % 200 + 20)  # RGB


def values(index):
    """A distinct {1, -1} pattern per image."""
    return [1 if (index * 7 + k * 3) % 5 < 2 else -1 for k in range(40)]


@pytest.fixture
def celeba(tmp_path):
    root = tmp_path / "CelebA"
    for folder in ("Anno", "Eval", "Img/img_align_celeba"):
        (root / folder).mkdir(parents=True)
    images = root / "Img" / "img_align_celeba"
    rows = []
    for index in range(1, 10):
        # Face square in the row's colour, the margin white: a crop off the square would show white.
        image = np.full((218, 178, 3), 255, np.uint8)
        top, left, side = FACE
        image[top:top + side, left:left + side] = colour(index)
        cv2.imwrite(str(images / f"{index:06d}.jpg"), image[..., ::-1])
        rows.append(f"{index:06d}.jpg " + " ".join(f"{v:2d}" for v in values(index)))
    rows += [
        "000010.jpg " + " ".join(["1"] * 39),             # 40 fields, not 41              line 12
        "000011.jpg " + " ".join(["1"] * 39 + ["0"]),     # 0 is not a CelebA value         line 13
        "000012.jpg " + " ".join(["1"] * 40),             # not in the partition file       line 14
        "000013.jpg " + " ".join(["1"] * 40),             # missing image                   line 15
        "../../x.jpg " + " ".join(["1"] * 40),            # escapes the root                line 16
        "000001.jpg " + " ".join(["1"] * 40),             # duplicate of line 3             line 17
    ]
    # The count line says 20 although 15 rows follow: recorded, not fatal.
    (root / "Anno" / "list_attr_celeba.txt").write_text("20\n" + " ".join(NAMES) + " \n" + "\n".join(rows) + "\n")
    partition = [f"{i:06d}.jpg {p}" for i, p in PARTITION.items()]
    partition += ["000010.jpg 0", "000011.jpg 0", "000013.jpg 0", "../../x.jpg 0", "000014.jpg 3", "000015.jpg"]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return root


def read_all(out):
    examples = {}
    for split in ("train", "validation", "test"):
        files = sorted(str(f) for f in out.glob(f"celeba-{split}.tfrecord-*"))
        for record in tf.data.TFRecordDataset(files):
            example = decode_example(record.numpy())
            examples[example["sample_id"]] = example
    return examples


def test_celeba_attributes_by_name_partition_crop_and_skips(celeba, tmp_path):
    manifest = build("celeba", celeba, tmp_path / "out", progress=False, image_size=64)
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 4, "validation": 2, "test": 3}
    examples = read_all(tmp_path / "out")
    split_name = {0: "train", 1: "validation", 2: "test"}
    for index, partition in PARTITION.items():
        example = examples[f"Img/img_align_celeba/{index:06d}.jpg"]
        assert example["split"] == split_name[partition]
        assert example["attributes_mask"] == 1.0
        expected = {name: int(v == 1) for name, v in zip(NAMES, values(index))}
        assert {name: int(v) for name, v in zip(NAMES, example["attributes"])} == expected
        assert example["expr"] == -1 and example["va_mask"] == 0 and not example["au_mask"].any()
        assert example["image"].shape == (64, 64, 3)
        # The whole output is the face square: its colour everywhere, no white margin.
        np.testing.assert_allclose(example["image"].reshape(-1, 3).mean(0), colour(index), atol=4)
        assert example["image"].max() < 235  # colours stay below 220; the white margin would show as 255
    assert manifest["arguments"]["options"]["attribute_names"].split(",") == NAMES
    assert manifest["extra"] == {"attribute_names": NAMES}  # the order of the `attributes` feature, as a list
    assert manifest["splits"]["train"]["labels"]["attributes"] == 4
    skipped = {(r["file"], r["line"], r["reason"]) for r in manifest["skipped"]}
    attr, part = "Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt"
    assert skipped == {(attr, 12, "bad_row"), (attr, 13, "label_out_of_range"), (attr, 14, "no_label"),
                       (attr, 15, "missing_file"), (attr, 16, "unsafe_path"), (attr, 17, "duplicate"),
                       (attr, 1, "count_mismatch"), (part, 14, "label_out_of_range"), (part, 15, "bad_row")}


def test_celeba_reorders_attributes_to_the_option_order(celeba, tmp_path):
    reordered = list(reversed(NAMES))
    manifest = build("celeba", celeba, tmp_path / "out", progress=False, image_size=32,
                     attribute_names=",".join(reordered))
    assert manifest["extra"]["attribute_names"] == reordered
    example = read_all(tmp_path / "out")["Img/img_align_celeba/000002.jpg"]
    expected = {name: int(v == 1) for name, v in zip(NAMES, values(2))}
    assert [int(v) for v in example["attributes"]] == [expected[name] for name in reordered]


def test_celeba_strict_and_layout_error(celeba, tmp_path):
    with pytest.raises(BuildError):
        build("celeba", celeba, tmp_path / "strict", strict=True, progress=False)
    with pytest.raises(LayoutError) as error:
        build("celeba", celeba / "Img", tmp_path / "x", progress=False)
    for expected in ("Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt", "Img/img_align_celeba/000001.jpg"):
        assert expected in str(error.value)
