"""Config (YAML, --set, experiments), `train()` with model.fit, the NaN stop, and the CLI resuming after a real kill."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fbnet_tf import config

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- config (no TF)

def test_yaml_round_trip_and_overrides(tmp_path):
    cfg = config.experiment("soft_coannotation_distr_matching_affwild2")
    assert (cfg.loss.coupling, cfg.loss.relatedness) == ("soft_coannotation+distribution_matching", "affwild2")
    assert (cfg.model.image_size, cfg.model.width, cfg.model.fc_units, cfg.trainer.learning_rate) == \
        (96, 1.0, 4096, 1e-4)
    cfg = config.override(cfg, ["trainer.epochs=3", "trainer.learning_rate=1e-3", "data.record_dirs=[a, b/c]",
                                "model.preset=small", "model.fc_units=128", "model.weights=null",
                                "loss.coupling_weight=0.5", "trainer.jit_compile=false"])
    assert cfg.trainer.epochs == 3 and cfg.trainer.learning_rate == 1e-3 and cfg.data.record_dirs == ["a", "b/c"]
    assert (cfg.model.preset, cfg.model.image_size, cfg.model.width, cfg.model.fc_units) == ("small", 64, 0.125, 128)
    assert cfg.trainer.jit_compile is False and cfg.loss.coupling_weight == 0.5
    path = config.save(cfg, tmp_path / "config.yaml")
    assert config.load(path) == cfg
    assert "learning_rate: 0.001" in path.read_text()


def test_partial_yaml_starts_from_a_named_experiment(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("experiment: single_task_au\ntrainer:\n  epochs: 2\nmodel:\n  dropout: 0.25\n")
    cfg = config.load(path)
    assert cfg.name == "single_task_au" and cfg.model.tasks == ["au"] and cfg.trainer.epochs == 2
    assert cfg.model.dropout == 0.25 and cfg.model.image_size == 96


def test_config_errors_name_the_key_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key 'trainer.epoch'"):
        config.override(config.ExperimentConfig(), ["trainer.epoch=3"])
    with pytest.raises(ValueError, match="expected key=value"):
        config.override(config.ExperimentConfig(), ["trainer.epochs"])
    with pytest.raises(ValueError, match="model.tasks"):
        config.override(config.ExperimentConfig(), ["model.tasks=[va, pose]"])
    with pytest.raises(ValueError, match="width=0.5"):
        config.override(config.ExperimentConfig(), ["model.weights=vgg.h5", "model.width=0.5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  epochs: 3\n  lr: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad\.yaml, line \d+: not valid YAML"):
        config.load(bad)
    with pytest.raises(ValueError, match="unknown experiment"):
        config.experiment("coannotation_du2015")


def test_table2_rows_and_baselines_are_named_experiments():
    names = set(config.experiment_names())
    for coupling in ("no_coupling", "coannotation", "soft_coannotation", "distr_matching",
                     "soft_coannotation_distr_matching"):
        for table in ("du2014", "affwild2"):
            assert f"{coupling}_{table}" in names
    assert {"single_task_va", "single_task_expr", "single_task_au", "demo"} <= names
    assert config.experiment("distr_matching_affwild2").loss.coupling == "distribution_matching"
    assert config.experiment("demo").model.preset == "small"


def test_cli_resolves_experiment_file_and_overrides(tmp_path, capsys):
    import yaml

    from fbnet_tf import train

    partial = tmp_path / "mine.yaml"
    partial.write_text("trainer:\n  epochs: 7\n")
    code = train.main(["--experiment", "distr_matching_affwild2", "--config", str(partial),
                       "--set", "model.preset=tiny", "--set", "loss.coupling_weight=0.3", "--print-config"])
    assert code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["loss"]["coupling"] == "distribution_matching" and printed["loss"]["relatedness"] == "affwild2"
    assert printed["trainer"]["epochs"] == 7 and printed["model"]["image_size"] == 32
    assert printed["loss"]["coupling_weight"] == 0.3
    assert train.main(["--experiment", "no_coupling"]) == 2
    assert "--run-dir is required" in capsys.readouterr().err
    assert train.main(["--set", "trainer.epochz=1", "--run-dir", str(tmp_path / "r")]) == 2
    assert "unknown key 'trainer.epochz'" in capsys.readouterr().err


@pytest.mark.parametrize("assignment, expected", [
    ("trainer.epochs=abc", "trainer.epochs='abc' (--set trainer.epochs=abc): expected an integer >= 1"),
    ("trainer.epochs=2.5", "trainer.epochs=2.5 (--set trainer.epochs=2.5): expected an integer >= 1"),
    ("trainer.epochs=-1", "trainer.epochs=-1 (--set trainer.epochs=-1): expected an integer >= 1"),
    ("data.augment=maybe", "data.augment='maybe' (--set data.augment=maybe): expected true or false"),
    ("trainer.learning_rate=0", "expected a number > 0"),
    ("model.dropout=1.5", "model.dropout=1.5 (--set model.dropout=1.5): expected a number in [0, 1)"),
    ("trainer.steps_per_epoch=0", "expected an integer >= 1 or null"),
    ("runtime.strategy=tpu", "expected one of 'auto', 'default', 'mirrored', 'multi_worker'"),
    ("trainer.verbose=true", "trainer.verbose=True (--set trainer.verbose=true): expected one of 'auto', 0, 1, 2"),
    ("data.record_dirs=[]", "data.record_dirs is empty"),
    ("data.record_dirs=[nowhere]", "data.record_dirs: no such folder 'nowhere' (resolved from"),
])
def test_bad_values_exit_2_with_one_line_before_the_run_dir_exists(tmp_path, capsys, assignment, expected):
    from fbnet_tf import train

    run = tmp_path / "run"
    code = train.main(["--experiment", "no_coupling", "--set", assignment, "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not run.exists()


def test_values_are_checked_against_the_field_types_in_files_and_in_python(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("trainer:\n  epochs: 2\n  learning_rate: 1e-3\ndata:\n  augment: no\n")
    cfg = config.load(path)  # YAML reads 1e-3 as a string and `no` as false
    assert cfg.trainer.learning_rate == 1e-3 and cfg.data.augment is False and cfg.trainer.epochs == 2
    path.write_text("trainer:\n  epochs: 2\ndata:\n  batch_size: 0\n")
    with pytest.raises(config.ConfigError, match=r"data.batch_size=0 \(.*mine.yaml\): expected an integer >= 1"):
        config.load(path)
    cfg = config.ExperimentConfig()
    cfg.trainer.learning_rate = "1e-4"  # set in Python: normalised as a parsed value would be
    assert cfg.validate().trainer.learning_rate == 1e-4
    cfg.data.deterministic = "yes"
    with pytest.raises(config.ConfigError, match="data.deterministic='yes': expected true or false"):
        cfg.validate()


def test_the_demo_is_an_experiment_whose_data_are_rendered_first_and_whose_run_is_then_evaluated_and_exported(
        tmp_path, monkeypatch):
    from fbnet_tf import runs, train

    steps = []  # each step of the demo route (rendering, training, evaluating are tested where they live)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "prepare_demo_world", lambda cfg: steps.append(("prepare", cfg.data.demo_releases)))

    def fake_train(cfg, run_dir, stage=None):
        steps.append(("train", run_dir, cfg.trainer.epochs, cfg.data.record_dirs))
        runs.run_dir(run_dir).create()
        runs.run_dir(run_dir).model.write_bytes(b"")

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(train, "evaluate_and_export", lambda run_dir: steps.append(("evaluate+export", run_dir)))
    demo_dirs = [f"demo_data/records/{n}" for n in ("affectnet", "affwild2", "disfa", "rafdb", "rafdb_compound")]
    # no arguments: the demo experiment into runs/demo
    assert train.main([]) == 0
    run = os.path.join("runs", "demo")
    assert steps == [("prepare", ["affectnet", "affwild2", "disfa", "rafdb"]), ("train", run, 12, demo_dirs),
                     ("evaluate+export", run)]
    # the same into any folder, with overrides
    steps.clear()
    assert train.main(["--experiment", "demo", "--set", "trainer.epochs=2", "--run-dir", "x"]) == 0
    assert steps[1:] == [("train", "x", 2, demo_dirs), ("evaluate+export", "x")]
    # pointed at other records: trained like any experiment (nothing rendered, evaluated or exported)
    steps.clear()
    assert train.main(["--experiment", "demo", "--set", "data.record_dirs=[records/mine]", "--run-dir", "y"]) == 0
    assert steps == [("train", "y", 12, ["records/mine"])]
    # FATAUVA-Net's demo takes the same route; a run dir is needed only outside a demo
    steps.clear()
    assert train.main(["--experiment", "fatauvanet_demo"]) == 0
    assert [step[0] for step in steps] == ["prepare", "train", "evaluate+export"]
    assert steps[1][1] == os.path.join("runs", "fatauvanet_demo")
    assert train.main(["--experiment", "no_coupling"]) == 2


# ------------------------------------------------------------------------------------------ training (TF)

S = 32


def random_batches(n=24, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, S, S, 3)).astype(np.float32)
    third = n // 3  # three streams: VA, AU, EXPR rows, as the pipeline concatenates them
    targets = {"expr": np.concatenate([np.full(2 * third, -1), rng.integers(0, 7, n - 2 * third)]).astype(np.int32),
               "va": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
               "va_mask": (np.arange(n) < third).astype(np.float32),
               "au": (rng.random((n, 17)) > 0.6).astype(np.float32),
               "au_mask": np.repeat(((np.arange(n) >= third) & (np.arange(n) < 2 * third))[:, None], 17, 1)
               .astype(np.float32)}
    return tf.data.Dataset.from_tensor_slices((images, targets)).batch(n).cache().repeat(), targets


def tiny(*overrides):
    return config.override(config.experiment("no_coupling"),
                           ["model.preset=tiny", "model.dropout=0.0", "trainer.learning_rate=1e-2",
                            "trainer.verbose=0", *overrides])


def test_fit_lowers_the_loss_and_fills_the_run_dir(tmp_path):
    from fbnet_tf import runs, train

    data, _ = random_batches()
    cfg = tiny("trainer.epochs=12")
    trainer, history = train.train(cfg, tmp_path / "run", train_data=data, steps_per_epoch=2)
    losses = history.history["loss"]
    assert losses[-1] < 0.85 * losses[0], losses
    run = runs.run_dir(tmp_path / "run")
    for path in (run.config, run.history, run.model, run.checkpoints / "last.weights.h5"):
        assert path.is_file(), path
    assert any(run.logs.rglob("events.out.tfevents*"))
    assert runs.load_config(run.root) == cfg
    with run.history.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(12))
    assert {"loss_expression", "loss_au", "loss_va", "ccc_valence", "au_f1", "expr_accuracy"} <= set(rows[0])
    np.testing.assert_allclose([float(r["loss"]) for r in rows], losses, rtol=1e-5)
    # the saved model is the trained network, behind softmax / sigmoid / clip
    images = np.random.default_rng(1).uniform(0, 255, (3, S, S, 3)).astype(np.float32)
    model = runs.load_inference_model(run.root)
    logits = trainer.network(images, training=False)["expression_logits"].numpy()
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(model(images)["expression"].numpy(), expected, rtol=1e-4, atol=1e-6)
    checkpoint_model = runs.load_inference_model(run.checkpoints / "last.weights.h5")
    np.testing.assert_allclose(checkpoint_model(images)["expression"].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_run_config_stores_record_dirs_resolved_and_as_given(tmp_path, monkeypatch):
    from fbnet_tf import runs, train

    (tmp_path / "records" / "disfa").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    data, _ = random_batches()
    train.train(tiny("trainer.epochs=1", "data.record_dirs=[records/disfa]"), tmp_path / "run", train_data=data,
                steps_per_epoch=1)
    stored = runs.load_config(tmp_path / "run").data
    assert stored.record_dirs == [str(tmp_path / "records" / "disfa")]
    assert stored.record_dirs_given == ["records/disfa"]


def test_nan_stops_the_run_naming_the_term(tmp_path):
    from fbnet_tf import runs, train

    data, targets = random_batches()
    import tensorflow as tf

    bad = dict(targets, va=np.where(np.arange(24)[:, None] == 0, np.nan, targets["va"]).astype(np.float32))
    images = next(iter(data))[0]
    data = tf.data.Dataset.from_tensors((images, bad)).repeat()
    with pytest.raises(train.TrainingDiverged, match=r"loss term 'va' became NaN at epoch 1, batch 1.*"
                                                    r"no epoch had finished, so nothing was saved"):
        train.train(tiny("trainer.epochs=3"), tmp_path / "run", train_data=data, steps_per_epoch=2)
    assert runs.completed_epochs(tmp_path / "run") == 0  # the diverged weights were never backed up


def test_a_resumed_run_trains_at_the_learning_rate_its_config_says(tmp_path):
    import keras

    from fbnet_tf import runs, train

    data, _ = random_batches()
    trainer, _ = train.train(tiny("trainer.epochs=2"), tmp_path / "run", train_data=data, steps_per_epoch=1)
    assert float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate)) == pytest.approx(1e-2)
    cfg = tiny("trainer.epochs=3", "trainer.learning_rate=0.05")
    trainer, history = train.train(cfg, tmp_path / "run", train_data=data, steps_per_epoch=1)
    assert history.epoch == [2]  # resumed after the 2 finished epochs
    assert float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate)) == pytest.approx(0.05)
    assert int(keras.ops.convert_to_numpy(trainer.optimizer.iterations)) == 3  # the restored state, continued
    assert runs.load_config(tmp_path / "run").trainer.learning_rate == 0.05
    with pytest.raises(config.ConfigError, match=r"trainer.epochs=2: the run .* has already finished 3 epochs"):
        train.train(tiny("trainer.epochs=2"), tmp_path / "run", train_data=data, steps_per_epoch=1)
    assert runs.load_config(tmp_path / "run").trainer.epochs == 3  # config.yaml still says what ran


@pytest.mark.parametrize("manifest", [False, True])  # no manifest: the records are counted first (the error comes
def test_a_truncated_shard_is_named(tmp_path, manifest):  # there); with one, during model.fit
    import json

    from fbnet_tf import train

    write_records(tmp_path / "records")
    if manifest:  # the builders' per-stream counts of the fixture: 6 VA, 6 AU (all 17), 6 EXPR images
        (tmp_path / "records" / "manifest.json").write_text(json.dumps({"splits": {"train": {
            "count": 18, "labels": {"va": 6, "expression": {"Neutral": 6}, "au_annotated": {"AU1": 6}}}}}))
    shard = tmp_path / "records" / "fixture-train.tfrecord-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-100])
    cfg = tiny("trainer.epochs=1", f"data.record_dirs=[{tmp_path / 'records'}]", "data.batch_size=9",
               "data.validation=false")
    with pytest.raises(RuntimeError, match=rf"^{shard}: truncated record at byte \d+ \(it needs \d+ bytes, "
                                           rf"the file ends at {shard.stat().st_size}\); rebuild it"):
        train.train(cfg, tmp_path / "run")


def test_runtime_choices_on_this_cpu():
    from fbnet_tf import train

    assert train.use_jit("auto") is False  # XLA is slower on CPU (stack notes)
    assert train.use_jit(True) is True and train.use_jit(False) is False
    assert train.make_strategy("auto").num_replicas_in_sync == 1


# --------------------------------------------------------------------------------- the CLI, killed and resumed

def write_records(folder: Path, seed=0):
    """A small record folder in the contract's layout: VA-only, AU-only and EXPR-only faces, plus a validation split."""
    import cv2
    import tensorflow as tf

    from fbnet_tf.records import Sample, encode_example

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for split, n in (("train", 18), ("validation", 6)):
        with tf.io.TFRecordWriter(str(folder / f"fixture-{split}.tfrecord-00000-of-00001")) as writer:
            for i in range(n):
                image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                kind = i % 3
                sample = Sample(image=cv2.imencode(".png", image)[1].tobytes(), height=40, width=40,
                                source="fixture", split=split, sample_id=f"{split}/{i}",
                                va=tuple(rng.uniform(-1, 1, 2)) if kind == 0 else None,
                                au=(rng.random(17) > 0.5).astype(np.float32) if kind == 1 else None,
                                au_mask=np.ones(17, np.float32) if kind == 1 else None,
                                expr=int(rng.integers(0, 7)) if kind == 2 else -1)
                writer.write(encode_example(sample))


