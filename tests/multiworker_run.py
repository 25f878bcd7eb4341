"""Processes for tests/test_multiworker.py (not a test module).

    python tests/multiworker_run.py cluster LOGS WORKERS TIMEOUT [KILL_AFTER] -- TRAIN_ARGS...
        Start WORKERS `python -m fbnet_tf.train TRAIN_ARGS` processes as one MultiWorkerMirroredStrategy cluster on
        127.0.0.1 (free ports, TF_CONFIG), wait up to TIMEOUT seconds, kill them all on the way out; their output
        goes to LOGS/worker-<i>.log. Exit status: the first non-zero one of the workers (124 on timeout).
        KILL_AFTER=K: SIGKILL the last worker once the run dir's history.csv holds K epochs (exit status 137).
        Meant to run inside `unshare -n` (a network namespace with only loopback): TensorFlow's servers listen on
        every interface.
    python tests/multiworker_run.py reference RUN_DIR PIPELINES -- TRAIN_ARGS...
        One process, one replica, `model.fit`: each step's batch is the concatenation of what PIPELINES workers'
        input pipelines (the same `data.training_dataset` sharding arithmetic) feed their replicas in that step,
        i.e. the global batch of a PIPELINES-worker run; validated on the records' validation split.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def logged_epochs(run_dir):
    try:
        with open(os.path.join(run_dir, "history.csv")) as handle:
            return max(0, len(handle.read().strip().splitlines()) - 1)
    except OSError:
        return 0


def cluster(logs, workers, timeout, train_args, kill_after=None):
    os.makedirs(logs, exist_ok=True)
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    processes = []
    try:
        for index in range(workers):
            env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": addresses},
                                                         "task": {"type": "worker", "index": index}}))
            with open(os.path.join(logs, f"worker-{index}.log"), "w") as log:
                processes.append(subprocess.Popen([sys.executable, "-m", "fbnet_tf.train", *train_args], env=env,
                                                  stdout=log, stderr=subprocess.STDOUT))
        deadline = time.time() + timeout
        run_dir = train_args[train_args.index("--run-dir") + 1]
        while time.time() < deadline and any(p.poll() is None for p in processes):
            if kill_after is not None and logged_epochs(run_dir) >= kill_after:
                processes[-1].send_signal(signal.SIGKILL)
                processes[-1].wait()
                return 137
            if any(p.poll() not in (None, 0) for p in processes):
                break  # one failed: the others would wait for it forever
            time.sleep(0.05)
        codes = [p.poll() for p in processes]
        return next((c if c is not None else 124 for c in codes if c != 0), 0)
    finally:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


def reference(run_dir, pipelines, train_args):
    import tensorflow as tf

    from fbnet_tf import data, train

    args = train.parse_args([*train_args, "--run-dir", run_dir])
    cfg = train.resolve_config(args.config, args.experiment, args.overrides)
    train.configure_runtime(cfg.runtime)  # the global seed, under which the pipelines' shuffles are built
    parts = [data.training_dataset(cfg.data.record_dirs, **train.pipeline_arguments(cfg),
                                   input_context=tf.distribute.InputContext(pipelines, i, pipelines))
             for i in range(pipelines)]

    def concatenate(*batches):
        return (tf.concat([images for images, _ in batches], axis=0),
                {key: tf.concat([targets[key] for _, targets in batches], axis=0) for key in batches[0][1]})

    dataset = tf.data.Dataset.zip(tuple(ds for ds, _ in parts)).map(concatenate)
    validation = data.validation_dataset(cfg.data.record_dirs, batch_size=cfg.data.validation_batch_size,
                                         image_size=cfg.model.image_size) if cfg.data.validation else None
    train.train(cfg, run_dir, train_data=dataset, steps_per_epoch=parts[0][1], validation_data=validation)
    return 0


if __name__ == "__main__":
    split = sys.argv.index("--")
    mode, *options = sys.argv[1:split]
    rest = sys.argv[split + 1:]
    if mode == "cluster":
        sys.exit(cluster(options[0], int(options[1]), float(options[2]), rest,
                         int(options[3]) if len(options) > 3 else None))
    sys.exit(reference(options[0], int(options[1]), rest))
