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
with the same settings resumes it instead of training again). Instead of
folds, `--model_dir` names a finished run of the data: its validation and
test images are judged by its model (they are out-of-sample; its training
images are not, and are not judged).

Label sets (`--task=multilabel`) are dealt into folds by iterative
stratification and judged by sigmoid models; cleanlab's multi-label
confident learning ranks them, and each issue names the labels in doubt.
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
from imgrec.data import multilabel as multilabel_data
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder
from imgrec.tasks import open_set
from imgrec.tasks import registry
from imgrec.training import trainer

logger = logging.getLogger("imgrec")

# At most this share of the images is listed as outliers.
MAX_OUTLIER_SHARE = 0.01


def fold_of(labels, folds, seed):
  """Each image's fold (int [N]): every class dealt evenly into `folds`
  after a seeded shuffle; label sets (0/1 rows) by iterative
  stratification."""
  labels = np.asarray(labels)
  if labels.ndim == 2:
    names = multilabel_data.iterative_split(
        labels, {str(k): 1 / folds for k in range(folds)}, seed)
    return np.asarray([int(n) for n in names], np.int64)
  out = np.empty(len(labels), np.int64)
  rng = np.random.default_rng(seed)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    rng.shuffle(members)
    out[members] = np.arange(len(members)) % folds
  return out


def _fold_config(config, fold_dir, csv_path, fold, multilabel):
  """The TrainConfig of one fold: the audit's model and recipe fields."""
  own = {f.name for f in dataclasses.fields(config)}
  shared = {f.name: getattr(config, f.name)
            for f in dataclasses.fields(TrainConfig)
            if f.name in own and f.name not in (
                "data_dir", "labels_csv", "tfds", "tfds_data_dir", "dataset",
                "val_split", "test_split", "exclude", "allow_outside",
                "model_dir", "task")}
  # No leakage search: a fold's "test" split is its held-out images, and
  # the audit's own duplicates part looks at the data as it is split.
  return TrainConfig(**dict(
      shared, labels_csv=csv_path, allow_outside=True, model_dir=fold_dir,
      val_split=0.0, test_split=0.0, export=False, verbose=0,
      seed=config.seed + fold, leakage="off",
      task="multilabel" if multilabel else "image"))


def _write_csv(path, rows, label_column="label"):
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["path", label_column, "split"])
  writer.writerows(rows)
  fileio.write_text(path, buffer.getvalue())


def _probabilities(logits, multilabel):
  """Sigmoid scores of label sets, softmax probabilities otherwise."""
  if multilabel:
    return 1 / (1 + np.exp(-logits))
  logits = logits - logits.max(axis=1, keepdims=True)
  p = np.exp(logits)
  return p / p.sum(axis=1, keepdims=True)


def _check_counts(labels, class_names, multilabel):
  counts = (labels.sum(axis=0) if multilabel else
            np.bincount(labels, minlength=len(class_names)))
  if min(counts) < 2:
    few = [class_names[i] for i in np.flatnonzero(counts < 2)]
    raise ImgrecError(f"Classes {few} have fewer than 2 images: the labels "
                      "and outliers parts need 2 of each (each image is "
                      "judged by a model trained on the others).")


def _judged_by(task, model, split, multilabel):
  embedded = open_set.embed(task, model, split)
  return _probabilities(embedded.logits, multilabel), embedded.features


def _held_out(config, folder, read, items, out, labels, multilabel):
  """(probabilities [N, C], embeddings [N, D], fold of each image, judged
  [N] bool) from --folds models, each on the images it did not train on."""
  _check_counts(labels, folder.class_names, multilabel)
  fold = fold_of(labels, config.folds, config.seed)
  probabilities = np.zeros((len(items), len(folder.class_names)))
  embeddings = None
  for k in range(config.folds):
    fold_dir = out.fold_dir(k)
    if os.path.islink(out.folds_dir) or os.path.islink(fold_dir):
      raise ImgrecError(f"{fold_dir} is a link; the audit trains its folds "
                        "only in a folder of its own. Pass another --out.")
    # The list beside the run, not above it: a run never goes in its data.
    os.makedirs(os.path.join(fold_dir, "list"), exist_ok=True)
    csv_path = os.path.join(fold_dir, "list", "data.csv")
    _write_csv(csv_path, [
        (os.path.abspath(read[path]), _label_cell(labels[i], folder,
                                                  config, multilabel),
         "test" if fold[i] == k else "train")
        for i, (path, _, _) in enumerate(items)],
               "labels" if multilabel else "label")
    run_dir = os.path.join(fold_dir, "run")
    logger.info("audit: training fold %d of %d", k + 1, config.folds)
    quiet = logging.getLogger("imgrec")
    level = quiet.level
    # A fold's run is the audit's means, not the user's model: its own
    # notes (an open set without a validation split) are not the user's.
    quiet.setLevel(logging.ERROR)
    try:
      trainer.train(_fold_config(config, run_dir, csv_path, k, multilabel))
    finally:
      quiet.setLevel(level)
    run = RunFolder(run_dir)
    names = run.read_labels()
    if names != list(folder.class_names):
      raise ImgrecError(f"Fold {k} trained on classes {names}, not the "
                        f"data's {folder.class_names}: a class has no "
                        "training image outside the fold.")
    rows = np.flatnonzero(fold == k)
    p, features = _judged_by(
        tasks.for_run(run), tasks.load_model(run.best_model_path),
        folder_lib.Split([read[items[i][0]] for i in rows],
                         labels[rows].tolist()), multilabel)
    probabilities[rows] = p
    if embeddings is None:
      embeddings = np.zeros((len(items), features.shape[1]), np.float32)
    embeddings[rows] = features
  return probabilities, embeddings, fold, np.ones(len(items), bool)


