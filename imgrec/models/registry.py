"""Model registry: named builder functions, their data configs, `create_model`.

A builder is a small function `fn(num_classes, input_shape, **kw)` returning a
functional `keras.Model` whose name is the registered name. Each registered
model carries a default config (timm's `default_cfg`): the input size it was
designed for, its normalization statistics and its minimum input size. The
data pipeline reads this config instead of repeating it, so there is one
source of truth for how a model wants its pixels.
"""

import copy
import inspect

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

KINDS = ("scratch", "transfer")

_CFG_KEYS = ("input_size", "channels", "mean", "std", "min_size",
             "preprocessing")

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
      "kind": kind,
  }


def register_model(name, default_cfg=None, kind="scratch", check=None):
  """Returns a decorator that registers a model builder under `name`.

  Args:
    name: Registry name; also the name of the built `keras.Model`.
    default_cfg: Optional dict overriding the default data config. Keys:
      `input_size` (H, W), `channels`, `mean` and `std` (per channel,
      in 0..255 pixel units), `min_size` (smallest H or W the model
      accepts) and `preprocessing` (informational name of the
      normalization the model applies to its raw-pixel input).
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
    ValueError: If `name` is already registered, `kind` is unknown or
      `default_cfg` has unknown keys or malformed values.
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

  def decorator(fn):
    if name in _REGISTRY:
      raise ValueError(
          f"Model {name!r} is already registered (by "
          f"{_REGISTRY[name][0].__module__}.{_REGISTRY[name][0].__name__}). "
          f"Received: name={name!r}")
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
    channel, 0..255 pixel units), `kind`, `min_size` and `preprocessing`.
    The model already normalizes internally; mean/std are recorded so
    other code can reason about (or undo) that normalization.

  Raises:
    ValueError: If `name` is not registered.
  """
  return copy.deepcopy(_lookup(name)[1])


def _builder_kwargs(fn):
  """Returns the keyword names a builder accepts, or None for **kwargs."""
  params = list(inspect.signature(fn).parameters.values())[2:]
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
    return None
  return [p.name for p in params]


def check_model(name, num_classes, input_shape=None, **kwargs):
  """Checks that `create_model` with these arguments would build, without building.

  Args:
    name: Registered model name.
    num_classes: Number of classes.
    input_shape: `(height, width, channels)` or None for the model's own.
    **kwargs: Model-specific options.

  Returns:
    The input shape as a tuple of ints.

  Raises:
    ValueError: For an unknown name, a bad `num_classes` or `input_shape`,
      or an option value or input the model cannot take.
    TypeError: For a keyword argument the model does not accept.
  """
  fn, cfg, check = _lookup(name)
  if (isinstance(num_classes, bool) or not isinstance(num_classes, int) or
      num_classes < 2):
    raise ValueError(
        "`num_classes` must be an integer >= 2 (outputs are softmax "
        f"probabilities). Received: num_classes={num_classes!r}")
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
  accepted = _builder_kwargs(fn)
  if accepted is not None:
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
      raise TypeError(
          f"Model {name!r} got unexpected keyword argument(s) {unknown}; "
          f"it accepts {accepted}. Received: kwargs={kwargs!r}")
  if check is not None:
    bound = inspect.signature(fn).bind_partial(num_classes, input_shape,
                                               **kwargs)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items()
            if k not in list(inspect.signature(fn).parameters)[:2]}
    check(input_shape, args)
  return input_shape


def create_model(name, num_classes, input_shape=None, **kwargs):
  """Builds a registered model.

  Every model takes one input named `"image"` of float32 raw pixels in
  0..255 with shape `input_shape`, normalizes internally and outputs
  float32 class probabilities of shape `(batch, num_classes)`.

  Args:
    name: Registered model name (see `list_models()`).
    num_classes: Number of classes, at least 2.
    input_shape: `(height, width, channels)`. Defaults to the model's
      `input_size` with its default number of channels.
    **kwargs: Model-specific options, e.g. `dropout`, `edges`, `width`,
      `depth`, `weights`, `freeze_backbone`.

  Returns:
    An uncompiled `keras.Model` named `name`.

  Raises:
    ValueError: For an unknown name, a bad `num_classes` or a bad
      `input_shape`, or an invalid model-specific option value.
    TypeError: For a keyword argument the model does not accept.
  """
  input_shape = check_model(name, num_classes, input_shape, **kwargs)
  return _lookup(name)[0](num_classes, input_shape, **kwargs)
