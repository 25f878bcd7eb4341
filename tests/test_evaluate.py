"""Per-database evaluation against numpy/sklearn recomputations on the same predictions."""
import json
import os

import keras
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from fbnet_tf import config as config_lib
from fbnet_tf import evaluate as ev
from fbnet_tf.labels import AUS, EXPRESSIONS, au_mask_for
from fbnet_tf.records import Sample
from test_data import IMAGE_SIZE, SIDE, constant_png, write_record_dir

RNG_SEED = 7


def colour_model():
    """A real Keras inference model whose outputs depend on an image's mean colour only (fixed random weights):
    a constant-colour image gives the same outputs however the pipeline crops it."""
    images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    rgb = keras.layers.Rescaling(1 / 255, offset=-0.5)(keras.layers.GlobalAveragePooling2D()(images))

    def head(units, activation, name, seed):
        init = keras.initializers.RandomNormal(stddev=6.0, seed=seed)
        return keras.layers.Dense(units, activation=activation, kernel_initializer=init, name=name)(rgb)

    outputs = {"valence_arousal": head(2, "tanh", "valence_arousal", 1),
               "expression": head(7, "softmax", "expression", 2),
               "action_units": head(len(AUS), "sigmoid", "action_units", 3)}
    return keras.Model(images, outputs)


def predict_colours(model, colours):
    """The model's outputs on constant images of these colours, computed without the pipeline."""
    images = np.broadcast_to(np.asarray(colours, np.float32)[:, None, None, :],
                             (len(colours), IMAGE_SIZE, IMAGE_SIZE, 3))
    return {k: np.asarray(v) for k, v in model.predict(images, verbose=0).items()}


def make_database(root, source, split, n, rng, *, va=False, expr_every=0, aus=(), au_every=1, clips=0,
                  other_every=0):
    """n constant-colour records with random labels; returns the samples and their colours. With `other_every`,
    every other_every-th frame without an expression is labelled ABAW's "Other" (native index 7)."""
    samples, colours = [], []
    clip_labels = rng.integers(0, 7, max(clips, 1))
    for k in range(n):
        colour = rng.integers(0, 256, 3)
        colours.append(colour)
        expr, extra = -1, {}
        if clips:
            expr = int(clip_labels[k % clips])
            extra["clip"] = f"{EXPRESSIONS[expr]}/{k % clips:09d}"
        elif expr_every and k % expr_every == 0:
            expr = int(rng.integers(0, 7))
        au = au_mask = None
        if aus and k % au_every == 0:
            # EmotioNet-style partial annotation: each AU sometimes unknown.
            au_mask = au_mask_for(aus) * (rng.random(len(AUS)) > (0.2 if source == "emotionet" else 0.0))
            au = (rng.random(len(AUS)) > 0.6) * au_mask
        native = {"expr_native": expr, "expr_native_name": EXPRESSIONS[expr]} if expr >= 0 else {}
        if expr < 0 and other_every and k % other_every == 1:
            native = {"expr_native": 7, "expr_native_name": "Other"}
        samples.append(Sample(image=constant_png(*colour), height=SIDE, width=SIDE, source=source, split=split,
                              sample_id=f"{source}/{k:04d}", expr=expr,
                              va=tuple(rng.uniform(-1, 1, 2)) if va else None, au=au, au_mask=au_mask,
                              extra=extra, **native))
    write_record_dir(root, source, samples, split=split)
    return samples, np.array(colours)


def numpy_ccc(x, y):
    return 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def sklearn_au_scores(truth, probabilities, mask):
    f1s, accuracies = [], []
    for j in np.flatnonzero(mask.max(axis=0)):
        rows = mask[:, j] > 0
        t, p = truth[rows, j] >= 0.5, probabilities[rows, j] >= 0.5
        f1s.append(f1_score(t, p, zero_division=0))
        accuracies.append(accuracy_score(t, p))
    return np.mean(f1s), np.mean(accuracies)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("databases")
    rng = np.random.default_rng(RNG_SEED)
    dbs = {
        "affectnet": make_database(root, "affectnet", "validation", 40, rng, va=True, expr_every=1),
        "afew": make_database(root, "afew", "validation", 36, rng, clips=9),
        "rafdb": make_database(root, "rafdb", "test", 30, rng, expr_every=1),
        "emotionet": make_database(root, "emotionet", "validation", 30, rng, expr_every=3,
                                   aus=(1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26)),
        "disfa": make_database(root, "disfa", "test", 30, rng, aus=(1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)),
        "affwild2": make_database(root, "affwild2", "validation", 40, rng, va=True, expr_every=2,
                                  aus=(1, 2, 4, 6, 12, 15, 20, 25), au_every=2, other_every=4),
    }
    # a train split beside RAF-DB's test split: the default must pick test
    make_database(root, "rafdb", "train", 5, rng, expr_every=1)
    model = colour_model()
    out = tmp_path_factory.mktemp("run")
    report = ev.evaluate(model, [os.path.join(root, name) for name in dbs], out_dir=str(out), batch_size=16)
    return dbs, model, report, out


