"""Open-set figures: how well a score tells images of the known classes from
images of none of them, and the threshold a deployment answers "unknown"
below.

Every score here is a *knownness*: higher means more like the known classes,
and an image is answered with its best class when its score is at least the
threshold, "unknown" below it.

* `max_softmax`: the highest class probability (Hendrycks & Gimpel 2017),
  the baseline every open-set method is measured against.
* `energy`: the negative free energy of the logits, logsumexp(z) at
  temperature 1 (Liu et al. 2020): unlike the softmax it keeps how large the
  logits are, which falls for inputs far from the training data.
* `prototype`: the cosine similarity of the image's embedding (the features
  the classifier's last layer reads) with the nearest class prototype, the
  normalized mean embedding of the class's training images: the nearest
  class mean rule that imprinting (Qi et al. 2018) and face galleries use.

Figures: AUROC (known positive, ties half: `verification.roc_auc`, the
faces' own) and FPR95, the share of unknown images accepted at the
threshold that keeps 95% of the known ones. Pure numpy.
"""

import math

import numpy as np

from imgrec.errors import ImgrecError
from imgrec.metrics import verification

SCORES = ("energy", "max_softmax", "prototype")
DEFAULT_KNOWN_RECALL = 0.95


def _logits(logits):
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or not logits.shape[1]:
    raise ValueError(f"logits must be [N, C]. Received: {logits.shape}")
  return logits


def energy(logits):
  """logsumexp of each row of logits [N, C] (higher: more known)."""
  logits = _logits(logits)
  top = logits.max(axis=1, keepdims=True)
  return (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]


def max_softmax(logits):
  """The largest softmax probability of each row of logits [N, C]."""
  logits = _logits(logits)
  return 1.0 / np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)


def unit_rows(x):
  """Rows of `x` scaled to unit length (a zero row stays zero)."""
  x = np.asarray(x, np.float64)
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norm, 1e-12)


def prototypes(features, labels, num_classes):
  """The prototype of each class: the unit mean of its images' unit
  embeddings, [C, D] float32 (a class without images gets a zero row,
  which `prototype_similarity` never takes for the nearest). A face
  gallery's person templates are the same idea and the same function
  (`verification.identity_templates`).

  Args:
    features: [N, D] embeddings.
    labels: [N] class indices.
    num_classes: C.
  """
  features = unit_rows(features)
  out = np.zeros((num_classes, features.shape[1]), np.float32)
  if len(features):
    names, templates = verification.identity_templates(
        features, np.asarray(labels, np.int64).reshape(-1))
    out[names] = templates
  return out


def prototype_similarity(features, class_prototypes):
  """(cosine similarity with the nearest prototype [N], its class [N]); a
  zero prototype (a class without images) is as far as can be (-1)."""
  class_prototypes = np.asarray(class_prototypes, np.float64)
  sims = unit_rows(features) @ class_prototypes.T
  sims[:, ~class_prototypes.any(axis=1)] = -1.0
  nearest = sims.argmax(axis=1)
  return sims[np.arange(len(sims)), nearest], nearest


def knownness(kind, logits, features=None, class_prototypes=None):
  """The open-set score `kind` (one of SCORES) of each example [N]."""
  if kind == "energy":
    return energy(logits)
  if kind == "max_softmax":
    return max_softmax(logits)
  if kind == "prototype":
    return prototype_similarity(features, class_prototypes)[0]
  raise ValueError(f"unknown open-set score {kind!r}; known: {SCORES}")


def _finite(values, what):
  values = np.asarray(values, np.float64).reshape(-1)
  if not np.isfinite(values).all():
    raise ImgrecError(f"{what} holds NaN or infinite scores: the model's "
                      "outputs are not finite.")
  return values


def threshold_for_recall(known, recall=DEFAULT_KNOWN_RECALL):
  """The highest threshold that keeps at least `recall` of the known scores
  (score >= threshold).

  Raises:
    ImgrecError: no known scores, or `recall` outside (0, 1].
  """
  known = _finite(known, "The known images")
  if not len(known):
    raise ImgrecError("No known images to choose an open-set threshold on "
                      "(the run has no validation split).")
  if not 0 < recall <= 1:
    raise ImgrecError(f"known_recall must be in (0, 1]. Received: {recall}")
  ranked = np.sort(known)[::-1]
  keep = min(len(ranked), math.ceil(recall * len(ranked) - 1e-9))
  return float(ranked[max(keep, 1) - 1])


def fpr_at_recall(known, unknown, recall=DEFAULT_KNOWN_RECALL):
  """The share of unknown scores at or above the threshold that keeps
  `recall` of the known ones (FPR95 at the default)."""
  threshold = threshold_for_recall(known, recall)
  unknown = _finite(unknown, "The unknown images")
  return float(np.mean(unknown >= threshold)) if len(unknown) else 0.0


def calibrated_threshold(known, unknown):
  """The threshold that best separates known from unknown scores: the one
  maximizing recall of known minus acceptance of unknown (Youden's J), the
  midpoint between the two neighbouring scores where it is reached."""
  known = _finite(known, "The known images")
  unknown = _finite(unknown, "The unknown images")
  if not len(known) or not len(unknown):
    raise ImgrecError("Calibrating the open-set threshold needs known and "
                      "unknown images.")
  candidates = np.unique(np.concatenate([known, unknown]))
  kept = len(known) - np.searchsorted(np.sort(known), candidates, "left")
  accepted = len(unknown) - np.searchsorted(np.sort(unknown), candidates,
                                            "left")
  j = kept / len(known) - accepted / len(unknown)
  best = int(np.argmax(j))
  if best == 0:
    return float(candidates[0])
  return float((candidates[best - 1] + candidates[best]) / 2)


def summary(known, unknown, threshold, recall=DEFAULT_KNOWN_RECALL):
  """The figures of one score on known and unknown images.

  Returns:
    {"auroc", "fpr95" (at `recall` of these known images, not the
    threshold's), "threshold", "known_recall" (share of known images at or
    above `threshold`), "unknown_rejected" (share of unknown images below
    it), "known", "unknown" (counts)}.
  """
  known = _finite(known, "The known images")
  unknown = _finite(unknown, "The unknown images")
  return {
      "auroc": verification.roc_auc(known, unknown),
      "fpr95": fpr_at_recall(known, unknown, recall),
      "threshold": float(threshold),
      "known_recall": float(np.mean(known >= threshold)),
      "unknown_rejected": float(np.mean(unknown < threshold)),
      "known": int(len(known)), "unknown": int(len(unknown))}
