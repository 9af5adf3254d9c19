"""The configurations of imgrec's jobs: one frozen, validated, serializable record each.

Each field says, in one place, its name, default, type, allowed values, help
text and check; the command-line flags are generated from these fields
(`imgrec.cli.flags`), so a flag and its config field cannot drift apart.
The final configuration of a training run is written to
`<model_dir>/config.json`, so every run can be repeated and every later tool
(evaluate, export) knows what was trained on what.

`validate()` checks every field and the relations between fields without
reading any data. Checks that need the model registry (the model name and
each model's own input limits) run in `imgrec.tasks.resolve`, also before
any data is read.
"""

import collections.abc
import dataclasses
import functools
import json
import math
import numbers
import os
import reprlib
import typing

from imgrec.errors import ImgrecError

AUGMENT_LEVELS = ("none", "light", "medium", "heavy", "randaugment")
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
# Explanation methods (`imgrec.inference.explain`): on the last spatial
# feature map, then on the input pixels (any model).
EXPLAIN_METHODS = ("gradcam", "gradcam++", "layercam", "integrated_gradients",
                   "gradient_x_input")
TEMPORAL_MODELS = ("gru", "lstm", "attention", "average")
CACHE_MODES = ("auto", "none", "memory")  # Or a file path prefix.
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
SPLITS = ("train", "val", "test")
TFLITE_VARIANTS = ("float", "fp16", "dynamic", "int8")
TTA_MODES = ("flip", "crops")
SMOOTHING_MODES = ("ema", "mean", "none")
# Accuracy points an int8 file may lose against the Keras model before the
# export keeps its worst layers in float.
DEFAULT_MAX_INT8_DROP = 0.5
# Pillow's own default limit (Image.MAX_IMAGE_PIXELS): about 0.25 GiB of
# 24-bit pixels.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def field(default, help, *, choices=None, check=None, flag=True,
          parse=None, aliases=(), required=None):
  """A config field with everything its flag and its validation need.

  Args:
    default: the default value.
    help: one or two sentences for --help.
    choices: the allowed values, if they are a fixed list.
    check: `fn(value) -> None or why it is bad`, for values that are set.
    flag: whether commands expose the field as a flag.
    parse: `fn(text) -> value` for fields whose flag is not a plain int,
      float, bool or string (the flag then takes text).
    aliases: other flag names of the field (names users know from earlier
      versions).
    required: for a field the record cannot do without, what to pass: an
      empty value is refused with "--<name> is required: <required>".
  """
  return dataclasses.field(default=default, metadata=dict(
      help=help, choices=choices, check=check, flag=flag, parse=parse,
      aliases=tuple(aliases), required=required))


def _like(section, name, default=dataclasses.MISSING, **metadata):
  """The field `name` of the record class `section` with another default or
  metadata (help, check, flag, aliases, required): a task's own default for a field
  of a shared section, whose section it stays in."""
  original = section.__dataclass_fields__[name]
  return dataclasses.field(
      default=original.default if default is dataclasses.MISSING
      else default, metadata={**original.metadata, **metadata})


def _at_least(low):
  return lambda v: None if v >= low else f"must be at least {low}"


def _positive(v):
  return None if v > 0 else "must be positive"


def _non_negative(v):
  return None if v >= 0 else "must be >= 0"


def _fraction(v):
  return None if 0 <= v < 1 else "must be in [0, 1)"


def _finite(check):
  def checked(v):
    if isinstance(v, float) and not math.isfinite(v):
      return "must be a finite number"
    return check(v)
  return checked


def parse_image_size(text):
  """Parses "64" or "64,48" (height, width) into an int or a (h, w) tuple."""
  parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
  try:
    values = tuple(int(p) for p in parts)
  except ValueError:
    raise ValueError(f"expected SIZE or HEIGHT,WIDTH in pixels, got "
                     f"{text!r}") from None
  if len(values) == 1:
    return values[0]
  if len(values) == 2:
    return values
  raise ValueError(f"expected SIZE or HEIGHT,WIDTH, got {text!r}")


def _check_image_size(value):
  sides = (value,) if isinstance(value, int) else tuple(value)
  if len(sides) not in (1, 2) or not all(isinstance(s, int) for s in sides):
    return "expected SIZE or (HEIGHT, WIDTH) integers"
  if not all(8 <= s <= 4096 for s in sides):
    return "each side must be between 8 and 4096 pixels"
  return None


def _parse_verbose(text):
  return text if text == "auto" else int(text)


def split_paths(text):
  """A comma-separated list of paths (or words) -> tuple; a path that exists
  with a comma in its name stays whole."""
  if not text:
    return ()
  if "," in text and os.path.exists(text):
    return (text,)
  return tuple(p.strip() for p in text.split(",") if p.strip())


def _parse_names(text):
  """"a, b,c" -> ("a", "b", "c")."""
  return tuple(p.strip() for p in text.split(",") if p.strip())


def _check_tflite_variants(variants):
  bad = [q for q in variants if q not in TFLITE_VARIANTS]
  if bad:
    raise ImgrecError(f"Unknown --tflite variant(s) {', '.join(bad)}. "
                      f"Expected some of {', '.join(TFLITE_VARIANTS)}.")


def _check_tta(value):
  modes = split_paths(value)
  bad = [m for m in modes if m not in ("none", *TTA_MODES)]
  if bad or not modes or ("none" in modes and len(modes) > 1):
    return "must be none, flip, crops or flip,crops"
  return None


def _check_verbose(value):
  return None if value in ("auto", 0, 1, 2) else "expected auto, 0, 1 or 2"


def _check_unfreeze(value):
  if value == "all" or (value.isdigit() and int(value) > 0):
    return None
  return "expected all or a positive number of top layers"


_TYPE_WORDS = {bool: "True or False", int: "an integer", float: "a number",
               str: "a string", tuple: "a list or tuple"}


class TaskDefault(int):
  """The default of an int field that a run's task may set otherwise
  (`Config.with_task_defaults`): `epochs` is 20 unless the task has its own
  number. A value the user gives, even the same number, is a plain int and
  stays."""

  def __repr__(self):
    return int.__repr__(self)


@functools.cache
def _field_types(cls):
  """{field name: the types its hint allows} of a config record class."""
  hints = typing.get_type_hints(cls)
  return {f.name: typing.get_args(hints[f.name]) or (hints[f.name],)
          for f in dataclasses.fields(cls)}


