"""Export with proof: metadata real clients read, measured formats, checked int8.

The clients here are nobody's but their authors': MediaPipe Tasks'
ImageClassifier and MediaPipe's generated metadata schema for the TFLite
files, `saved_model_cli` and a bare TensorFlow for the SavedModel.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import write_toy_folder
from imgrec.config import ExportConfig
from imgrec.config import TrainConfig
from imgrec.data import decode
from imgrec.data import ops
from imgrec.errors import ImgrecError
from imgrec.export import exporter
from imgrec.export import int8 as int8_lib
from imgrec.export import measure
from imgrec.export import tflite as tflite_lib
from imgrec.inference import tflite_metadata
from imgrec.inference.classifier import Classifier
from imgrec.run_folder import RunFolder

# Every test here shares a trained and exported run (20 s to make on 2
# cores) and measures or serves its formats: the export-heavy checks that
# `tox -e fast` leaves out.
pytestmark = pytest.mark.slow

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
CLASSES = ["blue", "green", "red"]
VARIANTS = ("float", "fp16", "dynamic", "int8")


def run_cli(module, *args):
  return subprocess.run([sys.executable, "-m", f"imgrec.cli.{module}", *args],
                        capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A trained run exported in every variant (int8 with uint8 ends)."""
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("export")
  data = write_toy_folder(tmp / "data", per_class=12, size=20)
  result = trainer.train(TrainConfig(
      data_dir=data, model_dir=str(tmp / "run"), epochs=2, image_size=16,
      batch_size=8, val_split=0.17, test_split=0.25, learning_rate=3e-3,
      verbose=0, export=False))
  folder = RunFolder(result["model_dir"])
  out = exporter.export(ExportConfig(model_dir=folder.path, tflite=VARIANTS,
                                     calibration_images=12, int8_io="uint8"))
  return folder, out


def _test_images(folder, size=(16, 16)):
  """The run's test images as uint8 RGB at the model's size."""
  paths = folder.read_split("test")[0]
  return [np.asarray(np.round(ops.resize(decode.read_file(p, 3), size)),
                     np.uint8) for p in paths]


def test_report_measures_every_format(run):
  folder, out = run
  report = json.load(open(os.path.join(folder.export_dir,
                                       "export_report.json")))
  assert report == json.loads(json.dumps(out["report"]))
  ref = report["reference"]
  assert ref["format"] == "keras" and ref["num_examples"] == 9
  names = [f["name"] for f in report["formats"]]
  assert names == ["saved_model", *VARIANTS]
  for f in report["formats"]:
    assert f["bytes"] > 0 and os.path.exists(f["path"])
    assert 0 <= f["accuracy"] <= 1 and 0 <= f["top1_agreement"] <= 1
    assert f["latency_ms"]["median"] > 0
    assert f["latency_ms"]["p90"] >= f["latency_ms"]["median"]
    assert f["images_per_second"] > 0
    assert set(f["per_class_accuracy_change"]) <= set(CLASSES)
  by_name = {f["name"]: f for f in report["formats"]}
  assert by_name["float"]["top1_agreement"] == 1.0
  assert by_name["float"]["max_abs_prob_diff"] <= 1e-4
  assert by_name["float"]["accuracy"] == ref["accuracy"]
  assert by_name["int8"]["bytes"] < 0.35 * by_name["float"]["bytes"]
  assert by_name["int8"]["check"]["split"] == "val"
  assert by_name["int8"]["calibration_images"] == 12
  text = measure.format_report(report)
  for name in names:
    assert name in text


