"""A single-label run's open set: the score and the threshold below which an
image is of no class the model knows.

At the end of training (`fit`) the model embeds its training split (each
class's prototype: the unit mean of its images' unit embeddings) and its
validation split, whose images are all of known classes; the threshold of
the run's `--unknown_score` is the one that keeps `--known_recall` of them.
`open_set.json` records the score, the threshold and how it was chosen,
`prototypes.npy` the prototypes; every consumer of the run reads them
(`read`), and `imgrec-evaluate --unknown_dir` measures them on the user's
own unknown images (and with `--calibrate_unknown` replaces the threshold
by the one that best separates those images from the known ones).

The scores themselves are `imgrec.metrics.open_set`'s.
"""

import dataclasses
import json
import os

import numpy as np

from imgrec import fileio
from imgrec.errors import ImgrecError
from imgrec.metrics import open_set as metrics
from imgrec.tasks import base

models = base.lazy_import("imgrec.models")


@dataclasses.dataclass(frozen=True)
class OpenSet:
  """How a run decides "unknown": score >= threshold is known.

  Attributes:
    score: one of `metrics.SCORES`.
    threshold: the score's threshold.
    known_recall: the share of known images it was chosen to keep (None
      when calibrated on unknown images).
    source: how it was chosen, in words.
    prototypes: [C, D] float32, each class's unit mean embedding.
  """
  score: str
  threshold: float
  known_recall: float | None
  source: str
  prototypes: np.ndarray

  def to_json(self):
    return {"score": self.score, "threshold": self.threshold,
            "known_recall": self.known_recall, "source": self.source}


@dataclasses.dataclass(frozen=True)
class Embedded:
  """The embeddings of a split and the head's logits of them."""
  features: np.ndarray  # [N, D]
  logits: np.ndarray  # [N, C]

  def knownness(self, kind, prototypes):
    return metrics.knownness(kind, self.logits, self.features, prototypes)


def embed(task, model, split):
  """`Embedded` of one split under `task`'s input pipeline.

  Raises:
    ImgrecError: the model has no classifier head to score.
  """
  try:
    embedder, kernel, bias = models.classifier_head(model)
  except ValueError as e:
    raise ImgrecError(f"No open set for this model: {e}") from None
  dim = kernel.shape[0]
  if not len(split):
    features = np.zeros((0, dim), np.float32)
  else:
    # The embedder has `dim` outputs: labels shaped for them (a label
    # set's 0/1 row has one a class), which the embedding never reads.
    rows = bool(split.labels) and isinstance(split.labels[0], (list, tuple))
    split = dataclasses.replace(split, labels=[[0] * dim] * len(split)
                                if rows else [0] * len(split))
    features = np.asarray(task.predict_views(embedder, split, dim)[0],
                          np.float32).reshape(len(split), dim)
  return Embedded(features, features.astype(np.float64) @ kernel + bias)


def fit(task, run, model, folder):
  """Chooses and writes the run's open set (`open_set.json`,
  `prototypes.npy`) from its folder's training and validation splits
  (`choose`).

  Returns:
    The OpenSet written.
  """
  found = choose(task, model, folder.class_names, folder.splits["train"],
                 folder.splits.get("val"))
  write(run, found)
  return found


def choose(task, model, class_names, train, val):
  """The open set of a model under its task's `--unknown_score` and
  `--known_recall`: prototypes from the `train` split, the threshold from
  the `val` split, or from `train` when there is none (its scores are
  in-sample: the source says so)."""
  held = embed(task, model, val) if val is not None and len(val) else None
  return from_embeddings(task.config, len(class_names),
                         embed(task, model, train), train.labels, held)


def from_embeddings(config, num_classes, trained, train_labels, held=None):
  """`choose` on splits already embedded (`Embedded`): `trained` with its
  labels, `held` the validation split's (None: there is none)."""
  prototypes = metrics.prototypes(trained.features, train_labels,
                                  num_classes)
  if held is not None:
    source = f"validation split ({len(held.features)} images of known classes)"
  else:
    held, source = trained, (f"training split ({len(trained.features)} "
                             "images; the run has no validation split)")
  threshold = metrics.threshold_for_recall(
      held.knownness(config.unknown_score, prototypes), config.known_recall)
  return OpenSet(config.unknown_score, threshold, config.known_recall,
                 source, prototypes)


