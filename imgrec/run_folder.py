"""`RunFolder`: every file of a training run's model_dir, by name, read and written atomically.

    model_dir/
      config.json       the full final configuration (TrainConfig)
      labels.txt        class names in label order
      data_report.json  what the data scan found, skipped and converted
      splits.json       the exact files of each split
      checkpoints/      training backups (resume after a crash)
      logs/             TensorBoard
      history.csv       per-epoch metrics
      training.json     training time and model size
      face_config.json  imgrec-faces train's config (a face embedder's run)
      embedder.json     the embedder's fingerprint, input and embedding size
      face_report.json  verification and identification figures, roc.png
      ensemble.json     an ensemble's members and weights (imgrec-export
                        --ensemble); such a folder has no training backups
      best.keras        the best model by validation accuracy
      report.json/.txt  evaluation of the test split
      report.html       the same with its pictures embedded
      confusion_matrix.png, reliability.png, mistakes.png, curves.png
      export/           saved_model/, model.tflite, model_<variant>.tflite,
                        export_report.json (every format measured); a
                        face run's embedder_saved_model/, embedder*.tflite
      .imgrec-run       imgrec's mark: which command made the folder

No other module spells these names: they ask this one. imgrec writes into
a folder only when it is new, empty or marked as its own (older runs: a
config.json or face_config.json that is imgrec's own config record), and
deletes only the names above, so a user's own files are never touched.
"""

import contextlib
import csv
import dataclasses
import datetime
import fcntl
import json
import logging
import math
import os
import re
import shutil
import socket
import stat
import tempfile

from imgrec import fileio
from imgrec.config import TFLITE_VARIANTS
from imgrec.config import FaceTrainConfig
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError

LABELS_NAME = "labels.txt"
# The commands that make a run folder, as its mark names them.
TRAIN_COMMAND = "imgrec-train"
FACES_COMMAND = "imgrec-faces train"
ENSEMBLE_COMMAND = "imgrec-export --ensemble"
EXTEND_COMMAND = "imgrec-extend"
AUDIT_COMMAND = "imgrec-audit"
EXPLAIN_COMMAND = "imgrec-predict --explain"
_KINDS = {TRAIN_COMMAND: "a trained run", FACES_COMMAND: "a face embedder",
          ENSEMBLE_COMMAND: "an ensemble", EXTEND_COMMAND: "an extended run",
          AUDIT_COMMAND: "a data audit", EXPLAIN_COMMAND: "explanations"}
_MARKER_NAME = ".imgrec-run"
_REPORT_MARKER_NAME = ".imgrec-report"
# Inside an exported SavedModel: the input size and channels its
# `serving_bytes` decodes for, so clients can decode files the same way.
INPUT_SPEC_NAME = "imgrec_input.json"
_LOCK_NAME = ".lock"
# Task names runs recorded before tasks were registered under their full
# names ("auto": runs from before clip models, all of them images).
_RECORDED_TASK_NAMES = {"auto": "image_classification",
                        "image": "image_classification",
                        "clip": "clip_classification"}
# Settings a rerun may change and still resume the same run: they shape
# neither the splits nor the model nor its training.
RESUME_NEUTRAL = frozenset({
    "verbose", "export", "top_k", "cache", "jit_compile", "strategy", "scan",
    "max_bad_fraction", "max_image_pixels", "early_stopping", "overwrite",
    "model_dir",
})


def write_labels_file(path, class_names):
  """Writes one class name per line, in label order, atomically."""
  fileio.write_text(path, "".join(f"{name}\n" for name in class_names))


def read_labels_file(path):
  """Reads a labels file written by `write_labels_file`."""
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip()]


@dataclasses.dataclass(frozen=True)
class HistoryRow:
  """One complete row of a run's history.csv (Keras' CSVLogger).

  Attributes:
    epoch: the epoch, counted from 0 as CSVLogger does.
    values: {column: float} of the other columns; NaN where the text is not
      a number.
    line: the row as it is in the file, line end included.
  """
  epoch: int
  values: dict
  line: str


