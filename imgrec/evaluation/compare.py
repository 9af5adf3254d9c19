"""Finished runs side by side: accuracy (mAP), macro F1, ECE, size, time and latency.

    rows, skipped = collect_runs(["runs/mnist-simple_cnn", "runs/"])
    print(format_markdown(rows))

Everything comes from what the runs wrote (through `RunFolder`); nothing is
trained, evaluated or loaded into TensorFlow. A figure a run did not record
(an older report without "ece", a run without training.json) is None, shown
as "-". Latency is one image through the Keras model when report.json has
it, else the float TFLite file's from the export report.

A run of label sets (report.json's "multilabel" section) has no accuracy:
it shows its mAP and micro F1 in columns of their own (which the table has
only when it holds such a run), "-" in accuracy and ECE, and sorts after
the single-label runs, by mAP.

Every file is read bounded (at most `MAX_JSON_BYTES`, a regular file) and
every value checked for its type and range: a run folder with a damaged or
implausible file is skipped with the reason, and the others are shown.
"""

import csv
import dataclasses
import errno
import io
import json
import math
import os
import stat

from imgrec.config import short_repr
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder

SORT_KEYS = ("accuracy", "name")
_MISSING = "-"
# imgrec's reports are kilobytes (a few MB with thousands of classes): a
# larger file is not one of them, and is not parsed into memory.
MAX_JSON_BYTES = 50_000_000
# More parameters than any model has (10^15): a larger count is damage.
MAX_PARAMS = 10**15


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """The figures of one finished run.

  Attributes:
    name: the run folder's name.
    path: the run folder.
    data: the data's name: its folder's, the labels CSV's, the TFDS name or
      the built-in dataset's.
    model: the registered model name.
    seed: the run's --seed.
    epochs: the run's --epochs.
    accuracy: test accuracy, a fraction; None for label sets.
    macro_f1: macro-averaged F1 on the test split, or None.
    ece: expected calibration error, or None.
    num_params: the model's parameters, or None.
    train_seconds: training time (all sessions of a resumed run), or None.
    latency_ms: median latency of one image, or None.
    latency_source: "keras" or "tflite" (the float file), or None.
    map: mean average precision of label sets on the test split, or None.
    micro_f1: micro-averaged F1 of label sets, or None.
  """
  name: str
  path: str
  data: str
  model: str
  seed: int
  epochs: int
  accuracy: float | None
  macro_f1: float | None = None
  ece: float | None = None
  num_params: int | None = None
  train_seconds: float | None = None
  latency_ms: float | None = None
  latency_source: str | None = None
  map: float | None = None
  micro_f1: float | None = None


def _not_a_folder(path):
  """Why `path` cannot be a folder of runs, or None when it is a folder."""
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    if e.errno == errno.ELOOP:
      return "a symlink loop"
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
      return "no such folder"
    return f"cannot read it: {e.strerror or e}"
  except ValueError:  # A NUL character.
    return "no such folder"
  return None if stat.S_ISDIR(mode) else "not a folder"


def find_run_folders(paths):
  """Expands folders into run folders.

  A folder with config.json is a run; another folder stands for the run
  folders directly inside it.

  Args:
    paths: run folders or folders of runs.

  Returns:
    (run folders, [(path, why it was skipped)]), in the given order, each
    folder once.
  """
  runs, skipped, seen = [], [], set()
  for path in paths:
    path = os.fspath(path)
    why = _not_a_folder(path)
    if why:
      skipped.append((path, why))
      continue
    if RunFolder(path).exists():
      found = [path]
    else:
      try:
        names = sorted(os.listdir(path))
      except OSError as e:
        skipped.append((path, f"cannot list it: {e.strerror or e}"))
        continue
      found = [os.path.join(path, name) for name in names
               if RunFolder(os.path.join(path, name)).exists()]
      if not found:
        skipped.append((path, "not a run folder (no config.json) and no run "
                        "folders inside"))
    for run in found:
      key = os.path.realpath(run)
      if key not in seen:
        seen.add(key)
        runs.append(run)
  return runs, skipped


