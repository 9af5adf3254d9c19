"""`RunFolder`: every file of a training run's model_dir, by name, read and written atomically.

    model_dir/
      config.json       the full final configuration (TrainConfig)
      labels.txt        class names in label order
      data_report.json  what the data scan found, skipped and converted
      splits.json       the exact files of each split
      checkpoints/      training backups (resume after a crash)
      logs/             TensorBoard
      history.csv       per-epoch metrics
      best.keras        the best model by validation accuracy
      report.json/.txt  evaluation of the test split
      export/           saved_model/, model.tflite, model_<variant>.tflite

No other module spells these names: they ask this one.
"""

import json
import os

from imgrec import fileio
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError

LABELS_NAME = "labels.txt"


def write_labels_file(path, class_names):
  """Writes one class name per line, in label order, atomically."""
  fileio.write_text(path, "".join(f"{name}\n" for name in class_names))


def read_labels_file(path):
  """Reads a labels file written by `write_labels_file`."""
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def _in_run(*parts):
  """A RunFolder property: the path of `parts` inside the model_dir."""
  return property(lambda self: os.path.join(self.path, *parts),
                  doc=f"<model_dir>/{'/'.join(parts)}")


class RunFolder:
  """The files of one model_dir.

  Args:
    path: the model_dir.
  """

  config_path = _in_run("config.json")
  labels_path = _in_run(LABELS_NAME)
  splits_path = _in_run("splits.json")
  data_report_path = _in_run("data_report.json")
  logs_dir = _in_run("logs")
  history_path = _in_run("history.csv")
  best_model_path = _in_run("best.keras")
  export_dir = _in_run("export")
  saved_model_dir = _in_run("export", "saved_model")
  _checkpoints = _in_run("checkpoints")

  def __init__(self, path):
    if not path:
      raise ImgrecError("No model_dir given. Pass --model_dir=<folder>.")
    self.path = os.fspath(path)

  def __repr__(self):
    return f"RunFolder({self.path!r})"

  def backup_dir(self, stage=None):
    """The training backup of the run, or of one stage of a staged run."""
    return os.path.join(self._checkpoints, stage) if stage else self._checkpoints

  def report_path(self, name="report", suffix=".json"):
    return os.path.join(self.path, name + suffix)

  def tflite_path(self, variant="float"):
    name = "model.tflite" if variant == "float" else f"model_{variant}.tflite"
    return os.path.join(self.export_dir, name)

  # --- Reading ---------------------------------------------------------------

  def exists(self):
    return os.path.isfile(self.config_path)

  def _require(self, path, what):
    if not os.path.isfile(path):
      raise ImgrecError(f"No {what} at {path}: is {self.path} the model_dir "
                        "of a finished imgrec-train run? Run imgrec-train "
                        f"with --model_dir={self.path} first.")
    return path

  def read_config(self):
    """Returns the run's TrainConfig."""
    path = self._require(self.config_path, "training config")
    with open(path, encoding="utf-8") as f:
      return TrainConfig.from_json(f.read(), source=path)

  def read_labels(self):
    return read_labels_file(self._require(self.labels_path, "labels file"))

  def read_split(self, split):
    """Returns (paths, labels) of one split as training used it."""
    path = self._require(self.splits_path, "split list")
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    entry = data["splits"].get(split)
    if entry is None:
      raise ImgrecError(f"{path} has no {split!r} split; it has "
                        f"{', '.join(data['splits'])}.")
    return list(entry["paths"]), list(entry["labels"])

  def require_best_model(self):
    return self._require(self.best_model_path, "trained model")

  # --- Writing ---------------------------------------------------------------

  def makedirs(self):
    os.makedirs(self.path, exist_ok=True)

  def write_config(self, config):
    fileio.write_text(self.config_path, config.to_json())

  def write_labels(self, class_names):
    write_labels_file(self.labels_path, class_names)

  def write_splits(self, root, class_names, splits):
    """Writes the exact files of every split, so evaluation can reuse them.

    Args:
      root: the data root.
      class_names: class names in label order.
      splits: {split name: object with `paths` and `labels`}.
    """
    fileio.write_json(self.splits_path, {
        "root": root, "class_names": list(class_names),
        "splits": {s: {"paths": list(sp.paths), "labels": list(sp.labels)}
                   for s, sp in splits.items()}})

  def write_report(self, report, text, name="report"):
    """Writes `<name>.json` and the readable `<name>.txt`; returns the JSON path."""
    path = self.report_path(name)
    fileio.write_json(path, report, indent=2)
    fileio.write_text(self.report_path(name, ".txt"), text)
    return path
