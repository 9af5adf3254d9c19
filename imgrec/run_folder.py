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
                        export_report.json (every format measured)

No other module spells these names: they ask this one.
"""

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import tempfile

from imgrec import fileio
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError

LABELS_NAME = "labels.txt"
# Inside an exported SavedModel: the input size and channels its
# `serving_bytes` decodes for, so clients can decode files the same way.
INPUT_SPEC_NAME = "imgrec_input.json"
_LOCK_NAME = ".lock"
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


# Evaluation pictures, each `<name>.png` (a dataset after the first of a
# several-dataset evaluation: `<name>_<section>.png`).
PICTURES = ("confusion_matrix", "reliability", "mistakes", "curves")


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

  def remove_all(self):
    """Deletes the report files and pictures (nothing else)."""
    names = {"report.json", "report.txt", "report.html"}
    with contextlib.suppress(OSError):
      for name in os.listdir(self.path):
        stem = name[:-len(".png")] if name.endswith(".png") else None
        if name in names or (stem is not None and any(
            stem == p or stem.startswith(p + "_") for p in PICTURES)):
          with contextlib.suppress(OSError):
            os.remove(os.path.join(self.path, name))


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
  training_path = _in_run("training.json")
  ensemble_path = _in_run("ensemble.json")
  face_config_path = _in_run("face_config.json")
  embedder_info_path = _in_run("embedder.json")
  face_report_path = _in_run("face_report.json")
  roc_path = _in_run("roc.png")
  faces_cache_dir = _in_run("faces")  # Aligned crops of detected faces.
  best_model_path = _in_run("best.keras")
  export_dir = _in_run("export")
  saved_model_dir = _in_run("export", "saved_model")
  export_report_path = _in_run("export", "export_report.json")
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

  # --- Reading ---------------------------------------------------------------

  def exists(self):
    return os.path.isfile(self.config_path)

  def _require(self, path, what, command="imgrec-train"):
    if not os.path.isfile(path):
      raise ImgrecError(f"No {what} at {path}: is {self.path} the model_dir "
                        f"of a finished {command} run? Run {command} "
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

  def read_face_config(self):
    """The FaceTrainConfig of a face embedder's run."""
    from imgrec.config import FaceTrainConfig  # pylint: disable=g-import-not-at-top
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
      raise ImgrecError(f"model_dir {self.path} is a file, not a folder. "
                        "Pass another --model_dir.")
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
      raise ImgrecError(f"Cannot write into model_dir {self.path}: "
                        f"{e.strerror or e}. Pass a writable --model_dir."
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
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
        raise ImgrecError(
            f"{self.path} is in use by another imgrec process "
            f"({holder or 'unknown'}). Wait for it to finish, or use another "
            "--model_dir.") from None
      os.ftruncate(fd, 0)
      now = datetime.datetime.now().isoformat(timespec="seconds")
      os.pwrite(fd, f"{command}, pid {os.getpid()} on "
                f"{socket.gethostname()}, since {now}\n".encode(), 0)
      yield
    finally:
      os.close(fd)  # Releases the lock.

  def check_resumable(self, config):
    """Refuses to resume a run whose recorded config differs from `config`.

    Args:
      config: the TrainConfig of the new run (resolved).

    Returns:
      True when the folder holds a run to resume, False when it is new.

    Raises:
      ImgrecError: naming the settings that differ.
    """
    if not self.exists():
      return False
    old, new = self.read_config().to_dict(), config.to_dict()
    if new.get("data_dir") is None and not (new.get("labels_csv") or
                                            new.get("tfds")):
      new["data_dir"] = old.get("data_dir")  # The built-in data's folder.
    for key in ("data_dir", "labels_csv", "tfds_data_dir", "init_from"):
      for d in (old, new):
        if d.get(key):
          d[key] = os.path.abspath(d[key])
    differ = sorted(k for k in new if k not in RESUME_NEUTRAL and
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

  def clear(self):
    """Deletes the files a run writes (nothing else) to start afresh."""
    for path in (self.config_path, self.labels_path, self.splits_path,
                 self.data_report_path, self.history_path,
                 self.training_path, self.ensemble_path,
                 self.best_model_path):
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    self.reports.remove_all()
    for folder in (self._checkpoints, self.logs_dir, self.export_dir):
      shutil.rmtree(folder, ignore_errors=True)

  def clean_stale_temporaries(self):
    """Removes `.tmp-*` left by a killed writer (call under `lock`)."""
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

  def write_face_config(self, config):
    fileio.write_text(self.face_config_path, config.to_json())

  def write_embedder_info(self, info):
    fileio.write_json(self.embedder_info_path, info, indent=2)

  def write_ensemble(self, members):
    fileio.write_json(self.ensemble_path, members, indent=2)

  def write_training(self, summary):
    """Writes training.json: train_seconds (all sessions of a resumed run),
    epochs, num_params."""
    fileio.write_json(self.training_path, summary, indent=2)

  def write_report(self, report, text, name="report"):
    """Writes `<name>.json` and the readable `<name>.txt`; returns the JSON path."""
    return self.reports.write_report(report, text, name)
