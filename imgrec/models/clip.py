"""Clip classifiers: a registry model on every frame, then a model over time.

    model = build_clip_model("simple_cnn", num_classes=6,
                             clip_shape=(16, 64, 64, 3), temporal="gru")

The frame model is any registered model's backbone (`registry.create_backbone`,
from scratch or a keras.applications backbone). Its last feature map is kept
as a coarse grid rather than averaged away, so where things are, and so how
they move, reaches the model over time (a backbone without a feature map
gives its feature vector):

- gru / lstm: a recurrent layer over the frame features (unrolled: the clip
  length is fixed, and unrolled layers convert to TFLite builtins; a rolled
  loop over a dynamic batch needs Select TF ops);
- attention: a small transformer block over the frames with learned
  positions, then the average over time;
- average: the mean of the frame features over time, which knows nothing of
  order.

Beside the frame model, a motion stream (on by default) runs a CNN on each
frame and its difference from the previous one, whose signs show which way
things move at each step. Without it (and with `average`) a clip model sees only
a bag of frames: the baseline that cannot tell motion directions.
"""

import keras
from keras import layers

from imgrec.config import TEMPORAL_MODELS
from imgrec.models import registry
from imgrec.models.layers import FrameDifference
from imgrec.models.layers import PositionEmbedding

# Side of the grid the frame model's last feature map is pooled to.
_GRID = 4
# Channels of that grid (a 1x1 convolution), before flattening.
_GRID_CHANNELS = 32