def _as_type(value, kinds):
  """`value` as one of `kinds` (a field's types), or raises TypeError.

  An int field takes no bool (True is an int to Python, not to a user) and
  no float; a float field takes an int (JSON writes 1.0 as 1) and holds it
  as a float; a str field takes a path object; a tuple field takes a list
  (JSON has no tuples).
  """
  if value is None and type(None) in kinds:
    return None
  if isinstance(value, bool):
    if bool in kinds:
      return value
  elif int in kinds and isinstance(value, numbers.Integral):
    return int(value)
  elif float in kinds and isinstance(value, numbers.Real):
    try:
      return float(value)
    except OverflowError:
      pass
  elif str in kinds and isinstance(value, (str, os.PathLike)):
    text = os.fspath(value)
    if isinstance(text, str):
      return text
  elif tuple in kinds and isinstance(value, (tuple, list)):
    return tuple(value)
  raise TypeError(" or ".join(_TYPE_WORDS.get(k, "None") for k in kinds))


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 60, 40, 60


def short_repr(value):
  """repr(value) cut short: a message stays one readable line, whatever the
  value (a 300-digit number, a deeply nested list)."""
  return _REPR.repr(value)


@dataclasses.dataclass(frozen=True)
class Config:
  """Common behaviour of the config records: validation and (de)serialization.

  A record checks the type of every field when it is built (from the
  field's type hint), so a wrong type fails with the field's name before
  any work starts; `validate` checks values and relations.
  """

  def __post_init__(self):
    for name, kinds in _field_types(type(self)).items():
      value = getattr(self, name)
      if isinstance(value, TaskDefault):
        continue  # The record's own default, kept marked for the task.
      try:
        typed = _as_type(value, kinds)
      except TypeError as e:
        raise ImgrecError(
            f"Bad type for {type(self).__name__}.{name}: expected {e}, got "
            f"{type(value).__name__}. Received: {name}={short_repr(value)}"
        ) from None
      if typed is not value:
        object.__setattr__(self, name, typed)  # Frozen: set once, here.

  @classmethod
  def coerce(cls, config, caller):
    """`config` itself, or the record a dict of its fields builds.

    The Python API takes a record or a plain dict of its fields (the same
    keys as its config.json).

    Args:
      config: a `cls` record or a mapping of its fields.
      caller: the API function's name, for the message.

    Returns:
      A `cls` record.

    Raises:
      ImgrecError: `config` is something else, or a field is unknown or of
        the wrong type.
    """
    if isinstance(config, cls):
      return config
    if isinstance(config, collections.abc.Mapping):
      return cls.from_dict(config)
    raise ImgrecError(f"{caller}() takes an imgrec.{cls.__name__} (or a dict "
                      f"of its fields). Received: {type(config).__name__} "
                      f"{short_repr(config)}")

  def _bad(self, name, why):
    return ImgrecError(f"Bad value for --{name}: {why}. "
                       f"Received: {name}={short_repr(getattr(self, name))}")

  def validate(self, check_files=True):
    """Checks every field, then the relations between them.

    Args:
      check_files: also check that the files and folders fields name exist.

    Returns:
      self, for chaining.

    Raises:
      ImgrecError: naming the first bad field and what to pass instead.
    """
    fields = dataclasses.fields(self)
    # A value the user gave is named before a flag they left out.
    for f in fields:
      value = getattr(self, f.name)
      if value is None:
        continue
      choices, check = f.metadata.get("choices"), f.metadata.get("check")
      if choices is not None and value not in choices:
        raise self._bad(f.name, "expected one of "
                        f"{', '.join(map(str, choices))}")
      if check is not None:
        why = _finite(check)(value)
        if why:
          raise self._bad(f.name, why)
    for f in fields:
      if f.metadata.get("required") and not getattr(self, f.name):
        raise ImgrecError(f"--{f.name} is required: "
                          f"{f.metadata['required']}.")
    self._check_relations(check_files)
    return self

  def _check_relations(self, check_files):
    """Cross-field (and, with `check_files`, file) checks; raise ImgrecError."""

  def replace(self, **changes):
    """A copy with `changes` applied (configs are frozen)."""
    return dataclasses.replace(self, **changes)

  def with_task_defaults(self, **defaults):
    """A copy in which every field still at its `TaskDefault` takes the
    task's number from `defaults` (or its own, unmarked); the values the
    user gave stay as they are."""
    changes = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, TaskDefault):
        changes[f.name] = int(defaults.get(f.name, value))
    unknown = set(defaults) - {f.name for f in dataclasses.fields(self)}
    if unknown:
      raise ValueError(f"task defaults for unknown fields: {sorted(unknown)}")
    return self.replace(**changes) if changes else self

  def to_dict(self):
    return {f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)}

  @classmethod
  def field_sections(cls):
    """{field name: the section that declares it ("data", "model", "recipe",
    "run", a task's), or None for a field of the record itself}."""
    out = {}
    for f in dataclasses.fields(cls):
      for klass in reversed(cls.__mro__):
        if f.name in klass.__dict__.get("__annotations__", {}):
          out[f.name] = klass.__dict__.get("section")
          break
    return out

  @classmethod
  def from_dict(cls, data):
    """Builds a config from a dict, flat or nested by section (as `to_json`
    writes it); unknown keys are an error."""
    sections = set(cls.field_sections().values()) - {None}
    flat = {}
    for key, value in data.items():
      inner = (value.items() if key in sections and isinstance(
          value, collections.abc.Mapping) else [(key, value)])
      for name, item in inner:
        if name in flat:
          raise ImgrecError(f"Configuration key {name!r} is given twice.")
        flat[name] = item
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(flat) - known))
    if unknown:
      raise ImgrecError(f"Unknown configuration key(s): {', '.join(unknown)}. "
                        f"Known keys: {', '.join(sorted(known))}")
    return cls(**flat)

  def to_json(self):
    """The record as JSON, fields nested by their section."""
    sections, data = self.field_sections(), {}
    for name, value in self.to_dict().items():
      where = sections[name]
      (data.setdefault(where, {}) if where else data)[name] = value
    return json.dumps(data, indent=2, sort_keys=True) + "\n"

  @classmethod
  def from_json(cls, text, source="config"):
    try:
      data = json.loads(text)
    except (ValueError, RecursionError) as e:
      why = e if isinstance(e, ValueError) else "nested too deeply"
      raise ImgrecError(f"{source} is not valid JSON: {why}. Delete it or "
                        "restore it from the run's backup.") from None
    if not isinstance(data, dict):
      raise ImgrecError(f"{source} does not hold a JSON object.")
    return cls.from_dict(data)


