"""tf.data input pipelines: image files to batches of (pixels, one-hot labels).

The order is fixed: list files -> [cache decoded images] -> shuffle ->
map(read + decode + resize, AUTOTUNE) -> batch -> augment (Keras
preprocessing layers, on whole batches) -> prefetch. Pixels stay raw (0..255
float32): normalization lives inside each model, so serving takes raw pixels
too.
"""

import keras
import tensorflow as tf

from imgrec.data import ops

AUGMENT_LEVELS = ("none", "light")
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")


def build_augmenter(level="light", *, flip="horizontal", seed=None):
  """Returns a Keras model of random augmentations, or None for `none`.

  Args:
    level: "none", or "light" (flip, small rotation, zoom, contrast).
    flip: one of FLIP_MODES; digits and text want "none".
    seed: seed of the random layers.

  Raises:
    ValueError: unknown level or flip mode.
  """
  if level not in AUGMENT_LEVELS:
    raise ValueError(f"Unknown augment level. Expected one of {AUGMENT_LEVELS}."
                     f" Received: level={level!r}")
  if flip not in FLIP_MODES:
    raise ValueError(f"Unknown flip mode. Expected one of {FLIP_MODES}. "
                     f"Received: flip={flip!r}")
  if level == "none":
    return None
  layers = []
  if flip != "none":
    layers.append(keras.layers.RandomFlip(flip, seed=seed, name="flip"))
  layers += [
      keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed,
                                  name="rotation"),
      keras.layers.RandomZoom((-0.1, 0.1), fill_mode="reflect", seed=seed,
                              name="zoom"),
      keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed,
                                  name="contrast"),
  ]
  return keras.Sequential(layers, name=f"augment_{level}")


def decode_and_resize(path, image_size, channels=3):
  """Reads one file and returns float32 [H, W, channels] raw pixels."""
  image = ops.decode(tf.io.read_file(path), channels)
  return ops.resize(image, image_size)


def make_dataset(paths, labels, *, num_classes, image_size, batch_size,
                 channels=3, training=False, augmenter=None, seed=0,
                 cache=None, deterministic=True, drop_remainder=None):
  """Builds the input pipeline of one split.

  Args:
    paths: image file paths.
    labels: integer labels, parallel to `paths`.
    num_classes: width of the one-hot labels.
    image_size: (height, width) the images are resized to.
    batch_size: examples per batch.
    channels: 1 or 3.
    training: shuffle every epoch, and apply `augmenter`.
    augmenter: a callable on batches (see `build_augmenter`) or None.
    seed: shuffle seed.
    cache: None, "memory", or a file path prefix for tf.data's cache of the
      decoded, resized images.
    deterministic: keep element order under parallel maps (needed for
      reproducible runs; off is a little faster).
    drop_remainder: defaults to `training`, unless the split is smaller than
      one batch.

  Returns:
    A tf.data.Dataset of (float32 [B, H, W, C], float32 [B, num_classes]).
  """
  image_size = tuple(int(s) for s in image_size)
  ds = tf.data.Dataset.from_tensor_slices(
      (tf.constant(list(paths), tf.string),
       tf.constant(list(labels), tf.int32)))
  load = lambda p, y: (decode_and_resize(p, image_size, channels),
                       tf.one_hot(y, num_classes))
  map_options = dict(num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=deterministic)
  if cache is not None:
    ds = ds.map(load, **map_options)
    ds = ds.cache("" if cache == "memory" else cache)
    if training:
      ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
  else:
    if training:
      ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, **map_options)
  if drop_remainder is None:
    # A split smaller than one batch still gives one (smaller) batch.
    drop_remainder = training and len(paths) >= batch_size
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if training and augmenter is not None:
    ds = ds.map(lambda x, y: (augmenter(x, training=True), y), **map_options)
  return ds.prefetch(tf.data.AUTOTUNE)
