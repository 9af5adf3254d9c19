"""Embedders: a registry backbone with an L2-normalized embedding, and ArcFace.

The model builder of the face embedding task. The embedder maps raw pixels to
a unit vector; two faces of the same person should have a high cosine
similarity. It is trained through `ArcMargin` (additive angular margin, Deng
et al. 2019): logits `s * cos(theta + m)` for the true identity and
`s * cos(theta)` for the others, where theta is the angle between the
embedding and each identity's learned center, or with `BatchHardTriplet`.

The layers and the loss keep their registered Keras names
(`imgrec>ArcMargin`, `imgrec>BatchHardTriplet`), so files saved when they
lived in `imgrec.faces.model` still load.
"""

import hashlib
import math

import keras
import numpy as np
from keras import ops

from imgrec.models import registry


@keras.saving.register_keras_serializable(package="imgrec")
class ArcMargin(keras.layers.Layer):
  """Additive angular margin logits of unit embeddings against class centers.

  Args:
    num_classes: identities in training.
    scale: `s`, the radius of the hypersphere (64 in ArcFace for 85k
      identities; 30 suits tens of identities).
    margin: `m` in radians (0.5 in ArcFace).
    **kwargs: Base `keras.layers.Layer` arguments.

  Call arguments:
    inputs: `[embeddings [B, D] (unit length), labels [B] int]`.
  """

  def __init__(self, num_classes, scale=30.0, margin=0.5, **kwargs):
    super().__init__(**kwargs)
    if num_classes < 2:
      raise ValueError(f"ArcMargin needs at least 2 classes. Received: "
                       f"num_classes={num_classes}")
    if not 0 <= margin < math.pi / 2:
      raise ValueError(f"margin must be in [0, pi/2). Received: margin="
                       f"{margin}")
    self.num_classes = int(num_classes)
    self.scale, self.margin = float(scale), float(margin)

  def build(self, input_shape):
    dim = input_shape[0][-1]
    self.centers = self.add_weight(
        name="centers", shape=(dim, self.num_classes),
        initializer="glorot_uniform")

  def call(self, inputs):
    embeddings, labels = inputs
    centers = self.centers / ops.sqrt(
        ops.sum(ops.square(self.centers), axis=0, keepdims=True) + 1e-12)
    cos = ops.clip(ops.matmul(ops.cast(embeddings, "float32"), centers),
                   -1.0 + 1e-7, 1.0 - 1e-7)
    sin = ops.sqrt(1.0 - ops.square(cos))
    cos_m, sin_m = math.cos(self.margin), math.sin(self.margin)
    with_margin = cos * cos_m - sin * sin_m  # cos(theta + m)
    # Past theta = pi - m, cos(theta + m) would grow again: fall back to a
    # linear penalty there (as ArcFace's reference code does).
    threshold = math.cos(math.pi - self.margin)
    with_margin = ops.where(cos > threshold, with_margin,
                            cos - math.sin(math.pi - self.margin) *
                            self.margin)
    one_hot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"),
                          self.num_classes)
    return self.scale * (one_hot * with_margin + (1.0 - one_hot) * cos)

  def compute_output_shape(self, input_shape):
    return (input_shape[0][0], self.num_classes)

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes,
            "scale": self.scale, "margin": self.margin}


