"""The one TFLite path: conversion, int8 calibration and checks, files with metadata.

A TFLite model takes one example of raw RGB pixels at the model's input
size, batch 1 ([1, H, W, 3] for an image, [1, T, H, W, 3] for a clip of T
frames; float32, or uint8 for an int8 model exported with
`int8_io="uint8"`; callers resize with `imgrec.data.ops.resize`, as the
pipeline does) and returns its output ([1, num_classes] probabilities for a
classifier). Every file carries standard TFLite metadata
(`tflite_metadata`): its input description and its labels, which MediaPipe
Tasks and `imgrec.Classifier` read. `imgrec.inference.litert` runs the
files; the converter's private internals are fenced in
`imgrec.inference.tflite_internals`.

    with tflite.Converter(model, work_dir) as converter:
      float_bytes = converter.convert("float")
      calibration = converter.calibrate(images)
      int8_bytes = calibration.quantize(keep_float=())
"""

import contextlib
import csv
import io
import math
import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from imgrec import fileio
from imgrec import tasks
from imgrec.config import TFLITE_VARIANTS
from imgrec.errors import ImgrecError
from imgrec.export import saved_model as saved_model_lib
from imgrec.inference import litert
from imgrec.inference import tflite_internals
from imgrec.inference import tflite_metadata

INT8_IO_TYPES = ("float", "uint8")
_ENDS = ("QUANTIZE", "DEQUANTIZE")


# Luma weights of `tf.image.rgb_to_grayscale`, the blue one raised by 1e-4
# so that they sum to 1: a gray pixel stays exactly itself.
_LUMA = (0.2989, 0.5870, 0.1141)


def to_gray(images):
  """RGB [..., H, W, 3] -> luma [..., H, W, 1] as one 1x1 convolution.

  Grayscale models' TFLite files take RGB like every other (MediaPipe
  Tasks reads RGB models only) and convert first. Unlike the pipeline, the
  luma is not rounded to whole levels (int8 has no rounding kernel): on a
  color image it is at most half a level away, on a gray one exact.
  """
  return tf.nn.conv2d(images, tf.constant(_LUMA, tf.float32, [1, 1, 3, 1]),
                      strides=1, padding="VALID")


def _first_line(error):
  text = str(error).strip()
  return text.splitlines()[-1] if text else repr(error)


class Converter:
  """A Keras model staged as a SavedModel for the TFLite converter.

  Keras 3 models convert reliably through a SavedModel (converting a
  concrete function directly gave NaN outputs: variables were not frozen).
  The staging folder is made beside the output, not in the system's temp
  folder: a kill leaves it where the next export of the run cleans it up.

  Args:
    model: Keras model taking raw pixels (a task's `tflite_model`).
    work_dir: folder for the staging SavedModel.

  Attributes:
    input: the `tasks.ModelInput` of `model`, as its task reads it; the
      TFLite file takes it in RGB (gray models convert inside, `to_gray`).
  """

  def __init__(self, model, work_dir):
    self.model = model
    self.input = tasks.model_input(model)
    self.work_dir = work_dir
    self._stack = contextlib.ExitStack()
    self._saved_model = None

  def __enter__(self):
    os.makedirs(self.work_dir, exist_ok=True)
    self._saved_model = self._stack.enter_context(
        tempfile.TemporaryDirectory(prefix=fileio.TEMP_PREFIX,
                                    dir=self.work_dir))
    model, gray = self.model, self.input.channels == 1

    def serve(pixels):
      if gray:
        pixels = to_gray(pixels)
      return {"probabilities": tf.cast(model(pixels, training=False),
                                       tf.float32)}

    signature = [tf.TensorSpec(self.input.batch_shape(1, channels=3),
                               tf.float32, name=self.input.kind)]
    saved_model_lib.archive(model, [("serving_default", serve, signature)]
                            ).write_out(self._saved_model, verbose=False)
    return self

  def __exit__(self, *exc):
    self._stack.close()

  def _converter(self):
    return tf.lite.TFLiteConverter.from_saved_model(self._saved_model)

  def convert(self, quantization):
    """Float, fp16 (float16 weights) or dynamic (int8 weights) TFLite bytes."""
    if quantization not in ("float", "fp16", "dynamic"):
      raise ImgrecError(f"Converter.convert makes float, fp16 or dynamic "
                        f"models; int8 goes through calibrate(). Received: "
                        f"{quantization!r}")
    converter = self._converter()
    if quantization != "float":
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "fp16":
      converter.target_spec.supported_types = [tf.float16]
    return _run_converter(converter.convert, quantization)

  def calibrate(self, images):
    """Calibrates int8 activations on `images`; returns an `Int8Calibration`.

    Args:
      images: float32 raw-pixel examples at the model's input size (a
        class-stratified sample of the training split).
    """
    check_int8_supported(self.model)
    images = [np.asarray(image, np.float32) for image in images]
    images = [np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
              for image in images]
    if not images:
      raise ImgrecError("int8 TFLite export needs calibration images; "
                        "received none.")
    # The input's range is calibrated from the data: one pixel of 0 and one
    # of 255 make it exactly 0..255, so uint8 input is raw pixels (scale 1)
    # and float pixels quantize without loss.
    images[0] = images[0].copy()
    images[0][0, 0] = 0.0
    images[0][-1, -1] = 255.0

    def dataset():
      for image in images:
        yield [image[None]]

    converter = self._converter()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    # Float kernels stay available only for the layers `quantize` is told
    # to keep in float; `check_integer` refuses any other float op.
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = _run_converter(
        lambda: tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=dataset), "int8")
    return Int8Calibration(debugger)


