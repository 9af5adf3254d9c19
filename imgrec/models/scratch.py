"""Models trained from random initialization (mlp, CNNs, LSTM, ViT).

Each builder returns the model's backbone, up to the features its head
reads; `registry.create_model` adds the head. All take float32 raw pixels in
0..255 with any channel count (1 and 3 are the usual ones), normalize them
inside the model and, with `edges=True`, append three Sobel edge channels
before the network body.
"""

import keras
from keras import layers

from imgrec.models.common import check_bool
from imgrec.models.common import check_dropout
from imgrec.models.common import check_positive_int
from imgrec.models.common import scratch_stem
from imgrec.models.layers import PositionEmbedding
from imgrec.models.registry import register_model

RESNET_DEPTHS = (20, 32, 44, 56, 110)


@register_model("mlp", default_cfg={"input_size": (32, 32), "min_size": 1,
                                     "features": "vector"})
def mlp(input_shape, *, hidden_units=(512, 256), dropout=0.2, edges=False):
  """Multi-layer perceptron on the flattened image.

  Args:
    input_shape: `(height, width, channels)`.
    hidden_units: Sizes of the hidden ReLU layers.
    dropout: Dropout rate after each hidden layer; after the last one it is
      the head's (`head_dropout`).
    edges: Append Sobel edge channels to the input.

  Returns:
    A `keras.Model` named `"mlp"`: the last hidden layer's activations.

  Raises:
    ValueError: If `hidden_units` is empty or not positive integers, or
      `dropout` is not in [0, 1).
  """
  hidden_units = tuple(hidden_units)
  if not hidden_units:
    raise ValueError("`hidden_units` must name at least one layer. "
                     f"Received: hidden_units={hidden_units!r}")
  for units in hidden_units:
    check_positive_int(units, "hidden_units")
  check_dropout(dropout)

  inputs, x = scratch_stem(input_shape, edges)
  x = layers.Flatten(name="flatten")(x)
  for i, units in enumerate(hidden_units, start=1):
    if i > 1 and dropout > 0:
      x = layers.Dropout(dropout, name=f"fc{i - 1}_dropout")(x)
    x = layers.Dense(units, activation="relu", name=f"fc{i}")(x)
  return keras.Model(inputs, x, name="mlp")


def _batch_norm(name):
  # Momentum 0.9 instead of Keras's 0.99: runs on small datasets last a few
  # hundred steps, and 0.99 averages over ~100 of them, so the inference
  # statistics lag the weights and early-epoch validation is near chance.
  return layers.BatchNormalization(momentum=0.9, name=name)


def _conv_bn_relu(x, filters, prefix, strides=1):
  # No conv bias: the following BatchNorm's beta does the same job.
  x = layers.Conv2D(
      filters,
      3,
      strides=strides,
      padding="same",
      use_bias=False,
      kernel_initializer="he_normal",
      name=f"{prefix}_conv")(x)
  x = _batch_norm(f"{prefix}_bn")(x)
  return layers.ReLU(name=f"{prefix}_relu")(x)


@register_model("simple_cnn",
                default_cfg={"input_size": (64, 64), "min_size": 1})
def simple_cnn(input_shape,
               *,
               width=32,
               dropout=0.3,
               stem_stride=None,
               edges=False):
  """Small VGG-style CNN: the package's default model.

  Three stages of `[Conv3x3-BN-ReLU] x 2 -> MaxPool` with `width`,
  `2 * width` and `4 * width` filters; the classifier adds global average
  pooling, dropout and a softmax (about 290k parameters at `width=32`).
  Pooling uses `"same"` padding, so odd and tiny inputs (28x28 MNIST gives
  14 -> 7 -> 4) never shrink below 1x1.

  The very first convolution has stride `stem_stride`. By default it is 2
  for inputs of 64 pixels or more and 1 below: full-resolution 32-filter
  maps of a 64x64 image make a training step about 3x slower on a CPU
  without helping accuracy, while 28x28 or 32x32 images need every pixel.
  The stride changes no weight shapes, so weights move between input sizes.

  Args:
    input_shape: `(height, width, channels)`.
    width: Filters of the first stage; later stages double it.
    dropout: Dropout rate before the classifier.
    stem_stride: 1 or 2, the stride of the first convolution; None picks
      2 when both height and width are >= 64, else 1.
    edges: Append Sobel edge channels to the input.

  Returns:
    A `keras.Model` named `"simple_cnn"`: the last stage's pooled map.

  Raises:
    ValueError: If `width` is not a positive integer, `stem_stride` is
      not None, 1 or 2, or `dropout` is not in [0, 1).
  """
  check_positive_int(width, "width")
  check_dropout(dropout)
  if stem_stride is None:
    stem_stride = 2 if min(input_shape[:2]) >= 64 else 1
  if stem_stride not in (1, 2) or isinstance(stem_stride, bool):
    raise ValueError("`stem_stride` must be None, 1 or 2. "
                     f"Received: stem_stride={stem_stride!r}")

  inputs, x = scratch_stem(input_shape, edges)
  for stage in range(3):
    filters = width * 2**stage
    prefix = f"stage{stage + 1}"
    x = _conv_bn_relu(
        x,
        filters,
        f"{prefix}_block1",
        strides=stem_stride if stage == 0 else 1)
    x = _conv_bn_relu(x, filters, f"{prefix}_block2")
    x = layers.MaxPooling2D(2, padding="same", name=f"{prefix}_pool")(x)
  return keras.Model(inputs, x, name="simple_cnn")


