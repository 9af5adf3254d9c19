"""The task protocol: what a kind of run gives the trainer, evaluator, exporter and `Classifier`.

A task (TF Model Garden's `base_task.Task`, keras-hub's `Task`) turns a
config into data, a model, losses and metrics, says which metric picks the
best model, serves the model and describes what it predicts. Tasks are
registered peers (`imgrec.tasks.registry`); the trainer, the evaluator, the
exporter and `Classifier` ask the run's task and never branch on a task's
name or on a tensor's rank.

    task = tasks.for_config(config)          # or tasks.for_run(run)
    folder = task.build_folder(report_path)  # files, scan, splits
    ds = task.build_inputs(folder.splits["train"], num_classes=n,
                           training=True)
    model = task.build_model(n)              # what is saved and served
    fit_model = task.training_model(model, n)
    fit_model.compile(loss=task.build_losses(),
                      metrics=task.build_metrics(n))
    monitor, mode = task.monitor(has_validation=True)
"""

import dataclasses
import importlib.util
import sys

import numpy as np

from imgrec.errors import ImgrecError
from imgrec.run_folder import TRAIN_COMMAND


def lazy_import(name):
  """The module `name`, executed when one of its attributes is first read.

  Task modules import models, ops and the input pipeline (TensorFlow and
  Keras) this way: asking which task takes a model's input (a TFLite
  file's, for `Classifier`) then loads neither.
  """
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.find_spec(name)
  loader = importlib.util.LazyLoader(spec.loader)
  spec.loader = loader
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  loader.exec_module(module)
  return module


def input_shape_of(model_or_shape):
  """The input shape (batch first) of a Keras model, or `model_or_shape`
  itself when it is a shape: a multi-input model's first input."""
  shape = getattr(model_or_shape, "input_shape", model_or_shape)
  if len(shape) and isinstance(shape[0], (list, tuple)):
    shape = shape[0]
  return tuple(None if d is None else int(d) for d in shape)


@dataclasses.dataclass(frozen=True)
class ModelInput:
  """What a saved model takes, as its task reads it from the input shape.

  Attributes:
    task: the registered name of the model's task.
    kind: what one example is (the task's `noun`: "images", "clips"):
      how `Classifier` reads one.
    image_size: (height, width) of an image or of each frame; None where
      the model takes any size (a SavedModel resizes in its graph).
    channels: 1 or 3.
    frames: frames of a clip; None for an image.
  """
  task: str
  kind: str
  image_size: tuple | None
  channels: int
  frames: int | None = None

  def batch_shape(self, batch=None, channels=None):
    """The input's shape, batch first (`channels` instead of the model's)."""
    frames = (self.frames,) if self.frames else ()
    return (batch, *frames, *self.image_size, channels or self.channels)

  def to_json(self):
    """`imgrec_input.json`: what a client needs to make the input."""
    out = {"task": self.task, "image_size": list(self.image_size),
           "channels": self.channels}
    if self.frames:
      out["clip_frames"] = self.frames
    return out


