"""imgrec-extend: new classes imprinted into a finished run, a run of its own."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_toy_folder
from imgrec import Classifier
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder
from imgrec.training import extend as extend_lib
from imgrec.training import trainer


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A run on blue and green, and a folder of the new class red."""
  tmp = tmp_path_factory.mktemp("extend")
  data = write_toy_folder(tmp / "data", per_class=14, size=16,
                          classes=["blue", "green"])
  new = write_toy_folder(tmp / "new", per_class=10, size=16, seed=5,
                         classes=["red"])
  run = trainer.train(TrainConfig(
      data_dir=data, model_dir=str(tmp / "run"), epochs=3, image_size=16,
      batch_size=8, val_split=0.2, test_split=0.2, export=False,
      verbose=0))["model_dir"]
  return tmp, run, new


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "imgrec.cli.extend", *args],
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_extend_appends_the_new_class_and_keeps_the_old(base):
  tmp, run, new = base
  out = str(tmp / "extended")
  result = extend_lib.extend({"model_dir": run, "add_dir": new,
                              "out_dir": out, "export": True})
  folder = RunFolder(out)
  assert folder.read_labels() == ["blue", "green", "red"]
  added = json.load(open(folder.extend_path))
  assert added["new_classes"] == ["red"] and added["seconds"]["imprint"] < 1
  report = json.load(open(folder.report_path()))
  old, fresh = report["old_classes"], report["new_classes"]
  assert old["accuracy"] >= old["accuracy_before"] - 0.005 - 1e-9
  assert fresh["num_examples"] > 0 and fresh["accuracy"] is not None
  assert result["report"]["new_classes"] == fresh
  # A run like any other: its own open set, splits, export and Classifier.
  assert os.path.isfile(folder.open_set_path)
  splits = json.load(open(folder.splits_path))
  assert 2 in splits["splits"]["train"]["labels"]
  assert os.path.isdir(folder.saved_model_dir)
  clf = Classifier.load(folder.tflite_path("float"))
  assert clf.class_names == ["blue", "green", "red"]
  keras_clf = Classifier.load(folder.best_model_path)
  red = sorted(os.path.join(new, "red", n) for n in os.listdir(
      os.path.join(new, "red")))
  assert [p.top_k[0][0] for p in clf.predict(red)] == [
      p.top_k[0][0] for p in keras_clf.predict(red)]
  # The old run is untouched.
  assert RunFolder(run).read_labels() == ["blue", "green"]


@pytest.mark.slow
def test_a_second_extend_into_the_run_needs_overwrite(base):
  tmp, run, new = base
  out = str(tmp / "again")
  extend_lib.extend({"model_dir": run, "add_dir": new, "out_dir": out})
  with pytest.raises(ImgrecError):
    trainer.train(TrainConfig(data_dir=new, model_dir=out, epochs=1))
  proc = _cli(f"--model_dir={run}", f"--add_dir={new}", f"--out_dir={out}",
              "--overwrite")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "new classes: red" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("case,message", [
    ("same_out", "is --model_dir"),
    ("out_in_add", "inside --add_dir"),
    ("clash", "classes the run knows already"),
    ("few", "needs at least 5 images"),
    ("own_images", "the run's own data"),
    ("user_folder", "holds files imgrec did not write"),
    ("missing_add", "is not a folder"),
    ("device_out", "--out_dir=/dev/null is not a folder"),
    ("multilabel_or_face", "No training config"),
])
def test_bad_extensions_are_one_line_before_any_work(base, tmp_path, case,
                                                     message):
  tmp, run, new = base
  add, out, model_dir = new, str(tmp_path / "out"), run
  if case == "same_out":
    out = run
  elif case == "out_in_add":
    add = str(tmp_path / "add")
    shutil.copytree(new, add)
    out = os.path.join(add, "out")
  elif case == "clash":
    add = write_toy_folder(tmp_path / "add", per_class=6, size=16,
                           classes=["green"])
  elif case == "few":
    add = write_toy_folder(tmp_path / "add", per_class=3, size=16,
                           classes=["red"])
  elif case == "own_images":
    add = str(tmp_path / "add")
    os.makedirs(os.path.join(add, "teal"))
    paths = RunFolder(run).read_split("train")[0]
    for i, path in enumerate(paths[:6]):
      shutil.copy(path, os.path.join(add, "teal", f"{i}.png"))
  elif case == "user_folder":
    os.makedirs(out)
    open(os.path.join(out, "mine.txt"), "w").write("keep me")
  elif case == "missing_add":
    add = str(tmp_path / "nothing")
  elif case == "device_out":
    out = "/dev/null"
  else:
    model_dir = str(tmp_path / "not_a_run")
    os.makedirs(model_dir)
  proc = _cli(f"--model_dir={model_dir}", f"--add_dir={add}",
              f"--out_dir={out}")
  assert proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
  assert message in proc.stderr.strip().splitlines()[-1]
  assert "Traceback" not in proc.stderr
  if case == "user_folder":
    assert open(os.path.join(out, "mine.txt")).read() == "keep me"
    assert sorted(os.listdir(out)) == ["mine.txt"]
  if case == "out_in_add":
    assert not os.path.exists(out)


