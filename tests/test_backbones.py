"""Tests for the backbone API: every registered model as a classifier, a
backbone, a clip model and a face embedder (timm's tests over every model)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import _model_cases as model_cases
from imgrec import models
from imgrec.models import clip
from imgrec.models import embedding
from imgrec.run_folder import RunFolder
from imgrec.training import finetune

NUM_CLASSES = 3
NAMES = models.list_models()
TRANSFER = models.list_models("transfer")
# The big keras.applications backbones take seconds to build and
# differentiate: one of them runs in the fast set, all in the whole suite.
FAST_TRANSFER = "mobilenet_v3_small"
EVERY_MODEL_FAST_ENOUGH = [
    pytest.param(n, marks=pytest.mark.slow)
    if n in TRANSFER and n != FAST_TRANSFER else n for n in NAMES]
FEATURE_RANK = {"map": 4, "vector": 2}


def _shape(name):
  """A tiny RGB input the model takes: its min_size, 8 pixels at least
  (vit_tiny's 4-pixel patches)."""
  side = max(models.get_model_cfg(name)["min_size"], 8)
  return (side, side, 3)


_kwargs = model_cases.model_kwargs


def _pixels(shape, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0, 255, (batch, *shape)).astype("float32")


def assert_every_weight_learns(model, inputs, loss_fn):
  """One training-mode step's loss gives every trainable weight a finite
  gradient; returns the outputs of that step.

  training=True, so BatchNorm uses batch statistics and dropout is live:
  the path a fit() step differentiates.
  """
  assert model.trainable_weights
  with tf.GradientTape() as tape:
    outputs = model(inputs, training=True)
    loss = loss_fn(outputs)
  grads = tape.gradient(loss, model.trainable_weights)
  missing = [w.path for w, g in zip(model.trainable_weights, grads)
             if g is None]
  assert not missing, f"no gradient for {missing}"
  bad = [w.path for w, g in zip(model.trainable_weights, grads)
         if not np.all(np.isfinite(g))]
  assert not bad, f"non-finite gradient for {bad}"
  return outputs


def _cross_entropy(labels):
  return lambda probs: keras.losses.sparse_categorical_crossentropy(
      labels, probs)


@pytest.fixture(scope="module")
def built():
  return lambda name: model_cases.classifier(name, NUM_CLASSES, _shape(name))


@pytest.mark.parametrize("name", EVERY_MODEL_FAST_ENOUGH)
def test_every_classifier_weight_gets_a_finite_gradient(built, name):
  model = built(name)
  probs = assert_every_weight_learns(
      model, _pixels(_shape(name)),
      _cross_entropy(tf.constant([0, NUM_CLASSES - 1])))
  assert probs.shape == (2, NUM_CLASSES)
  assert np.all(np.isfinite(probs))


@pytest.mark.parametrize("name", EVERY_MODEL_FAST_ENOUGH)
def test_classifier_is_its_backbone_and_a_head(built, name):
  """The classifier's layers are the backbone's, by name and in order,
  then avg_pool (a feature map only), head_dropout and predictions."""
  classifier = built(name)
  backbone = models.backbone_of(classifier)
  kind = models.get_model_cfg(name)["features"]
  assert len(backbone.output.shape) == FEATURE_RANK[kind]
  assert backbone.layers[-1].name == models.FEATURES
  body = [layer.name for layer in backbone.layers]
  names = [layer.name for layer in classifier.layers]
  assert names[:len(body)] == body
  head = names[len(body):]
  assert head[-1] == "predictions"
  assert ("avg_pool" in head) == (kind == "map")
  assert set(head) <= {"avg_pool", "head_dropout", "predictions"}
  # The same layers, not copies: freezing one freezes the other.
  assert {id(w) for w in backbone.weights} <= {
      id(w) for w in classifier.weights}


@pytest.mark.parametrize("name", EVERY_MODEL_FAST_ENOUGH)
def test_backbone_gives_its_features_and_learns(built, name):
  keras.utils.set_random_seed(0)
  backbone = models.create_backbone(name, _shape(name), **_kwargs(name))
  kind = models.get_model_cfg(name)["features"]
  assert backbone.name == f"{name}_backbone"
  assert [t.name for t in backbone.inputs] == ["image"]
  assert backbone.output.shape[0] is None
  assert len(backbone.output.shape) == FEATURE_RANK[kind]
  features = assert_every_weight_learns(
      backbone, _pixels(_shape(name)), lambda f: tf.reduce_mean(f * f))
  assert np.all(np.isfinite(features))
  assert np.asarray(features).std() > 0
  # The classifier of the same options reads exactly these features.
  assert models.backbone_of(built(name)).output.shape == backbone.output.shape


def _kinds(layers):
  # keras.applications name some layers from a process-wide counter.
  return [type(layer).__name__ for layer in layers]


@pytest.mark.parametrize("name", EVERY_MODEL_FAST_ENOUGH)
def test_clip_model_over_every_backbone(built, name):
  frames = 2
  keras.utils.set_random_seed(0)
  model = clip.build_clip_model(name, NUM_CLASSES, (frames, *_shape(name)),
                                units=8, motion=False, **_kwargs(name))
  clips = np.stack([_pixels(_shape(name), seed=s) for s in range(frames)], 1)
  probs = assert_every_weight_learns(
      model, clips, _cross_entropy(tf.constant([0, NUM_CLASSES - 1])))
  assert probs.shape == (2, NUM_CLASSES)
  assert np.all(np.isfinite(probs))
  np.testing.assert_allclose(np.sum(probs, -1), 1.0, atol=1e-5)
  # Its frame model is the registry backbone: fine-tuning finds it there.
  assert _kinds(finetune.body_layers(model)) == _kinds(
      finetune.body_layers(built(name)))


@pytest.mark.parametrize("name", EVERY_MODEL_FAST_ENOUGH)
def test_embedder_over_every_backbone(name):
  keras.utils.set_random_seed(0)
  embedder = embedding.build_embedder(name, _shape(name), embedding_dim=8,
                                      **_kwargs(name))
  trainer = embedding.build_training_model(embedder, 4)
  labels = np.array([0, 3], "int32")
  logits = assert_every_weight_learns(
      trainer, {"images": _pixels(_shape(name)), "labels": labels},
      lambda out: keras.losses.sparse_categorical_crossentropy(
          labels, out, from_logits=True))
  assert logits.shape == (2, 4)
  assert np.all(np.isfinite(logits))
  vectors = np.asarray(embedder(_pixels(_shape(name)), training=False))
  assert vectors.shape == (2, 8)
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0,
                             atol=1e-5)
  assert models.backbone_of(embedder).layers[-1].name == models.FEATURES


