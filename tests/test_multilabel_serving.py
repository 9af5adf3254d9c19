"""Multi-label runs served: SavedModel, TFLite files, Classifier and imgrec-predict give label sets.

One trained multi-label run (coloured squares; `write_multilabel_csv`) is
exported in every TFLite variant and read back by its clients: a bare
TensorFlow for the SavedModel, MediaPipe's metadata schema and MediaPipe
Tasks' ImageClassifier for the TFLite files, `Classifier` and
`imgrec-predict` (the TFLite path where TensorFlow cannot be imported).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from imgrec.errors import ImgrecError
from imgrec.export import int8 as int8_lib
from imgrec.inference.classifier import Classifier
from imgrec.inference.classifier import Prediction
from imgrec.run_folder import RunFolder
from test_multilabel_data import write_multilabel_csv

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
CLASSES = ["blue", "green", "red"]
VARIANTS = ("float", "fp16", "dynamic", "int8")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """A trained multi-label run exported in every variant."""
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("multilabel_serving")
  csv_path = write_multilabel_csv(tmp / "data", count=96)
  result = trainer.train(TrainConfig(
      task="multilabel", labels_csv=csv_path, model_dir=str(tmp / "run"),
      image_size=16, epochs=8, batch_size=8, learning_rate=3e-3,
      val_split=0.25, test_split=0.25, verbose=0, seed=1))
  assert os.path.isfile(result["export"]["tflite"]["float"])  # --export.
  run = RunFolder(result["model_dir"])
  out = exporter.export_run(run, quantizations=VARIANTS,
                            calibration_images=24, latency=False)
  return run, out


def _thresholds(run):
  with open(run.thresholds_path, encoding="utf-8") as f:
    data = json.load(f)
  assert data["class_names"] == CLASSES
  return np.array(data["thresholds"])


def _keras_scores(run, paths):
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.for_run(run)
  model = tasks.load_model(run.best_model_path)
  pixels = np.stack([task.model_pixels(p) for p in paths])
  return np.asarray(model.predict(pixels, verbose=0), np.float64)


def _label_sets(scores, thresholds):
  """Each row's labels above their thresholds, best score first."""
  return [[CLASSES[j] for j in np.argsort(-row, kind="stable")
           if row[j] >= thresholds[j]] for row in scores]


@pytest.mark.slow
def test_saved_model_returns_scores_and_the_labels_above_threshold(served):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  run, out = served
  paths = run.read_split("test")[0]
  thresholds = _thresholds(run)
  keras = _keras_scores(run, paths)
  loaded = tf.saved_model.load(out["saved_model"])
  task = tasks.for_run(run)
  images = [task.serving_example(p) for p in paths]
  got = loaded.signatures["serving_default"](
      images=tf.constant(np.stack(images)))
  assert sorted(got) == ["above", "labels", "num_labels", "scores"]
  scores = got["scores"].numpy()
  assert scores.dtype == np.float32 and scores.shape == (len(paths), 3)
  np.testing.assert_allclose(scores, keras, atol=1e-5)
  np.testing.assert_array_equal(got["above"].numpy(),
                                scores >= thresholds.astype(np.float32))
  expected = _label_sets(scores, thresholds.astype(np.float32))
  labels = [[l.decode() for l in row if l] for row in got["labels"].numpy()]
  assert labels == expected
  assert got["num_labels"].numpy().tolist() == [len(e) for e in expected]
  assert any(expected) and sum(map(len, expected)) > len(paths) / 2
  # Encoded bytes give the same answers.
  by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(
      [open(p, "rb").read() for p in paths]))
  np.testing.assert_allclose(by_bytes["scores"].numpy(), scores, atol=1e-6)
  # The folder carries its thresholds: a copy of it alone decides the same.
  alone = os.path.join(str(run.path), "..", "saved_model_alone")
  shutil.copytree(out["saved_model"], alone)
  assert [p.labels for p in Classifier.load(alone).predict(paths)] == expected


