"""Exports a trained run: SavedModel plus TFLite files, beside the run."""

from imgrec import tasks
from imgrec.config import ExportConfig
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.export import saved_model as saved_model_lib
from imgrec.export import tflite as tflite_lib
from imgrec.run_folder import RunFolder


def export_run(run, *, model=None, top_k=5, quantizations=("float",),
               calibration_images=200):
  """Writes `<run>/export/saved_model` and `.../model[_<variant>].tflite`.

  Args:
    run: a RunFolder of a finished imgrec-train run.
    model: the Keras model; loaded from the run's best model when None.
    top_k: top classes in the SavedModel outputs.
    quantizations: TFLite variants to write; "float" is `model.tflite`, the
      others `model_<variant>.tflite`.
    calibration_images: training images that calibrate "int8".

  Returns:
    {"saved_model": path, "tflite": {variant: path}}.
  """
  if model is None:
    model = tasks.load_model(run.require_best_model())
  class_names = run.read_labels()
  task = tasks.ImageClassificationTask.from_run(run)
  representative = None
  if "int8" in quantizations:
    train = folder_lib.Split(*run.read_split("train"))
    representative = task.calibration_images(train, calibration_images)
  out = {"saved_model": saved_model_lib.export_saved_model(
      model, class_names, run.saved_model_dir, top_k=top_k,
      max_image_pixels=task.config.max_image_pixels), "tflite": {}}
  for variant in quantizations:
    out["tflite"][variant] = tflite_lib.export_tflite(
        model, run.tflite_path(variant), class_names=class_names,
        quantization=variant, representative_images=representative)
  return out


def export(config):
  """Exports a run as `imgrec-export` does.

  Args:
    config: an ExportConfig.

  Returns:
    {"saved_model": path, "tflite": {variant: path}}.

  Raises:
    ImgrecError: bad config or not a finished run.
  """
  if not isinstance(config, ExportConfig):
    raise ImgrecError("export() takes an ExportConfig. Received: "
                      f"{type(config).__name__}")
  config.validate()
  run = RunFolder(config.model_dir)
  run.require_best_model()
  with run.lock("imgrec-export"):
    run.clean_stale_temporaries()
    return export_run(run, top_k=config.top_k, quantizations=config.tflite,
                      calibration_images=config.calibration_images)
