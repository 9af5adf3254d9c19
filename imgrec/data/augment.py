"""Training augmentation: per-image flip and shift, batch-level Keras layers, mixing.

Per-image ops are pure functions of a uint8 image and one random int64
(`Dataset.random` gives it), so they run inside tf.data without a random op
per image; batch-level augmentation uses Keras preprocessing layers
(RandomRotation, RandAugment, RandomErasing, MixUp, CutMix).
"""

import keras
import tensorflow as tf

from imgrec.config import AUGMENT_LEVELS
from imgrec.config import FLIP_MODES
from imgrec.data import decode
from imgrec.data import ops


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

  def projective(rotation, zoom, contrast):
    return [
        layers.RandomRotation(rotation, fill_mode="reflect", seed=seed,
                              name="rotation"),
        layers.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed,
                          name="zoom"),
        layers.RandomContrast(contrast, value_range=(0, 255), seed=seed,
                              name="contrast"),
    ]

  erasing = layers.RandomErasing(factor=0.25, value_range=(0, 255),
                                 seed=seed, name="erasing")
  if level == "medium":
    stack = projective(0.05, 0.15, 0.15)
  elif level == "heavy":
    stack = projective(0.1, 0.25, 0.3) + [
        layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed,
                                name="brightness"), erasing]
  else:
    stack = [layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5,
                                seed=seed, name="randaugment"), erasing]
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
                        flip="horizontal", shift_fraction=0.125, dct=True):
  """`augment_image(decode + resize)` of a JPEG, decoding only what is kept.

  The shift drops a strip of the resized image; here the matching window of
  the JPEG is the only part decoded (`decode_and_crop_jpeg`) and resized, so
  a streaming epoch (no cache) does less than a plain decode + resize. Same
  random draws as `augment_image` for the same seed; pixels differ only by
  the rounding of the window to whole source pixels.

  A JPEG the decode policy decodes DCT-scaled (at least twice the size of
  the result) is decoded scaled and then augmented instead: the scaled
  decode already does a fraction of the work.

  Args:
    path: JPEG file path (string scalar).
    seed: int64 scalar with 32 uniformly random low bits.
    image_size: (height, width) of the result.
    channels: 1 or 3.
    flip: one of FLIP_MODES.
    shift_fraction: largest shift, as a fraction of each side.
    dct: some image may be large enough for a DCT-scaled decode (else the
      choice is left out of the graph).

  Returns:
    uint8 [height, width, channels].
  """
  contents = tf.io.read_file(path)
  shape = tf.io.extract_jpeg_shape(contents)
  if not (dct and decode.DCT_SCALING):
    return _decode_crop_augment(contents, shape, seed, image_size, channels,
                                flip, shift_fraction)

  def scaled():
    image = decode.decode_jpeg_for(contents, image_size, "INTEGER_FAST")
    return augment_image(ops.resize_uint8(ops.to_channels(image, channels),
                                          image_size), seed, flip=flip,
                         shift_fraction=shift_fraction)

  image = tf.cond(
      decode.ratio_index_of_shape(shape, image_size) > 0, scaled,
      lambda: _decode_crop_augment(contents, shape, seed, image_size,
                                   channels, flip, shift_fraction))
  image.set_shape([*image_size, channels])
  return image


def _decode_crop_augment(contents, shape, seed, image_size, channels, flip,
                         shift_fraction):
  """The fused crop decode of `decode_augment_jpeg` (`shape`: the JPEG's)."""
  h, w = image_size
  flip_lr, flip_ud, dy, dx = _flip_and_shift(seed, (h, w), flip,
                                             shift_fraction)
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
  kept = ops.resize_uint8(ops.to_channels(image, channels),
                       tf.stack([kept_h, kept_w]))
  return _pad_and_flip(kept, (h, w), dy, dx, flip_lr, flip_ud)
