r"""Input pipeline throughput: imgrec vs decode+resize vs the Keras anchor.

    python experiments/bench_input_pipeline.py --data_dir=/tmp/photos \
        --image_size=224 --repeats=3

Prints images/s (and CPU ms per image, all threads), the median of --repeats
runs each, for
  (a) the decode+resize limit: tf.data AUTOTUNE map of decode_image + resize,
      no augmentation;
  (b) the anchor: keras.utils.image_dataset_from_directory, then Keras
      RandomFlip/RandomRotation/RandomZoom on the batches;
  (scan) imgrec's data scan alone, on a fresh cache (`imgrec-scan`);
  (first run) what a first `imgrec-train` does before the second epoch: the
      scan, which keeps the images it decodes, then the first epoch's input
      from them;
  (c) imgrec's training pipeline with its default augmentation: a first
      epoch that decodes and fills tf.data's cache (the scan's image sizes
      known, as in training, but not its images), a later epoch (from
      memory), and an epoch streamed from the files (--cache=none, for data
      larger than memory);
and the ratios to (a). Then model.fit throughput of a small CNN fed by (c)
versus fed by the same images as in-memory tensors.
Expected on 2 CPU cores with ~500x375 JPEGs at 224 px (issue 11 goals):
scan >= 0.8x (a), first run >= 0.7x (a), later epochs >= 5x (a), streamed
>= 1.0x (a), fit >= 0.95x memory.
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

flags.DEFINE_string("data_dir", None, "Image folder root/<class>/*.")
flags.DEFINE_integer("image_size", 224, "Square output size.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("repeats", 3, "Runs of each measurement; median shown.")
flags.DEFINE_integer("fit_epochs", 2, "Epochs of each timed fit.")
flags.DEFINE_integer("fit_image_size", 64, "Input size of the fit test's CNN.")
FLAGS = flags.FLAGS


def images_per_second(ds):
  """Iterates `ds` once; returns (images/s, CPU ms per image).

  The clock stops when the last batch arrives. With autotuning on, tf.data
  sometimes spends up to ~0.6 s after the last element before it reports the
  end of the data (seen on every pipeline here, at random, also on a bare
  map of decode_jpeg); over a 1500-image epoch that stall, not the pipeline,
  would decide the figure.
  """
  start, cpu_start = time.perf_counter(), time.process_time()
  n = 0
  for x, _ in ds:
    n += int(x.shape[0])
    last, cpu_last = time.perf_counter(), time.process_time()
  return n / (last - start), 1e3 * (cpu_last - cpu_start) / n


def limit_dataset(paths, labels, size):
  ds = tf.data.Dataset.from_tensor_slices((paths, labels))
  ds = ds.map(lambda p, y: (tf.image.resize(tf.io.decode_image(
      tf.io.read_file(p), channels=3, expand_animations=False), size), y),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(FLAGS.batch_size).prefetch(tf.data.AUTOTUNE)


def anchor_dataset(data_dir, size):
  ds = keras.utils.image_dataset_from_directory(
      data_dir, image_size=size, batch_size=FLAGS.batch_size, seed=0,
      verbose=False)
  augment = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                              keras.layers.RandomRotation(0.1),
                              keras.layers.RandomZoom(0.1)])
  ds = ds.map(lambda x, y: (augment(x, training=True), y),
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def imgrec_dataset(paths, labels, num_classes, size, cache="auto",
                   sides=None):
  return pipeline.make_dataset(
      folder_lib.Split(paths, labels, shorter_sides=sides),
      pipeline.PipelineSpec(num_classes=num_classes, image_size=size,
                            batch_size=FLAGS.batch_size, training=True,
                            seed=0, cache=cache, deterministic=False))


def scan_rate(paths, fill=None):
  """images/s and CPU ms per image of a scan with a fresh cache."""
  with tempfile.TemporaryDirectory() as prepared:
    start, cpu_start = time.perf_counter(), time.process_time()
    results = scan.scan_files(paths, prepared_dir=prepared, progress=False,
                              fill=fill)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
  return len(paths) / seconds, 1e3 * cpu / len(paths), seconds, results


def first_run_rate(paths, labels, num_classes, size):
  """Scan (keeping its decoded images) + the first epoch read from them."""
  fill = scan.Fill(size, 3)
  _, _, scan_seconds, results = scan_rate(paths, fill)
  cpu_start = time.process_time()
  ds = pipeline.make_dataset(
      folder_lib.Split(paths, labels, pixel_rows=[r.row for r in results],
                   shorter_sides=[min(r.width, r.height) for r in results]),
      pipeline.PipelineSpec(num_classes=num_classes, image_size=size,
                            batch_size=FLAGS.batch_size, training=True,
                            seed=0, deterministic=False), pixels=fill.store)
  rate, _ = images_per_second(ds)
  epoch_seconds = len(paths) / rate
  cpu = time.process_time() - cpu_start
  return (len(paths) / (scan_seconds + epoch_seconds),
          1e3 * cpu / len(paths)), images_per_second(ds)


def median(values):
  return statistics.median(values)


def load_folder():
  """(paths, labels, num_classes, (size, size)) of every image in --data_dir."""
  try:
    found = folder_lib.find_images(FLAGS.data_dir, val_split=0,
                                   test_split=0)
  except ImgrecError as e:
    sys.exit(f"error: {e}")
  if len(found.splits["train"].paths) < 2 * FLAGS.batch_size:
    sys.exit(f"error: {FLAGS.data_dir} holds "
             f"{len(found.splits['train'].paths)} images; a throughput "
             f"measurement needs at least two batches "
             f"({2 * FLAGS.batch_size}), and hundreds to mean anything.")
  return (found.splits["train"].paths, found.splits["train"].labels,
          len(found.class_names), (FLAGS.image_size, FLAGS.image_size))


def main(argv):
  del argv
  paths, labels, num_classes, size = load_folder()
  print(f"{len(paths)} images, {num_classes} classes, {size[0]} px, batch "
        f"{FLAGS.batch_size}, {os.cpu_count()} CPUs, median of "
        f"{FLAGS.repeats}")

  runs = {k: [] for k in ("a", "b", "scan", "run", "run2", "c1", "c2",
                          "s")}
  with tempfile.TemporaryDirectory() as prepared:
    sides = [min(r.width, r.height) for r in scan.scan_files(
        paths, prepared_dir=prepared, progress=False)]
  for _ in range(FLAGS.repeats):
    runs["a"].append(images_per_second(limit_dataset(paths, labels, size)))
    runs["b"].append(images_per_second(anchor_dataset(FLAGS.data_dir, size)))
    runs["scan"].append(scan_rate(paths)[:2])
    first, later = first_run_rate(paths, labels, num_classes, size)
    runs["run"].append(first)
    runs["run2"].append(later)
    ds = imgrec_dataset(paths, labels, num_classes, size, sides=sides)
    runs["c1"].append(images_per_second(ds))
    runs["c2"].append(images_per_second(ds))
    runs["s"].append(images_per_second(
        imgrec_dataset(paths, labels, num_classes, size, cache="none",
                       sides=sides)))
  rate = {k: median([r for r, _ in v]) for k, v in runs.items()}
  cpu = {k: median([c for _, c in v]) for k, v in runs.items()}
  a = rate["a"]
  rows = [("a", "(a) decode+resize limit"), ("b", "(b) anchor (Keras)"),
          ("scan", "scan alone (fresh cache)"),
          ("run", "first run: scan + epoch 1"),
          ("run2", "later epoch (scan's images)"),
          ("c1", "(c) first epoch, no scan"),
          ("c2", "(c) later epoch (tf.data cache)"),
          ("s", "(c) --cache=none (streamed)")]
  for key, name in rows:
    ratio = "" if key == "a" else f"   /(a) = {rate[key] / a:.2f}"
    print(f"{name:32s} {rate[key]:8.1f} images/s   {cpu[key]:.2f} CPU "
          f"ms/image{ratio}")
  for key in runs:
    print(f"  {key} runs: {[round(r) for r, _ in runs[key]]}")

  # model.fit: the same small CNN fed by the pipeline or by in-memory tensors.
  fit_size = (FLAGS.fit_image_size, FLAGS.fit_image_size)
  ds = imgrec_dataset(paths, labels, num_classes, fit_size)
  xs, ys = [], []
  for x, y in ds:
    xs.append(x.numpy())
    ys.append(y.numpy())
  x_mem, y_mem = np.concatenate(xs), np.concatenate(ys)

  def fit_rate(data, **kw):
    keras.utils.set_random_seed(0)
    model = models.create_model("simple_cnn", num_classes,
                                (*fit_size, 3))
    model.compile("adam", "categorical_crossentropy")
    kw.setdefault("shuffle", False)  # Datasets shuffle themselves.
    model.fit(data, epochs=1, verbose=0, **kw)  # Build and trace first.
    start = time.perf_counter()
    model.fit(data, epochs=FLAGS.fit_epochs, verbose=0, **kw)
    return FLAGS.fit_epochs * len(x_mem) / (time.perf_counter() - start)

  from_pipeline, from_memory = [], []
  for _ in range(FLAGS.repeats):
    from_pipeline.append(fit_rate(ds))
    from_memory.append(fit_rate(x_mem, y=y_mem, batch_size=FLAGS.batch_size,
                                shuffle=True))
  p, m = median(from_pipeline), median(from_memory)
  print(f"fit simple_cnn {fit_size[0]} px from pipeline {p:8.1f} images/s, "
        f"from memory {m:8.1f} images/s, ratio {p / m:.2f}")


if __name__ == "__main__":
  flags.mark_flag_as_required("data_dir")
  app.run(main)
