"""Multi-worker training (MultiWorkerMirroredStrategy, the custom loop of fbnet_tf.distributed) on 127.0.0.1, and
eq. 1's losses over the global batch under a distribution strategy.

The 2-worker run starts two `python -m fbnet_tf.train` processes in a network namespace with only loopback
(`unshare -n`; TensorFlow's servers listen on every interface). Its reference is one process running `model.fit`
on the same global batches: each step, the concatenation of the two workers' per-replica batches, built by the
same sharding arithmetic (`data.training_dataset` with each worker's input context). The losses are sums and
means over rows, so the order of the rows does not matter; what differs is the order of floating-point sums
(gradients summed over 2 replicas), hence a tolerance.
"""
import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "tests" / "multiworker_run.py"


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")


# ------------------------------------------------------------------------------------------ each worker's share

def test_shard_files_go_whole_to_workers_only_when_they_balance():
    from fbnet_tf import data

    even = {f"s-{i}": 10 for i in range(4)}
    shares = [data.worker_share(even, 2, i) for i in range(2)]
    assert [shard for _, shard in shares] == [None, None]  # by file
    files = [{f for f, _, _ in cut} for cut, _ in shares]
    assert not files[0] & files[1] and files[0] | files[1] == set(even) and len(files[0]) == 2
    for counts, whole_files in (({"a": 30, "b": 10}, True), ({"a": 10}, True), (even, False)):
        cut, shard = data.worker_share(counts, 2, 1, whole_files=whole_files)
        assert shard == (2, 1) and {f for f, _, _ in cut} == set(counts)  # by data: every file, every 2nd record


def test_workers_sharding_by_data_split_each_pass_of_a_stream_between_them(tmp_path):
    """Sharded by data, each worker keeps every other record of the same seeded pass, after the stream's filter:
    the two workers' passes are disjoint and together hold every image of the stream once (a worker never gets a
    share without images of the stream, which would leave its pipeline waiting forever)."""
    import tensorflow as tf

    from fbnet_tf import data
    from fbnet_tf.records import feature_spec
    from test_train import write_records

    write_records(tmp_path / "records")  # one shard of 18 records: 6 VA, 6 AU, 6 EXPR, interleaved
    counts = data.shard_record_counts(str(tmp_path / "records"), "train")
    spec = {"sample_id": feature_spec()["sample_id"]}
    for stream in data.STREAMS:
        passes = []
        for worker in range(2):
            cut, shard = data.worker_share(counts, 2, worker, whole_files=False)
            records = data.stream_epoch_records(data.segment_table(cut), epoch=0, per_epoch=3, stream_seed=7,
                                                select=stream, shard=shard)
            passes.append([tf.io.parse_single_example(r, spec)["sample_id"].numpy().decode() for r in records])
        kind = data.STREAMS.index(stream)  # write_records: record i is VA, AU, EXPR for i % 3 = 0, 1, 2
        assert sorted(passes[0] + passes[1]) == sorted(f"train/{i}" for i in range(18) if i % 3 == kind), stream
        assert len(passes[0]) == len(passes[1]) == 3


# ------------------------------------------------------------------------------------ losses over the global batch

GLOBAL_LOSSES = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from fbnet_tf import losses

    rng = np.random.default_rng(0)
    n = 12  # two replicas of 6 rows; the VA-labelled rows are unevenly split (5 and 2)
    va = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    pred = (0.6 * va + rng.normal(0, 0.3, (n, 2))).astype(np.float32)
    mask = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0, 0], np.float32)
    logits = rng.normal(0, 1, (n, 7)).astype(np.float32)
    expr = np.array([-1, -1, 3, 0, -1, 6, 2, 5, 1, 4, 0, -1], np.int32)  # 3 and 5 labelled
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def terms(va, pred, mask, expr, logits):
        pred, logits = tf.convert_to_tensor(pred), tf.convert_to_tensor(logits)
        with tf.GradientTape() as tape:
            tape.watch([pred, logits])
            ccc = losses.batch_ccc(va, pred, mask)
            loss = losses.va_loss(va, mask, pred) + losses.expression_loss(expr, logits)
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        return ccc, loss, tape.gradient(scaled, [pred, logits])

    halves = lambda a: strategy.experimental_distribute_values_from_function(
        lambda ctx: a[6 * ctx.replica_id_in_sync_group: 6 * (ctx.replica_id_in_sync_group + 1)])
    ccc, loss, grads = tf.function(lambda *a: strategy.run(terms, args=a))(
        *[halves(a) for a in (va, pred, mask, expr, logits)])
    one_ccc, one_loss, one_grads = terms(va, pred, mask, expr, logits)
    local = strategy.experimental_local_results
    print(json.dumps({
        "ccc": [local(ccc)[r].numpy().tolist() for r in range(2)],
        "loss": [float(local(loss)[r]) for r in range(2)], "one_loss": float(one_loss),
        "grad_pred": np.concatenate([local(grads[0])[r].numpy() for r in range(2)]).tolist(),
        "one_grad_pred": one_grads[0].numpy().tolist(),
        "grad_logits": np.concatenate([local(grads[1])[r].numpy() for r in range(2)]).tolist(),
        "one_grad_logits": one_grads[1].numpy().tolist(),
        "va": va.tolist(), "pred": pred.tolist(), "mask": mask.tolist()}))
