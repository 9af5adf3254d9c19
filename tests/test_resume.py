"""Never lose a run: SIGKILL, SIGTERM and crashes mid-write, then a rerun.

The module fixture trains a tiny folder three times with the same command,
next to one uninterrupted run of it: SIGKILL after two epochs are logged,
rerun and SIGTERM it after four, rerun to the end. The tests check what a
user would see: the rerun resumes, each epoch is logged once, the SIGTERM
exit is clean, and the result is the uninterrupted run's, bit for bit
(--deterministic). The unit tests crash writes on purpose.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

from conftest import write_toy_folder
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder
from imgrec.training import checkpoint as checkpoint_lib
from imgrec.training import resume

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
EPOCHS = 8
BATCH_SIZE = 4
TIMEOUT_S = 300


def start(args, log_prefix):
  out = open(log_prefix + ".out", "w+")
  err = open(log_prefix + ".err", "w+")
  proc = subprocess.Popen([sys.executable, "-m", "imgrec.cli.train", *args],
                          stdout=out, stderr=err, env=ENV)
  return proc, out, err


def finish(proc, out, err):
  """Waits for a process; returns (returncode, stdout, stderr)."""
  try:
    code = proc.wait(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    code = "timeout"
  out.seek(0)
  err.seek(0)
  return code, out.read(), err.read()


def history_epochs(model_dir):
  path = os.path.join(model_dir, "history.csv")
  try:
    with open(path, newline="") as f:
      return [int(row["epoch"]) for row in csv.DictReader(f)]
  except (OSError, KeyError, ValueError):
    return []


def signal_after(proc, out, err, model_dir, epochs_logged, signum):
  """Sends `signum` once `epochs_logged` rows are in history.csv."""
  while len(history_epochs(model_dir)) < epochs_logged:
    if proc.poll() is not None:
      code, stdout, stderr = finish(proc, out, err)
      raise AssertionError(f"training ended ({code}) before it was "
                           f"signalled:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    time.sleep(0.05)
  sent = time.time()
  proc.send_signal(signum)
  code, stdout, stderr = finish(proc, out, err)
  return code, stdout, stderr, time.time() - sent


def backup_arrays(model_dir):
  """Every array of the final backup (weights and optimizer), by path."""
  arrays = {}
  path = os.path.join(model_dir, "checkpoints", resume.WEIGHTS_NAME)
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                 if isinstance(obj, h5py.Dataset) else None)
  return arrays


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("resume"))
  data = write_toy_folder(os.path.join(tmp, "data"), per_class=12, size=24)
  args = [f"--data_dir={data}", f"--epochs={EPOCHS}", "--image_size=16",
          f"--batch_size={BATCH_SIZE}", "--export=false", "--deterministic",
          "--seed=7"]
  ref_dir, run_dir = os.path.join(tmp, "ref"), os.path.join(tmp, "run")
  logs = os.path.join(tmp, "log")
  # The uninterrupted run shares the two cores with the first, killed one.
  ref = start(args + [f"--model_dir={ref_dir}"], logs + "_ref")
  killed = signal_after(*start(args + [f"--model_dir={run_dir}"],
                               logs + "_killed"),
                        run_dir, 2, signal.SIGKILL)
  terminated = signal_after(*start(args + [f"--model_dir={run_dir}"],
                                   logs + "_terminated"),
                            run_dir, 4, signal.SIGTERM)
  report_after_sigterm = os.path.exists(os.path.join(run_dir, "report.json"))
  final = finish(*start(args + [f"--model_dir={run_dir}"], logs + "_final"))
  ref = finish(*ref)
  for name, result in (("reference", ref), ("final", final)):
    assert result[0] == 0, f"{name} run failed:\n{result[2][-3000:]}"
  return dict(ref_dir=ref_dir, run_dir=run_dir, killed=killed,
              terminated=terminated, final=final, ref=ref,
              report_after_sigterm=report_after_sigterm)


@pytest.mark.slow
def test_rerun_after_sigkill_resumes(runs):
  assert runs["killed"][0] == -signal.SIGKILL
  # Two epochs were logged when it was killed; the backup of the second may
  # not have been committed yet.
  assert "resuming after epoch 1 of" in runs["terminated"][2] or (
      "resuming after epoch 2 of" in runs["terminated"][2])


@pytest.mark.slow
def test_each_epoch_logged_once(runs):
  assert history_epochs(runs["run_dir"]) == list(range(EPOCHS))


@pytest.mark.slow
def test_finished_run_has_all_steps_and_outputs(runs):
  run_dir = runs["run_dir"]
  with open(os.path.join(run_dir, "splits.json")) as f:
    num_train = len(json.load(f)["splits"]["train"]["paths"])
  iterations = [v for k, v in backup_arrays(run_dir).items()
                if k.startswith("optimizer/") and v.dtype.kind == "i"]
  assert iterations == [EPOCHS * (num_train // BATCH_SIZE)]
  model = keras.models.load_model(os.path.join(run_dir, "best.keras"))
  assert model.output_shape == (None, 3)
  with open(os.path.join(run_dir, "report.json")) as f:
    assert json.load(f)["num_examples"] > 0
  assert "test accuracy" in runs["final"][1]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(runs):
  ref, resumed = backup_arrays(runs["ref_dir"]), backup_arrays(runs["run_dir"])
  assert sorted(ref) == sorted(resumed)
  for name in ref:
    np.testing.assert_array_equal(resumed[name], ref[name], err_msg=name)
  with open(os.path.join(runs["ref_dir"], "history.csv")) as f:
    expected = f.read()
  with open(os.path.join(runs["run_dir"], "history.csv")) as f:
    assert f.read() == expected
  # The whole report but the one timed figure.
  reports = []
  for run_dir in (runs["ref_dir"], runs["run_dir"]):
    with open(os.path.join(run_dir, "report.json")) as f:
      report = json.load(f)
    assert report.pop("latency_ms")["median"] > 0
    reports.append(report)
  assert reports[0] == reports[1]


@pytest.mark.slow
def test_sigterm_exits_cleanly_and_rerun_resumes(runs):
  code, _, stderr, seconds = runs["terminated"]
  assert code == 128 + signal.SIGTERM
  last_line = stderr.strip().splitlines()[-1]
  assert "interrupted by SIGTERM after" in last_line
  assert "rerun the same command to resume" in last_line
  assert "Traceback" not in stderr
  assert seconds < 60
  # No evaluation or export of a half-trained model.
  assert not runs["report_after_sigterm"]
  assert "resuming after epoch" in runs["final"][2]


# Unit tests: crashes in the middle of a write.


def tiny_model():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                            keras.layers.Dropout(0.5), keras.layers.Dense(2)])
  model.compile(keras.optimizers.Adam(1e-2), "mse")
  return model


def tiny_data():
  rng = np.random.default_rng(0)
  return rng.normal(size=(16, 4)), rng.normal(size=(16, 2))


class StopAtEpoch(keras.callbacks.Callback):
  """Raises when `epoch` begins: a crash after the previous epoch's backup."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.epoch:
      raise RuntimeError("crash")