@pytest.mark.slow
def test_export_report_measures_map_and_micro_f1_of_every_format(served):
  from imgrec.export import measure  # pylint: disable=g-import-not-at-top
  from imgrec.metrics import multilabel as metrics  # pylint: disable=g-import-not-at-top
  run, out = served
  report = json.load(open(run.export_report_path))
  assert report == json.loads(json.dumps(out["report"]))
  paths, targets = run.read_split("test")
  keras = metrics.summary(np.array(targets), _keras_scores(run, paths),
                          _thresholds(run), CLASSES)
  ref = report["reference"]
  assert ref["num_examples"] == len(paths) == 24
  assert ref["map"] == pytest.approx(keras["map"], abs=1e-6)
  assert ref["micro_f1"] == pytest.approx(keras["micro_f1"], abs=1e-6)
  assert ref["map"] > 0.8, ref  # Colour presence is easy to learn.
  by_name = {f["name"]: f for f in report["formats"]}
  assert list(by_name) == ["saved_model", *VARIANTS]
  for f in report["formats"]:
    assert 0 <= f["map"] <= 1 and 0 <= f["micro_f1"] <= 1
    assert "accuracy" not in f and f["bytes"] > 0
    assert set(f["per_class_ap_change"]) == set(CLASSES)
  for name in ("saved_model", "float"):
    assert by_name[name]["map"] == pytest.approx(ref["map"], abs=1e-6)
    assert by_name[name]["micro_f1"] == ref["micro_f1"]
    assert by_name[name]["label_set_agreement"] == 1.0
    assert by_name[name]["max_abs_score_diff"] <= 1e-4
  int8 = by_name["int8"]
  assert int8["check"]["metric"] == "map"
  assert int8["check"]["split"] == "val" and int8["calibration_images"] == 24
  # Held to --max_int8_drop in mAP points on the check split.
  kept = int8["check"]["steps"][-1]
  assert 100 * (int8["check"]["keras_map"] - kept["accuracy"]) <= (
      int8["check"]["max_drop_points"])
  text = measure.format_report(report)
  assert "mAP" in text and "micro-F1" in text
  for name in by_name:
    assert name in text


@pytest.mark.slow
def test_tflite_metadata_says_sigmoid_scores_and_carries_thresholds(served):
  from mediapipe.tasks.metadata import metadata_schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  from tensorflow.lite.python import schema_py_generated as tflite_schema  # pylint: disable=g-import-not-at-top
  from imgrec.inference import tflite_metadata  # pylint: disable=g-import-not-at-top
  run, _ = served
  thresholds = _thresholds(run)
  for variant in VARIANTS:
    data = open(run.tflite_path(variant), "rb").read()
    assert tflite_metadata.read_labels(data) == CLASSES
    packed = tflite_metadata.read_thresholds(data)
    assert [packed[c] for c in CLASSES] == thresholds.tolist()
    model = tflite_schema.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name(): model.Metadata(i).Buffer()
               for i in range(model.MetadataLength())}
    buffer = model.Buffers(entries[b"TFLITE_METADATA"]).DataAsNumpy().tobytes()
    meta = schema.ModelMetadataT.InitFromObj(
        schema.ModelMetadata.GetRootAs(buffer, 0))
    assert b"multi-label" in meta.description
    output = meta.subgraphMetadata[0].outputTensorMetadata[0]
    assert output.name == b"scores"
    assert output.description.startswith(b"Sigmoid score of each label")
    files = {f.name: f.type for f in output.associatedFiles}
    assert files == {b"labels.txt": schema.AssociatedFileType.TENSOR_AXIS_LABELS,
                     b"thresholds.json": schema.AssociatedFileType.UNKNOWN}


@pytest.mark.slow
def test_classifier_gives_label_sets_from_every_format(served, tmp_path):
  run, out = served
  paths = run.read_split("test")[0]
  expected = _label_sets(_keras_scores(run, paths), _thresholds(run))
  # A TFLite file alone: its thresholds come from its metadata.
  alone = tmp_path / "model.tflite"
  shutil.copy(run.tflite_path("float"), alone)
  for model in (run.path, run.best_model_path, out["saved_model"],
                run.tflite_path("float"), str(alone)):
    predictions = Classifier.load(model).predict(paths, top_k=2)
    assert [p.labels for p in predictions] == expected, model
    for p in predictions:
      assert list(p.scores) == CLASSES
      assert p.label == (p.labels[0] if p.labels else None)
      assert len(p.top_k) == 2 and p.top_k[0][1] == max(p.scores.values())
      assert set(p.to_dict()) == {"source", "labels", "scores"}
  int8 = Classifier.load(run.tflite_path("int8")).predict(paths)
  # Each label's decision, image by image: a tiny 8-epoch model has scores
  # near its thresholds, so whole sets of 24 images swing by one image in
  # four from run to run (0.75 to 0.9); its decisions stay within 15%.
  decisions = np.array([[c in p.labels for c in CLASSES] for p in int8])
  wanted = np.array([[c in e for c in CLASSES] for e in expected])
  agree = np.mean(decisions == wanted)
  assert agree >= 0.85, agree


@pytest.mark.slow
def test_thresholds_of_other_labels_are_refused(served, tmp_path):
  run, _ = served
  shutil.copy(run.best_model_path, tmp_path / "best.keras")
  shutil.copy(run.labels_path, tmp_path / "labels.txt")
  (tmp_path / "thresholds.json").write_text(json.dumps(
      {"class_names": ["cat", "dog", "red"], "thresholds": [.5, .5, .5]}))
  with pytest.raises(ImgrecError, match="names other labels"):
    Classifier.load(tmp_path / "best.keras")