def _plain(value):
  return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class DataConfig(Config):
  """Where the images come from, how they are split and checked.

  The data is one of: `data_dir` (class folders), `labels_csv` (a CSV of
  path,label rows), `tfds` (a TFDS dataset prepared in `tfds_data_dir`,
  default $TFDS_DATA_DIR or ~/tensorflow_datasets); with none of them, the
  built-in `dataset` (default: `shapes`).
  """
  section = "data"
  data_dir: str | None = field(
      None, "Image folder: root/<class>/* or root/{train,val,test}/<class>/*. "
      "Default: the built-in --dataset.")
  dataset: str = field(
      "shapes", "Built-in dataset used when --data_dir, --labels_csv and "
      "--tfds are not given.")
  labels_csv: str | None = field(
      None, "CSV file with path,label columns (path,labels, label sets, for "
      "--task=multilabel) and optionally split (train/val/test); relative "
      "paths are relative to the CSV's folder. Instead of --data_dir.")
  tfds: str | None = field(
      None, "TensorFlow Datasets name (e.g. mnist, imagenette/320px), already "
      "prepared in --tfds_data_dir; nothing is downloaded. Instead of "
      "--data_dir.")
  tfds_data_dir: str | None = field(None, (
      "Folder where `tfds build` prepared --tfds. Default: $TFDS_DATA_DIR or "
      "~/tensorflow_datasets."))
  val_split: float = field(
      0.1, "Fraction of each class held out for validation when the data "
      "has no val split.", check=_fraction)
  test_split: float = field(
      0.1, "Fraction of each class held out for testing when the data has "
      "no test split.", check=_fraction)
  channels: int = field(3, "1 (grayscale) or 3 (RGB).", choices=(1, 3))
  scan: bool = field(True, "Validate every image first: skip and report "
                     "broken files, convert odd formats once.")
  max_image_pixels: int = field(
      DEFAULT_MAX_IMAGE_PIXELS, "Skip images whose header declares more "
      "pixels (decompression bombs). Default: Pillow's limit.",
      check=_positive)
  max_bad_fraction: float = field(
      0.1, "Fail if more than this fraction of a class's files are "
      "unusable.", check=lambda v: None if 0 <= v <= 1 else "must be in "
      "[0, 1]")
  seed: int = field(42, "Seed of the split (and, in training, of the "
                    "weights and the augmentation).")
  allow_outside: bool = field(
      False, "Use image files outside the data folder (the labels CSV's "
      "folder) that symlinks or CSV paths lead to. Off: they are skipped "
      "and reported.")
  leakage: str = field(
      "warn", "Images of one split duplicated (exactly or nearly) in "
      "another: warn (one line; data_report.json lists them), drop (remove "
      "the copies from the later split, recorded in splits.json), fail, or "
      "off (no search).", choices=("warn", "drop", "fail", "off"))
  exclude: str | None = field(
      None, "A text file of image paths to leave out, one a line (# starts "
      "a comment): imgrec-audit's exclude.txt after review. A run with "
      "another list is another run.")

  def _check_relations(self, check_files):
    sources = [n for n in ("data_dir", "labels_csv", "tfds")
               if getattr(self, n)]
    if len(sources) > 1:
      raise ImgrecError(
          "Pass at most one of --data_dir, --labels_csv and --tfds. Received: "
          + ", ".join(f"{n}={getattr(self, n)!r}" for n in sources))
    if self.tfds_data_dir and not self.tfds:
      raise self._bad("tfds_data_dir", "only used with --tfds=NAME")
    if check_files and self.labels_csv and not os.path.isfile(
        self.labels_csv):
      raise self._bad("labels_csv", (
          "not a regular file" if os.path.exists(self.labels_csv) else
          "no such file") + "; expected a CSV with path,label columns "
                      "(path,labels for --task=multilabel)")
    if check_files and self.exclude and not os.path.isfile(self.exclude):
      raise self._bad("exclude", ("not a regular file" if os.path.exists(
          self.exclude) else "no such file") + "; expected a text file of "
                      "image paths, one a line")
    if self.val_split + self.test_split >= 1:
      raise ImgrecError(
          "--val_split + --test_split must be below 1: training needs the "
          f"rest. Received: val_split={self.val_split}, "
          f"test_split={self.test_split}")


@dataclasses.dataclass(frozen=True)
class ScanConfig(DataConfig):
  """What `imgrec-scan` does besides the data fields."""
  report: str | None = field(
      None, "Where to write the JSON report (- for stdout; a FIFO or device "
      "is written into). Default: data_report.json in --prepared_dir (never "
      "inside the data folder).")
  overwrite: bool = field(False, "Replace an existing --report file.")
  prepared_dir: str | None = field(
      None, "Folder for converted images and the scan cache. Default: "
      "~/.cache/imgrec/prepared/<name>-<hash of the data folder>.")
  workers: int | None = field(
      None, "Scan threads. Default: one per CPU.", check=_positive)
  progress: bool = field(True, "Show a progress line on a terminal.")


@dataclasses.dataclass(frozen=True)
class ModelSection(Config):
  """Which registered model, at what input size, from which weights.

  `image_size=None` takes the model's own default input size; an int is a
  square side, a (height, width) pair a rectangle.
  """
  section = "model"
  model: str = field("simple_cnn", "Registered model name (see "
                     "imgrec.list_models()); for clips, the model run on "
                     "every frame.")
  image_size: int | tuple | None = field(
      None, "Input size in pixels: SIZE or HEIGHT,WIDTH. Default: the "
      "model's own.", check=_check_image_size, parse=parse_image_size)
  weights: str = field(
      "imagenet", "Transfer models: imagenet, none, or the path of a local "
      "weights file.")
  freeze_backbone: bool = field(False, "Transfer models: train only the "
                                "head (the backbone stays frozen).")
  dropout: float | None = field(
      None, "Dropout before the classifier. Default: the model's own.",
      check=_fraction)
  edges: bool = field(False, "Add Sobel edge channels to the input.")