def _resnet_basic_block(x, filters, strides, prefix):
  """ResNet v1 basic block: two 3x3 convs plus a (projected) shortcut."""
  shortcut = x
  y = _conv_bn_relu(x, filters, f"{prefix}_1", strides=strides)
  y = layers.Conv2D(
      filters,
      3,
      padding="same",
      use_bias=False,
      kernel_initializer="he_normal",
      name=f"{prefix}_2_conv")(y)
  y = _batch_norm(f"{prefix}_2_bn")(y)
  if strides != 1 or shortcut.shape[-1] != filters:
    # Option B of He et al.: a 1x1 projection where the shape changes.
    shortcut = layers.Conv2D(
        filters,
        1,
        strides=strides,
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{prefix}_shortcut_conv")(shortcut)
    shortcut = _batch_norm(f"{prefix}_shortcut_bn")(shortcut)
  x = layers.Add(name=f"{prefix}_add")([shortcut, y])
  return layers.ReLU(name=f"{prefix}_out")(x)


@register_model("resnet", default_cfg={"input_size": (32, 32), "min_size": 1})
def resnet(input_shape,
           *,
           depth=20,
           width=16,
           dropout=0.0,
           edges=False):
  """CIFAR-style ResNet v1 (He et al., CVPR 2016, section 4.2).

  A 3x3 stem, then three stages of `n = (depth - 2) / 6` basic blocks with
  `width`, `2 * width` and `4 * width` filters (the last two start with
  stride 2); the classifier adds global average pooling and a softmax.

  Args:
    input_shape: `(height, width, channels)`.
    depth: Total number of weighted layers, one of 20, 32, 44, 56, 110.
    width: Filters of the stem and first stage (16 in the paper).
    dropout: Dropout rate before the classifier (the paper uses none).
    edges: Append Sobel edge channels to the input.

  Returns:
    A `keras.Model` named `"resnet"`: the last block's feature map.

  Raises:
    ValueError: If `depth` is not one of the supported depths, `width` is
      not a positive integer or `dropout` is not in [0, 1).
  """
  if depth not in RESNET_DEPTHS or isinstance(depth, bool):
    raise ValueError(f"`depth` must be one of {RESNET_DEPTHS} (6n + 2). "
                     f"Received: depth={depth!r}")
  check_positive_int(width, "width")
  check_dropout(dropout)
  blocks_per_stage = (depth - 2) // 6

  inputs, x = scratch_stem(input_shape, edges)
  x = _conv_bn_relu(x, width, "stem")
  for stage in range(3):
    for block in range(blocks_per_stage):
      x = _resnet_basic_block(
          x,
          width * 2**stage,
          strides=2 if stage > 0 and block == 0 else 1,
          prefix=f"stage{stage + 1}_block{block + 1}")
  return keras.Model(inputs, x, name="resnet")


@register_model("row_lstm", default_cfg={"input_size": (28, 28), "min_size": 1,
                                          "features": "vector"})
def row_lstm(input_shape,
             *,
             units=128,
             bidirectional=False,
             dropout=0.2,
             edges=False):
  """Reads the image row by row with an LSTM.

  Each of the H rows, with its W pixels and C channels flattened to W * C
  features, is one time step; the last hidden state is classified.

  Args:
    input_shape: `(height, width, channels)`.
    units: LSTM hidden size (per direction).
    bidirectional: Also read the rows bottom to top and concatenate.
    dropout: Dropout rate before the classifier.
    edges: Append Sobel edge channels to the input.

  Returns:
    A `keras.Model` named `"row_lstm"`: the last hidden state.

  Raises:
    ValueError: If `units` is not a positive integer, `bidirectional` is
      not a bool or `dropout` is not in [0, 1).
  """
  check_positive_int(units, "units")
  check_bool(bidirectional, "bidirectional")
  check_dropout(dropout)

  inputs, x = scratch_stem(input_shape, edges)
  height, width, channels = x.shape[1:]
  x = layers.Reshape((height, width * channels), name="rows_to_sequence")(x)
  if bidirectional:
    x = layers.Bidirectional(
        layers.LSTM(units, name="lstm"), name="bidirectional_lstm")(x)
  else:
    x = layers.LSTM(units, name="lstm")(x)
  return keras.Model(inputs, x, name="row_lstm")


def _encoder_block(x, dim, heads, mlp_dim, dropout, prefix):
  """Pre-norm transformer encoder block (ViT, Dosovitskiy et al. 2021)."""
  y = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_ln1")(x)
  y = layers.MultiHeadAttention(
      num_heads=heads,
      key_dim=dim // heads,
      dropout=dropout,
      name=f"{prefix}_attention")(y, y)
  x = layers.Add(name=f"{prefix}_add1")([x, y])
  y = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_ln2")(x)
  y = layers.Dense(mlp_dim, activation="gelu", name=f"{prefix}_mlp_fc1")(y)
  if dropout > 0:
    y = layers.Dropout(dropout, name=f"{prefix}_mlp_dropout")(y)
  y = layers.Dense(dim, name=f"{prefix}_mlp_fc2")(y)
  return layers.Add(name=f"{prefix}_add2")([x, y])


def _check_vit(input_shape, args):
  """The inputs and options `vit_tiny` can be built with."""
  for arg_name in ("patch_size", "dim", "depth", "heads", "mlp_ratio"):
    check_positive_int(args[arg_name], arg_name)
  check_dropout(args["dropout"])
  patch_size = args["patch_size"]
  height, width = input_shape[:2]
  if height % patch_size or width % patch_size:
    raise ValueError(
        f"Image height and width must be divisible by `patch_size`="
        f"{patch_size}. Received: input_shape={tuple(input_shape)!r}")
  if args["dim"] % args["heads"]:
    raise ValueError(f"`dim` must be divisible by `heads`={args['heads']}. "
                     f"Received: dim={args['dim']!r}")


@register_model("vit_tiny", default_cfg={"input_size": (32, 32), "min_size": 1,
                                          "features": "vector"},
                check=_check_vit)
def vit_tiny(input_shape,
             *,
             patch_size=4,
             dim=64,
             depth=4,
             heads=4,
             mlp_ratio=2,
             dropout=0.1,
             edges=False):
  """Small Vision Transformer for low-resolution images.

  Non-overlapping patches are embedded with a strided convolution, a
  learned position embedding is added, `depth` pre-norm encoder blocks
  follow, and the tokens are average-pooled (no class token) for the
  softmax classifier.

  Args:
    input_shape: `(height, width, channels)`; height and width must be
      divisible by `patch_size`.
    patch_size: Side of the square patches, in pixels.
    dim: Token embedding size; must be divisible by `heads`.
    depth: Number of encoder blocks.
    heads: Attention heads per block.
    mlp_ratio: Hidden size of the block MLP, as a multiple of `dim`.
    dropout: Dropout rate inside the blocks and before the classifier.
    edges: Append Sobel edge channels to the input.

  Returns:
    A `keras.Model` named `"vit_tiny"`: the average of the final tokens.

  Raises:
    ValueError: If the image size is not divisible by `patch_size`, `dim`
      is not divisible by `heads`, an integer option is not positive or
      `dropout` is not in [0, 1).
  """
  height, width = input_shape[:2]
  inputs, x = scratch_stem(input_shape, edges)
  x = layers.Conv2D(
      dim, patch_size, strides=patch_size, name="patch_embedding")(x)
  num_patches = (height // patch_size) * (width // patch_size)
  x = layers.Reshape((num_patches, dim), name="patches_to_tokens")(x)
  x = PositionEmbedding(name="position_embedding")(x)
  if dropout > 0:
    x = layers.Dropout(dropout, name="embedding_dropout")(x)
  for i in range(depth):
    x = _encoder_block(
        x, dim, heads, dim * mlp_ratio, dropout, prefix=f"block{i + 1}")
  x = layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
  x = layers.GlobalAveragePooling1D(name="token_pool")(x)
  return keras.Model(inputs, x, name="vit_tiny")
