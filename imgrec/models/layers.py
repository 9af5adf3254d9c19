"""Custom Keras layers used by imgrec models, registered for `.keras` saving."""

import keras
import numpy as np
from keras import ops

# ITU-R BT.601 luma weights, the usual RGB -> grayscale conversion.
_LUMA = (0.299, 0.587, 0.114)


@keras.saving.register_keras_serializable(package="imgrec")
class SobelEdges(keras.layers.Layer):
  """Sobel edge maps of an image, as extra input channels.

  Converts the image to grayscale (BT.601 luma for 3 channels, the channel
  mean otherwise), scales it to 0..1 with `max_value`, and returns three
  channels: the horizontal gradient, the vertical gradient and the gradient
  magnitude. The Sobel response is divided by 4 so the gradients lie in
  [-1, 1], on the scale of normalized pixels. The layer returns only the
  edge channels; models concatenate them to the (normalized) image.

  Borders are padded symmetrically, so a flat image gives zero edges
  everywhere instead of a spurious frame.

  Args:
    max_value: Pixel value of white in the input (255 for raw pixels).
    epsilon: Added under the square root of the magnitude, keeping its
      gradient finite on flat regions.
    **kwargs: Base `keras.layers.Layer` arguments (`name`, `dtype`...).

  Input shape:
    `(batch, height, width, channels)`.

  Output shape:
    `(batch, height, width, 3)`: `[gx, gy, magnitude]`.
  """

  def __init__(self, max_value=255.0, epsilon=1e-6, **kwargs):
    super().__init__(**kwargs)
    if max_value <= 0:
      raise ValueError(
          f"`max_value` must be positive. Received: max_value={max_value}")
    self.max_value = float(max_value)
    self.epsilon = float(epsilon)
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "float32")
    # (kh, kw, in_channels=1, out_channels=2): gx and gy in one conv.
    self._kernel = np.stack([sobel_x, sobel_x.T], axis=-1)[:, :, None, :]

  def call(self, inputs):
    x = ops.cast(inputs, self.compute_dtype)
    if x.shape[-1] == 3:
      luma = ops.convert_to_tensor(_LUMA, dtype=self.compute_dtype)
      gray = ops.sum(x * luma, axis=-1, keepdims=True)
    else:
      gray = ops.mean(x, axis=-1, keepdims=True)
    gray = gray / self.max_value
    gray = ops.pad(gray, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="symmetric")
    kernel = ops.convert_to_tensor(self._kernel, dtype=self.compute_dtype)
    grads = ops.conv(gray, kernel, strides=1, padding="valid") / 4.0
    gx = grads[..., 0:1]
    gy = grads[..., 1:2]
    magnitude = ops.sqrt(gx * gx + gy * gy + self.epsilon)
    return ops.concatenate([gx, gy, magnitude], axis=-1)

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], 3)

  def get_config(self):
    config = super().get_config()
    config.update({"max_value": self.max_value, "epsilon": self.epsilon})
    return config


@keras.saving.register_keras_serializable(package="imgrec")
class PositionEmbedding(keras.layers.Layer):
  """Adds a learned embedding to each position of a token sequence.

  Args:
    stddev: Standard deviation of the truncated-normal initializer (ViT
      uses 0.02: small enough not to swamp the patch embeddings).
    **kwargs: Base `keras.layers.Layer` arguments.

  Input shape:
    `(batch, num_tokens, dim)` with static `num_tokens` and `dim`.

  Output shape:
    Same as the input.
  """

  def __init__(self, stddev=0.02, **kwargs):
    super().__init__(**kwargs)
    self.stddev = float(stddev)

  def build(self, input_shape):
    if input_shape[-2] is None or input_shape[-1] is None:
      raise ValueError("PositionEmbedding needs a static number of tokens and "
                       f"embedding size. Received: input_shape={input_shape}")
    self.embedding = self.add_weight(
        name="embedding",
        shape=(input_shape[-2], input_shape[-1]),
        initializer=keras.initializers.TruncatedNormal(stddev=self.stddev))

  def call(self, inputs):
    return inputs + ops.cast(self.embedding, inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({"stddev": self.stddev})
    return config


@keras.saving.register_keras_serializable(package="imgrec")
class WeightedAverage(keras.layers.Layer):
  """The weighted mean of several same-shaped inputs (an ensemble's vote).

  Args:
    weights: one non-negative number per input; normalized to sum to 1.
    **kwargs: Base `keras.layers.Layer` arguments.
  """

  def __init__(self, weights, **kwargs):
    super().__init__(**kwargs)
    weights = [float(w) for w in weights]
    if not weights or min(weights) < 0 or sum(weights) <= 0:
      raise ValueError("WeightedAverage needs non-negative weights with a "
                       f"positive sum. Received: weights={weights}")
    total = sum(weights)
    self.member_weights = [w / total for w in weights]

  def call(self, inputs):
    if len(inputs) != len(self.member_weights):
      raise ValueError(f"Expected {len(self.member_weights)} inputs. "
                       f"Received: {len(inputs)} inputs")
    out = inputs[0] * self.member_weights[0]
    for x, w in zip(inputs[1:], self.member_weights[1:]):
      out = out + x * w
    return out

  def compute_output_shape(self, input_shape):
    return input_shape[0]

  def get_config(self):
    return {**super().get_config(), "weights": self.member_weights}


@keras.saving.register_keras_serializable(package="imgrec")
class ToChannels(keras.layers.Layer):
  """RGB -> gray (BT.601 luma) or gray -> RGB (repeated), on raw pixels.

  Args:
    channels: 1 or 3, the channels wanted.
    **kwargs: Base `keras.layers.Layer` arguments.
  """

  def __init__(self, channels, **kwargs):
    super().__init__(**kwargs)
    if channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3. Received: channels="
                       f"{channels}")
    self.channels = int(channels)

  def call(self, images):
    have = images.shape[-1]
    if have == self.channels:
      return images
    if self.channels == 3:
      return ops.concatenate([images] * 3, axis=-1)
    luma = ops.convert_to_tensor(np.array(_LUMA, np.float32))
    return ops.sum(images * luma, axis=-1, keepdims=True)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.channels,)

  def get_config(self):
    return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="imgrec")
