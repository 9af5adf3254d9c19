"""The resize and channel conversion of `imgrec.data.ops`, in NumPy.

Prediction from a TFLite file runs without TensorFlow (`Classifier`,
`imgrec-predict`, `imgrec-stream`); its pixels must still be the ones the
model was trained and evaluated on. These functions compute what
`ops.resize` (`tf.image.resize`, bilinear, half-pixel centres, no
antialiasing) and `ops.to_channels` compute, in the same float32 arithmetic
(`tests/test_pixels.py` holds them to TensorFlow's results).
"""

import numpy as np

# tf.image.rgb_to_grayscale's weights (ITU-R BT.601 luma).
_GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


def _axis_weights(in_size, out_size):
  """Lower and upper source indices and the upper one's weight for each
  output position, as TensorFlow's half-pixel bilinear kernel finds them."""
  scale = np.float32(in_size) / np.float32(out_size)
  centre = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
  centre = centre - np.float32(0.5)
  floor = np.floor(centre)
  lower = np.maximum(floor, 0).astype(np.int64)
  upper = np.minimum(np.ceil(centre), in_size - 1).astype(np.int64)
  return lower, upper, (centre - floor).astype(np.float32)


def resize(image, size):
  """Resizes [..., H, W, C] images to `size` = (height, width): float32.

  `tf.image.resize(image, size, method="bilinear")`: each output pixel
  interpolates the four source pixels around its centre, first along the
  rows, then between them.
  """
  image = np.asarray(image)
  height, width = int(size[0]), int(size[1])
  y0, y1, dy = _axis_weights(image.shape[-3], height)
  x0, x1, dx = _axis_weights(image.shape[-2], width)
  dx = dx[:, None]
  rows_top = np.take(image, y0, axis=-3).astype(np.float32)
  rows_bottom = np.take(image, y1, axis=-3).astype(np.float32)

  def along_x(rows):
    left = np.take(rows, x0, axis=-2)
    return left + (np.take(rows, x1, axis=-2) - left) * dx

  top, bottom = along_x(rows_top), along_x(rows_bottom)
  return top + (bottom - top) * dy[:, None, None]


def to_channels(image, channels):
  """An [..., 3] or [..., 1] image with `channels` channels (its dtype kept):
  gray is the rounded BT.601 luma of RGB, RGB the gray value repeated."""
  image = np.asarray(image)
  have = image.shape[-1]
  if have == channels:
    return image
  if channels == 1:
    luma = image.astype(np.float32) @ _GRAY_WEIGHTS
    return np.round(luma)[..., None].astype(image.dtype)
  return np.repeat(image, 3, axis=-1)


def composite_on_white(rgba):
  """uint8 RGB of an [..., 4] image (8-bit, or wider integers in 0..255)
  composited on white: the policy's one integer formula."""
  rgba = np.asarray(rgba, np.int64)
  rgb, alpha = rgba[..., :3], rgba[..., 3:]
  return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def preprocess(examples, image_size, channels):
  """uint8 examples of any size (images [H, W, 3], clips [T, H, W, 3]) ->
  the float32 batch a model takes ([N, ..., height, width, channels]): what
  the input pipeline's evaluation gives for the same pixels."""
  return np.stack([resize(to_channels(x, channels), image_size)
                   for x in examples])
