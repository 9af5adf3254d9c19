"""Finished runs side by side: accuracy, macro F1, ECE, size, time and latency.

    rows, skipped = collect_runs(["runs/mnist-simple_cnn", "runs/"])
    print(format_markdown(rows))

Everything comes from what the runs wrote (through `RunFolder`); nothing is
trained, evaluated or loaded into TensorFlow. A figure a run did not record
(an older report without "ece", a run without training.json) is None, shown
as "-". Latency is one image through the Keras model when report.json has
it, else the float TFLite file's from the export report.
"""

import csv
import dataclasses
import io
import math
import os

from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder

SORT_KEYS = ("accuracy", "name")
_MISSING = "-"


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
    accuracy: test accuracy, a fraction.
    macro_f1: macro-averaged F1 on the test split, or None.
    ece: expected calibration error, or None.
    num_params: the model's parameters, or None.
    train_seconds: training time (all sessions of a resumed run), or None.
    latency_ms: median latency of one image, or None.
    latency_source: "keras" or "tflite" (the float file), or None.
  """
  name: str
  path: str
  data: str
  model: str
  seed: int
  epochs: int
  accuracy: float
  macro_f1: float | None = None
  ece: float | None = None
  num_params: int | None = None
  train_seconds: float | None = None
  latency_ms: float | None = None
  latency_source: str | None = None


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
    if not os.path.isdir(path):
      why = "not a folder" if os.path.exists(path) else "no such folder"
      skipped.append((path, why))
      continue
    if RunFolder(path).exists():
      found = [path]
    else:
      found = sorted(os.path.join(path, name) for name in os.listdir(path)
                     if RunFolder(os.path.join(path, name)).exists())
      if not found:
        skipped.append((path, "not a run folder (no config.json) and no run "
                        "folders inside"))
    for run in found:
      key = os.path.realpath(run)
      if key not in seen:
        seen.add(key)
        runs.append(run)
  return runs, skipped


def _data_name(config):
  if config.data_dir:
    return os.path.basename(os.path.normpath(config.data_dir))
  if config.labels_csv:
    return os.path.basename(config.labels_csv)
  return config.tfds or config.dataset


def _number(mapping, key):
  value = (mapping or {}).get(key)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return value if math.isfinite(value) else None


def _latency(report, export_report):
  """(median ms, source): the Keras model's, else the float TFLite file's."""
  median = _number(report.get("latency_ms"), "median")
  if median is not None:
    return median, "keras"
  for entry in (export_report or {}).get("formats", []):
    if entry.get("name") == "float":
      median = _number(entry.get("latency_ms"), "median")
      if median is not None:
        return median, "tflite"
  return None, None


def summarize_run(path):
  """The figures of one run folder.

  Args:
    path: a run folder (model_dir of imgrec-train).

  Returns:
    A RunSummary.

  Raises:
    ImgrecError: the folder is not a finished, evaluated run; the message
      says what is missing.
  """
  run = RunFolder(path)
  if not run.exists():
    raise ImgrecError("not a run folder (no config.json)")
  config = run.read_config()
  report = run.read_report()
  if report is None:
    raise ImgrecError("no report.json: training unfinished or the run was "
                      "not evaluated (imgrec-evaluate writes it)")
  accuracy = _number(report, "accuracy")
  if accuracy is None:
    raise ImgrecError("report.json has no accuracy")
  training = run.read_training()
  try:
    export_report = run.read_export_report()
  except ImgrecError:
    export_report = None  # Only a latency figure: the run still counts.
  latency, source = _latency(report, export_report)
  num_params = _number(training, "num_params")
  ensemble = run.read_ensemble()
  model = (f"ensemble({'+'.join(ensemble.get('models', []))})" if ensemble
           else config.model)
  return RunSummary(
      name=os.path.basename(os.path.normpath(path)), path=path,
      data=_data_name(config), model=model, seed=config.seed,
      epochs=config.epochs, accuracy=float(accuracy),
      macro_f1=_number(report, "macro_f1"), ece=_number(report, "ece"),
      num_params=None if num_params is None else int(num_params),
      train_seconds=_number(training, "train_seconds"),
      latency_ms=latency, latency_source=source)


def sort_rows(rows, key="accuracy"):
  """Rows by accuracy (best first; ties by name) or by name.

  Raises:
    ValueError: `key` is not one of SORT_KEYS.
  """
  if key == "accuracy":
    return sorted(rows, key=lambda r: (-r.accuracy, r.name, r.path))
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
  rows = []
  for path in folders:
    try:
      rows.append(summarize_run(path))
    except ImgrecError as e:
      skipped.append((path, str(e)))
    except OSError as e:
      skipped.append((path, f"cannot read it: {e.strerror or e}"))
  return sort_rows(rows, sort), skipped


def format_value(value, spec):
  """`value` formatted with `spec`, or "-" when it is None (not recorded)."""
  return _MISSING if value is None else format(value, spec)


def _markdown_cell(value):
  return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header, rows):
  """A Markdown table of string cells (`|` escaped)."""
  lines = ["| " + " | ".join(map(_markdown_cell, header)) + " |",
           "|" + "|".join(" --- " for _ in header) + "|"]
  lines += ["| " + " | ".join(map(_markdown_cell, r)) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def csv_table(header, rows):
  """CSV text (a header row, then `rows`); None cells are empty."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(header)
  writer.writerows([["" if v is None else v for v in r] for r in rows])
  return out.getvalue()


MARKDOWN_HEADER = ("run", "data", "model", "accuracy %", "macro F1", "ECE",
                   "params", "train s", "latency ms")


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
  cells = [(r.name, r.data, r.model, f"{100 * r.accuracy:.2f}",
            format_value(r.macro_f1, ".4f"), format_value(r.ece, ".4f"),
            format_value(r.num_params, ","),
            format_value(r.train_seconds, ".1f"),
            format_latency(r.latency_ms, r.latency_source)) for r in rows]
  return markdown_table(MARKDOWN_HEADER, cells) + f"\n{LATENCY_NOTE}\n"


CSV_HEADER = tuple(f.name for f in dataclasses.fields(RunSummary))


def format_csv(rows):
  """The rows as CSV: one column per RunSummary field, full precision.

  Accuracy, macro F1 and ECE are fractions; a figure a run did not record
  is an empty cell.
  """
  return csv_table(CSV_HEADER, [dataclasses.astuple(r) for r in rows])
