"""Label spaces and relatedness tables against the papers' own tables."""
import json
import logging

import numpy as np
import pytest

from fbnet_tf import labels, relatedness


def test_canonical_orders():
    assert labels.EXPRESSIONS == ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
    assert labels.AUS == (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)
    assert len(labels.COMPOUND_EXPRESSIONS) == 15


@pytest.mark.parametrize("name,index", [("happy", 4), ("Happiness", 4), ("'Sadly'", 5), ("ANGRY", 1),
                                        ("surprised", 6), ("fearful", 3), ("disgust", 2), ("Neutral", 0)])
def test_expression_names_map_by_name(name, index):
    assert labels.expression_index(name) == index


@pytest.mark.parametrize("name", ["Contempt", "Other", "None", "Uncertain", "No-Face"])
def test_non_expressions_are_no_label(name):
    assert labels.expression_index(name) is None


def test_unknown_expression_is_an_error():
    with pytest.raises(KeyError, match="unknown expression name 'smug'"):
        labels.expression_index("smug")


def test_rafdb_basic_codes_map_onto_canonical():
    # RAF-DB 1..7 = Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral
    lookup = labels.expression_map(["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"])
    assert lookup.tolist() == [6, 3, 2, 4, 5, 1, 0]
    assert labels.expression_map(["Neutral", "Happy", "Sad", "Contempt"]).tolist() == [0, 4, 5, -1]


def test_au_labels_in_every_spelling():
    for text in (12, "12", "AU12", "AU 12", "'AU 12'", "au_012"):
        assert labels.parse_au_number(text) == 12
    with pytest.raises(ValueError, match="not an action unit"):
        labels.parse_au_number("valence")
    # EmotioNet-style columns: AU43 is outside the canonical set and is left out.
    assert labels.au_columns(["'AU 1'", "'AU 43'", "AU26"]) == {0: 0, 2: 16}
    mask = labels.au_mask_for([1, 2, 4, 6, 12, 15, 20, 25])  # Aff-Wild2 ABAW 2020
    assert mask.sum() == 8 and mask[labels.AUS.index(20)] == 1 and mask[labels.AUS.index(5)] == 0


def test_describe():
    au = np.zeros(17)
    au[[4, 8, 15]] = 1
    text = labels.describe(4, au, np.ones(17), (0.62, 0.31))
    assert text == "Happiness | AU6 AU12 AU25 (of 17 annotated) | V +0.62 A +0.31"
    assert labels.describe() == "no label"


def _w(table, expression, au):
    return table.weights[labels.EXPRESSIONS.index(expression), labels.AUS.index(au)]


def test_du2014_is_paper_table_1(caplog):
    with caplog.at_level(logging.WARNING):
        table = relatedness.load("du2014")
    assert "AU11" in caplog.text and caplog.text.count("dropped") == 1  # sadness' AU11 is not canonical
    assert _w(table, "Happiness", 12) == 1 and _w(table, "Happiness", 25) == 1
    assert _w(table, "Happiness", 6) == pytest.approx(0.51)
    assert _w(table, "Sadness", 17) == pytest.approx(0.67)
    assert _w(table, "Anger", 23) == pytest.approx(0.29)
    assert table.membership[0].sum() == 0  # neutral
    # prototypical counts per row: happiness 2, sadness 2, fear 4, anger 3, surprise 4, disgust 3
    assert table.prototypical.sum(1).tolist() == [0, 3, 3, 4, 2, 2, 4]
    assert table.membership.sum(1).tolist() == [0, 6, 5, 7, 3, 5, 5]  # AU11 dropped from sadness
    assert np.array_equal(table.membership, (table.weights > 0).astype(np.float32))


def test_affwild2_is_paper_table_3():
    table = relatedness.load("affwild2")
    assert _w(table, "Happiness", 7) == pytest.approx(0.83)
    assert _w(table, "Disgust", 10) == pytest.approx(0.85)
    assert _w(table, "Sadness", 17) == pytest.approx(0.10)
    assert table.prototypical.sum() == 0 and table.membership.sum() == 5 + 5 + 6 + 5 + 6 + 6


def test_compound_table_rows_and_components():
    table = relatedness.load("du2014_compound")
    assert table.rows == labels.COMPOUND_EXPRESSIONS
    happily_surprised = table.rows.index("Happily Surprised")
    assert table.components[happily_surprised] == (4, 6)
    assert [labels.AUS[i] for i in np.flatnonzero(table.prototypical[happily_surprised])] == [1, 2, 12, 25]


def test_user_tables_json_and_csv_roundtrip(tmp_path):
    table = relatedness.load("du2014")
    table.save(tmp_path / "mine.json")
    again = relatedness.load(tmp_path / "mine.json")
    np.testing.assert_array_equal(again.weights, table.weights)
    np.testing.assert_array_equal(again.prototypical, table.prototypical)
    (tmp_path / "t.csv").write_text("expression,au,weight\nhappy,AU12,1\nhappy,6,0.5\nsad,AU 15,1\n")
    csv_table = relatedness.load(tmp_path / "t.csv")
    assert _w(csv_table, "Happiness", 6) == 0.5 and csv_table.prototypical.sum() == 2
    (tmp_path / "bad.csv").write_text("expression,au,weight\nhappy,AU12,lots\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: expected an AU label and a numeric weight"):
        relatedness.load(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="not a built-in name"):
        relatedness.load(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text(json.dumps({"rows": "expressions"}))
    with pytest.raises(ValueError, match="expected JSON"):
        relatedness.load(tmp_path / "broken.json")


def test_infer_recovers_fractions_like_numpy():
    rng = np.random.default_rng(1)
    n = 4000
    expr = rng.integers(-1, 7, n)
    truth = relatedness.load("affwild2").weights
    au = (rng.random((n, 17)) < truth[np.clip(expr, 0, 6)]).astype(np.float32)
    mask = (rng.random((n, 17)) < 0.8).astype(np.float32)
    table = relatedness.infer(expr, au, mask, min_support=20, min_weight=0.1)
    # independent computation of one cell: happiness, AU12
    sel = (expr == 4) & (mask[:, 8] == 1)
    assert table.weights[4, 8] == pytest.approx(au[sel, 8].mean(), abs=1e-6)
    linked = truth > 0
    assert np.abs(table.weights[linked] - truth[linked]).max() < 0.1
    assert table.weights[~linked].max() == 0  # no spurious links (all true-zero cells have fraction 0)
    assert table.prototypical.sum() == 0


def test_infer_support_threshold_and_dropped_aus(caplog):
    expr = np.array([4] * 5 + [5] * 50)
    au = np.zeros((55, 18))
    au[:, 0] = 1  # AU1 everywhere
    with caplog.at_level(logging.WARNING):
        table = relatedness.infer(expr, au, np.ones_like(au), aus=labels.AUS + (43,), min_support=20)
    assert "AU43" in caplog.text
    assert table.weights[5, 0] == 1.0 and table.weights[4, 0] == 0.0  # happiness: 5 images < min_support
