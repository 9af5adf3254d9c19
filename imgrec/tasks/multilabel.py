"""Multi-label image classification: every label an image holds.

    imgrec-train --task=multilabel --labels_csv=labels.csv

A registered peer of image classification on the one trainer: the data is
a CSV of label sets (`imgrec.data.multilabel`: split by iterative
stratification when it has no split column), the model any registry model
with a sigmoid head, the loss binary cross-entropy or the asymmetric loss
(`--loss=asl`), and the best epoch the one with the highest precision-recall
AUC on the validation split. At the end each label gets the threshold that
maximizes its F1 on the validation split (`--threshold` sets one for all),
written to `thresholds.json`, and `report.json` holds the `"multilabel"`
section (`imgrec.metrics.multilabel.summary`) of the test split.
"""

import logging
import os

import numpy as np

from imgrec import fileio
from imgrec.data import decode
from imgrec.data import folder as folder_lib
from imgrec.data import multilabel as data_lib
from imgrec.data import scan
from imgrec.data import sources
from imgrec.errors import ImgrecError
from imgrec.metrics import multilabel as metrics
from imgrec.tasks import base
from imgrec.tasks import classification
from imgrec.tasks import registry

models = base.lazy_import("imgrec.models")
pipeline = base.lazy_import("imgrec.data.pipeline")

logger = logging.getLogger("imgrec")

# Built-in datasets of label sets (`imgrec.datasets`).
MULTILABEL_BUILTINS = ("shapes_multilabel",)


