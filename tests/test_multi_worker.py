"""Multi-worker training: two local workers against one process.

The module fixture starts two MultiWorkerMirroredStrategy workers on
loopback ports (tests/_mw_worker.py with TF_CONFIG), then the same script
without TF_CONFIG, and the tests compare what they saved.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from imgrec.errors import ImgrecError
from imgrec.training import distribute
from imgrec.training import keras_internals

import _mw_worker

WORKER_SCRIPT = os.path.join(os.path.dirname(__file__), "_mw_worker.py")
NUM_WORKERS = 2
TIMEOUT_S = 300
RUNS = ("sgd", "adam", "plain", "bn", "resume")
# Runs whose gradients do not depend on how a global batch is split between
# replicas (no BatchNorm), so they must match single-process training.
SPLIT_INVARIANT_RUNS = ("sgd", "adam", "plain", "resume")


def free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def run_processes(commands, log_dir, name):
  """Runs (args, env) pairs at once; returns [(returncode, log text)]."""
  procs = []
  for i, (args, env) in enumerate(commands):
    log = open(os.path.join(log_dir, f"{name}{i}.log"), "w+")
    procs.append((subprocess.Popen(args, env=env, stdout=log,
                                   stderr=subprocess.STDOUT), log))
  results = []
  for proc, log in procs:
    try:
      code = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      code = "timeout"
    log.seek(0)
    results.append((code, log.read()))
    log.close()
  return results


def base_env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  return env


def worker_commands(out_dir):
  cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(NUM_WORKERS)]}
  commands = []
  for index in range(NUM_WORKERS):
    env = base_env()
    env["TF_CONFIG"] = json.dumps({
        "cluster": cluster, "task": {"type": "worker", "index": index}})
    commands.append(([sys.executable, WORKER_SCRIPT, out_dir], env))
  return commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("multi_worker")
  multi, single = root / "multi", root / "single"
  multi.mkdir()
  single.mkdir()
  # The single process runs beside the workers: they mostly wait on each
  # other, so this costs little time.
  single_command = ([sys.executable, WORKER_SCRIPT, str(single)], base_env())
  *workers, single_process = run_processes(
      worker_commands(str(multi)) + [single_command], str(root), "process")
  if (any(code != 0 for code, _ in workers) and
      any("already in use" in log for _, log in workers)):
    # Another program took a port between free_ports() and the workers.
    workers = run_processes(worker_commands(str(multi)), str(root), "retry")
  return {"root": root, "multi": multi, "single": single,
          "workers": workers, "single_process": single_process}


def load(directory, run, role):
  with np.load(os.path.join(directory, f"{run}.{role}.npz")) as f:
    weights = [f[f"arr_{i}"] for i in range(len(f.files))]
  with open(os.path.join(directory, f"{run}.{role}.json")) as f:
    return weights, json.load(f)


def assert_weights_close(actual, expected, atol):
  assert len(actual) == len(expected)
  for i, (a, b) in enumerate(zip(actual, expected)):
    np.testing.assert_allclose(a, b, atol=atol, rtol=0,
                               err_msg=f"weight {i}")


@pytest.mark.slow
def test_processes_finish(trained):
  for code, log in trained["workers"] + [trained["single_process"]]:
    assert code == 0, log[-3000:]
  _, chief = load(trained["multi"], "sgd", "worker0")
  _, other = load(trained["multi"], "sgd", "worker1")
  _, single = load(trained["single"], "sgd", "single")
  assert chief["patched"] and chief["multi_worker"] and chief["chief"]
  assert other["multi_worker"] and not other["chief"]
  assert not single["multi_worker"] and single["chief"]


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_workers_end_with_the_same_model(trained, run):
  # "bn" includes BatchNorm moving statistics, which Keras alone lets drift.
  w0, log0 = load(trained["multi"], run, "worker0")
  w1, log1 = load(trained["multi"], run, "worker1")
  assert_weights_close(w1, w0, atol=1e-6)
  assert log0["history"] == log1["history"]


@pytest.mark.slow
@pytest.mark.parametrize("run", SPLIT_INVARIANT_RUNS)
def test_two_workers_train_like_one_process(trained, run):
  multi, multi_log = load(trained["multi"], run, "worker0")
  single, single_log = load(trained["single"], run, "single")
  assert_weights_close(multi, single, atol=1e-4)
  # Epoch metrics are over the global batch, not one worker's shard.
  assert multi_log["history"].keys() == single_log["history"].keys()
  for name, values in single_log["history"].items():
    np.testing.assert_allclose(multi_log["history"][name], values, atol=1e-5,
                               err_msg=name)


@pytest.mark.slow
def test_checkpoints_resume_and_only_the_chief_keeps_files(trained):
  run_dir = trained["multi"] / "resume"
  resumed, chief = load(trained["multi"], "resume", "worker0")
  _, other = load(trained["multi"], "resume", "worker1")
  # The second fit resumed from the backup at epoch 1 of 2 ...
  assert len(chief["history"]["loss"]) == 1
  assert len(other["history"]["loss"]) == 1
  # ... and ends where two uninterrupted epochs end.
  straight, _ = load(trained["single"], "adam", "single")
  assert_weights_close(resumed, straight, atol=1e-4)

  assert chief["backup_written"] and other["backup_written"]
  assert chief["own_backup"] == str(run_dir / "backup")
  assert other["own_backup"] == str(run_dir / "workertemp_1" / "backup")
  # Every worker saves (saving may run collective ops), each to its own place.
  assert chief["written"] == [str(run_dir / "backup" / "latest.weights.h5"),
                              str(run_dir / "best.weights.h5")]
  assert other["written"] == [
      str(run_dir / "workertemp_1" / "backup" / "latest.weights.h5"),
      str(run_dir / "workertemp_1" / "best.weights.h5")]
  # Backups are deleted after training; the worker's temp dir is gone.
  assert sorted(os.listdir(run_dir)) == ["best.weights.h5"]
  model = _mw_worker.tiny_model()
  model.load_weights(str(run_dir / "best.weights.h5"))
  assert_weights_close(model.get_weights(), resumed, atol=0)


@pytest.fixture
def unpatched():
  keras_internals.unpatch_keras()
  yield
  keras_internals.unpatch_keras()


def test_patch_is_idempotent_and_reversible(unpatched):
  # pylint: disable=g-import-not-at-top
  from keras.src.backend.tensorflow import trainer as tf_trainer
  original = tf_trainer.reduce_per_replica
  assert keras_internals.patch_keras()
  patched = tf_trainer.reduce_per_replica
  assert patched is not original
  assert keras_internals.patch_keras()
  assert tf_trainer.reduce_per_replica is patched
  keras_internals.unpatch_keras()
  assert tf_trainer.reduce_per_replica is original


def test_patch_is_skipped_once_keras_is_fixed(unpatched, monkeypatch):
  # pylint: disable=g-import-not-at-top
  from keras.src.backend.tensorflow import trainer as tf_trainer
  original = tf_trainer.reduce_per_replica
  monkeypatch.setattr(keras_internals, "KERAS_FIXED_IN", (3, 0))
  assert not keras_internals.keras_needs_patch()
  assert not keras_internals.patch_keras()
  assert tf_trainer.reduce_per_replica is original


def test_patch_refuses_changed_keras_internals(unpatched, monkeypatch):
  # pylint: disable=g-import-not-at-top
  from keras.src.backend.tensorflow import trainer as tf_trainer
  monkeypatch.delattr(tf_trainer, "reduce_per_replica")
  with pytest.raises(ImgrecError, match="reduce_per_replica"):
    keras_internals.patch_keras()


def test_single_process_training_is_unchanged(unpatched, tmp_path):
  """Under the default strategy the patch and the helpers change nothing."""
  strategy = tf.distribute.get_strategy()
  assert not distribute.is_multi_worker(strategy)
  assert distribute.is_chief(strategy)
  path = str(tmp_path / "best.keras")
  assert distribute.worker_path(path, strategy) == path
  ds = distribute.distribute_dataset(_mw_worker.dataset_fn, strategy)
  assert isinstance(ds, tf.data.Dataset)
  assert ds.element_spec[0].shape[0] == _mw_worker.GLOBAL_BATCH

  def train(fit):
    model = _mw_worker.compiled(strategy, _mw_worker.tiny_model, "adam")
    history = fit(model)
    return model.get_weights(), history.history

  plain = train(lambda m: m.fit(_mw_worker.global_batches(), epochs=1,
                                verbose=0))
  keras_internals.patch_keras()
  helper = train(lambda m: distribute.fit(
      m, _mw_worker.dataset_fn, epochs=1, verbose=0,
      callbacks=[keras.callbacks.ModelCheckpoint(path)]))
  assert_weights_close(helper[0], plain[0], atol=0)
  assert helper[1] == plain[1]
  assert os.path.isfile(path)


@pytest.mark.slow
def test_imgrec_train_cli_on_two_workers(tmp_path):
  """`imgrec-train --strategy=multi_worker` end to end on two processes."""
  from conftest import write_toy_folder  # pylint: disable=g-import-not-at-top
  data = write_toy_folder(tmp_path / "data", per_class=12)
  model_dir = tmp_path / "run"
  cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(NUM_WORKERS)]}
  commands = []
  for index in range(NUM_WORKERS):
    env = base_env()
    env["TF_CONFIG"] = json.dumps({
        "cluster": cluster, "task": {"type": "worker", "index": index}})
    commands.append(([sys.executable, "-m", "imgrec.cli.train",
                      f"--data_dir={data}", f"--model_dir={model_dir}",
                      "--epochs=2", "--image_size=16", "--batch_size=8",
                      "--strategy=multi_worker"], env))
  results = run_processes(commands, str(tmp_path), "cli")
  for code, log in results:
    assert code == 0, log[-3000:]
  assert "test accuracy" in results[0][1]
  assert "worker done" in results[1][1]
  for name in ("best.keras", "report.json", "history.csv",
               "export/model.tflite"):
    assert (model_dir / name).exists(), name
  with open(model_dir / "history.csv") as f:
    assert len(f.read().strip().splitlines()) == 3
  # The other worker keeps only its own backup (for a rerun to resume from).
  for name in os.listdir(model_dir):
    if name.startswith("workertemp"):
      assert os.listdir(model_dir / name) == ["checkpoints"], name
