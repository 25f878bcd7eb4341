"""The demo world is learnable and its relatedness holds (issue 4): on the `small` world, logistic regression on
pixels beats chance clearly on expressions, AUs and CelebA's attributes, and `relatedness.infer` recovers the table
used to render."""
import numpy as np
import pytest

from fbnet_tf.demo import checks, render_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("learnable") / "raw"
    render_world(root, seed=0, scale="small", workers=2, databases=("rafdb", "affwild2", "celeba"))
    return root


def test_expressions_beat_chance_clearly(world):
    rafdb = checks.read_rafdb(world / "rafdb")
    result = checks.expression_check(*rafdb["train"], *rafdb["test"])
    assert result["accuracy"] > 2 * result["majority_accuracy"]
    assert result["macro_f1"] > 0.4


def test_aus_beat_always_present(world):
    frames = checks.read_affwild2(world / "affwild2")
    result = checks.au_check({key: np.concatenate([frames[s][key] for s in frames]) for key in ("x", "au", "video")})
    gains = [r["f1"] - r["always_present_f1"] for r in result.values()]
    assert np.mean(gains) > 0.1
    assert sum(g > 0 for g in gains) >= len(gains) * 2 // 3


def test_inferred_relatedness_is_close_to_du2014(world):
    result = checks.relatedness_check(checks.read_affwild2(world / "affwild2"))
    assert result["mean_abs_weight_difference"] < 0.08
    assert result["link_agreement"] > 0.85


def test_table2_attributes_beat_the_majority_answer(world):
    result = checks.attribute_check(checks.read_celeba(world / "celeba"))
    accuracy = np.mean([r["accuracy"] for r in result.values()])
    majority = np.mean([r["majority_accuracy"] for r in result.values()])
    assert accuracy > majority + 0.1
    for name in ("Smiling", "Mouth_Slightly_Open", "Male", "Eyeglasses", "No_Beard"):
        assert result[name]["accuracy"] > result[name]["majority_accuracy"] + 0.05, name