@dataclasses.dataclass(frozen=True)
class RecipeSection(Config):
  """How the model is trained: epochs, optimizer, schedule, augmentation,
  regularization, precision and staged fine-tuning."""
  section = "recipe"
  epochs: int = field(TaskDefault(20), "Training epochs (default: 20, and 30 "
                      "for --task=multilabel, whose one sigmoid a class "
                      "converges later).", check=_at_least(1))
  batch_size: int = field(32, "Global batch size.", check=_at_least(1))
  optimizer: str = field("adam", "Optimizer.", choices=OPTIMIZERS)
  learning_rate: float = field(3e-3, "Peak learning rate (after the "
                               "warmup).", check=_positive)
  weight_decay: float = field(0.0, "Decoupled weight decay (adamw, sgd).",
                              check=_non_negative)
  momentum: float = field(0.9, "SGD momentum.", check=_fraction)
  label_smoothing: float = field(0.0, "Label smoothing.", check=_fraction)
  lr_schedule: str = field("cosine", "Learning-rate schedule, after the "
                           "warmup.", choices=LR_SCHEDULES)
  warmup_epochs: float = field(
      1.0, "Linear learning-rate warmup (runs shorter than the warmup warm "
      "up for all but their last step).", check=_non_negative)
  augment: str = field(
      "light", "Augmentation: light = random flip and shift; medium adds "
      "rotation, zoom and contrast; heavy makes them stronger and adds "
      "brightness and random erasing; randaugment = Keras RandAugment + "
      "random erasing.", choices=AUGMENT_LEVELS)
  flip: str = field("horizontal", "Random flips (none for digits and text).",
                    choices=FLIP_MODES)
  mixup: float = field(0.0, "MixUp alpha (0: off).", check=_non_negative)
  cutmix: float = field(0.0, "CutMix alpha (0: off).", check=_non_negative)
  ema: bool = field(False, "Evaluate and save an exponential moving "
                    "average of the weights.")
  ema_momentum: float = field(
      0.99, "EMA momentum.",
      check=lambda v: None if 0 < v < 1 else "must be in (0, 1)")
  grad_accum_steps: int = field(1, "Accumulate gradients over this many "
                                "batches per update.", check=_at_least(1))
  class_weight: str = field("none", "auto: weigh classes by inverse "
                            "frequency (imbalanced data).",
                            choices=("none", "auto"))
  early_stopping: int = field(0, "Stop after this many epochs without a "
                              "better validation accuracy (0: off).",
                              check=_non_negative)
  mixed_precision: bool = field(False, "bfloat16 on CPU, float16 on GPU; "
                                "the loss stays float32.")
  jit_compile: str = field("auto", "XLA-compile the train step.",
                           choices=("auto", "true", "false"))
  init_from: str | None = field(
      None, "Start from the body weights of an earlier imgrec-train model_dir "
      "(same --model).")
  freeze_epochs: int = field(
      0, "Two-stage fine-tuning: train only the head for this many epochs, "
      "then unfreeze the body.", check=_non_negative)
  unfreeze: str = field(
      "all", "After --freeze_epochs, unfreeze all of the body or its top N "
      "layers (BatchNorm stays frozen).", check=_check_unfreeze)
  fine_tune_lr_scale: float = field(
      0.1, "Learning-rate factor after unfreezing.",
      check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")

  def _check_relations(self, check_files):
    super()._check_relations(check_files)
    if self.freeze_epochs >= self.epochs:
      raise self._bad("freeze_epochs", "must be in [0, epochs): the "
                      "head-only epochs before the body is unfrozen")
    if check_files and self.init_from is not None and not os.path.isdir(
        self.init_from):
      raise self._bad("init_from", "expected the model_dir of a finished "
                      "imgrec-train run")


@dataclasses.dataclass(frozen=True)
class RunSection(Config):
  """Where a run goes and how it runs: folder, cache, devices, outputs."""
  section = "run"
  model_dir: str | None = field(
      None, "Output folder. Rerunning with the same folder resumes. "
      "Default: runs/<data>-<model>.")
  cache: str = field(
      "auto", "Cache of decoded, resized images: auto (in memory when they "
      "take under a quarter of the free memory and there is more than one "
      "epoch), none (decode every epoch; streamed JPEGs decode only the "
      "part the augmentation keeps), memory, or a file path prefix (for "
      "datasets larger than memory).")
  deterministic: bool = field(False, "Deterministic ops and input order "
                              "(slower): two runs give identical weights.")
  strategy: str = field("auto", "tf.distribute strategy.",
                        choices=STRATEGIES)
  top_k: int = field(5, "k of the top-k accuracy and outputs.",
                     check=_at_least(1))
  export: bool = field(True, "Export SavedModel and TFLite at the end.")
  overwrite: bool = field(
      False, "Start afresh in a model_dir that holds a run with other "
      "settings or data: its outputs (and nothing else) are deleted first.")
  verbose: str | int = field("auto", "Keras progress output: auto, 0, 1 "
                             "or 2.", check=_check_verbose,
                             parse=_parse_verbose)


  def _check_relations(self, check_files):
    super()._check_relations(check_files)
    if check_files and self.cache not in CACHE_MODES and not os.path.isdir(
        os.path.dirname(os.path.abspath(self.cache))):
      raise self._bad("cache", "expected auto, none, memory, or a file path "
                      "prefix in an existing folder")


@dataclasses.dataclass(frozen=True)
class ClipSection(Config):
  """The clip classification task's own settings."""
  section = "clip"
  clip_frames: int = field(16, "Clips: frames sampled across each clip (at "
                           "the centres of equal parts).", check=_at_least(2))
  temporal: str = field("gru", "Clips: the model over time: gru or lstm "
                        "(unrolled), attention (a transformer block), or "
                        "average (order-blind).", choices=TEMPORAL_MODELS)
  clip_motion: bool = field(True, "Clips: add a motion stream, a small "
                            "CNN on the differences of consecutive frames.")
  temporal_units: int = field(128, "Clips: width of the frame features and "
                              "of the model over time.", check=_at_least(2))


MULTILABEL_LOSSES = ("bce", "asl")


@dataclasses.dataclass(frozen=True)
class MultiLabelSection(Config):
  """The multi-label task's own settings (`--task=multilabel`)."""
  section = "multilabel"
  label_delim: str = field(
      " ", "Multi-label: what joins the labels of a --labels_csv cell "
      "(path,labels[,split]).", check=lambda v: None if v else
      "must be one or more characters")
  loss: str = field(
      "bce", "Multi-label loss: bce (binary cross-entropy) or asl (the "
      "asymmetric loss of Ridnik et al. 2021, for many negatives an image).",
      choices=MULTILABEL_LOSSES)
  threshold: float | None = field(
      None, "Multi-label: one threshold for every label instead of each "
      "label's own, chosen on the validation split for its best F1.",
      check=lambda v: None if 0 < v < 1 else "must be in (0, 1)")


# Open-set scores (`imgrec.metrics.open_set.SCORES`): what a classifier
# answers "unknown" below.
UNKNOWN_SCORES = ("energy", "max_softmax", "prototype")


@dataclasses.dataclass(frozen=True)
class OpenSetSection(Config):
  """How a single-label classifier answers "unknown": an image of no class
  it knows."""
  section = "open_set"
  unknown_score: str = field(
      "max_softmax", "Open set: the score an image is answered \"unknown\" below: "
      "energy (logsumexp of the logits), max_softmax (the top probability) "
      "or prototype (cosine similarity with the nearest class's mean "
      "embedding).", choices=UNKNOWN_SCORES)
  known_recall: float = field(
      0.95, "Open set: the share of the validation split's (known) images "
      "the \"unknown\" threshold keeps.",
      check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class TrainConfig(OpenSetSection, MultiLabelSection, ClipSection, RunSection,
                  RecipeSection, ModelSection, DataConfig):
  """Everything that defines a training run, by concern: data, model,
  recipe, run, and the task's own section (config.json nests them so)."""
  task: str = field("auto", "image (one image, one label), clip (a video "
                    "clip, one label: a frame model then a model over "
                    "time), multilabel (every label an image holds, from "
                    "--labels_csv), or auto: clip when --data_dir holds "
                    "videos. Also the registered names "
                    "(image_classification, clip_classification, "
                    "multilabel_classification).")

  def _check_relations(self, check_files):
    super()._check_relations(check_files)
    _check_model_and_recipe(self, check_files)


def _check_model_and_recipe(record, check_files):
  """The checks between a training record's model and recipe sections."""
  if record.freeze_epochs and record.freeze_backbone:
    raise record._bad("freeze_epochs", "conflicts with --freeze_backbone "
                      "(which never unfreezes); use one of them")
  if check_files and (record.weights.lower() not in ("imagenet", "none")
                      and not os.path.isfile(record.weights)):
    raise record._bad("weights", "expected imagenet, none, or the path of a "
                      "weights file")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(Config):
  """What `imgrec-evaluate` evaluates, and on what."""
  model_dir: str | None = field(
      None, "Output folder of imgrec-train; several, comma-separated, "
      "evaluate their ensemble (averaged probabilities) against each member.",
      required="the output folder of imgrec-train")
  data_dir: str | None = field(
      None, "Evaluate on this folder instead of the run's own split (a "
      "multi-label run: a labels CSV, path,labels[,split]); several, "
      "comma-separated, give a section each and a comparison table. Classes "
      "are matched by name.")
  split: str = field("test", "Split to use.", choices=SPLITS)
  batch_size: int | None = field(None, "Batch size (default: the run's).",
                                 check=_at_least(1))
  tta: str = field("none", "Test-time augmentation: none, flip, crops (five "
                   "zoomed crops), or flip,crops; the report gives accuracy "
                   "with and without.", check=_check_tta)
  ensemble_weights: str = field(
      "equal", "How an ensemble weighs its members: equal, or val_accuracy "
      "(each member's accuracy on the validation split).",
      choices=("equal", "val_accuracy"))
  report_dir: str | None = field(
      None, "Where report.json/.txt/.html and the pictures go (default: the "
      "model_dir of a single model; an ensemble writes only when given). A "
      "new or empty folder, or one holding these models' report; another "
      "run's folder or other models' report is refused.")
  pictures: bool = field(True, "Draw confusion_matrix.png, reliability.png, "
                         "mistakes.png and curves.png, and write report.html.")
  unknown_dir: str | None = field(
      None, "A folder of images of no class the run knows (searched "
      "recursively): the report's open_set section measures how the run's "
      "unknown score tells them from the evaluated known images.")
  calibrate_unknown: bool = field(
      False, "With --unknown_dir: store in the run (open_set.json) the "
      "threshold that best separates those images from the run's validation "
      "images; every consumer of the run then answers \"unknown\" with it.")

  @property
  def model_dirs(self):
    return split_paths(self.model_dir)

  @property
  def data_dirs(self):
    return split_paths(self.data_dir)

  @property
  def tta_modes(self):
    return tuple(m for m in split_paths(self.tta) if m != "none")

  def _check_relations(self, check_files):
    if self.calibrate_unknown and not self.unknown_dir:
      raise self._bad("calibrate_unknown", "needs --unknown_dir, the folder "
                      "of images of no known class to calibrate on")
    if self.unknown_dir and len(self.model_dirs) > 1:
      raise self._bad("unknown_dir", "measures one run's open set; pass one "
                      "--model_dir")
    for name, paths in (("--model_dir", self.model_dirs),
                        ("--data_dir", self.data_dirs)):
      # One folder by any spelling: `./a/`, a link to it.
      if len({os.path.realpath(p) for p in paths}) != len(paths):
        kind = ("CSV" if any(p.lower().endswith(".csv") for p in paths)
                else "folder")
        raise ImgrecError(f"{name} names one {kind} twice: "
                          f"{', '.join(paths)}.")


COMPARE_FORMATS = ("markdown", "csv")
COMPARE_SORTS = ("accuracy", "name")


@dataclasses.dataclass(frozen=True)
class CompareConfig(Config):
  """How `imgrec-compare` tabulates finished runs (given as arguments)."""
  format: str | None = field(
      None, "Table format: markdown or csv. Default: csv when --output ends "
      "in .csv, else markdown.", choices=COMPARE_FORMATS)
  output: str | None = field(
      None, "Also write the table to this file (replaced atomically; a FIFO "
      "or device is written into). An existing file needs --overwrite.")
  sort: str = field("accuracy", "Row order: accuracy (best first) or name.",
                    choices=COMPARE_SORTS)
  overwrite: bool = field(False, "Replace an existing --output file.")

  def table_format(self):
    """The format to print and write: --format, else guessed from --output."""
    if self.format:
      return self.format
    if self.output and self.output.lower().endswith(".csv"):
      return "csv"
    return "markdown"


@dataclasses.dataclass(frozen=True)
class ExtendConfig(Config):
  """What `imgrec-extend` adds to a finished run: new classes from a few
  images each, imprinted without retraining."""
  model_dir: str | None = field(
      None, "The finished imgrec-train run to extend (a single-label image "
      "classifier).", required="the output folder of imgrec-train")
  add_dir: str | None = field(
      None, "The new classes: a folder of class folders (NEW/<class>/*, or "
      "NEW/{train,val,test}/<class>/*), a few images each.",
      required="a folder of the new classes' folders")
  out_dir: str | None = field(
      None, "Where the extended run goes (a new folder, or an earlier "
      "imgrec-extend run with --overwrite); the extended run is a run of "
      "its own.", required="a new folder for the extended run")
  max_old_drop: float = field(
      0.5, "Points of the old classes' validation accuracy the new classes "
      "may take: the imprinted classes' bias is the largest within it.",
      check=lambda v: None if 0 <= v <= 100 else "must be in [0, 100]")
  new_weights: str = field(
      "fitted", "The new classes' head columns: imprinted (each class's "
      "prototype, scaled to the old logits; Qi et al. 2018) or fitted (from "
      "the imprint, the new columns trained on the embeddings of every "
      "training image, class-balanced, the old columns fixed; a second "
      "more).", choices=("fitted", "imprinted"))
  finetune_head_epochs: int = field(
      0, "Then train the head (every class) for this many epochs on the "
      "embeddings, the backbone frozen (0: imprinting only).",
      check=_non_negative)
  export: bool = field(False, "Export the extended run (SavedModel, "
                       "TFLite) and measure it, as imgrec-train --export.")
  overwrite: bool = field(False, "Replace an earlier imgrec-extend run in "
                          "--out_dir.")


AUDIT_PARTS = ("duplicates", "labels", "outliers")
AUDIT_TASKS = ("auto", "image", "multilabel")


@dataclasses.dataclass(frozen=True)
class AuditSection(Config):
  """What `imgrec-audit` looks for and where it writes."""
  section = "audit"
  out: str | None = field(
      None, "Folder for audit.json, audit.html, exclude.txt and relabel.csv "
      "(new, empty, or an earlier audit's; never inside the data). Default: "
      "audit/ in --prepared_dir.")
  prepared_dir: str | None = field(
      None, "The scan's folder (converted images, caches). Default: "
      "~/.cache/imgrec/prepared/<name>-<hash of the data folder>.")
  parts: tuple = field(
      AUDIT_PARTS, "What to look for: duplicates (no model), labels "
      "(mislabeled images, from out-of-sample probabilities), outliers "
      "(images far from every class); labels and outliers share one "
      "cross-validated training.", parse=_parse_names,
      check=lambda v: None if v and set(v) <= set(AUDIT_PARTS) else
      f"must be some of {', '.join(AUDIT_PARTS)}")
  near_threshold: float = field(
      0.97, "Window similarity from which two images are near duplicates "
      "when their match stands apart from the image's other matches (0.995 "
      "and above always).",
      check=lambda v: None if 0.5 <= v <= 1 else "must be in [0.5, 1]")
  folds: int = field(4, "Cross-validation folds of the labels and outliers "
                     "parts: every image is judged by a model that did not "
                     "train on it.", check=_at_least(2))
  model_dir: str | None = field(
      None, "Instead of --folds: a finished imgrec-train run of this data; "
      "only its validation and test images are judged (its training images "
      "are in-sample).")
  workers: int | None = field(
      None, "Threads of the scan and the fingerprints. Default: one per "
      "CPU.", check=_positive)
  progress: bool = field(True, "Show progress on a terminal.")
  task: str = field(
      "auto", "image (one label an image) or multilabel (label sets, "
      "--labels_csv columns path,labels[,split], or a TFDS dataset of "
      "them); auto: multilabel for the built-in shapes_multilabel, image "
      "otherwise.", choices=AUDIT_TASKS)


@dataclasses.dataclass(frozen=True)
class AuditConfig(AuditSection, MultiLabelSection, RecipeSection,
                  ModelSection, DataConfig):
  """What `imgrec-audit` audits: the data fields, the model and recipe of
  its cross-validated training (a short recipe by default: --epochs=5; the
  multi-label fields for label sets), and the audit's own section."""
  epochs: int = field(5, "Training epochs of each cross-validation fold.",
                      check=_at_least(1))

  def _check_relations(self, check_files):
    super()._check_relations(check_files)
    _check_model_and_recipe(self, check_files)
    if check_files and self.model_dir and not os.path.isdir(self.model_dir):
      raise self._bad("model_dir", "no such folder; expected a finished "
                      "imgrec-train run")


@dataclasses.dataclass(frozen=True)
class ExportConfig(Config):
  """What `imgrec-export` writes."""
  model_dir: str | None = field(None, "Output folder of imgrec-train.",
                                required="the output folder of imgrec-train")
  tflite: tuple = field(
      ("float",), "TFLite variants: float, fp16, dynamic, int8 (int8 "
      "calibrates on training images).", parse=_parse_names)
  top_k: int = field(5, "Top classes in the SavedModel outputs.",
                     check=_at_least(1))
  calibration_images: int = field(
      200, "Training images that calibrate int8, taking classes in turn (at "
      "least one per class).", check=_at_least(1))
  int8_io: str = field("float", "Input and output type of the int8 file: "
                       "float (raw pixels as float32) or uint8 (raw pixels; "
                       "quantized probabilities).", choices=("float", "uint8"))
  int8_granularity: str = field(
      "auto", "Weight scales of the int8 file: per_channel, per_tensor, or "
      "auto (per tensor, the smaller file, when it stays within "
      "--max_int8_drop; else per channel).",
      choices=("auto", "per_channel", "per_tensor"))
  max_int8_drop: float = field(
      DEFAULT_MAX_INT8_DROP, "Accuracy points int8 may lose against the "
      "Keras model on the validation split; beyond it the layers that lose "
      "most stay in float.", check=_non_negative)
  measure: bool = field(True, "Measure every format on the test split into "
                        "export/export_report.json.")
  ensemble: str | None = field(
      None, "Comma-separated model_dirs of trained runs with the same "
      "classes: --model_dir becomes their ensemble (one model averaging "
      "them), then exported.")
  ensemble_weights: str = field(
      "equal", "How the ensemble weighs its members: equal, or val_accuracy "
      "(each member's accuracy on its validation split).",
      choices=("equal", "val_accuracy"))

  def _check_relations(self, check_files):
    if self.ensemble and len(split_paths(self.ensemble)) < 2:
      raise ImgrecError("--ensemble needs at least two model_dirs, "
                        f"comma-separated. Received: {self.ensemble}")
    _check_tflite_variants(self.tflite)


@dataclasses.dataclass(frozen=True)
class StreamConfig(Config):
  """How `imgrec-stream` reads a video and steadies its labels."""
  model: str | None = field(None, "A model_dir, .keras or .tflite file, or "
                            "a SavedModel folder.", required=(
                                "a model_dir, .keras or .tflite file, or a "
                                "SavedModel folder"))
  fps: float | None = field(None, "Classify at most this many frames a "
                            "second (by the frames' times).", check=_positive)
  every: int | None = field(None, "Classify every n-th frame.",
                            check=_at_least(1))
  frame_rate: float = field(25.0, "Frame rate of a folder of frames.",
                            check=_positive)
  batch_size: int = field(16, "Frames classified together.",
                          check=_at_least(1))
  smoothing: str = field("ema", "Probabilities averaged in time: ema "
                         "(exponential, time constant --window), mean "
                         "(the last --window seconds) or none.",
                         choices=SMOOTHING_MODES)
  window: float = field(0.5, "Seconds of the average.", check=_non_negative)
  min_hold: float = field(0.4, "Seconds a new label must lead before the "
                          "steady label changes to it.", check=_non_negative)
  num_threads: int | None = field(None, "CPU threads of a TFLite model.",
                                  check=_at_least(1))
  format: str = field("table", "table (segments), or jsonl (one line a "
                      "frame, then one a segment).",
                      choices=("table", "jsonl"))
  out: str | None = field(None, "Write the classified frames, the steady "
                          "label drawn on each, to this video file.")
  backdate: bool = field(True, "Date each steady label change back to when "
                         "the new label took the lead (output comes "
                         "--min_hold seconds late; off with --realtime).")
  realtime: bool = field(False, "Keep up with the source's clock: a file "
                         "plays as a camera would, and frames that "
                         "inference is too slow for are dropped; reports "
                         "the frames a second, the dropped frames and how "
                         "far behind the source the labels are.")
  max_image_pixels: int = field(
      DEFAULT_MAX_IMAGE_PIXELS, "Refuse a video whose frames, or frame "
      "files, declare more pixels (checked from the header, before "
      "decoding).", check=_positive)
  overwrite: bool = field(False, "Replace an existing --out file.")


FACE_LOSSES = ("arcface", "softmax", "triplet")
# How imgrec-faces runs an embedder, and what it does with a photo of
# several faces (`imgrec.data.faces.load_faces`).
FACE_RUNTIMES = ("keras", "saved_model", "tflite")
SEVERAL_FACES = ("skip", "largest")


@dataclasses.dataclass(frozen=True)
class FaceDataSection(Config):
  """Where a face embedder's photos come from: identity folders."""
  section = "data"
  data_dir: str | None = field(None, "Identity folders: root/<person>/*.",
                               required="a folder of identity folders, "
                               "root/<person>/<images>")
  channels: int = _like(DataConfig, "channels")
  seed: int = field(42, "Seed of the identity split, the shuffle, the "
                    "augmentation and the weights.")
  max_image_pixels: int = _like(DataConfig, "max_image_pixels")
  allow_outside: bool = _like(DataConfig, "allow_outside", help=(
      "Use photos outside the data folder that symlinks lead to. Off: they "
      "are skipped and reported."))

  def _check_relations(self, check_files):
    super()._check_relations(check_files)
    if check_files and not os.path.isdir(self.data_dir):
      raise self._bad("data_dir", "no such folder; expected identity "
                      "folders, root/<person>/<images>")


@dataclasses.dataclass(frozen=True)
class FaceSection(Config):
  """The face embedding task's own settings: the embedding, its loss, the
  people held out and how photos become crops."""
  section = "face"
  embedding_dim: int = field(128, "Embedding length.", check=_at_least(2))
  loss: str = field("arcface", "arcface (additive angular margin), "
                    "softmax (normalized softmax, margin 0) or triplet "
                    "(batch-hard triplets).", choices=FACE_LOSSES)
  margin: float = field(0.5, "ArcFace angular margin m (radians), or the "
                        "triplet distance margin.", check=_non_negative)
  scale: float = field(30.0, "ArcFace scale s.", check=_positive)
  val_identities: float = field(
      0.2, "Fraction of the people held out to validate verification (never "
      "trained on; at least 2 people when there are 4 or more).",
      check=_fraction)
  detect: bool = field(False, "Detect, align and crop the faces first "
                       "(ordinary photos); off for pre-cropped faces.")
  crop_margin: float = field(
      0.2, "With --detect: the crop's side is the face box's longer side "
      "times 1 + this. Recorded with the embedder; queries crop alike.",
      check=_non_negative)


@dataclasses.dataclass(frozen=True)
class FaceTrainConfig(FaceSection, RunSection, RecipeSection, ModelSection,
                      FaceDataSection):
  """What `imgrec-faces train` trains: an embedder of identity folders.

  By concern, as TrainConfig: data, model (`model` is the backbone, also
  `--backbone`), recipe, run and the face section; face_config.json nests
  them so. The recipe's defaults are the embedder's own: AdamW, cosine
  decay without warmup, 40 epochs. The recipe fields that do not apply to
  identities (label smoothing, MixUp, CutMix, class weights), the top-k of
  classifiers and the export after training (`imgrec-faces export` exports
  an embedder) get no flag.
  """
  task: str = field("face_embedding", "The registered task.",
                    choices=("face_embedding",), flag=False)
  model: str = _like(ModelSection, "model", help=(
      "Registered model whose backbone embeds (its classifier head is "
      "replaced); see imgrec.list_models()."), aliases=("backbone",))
  image_size: int | tuple | None = _like(ModelSection, "image_size", 64,
                                         help="Face crop side in pixels.")
  dropout: float | None = _like(ModelSection, "dropout", help=(
      "Dropout on the backbone's features, before the embedding. Default: "
      "0.2."))
  model_dir: str | None = _like(RunSection, "model_dir", help=(
      "Output folder of the embedder. Rerunning with the same folder "
      "resumes."), required="where the embedder goes")
  export: bool = _like(RunSection, "export", False, flag=False)
  top_k: int = _like(RunSection, "top_k", flag=False)
  epochs: int = _like(RecipeSection, "epochs", 40, help="Training epochs.")
  batch_size: int = _like(RecipeSection, "batch_size", check=_at_least(2))
  optimizer: str = _like(RecipeSection, "optimizer", "adamw")
  learning_rate: float = _like(RecipeSection, "learning_rate", 2e-3)
  weight_decay: float = _like(RecipeSection, "weight_decay", 1e-4)
  warmup_epochs: float = _like(RecipeSection, "warmup_epochs", 0.0)
  label_smoothing: float = _like(RecipeSection, "label_smoothing",
                                 flag=False)
  mixup: float = _like(RecipeSection, "mixup", flag=False)
  cutmix: float = _like(RecipeSection, "cutmix", flag=False)
  class_weight: str = _like(RecipeSection, "class_weight", flag=False)

  def _check_relations(self, check_files):
    super()._check_relations(check_files)
    _check_model_and_recipe(self, check_files)

  @classmethod
  def from_dict(cls, data):
    """Also reads face_config.json of earlier versions: flat, and naming the
    model `backbone`."""
    if isinstance(data, collections.abc.Mapping) and "backbone" in data:
      if "model" in data:
        raise ImgrecError("Configuration key 'model' is given twice (also "
                          "as 'backbone').")
      data = {("model" if k == "backbone" else k): v
              for k, v in data.items()}
    return super().from_dict(data)


@dataclasses.dataclass(frozen=True)
class FaceModelConfig(Config):
  """The embedder an imgrec-faces command uses (`imgrec-faces export`)."""
  model_dir: str | None = field(None, "Output folder of imgrec-faces train.",
                                required="the output folder of imgrec-faces "
                                "train")


@dataclasses.dataclass(frozen=True)
class FaceExportConfig(FaceModelConfig):
  """What `imgrec-faces export` writes."""
  tflite: tuple = field(("float",), "TFLite variants (float, fp16, dynamic, "
                        "int8).", parse=_parse_names)

  def _check_relations(self, check_files):
    super()._check_relations(check_files)
    _check_tflite_variants(self.tflite)


@dataclasses.dataclass(frozen=True)
class FacePhotosConfig(FaceModelConfig):
  """How an imgrec-faces command makes embeddings of photos, and prints."""
  runtime: str = field("keras", "Embedder to run: keras, saved_model or "
                       "tflite (after imgrec-faces export).",
                       choices=FACE_RUNTIMES)
  detect: bool = field(True, "Detect, align and crop faces (off for "
                       "pre-cropped faces).")
  several: str = field("skip", "A photo with several faces: skip it, or "
                       "take the largest.", choices=SEVERAL_FACES)
  flip: bool = field(True, "Embed each face with its mirror image too "
                     "(averaged): steadier scores for twice the work.")
  max_image_pixels: int = field(
      DEFAULT_MAX_IMAGE_PIXELS, "Refuse photos whose header declares more "
      "pixels (decompression bombs).", check=_positive)
  format: str = field("table", "Output: table, or json (one object a line).",
                      choices=("table", "json"))


@dataclasses.dataclass(frozen=True)
class _GallerySection(Config):
  """The gallery file of a command that needs one."""
  gallery: str | None = field(
      None, "Gallery file (JSON) of enrolled people.", required=(
          "the JSON file of enrolled people (imgrec-faces enroll makes it)"))


@dataclasses.dataclass(frozen=True)
class _PeopleSection(Config):
  """The identity folders a command measures on."""
  data_dir: str | None = field(
      None, "Identity folders of people the embedder never trained on, "
      "root/<person>/*.", required="identity folders, root/<person>/*, of "
      "people the embedder never trained on")


@dataclasses.dataclass(frozen=True)
class FaceEvaluateConfig(_PeopleSection, FacePhotosConfig):
  """What `imgrec-faces evaluate` measures: verification and
  identification on unseen people."""
  enroll_images: int = field(5, "Images enrolled per person (the rest are "
                             "probes).", check=_at_least(1))


@dataclasses.dataclass(frozen=True)
class FaceCalibrateConfig(_GallerySection, _PeopleSection, FacePhotosConfig):
  """What `imgrec-faces calibrate` does: the gallery's threshold for a
  false-accept rate, chosen on your own people."""
  target_far: float = field(
      1e-3, "False-accept rate the threshold is chosen for.",
      check=lambda v: None if 0 < v < 1 else "must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class FaceEnrollConfig(_GallerySection, FacePhotosConfig):
  """What `imgrec-faces enroll` adds to the gallery."""
  name: str | None = field(None, "The person's name (default: each "
                           "folder's name).")


@dataclasses.dataclass(frozen=True)
class FaceIdentifyConfig(_GallerySection, FacePhotosConfig):
  """How `imgrec-faces identify` ranks the gallery's people."""
  top_k: int = field(5, "Candidates listed per image.", check=_at_least(1))


@dataclasses.dataclass(frozen=True)
class FaceVerifyConfig(_GallerySection, FacePhotosConfig):
  """What `imgrec-faces verify` compares: two photos, decided at the
  gallery's calibrated threshold when --gallery is given."""
  gallery: str | None = _like(_GallerySection, "gallery", required=None)


@dataclasses.dataclass(frozen=True)
class PredictConfig(Config):
  """How `imgrec-predict` runs and prints."""
  model: str | None = field(None, "A .keras or .tflite file, a SavedModel "
                            "folder, or an imgrec-train model_dir.",
                            required="a .keras or .tflite file, a SavedModel "
                            "folder, or an imgrec-train model_dir")
  top_k: int = field(1, "Classes to show per image.", check=_at_least(1))
  format: str = field("table", "Output format.", choices=("table", "json"))
  max_image_pixels: int = field(
      DEFAULT_MAX_IMAGE_PIXELS, "Refuse image files whose header declares "
      "more pixels (decompression bombs).", check=_positive)
  trust_model: bool = field(
      False, "Load a SavedModel even if its graphs can read or write files "
      "or run Python. Only for files you trust.")
  benchmark: bool = field(
      False, "Print the model's latency (one image: median, p90) and "
      "throughput instead of predictions; on the given images, else on a "
      "random one.")
  num_threads: int | None = field(
      None, "CPU threads of the runtime (TFLite and TensorFlow); default: "
      "the runtime's choice.", check=_positive)
  chunk_size: int = field(64, "Images read and classified at a time (a "
                          "folder streams through).", check=_positive)
  explain: str | None = field(
      None, "Explain each answer with a heatmap by this method ("
      "`--explain` alone: the model's default, Grad-CAM where it has a "
      "spatial feature map, else integrated gradients): its peak and box "
      "print with the classes.", choices=("auto",) + EXPLAIN_METHODS)
  explain_dir: str | None = field(
      None, "With --explain: write each heatmap over its image as a PNG "
      "into this folder (new, empty, or an earlier --explain_dir's).")
  target: str | None = field(
      None, "With --explain: explain this class instead of the predicted "
      "one.")

  def _check_relations(self, check_files):
    if self.explain_dir == "":
      raise ImgrecError("--explain_dir is empty: pass the folder the "
                        "pictures go to, or leave the flag out.")
    if self.explain is None:
      for name in ("explain_dir", "target"):
        if getattr(self, name) is not None:
          raise ImgrecError(f"--{name} goes with --explain (which explains "
                            "each answer). Pass --explain too, or leave "
                            f"--{name} out.")
    if self.explain is not None and self.benchmark:
      raise ImgrecError("--explain and --benchmark do not go together: "
                        "--benchmark times the model alone.")

