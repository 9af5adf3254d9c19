"""Evaluation across datasets, TTA, ensembles and the ensemble export.

Two tiny runs (simple_cnn at 16 px, mlp at 12 px: different input sizes) are
trained in this process on the same data and seed, so they hold out the
same validation and test images.
"""

import glob
import json
import os
import shutil

import numpy as np
import pytest

from conftest import write_toy_folder
from imgrec import tasks
from imgrec.config import EvaluateConfig
from imgrec.config import ExportConfig
from imgrec.config import TrainConfig
from imgrec.data import pixels
from imgrec.errors import ImgrecError
from imgrec.evaluation import evaluate as evaluate_lib
from imgrec.export import exporter
from imgrec.run_folder import RunFolder
from imgrec.training import trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("evaluate")
  data = write_toy_folder(tmp / "data", per_class=12, size=24)
  dirs = []
  for model, size in (("simple_cnn", 16), ("mlp", 12)):
    result = trainer.train(TrainConfig(
        data_dir=data, model_dir=str(tmp / model), model=model, epochs=3,
        image_size=size, batch_size=8, val_split=0.17, test_split=0.25,
        export=False, verbose=0, learning_rate=3e-3))
    dirs.append(result["model_dir"])
  return tmp, data, dirs


def _member_probabilities(model_dir, split_name="test"):
  member = evaluate_lib.Member.load(model_dir)
  split = evaluate_lib.to_split(member.split_of(split_name),
                                member.class_names)
  return split, member.predict(split, (), "test")[0]


@pytest.mark.slow  # Trains the shared runs (11 s on 2 cores).
def test_ensemble_is_the_weighted_mean_of_its_members(runs):
  _, _, dirs = runs
  split, pa = _member_probabilities(dirs[0])
  _, pb = _member_probabilities(dirs[1])
  report = evaluate_lib.evaluate(
      EvaluateConfig(model_dir=",".join(dirs)), write=False)
  ensemble = report["ensemble"]
  mean = (pa + pb) / 2
  assert report["accuracy"] == np.mean(mean.argmax(1) == split.labels)
  assert [m["accuracy"] for m in ensemble["members"]] == [
      np.mean(p.argmax(1) == split.labels) for p in (pa, pb)]
  assert [m["weight"] for m in ensemble["members"]] == [0.5, 0.5]
  # Weighted by each member's validation accuracy.
  weighted = evaluate_lib.evaluate(EvaluateConfig(
      model_dir=",".join(dirs), ensemble_weights="val_accuracy"),
                                   write=False)["ensemble"]["members"]
  val_acc = [m["val_accuracy"] for m in weighted]
  assert all(0 <= a <= 1 for a in val_acc)
  np.testing.assert_allclose([m["weight"] for m in weighted],
                             np.array(val_acc) / sum(val_acc))


@pytest.mark.slow  # Seconds of retraining or re-predicting.
def test_tta_gives_accuracy_with_and_without(runs):
  _, _, dirs = runs
  plain = evaluate_lib.evaluate(EvaluateConfig(model_dir=dirs[0]),
                                write=False)
  for mode, views in (("flip", 2), ("crops", 6), ("flip,crops", 12)):
    report = evaluate_lib.evaluate(
        EvaluateConfig(model_dir=dirs[0], tta=mode), write=False)
    assert report["tta"]["views"] == views
    assert report["tta"]["accuracy_without"] == plain["accuracy"]
    assert report["tta"]["accuracy"] == report["accuracy"]
  assert "tta" not in plain


@pytest.mark.slow  # Trains the shared runs (11 s on 2 cores).
def test_several_datasets_match_classes_by_name(runs):
  tmp, _, dirs = runs
  # Another folder: no "blue", and a class the model never saw.
  other = write_toy_folder(tmp / "other", per_class=4, seed=5,
                           classes=("green", "red"))
  shutil.copytree(os.path.join(other, "red"), os.path.join(other, "purple"))
  out = tmp / "report_several"
  report = evaluate_lib.evaluate(EvaluateConfig(
      model_dir=dirs[0], data_dir=f"{tmp / 'data'},{other}",
      report_dir=str(out)))
  second = report["datasets"][1]
  assert second["num_examples"] == 8
  assert second["data"]["missing_classes"] == ["blue"]
  assert second["data"]["unknown_classes"] == {"purple": 4}
  assert [row["num_examples"] for row in report["comparison"]] == [
      report["num_examples"], 8]
  written = json.load(open(out / "report.json"))
  for section in written["datasets"]:
    for name in section["pictures"].values():
      assert os.path.getsize(out / name) > 1000, name
  assert written["datasets"][1]["pictures"]["confusion_matrix"] == (
      "confusion_matrix_other.png")
  html = (out / "report.html").read_text()
  assert html.count("data:image/png;base64,") == sum(
      len(s["pictures"]) for s in written["datasets"])
  # The report never goes into a data folder.
  inside = os.path.join(other, "reports")
  with pytest.raises(ImgrecError, match="never writes into data"):
    evaluate_lib.evaluate(EvaluateConfig(model_dir=dirs[0], data_dir=other,
                                         report_dir=inside))
  assert not os.path.exists(inside)
  # A folder of nothing but unknown classes is refused in one line.
  only_unknown = tmp / "unknown"
  shutil.copytree(os.path.join(other, "purple"), only_unknown / "purple")
  with pytest.raises(ImgrecError, match="not the model's"):
    evaluate_lib.evaluate(EvaluateConfig(model_dir=dirs[0],
                                         data_dir=str(only_unknown)),
                          write=False)


