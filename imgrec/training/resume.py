"""Resuming training: a backup of all training state at each epoch end, restored by a rerun.

Kill a training run (SIGKILL, the OOM killer, a preempted machine) and run
the same command again: it goes on after the last completed epoch, with the
weights, the optimizer state (its `iterations` drive the learning-rate
schedule), the epoch counter, the random state of the model's dropout layers,
the input pipeline's shuffle and augmentation order and the best value that
`best.keras` was chosen by, so it ends where an uninterrupted run would: bit
for bit with `--deterministic` and the per-image augmentation ("none",
"light"). Keras augmentation layers and MixUp/CutMix inside the pipeline
keep their random state in the pipeline, which is not backed up: after a
resume they draw other (equally distributed) random numbers.

The backup is two files, `latest.weights.h5` and `training_metadata.json`,
written under temporary names and committed by renames in that order;
`recover_backup` finishes or discards a commit that a kill cut short.
Backups are taken at epoch ends only, so a kill loses at most the epoch in
progress.

The trainer reads the backup before `fit` (`restore_point`) and passes the
epoch to resume from as `fit(initial_epoch=...)`; `TrainingBackup` restores
the rest when training begins.
"""

import json
import logging
import os

import keras
import numpy as np

from imgrec import fileio
from imgrec.errors import ImgrecError
from imgrec.training import checkpoint
from imgrec.training import distribute
from imgrec.training import keras_internals

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "latest.weights.h5"
METADATA_NAME = "training_metadata.json"
# State of other callbacks that a backup carries over: the monitor state of
# BestModelCheckpoint and EarlyStopping (a resumed run compares with the best
# so far).
_CALLBACK_STATE = ("best", "wait", "best_epoch", "stopped_epoch")


def _pending(path):
  parent, name = os.path.split(path)
  return os.path.join(parent, ".pending-" + name)


def _remove(path):
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def recover_backup(backup_dir):
  """Finishes or drops a backup commit that a kill interrupted.

  A backup is written as `.pending-latest.weights.h5` and
  `.pending-training_metadata.json`, then the weights and then the metadata
  are renamed into place. A pending weights file means the kill came before
  the commit: the pending files are dropped and the previous backup stands.
  A pending metadata file alone means the new weights are in place already:
  the metadata rename is finished. Safe to call from several processes.

  Args:
    backup_dir: the BackupAndRestore folder.
  """
  weights = os.path.join(backup_dir, WEIGHTS_NAME)
  metadata = os.path.join(backup_dir, METADATA_NAME)
  if os.path.exists(_pending(weights)):
    _remove(_pending(weights))
    _remove(_pending(metadata))
  elif os.path.exists(_pending(metadata)):
    try:
      os.replace(_pending(metadata), metadata)
    except FileNotFoundError:
      pass  # Another worker finished it.


