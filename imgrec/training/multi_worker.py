"""Multi-worker data-parallel training: Keras 3 `model.fit` under MWMS.

Keras 3 (checked up to 3.15) cannot `fit` under
`tf.distribute.MultiWorkerMirroredStrategy` across more than one worker
(keras-team/keras#20585):

1. `TensorFlowTrainer._maybe_symbolic_build` reduces the first input batch
   with `strategy.reduce("MEAN", batch, axis=None)`; the collective
   implementation cannot reduce a structure of PerReplica values and fails
   with "Attempt to convert a value (PerReplica:{...}) with an unsupported
   type ... to a Tensor".
2. `reduce_per_replica` reduces the metrics of each step with
   `strategy.reduce("MEAN", v, axis=0)`: scalar metrics fail with "Invalid
   reduction dimension 0 for input with 0 dimensions".
3. Non-trainable variables without an aggregation (BatchNormalization's
   moving mean and variance) are updated by each replica on its own data and
   drift apart between workers, so each worker ends with a different model.
4. `BackupAndRestore` and `ModelCheckpoint` have no multi-worker logic: every
   worker writes (and deletes) the same files.

`patch_keras()` fixes these four things, and only while the model's strategy
is a MultiWorkerMirroredStrategy that spans several workers; everywhere else
Keras runs unchanged. After it, plain `model.fit` works:

  strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first TF call
  multi_worker.patch_keras()
  with strategy.scope():
    model = ...; model.compile(...)
  model.fit(multi_worker.distribute_dataset(dataset_fn, strategy), ...)

or, in one call, `multi_worker.fit(model, dataset_fn, epochs=...)`.

Drop the patch when keras-team/keras#20585 is fixed: set `KERAS_FIXED_IN` to
the first fixed Keras version and `patch_keras()` becomes a no-op there.
"""

import functools
import os
import re
import shutil

from absl import logging
import keras
import tensorflow as tf

from imgrec.errors import ImgrecError

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


def is_multi_worker(strategy=None):
  """Whether `strategy` (default: the current one) spans several workers."""
  strategy = strategy or tf.distribute.get_strategy()
  # pylint: disable-next=protected-access
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and
          strategy.extended._in_multi_worker_mode())


def is_chief(strategy=None):
  """Whether this process writes the run's outputs.

  True in every single-worker run; under a multi-worker strategy, only on
  the chief (task "chief", or "worker" 0 when the cluster has no chief).
  """
  strategy = strategy or tf.distribute.get_strategy()
  return not is_multi_worker(strategy) or strategy.extended.should_checkpoint


def worker_path(path, strategy=None):
  """Where this worker writes a file or folder that belongs at `path`.

  The chief (and every single-worker run) writes to `path` itself; other
  workers write to `<dirname>/workertemp_<task_id>/<basename>`, a place no
  other worker touches. Every worker still has to save: saving reads
  variables, which may take part in collective ops.

  Args:
    path: the path the chief writes.
    strategy: default: the current strategy.

  Returns:
    The path this worker writes to.
  """
  strategy = strategy or tf.distribute.get_strategy()
  if is_chief(strategy):
    return path
  path = os.fspath(path)
  parent, name = os.path.split(path.rstrip("/"))
  return os.path.join(parent,
                      f"workertemp_{strategy.cluster_resolver.task_id}", name)


