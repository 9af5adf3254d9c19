"""In-process tests of the task layer and everything built on it.

One tiny run is trained in this process (no subprocess, a few seconds);
evaluation, export, `Classifier` and the decode policy's promise (the same
pixels through every entry point) are checked on it.
"""

import dataclasses
import io
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import pixel_probe_model
from conftest import write_odd_kinds
from conftest import write_toy_folder
from imgrec import tasks
from imgrec.config import EvaluateConfig
from imgrec.config import ExportConfig
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError
from imgrec.evaluation import evaluate as evaluate_lib
from imgrec.export import exporter
from imgrec.inference.classifier import Classifier
from imgrec.run_folder import RunFolder
from imgrec.training import trainer


# --- resolve: every check before any data is read -----------------------------


def test_resolve_fills_the_model_defaults_and_freezes():
  spec = tasks.resolve(TrainConfig(data_dir="photos"))
  assert spec.image_size == (64, 64) and spec.channels == 3
  assert spec.config.image_size == 64
  assert spec.config.model_dir == os.path.join("runs", "photos-simple_cnn")
  assert spec.input_shape == (64, 64, 3)
  assert spec.augment.level == "light" and spec.cache == "auto"
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.config.epochs = 3  # pytype: disable=annotation-type-mismatch
  rect = tasks.resolve(TrainConfig(image_size=(48, 32), model="mlp"))
  assert rect.image_size == (48, 32) and rect.config.image_size == (48, 32)


@pytest.mark.parametrize("changes, message", [
    ({"model": "vit_tiny", "image_size": 30}, "patch_size"),
    ({"model": "mobilenet_v2", "channels": 1, "weights": "none"},
     "3-channel"),
    ({"model": "mobilenet_v2", "edges": True, "weights": "none"}, "edge"),
    ({"model": "mobilenet_v2", "image_size": 16, "weights": "none"},
     ">= 32"),
    ({"model": "resnet9000"}, "unknown model"),
    ({"val_split": 0.6, "test_split": 0.5}, "must be below 1"),
    ({"val_split": 1.5}, "val_split"),
    ({"image_size": 3}, "image_size"),
])
def test_bad_configs_are_refused_before_the_data(tmp_path, changes, message):
  # The data folder does not exist: the config error must come first.
  config = TrainConfig(data_dir=str(tmp_path / "absent"), **changes)
  with pytest.raises(ImgrecError, match=message):
    tasks.resolve(config)


def test_unknown_builtin_dataset():
  with pytest.raises(ImgrecError, match="unknown built-in dataset"):
    tasks.resolve(TrainConfig(dataset="cifar"))


def test_task_builds_folder_inputs_and_model(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=6)
  task = tasks.ImageClassificationTask.from_config(TrainConfig(
      data_dir=data, image_size=(16, 12), batch_size=4, val_split=0.2,
      test_split=0.2, seed=3))
  folder = task.build_folder()
  assert folder.class_names == ["blue", "green", "red"]
  # 6 images a class: one each for val and test, four for training.
  assert [len(folder.splits[s]) for s in ("train", "val", "test")] == [
      12, 3, 3]
  x, y = next(iter(task.build_inputs(folder.splits["train"], num_classes=3,
                                     training=True)))
  assert x.shape == (4, 16, 12, 3) and x.dtype == tf.uint8
  assert y.shape == (4, 3)
  x, _ = next(iter(task.build_inputs(folder.splits["test"], num_classes=3,
                                     training=False)))
  assert x.dtype == tf.float32
  model = task.build_model(3)
  assert model.input_shape == (None, 16, 12, 3)
  # The built-in dataset's folder is recorded for later tools.
  assert task.config_to_record(folder).data_dir == data
  builtin = tasks.ImageClassificationTask.from_config(TrainConfig())
  assert builtin.config_to_record(folder).data_dir == folder.root


def test_image_dataset_keeps_the_keras_idiom_short(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=10)
  train_ds, val_ds = tasks.image_dataset(
      data, image_size=(16, 16), batch_size=8, splits=("train", "val"),
      val_split=0.2, test_split=0.0)
  assert train_ds.class_names == ["blue", "green", "red"]
  inputs = keras.Input((16, 16, 3))
  x = keras.layers.Rescaling(1 / 255)(inputs)
  x = keras.layers.Conv2D(4, 3, activation="relu")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
  model.compile("adam", "sparse_categorical_crossentropy",
                metrics=["accuracy"])
  history = model.fit(train_ds, validation_data=val_ds, epochs=1, verbose=0)
  assert "val_accuracy" in history.history
  _, labels = next(iter(val_ds))
  assert labels.dtype == tf.int32 and labels.shape.rank == 1
  with pytest.raises(ImgrecError, match="label_mode"):
    tasks.image_dataset(data, image_size=16, label_mode="binary")


