"""Multi-label data and metrics: the labels CSV, iterative stratification,
average precision, per-class thresholds."""

import os

import numpy as np
import pytest
from PIL import Image

from imgrec.data import multilabel
from imgrec.errors import ImgrecError
from imgrec.metrics import multilabel as metrics


def _brute_ap(y, s):
  """AP by its definition: for each distinct score t from the top, the
  recall gained by predicting score >= t times the precision there."""
  ap, last_recall = 0.0, 0.0
  for t in sorted(set(s), reverse=True):
    kept = s >= t
    recall = (y & kept).sum() / y.sum()
    ap += (recall - last_recall) * (y & kept).sum() / kept.sum()
    last_recall = recall
  return ap


def test_average_precision_by_hand_and_by_definition():
  y = np.array([1, 0, 1, 0], bool)
  assert metrics.average_precision(y, [0.9, 0.8, 0.7, 0.1]) == pytest.approx(
      0.5 * 1 + 0.5 * 2 / 3)
  assert metrics.average_precision([1, 0], [0.5, 0.5]) == 0.5  # A tie.
  assert np.isnan(metrics.average_precision([0, 0], [0.3, 0.2]))
  rng = np.random.default_rng(0)
  for _ in range(50):
    y = rng.random(40) < 0.3
    y[0] = True
    s = np.round(rng.random(40), 1)  # Many ties.
    assert metrics.average_precision(y, s) == pytest.approx(_brute_ap(y, s))


def test_the_threshold_maximizes_f1_between_two_scores():
  assert metrics.best_f1_threshold([1, 1, 0, 0], [0.9, 0.6, 0.4, 0.1]) == (
      pytest.approx(0.5))
  # A class absent from validation keeps the default.
  assert metrics.best_f1_threshold([0, 0], [0.9, 0.1]) == (
      metrics.DEFAULT_THRESHOLD)
  rng = np.random.default_rng(1)
  y = rng.random(200) < 0.2
  s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
  t = metrics.best_f1_threshold(y, s)
  best = max(2 * (y & (s >= c)).sum() / ((s >= c).sum() + y.sum())
             for c in np.unique(s))
  assert 2 * (y & (s >= t)).sum() / ((s >= t).sum() + y.sum()) == (
      pytest.approx(best))


def test_summary_counts_every_figure():
  targets = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
  scores = np.array([[.9, .2, .1], [.8, .7, .2], [.1, .1, .3], [.6, .9, .1]])
  out = metrics.summary(targets, scores, [0.5, 0.5, 0.5], ["a", "b", "c"])
  # Predicted: a on rows 0, 1, 3 (one wrong); b on rows 1, 3.
  assert out["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
  assert out["per_class"]["a"]["recall"] == 1.0
  assert out["per_class"]["b"]["f1"] == 1.0
  assert out["per_class"]["c"]["support"] == 0
  assert out["per_class"]["c"]["ap"] is None
  assert out["map"] == pytest.approx(np.mean([
      metrics.average_precision(targets[:, 0], scores[:, 0]), 1.0]))
  assert out["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1))
  assert out["macro_f1"] == pytest.approx((0.8 + 1.0) / 2)
  assert out["subset_accuracy"] == 0.75
  assert out["hamming_loss"] == pytest.approx(1 / 12)
  assert out["cardinality"] == {"true": 1.0, "predicted": 1.25}


def _label_matrix(rng, rows=600, labels=12):
  """Labels of very different frequencies, some rare, some co-occurring."""
  p = np.geomspace(0.4, 0.01, labels)
  targets = rng.random((rows, labels)) < p
  targets[:, 1] |= targets[:, 0] & (rng.random(rows) < 0.5)
  return targets.astype(np.uint8)


def test_iterative_stratification_keeps_every_labels_share():
  rng = np.random.default_rng(2)
  targets = _label_matrix(rng)
  fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
  splits = np.array(multilabel.iterative_split(targets, fractions, seed=3))
  assert splits.tolist() == multilabel.iterative_split(targets, fractions, 3)
  assert abs((splits == "train").mean() - 0.7) < 0.01

  def off(assigned):
    """Images each label has too many or too few in each split, summed."""
    return sum(np.abs(targets[assigned == name].sum(0)
                      - share * targets.sum(0)).sum()
               for name, share in fractions.items())

  random = rng.choice(list(fractions), len(targets),
                      p=list(fractions.values()))
  assert off(splits) < 0.25 * off(random)
  common = targets.sum(0) >= 100
  for name, share in fractions.items():
    inside = targets[splits == name][:, common].sum(0)
    assert np.all(np.abs(inside / targets[:, common].sum(0) - share) <= 0.01)


def test_too_rare_labels_are_named_in_one_line():
  targets = np.array([[1, 0], [1, 1], [1, 0]])
  with pytest.raises(ImgrecError, match=r"'?b'? \(1\)"):
    multilabel.check_label_counts(["a", "b"], targets, 0.1, 0.1, "labels.csv")
  multilabel.check_label_counts(["a", "b"], targets, 0.0, 0.0, "labels.csv")


def _write(tmp_path, text, images=("a.png", "b.png", "c.png")):
  for name in images:
    Image.new("RGB", (8, 8)).save(tmp_path / name)
  path = tmp_path / "labels.csv"
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_csv_reads_label_sets_and_empty_cells(tmp_path):
  path = _write(tmp_path, "path,labels,split\na.png,car person,train\n"
                "b.png,,val\nc.png,person,test\nmissing.png,car,train\n")
  rows = multilabel.read_multilabel_csv(path)
  assert rows.class_names == ["car", "person"]
  assert [os.path.basename(p) for p in rows.paths] == ["a.png", "b.png",
                                                       "c.png"]
  np.testing.assert_array_equal(rows.targets, [[1, 1], [0, 0], [0, 1]])
  assert rows.splits == ["train", "val", "test"]
  assert [os.path.basename(m["path"]) for m in rows.missing] == [
      "missing.png"]
  other = multilabel.read_multilabel_csv(_write(
      tmp_path, "path,labels\na.png,car|person\n"), label_delim="|")
  assert other.class_names == ["car", "person"] and other.splits is None


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("path,label\na.png,car\n", "no labels column"),
    ("path,labels\na.png,car car\n", "line 2: label\\(s\\) 'car' appear twice"),
    ("path,labels\na.png,\"car,person\"\n", "line 2: .*--label_delim=','"),
    ("path,labels\na.png,\nb.png,\n", "every labels cell is empty"),
    ("path,labels\na.png,car\na.png,dog\n", "line 3: 'a.png' is already"),
    ("path,labels\n,car\n", "line 2: empty path"),
    ("path,labels\n", "no rows"),
    # Labels joined by unquoted commas: cells past the header, not lost.
    ("path,labels\na.png,car\nb.png,car,person\n",
     "line 3: 3 cells under a header of 2.*quoted"),
])
def test_bad_csvs_fail_in_one_line_naming_the_row(tmp_path, text, message):
  with pytest.raises(ImgrecError, match=message) as e:
    multilabel.read_multilabel_csv(_write(tmp_path, text))
  assert "\n" not in str(e.value)


