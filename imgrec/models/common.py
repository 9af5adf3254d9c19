"""Pieces shared by the model builders: argument checks, input stem."""

import keras
from keras import layers

from imgrec.models.layers import SobelEdges
from imgrec.models.registry import IMAGENET_MEAN
from imgrec.models.registry import IMAGENET_STD


def check_dropout(dropout):
  """Raises ValueError unless `dropout` is a rate in [0, 1)."""
  if (isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or
      not 0.0 <= dropout < 1.0):
    raise ValueError(
        f"`dropout` must be a float in [0, 1). Received: dropout={dropout!r}")


def check_bool(value, arg_name):
  """Raises ValueError unless `value` is a bool."""
  if not isinstance(value, bool):
    raise ValueError(
        f"`{arg_name}` must be True or False. Received: {arg_name}={value!r}")


def check_positive_int(value, arg_name):
  """Raises ValueError unless `value` is an int >= 1."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"`{arg_name}` must be a positive integer. "
                     f"Received: {arg_name}={value!r}")


def normalization_stats(channels):
  """Returns per-channel (mean, variance) in pixel units for `channels`.

  Three channels get the ImageNet RGB statistics; any other count gets the
  average of those repeated, which is what a grayscale version of an
  ImageNet-like image would have.
  """
  if channels == 3:
    mean, std = IMAGENET_MEAN, IMAGENET_STD
  else:
    mean = (sum(IMAGENET_MEAN) / 3.0,) * channels
    std = (sum(IMAGENET_STD) / 3.0,) * channels
  return list(mean), [s * s for s in std]


def scratch_stem(input_shape, edges):
  """Builds the raw-pixel input and normalization shared by scratch models.

  Args:
    input_shape: `(height, width, channels)`.
    edges: Whether to concatenate `SobelEdges` channels (computed from the
      raw pixels) to the normalized image.

  Returns:
    `(inputs, x)`: the `keras.Input` named `"image"` and the normalized
    tensor with `channels` (+3 with edges) channels.
  """
  check_bool(edges, "edges")
  inputs = keras.Input(shape=input_shape, name="image")
  mean, variance = normalization_stats(input_shape[-1])
  x = layers.Normalization(
      mean=mean, variance=variance, name="normalize")(inputs)
  if edges:
    e = SobelEdges(name="sobel_edges")(inputs)
    x = layers.Concatenate(name="concat_edges")([x, e])
  return inputs, x
