"""Transfer-learning models: a keras.applications backbone plus a softmax head.

Each builder returns `image -> [preprocessing] -> backbone`, the last feature
map of a keras.applications model built with `include_top=False` and no
pooling; `registry.create_model` adds `avg_pool -> dropout -> predictions`.
The application is a nested functional model named `"backbone"`, so
`model.get_layer("backbone")` reaches it to freeze it. Preprocessing lives
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


def _application(name, input_shape, weights):
  """The keras.applications model of `BACKBONES[name]`, without its top."""
  application_name, _, _, preprocessing = BACKBONES[name]
  extra = {"include_preprocessing": True} if preprocessing == "builtin" else {}
  return getattr(keras.applications, application_name)(
      include_top=False, weights=weights, input_shape=tuple(input_shape),
      pooling=None, **extra)


def _build_transfer(name, input_shape, *, weights, freeze_backbone):
  """Builds `image -> [Rescaling] -> backbone` for one `BACKBONES` entry.

  A backbone that expects [-1, 1] and has no preprocessing of its own
  ("rescale") gets `Rescaling(1 / 127.5, offset=-1)` in front; the others
  ("builtin") are asked for their own (`include_preprocessing=True`).

  Args:
    name: Registry name, used as the model name.
    input_shape: `(height, width, 3)`.
    weights: See `resolve_weights`.
    freeze_backbone: Make the backbone non-trainable. Its BatchNorm layers
      then also run in inference mode, as Keras does for frozen layers.

  Returns:
    A `keras.Model` named `name`: the application's last feature map.
  """
  backbone = _application(name, input_shape, resolve_weights(weights))
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
  if BACKBONES[name][3] == "rescale":
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(x)
  return keras.Model(inputs, backbone(x), name=name)


_TRANSFER_DOC = """{title} backbone: its last feature map.

  Args:
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


def _register_backbone(name, title, mode_cfg):
  """Registers one `BACKBONES` entry as a model builder named `name`."""

  def build(input_shape, *, weights="imagenet", freeze_backbone=False,
            dropout=0.2, edges=False):
    del edges, dropout  # Checked by _check_transfer; dropout is the head's.
    return _build_transfer(name, input_shape, weights=weights,
                           freeze_backbone=freeze_backbone)

  build.__name__ = build.__qualname__ = name
  build.__doc__ = _TRANSFER_DOC.format(title=title, name=name)
  register_model(name, default_cfg=_cfg(mode_cfg), kind="transfer",
                 check=_check_transfer)(build)
  return build


for _name, (_, _title, _mode_cfg, _) in BACKBONES.items():
  globals()[_name] = _register_backbone(_name, _title, _mode_cfg)
del _name, _title, _mode_cfg


def fetch_imagenet_weights(name, input_shape):
  """Makes sure a backbone's ImageNet weights are on this machine.

  Keras downloads them on first use into ~/.keras/models; this builds the
  backbone once so that a missing network shows before anything else runs.

  Raises:
    Whatever `keras.applications` raises when the download fails.
  """
  _application(name, input_shape, "imagenet")
