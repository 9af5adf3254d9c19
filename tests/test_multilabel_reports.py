"""Reports of label sets: imgrec-evaluate, pictures, report.html, imgrec-compare."""

import base64
import csv
import io
import json
import os
import re
import shutil

import numpy as np
import pytest

from imgrec.errors import ImgrecError
from imgrec.evaluation import compare
from imgrec.evaluation import evaluate as evaluate_lib
from imgrec.evaluation import html
from imgrec.evaluation import pictures
from imgrec.tasks import multilabel as task_lib


def _report(targets, scores, names, thresholds=None):
  thresholds = [0.5] * len(names) if thresholds is None else thresholds
  return task_lib.MultiLabelTask.label_set_report(
      "test", targets, scores, thresholds, names, "validation F1")


def _random_case(n=60, c=4, seed=0):
  rng = np.random.default_rng(seed)
  targets = (rng.random((n, c)) < 0.4).astype(int)
  scores = np.clip(targets * 0.4 + rng.random((n, c)) * 0.6, 0, 1)
  return targets, scores


def test_cooccurrence_counts_true_rows_against_predicted_columns():
  targets = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
  scores = np.array([[.9, .2, .8], [.7, .6, .1], [.1, .9, .4], [.6, .1, .1]])
  report = _report(targets, scores, ["a", "b", "c"])
  # Image 0 holds a,b; a and c are predicted: row a gets a,c; row b a,c.
  assert report["label_cooccurrence"] == [[2, 1, 1], [1, 1, 1], [0, 1, 0]]
  assert report["multilabel"]["per_class"]["a"]["support"] == 2


def test_cooccurrence_of_many_labels_keeps_the_most_present():
  rng = np.random.default_rng(0)
  names = [f"l{i:03d}" for i in range(task_lib.COOCCURRENCE_MAX_LABELS + 50)]
  targets = rng.random((40, len(names))) < 0.05
  targets[:, 7] = True  # Held everywhere: kept.
  predicted = targets.copy()
  out = task_lib.cooccurrence(targets, predicted, names)
  kept = out["label_cooccurrence_labels"]
  assert len(kept) == task_lib.COOCCURRENCE_MAX_LABELS and "l007" in kept
  assert kept == sorted(kept)  # In label order.
  counts = np.asarray(out["label_cooccurrence"])
  i = kept.index("l007")
  assert counts.shape == (len(kept),) * 2 and counts[i, i] == 40
  assert pictures.label_cooccurrence_png(
      {"class_names": names, "multilabel": {"per_class": {
          n: {"support": int(targets[:, k].sum())}
          for k, n in enumerate(names)}}, **out})[:4] == b"\x89PNG"
  few = task_lib.cooccurrence(targets[:, :3], predicted[:, :3], names[:3])
  assert "label_cooccurrence_labels" not in few


def test_pr_curves_are_the_worst_classes_by_ap_and_match_their_ap():
  targets, scores = _random_case(n=80, c=40)
  names = [f"class{i}" for i in range(40)]
  report = _report(targets, scores, names)
  curves = report["pr_curves"]
  aps = {n: report["multilabel"]["per_class"][n]["ap"] for n in names}
  assert len(curves) == task_lib.PR_CURVE_CLASSES == 30
  assert list(curves) == sorted(aps, key=aps.get)[:30]  # Worst first.
  for name, curve in curves.items():
    recall, precision = np.array(curve["recall"]), np.array(curve["precision"])
    # Every distinct score is a point (80 images, < 200): AP is the sum
    # of each recall step times its precision.
    ap = np.sum(np.diff(np.r_[0, recall]) * precision)
    assert ap == pytest.approx(aps[name], abs=1e-4)
    assert recall[-1] == 1.0 and np.all(np.diff(recall) >= 0)


def test_pr_curves_png_and_cooccurrence_png_draw_names_literally():
  targets, scores = _random_case(c=3)
  names = ["$\\alpha$", "<b>x</b>", "plain"]
  report = _report(targets, scores, names)
  for png in (pictures.pr_curves_png(report),
              pictures.label_cooccurrence_png(report)):
    assert png.startswith(b"\x89PNG")
  assert pictures.pr_curves_png(dict(report, pr_curves={})) is None


def test_cooccurrence_png_of_many_labels_shows_thirty():
  targets, scores = _random_case(n=50, c=45)
  report = _report(targets, scores, [f"l{i}" for i in range(45)])
  png = pictures.label_cooccurrence_png(report)
  assert png.startswith(b"\x89PNG")


