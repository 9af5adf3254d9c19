r"""Latency and throughput of a model in any format, as it serves.

    from imgrec.inference import benchmark
    clf = imgrec.Classifier.load("runs/x/export/model.tflite", num_threads=1)
    print(benchmark.benchmark(clf, images))

Latency is the model call on one prepared image (decoding and resizing are
not counted: they are the same for every format), repeated after a warm-up;
throughput runs batches of prepared images back to back.

TensorFlow fixes its thread pools when it starts, so single-thread figures
of .keras and SavedModel models need a process of their own:

    python -m imgrec.inference.benchmark --num_threads=1 \
        --images=images.npy model.tflite saved_model/

prints one JSON object per model.
"""

import json
import os
import sys
import time

import numpy as np

from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS

WARMUP = 3


def _timed(fn, runs, max_seconds):
  """Seconds of each call of `fn`, at least 5 and at most `runs` calls."""
  for _ in range(WARMUP):
    fn()
  times = []
  start = time.perf_counter()
  while len(times) < runs:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
    if len(times) >= 5 and time.perf_counter() - start > max_seconds:
      break
  return np.asarray(times)


def benchmark(classifier, images, *, runs=50, batch_size=32, max_seconds=5.0):
  """Measures a loaded `Classifier`.

  Args:
    classifier: an `imgrec.Classifier` (its thread count is the caller's
      choice: `Classifier.load(..., num_threads=)` for TFLite).
    images: uint8 [H, W, 3] images (at least one); the first is timed alone,
      batches cycle through them.
    runs: the most timed calls of each kind.
    batch_size: images per throughput batch.
    max_seconds: stop timing a kind after about this long (5 calls at least).

  Returns:
    {"latency_ms": {"median", "p90", "runs"}, "images_per_second",
     "batch_size"}.
  """
  images = list(images)
  single = classifier.prepare(images[:1])
  latency = _timed(lambda: classifier.run(single), runs, max_seconds) * 1e3
  batch = classifier.prepare(
      [images[i % len(images)] for i in range(batch_size)])
  batches = _timed(lambda: classifier.run(batch), max(5, runs // 5),
                   max_seconds)
  return {"latency_ms": {"median": float(np.median(latency)),
                         "p90": float(np.percentile(latency, 90)),
                         "runs": int(latency.size)},
          "images_per_second": float(batch_size / np.median(batches)),
          "batch_size": batch_size}


def benchmark_inputs(classifier, paths=(), *,
                     max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, limit=32,
                     on_skip=None):
  """What `benchmark` times a classifier on: images of the user's, or noise.

  A clip model is timed on one clip of noise at its size; an image model on
  up to `limit` of the images in `paths` (read as serving reads them), or
  on one image of noise at its size when none are given.

  Args:
    classifier: an `imgrec.Classifier`.
    paths: image files.
    max_image_pixels: refuse images declaring more pixels.
    limit: the most images read.
    on_skip: `fn(message)` for each file that cannot be read (timed on the
      others).

  Returns:
    A list of uint8 arrays: [H, W, 3] images, or one [T, H, W, 3] clip.

  Raises:
    ImgrecError: `paths` were given and none of them could be read.
  """
  from imgrec.data import decode  # pylint: disable=g-import-not-at-top
  from imgrec.errors import ImgrecError  # pylint: disable=g-import-not-at-top
  noise = np.random.default_rng(0)
  size = classifier.image_size or (224, 224)
  if classifier.clip_frames:
    return [noise.integers(0, 256, (classifier.clip_frames, *size, 3),
                           dtype=np.uint8)]
  images = []
  for path in paths:
    try:
      images.append(decode.read_file(path, 3, max_image_pixels,
                                     classifier.image_size))
    except ImgrecError as e:
      if on_skip:
        on_skip(str(e))
    if len(images) == limit:
      break
  if paths and not images:
    raise ImgrecError("None of the given images could be read to time the "
                      "model.")
  return images or [noise.integers(0, 256, (*size, 3), dtype=np.uint8)]


def set_tensorflow_threads(num_threads):
  """Sets TensorFlow's thread pools; only before TensorFlow runs anything."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(num_threads)
  tf.config.threading.set_inter_op_parallelism_threads(num_threads)


def main(argv):
  """`python -m imgrec.inference.benchmark --num_threads=N --images=F models`."""
  num_threads, images_path, models = None, None, []
  for arg in argv:
    if arg.startswith("--num_threads="):
      num_threads = int(arg.split("=", 1)[1])
    elif arg.startswith("--images="):
      images_path = arg.split("=", 1)[1]
    else:
      models.append(arg)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if num_threads:
    set_tensorflow_threads(num_threads)
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  images = list(np.load(images_path))
  for path in models:
    clf = Classifier.load(path, num_threads=num_threads, trust_model=True)
    print(json.dumps({"model": path, **benchmark(clf, images)}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
