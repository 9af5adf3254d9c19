"""Evaluates a trained model_dir on its test split or on another folder."""

import json
import os

from imgrec.config import TrainConfig
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.evaluation import report as report_lib


def _split_from_manifest(model_dir, split):
  with open(os.path.join(model_dir, "splits.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  s = manifest["splits"][split]
  return folder_lib.Split(s["paths"], s["labels"])


def _split_from_folder(data_dir, split, class_names, config):
  """The `split` of `data_dir` if it has split folders, else all its images."""
  from imgrec.data import scan  # pylint: disable=g-import-not-at-top
  found = folder_lib.find_images(data_dir, min_classes=1, carve=False)
  if config.scan:
    found, _ = scan.scan_folder(
        found, max_image_pixels=config.max_image_pixels, max_bad_fraction=1.0,
        prepared_dir=scan.default_prepared_dir(found.root),
        channels=config.channels)
  if found.layout == "splits" and len(found.splits.get(split, [])):
    chosen = found.splits[split]
  else:
    chosen = folder_lib.Split(
        [p for s in found.splits.values() for p in s.paths],
        [l for s in found.splits.values() for l in s.labels])
  unknown = sorted(set(found.class_names) - set(class_names))
  if unknown:
    raise ImgrecError(f"{data_dir} has classes the model was not trained on: "
                      f"{', '.join(unknown)}.")
  index = {c: i for i, c in enumerate(class_names)}
  return folder_lib.Split(
      chosen.paths, [index[found.class_names[l]] for l in chosen.labels])


def evaluate_model_dir(model_dir, data_dir=None, split="test", batch_size=None,
                       write=True):
  """Evaluates `<model_dir>/best.keras` and writes `<model_dir>/report.json`.

  Args:
    model_dir: an imgrec-train output folder.
    data_dir: evaluate on this folder instead: its `split` folder if it has
      split folders, else all of its images. Default: the run's own `split`.
    split: "test", "val" or "train".
    batch_size: default: the run's batch size.
    write: write report.json/report.txt into model_dir.

  Returns:
    The report dict (see `report.classification_report`).
  """
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  if split not in folder_lib.SPLITS:
    raise ImgrecError(f"Unknown split. Expected one of {folder_lib.SPLITS}. "
                      f"Received: split={split!r}")
  config = TrainConfig.load(os.path.join(model_dir, "config.json"))
  if batch_size:
    config.batch_size = batch_size
  class_names = folder_lib.read_labels(os.path.join(model_dir, "labels.txt"))
  same_data = data_dir is None or (
      config.data_dir and os.path.abspath(data_dir) == os.path.abspath(
          config.data_dir))
  if same_data and os.path.isfile(os.path.join(model_dir, "splits.json")):
    chosen = _split_from_manifest(model_dir, split)
  else:
    chosen = _split_from_folder(data_dir or config.data_dir, split,
                                class_names, config)
  if not len(chosen):
    raise ImgrecError(f"No images to evaluate in the {split} split of "
                      f"{data_dir or config.data_dir}.")
  model = exporter.load_trained_model(model_dir)
  probabilities = trainer.predict_split(model, config, chosen, len(class_names))
  report = report_lib.classification_report(chosen.labels, probabilities,
                                            class_names, k=config.top_k)
  if write:
    report_lib.write_report(report, model_dir)
  return report
