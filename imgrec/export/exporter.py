"""Exports a trained run: SavedModel plus TFLite files, each measured.

`<run>/export/` receives `saved_model/`, `model.tflite` (float) and
`model_<variant>.tflite`, every TFLite file with its labels and input
description inside (standard TFLite metadata), and `export_report.json`:
every format's accuracy, agreement with the Keras model, size, latency and
throughput on the run's test split (`measure`).
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

logger = logging.getLogger("imgrec")


def _split(run, name):
  try:
    return folder_lib.Split(*run.read_split(name))
  except ImgrecError:
    return folder_lib.Split([], [])


def _int8(converter, task, model, run, class_names, *, calibration_images,
          int8_io, int8_granularity, max_int8_drop, path):
  """Calibrates, checks and writes the int8 file; returns its report extras."""
  train = _split(run, "train")
  if not len(train):
    raise ImgrecError(f"int8 export calibrates on the training split, and "
                      f"{run.splits_path} lists no training images.")
  picked = int8_lib.stratified_sample(train.labels, calibration_images,
                                      len(class_names), task.config.seed)
  calibration = converter.calibrate(
      [task.model_pixels(train.paths[i]) for i in picked])
  check_name = "val"
  check_split = _split(run, "val")
  if not len(check_split):  # No validation split: hold int8 to the test one.
    check_name, check_split = "test", _split(run, "test")
  if not len(check_split):
    check_name, check_split = "train", train
  check = int8_lib.CheckSet.build(check_name, check_split, task.model_pixels,
                                  model, len(class_names), task.config.seed)
  flatbuffer, kept, granularity, steps = int8_lib.quantize_within(
      calibration, check, max_drop=max_int8_drop, io=int8_io,
      granularity=int8_granularity)
  float_ops = tflite_lib.check_integer(flatbuffer, path, keep_float=kept)
  tflite_lib.export_tflite(
      flatbuffer, path, class_names=class_names,
      image_size=task.spec.image_size, name=task.config.model, description=_description(task, "int8"))
  return {"io": int8_io, "granularity": granularity,
          "calibration_images": len(picked),
          "kept_float": kept,
          "float_ops": [f"{op} {name}" for op, name in float_ops],
          "check": {"split": check_name, "num_examples": len(check.labels),
                    "keras_accuracy": check.keras_accuracy,
                    "max_drop_points": max_int8_drop, "steps": steps}}


def _description(task, variant):
  return (f"imgrec {task.config.model} image classifier ({variant}): raw "
          f"pixels 0..255 in, class probabilities out.")


def export_run(run, *, model=None, top_k=5, quantizations=("float",),
               calibration_images=200, int8_io="float",
               int8_granularity="auto", max_int8_drop=DEFAULT_MAX_INT8_DROP,
               measure=True,
               latency=True, stop=None):
  """Writes `<run>/export/`: SavedModel, TFLite files and their report.

  Args:
    run: a RunFolder of a finished imgrec-train run.
    model: the Keras model; loaded from the run's best model when None.
    top_k: top classes in the SavedModel outputs.
    quantizations: TFLite variants to write; "float" is `model.tflite`, the
      others `model_<variant>.tflite`.
    calibration_images: training images (class-stratified) that calibrate
      "int8"; at least one per class.
    int8_io: "float" or "uint8" input and output of the int8 file.
    int8_granularity: weight scales of the int8 file: "per_tensor",
      "per_channel", or "auto" (per tensor when it is within
      `max_int8_drop`: a smaller file).
    max_int8_drop: accuracy points int8 may lose against Keras on the
      validation split before layers are kept in float.
    measure: measure every format on the test split into
      `export_report.json`.
    latency: time single images on one thread (in a child process).
    stop: an `interrupt.BetweenSteps`, checked after each file.

  The old export_report.json is deleted before the first file changes and
  the new one written after the last, so a report never describes files
  that are not the ones on disk (a kill in between leaves none).

  Returns:
    {"saved_model": path, "tflite": {variant: path}, "report": dict or None,
     "report_path": path or None}.

  Raises:
    interrupt.ExportInterrupted: `stop` saw SIGTERM or SIGINT.
  """
  stop = stop or interrupt.BetweenSteps(signals=())
  if model is None:
    model = tasks.load_model(run.require_best_model())
  shape = model.input_shape
  if len(shape[0] if isinstance(shape, list) else shape) == 5:  # Clips.
    return _export_clip_run(run, tasks.for_run(run), model, top_k=top_k,
                            quantizations=quantizations, measure=measure,
                            stop=stop)
  if "int8" in quantizations:  # Before any file is written.
    tflite_lib.check_int8_supported(model)
  class_names = run.read_labels()
  task = tasks.for_run(run)
  max_pixels = task.config.max_image_pixels
  run.remove_export_report()  # Written anew last, once every file is.
  out = {"saved_model": saved_model_lib.export_saved_model(
      model, class_names, run.saved_model_dir, top_k=top_k,
      max_image_pixels=max_pixels), "tflite": {}, "report": None,
         "report_path": None}
  extras = {}
  with tflite_lib.Converter(model, run.export_dir) as converter:
    for variant in quantizations:
      stop.check()
      tflite_lib.check_variant(variant)
      path = run.tflite_path(variant)
      if variant == "int8":
        extras[variant] = _int8(
            converter, task, model, run, class_names,
            calibration_images=calibration_images, int8_io=int8_io,
            int8_granularity=int8_granularity, max_int8_drop=max_int8_drop,
            path=path)
      else:
        tflite_lib.export_tflite(
            converter.convert(variant), path, class_names=class_names,
            image_size=task.spec.image_size, name=task.config.model, description=_description(task, variant))
      out["tflite"][variant] = path
  write_labels_file(os.path.join(run.export_dir, LABELS_NAME), class_names)

  def report(test, formats):
    made = measure_lib.measure(task, model, class_names, test, formats,
                               work_dir=run.export_dir,
                               max_image_pixels=max_pixels, latency=latency)
    for entry in made["formats"]:
      entry.update(extras.get(entry["name"], {}))
    return made

  return _measure(run, out, measure, report, stop)


def _measure(run, out, measure, report, stop):
  """Adds the report of `out`'s formats on the test split, if asked."""
  test = _split(run, "test")
  stop.check()
  if measure and len(test):
    formats = [("saved_model", out["saved_model"])] + list(
        out["tflite"].items())
    out["report"] = report(test, formats)
    stop.check()  # A report only of a complete export.
    out["report_path"] = run.export_report_path
    fileio.write_json(out["report_path"], out["report"], indent=2)
  elif measure:
    logger.info("no test split: the exports were not measured")
  return out


def _export_clip_run(run, task, model, *, top_k, quantizations, measure,
                     stop):
  """`export_run` for a clip classifier (see `imgrec.export.clip`)."""
  from imgrec.export import clip  # pylint: disable=g-import-not-at-top
  for variant in quantizations:  # Before any file is written.
    clip.check_variant(variant)
  class_names = run.read_labels()
  run.remove_export_report()
  out = {"saved_model": clip.export_saved_model(
      model, class_names, run.saved_model_dir, top_k=top_k), "tflite": {},
         "report": None, "report_path": None}
  for variant in quantizations:
    stop.check()
    path = run.tflite_path(variant)
    flatbuffer = clip.convert_tflite(model, variant, run.export_dir)
    with fileio.atomic_write(path, "wb") as f:
      f.write(flatbuffer)
    out["tflite"][variant] = path
  write_labels_file(os.path.join(run.export_dir, LABELS_NAME), class_names)
  return _measure(run, out, measure, lambda test, formats: clip.measure(
      task, model, class_names, test, formats), stop)


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
