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

import dataclasses
import json
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
from imgrec.tasks import data as task_data
from imgrec.tasks import image_classification
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
  commands = frozenset({"evaluate", "export", "predict"})
  # A sigmoid a class learns its rarer positives later than a softmax: 20
  # epochs left the built-in set's mAP at 0.941 on one seed of three, 30
  # reach 0.996-0.999 on all (experiments/multilabel_benchmark.py).
  recipe_defaults = {"epochs": 30}

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
    rows = exclude_rows(rows, self.config)
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
    return task_data.check_leakage(
        folder_lib.ImageFolder(root, rows.class_names, splits,
                               "tfds" if self.config.tfds else "csv"),
        self.config, report_path)

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
    return carve(names, targets, class_names, source, self.config)

  def build_eval_split(self, data_dir, split, class_names):
    """The images of another labels CSV, their label sets in this run's
    label order (`imgrec-evaluate --data_dir=other.csv`).

    The CSV's `split` rows if it has a split column holding that split,
    else all of its rows. Labels are matched by name; an image holding a
    label the model does not know is left out (its set cannot be judged)
    and counted under that label; broken files are skipped.

    Returns:
      (folder.Split of 0/1 rows, {label the model does not know: images}).

    Raises:
      ImgrecError: `data_dir` is not a labels CSV, or the CSV is bad.
    """
    if not os.path.isfile(data_dir):
      raise ImgrecError(
          f"--data_dir={data_dir}: a multi-label run is evaluated on a labels "
          "CSV (columns path,labels[,split], labels joined by "
          f"{self.config.label_delim!r}), not a folder.")
    rows = data_lib.read_multilabel_csv(
        data_dir, label_delim=self.config.label_delim,
        allow_outside=self.config.allow_outside)
    chosen = range(len(rows.paths))
    if rows.splits is not None and split in rows.splits:
      chosen = [i for i in chosen if rows.splits[i] == split]
    index = {c: i for i, c in enumerate(class_names)}
    keep, unknown = [], {}
    for i in chosen:
      held = [rows.class_names[j] for j in np.flatnonzero(rows.targets[i])]
      strangers = [name for name in held if name not in index]
      for name in strangers:
        unknown[name] = unknown.get(name, 0) + 1
      if not strangers:
        keep.append(i)
    usable, paths = self._scan(data_lib.MultiLabelRows(
        rows.class_names, [rows.paths[i] for i in keep],
        rows.targets[keep], None, rows.missing), data_dir, None,
                               max_bad_fraction=1.0)
    if len(usable) < len(keep):
      logger.warning("%s: skipped %d of its %d images that cannot be read "
                     "(broken, missing or not images)", data_dir,
                     len(keep) - len(usable), len(keep))
    labels = []
    for i in np.asarray(keep, np.int64)[usable]:
      row = [0] * len(class_names)
      for j in np.flatnonzero(rows.targets[i]):
        row[index[rows.class_names[j]]] = 1
      labels.append(row)
    return folder_lib.Split(paths, labels), unknown

  def _scan(self, rows, source, report_path, max_bad_fraction=None):
    """(indices of the usable rows, the path each is read from); writes the
    data report and refuses more broken files than `max_bad_fraction`
    (default: the run's --max_bad_fraction)."""
    config = self.config
    if max_bad_fraction is None:
      max_bad_fraction = config.max_bad_fraction
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
    if total and len(skipped) / total > max_bad_fraction:
      raise ImgrecError(
          f"{len(skipped)} of {total} files listed in {source} "
          "are unusable (broken, missing or not images), more than "
          f"--max_bad_fraction={max_bad_fraction}."
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

  # --- End of training ---------------------------------------------------------

  def predict_views(self, model, split, num_classes, tta=(), progress=None):
    """Sigmoid scores [V, N, C] of a split under test-time augmentation,
    view 0 the plain image (the views of an image run's
    `ImageClassificationTask.predict_views`)."""
    if not len(split):
      return np.zeros((1, 0, num_classes), np.float32)
    return image_classification.ImageClassificationTask.predict_views(
        self, model, split, num_classes, tta, progress)

  def scores(self, model, split, num_classes):
    """Sigmoid scores [N, C] of a split, in file order."""
    return self.predict_views(model, split, num_classes)[0]

  @staticmethod
  def read_thresholds(run, class_names):
    """(thresholds in `class_names` order, how they were chosen) from the
    run's thresholds.json.

    Raises:
      ImgrecError: the file is missing or damaged, or names other classes.
    """
    path = run.thresholds_path
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
      given = dict(zip(data["class_names"], data["thresholds"]))
      thresholds = [float(given[name]) for name in class_names]
    except FileNotFoundError:
      raise ImgrecError(f"No thresholds at {path}: the run's training did "
                        "not finish (imgrec-train writes it at the end)."
                        ) from None
    except (OSError, ValueError, TypeError, KeyError) as e:
      raise ImgrecError(f"{path} is damaged or names other labels than "
                        f"the run's ({type(e).__name__}: {e}).") from None
    bad = [f"{name}: {value}" for name, value in zip(class_names, thresholds)
           if not 0.0 <= value <= 1.0]  # NaN fails too.
    if bad:
      raise ImgrecError(f"{path} is damaged: thresholds must be numbers in "
                        f"[0, 1] (a sigmoid score); it holds "
                        f"{', '.join(bad[:5])}.")
    return thresholds, str(data.get("source", "thresholds.json"))

  @classmethod
  def label_set_report(cls, split_name, targets, scores, thresholds,
                       class_names, source):
    """report.json of label sets, as training's end and imgrec-evaluate
    write it.

    Args:
      split_name: the split's name in the report.
      targets: [N, C] 0/1.
      scores: [N, C] sigmoid scores.
      thresholds: [C] (a label is predicted at score >= its threshold).
      class_names: C names.
      source: how the thresholds were chosen.

    Returns:
      {"task", "split", "num_examples", "class_names", "threshold_source",
      "multilabel" (`imgrec.metrics.multilabel.summary`), "pr_curves"
      ({name: {"recall", "precision"}} of the worst classes by AP, at most
      PR_CURVE_CLASSES), "label_cooccurrence" ([C, C] images holding label
      i (row) on which label j (column) is predicted; past
      COOCCURRENCE_MAX_LABELS labels, of the labels most present, named by
      "label_cooccurrence_labels")}.
    """
    targets = np.asarray(targets, np.int64).reshape(-1, len(class_names))
    scores = np.asarray(scores, np.float64).reshape(targets.shape)
    summary = metrics.summary(targets, scores, thresholds, class_names)
    predicted = scores >= np.asarray(thresholds, np.float64)[None, :]
    return {"task": cls.name, "split": split_name,
            "num_examples": int(len(targets)),
            "class_names": list(class_names), "threshold_source": source,
            "multilabel": summary,
            "pr_curves": pr_curves(targets, scores, class_names,
                                   summary["per_class"]),
            **cooccurrence(targets, predicted, class_names)}

  def summary_line(self, report):
    """The headline figures of a report on label sets."""
    ml = report["multilabel"]
    return (f"{report['data']['split']} mAP: {ml['map'] or 0.0:.4f}, "
            f"micro-F1: {ml['micro_f1']:.4f}, macro-F1: "
            f"{ml['macro_f1'] or 0.0:.4f} ({report['num_examples']} images, "
            f"thresholds: {report['threshold_source']})")

  def finish(self, run, model, folder):
    """Chooses the thresholds on the validation split and writes them; the
    trainer then reports `report_split` (the test split, else validation)
    with them, as imgrec-evaluate does."""
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
    return {"thresholds": thresholds}

  # --- Serving -------------------------------------------------------------------

  def thresholds(self, class_names):
    """The run's thresholds.json, in `class_names` order (its run folder's
    when the task was made `from_run`, else the config's model_dir)."""
    from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
    run = getattr(self, "run", None) or RunFolder(self.config.model_dir)
    return self.read_thresholds(run, class_names)[0]

  def class_members(self, labels, num_classes):
    return np.asarray(labels, bool).reshape(-1, num_classes)

  def export_quality(self, labels, scores):
    """("map", mean average precision over the labels present)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores)
    aps = [metrics.average_precision(labels[:, c], scores[:, c])
           for c in range(labels.shape[1]) if labels[:, c].any()]
    return "map", float(np.mean(aps)) if aps else 0.0

  def serving_endpoints(self, model, class_names, *, top_k,
                        max_image_pixels):
    """The image task's signatures (uint8 `images` of any size, encoded
    `image_bytes`; resized and decoded in the graph), deciding each label.

    Both return:
      scores: float32 [N, C], each label's sigmoid score.
      above: bool [N, C], score >= the label's threshold (thresholds.json).
      labels: string [N, C], the labels above their thresholds, best score
        first, then "" (a dense tensor: every row is C wide).
      num_labels: int32 [N], how many labels are above their thresholds.
    """
    decide = label_sets(class_names, self.thresholds(class_names))
    endpoints = image_classification.ImageClassificationTask.serving_endpoints(
        self, model, class_names, top_k=1, max_image_pixels=max_image_pixels)

    def deciding(fn):
      return lambda inputs: decide(fn(inputs)["probabilities"])

    return [(name, deciding(fn), signature)
            for name, fn, signature in endpoints]

  def describe(self, variant):
    return (f"imgrec {self.config.model} multi-label image classifier "
            f"({variant}): raw pixels 0..255 in, a sigmoid score per label "
            "out; a label is present when its score reaches its threshold "
            "(the run's, packed beside the labels).")

  def scores_metadata(self):
    return ("scores", "Sigmoid score of each label, independent of the "
            "others (not softmax probabilities): the image holds every label "
            "whose score reaches its threshold (the thresholds file packed "
            "beside the labels).")


# Precision-recall curves kept in a report (the classes of lowest AP) and
# points kept of each curve.
PR_CURVE_CLASSES = 30
_PR_CURVE_POINTS = 200


def exclude_rows(rows, config):
  """MultiLabelRows less the files `config.exclude` lists (if any)."""
  if not getattr(config, "exclude", None):
    return rows
  listed = folder_lib.read_exclude(config.exclude)
  keep = [i for i, path in enumerate(rows.paths)
          if os.path.realpath(path) not in listed]
  task_data.say_excluded(config, listed, len(rows.paths) - len(keep))
  return dataclasses.replace(
      rows, paths=[rows.paths[i] for i in keep], targets=rows.targets[keep],
      splits=None if rows.splits is None else [rows.splits[i] for i in keep])


def carve(names, targets, class_names, source, config):
  """Each image's split (`names`: "train", "val" or "test" each) with the
  missing val/test splits (`config.val_split`, `config.test_split`) carved
  from training by iterative stratification (`config.seed`)."""
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


def pr_curves(targets, scores, class_names, per_class,
              max_classes=PR_CURVE_CLASSES):
  """{name: {"recall", "precision"}} of the `max_classes` classes of lowest
  AP (those with a positive image), worst first: one point at each distinct
  score from the highest down (`score >= it` predicts the class), thinned
  to at most _PR_CURVE_POINTS."""
  aps = [(per_class[n]["ap"], c, n) for c, n in enumerate(class_names)
         if per_class[n]["ap"] is not None]
  out = {}
  for _, c, name in sorted(aps)[:max_classes]:
    y, s = targets[:, c].astype(bool), scores[:, c]
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # Ends of ties.
    tp = np.cumsum(y)[ends]
    keep = np.unique(np.linspace(0, len(ends) - 1, _PR_CURVE_POINTS
                                 ).round().astype(int))
    out[name] = {"recall": np.round(tp[keep] / y.sum(), 5).tolist(),
                 "precision": np.round(tp[keep] / (ends[keep] + 1), 5
                                       ).tolist()}
  return out


# Past this many labels report.json keeps the co-occurrence counts of the
# labels most present (held or predicted) only: [C, C] grows as C^2 (10,000
# labels would be 900 MB of JSON).
COOCCURRENCE_MAX_LABELS = 200


def cooccurrence(targets, predicted, class_names):
  """{"label_cooccurrence": [K, K] images holding label i (row) on which
  label j (column) is predicted}, with "label_cooccurrence_labels" naming
  the K labels when they are not all `class_names`."""
  targets = np.asarray(targets, np.int64)
  predicted = np.asarray(predicted, np.int64)
  if len(class_names) <= COOCCURRENCE_MAX_LABELS:
    return {"label_cooccurrence": (targets.T @ predicted).tolist()}
  weight = targets.sum(axis=0) + predicted.sum(axis=0)
  keep = np.sort(np.argsort(-weight, kind="stable")[:COOCCURRENCE_MAX_LABELS])
  return {"label_cooccurrence": (targets[:, keep].T @ predicted[:, keep]
                                 ).tolist(),
          "label_cooccurrence_labels": [class_names[i] for i in keep]}


def label_sets(class_names, thresholds):
  """scores [N, C] -> the multi-label serving outputs (TensorFlow ops; see
  `MultiLabelTask.serving_endpoints`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names = tf.constant(list(class_names), tf.string)
  limits = tf.constant(thresholds, tf.float32)
  count = len(class_names)

  def outputs(scores):
    scores = tf.cast(scores, tf.float32)
    above = scores >= limits
    ranked = tf.math.top_k(tf.where(above, scores, -1.0), k=count).indices
    kept = tf.gather(above, ranked, batch_dims=1)
    return {"scores": scores, "above": above,
            "labels": tf.where(kept, tf.gather(names, ranked), ""),
            "num_labels": tf.reduce_sum(tf.cast(above, tf.int32), 1)}

  return outputs


def _check_training_labels(class_names, train, csv_path):
  """Refuses labels that no training image holds."""
  held = np.array(train.labels).reshape(-1, len(class_names)).sum(0)
  absent = [n for n, c in zip(class_names, held) if c == 0]
  if absent:
    raise ImgrecError(
        f"Labels CSV {csv_path}: label(s) {', '.join(map(repr, absent))} "
        "are on no training image. Every label needs training images: add "
        "train rows holding them, or remove the label.")