def backup(backup_dir, epochs, **kwargs):
  """The backup callback and the epoch to start from, as the trainer does."""
  restore_dir, metadata = resume.restore_point(backup_dir)
  callback = resume.TrainingBackup(backup_dir, restore_dir=restore_dir,
                                   **kwargs)
  return callback, resume.resume_epoch(metadata, epochs)


def train_until_crash(backup_dir, epochs_done):
  model = tiny_model()
  x, y = tiny_data()
  callback, start = backup(backup_dir, epochs_done + 5)
  with pytest.raises(RuntimeError, match="crash"):
    model.fit(x, y, initial_epoch=start, epochs=epochs_done + 5,
              batch_size=4, verbose=0,
              callbacks=[callback, StopAtEpoch(epochs_done)])
  return model


class _RecordStart(keras.callbacks.Callback):
  """Stops fit before any training, keeping the restored weights."""

  def on_epoch_begin(self, epoch, logs=None):
    raise _Stop()


class _Stop(Exception):
  pass


def restored(backup_dir):
  """A fresh model restored from `backup_dir`, and the epoch it resumes at."""
  model = tiny_model()
  callback, start = backup(backup_dir, 10)
  x, y = tiny_data()
  with pytest.raises(_Stop):
    model.fit(x, y, initial_epoch=start, epochs=10, batch_size=4, verbose=0,
              callbacks=[callback, _RecordStart()])
  assert callback.restored_epoch == start
  return model, callback.restored_epoch


def assert_same_weights(a, b):
  for wa, wb in zip(a.get_weights(), b.get_weights()):
    np.testing.assert_array_equal(wa, wb)


def test_crash_while_writing_backup_keeps_previous(tmp_path, monkeypatch):
  backup_dir = str(tmp_path / "backup")
  model = train_until_crash(backup_dir, 2)
  expected = [w.copy() for w in model.get_weights()]

  def torn_write(self, filepath, overwrite=True):
    with open(filepath, "wb") as f:
      f.write(b"\x89HDF\r\n half a file")
    raise KeyboardInterrupt

  monkeypatch.setattr(keras.Model, "save_weights", torn_write)
  x, y = tiny_data()
  with pytest.raises(KeyboardInterrupt):
    model.fit(x, y, initial_epoch=2, epochs=4, batch_size=4, verbose=0,
              callbacks=[backup(backup_dir, 4)[0]])
  monkeypatch.undo()
  fresh, epoch = restored(backup_dir)
  assert epoch == 2
  for got, want in zip(fresh.get_weights(), expected):
    np.testing.assert_array_equal(got, want)
  assert sorted(os.listdir(backup_dir)) == [resume.WEIGHTS_NAME,
                                            resume.METADATA_NAME]