def files_read(folders):
  """Every file `summarize_run` reads in `folders` (to refuse as an output)."""
  return [path for folder in folders for run in [RunFolder(folder)]
          for path in (run.config_path, run.report_path(), run.training_path,
                       run.ensemble_path, run.export_report_path)]


def _read_json(run, path):
  """The JSON object at `path` in `run`, or None when there is no file.

  Raises:
    ImgrecError: the file is not a regular file, is over MAX_JSON_BYTES,
      or holds no JSON object (the message names it relative to the run).
  """
  name = os.path.relpath(path, run.path)
  try:
    info = os.stat(path)
  except FileNotFoundError:
    return None
  # A FIFO or a device (a link to /dev/zero) would block or never end.
  if not stat.S_ISREG(info.st_mode):
    raise ImgrecError(f"{name} is not a regular file")
  with open(path, "rb") as f:
    raw = f.read(MAX_JSON_BYTES + 1)
  if len(raw) > MAX_JSON_BYTES:
    raise ImgrecError(f"{name} is larger than {MAX_JSON_BYTES // 10**6} MB: "
                      "not a report imgrec wrote")
  try:
    data = json.loads(raw)
  except RecursionError:
    raise ImgrecError(f"{name} is damaged: nested too deeply") from None
  except ValueError as e:
    raise ImgrecError(f"{name} is not valid JSON: {e}") from None
  if not isinstance(data, dict):
    raise ImgrecError(f"{name} does not hold a JSON object")
  return data


def _data_name(config):
  if config.data_dir:
    return os.path.basename(os.path.normpath(config.data_dir))
  if config.labels_csv:
    return os.path.basename(config.labels_csv)
  return config.tfds or config.dataset


def _read_config(run):
  data = _read_json(run, run.config_path)
  if data is None:
    raise ImgrecError("not a run folder (no config.json)")
  try:
    return TrainConfig.from_dict(data).validate(check_files=False)
  except ImgrecError as e:
    raise ImgrecError(f"config.json: {e}") from None


def _number(mapping, key, where, *, low=0, high=math.inf, integer=False,
            required=False):
  """mapping[key], checked to be a finite number in [low, high].

  Returns:
    The number, or None when the key is absent or null (not recorded).

  Raises:
    ImgrecError: it is another type or out of range (or absent while
      `required`), naming the file, the key and the value.
  """
  value = mapping.get(key)
  if value is None:
    if required:
      raise ImgrecError(f"{where} has no {key}")
    return None
  kind = "an integer" if integer else "a number"
  if isinstance(value, bool) or not isinstance(
      value, int if integer else (int, float)):
    why = f"must be {kind}"
  elif isinstance(value, float) and not math.isfinite(value):
    why = "must be a finite number"
  elif not low <= value <= high:
    why = f"must be in [{low:g}, {high:g}]"
  else:
    return value
  raise ImgrecError(f"{where}: {key} {why}. Received: {key}="
                    f"{short_repr(value)}")


def _fraction(mapping, key, where, required=False):
  value = _number(mapping, key, where, high=1, required=required)
  return None if value is None else float(value)


def _median_ms(entry, where):
  """The median of an entry's `latency_ms` object, or None if not recorded."""
  latency = entry.get("latency_ms")
  if latency is None:
    return None
  if not isinstance(latency, dict):
    raise ImgrecError(f"{where}: latency_ms must be an object with a median "
                      f"in ms. Received: latency_ms={short_repr(latency)}")
  return _number(latency, "median", f"{where} latency_ms")


