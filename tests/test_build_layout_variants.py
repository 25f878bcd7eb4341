"""Layouts the releases ship in besides the canonical one, each found by looking (trees written by the test):
Aff-Wild2 annotations nested a level deeper (or named with `--option annotations=PATH`), AFEW's
`AlignedFaces_LBPTOP_Points*` companion folders, AffectNet's `Manually_Annotated/Manually_Annotated_Images/`, and
CelebA's flat folder as torchvision lays it out."""
import cv2
import numpy as np
import pytest
import tensorflow as tf
from skimage import data

from fbnet_tf.labels import AU_NAMES, EXPRESSIONS
from fbnet_tf.records import decode_example
from tfrecords_builder import LayoutError, build

from test_build_affectnet import assert_aligned, unaligned_face

# Native tables, spelled out independently of the builders.
EXPR_2022 = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
AUS_2020 = ("AU1", "AU2", "AU4", "AU6", "AU12", "AU15", "AU20", "AU25")
AFFECTNET_CODES = {0: "Neutral", 1: "Happiness", 2: "Sadness", 3: "Surprise", 4: "Fear", 5: "Disgust", 6: "Anger"}
CELEBA_NAMES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
                "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
                "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
                "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
                "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def colour(index):
    return (index * 37 % 200 + 20, index * 91 % 200 + 20, index * 53 % 200 + 20)  # RGB


def write_solid(path, index, shape=(48, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (np.zeros((*shape, 3), np.uint8) + np.array(colour(index), np.uint8))[..., ::-1])


def write_text(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def read_all(out, source):
    files = sorted(str(f) for f in out.glob(f"{source}-*.tfrecord-*"))
    return {e["sample_id"]: e for e in (decode_example(r.numpy()) for r in tf.data.TFRecordDataset(files))}


# --- Aff-Wild2 ---------------------------------------------------------------------------------------------------
VA_ROWS = {"vid_a": ["0.5,-0.25", "-0.75,0.125"], "vid_b": ["0.25,0.5"]}
EXPR_ROWS = {"vid_a": ["4", "6"], "vid_b": ["1"]}


def write_abaw2022(annotations, images_root):
    """Two videos, VA + expression (ABAW 2022+ folders) under `annotations`, crops under `images_root`."""
    for index, (video, rows) in enumerate(VA_ROWS.items()):
        for frame in range(1, len(rows) + 1):
            write_solid(images_root / "cropped_aligned" / video / f"{frame:05d}.jpg", index * 10 + frame)
        split = "Train_Set" if video == "vid_a" else "Validation_Set"
        write_text(annotations / "VA_Estimation_Challenge" / split / f"{video}.txt", ["valence,arousal", *rows])
        write_text(annotations / "EXPR_Recognition_Challenge" / split / f"{video}.txt",
                   [",".join(EXPR_2022), *EXPR_ROWS[video]])


def assert_abaw2022(manifest, out):
    assert manifest["skipped"] == []
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 2, "validation": 1}
    examples = read_all(out, "affwild2")
    assert sorted(examples) == ["vid_a/00001", "vid_a/00002", "vid_b/00001"]
    for index, video in enumerate(VA_ROWS):
        for frame, (va, code) in enumerate(zip(VA_ROWS[video], EXPR_ROWS[video]), start=1):
            example = examples[f"{video}/{frame:05d}"]
            np.testing.assert_allclose(example["va"], [float(v) for v in va.split(",")])
            assert EXPRESSIONS[example["expr"]] == EXPR_2022[int(code)]
            np.testing.assert_allclose(example["image"].reshape(-1, 3).mean(0), colour(index * 10 + frame), atol=4)


def test_affwild2_finds_annotations_nested_a_level_deeper(tmp_path):
    root = tmp_path / "Aff-Wild2"
    write_abaw2022(root / "3rd ABAW Annotations" / "Third ABAW Annotations", root)
    assert_abaw2022(build("affwild2", root, tmp_path / "out", strict=True, progress=False), tmp_path / "out")


def test_affwild2_finds_the_2020_annotations_folder_nested_in_itself(tmp_path):
    root = tmp_path / "Aff-Wild2"
    rows = ["1,0,0,0,1,0,0,1", "0,1,-1,0,0,0,1,0"]  # AU1 AU2 AU4 AU6 AU12 AU15 AU20 AU25; -1 = not annotated
    for frame in (1, 2):
        write_solid(root / "cropped_aligned" / "clip" / f"{frame:05d}.jpg", frame)
    write_text(root / "annotations" / "annotations" / "AU_Set" / "Training_Set" / "clip.txt", [",".join(AUS_2020), *rows])
    manifest = build("affwild2", root, tmp_path / "out", strict=True, progress=False)
    examples = read_all(tmp_path / "out", "affwild2")
    assert manifest["splits"]["train"]["count"] == 2 and sorted(examples) == ["clip/00001", "clip/00002"]
    for frame, row in enumerate(rows, start=1):
        codes = dict(zip(AUS_2020, (int(v) for v in row.split(","))))
        example = examples[f"clip/{frame:05d}"]
        assert {AU_NAMES[i] for i in np.flatnonzero(example["au_mask"])} == {au for au, c in codes.items() if c >= 0}
        assert {AU_NAMES[i] for i in np.flatnonzero(example["au"])} == {au for au, c in codes.items() if c == 1}


def test_affwild2_annotations_option_names_the_folder_and_settles_two_copies(tmp_path):
    root = tmp_path / "Aff-Wild2"
    write_abaw2022(tmp_path / "downloads" / "ABAW annotations", root)  # kept outside the root
    with pytest.raises(LayoutError, match="no annotation folders"):
        build("affwild2", root, tmp_path / "o1", progress=False)
    manifest = build("affwild2", root, tmp_path / "o2", strict=True, progress=False,
                     annotations=str(tmp_path / "downloads" / "ABAW annotations"))
    assert_abaw2022(manifest, tmp_path / "o2")

    # Two copies of the same release at the same depth: which is meant is asked, not guessed.
    write_abaw2022(root / "copy 1", root)
    write_abaw2022(root / "copy 2", tmp_path / "scratch")
    with pytest.raises(LayoutError, match=r"several folders \(copy 1/.*, copy 2/.*--option annotations=PATH"):
        build("affwild2", root, tmp_path / "o3", progress=False)
    assert_abaw2022(build("affwild2", root, tmp_path / "o4", progress=False, annotations="copy 2"), tmp_path / "o4")


# --- AFEW --------------------------------------------------------------------------------------------------------
def test_afew_stock_copy_with_lbptop_companion_folders_passes_strict(tmp_path):
    root = tmp_path / "EmotiW"
    face = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    clip = root / "Train_AFEW" / "Happy" / "000000101.avi"
    clip.parent.mkdir(parents=True)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (256, 256))
    writer.write(np.ascontiguousarray(face[..., ::-1]))
    writer.release()
    # The organisers' aligned faces and LBP-TOP points, as shipped beside the class folders.
    write_solid(root / "Train_AFEW" / "AlignedFaces_LBPTOP_Points" / "Faces" / "000000101" / "frame1.png", 1)
    write_text(root / "Train_AFEW" / "AlignedFaces_LBPTOP_Points" / "Points" / "000000101" / "frame1.txt", ["1 2"])
    write_solid(root / "Val_AFEW" / "AlignedFaces_LBPTOP_Points_Val" / "Faces" / "000000900" / "frame1.png", 2)
    (root / "Val_AFEW" / "Sad").mkdir(parents=True)

    manifest = build("afew", root, tmp_path / "out", strict=True, progress=False, validation_fraction=0.0)
    assert manifest["skipped"] == [] and manifest["total"] == 1
    assert manifest["extra"]["companion_folders"] == ["Train_AFEW/AlignedFaces_LBPTOP_Points",
                                                      "Val_AFEW/AlignedFaces_LBPTOP_Points_Val"]
    (example,) = read_all(tmp_path / "out", "afew").values()
    assert example["sample_id"] == "000000101/00000" and EXPRESSIONS[example["expr"]] == "Happiness"


