"""VGG-FACE backbone: published layer names and shapes, preprocessing, and the published-weight loader against an
h5 file written here in the exact layout of rcmalli_vggface_tf_(notop_)vgg16.h5."""
import h5py
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fbnet_tf.models.vggface import (CONV_LAYERS, LAYER_NAMES, VGGFACE_MEAN_BGR, FacePreprocessing,  # noqa: E402
                                     VGGFaceBackbone, load_vggface_weights)

PUBLISHED_ORDER = ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2", "conv3_1", "conv3_2", "conv3_3",
                   "pool3", "conv4_1", "conv4_2", "conv4_3", "pool4", "conv5_1", "conv5_2", "conv5_3", "pool5"]
FULL_FILTERS = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "conv5": 512}


def write_keras2_h5(path, with_top=False, seed=0, skip=()):
    """Write random VGG-FACE weights the way Keras 2 `save_weights` wrote rcmalli's files; return the arrays."""
    rng = np.random.default_rng(seed)
    names = ["input_1"] + PUBLISHED_ORDER + (["flatten", "fc6", "fc6/relu", "fc7", "fc7/relu", "fc8", "fc8/softmax"]
                                             if with_top else [])
    written = {}
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names if n not in skip])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        channels = 3
        for name in names:
            if name in skip:
                continue
            group = f.create_group(name)
            shapes = {}
            if name.startswith("conv"):
                filters = FULL_FILTERS[name.split("_")[0]]
                shapes = {"kernel": (3, 3, channels, filters), "bias": (filters,)}
                channels = filters
            elif name in ("fc6", "fc7", "fc8"):  # 224x224 input: fc6 takes 7*7*512 = 25088 features
                units = {"fc6": 4096, "fc7": 4096, "fc8": 2622}[name]
                inputs = {"fc6": 25088, "fc7": 4096, "fc8": 4096}[name]
                shapes = {"kernel": (inputs // 64, units // 64), "bias": (units,)}  # kept small: ignored anyway
            group.attrs["weight_names"] = np.array([f"{name}/{k}:0".encode() for k in shapes])
            for key, shape in shapes.items():
                value = rng.standard_normal(shape).astype(np.float32)
                group.create_dataset(f"{name}/{key}:0", data=value)
                written[(name, key)] = value
    return written


def test_layer_names_and_shapes_follow_the_published_network():
    backbone = VGGFaceBackbone(image_size=96, width=1 / 16)
    names = [layer.name for layer in backbone.layers if layer.name.startswith(("conv", "pool"))]
    assert names == PUBLISHED_ORDER == list(LAYER_NAMES)
    assert backbone.input.name == "image" or backbone.inputs[0].name == "image"
    assert tuple(backbone.output.shape) == (None, 3, 3, 32)  # 96 / 2^5 = 3; 512 / 16 filters
    for name in CONV_LAYERS:
        assert backbone.get_layer(name).filters == FULL_FILTERS[name.split("_")[0]] // 16
        assert backbone.get_layer(name).kernel_size == (3, 3)


def test_full_width_parameter_count_is_vgg16s_conv_part():
    backbone = VGGFaceBackbone(image_size=32, width=1.0)
    # VGG-16's 13 conv layers: 14,714,688 parameters (keras.applications.VGG16(include_top=False)).
    assert backbone.count_params() == 14_714_688


def test_preprocessing_modes_match_hand_computation():
    pixels = np.array([[[[10.0, 100.0, 250.0]]]], np.float32)  # one RGB pixel
    paper = keras.ops.convert_to_numpy(FacePreprocessing("paper")(pixels))
    np.testing.assert_allclose(paper.ravel(), [10 / 127.5 - 1, 100 / 127.5 - 1, 250 / 127.5 - 1], rtol=1e-6)
    vgg = keras.ops.convert_to_numpy(FacePreprocessing("vggface")(pixels))
    # RGB -> BGR, then minus (93.5940, 104.7624, 129.1863)
    np.testing.assert_allclose(vgg.ravel(), [250 - 93.5940, 100 - 104.7624, 10 - 129.1863], rtol=1e-6)
    assert VGGFACE_MEAN_BGR == (93.5940, 104.7624, 129.1863)
    with pytest.raises(ValueError, match="mode"):
        FacePreprocessing("caffe")


@pytest.mark.parametrize("with_top", [False, True])
def test_published_weight_file_loads_exactly(tmp_path, with_top):
    path = tmp_path / ("rcmalli_vggface_tf_vgg16.h5" if with_top else "rcmalli_vggface_tf_notop_vgg16.h5")
    written = write_keras2_h5(path, with_top=with_top)
    backbone = VGGFaceBackbone(image_size=32, width=1.0, preprocessing="vggface")
    loaded = load_vggface_weights(backbone, path)
    assert loaded == list(CONV_LAYERS)
    for name in CONV_LAYERS:
        kernel, bias = backbone.get_layer(name).get_weights()
        np.testing.assert_array_equal(kernel, written[(name, "kernel")])
        np.testing.assert_array_equal(bias, written[(name, "bias")])


def test_loader_rejects_other_layouts_and_widths(tmp_path):
    backbone = VGGFaceBackbone(image_size=32, width=1.0)
    with pytest.raises(ValueError, match="width=0.5"):
        load_vggface_weights(VGGFaceBackbone(image_size=32, width=0.5), tmp_path / "any.h5")
    keras3 = tmp_path / "keras3.weights.h5"  # a Keras 3 weights file has no `layer_names`
    with h5py.File(keras3, "w") as f:
        f.create_group("layers")
    with pytest.raises(ValueError, match=r"keras3\.weights\.h5.*layer_names"):
        load_vggface_weights(backbone, keras3)
    not_h5 = tmp_path / "weights.h5"
    not_h5.write_text("hello")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        load_vggface_weights(backbone, not_h5)
    partial = tmp_path / "partial.h5"
    write_keras2_h5(partial, skip=("conv5_3",))
    with pytest.raises(ValueError, match=r"\['conv5_3'\] missing"):
        load_vggface_weights(backbone, partial)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_vggface_weights(backbone, tmp_path / "missing.h5")


def test_backbone_round_trips_through_its_config():
    backbone = VGGFaceBackbone(image_size=32, width=1 / 32, preprocessing="vggface")
    config = backbone.get_config()
    assert {k: config[k] for k in ("image_size", "width", "preprocessing")} == \
        {"image_size": 32, "width": 1 / 32, "preprocessing": "vggface"}
    clone = VGGFaceBackbone.from_config(config)
    assert [w.shape for w in clone.weights] == [w.shape for w in backbone.weights]
    assert clone.get_layer("preprocessing").mode == "vggface"