def recurrent_layers(model):
  """Names of the recurrent layers (LSTM, GRU, RNN) in a model, nested ones
  included."""
  import keras  # pylint: disable=g-import-not-at-top
  found = []
  for layer in model.layers:
    if isinstance(layer, keras.layers.RNN) or (
        isinstance(layer, keras.layers.Bidirectional)):
      found.append(layer.name)
    elif hasattr(layer, "layers"):
      found += recurrent_layers(layer)
  return found


def check_int8_supported(model):
  """Raises ImgrecError for models int8 calibration cannot take.

  TF 2.21's calibrator crashes the process (a segfault, measured on
  row_lstm) while feeding a quantizable LSTM: refuse in words instead.
  """
  recurrent = recurrent_layers(model)
  if recurrent:
    raise ImgrecError(
        f"int8 TFLite export cannot calibrate recurrent layers "
        f"({', '.join(recurrent[:3])}): TFLite's calibrator crashes on "
        "them. Export float, fp16 or dynamic instead (--tflite=float,"
        "fp16,dynamic).")


def _run_converter(fn, quantization):
  try:
    with warnings.catch_warnings():
      # The quantization debugger still runs tf.lite.Interpreter, which
      # warns of its own deprecation on every use.
      warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is "
                              "deprecated", category=UserWarning)
      return fn()
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    # The converter's errors are pages of MLIR; the last line says what.
    raise ImgrecError(f"The TFLite converter failed to make the "
                      f"{quantization} model: {_first_line(e)}") from e


class Int8Calibration:
  """A calibrated model, quantized to int8 with chosen layers kept in float.

  Calibration runs once; each `quantize` call re-quantizes from it
  (TFLite's quantization debugger keeps the calibrated model).
  """

  def __init__(self, debugger):
    self._debugger = debugger
    self._errors = None

  def quantize(self, keep_float=(), io="float", per_channel=True):
    """Returns int8 TFLite bytes.

    Args:
      keep_float: names of layers (output tensors of `layer_errors`) left in
        float.
      io: "float" (float32 input and output, quantized inside the model) or
        "uint8" (raw uint8 pixels in, uint8 probabilities out).
      per_channel: a scale for each output channel of the weights (TFLite's
        default), else one per tensor: a smaller file (each scale also takes
        an int64 zero point; ~15% of a per-channel MobileNetV2) that some
        models pay for in accuracy.
    """
    if io not in INT8_IO_TYPES:
      raise ImgrecError(f"int8 input/output must be one of {INT8_IO_TYPES}. "
                        f"Received: {io!r}")
    debugger = self._debugger
    # Read by the debugger's quantizer at each call.
    tflite_internals.set_per_channel(debugger.converter, per_channel)
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(keep_float) or None)
    flatbuffer = _run_converter(debugger.get_nondebug_quantized_model, "int8")
    if io == "uint8":
      # The float ends become uint8 ones feeding the int8 graph.
      flatbuffer = tflite_internals.with_uint8_io(flatbuffer)
    return flatbuffer

  def layer_errors(self):
    """Layers by quantization error, worst first.

    Runs the debug model (float and int8 side by side on the calibration
    images) once and scores each layer by the RMS difference of its output
    in units of its quantization step (about 0.29 for a layer that loses
    nothing but rounding).

    Returns:
      [(layer name, op name, error)], worst first.
    """
    if self._errors is None:
      debugger = self._debugger
      debugger.options = tf.lite.experimental.QuantizationDebugOptions()
      _run_converter(debugger.run, "int8 debug")
      dump = io.StringIO()
      debugger.layer_statistics_dump(dump)
      dump.seek(0)
      rows = []
      for row in csv.DictReader(dump):
        scale = float(row["scale"])
        error = (math.sqrt(float(row["mean_squared_error"])) / scale
                 if scale > 0 else 0.0)
        rows.append((row["tensor_name"], row["op_name"], error))
      self._errors = sorted(rows, key=lambda r: -r[2])
    return list(self._errors)