@pytest.mark.slow
@pytest.mark.parametrize("value", ["NaN", "1.5", "-0.1"])
def test_thresholds_outside_zero_one_are_refused(served, tmp_path, value):
  run, _ = served
  shutil.copy(run.best_model_path, tmp_path / "best.keras")
  shutil.copy(run.labels_path, tmp_path / "labels.txt")
  (tmp_path / "thresholds.json").write_text(
      '{"class_names": ["blue", "green", "red"], "thresholds": [%s, 0.5, '
      '0.5]}' % value)
  with pytest.raises(ImgrecError, match=r"numbers in \[0, 1\].*blue"):
    Classifier.load(tmp_path / "best.keras")


@pytest.mark.slow
def test_a_multilabel_model_without_thresholds_is_refused(served, tmp_path,
                                                          monkeypatch):
  run, _ = served
  shutil.copy(run.best_model_path, tmp_path / "best.keras")
  shutil.copy(run.labels_path, tmp_path / "labels.txt")
  monkeypatch.chdir(tmp_path)  # A relative path: its folder is ".".
  with pytest.raises(ImgrecError, match="multi-label model.*thresholds.json"):
    Classifier.load("best.keras")


@pytest.mark.slow
def test_predict_prints_label_sets_without_tensorflow(served, tmp_path):
  run, _ = served
  paths = run.read_split("test")[0][:6]
  expected = _label_sets(_keras_scores(run, paths), _thresholds(run))
  blocked = tmp_path / "blocked"
  for name in ("tensorflow", "keras", "tf_keras"):
    (blocked / name).mkdir(parents=True)
    (blocked / name / "__init__.py").write_text(
        f"raise ImportError('no {name} here')\n")
  env = dict(ENV, PYTHONPATH=str(blocked))
  model = f"--model={run.tflite_path('float')}"
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.predict", model, "--format=json",
       *paths], env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  items = json.loads(proc.stdout)
  assert [set(i) for i in items] == [{"source", "labels", "scores"}] * 6
  assert [i["labels"] for i in items] == expected
  assert [i["source"] for i in items] == paths
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.predict", model, *paths], env=env,
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for line, item in zip(proc.stdout.splitlines(), items):
    shown = line.split()[1:]
    assert shown[::2] == (item["labels"] or ["(none)"]), line
    if item["labels"]:
      assert float(shown[1]) == pytest.approx(
          item["scores"][item["labels"][0]], abs=1e-3)


@pytest.mark.slow
def test_mediapipe_names_the_same_top_label_as_imgrec(served):
  import mediapipe as mp  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python import BaseOptions  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python import vision  # pylint: disable=g-import-not-at-top
  from imgrec.data import decode  # pylint: disable=g-import-not-at-top
  from imgrec.data import ops  # pylint: disable=g-import-not-at-top
  run, _ = served
  images = [np.asarray(np.round(ops.resize(decode.read_file(p, 3), (16, 16))),
                       np.uint8) for p in run.read_split("test")[0]]
  path = run.tflite_path("float")
  ours = Classifier.load(path).predict(images)
  options = vision.ImageClassifierOptions(
      base_options=BaseOptions(model_asset_path=path), max_results=1)
  with vision.ImageClassifier.create_from_options(options) as client:
    theirs = [client.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                       data=image))
              .classifications[0].categories[0] for image in images]
  assert [c.category_name for c in theirs] == [p.top_k[0][0] for p in ours]
  np.testing.assert_allclose([c.score for c in theirs],
                             [p.top_k[0][1] for p in ours], atol=1e-5)


def test_calibration_sample_takes_every_label_and_unlabeled_images():
  members = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1],
                      [0, 0, 0], [1, 0, 0], [0, 0, 1]], bool)
  picked = int8_lib.stratified_rows(members, 4, seed=0)
  assert len(picked) == len(set(picked)) == 4
  assert members[picked].any(0).all()  # Every label.
  assert (~members[picked].any(1)).any()  # And an image holding none.
  assert int8_lib.stratified_rows(members, 100) == list(range(7))
  with pytest.raises(ImgrecError, match="at least one image per class"):
    int8_lib.stratified_rows(members, 2)
  # One label an image: the same sample as before label sets.
  labels = [0, 1, 2, 0, 1, 2, 0, 0, 1]
  assert int8_lib.stratified_sample(labels, 5, 3, seed=3) == (
      int8_lib.stratified_rows(np.eye(3, dtype=bool)[labels], 5, seed=3))


def test_single_label_predictions_keep_their_fields():
  p = Prediction("cat", 0, 0.9, [("cat", 0.9), ("dog", 0.1)], source="x.png")
  assert p.labels is None and p.scores is None
  assert p.to_dict() == {"source": "x.png", "label": "cat", "index": 0,
                         "score": 0.9, "top_k": [
                             {"label": "cat", "probability": 0.9},
                             {"label": "dog", "probability": 0.1}]}
