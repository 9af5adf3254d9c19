r"""Where a cache-filling first epoch spends its time, stage by stage.

    python experiments/first_epoch_floor.py --data_dir=/tmp/photos --repeats=5

bench_input_pipeline.py compares imgrec's first training epoch with (a), a
tf.data map of decode_image + resize. That epoch decodes and resizes every
image, as (a) does, keeps it for the later epochs and augments it. Here the
stages are added one at a time, each a 2-core tf.data pipeline measured in the
same run (median of --repeats):
  (a)          decode_image + resize, float32 batches (the benchmark's (a))
  decode       imgrec's training decode: decode_jpeg + resize, uint8 batches
  + cache      ... kept in memory for the later epochs
  + shuffle    ... reshuffled every epoch
  + augment    ... flip + shift per image: imgrec's first epoch
  make_dataset the same epoch as imgrec builds it (a check on the row above)
with images/s, CPU ms per image (all threads, user + system) and page faults
per image. Then what one image costs on one thread, piece by piece (read,
decode, resize, uint8), inside a sequential tf.data loop (fastest run).
Expected on 2 CPU cores with ~500x375 JPEGs at 224 px: `decode` matches (a)
within noise; cache, shuffle and augment each add CPU time, the cache about
30 page faults an image.
"""

import os
import resource
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import tensorflow as tf

# Its flags (--data_dir, --image_size, --batch_size, --repeats) are ours too.
import bench_input_pipeline as bench
from imgrec.data import augment
from imgrec.data import decode
from imgrec.data import ops
from imgrec.data import pipeline

FLAGS = flags.FLAGS


def epoch_cost(ds):
  """Iterates `ds` once; returns (images/s, CPU ms/image, page faults/image).

  The clock stops at the last batch, as in bench_input_pipeline.py.
  """
  before = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  n = 0
  for x, _ in ds:
    n += int(x.shape[0])
    last = time.perf_counter()
  after = resource.getrusage(resource.RUSAGE_SELF)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return n / (last - start), 1e3 * cpu / n, (after.ru_minflt -
                                              before.ru_minflt) / n


def staged_dataset(paths, labels, size, stages):
  """imgrec's first-epoch pipeline, up to and including `stages`."""
  parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  all_jpeg = all(os.path.splitext(p)[1].lower() in decode.JPEG_EXTENSIONS
                 for p in paths)
  ds = tf.data.Dataset.from_tensor_slices((paths, labels))
  ds = ds.map(lambda p, y: (pipeline.decode_train(p, size, 3, all_jpeg), y),
              **parallel)
  if "cache" in stages:
    ds = ds.cache()
  if "shuffle" in stages:
    ds = ds.shuffle(len(paths), seed=0)
  if "augment" in stages:
    seeds = tf.data.Dataset.random(seed=0)
    ds = tf.data.Dataset.zip(ds, seeds).map(
        lambda xy, s: (augment.augment_image(xy[0], s), xy[1]), **parallel)
  ds = ds.batch(FLAGS.batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.autotune.enabled = False  # As imgrec's training pipelines.
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def single_thread_costs(paths, size):
  """ms per image of each piece, one image at a time on one thread."""
  pieces = {
      "read": lambda c: tf.reshape(tf.strings.length(c), [1, 1, 1]),
      "read + decode_jpeg": lambda c: tf.io.decode_jpeg(c, channels=3),
      "... + resize (float32)": lambda c: tf.image.resize(
          tf.io.decode_jpeg(c, channels=3), size),
      "... + to uint8": lambda c: ops.resize_uint8(
          tf.io.decode_jpeg(c, channels=3), size),
  }

  def loop(fn):
    @tf.function
    def run():
      # One pixel of each result is kept: the loop must not add work.
      ds = tf.data.Dataset.from_tensor_slices(paths).map(
          lambda p: tf.cast(fn(tf.io.read_file(p))[0, 0, 0], tf.float32))
      # Else tf.data runs the map in parallel and prefetches.
      options = tf.data.Options()
      options.autotune.enabled = False
      options.experimental_optimization.map_parallelization = False
      options.experimental_optimization.inject_prefetch = False
      ds = ds.with_options(options)
      return ds.reduce(0.0, lambda total, x: total + x)
    return run

  runs = {name: loop(fn) for name, fn in pieces.items()}
  for run in runs.values():
    run()  # Trace.
  times = {name: [] for name in runs}
  for _ in range(FLAGS.repeats):
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  # The fastest run: on one thread, noise only adds time.
  return {name: 1e3 * min(t) / len(paths) for name, t in times.items()}


def main(argv):
  del argv
  paths, labels, num_classes, size = bench.load_folder()
  print(f"{len(paths)} images, {size[0]} px, batch {FLAGS.batch_size}, "
        f"{os.cpu_count()} CPUs, median of {FLAGS.repeats}")

  rows = {
      "(a) decode_image + resize": lambda: bench.limit_dataset(paths, labels,
                                                               size),
      "decode (imgrec, uint8)": lambda: staged_dataset(paths, labels, size,
                                                       ()),
      "+ cache": lambda: staged_dataset(paths, labels, size, ("cache",)),
      "+ shuffle": lambda: staged_dataset(paths, labels, size,
                                          ("cache", "shuffle")),
      "+ augment (first epoch)": lambda: staged_dataset(
          paths, labels, size, ("cache", "shuffle", "augment")),
      "make_dataset first epoch": lambda: bench.imgrec_dataset(
          paths, labels, num_classes, size, cache="memory"),
  }
  for build in rows.values():
    epoch_cost(build())  # Warm the file cache and trace every function.
  results = {name: [] for name in rows}
  for _ in range(FLAGS.repeats):
    for name, build in rows.items():
      results[name].append(epoch_cost(build()))
  limit = statistics.median(r[0] for r in results["(a) decode_image + resize"])
  for name, runs in results.items():
    rate, cpu, faults = (statistics.median(r[i] for r in runs)
                         for i in range(3))
    print(f"{name:28s} {rate:7.1f} images/s  /(a) {rate / limit:4.2f}  "
          f"{cpu:5.2f} CPU ms/image  {faults:5.1f} page faults/image  "
          f"runs {[round(r[0]) for r in runs]}")

  print("One image at a time, one thread (ms/image, fastest of "
        f"{FLAGS.repeats}):")
  for name, ms in single_thread_costs(paths, size).items():
    print(f"  {name:26s} {ms:6.3f}")


if __name__ == "__main__":
  flags.mark_flag_as_required("data_dir")
  app.run(main)