# --- AffectNet ---------------------------------------------------------------------------------------------------
def test_affectnet_images_under_manually_annotated(tmp_path):
    root = tmp_path / "AffectNet"
    images = root / "Manually_Annotated" / "Manually_Annotated_Images"
    rows, expected = [], {}
    for index, code in enumerate((1, 6, 3)):
        image, landmarks = unaligned_face(index)
        relative = f"{index + 1}/{index:056x}.jpg"
        (images / relative).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / relative), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
        flat = ";".join(f"{v:.3f}" for v in landmarks.ravel())
        rows.append(f"{relative},0,0,200,200,{flat},{code},{0.1 * index:.1f},-0.5")
        expected[f"Manually_Annotated/Manually_Annotated_Images/{relative}"] = (code, 0.1 * index)
    write_text(root / "Manually_Annotated_file_lists" / "training.csv", rows[:2])
    write_text(root / "Manually_Annotated_file_lists" / "validation.csv", rows[2:])
    manifest = build("affectnet", root, tmp_path / "out", strict=True, progress=False, validation_fraction=0.0)
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 2, "test": 1}
    examples = read_all(tmp_path / "out", "affectnet")
    assert set(examples) == set(expected)
    for key, (code, valence) in expected.items():
        assert EXPRESSIONS[examples[key]["expr"]] == AFFECTNET_CODES[code]
        np.testing.assert_allclose(examples[key]["va"], [valence, -0.5], atol=1e-6)
        assert_aligned(examples[key]["image"])


# --- CelebA ------------------------------------------------------------------------------------------------------
CELEBA_PARTITION = {1: 0, 2: 1, 3: 2, 4: 0}  # image number -> 0 train, 1 val, 2 test


def celeba_values(index):
    return [1 if (index * 5 + k * 3) % 7 < 3 else -1 for k in range(40)]


@pytest.mark.parametrize("folder", ["", "celeba"])
def test_celeba_flat_folder_as_torchvision_lays_it_out(tmp_path, folder):
    root = tmp_path / "data"
    flat = root / folder
    rows = []
    for index in CELEBA_PARTITION:
        write_solid(flat / "img_align_celeba" / f"{index:06d}.jpg", index, shape=(218, 178))
        rows.append(f"{index:06d}.jpg " + " ".join(f"{v:2d}" for v in celeba_values(index)))
    write_text(flat / "list_attr_celeba.txt", [str(len(rows)), " ".join(CELEBA_NAMES), *rows])
    write_text(flat / "list_eval_partition.txt", [f"{i:06d}.jpg {p}" for i, p in CELEBA_PARTITION.items()])
    write_text(flat / "identity_CelebA.txt", [f"{i:06d}.jpg {i}" for i in CELEBA_PARTITION])  # also shipped, unused

    manifest = build("celeba", root, tmp_path / "out", strict=True, progress=False, image_size=32)
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 2, "validation": 1, "test": 1}
    examples = read_all(tmp_path / "out", "celeba")
    prefix = f"{folder}/" if folder else ""
    for index, partition in CELEBA_PARTITION.items():
        example = examples[f"{prefix}img_align_celeba/{index:06d}.jpg"]
        assert example["split"] == ("train", "validation", "test")[partition]
        assert [int(v) for v in example["attributes"]] == [int(v == 1) for v in celeba_values(index)]
        np.testing.assert_allclose(example["image"].reshape(-1, 3).mean(0), colour(index), atol=4)
