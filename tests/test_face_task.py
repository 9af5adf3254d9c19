"""Face embedders are the registered task `face_embedding`, trained by the one trainer.

What image runs have, face embedders now have too: every setting checked
before a photo is read, exact resume with the data order after a kill
(`--deterministic`: the weights of an uninterrupted run), mixed precision,
the rerun check that names what differs; and runs written before the task
(a flat face_config.json naming `backbone`) still serve.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY_FACES
from conftest import write_people
from imgrec import tasks
from imgrec.config import FaceTrainConfig
from imgrec.config import FaceVerifyConfig
from imgrec.errors import ImgrecError
from imgrec.faces import embedder as embedder_lib
from imgrec.faces import recognize
from imgrec.run_folder import FACES_COMMAND
from imgrec.run_folder import RunFolder
from imgrec.training import resume
from imgrec.training import trainer
from test_resume import backup_arrays
from test_resume import finish
from test_resume import history_epochs

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def faces_cli(args, log_prefix):
  """Starts `imgrec-faces` with `args` (see test_resume.start)."""
  out = open(log_prefix + ".out", "w+")
  err = open(log_prefix + ".err", "w+")
  proc = subprocess.Popen([sys.executable, "-m", "imgrec.cli.faces", *args],
                          stdout=out, stderr=err, env=ENV)
  return proc, out, err


@pytest.fixture(scope="module")
def people(tmp_path_factory):
  return write_people(tmp_path_factory.mktemp("people") / "people", 8)


def test_the_task_is_registered_and_chosen_by_its_record(people, tmp_path):
  assert tasks.get_task("face_embedding") is tasks.get_task("faces")
  assert "face_embedding" in tasks.list_tasks()
  task = tasks.for_config(FaceTrainConfig(data_dir=people,
                                          model_dir=str(tmp_path / "run")))
  assert type(task).__name__ == "FaceEmbeddingTask"
  assert task.command == FACES_COMMAND
  # The recipe defaults of face embedders, as before the task.
  config = task.config
  assert (config.epochs, config.batch_size, config.optimizer,
          config.learning_rate, config.weight_decay, config.lr_schedule,
          config.warmup_epochs) == (40, 32, "adamw", 2e-3, 1e-4, "cosine", 0)
  assert not config.export


@pytest.mark.parametrize("change,flag", [
    (dict(model="nonexistent"), "--backbone"),
    (dict(image_size=(16, 24)), "--image_size"),
    (dict(mixup=0.2), "--mixup"),
    (dict(export=True), "--export"),
    (dict(data_dir="/nonexistent/people"), "--data_dir")])
def test_bad_settings_fail_before_any_photo_is_read(people, tmp_path, change,
                                                    flag):
  model_dir = tmp_path / "run"
  config = FaceTrainConfig(data_dir=people, model_dir=str(model_dir),
                           image_size=16, detect=True).replace(**change)
  with pytest.raises(ImgrecError, match=flag):
    trainer.train(config)
  assert not model_dir.exists()  # Nothing cropped, nothing written.


@pytest.mark.slow  # Trains face embedders.
def test_the_best_embedder_is_the_lowest_val_eer(face_run):
  _, result = face_run
  run = RunFolder(result["model_dir"])
  history = result["history"]
  assert set(history) >= {"loss", "accuracy", "val_eer", "val_roc_auc"}
  best = int(np.argmin(history["val_eer"]))
  assert result["val_eer"] == pytest.approx(history["val_eer"][best])
  with open(run.history_path) as f:
    assert f.readline().strip().split(",") == [
        "epoch", "accuracy", "loss", "val_eer", "val_roc_auc"]
  assert run.read_task() == "face_embedding"
  assert run.read_kind() == FACES_COMMAND
  assert os.path.isdir(run.backup_dir())  # The trainer's resumable backup.


# As imgrec-faces train wrote face_config.json before the task existed:
# flat, the model named `backbone`.
OLD_FACE_CONFIG = {
    "augment": "light", "backbone": "simple_cnn", "batch_size": 8,
    "channels": 3, "crop_margin": 0.2, "data_dir": None, "detect": False,
    "embedding_dim": 16, "epochs": 4, "flip": "horizontal", "image_size": 16,
    "learning_rate": 0.003, "loss": "arcface", "margin": 0.2,
    "model_dir": None, "overwrite": False, "scale": 30.0, "seed": 42,
    "val_identities": 0.25, "verbose": 0, "weight_decay": 0.0001}


@pytest.mark.slow  # Trains face embedders.
def test_a_run_written_before_the_task_still_serves(face_run, tmp_path):
  tmp, result = face_run
  old = tmp_path / "old"
  shutil.copytree(result["model_dir"], old)
  run = RunFolder(old)
  for name in (".imgrec-run", "labels.txt", "data_report.json",
               "checkpoints"):
    path = old / name
    (shutil.rmtree if path.is_dir() else os.remove)(path)
  (old / "face_config.json").write_text(json.dumps(dict(
      OLD_FACE_CONFIG, data_dir=str(tmp / "train"), model_dir=str(old))))
  splits = (old / "splits.json").read_text()
  (old / "splits.json").write_text(splits.replace(result["model_dir"],
                                                  str(old)))
  assert run.read_kind() == FACES_COMMAND
  assert run.read_face_config().model == "simple_cnn"
  assert type(tasks.for_run(run)).__name__ == "FaceEmbeddingTask"
  unseen = write_people(tmp_path / "unseen", 2, seed=3)
  a, b = (os.path.join(unseen, "person00", f"{i}.png") for i in (1, 2))
  row = recognize.verify(FaceVerifyConfig(model_dir=str(old), detect=False),
                         a, b)
  assert row["threshold_source"] == recognize.EMBEDDER_EER
  assert embedder_lib.Embedder.load(str(old)).embed(
      np.zeros((1, 16, 16, 3), np.uint8)).shape == (1, 16)
  # The rerun check reads the old record and names what differs.
  with pytest.raises(ImgrecError, match=r"other settings \(embedding_dim"):
    trainer.train(FaceTrainConfig(**dict(TINY_FACES, embedding_dim=8),
                                  data_dir=str(tmp / "train"),
                                  model_dir=str(old)))
  # The same command again: finished before runs kept their backup, it
  # trains nothing.
  history = (old / "history.csv").read_text()
  before = os.path.getmtime(run.best_model_path)
  again = trainer.train(FaceTrainConfig(**TINY_FACES,
                                        data_dir=str(tmp / "train"),
                                        model_dir=str(old)))
  assert not again["history"] and again["train_people"] == 6
  assert os.path.getmtime(run.best_model_path) == before
  assert (old / "history.csv").read_text() == history


@pytest.mark.slow  # A subprocess.
def test_cli_refuses_an_unknown_backbone_in_one_line_before_detecting(
    people, tmp_path):
  model_dir = tmp_path / "run"
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  out = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.faces", "train",
       "--backbone=nonexistent", f"--data_dir={people}",
       f"--model_dir={model_dir}", "--detect"],
      capture_output=True, text=True, env=ENV, timeout=120)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "--backbone" in lines[0], out.stderr
  assert "nonexistent" in lines[0] and "simple_cnn" in lines[0]
  # Its own time (most of it TensorFlow's import), not the wall time of a
  # machine shared with other tests.
  assert (after.ru_utime + after.ru_stime
          - before.ru_utime - before.ru_stime) < 20
  assert not model_dir.exists()  # No face detected, nothing cropped.


@pytest.mark.slow  # A subprocess.
def test_each_command_has_its_own_flags(tmp_path):
  for args, flag in ((["verify", "--target_far=0.1"], "target_far"),
                     (["identify", "--enroll_images=2"], "enroll_images"),
                     (["export", "--gallery=g.json"], "gallery"),
                     (["train", "--top_k=3"], "top_k")):
    out = subprocess.run(
        [sys.executable, "-m", "imgrec.cli.faces", *args,
         f"--model_dir={tmp_path}"], capture_output=True, text=True,
        env=ENV, timeout=120)
    assert out.returncode == 2, (args, out.stderr)
    assert f"Unknown command line flag '{flag}'" in out.stderr


EPOCHS = 3


def kill_in_second_epoch(proc, out, err, model_dir):
  """SIGKILLs training once its first epoch's backup is committed."""
  backup = RunFolder(model_dir).backup_dir()
  while not os.path.exists(os.path.join(backup, resume.METADATA_NAME)):
    if proc.poll() is not None:
      code, stdout, stderr = finish(proc, out, err)
      raise AssertionError(f"training ended ({code}) before it was "
                           f"killed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  return finish(proc, out, err)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, people):
  """An uninterrupted embedder and one SIGKILLed in its second epoch, then
  rerun to the end; same command, --deterministic."""
  tmp = str(tmp_path_factory.mktemp("resume"))
  args = ["train", f"--data_dir={people}", f"--epochs={EPOCHS}",
          "--image_size=16", "--embedding_dim=8", "--batch_size=8",
          "--val_identities=0.25", "--deterministic", "--seed=7",
          "--verbose=0"]
  ref_dir, run_dir = os.path.join(tmp, "ref"), os.path.join(tmp, "run")
  logs = os.path.join(tmp, "log")
  ref = faces_cli(args + [f"--model_dir={ref_dir}"], logs + "_ref")
  killed = kill_in_second_epoch(*faces_cli(
      args + [f"--model_dir={run_dir}"], logs + "_killed"), run_dir)
  final = finish(*faces_cli(args + [f"--model_dir={run_dir}"],
                            logs + "_final"))
  ref = finish(*ref)
  for name, result in (("reference", ref), ("final", final)):
    assert result[0] == 0, f"{name} run failed:\n{result[2][-3000:]}"
  return dict(ref_dir=ref_dir, run_dir=run_dir, killed=killed, final=final)


@pytest.mark.slow
def test_a_killed_embedder_resumes_with_the_data_order(resumed):
  assert resumed["killed"][0] == -signal.SIGKILL
  # Killed in its second epoch: the rerun goes on after the first.
  assert "resuming after epoch 1 of 3" in resumed["final"][2]
  assert history_epochs(resumed["run_dir"]) == list(range(EPOCHS))
  ref = backup_arrays(resumed["ref_dir"])
  run = backup_arrays(resumed["run_dir"])
  assert sorted(ref) == sorted(run)
  for name in ref:  # Weights and optimizer state, bit for bit.
    np.testing.assert_array_equal(run[name], ref[name], err_msg=name)
  for name in ("history.csv", "embedder.json"):
    with open(os.path.join(resumed["ref_dir"], name)) as f:
      expected = f.read()
    with open(os.path.join(resumed["run_dir"], name)) as f:
      assert f.read() == expected, name
  assert "validation EER (held-out people)" in resumed["final"][1]


@pytest.mark.slow  # A subprocess.
def test_mixed_precision_trains_a_float32_embedder(people, tmp_path):
  model_dir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.faces", "train", "--mixed_precision",
       f"--data_dir={people}", f"--model_dir={model_dir}", "--epochs=2",
       "--image_size=16", "--embedding_dim=8", "--batch_size=8",
       "--val_identities=0.25", "--verbose=0"],
      capture_output=True, text=True, env=ENV, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "validation EER (held-out people)" in out.stdout
  run = RunFolder(model_dir)
  model = tasks.load_model(run.best_model_path)
  # Served in float32 (TFLite and most servers lack bfloat16 kernels).
  assert {w.dtype.name for w in model.get_weights()} == {"float32"}
  assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
  assert run.read_embedder_info()["fingerprint"]
  embeddings = embedder_lib.Embedder.load(str(model_dir)).embed(
      np.full((2, 16, 16, 3), 100, np.uint8))
  assert np.all(np.isfinite(embeddings))