def _label_cell(label, folder, config, multilabel):
  if multilabel:
    return config.label_delim.join(
        n for n, v in zip(folder.class_names, label) if v)
  return folder.class_names[label]


def check_run(config, class_names, multilabel):
  """The finished run of --model_dir and its task, or a one-line error:
  no trained model, another task, other classes."""
  run = RunFolder(config.model_dir)
  run.require_best_model()
  try:
    task = tasks.for_run(run)
  except ImgrecError as e:
    raise ImgrecError(f"--model_dir={run.path}: {e}") from None
  kind = "multilabel" if multilabel else "image"
  if task.name != registry.canonical_name(kind):
    raise ImgrecError(f"--model_dir={run.path} is a {task.name} run; this "
                      f"audit reads {kind} labels (--task).")
  names = run.read_labels()
  if names != list(class_names):
    raise ImgrecError(f"--model_dir={run.path} was trained on classes "
                      f"{names}, not the data's {list(class_names)}.")
  return run, task


def _from_run(config, folder, read, items, labels, multilabel):
  """The same from a finished run (--model_dir): its model judges the
  images of its validation and test splits; the rest are not judged."""
  run, task = check_run(config, folder.class_names, multilabel)
  names = run.read_labels()
  held = set()
  for split in ("val", "test"):
    try:
      held.update(os.path.realpath(p) for p in run.read_split(split)[0])
    except ImgrecError:
      continue  # A run without that split.
  judged = np.asarray([
      os.path.realpath(path) in held or os.path.realpath(read[path]) in held
      for path, _, _ in items], bool)
  if not judged.any():
    raise ImgrecError(f"None of these {len(items)} images is in the "
                      f"validation or test split of --model_dir={run.path}: "
                      "its model trained on them (or on other data), so its "
                      "answers about them are in-sample. Use --folds "
                      "instead.")
  rows = np.flatnonzero(judged)
  p, features = _judged_by(
      task, tasks.load_model(run.best_model_path),
      folder_lib.Split([read[items[i][0]] for i in rows],
                       labels[rows].tolist()), multilabel)
  probabilities = np.zeros((len(items), len(names)))
  probabilities[rows] = p
  embeddings = np.zeros((len(items), features.shape[1]), np.float32)
  embeddings[rows] = features
  return probabilities, embeddings, np.zeros(len(items), np.int64), judged


def label_issues(labels, probabilities, class_names, items):
  """Confident learning's issues, most likely wrong first."""
  from cleanlab import filter as cleanlab_filter  # pylint: disable=g-import-not-at-top
  # One process (n_jobs=1): cleanlab's pool would fork imgrec's own
  # process, signal handlers included, and its workers' ends then print.
  ranked = cleanlab_filter.find_label_issues(
      labels=labels, pred_probs=probabilities,
      return_indices_ranked_by="self_confidence", n_jobs=1)
  out = []
  for i in ranked:
    given = int(labels[i])
    suggested = int(np.argmax(probabilities[i]))
    out.append({"path": items[i][0], "given": class_names[given],
                "suggested": class_names[suggested],
                "score": round(float(1 - probabilities[i, given]), 4),
                "split": items[i][2]})
  return out


