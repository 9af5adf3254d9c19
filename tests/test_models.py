"""Tests for imgrec.models: every registered model, the registry, the layers."""

import numpy as np
import pytest
import keras

import _model_cases as model_cases
from imgrec import models
from imgrec.models import registry
from imgrec.models import transfer

NUM_CLASSES = 3
# Transfer backbones refuse anything smaller than 32x32.
SMALL_SHAPE = (32, 32, 3)
SCRATCH = models.list_models("scratch")
TRANSFER = models.list_models("transfer")


@pytest.fixture(scope="module")
def built():
  return lambda name: model_cases.classifier(name, NUM_CLASSES, SMALL_SHAPE)


def _images(shape=SMALL_SHAPE, batch=2, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0, 255, (batch, *shape)).astype("float32")


def _check_probabilities(probs, batch=2):
  probs = np.asarray(probs)
  assert probs.shape == (batch, NUM_CLASSES)
  assert probs.dtype == np.float32
  assert np.all(np.isfinite(probs))
  assert np.all(probs >= 0)
  np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


def test_registry_lists_all_builtin_models():
  assert SCRATCH == ["mlp", "resnet", "row_lstm", "simple_cnn", "vit_tiny"]
  assert TRANSFER == [
      "convnext_tiny", "efficientnet_v2_b0", "mobilenet_v2",
      "mobilenet_v3_large", "mobilenet_v3_small", "resnet50_v2"
  ]
  assert models.list_models() == sorted(SCRATCH + TRANSFER)


# The full-size keras.applications builds take seconds each; the fast
# subset keeps the two smallest (tox -e fast).
_HEAVY = ("convnext_tiny", "efficientnet_v2_b0", "mobilenet_v3_large",
          "resnet50_v2")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in _HEAVY else n
    for n in models.list_models()])
def test_forward_contract(built, name):
  model = built(name)
  assert model.name == name
  assert [t.name for t in model.inputs] == ["image"]
  assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
  _check_probabilities(model(_images(), training=False))


# Saving and reloading a keras.applications backbone takes seconds each:
# those run in the whole suite, the scratch models in the fast one too.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in TRANSFER else n
    for n in models.list_models()])
def test_keras_file_round_trip_gives_same_outputs(built, name, tmp_path):
  model = built(name)
  x = _images(seed=1)
  path = str(tmp_path / f"{name}.keras")
  model.save(path)
  reloaded = keras.models.load_model(path)
  assert reloaded.name == name
  np.testing.assert_allclose(
      reloaded(x, training=False), model(x, training=False), atol=1e-5)


@pytest.mark.parametrize("name", models.list_models())
def test_default_cfg(name):
  cfg = models.get_model_cfg(name)
  assert cfg["kind"] == ("scratch" if name in SCRATCH else "transfer")
  assert len(cfg["input_size"]) == 2
  assert len(cfg["mean"]) == len(cfg["std"]) == 3
  assert all(0 < s <= 255 for s in cfg["std"])
  assert cfg["min_size"] <= min(cfg["input_size"])
  # A copy: callers cannot corrupt the registry.
  cfg["input_size"] = (1, 1)
  assert models.get_model_cfg(name)["input_size"] != (1, 1)


def _preprocessing_layers(model):
  """The Rescaling/Normalization layers raw pixels pass before the first conv."""
  kinds = (keras.layers.Rescaling, keras.layers.Normalization)
  convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
  out = []
  for layer in model.layers:
    if layer.name == "backbone":
      for inner in layer.layers:
        if isinstance(inner, convs):
          return out
        if isinstance(inner, kinds):
          out.append(inner)
    elif isinstance(layer, kinds):
      out.append(layer)
  return out


@pytest.mark.parametrize("name", TRANSFER)
def test_transfer_cfg_describes_what_the_model_does(built, name):
  """`mean` and `std` of the config are what the model maps to 0 and 1."""
  cfg = models.get_model_cfg(name)
  layers = _preprocessing_layers(built(name))
  assert layers, "no preprocessing before the first convolution"
  mean, std = np.array(cfg["mean"]), np.array(cfg["std"])

  def apply(value):
    x = np.broadcast_to(value, (1, 2, 2, 3)).astype("float32")
    for layer in layers:
      x = layer(x)
    return np.asarray(x)[0, 0, 0]

  np.testing.assert_allclose(apply(mean), 0.0, atol=1e-3)
  np.testing.assert_allclose(apply(mean + std), 1.0, atol=1e-3)
  assert cfg["input_size"] == (224, 224)


@pytest.mark.parametrize("name", SCRATCH)
def test_scratch_model_default_input_shape(name):
  model = models.create_model(name, NUM_CLASSES)
  cfg = models.get_model_cfg(name)
  assert tuple(model.input_shape) == (None, *cfg["input_size"], 3)


