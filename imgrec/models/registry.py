"""Model registry: named backbones, their data configs, `create_model`.

A builder is a small function `fn(input_shape, *, dropout, **kw)` returning
a functional `keras.Model` from raw pixels to the model's features: its
backbone (keras-hub's `Backbone`, timm's `create_model(name, num_classes=0)`).
`create_backbone` ends it in an identity layer named `FEATURES`, and
`create_model` puts the classifier head on it:

    image -> backbone -> features -> [avg_pool] -> [head_dropout] -> predictions

so a classifier, a clip model and a face embedder reach the same features the
same way, and `backbone_of(model)` finds them again inside any of them (what
fine-tuning freezes and copies). What the features are is part of the model's
config, `features`:

- `"map"`: the last spatial feature map, `[batch, h, w, channels]`. The
  classifier averages it, clip models pool it to a coarse grid, embedders
  flatten it.
- `"vector"`: models without a spatial map (mlp, row_lstm, vit_tiny) give
  the vector their classifier reads, `[batch, units]`, used as it is.

Each registered model carries a default config (timm's `default_cfg`): the
input size it was designed for, its normalization statistics, its minimum
input size and its kind of features. The data pipeline reads this config
instead of repeating it, so there is one source of truth for how a model
wants its pixels.
"""

import copy
import inspect

import keras
from keras import layers

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

KINDS = ("scratch", "transfer")
FEATURE_KINDS = ("map", "vector")
# The classifier's last layer, a Dense from the embedding to the classes
# (`classifier_head`).
HEAD = "predictions"

# The layer every backbone ends in: what `backbone_of` looks for.
FEATURES = "features"

# A transformer's last tokens, one a patch in row order, before they are
# pooled (vit_tiny's final layer norm): its spatial map, for explanations.
TOKENS = "final_ln"


def model_inputs(model):
  """What a functional model over `model`'s graph takes as its inputs: the
  one input tensor (a Sequential model's too), or the list of several."""
  inputs = model.inputs
  return inputs[0] if len(inputs) == 1 else inputs


_CFG_KEYS = ("input_size", "channels", "mean", "std", "min_size",
             "preprocessing", "features")

_REGISTRY = {}


def _default_cfg(kind):
  return {
      "input_size": (224, 224),
      "channels": 3,
      "mean": IMAGENET_MEAN,
      "std": IMAGENET_STD,
      "min_size": 32,
      # keras.applications.imagenet_utils mode names: "torch" is
      # (x / 255 - mean) / std with ImageNet statistics, "tf" is
      # x / 127.5 - 1. Informational only: every model applies its own
      # preprocessing internally and takes raw 0..255 pixels.
      "preprocessing": "torch",
      "features": "map",
      "kind": kind,
  }