def _latency(run, report):
  """(median ms, source): the Keras model's, else the float TFLite file's."""
  median = _median_ms(report, "report.json")
  if median is not None:
    return median, "keras"
  export_report = _read_json(run, run.export_report_path)
  if export_report is None:
    return None, None
  where = os.path.relpath(run.export_report_path, run.path)
  formats = export_report.get("formats", [])
  if not isinstance(formats, list) or not all(
      isinstance(e, dict) and isinstance(e.get("name"), str)
      for e in formats):
    raise ImgrecError(f"{where}: formats must be a list of objects with a "
                      f"name. Received: formats={short_repr(formats)}")
  for entry in formats:
    if entry["name"] == "float":
      median = _median_ms(entry, f"{where} (float)")
      if median is not None:
        return median, "tflite"
  return None, None


def _model_name(run, config):
  ensemble = _read_json(run, run.ensemble_path)
  if ensemble is None:
    return config.model
  models = ensemble.get("models")
  if not (isinstance(models, list) and models
          and all(isinstance(m, str) for m in models)):
    raise ImgrecError("ensemble.json: models must be a list of model names. "
                      f"Received: models={short_repr(models)}")
  return f"ensemble({'+'.join(models)})"


def _scores(report):
  """The RunSummary fields of report.json's figures: accuracy, macro F1
  and ECE, or for label sets mAP, micro and macro F1."""
  label_sets = report.get("multilabel")
  if label_sets is None:
    return {"accuracy": _fraction(report, "accuracy", "report.json",
                                  required=True),
            "macro_f1": _fraction(report, "macro_f1", "report.json"),
            "ece": _fraction(report, "ece", "report.json")}
  where = "report.json multilabel"
  if not isinstance(label_sets, dict):
    raise ImgrecError(f"report.json: multilabel must be an object. "
                      f"Received: multilabel={short_repr(label_sets)}")
  return {"accuracy": None, "map": _fraction(label_sets, "map", where),
          "micro_f1": _fraction(label_sets, "micro_f1", where,
                                required=True),
          "macro_f1": _fraction(label_sets, "macro_f1", where)}


def summarize_run(path):
  """The figures of one run folder, each checked for its type and range.

  Args:
    path: a run folder (model_dir of imgrec-train).

  Returns:
    A RunSummary.

  Raises:
    ImgrecError: the folder is not a finished, evaluated run, or one of its
      files is damaged; the message says which and why.
    OSError: a file cannot be read.
  """
  run = RunFolder(path)
  config = _read_config(run)
  report = _read_json(run, run.report_path())
  if report is None:
    raise ImgrecError("no report.json: training unfinished or the run was "
                      "not evaluated (imgrec-evaluate writes it)")
  training = _read_json(run, run.training_path) or {}
  latency, source = _latency(run, report)
  return RunSummary(
      name=os.path.basename(os.path.normpath(path)), path=path,
      data=_data_name(config), model=_model_name(run, config),
      seed=config.seed, epochs=config.epochs, **_scores(report),
      num_params=_number(training, "num_params", "training.json",
                         high=MAX_PARAMS, integer=True),
      train_seconds=_number(training, "train_seconds", "training.json"),
      latency_ms=latency, latency_source=source)


def sort_rows(rows, key="accuracy"):
  """Rows by accuracy (best first; ties by name), runs of label sets after
  them by mAP; or by name.

  Raises:
    ValueError: `key` is not one of SORT_KEYS.
  """
  if key == "accuracy":
    return sorted(rows, key=lambda r: (
        r.accuracy is None,
        -(r.map or 0.0) if r.accuracy is None else -r.accuracy,
        r.name, r.path))
  if key == "name":
    return sorted(rows, key=lambda r: (r.name, r.path))
  raise ValueError(f"Unknown sort key. Expected one of {SORT_KEYS}. "
                   f"Received: key={key!r}")


def collect_runs(paths, sort="accuracy"):
  """The figures of every finished run among `paths`.

  Args:
    paths: run folders, or folders whose subfolders are run folders.
    sort: "accuracy" (best first) or "name".

  Returns:
    (rows, skipped): RunSummary rows in `sort` order, and
    [(path, why)] for every folder that is not a finished run.
  """
  folders, skipped = find_run_folders(paths)
  rows, damaged = summarize_runs(folders)
  return sort_rows(rows, sort), skipped + damaged


