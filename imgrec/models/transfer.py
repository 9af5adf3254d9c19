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


def _check_transfer(input_shape, args):
  """The inputs and options a pretrained backbone can be built with."""
  check_bool(args["freeze_backbone"], "freeze_backbone")
  check_bool(args["edges"], "edges")
  check_dropout(args["dropout"])
  if args["edges"]:
    raise ValueError(
        "Transfer models do not support edge channels: a pretrained backbone "
        "takes exactly 3 RGB channels. Use a scratch model for edges. "
        f"Received: edges={args['edges']!r}")
  if input_shape[-1] != 3:
    raise ValueError(
        "Transfer models need 3-channel RGB input; convert grayscale images "
        f"to RGB first (--channels=3). Received: input_shape="
        f"{tuple(input_shape)!r}")
  resolve_weights(args["weights"])


_SCRATCH_BN_MOMENTUM = 0.9


def _build_transfer(name, application, preprocessing, num_classes,
                    input_shape, *, weights, freeze_backbone, dropout):
  """Builds `image -> [Rescaling] -> backbone -> head` for one application.

  Args:
    name: Registry name, used as the model name.
    application: A `keras.applications` constructor.
    preprocessing: "rescale" puts `Rescaling(1 / 127.5, offset=-1)` in
      front of a backbone that expects [-1, 1] and has no preprocessing of
      its own; "builtin" asks the application for its own
      (`include_preprocessing=True`).
    num_classes: Number of output classes.
    input_shape: `(height, width, 3)`.
    weights: See `resolve_weights`.
    freeze_backbone: Make the backbone non-trainable. Its BatchNorm layers
      then also run in inference mode, as Keras does for frozen layers.
    dropout: Dropout rate before the classifier.

  Returns:
    A `keras.Model` named `name`.
  """
  extra = {"include_preprocessing": True} if preprocessing == "builtin" else {}
  backbone = application(
      include_top=False,
      weights=resolve_weights(weights),
      input_shape=tuple(input_shape),
      pooling="avg",
      **extra)
  # Renamed after construction rather than through `name=`: some
  # applications derive their internal layer names or preprocessing from
  # their own name (EfficientNetV2 picks its normalization that way).
  backbone.name = "backbone"
  backbone.trainable = not freeze_backbone
  if resolve_weights(weights) is None:
    # keras.applications' BatchNorm momentum (0.999 in the MobileNets) is
    # tuned for ImageNet's long epochs: after a few thousand steps on a
    # small dataset the moving statistics are still near their initial
    # values and evaluation sits at chance (mobilenet_v2 from scratch on
    # MNIST-10k, 12 epochs: 96% train accuracy, 9.9% validation). A
    # randomly initialized backbone gets Keras' usual faster averages.
    for layer in backbone.layers:
      if isinstance(layer, layers.BatchNormalization) and (
          layer.momentum > _SCRATCH_BN_MOMENTUM):
        layer.momentum = _SCRATCH_BN_MOMENTUM

  inputs = keras.Input(shape=input_shape, name="image")
  x = inputs
  if preprocessing == "rescale":
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
  """

# name: (keras.applications constructor, title, normalization config,
# how raw pixels reach the backbone's expected range).
BACKBONES = {
    "mobilenet_v2": ("MobileNetV2", "MobileNetV2", _TF_MODE_CFG, "rescale"),
    "mobilenet_v3_small": ("MobileNetV3Small", "MobileNetV3-Small",
                           _TF_MODE_CFG, "builtin"),
    "mobilenet_v3_large": ("MobileNetV3Large", "MobileNetV3-Large",
                           _TF_MODE_CFG, "builtin"),
    "efficientnet_v2_b0": ("EfficientNetV2B0", "EfficientNetV2-B0",
                           _TORCH_MODE_CFG, "builtin"),
    "resnet50_v2": ("ResNet50V2", "ResNet50V2", _TF_MODE_CFG, "rescale"),
    "convnext_tiny": ("ConvNeXtTiny", "ConvNeXt-Tiny", _TORCH_MODE_CFG,
                      "builtin"),
}


def _register_backbone(name, application_name, title, mode_cfg,
                       preprocessing):
  """Registers one `BACKBONES` entry as a model builder named `name`."""

  def build(num_classes, input_shape, *, weights="imagenet",
            freeze_backbone=False, dropout=0.2, edges=False):
    del edges  # Refused by _check_transfer.
    return _build_transfer(name, getattr(keras.applications,
                                         application_name), preprocessing,
                           num_classes, input_shape, weights=weights,
                           freeze_backbone=freeze_backbone, dropout=dropout)

  build.__name__ = build.__qualname__ = name
  build.__doc__ = _TRANSFER_DOC.format(title=title, name=name)
  register_model(name, default_cfg=_cfg(mode_cfg), kind="transfer",
                 check=_check_transfer)(build)
  return build


for _name, _spec in BACKBONES.items():
  globals()[_name] = _register_backbone(_name, *_spec)
del _name, _spec


def fetch_imagenet_weights(name, input_shape):
  """Makes sure a backbone's ImageNet weights are on this machine.

  Keras downloads them on first use into ~/.keras/models; this builds the
  backbone once so that a missing network shows before anything else runs.

  Raises:
    Whatever `keras.applications` raises when the download fails.
  """
  application = getattr(keras.applications, BACKBONES[name][0])
  extra = ({"include_preprocessing": True}
           if BACKBONES[name][3] == "builtin" else {})
  application(include_top=False, weights="imagenet",
              input_shape=tuple(input_shape), pooling="avg", **extra)
