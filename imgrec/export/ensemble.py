"""Makes one run folder out of several trained runs: their ensemble, ready to export.

    imgrec-export --ensemble=runs/a,runs/b,runs/c --model_dir=runs/abc

writes runs/abc/ as a run of its own (config.json, labels.txt, splits.json,
best.keras = `imgrec.models.ensemble.build_ensemble`, ensemble.json naming
the members and weights), so that the usual export (SavedModel, TFLite,
export_report.json) and `imgrec-evaluate` work on it unchanged.
"""

import logging
import os

from imgrec import fileio
from imgrec import tasks
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.evaluation import evaluate as evaluate_lib
from imgrec.models import ensemble as ensemble_lib
from imgrec.run_folder import ENSEMBLE_COMMAND
from imgrec.run_folder import RunFolder

logger = logging.getLogger("imgrec")


def _identity(path):
  """What names one folder by any spelling (links, `./`, a trailing `/`)."""
  try:
    st = os.stat(path)
    return st.st_dev, st.st_ino
  except OSError:
    return os.path.realpath(path)


def build_ensemble_run(member_dirs, model_dir, weights="equal"):
  """Writes the ensemble of `member_dirs` as the run `model_dir`.

  Args:
    member_dirs: model_dirs of finished imgrec-train runs with the same class
      names.
    model_dir: the ensemble's folder: new, or an earlier ensemble's.
    weights: "equal", or "val_accuracy" (each member's accuracy on its own
      validation split).

  Returns:
    (RunFolder, the ensemble Keras model).

  Raises:
    ImgrecError: fewer than two members, one folder named twice, a member
      that is not a finished run, different classes, or a model_dir that
      holds a trained run or files imgrec did not write.
  """
  if len(member_dirs) < 2:
    raise ImgrecError("--ensemble needs at least two model_dirs, "
                      f"comma-separated. Received: {','.join(member_dirs)}")
  run = RunFolder(model_dir)
  seen = {}
  for d in member_dirs:
    if _identity(d) == _identity(model_dir):
      raise ImgrecError(f"--model_dir={model_dir} is one of the members: "
                        "pass a new folder for the ensemble.")
    if _identity(d) in seen:
      raise ImgrecError(f"--ensemble names one folder twice ({seen[_identity(d)]}"
                        f" and {d}): pass each member once.")
    seen[_identity(d)] = d
  run.check_ours(ENSEMBLE_COMMAND)  # Before the members load.
  members = [evaluate_lib.Member.load(d) for d in member_dirs]
  class_names = members[0].class_names
  for m in members[1:]:
    if m.class_names != class_names:
      raise ImgrecError(
          f"{m.run.path} has other classes (or another class order) than "
          f"{members[0].run.path}: an ensemble's members must share them.")
  member_weights = evaluate_lib.ensemble_weights(members, weights)
  model = ensemble_lib.build_ensemble([m.model for m in members],
                                      member_weights)
  (height, width), channels = ensemble_lib.ensemble_input_spec(
      [m.model for m in members])
  # The config of the member that takes the largest images: its model and
  # preprocessing accept the ensemble's input size.
  source = max(members, key=lambda m: tasks.model_input_spec(m.model)[0])
  config = source.task.config.replace(
      model_dir=run.path, image_size=height if height == width
      else (height, width), channels=channels, export=False)
  splits = {}
  try:
    for name in ("train", "val", "test"):
      shared = evaluate_lib.shared_split(members, name)
      splits[name] = (evaluate_lib.to_split(shared, class_names) if shared
                      else folder_lib.Split([], []))
  except ImgrecError as e:
    logger.warning("%s The ensemble calibrates int8 on the first member's "
                   "training images and is not measured.", e)
    train = members[0].split_of("train")
    splits = {"train": evaluate_lib.to_split(train, class_names),
              "val": folder_lib.Split([], []),
              "test": folder_lib.Split([], [])}
  with run.start(ENSEMBLE_COMMAND):
    run.remove_export_report()  # It describes the previous ensemble.
    run.write_config(config)
    run.write_labels(class_names)
    root = members[0].run.read_splits_root()
    run.write_splits(root, class_names, splits)
    run.write_ensemble({
        "members": [m.run.path for m in members],
        "models": [m.task.config.model for m in members],
        "weights": member_weights, "weighting": weights})
    trained = [m.run.read_training() or {} for m in members]
    run.write_training({
        "train_seconds": sum(float(t.get("train_seconds", 0))
                             for t in trained),
        "epochs": None, "num_params": int(model.count_params())})
    with fileio.atomic_path(run.best_model_path) as tmp:
      model.save(tmp)
  return run, model