def register_model(name, default_cfg=None, kind="scratch", check=None):
  """Returns a decorator that registers a backbone builder under `name`.

  The builder is `fn(input_shape, *, dropout, **options)` and returns a
  functional `keras.Model` from the `"image"` input to the features its
  `features` config names. `dropout` is the rate before the classifier,
  which `create_model` reads from the call (or the builder's default); a
  builder may use it inside the body too (mlp, vit_tiny).

  Args:
    name: Registry name; also the name of the built classifier.
    default_cfg: Optional dict overriding the default data config. Keys:
      `input_size` (H, W), `channels`, `mean` and `std` (per channel,
      in 0..255 pixel units), `min_size` (smallest H or W the model
      accepts), `preprocessing` (informational name of the
      normalization the model applies to its raw-pixel input) and
      `features` (`"map"` or `"vector"`, see the module docstring).
    kind: `"scratch"` for models trained from random initialization,
      `"transfer"` for models built on a `keras.applications` backbone.
    check: optional `fn(input_shape, args)` raising ValueError when the
      model cannot be built for that input with those arguments (`args`:
      every keyword argument of the builder, defaults filled in). It runs
      in `check_model`, before anything is built, so a command can refuse
      a bad combination before reading any data.

  Returns:
    A decorator that registers the builder and returns it unchanged.

  Raises:
    ValueError: If `name` is already registered, `kind` is unknown,
      `default_cfg` has unknown keys or malformed values, or the builder
      takes no `dropout`.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(
        f"Model name must be a non-empty string. Received: name={name!r}")
  if kind not in KINDS:
    raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
  cfg = _default_cfg(kind)
  overrides = dict(default_cfg or {})
  unknown = sorted(set(overrides) - set(_CFG_KEYS))
  if unknown:
    raise ValueError(
        f"Unknown default_cfg keys {unknown} for model {name!r}; allowed "
        f"keys are {list(_CFG_KEYS)}. Received: default_cfg={default_cfg!r}")
  cfg.update(overrides)
  cfg["input_size"] = tuple(int(v) for v in cfg["input_size"])
  cfg["mean"] = tuple(float(v) for v in cfg["mean"])
  cfg["std"] = tuple(float(v) for v in cfg["std"])
  if len(cfg["input_size"]) != 2:
    raise ValueError("`input_size` must be (height, width). "
                     f"Received: input_size={cfg['input_size']!r}")
  if cfg["features"] not in FEATURE_KINDS:
    raise ValueError(f"`features` must be one of {FEATURE_KINDS}. "
                     f"Received: features={cfg['features']!r}")

  def decorator(fn):
    if name in _REGISTRY:
      raise ValueError(
          f"Model {name!r} is already registered (by "
          f"{_REGISTRY[name][0].__module__}.{_REGISTRY[name][0].__name__}). "
          f"Received: name={name!r}")
    if "dropout" not in inspect.signature(fn).parameters:
      raise ValueError(
          f"Builder {fn.__name__} of model {name!r} must take `dropout` (the "
          "rate before the classifier). Received: parameters="
          f"{list(inspect.signature(fn).parameters)}")
    _REGISTRY[name] = (fn, cfg, check)
    return fn

  return decorator


def list_models(kind=None):
  """Lists registered model names.

  Args:
    kind: Optional `"scratch"` or `"transfer"` to list only that kind.

  Returns:
    Sorted list of model names.

  Raises:
    ValueError: If `kind` is not None and not a known kind.
  """
  if kind is not None and kind not in KINDS:
    raise ValueError(
        f"`kind` must be None or one of {KINDS}. Received: kind={kind!r}")
  return sorted(name for name, (_, cfg, _) in _REGISTRY.items()
                if kind is None or cfg["kind"] == kind)


def _lookup(name):
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}. Known models: {list_models()}. "
                     f"Received: name={name!r}")
  return _REGISTRY[name]


def get_model_cfg(name):
  """Returns a copy of the default data config of a registered model.

  Args:
    name: Registered model name.

  Returns:
    Dict with `input_size` (H, W), `channels`, `mean` and `std` (per
    channel, 0..255 pixel units), `kind`, `min_size`, `preprocessing` and
    `features` (`"map"` or `"vector"`: what `create_backbone` outputs).
    The model already normalizes internally; mean/std are recorded so
    other code can reason about (or undo) that normalization.

  Raises:
    ValueError: If `name` is not registered.
  """
  return copy.deepcopy(_lookup(name)[1])


def _options(name, input_shape, kwargs):
  """Checks a backbone's input and options; returns (input shape, options).

  The options are every keyword argument of the builder, defaults filled in.
  """
  fn, cfg, check = _lookup(name)
  if input_shape is None:
    input_shape = (*cfg["input_size"], cfg["channels"])
  try:
    input_shape = tuple(int(v) for v in input_shape)
  except (TypeError, ValueError):
    raise ValueError(
        "`input_shape` must be (height, width, channels) integers. "
        f"Received: input_shape={input_shape!r}") from None
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError(
        "`input_shape` must be (height, width, channels) with positive "
        f"entries. Received: input_shape={input_shape!r}")
  if min(input_shape[:2]) < cfg["min_size"]:
    raise ValueError(
        f"Model {name!r} needs height and width >= {cfg['min_size']}. "
        f"Received: input_shape={input_shape!r}")
  parameters = inspect.signature(fn).parameters
  if not any(p.kind is inspect.Parameter.VAR_KEYWORD
             for p in parameters.values()):
    accepted = list(parameters)[1:]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
      raise TypeError(
          f"Model {name!r} got unexpected keyword argument(s) {unknown}; "
          f"it accepts {accepted}. Received: kwargs={kwargs!r}")
  bound = inspect.signature(fn).bind_partial(input_shape, **kwargs)
  bound.apply_defaults()
  options = {k: v for k, v in bound.arguments.items()
             if k != list(parameters)[0]}
  if check is not None:
    check(input_shape, options)
  return input_shape, options


# Output activations of a classifier head: one class of several (softmax),
# or each label on its own (sigmoid, multi-label).
HEADS = ("softmax", "sigmoid")


def _check_num_classes(num_classes, head="softmax"):
  if head not in HEADS:
    raise ValueError(f"`head` must be one of {HEADS}. Received: head={head!r}")
  least = 2 if head == "softmax" else 1
  if (isinstance(num_classes, bool) or not isinstance(num_classes, int) or
      num_classes < least):
    raise ValueError(
        f"`num_classes` must be an integer >= {least} (outputs are {head} "
        f"probabilities). Received: num_classes={num_classes!r}")


def check_model(name, num_classes, input_shape=None, head="softmax",
                **kwargs):
  """Checks that `create_model` with these arguments would build, without building.

  Args:
    name: Registered model name.
    num_classes: Number of classes.
    input_shape: `(height, width, channels)` or None for the model's own.
    head: "softmax" or "sigmoid" (see `create_model`).
    **kwargs: Model-specific options.

  Returns:
    The input shape as a tuple of ints.

  Raises:
    ValueError: For an unknown name, a bad `num_classes` or `input_shape`,
      or an option value or input the model cannot take.
    TypeError: For a keyword argument the model does not accept.
  """
  _lookup(name)
  _check_num_classes(num_classes, head)
  return check_backbone(name, input_shape, **kwargs)


def check_backbone(name, input_shape=None, **kwargs):
  """Checks that `create_backbone` with these arguments would build.

  Args:
    name: Registered model name.
    input_shape: `(height, width, channels)` or None for the model's own.
    **kwargs: Model-specific options.

  Returns:
    The input shape as a tuple of ints.

  Raises:
    ValueError: For an unknown name, a bad `input_shape`, or an option
      value or input the model cannot take.
    TypeError: For a keyword argument the model does not accept.
  """
  return _options(name, input_shape, kwargs)[0]


def create_backbone(name, input_shape=None, **kwargs):
  """Builds a registered model's backbone: raw pixels in, features out.

  What `create_model` puts its classifier head on, and what clip models
  and face embedders are built on (timm's `create_model(name,
  num_classes=0)`). The output is the identity layer named `FEATURES`; the
  model's config says what it holds (`get_model_cfg(name)["features"]`):
  `"map"`, the last spatial feature map `[batch, h, w, channels]`, or
  `"vector"`, the pre-head feature vector `[batch, units]` of models
  without a spatial map (mlp, row_lstm, vit_tiny). Layer names are those of
  the classifier, so weights move between the two by name.

  Args:
    name: Registered model name (see `list_models()`).
    input_shape: `(height, width, channels)`. Defaults to the model's
      `input_size` with its default number of channels.
    **kwargs: Model-specific options, as for `create_model`. `dropout` is
      accepted and, for most models, only matters to the head.

  Returns:
    An uncompiled `keras.Model` named `"<name>_backbone"` taking one input
    named `"image"` of float32 raw pixels in 0..255.

  Raises:
    ValueError: For an unknown name, a bad `input_shape` or an invalid
      model-specific option value.
    TypeError: For a keyword argument the model does not accept.
  """
  return _build_backbone(name, *_options(name, input_shape, kwargs))


def _build_backbone(name, input_shape, options):
  body = _lookup(name)[0](input_shape, **options)
  features = layers.Identity(name=FEATURES)(body.output)
  return keras.Model(body.input, features, name=f"{name}_backbone")


def create_model(name, num_classes, input_shape=None, head="softmax",
                 **kwargs):
  """Builds a registered classifier: its backbone and a softmax head.

  Every model takes one input named `"image"` of float32 raw pixels in
  0..255 with shape `input_shape`, normalizes internally and outputs
  float32 class probabilities of shape `(batch, num_classes)`. The head
  averages a feature map (`avg_pool`), applies `dropout` (`head_dropout`)
  and ends in a float32 softmax `Dense` named `"predictions"`, so
  probabilities and the loss computed from them keep full precision under
  a mixed-precision policy. The model is flat: the backbone's layers are
  the classifier's own. With `head="sigmoid"` (multi-label) each output is
  a label's own probability.

  Args:
    name: Registered model name (see `list_models()`).
    num_classes: Number of classes, at least 2.
    input_shape: `(height, width, channels)`. Defaults to the model's
      `input_size` with its default number of channels.
    head: "softmax" (one class of `num_classes`, at least 2) or "sigmoid"
      (independent labels, at least 1).
    **kwargs: Model-specific options, e.g. `dropout`, `edges`, `width`,
      `depth`, `weights`, `freeze_backbone`.

  Returns:
    An uncompiled `keras.Model` named `name`.

  Raises:
    ValueError: For an unknown name, a bad `num_classes` or a bad
      `input_shape`, or an invalid model-specific option value.
    TypeError: For a keyword argument the model does not accept.
  """
  _lookup(name)
  _check_num_classes(num_classes, head)
  input_shape, options = _options(name, input_shape, kwargs)
  backbone = _build_backbone(name, input_shape, options)
  dropout = options["dropout"]
  x = backbone.output
  if _lookup(name)[1]["features"] == "map":
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
  if dropout > 0:
    x = layers.Dropout(dropout, name="head_dropout")(x)
  outputs = layers.Dense(
      num_classes, activation=head, dtype="float32", name=HEAD)(x)
  return keras.Model(backbone.input, outputs, name=name)


def _inner_layers(layer):
  """The layers a container runs: a model's, a TimeDistributed's; else None."""
  if isinstance(layer, keras.Model):
    return layer.layers
  if isinstance(layer, layers.TimeDistributed):
    return [layer.layer]
  return None


def layers_within(model):
  """Every layer nested in `model`, containers and their layers, depth first.

  Nested models and `TimeDistributed` wrappers are opened; other wrappers
  (`Bidirectional`) count as one layer.
  """
  return [found for layer in _inner_layers(model) or []
          for found in [layer, *layers_within(layer)]]


def leaf_layers(model):
  """The layers of `model` that hold no other layers, input to output."""
  return [layer for layer in layers_within(model)
          if _inner_layers(layer) is None]


def backbone_of(model):
  """The backbone inside a model built on `create_backbone`.

  Finds the layer named `FEATURES` in `model` or in a model nested in it
  (a clip model's frame model, a classifier's own graph) and returns the
  part of that model from its input to those features.

  Args:
    model: A classifier from `create_model`, a clip model, an embedder or
      any model built on one backbone (built here or loaded from a file
      written by this version).

  Returns:
    A functional `keras.Model` from raw pixels to the features, sharing
    its layers (and so its weights and trainable flags) with `model`.

  Raises:
    ValueError: If `model` holds no backbone or more than one.
  """
  holders = [m for m in [model, *layers_within(model)]
             if isinstance(m, keras.Model) and
             any(layer.name == FEATURES for layer in m.layers)]
  if len(holders) != 1:
    raise ValueError(
        f"A model built on one registered backbone ends it in a layer named "
        f"{FEATURES!r}; {model.name!r} holds {len(holders)}. Received: "
        f"model={model.name!r}")
  holder = holders[0]
  return keras.Model(holder.input, holder.get_layer(FEATURES).output,
                     name=f"{holder.name}_backbone")


def classifier_head(model):
  """The embedding a classifier's head reads, and the head's weights.

  Every classifier from `create_model` (and every clip model) ends in a
  float32 `Dense` named `HEAD` whose activation (softmax or sigmoid) turns
  logits into scores: its input is the model's embedding (pooled features
  after the head's dropout, the identity at inference).

  Args:
    model: A classifier built by `create_model` or a clip model (built or
      loaded).

  Returns:
    (embedder, kernel, bias): a functional `keras.Model` from the model's
    input to its embedding `[batch, D]`, sharing its layers, and the head's
    weights as float32 numpy arrays `[D, C]` and `[C]`, so that
    `logits = embedding @ kernel + bias`.

  Raises:
    ValueError: If `model` has no such head (an ensemble, a face embedder,
      a model from elsewhere).
  """
  try:
    head = model.get_layer(HEAD)
  except ValueError:
    head = None
  if not isinstance(head, layers.Dense) or not head.use_bias:
    raise ValueError(
        f"{model.name!r} does not end in imgrec's classifier head (a Dense "
        f"layer named {HEAD!r} with a bias): it has no embedding to score. "
        f"Received: model={model.name!r}")
  embedder = keras.Model(model_inputs(model), head.input,
                         name=f"{model.name}_embedding")
  kernel, bias = (keras.ops.convert_to_numpy(w).astype("float32")
                  for w in (head.kernel, head.bias))
  return embedder, kernel, bias


def spatial_features(model):
  """The last spatial feature map a model's answer is read from, if any.

  Explanations weigh this map (Grad-CAM and its kin). A backbone with
  `"map"` features gives its `FEATURES` output; a transformer (vit_tiny)
  its last tokens (`TOKENS`), which lie on the patch grid; a model without
  either (mlp, row_lstm, a clip model whose frame model runs inside a
  `TimeDistributed`) has none.

  Args:
    model: a functional model built on `create_backbone` (a classifier, an
      embedder), built here or loaded.

  Returns:
    (tensor, grid): the symbolic tensor in `model`'s graph, and None for a
    `[batch, h, w, c]` map or `(h, w)` for tokens `[batch, h * w, c]`; or
    None when the model has no spatial map in its own graph.
  """
  names = {layer.name: layer for layer in model.layers}
  found = names.get(FEATURES)
  if found is not None and len(found.output.shape) == 4:
    return found.output, None
  found = names.get(TOKENS)
  if found is None or len(found.output.shape) != 3:
    return None
  inputs = model_inputs(model)
  if isinstance(inputs, list):
    return None
  tokens = found.output.shape[1]
  height, width = inputs.shape[1:3]
  if not (tokens and height and width):
    return None
  rows = int(round((tokens * height / width) ** 0.5))
  if rows < 1 or tokens % rows:
    return None
  return found.output, (rows, tokens // rows)
