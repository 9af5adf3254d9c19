r"""What a DCT-scaled JPEG decode can save: each scale's decode alone against full decode + resize.

    python experiments/jpeg_scale_cost.py --data_dir=/tmp/phone

Times, on a tf.data map over every JPEG in --data_dir (all CPU cores,
median of --repeats), reading the header only, `decode_jpeg` at 1/1, 1/2,
1/4 and 1/8 scale (exact and fast integer IDCT), and full decode + resize to
--image_size, the (a) limit of bench_input_pipeline.py. The 1/8 decode alone
is the ceiling of any pipeline that decodes each image once: every scale
still reads and entropy-decodes all of the file. Expected on 2 cores with
4032x3024 photos: 1/8 about 2.2x full decode + resize.
"""

import glob
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import tensorflow as tf

flags.DEFINE_string("data_dir", None, "Folder of <class>/*.jpg photos.")
flags.DEFINE_integer("image_size", 224, "Side of the resize in (a).")
flags.DEFINE_integer("repeats", 3, "Runs per op; the median is shown.")
FLAGS = flags.FLAGS


def rate(paths, fn):
  """images/s of a parallel map of `fn(contents)` over the files."""
  out = []
  for _ in range(FLAGS.repeats):
    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: fn(tf.io.read_file(p)),
        num_parallel_calls=tf.data.AUTOTUNE).batch(16)
    start = time.perf_counter()
    for _ in ds:
      pass
    out.append(len(paths) / (time.perf_counter() - start))
  return statistics.median(out)


def main(argv):
  del argv
  paths = sorted(glob.glob(os.path.join(FLAGS.data_dir, "*", "*.jpg")))
  if not paths:
    raise SystemExit(f"error: no JPEG in {FLAGS.data_dir}/<class>/")
  size = (FLAGS.image_size, FLAGS.image_size)
  ops = {"header only": tf.io.extract_jpeg_shape}
  for r in (1, 2, 4, 8):
    for method, name in (("", "exact"), ("INTEGER_FAST", "fast")):
      ops[f"decode 1/{r} {name}"] = (
          lambda c, r=r, m=method: tf.shape(tf.io.decode_jpeg(
              c, channels=3, ratio=r, dct_method=m)))
  ops["(a) full decode + resize"] = lambda c: tf.image.resize(
      tf.io.decode_jpeg(c, channels=3), size)
  rates = {name: rate(paths, fn) for name, fn in ops.items()}
  a = rates["(a) full decode + resize"]
  print(f"{len(paths)} JPEGs, {os.cpu_count()} CPUs, median of "
        f"{FLAGS.repeats}")
  for name, value in rates.items():
    print(f"{name:26s} {value:9.1f} images/s   {value / a:5.2f}x (a)")


if __name__ == "__main__":
  flags.mark_flag_as_required("data_dir")
  app.run(main)
