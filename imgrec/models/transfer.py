"""Transfer-learning models: a keras.applications backbone plus a softmax head.

Each model is `image -> [preprocessing] -> backbone -> dropout -> predictions`.
The backbone is a nested functional model named `"backbone"` (built with
`include_top=False, pooling="avg"`), so training code can reach it with
`model.get_layer("backbone")` to freeze or unfreeze it. Preprocessing lives
inside the model, so every model here takes raw RGB pixels in 0..255: either
as a `Rescaling` layer named `"preprocess"` in front of the backbone or, for
backbones that offer it, through their own `include_preprocessing=True`.

Backbones need exactly 3 input channels, and `edges=True` is rejected: a
pretrained first convolution only understands RGB, and a learned projection
in front of it would start from noise and wreck the pretrained features at
the beginning of training.
"""

import os

import keras
from keras import layers

from imgrec.models.common import check_bool
from imgrec.models.common import check_dropout
from imgrec.models.common import classifier_head
from imgrec.models.registry import IMAGENET_MEAN
from imgrec.models.registry import IMAGENET_STD
from imgrec.models.registry import register_model

# x / 127.5 - 1 written as (x - mean) / std, to share one config format.
_TF_MODE_CFG = {
    "mean": (127.5, 127.5, 127.5),
    "std": (127.5, 127.5, 127.5),
    "preprocessing": "tf",
}
_TORCH_MODE_CFG = {
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "preprocessing": "torch",
}
# Smallest input keras.applications accepts for these backbones.
_MIN_SIZE = 32


def _cfg(mode_cfg):
  return {"input_size": (224, 224), "min_size": _MIN_SIZE, **mode_cfg}


def resolve_weights(weights):
  """Maps the user's `weights` option to what `keras.applications` takes.

  Args:
    weights: `"imagenet"`, `None`, the string `"none"` (any case, handy
      on command lines) or a path to a local weights file.

  Returns:
    `"imagenet"`, `None` or the path as a string.

  Raises:
    FileNotFoundError: If `weights` names a file that does not exist.
    ValueError: If `weights` is neither None, a string nor a path.
  """
  if weights is None:
    return None
  if not isinstance(weights, (str, os.PathLike)):
    raise ValueError(
        "`weights` must be 'imagenet', None, 'none' or a path to a "
        f"weights file. Received: weights={weights!r}")
  path = os.fspath(weights)
  if path.lower() == "none":
    return None
  if path == "imagenet":
    return path
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Backbone weights file {path!r} does not exist. Pass "
        "weights='imagenet', None or the path of an existing weights file. "
        f"Received: weights={weights!r}")
  return path


def _build_transfer(name,
                    application,
                    num_classes,
                    input_shape,
                    *,
                    weights,
                    freeze_backbone,
                    dropout,
                    edges,
                    rescale_to_unit_range=False,
                    **application_kwargs):
  """Builds `image -> [Rescaling] -> backbone -> head` for one application.

  Args:
    name: Registry name, used as the model name.
    application: A `keras.applications` constructor.
    num_classes: Number of output classes.
    input_shape: `(height, width, 3)`.
    weights: See `resolve_weights`.
    freeze_backbone: Make the backbone non-trainable. Its BatchNorm layers
      then also run in inference mode, as Keras does for frozen layers.
    dropout: Dropout rate before the classifier.
    edges: Must be False; see the module docstring.
    rescale_to_unit_range: Put `Rescaling(1 / 127.5, offset=-1)` in front
      of a backbone that expects [-1, 1] and has no preprocessing of
      its own.
    **application_kwargs: Extra arguments for `application`.

  Returns:
    A `keras.Model` named `name`.
  """
  check_bool(freeze_backbone, "freeze_backbone")
  check_bool(edges, "edges")
  check_dropout(dropout)
  if edges:
    raise ValueError(
        f"Model {name!r} does not support edge channels: its pretrained "
        "backbone takes exactly 3 RGB channels. Use a scratch model for "
        f"edges. Received: edges={edges!r}")
  if input_shape[-1] != 3:
    raise ValueError(
        f"Model {name!r} needs 3-channel RGB input; convert grayscale "
        "images to RGB first. "
        f"Received: input_shape={tuple(input_shape)!r}")
  weights = resolve_weights(weights)

  backbone = application(
      include_top=False,
      weights=weights,
      input_shape=tuple(input_shape),
      pooling="avg",
      **application_kwargs)
  # Renamed after construction rather than through `name=`: some
  # applications derive their internal layer names or preprocessing from
  # their own name (EfficientNetV2 picks its normalization that way).
  backbone.name = "backbone"
  backbone.trainable = not freeze_backbone

  inputs = keras.Input(shape=input_shape, name="image")
  x = inputs
  if rescale_to_unit_range:
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(x)
  x = backbone(x)
  outputs = classifier_head(x, num_classes, dropout)
  return keras.Model(inputs, outputs, name=name)


