"""The configuration of a training run: one validated, serializable record.

The final configuration is written to `<model_dir>/config.json`, so every
run can be repeated and every later tool (evaluate, export) knows what was
trained on what.
"""

import dataclasses
import json
import os

from imgrec import fileio
from imgrec.errors import ImgrecError

OPTIMIZERS = ("adam", "adamw", "sgd")
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")


@dataclasses.dataclass
class TrainConfig:
  """Everything that defines a training run.

  The data is one of: `data_dir` (class folders), `labels_csv` (a CSV of
  path,label rows), `tfds` (a TFDS dataset prepared in `tfds_data_dir`,
  default $TFDS_DATA_DIR or ~/tensorflow_datasets); with none of them, the
  built-in `dataset` (default: `shapes`).
  `image_size=None` takes the model's own default input size.
  """
  # Data.
  data_dir: str | None = None
  dataset: str = "shapes"
  labels_csv: str | None = None
  tfds: str | None = None
  tfds_data_dir: str | None = None
  val_split: float = 0.1
  test_split: float = 0.1
  image_size: int | None = None
  channels: int = 3
  cache: str = "auto"
  augment: str = "light"
  flip: str = "horizontal"
  scan: bool = True
  max_image_pixels: int = 89_478_485
  max_bad_fraction: float = 0.1
  # Model.
  model: str = "simple_cnn"
  weights: str = "imagenet"
  freeze_backbone: bool = False
  init_from: str | None = None
  freeze_epochs: int = 0
  unfreeze: str = "all"
  fine_tune_lr_scale: float = 0.1
  dropout: float | None = None
  edges: bool = False
  # Optimization.
  epochs: int = 20
  batch_size: int = 32
  optimizer: str = "adam"
  learning_rate: float = 3e-3
  weight_decay: float = 0.0
  momentum: float = 0.9
  label_smoothing: float = 0.0
  lr_schedule: str = "cosine"
  warmup_epochs: float = 1.0
  mixup: float = 0.0
  cutmix: float = 0.0
  ema: bool = False
  ema_momentum: float = 0.99
  grad_accum_steps: int = 1
  class_weight: str = "none"
  early_stopping: int = 0
  mixed_precision: bool = False
  jit_compile: str = "auto"
  # Run.
  seed: int = 42
  deterministic: bool = False
  strategy: str = "auto"
  model_dir: str | None = None
  top_k: int = 5
  export: bool = True
  verbose: str | int = "auto"

  def validate(self):
    """Checks every field; raises ImgrecError naming the first bad one."""
    def bad(name, why):
      raise ImgrecError(f"Bad value for --{name}: {why}. "
                        f"Received: {name}={getattr(self, name)!r}")

    sources = [n for n in ("data_dir", "labels_csv", "tfds")
               if getattr(self, n)]
    if len(sources) > 1:
      raise ImgrecError(
          "Pass at most one of --data_dir, --labels_csv and --tfds. Received: "
          + ", ".join(f"{n}={getattr(self, n)!r}" for n in sources))
    if self.tfds_data_dir and not self.tfds:
      bad("tfds_data_dir", "only used with --tfds=NAME")
    if self.labels_csv and not os.path.isfile(self.labels_csv):
      bad("labels_csv", "no such file; expected a CSV with path,label columns")
    if self.epochs < 1:
      bad("epochs", "needs at least 1 epoch")
    if self.batch_size < 1:
      bad("batch_size", "must be positive")
    if self.image_size is not None and not 8 <= self.image_size <= 4096:
      bad("image_size", "must be between 8 and 4096 pixels")
    if self.channels not in (1, 3):
      bad("channels", "must be 1 (grayscale) or 3 (RGB)")
    if not self.learning_rate > 0:
      bad("learning_rate", "must be positive")
    if self.weight_decay < 0:
      bad("weight_decay", "must be >= 0")
    if not 0 <= self.label_smoothing < 1:
      bad("label_smoothing", "must be in [0, 1)")
    if self.dropout is not None and not 0 <= self.dropout < 1:
      bad("dropout", "must be in [0, 1)")
    if not 0 <= self.freeze_epochs < self.epochs:
      bad("freeze_epochs", "must be in [0, epochs): the head-only epochs "
          "before the body is unfrozen")
    if self.freeze_epochs and self.freeze_backbone:
      bad("freeze_epochs", "conflicts with --freeze_backbone (which never "
          "unfreezes); use one of them")
    if self.unfreeze != "all" and not (self.unfreeze.isdigit() and
                                       int(self.unfreeze) > 0):
      bad("unfreeze", "expected all or a positive number of top layers")
    if not 0 < self.fine_tune_lr_scale <= 1:
      bad("fine_tune_lr_scale", "must be in (0, 1]")
    if self.init_from is not None and not os.path.isfile(
        os.path.join(self.init_from, "best.keras")):
      bad("init_from", "expected the model_dir of a finished imgrec-train run "
          "(with best.keras)")
    if self.lr_schedule not in ("constant", "cosine"):
      bad("lr_schedule", "expected constant or cosine")
    if self.warmup_epochs < 0:
      bad("warmup_epochs", "must be >= 0 (runs shorter than the warmup warm "
          "up for all but their last step)")
    if self.mixup < 0:
      bad("mixup", "must be >= 0 (0 turns MixUp off)")
    if self.cutmix < 0:
      bad("cutmix", "must be >= 0 (0 turns CutMix off)")
    if not 0 < self.ema_momentum < 1:
      bad("ema_momentum", "must be in (0, 1)")
    if self.grad_accum_steps < 1:
      bad("grad_accum_steps", "must be at least 1")
    if self.class_weight not in ("none", "auto"):
      bad("class_weight", "expected none or auto")
    if self.early_stopping < 0:
      bad("early_stopping", "must be >= 0 epochs (0 turns it off)")
    if self.jit_compile not in ("auto", "true", "false"):
      bad("jit_compile", "expected auto, true or false")
    if self.optimizer not in OPTIMIZERS:
      bad("optimizer", f"expected one of {', '.join(OPTIMIZERS)}")
    if self.strategy not in STRATEGIES:
      bad("strategy", f"expected one of {', '.join(STRATEGIES)}")
    if self.max_image_pixels < 1:
      bad("max_image_pixels", "must be positive")
    if not 0 <= self.max_bad_fraction <= 1:
      bad("max_bad_fraction", "must be in [0, 1]")
    if self.top_k < 1:
      bad("top_k", "must be at least 1")
    from imgrec import models  # pylint: disable=g-import-not-at-top
    if self.model not in models.list_models():
      bad("model", f"unknown model; known models: "
          f"{', '.join(models.list_models())}")
    from imgrec.data import pipeline  # pylint: disable=g-import-not-at-top
    if self.cache not in pipeline.CACHE_MODES and not os.path.isdir(
        os.path.dirname(os.path.abspath(self.cache))):
      bad("cache", "expected auto, none, memory, or a file path prefix in an "
          "existing folder")
    if self.augment not in pipeline.AUGMENT_LEVELS:
      bad("augment", f"expected one of {', '.join(pipeline.AUGMENT_LEVELS)}")
    if self.flip not in pipeline.FLIP_MODES:
      bad("flip", f"expected one of {', '.join(pipeline.FLIP_MODES)}")
    if (self.weights.lower() not in ("imagenet", "none")
        and not os.path.isfile(self.weights)):
      bad("weights", "expected imagenet, none, or the path of a weights file")
    return self

  def to_dict(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data):
    """Builds a config from a dict; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
      raise ImgrecError(f"Unknown configuration key(s): {', '.join(unknown)}. "
                        f"Known keys: {', '.join(sorted(known))}")
    return cls(**data)

  def save(self, path):
    """Writes the config as JSON, atomically."""
    fileio.write_json(path, self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def load(cls, path):
    try:
      with open(path, encoding="utf-8") as f:
        return cls.from_dict(json.load(f))
    except FileNotFoundError as e:
      raise ImgrecError(f"No training config at {path}: is this a model_dir "
                        "written by imgrec-train?") from e