@registry.register_task("multilabel_classification", aliases=("multilabel",))
class MultiLabelTask(classification.ClassificationTask):
  """Builds the data, model, losses and report of a multi-label run.

  Args:
    spec: a RunSpec from `resolve`.
  """

  noun = "images"
  multilabel = True
  # Evaluation, export and prediction of label sets come next (issue 24).
  commands = frozenset()

  @classmethod
  def resolve(cls, config, *, check_files=True):
    if config.data_dir:
      raise ImgrecError(
          "--task=multilabel reads --labels_csv=FILE (columns path,labels "
          "and optionally split; labels joined by --label_delim), a TFDS "
          "dataset of label sets (--tfds), or the built-in "
          "shapes_multilabel; not --data_dir.")
    if (not (config.labels_csv or config.tfds) and
        config.dataset not in MULTILABEL_BUILTINS):
      # The single-label default ("shapes") means its multi-label twin.
      config = config.replace(dataset="shapes_multilabel")
    return super().resolve(config, check_files=check_files)

  def _labels_csv(self):
    """The run's labels CSV: --labels_csv, else the built-in dataset's."""
    if self.config.labels_csv:
      return os.path.abspath(self.config.labels_csv)
    from imgrec import datasets  # pylint: disable=g-import-not-at-top
    return datasets.load_builtin(self.config.dataset, seed=0)

  def config_to_record(self, folder):
    """config.json names the labels CSV the run read (a built-in one too)."""
    if self.config.tfds:
      return self.config
    return self.config.replace(labels_csv=self._labels_csv())

  # --- Data ------------------------------------------------------------------

  def build_folder(self, report_path=None):
    """Reads the label sets, checks every file (the data scan) and splits:
    the CSV's or the TFDS dataset's splits, the missing val and test splits
    carved from training by iterative stratification.

    Returns:
      An ImageFolder whose splits' labels are 0/1 rows, one per class.
    """
    rows, source = self._read_rows()
    keep, paths = self._scan(rows, source, report_path)
    targets = rows.targets[keep]
    names = self._carve(["train"] * len(keep) if rows.splits is None else
                        [rows.splits[i] for i in keep], targets,
                        rows.class_names, source)
    splits = {name: folder_lib.Split([], []) for name in ("train", "val",
                                                           "test")}
    for path, target, name in zip(paths, targets, names):
      splits[name].paths.append(path)
      splits[name].labels.append([int(v) for v in target])
    _check_training_labels(rows.class_names, splits["train"], source)
    root = source if os.path.isdir(source) else os.path.dirname(source)
    return folder_lib.ImageFolder(root, rows.class_names, splits,
                                  "tfds" if self.config.tfds else "csv")

  def _read_rows(self):
    """(MultiLabelRows, where they come from: the CSV or the TFDS export)."""
    config = self.config
    if config.tfds:
      found = sources.load_tfds(config.tfds, config.tfds_data_dir)
      return data_lib.rows_of_folder(found), found.root
    csv_path = self._labels_csv()
    return data_lib.read_multilabel_csv(
        csv_path, label_delim=config.label_delim,
        allow_outside=config.allow_outside), csv_path

  def _carve(self, names, targets, class_names, source):
    """`names` with the missing val/test splits carved from training."""
    config = self.config
    missing = {split: share for split, share in (
        ("val", config.val_split), ("test", config.test_split))
               if share > 0 and split not in names}
    if not missing:
      return names
    train = [i for i, name in enumerate(names) if name == "train"]
    data_lib.check_label_counts(class_names, targets[train],
                                missing.get("val", 0), missing.get("test", 0),
                                source)
    carved = data_lib.iterative_split(
        targets[train], {"train": 1 - sum(missing.values()), **missing},
        config.seed)
    names = list(names)
    for i, name in zip(train, carved):
      names[i] = name
    return names

  def _scan(self, rows, source, report_path):
    """(indices of the usable rows, the path each is read from); writes the
    data report and refuses too many broken files."""
    config = self.config
    results = scan.scan_files(
        rows.paths, max_image_pixels=config.max_image_pixels,
        prepared_dir=scan.default_prepared_dir(
            source if os.path.isdir(source) else os.path.dirname(source)),
        progress=False) if config.scan else None
    keep = [i for i in range(len(rows.paths))
            if results is None or results[i].ok]
    skipped = [{"path": r.path, "reason": r.reason, "detail": r.detail}
               for r in results or () if not r.ok] + rows.missing
    if report_path:
      fileio.write_json(report_path, {
          "kind": "multilabel", "class_names": rows.class_names,
          "totals": {"files": len(rows.paths) + len(rows.missing),
                     "usable": len(keep), "skipped": len(skipped)},
          "skipped": skipped}, ensure_ascii=False, indent=1)
    total = len(rows.paths) + len(rows.missing)
    if total and len(skipped) / total > config.max_bad_fraction:
      raise ImgrecError(
          f"{len(skipped)} of {total} files listed in {source} "
          "are unusable (broken, missing or not images), more than "
          f"--max_bad_fraction={config.max_bad_fraction}."
          + (f" Each one and why: {report_path}." if report_path else ""))
    paths = [rows.paths[i] if results is None else results[i].decode_path
             for i in keep]
    return np.array(keep, np.int64), paths

  def build_inputs(self, split, *, num_classes, training, cache=True,
                   input_context=None, pixels=None):
    """The tf.data pipeline of one split: (images, float32 label rows)."""
    del pixels  # The scan keeps no pixels for a CSV of label sets.
    spec = self.pipeline_spec(num_classes, training, cache, multi_hot=True)
    return pipeline.make_dataset(split, spec, input_context=input_context)

  def model_pixels(self, path):
    return pipeline.decode_and_resize(path, self.spec.image_size,
                                      self.spec.channels,
                                      plain=self.config.scan).numpy()

  def serving_example(self, path):
    return decode.read_file(path, 3, self.config.max_image_pixels,
                            self.spec.image_size)

  # --- Model -----------------------------------------------------------------

  def build_model(self, num_classes):
    return models.create_model(self.config.model, num_classes,
                               self.spec.input_shape, head="sigmoid",
                               **dict(self.spec.model_kwargs))

  def build_losses(self):
    import keras  # pylint: disable=g-import-not-at-top
    if self.config.loss == "asl":
      from imgrec.models.losses import AsymmetricLoss  # pylint: disable=g-import-not-at-top
      return AsymmetricLoss()
    return keras.losses.BinaryCrossentropy(
        label_smoothing=self.config.label_smoothing)

  def build_metrics(self, num_classes):
    import keras  # pylint: disable=g-import-not-at-top
    return [keras.metrics.AUC(curve="PR", multi_label=True,
                              num_labels=num_classes, name="pr_auc")]

  def monitor(self, folder):
    if len(folder.splits.get("val", ())):
      return ("val_pr_auc", "max")
    return ("pr_auc", "max")

  def class_weight(self, split, num_classes):
    del split, num_classes  # Class weights are for one label an image.
    return None

  def report_split(self, folder):
    del folder  # `finish` reports (the single-label report does not apply).
    return None

  @property
  def exports_after_training(self):
    return False  # Multi-label exports are not written yet.

  # --- End of training ---------------------------------------------------------

  def scores(self, model, split, num_classes):
    """Sigmoid scores [N, C] of a split, in file order."""
    if not len(split):
      return np.zeros((0, num_classes), np.float32)
    ds = self.build_inputs(split, num_classes=num_classes, training=False,
                           cache=False)
    return np.concatenate([np.asarray(model.predict_on_batch(x))
                           for x, _ in ds])

  def finish(self, run, model, folder):
    """Chooses the thresholds on the validation split, writes them, and
    reports the test split (the validation split when there is no test)."""
    names, count = folder.class_names, len(folder.class_names)
    val = folder.splits.get("val", folder_lib.Split([], []))
    if self.config.threshold is not None:
      thresholds, source = [self.config.threshold] * count, "--threshold"
    elif len(val):
      thresholds = metrics.best_f1_thresholds(
          val.labels, self.scores(model, val, count)).tolist()
      source = "validation F1"
    else:
      thresholds = [metrics.DEFAULT_THRESHOLD] * count
      source = "default (no validation split)"
    fileio.write_json(run.thresholds_path, {
        "class_names": names, "thresholds": thresholds, "source": source},
                      indent=2)
    split_name = "test" if len(folder.splits.get("test", ())) else "val"
    chosen = folder.splits.get(split_name, folder_lib.Split([], []))
    if not len(chosen):
      return {"thresholds": thresholds}
    summary = metrics.summary(np.array(chosen.labels),
                              self.scores(model, chosen, count), thresholds,
                              names)
    report = {"task": self.name, "split": split_name,
              "num_examples": len(chosen), "class_names": names,
              "threshold_source": source, "multilabel": summary}
    fileio.write_json(run.report_path(), report, indent=2)
    line = (f"{split_name} mAP: {summary['map'] or 0.0:.4f}, micro-F1: "
            f"{summary['micro_f1']:.4f}, macro-F1: "
            f"{summary['macro_f1'] or 0.0:.4f} ({len(chosen)} images, "
            f"thresholds: {source})")
    logger.info("%s", line)
    return {"thresholds": thresholds, "report": report, "summary": line}


def _check_training_labels(class_names, train, csv_path):
  """Refuses labels that no training image holds."""
  held = np.array(train.labels).reshape(-1, len(class_names)).sum(0)
  absent = [n for n, c in zip(class_names, held) if c == 0]
  if absent:
    raise ImgrecError(
        f"Labels CSV {csv_path}: label(s) {', '.join(map(repr, absent))} "
        "are on no training image. Every label needs training images: add "
        "train rows holding them, or remove the label.")
