"""One process of tests/test_distribute.py: trains tiny models, saves them.

  python tests/_mw_worker.py OUT_DIR

With TF_CONFIG set it is one worker of a MultiWorkerMirroredStrategy
cluster; without, it trains the same runs in a single process. Each run
writes `OUT_DIR/<run>.<role>.npz` (final weights, in `get_weights` order)
and `OUT_DIR/<run>.<role>.json` (history and checks), role being
`worker<task_id>` or `single`.
"""

import json
import os
import sys
import time

START = time.time()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from imgrec import models  # noqa: E402
from imgrec.training import distribute  # noqa: E402
from imgrec.training import keras_internals  # noqa: E402

GLOBAL_BATCH = 16
NUM_EXAMPLES = 64
NUM_CLASSES = 3
SHAPE = (8, 8, 3)


def make_strategy():
  # A multi-worker strategy has to exist before any other TensorFlow op runs.
  if "TF_CONFIG" not in os.environ:
    return tf.distribute.get_strategy()
  return tf.distribute.MultiWorkerMirroredStrategy(
      communication_options=tf.distribute.experimental.CommunicationOptions(
          implementation=tf.distribute.experimental.CommunicationImplementation
          .RING))


def synthetic_data():
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 255, (NUM_EXAMPLES,) + SHAPE).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, NUM_EXAMPLES)
  # Make the classes learnable: brighten one channel per class.
  x[np.arange(NUM_EXAMPLES), :, :, labels] += 60.0
  return x, np.eye(NUM_CLASSES, dtype=np.float32)[labels]


X, Y = synthetic_data()


def dataset_fn(input_context):
  """Worker k of n reads examples k, k + n, ...: one global batch per step
  holds the same examples as a single-process batch of GLOBAL_BATCH."""
  ds = tf.data.Dataset.from_tensor_slices((X, Y))
  ds = ds.shard(input_context.num_input_pipelines,
                input_context.input_pipeline_id)
  return ds.batch(input_context.get_per_replica_batch_size(GLOBAL_BATCH),
                  drop_remainder=True)


def global_batches():
  ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(GLOBAL_BATCH,
                                                         drop_remainder=True)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return ds.with_options(options)


def tiny_model():
  inputs = keras.Input(SHAPE)
  x = keras.layers.Rescaling(1 / 255.0)(inputs)
  x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
  x = keras.layers.Flatten()(x)
  outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax",
                               name="predictions")(x)
  return keras.Model(inputs, outputs, name="tiny")


def compiled(strategy, build, optimizer):
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = build()
    model.compile(
        optimizer=(keras.optimizers.SGD(0.05) if optimizer == "sgd" else
                   keras.optimizers.Adam(1e-2)),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
  return model


def save(out_dir, run, role, model, history, **extra):
  print(f"{role} {run}: done at {time.time() - START:.1f}s", flush=True)
  np.savez(os.path.join(out_dir, f"{run}.{role}.npz"), *model.get_weights())
  record = {"history": {k: [float(v) for v in vs]
                        for k, vs in history.history.items()}}
  record.update(extra)
  with open(os.path.join(out_dir, f"{run}.{role}.json"), "w") as f:
    json.dump(record, f)


def record_saves():
  """Makes Model.save_weights log the paths it writes; returns the log."""
  written = []
  save_weights = keras.Model.save_weights

  def logged(self, filepath, *args, **kwargs):
    written.append(os.fspath(filepath))
    return save_weights(self, filepath, *args, **kwargs)

  keras.Model.save_weights = logged
  return written


def main(out_dir):
  strategy = make_strategy()
  written = record_saves()
  patched = keras_internals.patch_keras()
  multi = distribute.is_multi_worker(strategy)
  role = (f"worker{strategy.cluster_resolver.task_id}" if multi else "single")
  common = dict(patched=patched, multi_worker=multi,
                chief=distribute.is_chief(strategy))

  for run, optimizer in (("sgd", "sgd"), ("adam", "adam")):
    model = compiled(strategy, tiny_model, optimizer)
    history = distribute.fit(model, dataset_fn, epochs=2, verbose=0)
    save(out_dir, run, role, model, history, **common)

  # Plain model.fit on a dataset of global batches: Keras splits them.
  model = compiled(strategy, tiny_model, "sgd")
  history = model.fit(global_batches(), epochs=2, verbose=0)
  save(out_dir, "plain", role, model, history, **common)

  # BatchNorm statistics must stay the same on every worker.
  model = compiled(
      strategy,
      lambda: models.create_model("simple_cnn", NUM_CLASSES, SHAPE, width=4),
      "adam")
  history = distribute.fit(model, dataset_fn, epochs=1, verbose=0)
  save(out_dir, "bn", role, model, history, **common)

  # Checkpoints: one epoch, then a fresh model resumes from the backup.
  run_dir = os.path.join(out_dir, "resume")
  backup_dir = os.path.join(run_dir, "backup")
  best_path = os.path.join(run_dir, "best.weights.h5")

  def callbacks(delete_checkpoint):
    return [
        keras.callbacks.BackupAndRestore(backup_dir,
                                         delete_checkpoint=delete_checkpoint),
        keras.callbacks.ModelCheckpoint(best_path, monitor="loss",
                                        save_best_only=True,
                                        save_weights_only=True),
    ]

  model = compiled(strategy, tiny_model, "adam")
  distribute.fit(model, dataset_fn, epochs=1, verbose=0,
                 callbacks=callbacks(delete_checkpoint=False))
  own_backup = distribute.worker_path(backup_dir, strategy)
  backup_written = os.path.isfile(
      os.path.join(own_backup, "latest.weights.h5"))
  model = compiled(strategy, tiny_model, "adam")
  history = distribute.fit(model, dataset_fn, epochs=2, verbose=0,
                           callbacks=callbacks(delete_checkpoint=True))
  save(out_dir, "resume", role, model, history, own_backup=own_backup,
       backup_written=backup_written, written=sorted(set(written)), **common)


if __name__ == "__main__":
  main(sys.argv[1])
