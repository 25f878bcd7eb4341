"""FATAUVA-Net's staged training through the one training entry point: stage directories and weights, frozen
layers bit-identical across a stage, the order checks of --stage, and the inference model at the end."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from fbnet_tf import config  # noqa: E402
from fbnet_tf.models import fatauvanet as fv  # noqa: E402

CELEBA_SMILING = 31  # "Smiling" in CelebA's 40


def write_records(folder, kind, n=12, seed=0, splits=(("train", 12),)):
    """Records in the contract's layout: CelebA-like (attributes), FERA-like (facs incl. AU45) or VA-only faces."""
    import cv2

    from fbnet_tf.records import Sample, encode_example

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for split, count in splits:
        with tf.io.TFRecordWriter(str(folder / f"{kind}-{split}.tfrecord-00000-of-00001")) as writer:
            for i in range(count):
                image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                fields = {}
                if kind == "attributes":
                    fields["attributes"] = (rng.random(40) > 0.5).astype(np.float32)
                elif kind == "au":
                    fields["facs"] = {a: (float(rng.random() > 0.7), -1.0) for a in (1, 2, 4, 6, 12, 17, 45)}
                else:
                    fields["va"] = tuple(rng.uniform(-1, 1, 2))
                sample = Sample(image=cv2.imencode(".png", image)[1].tobytes(), height=40, width=40, source=kind,
                                split=split, sample_id=f"{split}/{i}", **fields)
                writer.write(encode_example(sample))
    return str(folder)


@pytest.fixture(scope="module")
def record_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    return {"attribute": write_records(root / "celeba", "attributes"),
            "au": write_records(root / "bp4d", "au", seed=1, splits=(("train", 12), ("validation", 4))),
            "va": write_records(root / "affwild", "va", seed=2)}


def tiny(record_dirs, *overrides):
    dirs = "{" + ",".join(f"{k}: [{v}]" for k, v in record_dirs.items()) + "}"
    return config.override(config.experiment("fatauvanet"), [
        "model.preset=fatauva_tiny", f"data.stage_record_dirs={dirs}", "data.batch_size=4",
        "data.validation_batch_size=4", "trainer.epochs=1", "trainer.learning_rate=1e-2", "trainer.verbose=0",
        *overrides])


def _weights(cfg, path, prefixes):
    """{weight path: value} of the layers named with `prefixes`, in a network holding the weights file."""
    network = fv.build_network(cfg)
    network.load_weights(path)
    return {w.path: w.numpy() for w in network.weights if w.path.startswith(prefixes)}


def test_targets_pick_the_ten_attributes_and_the_fourteen_aus_by_name():
    facs_au = tf.constant([1, 4, 12, 28, 45], tf.int64)
    facs_occ = tf.constant([1.0, 0.0, 1.0, 1.0, 1.0])
    attributes = np.zeros(40, np.float32)
    attributes[CELEBA_SMILING] = 1.0
    t = fv.targets_from_features({"attributes": tf.constant(attributes), "attributes_mask": tf.constant(1.0),
                                  "va": tf.zeros(2), "va_mask": tf.constant(0.0),
                                  "facs/au": facs_au, "facs/occurrence": facs_occ})
    assert t["attributes"].numpy().tolist() == [float(a == "Smiling") for a in fv.ATTRIBUTES]
    mask = dict(zip(fv.AUS, t["au_mask"].numpy()))
    occurrence = dict(zip(fv.AUS, t["au"].numpy()))
    assert [a for a, m in mask.items() if m] == [1, 4, 12, 45]  # AU28 is none of the 14
    assert occurrence[45] == 1.0 and occurrence[4] == 0.0 and occurrence[1] == 1.0


@pytest.mark.slow  # three stages of model.fit (tracing dominates): ~60 s idle, 3 min on a busy 2-core machine
def test_three_stages_freeze_what_came_before_and_end_in_one_model(tmp_path, record_dirs):
    from fbnet_tf import runs, train

    cfg = tiny(record_dirs)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="run --stage 1 first"):
        train.train(cfg, run, stage=2)
    train.train(cfg, run, stage=1)
    stage1 = runs.stage_weights(run, 1, "attribute")
    assert stage1.is_file() and not runs.stage_weights(run, 2, "au").exists()
    train.train(cfg, run)  # the rest: stage 1 is skipped, 2 and 3 run
    stage2, stage3 = runs.stage_weights(run, 2, "au"), runs.stage_weights(run, 3, "va")
    assert stage2.is_file() and stage3.is_file()
    for n, name in ((1, "attribute"), (2, "au"), (3, "va")):
        stage = runs.stage_dir(run, n, name)
        assert (stage / "config.yaml").is_file() and (stage / "history.csv").is_file()
    # stage 2 leaves core and attribute layers bit-identical, and changes the AU layer
    frozen1, frozen2 = _weights(cfg, stage1, ("core_", "attribute_")), _weights(cfg, stage2, ("core_", "attribute_"))
    assert frozen1 and frozen1.keys() == frozen2.keys()
    assert all(np.array_equal(frozen1[k], frozen2[k]) for k in frozen1)
    au1, au2 = _weights(cfg, stage1, ("au_",)), _weights(cfg, stage2, ("au_",))
    assert any(not np.array_equal(au1[k], au2[k]) for k in au1)
    # stage 3 leaves everything but the V-A layer
    kept = ("core_", "attribute_", "au_")
    before, after = _weights(cfg, stage2, kept), _weights(cfg, stage3, kept)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # the final inference model is stage 3's network
    model = runs.load_inference_model(run)
    assert sorted(model.output) == ["action_units", "attributes", "valence_arousal"]
    from_weights = runs.load_inference_model(stage3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x)["valence_arousal"].numpy(), from_weights(x)["valence_arousal"].numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match="3 stage"):
        train.train(cfg, run, stage=4)