def float_ops(flatbuffer):
  """The compute ops of a TFLite model that run in float.

  Returns:
    [(op name, output tensor name)] of every op but QUANTIZE/DEQUANTIZE with
    a float input or output.
  """
  from ai_edge_litert.interpreter import OpResolverType  # pylint: disable=g-import-not-at-top
  # Without delegates: XNNPACK would fold the graph, QUANTIZE and DEQUANTIZE
  # included, into one DELEGATE node with float ends.
  interpreter = litert.make_interpreter(
      model_content=flatbuffer, experimental_op_resolver_type=(
          OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
  dtypes = {t["index"]: np.dtype(t["dtype"])
            for t in interpreter.get_tensor_details()}
  floats = (np.dtype(np.float32), np.dtype(np.float16))
  found = []
  for op in tflite_internals.ops_details(interpreter):
    if op["op_name"] in _ENDS:
      continue
    tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
    if any(dtypes.get(i) in floats for i in tensors):
      name = (tflite_internals.tensor_name(interpreter, op["outputs"][0])
              if len(op["outputs"]) else "")
      found.append((op["op_name"], name))
  return found


def check_integer(flatbuffer, path="the int8 model", keep_float=()):
  """Raises unless every compute op is integer, but those kept in float.

  The converter can keep layers in float without a word (an op it cannot
  quantize, no calibration data); an "int8" file must not, except for the
  layers the export chose to keep (`keep_float`), which the report names.

  Returns:
    [(op name, output tensor name)] of the float ops (all kept on purpose).

  Raises:
    ImgrecError: naming the unexpected float ops.
  """
  kept = set(keep_float)
  found = float_ops(flatbuffer)
  unexpected = [(op, name) for op, name in found if name not in kept]
  if unexpected:
    listed = ", ".join(f"{op} {name}" for op, name in unexpected[:3])
    raise ImgrecError(
        f"The int8 TFLite conversion of {path} kept {len(unexpected)} "
        f"operation(s) in float ({listed}...): it is not an integer model. "
        "Check that the model's ops have int8 kernels and that calibration "
        "images were given.")
  return found


def write_tflite(flatbuffer, path, *, model_input, name, description,
                 class_names=None, output=None, thresholds=None,
                 open_set=None):
  """Writes TFLite bytes with their metadata (and labels), atomically.

  Args:
    flatbuffer: converter output.
    path: output .tflite path.
    model_input: the ModelInput of the converted model (its size and
      frames; the file takes RGB).
    name: model name in the metadata.
    description: one sentence in the metadata (a task's `describe`).
    class_names: labels, packed into the file; None for a model that does
      not classify.
    output: (name, description) of the output: of a classifier's scores
      (default: softmax probabilities), or of a model that does not
      classify.
    thresholds: each class's decision threshold, packed beside the labels
      (a multi-label model's); None for none.
    open_set: {"score", "threshold", "unknown_label"} of a model whose last
      output column is the "unknown" decision, packed beside the labels;
      None for none.

  Returns:
    `path`.
  """
  details = litert.make_interpreter(
      model_content=flatbuffer).get_input_details()[0]
  metadata = tflite_metadata.build_metadata(
      name=name, description=description,
      image_size=model_input.image_size, channels=3,
      frames=model_input.frames,
      float_input=np.dtype(details["dtype"]) == np.float32, version="1",
      labels=class_names is not None, output=output,
      thresholds=thresholds is not None, open_set=open_set is not None)
  data = tflite_metadata.attach(flatbuffer, metadata, class_names,
                                thresholds, open_set)
  with fileio.atomic_write(path, "wb") as f:
    f.write(data)
  return path


def check_variant(quantization):
  """Raises ImgrecError for a name that is no TFLite variant."""
  if quantization not in TFLITE_VARIANTS:
    raise ImgrecError(f"Unknown TFLite quantization. Expected one of "
                      f"{TFLITE_VARIANTS}. Received: quantization="
                      f"{quantization!r}")