def test_fine_tuning_a_clip_model_freezes_only_its_frame_backbone():
  model = clip.build_clip_model("simple_cnn", NUM_CLASSES, (2, 8, 8, 3),
                                units=8)
  backbone = {id(w) for w in models.backbone_of(model).weights}
  finetune.set_body_trainable(model, False)
  trainable = {id(w) for w in model.trainable_weights}
  assert not trainable & backbone
  # What is new on top of it trains: the grid, the motion stream, the model
  # over time and the head.
  paths = {w.path.split("/")[0] for w in model.trainable_weights}
  assert {"grid_reduce", "frame_dense", "gru", "predictions"} <= paths
  assert any(p.startswith("motion_") for p in paths)
  finetune.set_body_trainable(model, True)
  body = [l for l in finetune.body_layers(model) if l.weights]
  norms = [isinstance(l, keras.layers.BatchNormalization) for l in body]
  assert [l.trainable for l in body] == [not n for n in norms]
  assert {id(w) for w in model.trainable_weights} & backbone


def test_a_clip_model_starts_from_an_image_run_of_its_model(tmp_path):
  """--init_from an image run copies its body into a clip model's frames."""
  keras.utils.set_random_seed(1)
  image = models.create_model("simple_cnn", 5, (8, 8, 3))
  image.save(tmp_path / "best.keras")
  keras.utils.set_random_seed(2)
  clips = clip.build_clip_model("simple_cnn", NUM_CLASSES, (2, 8, 8, 3),
                                units=8)
  copied = finetune.load_body_weights(clips, RunFolder(tmp_path))
  frame = models.backbone_of(clips)
  weighted = [l for l in frame.layers if l.weights]
  assert copied == len(weighted)
  for layer in weighted:
    for want, got in zip(image.get_layer(layer.name).get_weights(),
                         layer.get_weights()):
      np.testing.assert_array_equal(want, got)
  # The clip model's own layers (not the frame backbone's) are untouched.
  assert "predictions" not in [l.name for l in weighted]


