"""The audit's model-based parts: label issues and outliers.

Every image is judged by a model that did not train on it: the images are
dealt into `--folds` class-stratified folds, and for each fold a model is
trained with imgrec's own recipe (`imgrec.training.trainer`, the audit's
model and recipe flags, a short recipe by default) on the other folds, then
gives the fold's images their probabilities and embeddings. Probabilities of
images a model trained on flatter every label they were trained with (a
network memorizes a wrong label), so in-sample probabilities hide the very
errors confident learning looks for.

* Label issues: cleanlab's confident learning (`cleanlab.filter.
  find_label_issues`, Northcutt et al. 2021) on those out-of-sample
  probabilities, ranked by self-confidence (the probability the model gives
  the given label; lowest first), each with the suggested class.
* Outliers: each image's distance to the nearest class prototype (unit mean
  embedding of the fold's images of that class, the model's own embedding
  space), listed beyond Tukey's far-out fence (Q3 + 3 IQR).

Each fold is a run folder of its own under the audit's `folds/` (a rerun
with the same settings resumes it instead of training again).
"""

import csv
import dataclasses
import io
import logging
import os

import numpy as np

from imgrec import fileio
from imgrec import tasks
from imgrec.config import TrainConfig
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.metrics import open_set as open_set_metrics
from imgrec.run_folder import RunFolder
from imgrec.tasks import open_set
from imgrec.training import trainer

logger = logging.getLogger("imgrec")

# At most this share of the images is listed as outliers.
MAX_OUTLIER_SHARE = 0.01


def fold_of(labels, folds, seed):
  """Each image's fold (int [N]): every class dealt evenly into `folds`
  after a seeded shuffle."""
  labels = np.asarray(labels)
  out = np.empty(len(labels), np.int64)
  rng = np.random.default_rng(seed)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    rng.shuffle(members)
    out[members] = np.arange(len(members)) % folds
  return out


def _fold_config(config, fold_dir, csv_path, fold):
  """The TrainConfig of one fold: the audit's model and recipe fields."""
  own = {f.name for f in dataclasses.fields(config)}
  shared = {f.name: getattr(config, f.name)
            for f in dataclasses.fields(TrainConfig)
            if f.name in own and f.name not in (
                "data_dir", "labels_csv", "tfds", "tfds_data_dir", "dataset",
                "val_split", "test_split", "exclude", "allow_outside",
                "model_dir")}
  # No leakage search: a fold's "test" split is its held-out images, and
  # the audit's own duplicates part looks at the data as it is split.
  return TrainConfig(**dict(
      shared, labels_csv=csv_path, allow_outside=True, model_dir=fold_dir,
      val_split=0.0, test_split=0.0, export=False, verbose=0,
      seed=config.seed + fold, leakage="off"))


def _write_csv(path, rows):
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["path", "label", "split"])
  writer.writerows(rows)
  fileio.write_text(path, buffer.getvalue())