def test_html_of_label_sets_is_escaped_self_contained_and_complete():
  targets, scores = _random_case(c=3)
  names = ["<script>alert(1)</script>", "b&c", "d"]
  report = _report(targets, scores, names)
  report["tta"] = {"mode": "flip", "views": 2, "map": 0.9,
                   "map_without": 0.85, "micro_f1": 0.8,
                   "micro_f1_without": 0.75}
  drawn = {"Precision-recall curves": pictures.pr_curves_png(report)}
  page = html.render_report(report, drawn, "t")
  assert "<script>" not in page and "&lt;script&gt;" in page
  assert "b&amp;c" in page
  assert "Content-Security-Policy" in page and "data:image/png;base64," in page
  ml = report["multilabel"]
  for label, value in (("Mean average precision (mAP)", ml["map"]),
                       ("Micro F1", ml["micro_f1"]),
                       ("Hamming loss", ml["hamming_loss"])):
    assert re.search(re.escape(label) + r"</td><td class=\"num\">"
                     + re.escape(f"{value:.4f}"), page)
  assert "Subset accuracy" in page and "Labels an image, predicted" in page
  assert "mAP without" in page and "+0.0500" in page  # The TTA table.
  assert "Accuracy</td>" not in page  # No single-label summary.
  # The per-class table: AP and threshold of each class.
  d = ml["per_class"]["d"]
  assert f"<td class=\"text\">d</td><td class=\"num\">{d['ap']:.4f}</td>" \
         f"<td class=\"num\">{d['threshold']:.4f}</td>" in page
  src = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
  assert base64.b64decode(src).startswith(b"\x89PNG")


def test_text_of_label_sets_names_every_figure():
  targets, scores = _random_case(c=2)
  report = _report(targets, scores, ["cat", "dog"])
  report["data"] = {"data_dir": "labels.csv", "split": "test"}
  text = evaluate_lib.format_text(report)
  assert f"mAP: {report['multilabel']['map']:.4f}" in text
  assert "Hamming loss" in text and "thresholds: validation F1" in text
  assert re.search(r"^dog +\d\.\d{4} +0\.5000", text, re.M)


# --- imgrec-compare --------------------------------------------------------


def _fake_run(path, report, **config):
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  run = RunFolder(path)
  run.makedirs()
  run.write_config(TrainConfig(model_dir=str(path), **config))
  with open(run.report_path(), "w", encoding="utf-8") as f:
    json.dump(report, f)
  return run


def test_compare_shows_multilabel_runs_with_map_after_single_label(tmp_path):
  _fake_run(tmp_path / "single", {"accuracy": 0.9, "macro_f1": 0.8,
                                  "ece": 0.05})
  for name, value in (("ml-low", 0.7), ("ml-high", 0.95)):
    _fake_run(tmp_path / name, {"multilabel": {
        "map": value, "micro_f1": value - 0.1, "macro_f1": 0.5}},
              task="multilabel", labels_csv=str(tmp_path / "l.csv"))
  rows, skipped = compare.collect_runs([tmp_path])
  assert not skipped
  assert [r.name for r in rows] == ["single", "ml-high", "ml-low"]
  lines = compare.format_markdown(rows).splitlines()
  assert lines[0].startswith("| run | data | model | accuracy % | mAP % | "
                             "micro F1 | macro F1 | ECE |")
  assert lines[2].startswith("| single | ") and "| 90.00 | - | - | 0.8000 |" \
      in lines[2]
  assert "| - | 95.00 | 0.8500 | 0.5000 | - |" in lines[3]
  table = list(csv.DictReader(io.StringIO(compare.format_csv(rows))))
  assert (table[1]["accuracy"], table[1]["map"]) == ("", "0.95")
  assert table[0]["map"] == "" and table[0]["accuracy"] == "0.9"


def test_compare_of_single_label_runs_keeps_its_columns(tmp_path):
  _fake_run(tmp_path / "single", {"accuracy": 0.9})
  rows, _ = compare.collect_runs([tmp_path])
  assert "mAP" not in compare.format_markdown(rows)


def test_compare_skips_a_damaged_multilabel_report_with_the_reason(tmp_path):
  _fake_run(tmp_path / "bad", {"multilabel": {"map": 2.0, "micro_f1": 0.5}},
            task="multilabel", labels_csv=str(tmp_path / "l.csv"))
  _fake_run(tmp_path / "nof1", {"multilabel": {"map": 0.5}},
            task="multilabel", labels_csv=str(tmp_path / "l.csv"))
  rows, skipped = compare.collect_runs([tmp_path])
  assert not rows
  why = dict((os.path.basename(p), w) for p, w in skipped)
  assert "map must be in [0, 1]" in why["bad"]
  assert "has no micro_f1" in why["nof1"]