@dataclasses.dataclass(frozen=True)
class History:
  """The training history of a run, one value an epoch.

  Attributes:
    epochs: the epochs logged, ascending (from 0).
    columns: {metric: tuple of floats, one per epoch}, e.g. "loss",
      "val_accuracy", "val_eer", "learning_rate"; NaN where a row held no
      number.
  """
  epochs: tuple
  columns: dict

  def __len__(self):
    return len(self.epochs)

  def column(self, name):
    """The values of one metric, one per epoch; () when it was not logged."""
    return self.columns.get(name, ())


def _csv_fields(line):
  try:
    return next(csv.reader([line]), [])
  except csv.Error:
    return None


def _number(text):
  try:
    return float(text)
  except (TypeError, ValueError):
    return math.nan


def history_rows(path):
  """The usable rows of a Keras CSVLogger file, in file order.

  The one reader of history.csv. A row is usable when it is complete (ends
  with its line break: a kill can cut the last one short), has the header's
  number of fields and an epoch that is a whole number; anything else (a
  repeated header, garbage) is skipped.

  Args:
    path: the CSV file.

  Returns:
    (header, [HistoryRow]), or None when the file is missing, unreadable or
    has no complete header line.
  """
  try:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
      lines = f.read().splitlines(keepends=True)
  except OSError:
    return None
  if not lines or not lines[0].endswith("\n"):
    return None
  header = [name.strip() for name in _csv_fields(lines[0]) or []]
  rows = []
  for line in lines[1:]:
    fields = _csv_fields(line) if line.endswith("\n") else None
    if not fields or len(fields) != len(header):
      continue
    values = dict(zip(header, fields))
    epoch = values.pop("epoch", "").strip()
    if re.fullmatch(r"[0-9]+", epoch):
      rows.append(HistoryRow(int(epoch), {name: _number(text) for name, text
                                          in values.items()}, line))
  return header, rows


def read_history(path):
  """The history of a CSVLogger file, one value an epoch; None if no row.

  When an epoch appears twice (a resumed run's file from before rows were
  truncated on resume) the last row wins. See `history_rows` for which
  rows count.
  """
  found = history_rows(path)
  if not found or not found[1]:
    return None
  header, rows = found
  by_epoch = {row.epoch: row.values for row in rows}
  epochs = tuple(sorted(by_epoch))
  return History(epochs, {name: tuple(by_epoch[e][name] for e in epochs)
                          for name in header if name != "epoch"})


def truncate_history(path, num_epochs):
  """Keeps the rows of epochs 0..num_epochs-1 only, once each (the first).

  A run killed after logging an epoch but before its backup was committed
  reruns that epoch; without this its row would appear twice. A row the
  kill cut in half is dropped too, and a file without a complete header
  is removed.

  Args:
    path: the CSVLogger file; nothing happens if it does not exist.
    num_epochs: the epochs the backup holds.

  Returns:
    The number of rows kept.
  """
  if not os.path.exists(path):
    return 0
  found = history_rows(path)
  if found is None:
    os.remove(path)
    return 0
  with open(path, encoding="utf-8", errors="replace", newline="") as f:
    lines = f.read().splitlines(keepends=True)
  kept, seen = [lines[0]], set()
  for row in found[1]:
    if row.epoch < num_epochs and row.epoch not in seen:
      seen.add(row.epoch)
      kept.append(row.line)
  if len(kept) != len(lines):
    fileio.write_text(path, "".join(kept))
  if len(seen) < num_epochs:
    logging.getLogger(__name__).warning(
        "%s has rows for %d of the %d epochs done", path, len(seen),
        num_epochs)
  return len(seen)


# Evaluation pictures, each `<name>.png` (a dataset after the first of a
# several-dataset evaluation: `<name>_<section>.png`).
PICTURES = ("confusion_matrix", "reliability", "mistakes", "curves",
            "pr_curves", "label_cooccurrence")  # The last two: label sets.