# --- One trained run ------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("tasks")
  data = write_toy_folder(tmp / "data", per_class=12, size=24)
  result = trainer.train(TrainConfig(
      data_dir=data, model_dir=str(tmp / "run"), epochs=3, image_size=16,
      batch_size=8, val_split=0.17, test_split=0.25, verbose=0,
      export=False))  # Training's own export: the end-to-end runs.
  return data, RunFolder(result["model_dir"]), result


def test_training_writes_the_run_folder(run):
  _, folder, result = run
  for path in (folder.config_path, folder.labels_path, folder.splits_path,
               folder.history_path, folder.best_model_path,
               folder.report_path(), folder.data_report_path):
    assert os.path.isfile(path), path
  assert not os.path.exists(folder.tflite_path())  # --noexport.
  config = folder.read_config()
  assert config.image_size == 16 and config.epochs == 3
  assert folder.read_labels() == ["blue", "green", "red"]
  assert len(folder.read_split("test")[0]) == 9
  assert result["report"]["num_examples"] == 9


def test_multi_worker_patches_stay_off_in_single_process_training(run):
  del run
  # pylint: disable-next=g-import-not-at-top
  from keras.src.backend.tensorflow import trainer as tf_trainer
  from imgrec.training import keras_internals  # pylint: disable=g-import-not-at-top
  assert not keras_internals._ORIGINALS  # pylint: disable=protected-access
  assert tf_trainer.reduce_per_replica.__module__.startswith("keras")


def test_evaluate_gives_the_training_report(run, tmp_path):
  _, folder, result = run
  report = evaluate_lib.evaluate(EvaluateConfig(model_dir=folder.path),
                                 write=False)
  timed = ("latency_ms",)
  assert ({k: v for k, v in report.items() if k not in timed}
          == {k: v for k, v in result["report"].items() if k not in timed})
  other = write_toy_folder(tmp_path / "other", per_class=5, seed=9)
  on_folder = evaluate_lib.evaluate(EvaluateConfig(
      model_dir=folder.path, data_dir=other, batch_size=4), write=False)
  assert on_folder["num_examples"] == 15
  assert on_folder["class_names"] == ["blue", "green", "red"]
  with pytest.raises(ImgrecError, match="model_dir is required"):
    evaluate_lib.evaluate(EvaluateConfig())


@pytest.mark.slow  # Trains and exports again: seconds.
def test_export_and_every_format_agree(run, tmp_path):
  _, folder, _ = run
  out = exporter.export(ExportConfig(model_dir=folder.path,
                                     tflite=("float", "dynamic"),
                                     measure=False))
  assert set(out["tflite"]) == {"float", "dynamic"}
  paths = folder.read_split("test")[0]
  reference = Classifier.load(folder.best_model_path).predict_proba(paths)
  for path in (folder.path, folder.saved_model_dir, folder.tflite_path()):
    clf = Classifier.load(path)
    probabilities = clf.predict_proba(paths)
    np.testing.assert_array_equal(probabilities.argmax(1),
                                  reference.argmax(1), err_msg=path)
    np.testing.assert_allclose(probabilities, reference, atol=1e-4)
    assert clf.class_names == ["blue", "green", "red"]
  with pytest.raises(ImgrecError, match="tflite variant"):
    exporter.export(ExportConfig(model_dir=folder.path, tflite=("int4",)))


# --- The decode policy through every entry point --------------------------------


@pytest.fixture(scope="module")
def probe(run, tmp_path_factory):
  """A run folder whose model answers to every pixel, exported.

  A trained toy model is too sure of itself to show small pixel changes;
  this one is a linear map of all pixels, so any difference in what an
  entry point decodes moves its probabilities.
  """
  _, trained, _ = run
  folder = RunFolder(tmp_path_factory.mktemp("probe") / "run")
  folder.makedirs()
  folder.write_config(trained.read_config().replace(model_dir=folder.path))
  folder.write_labels(trained.read_labels())
  pixel_probe_model().save(folder.best_model_path)
  exporter.export_run(folder)
  return folder