def expected_arrays(model, database):
    samples, colours = database
    predictions = predict_colours(model, colours)
    n = len(AUS)
    truth = {"expr": np.array([s.expr for s in samples]),
             "abaw2022": np.array([7 if s.expr_native_name == "Other" else s.expr for s in samples]),
             "va": np.array([s.va if s.va is not None else (0, 0) for s in samples]),
             "va_mask": np.array([s.va is not None for s in samples]),
             "au": np.array([s.au if s.au is not None else np.zeros(n) for s in samples]),
             "au_mask": np.array([s.au_mask if s.au_mask is not None else np.zeros(n) for s in samples])}
    return truth, predictions


def test_splits_default_to_test_else_validation(world):
    _, _, report, _ = world
    splits = {os.path.basename(d): s for d, s in report["splits"].items()}
    assert splits == {"affectnet": "validation", "afew": "validation", "rafdb": "test", "emotionet": "validation",
                      "disfa": "test", "affwild2": "validation"}


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # sklearn, on random predictions
def test_va_and_expression_metrics_match_sklearn(world):
    dbs, model, report, _ = world
    results = report["databases"]
    for name in ("affectnet", "affwild2"):
        truth, pred = expected_arrays(model, dbs[name])
        rows = truth["va_mask"]
        assert results[name]["ccc_valence"] == pytest.approx(numpy_ccc(truth["va"][rows, 0],
                                                                       pred["valence_arousal"][rows, 0]), abs=1e-5)
        assert results[name]["ccc_arousal"] == pytest.approx(numpy_ccc(truth["va"][rows, 1],
                                                                       pred["valence_arousal"][rows, 1]), abs=1e-5)
    for name in ("affectnet", "rafdb", "affwild2", "emotionet"):
        truth, pred = expected_arrays(model, dbs[name])
        rows = truth["expr"] >= 0
        t, p = truth["expr"][rows], pred["expression"][rows].argmax(axis=1)
        assert results[name]["expr_f1"] == pytest.approx(f1_score(t, p, average="macro"), abs=1e-9)
        assert results[name]["expr_accuracy"] == pytest.approx(accuracy_score(t, p), abs=1e-9)
        assert results[name]["mean_diagonal"] == pytest.approx(balanced_accuracy_score(t, p), abs=1e-9)
    truth, pred = expected_arrays(model, dbs["emotionet"])
    rows = truth["expr"] >= 0
    t, p = truth["expr"][rows], pred["expression"][rows].argmax(axis=1)
    assert results["emotionet"]["emotionet_expr_score"] == pytest.approx(
        0.5 * (f1_score(t, p, average="macro") + balanced_accuracy_score(t, p)), abs=1e-9)
    truth, pred = expected_arrays(model, dbs["affwild2"])
    rows = truth["expr"] >= 0
    t, p = truth["expr"][rows], pred["expression"][rows].argmax(axis=1)
    assert results["affwild2"]["abaw2020_expr"] == pytest.approx(
        0.67 * f1_score(t, p, average="macro") + 0.33 * accuracy_score(t, p), abs=1e-9)


