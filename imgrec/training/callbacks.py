"""Callbacks that let a run be killed at any moment and resumed by a rerun.

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

Nothing is ever left half written: every file goes to a temporary name in the
same folder and is renamed into place. The backup is two files,
`latest.weights.h5` and `training_metadata.json`, committed in that order;
`recover_backup` finishes or discards a commit that a kill cut short.

SIGTERM and SIGINT stop training at the end of the current batch
(`GracefulInterrupt`); the partly done epoch is dropped and a rerun resumes
after the last completed one.

Backups are taken at epoch ends only, so a kill loses at most the epoch in
progress: Keras 3's BackupAndRestore restores the epoch but not the batch,
so a mid-epoch backup would train the first batches of that epoch twice and
misplace the schedule.
"""

import csv
import io
import json
import os
import signal
import threading

from absl import logging
import keras
import numpy as np

from imgrec import fileio
from imgrec.errors import ImgrecError

WEIGHTS_NAME = "latest.weights.h5"  # Keras BackupAndRestore's own names.
METADATA_NAME = "training_metadata.json"
# State of other callbacks that a backup carries over: the monitor state of
# ModelCheckpoint and EarlyStopping (a resumed run compares with the best so
# far) and whether SwapEMAWeights left the averaged weights in the model.
_CALLBACK_STATE = ("best", "wait", "best_epoch", "stopped_epoch",
                   "_ema_weights_in_model")


