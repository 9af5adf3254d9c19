"""Runs .tflite classifiers with LiteRT, the on-device runtime (`ai-edge-litert`)."""

import contextlib
import os
import sys

import numpy as np

from imgrec import tasks


@contextlib.contextmanager
def _native_stderr_hidden():
  """Sends file descriptor 2 to /dev/null for the block.

  LiteRT announces each delegate it creates there ("INFO: Created
  TensorFlow Lite XNNPACK delegate for CPU."), whatever the log level; its
  errors reach Python as exceptions.
  """
  sys.stderr.flush()
  try:
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
  except OSError:
    yield
    return
  os.dup2(null, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


def make_interpreter(**kwargs):
  """A LiteRT Interpreter (same arguments), tensors allocated, made quietly."""
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  with _native_stderr_hidden():
    made = Interpreter(**kwargs)
    made.allocate_tensors()
  return made


class TFLiteRunner:
  """Runs a .tflite model of an imgrec task with the LiteRT interpreter.

  Float models take float32 raw pixels; int8 models with uint8 input take
  them quantized by the input's parameters (raw pixels for imgrec's files,
  whose uint8 input has scale 1 and zero point 0).

  Args:
    path: the .tflite file.
    num_threads: CPU threads (None: LiteRT's default).
    interpreter: a LiteRT Interpreter to use instead of loading `path`.

  Attributes:
    input: the `tasks.ModelInput` of the model, from the task that takes
      its input.

  Raises:
    ImgrecError: no imgrec task takes the model's input.
  """

  def __init__(self, path=None, num_threads=None, interpreter=None):
    if interpreter is None:
      interpreter = make_interpreter(model_path=path, num_threads=num_threads)
    self.interpreter = interpreter
    inp = self.interpreter.get_input_details()[0]
    self._input_index = inp["index"]
    self.input_dtype = inp["dtype"]
    self.input_quantization = inp["quantization"]
    # The task that takes this input says what it is (an image, a clip).
    self.input = tasks.model_input([int(d) for d in inp["shape"]])
    self.clip_frames = self.input.frames
    self.image_size, self.channels = self.input.image_size, self.input.channels
    out = self.interpreter.get_output_details()[0]
    self._output_index = out["index"]
    self._output_quantization = out["quantization"]

  def __call__(self, images):
    """Outputs [N, C] of float32 raw-pixel examples [N, ..., 3 or 1], one
    at a time."""
    images = np.asarray(images, np.float32)
    if images.shape[-1] == 1 and self.channels == 3:  # Gray models take RGB.
      images = np.repeat(images, 3, axis=-1)
    results = []
    for image in images:
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