class ReportFolder:
  """The evaluation files of a folder: report.json/.txt/.html and pictures.

  A run's model_dir is one (RunFolder.reports); an ensemble's report_dir is
  another.
  """

  def __init__(self, path):
    self.path = os.fspath(path)

  def report_path(self, name="report", suffix=".json"):
    return os.path.join(self.path, name + suffix)

  @property
  def html_path(self):
    return self.report_path(suffix=".html")

  def picture_path(self, picture, section=None):
    if picture not in PICTURES:
      raise ValueError(f"Unknown picture {picture!r}: one of {PICTURES}.")
    suffix = f"_{section}" if section else ""
    return os.path.join(self.path, f"{picture}{suffix}.png")

  def makedirs(self):
    try:
      os.makedirs(self.path, exist_ok=True)
    except OSError as e:
      raise ImgrecError(f"Cannot create report folder {self.path}: "
                        f"{e.strerror or e}. Pass another --report_dir."
                        ) from e

  def write_report(self, report, text, name="report"):
    """Writes `<name>.json` and the readable `<name>.txt`; returns the JSON path."""
    path = self.report_path(name)
    fileio.write_json(path, report, indent=2)
    fileio.write_text(self.report_path(name, ".txt"), text)
    return path

  def write_picture(self, picture, png, section=None):
    path = self.picture_path(picture, section)
    with fileio.atomic_write(path, "wb") as f:
      f.write(png)
    return path

  def write_html(self, text):
    fileio.write_text(self.html_path, text)
    return self.html_path

  def own_names(self):
    """The report files and pictures in the folder (names imgrec writes)."""
    names = {"report.json", "report.txt", "report.html"}
    try:
      listed = os.listdir(self.path)
    except OSError:
      return []
    out = []
    for name in sorted(listed):
      stem = name[:-len(".png")] if name.endswith(".png") else None
      if name in names or (stem is not None and any(
          stem == p or stem.startswith(p + "_") for p in PICTURES)):
        out.append(name)
    return out

  def remove_all(self):
    """Deletes the report files and pictures (nothing else)."""
    for name in self.own_names():
      with contextlib.suppress(OSError):
        os.remove(os.path.join(self.path, name))

  @property
  def marker_path(self):
    return os.path.join(self.path, _REPORT_MARKER_NAME)

  def read_models(self):
    """The model_dirs whose report the folder holds (real paths), or None.

    From the folder's mark; for a report written before marks, from the
    members its report.json names.
    """
    for path, key in ((self.marker_path, "models"),
                      (self.report_path(), "ensemble")):
      try:
        with open(path, encoding="utf-8") as f:
          data = json.load(f)
      except (OSError, ValueError):
        continue
      value = data.get(key) if isinstance(data, dict) else None
      if key == "ensemble":
        value = [m.get("model_dir") for m in value.get("members", ())
                 if isinstance(m, dict)] if isinstance(value, dict) else None
      if isinstance(value, list) and value and all(
          isinstance(m, str) for m in value):
        return sorted(os.path.realpath(m) for m in value)
    return None

  def claim(self, model_dirs, flag="--report_dir"):
    """Marks the folder as the report of `model_dirs`, if it may be.

    A folder that is new or holds nothing imgrec would replace is claimed;
    so is one that holds the report of the same models. A run folder, the
    report of other models, or report files imgrec cannot tie to these
    models are refused: writing would replace another run's figures.

    Args:
      model_dirs: the runs the report is of.
      flag: the flag that named the folder, for the message.

    Raises:
      ImgrecError: the folder holds another run's or other models' files.
    """
    models = sorted(os.path.realpath(d) for d in model_dirs)
    if os.path.isdir(self.path):
      run = RunFolder(self.path)
      kind = run.read_kind()
      if kind or os.path.isfile(run.best_model_path):
        what = f"{_KINDS[kind]}, {kind}" if kind else "it holds best.keras"
        raise ImgrecError(
            f"{flag}={self.path} is another run's folder ({what}): its "
            f"report would be replaced. Pass an empty or new {flag}.")
      recorded = self.read_models()
      if recorded is not None and recorded != models:
        raise ImgrecError(
            f"{flag}={self.path} holds the report of other models "
            f"({', '.join(recorded)}). Pass an empty or new {flag}.")
      clashing = self.own_names()
      if recorded is None and clashing:
        raise ImgrecError(
            f"{flag}={self.path} holds {', '.join(clashing[:3])}"
            f"{', ...' if len(clashing) > 3 else ''}, which imgrec cannot "
            f"tie to these models. Pass an empty or new {flag}.")
    self.makedirs()
    fileio.write_json(self.marker_path, {"command": "imgrec-evaluate",
                                         "models": models}, indent=2)


