"""tf.data input pipelines: image files to batches of (pixels, one-hot labels).

The order is fixed:

    list files -> [shard] -> [decode + resize -> cache] -> shuffle
      -> map(decode + resize, if not cached; per-image flip and shift)
      -> batch -> [float32 -> batch augmentation (Keras layers), mixing]
      -> prefetch

Streamed (uncached) JPEGs are decoded, resized, flipped and shifted in one
map that decodes only the part of the image the shift keeps. Training images
stay uint8 until the last op (a quarter of float32's memory traffic and cache
size); with the default augmentation the batches reach the model as uint8 and
the model's input casts them. Pixels are raw 0..255: normalization lives
inside each model, so serving takes raw pixels too. Augmentation is seeded;
with `deterministic=False` (training default) parallel maps may reorder
elements for speed.
"""

import os

import keras
import tensorflow as tf

from imgrec.data import ops
from imgrec.errors import ImgrecError

AUGMENT_LEVELS = ("none", "light", "medium", "heavy", "randaugment")
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
CACHE_MODES = ("auto", "none", "memory")  # Or a file path prefix.
# `cache="auto"` keeps decoded images in memory only below this share of the
# memory available when the pipeline is built.
AUTO_CACHE_MEMORY_FRACTION = 0.25


def build_augmenter(level="light", *, seed=None):
  """Returns the batch-level augmentation of `level` (Keras layers), or None.

  Every level but "none" also gets the per-image flip and shift of
  `augment_image`. On top of that, on whole batches:
    light:       nothing more. Flips and shifts are per-image ops, far
                 cheaper than projective transforms (measured at 224 px:
                 RandomRotation about 90 images/s, a flip and shift 7,000).
    medium:      random rotation, zoom and contrast.
    heavy:       stronger rotation, zoom, contrast and brightness, plus
                 random erasing.
    randaugment: Keras RandAugment (2 ops, factor 0.5) plus random erasing.

  Raises:
    ValueError: unknown level.
  """
  if level not in AUGMENT_LEVELS:
    raise ValueError(f"Unknown augment level. Expected one of {AUGMENT_LEVELS}."
                     f" Received: level={level!r}")
  layers = keras.layers
  if level in ("none", "light"):
    return None
  if level == "medium":
    stack = [
        layers.RandomRotation(0.05, fill_mode="reflect", seed=seed,
                              name="rotation"),
        layers.RandomZoom((-0.15, 0.15), fill_mode="reflect", seed=seed,
                          name="zoom"),
        layers.RandomContrast(0.15, value_range=(0, 255), seed=seed,
                              name="contrast"),
    ]
  elif level == "heavy":
    stack = [
        layers.RandomRotation(0.1, fill_mode="reflect", seed=seed,
                              name="rotation"),
        layers.RandomZoom((-0.25, 0.25), fill_mode="reflect", seed=seed,
                          name="zoom"),
        layers.RandomContrast(0.3, value_range=(0, 255), seed=seed,
                              name="contrast"),
        layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed,
                                name="brightness"),
        layers.RandomErasing(factor=0.25, value_range=(0, 255), seed=seed,
                             name="erasing"),
    ]
  else:
    stack = [
        layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5,
                           seed=seed, name="randaugment"),
        layers.RandomErasing(factor=0.25, value_range=(0, 255), seed=seed,
                             name="erasing"),
    ]
  return keras.Sequential(stack, name=f"augment_{level}")


def build_mixer(mixup=0.0, cutmix=0.0, *, seed=None):
  """Returns a function mixing (images, one-hot labels) batches, or None.

  Args:
    mixup: MixUp's Beta(alpha, alpha) parameter; 0 turns it off.
    cutmix: CutMix's Beta parameter; 0 turns it off.
    seed: seed of the layers.

  With both on, each batch gets one of the two, chosen at random (as timm
  does).
  """
  if mixup < 0 or cutmix < 0:
    raise ValueError("mixup and cutmix must be >= 0. Received: "
                     f"mixup={mixup}, cutmix={cutmix}")
  mixers = []
  if mixup > 0:
    mixers.append(keras.layers.MixUp(alpha=mixup, seed=seed))
  if cutmix > 0:
    mixers.append(keras.layers.CutMix(factor=cutmix, seed=seed))
  if not mixers:
    return None

  def apply(layer, images, labels):
    out = layer({"images": images, "labels": labels}, training=True)
    return out["images"], tf.cast(out["labels"], labels.dtype)

  def mix(images, labels):
    if len(mixers) == 1:
      return apply(mixers[0], images, labels)
    return tf.cond(tf.random.uniform([], seed=seed) < 0.5,
                   lambda: apply(mixers[0], images, labels),
                   lambda: apply(mixers[1], images, labels))
  return mix