def test_the_offset_keeps_old_images_within_the_allowed_drop():
  from imgrec.tasks import open_set
  rng = np.random.default_rng(0)
  features = rng.normal(size=(200, 4))
  logits = rng.normal(size=(200, 3)) + 3.0
  held = open_set.Embedded(features, logits)
  kernel = np.eye(4)[:, :1]
  for drop in (0.0, 0.5, 5.0):
    offset = extend_lib._offset(held, kernel, np.zeros(1), drop)
    new_logit = features @ kernel + offset
    taken = np.mean(new_logit.max(axis=1) > logits.max(axis=1))
    assert taken <= drop / 100 + 1e-9
    assert taken >= drop / 100 - 1 / 200  # The largest such offset.


def test_fitting_the_new_columns_lowers_their_loss_and_separates_them():
  """A new class that differs from old class 0 along one tight dimension:
  fitted from its imprint (old columns fixed), its class-balanced loss
  falls and it takes its own images without taking class 0's."""
  from imgrec.tasks import open_set
  rng = np.random.default_rng(0)

  def images(n, centre):  # Spread along x and y, tight along z.
    return np.asarray(centre) + [0.5, 0.5, 0.05] * rng.normal(size=(n, 3))

  old_x = np.concatenate([images(300, [3, 0, 0]), images(300, [0, 3, 0])])
  new_x = images(10, [3, 0, 0.5])
  labels = np.array([0] * 300 + [1] * 300 + [2] * 10)
  old_kernel = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  parts = [open_set.Embedded(x, x @ old_kernel) for x in (old_x, new_x)]
  everything = np.concatenate([old_x, new_x])

  def logits(kernel, bias, x):
    return np.concatenate([x @ old_kernel, x @ kernel + bias], axis=1)

  def balanced_loss(kernel, bias):
    z = logits(kernel, bias, everything)
    z -= z.max(axis=1, keepdims=True)
    nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]
    return sum(nll[labels == c].mean() for c in range(3))

  prototype = new_x.mean(axis=0) / np.linalg.norm(new_x.mean(axis=0))
  imprint, imprint_bias = 2.0 * prototype[:, None], np.zeros(1)
  kernel, bias = extend_lib._fit_new_columns(parts, labels, imprint,
                                             imprint_bias)
  assert kernel.shape == (3, 1) and bias.shape == (1,)
  assert balanced_loss(kernel, bias) < 0.8 * balanced_loss(imprint,
                                                           imprint_bias)
  test_new, test_old = images(200, [3, 0, 0.5]), images(200, [3, 0, 0])
  assert np.mean(logits(kernel, bias, test_new).argmax(axis=1) == 2) > 0.95
  assert np.mean(logits(kernel, bias, test_old).argmax(axis=1) == 0) > 0.95
