"""Every private Keras internal imgrec touches, in this one module.

Each entry of `INTERNALS` names one, and `tests/test_keras_internals.py`
fails naming it when a Keras release removes or changes it; `setup.cfg`
caps Keras at the newest minor version the tests ran on.

1. Multi-worker training. Keras 3 (checked up to 3.15) cannot `fit` under
   `tf.distribute.MultiWorkerMirroredStrategy` across more than one worker
   (keras-team/keras#20585):
   a. `TensorFlowTrainer._maybe_symbolic_build` reduces the first input
      batch with `strategy.reduce("MEAN", batch, axis=None)`, which the
      collective implementation cannot do for PerReplica values.
   b. `reduce_per_replica` reduces scalar step metrics along axis 0:
      "Invalid reduction dimension 0 for input with 0 dimensions".
   c. Non-trainable variables without an aggregation (BatchNormalization's
      moving statistics) drift apart between workers.
   d. Keras' own `BackupAndRestore` and `ModelCheckpoint` have no
      multi-worker logic: every worker writes (and deletes) the same files.
   `patch_keras()` fixes these, and imgrec calls it only under a
   multi-worker strategy; each patched function behaves as Keras' own
   unless the strategy spans several workers. Drop it when #20585 is fixed:
   set `KERAS_FIXED_IN` and `patch_keras()` becomes a no-op there.
2. Resuming training (`imgrec.training.resume`) relies on how many dataset
   iterators `fit` makes per epoch, on the name of the random layers' seed
   variables, and on `SwapEMAWeights`' record of which weights the model
   holds.
"""

import functools
import logging
import os
import re

import keras
import tensorflow as tf

from imgrec.errors import ImgrecError
from imgrec.training import distribute

logger = logging.getLogger(__name__)

# The first Keras version in which keras-team/keras#20585 is fixed; None
# while it is open.
KERAS_FIXED_IN = None
# The newest Keras version the patch was checked against.
KERAS_CHECKED_UP_TO = (3, 15)

_ORIGINALS = {}


def _keras_version():
  return tuple(int(p) for p in re.match(r"(\d+)\.(\d+)",
                                        keras.__version__).groups())


def keras_needs_patch():
  """Whether this Keras needs `patch_keras()` for multi-worker `fit`."""
  version = _keras_version()
  if version[0] != 3 or keras.backend.backend() != "tensorflow":
    return False
  return KERAS_FIXED_IN is None or version < tuple(KERAS_FIXED_IN)


def _patch_targets():
  # pylint: disable=g-import-not-at-top
  from keras.src.backend.tensorflow import trainer as tf_trainer
  # pylint: enable=g-import-not-at-top
  return [
      (tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build",
       _maybe_symbolic_build),
      (tf_trainer.TensorFlowTrainer, "_make_function", _make_function),
      (tf_trainer, "reduce_per_replica", _reduce_per_replica),
      (keras.callbacks.ModelCheckpoint, "_save_model", _checkpoint_save_model),
      (keras.callbacks.BackupAndRestore, "on_train_begin",
       _backup_on_train_begin),
      (keras.callbacks.BackupAndRestore, "on_train_end", _backup_on_train_end),
  ]


def patch_keras():
  """Makes Keras `model.fit` work under a multi-worker strategy.

  Idempotent. A no-op where `keras_needs_patch()` is False. Otherwise it
  patches private Keras internals, each of which behaves as before unless
  the strategy is a MultiWorkerMirroredStrategy spanning several workers.
  Drop when keras-team/keras#20585 is fixed.

  Returns:
    Whether Keras is patched.

  Raises:
    ImgrecError: this Keras lacks an internal the patch replaces.
  """
  if _ORIGINALS:
    return True
  if not keras_needs_patch():
    return False
  targets = _patch_targets()
  missing = [f"{getattr(owner, '__name__', owner)}.{name}"
             for owner, name, _ in targets if not hasattr(owner, name)]
  if missing:
    raise ImgrecError(
        f"Keras {keras.__version__} changed the internals that "
        "imgrec.training.keras_internals patches; check whether "
        "keras-team/keras#20585 is fixed and set KERAS_FIXED_IN. "
        f"Received: missing={missing}")
  if _keras_version() > KERAS_CHECKED_UP_TO:
    logger.warning("imgrec's multi-worker patch was checked up to Keras "
                   "%d.%d; this is Keras %s.", *KERAS_CHECKED_UP_TO,
                   keras.__version__)
  for owner, name, replacement in targets:
    _ORIGINALS[name] = getattr(owner, name)
    setattr(owner, name, replacement)
  return True