def _flip_and_shift(seed, size, flip, shift_fraction):
  """Draws (flip_lr, flip_ud, dy, dx) from the low 32 bits of `seed`.

  `Dataset.random` gives 32 random bits (int64 values in [0, 2**32)): bits 0
  and 1 pick the flips, bits 2-16 and 17-31 the offsets. dy, dx are uniform
  in [-limit, limit], limit = int(side * shift_fraction), up to a modulo bias
  of (2 * limit + 1) / 2**15 (0.2% at 224 px); a positive dy moves the
  content up (the bottom rows become padding).
  """
  if flip not in FLIP_MODES:
    raise ValueError(f"Unknown flip mode. Expected one of {FLIP_MODES}. "
                     f"Received: flip={flip!r}")
  seed = tf.cast(seed, tf.int64)

  def bits(first, count):
    return tf.bitwise.bitwise_and(tf.bitwise.right_shift(seed, first),
                                  (1 << count) - 1)

  def offset(first_bit, limit):
    if not limit:
      return tf.constant(0, tf.int32)
    return tf.cast(bits(first_bit, 15) % (2 * limit + 1), tf.int32) - limit

  no = tf.constant(False)
  flip_lr = (tf.equal(bits(0, 1), 1)
             if flip in ("horizontal", "horizontal_and_vertical") else no)
  flip_ud = (tf.equal(bits(1, 1), 1)
             if flip in ("vertical", "horizontal_and_vertical") else no)
  h, w = size
  return (flip_lr, flip_ud, offset(2, int(h * shift_fraction)),
          offset(17, int(w * shift_fraction)))


def _pad_and_flip(kept, size, dy, dx, flip_lr, flip_ud):
  """Pads the in-frame part `kept` back to `size` and applies the flips."""
  h, w = size
  image = tf.pad(kept, [[tf.maximum(-dy, 0), tf.maximum(dy, 0)],
                        [tf.maximum(-dx, 0), tf.maximum(dx, 0)], [0, 0]])
  image = tf.cond(flip_lr, lambda: tf.reverse(image, [1]), lambda: image)
  image = tf.cond(flip_ud, lambda: tf.reverse(image, [0]), lambda: image)
  image.set_shape([h, w, kept.shape[-1]])
  return image


def augment_image(image, seed, *, flip="horizontal", shift_fraction=0.125):
  """Random flip and shift of one uint8 image [H, W, C], shape kept.

  The shift pads with zeros (as the CIFAR recipe does; reflection padding
  measured 6x slower in tf.data) and keeps the original size, so the object
  scale matches evaluation, where images are only resized. All randomness
  comes from the bits of one int64, so the tf.data pipeline zips a single
  `Dataset.random` stream and no random op runs per image; the shift is one
  slice and one pad (measured 150 us against 200 us an image at 224 px for
  stateless flip + pad + random crop).

  Args:
    image: uint8 [H, W, C] with a static shape.
    seed: int64 scalar with 32 uniformly random low bits (as
      `Dataset.random` gives them).
    flip: one of FLIP_MODES.
    shift_fraction: largest shift, as a fraction of each side.
  """
  h, w, _ = image.shape
  flip_lr, flip_ud, dy, dx = _flip_and_shift(seed, (h, w), flip,
                                             shift_fraction)
  # The part of the image that stays in the frame.
  kept = image[tf.maximum(dy, 0):h + tf.minimum(dy, 0),
               tf.maximum(dx, 0):w + tf.minimum(dx, 0)]
  return _pad_and_flip(kept, (h, w), dy, dx, flip_lr, flip_ud)