def write(run, found):
  """Writes `found`'s prototypes, then open_set.json (the record that names
  them: a kill between the two leaves the earlier record or none)."""
  with fileio.atomic_write(run.prototypes_path, "wb") as f:
    np.save(f, np.asarray(found.prototypes, np.float32), allow_pickle=False)
  fileio.write_json(run.open_set_path, found.to_json(), indent=2)


def read(run, num_classes):
  """The run's OpenSet, or None for a run without one (a multi-label run,
  one trained before open sets).

  Raises:
    ImgrecError: the files are damaged or do not fit the run's classes.
  """
  if not os.path.exists(run.open_set_path):
    return None
  path = run.open_set_path
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    score, threshold = data["score"], float(data["threshold"])
    recall = data.get("known_recall")
    recall = None if recall is None else float(recall)
    prototypes = np.load(run.prototypes_path, allow_pickle=False)
  except (OSError, ValueError, TypeError, KeyError) as e:
    raise ImgrecError(f"{path} (or prototypes.npy beside it) is damaged "
                      f"({type(e).__name__}: {e}). Run imgrec-evaluate "
                      "--calibrate_unknown, or train again.") from None
  if score not in metrics.SCORES or not np.isfinite(threshold):
    raise ImgrecError(f"{path} is damaged: score {score!r} (known: "
                      f"{', '.join(metrics.SCORES)}), threshold {threshold}.")
  if (prototypes.ndim != 2 or prototypes.shape[0] != num_classes or
      not np.isfinite(prototypes).all()):
    raise ImgrecError(f"{run.prototypes_path} is damaged or not this run's: "
                      f"{num_classes} finite class rows expected, found "
                      f"shape {prototypes.shape}.")
  return OpenSet(score, threshold, recall, str(data.get("source", "")),
                 prototypes.astype(np.float32))


def unknown_label(class_names):
  """The answer for an image of no known class: "unknown", unless a class
  has that name."""
  return "unknown" if "unknown" not in class_names else "<unknown>"


def scoring_outputs(model, found):
  """(probabilities, knownness) Keras tensors of `model`'s functional graph:
  its own output and the run's open-set score computed in the graph
  (`layers.OpenSetScore`) from its embedding and the head's logits."""
  import keras  # pylint: disable=g-import-not-at-top
  from imgrec.models import layers  # pylint: disable=g-import-not-at-top
  embedder, kernel, bias = models.classifier_head(model)
  features = embedder.output
  logits = keras.layers.Dense(kernel.shape[1], dtype="float32",
                              name="open_set_logits")
  z = logits(features)
  logits.set_weights([kernel, bias])
  knownness = layers.OpenSetScore(
      found.score, found.prototypes if found.score == "prototype" else None,
      dtype="float32", name="knownness")([features, z])
  return model.outputs[0], knownness


def scoring_model(model, found):
  """A Keras model: the classifier's inputs -> {"probabilities" [N, C],
  "knownness" [N]}."""
  import keras  # pylint: disable=g-import-not-at-top
  probabilities, knownness = scoring_outputs(model, found)
  return keras.Model(models.registry.model_inputs(model),
                     {"probabilities": probabilities,
                                    "knownness": knownness},
                     name=f"{model.name}_open_set")


def unknown_column_model(model, found):
  """A Keras model: inputs -> [N, C + 1], the class probabilities and an
  "unknown" column deciding (`layers.UnknownColumn`): what a TFLite
  classifier with an open set outputs."""
  import keras  # pylint: disable=g-import-not-at-top
  from imgrec.models import layers  # pylint: disable=g-import-not-at-top
  probabilities, knownness = scoring_outputs(model, found)
  out = layers.UnknownColumn(found.threshold, dtype="float32",
                             name="with_unknown")([probabilities, knownness])
  return keras.Model(models.registry.model_inputs(model), out,
                     name=model.name)


def split_unknown_column(outputs, num_classes):
  """[N, C + 1] outputs of `unknown_column_model` -> (the class
  probabilities as they were [N, C], unknown bool [N])."""
  outputs = np.asarray(outputs, np.float32)
  unknown = outputs[:, num_classes] > 0.5
  probabilities = outputs[:, :num_classes] * np.where(unknown, 2.0, 1.0
                                                      )[:, None]
  return probabilities.astype(np.float32), unknown