def _epochs(history: Path) -> list[int]:
    if not history.is_file():
        return []
    with history.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow  # two CLI processes (TensorFlow import, tracing, tf.data): ~30 s idle, 90 s on a busy machine
def test_cli_resumes_a_killed_run_without_repeating_or_losing_epochs(tmp_path):
    write_records(tmp_path / "records")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fbnet_tf.train", "--experiment", "soft_coannotation_du2014",
           "--set", "model.preset=tiny", "--set", f"data.record_dirs=[{tmp_path / 'records'}]",
           "--set", "data.batch_size=9", "--set", "data.validation_batch_size=6", "--set", "trainer.verbose=2",
           "--run-dir", str(run)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    first = subprocess.Popen(cmd + ["--set", "trainer.epochs=1000"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_epochs(run / "history.csv")) < 3 and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    logged = _epochs(run / "history.csv")
    assert len(logged) >= 3, "the first run never logged 3 epochs"
    total = len(logged) + 3
    second = subprocess.run(cmd + ["--set", f"trainer.epochs={total}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _epochs(run / "history.csv") == list(range(total))
    resumed_at = int(open(run / "backup" / "training_metadata.json").read().split('"epoch": ')[1].split(",")[0])
    assert resumed_at == total
    started = [line for line in second.stdout.splitlines() if line.startswith("Epoch ")]
    assert started and started[0] != f"Epoch 1/{total}" and started[-1] == f"Epoch {total}/{total}"
    assert (run / "model.keras").is_file() and (run / "checkpoints" / "best.weights.h5").is_file()


def test_a_backup_cut_short_falls_back_to_the_previous_one(tmp_path):
    import h5py

    from fbnet_tf import runs

    backup = runs.run_dir(tmp_path).backup
    backup.mkdir(parents=True)
    with h5py.File(backup / "latest.weights.h5.bkp", "w") as f:
        f.create_dataset("w", data=np.arange(3.0))
    (backup / "training_metadata.json.bkp").write_text('{"epoch": 4, "batch": 0}')
    full = (backup / "latest.weights.h5.bkp").read_bytes()
    (backup / "latest.weights.h5").write_bytes(full[: len(full) // 2])  # killed while writing epoch 5
    (backup / "training_metadata.json").write_text('{"epoch": 4, "batch": 0}')
    assert "restored the one before it" in runs.repair_backup(tmp_path)
    assert runs.completed_epochs(tmp_path) == 4
    assert (backup / "latest.weights.h5").read_bytes() == full
    assert runs.repair_backup(tmp_path) is None  # now sound
    (backup / "training_metadata.json").write_text('{"epo')  # cut inside the metadata, no previous state
    for name in ("latest.weights.h5.bkp", "training_metadata.json.bkp"):
        (backup / name).unlink()
    assert "starting over" in runs.repair_backup(tmp_path)
    assert runs.completed_epochs(tmp_path) == 0


def test_history_rows_past_the_backup_or_cut_short_are_dropped(tmp_path):
    from fbnet_tf import runs

    history = runs.run_dir(tmp_path).history
    history.write_text("epoch,loss\n0,3.0\n1,2.5\n2,2.25\n3")
    assert runs.trim_history(tmp_path, 2) == 2
    assert history.read_text().splitlines() == ["epoch,loss", "0,3.0", "1,2.5"]
    assert runs.best_logged(tmp_path, "loss") == 2.5
