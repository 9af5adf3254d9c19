"""Exports a trained run of any task: SavedModel plus TFLite files, each measured.

`<run>/export/` receives `saved_model/` (`saved_model.write_saved_model`,
the signatures the run's task gives), `model.tflite` (float) and
`model_<variant>.tflite` (`tflite`), every TFLite file with its labels and
input description inside (standard TFLite metadata), and
`export_report.json`: every format's accuracy, agreement with the Keras
model, size, latency and throughput on the run's test split (`measure`).
"""

import logging
import os

from imgrec import fileio
from imgrec import tasks
from imgrec.config import DEFAULT_MAX_INT8_DROP
from imgrec.config import ExportConfig
from imgrec.config import split_paths
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.export import int8 as int8_lib
from imgrec.export import interrupt
from imgrec.export import measure as measure_lib
from imgrec.export import saved_model as saved_model_lib
from imgrec.export import tflite as tflite_lib
from imgrec.run_folder import LABELS_NAME
from imgrec.run_folder import RunFolder
from imgrec.run_folder import write_labels_file
from imgrec.tasks import open_set

logger = logging.getLogger("imgrec")


def _split(run, name):
  try:
    return folder_lib.Split(*run.read_split(name))
  except ImgrecError:
    return folder_lib.Split([], [])


def _thresholds_file(run, class_names, thresholds):
  """{name: content} of the run's thresholds file, for the SavedModel's
  folder (`Classifier` finds it there); empty without thresholds."""
  if thresholds is None:
    return {}
  return {os.path.basename(run.thresholds_path): {
      "class_names": list(class_names), "thresholds": thresholds}}


def _int8(converter, task, model, run, class_names, *, calibration_images,
          int8_io, int8_granularity, max_int8_drop, path):
  """Calibrates and checks the int8 model; returns (bytes, report extras)."""
  train = _split(run, "train")
  if not len(train):
    raise ImgrecError(f"int8 export calibrates on the training split, and "
                      f"{run.splits_path} lists no training images.")
  picked = int8_lib.stratified_rows(
      task.class_members(train.labels, len(class_names)), calibration_images,
      task.config.seed)
  calibration = converter.calibrate(
      [task.model_pixels(train.paths[i]) for i in picked])
  check_name = "val"
  check_split = _split(run, "val")
  if not len(check_split):  # No validation split: hold int8 to the test one.
    check_name, check_split = "test", _split(run, "test")
  if not len(check_split):
    check_name, check_split = "train", train
  check = int8_lib.CheckSet.build(
      check_name, check_split, task.model_pixels, model, len(class_names),
      task.config.seed, quality=task.export_quality,
      members=task.class_members(check_split.labels, len(class_names)),
      outputs=lambda raw: task.class_scores(raw, len(class_names)))
  flatbuffer, kept, granularity, steps = int8_lib.quantize_within(
      calibration, check, max_drop=max_int8_drop, io=int8_io,
      granularity=int8_granularity)
  float_ops = tflite_lib.check_integer(flatbuffer, path, keep_float=kept)
  return flatbuffer, {
      "io": int8_io, "granularity": granularity,
      "calibration_images": len(picked), "kept_float": kept,
      "float_ops": [f"{op} {name}" for op, name in float_ops],
      "check": {"split": check_name, "num_examples": len(check.labels),
                "metric": check.metric,
                f"keras_{check.metric}": check.keras_accuracy,
                "max_drop_points": max_int8_drop, "steps": steps}}