@pytest.mark.parametrize("name", SCRATCH)
def test_scratch_edges_append_three_channels(name):
  model = models.create_model(name, NUM_CLASSES, SMALL_SHAPE, edges=True)
  assert model.get_layer("concat_edges").output.shape[-1] == 6
  _check_probabilities(model(_images(), training=False))


@pytest.mark.parametrize("name", SCRATCH)
def test_scratch_grayscale_input(name):
  shape = (28, 28, 1)
  extra = {"patch_size": 7} if name == "vit_tiny" else {}
  model = models.create_model(name, NUM_CLASSES, shape, edges=True, **extra)
  assert model.get_layer("concat_edges").output.shape[-1] == 4
  _check_probabilities(model(_images(shape), training=False))


def test_edges_round_trip_through_keras_file(tmp_path):
  model = models.create_model("simple_cnn", NUM_CLASSES, SMALL_SHAPE,
                              edges=True)
  path = str(tmp_path / "edges.keras")
  model.save(path)
  reloaded = keras.models.load_model(path)
  assert isinstance(reloaded.get_layer("sobel_edges"), models.SobelEdges)
  x = _images()
  np.testing.assert_allclose(reloaded(x), model(x), atol=1e-5)


def test_sobel_edges_find_a_vertical_step():
  image = np.zeros((1, 8, 8, 3), "float32")
  image[:, :, 4:] = 255.0
  edges = np.asarray(models.SobelEdges()(image))
  gx, gy, magnitude = edges[0, ..., 0], edges[0, ..., 1], edges[0, ..., 2]
  # The step lies between columns 3 and 4: full response there only.
  np.testing.assert_allclose(gx[:, 3:5], 1.0, atol=1e-5)
  np.testing.assert_allclose(gx[:, :3], 0.0, atol=1e-5)
  np.testing.assert_allclose(gx[:, 5:], 0.0, atol=1e-5)
  np.testing.assert_allclose(gy, 0.0, atol=1e-5)
  assert magnitude[:, 3:5].min() > 0.99
  # Symmetric padding: the image border is not an edge.
  assert magnitude[:, [0, 7]].max() < 1e-2


def test_sobel_edges_config_round_trip():
  layer = models.SobelEdges(max_value=1.0, name="e")
  clone = models.SobelEdges.from_config(layer.get_config())
  assert clone.max_value == 1.0 and clone.name == "e"
  with pytest.raises(ValueError, match="Received: max_value=0"):
    models.SobelEdges(max_value=0)


def test_mixed_precision_keeps_float32_probabilities():
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = models.create_model("simple_cnn", NUM_CLASSES, SMALL_SHAPE,
                                edges=True)
    assert model.get_layer("stage1_block1_conv").compute_dtype == "float16"
    _check_probabilities(model(_images(), training=False))
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_simple_cnn_handles_mnist_size_and_width():
  model = models.create_model("simple_cnn", 10, (28, 28, 1), width=8)
  # "same" pooling: 28 -> 14 -> 7 -> 4, never empty.
  assert model.get_layer("stage3_pool").output.shape[1:3] == (4, 4)
  assert model.get_layer("stage3_block2_conv").filters == 32
  tiny = models.create_model("simple_cnn", 10, (4, 4, 3))
  assert tiny.get_layer("stage3_pool").output.shape[1:3] == (1, 1)


def test_simple_cnn_default_is_modest():
  model = models.create_model("simple_cnn", 6)
  assert model.count_params() < 300_000
  # 64x64 inputs get a stride-2 first conv to keep CPU training fast.
  assert model.get_layer("stage1_block1_conv").strides == (2, 2)


def test_unknown_name_lists_known_models():
  with pytest.raises(ValueError, match="simple_cnn") as info:
    models.create_model("no_such_model", NUM_CLASSES)
  assert "Received: name='no_such_model'" in str(info.value)
  with pytest.raises(ValueError, match="Known models"):
    models.get_model_cfg("no_such_model")


def test_registering_a_name_twice_raises():
  with pytest.raises(ValueError, match="already registered"):

    @models.register_model("simple_cnn")
    def simple_cnn(input_shape, dropout=0.0):  # pylint: disable=unused-variable
      del input_shape, dropout

  assert models.list_models() == sorted(SCRATCH + TRANSFER)


def test_register_model_rejects_bad_kind_and_cfg():
  with pytest.raises(ValueError, match="Received: kind='pretrained'"):
    models.register_model("x", kind="pretrained")
  with pytest.raises(ValueError, match="Unknown default_cfg keys"):
    models.register_model("x", default_cfg={"input_sise": (8, 8)})
  with pytest.raises(ValueError, match="Received: kind='nope'"):
    models.list_models("nope")