def test_kill_between_renames_completes_commit(tmp_path, monkeypatch):
  backup_dir = str(tmp_path / "backup")
  model = train_until_crash(backup_dir, 1)
  real_replace = os.replace

  def replace(src, dst):
    if dst.endswith(resume.METADATA_NAME):
      raise KeyboardInterrupt  # After the weights were renamed.
    real_replace(src, dst)

  monkeypatch.setattr(resume.os, "replace", replace)
  x, y = tiny_data()
  with pytest.raises(KeyboardInterrupt):
    model.fit(x, y, initial_epoch=1, epochs=2, batch_size=4, verbose=0,
              callbacks=[backup(backup_dir, 2)[0]])
  monkeypatch.undo()
  fresh, epoch = restored(backup_dir)
  assert epoch == 2
  assert_same_weights(fresh, model)


def test_keras_backup_is_not_atomic(tmp_path):
  """Why resume.TrainingBackup exists: Keras's own leaves a torn file."""
  backup_dir = str(tmp_path / "backup")
  model = tiny_model()
  x, y = tiny_data()
  model.fit(x, y, epochs=1, verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(
                backup_dir, delete_checkpoint=False)])
  with open(os.path.join(backup_dir, "latest.weights.h5"), "r+b") as f:
    f.truncate(100)  # What a kill during its in-place write leaves.
  with pytest.raises(OSError):
    tiny_model().fit(x, y, epochs=2, verbose=0,
                     callbacks=[keras.callbacks.BackupAndRestore(backup_dir)])


def test_damaged_backup_is_a_clear_error(tmp_path):
  backup_dir = str(tmp_path / "backup")
  train_until_crash(backup_dir, 1)
  os.remove(os.path.join(backup_dir, resume.METADATA_NAME))
  with pytest.raises(ImgrecError, match="delete that folder"):
    restored(backup_dir)


class Score(keras.callbacks.Callback):
  """Reports a made-up validation score per epoch."""

  def __init__(self, scores):
    super().__init__()
    self.scores = scores

  def on_epoch_end(self, epoch, logs=None):
    logs["score"] = self.scores[epoch]


def test_best_model_survives_resume_and_torn_write(tmp_path, monkeypatch):
  backup_dir, best = str(tmp_path / "backup"), str(tmp_path / "best.keras")
  x, y = tiny_data()
  scores = [0.9, 0.5, 0.6, 0.95]

  def fit(model, stop_at, epochs=4):
    checkpoint = checkpoint_lib.BestModelCheckpoint(
        best, monitor="score", mode="max")
    callback, start = backup(backup_dir, epochs, state_callbacks=[checkpoint])
    model.fit(x, y, initial_epoch=start, epochs=epochs, batch_size=4,
              verbose=0, callbacks=[Score(scores), checkpoint, callback,
                                    StopAtEpoch(stop_at)])

  with pytest.raises(RuntimeError):
    fit(tiny_model(), stop_at=2)
  written = os.path.getmtime(best), open(best, "rb").read()
  # The rerun's epoch 2 scores 0.6: worse than epoch 0, so best.keras stays.
  with pytest.raises(RuntimeError):
    fit(tiny_model(), stop_at=3)
  assert (os.path.getmtime(best), open(best, "rb").read()) == written

  def torn_save(self, filepath, overwrite=True, **kwargs):
    with open(filepath, "wb") as f:
      f.write(b"PK\x03\x04 half a zip")
    raise KeyboardInterrupt

  # Epoch 3 scores best, and the process dies while saving it.
  monkeypatch.setattr(keras.Model, "save", torn_save)
  with pytest.raises(KeyboardInterrupt):
    fit(tiny_model(), stop_at=4)
  monkeypatch.undo()
  assert open(best, "rb").read() == written[1]
  keras.models.load_model(best)
  assert sorted(os.listdir(tmp_path)) == ["backup", "best.keras"]


def test_ema_resume_equals_uninterrupted(tmp_path):
  """SwapEMAWeights leaves the averages in the model at each epoch's end."""
  x, y = tiny_data()

  def fit(backup_dir, stop_at=None):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.compile(keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9),
                  "mse")
    ema = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    callback, start = backup(backup_dir, 4, state_callbacks=[ema])
    model.fit(x, y, initial_epoch=start, epochs=4, batch_size=4,
              shuffle=False, verbose=0,
              callbacks=[ema, callback, StopAtEpoch(stop_at)])
    return model

  reference = fit(str(tmp_path / "reference"))
  with pytest.raises(RuntimeError):
    fit(str(tmp_path / "resumed"), stop_at=2)
  resumed = fit(str(tmp_path / "resumed"))
  assert_same_weights(resumed, reference)
  for a, b in zip(resumed.optimizer.variables, reference.optimizer.variables):
    np.testing.assert_array_equal(a, b, err_msg=a.path)


def test_truncate_history(tmp_path):
  run = RunFolder(str(tmp_path))
  rows = ["epoch,loss\r\n", "0,1.0\r\n", "1,0.5\r\n", "2,0.4\r\n",
          "1,0.6\r\n", "2,0.3\r\n", "3,0."]
  with open(run.history_path, "w", newline="") as f:
    f.write("".join(rows))
  assert run.truncate_history(2) == 2
  with open(run.history_path, newline="") as f:
    assert f.read() == "epoch,loss\r\n0,1.0\r\n1,0.5\r\n"
  assert RunFolder(str(tmp_path / "none")).truncate_history(3) == 0