def build_embedder(backbone, input_shape, embedding_dim=128, dropout=0.2,
                   **kwargs):
  """A registry model's backbone with an L2-normalized embedding on top.

  Args:
    backbone: a registered model name (`registry.create_backbone`).
    input_shape: (height, width, channels).
    embedding_dim: length of the embedding.
    dropout: dropout rate on the features (before a feature map is
      flattened).
    **kwargs: options of the registry model (weights, ...).

  Returns:
    A `keras.Model` named "embedder": float32 raw pixels in, unit
    embeddings [B, embedding_dim] out.

  Raises:
    ValueError: `embedding_dim` below 2, or what `create_backbone` raises.
  """
  if embedding_dim < 2:
    raise ValueError(f"embedding_dim must be at least 2. Received: "
                     f"embedding_dim={embedding_dim}")
  body = registry.create_backbone(backbone, input_shape, **kwargs)
  features = body.output
  if registry.get_model_cfg(backbone)["features"] == "map":
    # ArcFace's output block (BN, dropout, flatten, dense, BN): the last
    # feature map flattened, not averaged, since where a feature sits on an
    # aligned face says who it is.
    x = keras.layers.BatchNormalization(momentum=0.9, name="features_bn")(
        features)
    x = keras.layers.Dropout(dropout, name="features_dropout")(x)
    features = keras.layers.Flatten(name="features_flat")(x)
  else:
    features = keras.layers.Dropout(dropout, name="features_dropout")(
        features)
  x = keras.layers.Dense(embedding_dim, use_bias=False,
                         name="embedding_dense")(features)
  x = keras.layers.BatchNormalization(momentum=0.9, name="embedding_bn")(x)
  x = keras.layers.Activation("linear", dtype="float32",
                              name="embedding_float32")(x)
  outputs = keras.layers.UnitNormalization(axis=-1, name="embedding")(x)
  return keras.Model(body.input, outputs, name="embedder")


@keras.saving.register_keras_serializable(package="imgrec")
class BatchHardTriplet(keras.losses.Loss):
  """Triplet loss over each batch's hardest pairs (Hermans et al. 2017).

  For every anchor with another image of its person in the batch: the
  farthest such positive and the nearest other person's image,
  `max(0, d(a, p) - d(a, n) + margin)` on unit embeddings (squared
  Euclidean distance = 2 - 2 cos).

  Args:
    margin: the distance margin.
  """

  def __init__(self, margin=0.3, name="batch_hard_triplet", **kwargs):
    super().__init__(name=name, **kwargs)
    self.margin = float(margin)

  def call(self, y_true, y_pred):
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    embeddings = ops.cast(y_pred, "float32")
    distances = 2.0 - 2.0 * ops.matmul(embeddings, ops.transpose(embeddings))
    same = ops.equal(labels[:, None], labels[None, :])
    eye = ops.eye(ops.shape(labels)[0], dtype="bool")
    positive = ops.logical_and(same, ops.logical_not(eye))
    hardest_positive = ops.max(ops.where(positive, distances, -1.0), axis=1)
    hardest_negative = ops.min(ops.where(same, 1e9, distances), axis=1)
    losses = ops.relu(hardest_positive - hardest_negative + self.margin)
    has_positive = ops.cast(ops.any(positive, axis=1), "float32")
    return ops.sum(losses * has_positive) / ops.maximum(
        ops.sum(has_positive), 1.0) * ops.ones_like(losses)

  def get_config(self):
    return {**super().get_config(), "margin": self.margin}


def build_training_model(embedder, num_classes, loss="arcface", scale=30.0,
                         margin=0.5):
  """The model `fit` trains: images and labels in, logits out.

  Args:
    embedder: from `build_embedder`.
    num_classes: training identities.
    loss: "arcface" (margin `margin`), "softmax" (margin 0, the plain
      normalized-softmax baseline) or "triplet" (embeddings out; train with
      `BatchHardTriplet`).
    scale, margin: ArcMargin's.

  Returns:
    A `keras.Model` with inputs {"images", "labels"}.
  """
  images = keras.Input(embedder.input_shape[1:], name="images")
  labels = keras.Input((), dtype="int32", name="labels")
  embeddings = embedder(images)
  if loss == "triplet":  # The loss reads the embeddings themselves.
    return keras.Model({"images": images, "labels": labels}, embeddings,
                       name="face_trainer")
  logits = ArcMargin(num_classes, scale=scale,
                     margin=margin if loss == "arcface" else 0.0,
                     name="arc_margin")([embeddings, labels])
  return keras.Model({"images": images, "labels": labels}, logits,
                     name="face_trainer")


def fingerprint(model):
  """sha256 of a model's weights (values and shapes): which embedder made a
  gallery's vectors, the same for its .keras, SavedModel and TFLite files."""
  digest = hashlib.sha256()
  for w in model.get_weights():
    w = np.ascontiguousarray(w, dtype=np.float32)
    digest.update(str(w.shape).encode())
    digest.update(w.tobytes())
  return digest.hexdigest()