def unpatch_keras():
  """Undoes `patch_keras()` (for tests)."""
  if not _ORIGINALS:
    return
  for owner, name, _ in _patch_targets():
    setattr(owner, name, _ORIGINALS[name])
  _ORIGINALS.clear()


# Fix 1: build the model from the first replica's batch. Only shapes and
# dtypes matter, so nothing needs reducing.
def _maybe_symbolic_build(self, iterator=None, data_batch=None):
  strategy = self._distribute_strategy  # pylint: disable=protected-access
  if (iterator is None or strategy is None or
      not distribute.is_multi_worker(strategy)):
    return _ORIGINALS["_maybe_symbolic_build"](
        self, iterator=iterator, data_batch=data_batch)
  for _, _, batches in iterator:
    data_batch = next(batches)
    break

  def first_replica(value):
    if isinstance(value, tf.distribute.DistributedValues):
      return strategy.experimental_local_results(value)[0]
    return value

  data_batch = keras.tree.map_structure(first_replica, data_batch)
  with strategy.scope():
    # pylint: disable-next=protected-access
    self._symbolic_build(data_batch=data_batch)


# Fix 2: average each step's logs over all replicas, element by element (as
# Keras does for MirroredStrategy). Epoch logs do not depend on this: Keras
# reads them from the metric variables, which sum over all workers.
def _reduce_per_replica(values, strategy, reduction):
  if reduction in ("auto", "mean") and distribute.is_multi_worker(strategy):
    return keras.tree.map_structure(
        lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None),
        values)
  return _ORIGINALS["reduce_per_replica"](values, strategy, reduction)


# Fix 3: after each train step, average the replica-local state (BatchNorm
# moving statistics) over all replicas, as tf.keras 2's ON_READ/MEAN
# variables did. One small all-reduce per step.
def _make_function(self, step_function):
  if (distribute.is_multi_worker(self.distribute_strategy) and
      step_function == self.train_step):
    step_function = _with_synced_local_state(self, step_function)
  return _ORIGINALS["_make_function"](self, step_function)


def _is_replica_local(variable):
  return (not variable.trainable and variable.aggregation == "none" and
          variable.synchronization != "on_read" and
          keras.backend.is_float_dtype(variable.dtype) and
          isinstance(variable.value, tf.distribute.DistributedValues))


def _with_synced_local_state(model, train_step):

  @functools.wraps(train_step)
  def step(data):
    logs = train_step(data)
    local = [v for v in model.non_trainable_variables if _is_replica_local(v)]
    if local:
      means = tf.distribute.get_replica_context().all_reduce(
          tf.distribute.ReduceOp.MEAN,
          [v.value.read_value() for v in local])
      for variable, mean in zip(local, means):
        variable.assign(mean)
    return logs

  return step


# Fix 4: non-chief workers save to their own temporary paths.
def _checkpoint_save_model(self, epoch, batch, logs):
  strategy = self.model.distribute_strategy
  if distribute.is_chief(strategy):
    return _ORIGINALS["_save_model"](self, epoch, batch, logs)
  chief_filepath = self.filepath
  self.filepath = distribute.worker_path(chief_filepath, strategy)
  try:
    # pylint: disable-next=protected-access
    written = self._get_file_path(epoch, batch, logs)
    _ORIGINALS["_save_model"](self, epoch, batch, logs)
  finally:
    self.filepath = chief_filepath
  distribute.remove_worker_path(written)


def _set_backup_dir(callback, backup_dir):
  fresh = keras.callbacks.BackupAndRestore(backup_dir)
  for name in ("backup_dir", "_weights_path", "_training_metadata_path",
               "_prev_weights_path", "_prev_training_metadata_path"):
    setattr(callback, name, getattr(fresh, name))