def test_tflite_files_carry_labels_and_input_description(run):
  from mediapipe.tasks.metadata import metadata_schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  from tensorflow.lite.python import schema_py_generated as tflite_schema  # pylint: disable=g-import-not-at-top
  folder, _ = run
  for variant in VARIANTS:
    data = open(folder.tflite_path(variant), "rb").read()
    # The last column is the open set's "unknown" decision.
    assert tflite_metadata.read_labels(data) == CLASSES + ["unknown"]
    packed = tflite_metadata.read_open_set(data)
    assert packed["unknown_label"] == "unknown"
    assert packed["threshold"] == json.load(open(folder.open_set_path))[
        "threshold"]
    model = tflite_schema.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name(): model.Metadata(i).Buffer()
               for i in range(model.MetadataLength())}
    buffer = model.Buffers(entries[b"TFLITE_METADATA"]).DataAsNumpy().tobytes()
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    meta = schema.ModelMetadataT.InitFromObj(
        schema.ModelMetadata.GetRootAs(buffer, 0))
    image = meta.subgraphMetadata[0].inputTensorMetadata[0]
    assert image.content.contentPropertiesType == (
        schema.ContentProperties.ImageProperties)
    assert image.content.contentProperties.colorSpace == (
        schema.ColorSpaceType.RGB)
    output = meta.subgraphMetadata[0].outputTensorMetadata[0]
    assert output.associatedFiles[0].name == b"labels.txt"
    assert output.associatedFiles[0].type == (
        schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    assert output.associatedFiles[1].name == b"open_set.json"
    if variant == "int8":  # uint8 ends: raw pixels, no normalization.
      assert not image.processUnits
    else:
      options = image.processUnits[0].options
      assert list(options.mean) == [0.0] * 3 and list(options.std) == [1.0] * 3


def test_mediapipe_names_the_same_class_as_imgrec(run):
  import mediapipe as mp  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python import BaseOptions  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python import vision  # pylint: disable=g-import-not-at-top
  folder, _ = run
  images = _test_images(folder)
  for variant in ("float", "int8"):
    path = folder.tflite_path(variant)
    ours = Classifier.load(path).predict(images)
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=path), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as client:
      theirs = [client.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                         data=image))
                .classifications[0].categories[0] for image in images]
    assert [c.category_name for c in theirs] == [p.label for p in ours]
    # An image of no known class is "unknown" (score 1) to MediaPipe too.
    np.testing.assert_allclose([c.score for c in theirs],
                               [1.0 if p.unknown else p.score for p in ours],
                               atol=1e-5)


def test_int8_is_integer_with_raw_uint8_pixels_in(run):
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  folder, out = run
  data = open(folder.tflite_path("int8"), "rb").read()
  assert tflite_lib.float_ops(data) == []
  interpreter = Interpreter(model_content=data)
  inp = interpreter.get_input_details()[0]
  assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)
  assert interpreter.get_output_details()[0]["dtype"] == np.uint8
  int8 = [f for f in out["report"]["formats"] if f["name"] == "int8"][0]
  assert int8["io"] == "uint8" and int8["kept_float"] == []
  assert int8["granularity"] in ("per_tensor", "per_channel")


def test_int8_keeps_the_worst_layers_in_float_and_names_them(run):
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  folder, _ = run
  model = tasks.load_model(folder.best_model_path)
  task = tasks.ImageClassificationTask.from_run(folder)
  paths = folder.read_split("train")[0][:6]
  with tflite_lib.Converter(model, str(folder.export_dir)) as converter:
    calibration = converter.calibrate([task.model_pixels(p) for p in paths])
    ranked = calibration.layer_errors()
    assert len(ranked) > 3 and ranked[0][2] >= ranked[-1][2]
    worst = [ranked[0][0]]
    data = calibration.quantize(keep_float=worst)
  kept = tflite_lib.check_integer(data, keep_float=worst)
  assert kept and {name for _, name in kept} == set(worst)
  with pytest.raises(ImgrecError, match="not an integer model"):
    tflite_lib.check_integer(data)


class _FakeCalibration:
  """Loses 2 points until its three worst layers stay in float."""

  def layer_errors(self):
    return [(f"layer{i}", "CONV_2D", 10.0 - i) for i in range(10)]

  def quantize(self, keep_float=(), io="float", per_channel=True):
    return len(set(keep_float) & {"layer0", "layer1", "layer2"}) + (
        0 if per_channel else 10)


class _FakeCheck:
  split, keras_accuracy = "val", 0.9

  def accuracy(self, flatbuffer):
    return 0.9 if flatbuffer == 3 else 0.88


def test_int8_search_keeps_the_fewest_layers_that_reach_the_bound():
  flatbuffer, kept, granularity, steps = int8_lib.quantize_within(
      _FakeCalibration(), _FakeCheck(), max_drop=0.5)
  assert flatbuffer == 3 and kept == ["layer0", "layer1", "layer2"]
  assert granularity == "per_channel"
  assert [(s["granularity"], s["kept_float"]) for s in steps] == [
      ("per_tensor", 0), ("per_channel", 0), ("per_channel", 1),
      ("per_channel", 2), ("per_channel", 4), ("per_channel", 3)]
  with pytest.raises(ImgrecError, match="max_int8_drop"):
    int8_lib.quantize_within(_FakeCalibration(), type(
        "Never", (_FakeCheck,), {"accuracy": lambda self, f: 0.5})(),
                             max_drop=0.5)