""")


def numpy_ccc(x, y):
    mx, my = x.mean(), y.mean()
    return 2 * np.mean((x - mx) * (y - my)) / (x.var() + y.var() + (mx - my) ** 2)


def test_eq1_terms_are_computed_over_the_global_batch_under_mirrored_strategy():
    """Two replicas (logical CPUs) each holding half a batch compute, on each replica, numpy's CCC of the whole
    batch's VA-labelled rows and the global masked means; the replicas' gradients (each replica's loss divided by 2,
    as the trainers do) are the one-device gradients of the whole batch, row for row."""
    import json

    done = subprocess.run([sys.executable, "-c", GLOBAL_LOSSES], env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    va, pred, mask = (np.array(out[k]) for k in ("va", "pred", "mask"))
    rows = mask > 0
    expected = [numpy_ccc(va[rows, d], pred[rows, d]) for d in range(2)]
    for replica in range(2):
        np.testing.assert_allclose(out["ccc"][replica], expected, rtol=1e-5)
        np.testing.assert_allclose(out["loss"][replica], out["one_loss"], rtol=1e-5)
    np.testing.assert_allclose(out["grad_pred"], out["one_grad_pred"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["grad_logits"], out["one_grad_logits"], rtol=1e-4, atol=1e-7)
    assert np.abs(np.array(out["grad_pred"])[~rows]).max() == 0.0  # unlabelled rows get no VA gradient


MIRRORED_FIT = textwrap.dedent("""
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from test_train import random_batches, tiny
    from fbnet_tf import train

    data, _ = random_batches()  # 24 rows: 8 VA, 8 AU, 8 EXPR; replica 0 gets 8 VA + 4 AU, replica 1 4 AU + 8 EXPR
    for name, strategy in (("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
                           ("one", tf.distribute.get_strategy())):
        train.make_strategy = lambda _: strategy
        train.train(tiny("trainer.epochs=2"), f"{sys.argv[1]}/{name}", train_data=data, steps_per_epoch=2)
""")


def test_model_fit_under_mirrored_strategy_matches_one_device(tmp_path):
    """`model.fit` (the single-machine path) under MirroredStrategy over 2 logical CPUs, whose replicas' rows are
    labelled for different tasks, logs and learns what one device does with the whole batch."""
    done = subprocess.run([sys.executable, "-c", MIRRORED_FIT, str(tmp_path)], env=_env(), cwd=REPO / "tests",
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    two, one = (_weights(tmp_path / name / "checkpoints" / "last.weights.h5") for name in ("mirrored", "one"))
    difference = max(float(np.abs(two[k] - one[k]).max()) for k in one)
    print(f"\nMirroredStrategy (2 logical CPUs) vs one device, model.fit, 4 steps at lr 1e-2: max |weight "
          f"difference| = {difference:.3g}")
    assert difference < 1e-4
    for mine, theirs in zip(_history(tmp_path / "mirrored"), _history(tmp_path / "one")):
        for key in ("loss", "loss_va", "loss_au", "loss_expression", "ccc_valence", "ccc_arousal", "au_f1",
                    "expr_accuracy"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), rel=1e-4, abs=1e-6), key


# -------------------------------------------------------------------------------------------- 2 workers vs 1

def _namespaces_available() -> str | None:
    """None when `unshare -n` can make a loopback-only network namespace here, else why not."""
    try:
        done = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare/ip unavailable ({err})"
    return None if done.returncode == 0 else f"unshare -n is not permitted here ({done.stderr.strip()[:200]})"


@contextlib.contextmanager
def _process_group(command):
    """`command` started in its own process group, the whole group (workers included) killed however the block
    ends."""
    process = subprocess.Popen(command, env=_env(), cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _run_bounded(command, timeout):
    """(exit status, output) of `command`, its process group killed at the end or after `timeout` s."""
    with _process_group(command) as process:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output


def _weights(path: Path) -> dict:
    import h5py

    values = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: values.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return values


def _history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def _cluster(logs: Path, args, timeout=240, kill_after=None):
    """Run a 2-worker cluster (`kill_after` epochs: then SIGKILL worker 1, and the whole cluster with it)."""
    launch = " ".join([sys.executable, str(LAUNCHER), "cluster", str(logs), "2", str(timeout - 20),
                       *([str(kill_after)] if kill_after else []), "--", *(f"'{a}'" for a in args)])
    code, output = _run_bounded(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {launch}"], timeout)
    worker_logs = {p.name: p.read_text() for p in sorted(logs.glob("*.log"))}
    assert code == (137 if kill_after else 0), output[-2000:] + "".join(
        f"\n--- {name}\n{text[-3000:]}" for name, text in worker_logs.items())
    return "\n".join(worker_logs.values())


@pytest.mark.slow  # 3 TensorFlow processes, then a killed and a resumed 2-worker run: 1-2 min on a busy 2-core CPU
def test_two_workers_reach_the_weights_of_one_worker_on_the_same_global_batches_and_resume(tmp_path):
    reason = _namespaces_available()
    if reason:
        pytest.skip(reason)
    from fbnet_tf import data, demo, runs

    records = sorted(str(d) for d in demo.prepare(tmp_path / "demo", scale="tiny", workers=1,
                                                  image_size=37).values())
    # Global batch 16: the streams' shares of each worker's 8 rows (3 VA, 2 AU, 3 EXPR) make the global 6/4/6.
    sizes = data.stream_sizes(records)
    assert data.stream_batch_sizes(sizes, 16) == {s: 2 * n for s, n in data.stream_batch_sizes(sizes, 8).items()}
    args = ["--experiment", "demo", "--set", "model.preset=tiny", "--set", "model.dropout=0",
            "--set", "data.augment=false", "--set", "data.deterministic=true", "--set", "data.batch_size=16",
            "--set", "data.validation_batch_size=8", "--set", "trainer.steps_per_epoch=3", "--set", "trainer.verbose=0",
            "--set", f"data.record_dirs=[{','.join(records)}]"]
    run, reference = tmp_path / "run", tmp_path / "reference"
    with _process_group([sys.executable, str(LAUNCHER), "reference", str(reference), "2", "--", *args,
                         "--set", "trainer.epochs=2", "--set", "runtime.strategy=default"]) as one:
        logs = _cluster(tmp_path / "logs", [*args, "--set", "trainer.epochs=2",
                                            "--set", "runtime.strategy=multi_worker", "--run-dir", str(run)])
        output, _ = one.communicate(timeout=200)
        assert one.returncode == 0, output[-3000:]

    assert "sharded by data over 2 input pipelines" in logs
    two, single = _weights(run / "checkpoints" / "last.weights.h5"), _weights(reference / "checkpoints" /
                                                                              "last.weights.h5")
    assert sorted(two) == sorted(single) and len(two) >= 10
    difference = max(float(np.abs(two[k] - single[k]).max()) for k in two)
    scale = max(float(np.abs(single[k]).max()) for k in single)
    print(f"\n2 workers vs 1 worker on the same global batches, after 2 epochs of 3 steps: max |weight difference| "
          f"= {difference:.3g} (largest weight {scale:.3g})")
    assert difference < 1e-4
    # Metrics aggregated over both workers, and the validation: the chief logs what the 1-worker run logs.
    for mine, theirs in zip(_history(run), _history(reference)):
        for key in ("loss", "loss_va", "loss_au", "loss_expression", "ccc_valence", "ccc_arousal", "au_f1",
                    "expr_accuracy", "val_loss", "val_ccc_valence", "val_au_f1", "val_expr_accuracy"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), rel=1e-3, abs=1e-4), key
    assert len(_history(run)) == 2 and (run / "checkpoints" / "best.weights.h5").is_file()
    assert (run / "model.keras").is_file() and not (run / "workers").exists()  # worker 1's copies removed

    # Killed: worker 1 gets SIGKILL once the chief has logged 4 epochs (of 1000); the process group goes with it.
    killed = ["--set", "runtime.strategy=multi_worker", "--run-dir", str(run)]
    _cluster(tmp_path / "logs-killed", [*args, "--set", "trainer.epochs=1000", *killed], kill_after=4)
    done = runs.completed_epochs(run)  # what the chief's backup holds (a kill may cut its last one short)
    assert done >= 2
    # Restarted, one more epoch: both workers resume from the chief's backup, and no epoch is logged twice.
    logs = _cluster(tmp_path / "logs-resumed", [*args, "--set", f"trainer.epochs={done + 1}", *killed])
    resumed = re.findall(rf"resuming after epoch (\d+) of {done + 1}", logs)
    assert len(resumed) == 2 and len(set(resumed)) == 1 and int(resumed[0]) >= done - 1, logs[-3000:]
    print(f"worker 1 killed with {done} epochs backed up; both workers restarted and resumed after epoch "
          f"{resumed[0]}")
    assert [int(row["epoch"]) for row in _history(run)] == list(range(done + 1))
