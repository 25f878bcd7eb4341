"""FATAUVA-Net's evaluation in its paper's layouts: attribute accuracy (Table 4), AU AUC and F1 with AU45 read from
`facs/*` (Tables 5-6), V-A MSE/CCC (Figures 9-10) and the comparison across runs, against numpy and sklearn."""
import json
import os

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

tf = pytest.importorskip("tensorflow")

from fbnet_tf import config, metrics  # noqa: E402
from fbnet_tf import evaluate as ev  # noqa: E402
from fbnet_tf.labels import CELEBA_ATTRIBUTES  # noqa: E402
from fbnet_tf.models import fatauvanet as fv  # noqa: E402
from test_fatauvanet_train import write_records  # noqa: E402


def test_auc_per_au_matches_sklearn_with_ties_and_masks():
    rng = np.random.default_rng(0)
    truth = (rng.random((60, 4)) > 0.6).astype(float)
    scores = np.round(rng.random((60, 4)), 1)  # ties
    mask = (rng.random((60, 4)) > 0.2).astype(float)
    truth[:, 3] = 1.0  # one class only: no AUC
    auc = metrics.auc_per_au(truth, scores, mask)
    for j in range(3):
        rows = mask[:, j] > 0
        assert auc[j] == pytest.approx(roc_auc_score(truth[rows, j], scores[rows, j]))
    assert np.isnan(auc[3])
    assert metrics.mean_auc(truth, scores, mask) == pytest.approx(np.mean(auc[:3]))
    np.testing.assert_allclose(metrics.mse([[0, 1], [1, 1]], [[1, 1], [1, -1]]), [0.5, 2.0])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    splits = (("test", 24),)
    dirs = [write_records(root / "celeba", "attributes", seed=3, splits=splits),
            write_records(root / "bp4d", "au", seed=4, splits=splits),
            write_records(root / "affwild", "va", seed=5, splits=splits)]
    cfg = config.override(config.experiment("fatauvanet_cls"), ["model.preset=fatauva_tiny"])
    model = fv.build_inference_model(cfg)
    out = tmp_path_factory.mktemp("run")
    report = ev.evaluate(model, dirs, out_dir=str(out), batch_size=8, row_name="FATAUVA_Cls", verbose=False)
    collected = {os.path.basename(d): ev.predict_records(model, d, "test", batch_size=8, aus=fv.AUS) for d in dirs}
    return report, collected, out


def test_attribute_accuracy_per_attribute_against_numpy(evaluated):
    report, collected, _ = evaluated
    scores = report["databases"]["attributes"]
    c = collected["celeba"]
    truth = c["attributes"][:, [CELEBA_ATTRIBUTES.index(a) for a in fv.ATTRIBUTES]] >= 0.5
    expected = ((c["pred_attributes"] >= 0.5) == truth).mean(axis=0)
    assert list(scores["attribute_accuracy_per_attribute"]) == list(fv.ATTRIBUTES)
    np.testing.assert_allclose(list(scores["attribute_accuracy_per_attribute"].values()), expected)
    assert scores["attribute_accuracy"] == pytest.approx(expected.mean())


def test_au_auc_and_f1_over_the_models_fourteen_aus_including_au45(evaluated):
    report, collected, _ = evaluated
    scores = report["databases"]["au"]
    assert scores["au_numbers"] == list(fv.AUS)
    assert scores["au_annotated"] == [1, 2, 4, 6, 12, 17, 45]  # the fixture's coded AUs, AU45 from facs/*
    c = collected["bp4d"]
    j45 = fv.AUS.index(45)
    truth, probs = c["au"][:, j45], c["pred_action_units"][:, j45]
    assert scores["au_auc_per_au"][j45] == pytest.approx(roc_auc_score(truth, probs))
    assert scores["au_f1_per_au"][j45] == pytest.approx(f1_score(truth >= 0.5, probs >= 0.5, zero_division=0))
    assert scores["au_auc_per_au"][fv.AUS.index(25)] is None  # not coded by this database


def test_tables_in_the_papers_layouts_and_the_va_comparison(evaluated, tmp_path):
    report, collected, out = evaluated
    text = report["label_tables"]
    assert "arched eyebrows" in text and "smile" in text and "AVG" in text
    lines = text.splitlines()
    start = next(i for i, x in enumerate(lines) if x.split()[:1] == ["AU"] and x.endswith("F1")) + 1
    au_rows = [line.split()[0] for line in lines[start:start + 8]]
    assert au_rows == ["1", "2", "4", "6", "12", "17", "45", "AVG"]
    va = report["databases"]["va"]
    c = collected["affwild"]
    np.testing.assert_allclose([va["mse_valence"], va["mse_arousal"]],
                               ((c["va"] - c["pred_valence_arousal"]) ** 2).mean(axis=0), rtol=1e-5)
    saved = json.loads((out / "evaluation.json").read_text())
    worse = json.loads(json.dumps(saved))
    worse["databases"]["va"]["mse_valence"] += 0.5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "evaluation.json").write_text(json.dumps(worse))
    assert ev.main(["--compare", f"FATAUVA_Cls={out}", f"FATVA={tmp_path / 'other'}", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "va_comparison.json").read_text())
    assert result["database"] == "va" and list(result["rows"]) == ["FATAUVA_Cls", "FATVA"]
    assert result["rows"]["FATVA"]["mse_valence"] == pytest.approx(va["mse_valence"] + 0.5)
    assert (tmp_path / "va_comparison-va.png").stat().st_size > 0