def _earlier_transfer_layout(name, input_shape):
  """A transfer classifier as imgrec built it before the backbone API: the
  application pooled inside (pooling="avg"), no `features` or `avg_pool`."""
  app = keras.applications.MobileNetV3Small(
      include_top=False, weights=None, input_shape=input_shape,
      pooling="avg", include_preprocessing=True)
  app.name = "backbone"
  inputs = keras.Input(input_shape, name="image")
  x = keras.layers.Dropout(0.2, name="head_dropout")(app(inputs))
  outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax",
                               name="predictions")(x)
  return keras.Model(inputs, outputs, name=name)


@pytest.mark.slow  # Trains, saves and resumes a run.
def test_a_checkpoint_of_the_earlier_layout_resumes(tmp_path):
  """Backups (`save_weights`) of runs started before the backbone API load
  into today's model and give the same outputs."""
  shape = (32, 32, 3)
  keras.utils.set_random_seed(3)
  old = _earlier_transfer_layout(FAST_TRANSFER, shape)
  path = str(tmp_path / "latest.weights.h5")
  old.save_weights(path)
  new = models.create_model(FAST_TRANSFER, NUM_CLASSES, shape, weights=None)
  new.load_weights(path)
  x = _pixels(shape)
  np.testing.assert_allclose(new(x, training=False), old(x, training=False),
                             atol=1e-5)


def test_backbone_of_needs_exactly_one_backbone():
  inputs = keras.Input((4,))
  plain = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="plain")
  with pytest.raises(ValueError, match="'plain' holds 0"):
    models.backbone_of(plain)
  image = keras.Input((8, 8, 3))
  members = [models.create_model("mlp", 2, (8, 8, 3)) for _ in range(2)]
  members[1].name = "mlp_too"
  both = keras.Model(image, keras.layers.Average()([m(image) for m in members]),
                     name="pair")
  with pytest.raises(ValueError, match="'pair' holds 2"):
    models.backbone_of(both)


def test_register_model_checks_the_backbone_contract():
  with pytest.raises(ValueError, match="Received: features='grid'"):
    models.register_model("x", default_cfg={"features": "grid"})
  with pytest.raises(ValueError, match="must take `dropout`"):

    @models.register_model("no_dropout")
    def no_dropout(input_shape):  # pylint: disable=unused-variable
      del input_shape

  assert "no_dropout" not in models.list_models()
  with pytest.raises(ValueError, match="Known models"):
    models.create_backbone("no_such_model")
  with pytest.raises(TypeError, match="'dept'"):
    models.create_backbone("resnet", dept=20)
  # Checked without building, and without classes.
  assert models.check_backbone("vit_tiny", (8, 8, 3)) == (8, 8, 3)
  with pytest.raises(ValueError, match=r"Received: input_shape=\(6, 6, 3\)"):
    models.check_backbone("vit_tiny", (6, 6, 3))


def test_embedder_layers_keep_their_registered_names(tmp_path):
  """Embedders and trainers saved when these lived in imgrec.faces.model
  name them imgrec>ArcMargin and imgrec>BatchHardTriplet."""
  assert keras.saving.get_registered_name(
      embedding.ArcMargin) == "imgrec>ArcMargin"
  assert keras.saving.get_registered_name(
      embedding.BatchHardTriplet) == "imgrec>BatchHardTriplet"
  embedder = embedding.build_embedder("simple_cnn", (8, 8, 3),
                                      embedding_dim=4)
  trainer = embedding.build_training_model(embedder, 3)
  trainer.save(tmp_path / "t.keras")
  again = keras.models.load_model(tmp_path / "t.keras", safe_mode=True)
  x = {"images": _pixels((8, 8, 3)), "labels": np.array([0, 2], "int32")}
  np.testing.assert_allclose(again(x, training=False),
                             trainer(x, training=False), atol=1e-5)