def test_affwild2_official_8_class_score_counts_other_frames(world):
    dbs, model, report, _ = world
    scores = report["databases"]["affwild2"]
    truth, pred = expected_arrays(model, dbs["affwild2"])
    rows = truth["abaw2022"] >= 0
    assert (truth["abaw2022"] == 7).sum() == 10 and scores["abaw2022_other_count"] == 10
    t, p = truth["abaw2022"][rows], pred["expression"][rows].argmax(axis=1)
    assert scores["abaw2022_expr_count"] == rows.sum() == 30
    assert scores["abaw2022_expr"] == pytest.approx(
        f1_score(t, p, labels=list(range(8)), average="macro", zero_division=0.0), abs=1e-9)
    assert "never predicts Other" in scores["abaw2022_expr_rule"] and "abaw2022_expr_note" not in scores
    basic = truth["expr"] >= 0
    assert scores["expr_f1_7class"] == pytest.approx(
        f1_score(truth["expr"][basic], pred["expression"][basic].argmax(axis=1), average="macro"), abs=1e-9)
    # A configured rule: Other where the top probability is below a threshold (the median top probability)
    threshold = float(np.median(pred["expression"][rows].max(axis=1)))
    collected = {"sample_id": np.array([s.sample_id for s in dbs["affwild2"][0]]), "expr": truth["expr"],
                 "expr_native_name": np.array([s.expr_native_name for s in dbs["affwild2"][0]]),
                 "va_mask": np.zeros(40), "au_mask": np.zeros((40, len(AUS))), "pred_expression": pred["expression"]}
    ruled = ev.database_metrics("affwild2", collected, other_threshold=threshold)
    p_rule = np.where(pred["expression"][rows].max(axis=1) < threshold, 7, p)
    assert (p_rule == 7).any()
    assert ruled["abaw2022_expr"] == pytest.approx(
        f1_score(t, p_rule, labels=list(range(8)), average="macro", zero_division=0.0), abs=1e-9)
    assert f"below {threshold:g}" in ruled["abaw2022_expr_rule"]
    no_other = ev.database_metrics("affwild2", {**collected, "expr_native_name": np.array([""] * 40)})
    assert no_other["abaw2022_other_count"] == 0 and "no frame labelled Other" in no_other["abaw2022_expr_note"]
    assert scores["abaw2020_au_aus"] == [1, 2, 4, 6, 12, 15, 20, 25]
    assert "ABAW22 EXPR" in report["table"] and "EXPR F1 7cl" in report["table"]


def test_au_metrics_match_sklearn_over_annotated_aus(world):
    dbs, model, report, _ = world
    for name in ("disfa", "emotionet", "affwild2"):
        truth, pred = expected_arrays(model, dbs[name])
        rows = truth["au_mask"].sum(axis=1) > 0
        f1, accuracy = sklearn_au_scores(truth["au"][rows], pred["action_units"][rows], truth["au_mask"][rows])
        scores = report["databases"][name]
        assert scores["au_f1"] == pytest.approx(f1, abs=1e-9)
        assert scores["au_accuracy"] == pytest.approx(accuracy, abs=1e-9)
        if name == "emotionet":
            assert scores["emotionet_au_score"] == pytest.approx(0.5 * (f1 + accuracy), abs=1e-9)
    assert report["databases"]["disfa"]["au_annotated"] == [1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26]


def test_afew_clip_accuracy_from_averaged_frames(world):
    dbs, model, report, _ = world
    truth, pred = expected_arrays(model, dbs["afew"])
    clips = np.array([s.extra["clip"] for s in dbs["afew"][0]])
    correct = []
    for clip in np.unique(clips):
        frames = clips == clip
        correct.append(pred["expression"][frames].mean(axis=0).argmax() == truth["expr"][frames][0])
    assert report["databases"]["afew"]["clip_accuracy"] == pytest.approx(np.mean(correct))


def test_clip_accuracy_hand_worked():
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55],  # clip a (label 1): votes say 1, mean says 0
                              [0.7, 0.3], [0.6, 0.4],  # clip b (label 0): right
                              [0.2, 0.8], [1.0, 0.0]])  # clip c (label 1): right; its unlabelled frame is ignored
    labels = np.array([1, 1, 1, 0, 0, 1, -1])
    clips = np.array(["a", "a", "a", "b", "b", "c", "c"])
    assert ev.clip_accuracy(probabilities, labels, clips) == pytest.approx(2 / 3)


def test_clip_ids_fall_back_to_subject_then_folder():
    collected = {"subject": np.array(["v1", "v1"]), "sample_id": np.array(["Angry/001/1.jpg", "Angry/002/1.jpg"])}
    assert ev.clip_ids(collected).tolist() == ["v1", "v1"]
    collected["subject"] = np.array(["", ""])
    assert ev.clip_ids(collected).tolist() == ["Angry/001", "Angry/002"]