def _in_run(*parts):
  """A RunFolder property: the path of `parts` inside the model_dir."""
  return property(lambda self: os.path.join(self.path, *parts),
                  doc=f"<model_dir>/{'/'.join(parts)}")


# What `RunFolder.lock` writes into its lock file.
_LOCK_TEXT = re.compile(r"[^\n]*, pid \d+ on [^\n]*, since [^\n]*\n?")


def _is_lock_file(path):
  """Whether `path` is a lock file `RunFolder.lock` could have made: a
  regular file (not a link), empty or naming its holder."""
  try:
    if not stat.S_ISREG(os.lstat(path).st_mode):
      return False
    with open(path, "rb") as f:
      text = f.read(1001).decode("utf-8", "replace")
  except OSError:
    return False
  return text == "" or (len(text) <= 1000 and bool(_LOCK_TEXT.fullmatch(text)))


class RunFolder:
  """The files of one model_dir.

  Args:
    path: the model_dir.
  """

  flag = "--model_dir"  # The flag that names the folder, in messages.

  config_path = _in_run("config.json")
  labels_path = _in_run(LABELS_NAME)
  splits_path = _in_run("splits.json")
  data_report_path = _in_run("data_report.json")
  logs_dir = _in_run("logs")
  history_path = _in_run("history.csv")
  training_path = _in_run("training.json")
  ensemble_path = _in_run("ensemble.json")
  extend_path = _in_run("extend.json")  # What imgrec-extend added, and how.
  face_config_path = _in_run("face_config.json")
  # Multi-label runs: each label's decision threshold, chosen on the
  # validation split (every consumer of the run decides with them).
  thresholds_path = _in_run("thresholds.json")
  # Single-label runs: the open-set score and the threshold an image is
  # answered "unknown" below, and each class's prototype (mean embedding).
  open_set_path = _in_run("open_set.json")
  prototypes_path = _in_run("prototypes.npy")
  embedder_info_path = _in_run("embedder.json")
  face_report_path = _in_run("face_report.json")
  roc_path = _in_run("roc.png")
  faces_cache_dir = _in_run("faces")  # Aligned crops of detected faces.
  best_model_path = _in_run("best.keras")
  export_dir = _in_run("export")
  saved_model_dir = _in_run("export", "saved_model")
  export_report_path = _in_run("export", "export_report.json")
  embedder_saved_model_dir = _in_run("export", "embedder_saved_model")
  marker_path = _in_run(_MARKER_NAME)
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

  @property
  def reports(self):
    """The run's own evaluation files (a ReportFolder on the model_dir)."""
    return ReportFolder(self.path)

  def report_path(self, name="report", suffix=".json"):
    return self.reports.report_path(name, suffix)

  def tflite_path(self, variant="float"):
    name = "model.tflite" if variant == "float" else f"model_{variant}.tflite"
    return os.path.join(self.export_dir, name)

  def embedder_tflite_path(self, variant="float"):
    """A face embedder's TFLite file in export/."""
    name = ("embedder.tflite" if variant == "float"
            else f"embedder_{variant}.tflite")
    return os.path.join(self.export_dir, name)

  # --- Reading ---------------------------------------------------------------

  def exists(self):
    return os.path.isfile(self.config_path)

  def read_kind(self):
    """The command that made the folder, or None when it is not imgrec's.

    A folder is imgrec's when it holds imgrec's mark, or (a run made before
    marks) a config.json or face_config.json that is imgrec's own config
    record.

    Returns:
      TRAIN_COMMAND, FACES_COMMAND, ENSEMBLE_COMMAND, or None.
    """
    try:
      with open(self.marker_path, encoding="utf-8") as f:
        command = json.load(f).get("command")
      if command in (TRAIN_COMMAND, FACES_COMMAND, ENSEMBLE_COMMAND,
                     AUDIT_COMMAND, EXPLAIN_COMMAND):
        return command
    except (OSError, ValueError, AttributeError):
      pass
    for path, record, command in (
        (self.face_config_path, FaceTrainConfig, FACES_COMMAND),
        (self.config_path, TrainConfig, TRAIN_COMMAND)):
      try:
        with open(path, encoding="utf-8") as f:
          record.from_json(f.read(), source=path)
      except (OSError, ValueError, TypeError, ImgrecError):
        continue
      if command == TRAIN_COMMAND and os.path.isfile(self.ensemble_path):
        return ENSEMBLE_COMMAND
      return command
    return None

  def _user_names(self):
    """What an unmarked folder holds besides imgrec's lock and mark.

    A lock counts as imgrec's only when it is a plain file that is empty or
    names its holder as `lock` writes it; temporaries' names count as the
    user's (imgrec writes temporaries only in a folder it has marked, and
    cleaning them would delete what the user keeps under such a name)."""
    try:
      names = os.listdir(self.path)
    except OSError:
      return []
    return sorted(n for n in names if n != _MARKER_NAME and not (
        n == _LOCK_NAME and _is_lock_file(os.path.join(self.path, n))))

  def check_ours(self, command, overwrite=None):
    """Refuses a model_dir that `command` may not write into.

    A new or empty folder is fine, and so is imgrec's own run of the same
    kind. A folder with files imgrec did not write is refused even with
    --overwrite (overwrite deletes imgrec's files only, and would mix the
    run with the user's); a run of another kind is refused unless
    `overwrite`.

    Args:
      command: TRAIN_COMMAND, FACES_COMMAND or ENSEMBLE_COMMAND.
      overwrite: whether --overwrite was given; None for a command that
        has no such flag.

    Raises:
      ImgrecError: saying what the folder holds and what to pass instead.
    """
    if not os.path.isdir(self.path):
      return
    kind = self.read_kind()
    if kind is None:
      names = self._user_names()
      if names:
        listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ImgrecError(
            f"{self.flag[2:]} {self.path} holds files imgrec did not write "
            f"({listed}); it is not imgrec's, and nothing in it is "
            f"replaced or deleted. Pass an empty or new {self.flag}.")
    elif kind != command and not overwrite:
      hint = (f"pass --overwrite to replace it, or another {self.flag}"
              if overwrite is not None else f"pass a new {self.flag}")
      raise ImgrecError(f"{self.flag[2:]} {self.path} holds {_KINDS[kind]} "
                        f"({kind}), not {_KINDS[command]}: {hint}.")

  @contextlib.contextmanager
  def start(self, command, *, overwrite=None):
    """Holds the folder for `command` writing a run into it.

    Checks the folder is `command`'s to write (`check_ours`), takes the
    writer lock, removes stale temporaries, deletes the earlier run's files
    when `overwrite`, and marks the folder as `command`'s.

    Args:
      command: TRAIN_COMMAND, FACES_COMMAND or ENSEMBLE_COMMAND.
      overwrite: --overwrite; None for a command without it.

    Raises:
      ImgrecError: as `check_ours`, `makedirs` and `lock`.
    """
    self.makedirs()
    self.check_ours(command, overwrite)  # Before the lock file is made.
    with self.lock(command):
      self.check_ours(command, overwrite)
      self.clean_stale_temporaries()
      if overwrite:
        self.clear()
      fileio.write_json(self.marker_path, {"command": command}, indent=2)
      yield

  def _require(self, path, what, command="imgrec-train"):
    if not os.path.isfile(path):
      raise ImgrecError(f"No {what} at {path}: is {self.path} the model_dir "
                        f"of a finished {command} run? Run {command} "
                        f"with --model_dir={self.path} first.")
    return path

  def read_config(self):
    """Returns the run's TrainConfig (older runs' task names updated)."""
    path = self._require(self.config_path, "training config")
    with open(path, encoding="utf-8") as f:
      config = TrainConfig.from_json(f.read(), source=path)
    task = _RECORDED_TASK_NAMES.get(config.task)
    return config.replace(task=task) if task else config

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

  def read_task(self):
    """The registered name of the run's task, as its config records it."""
    if os.path.isfile(self.face_config_path) and not self.exists():
      return self.read_face_config().task
    return self.read_config().task

  def read_face_config(self):
    """The FaceTrainConfig of a face embedder's run (face_config.json)."""
    path = self._require(self.face_config_path, "face embedder config",
                         "imgrec-faces train")
    with open(path, encoding="utf-8") as f:
      return FaceTrainConfig.from_json(f.read(), source=path)

  def read_embedder_info(self):
    """{fingerprint, embedding_dim, image_size, channels, name} or an error."""
    path = self._require(self.embedder_info_path, "embedder description",
                         "imgrec-faces train")
    return self._read_json_if_present(path)

  def read_ensemble(self):
    """The members and weights of an ensemble folder, or None."""
    return self._read_json_if_present(self.ensemble_path)

  def read_splits_root(self):
    """The data folder the run's splits.json lists files of."""
    path = self._require(self.splits_path, "split list")
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("root")

  def read_training(self):
    """The run's training summary (see `write_training`), or None."""
    return self._read_json_if_present(self.training_path)

  def read_history(self):
    """history.csv, one value an epoch (a `History`), or None (no rows)."""
    return read_history(self.history_path)

  def _read_json_if_present(self, path):
    """The JSON object at `path`, or None when there is no file.

    Raises:
      ImgrecError: the file is there but holds no JSON object.
    """
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError) as e:
      raise ImgrecError(f"Cannot read {path}: {e}") from e
    if not isinstance(data, dict):
      raise ImgrecError(f"{path} does not hold a JSON object.")
    return data

  def read_report(self, name="report"):
    """The evaluation report `<name>.json` (see `write_report`), or None."""
    return self._read_json_if_present(self.report_path(name))

  def read_export_report(self):
    """export/export_report.json (what imgrec-export measured), or None."""
    return self._read_json_if_present(self.export_report_path)

  def require_best_model(self):
    return self._require(self.best_model_path, "trained model")

  # --- Writing ---------------------------------------------------------------

  def makedirs(self):
    """Creates the folder, or says in one line why it cannot be written."""
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise ImgrecError(f"{self.flag[2:]} {self.path} is a file, not a "
                        f"folder. Pass another {self.flag}.")
    for sub in (self._checkpoints, self.export_dir, self.logs_dir):
      if os.path.exists(sub) and not os.path.isdir(sub):
        raise ImgrecError(f"{sub} is a file where imgrec keeps a folder. "
                          "Remove it, or pass another --model_dir.")
    try:
      os.makedirs(self.path, exist_ok=True)
      # os.access says yes to root on a read-only mount: try for real.
      fd, probe = tempfile.mkstemp(prefix=fileio.TEMP_PREFIX, dir=self.path)
      os.close(fd)
      os.remove(probe)
    except OSError as e:
      raise ImgrecError(f"Cannot write into {self.flag[2:]} {self.path}: "
                        f"{e.strerror or e}. Pass a writable {self.flag}."
                        ) from e

  @contextlib.contextmanager
  def lock(self, command):
    """Holds the run's writer lock for the block: one writer at a time.

    The lock is an flock on `<model_dir>/.lock`, which the kernel releases
    when its process dies, so a crashed run never leaves a stale lock.

    Args:
      command: what the holder is doing, shown to whoever waits.

    Raises:
      ImgrecError: another process holds it.
    """
    self.makedirs()
    path = os.path.join(self.path, _LOCK_NAME)
    try:
      # Never through a link: truncating it would write over its target.
      fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
      raise ImgrecError(
          f"{path} is a link or not a file ({e.strerror}): imgrec's lock is "
          f"a file of its own. Remove it, or pass another {self.flag}."
          ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      os.close(fd)
      raise ImgrecError(f"{path} is not a regular file: imgrec's lock is a "
                        f"file of its own. Pass another {self.flag}.")
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
        raise ImgrecError(
            f"{self.path} is in use by another imgrec process "
            f"({holder or 'unknown'}). Wait for it to finish, or use another "
            f"{self.flag}.") from None
      os.ftruncate(fd, 0)
      now = datetime.datetime.now().isoformat(timespec="seconds")
      os.pwrite(fd, f"{command}, pid {os.getpid()} on "
                f"{socket.gethostname()}, since {now}\n".encode(), 0)
      yield
    finally:
      os.close(fd)  # Releases the lock.

  def check_resumable(self, config, neutral=RESUME_NEUTRAL):
    """Refuses to resume a run whose recorded config differs from `config`.

    Args:
      config: the TrainConfig (a face embedder's FaceTrainConfig) of the
        new run (resolved).
      neutral: fields a rerun may change (the task's `resume_neutral`).

    Returns:
      True when the folder holds a run to resume, False when it is new.

    Raises:
      ImgrecError: naming the settings that differ.
    """
    face = isinstance(config, FaceTrainConfig)
    if not os.path.isfile(self.face_config_path if face else
                          self.config_path):
      return False
    old = (self.read_face_config() if face else self.read_config()).to_dict()
    new = config.to_dict()
    if not (new.get("data_dir") or new.get("labels_csv") or new.get("tfds")):
      # The built-in data's folder (or, for label sets, its labels CSV).
      new["data_dir"] = old.get("data_dir")
      new["labels_csv"] = old.get("labels_csv")
    for key in ("data_dir", "labels_csv", "tfds_data_dir", "init_from"):
      for d in (old, new):
        if d.get(key):
          d[key] = os.path.abspath(d[key])
    differ = sorted(k for k in new if k not in neutral and
                    old.get(k) != new[k])
    if differ:
      changes = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in differ)
      raise ImgrecError(
          f"{self.path} holds a run with other settings ({changes}). Rerun "
          "with the same settings to resume it, pass --overwrite to start "
          "afresh there, or use another --model_dir.")
    return True

  def check_same_splits(self, splits):
    """Refuses to resume when the data's files are not the run's any more.

    Raises:
      ImgrecError: saying how each split changed.
    """
    if not os.path.isfile(self.splits_path):
      return
    changes = []
    for name, split in splits.items():
      old = set(self.read_split(name)[0])
      new = set(split.paths)
      if old != new:
        changes.append(f"{name}: {len(new - old)} file(s) new, "
                       f"{len(old - new)} gone")
    if changes:
      raise ImgrecError(
          f"The data of the run in {self.path} changed since it started "
          f"({'; '.join(changes)}): resuming would evaluate on images it "
          "trained on. Pass --overwrite to start afresh, or use another "
          "--model_dir.")

  def _export_names(self):
    """The paths imgrec writes in export/ (of image, clip and face runs)."""
    paths = [self.saved_model_dir, self.embedder_saved_model_dir,
             self.export_report_path,
             os.path.join(self.export_dir, LABELS_NAME)]
    for variant in TFLITE_VARIANTS:
      paths += [self.tflite_path(variant), self.embedder_tflite_path(variant)]
    return paths

  def clear(self):
    """Deletes the files a run writes (nothing else) to start afresh.

    The folders imgrec keeps to itself (checkpoints/, logs/, faces/) go
    whole; in export/ only the files imgrec writes there, so a user's own
    file beside them stays. Call `check_ours` first: only in imgrec's own
    run are these names imgrec's.
    """
    self.remove_export_report()
    for path in (self.config_path, self.labels_path, self.splits_path,
                 self.data_report_path, self.history_path,
                 self.training_path, self.ensemble_path, self.extend_path,
                 self.best_model_path, self.face_config_path,
                 self.embedder_info_path, self.face_report_path,
                 self.roc_path, self.thresholds_path, self.open_set_path,
                 self.prototypes_path, *self._export_names()):
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
          os.remove(path)
    self.reports.remove_all()
    for folder in (self._checkpoints, self.logs_dir, self.faces_cache_dir):
      shutil.rmtree(folder, ignore_errors=True)
    self.clean_stale_temporaries()
    with contextlib.suppress(OSError):
      os.rmdir(self.export_dir)  # Only when nothing of the user's is left.

  def remove_export_report(self):
    """Deletes export/export_report.json before export files change.

    A kill during an export then leaves no report describing files that
    are no longer (or not yet) the ones on disk; the new report is written
    last.
    """
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.export_report_path)
      fileio.fsync_path(self.export_dir)

  def clean_stale_temporaries(self):
    """Removes the temporaries (`fileio.TEMP_PREFIX` names, nothing else)
    a killed writer left (call under `lock`)."""
    for folder in (self.path, self.export_dir):
      try:
        names = os.listdir(folder)
      except OSError:
        continue
      for name in names:
        if name.startswith(fileio.TEMP_PREFIX):
          path = os.path.join(folder, name)
          if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
          else:
            with contextlib.suppress(OSError):
              os.remove(path)

  def write_config(self, config):
    """Writes the run's config record: config.json, or a face embedder's
    face_config.json."""
    path = (self.face_config_path if isinstance(config, FaceTrainConfig)
            else self.config_path)
    fileio.write_text(path, config.to_json())

  def write_labels(self, class_names):
    write_labels_file(self.labels_path, class_names)

  def write_splits(self, root, class_names, splits, dropped=()):
    """Writes the exact files of every split, so evaluation can reuse them.

    Args:
      root: the data root.
      class_names: class names in label order.
      splits: {split name: object with `paths` and `labels`}.
      dropped: copies of earlier splits' images left out (--leakage=drop).
    """
    record = {"root": root, "class_names": list(class_names),
              "splits": {s: {"paths": list(sp.paths),
                             "labels": list(sp.labels)}
                         for s, sp in splits.items()}}
    if dropped:
      record["dropped_for_leakage"] = list(dropped)
    fileio.write_json(self.splits_path, record)

  def write_embedder_info(self, info):
    fileio.write_json(self.embedder_info_path, info, indent=2)

  def write_ensemble(self, members):
    fileio.write_json(self.ensemble_path, members, indent=2)

  def truncate_history(self, num_epochs):
    """Keeps history.csv's rows of the epochs a resumed run holds (see
    `truncate_history`); returns how many."""
    return truncate_history(self.history_path, num_epochs)

  def write_training(self, summary):
    """Writes training.json: train_seconds (all sessions of a resumed run),
    epochs, num_params."""
    fileio.write_json(self.training_path, summary, indent=2)

  def write_report(self, report, text, name="report"):
    """Writes `<name>.json` and the readable `<name>.txt`; returns the JSON path."""
    return self.reports.write_report(report, text, name)