def _backup_on_train_begin(self, logs=None):
  """Restores like Keras; non-chief workers then back up to a temp dir.

  A non-chief worker restores from the chief's backup when it can see it
  (storage shared by all workers), else from its own last backup. All
  workers must resume at the same epoch: checked here, because otherwise
  the first collective op would hang.
  """
  strategy = self.model.distribute_strategy
  if not distribute.is_multi_worker(strategy):
    return _ORIGINALS["on_train_begin"](self, logs)
  chief_dir = getattr(self, "_imgrec_chief_dir", self.backup_dir)
  self._imgrec_chief_dir = chief_dir  # pylint: disable=protected-access
  own_dir = distribute.worker_path(chief_dir, strategy)
  _set_backup_dir(self, chief_dir)
  if not os.path.exists(self._weights_path):  # pylint: disable=protected-access
    _set_backup_dir(self, own_dir)
  _ORIGINALS["on_train_begin"](self, logs)
  _set_backup_dir(self, own_dir)
  distribute.check_same_on_workers(
      strategy, int(self.model._initial_epoch or 0),  # pylint: disable=protected-access
      f"the epoch to resume from (backups under {chief_dir})")


def _backup_on_train_end(self, logs=None):
  _ORIGINALS["on_train_end"](self, logs)
  if self.delete_checkpoint and not distribute.is_chief(
      self.model.distribute_strategy):
    distribute.remove_worker_path(self.backup_dir)


# --- 2. Resume -------------------------------------------------------------


def iterators_before_epoch(dataset, epoch):
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


SEED_STATE_NAME = "seed_generator_state"


def seed_state_variables(model):
  """The state variables of the model's random layers (dropout, noise).

  Keras keeps them out of the saved weights, so a resumed run would
  otherwise replay the dropout masks of its first epochs; they are found by
  the name Keras gives them.
  """
  return [v for v in model.variables if SEED_STATE_NAME in v.path]


_EMA_FLAG = "_ema_weights_in_model"


def ema_weights_in_model(callback):
  """Whether a SwapEMAWeights callback left the averaged weights in the model."""
  return getattr(callback, _EMA_FLAG)


def set_ema_weights_in_model(callback, value):
  setattr(callback, _EMA_FLAG, bool(value))


def _has(owner, name):
  return hasattr(owner, name)


def _internals():
  """(name, present) for every internal this module relies on."""
  # pylint: disable=g-import-not-at-top
  from keras.src.backend.tensorflow import trainer as tf_trainer
  from keras.src.trainers import epoch_iterator
  # pylint: enable=g-import-not-at-top
  out = [(f"{getattr(owner, '__name__', owner)}.{name}", _has(owner, name))
         for owner, name, _ in _patch_targets()]
  backup = keras.callbacks.BackupAndRestore("/nonexistent-imgrec-check")
  for name in ("backup_dir", "_weights_path", "_training_metadata_path",
               "_prev_weights_path", "_prev_training_metadata_path"):
    out.append((f"BackupAndRestore.{name}", _has(backup, name)))
  out.append(("ModelCheckpoint._get_file_path",
              _has(keras.callbacks.ModelCheckpoint, "_get_file_path")))
  out.append(("TensorFlowTrainer._symbolic_build",
              _has(tf_trainer.TensorFlowTrainer, "_symbolic_build")))
  out.append(("keras.src.trainers.epoch_iterator.EpochIterator",
              _has(epoch_iterator, "EpochIterator")))
  out.append((f"SwapEMAWeights.{_EMA_FLAG}",
              _has(keras.callbacks.SwapEMAWeights(), _EMA_FLAG)))
  dropout = keras.layers.Dropout(0.5, seed=1)
  out.append((f"Dropout seed variable named *{SEED_STATE_NAME}*",
              any(SEED_STATE_NAME in v.path for v in dropout.variables)))
  return out


def missing_internals():
  """Names of the internals this Keras lacks (empty when all are there)."""
  return [name for name, present in _internals() if not present]