def export_run(run, *, model=None, top_k=5, quantizations=("float",),
               calibration_images=200, int8_io="float",
               int8_granularity="auto", max_int8_drop=DEFAULT_MAX_INT8_DROP,
               measure=True, latency=True, stop=None):
  """Writes `<run>/export/`: SavedModel, TFLite files and their report.

  The run's task (`tasks.for_run`) gives the SavedModel's signatures, the
  TFLite model, the files' descriptions, which variants its models can
  have, and how to read an example for int8 and the report.

  Args:
    run: a RunFolder of a finished imgrec-train run.
    model: the Keras model; loaded from the run's best model when None.
    top_k: top classes in the SavedModel outputs.
    quantizations: TFLite variants to write; "float" is `model.tflite`, the
      others `model_<variant>.tflite`.
    calibration_images: training examples (class-stratified) that calibrate
      "int8"; at least one per class.
    int8_io: "float" or "uint8" input and output of the int8 file.
    int8_granularity: weight scales of the int8 file: "per_tensor",
      "per_channel", or "auto" (per tensor when it is within
      `max_int8_drop`: a smaller file).
    max_int8_drop: accuracy points int8 may lose against Keras on the
      validation split before layers are kept in float.
    measure: measure every format on the test split into
      `export_report.json`.
    latency: time single examples on one thread (in a child process).
    stop: an `interrupt.BetweenSteps`, checked after each file.

  The old export_report.json is deleted before the first file changes and
  the new one written after the last, so a report never describes files
  that are not the ones on disk (a kill in between leaves none).

  Returns:
    {"saved_model": path, "tflite": {variant: path}, "report": dict or None,
     "report_path": path or None}.

  Raises:
    ImgrecError: a variant the model cannot have (before any file).
    interrupt.ExportInterrupted: `stop` saw SIGTERM or SIGINT.
  """
  stop = stop or interrupt.BetweenSteps(signals=())
  for variant in quantizations:  # Before any file is read or written.
    tflite_lib.check_variant(variant)
  given = model is not None
  if not given:  # The run's task may not export: say so before loading.
    tasks.get_task(run.read_task()).check_command("export")
    model = tasks.load_model(run.require_best_model())
  if "int8" in quantizations:
    tflite_lib.check_int8_supported(model)
  if given:  # A variant this model cannot have is named first.
    tasks.get_task(run.read_task()).check_command("export")
  task = tasks.for_run(run)
  for variant in quantizations:
    task.check_quantization(variant)
  class_names = run.read_labels()
  thresholds = task.thresholds(class_names)
  spec = tasks.model_input(model)
  max_pixels = task.config.max_image_pixels
  run.remove_export_report()  # Written anew last, once every file is.
  served = task.serving_model(model)
  found = task.open_set()
  packed = None if found is None else {
      "score": found.score, "threshold": found.threshold,
      "unknown_label": open_set.unknown_label(class_names)}
  out = {"saved_model": saved_model_lib.write_saved_model(
      served, run.saved_model_dir, task.serving_endpoints(
          served, class_names, top_k=top_k, max_image_pixels=max_pixels),
      input_spec=spec.to_json(), class_names=class_names,
      json_files={**_thresholds_file(run, class_names, thresholds),
                  **({} if packed is None else {
                      os.path.basename(run.open_set_path): packed})}),
         "tflite": {}, "report": None, "report_path": None}
  extras = {}
  with tflite_lib.Converter(task.tflite_model(model),
                            run.export_dir) as converter:
    for variant in quantizations:
      stop.check()
      path = run.tflite_path(variant)
      if variant == "int8":
        flatbuffer, extras[variant] = _int8(
            converter, task, model, run, class_names,
            calibration_images=calibration_images, int8_io=int8_io,
            int8_granularity=int8_granularity, max_int8_drop=max_int8_drop,
            path=path)
      else:
        flatbuffer = converter.convert(variant)
      out["tflite"][variant] = tflite_lib.write_tflite(
          flatbuffer, path, model_input=converter.input,
          name=task.config.model,
          description=task.describe(variant),
          class_names=task.tflite_labels(class_names),
          output=task.scores_metadata(), thresholds=thresholds,
          open_set=packed)
  write_labels_file(os.path.join(run.export_dir, LABELS_NAME), class_names)
  test = _split(run, "test")
  stop.check()
  if measure and len(test):
    formats = [("saved_model", out["saved_model"])] + list(
        out["tflite"].items())
    out["report"] = measure_lib.measure(
        task, model, class_names, test, formats, work_dir=run.export_dir,
        latency=latency, extras=extras)
    stop.check()  # A report only of a complete export.
    out["report_path"] = run.export_report_path
    fileio.write_json(out["report_path"], out["report"], indent=2)
  elif measure:
    logger.info("no test split: the exports were not measured")
  return out


def export(config):
  """Exports a run as `imgrec-export` does.

  Args:
    config: an ExportConfig, or a dict of its fields.

  Returns:
    What `export_run` returns.

  SIGTERM and SIGINT stop it after the file being written (see
  `interrupt`).

  Raises:
    ImgrecError: bad config or not a finished run.
    interrupt.ExportInterrupted: stopped by SIGTERM or SIGINT.
  """
  config = ExportConfig.coerce(config, "export").validate()
  with interrupt.BetweenSteps() as stop:
    model = None
    if config.ensemble:
      from imgrec.export import ensemble  # pylint: disable=g-import-not-at-top
      run, model = ensemble.build_ensemble_run(
          split_paths(config.ensemble), config.model_dir,
          config.ensemble_weights)
      stop.check()
    run = RunFolder(config.model_dir)
    run.require_best_model()
    with run.lock("imgrec-export"):
      run.clean_stale_temporaries()
      return export_run(run, model=model, top_k=config.top_k,
                        quantizations=config.tflite,
                        calibration_images=config.calibration_images,
                        int8_io=config.int8_io,
                        int8_granularity=config.int8_granularity,
                        max_int8_drop=config.max_int8_drop,
                        measure=config.measure, stop=stop)