def decode_augment_jpeg(path, seed, image_size, channels=3, *,
                        flip="horizontal", shift_fraction=0.125):
  """`augment_image(decode + resize)` of a JPEG, decoding only what is kept.

  The shift drops a strip of the resized image; here the matching window of
  the JPEG is the only part decoded (`decode_and_crop_jpeg`) and resized, so
  a streaming epoch (no cache) does less than a plain decode + resize. Same
  random draws as `augment_image` for the same seed; pixels differ only by
  the rounding of the window to whole source pixels.

  Args:
    path: JPEG file path (string scalar).
    seed: int64 scalar with 32 uniformly random low bits.
    image_size: (height, width) of the result.
    channels: 1 or 3.
    flip: one of FLIP_MODES.
    shift_fraction: largest shift, as a fraction of each side.

  Returns:
    uint8 [height, width, channels].
  """
  h, w = image_size
  flip_lr, flip_ud, dy, dx = _flip_and_shift(seed, (h, w), flip,
                                             shift_fraction)
  contents = tf.io.read_file(path)
  shape = tf.io.extract_jpeg_shape(contents)
  src_h, src_w = shape[0], shape[1]
  kept_h, kept_w = h - tf.abs(dy), w - tf.abs(dx)

  def to_source(n, scale):
    return tf.cast(tf.round(tf.cast(n, tf.float32) * scale), tf.int32)

  scale_y = tf.cast(src_h, tf.float32) / h
  scale_x = tf.cast(src_w, tf.float32) / w
  top = tf.minimum(to_source(tf.maximum(dy, 0), scale_y), src_h - 1)
  left = tf.minimum(to_source(tf.maximum(dx, 0), scale_x), src_w - 1)
  window = tf.stack([
      top, left,
      tf.clip_by_value(to_source(kept_h, scale_y), 1, src_h - top),
      tf.clip_by_value(to_source(kept_w, scale_x), 1, src_w - left)])
  image = tf.io.decode_and_crop_jpeg(contents, window, channels=3,
                                     dct_method="INTEGER_FAST")
  kept = _resize_uint8(ops.to_channels(image, channels),
                       tf.stack([kept_h, kept_w]))
  return _pad_and_flip(kept, (h, w), dy, dx, flip_lr, flip_ud)


def decode_and_resize(path, image_size, channels=3):
  """Reads one file and returns float32 [H, W, channels] raw pixels.

  Evaluation and serving decode this way; training uses the same resize.
  """
  image = ops.decode(tf.io.read_file(path), channels)
  return ops.resize(image, image_size)


JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe"})


def _decode_uint8(path, image_size, channels, all_jpeg=False):
  # Training reads JPEGs with the fast integer IDCT: within a level or two of
  # the exact decode, well under the augmentation noise, and quicker. For an
  # all-JPEG file list the per-image format test (a tf.cond) is skipped.
  contents = tf.io.read_file(path)
  fast_jpeg = lambda: tf.io.decode_jpeg(contents, channels=3,
                                        dct_method="INTEGER_FAST")
  if all_jpeg:
    image = fast_jpeg()
  else:
    image = tf.cond(
        tf.io.is_jpeg(contents), fast_jpeg,
        lambda: tf.io.decode_image(contents, channels=3,
                                   expand_animations=False))
  image.set_shape([None, None, 3])
  return _resize_uint8(ops.to_channels(image, channels), image_size)


def _resize_uint8(image, size):
  # Bilinear weights sum to one, so the result stays within 0..255: adding
  # 0.5 and truncating rounds it.
  return tf.cast(ops.resize(image, size) + 0.5, tf.uint8)


def resolve_cache(cache, num_images, image_size, bytes_per_pixel):
  """Turns "auto" into "memory" or None by the decoded size of the split."""
  if cache in (None, "none", ""):
    return None
  if cache != "auto":
    return cache
  needed = num_images * image_size[0] * image_size[1] * bytes_per_pixel
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      info = dict(line.split(":", 1) for line in f)
    available = int(info["MemAvailable"].split()[0]) * 1024
  except (OSError, KeyError, ValueError):
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  return "memory" if needed < AUTO_CACHE_MEMORY_FRACTION * available else None


