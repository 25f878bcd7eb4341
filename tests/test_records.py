"""The TFRecord contract's `facs/*` lists and native expression label round-trip, and `facs_dense` gives any AU set."""
import numpy as np

from fbnet_tf.labels import AUS
from fbnet_tf.records import Sample, decode_example, encode_example, facs_dense


def _sample(**labels) -> Sample:
    return Sample(image=b"", height=0, width=0, source="test", split="train", sample_id="a", **labels)


def _parsed(sample: Sample) -> dict:
    import tensorflow as tf

    from fbnet_tf.records import parse_example

    return {k: v.numpy() for k, v in parse_example(tf.constant(encode_example(sample))).items()}


def test_facs_round_trip_fills_the_canonical_aus():
    parsed = _parsed(_sample(facs={45: (1.0, -1.0), 24: (1.0, 3.0), 1: (0.0, 0.0)}, expr_native=7,
                             expr_native_name="Other"))
    assert parsed["facs/au"].tolist() == [1, 24, 45]  # sorted by AU number
    assert parsed["facs/occurrence"].tolist() == [0.0, 1.0, 1.0]
    assert parsed["facs/intensity"].tolist() == [0.0, 3.0, -1.0]
    mask = np.zeros(len(AUS))
    mask[[AUS.index(1), AUS.index(24)]] = 1  # AU45 is not canonical: only in facs/*
    np.testing.assert_array_equal(parsed["au_mask"], mask)
    assert parsed["au"][AUS.index(24)] == 1 and parsed["au_intensity"][AUS.index(24)] == 3
    assert parsed["expr_native"] == 7 and parsed["expr_native_name"] == b"Other" and parsed["expr"] == -1


def test_records_without_facs_parse_empty():
    parsed = _parsed(_sample(expr=3))
    assert parsed["facs/au"].size == 0 and parsed["expr_native"] == -1 and parsed["au_mask"].sum() == 0


def test_facs_dense_matches_a_lookup():
    aus = [1, 2, 45, 28]
    facs_au = np.array([[1, 45, 24, -1], [2, 28, -1, -1]])
    occurrence = np.array([[1, 0, 1, 0], [1, 1, 0, 0]], np.float32)
    dense, mask = facs_dense(facs_au, occurrence, aus)
    expected_mask = [[1, 0, 1, 0], [0, 1, 0, 1]]
    expected = [[1, 0, 0, 0], [0, 1, 0, 1]]
    np.testing.assert_array_equal(mask.numpy(), expected_mask)
    np.testing.assert_array_equal(dense.numpy(), expected)


def test_decode_example_gives_native_name_as_text():
    import cv2

    ok, jpeg = cv2.imencode(".jpg", np.zeros((4, 4, 3), np.uint8))
    sample = Sample(image=jpeg.tobytes(), height=4, width=4, source="t", split="test", sample_id="x",
                    expr_native=7, expr_native_name="Contempt")
    assert decode_example(encode_example(sample))["expr_native_name"] == "Contempt"


def test_a_sample_with_facs_has_its_canonical_aus_at_once():
    # Filled at construction, so what reads the Sample before encoding (a build's label counts) sees them too.
    sample = _sample(facs={24: (1.0, 2.0), 45: (0.0, -1.0)})
    assert np.flatnonzero(sample.au_mask).tolist() == [AUS.index(24)]
    assert sample.au[AUS.index(24)] == 1.0 and sample.au_intensity[AUS.index(24)] == 2.0
    explicit = _sample(facs={24: (1.0, 2.0)}, au=np.zeros(len(AUS)), au_mask=np.zeros(len(AUS)))
    assert explicit.au_mask.sum() == 0  # an explicit au/au_mask is kept as given
