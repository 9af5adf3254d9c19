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

import dataclasses
import os

import tensorflow as tf

from imgrec.config import AUGMENT_LEVELS
from imgrec.config import FLIP_MODES
from imgrec.data import augment as augment_lib
from imgrec.data import decode as decode_lib
from imgrec.data import ops
from imgrec.errors import ImgrecError

# `cache="auto"` keeps decoded images in memory only below this share of the
# memory available when the pipeline is built.
AUTO_CACHE_MEMORY_FRACTION = 0.25


def dct_matters(shorter_sides, image_size):
  """Whether any image is large enough to decode DCT-scaled for `image_size`.

  With None (sizes unknown) the answer is yes: each JPEG then decides in the
  graph, at some cost per image.
  """
  if not decode_lib.DCT_SCALING:
    return False
  if shorter_sides is None:
    return True
  # Half scale keeps the target when ceil(side / 2) >= it (libjpeg rounds
  # sizes up).
  need = 2 * max(int(s) for s in image_size) - 1
  return any(side >= need for side in shorter_sides)


def decode_and_resize(path, image_size, channels=3, plain=False, dct=True):
  """Reads one file under the decode policy; float32 [H, W, channels] pixels.

  Evaluation decodes this way, as serving does; training uses the same
  resize.

  Args:
    path: the image file.
    image_size: (height, width).
    channels: 1 or 3.
    plain: the data scan found the file plain (or made it so): TensorFlow's
      ordinary decoder gives the policy's pixels, and its graph is a
      fraction of the policy decoder's.
    dct: some image may decode DCT-scaled (`dct_matters`).
  """
  contents = tf.io.read_file(path)
  target = image_size if dct else None
  if plain:
    image = ops.to_channels(decode_plain(
        contents, target_size=target, dct_method=decode_lib.EXACT_IDCT),
                            channels)
  else:
    image = decode_lib.decode_bytes(contents, channels, target_size=target)
  return ops.resize(image, image_size)


def decode_plain(contents, all_jpeg=False, target_size=None,
                 dct_method="INTEGER_FAST"):
  """Decodes a plain file's bytes: uint8 RGB [H, W, 3].

  Plain files are those TensorFlow's ordinary decoder reads as the decode
  policy says (the scan converts the others once). Training decodes JPEGs
  with the fast integer IDCT: within a level or two of the exact decode,
  well under the augmentation noise, and quicker; evaluation passes the
  exact one (`decode.EXACT_IDCT`, the policy's pixels). With `target_size` a JPEG is decoded DCT-scaled, as the
  decode policy says. For an all-JPEG file list the per-image format test
  (a tf.cond) is skipped.
  """
  fast_jpeg = lambda: decode_lib.decode_jpeg_for(contents, target_size,
                                                 dct_method)
  if all_jpeg:
    image = fast_jpeg()
  else:
    image = tf.cond(
        tf.io.is_jpeg(contents), fast_jpeg,
        lambda: tf.io.decode_image(contents, channels=3,
                                   expand_animations=False))
  image.set_shape([None, None, 3])
  return image


def decode_train(path, image_size, channels, all_jpeg=False, dct=True):
  """`decode_plain` of a file, resized to uint8 [height, width, channels]."""
  image = decode_plain(tf.io.read_file(path), all_jpeg,
                       image_size if dct else None)
  return ops.resize_uint8(ops.to_channels(image, channels), image_size)


