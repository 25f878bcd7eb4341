"""`python -m fbnet_tf.relatedness infer`: the paper's section 4.2 table from records, and from a model's AUs."""
import numpy as np
import pytest
import tensorflow as tf

from fbnet_tf import relatedness
from fbnet_tf.labels import AUS, EXPRESSIONS
from fbnet_tf.records import Sample, encode_example


def _write(directory, rows):
    directory.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(directory / "demo-train.tfrecord-00000-of-00001")) as writer:
        for i, (expr, active, annotated) in enumerate(rows):
            au = np.zeros(len(AUS), np.float32)
            mask = np.zeros(len(AUS), np.float32)
            for number in annotated:
                mask[AUS.index(number)] = 1
            for number in active:
                au[AUS.index(number)] = 1
            writer.write(encode_example(Sample(b"", 0, 0, "demo", "train", str(i), expr=expr, au=au, au_mask=mask)))


def test_infer_from_records_matches_the_fractions(tmp_path, capsys):
    happy, sad = EXPRESSIONS.index("Happiness"), EXPRESSIONS.index("Sadness")
    rows = ([(happy, (12, 25), (12, 25, 4))] * 18 + [(happy, (12,), (12, 25, 4))] * 6    # AU12 24/24, AU25 18/24
            + [(sad, (4,), (4, 12))] * 5 + [(sad, (), (4, 12))] * 20                    # AU4 5/25 = 0.2
            + [(-1, (4,), (4,))] * 30 + [(sad, (), ())] * 7)                            # ignored: no expr / no AUs
    _write(tmp_path / "records", rows)
    out = tmp_path / "table.json"
    assert relatedness.main(["infer", "--data", str(tmp_path / "records"), "--out", str(out)]) == 0
    table = relatedness.load(out)
    weights = {(table.rows[r], AUS[a]): float(table.weights[r, a]) for r, a in zip(*np.nonzero(table.weights))}
    assert weights == pytest.approx({("Happiness", 12): 1.0, ("Happiness", 25): 0.75, ("Sadness", 4): 0.2})
    printed = capsys.readouterr().out
    assert "| Happiness | 12 (1.00), 25 (0.75) |" in printed


def test_infer_without_co_annotated_images_fails(tmp_path):
    _write(tmp_path / "records", [(1, (), ())] * 5)
    assert relatedness.main(["infer", "--data", str(tmp_path / "records"), "--out", str(tmp_path / "t.json")]) == 1
    assert not (tmp_path / "t.json").exists()


@pytest.mark.slow
def test_infer_from_a_models_aus(tmp_path):
    from fbnet_tf import runs
    from fbnet_tf.evaluate import predict_records
    from test_export import make_run_dir

    run = make_run_dir(tmp_path)  # records: 24 train images, expr = i % 7
    records = tmp_path / "records"
    out = tmp_path / "model_table.json"
    assert relatedness.main(["infer", "--data", str(records), "--from-model", str(run), "--out", str(out),
                             "--min-support", "1", "--min-weight", "0.01"]) == 0
    collected = predict_records(runs.load_inference_model(run), str(records), "train")
    active = collected["pred_action_units"] >= 0.5
    expected = np.zeros((len(EXPRESSIONS), len(AUS)))
    for e in range(1, len(EXPRESSIONS)):  # Neutral gets no links
        expected[e] = active[collected["expr"] == e].mean(axis=0)
    expected[expected < 0.01] = 0
    np.testing.assert_allclose(relatedness.load(out).weights, expected, atol=1e-4)
