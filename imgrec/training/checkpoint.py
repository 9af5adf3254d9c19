"""Keeps the best model of a run by a monitored metric, written atomically."""

import os

import keras
import numpy as np

from imgrec import fileio
from imgrec.errors import ImgrecError
from imgrec.training import distribute


def state_bytes(model):
  """About how many bytes a file of the model's and optimizer's state takes."""
  variables = list(model.variables)
  if model.optimizer is not None:
    variables += list(model.optimizer.variables)
  size = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
             for v in variables)
  return int(size * 1.1) + (1 << 20)  # Container overhead.


def save_model(model, path):
  """`model.save(path)`, never leaving a half-written file at `path`."""
  with fileio.atomic_path(path) as tmp:
    model.save(tmp)


class BestModelCheckpoint(keras.callbacks.Callback):
  """Saves the model whenever the monitored metric reaches a new best.

  The file is written under a temporary name and renamed into place, so a
  kill mid-write leaves the previous best intact. Under a multi-worker
  strategy every worker saves (saving may run collective ops); the others
  save to their own temporary paths, which are deleted at once.

  Args:
    path: the `.keras` file.
    monitor: the metric in the epoch logs, e.g. "val_accuracy".
    mode: "max" or "min".
    initial_value_threshold: only a value better than this saves (an earlier
      stage's best, say).
    part: `fn(model) -> model`, the part of the trained model that is
      saved (a task's `saved_model`: an embedder inside its training
      model, say); by default the model itself.

  Attributes:
    best: the best value so far (carried by the training backup).
  """

  def __init__(self, path, *, monitor="val_accuracy", mode="max",
               initial_value_threshold=None, part=None):
    super().__init__()
    self.part = part or (lambda model: model)
    if mode not in ("max", "min"):
      raise ValueError(f"mode must be 'max' or 'min'. Received: mode={mode!r}")
    self.path = path
    self.monitor = monitor
    self.mode = mode
    if initial_value_threshold is not None:
      self.best = float(initial_value_threshold)
    else:
      self.best = -np.inf if mode == "max" else np.inf

  def _better(self, value):
    return value > self.best if self.mode == "max" else value < self.best

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None or not np.isfinite(value) or not self._better(value):
      return
    self.best = float(value)
    strategy = self.model.distribute_strategy
    path = distribute.worker_path(self.path, strategy)
    directory = os.path.dirname(os.path.abspath(path))
    # The old best stays until the new one is complete: room for both.
    fileio.check_free_space(directory, state_bytes(self.model),
                            f"the best model {self.path}")
    try:
      save_model(self.part(self.model), path)
    except OSError as e:
      raise ImgrecError(f"Writing the best model {self.path} failed: "
                        f"{e.strerror or e}. Free space or fix the folder, "
                        "then run the same command again.") from e
    if path != self.path:
      distribute.remove_worker_path(path)