def make_dataset(paths, labels, *, num_classes, image_size, batch_size,
                 channels=3, training=False, augment="light",
                 flip="horizontal", mixup=0.0, cutmix=0.0, seed=0, cache=None,
                 deterministic=True, drop_remainder=None, input_context=None):
  """Builds the input pipeline of one split.

  Args:
    paths: image file paths.
    labels: integer labels, parallel to `paths`.
    num_classes: width of the one-hot labels.
    image_size: (height, width) the images are resized to.
    batch_size: examples per (global) batch.
    channels: 1 or 3.
    training: shuffle every epoch and augment.
    augment: one of AUGMENT_LEVELS (training only).
    flip: one of FLIP_MODES ("none" for digits and text).
    mixup: MixUp alpha for training batches (0: off).
    cutmix: CutMix alpha for training batches (0: off).
    seed: seed of the shuffle and the augmentation.
    cache: "auto" (memory if the decoded split takes under a quarter of the
      available memory), "memory", a file path prefix, or None/"none".
    deterministic: keep element order under parallel maps (reproducible
      runs); off is faster.
    drop_remainder: defaults to `training`, unless the split is smaller than
      one batch.
    input_context: a tf.distribute.InputContext: read this input pipeline's
      shard of the files and batch per replica.

  Returns:
    A tf.data.Dataset of (images [B, H, W, C], float32 [B, num_classes]).
    Images are raw 0..255 pixels: uint8 for training without batch-level
    augmentation or mixing, float32 otherwise.
  """
  if augment not in AUGMENT_LEVELS:
    raise ImgrecError(f"Unknown augment level. Expected one of "
                      f"{AUGMENT_LEVELS}. Received: augment={augment!r}")
  image_size = tuple(int(s) for s in image_size)
  paths, labels = list(paths), list(labels)
  ds = tf.data.Dataset.from_tensor_slices(
      (tf.constant(paths, tf.string), tf.constant(labels, tf.int32)))
  num_images = len(paths)
  if input_context is not None and input_context.num_input_pipelines > 1:
    # Equal shards: workers that run out of batches first hang the others'
    # collective ops.
    shards = input_context.num_input_pipelines
    ds = ds.shard(shards, input_context.input_pipeline_id)
    num_images //= shards
    ds = ds.take(num_images)
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  if drop_remainder is None:
    # A split smaller than one batch still gives one (smaller) batch.
    drop_remainder = training and num_images >= batch_size
  # Evaluation decodes exactly as serving does (float pixels, exact IDCT),
  # so reports match the exported models.
  if training:
    all_jpeg = all(os.path.splitext(p)[1].lower() in JPEG_EXTENSIONS
                   for p in paths)
    decode_fn = lambda p, size, c: _decode_uint8(p, size, c, all_jpeg)
  else:
    decode_fn = decode_and_resize
  cache = resolve_cache(cache, num_images, image_size,
                        channels * (1 if training else 4))
  map_options = dict(num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=deterministic)
  decode = lambda p, y: (decode_fn(p, image_size, channels),
                         tf.one_hot(y, num_classes))

  if cache is not None:
    ds = ds.map(decode, **map_options)
    if cache != "memory" and input_context is not None:
      cache = f"{cache}_{input_context.input_pipeline_id}"
    ds = ds.cache("" if cache == "memory" else cache)
  if training:
    ds = ds.shuffle(min(num_images, 50_000), seed=seed,
                    reshuffle_each_iteration=True)
  if training and augment != "none":
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, seeds)
    if cache is None and all_jpeg:
      # Streaming JPEGs: decode only the part the shift keeps (0.92x the
      # decode+resize limit of experiments/bench_input_pipeline.py; decode,
      # then augment measured 0.84x).
      ds = ds.map(lambda py, s: (decode_augment_jpeg(
          py[0], s, image_size, channels, flip=flip),
                                 tf.one_hot(py[1], num_classes)),
                  **map_options)
    else:
      augment_pair = lambda xy, s: (augment_image(xy[0], s, flip=flip), xy[1])
      if cache is None:  # Decode and augment in one map.
        ds = ds.map(lambda py, s: augment_pair(decode(*py), s), **map_options)
      else:
        ds = ds.map(augment_pair, **map_options)
  elif cache is None:
    ds = ds.map(decode, **map_options)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  augmenter = build_augmenter(augment, seed=seed) if training else None
  mixer = build_mixer(mixup, cutmix, seed=seed) if training else None

  if training:
    # tf.data's autotuner thread costs training on few cores: at the end of
    # an epoch it often holds the last batch back 0.3-0.6 s, and fit from
    # this pipeline measured 0.90x fit from in-memory arrays with it on,
    # 0.99x with it off (2 CPU cores). Off, AUTOTUNE map parallelism means
    # one call per core (at most 16) and prefetch buffers stay small.
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.with_options(options)
  if augmenter is None and mixer is None:
    # Training batches stay uint8: the model casts them as its first op
    # (on an accelerator, a quarter of the host-to-device traffic).
    return ds.prefetch(tf.data.AUTOTUNE)

  def finish(x, y):
    x = tf.cast(x, tf.float32)
    if augmenter is not None:
      x = augmenter(x, training=True)
    if mixer is not None:
      x, y = mixer(x, y)
    return x, y

  ds = ds.map(finish, **map_options)
  return ds.prefetch(tf.data.AUTOTUNE)
