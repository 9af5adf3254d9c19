"""Run folders and report folders never destroy what the user owns.

imgrec writes a run only into a new or empty folder or into its own run
(marked by `.imgrec-run`, or for older runs by imgrec's own config record);
--overwrite deletes only the names imgrec writes. A report folder of an
evaluation is never another run's folder or another report. A killed export
leaves no report describing files that are not on disk.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from conftest import write_toy_folder
from imgrec import fileio
from imgrec.config import EvaluateConfig
from imgrec.config import ExportConfig
from imgrec.config import FaceTrainConfig
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError
from imgrec.run_folder import ENSEMBLE_COMMAND
from imgrec.run_folder import FACES_COMMAND
from imgrec.run_folder import TRAIN_COMMAND
from imgrec.run_folder import ReportFolder
from imgrec.run_folder import RunFolder
from test_reliability import ENV
from test_reliability import assert_one_line_error
from test_reliability import run_cli

# Issue 22, case 1: a folder that is not an imgrec run.
USER_FILES = {"logs/important.txt": b"my notes\n",
              "export/deploy_v1.tflite": b"TFL3 the deployed model",
              "checkpoints/mine.ckpt": b"\x00\x01 my checkpoint",
              ".tmp-mydraft.txt": b"a draft\n"}


def write_files(root, files):
  for name, data in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)


def all_files(root):
  """{relative path: bytes} of every file below `root`."""
  out = {}
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


@pytest.fixture
def userdir(tmp_path):
  root = tmp_path / "userdir"
  write_files(root, USER_FILES)
  return str(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return write_toy_folder(tmp_path_factory.mktemp("data") / "toy",
                          per_class=8)


def _tiny(data, model_dir, **kw):
  return TrainConfig(**{**dict(data_dir=data, model_dir=str(model_dir),
                               epochs=1, image_size=16, batch_size=8,
                               export=False, verbose=0), **kw})


# --- 1: --overwrite on a folder imgrec did not write ---------------------------


@pytest.mark.parametrize("overwrite", [True, False])
def test_training_into_a_user_folder_is_refused_and_nothing_is_touched(
    userdir, data, overwrite):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  with pytest.raises(ImgrecError, match="holds files imgrec did not write.*"
                     "Pass an empty or new --model_dir"):
    trainer.train(_tiny(data, userdir, overwrite=overwrite))
  assert all_files(userdir) == USER_FILES  # Same files, same bytes, no more.
  assert sorted(os.listdir(userdir)) == [".tmp-mydraft.txt", "checkpoints",
                                         "export", "logs"]


def _fake_run(path, command=TRAIN_COMMAND):
  """A run folder holding every name imgrec writes, made as a run starts."""
  run = RunFolder(path)
  with run.start(command):
    pass
  own = ["config.json", "labels.txt", "splits.json", "data_report.json",
         "history.csv", "training.json", "ensemble.json", "best.keras",
         "report.json", "report.txt", "report.html", "confusion_matrix.png",
         "reliability_other.png", "face_config.json", "embedder.json",
         "face_report.json", "roc.png", "faces/000000.png",
         "checkpoints/latest.weights.h5", "checkpoints/head/x", "logs/train/e",
         "export/saved_model/saved_model.pb", "export/model.tflite",
         "export/model_int8.tflite", "export/labels.txt",
         "export/export_report.json", "export/embedder.tflite",
         "export/embedder_saved_model/saved_model.pb",
         f"{fileio.TEMP_PREFIX}x", f"export/{fileio.TEMP_PREFIX}model.tflite"]
  write_files(run.path, {name: b"imgrec" for name in own})
  return run


def test_overwrite_deletes_only_the_names_imgrec_writes(tmp_path):
  run = _fake_run(tmp_path / "run")
  users = {"export/deploy_v1.tflite": b"mine", ".tmp-mydraft.txt": b"draft",
           "notes.md": b"notes", "export/model_v0.tflite": b"older"}
  write_files(run.path, users)
  with run.start(TRAIN_COMMAND, overwrite=True):
    pass
  left = all_files(run.path)
  assert sorted(left) == sorted([*users, ".imgrec-run", ".lock"])
  assert {name: left[name] for name in users} == users
  assert run.read_kind() == TRAIN_COMMAND


def test_overwrite_of_a_face_run_clears_the_face_files(tmp_path):
  run = _fake_run(tmp_path / "run", FACES_COMMAND)
  with run.start(FACES_COMMAND, overwrite=True):
    pass
  assert sorted(all_files(run.path)) == [".imgrec-run", ".lock"]
  assert not os.path.exists(run.faces_cache_dir)
  assert not os.path.exists(run.export_dir)  # Nothing of the user's in it.


def test_runs_made_before_the_mark_are_imgrec_s(tmp_path):
  run = RunFolder(tmp_path / "old")
  os.makedirs(run.path)
  run.write_config(TrainConfig(model_dir=run.path))
  assert run.read_kind() == TRAIN_COMMAND
  run.write_ensemble({"members": []})
  assert run.read_kind() == ENSEMBLE_COMMAND
  faces = RunFolder(tmp_path / "faces")
  os.makedirs(faces.path)
  faces.write_config(FaceTrainConfig(data_dir="x", model_dir=faces.path))
  assert faces.read_kind() == FACES_COMMAND
  with faces.start(FACES_COMMAND):
    pass
  # A config.json that is not imgrec's own record does not make it a run.
  other = tmp_path / "other"
  write_files(other, {"config.json": b'{"lr": 0.1}', "model.pt": b"x"})
  assert RunFolder(other).read_kind() is None
  with pytest.raises(ImgrecError, match=r"did not write \(config.json, "
                     "model.pt\)"):
    RunFolder(other).check_ours(TRAIN_COMMAND, overwrite=True)


def test_a_run_of_another_kind_is_replaced_only_when_asked(tmp_path):
  run = _fake_run(tmp_path / "faces", FACES_COMMAND)
  with pytest.raises(ImgrecError, match="holds a face embedder "
                     r"\(imgrec-faces train\), not a trained run: pass "
                     "--overwrite"):
    run.check_ours(TRAIN_COMMAND, overwrite=False)
  run.check_ours(TRAIN_COMMAND, overwrite=True)
  with pytest.raises(ImgrecError, match="pass a new --model_dir"):
    run.check_ours(ENSEMBLE_COMMAND)
  # Empty folders and imgrec's own lock are new folders; a temporary's name
  # in a folder imgrec never marked is the user's (imgrec writes
  # temporaries only in its marked folders, and cleaning would delete it).
  (tmp_path / "empty").mkdir()
  write_files(tmp_path / "empty", {".lock": b""})
  RunFolder(tmp_path / "empty").check_ours(ENSEMBLE_COMMAND)
  write_files(tmp_path / "empty", {f"{fileio.TEMP_PREFIX}1": b""})
  with pytest.raises(ImgrecError, match="did not write"):
    RunFolder(tmp_path / "empty").check_ours(ENSEMBLE_COMMAND)


def _people(root):
  for p in range(2):
    os.makedirs(os.path.join(root, f"p{p}"))
    for i in range(2):
      Image.new("RGB", (16, 16), (p * 200, 40, i * 50)).save(
          os.path.join(root, f"p{p}", f"{i}.png"))
  return str(root)


@pytest.mark.parametrize("overwrite", [True, False])
def test_faces_train_into_a_user_folder_is_refused(userdir, tmp_path,
                                                   overwrite):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  with pytest.raises(ImgrecError, match="holds files imgrec did not write"):
    trainer.train(FaceTrainConfig(
        data_dir=_people(tmp_path / "people"), model_dir=userdir,
        overwrite=overwrite, image_size=16, epochs=1))
  assert all_files(userdir) == USER_FILES


def test_faces_train_into_an_image_run_needs_overwrite(tmp_path):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  run = _fake_run(tmp_path / "run")
  before = all_files(run.path)
  with pytest.raises(ImgrecError, match="holds a trained run"):
    trainer.train(FaceTrainConfig(
        data_dir=_people(tmp_path / "people"), model_dir=run.path,
        image_size=16, epochs=1))
  assert all_files(run.path) == before


def test_ensemble_into_a_user_folder_is_refused(userdir, tmp_path):
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  members = [str(tmp_path / "a"), str(tmp_path / "b")]
  with pytest.raises(ImgrecError, match="holds files imgrec did not write"):
    exporter.export(ExportConfig(ensemble=",".join(members),
                                 model_dir=userdir))
  assert all_files(userdir) == USER_FILES


# --- 14: one member by two spellings --------------------------------------------


@pytest.mark.parametrize("spelling", ["./runs/a/", "link"])
def test_ensemble_member_named_twice_is_refused(tmp_path, monkeypatch,
                                                spelling):
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  os.makedirs("runs/a")
  os.symlink("runs/a", "link")
  with pytest.raises(ImgrecError, match="names one folder twice"):
    exporter.export(ExportConfig(ensemble=f"runs/a,{spelling}",
                                 model_dir="runs/ab"))
  assert not os.path.exists("runs/ab")
  with pytest.raises(ImgrecError, match="names one folder twice"):
    EvaluateConfig(model_dir=f"runs/a,{spelling}").validate()


# --- 2: an ensemble's report over another run's --------------------------------


def test_report_dir_of_another_run_or_report_is_refused(tmp_path):
  a, b, c = (str(tmp_path / n) for n in "abc")
  run = _fake_run(tmp_path / "names")
  with pytest.raises(ImgrecError, match="is another run's folder"):
    ReportFolder(run.path).claim([a, b])
  legacy = RunFolder(tmp_path / "legacy")  # A run made before the mark.
  os.makedirs(legacy.path)
  legacy.write_config(TrainConfig(model_dir=legacy.path))
  with pytest.raises(ImgrecError, match="is another run's folder"):
    ReportFolder(legacy.path).claim([a, b])
  folder = ReportFolder(tmp_path / "ab")
  folder.claim([a, b])
  folder.write_report({"accuracy": 1.0}, "text")
  folder.claim([b, os.path.join(a, ".")])  # The same models, respelt.
  with pytest.raises(ImgrecError, match="holds the report of other models"):
    folder.claim([a, c])
  # A report from before the mark names its ensemble's members.
  old = ReportFolder(tmp_path / "old")
  old.makedirs()
  old.write_report({"ensemble": {"members": [{"model_dir": a},
                                             {"model_dir": b}]}}, "")
  old.claim([a, b])
  with pytest.raises(ImgrecError, match="other models"):
    old.claim([a, c])
  # A user's folder: fine unless a file there has a name imgrec writes.
  write_files(tmp_path / "mine", {"notes.md": b"x"})
  ReportFolder(tmp_path / "mine").claim([a, b])
  write_files(tmp_path / "page", {"report.html": b"<html>mine"})
  with pytest.raises(ImgrecError, match="holds report.html, which imgrec "
                     "cannot tie"):
    ReportFolder(tmp_path / "page").claim([a, b])


# --- 14: a killed export leaves no stale report ---------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("trained")
  return RunFolder(trainer.train(_tiny(data, tmp / "run"))["model_dir"])


def test_export_deletes_its_old_report_before_changing_files(trained,
                                                             monkeypatch):
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  from imgrec.export import saved_model  # pylint: disable=g-import-not-at-top
  fileio.write_json(trained.export_report_path, {"formats": []})

  def killed(*args, **kwargs):
    del args, kwargs
    assert not os.path.exists(trained.export_report_path)
    raise KeyboardInterrupt

  monkeypatch.setattr(saved_model, "write_saved_model", killed)
  with pytest.raises(KeyboardInterrupt):
    exporter.export(ExportConfig(model_dir=trained.path))
  assert not os.path.exists(trained.export_report_path)


@pytest.mark.slow  # An export in a child process.
def test_sigterm_during_export_leaves_no_stale_report(trained):
  fileio.write_json(trained.export_report_path, {"formats": [
      {"name": "float", "accuracy": 0.1}]})
  proc = subprocess.Popen(
      [sys.executable, "-m", "imgrec.cli.export",
       f"--model_dir={trained.path}"], env=ENV, stderr=subprocess.PIPE,
      text=True)
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None and not any(
      n.startswith(fileio.TEMP_PREFIX) for n in os.listdir(trained.export_dir)):
    time.sleep(0.01)
  assert proc.poll() is None, proc.stderr.read()[-2000:]
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
  assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
  assert not os.path.exists(trained.export_report_path)
  assert not [n for n in os.listdir(trained.export_dir)
              if n.startswith(fileio.TEMP_PREFIX)]


# --- End to end: the exact cases as a user runs them -------------------------------


@pytest.mark.slow  # The command line, as in the issue.
def test_cli_overwrite_of_a_user_folder_exits_2_and_keeps_everything(
    userdir, data):
  proc = run_cli("train", f"--data_dir={data}", f"--model_dir={userdir}",
                 "--overwrite", "--epochs=1", "--image_size=16")
  assert_one_line_error(proc, "holds files imgrec did not write")
  assert all_files(userdir) == USER_FILES


@pytest.mark.slow  # Trains again.
def test_overwrite_of_a_real_run_keeps_the_user_s_export_file(data,
                                                              tmp_path):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  run = RunFolder(trainer.train(_tiny(data, tmp_path / "run"))["model_dir"])
  write_files(run.path, {"export/deploy_v1.tflite": b"mine",
                         "export/model.tflite": b"imgrec's",
                         ".tmp-mydraft.txt": b"draft"})
  trainer.train(_tiny(data, run.path, overwrite=True, seed=3))
  assert all_files(run.export_dir) == {"deploy_v1.tflite": b"mine"}
  assert open(os.path.join(run.path, ".tmp-mydraft.txt")).read() == "draft"
  assert run.read_config().seed == 3


@pytest.mark.slow  # Trains two more runs.
def test_ensemble_report_never_replaces_another_run_s(trained, data,
                                                      tmp_path):
  from imgrec.evaluation import compare  # pylint: disable=g-import-not-at-top
  from imgrec.evaluation import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  a, b = (trainer.train(_tiny(data, tmp_path / m, model=m))["model_dir"]
          for m in ("mlp", "simple_cnn"))
  names = trained.path
  evaluate_lib.evaluate(EvaluateConfig(model_dir=names))
  before = all_files(names)
  figures = compare.summarize_run(names)
  with pytest.raises(ImgrecError, match="is another run's folder"):
    evaluate_lib.evaluate(EvaluateConfig(model_dir=f"{a},{b}",
                                         report_dir=names))
  assert all_files(names) == before
  assert compare.summarize_run(names) == figures
  # The same ensemble into its own report folder, again and again.
  ab = str(tmp_path / "ab")
  for _ in range(2):
    report = evaluate_lib.evaluate(EvaluateConfig(model_dir=f"{a},{b}",
                                                  report_dir=ab))
    assert report["files"]["report"] == os.path.join(ab, "report.json")
  with pytest.raises(ImgrecError, match="holds the report of other models"):
    evaluate_lib.evaluate(EvaluateConfig(model_dir=f"{a},{names}",
                                         report_dir=ab))
  # One run's own folder named as its report_dir is its default.
  evaluate_lib.evaluate(EvaluateConfig(model_dir=a, report_dir=a))
  assert json.load(open(os.path.join(ab, ".imgrec-report")))["models"] == (
      sorted(os.path.realpath(d) for d in (a, b)))