class Task:
  """A kind of run. Subclasses register with `registry.register_task`.

  Class attributes:
    name: the registered name, recorded in the run folder.
    aliases: other names that select it (set by `register_task`).
    config_cls: the config record the task is built from.
    noun: what one example is called in messages ("images", "clips").
    resume_neutral: config fields a rerun may change and still resume the
      same run (they shape neither the splits nor the model nor training).
    command: the command a run folder of the task is marked with
      (`RunFolder.start`): runs of one command replace each other only
      with --overwrite.
    multilabel: an example holds any number of labels (a 0/1 row of class
      columns, a sigmoid score and a threshold each) instead of one class:
      the evaluator reports label sets (`label_set_report`).
    recipe_defaults: the task's own numbers for config fields whose default
      is a `config.TaskDefault` (epochs), used where the user gave none.
  """

  name = None
  multilabel = False
  aliases = ()
  config_cls = None
  noun = "examples"
  resume_neutral = frozenset()
  command = TRAIN_COMMAND
  recipe_defaults = {}

  def __init__(self, spec):
    self.spec = spec
    self.config = spec.config

  # --- Building -------------------------------------------------------------

  @classmethod
  def resolve(cls, config, *, check_files=True):
    """Validates `config` and derives the frozen spec, reading no data."""
    raise NotImplementedError

  # What else a finished run of this task can do: "evaluate" (imgrec-evaluate),
  # "export" (imgrec-export), "predict" (Classifier on its model_dir).
  commands = frozenset({"evaluate", "export", "predict"})

  @classmethod
  def check_command(cls, command):
    """Raises ImgrecError naming what this task's runs cannot do yet."""
    if command not in cls.commands:
      raise ImgrecError(
          f"imgrec cannot {command} a {cls.name} run yet; its report.json "
          "holds the figures of its test split.")

  @classmethod
  def from_config(cls, config):
    return cls(cls.resolve(config.with_task_defaults(**cls.recipe_defaults)))

  @classmethod
  def from_run(cls, run, **overrides):
    """The task of a finished run (a RunFolder), with some fields changed."""
    config = cls.read_config(run).replace(**overrides)
    task = cls(cls.resolve(config.with_task_defaults(**cls.recipe_defaults),
                           check_files=False))
    task.run = run
    return task

  @classmethod
  def read_config(cls, run):
    """The config record the run folder holds for this task."""
    return run.read_config()

  @classmethod
  def accepts_input_shape(cls, shape):
    """True when a saved model with this input shape is of this task.

    `Classifier` and the exporter ask each registered task in turn, so a
    bare model file (no run folder) finds its task too.
    """
    del shape
    return False

  @classmethod
  def model_input(cls, shape):
    """The ModelInput of this task's saved model whose input has `shape`
    (batch first; a size may be None)."""
    size = tuple(shape[-3:-1])
    return ModelInput(cls.name, cls.noun, None if None in size else size,
                      int(shape[-1]))

  # --- Data ------------------------------------------------------------------

  def build_folder(self, report_path=None):
    """Lists, checks and splits the run's data: a folder with `splits`,
    `class_names`, `root` and `pixels`."""
    raise NotImplementedError

  def config_to_record(self, folder):
    """The config written to the run folder (data paths filled in)."""
    del folder
    return self.config

  def build_inputs(self, split, *, num_classes, training, cache=True,
                   input_context=None, pixels=None):
    """The tf.data pipeline of one split: (inputs, targets) batches."""
    raise NotImplementedError

  def model_pixels(self, path):
    """One example file as the model takes it (float32), for export checks."""
    raise NotImplementedError

  def serving_example(self, path):
    """One example file as a client sends it to the SavedModel (uint8 RGB,
    any size), for export checks."""
    raise NotImplementedError

  # --- Model -----------------------------------------------------------------

  def num_outputs(self, folder):
    """Width of the training head: by default, one per class."""
    return len(folder.class_names)

  def build_model(self, num_classes):
    """The model that is saved (best.keras), evaluated and served."""
    raise NotImplementedError

  def training_model(self, model, num_classes):
    """The model `fit` trains; by default `model` itself. Its part that is
    saved is `saved_model(training_model)`."""
    del num_classes
    return model

  def saved_model(self, training_model):
    """The part of a training model that is saved and served."""
    return training_model

  def build_losses(self):
    raise NotImplementedError

  def build_metrics(self, num_classes):
    return []

  def validation_inputs(self, folder, num_classes):
    """The dataset `fit` validates on each epoch, or None."""
    split = folder.splits.get("val")
    if split is None or not len(split):
      return None
    return self.build_inputs(split, num_classes=num_classes, training=False)

  def class_weight(self, split, num_classes):
    """Keras' `class_weight` for `fit`, or None."""
    del split, num_classes
    return None

  def monitor(self, folder):
    """(metric, mode) that picks the best epoch of a run on `folder`, e.g.
    ("val_accuracy", "max")."""
    if len(folder.splits.get("val", ())):
      return ("val_accuracy", "max")
    return ("accuracy", "max")

  def build_callbacks(self, model, folder, run):
    """Task-specific callbacks before the checkpoint (e.g. one that adds a
    validation metric to the epoch's logs)."""
    del model, folder, run
    return []

  # --- After training ----------------------------------------------------------

  def report_split(self, folder):
    """(name, split) the end of training reports on, or None."""
    del folder
    return None

  def finish(self, run, model, folder):
    """Writes the task's own files once the best model is known; returns
    what to add to `train`'s result (or None)."""
    del run, model, folder

  @property
  def exports_after_training(self):
    """Whether `imgrec-train` exports at the end (a config choice)."""
    return bool(getattr(self.config, "export", False))

  # --- Serving -------------------------------------------------------------------

  def serving_endpoints(self, model, class_names, *, top_k,
                        max_image_pixels):
    """[(name, function, input_signature)] of the SavedModel."""
    raise NotImplementedError

  def serving_model(self, model):
    """The Keras model the SavedModel's `serving_endpoints` call and track
    (by default `model`)."""
    return model

  def tflite_model(self, model):
    """The Keras model that converts to TFLite (by default `model`)."""
    return model

  def class_scores(self, outputs, num_classes):
    """A TFLite file's outputs [N, ...] -> the class scores [N, C] the Keras
    model gives (by default the outputs themselves)."""
    del num_classes
    return outputs

  def tflite_labels(self, class_names):
    """The labels of the TFLite output's columns (by default the classes)."""
    return class_names

  def open_set(self):
    """The run's open set (`open_set.OpenSet`: answers "unknown"), or None."""
    return None

  def check_quantization(self, variant):
    """Raises ImgrecError for a TFLite variant this task's models cannot
    have (before any file is written)."""
    del variant

  def describe(self, variant):
    """One sentence for a TFLite file's metadata."""
    return f"imgrec {self.name} model ({variant})."

  def scores_metadata(self):
    """(name, description) of a classifier's output in TFLite metadata."""
    return ("probabilities", "Probability of each class (softmax).")

  def thresholds(self, class_names):
    """Each class's decision threshold in `class_names` order, or None (one
    class an example: the top one).

    With thresholds, every class is decided on its own (present when its
    score reaches its threshold): the SavedModel, the TFLite metadata,
    `Classifier` and the export report give label sets.
    """
    del class_names
    return None

  def class_members(self, labels, num_classes):
    """bool [N, C]: the classes each example of a split's `labels` holds
    (one each for integer labels)."""
    return np.eye(num_classes, dtype=bool)[np.asarray(labels, np.int64)]

  def export_quality(self, labels, scores):
    """(name, value): the figure an exported model is held to against the
    Keras model (int8's --max_int8_drop), here top-1 accuracy."""
    hits = np.argmax(scores, 1) == np.asarray(labels)
    return "accuracy", float(np.mean(hits)) if len(hits) else 0.0