def test_unknown_kwarg_raises_type_error():
  with pytest.raises(TypeError, match="'dept'"):
    models.create_model("resnet", NUM_CLASSES, SMALL_SHAPE, dept=20)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 1}, "Received: num_classes=1"),
    ({"input_shape": (32, 32)}, "Received: input_shape"),
    ({"input_shape": (0, 32, 3)}, "Received: input_shape"),
    ({"dropout": 1.0}, "Received: dropout=1.0"),
    ({"edges": "yes"}, "Received: edges='yes'"),
    ({"width": 0}, "Received: width=0"),
    ({"stem_stride": 3}, "Received: stem_stride=3"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
  kwargs = {"num_classes": NUM_CLASSES, "input_shape": SMALL_SHAPE, **kwargs}
  with pytest.raises(ValueError, match=match):
    models.create_model("simple_cnn", **kwargs)


@pytest.mark.parametrize("depth", [18, 21, 50, True])
def test_resnet_rejects_bad_depth(depth):
  with pytest.raises(ValueError, match=f"Received: depth={depth!r}"):
    models.create_model("resnet", NUM_CLASSES, SMALL_SHAPE, depth=depth)


def test_resnet_depth_sets_number_of_blocks():
  model = models.create_model("resnet", NUM_CLASSES, SMALL_SHAPE, depth=32)
  convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
  # 6n + 2 weighted layers = 6n + 1 convs + the classifier, plus 2 shortcut
  # projections that the depth count leaves out.
  assert len(convs) == 31 + 2


def test_vit_checks_patch_size_and_heads():
  with pytest.raises(ValueError, match=r"Received: input_shape=\(30, 30, 3\)"):
    models.create_model("vit_tiny", NUM_CLASSES, (30, 30, 3))
  with pytest.raises(ValueError, match="Received: dim=30"):
    models.create_model("vit_tiny", NUM_CLASSES, SMALL_SHAPE, dim=30)


def test_row_lstm_bidirectional():
  model = models.create_model("row_lstm", NUM_CLASSES, (28, 28, 1), units=16,
                              bidirectional=True)
  assert model.get_layer("bidirectional_lstm").output.shape[-1] == 32
  _check_probabilities(model(_images((28, 28, 1)), training=False))


@pytest.mark.parametrize("name", TRANSFER)
def test_transfer_backbone_is_a_named_sub_model(built, name):
  backbone = built(name).get_layer("backbone")
  assert isinstance(backbone, keras.Model)
  assert backbone.trainable


def test_transfer_rejects_edges_and_grayscale():
  with pytest.raises(ValueError, match="Received: edges=True"):
    models.create_model("mobilenet_v2", NUM_CLASSES, SMALL_SHAPE,
                        weights=None, edges=True)
  with pytest.raises(ValueError, match=r"Received: input_shape=\(32, 32, 1\)"):
    models.create_model("mobilenet_v2", NUM_CLASSES, (32, 32, 1), weights=None)
  with pytest.raises(ValueError, match="height and width >= 32"):
    models.create_model("mobilenet_v2", NUM_CLASSES, (16, 16, 3), weights=None)


def test_freeze_backbone_leaves_only_the_head_trainable():
  model = models.create_model("mobilenet_v3_small", NUM_CLASSES, SMALL_SHAPE,
                              weights="none", freeze_backbone=True)
  head = model.get_layer("predictions")
  assert {w.path for w in model.trainable_weights
         } == {w.path for w in head.trainable_weights}
  backbone = model.get_layer("backbone")
  before = [np.array(w) for w in backbone.non_trainable_weights]
  model(_images(), training=True)
  # A frozen backbone's BatchNorm must not drift during head training.
  for old, new in zip(before, backbone.non_trainable_weights):
    np.testing.assert_array_equal(old, np.array(new))


def test_transfer_weights_option(tmp_path):
  assert transfer.resolve_weights("None") is None
  assert transfer.resolve_weights(None) is None
  assert transfer.resolve_weights("imagenet") == "imagenet"
  with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
    models.create_model("mobilenet_v2", NUM_CLASSES, SMALL_SHAPE,
                        weights=str(tmp_path / "missing.weights.h5"))
  with pytest.raises(ValueError, match="Received: weights=3"):
    transfer.resolve_weights(3)


def test_transfer_loads_local_backbone_weights(tmp_path):
  source = keras.applications.MobileNetV3Small(
      include_top=False, weights=None, input_shape=SMALL_SHAPE, pooling="avg")
  path = str(tmp_path / "backbone.weights.h5")
  source.save_weights(path)
  model = models.create_model("mobilenet_v3_small", NUM_CLASSES, SMALL_SHAPE,
                              weights=path)
  loaded = model.get_layer("backbone").weights
  assert len(loaded) == len(source.weights)
  for want, got in zip(source.weights, loaded):
    np.testing.assert_array_equal(np.array(want), np.array(got))
