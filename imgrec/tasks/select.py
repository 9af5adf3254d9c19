"""Which registered task a config, a finished run or a saved model is."""

import os

from imgrec.config import TrainConfig
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.tasks import base
from imgrec.tasks import registry


def task_kind(config):
  """The task name of a TrainConfig: `config.task`, or for "auto" what its
  data holds (videos: clip classification)."""
  if config.task != "auto":
    return registry.canonical_name(config.task)
  if not (config.data_dir or config.labels_csv or config.tfds):
    from imgrec import datasets  # pylint: disable=g-import-not-at-top
    if config.dataset in datasets.BUILTIN_TASKS:
      return datasets.BUILTIN_TASKS[config.dataset]
  if config.data_dir and os.path.isdir(config.data_dir):
    if folder_lib.data_kind(config.data_dir) == "video":
      return "clip_classification"
  return "image_classification"


def training_config(config):
  """The config record of a training run: a registered task's own record
  (a FaceTrainConfig, say) as it is; a TrainConfig, or the one a dict of
  its fields builds, otherwise.

  Raises:
    ImgrecError: `config` is neither.
  """
  own = tuple(task.config_cls for task in registry.tasks()
              if task.config_cls is not None)
  if isinstance(config, own):
    return config
  return TrainConfig.coerce(config, "train")


def for_config(config):
  """The task of a config, its `task` resolved ("auto" and aliases)."""
  name = task_kind(config)
  return registry.get_task(name).from_config(config.replace(task=name))


def for_run(run, **overrides):
  """The task of a finished run (a RunFolder), with some fields changed."""
  return registry.get_task(run.read_task()).from_run(run, **overrides)


def for_input_shape(shape):
  """The task class whose saved models take inputs of `shape`.

  Raises:
    ImgrecError: no registered task takes it.
  """
  task = registry.find(lambda cls: cls.accepts_input_shape(shape))
  if task is not None:
    return task
  raise ImgrecError(f"No imgrec task takes a model input of shape "
                    f"{tuple(shape)}.")


def model_input(model_or_shape):
  """The ModelInput of a Keras model (or of an input shape, batch first),
  as the task that takes it reads it.

  Raises:
    ImgrecError: no registered task takes that input.
  """
  shape = base.input_shape_of(model_or_shape)
  return for_input_shape(shape).model_input(shape)


def model_input_spec(model):
  """((height, width), channels) of a Keras model's input (of each frame,
  for a clip model)."""
  spec = model_input(model)
  return spec.image_size, spec.channels