def test_table_json_and_figures(world, capsys):
    _, _, report, out = world
    lines = report["table"].splitlines()
    assert len(lines) == 3 and "Aff-Wild" in lines[0] and "BP4D+" in lines[0] and "CCC-V" in lines[1]
    values = lines[2].split("|")[1:]
    headings = [h.strip() for h in lines[0].split("|")[1:]]
    by_heading = dict(zip(headings, values))
    assert by_heading["Aff-Wild"].split() == ["-", "-"] and by_heading["BP4D"].strip() == "-"
    assert by_heading["RAF-DB"].strip() == f"{report['databases']['rafdb']['mean_diagonal']:.2f}"
    saved = json.load(open(out / "evaluation.json"))
    assert saved["databases"]["disfa"]["au_f1"] == pytest.approx(report["databases"]["disfa"]["au_f1"])
    for name in ("confusion_matrix-affectnet", "confusion_matrix-rafdb", "va_histogram-affwild2",
                 "au_f1-disfa", "au_f1-emotionet"):
        with open(out / f"{name}.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not (out / "va_histogram-rafdb.png").exists()


def test_database_keys():
    assert [ev.database_key(s) for s in ("BP4D+", "bp4d_plus", "RAF-DB", "Aff-Wild2", "aff_wild", "EmotioNet")] == \
        ["bp4dplus", "bp4dplus", "rafdb", "affwild2", "affwild", "emotionet"]


def saved_run(model, run):
    """A run directory holding just `model` as its model.keras."""
    run.mkdir(parents=True)
    model.save(run / "model.keras")
    return run


def test_command_line_uses_the_runs_record_dirs(world, tmp_path, capsys):
    dbs, model, report, _ = world
    record_root = os.path.dirname(next(iter(report["splits"])))
    run = saved_run(model, tmp_path / "run")
    cfg = config_lib.ExperimentConfig()
    cfg.data.record_dirs = [os.path.join(record_root, "rafdb"), os.path.join(record_root, "disfa")]
    config_lib.save(cfg, run / "config.yaml")
    assert ev.main(["--run-dir", str(run)]) == 0
    saved = json.load(open(run / "evaluation.json"))
    assert set(saved["databases"]) == {"rafdb", "disfa"}
    assert saved["databases"]["rafdb"]["mean_diagonal"] == pytest.approx(report["databases"]["rafdb"]["mean_diagonal"])
    assert "RAF-DB" in capsys.readouterr().out


def test_evaluation_from_another_folder_gives_the_same_table(world, tmp_path, monkeypatch):
    from fbnet_tf import runs

    dbs, model, report, _ = world
    record_root = os.path.dirname(next(iter(report["splits"])))
    run = saved_run(model, tmp_path / "runs" / "x")
    monkeypatch.chdir(os.path.dirname(record_root))
    spelled = [os.path.join(os.path.basename(record_root), name) for name in ("rafdb", "affwild2")]
    cfg = config_lib.ExperimentConfig()
    cfg.data.record_dirs = list(spelled)
    cfg = config_lib.resolve_record_dirs(cfg)  # what fbnet_tf.train stores in the run's config.yaml
    config_lib.save(cfg, run / "config.yaml")
    stored = runs.load_config(run)
    assert stored.data.record_dirs == [os.path.join(record_root, "rafdb"), os.path.join(record_root, "affwild2")]
    assert stored.data.record_dirs_given == spelled
    assert config_lib.resolve_record_dirs(stored).data.record_dirs_given == spelled  # resolving again keeps them

    assert ev.main(["--run-dir", str(run)]) == 0
    here = json.load(open(run / "evaluation.json"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert ev.main(["--run-dir", str(run)]) == 0
    there = json.load(open(run / "evaluation.json"))
    assert set(there["databases"]) == {"rafdb", "affwild2"}
    assert there["table"] == here["table"] and there["databases"] == here["databases"]
    with pytest.raises(config_lib.ConfigError, match=r"'nowhere/rafdb' \(resolved from .*elsewhere"):
        config_lib.resolve_record_dirs(config_lib.from_dict({"data": {"record_dirs": ["nowhere/rafdb"]}}))


def test_evaluation_of_nothing_fails_and_keeps_the_previous_file(world, tmp_path, capsys):
    dbs, model, report, _ = world
    record_root = os.path.dirname(next(iter(report["splits"])))
    run = saved_run(model, tmp_path / "run")
    assert ev.main(["--run-dir", str(run), "--data", os.path.join(record_root, "rafdb")]) == 0
    before = (run / "evaluation.json").read_bytes()
    only_train = write_record_dir(tmp_path / "records", "bp4d", [Sample(
        image=constant_png(1, 2, 3), height=SIDE, width=SIDE, source="bp4d", split="train", sample_id="bp4d/0")],
        split="train")
    capsys.readouterr()
    assert ev.main(["--run-dir", str(run), "--data", only_train]) == 1
    assert "nothing to evaluate" in capsys.readouterr().err and (run / "evaluation.json").read_bytes() == before
    assert ev.main(["--run-dir", str(run), "--data", str(tmp_path / "missing")]) == 1
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert (run / "evaluation.json").read_bytes() == before
    assert not list(run.glob("*.tmp"))


def test_the_real_inference_model_evaluates(world):
    """FaceBehaviorNet's own inference model (tiny preset, 32 px: the 14 px records are resized, then cropped)."""
    from fbnet_tf import models

    _, _, report, _ = world
    record_root = os.path.dirname(next(iter(report["splits"])))
    model = models.build_inference_model(config_lib.with_model_preset(config_lib.ExperimentConfig(), "tiny"))
    results = ev.evaluate(model, [os.path.join(record_root, name) for name in ("affwild2", "afew")],
                          verbose=False)["databases"]
    assert results["affwild2"]["count"] == 40 and results["affwild2"]["au_count"] == 20
    for key in ("ccc_valence", "ccc_arousal", "expr_f1", "au_f1", "abaw2020_expr", "abaw2020_au"):
        assert -1.0 <= results["affwild2"][key] <= 1.0
    assert 0.0 <= results["afew"]["clip_accuracy"] <= 1.0


def test_a_run_without_a_final_model_is_evaluated_from_a_checkpoint(world, tmp_path, capsys):
    import subprocess
    import sys

    from fbnet_tf.models.facebehaviornet import build_network

    _, _, report, _ = world
    record_root = os.path.dirname(next(iter(report["splits"])))
    run = tmp_path / "run"
    cfg = config_lib.with_model_preset(config_lib.ExperimentConfig(), "tiny")
    cfg.data.record_dirs = [os.path.join(record_root, "rafdb")]
    config_lib.save(cfg, run / "config.yaml")
    checkpoint = run / "checkpoints" / "last.weights.h5"
    checkpoint.parent.mkdir()
    build_network(cfg.model).save_weights(checkpoint)
    with pytest.raises(SystemExit) as stop:  # killed before model.keras: the hint names the option and the file
        ev.main(["--run-dir", str(run)])
    assert stop.value.code == 2
    assert f"pass a checkpoint instead (--model {checkpoint})" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "fbnet_tf.evaluate", "--run-dir", str(run), "--model",
                           str(checkpoint)], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "evaluation.json").read_text())["databases"]["rafdb"]["count"] > 0
    # TensorFlow's notices (oneDNN, CPU features, rendezvous) stay off the terminal; tqdm's bar and our lines remain.
    assert not [line for line in done.stderr.splitlines() if line.startswith(("I0000", "W0000", "WARNING: All log"))]


