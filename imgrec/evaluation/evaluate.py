"""Evaluates a trained model on a split: its own test split, or another folder's."""

import os

from imgrec import tasks
from imgrec.config import EvaluateConfig
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.evaluation import report as report_lib
from imgrec.run_folder import RunFolder


def evaluate_split(task, model, split, class_names):
  """The classification report of `model` on one split.

  Args:
    task: the run's ImageClassificationTask (decoding, image size, top-k).
    model: a Keras model.
    split: a folder.Split with labels in `class_names` order.
    class_names: the model's classes.

  Returns:
    The report dict (see `report.classification_report`).
  """
  probabilities = task.predict(model, split, len(class_names))
  return report_lib.classification_report(split.labels, probabilities,
                                          class_names, k=task.config.top_k)


def write_report(run, report):
  """Writes report.json and report.txt into a RunFolder; returns the JSON path."""
  return run.write_report(report, report_lib.format_report(report))


def evaluate(config, write=True):
  """Evaluates the best model of a run, as `imgrec-evaluate` does.

  Args:
    config: an EvaluateConfig: the run, and optionally another data folder
      (its `split` folder if it has split folders, else all of its images),
      a split of the run's own data, a batch size.
    write: write report.json/report.txt into the run's folder.

  Returns:
    The report dict.

  Raises:
    ImgrecError: bad config, not a finished run, or no images to evaluate.
  """
  if not isinstance(config, EvaluateConfig):
    raise ImgrecError("evaluate() takes an EvaluateConfig. Received: "
                      f"{type(config).__name__}")
  config.validate()
  run = RunFolder(config.model_dir)
  if write:
    run.makedirs()  # A read-only folder fails now, not after the work.
  overrides = {"batch_size": config.batch_size} if config.batch_size else {}
  task = tasks.ImageClassificationTask.from_run(run, **overrides)
  class_names = run.read_labels()
  data_dir = config.data_dir
  own = task.config.data_dir
  same_data = data_dir is None or (
      own and os.path.abspath(data_dir) == os.path.abspath(own))
  if same_data and os.path.isfile(run.splits_path):
    chosen = folder_lib.Split(*run.read_split(config.split))
  else:
    chosen = task.build_eval_split(data_dir or own, config.split, class_names)
  if not len(chosen):
    raise ImgrecError(f"No images to evaluate in the {config.split} split of "
                      f"{data_dir or own}.")
  model = tasks.load_model(run.require_best_model())
  report = evaluate_split(task, model, chosen, class_names)
  if write:
    with run.lock("imgrec-evaluate"):
      write_report(run, report)
  return report