def read_backup_metadata(backup_dir):
  """Returns the metadata of the committed backup in `backup_dir`, or None.

  Raises:
    ImgrecError: the folder holds weights without metadata or the other way
      round, or unreadable metadata (not written by this module).
  """
  recover_backup(backup_dir)
  weights = os.path.join(backup_dir, WEIGHTS_NAME)
  path = os.path.join(backup_dir, METADATA_NAME)
  has_weights, has_metadata = os.path.exists(weights), os.path.exists(path)
  if not has_weights and not has_metadata:
    return None
  try:
    if has_weights != has_metadata:
      raise ValueError(f"{WEIGHTS_NAME} exists: {has_weights}, "
                       f"{METADATA_NAME} exists: {has_metadata}")
    with open(path, encoding="utf-8") as f:
      metadata = json.load(f)
    int(metadata["epoch"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ImgrecError(
        f"The training backup in {backup_dir} is incomplete or damaged; "
        "delete that folder to train from the start. "
        f"Received: {type(e).__name__}: {e}") from e
  return metadata


def skip_epochs(dataset, num_epochs):
  """Advances a dataset's per-iteration random seeds past `num_epochs` epochs.

  `Dataset.shuffle(seed=..., reshuffle_each_iteration=True)` and
  `Dataset.random(seed=..., rerandomize_each_iteration=True)` draw new seeds
  each time an iterator is made. A resumed run starts from a fresh dataset,
  so without this its epoch k would get the order and augmentation of epoch
  0. This makes (and drops) as many iterators as `fit` made before epoch
  `num_epochs` (`keras_internals.iterators_before_epoch`); making one reads nothing
  (tf.data draws the seeds when an iterator is made, and prefetching starts
  at the first element).

  Args:
    dataset: a tf.data.Dataset or distributed dataset.
    num_epochs: epochs already trained.
  """
  for _ in range(keras_internals.iterators_before_epoch(dataset, num_epochs)):
    iterator = iter(dataset)
    del iterator


def restore_point(backup_dir, strategy=None):
  """Where this process resumes from: (folder, metadata), or (None, None).

  The chief (and every single-worker run) reads `backup_dir`. Another worker
  reads the chief's backup when it can see it (storage shared by all
  workers), else its own in `distribute.worker_path(backup_dir)`.
  """
  candidates = [backup_dir]
  own = distribute.worker_path(backup_dir, strategy)
  if own != backup_dir:
    candidates.append(own)
  for directory in candidates:
    metadata = read_backup_metadata(directory)
    if metadata is not None:
      return directory, metadata
  return None, None


def resume_epoch(metadata, epochs):
  """The epoch `fit` starts from, given a backup's metadata (or None)."""
  if metadata is None:
    return 0
  if metadata.get("stopped_early"):
    return max(int(metadata["epoch"]), epochs)  # Only evaluate and export.
  return int(metadata["epoch"])


def _plain(value):
  if value is None or isinstance(value, (bool, int, str)):
    return value
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


class TrainingBackup(keras.callbacks.Callback):
  """Backs up all training state at each epoch end and restores it at the start.

  Besides the weights and the optimizer (which `save_weights` holds), the
  backup carries what Keras' BackupAndRestore leaves out:

  - the state of the model's random layers, so dropout masks continue;
  - the `best`/`wait` of `state_callbacks` (BestModelCheckpoint,
    EarlyStopping), so `best.keras` is not overwritten by a worse epoch after
    a resume, and whether SwapEMAWeights left the averaged weights in the
    model;
  - that early stopping ended the run, so a rerun does not train on;
  - the position of `dataset`'s shuffle and augmentation seeds
    (`skip_epochs`).

  Put it after the callbacks that write per-epoch outputs (CSVLogger,
  BestModelCheckpoint): an epoch counts as done once its backup is
  committed, and by then its history row and best model are on disk. The
  backup stays after training, so a rerun of a finished run (killed during
  evaluation or export, say) evaluates and exports again instead of
  training from scratch.

  Under a multi-worker strategy every worker backs up (saving may run
  collective ops): the chief to `backup_dir`, the others to their own
  `distribute.worker_path`.

  Args:
    backup_dir: folder of the backup; nothing else may write there.
    restore_dir: the backup to restore from (see `restore_point`), or None
      to start afresh.
    dataset: the training dataset, advanced to the restored epoch.
    state_callbacks: callbacks whose monitor state the backup carries.
  """

  def __init__(self, backup_dir, *, restore_dir=None, dataset=None,
               state_callbacks=()):
    super().__init__()
    self.backup_dir = backup_dir
    self.restore_dir = restore_dir
    self._dataset = dataset
    self._state_callbacks = list(state_callbacks)
    self._metadata = None
    self.restored_epoch = 0

  def on_train_begin(self, logs=None):
    self.restored_epoch = 0
    if self.restore_dir is None:
      return
    metadata = read_backup_metadata(self.restore_dir)
    if metadata is None:
      return
    optimizer = self.model.optimizer
    if optimizer is not None and not optimizer.built:
      # The optimizer's variables must exist to receive the backup's.
      optimizer.build(self.model.trainable_variables)
    try:
      self.model.load_weights(os.path.join(self.restore_dir, WEIGHTS_NAME))
    except (OSError, ValueError, KeyError) as e:
      raise ImgrecError(
          f"Cannot restore the training backup in {self.restore_dir}: it was "
          "written by a different model or is damaged. Delete that folder to "
          "train from the start, or train into another model_dir. "
          f"Received: {type(e).__name__}: {e}") from e
    variables = keras_internals.seed_state_variables(self.model)
    states = metadata.get("seed_states")
    if states is not None and len(states) == len(variables):
      for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))
    elif variables:
      logger.warning("The backup has no state for the model's %d random "
                     "layers; their random numbers restart.", len(variables))
    saved = metadata.get("callbacks") or []
    for callback, entry in zip(self._state_callbacks, saved):
      if entry.get("class") != type(callback).__name__:
        continue
      for name, value in entry["state"].items():
        if name == "ema_weights_in_model":
          keras_internals.set_ema_weights_in_model(callback, value)
        else:
          setattr(callback, name, value)
    self.restored_epoch = int(metadata["epoch"])
    if self._dataset is not None:
      skip_epochs(self._dataset, self.restored_epoch)
    epochs = (self.params or {}).get("epochs")
    logger.info("resuming after epoch %d of %s from %s", self.restored_epoch,
                epochs, self.restore_dir)

  def _callback_state(self, callback):
    state = {name: _plain(getattr(callback, name))
             for name in _CALLBACK_STATE if hasattr(callback, name)}
    if isinstance(callback, keras.callbacks.SwapEMAWeights):
      state["ema_weights_in_model"] = keras_internals.ema_weights_in_model(
          callback)
    return state

  def on_epoch_end(self, epoch, logs=None):
    directory = distribute.worker_path(self.backup_dir,
                                       self.model.distribute_strategy)
    os.makedirs(directory, exist_ok=True)
    weights = os.path.join(directory, WEIGHTS_NAME)
    metadata = os.path.join(directory, METADATA_NAME)
    pending_weights, pending_metadata = _pending(weights), _pending(metadata)
    _remove(pending_metadata)
    then = (f"run the same command again: training resumes after epoch "
            f"{epoch}" if epoch else "run the same command again")
    fileio.check_free_space(directory, checkpoint.state_bytes(self.model),
                            "the training backup", then)
    try:
      self.model.save_weights(pending_weights, overwrite=True)
    except OSError as e:
      _remove(pending_weights)
      raise ImgrecError(f"Writing the training backup {pending_weights} "
                        f"failed: {e.strerror or e}. Free space or fix the "
                        f"folder, then {then}.") from e
    fileio.fsync_path(pending_weights)
    self._metadata = {
        "epoch": epoch + 1,
        "seed_states": [
            np.asarray(v.numpy()).tolist()
            for v in keras_internals.seed_state_variables(self.model)],
        "callbacks": [{"class": type(cb).__name__,
                       "state": self._callback_state(cb)}
                      for cb in self._state_callbacks],
    }
    with open(pending_metadata, "w", encoding="utf-8") as f:
      json.dump(self._metadata, f)
    fileio.fsync_path(pending_metadata)
    # The commit: once the weights are renamed, `recover_backup` completes
    # the metadata rename if a kill comes in between.
    os.replace(pending_weights, weights)
    os.replace(pending_metadata, metadata)
    fileio.fsync_path(directory)
    self._metadata_path = metadata

  def on_train_end(self, logs=None):
    if self.model.stop_training and self._metadata is not None:
      self._metadata["stopped_early"] = True
      fileio.write_text(self._metadata_path, json.dumps(self._metadata))
