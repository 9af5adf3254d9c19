"""One export path for every task: the task gives signatures and reading, the
export writes, describes and measures every file the same way."""

import ast
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from imgrec import tasks
from imgrec.config import TrainConfig
from imgrec.datasets import motion
from imgrec.errors import ImgrecError
from imgrec.export import exporter
from imgrec.export import tflite as tflite_lib
from imgrec.inference import tflite_internals
from imgrec.inference import tflite_metadata
from imgrec.inference.classifier import Classifier
from imgrec.run_folder import INPUT_SPEC_NAME
from imgrec.run_folder import RunFolder

PACKAGE = pathlib.Path(tasks.__file__).parent.parent
CLASSES = ["approach", "left", "right"]


def test_every_tflite_internal_imgrec_touches_exists():
  # On failure the assertion names each internal this TensorFlow or
  # LiteRT lacks.
  assert tflite_internals.missing_internals() == []


def _sources():
  for path in sorted(PACKAGE.rglob("*.py")):
    yield path.relative_to(PACKAGE.parent).as_posix(), path.read_text()


def test_tflite_internals_are_touched_in_one_module():
  private = ("tensorflow.lite.python", "_get_ops_details",
             "_get_tensor_details", "_experimental_disable_per_channel")
  found = [(name, word) for name, text in _sources() for word in private
           if word in text and name != "imgrec/inference/tflite_internals.py"]
  assert found == []


def _private_uses(text):
  """`module._name` where `module` is an imgrec module this file imports."""
  tree = ast.parse(text)
  modules = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
        "imgrec"):
      modules.update(a.asname or a.name for a in node.names)
    elif isinstance(node, ast.Import):
      modules.update(a.asname or a.name.split(".")[0] for a in node.names
                     if a.name.startswith("imgrec"))
  return [f"{node.value.id}.{node.attr}" for node in ast.walk(tree)
          if isinstance(node, ast.Attribute)
          and isinstance(node.value, ast.Name) and node.value.id in modules
          and node.attr.startswith("_") and not node.attr.startswith("__")]


def test_no_module_calls_another_modules_private_function():
  found = {name: uses for name, text in _sources()
           if (uses := _private_uses(text))}
  assert found == {}


def test_a_model_input_is_what_its_task_says():
  clip = tasks.model_input((None, 6, 24, 32, 3))
  assert (clip.task, clip.kind, clip.frames) == (
      "clip_classification", "clips", 6)
  assert clip.image_size == (24, 32) and clip.batch_shape(1) == (
      1, 6, 24, 32, 3)
  image = tasks.model_input([1, 16, 16, 1])  # A TFLite input's shape.
  assert (image.task, image.kind, image.frames) == (
      "image_classification", "images", None)
  assert image.batch_shape(channels=3) == (None, 16, 16, 3)
  assert tasks.model_input((None, None, None, 3)).image_size is None
  assert image.to_json() == {"task": "image_classification",
                             "image_size": [16, 16], "channels": 1}
  with pytest.raises(ImgrecError, match=r"No imgrec task.*\(1, 10\)"):
    tasks.model_input([1, 10])


def test_a_tflite_input_no_task_takes_is_refused_in_words(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  fn = tf.function(lambda x: {"y": tf.reduce_sum(x, axis=-1)},
                   input_signature=[tf.TensorSpec([1, 10], tf.float32)])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [fn.get_concrete_function()], None)
  path = tmp_path / "vector.tflite"
  path.write_bytes(converter.convert())
  with pytest.raises(ImgrecError, match=r"vector\.tflite.*No imgrec task "
                     r"takes a model input of shape \(1, 10\)"):
    Classifier.load(str(path))


def _clip_run(tmp):
  """A tiny clip run (one epoch, averaged over time: quick to trace)."""
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  data = motion.generate_motion_clips(tmp / "motion", clips_per_class=5,
                                      frames=4, size=16, classes=CLASSES)
  result = trainer.train(TrainConfig(
      data_dir=data, model_dir=str(tmp / "run"), image_size=16,
      clip_frames=4, temporal="average", temporal_units=8, epochs=1,
      batch_size=4,
      flip="none", verbose=0, warmup_epochs=0, test_split=0.34,
      export=False))
  return data, RunFolder(result["model_dir"])


def _tflite_metadata(path):
  from mediapipe.tasks.metadata import metadata_schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  data = open(path, "rb").read()
  model = tflite_internals.tflite_schema().Model.GetRootAs(data, 0)
  entries = {model.Metadata(i).Name(): model.Metadata(i).Buffer()
             for i in range(model.MetadataLength())}
  buffer = model.Buffers(entries[b"TFLITE_METADATA"]).DataAsNumpy()
  return schema.ModelMetadataT.InitFromObj(
      schema.ModelMetadata.GetRootAs(buffer.tobytes(), 0))