def test_calibration_takes_every_class_and_refuses_too_few():
  labels = [0] * 50 + [1] * 3 + [2] * 20
  picked = int8_lib.stratified_sample(labels, 9, 3)
  assert sorted(labels[i] for i in picked) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert len(int8_lib.stratified_sample(labels, 1000, 3)) == len(labels)
  with pytest.raises(ImgrecError, match="at least one image per class"):
    int8_lib.stratified_sample(labels, 2, 3)


def test_int8_export_refuses_fewer_calibration_images_than_classes(run):
  folder, _ = run
  proc = run_cli("export", f"--model_dir={folder.path}", "--tflite=int8",
                 "--calibration_images=2", "--measure=false")
  assert proc.returncode == 2
  assert "at least one image per class" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_saved_model_serves_from_stock_tools_without_imgrec(run):
  folder, _ = run
  red = str([[[[220, 30, 30]] * 16] * 16]).replace(" ", "")
  proc = subprocess.run(
      [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
       "run", f"--dir={folder.saved_model_dir}", "--tag_set=serve",
       "--signature_def=serving_default", f"--input_exprs=images={red}"],
      capture_output=True, text=True, env=ENV, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "top_k_labels" in proc.stdout and "b'red'" in proc.stdout
  code = ("import sys, numpy as np, tensorflow as tf\n"
          f"m = tf.saved_model.load({folder.saved_model_dir!r})\n"
          "f = m.signatures['serving_default']\n"
          "out = f(images=tf.constant(np.full((2, 40, 30, 3), [220, 30, 30],"
          " np.uint8)))\n"
          "print(out['top_k_labels'].numpy()[0][0].decode())\n"
          "assert not [n for n in sys.modules if n.startswith('imgrec')]\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, env=ENV, timeout=300,
                        cwd=str(folder.export_dir))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "red"


def test_every_format_gives_the_same_structure_and_labels(run):
  folder, _ = run
  images = _test_images(folder)
  os.remove(os.path.join(folder.export_dir, "labels.txt"))  # Metadata only.
  paths = [folder.best_model_path, folder.saved_model_dir] + [
      folder.tflite_path(v) for v in VARIANTS]
  results = {}
  for path in paths:
    clf = Classifier.load(path)
    assert clf.class_names == CLASSES, path
    predictions = clf.predict(images, top_k=2)
    assert [sorted(p.to_dict()) for p in predictions] == [
        ["index", "label", "score", "source", "top_k", "unknown",
         "unknown_score"]] * len(images)
    results[path] = [p.label for p in predictions]
  # The open set's decision too: the same answers in every float format.
  assert results[folder.tflite_path("float")] == results[
      folder.best_model_path] == results[folder.saved_model_dir]


def test_predict_benchmarks_and_streams_a_folder(run, tmp_path):
  folder, _ = run
  data = write_toy_folder(tmp_path / "many", per_class=5, size=20)
  Image.new("RGB", (4, 4)).save(tmp_path / "many" / "red" / "extra.png")
  open(tmp_path / "many" / "red" / "broken.png", "wb").write(b"not an image")
  proc = run_cli("predict", f"--model={folder.tflite_path('int8')}",
                 "--chunk_size=4", "--format=json", data)
  assert proc.returncode == 1  # The broken file is reported, not hidden.
  assert "broken.png" in proc.stderr
  results = json.loads(proc.stdout)
  assert len(results) == 16
  assert {r["label"] for r in results} <= set(CLASSES)
  proc = run_cli("predict", f"--model={folder.tflite_path('float')}",
                 "--benchmark", "--num_threads=1", data)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "median" in proc.stdout and "images/s" in proc.stdout
  proc = run_cli("predict", f"--model={folder.saved_model_dir}", "--benchmark",
                 "--num_threads=1", "--format=json")
  assert proc.returncode == 0, proc.stderr[-2000:]
  timing = json.loads(proc.stdout)
  assert timing["format"] == "saved_model" and timing["num_threads"] == 1
  assert timing["latency_ms"]["p90"] >= timing["latency_ms"]["median"] > 0