def _grid(x, prefix):
  """A feature map pooled to a coarse grid, narrowed and flattened."""
  height, width = int(x.shape[1]), int(x.shape[2])
  pool = (max(1, height // _GRID), max(1, width // _GRID))
  if pool != (1, 1):
    x = layers.AveragePooling2D(pool, name=f"{prefix}grid_pool")(x)
  x = layers.Conv2D(_GRID_CHANNELS, 1, activation="relu",
                    name=f"{prefix}grid_reduce")(x)
  return layers.Flatten(name=f"{prefix}grid_flat")(x)


def frame_features(frame_model_name, frame_shape, units, **kwargs):
  """A registry model's backbone, giving one feature vector a frame.

  A feature map is pooled to a coarse grid; a feature vector is used as it
  is (`get_model_cfg(name)["features"]`).

  Returns:
    A keras.Model named "frame_features": float32 raw pixels [H, W, C] in,
    [units] features out.
  """
  backbone = registry.create_backbone(frame_model_name, frame_shape, **kwargs)
  x = backbone.output
  if registry.get_model_cfg(frame_model_name)["features"] == "map":
    x = _grid(x, "")
  x = layers.Dense(units, activation="relu", name="frame_dense")(x)
  return keras.Model(backbone.input, x, name="frame_features")


def motion_features(frame_shape, units):
  """A CNN on a frame and its difference from the previous one.

  Where a moving edge leaves and where it arrives shows in the difference
  as a pair of opposite signs, and the frame beside it says which side is
  the object (the "RGB difference" input of Temporal Segment Networks). A
  shift shows the same signs along every edge, but a turn or a zoom shows
  them arranged around the object's centre: its sense is a property of the
  whole pattern, not of one edge. So the stream is as deep as a small
  classifier (VGG-style stages, pooled until the map is at most 8 pixels a
  side: its receptive field spans the object) and ends both in a coarse
  grid (where the change is) and in global max and average pooling (what
  the change is, wherever it is). With 3 convolutions and no global
  pooling, a 6-class motion model never told clockwise from
  counterclockwise (chance, also on its training clips); this one does
  (experiments/clip_benchmark.py).

  Args:
    frame_shape: (height, width, 2 * channels): frame, then difference.
    units: features a step.
  """
  inputs = keras.Input(frame_shape, name="frame_and_change")
  x = layers.Rescaling(1.0 / 64.0, name="motion_scale")(inputs)
  # Like simple_cnn: a strided first convolution for 64 pixels and up.
  stride = 2 if min(frame_shape[:2]) >= 64 else 1
  stages = [(32, 2), (64, 2), (128, 1)]
  side = min(frame_shape[:2]) // stride
  for _ in range(3):
    side = (side + 1) // 2
  while side > 8:
    stages.append((128, 1))
    side = (side + 1) // 2
  conv = 0
  for stage, (width, depth) in enumerate(stages):
    for _ in range(depth):
      x = layers.Conv2D(width, 3, strides=stride if conv == 0 else 1,
                        padding="same", use_bias=False,
                        name=f"motion_conv{conv}")(x)
      x = layers.BatchNormalization(momentum=0.9, name=f"motion_bn{conv}")(x)
      x = layers.ReLU(name=f"motion_relu{conv}")(x)
      conv += 1
    x = layers.MaxPooling2D(2, padding="same", name=f"motion_pool{stage}")(x)
  x = layers.Concatenate(name="motion_grid_and_pool")([
      _grid(x, "motion_"),
      layers.GlobalMaxPooling2D(name="motion_max")(x),
      layers.GlobalAveragePooling2D(name="motion_average")(x)])
  x = layers.Dense(units, activation="relu", name="motion_dense")(x)
  return keras.Model(inputs, x, name="motion_features")


def build_clip_model(frame_model_name, num_classes, clip_shape, *,
                     temporal="gru", units=128, dropout=0.2, motion=True,
                     **kwargs):
  """A clip classifier over a registry frame model.

  Args:
    frame_model_name: a registered model name.
    num_classes: output classes.
    clip_shape: (frames, height, width, channels).
    temporal: one of TEMPORAL_MODELS.
    units: width of the frame features and of the model over time.
    dropout: dropout before the classifier.
    motion: add the motion stream (`motion_features` on the differences of
      consecutive frames) beside the frame model.
    **kwargs: options of the registry model (weights, freeze_backbone...).

  Returns:
    A keras.Model named "clip_classifier": float32 raw pixels [B, T, H, W,
    C] in, softmax probabilities [B, num_classes] out.
  """
  if temporal not in TEMPORAL_MODELS:
    raise ValueError(f"temporal must be one of {TEMPORAL_MODELS}. Received: "
                     f"temporal={temporal!r}")
  frame = frame_features(frame_model_name, tuple(clip_shape[1:]), units,
                         **kwargs)
  inputs = keras.Input(clip_shape, name="clip")
  x = layers.TimeDistributed(frame, name="per_frame")(inputs)
  if motion:
    # The frame beside its change: whether an edge that moved is the
    # object's leading or trailing edge depends on which is brighter.
    change = layers.Concatenate(name="frame_and_change")(
        [inputs, FrameDifference(name="frame_difference")(inputs)])
    moved = layers.TimeDistributed(
        motion_features((*clip_shape[1:3], 2 * clip_shape[3]), units),
        name="per_step")(change)
    x = layers.Concatenate(name="appearance_and_motion")([x, moved])
    x = layers.Dense(units, activation="relu", name="step_dense")(x)
  if temporal == "gru":
    x = layers.GRU(units, unroll=True, name="gru")(x)
  elif temporal == "lstm":
    x = layers.LSTM(units, unroll=True, name="lstm")(x)
  elif temporal == "attention":
    x = PositionEmbedding(name="time_position")(x)
    heads = max(1, units // 32)
    y = layers.MultiHeadAttention(heads, units // heads, name="time_attention")(
        x, x)
    x = layers.LayerNormalization(name="attention_norm")(
        layers.Add(name="attention_residual")([x, y]))
    y = layers.Dense(units * 2, activation="gelu", name="mlp_expand")(x)
    y = layers.Dense(units, name="mlp_project")(y)
    x = layers.LayerNormalization(name="mlp_norm")(
        layers.Add(name="mlp_residual")([x, y]))
    x = layers.GlobalAveragePooling1D(name="time_average")(x)
  else:
    x = layers.GlobalAveragePooling1D(name="time_average")(x)
  if dropout > 0:
    x = layers.Dropout(dropout, name="head_dropout")(x)
  outputs = layers.Dense(num_classes, activation="softmax", dtype="float32",
                         name="predictions")(x)
  return keras.Model(inputs, outputs, name="clip_classifier")