# --- A trained run ---------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  from test_multilabel_data import write_multilabel_csv  # pylint: disable=g-import-not-at-top
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("ml")
  csv_path = write_multilabel_csv(root / "data", count=64)
  result = trainer.train(TrainConfig(
      task="multilabel", labels_csv=csv_path, model_dir=str(root / "run"),
      image_size=16, epochs=3, batch_size=8, learning_rate=3e-3,
      val_split=0.25, test_split=0.25, verbose=0, seed=1))
  return root, result


@pytest.mark.slow
def test_evaluate_writes_the_training_report_pictures_and_html(trained):
  from imgrec.config import EvaluateConfig  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  root, result = trained
  run = RunFolder(root / "run")
  at_training = json.load(open(run.report_path()))
  report = evaluate_lib.evaluate(EvaluateConfig(model_dir=run.path))
  # The same images, model and thresholds: the same figures as training's.
  for key in ("map", "micro_f1", "subset_accuracy", "hamming_loss"):
    assert report["multilabel"][key] == pytest.approx(
        result["report"]["multilabel"][key], abs=1e-6)
  assert report["multilabel"]["per_class"].keys() == at_training[
      "multilabel"]["per_class"].keys()
  assert report["split"] == "test"
  assert report["num_examples"] == at_training["num_examples"] >= 10
  thresholds = json.load(open(run.thresholds_path))["thresholds"]
  assert [report["multilabel"]["per_class"][c]["threshold"]
          for c in report["class_names"]] == pytest.approx(thresholds)
  on_disk = json.load(open(run.report_path()))
  assert set(on_disk["pictures"]) == {"pr_curves", "label_cooccurrence",
                                      "curves"}
  for name in on_disk["pictures"].values():
    with open(os.path.join(run.path, name), "rb") as f:
      assert f.read(4) == b"\x89PNG"
  page = open(run.reports.html_path, encoding="utf-8").read()
  assert "Mean average precision (mAP)" in page
  assert page.count("data:image/png;base64,") == 3
  assert "mAP:" in open(run.report_path(suffix=".txt")).read()


@pytest.mark.slow
def test_evaluate_tta_and_an_ensemble_of_label_sets(trained):
  from imgrec.config import EvaluateConfig  # pylint: disable=g-import-not-at-top
  root, _ = trained
  copy = root / "copy"
  if not copy.exists():
    shutil.copytree(root / "run", copy)
  report = evaluate_lib.evaluate(EvaluateConfig(
      model_dir=f"{root / 'run'},{copy}", tta="flip",
      report_dir=str(root / "ens")))
  ensemble, tta = report["ensemble"], report["tta"]
  # Two copies of one model: the mean of their scores is each one's.
  assert [m["map"] for m in ensemble["members"]] == pytest.approx(
      [ensemble["map"]] * 2)
  assert report["threshold_source"] == "validation F1 of the ensemble"
  assert tta["views"] == 2 and tta["map"] == ensemble["map"]
  assert 0 <= tta["map_without"] <= 1
  page = open(os.path.join(root / "ens", "report.html"),
              encoding="utf-8").read()
  assert "Ensemble" in page and "micro F1" in page and "mAP without" in page


@pytest.mark.slow
def test_evaluate_refuses_what_label_sets_do_not_have_in_one_line(trained):
  from imgrec.config import EvaluateConfig  # pylint: disable=g-import-not-at-top
  root, _ = trained
  with pytest.raises(ImgrecError, match="labels CSV.*not a folder"):
    evaluate_lib.evaluate(EvaluateConfig(model_dir=str(root / "run"),
                                         data_dir=str(root / "data")))
  copy = root / "copy2"
  shutil.copytree(root / "run", copy)
  with pytest.raises(ImgrecError, match="--ensemble_weights=equal"):
    evaluate_lib.evaluate(EvaluateConfig(
        model_dir=f"{root / 'run'},{copy}", ensemble_weights="val_accuracy",
        report_dir=str(root / "ens2")))


