"""End-to-end tests of the command-line tools on a tiny generated folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_toy_folder
from imgrec.run_folder import RunFolder

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def run_cli(module, *args, check=True):
  proc = subprocess.run([sys.executable, "-m", f"imgrec.cli.{module}", *args],
                        capture_output=True, text=True, env=ENV, timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("e2e")
  data = write_toy_folder(tmp / "data", per_class=12, size=24)
  model_dir = str(tmp / "run")
  run_cli("train", f"--data_dir={data}", f"--model_dir={model_dir}",
          "--epochs=3", "--image_size=16", "--batch_size=8",
          "--val_split=0.17", "--test_split=0.25", "--learning_rate=3e-3")
  return data, model_dir


@pytest.mark.slow
def test_train_writes_every_artifact(trained):
  _, model_dir = trained
  for name in ("config.json", "labels.txt", "splits.json", "history.csv",
               "best.keras", "report.json", "report.txt",
               "export/saved_model/saved_model.pb", "export/model.tflite"):
    assert os.path.exists(os.path.join(model_dir, name)), name
  assert os.path.isdir(os.path.join(model_dir, "logs"))
  config = RunFolder(model_dir).read_config()
  assert config.epochs == 3 and config.image_size == 16
  # config.json groups the fields by concern.
  recorded = json.load(open(os.path.join(model_dir, "config.json")))
  assert recorded["recipe"]["epochs"] == 3
  assert recorded["model"]["image_size"] == 16
  with open(os.path.join(model_dir, "history.csv")) as f:
    assert len(f.read().strip().splitlines()) == 4  # header + 3 epochs


@pytest.mark.slow
def test_evaluate_report(trained):
  _, model_dir = trained
  os.remove(os.path.join(model_dir, "report.json"))
  proc = run_cli("evaluate", f"--model_dir={model_dir}")
  report = json.load(open(os.path.join(model_dir, "report.json")))
  for key in ("num_examples", "accuracy", "top_k_accuracy", "k", "per_class",
              "macro_f1", "confusion_matrix", "class_names"):
    assert key in report
  assert report["num_examples"] == 9  # 3 of 12 per class, 3 classes.
  assert report["class_names"] == ["blue", "green", "red"]
  assert set(report["per_class"]["red"]) == {"precision", "recall", "f1",
                                             "support", "roc_auc"}
  for key in ("top_k", "macro_avg", "weighted_avg", "roc_auc",
              "confusion_matrix_normalized", "top_confusions", "ece",
              "reliability", "temperature", "ece_after_temperature",
              "mistakes", "latency_ms", "pictures"):
    assert key in report, key
  for name in report["pictures"].values():
    assert os.path.getsize(os.path.join(model_dir, name)) > 1000
  assert os.path.isfile(os.path.join(model_dir, "report.html"))
  assert "accuracy" in proc.stdout


@pytest.mark.slow
def test_every_format_agrees_with_keras(trained):
  from imgrec.inference.classifier import Classifier
  _, model_dir = trained
  test_paths = json.load(open(os.path.join(model_dir, "splits.json")))[
      "splits"]["test"]["paths"]
  keras_clf = Classifier.load(os.path.join(model_dir, "best.keras"))
  reference = keras_clf.predict_proba(test_paths)
  for path in ("export/saved_model", "export/model.tflite"):
    clf = Classifier.load(os.path.join(model_dir, path))
    probabilities = clf.predict_proba(test_paths)
    np.testing.assert_array_equal(probabilities.argmax(1),
                                  reference.argmax(1), err_msg=path)
    np.testing.assert_allclose(probabilities, reference, atol=1e-4)
    assert clf.class_names == ["blue", "green", "red"]


@pytest.mark.slow
def test_saved_model_bytes_signature(trained):
  import tensorflow as tf
  from imgrec.inference.classifier import Classifier
  data, model_dir = trained
  path = os.path.join(data, "green", "000.png")
  loaded = tf.saved_model.load(os.path.join(model_dir, "export/saved_model"))
  out = loaded.signatures["serving_bytes"](
      image_bytes=tf.constant([open(path, "rb").read()]))
  assert set(out) == {"probabilities", "top_k_indices", "top_k_labels",
                      "knownness", "unknown", "label"}  # With the open set.
  expected = Classifier.load(os.path.join(model_dir, "best.keras")
                             ).predict_proba([path])
  np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-4)
  # Any image size goes in; the signature resizes.
  big = np.zeros((2, 50, 40, 3), np.uint8)
  out = loaded.signatures["serving_default"](images=tf.constant(big))
  assert out["probabilities"].shape == (2, 3)
  assert out["top_k_labels"].shape == (2, 3)


@pytest.mark.slow
def test_predict_cli_formats(trained):
  data, model_dir = trained
  folder = os.path.join(data, "red")
  proc = run_cli("predict", f"--model={model_dir}/export/model.tflite",
                 "--format=json", "--top_k=2", folder)
  results = json.loads(proc.stdout)
  assert len(results) == 12
  assert all(len(r["top_k"]) == 2 for r in results)
  # The toy classes are trivially separable: most red images come out red
  # (first among the known classes: the open set may call a few unknown).
  assert sum(r["top_k"][0]["label"] == "red" for r in results) >= 9
  assert all(r["label"] == ("unknown" if r["unknown"] else r["top_k"][0][
      "label"]) for r in results)
  proc = run_cli("predict", f"--model={model_dir}",
                 os.path.join(folder, "000.png"))
  assert "000.png" in proc.stdout


@pytest.mark.slow
def test_export_cli_quantized(trained):
  _, model_dir = trained
  run_cli("export", f"--model_dir={model_dir}", "--tflite=float,dynamic")
  assert os.path.isfile(os.path.join(model_dir, "export/model_dynamic.tflite"))


@pytest.mark.slow
@pytest.mark.parametrize("module, args, message", [
    ("train", ["--data_dir=/nonexistent/x"], "does not exist"),
    ("train", ["--model=resnet9000", "--data_dir=."], "unknown model"),
    ("train", ["--optimizer=rmsprop"], "optimizer"),
    ("train", ["--epochs=0"], "epochs"),
    # Model limits are checked before the (missing) data folder is read.
    ("train", ["--model=vit_tiny", "--image_size=30",
               "--data_dir=/nonexistent/x"], "patch_size"),
    ("train", ["--image_size=big"], "image_size"),
    ("scan", ["--data_dir=/nonexistent/x"], "does not exist"),
    ("evaluate", [], "--model_dir is required"),
    ("evaluate", ["--model_dir=/nonexistent"], "No training config"),
    ("predict", ["--model=/nonexistent.keras", "x.png"], "does not exist"),
])
def test_errors_are_one_line_exit_2(module, args, message):
  proc = run_cli(module, *args, check=False)
  assert proc.returncode == 2, proc.stderr
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_one_class_and_empty_class_errors(tmp_path):
  one = write_toy_folder(tmp_path / "one", per_class=3, classes=["red"])
  proc = run_cli("train", f"--data_dir={one}", check=False)
  assert proc.returncode == 2 and "only 1 class" in proc.stderr
  two = write_toy_folder(tmp_path / "two", per_class=3, classes=["red", "blue"])
  os.makedirs(os.path.join(two, "green"))
  proc = run_cli("train", f"--data_dir={two}", check=False)
  assert proc.returncode == 2 and "green" in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_mixed_tree_with_broken_files_trains(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  data = write_toy_folder(tmp_path / "data", per_class=8)
  red = tmp_path / "data" / "red"
  good = (red / "000.png").read_bytes()
  (red / "truncated.png").write_bytes(good[:len(good) // 2])
  (red / "empty.jpg").write_bytes(b"")
  (red / "page.jpg").write_text("<html><body>Not found</body></html>")
  (tmp_path / "data" / ".DS_Store").write_bytes(b"\0\1junk")
  Image.fromarray(np.full((20, 20), 128, np.uint8)).save(
      tmp_path / "data" / "blue" / "face.pgm")
  model_dir = tmp_path / "run"
  proc = run_cli("train", f"--data_dir={data}", f"--model_dir={model_dir}",
                 "--epochs=1", "--image_size=16", "--batch_size=8",
                 "--max_bad_fraction=0.5", "--export=false")
  assert "test accuracy" in proc.stdout
  report = json.load(open(model_dir / "data_report.json"))
  assert sorted(s["reason"] for s in report["skipped"]) == [
      "empty_file", "not_an_image", "truncated"]
  assert report["totals"]["usable"] == 25  # 24 toy images + the PGM.
  splits = json.load(open(model_dir / "splits.json"))["splits"]
  used = [p for s in splits.values() for p in s["paths"]]
  assert len(used) == 25 and not any("truncated" in p for p in used)