def available_memory():
  """Bytes of memory available now (MemAvailable on Linux)."""
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024
  except (OSError, KeyError, ValueError):
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def plan_cache(cache, *, num_images, image_size, bytes_per_pixel,
               epochs=None):
  """Decides where decoded images are kept: "memory", a file prefix or None.

  This is the only place the cache policy lives. "auto" means memory when
  the decoded split takes under AUTO_CACHE_MEMORY_FRACTION of the
  available memory and the data is read more than once; one pass (one
  epoch, or evaluation) streams, since a cache would only cost memory and
  streamed JPEGs decode less (only what the augmentation keeps).

  Args:
    cache: "auto", "memory", "none"/None, or a file path prefix.
    num_images: images in the split.
    image_size: (height, width).
    bytes_per_pixel: bytes per pixel and channel times channels.
    epochs: how many times the split is read; None: unknown (more than once).
  """
  if cache in (None, "none", ""):
    return None
  if cache != "auto":
    return cache
  if epochs == 1:
    return None
  needed = num_images * image_size[0] * image_size[1] * bytes_per_pixel
  fits = needed < AUTO_CACHE_MEMORY_FRACTION * available_memory()
  return "memory" if fits else None


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
  """How one split becomes batches: size, batching, augmentation and cache.

  Attributes:
    num_classes: width of the one-hot labels.
    image_size: (height, width) the images are resized to.
    batch_size: examples per (global) batch.
    channels: 1 or 3.
    training: shuffle every epoch and augment.
    augment: one of imgrec.config.AUGMENT_LEVELS (training only).
    flip: one of imgrec.config.FLIP_MODES ("none" for digits and text).
    mixup: MixUp alpha for training batches (0: off).
    cutmix: CutMix alpha for training batches (0: off).
    seed: seed of the shuffle and the augmentation.
    cache: "auto", "memory", a file path prefix, or None/"none"; see
      `plan_cache`.
    epochs: how many epochs will read the dataset (for `plan_cache`).
    deterministic: keep element order under parallel maps (reproducible
      runs); off is faster.
    drop_remainder: defaults to `training`, unless the split is smaller than
      one batch.
    scanned: the files went through the data scan, which leaves only files
      TensorFlow's plain decoder reads as the decode policy says; else every
      file is decoded under the full policy.
    multi_hot: the split's labels are label vectors ([num_classes] 0/1 rows,
      multi-label) instead of class indices; batches carry them as float32
      (MixUp and CutMix mix them as they mix one-hot rows).
  """
  num_classes: int
  image_size: tuple
  batch_size: int
  channels: int = 3
  training: bool = False
  augment: str = "light"
  flip: str = "horizontal"
  mixup: float = 0.0
  cutmix: float = 0.0
  seed: int = 0
  cache: str | None = None
  epochs: int | None = None
  deterministic: bool = True
  drop_remainder: bool | None = None
  scanned: bool = True
  multi_hot: bool = False

  def __post_init__(self):
    object.__setattr__(self, "image_size",
                       tuple(int(s) for s in self.image_size))
    if self.augment not in AUGMENT_LEVELS:
      raise ImgrecError(f"augment must be one of {AUGMENT_LEVELS}. "
                        f"Received: augment={self.augment!r}")
    if self.flip not in FLIP_MODES:
      raise ImgrecError(f"flip must be one of {FLIP_MODES}. "
                        f"Received: flip={self.flip!r}")

  def targets(self, labels):
    """The float32 target rows of a split's labels."""
    if self.multi_hot:
      return tf.constant(labels, tf.float32, shape=[len(labels),
                                                    self.num_classes])
    return tf.one_hot(tf.constant(labels, tf.int32), self.num_classes)

  @property
  def map_options(self):
    return dict(num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=self.deterministic)

  def drops_remainder(self, num_images, batch_size):
    """`drop_remainder`, or by default: training on at least one batch."""
    if self.drop_remainder is not None:
      return self.drop_remainder
    # A split smaller than one batch still gives one (smaller) batch.
    return self.training and num_images >= batch_size


