"""The one SavedModel writer: a Keras model and the signatures its task gives.

    endpoints = task.serving_endpoints(model, class_names, top_k=5,
                                       max_image_pixels=limit)
    write_saved_model(model, path, endpoints, input_spec=spec.to_json(),
                      class_names=class_names)

A task's signatures take what a client has (uint8 images or clips of any
size, encoded bytes) and do the rest in the graph; see each task's
`serving_endpoints`. Beside the graph, the folder holds `imgrec_input.json`
(what the model takes: its task, input size, channels, frames) and, for a
classifier, `labels.txt`.
"""

import os

import keras

from imgrec import fileio
from imgrec.run_folder import INPUT_SPEC_NAME
from imgrec.run_folder import LABELS_NAME
from imgrec.run_folder import write_labels_file


def archive(model, endpoints):
  """A keras.export.ExportArchive of `model` serving `endpoints`.

  Args:
    model: the Keras model the endpoints call (tracked: its variables are
      saved).
    endpoints: [(name, function, input_signature)].
  """
  made = keras.export.ExportArchive()
  made.track(model)
  for name, fn, signature in endpoints:
    made.add_endpoint(name, fn, input_signature=signature)
  return made


def write_saved_model(model, path, endpoints, *, input_spec,
                      class_names=None, json_files=None):
  """Writes `model` as a SavedModel serving `endpoints`.

  The folder is written under a temporary name and renamed into place, so a
  crash never leaves a half-written export at `path`.

  Args:
    model: the Keras model the endpoints call.
    path: output folder.
    endpoints: [(name, function, input_signature)], e.g. a task's
      `serving_endpoints`.
    input_spec: written as `imgrec_input.json`: what a client needs to make
      the input (e.g. `ModelInput.to_json()`).
    class_names: written as `labels.txt` (None: the model does not
      classify).
    json_files: {file name: JSON value} written beside (a multi-label
      model's thresholds).

  Returns:
    `path`.
  """
  made = archive(model, endpoints)
  with fileio.atomic_dir(path) as tmp:
    made.write_out(tmp, verbose=False)
    if class_names is not None:
      write_labels_file(os.path.join(tmp, LABELS_NAME), class_names)
    fileio.write_json(os.path.join(tmp, INPUT_SPEC_NAME), input_spec)
    for name, value in (json_files or {}).items():
      fileio.write_json(os.path.join(tmp, name), value, indent=2)
  return path
