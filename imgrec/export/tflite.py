"""TFLite export through the TFLite converter, and a LiteRT runner.

The TFLite model takes float32 raw pixels [N, H, W, C] at the model's input
size (callers resize with `imgrec.data.ops.resize`, as the pipeline does) and
returns probabilities [N, num_classes]. Class names go to `labels.txt` beside
the file.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from imgrec import fileio
from imgrec.errors import ImgrecError
from imgrec.export.saved_model import model_input_spec

QUANTIZATIONS = ("float", "fp16", "dynamic", "int8")


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
  if quantization not in QUANTIZATIONS:
    raise ImgrecError(f"Unknown TFLite quantization. Expected one of "
                      f"{QUANTIZATIONS}. Received: quantization={quantization!r}")
  size, channels = model_input_spec(model)

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
  with tempfile.TemporaryDirectory() as tmp_dir:
    archive.write_out(tmp_dir, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp_dir)
    flatbuffer = _convert(converter, quantization, representative_images)
  with fileio.atomic_write(path, "wb") as f:
    f.write(flatbuffer)
  if class_names is not None:
    fileio.write_text(os.path.join(os.path.dirname(os.path.abspath(path)),
                                   "labels.txt"), "\n".join(class_names) + "\n")
  return path


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


class TFLiteRunner:
  """Runs a .tflite classifier with the LiteRT interpreter."""

  def __init__(self, path, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
    self.interpreter.allocate_tensors()
    inp = self.interpreter.get_input_details()[0]
    self._input_index = inp["index"]
    self.input_dtype = inp["dtype"]
    self.input_quantization = inp["quantization"]
    _, h, w, c = inp["shape"]
    self.image_size, self.channels = (int(h), int(w)), int(c)
    out = self.interpreter.get_output_details()[0]
    self._output_index = out["index"]
    self._output_quantization = out["quantization"]

  def __call__(self, images):
    """Returns probabilities [N, C] for float32 raw-pixel images [N, H, W, C]."""
    results = []
    for image in np.asarray(images, np.float32):
      x = image[None]
      if self.input_dtype != np.float32:
        scale, zero = self.input_quantization
        x = np.clip(np.round(x / scale + zero), np.iinfo(self.input_dtype).min,
                    np.iinfo(self.input_dtype).max).astype(self.input_dtype)
      self.interpreter.set_tensor(self._input_index, x)
      self.interpreter.invoke()
      y = self.interpreter.get_tensor(self._output_index)[0]
      if y.dtype != np.float32:
        scale, zero = self._output_quantization
        y = (y.astype(np.float32) - zero) * scale
      results.append(y)
    return np.stack(results) if results else np.zeros((0, 0), np.float32)