def make_dataset(split, spec, *, input_context=None, pixels=None):
  """Builds the input pipeline of one split.

  Args:
    split: a `folder.Split`: image file paths and integer labels; its
      `pixel_rows` (with `pixels`) and `shorter_sides` when the data scan
      gave them.
    spec: a `PipelineSpec`.
    input_context: a tf.distribute.InputContext: read this input pipeline's
      shard of the files and batch per replica.
    pixels: the images, already decoded and resized (a uint8 tensor
      [M, height, width, channels] the data scan filled); with the split's
      `pixel_rows` (each path's row in it), no file is read. Shuffled by
      index, so nothing is copied into a shuffle buffer.

  Returns:
    A tf.data.Dataset of (images [B, H, W, C], float32 [B, num_classes]).
    Images are raw 0..255 pixels: uint8 for training without batch-level
    augmentation or mixing, float32 otherwise.
  """
  if pixels is not None and split.pixel_rows is not None:
    return _from_pixels(pixels, split.pixel_rows, list(split.labels), spec,
                        input_context)
  paths, labels = list(split.paths), list(split.labels)
  ds = tf.data.Dataset.from_tensor_slices(
      (tf.constant(paths, tf.string), spec.targets(labels)))
  ds, num_images, batch_size = _shard(ds, len(paths), spec.batch_size,
                                      input_context)
  # Evaluation decodes exactly as serving does (float pixels, exact IDCT),
  # so reports match the exported models.
  all_jpeg = spec.scanned and all(
      os.path.splitext(p)[1].lower() in decode_lib.JPEG_EXTENSIONS
      for p in paths)
  dct = dct_matters(split.shorter_sides, spec.image_size)
  decode_fn = _decode_fn(spec, all_jpeg, dct)
  cache = plan_cache(spec.cache, num_images=num_images,
                     image_size=spec.image_size,
                     bytes_per_pixel=spec.channels * (
                         1 if spec.training else 4),
                     epochs=spec.epochs)
  decode = lambda p, y: (decode_fn(p), y)
  if cache is not None:
    ds = ds.map(decode, **spec.map_options)
    if cache != "memory" and input_context is not None:
      cache = f"{cache}_{input_context.input_pipeline_id}"
    ds = ds.cache("" if cache == "memory" else cache)
  if spec.training:
    ds = ds.shuffle(min(num_images, 50_000), seed=spec.seed,
                    reshuffle_each_iteration=True)
  if spec.training and spec.augment != "none":
    ds = _augmented(ds, spec, None if cache is not None else decode,
                    all_jpeg, dct)
  elif cache is None:
    ds = ds.map(decode, **spec.map_options)
  return _batch_and_finish(ds, spec, batch_size,
                           spec.drops_remainder(num_images, batch_size))


def _decode_fn(spec, all_jpeg, dct):
  """`fn(path)`: one file's pixels at the spec's size, as the split needs."""
  size, channels = spec.image_size, spec.channels
  if spec.training and spec.scanned:
    return lambda p: decode_train(p, size, channels, all_jpeg, dct)
  if spec.training:
    return lambda p: ops.resize_uint8(decode_lib.decode_bytes(
        tf.io.read_file(p), channels, target_size=size), size)
  return lambda p: decode_and_resize(p, size, channels, spec.scanned, dct)


def _augmented(ds, spec, decode, all_jpeg, dct):
  """Per-image augmentation of (path, target row) or, when cached, (image,
  target row).

  Args:
    ds: the dataset.
    spec: the PipelineSpec.
    decode: `fn(path, target)` when the elements are files to decode, else
      None.
    all_jpeg: every file is a JPEG the plain decoder reads.
    dct: some image may decode DCT-scaled.
  """
  seeds = tf.data.Dataset.random(seed=spec.seed,
                                 rerandomize_each_iteration=True)
  ds = tf.data.Dataset.zip(ds, seeds)
  if decode is not None and all_jpeg:
    # Streaming JPEGs: decode only the part the shift keeps (0.92x the
    # decode+resize limit of experiments/bench_input_pipeline.py; decode,
    # then augment measured 0.84x).
    return ds.map(lambda py, s: (augment_lib.decode_augment_jpeg(
        py[0], s, spec.image_size, spec.channels, flip=spec.flip, dct=dct),
                                 py[1]),
                  **spec.map_options)
  augment_pair = lambda xy, s: (
      augment_lib.augment_image(xy[0], s, flip=spec.flip), xy[1])
  if decode is not None:  # Decode and augment in one map.
    return ds.map(lambda py, s: augment_pair(decode(*py), s),
                  **spec.map_options)
  return ds.map(augment_pair, **spec.map_options)