def test_asymmetric_loss_by_hand_and_as_cross_entropy():
  import keras  # pylint: disable=g-import-not-at-top
  from imgrec.models.losses import AsymmetricLoss  # pylint: disable=g-import-not-at-top
  y = np.array([[1, 0, 0], [0, 1, 1]], np.float32)
  p = np.array([[0.8, 0.3, 0.02], [0.6, 0.9, 0.4]], np.float32)
  pm = np.maximum(p - 0.05, 0)
  by_hand = -(y * np.log(p) + (1 - y) * pm ** 4 * np.log(1 - pm)).sum(1)
  np.testing.assert_allclose(AsymmetricLoss(reduction=None)(y, p), by_hand,
                             rtol=1e-5)
  # A negative scored under the clip costs nothing.
  assert float(AsymmetricLoss()([[0.0]], [[0.04]])) == pytest.approx(0, abs=1e-6)
  # No focusing, no clip: binary cross-entropy summed over the labels.
  plain = AsymmetricLoss(gamma_neg=0, clip=0, reduction=None)(y, p)
  bce = keras.losses.BinaryCrossentropy(reduction=None)(y[..., None],
                                                         p[..., None])
  np.testing.assert_allclose(plain, np.asarray(bce).sum(1), rtol=1e-4)
  again = keras.losses.deserialize(keras.losses.serialize(AsymmetricLoss(3)))
  assert again.gamma_neg == 3.0 and again.clip == 0.05
  with pytest.raises(ValueError, match="clip"):
    AsymmetricLoss(clip=1.5)


def test_a_sigmoid_head_gives_each_label_its_own_probability():
  from imgrec import models  # pylint: disable=g-import-not-at-top
  model = models.create_model("simple_cnn", 1, (16, 16, 3), head="sigmoid")
  out = model(np.zeros((2, 16, 16, 3), np.float32))
  assert out.shape == (2, 1) and model.layers[-1].dtype == "float32"
  three = models.create_model("mlp", 3, (8, 8, 1), head="sigmoid")
  assert np.asarray(three(np.full((1, 8, 8, 1), 128.0))).sum() != (
      pytest.approx(1.0))
  with pytest.raises(ValueError, match="head"):
    models.create_model("mlp", 3, (8, 8, 1), head="relu")
  with pytest.raises(ValueError, match=">= 2"):
    models.check_model("mlp", 1, (8, 8, 1))