_TRANSFER_DOC = """{title} backbone with a softmax head.

  Args:
    num_classes: Number of output classes.
    input_shape: `(height, width, 3)`, height and width >= 32.
    weights: `"imagenet"` (downloads on first use), `None` or `"none"`
      for random initialization, or a path to a local weights file of
      the backbone without its top.
    freeze_backbone: Make the backbone (`model.get_layer("backbone")`)
      non-trainable, leaving only the head to train.
    dropout: Dropout rate before the classifier.
    edges: Unsupported for transfer models; True raises ValueError.

  Returns:
    A `keras.Model` named `"{name}"` taking raw RGB pixels in 0..255.

  Raises:
    ValueError: If `edges` is True, the input is not 3-channel or an
      option has a bad value.
    FileNotFoundError: If `weights` is a path that does not exist.
  """


@register_model("mobilenet_v2", default_cfg=_cfg(_TF_MODE_CFG), kind="transfer")
def mobilenet_v2(num_classes,
                 input_shape,
                 *,
                 weights="imagenet",
                 freeze_backbone=False,
                 dropout=0.2,
                 edges=False):
  return _build_transfer(
      "mobilenet_v2",
      keras.applications.MobileNetV2,
      num_classes,
      input_shape,
      weights=weights,
      freeze_backbone=freeze_backbone,
      dropout=dropout,
      edges=edges,
      rescale_to_unit_range=True)


@register_model(
    "mobilenet_v3_small", default_cfg=_cfg(_TF_MODE_CFG), kind="transfer")
def mobilenet_v3_small(num_classes,
                       input_shape,
                       *,
                       weights="imagenet",
                       freeze_backbone=False,
                       dropout=0.2,
                       edges=False):
  return _build_transfer(
      "mobilenet_v3_small",
      keras.applications.MobileNetV3Small,
      num_classes,
      input_shape,
      weights=weights,
      freeze_backbone=freeze_backbone,
      dropout=dropout,
      edges=edges,
      include_preprocessing=True)


@register_model(
    "mobilenet_v3_large", default_cfg=_cfg(_TF_MODE_CFG), kind="transfer")
def mobilenet_v3_large(num_classes,
                       input_shape,
                       *,
                       weights="imagenet",
                       freeze_backbone=False,
                       dropout=0.2,
                       edges=False):
  return _build_transfer(
      "mobilenet_v3_large",
      keras.applications.MobileNetV3Large,
      num_classes,
      input_shape,
      weights=weights,
      freeze_backbone=freeze_backbone,
      dropout=dropout,
      edges=edges,
      include_preprocessing=True)


@register_model(
    "efficientnet_v2_b0", default_cfg=_cfg(_TORCH_MODE_CFG), kind="transfer")
def efficientnet_v2_b0(num_classes,
                       input_shape,
                       *,
                       weights="imagenet",
                       freeze_backbone=False,
                       dropout=0.2,
                       edges=False):
  return _build_transfer(
      "efficientnet_v2_b0",
      keras.applications.EfficientNetV2B0,
      num_classes,
      input_shape,
      weights=weights,
      freeze_backbone=freeze_backbone,
      dropout=dropout,
      edges=edges,
      include_preprocessing=True)


@register_model("resnet50_v2", default_cfg=_cfg(_TF_MODE_CFG), kind="transfer")
def resnet50_v2(num_classes,
                input_shape,
                *,
                weights="imagenet",
                freeze_backbone=False,
                dropout=0.2,
                edges=False):
  return _build_transfer(
      "resnet50_v2",
      keras.applications.ResNet50V2,
      num_classes,
      input_shape,
      weights=weights,
      freeze_backbone=freeze_backbone,
      dropout=dropout,
      edges=edges,
      rescale_to_unit_range=True)


@register_model(
    "convnext_tiny", default_cfg=_cfg(_TORCH_MODE_CFG), kind="transfer")
def convnext_tiny(num_classes,
                  input_shape,
                  *,
                  weights="imagenet",
                  freeze_backbone=False,
                  dropout=0.2,
                  edges=False):
  return _build_transfer(
      "convnext_tiny",
      keras.applications.ConvNeXtTiny,
      num_classes,
      input_shape,
      weights=weights,
      freeze_backbone=freeze_backbone,
      dropout=dropout,
      edges=edges,
      include_preprocessing=True)


for _fn, _title in ((mobilenet_v2, "MobileNetV2"), (mobilenet_v3_small,
                                                    "MobileNetV3-Small"),
                    (mobilenet_v3_large, "MobileNetV3-Large"),
                    (efficientnet_v2_b0, "EfficientNetV2-B0"),
                    (resnet50_v2, "ResNet50V2"), (convnext_tiny,
                                                  "ConvNeXt-Tiny")):
  _fn.__doc__ = _TRANSFER_DOC.format(title=_title, name=_fn.__name__)
del _fn, _title