def _remove_worker_path(path):
  """Removes what a non-chief worker wrote at `path`, and its empty folder."""
  if os.path.isdir(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.exists(path):
    os.remove(path)
  try:
    os.rmdir(os.path.dirname(path))
  except OSError:
    pass  # Not empty: another callback of this worker still uses it.


def distribute_dataset(dataset_fn, strategy=None):
  """Builds the input of `fit`: one input pipeline per worker.

  Args:
    dataset_fn: `fn(input_context) -> tf.data.Dataset`. It reads only its
      shard (`input_context.input_pipeline_id` of
      `input_context.num_input_pipelines`) and batches it at
      `input_context.get_per_replica_batch_size(global_batch_size)`. Every
      worker must give the same number of batches per epoch, or the
      collective ops fail or hang at the end of the first epoch (use shards
      of equal size and `drop_remainder=True`).
    strategy: default: the current strategy.

  Returns:
    `strategy.distribute_datasets_from_function(dataset_fn)`, or, under a
    strategy with one replica and one worker, the dataset of `dataset_fn`
    itself (so a single-process run is unchanged).
  """
  strategy = strategy or tf.distribute.get_strategy()
  if strategy.num_replicas_in_sync == 1 and not is_multi_worker(strategy):
    return dataset_fn(tf.distribute.InputContext())
  return strategy.distribute_datasets_from_function(dataset_fn)


def fit(model, data, *, epochs=1, callbacks=None, validation_data=None,
        **fit_kwargs):
  """`model.fit` that also works across several workers.

  Args:
    model: a compiled Keras model, built under the strategy's scope.
    data: a `tf.data.Dataset` of global batches (Keras splits each batch
      between workers, after every worker reads the whole dataset), a
      distributed dataset, or a `dataset_fn` as `distribute_dataset` takes
      (each worker reads only its shard: the way to go for real data).
    epochs: number of epochs.
    callbacks: Keras callbacks.
    validation_data: like `data`, or None.
    **fit_kwargs: passed to `model.fit`.

  Returns:
    The `History` of `model.fit`.
  """
  patch_keras()
  strategy = model.distribute_strategy
  if callable(data):
    data = distribute_dataset(data, strategy)
  if callable(validation_data):
    validation_data = distribute_dataset(validation_data, strategy)
  return model.fit(data, epochs=epochs, callbacks=callbacks,
                   validation_data=validation_data, **fit_kwargs)


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
  # pylint: disable=g-import-not-at-top
  from keras.src.backend.tensorflow import trainer as tf_trainer
  # pylint: enable=g-import-not-at-top
  targets = [
      (tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build",
       _maybe_symbolic_build),
      (tf_trainer.TensorFlowTrainer, "_make_function", _make_function),
      (tf_trainer, "reduce_per_replica", _reduce_per_replica),
      (keras.callbacks.ModelCheckpoint, "_save_model", _checkpoint_save_model),
      (keras.callbacks.BackupAndRestore, "on_train_begin",
       _backup_on_train_begin),
      (keras.callbacks.BackupAndRestore, "on_train_end", _backup_on_train_end),
  ]
  missing = [f"{getattr(owner, '__name__', owner)}.{name}"
             for owner, name, _ in targets if not hasattr(owner, name)]
  if missing:
    raise ImgrecError(
        f"Keras {keras.__version__} changed the internals that "
        "imgrec.training.multi_worker patches; check whether "
        "keras-team/keras#20585 is fixed and set KERAS_FIXED_IN. "
        f"Received: missing={missing}")
  if _keras_version() > KERAS_CHECKED_UP_TO:
    logging.warning("imgrec's multi-worker patch was checked up to Keras "
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
  # pylint: disable=g-import-not-at-top
  from keras.src.backend.tensorflow import trainer as tf_trainer
  # pylint: enable=g-import-not-at-top
  owners = {
      "_maybe_symbolic_build": tf_trainer.TensorFlowTrainer,
      "_make_function": tf_trainer.TensorFlowTrainer,
      "reduce_per_replica": tf_trainer,
      "_save_model": keras.callbacks.ModelCheckpoint,
      "on_train_begin": keras.callbacks.BackupAndRestore,
      "on_train_end": keras.callbacks.BackupAndRestore,
  }
  for name, original in _ORIGINALS.items():
    setattr(owners[name], name, original)
  _ORIGINALS.clear()


# Fix 1: build the model from the first replica's batch. Only shapes and
# dtypes matter, so nothing needs reducing.
def _maybe_symbolic_build(self, iterator=None, data_batch=None):
  strategy = self._distribute_strategy  # pylint: disable=protected-access
  if iterator is None or strategy is None or not is_multi_worker(strategy):
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
  if reduction in ("auto", "mean") and is_multi_worker(strategy):
    return keras.tree.map_structure(
        lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None),
        values)
  return _ORIGINALS["reduce_per_replica"](values, strategy, reduction)


# Fix 3: after each train step, average the replica-local state (BatchNorm
# moving statistics) over all replicas, as tf.keras 2's ON_READ/MEAN
# variables did. One small all-reduce per step.
def _make_function(self, step_function):
  if (is_multi_worker(self.distribute_strategy) and
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
  if is_chief(strategy):
    return _ORIGINALS["_save_model"](self, epoch, batch, logs)
  chief_filepath = self.filepath
  self.filepath = worker_path(chief_filepath, strategy)
  try:
    # pylint: disable-next=protected-access
    written = self._get_file_path(epoch, batch, logs)
    _ORIGINALS["_save_model"](self, epoch, batch, logs)
  finally:
    self.filepath = chief_filepath
  _remove_worker_path(written)


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
  if not is_multi_worker(strategy):
    return _ORIGINALS["on_train_begin"](self, logs)
  chief_dir = getattr(self, "_imgrec_chief_dir", self.backup_dir)
  self._imgrec_chief_dir = chief_dir  # pylint: disable=protected-access
  own_dir = worker_path(chief_dir, strategy)
  _set_backup_dir(self, chief_dir)
  if not os.path.exists(self._weights_path):  # pylint: disable=protected-access
    _set_backup_dir(self, own_dir)
  _ORIGINALS["on_train_begin"](self, logs)
  _set_backup_dir(self, own_dir)
  _check_same_initial_epoch(self.model, strategy, chief_dir)


def _backup_on_train_end(self, logs=None):
  _ORIGINALS["on_train_end"](self, logs)
  if self.delete_checkpoint and not is_chief(self.model.distribute_strategy):
    _remove_worker_path(self.backup_dir)


def _check_same_initial_epoch(model, strategy, backup_dir):
  epoch = int(model._initial_epoch or 0)  # pylint: disable=protected-access

  @tf.function
  def gather():
    per_replica = strategy.run(lambda: tf.constant([epoch], tf.int64))
    return strategy.gather(per_replica, axis=0)

  epochs = sorted(set(gather().numpy().tolist()))
  if len(epochs) > 1:
    raise ImgrecError(
        "Workers restored different epochs from their BackupAndRestore "
        f"backups under {backup_dir}; put the backup on storage that every "
        "worker can read, or delete it to start over. "
        f"Received: initial_epochs={epochs}")