def test_the_pipeline_carries_label_vectors(tmp_path):
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  from imgrec.data import pipeline  # pylint: disable=g-import-not-at-top
  paths = []
  for i in range(6):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.new("RGB", (12, 10), (40 * i, 0, 0)).save(paths[-1])
  rows = [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1], [1, 0, 0]]
  split = folder_lib.Split(paths, rows)
  spec = pipeline.PipelineSpec(num_classes=3, image_size=(8, 8), batch_size=6,
                               multi_hot=True, scanned=False)
  (_, y), = list(pipeline.make_dataset(split, spec))
  np.testing.assert_array_equal(y.numpy(), rows)
  mixed = pipeline.PipelineSpec(num_classes=3, image_size=(8, 8),
                                batch_size=6, multi_hot=True, scanned=False,
                                training=True, mixup=0.4, seed=1)
  (_, y), = list(pipeline.make_dataset(split, mixed))
  y = y.numpy()
  assert y.dtype == np.float32 and y.shape == (6, 3)
  assert ((y > 0) & (y < 1)).any()  # Label vectors mixed.
  assert y.min() >= 0 and y.max() <= 1


_COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 230)}


def write_multilabel_csv(root, count=72, seed=0, split_column=False):
  """Images holding 0-3 coloured squares on grey noise; labels.csv names the
  colours each holds."""
  rng = np.random.default_rng(seed)
  os.makedirs(root / "img", exist_ok=True)
  lines = ["path,labels" + (",split" if split_column else "")]
  for i in range(count):
    image = rng.integers(90, 160, (24, 24, 3)).astype(np.uint8)
    held = [c for c in _COLOURS if rng.random() < 0.5]
    for name in held:
      y, x = rng.integers(0, 16, 2)
      image[y:y + 8, x:x + 8] = _COLOURS[name]
    Image.fromarray(image).save(root / "img" / f"{i:03d}.png")
    split = ("," + ("train" if i % 4 < 2 else ("val" if i % 4 == 2 else
                                                "test"))
             if split_column else "")
    lines.append(f"img/{i:03d}.png,{' '.join(held)}{split}")
  (root / "labels.csv").write_text("\n".join(lines) + "\n")
  return str(root / "labels.csv")


@pytest.mark.slow  # A whole run.
def test_a_multilabel_run_trains_tunes_thresholds_and_reports(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  csv_path = write_multilabel_csv(tmp_path / "data", count=96)
  result = trainer.train(TrainConfig(
      task="multilabel", labels_csv=csv_path, model_dir=str(tmp_path / "run"),
      image_size=16, epochs=8, batch_size=8, learning_rate=3e-3,
      val_split=0.25, test_split=0.25, verbose=0, seed=1))
  run = RunFolder(result["model_dir"])
  assert run.read_task() == "multilabel_classification"
  thresholds = json.load(open(run.thresholds_path))
  assert thresholds["class_names"] == ["blue", "green", "red"]
  assert thresholds["source"] == "validation F1"
  assert all(0 < t < 1 for t in thresholds["thresholds"])
  report = json.load(open(run.report_path()))
  ml = report["multilabel"]
  assert report["split"] == "test" and report["num_examples"] == 24
  # Colour presence is easy: the run must have learned it.
  assert ml["map"] > 0.8, ml
  assert set(ml["per_class"]["red"]) == {"ap", "threshold", "precision",
                                         "recall", "f1", "support", "ece"}
  splits = json.load(open(run.splits_path))["splits"]
  assert len(splits["train"]["labels"][0]) == 3  # Label rows.
  # Iterative stratification kept each colour in every split.
  for name in ("train", "val", "test"):
    assert np.all(np.array(splits[name]["labels"]).sum(0) > 0), name


def test_multilabel_settings_are_refused_for_other_tasks(tmp_path):
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  with pytest.raises(ImgrecError, match="--loss is for --task=multilabel"):
    tasks.for_config(TrainConfig(loss="asl", data_dir=str(tmp_path)))
  with pytest.raises(ImgrecError, match="reads --labels_csv"):
    tasks.for_config(TrainConfig(task="multilabel", data_dir=str(tmp_path)))


def test_commands_a_multilabel_run_cannot_serve_yet_say_so(tmp_path):
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  from imgrec.config import EvaluateConfig  # pylint: disable=g-import-not-at-top
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.evaluation import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  run = RunFolder(tmp_path / "run")
  run.makedirs()
  run.write_config(TrainConfig(task="multilabel_classification",
                               labels_csv=str(tmp_path / "labels.csv"),
                               model_dir=run.path))
  # imgrec-evaluate serves label sets (tests/test_multilabel_reports.py):
  # past the task's check, it asks the run for its files.
  with pytest.raises(ImgrecError, match="No (labels file|trained model)"):
    evaluate_lib.evaluate(EvaluateConfig(model_dir=run.path))
  assert "evaluate" in tasks.get_task("multilabel").commands
  # Export and prediction serve label sets (tests/test_multilabel_serving.py):
  # past the task's check, they ask the run for its model.
  for call in (lambda: exporter.export_run(run),
               lambda: Classifier.load(run.path)):
    with pytest.raises(ImgrecError, match="best.keras"):
      call()
  assert {"export", "predict"} <= tasks.get_task("multilabel").commands