class AuditFolder(RunFolder):
  """The files of one imgrec-audit output folder (`--out`): a folder of
  imgrec's like a run's (marked, locked, never one holding a user's files),
  with the audit's outputs and the cross-validation runs it trains."""

  flag = "--out"
  audit_path = _in_run("audit.json")
  html_path = _in_run("audit.html")
  exclude_path = _in_run("exclude.txt")
  relabel_path = _in_run("relabel.csv")
  folds_dir = _in_run("folds")
  # The digest of each output as the audit wrote it (a rerun replaces only
  # what is still so).
  outputs_record_path = _in_run(".imgrec-audit-outputs.json")

  def fold_dir(self, fold):
    return os.path.join(self.folds_dir, f"fold_{fold}")

  def outputs(self):
    return (self.audit_path, self.html_path, self.exclude_path,
            self.relabel_path)


class ExplainFolder(RunFolder):
  """The folder of `imgrec-predict --explain_dir`: overlay pictures of
  explanations, in a folder of imgrec's (marked, locked, never one holding
  a user's files), with the digest of each picture as written (a rerun
  replaces only what is still so)."""

  flag = "--explain_dir"
  outputs_record_path = _in_run(".imgrec-explain-outputs.json")

  def picture_path(self, name):
    return os.path.join(self.path, name)