def _fsync(path):
  """Flushes a file or folder to disk; a no-op where the OS refuses."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def commit_file(tmp, path):
  """Renames the complete file `tmp` to `path` in one step."""
  _fsync(tmp)
  os.replace(tmp, path)
  _fsync(os.path.dirname(os.path.abspath(path)))


def temp_path(path):
  """`dir/.tmp-name` beside `path`: same folder, same suffix (Keras checks)."""
  parent, name = os.path.split(os.fspath(path))
  return os.path.join(parent, ".tmp-" + name)


def save_model_atomic(model, path):
  """`model.save(path)`, never leaving a half-written file at `path`."""
  tmp = temp_path(path)
  try:
    model.save(tmp)
    commit_file(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


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


def completed_epochs(backup_dir):
  """How many epochs the committed backup in `backup_dir` holds (0 if none)."""
  metadata = read_backup_metadata(backup_dir)
  return int(metadata["epoch"]) if metadata else 0


def truncate_history(path, num_epochs):
  """Keeps the CSVLogger rows of epochs 0..num_epochs-1 only, once each.

  A run killed after logging an epoch but before its backup was committed
  reruns that epoch; without this its row would appear twice. A row the
  kill cut in half is dropped too.

  Args:
    path: the CSVLogger file; nothing happens if it does not exist.
    num_epochs: the epochs the backup holds.

  Returns:
    The number of rows kept.
  """
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8", newline="") as f:
    lines = f.read().splitlines(keepends=True)
  if not lines or not lines[0].endswith("\n"):
    _remove(path)
    return 0
  header = next(csv.reader(io.StringIO(lines[0])))
  kept, seen = [lines[0]], set()
  for line in lines[1:]:
    if not line.endswith("\n"):
      continue  # Cut short by a kill.
    row = next(csv.reader(io.StringIO(line)), [])
    if len(row) != len(header) or not row[0].isdigit():
      continue
    epoch = int(row[0])
    if epoch < num_epochs and epoch not in seen:
      seen.add(epoch)
      kept.append(line)
  if len(kept) != len(lines):
    fileio.write_text(path, "".join(kept))
  if len(seen) < num_epochs:
    logging.warning("%s has rows for %d of the %d epochs done", path,
                    len(seen), num_epochs)
  return len(seen)


def keras_iterators_before_epoch(dataset, epoch):
  """How many iterators Keras `fit` makes of `dataset` before epoch `epoch`.

  Keras 3's EpochIterator (checked on 3.15) makes a fresh iterator when an
  epoch starts and another when it ends, if the number of batches is known;
  if not, the first epoch uses one iterator and the count is known after it.
  Not counted: the one `fit` may take for a symbolic build, which a resumed
  run takes too. `fit(steps_per_epoch=...)` on a repeated dataset is not
  covered.
  """
  if epoch <= 0:
    return 0
  cardinality = getattr(dataset, "cardinality", -2)
  if callable(cardinality):  # An attribute on distributed datasets.
    cardinality = cardinality()
  if int(cardinality) == -2:  # tf.data.UNKNOWN_CARDINALITY
    return 2 * epoch - 1
  return 2 * epoch


def skip_epochs(dataset, num_epochs):
  """Advances a dataset's per-iteration random seeds past `num_epochs` epochs.

  `Dataset.shuffle(seed=..., reshuffle_each_iteration=True)` and
  `Dataset.random(seed=..., rerandomize_each_iteration=True)` draw new seeds
  each time an iterator is made. A resumed run starts from a fresh dataset,
  so without this its epoch k would get the order and augmentation of epoch
  0. This makes (and drops) as many iterators as `fit` made before epoch
  `num_epochs` (`keras_iterators_before_epoch`); making one reads nothing
  (tf.data draws the seeds when an iterator is made, and prefetching starts
  at the first element).

  Args:
    dataset: a tf.data.Dataset or distributed dataset.
    num_epochs: epochs already trained.
  """
  for _ in range(keras_iterators_before_epoch(dataset, num_epochs)):
    iterator = iter(dataset)
    del iterator


def _seed_states(model):
  """The state variables of the model's random layers (dropout, noise).

  They are not part of the weights Keras saves, so a resumed run would
  otherwise replay the dropout masks of its first epochs.
  """
  return [v for v in model.variables if "seed_generator_state" in v.path]


def _plain(value):
  if value is None or isinstance(value, (bool, int, str)):
    return value
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
  """BackupAndRestore with atomic commits that restores all training state.

  Keras's own callback writes `latest.weights.h5` in place and then
  `training_metadata.json`: a kill during the first write leaves a file that
  fails the rerun, one between the two leaves new weights with the old
  epoch. This one commits both through temporary names (`recover_backup`)
  and also carries what Keras leaves out:

  - the state of the model's random layers, so dropout masks continue;
  - the `best`/`wait` of `state_callbacks` (ModelCheckpoint, EarlyStopping),
    so `best.keras` is not overwritten by a worse epoch after a resume, and
    whether SwapEMAWeights left the averaged weights in the model;
  - that EarlyStopping ended the run, so a rerun does not train on;
  - the position of `dataset`'s shuffle and augmentation seeds
    (`skip_epochs`).

  Put it after the callbacks that write per-epoch outputs (CSVLogger,
  ModelCheckpoint): an epoch counts as done once its backup is committed,
  and by then its history row and best model are on disk.

  The backup stays after training by default, so a rerun of a finished run
  (killed during evaluation or export, say) evaluates and exports again
  instead of training from scratch. Delete the folder to start over.

  Args:
    backup_dir: folder of the backup; nothing else may write there.
    dataset: the training dataset, advanced to the restored epoch.
    state_callbacks: callbacks whose monitor state the backup carries.
    delete_checkpoint: delete the backup when training ends.
  """

  def __init__(self, backup_dir, *, dataset=None, state_callbacks=(),
               delete_checkpoint=False):
    super().__init__(backup_dir, save_freq="epoch",
                     delete_checkpoint=delete_checkpoint)
    self._dataset = dataset
    self._state_callbacks = list(state_callbacks)
    self._metadata = None
    self.restored_epoch = 0

  def _load_model(self):
    # `self.backup_dir` may differ from the constructor's argument: the
    # multi-worker patch points non-chief workers at their own folders.
    self.restored_epoch = 0
    metadata = read_backup_metadata(self.backup_dir)
    if metadata is None:
      return
    try:
      super()._load_model()
    except (OSError, ValueError, KeyError) as e:
      raise ImgrecError(
          f"Cannot restore the training backup in {self.backup_dir}: it was "
          "written by a different model or is damaged. Delete that folder to "
          "train from the start, or train into another model_dir. "
          f"Received: {type(e).__name__}: {e}") from e
    variables = _seed_states(self.model)
    states = metadata.get("seed_states")
    if states is not None and len(states) == len(variables):
      for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))
    elif variables:
      logging.warning("The backup has no state for the model's %d random "
                      "layers; their random numbers restart.", len(variables))
    saved = metadata.get("callbacks") or []
    for callback, entry in zip(self._state_callbacks, saved):
      if entry.get("class") == type(callback).__name__:
        for name, value in entry["state"].items():
          setattr(callback, name, value)
    self.restored_epoch = int(metadata["epoch"])
    epochs = (self.params or {}).get("epochs")
    if metadata.get("stopped_early") and epochs:
      # Early stopping ended this run: a rerun only evaluates and exports.
      self.model._initial_epoch = max(  # pylint: disable=protected-access
          self.restored_epoch, epochs)
    if self._dataset is not None:
      skip_epochs(self._dataset, self.restored_epoch)
    logging.info("resuming after epoch %d of %s from %s", self.restored_epoch,
                 epochs, self.backup_dir)
    if epochs and self.restored_epoch >= epochs:
      logging.info("training finished earlier; delete %s to train again",
                   self.backup_dir)

  def _save_model(self):
    os.makedirs(self.backup_dir, exist_ok=True)
    weights, metadata = self._weights_path, self._training_metadata_path
    pending_weights, pending_metadata = _pending(weights), _pending(metadata)
    _remove(pending_metadata)
    self.model.save_weights(pending_weights, overwrite=True)
    _fsync(pending_weights)
    self._metadata = {
        "epoch": self._current_epoch,
        "batch": self._last_batch_seen,
        "seed_states": [np.asarray(v.numpy()).tolist()
                        for v in _seed_states(self.model)],
        "callbacks": [{"class": type(cb).__name__,
                       "state": {name: _plain(getattr(cb, name))
                                 for name in _CALLBACK_STATE
                                 if hasattr(cb, name)}}
                      for cb in self._state_callbacks],
    }
    with open(pending_metadata, "w", encoding="utf-8") as f:
      json.dump(self._metadata, f)
    _fsync(pending_metadata)
    # The commit: once the weights are renamed, `recover_backup` completes
    # the metadata rename if a kill comes in between.
    os.replace(pending_weights, weights)
    os.replace(pending_metadata, metadata)
    _fsync(self.backup_dir)

  def on_train_end(self, logs=None):
    if (self.model.stop_training and not self.delete_checkpoint and
        self._metadata is not None):
      self._metadata["stopped_early"] = True
      fileio.write_text(self._training_metadata_path,
                        json.dumps(self._metadata))
    super().on_train_end(logs)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
  """ModelCheckpoint that writes a temporary file and renames it into place.

  Keras writes the `.keras` zip in place, so a kill during the write leaves
  an unreadable best model. Same arguments as ModelCheckpoint.
  """

  def _save_model(self, epoch, batch, logs):
    from imgrec.training import multi_worker  # pylint: disable=g-import-not-at-top
    if not multi_worker.is_chief(self.model.distribute_strategy):
      # Other workers save to their own temporary folders (multi_worker's
      # patch): a temporary name beside the chief's would race with it.
      return super()._save_model(epoch, batch, logs)
    path = self._get_file_path(epoch, batch, logs)
    tmp = temp_path(path)
    template = self.filepath
    # Through the (possibly patched) parent, which formats `filepath`.
    self.filepath = tmp.replace("{", "{{").replace("}", "}}")
    try:
      super()._save_model(epoch, batch, logs)
      if os.path.exists(tmp):  # Absent when not the best, or not the chief.
        commit_file(tmp, path)
    finally:
      self.filepath = template
      if os.path.exists(tmp):
        os.remove(tmp)


class TrainingInterrupted(Exception):
  """Training stopped on SIGTERM or SIGINT; a rerun resumes it.

  Attributes:
    signum: the signal number.
    signal_name: e.g. "SIGTERM".
    exit_code: 128 + signum, as shells report a death by that signal.
    epochs_done: epochs completed and backed up.
  """

  def __init__(self, signum, epochs_done, epochs):
    self.signum = signum
    self.signal_name = signal.Signals(signum).name
    self.exit_code = 128 + signum
    self.epochs_done = epochs_done
    super().__init__(
        f"interrupted by {self.signal_name} after {epochs_done} of {epochs} "
        "epochs; rerun the same command to resume")


class GracefulInterrupt(keras.callbacks.Callback):
  """Turns SIGTERM/SIGINT during `fit` into `TrainingInterrupted`.

  The handler only records the signal. At the end of the current batch (or
  before the next epoch starts) the callback raises TrainingInterrupted, so
  no callback sees the partial epoch: nothing of it is logged, saved as best
  or backed up, and a rerun resumes after the last completed epoch. A signal
  that comes after the last epoch raises at the end of training, skipping
  evaluation and export; a rerun does them. A second signal gets the
  handler that was there before (a second Ctrl-C stops at once).

  Place it last in the callback list, so the others finish `on_train_end`.
  Handlers are installed only from the main thread.

  Args:
    signals: the signals to handle.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    super().__init__()
    self._signals = tuple(signals)
    self._previous = {}
    self._epoch = 0
    self._epochs_done = None
    self.received = None

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    self._restore_handlers()

  def _restore_handlers(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _check(self, epochs_done):
    if self.received is not None:
      self._restore_handlers()
      raise TrainingInterrupted(self.received, epochs_done,
                                self.params.get("epochs"))

  def on_train_begin(self, logs=None):
    self.received = None
    self._epochs_done = None
    if threading.current_thread() is not threading.main_thread():
      logging.warning("not in the main thread: SIGTERM/SIGINT stop training "
                      "without a clean exit")
      return
    for signum in self._signals:
      self._previous[signum] = signal.signal(signum, self._handle)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._check(epoch)

  def on_epoch_end(self, epoch, logs=None):
    self._epochs_done = epoch + 1

  def on_train_batch_end(self, batch, logs=None):
    self._check(self._epoch)

  def on_test_batch_end(self, batch, logs=None):
    self._check(self._epoch)

  def on_train_end(self, logs=None):
    self._restore_handlers()
    # None: fit had no epoch left to run.
    self._check(self.params.get("epochs") if self._epochs_done is None
                else self._epochs_done)