def test_bp4d_f1_is_over_the_fera2015_aus_with_every_coded_au_beside_it():
    from sklearn.metrics import f1_score

    from fbnet_tf.labels import AUS, FERA2015_AUS

    rng = np.random.default_rng(0)
    n = 200
    coded = [a for a in AUS if a not in (5, 9, 26)]  # records keep every AU the release codes (AU24 included)
    mask = np.tile(np.isin(AUS, coded).astype(np.float32), (n, 1))
    truth = (rng.random((n, len(AUS))) > 0.6).astype(np.float32) * mask
    probabilities = np.clip(truth * 0.6 + rng.random((n, len(AUS))) * 0.5, 0, 1)
    collected = {"sample_id": np.arange(n).astype(str), "va_mask": np.zeros(n), "expr": -np.ones(n, np.int64),
                 "au": truth, "au_mask": mask, "pred_action_units": probabilities}
    scores = ev.database_metrics("bp4d", collected)

    def mean_f1(aus):
        return np.mean([f1_score(truth[:, AUS.index(a)], probabilities[:, AUS.index(a)] >= 0.5) for a in aus])

    assert scores["au_f1"] == pytest.approx(mean_f1(FERA2015_AUS)) and scores["au_f1_aus"] == "FERA 2015"
    assert scores["au_f1_all_coded"] == pytest.approx(mean_f1(coded))