def _shard(ds, num_images, batch_size, input_context):
  """This input pipeline's equal shard; (ds, num_images, batch size)."""
  if input_context is None or input_context.num_input_pipelines <= 1:
    return ds, num_images, batch_size
  # Equal shards: workers that run out of batches first hang the others'
  # collective ops.
  shards = input_context.num_input_pipelines
  num_images //= shards
  ds = ds.shard(shards, input_context.input_pipeline_id).take(num_images)
  return ds, num_images, input_context.get_per_replica_batch_size(batch_size)


def _from_pixels(pixels, pixel_rows, labels, spec, input_context):
  """`make_dataset` over images already decoded into a uint8 tensor."""
  store = tf.convert_to_tensor(pixels, tf.uint8)
  rows = tf.constant(list(pixel_rows), tf.int64)
  targets = spec.targets(labels)
  return indexed_dataset(
      len(pixel_rows), lambda i: (tf.gather(store, tf.gather(rows, i)),
                                  tf.gather(targets, i)),
      spec, input_context=input_context)


def indexed_dataset(num_examples, take, spec, *, input_context=None,
                    augment_one=None, batch_augment=True):
  """Batches of examples read by their index: decoded images, cached clips.

  The image pipeline's sharding, shuffling (of indices, so nothing is copied
  into a shuffle buffer), per-example augmentation, batching, batch-level
  augmentation and mixing, for any example `take` reads.

  Args:
    num_examples: how many examples the split holds.
    take: `fn(index)` -> (example, one-hot label), on an int64 scalar tensor.
    spec: a `PipelineSpec`.
    input_context: a tf.distribute.InputContext (see `make_dataset`).
    augment_one: `fn(example, seed)` -> example, the per-example training
      augmentation; default: `imgrec.data.augment.augment_image` with the
      spec's flip.
    batch_augment: apply the spec's batch-level augmentation (image
      batches only).

  Returns:
    A tf.data.Dataset of (examples [B, ...], float32 [B, num_classes]).
  """
  ds, num_examples, batch_size = _shard(
      tf.data.Dataset.range(num_examples), num_examples, spec.batch_size,
      input_context)
  if spec.training:
    ds = ds.shuffle(max(num_examples, 1), seed=spec.seed,
                    reshuffle_each_iteration=True)
  if spec.training and spec.augment != "none":
    augment_one = augment_one or (lambda x, s: augment_lib.augment_image(
        x, s, flip=spec.flip))
    seeds = tf.data.Dataset.random(seed=spec.seed,
                                   rerandomize_each_iteration=True)

    def take_augmented(i, seed):
      x, y = take(i)
      return augment_one(x, seed), y

    ds = tf.data.Dataset.zip(ds, seeds).map(take_augmented,
                                            **spec.map_options)
  else:
    ds = ds.map(take, **spec.map_options)
  return _batch_and_finish(ds, spec, batch_size,
                           spec.drops_remainder(num_examples, batch_size),
                           batch_augment=batch_augment)


def _batch_and_finish(ds, spec, batch_size, drop_remainder,
                      batch_augment=True):
  """Batches, then batch-level augmentation and mixing, then prefetch."""
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  augmenter = mixer = None
  if spec.training:
    if batch_augment:
      augmenter = augment_lib.build_augmenter(spec.augment, seed=spec.seed)
    mixer = augment_lib.build_mixer(spec.mixup, spec.cutmix, seed=spec.seed)
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

  ds = ds.map(finish, **spec.map_options)
  return ds.prefetch(tf.data.AUTOTUNE)