def _check_clip_files(run, out):
  """Labels and a described clip input in every TFLite file; the task in
  the SavedModel's imgrec_input.json."""
  assert set(out["tflite"]) == {"float"}
  for path in out["tflite"].values():
    assert tflite_metadata.read_labels(path) == CLASSES + ["unknown"]
    meta = _tflite_metadata(path)
    assert b"clip classifier" in meta.description
    clip = meta.subgraphMetadata[0].inputTensorMetadata[0]
    assert clip.name == b"clip" and b"4 frames" in clip.description
    output = meta.subgraphMetadata[0].outputTensorMetadata[0]
    assert output.associatedFiles[0].name == b"labels.txt"
  spec = json.load(open(os.path.join(run.saved_model_dir, INPUT_SPEC_NAME)))
  assert spec == {"task": "clip_classification", "image_size": [16, 16],
                  "channels": 3, "clip_frames": 4}


def _check_clip_report(run, out):
  """The clip formats measured as image formats are: every field."""
  report = json.load(open(run.export_report_path))
  assert report == json.loads(json.dumps(out["report"]))
  assert report["reference"]["input"] == "clips"
  assert [f["name"] for f in report["formats"]] == ["saved_model", "float"]
  for f in report["formats"]:
    assert f["latency_ms"]["p90"] >= f["latency_ms"]["median"] > 0
    assert f["images_per_second"] > 0 and f["per_class_accuracy_change"]
  by_name = {f["name"]: f for f in report["formats"]}
  assert by_name["float"]["top1_agreement"] == 1.0
  assert by_name["float"]["max_abs_prob_diff"] < 1e-4
  assert by_name["saved_model"]["max_abs_prob_diff"] < 1e-4


def _previous_version_export(run, folder):
  """The run's export as the previous version wrote it: clip TFLite files
  without metadata, an imgrec_input.json without the task."""
  shutil.copytree(run.saved_model_dir, folder / "saved_model")
  spec_path = folder / "saved_model" / INPUT_SPEC_NAME
  spec = json.loads(spec_path.read_text())
  del spec["task"]
  spec_path.write_text(json.dumps(spec))
  shutil.copy(os.path.join(run.export_dir, "labels.txt"), folder)
  with tflite_lib.Converter(tasks.load_model(run.best_model_path),
                            str(folder)) as converter:
    (folder / "model.tflite").write_bytes(converter.convert("float"))
  return [folder / "saved_model", folder / "model.tflite"]


@pytest.mark.slow  # Trains and exports a clip model (one test: one run).
def test_a_clip_run_exports_as_an_image_run_does(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  data, run = _clip_run(tmp_path)
  out = exporter.export_run(run, quantizations=("float",))
  _check_clip_files(run, out)
  _check_clip_report(run, out)
  # int8 is refused in words, before any file changes.
  before = {p: os.path.getmtime(os.path.join(run.export_dir, p))
            for p in os.listdir(run.export_dir)}
  with pytest.raises(ImgrecError, match="int8 TFLite export is for image "
                     "models.*--tflite=float,fp16,dynamic"):
    exporter.export_run(run, quantizations=("float", "int8"))
  assert {p: os.path.getmtime(os.path.join(run.export_dir, p))
          for p in os.listdir(run.export_dir)} == before
  # Exports of the previous version still classify, as the Keras model.
  videos = sorted(str(p) for p in pathlib.Path(data).rglob("*.mp4"))[:3]
  reference = Classifier.load(run.best_model_path).predict_proba(videos)
  for path in _previous_version_export(run, tmp_path / "old"):
    clf = Classifier.load(str(path))
    assert clf.class_names == CLASSES and clf.clip_frames == 4
    np.testing.assert_allclose(clf.predict_proba(videos), reference,
                               atol=2e-3)


@pytest.mark.slow  # Exports a face embedder.
def test_embedder_files_go_through_the_same_writers(face_run, tmp_path):
  from imgrec.faces import export as faces_export  # pylint: disable=g-import-not-at-top
  _, result = face_run
  run = RunFolder(shutil.copytree(result["model_dir"], tmp_path / "run"))
  out = faces_export.export_embedder(run.path, ("float",))
  spec = json.load(open(os.path.join(out["saved_model"], INPUT_SPEC_NAME)))
  assert spec == {"image_size": [16, 16], "channels": 3}
  data = open(out["tflite"]["float"], "rb").read()
  assert tflite_metadata.read_labels(data) is None  # Embeddings: no labels.
  model = tflite_internals.tflite_schema().Model.GetRootAs(data, 0)
  names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
  assert b"TFLITE_METADATA" in names
