"""Exports a trained model_dir: SavedModel plus TFLite, beside the run."""

import os

import keras

from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.export import saved_model as saved_model_lib
from imgrec.export import tflite as tflite_lib


def load_trained_model(model_dir):
  """Loads `<model_dir>/best.keras`."""
  from imgrec import models  # pylint: disable=g-import-not-at-top,unused-import  (registers custom layers)
  path = os.path.join(model_dir, "best.keras")
  if not os.path.isfile(path):
    raise ImgrecError(f"No trained model at {path}. Run imgrec-train with "
                      f"--model_dir={model_dir} first.")
  return keras.models.load_model(path, compile=False)


def export_model_dir(model_dir, *, model=None, top_k=5,
                     quantizations=("float",), representative_images=None):
  """Writes `<model_dir>/export/saved_model` and `.../model[_<q>].tflite`.

  Args:
    model_dir: an imgrec-train output folder.
    model: the Keras model; loaded from best.keras when None.
    top_k: top classes in the SavedModel outputs.
    quantizations: TFLite variants to write; "float" is `model.tflite`, the
      others `model_<q>.tflite`.
    representative_images: calibration images for "int8".

  Returns:
    {"saved_model": path, "tflite": {quantization: path}}.
  """
  if model is None:
    model = load_trained_model(model_dir)
  labels_path = os.path.join(model_dir, "labels.txt")
  if not os.path.isfile(labels_path):
    raise ImgrecError(f"No labels.txt in {model_dir}: is it an imgrec-train "
                      "model_dir?")
  class_names = folder_lib.read_labels(labels_path)
  export_dir = os.path.join(model_dir, "export")
  out = {"saved_model": saved_model_lib.export_saved_model(
      model, class_names, os.path.join(export_dir, "saved_model"),
      top_k=top_k), "tflite": {}}
  for q in quantizations:
    name = "model.tflite" if q == "float" else f"model_{q}.tflite"
    out["tflite"][q] = tflite_lib.export_tflite(
        model, os.path.join(export_dir, name), class_names=class_names,
        quantization=q, representative_images=representative_images)
  return out