def _held_out(config, folder, read, items, out):
  """(probabilities [N, C], embeddings list per fold, fold of each image)
  from --folds models, each on the images it did not train on."""
  labels = np.asarray([folder.class_names.index(c) for _, c, _ in items])
  if min(np.bincount(labels, minlength=len(folder.class_names))) < 2:
    raise ImgrecError("Every class needs at least 2 images for the labels "
                      "and outliers parts (each is judged by a model trained "
                      "on the others).")
  fold = fold_of(labels, config.folds, config.seed)
  probabilities = np.zeros((len(items), len(folder.class_names)))
  embeddings = [None] * len(items)
  for k in range(config.folds):
    fold_dir = out.fold_dir(k)
    # The list beside the run, not above it: a run never goes in its data.
    os.makedirs(os.path.join(fold_dir, "list"), exist_ok=True)
    csv_path = os.path.join(fold_dir, "list", "data.csv")
    _write_csv(csv_path, [
        (os.path.abspath(read[path]), cls, "test" if fold[i] == k else
         "train") for i, (path, cls, _) in enumerate(items)])
    run_dir = os.path.join(fold_dir, "run")
    logger.info("audit: training fold %d of %d", k + 1, config.folds)
    quiet = logging.getLogger("imgrec")
    level = quiet.level
    # A fold's run is the audit's means, not the user's model: its own
    # notes (an open set without a validation split) are not the user's.
    quiet.setLevel(logging.ERROR)
    try:
      trainer.train(_fold_config(config, run_dir, csv_path, k))
    finally:
      quiet.setLevel(level)
    run = RunFolder(run_dir)
    task = tasks.for_run(run)
    model = tasks.load_model(run.best_model_path)
    names = run.read_labels()
    if names != list(folder.class_names):
      raise ImgrecError(f"Fold {k} trained on classes {names}, not the "
                        f"data's {folder.class_names}: a class has no "
                        "training image outside the fold.")
    rows = np.flatnonzero(fold == k)
    split = folder_lib.Split([read[items[i][0]] for i in rows],
                             labels[rows].tolist())
    embedded = open_set.embed(task, model, split)
    logits = embedded.logits - embedded.logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    probabilities[rows] = p / p.sum(axis=1, keepdims=True)
    for row, feature in zip(rows, embedded.features):
      embeddings[row] = feature
  return probabilities, embeddings, fold, labels


def label_issues(labels, probabilities, class_names, items):
  """Confident learning's issues, most likely wrong first."""
  from cleanlab import filter as cleanlab_filter  # pylint: disable=g-import-not-at-top
  ranked = cleanlab_filter.find_label_issues(
      labels=labels, pred_probs=probabilities,
      return_indices_ranked_by="self_confidence")
  out = []
  for i in ranked:
    given = int(labels[i])
    suggested = int(np.argmax(probabilities[i]))
    out.append({"path": items[i][0], "given": class_names[given],
                "suggested": class_names[suggested],
                "score": round(float(1 - probabilities[i, given]), 4),
                "split": items[i][2]})
  return out


def outliers(embeddings, fold, labels, class_names, items):
  """Images far from every class's prototype (in their fold model's
  embedding space), farthest first: beyond Q3 + 3 IQR of the distances, at
  most MAX_OUTLIER_SHARE of the images."""
  distance = np.zeros(len(items))
  for k in np.unique(fold):
    rows = np.flatnonzero(fold == k)
    features = np.stack([embeddings[i] for i in rows])
    prototypes = open_set_metrics.prototypes(features, labels[rows],
                                             len(class_names))
    unit = features / np.maximum(np.linalg.norm(features, axis=1,
                                                keepdims=True), 1e-12)
    distance[rows] = 1 - (unit @ prototypes.T).max(axis=1)
  q1, q3 = np.percentile(distance, [25, 75])
  fence = q3 + 3 * (q3 - q1)
  order = [i for i in np.argsort(-distance) if distance[i] > fence]
  order = order[:max(1, int(MAX_OUTLIER_SHARE * len(items)))]
  return [{"path": items[i][0], "given": class_names[labels[i]],
           "split": items[i][2], "score": round(float(distance[i]), 4)}
          for i in order], float(fence)


def judge(config, folder, read, items, out):
  """The labels and outliers parts of the audit.

  Returns:
    ({"label_issues": [...], "outliers": [...]} as asked by config.parts,
    summary dict).
  """
  probabilities, embeddings, fold, labels = _held_out(config, folder, read,
                                                      items, out)
  found, summary = {}, {"folds": config.folds, "epochs": config.epochs,
                        "model": config.model,
                        "held_out_accuracy": round(float(np.mean(
                            probabilities.argmax(axis=1) == labels)), 4)}
  if "labels" in config.parts:
    found["label_issues"] = label_issues(labels, probabilities,
                                         folder.class_names, items)
    summary["label_issues"] = len(found["label_issues"])
  if "outliers" in config.parts:
    found["outliers"], summary["outlier_fence"] = outliers(
        embeddings, fold, labels, folder.class_names, items)
    summary["outliers"] = len(found["outliers"])
  return found, summary
