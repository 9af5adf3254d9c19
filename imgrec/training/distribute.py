"""tf.distribute for training: the strategy, who writes, and per-worker input.

Only public TensorFlow APIs here. The Keras fixes a multi-worker strategy
needs live in `keras_internals` and are applied only under one.
"""

import os
import shutil

import tensorflow as tf

from imgrec.errors import ImgrecError


def get_strategy(name="auto"):
  """Returns a tf.distribute.Strategy.

  Args:
    name: "auto" (all local GPUs mirrored, one GPU, or the CPU), "default"
      (no distribution), "one_device" (first GPU, else CPU), "mirrored" (all
      local GPUs, or the CPU) or "multi_worker" (MultiWorkerMirroredStrategy
      over the cluster in the TF_CONFIG environment variable).

  Call it before any other TensorFlow work in the process: a multi-worker
  strategy must be created first.

  Raises:
    ImgrecError: unknown name.
  """
  if name == "multi_worker":
    # Collective ops must be configured before anything touches the devices,
    # even a device listing.
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    if len(gpus) > 1:
      return tf.distribute.MirroredStrategy()
    name = "one_device" if gpus else "default"
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  raise ImgrecError("Unknown --strategy. Expected auto, default, one_device, "
                    f"mirrored or multi_worker. Received: strategy={name!r}")


def is_multi_worker(strategy=None):
  """Whether `strategy` (default: the current one) spans several workers."""
  strategy = strategy or tf.distribute.get_strategy()
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return False
  resolver = strategy.cluster_resolver
  spec = resolver.cluster_spec().as_dict() if resolver else {}
  return sum(len(spec.get(job, ())) for job in ("chief", "worker")) > 1


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


def remove_worker_path(path):
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


def check_same_on_workers(strategy, value, what):
  """Raises unless every worker holds the same integer `value`.

  Workers that disagree (on the epoch they resume from, say) would wait
  for each other in the first collective op forever.

  Raises:
    ImgrecError: naming `what` and the values seen.
  """
  if not is_multi_worker(strategy):
    return

  @tf.function
  def gather():
    per_replica = strategy.run(lambda: tf.constant([value], tf.int64))
    return strategy.gather(per_replica, axis=0)

  values = sorted(set(gather().numpy().tolist()))
  if len(values) > 1:
    raise ImgrecError(f"Workers disagree on {what}; put the model_dir on "
                      "storage that every worker can read, or delete its "
                      f"checkpoints to start over. Received: {values}")


def fit(model, data, *, epochs=1, callbacks=None, validation_data=None,
        **fit_kwargs):
  """`model.fit` that also works across several workers.

  Under a multi-worker strategy it first applies `keras_internals`'
  fixes for Keras' multi-worker `fit`; everywhere else it is `model.fit`.

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
  strategy = model.distribute_strategy
  if is_multi_worker(strategy):
    from imgrec.training import keras_internals  # pylint: disable=g-import-not-at-top
    keras_internals.patch_keras()
  if callable(data):
    data = distribute_dataset(data, strategy)
  if callable(validation_data):
    validation_data = distribute_dataset(validation_data, strategy)
  return model.fit(data, epochs=epochs, callbacks=callbacks,
                   validation_data=validation_data, **fit_kwargs)
