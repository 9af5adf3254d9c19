"""TFLite export through the TFLite converter.

The TFLite model takes float32 raw pixels [N, H, W, C] at the model's input
size (callers resize with `imgrec.data.ops.resize`, as the pipeline does) and
returns probabilities [N, num_classes]. Class names go to `labels.txt` beside
the file. `imgrec.inference.litert` runs the files.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from imgrec import fileio
from imgrec import tasks
from imgrec.config import TFLITE_VARIANTS
from imgrec.errors import ImgrecError
from imgrec.run_folder import LABELS_NAME
from imgrec.run_folder import write_labels_file


def export_tflite(model, path, *, class_names=None, quantization="float",
                  representative_images=None):
  """Converts a Keras model to a .tflite file, written atomically.

  Args:
    model: Keras model taking raw pixels and returning probabilities.
    path: output .tflite path.
    class_names: if given, written to `labels.txt` beside `path`.
    quantization: "float", "fp16" (float16 weights), "dynamic" (int8
      weights, float activations) or "int8" (full integer ops; needs
      `representative_images`; input and output stay float32).
    representative_images: iterable of float32 [H, W, C] raw-pixel images used
      to calibrate int8 activations (a few hundred training images).

  Returns:
    `path`.
  """
  if quantization not in TFLITE_VARIANTS:
    raise ImgrecError(f"Unknown TFLite quantization. Expected one of "
                      f"{TFLITE_VARIANTS}. Received: quantization="
                      f"{quantization!r}")
  size, channels = tasks.model_input_spec(model)

  # Keras 3 models convert reliably through a SavedModel (converting a
  # concrete function directly gave NaN outputs: variables were not frozen).
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint(
      "serving_default",
      lambda images: {"probabilities": tf.cast(model(images, training=False),
                                               tf.float32)},
      input_signature=[tf.TensorSpec([1, size[0], size[1], channels],
                                     tf.float32, name="images")])
  # Beside the output, not in the system's temp folder: a kill leaves it
  # where the next export of this run cleans it up.
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=fileio.TEMP_PREFIX,
                                   dir=parent) as tmp_dir:
    archive.write_out(tmp_dir, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp_dir)
    flatbuffer = _convert(converter, quantization, representative_images)
  if quantization == "int8":
    check_integer(flatbuffer, path)
  with fileio.atomic_write(path, "wb") as f:
    f.write(flatbuffer)
  if class_names is not None:
    write_labels_file(os.path.join(os.path.dirname(os.path.abspath(path)),
                                   LABELS_NAME), class_names)
  return path


def check_integer(flatbuffer, path="the int8 model"):
  """Raises unless every tensor but the float input and output is integer.

  The converter can keep layers in float without a word (an op it cannot
  quantize, no calibration data); an "int8" file must not.

  Raises:
    ImgrecError: naming the float tensors.
  """
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interpreter = Interpreter(model_content=flatbuffer)
  ends = {d["index"] for d in (interpreter.get_input_details() +
                               interpreter.get_output_details())}
  floats = [t["name"] for t in interpreter.get_tensor_details()
            if t["index"] not in ends and
            np.dtype(t["dtype"]) in (np.float32, np.float16)]
  if floats:
    raise ImgrecError(
        f"The int8 TFLite conversion of {path} kept {len(floats)} float "
        f"tensor(s) ({', '.join(floats[:3])}...): it is not an integer model. "
        "Check that the model's ops have int8 kernels and that calibration "
        "images were given.")


def _convert(converter, quantization, representative_images):
  if quantization != "float":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == "fp16":
    converter.target_spec.supported_types = [tf.float16]
  elif quantization == "int8":
    if representative_images is None:
      raise ImgrecError("int8 TFLite export needs representative images to "
                        "calibrate activations.")
    images = list(representative_images)

    def representative_dataset():
      for image in images:
        yield [np.asarray(image, np.float32)[None]]

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  return converter.convert()