class FrameDifference(keras.layers.Layer):
  """Differences of consecutive frames of a clip: what moved, and which way.

  Input shape:
    `(batch, frames, height, width, channels)`, frames >= 2.

  Output shape:
    The same: frame t holds `x[t] - x[t - 1]`; frame 0 repeats frame 1's
    difference, so every time step has one.
  """

  def call(self, inputs):
    change = inputs[:, 1:] - inputs[:, :-1]
    return ops.concatenate([change[:, :1], change], axis=1)

  def compute_output_shape(self, input_shape):
    return input_shape


@keras.saving.register_keras_serializable(package="imgrec")
class OpenSetScore(keras.layers.Layer):
  """How known each example looks, from a classifier's embedding and logits.

  The scores of `imgrec.metrics.open_set` (higher: more like the known
  classes) in the graph, so that a served model gives the same number:
  "energy" (logsumexp of the logits), "max_softmax" (the top softmax
  probability) or "prototype" (cosine similarity of the embedding with the
  nearest class prototype; a zero prototype counts as -1).

  Args:
    score: one of "energy", "max_softmax", "prototype".
    prototypes: [C, D] unit class prototypes (for "prototype").
    **kwargs: Base `keras.layers.Layer` arguments.

  Call arguments:
    inputs: `[embeddings [B, D], logits [B, C]]`.

  Returns:
    float32 [B].
  """

  SCORES = ("energy", "max_softmax", "prototype")

  def __init__(self, score, prototypes=None, **kwargs):
    super().__init__(**kwargs)
    if score not in self.SCORES:
      raise ValueError(f"score must be one of {self.SCORES}. Received: "
                       f"score={score!r}")
    if score == "prototype" and prototypes is None:
      raise ValueError("the prototype score needs the class prototypes.")
    self.score = score
    self._initial = (None if prototypes is None else
                     np.asarray(prototypes, np.float32))

  def build(self, input_shape):
    if self._initial is not None:
      self.prototypes = self.add_weight(
          name="prototypes", shape=self._initial.shape, trainable=False,
          initializer=keras.initializers.Constant(self._initial))

  def call(self, inputs):
    embeddings, logits = inputs
    logits = ops.cast(logits, "float32")
    if self.score == "energy":
      return ops.logsumexp(logits, axis=-1)
    if self.score == "max_softmax":
      return ops.max(ops.softmax(logits, axis=-1), axis=-1)
    embeddings = ops.cast(embeddings, "float32")
    unit = embeddings / ops.sqrt(ops.maximum(
        ops.sum(ops.square(embeddings), axis=-1, keepdims=True), 1e-24))
    sims = ops.matmul(unit, ops.transpose(self.prototypes))
    empty = ops.sum(ops.abs(self.prototypes), axis=-1) == 0
    return ops.max(ops.where(empty[None, :], -1.0, sims), axis=-1)

  def compute_output_shape(self, input_shape):
    return (input_shape[1][0],)

  def get_config(self):
    config = {**super().get_config(), "score": self.score}
    if self._initial is not None:
      config["prototypes"] = self._initial.tolist()
    return config


@keras.saving.register_keras_serializable(package="imgrec")
class UnknownColumn(keras.layers.Layer):
  """Class probabilities and an "unknown" column, one decision in one tensor.

  What a TFLite classifier with an open set outputs, so that a client that
  takes the highest score (MediaPipe's ImageClassifier) names "unknown"
  exactly when imgrec does: the unknown column is 1 when the example's
  knownness is below `threshold` (by more than about 5e-7 of it), else 0
  (between the two only within that margin); in a row it decides, the class
  probabilities are halved (at most 0.5, below the 1 of "unknown" even
  after int8 rounding, their order kept), elsewhere they are as they were.

  Args:
    threshold: the knownness an example needs to be answered by its class.
    **kwargs: Base `keras.layers.Layer` arguments.

  Call arguments:
    inputs: `[probabilities [B, C], knownness [B]]`.

  Returns:
    float32 [B, C + 1].
  """

  def __init__(self, threshold, **kwargs):
    super().__init__(**kwargs)
    self.threshold = float(threshold)

  def call(self, inputs):
    probabilities, knownness = inputs
    # A steep ramp, not a comparison: arithmetic that int8 kernels run (a
    # boolean would need a float CAST). 1 below the threshold by more than
    # half a step (about 5e-7 of it), 0 at or above it.
    steep = float(2 ** 20) / max(abs(self.threshold), 1.0)
    gap = ops.expand_dims(self.threshold - ops.cast(knownness, "float32"), -1)
    unknown = ops.minimum(ops.relu(gap * steep), 1.0)
    kept = ops.cast(probabilities, "float32") * (1.0 - 0.5 * unknown)
    return ops.concatenate([kept, unknown], axis=-1)

  def compute_output_shape(self, input_shape):
    batch, classes = input_shape[0]
    return (batch, None if classes is None else classes + 1)

  def get_config(self):
    return {**super().get_config(), "threshold": self.threshold}
