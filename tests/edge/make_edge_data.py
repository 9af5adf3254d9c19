r"""Writes tests/edge/data: a small imgrec TFLite file, images, and the
probabilities TensorFlow's path gives for them.

    python tests/edge/make_edge_data.py

The edge tests (`tests/edge/`) run in a venv without TensorFlow
(`tox -e edge`), so they cannot make a model; this script, run where
TensorFlow is installed, makes one through imgrec's own exporter (metadata
and labels inside) and records what the SavedModel's `serving_bytes` (the
graph decoder and resize) answers for each image. A linear map of all
pixels: any pixel an edge path decodes differently moves its answer. The
same map with an open set (max_softmax, its threshold between two of the
images' scores) is model_open_set.tflite, with the `unknown` answers of the
SavedModel.
"""

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conftest import pixel_probe_model  # noqa: E402
from conftest import write_odd_kinds  # noqa: E402
from imgrec.config import TrainConfig  # noqa: E402
from imgrec.export import exporter  # noqa: E402
from imgrec.run_folder import RunFolder  # noqa: E402
from imgrec.tasks import open_set  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
CLASSES = ["blue", "green", "red"]


def main():
  if os.path.isdir(HERE):
    shutil.rmtree(HERE)
  os.makedirs(HERE)
  files = write_odd_kinds(HERE)
  photo = np.random.default_rng(7).integers(0, 256, (120, 200, 3), np.uint8)
  Image.fromarray(photo).resize((400, 240)).save(
      os.path.join(HERE, "photo.jpg"), quality=90)
  files["photo.jpg"] = os.path.join(HERE, "photo.jpg")
  names = sorted(files)
  probabilities = _export_and_serve(
      pixel_probe_model(), "model.tflite", files, names)["probabilities"]
  # The same map with an open set: max_softmax, the threshold between two
  # of the images' scores (some answer "unknown", some not).
  top = np.sort(probabilities.max(axis=1))
  middle = len(top) // 2
  found = open_set.OpenSet(
      "max_softmax", float((top[middle - 1] + top[middle]) / 2), None,
      "tests/edge/make_edge_data.py",
      np.zeros((len(CLASSES), 16 * 16 * 3), np.float32))
  unknown = _export_and_serve(pixel_probe_model(head_name="predictions"),
                              "model_open_set.tflite", files, names,
                              found)["unknown"]
  expected = {n: [float(p) for p in row]
              for n, row in zip(names, probabilities)}
  with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
    json.dump({"labels": CLASSES, "probabilities": expected,
               "unknown": {n: bool(u) for n, u in zip(names, unknown)}},
              f, indent=1)
  print(f"wrote {len(names)} images, model.tflite, model_open_set.tflite "
        f"and expected.json to {HERE}")


def _export_and_serve(model, tflite_name, files, names, found=None):
  """Exports `model` (with the open set `found`) through imgrec's exporter,
  copies its float TFLite file to `tflite_name`, and returns what its
  SavedModel's serving_bytes answers for the files (numpy arrays)."""
  with tempfile.TemporaryDirectory() as tmp:
    folder = RunFolder(os.path.join(tmp, "run"))
    folder.makedirs()
    folder.write_config(TrainConfig(data_dir=tmp, model_dir=folder.path,
                                    image_size=16))
    folder.write_labels(CLASSES)
    model.save(folder.best_model_path)
    if found is not None:
      open_set.write(folder, found)
    exporter.export_run(folder, measure=False, latency=False)
    shutil.copy(folder.tflite_path(), os.path.join(HERE, tflite_name))
    serve = tf.saved_model.load(folder.saved_model_dir).signatures[
        "serving_bytes"]
    out = serve(image_bytes=tf.constant(
        [open(files[n], "rb").read() for n in names]))
    return {k: v.numpy() for k, v in out.items()}


if __name__ == "__main__":
  main()