@pytest.mark.slow
def test_evaluate_other_labels_csvs_gives_a_section_each(trained, tmp_path):
  from test_multilabel_data import write_multilabel_csv  # pylint: disable=g-import-not-at-top
  from imgrec.config import EvaluateConfig  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  from imgrec.metrics import multilabel as metrics  # pylint: disable=g-import-not-at-top
  root, _ = trained
  other = write_multilabel_csv(tmp_path / "other", count=24, seed=5,
                               split_column=True)
  with open(other, "a", encoding="utf-8") as f:  # An unknown label, a wreck.
    f.write("extra.png,red purple,test\nbroken.png,red,test\n")
  shutil.copy(tmp_path / "other" / "img" / "000.png",
              tmp_path / "other" / "extra.png")
  (tmp_path / "other" / "broken.png").write_bytes(b"not a png")
  own = str(root / "data" / "labels.csv")
  run = str(root / "run")
  report = evaluate_lib.evaluate(EvaluateConfig(
      model_dir=run, data_dir=f"{other},{own}", report_dir=str(
          tmp_path / "rep")))
  first, second = report["datasets"]
  # The other CSV's test rows (i % 4 == 3: 6), less the unknown-label image
  # and the broken file; the run's own CSV has no split column: all rows.
  assert first["num_examples"] == 6 and second["num_examples"] == 64
  assert first["data"]["unknown_classes"] == {"purple": 1}
  # The section's figures are the model's scores at the run's thresholds.
  with open(other, encoding="utf-8") as f:
    rows = [r for r in csv.DictReader(f) if r["split"] == "test"][:6]
  model = Classifier.load(os.path.join(run, "best.keras"))
  names = model.class_names
  scores = model.predict_proba([str(tmp_path / "other" / r["path"])
                                for r in rows])
  targets = np.array([[n in r["labels"].split() for n in names]
                      for r in rows], np.float32)
  thresholds = json.load(open(os.path.join(run, "thresholds.json")))
  expected = metrics.summary(targets, scores, thresholds["thresholds"], names)
  for key in ("map", "micro_f1", "hamming_loss"):
    assert first["multilabel"][key] == pytest.approx(expected[key], abs=1e-5)
  assert [r["map"] for r in report["comparison"]] == [
      first["multilabel"]["map"], second["multilabel"]["map"]]
  text = open(tmp_path / "rep" / "report.txt", encoding="utf-8").read()
  assert "images | mAP | micro F1 | macro F1" in text
  page = open(tmp_path / "rep" / "report.html", encoding="utf-8").read()
  assert "Comparison of the data sets" in page and "purple (1)" in page
  # The report never goes into a data folder, a CSV's folder included.
  with pytest.raises(ImgrecError, match="inside the data folder"):
    evaluate_lib.evaluate(EvaluateConfig(
        model_dir=run, data_dir=other,
        report_dir=str(tmp_path / "other" / "rep")))
  assert not (tmp_path / "other" / "rep").exists()


@pytest.mark.slow
def test_evaluate_split_and_report_run_serve_label_sets(trained, tmp_path):
  """The path imgrec-train's end takes for a task with a report split."""
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import ReportFolder  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  root, result = trained
  run = RunFolder(root / "run")
  task = tasks.for_run(run)
  member = evaluate_lib.Member.load(run.path)
  split = evaluate_lib.to_split(member.split_of("test"), member.class_names,
                                multilabel=True)
  report = evaluate_lib.evaluate_split(task, member.model, split,
                                       member.class_names, run=run)
  assert report["multilabel"]["map"] == pytest.approx(
      result["report"]["multilabel"]["map"], abs=1e-6)
  files = evaluate_lib.write_outputs(ReportFolder(tmp_path / "r"), report,
                                     history_path=run.history_path)
  assert sorted(map(os.path.basename, files["pictures"])) == [
      "curves.png", "label_cooccurrence.png", "pr_curves.png"]


@pytest.mark.slow
def test_training_end_writes_the_report_pictures_and_html(tmp_path):
  from test_multilabel_data import write_multilabel_csv  # pylint: disable=g-import-not-at-top
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  csv_path = write_multilabel_csv(tmp_path / "data", count=48)
  result = trainer.train(TrainConfig(
      task="multilabel", labels_csv=csv_path, model_dir=str(tmp_path / "run"),
      image_size=16, epochs=2, batch_size=8, val_split=0.25, test_split=0.25,
      verbose=0, seed=2))
  run = RunFolder(result["model_dir"])
  on_disk = json.load(open(run.report_path()))
  assert on_disk["multilabel"] == result["report"]["multilabel"]
  assert set(on_disk["pictures"]) == {"pr_curves", "label_cooccurrence",
                                      "curves"}
  page = open(run.reports.html_path, encoding="utf-8").read()
  assert "Mean average precision (mAP)" in page
  assert result["summary"].startswith("test mAP: ")
