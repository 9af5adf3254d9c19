"""Export of clip classifiers: a SavedModel that takes clips, and TFLite files.

SavedModel signature `serving_default`: `clips`, uint8 [N, T, H, W, 3] of any
frame size (T = the model's --clip_frames, sampled as `imgrec.data.clips`
samples them; frames resized in the graph). Returns `probabilities` float32
[N, C], `top_k_indices` and `top_k_labels`, as image models do.

TFLite: float, fp16 and dynamic convert with builtin ops only (the GRU and
LSTM are unrolled over the fixed clip length; a rolled loop over a dynamic
batch would need Select TF ops). Input float32 raw pixels [1, T, H, W, C].
int8 is refused: TFLite's calibrator crashes on recurrent layers, and full
integer attention loses accuracy; use dynamic.
"""

import contextlib
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from imgrec import fileio
from imgrec.data import ops
from imgrec.errors import ImgrecError
from imgrec.export import measure as measure_lib
from imgrec.export import tflite as tflite_lib
from imgrec.inference import litert
from imgrec.run_folder import INPUT_SPEC_NAME
from imgrec.run_folder import LABELS_NAME
from imgrec.run_folder import write_labels_file

_CHUNK = 64


def _clip_spec(model):
  shape = model.input_shape
  shape = shape[0] if isinstance(shape, list) else shape
  return int(shape[1]), (int(shape[2]), int(shape[3])), int(shape[4])


def export_saved_model(model, class_names, path, top_k=5):
  """Writes a clip model as a SavedModel with a `clips` signature."""
  frames, size, channels = _clip_spec(model)
  k = int(min(top_k, len(class_names)))
  labels = tf.constant(list(class_names), dtype=tf.string)

  def serve(clips):
    shape = tf.shape(clips)
    flat = tf.reshape(clips, tf.concat([[-1], shape[2:]], 0))
    pixels = ops.resize(ops.to_channels(flat, channels), size)
    pixels = tf.reshape(pixels, [-1, frames, size[0], size[1], channels])
    probabilities = tf.cast(model(pixels, training=False), tf.float32)
    top = tf.math.top_k(probabilities, k=k)
    return {"probabilities": probabilities, "top_k_indices": top.indices,
            "top_k_labels": tf.gather(labels, top.indices)}

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint(
      "serving_default", serve, input_signature=[tf.TensorSpec(
          [None, frames, None, None, 3], tf.uint8, name="clips")])
  with fileio.atomic_dir(path) as tmp:
    archive.write_out(tmp, verbose=False)
    write_labels_file(os.path.join(tmp, LABELS_NAME), class_names)
    fileio.write_json(os.path.join(tmp, INPUT_SPEC_NAME),
                      {"clip_frames": frames, "image_size": list(size),
                       "channels": channels})
  return path


def check_variant(quantization):
  """Raises ImgrecError for TFLite variants a clip model cannot have."""
  if quantization == "int8":
    raise ImgrecError("int8 TFLite export is for image models: TFLite's "
                      "calibrator crashes on recurrent layers. Export a clip "
                      "model with --tflite=float,fp16,dynamic.")
  tflite_lib.check_variant(quantization)


def convert_tflite(model, quantization, work_dir):
  """TFLite bytes of a clip model: float, fp16 or dynamic."""
  check_variant(quantization)
  frames, size, channels = _clip_spec(model)
  with contextlib.ExitStack() as stack:
    os.makedirs(work_dir, exist_ok=True)
    staged = stack.enter_context(tempfile.TemporaryDirectory(
        prefix=fileio.TEMP_PREFIX, dir=work_dir))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda clips: {"probabilities": tf.cast(model(clips, training=False),
                                                tf.float32)},
        input_signature=[tf.TensorSpec([1, frames, *size, channels],
                                       tf.float32, name="clips")])
    archive.write_out(staged, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(staged)
    if quantization != "float":
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "fp16":
      converter.target_spec.supported_types = [tf.float16]
    return tflite_lib._run_converter(converter.convert, quantization)  # pylint: disable=protected-access


def _tflite_probabilities(path, clips):
  interpreter = litert.make_interpreter(model_path=path,
                                        num_threads=os.cpu_count())
  inp = interpreter.get_input_details()[0]["index"]
  out = interpreter.get_output_details()[0]["index"]
  rows = []
  for clip in clips:
    interpreter.set_tensor(inp, clip[np.newaxis].astype(np.float32))
    interpreter.invoke()
    rows.append(interpreter.get_tensor(out)[0].copy())
  return np.asarray(rows, np.float32)


def measure(task, model, class_names, split, formats):
  """Accuracy and agreement with Keras of each exported format on `split`."""
  import time  # pylint: disable=g-import-not-at-top
  labels = np.asarray(split.labels)
  keras_rows, outs = [], {name: [] for name, _ in formats}
  seconds = {name: 0.0 for name, _ in formats}
  loaded = {name: tf.saved_model.load(path) for name, path in formats
            if name == "saved_model"}
  for start in range(0, len(split), _CHUNK):
    clips = np.stack([task.cache.get(p) for p in
                      split.paths[start:start + _CHUNK]])
    if clips.shape[-1] == 1:
      rgb = np.repeat(clips, 3, axis=-1)
    else:
      rgb = clips
    keras_rows.append(np.asarray(model.predict(
        clips.astype(np.float32), verbose=0, batch_size=16), np.float32))
    for name, path in formats:
      begin = time.perf_counter()
      if name == "saved_model":
        got = loaded[name].signatures["serving_default"](
            clips=tf.constant(rgb))["probabilities"].numpy()
      else:
        got = _tflite_probabilities(path, clips)
      seconds[name] += time.perf_counter() - begin
      outs[name].append(got)
  reference = np.concatenate(keras_rows)
  n = len(labels)
  entries = []
  for name, path in formats:
    got = np.concatenate(outs[name])
    entries.append({
        "name": name, "path": path,
        "bytes": measure_lib.size_of(path),
        "accuracy": float(np.mean(got.argmax(1) == labels)),
        "top1_agreement": float(np.mean(got.argmax(1) ==
                                        reference.argmax(1))),
        "max_abs_prob_diff": float(np.abs(got - reference).max()),
        "latency_ms": None,
        "images_per_second": n / seconds[name] if seconds[name] else 0.0,
        "per_class_accuracy_change": {}})
  return {"reference": {"format": "keras", "input": "clips",
                        "accuracy": float(np.mean(reference.argmax(1) ==
                                                  labels)),
                        "num_examples": n},
          "formats": entries}
