"""Which task a config or a finished run is: image or clip classification."""

import os

from imgrec.data import folder as folder_lib
from imgrec.tasks.clip_classification import ClipClassificationTask
from imgrec.tasks.image_classification import ImageClassificationTask

_TASKS = {"image": ImageClassificationTask, "clip": ClipClassificationTask}


def task_kind(config):
  """"image" or "clip": `config.task`, or for "auto" what its data holds."""
  if config.task != "auto":
    return config.task
  if config.data_dir and os.path.isdir(config.data_dir):
    if folder_lib.data_kind(config.data_dir) == "video":
      return "clip"
  return "image"


def for_config(config):
  """The task of a TrainConfig, `task` filled in ("auto" resolved)."""
  config = config.replace(task=task_kind(config))
  return _TASKS[config.task].from_config(config)


def for_run(run, **overrides):
  """The task of a finished run (a RunFolder), with some fields changed.

  Runs recorded before clip models existed say task "auto": images.
  """
  config = run.read_config()
  kind = "image" if config.task == "auto" else config.task
  return _TASKS[kind].from_run(run, **overrides)