def label_set_issues(targets, probabilities, class_names, items):
  """Multi-label confident learning's issues, most likely wrong first: each
  with the given and suggested label sets (scores >= 0.5; the top label
  when none is) and the labels in doubt (given and scored below 0.5, or
  not given and scored above)."""
  from cleanlab.multilabel_classification import filter as cleanlab_filter  # pylint: disable=g-import-not-at-top
  from cleanlab.multilabel_classification import rank  # pylint: disable=g-import-not-at-top
  given_sets = [np.flatnonzero(t).tolist() for t in targets]
  ranked = cleanlab_filter.find_label_issues(
      labels=given_sets, pred_probs=probabilities,
      return_indices_ranked_by="self_confidence", n_jobs=1)
  quality = rank.get_label_quality_scores(given_sets, probabilities)
  out = []
  for i in ranked:
    scored = probabilities[i] >= 0.5
    if not scored.any():
      scored[np.argmax(probabilities[i])] = True
    given = targets[i].astype(bool)
    out.append({
        "path": items[i][0],
        "given": [class_names[c] for c in np.flatnonzero(given)],
        "suggested": [class_names[c] for c in np.flatnonzero(scored)],
        "doubted": [class_names[c] for c in np.flatnonzero(given != scored)],
        "score": round(float(1 - quality[i]), 4), "split": items[i][2]})
  return out


def outliers(embeddings, fold, members, class_names, items, judged):
  """Judged images far from every class's prototype (in their fold model's
  embedding space), farthest first: beyond Q3 + 3 IQR of the distances, at
  most MAX_OUTLIER_SHARE of the images.

  Args:
    members: bool [N, C]: the classes each image is given.
  """
  distance = np.zeros(len(items))
  for k in np.unique(fold[judged]):
    rows = np.flatnonzero((fold == k) & judged)
    unit = embeddings[rows] / np.maximum(np.linalg.norm(
        embeddings[rows], axis=1, keepdims=True), 1e-12)
    # Each class's unit mean embedding (zero for a class with no image).
    sums = members[rows].T.astype(np.float64) @ unit
    prototypes = sums / np.maximum(np.linalg.norm(sums, axis=1,
                                                  keepdims=True), 1e-12)
    distance[rows] = 1 - (unit @ prototypes.T).max(axis=1)
  values = distance[judged]
  q1, q3 = np.percentile(values, [25, 75])
  fence = q3 + 3 * (q3 - q1)
  order = [i for i in np.argsort(-distance) if judged[i] and
           distance[i] > fence]
  order = order[:max(1, int(MAX_OUTLIER_SHARE * len(values)))]
  return [{"path": items[i][0], "given": items[i][1],
           "split": items[i][2], "score": round(float(distance[i]), 4)}
          for i in order], float(fence)


def judge(config, folder, read, items, out, multilabel=False):
  """The labels and outliers parts of the audit.

  Returns:
    ({"label_issues": [...], "outliers": [...]} as asked by config.parts,
    summary dict).
  """
  labels = np.asarray([label for split in folder.splits.values()
                       for label in split.labels])
  if config.model_dir:
    probabilities, embeddings, fold, judged = _from_run(
        config, folder, read, items, labels, multilabel)
  else:
    probabilities, embeddings, fold, judged = _held_out(
        config, folder, read, items, out, labels, multilabel)
  members = (labels.astype(bool) if multilabel else
             np.eye(len(folder.class_names), dtype=bool)[labels])
  rows = np.flatnonzero(judged)
  if multilabel:
    agreement = float(np.mean((probabilities[rows] >= 0.5) == members[rows]))
  else:
    agreement = float(np.mean(probabilities[rows].argmax(axis=1) ==
                              labels[rows]))
  summary = {"source": "model_dir" if config.model_dir else "folds",
             "judged": int(judged.sum()),
             "not_judged": int((~judged).sum()), "model": config.model,
             "held_out_accuracy" if not multilabel else
             "held_out_label_accuracy": round(agreement, 4)}
  if config.model_dir:
    summary["model_dir"] = os.path.abspath(config.model_dir)
  else:
    summary.update(folds=config.folds, epochs=config.epochs)
  found = {}
  if "labels" in config.parts:
    picked = [items[i] for i in rows]
    if multilabel:
      issues = label_set_issues(labels[rows], probabilities[rows],
                                folder.class_names, picked)
    else:
      issues = label_issues(labels[rows], probabilities[rows],
                            folder.class_names, picked)
    found["label_issues"] = issues
    summary["label_issues"] = len(issues)
  if "outliers" in config.parts:
    found["outliers"], summary["outlier_fence"] = outliers(
        embeddings, fold, members, folder.class_names, items, judged)
    summary["outliers"] = len(found["outliers"])
  return found, summary