@pytest.mark.slow  # Trains the shared runs (11 s on 2 cores).
def test_members_that_held_out_other_images_are_refused(runs):
  tmp, data, dirs = runs
  moved = str(tmp / "moved")
  shutil.copytree(dirs[1], moved)
  splits_path = RunFolder(moved).splits_path
  splits = json.load(open(splits_path))
  test, train = splits["splits"]["test"], splits["splits"]["train"]
  test["paths"][0], train["paths"][0] = train["paths"][0], test["paths"][0]
  test["labels"][0], train["labels"][0] = (train["labels"][0],
                                           test["labels"][0])
  json.dump(splits, open(splits_path, "w"))
  with pytest.raises(ImgrecError, match="different test splits"):
    evaluate_lib.evaluate(EvaluateConfig(model_dir=f"{dirs[0]},{moved}"),
                          write=False)
  # On a folder none of them trained on, they are fine.
  fresh = write_toy_folder(tmp / "fresh", per_class=3, seed=11)
  report = evaluate_lib.evaluate(EvaluateConfig(
      model_dir=f"{dirs[0]},{moved}", data_dir=fresh), write=False)
  assert report["num_examples"] == 9 and "ensemble" in report


@pytest.mark.slow  # Trains the shared runs (11 s on 2 cores).
def test_single_run_report_goes_to_its_folder_and_tensorboard(runs):
  _, _, dirs = runs
  report = evaluate_lib.evaluate(EvaluateConfig(model_dir=dirs[0]))
  assert set(report["files"]) == {"report", "html", "pictures"}
  names = {os.path.basename(p) for p in report["files"]["pictures"]}
  assert names == {"confusion_matrix.png", "reliability.png", "mistakes.png",
                   "curves.png"}
  events = glob.glob(os.path.join(RunFolder(dirs[0]).logs_dir, "evaluation",
                                  "events.out.tfevents.*"))
  assert events


@pytest.mark.slow  # Exports and measures every format.
def test_ensemble_export_is_one_model_measured_like_a_run(runs):
  tmp, _, dirs = runs
  out = str(tmp / "ensemble")
  result = exporter.export(ExportConfig(
      ensemble=",".join(dirs), model_dir=out, tflite=("float",)))
  run = RunFolder(out)
  assert run.read_ensemble()["members"] == dirs
  model = tasks.load_model(run.best_model_path)
  assert tasks.model_input_spec(model) == ((16, 16), 3)
  formats = {f["name"]: f for f in result["report"]["formats"]}
  assert formats["float"]["top1_agreement"] == 1.0
  assert formats["float"]["max_abs_prob_diff"] <= 1e-4
  # The one model is the members' mean on the same pixels.
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype(
      np.float32)
  members = [tasks.load_model(RunFolder(d).best_model_path) for d in dirs]
  small = pixels.preprocess(images.astype(np.uint8), (12, 12), 3)
  expected = (members[0].predict(images, verbose=0)
              + members[1].predict(small, verbose=0)) / 2
  np.testing.assert_allclose(model.predict(images, verbose=0), expected,
                             atol=1e-5)
  # It evaluates like any run.
  report = evaluate_lib.evaluate(EvaluateConfig(model_dir=out))
  assert report["num_examples"] == 9
  from imgrec.evaluation import compare  # pylint: disable=g-import-not-at-top
  rows, _ = compare.collect_runs([out])
  assert rows[0].model == "ensemble(simple_cnn+mlp)"
  with pytest.raises(ImgrecError, match="one of the members"):
    exporter.export(ExportConfig(ensemble=",".join(dirs), model_dir=dirs[0]))
  with pytest.raises(ImgrecError, match="holds a trained run"):
    exporter.export(ExportConfig(ensemble=dirs[0] + "," + out,
                                 model_dir=dirs[1]))
  with pytest.raises(ImgrecError, match="at least two"):
    exporter.export(ExportConfig(ensemble=dirs[0], model_dir=out))


def test_progress_bar_on_a_terminal_only(monkeypatch):
  import io  # pylint: disable=g-import-not-at-top

  class Terminal(io.StringIO):

    def isatty(self):
      return True

  for stream, shows in ((io.StringIO(), False), (Terminal(), True)):
    monkeypatch.setattr("sys.stderr", stream)
    with evaluate_lib._progress("test of x", 50) as step:  # pylint: disable=protected-access
      assert (step is not None) == shows
      for i in range(1, 51):
        if step:
          step(i, 50)
    assert ("test of x" in stream.getvalue()) == shows
  with evaluate_lib._progress("short", 3) as step:  # pylint: disable=protected-access
    assert step is None  # A few batches: no bar.
