r"""GPU check: does the input pipeline keep an accelerator fed, and do mirrored + mixed precision run?

    python experiments/gpu_check.py --data_dir=/tmp/photos
    python experiments/gpu_check.py --data_dir=/tmp/photos --image_size=64 \
        --epochs=1 --max_images=256        # a quick run on CPU

Runs on whatever TensorFlow finds (a GPU if there is one, else the CPU), on
the photo folder of experiments/make_photo_folder.py:

  1. model.fit of mobilenet_v2 (random weights) at --image_size fed by
     imgrec's training pipeline (the scan's kept images, flip and shift)
     against model.fit fed by the same images as in-memory tensors: images/s
     of each, median of --repeats, and the ratio (issue 11 goal on a GPU:
     >= 0.9x);
  2. the same fit under tf.distribute.MirroredStrategy with mixed precision
     (float16 on a GPU, bfloat16 on a CPU): images/s, and that the loss is
     finite.

Prints the device, then one line per measurement.
"""

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from imgrec import models
from imgrec.data import folder as folder_lib
from imgrec.data import pipeline
from imgrec.data import scan
from imgrec.errors import ImgrecError
from imgrec.training import recipe

flags.DEFINE_string("data_dir", None, "Photo folder root/<class>/*.jpg.")
flags.DEFINE_integer("image_size", 224, "Model input size.")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_integer("epochs", 2, "Timed epochs per fit (after one untimed).")
flags.DEFINE_integer("repeats", 3, "Fits per measurement; the median shown.")
flags.DEFINE_integer("max_images", 0, "Use at most this many images (0: all).")
flags.DEFINE_string("model", "mobilenet_v2", "Registered model.")
FLAGS = flags.FLAGS


def load():
  """Paths, labels, classes, and the scan's kept images at the input size."""
  try:
    found = folder_lib.find_images(FLAGS.data_dir, val_split=0, test_split=0)
  except ImgrecError as e:
    sys.exit(f"error: {e}")
  train = found.splits["train"]
  paths, labels = train.paths, train.labels
  if FLAGS.max_images:
    rng = np.random.default_rng(0)
    keep = sorted(rng.permutation(len(paths))[:FLAGS.max_images])
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
  if len(paths) < 2 * FLAGS.batch_size:
    sys.exit(f"error: need at least {2 * FLAGS.batch_size} images.")
  size = (FLAGS.image_size, FLAGS.image_size)
  fill = scan.Fill(size, 3)
  with tempfile.TemporaryDirectory() as prepared:
    results = scan.scan_files(paths, prepared_dir=prepared, progress=False,
                              fill=fill)
  rows = [r.row for r in results]
  return paths, labels, len(found.class_names), size, fill.store, rows


def build(num_classes, size):
  model = models.create_model(FLAGS.model, num_classes, (*size, 3),
                              weights=None)
  model.compile("adam", "categorical_crossentropy")
  return model


def fit_rate(strategy, num_classes, size, data, count, **kw):
  """images/s of `FLAGS.epochs` epochs of fit, after one untimed epoch."""
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = build(num_classes, size)
  kw.setdefault("shuffle", False)
  model.fit(data, epochs=1, verbose=0, **kw)
  start = time.perf_counter()
  history = model.fit(data, epochs=FLAGS.epochs, verbose=0, **kw)
  rate = FLAGS.epochs * count / (time.perf_counter() - start)
  return rate, float(history.history["loss"][-1])


def main(argv):
  del argv
  gpus = tf.config.list_logical_devices("GPU")
  device = ", ".join(g.name for g in gpus) if gpus else "CPU only"
  print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices: "
        f"{device}, {os.cpu_count()} CPUs")
  paths, labels, num_classes, size, store, rows = load()
  print(f"{len(paths)} images, {num_classes} classes, {size[0]} px, batch "
        f"{FLAGS.batch_size}, {FLAGS.model}, median of {FLAGS.repeats}",
        flush=True)

  def dataset(batch_size):
    split = folder_lib.Split(paths, labels, pixel_rows=rows)
    return pipeline.make_dataset(split, pipeline.PipelineSpec(
        num_classes=num_classes, image_size=size, batch_size=batch_size,
        training=True, seed=0, deterministic=False), pixels=store)

  x_mem = np.concatenate([x.numpy() for x, _ in dataset(FLAGS.batch_size)])
  y_mem = np.concatenate([y.numpy() for _, y in dataset(FLAGS.batch_size)])
  count = len(x_mem)
  default = tf.distribute.get_strategy()
  from_pipeline, from_memory = [], []
  for _ in range(FLAGS.repeats):
    from_pipeline.append(fit_rate(default, num_classes, size,
                                  dataset(FLAGS.batch_size), count)[0])
    from_memory.append(fit_rate(default, num_classes, size, x_mem, count,
                                y=y_mem, batch_size=FLAGS.batch_size,
                                shuffle=True)[0])
  p, m = statistics.median(from_pipeline), statistics.median(from_memory)
  print(f"fit from the pipeline {p:9.1f} images/s, from memory {m:9.1f} "
        f"images/s, ratio {p / m:.2f} (goal on a GPU >= 0.9)")

  policy = recipe.set_precision(True)
  mirrored = tf.distribute.MirroredStrategy()
  rates, losses = [], []
  for _ in range(FLAGS.repeats):
    rate, loss = fit_rate(mirrored, num_classes, size,
                          dataset(FLAGS.batch_size), count)
    rates.append(rate)
    losses.append(loss)
  recipe.set_precision(False)
  finite = all(np.isfinite(losses))
  print(f"mirrored ({mirrored.num_replicas_in_sync} replica(s)) + {policy}: "
        f"{statistics.median(rates):9.1f} images/s, last loss "
        f"{losses[-1]:.4f} ({'finite' if finite else 'NOT FINITE'})")
  if not finite:
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flag_as_required("data_dir")
  app.run(main)