def test_odd_files_give_the_same_answer_through_every_entry_point(probe,
                                                                  tmp_path):
  folder = probe
  files = write_odd_kinds(str(tmp_path))
  names = sorted(files)
  paths = [files[n] for n in names]
  keras_probs = Classifier.load(folder.path + "/best.keras").predict_proba(
      paths)
  saved = tf.saved_model.load(folder.saved_model_dir)
  served = saved.signatures["serving_bytes"](image_bytes=tf.constant(
      [open(p, "rb").read() for p in paths]))["probabilities"].numpy()
  by_entry = {
      "keras model_dir": keras_probs,
      "Classifier(SavedModel)": Classifier.load(
          folder.saved_model_dir).predict_proba(paths),
      "serving_bytes": served,
      "TFLite": Classifier.load(folder.tflite_path()).predict_proba(paths),
  }
  # What training sees: the scan's copy, decoded and resized as evaluation
  # does.
  from imgrec.data import scan  # pylint: disable=g-import-not-at-top
  task = tasks.ImageClassificationTask.from_run(folder)
  results = scan.scan_files(paths, prepared_dir=str(tmp_path / "prepared"),
                            progress=False)
  assert all(r.ok for r in results)
  # CMYK, palette, MPO and the large JPEG need no copy.
  assert sum(not r.converted for r in results) == 4
  model = tasks.load_model(folder.best_model_path)
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  by_entry["training's view"] = task.predict(
      model, folder_lib.Split([r.decode_path for r in results],
                              [0] * len(results)), 3)
  for entry, probabilities in by_entry.items():
    np.testing.assert_array_equal(probabilities.argmax(1),
                                  keras_probs.argmax(1), err_msg=entry)
    np.testing.assert_allclose(probabilities, keras_probs, atol=1e-4,
                               err_msg=entry)
  # The check has teeth: TensorFlow's plain decoder (alpha dropped, EXIF
  # ignored) gives other answers for these files.
  clf = Classifier.load(folder.best_model_path)
  for name in ("exif6.jpg", "rgba.png", "big.jpg"):
    plain = tf.io.decode_image(open(files[name], "rb").read(), channels=3,
                               expand_animations=False).numpy()
    policy = keras_probs[names.index(name)]
    assert np.abs(clf.predict_proba([plain])[0] - policy).max() > 1e-3, name


def test_serving_bytes_refuses_what_it_would_misread(probe):
  saved = tf.saved_model.load(probe.saved_model_dir)
  buf = io.BytesIO()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).quantize(4).save(buf, "BMP")
  with pytest.raises(tf.errors.InvalidArgumentError, match="colour table"):
    saved.signatures["serving_bytes"](image_bytes=tf.constant(
        [buf.getvalue()]))


def test_flags_and_config_fields_are_one(tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from imgrec.cli import flags as flags_lib  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  names = flags_lib.define_flags(TrainConfig, flag_values=values)
  fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
  assert sorted(names) == sorted(fields)
  for name in names:
    assert values[name].default == fields[name].default, name
    assert fields[name].metadata["help"] in values[name].help, name
  values(["prog", "--image_size=48,32", "--augment=medium", "--epochs=3",
          "--noexport", f"--data_dir={tmp_path}"])
  config = flags_lib.config_from_flags(TrainConfig, names, values)
  assert config == TrainConfig(image_size=(48, 32), augment="medium",
                               epochs=3, export=False, data_dir=str(tmp_path))
  with pytest.raises(flags.IllegalFlagValueError):
    values(["prog", "--augment=wild"])
  with pytest.raises(flags.IllegalFlagValueError):
    values(["prog", "--image_size=big"])


def test_config_round_trips_through_json(tmp_path):
  config = TrainConfig(image_size=(48, 32), data_dir=str(tmp_path))
  again = TrainConfig.from_json(config.to_json())
  assert again == config
  assert json.loads(config.to_json())["model"]["image_size"] == [48, 32]
  with pytest.raises(ImgrecError, match="Unknown configuration key"):
    TrainConfig.from_dict({"epochz": 3})


def test_first_epoch_reads_the_scans_images_not_the_files(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=8)
  task = tasks.ImageClassificationTask.from_config(TrainConfig(
      data_dir=data, image_size=16, batch_size=4, epochs=3, augment="none",
      val_split=0.25, test_split=0.0, seed=1))
  folder = task.build_folder()
  train = folder.splits["train"]
  assert folder.pixels is not None and train.pixel_rows is not None
  shutil.rmtree(data)  # Nothing may read the files any more.
  ds = task.build_inputs(train, num_classes=3, training=True,
                         pixels=folder.pixels)
  seen = np.concatenate([x.numpy() for x, _ in ds])
  assert seen.shape[0] == 16 and seen.dtype == np.uint8
  # One pass over the data (a single epoch) does not keep images.
  one = tasks.ImageClassificationTask.from_config(TrainConfig(
      data_dir=write_toy_folder(tmp_path / "d2", per_class=4), epochs=1,
      image_size=16))
  assert one.build_folder().pixels is None