def summarize_runs(folders):
  """(RunSummary rows, [(path, why)] of the folders that are not usable)."""
  rows, skipped = [], []
  for path in folders:
    try:
      rows.append(summarize_run(path))
    except ImgrecError as e:
      skipped.append((path, str(e)))
    except OSError as e:
      skipped.append((path, f"cannot read it: {e.strerror or e}"))
  return rows, skipped


def format_value(value, spec):
  """`value` formatted with `spec`, or "-" when it is None (not recorded)."""
  return _MISSING if value is None else format(value, spec)


def _markdown_cell(value):
  text = str(value).replace("|", "\\|")
  return text.replace("\n", " ").replace("\r", " ")


def markdown_table(header, rows):
  """A Markdown table of string cells (`|` escaped)."""
  lines = ["| " + " | ".join(map(_markdown_cell, header)) + " |",
           "|" + "|".join(" --- " for _ in header) + "|"]
  lines += ["| " + " | ".join(map(_markdown_cell, r)) + " |" for r in rows]
  return "\n".join(lines) + "\n"


# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value):
  """None as an empty cell; text a spreadsheet would take for a formula
  (a run named "=HYPERLINK(...)") behind a quote, as OWASP advises."""
  if value is None:
    return ""
  if isinstance(value, str) and value.startswith(_FORMULA_START):
    return "'" + value
  return value


def csv_table(header, rows):
  """CSV text (a header row, then `rows`); None cells are empty, text that
  would start a formula is escaped."""
  out = io.StringIO()
  # Text is always quoted: the csv module leaves a carriage return in an
  # unquoted cell when lines end in "\n", which breaks the row.
  writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
  writer.writerow(header)
  writer.writerows([[_csv_cell(v) for v in r] for r in rows])
  return out.getvalue()


MARKDOWN_HEADER = ("run", "data", "model", "accuracy %", "macro F1", "ECE",
                   "params", "train s", "latency ms")
# After "accuracy %" when a run of label sets is in the table.
LABEL_SET_HEADER = ("mAP %", "micro F1")


LATENCY_NOTE = ("latency ms: median of one image, Keras model; (tflite): the "
                "float TFLite file (export/export_report.json); -: not "
                "recorded.")


def format_latency(value, source):
  """Milliseconds, marked "(tflite)" when measured on the float TFLite file."""
  if value is None:
    return _MISSING
  return f"{value:.2f}" + (" (tflite)" if source == "tflite" else "")


def format_markdown(rows):
  """The rows as a Markdown table, with a note on how latency was measured.

  Args:
    rows: RunSummary rows, in the order to show.

  Returns:
    The table text, ending in a newline.
  """
  label_sets = any(r.micro_f1 is not None for r in rows)
  header = MARKDOWN_HEADER
  if label_sets:  # Columns of their own, next to accuracy.
    header = header[:4] + LABEL_SET_HEADER + header[4:]
  cells = []
  for r in rows:
    row = [r.name, r.data, r.model,
           format_value(None if r.accuracy is None else 100 * r.accuracy,
                        ".2f")]
    if label_sets:
      row += [format_value(None if r.map is None else 100 * r.map, ".2f"),
              format_value(r.micro_f1, ".4f")]
    cells.append((*row, format_value(r.macro_f1, ".4f"),
                  format_value(r.ece, ".4f"), format_value(r.num_params, ","),
                  format_value(r.train_seconds, ".1f"),
                  format_latency(r.latency_ms, r.latency_source)))
  return markdown_table(header, cells) + f"\n{LATENCY_NOTE}\n"


CSV_HEADER = tuple(f.name for f in dataclasses.fields(RunSummary))


def format_csv(rows):
  """The rows as CSV: one column per RunSummary field, full precision.

  Accuracy, macro F1, ECE, mAP and micro F1 are fractions; a figure a run
  did not record (accuracy and ECE of label sets, mAP of a single-label
  run) is an empty cell.
  """
  return csv_table(CSV_HEADER, [dataclasses.astuple(r) for r in rows])
