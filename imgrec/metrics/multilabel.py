"""Multi-label metrics: average precision, F1 at per-class thresholds, and
the thresholds themselves.

Scores are independent per class (sigmoid), so each class is a binary
problem: its average precision ranks the images by its score, and its
threshold is the one that maximizes its F1 on the validation split.
Definitions follow the usual ones (Pascal VOC / scikit-learn's
`average_precision_score`, no interpolation: AP = sum over the distinct
scores of (recall step) x precision).
"""

import numpy as np

# A class absent from the validation split keeps this threshold.
DEFAULT_THRESHOLD = 0.5
_ECE_BINS = 15


def _as_arrays(targets, scores):
  targets = np.asarray(targets, bool)
  scores = np.asarray(scores, np.float64)
  if targets.shape != scores.shape or targets.ndim != 2:
    raise ValueError(f"targets and scores must both be [N, C]. Received: "
                     f"{targets.shape} and {scores.shape}")
  return targets, scores


def _ranked(y, s):
  """(true positives, predicted positives) at each distinct score, from the
  highest down: what `score >= that score` predicts."""
  order = np.argsort(-s, kind="stable")
  y, s = y[order], s[order]
  last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # Ends of ties.
  return np.cumsum(y)[last], last + 1, s[last]


def average_precision(y, s):
  """AP of one class: NaN when it has no positive image."""
  y, s = np.asarray(y, bool), np.asarray(s, np.float64)
  positives = y.sum()
  if positives == 0:
    return float("nan")
  tp, predicted, _ = _ranked(y, s)
  recall_steps = np.diff(np.r_[0, tp]) / positives
  return float(np.sum(recall_steps * tp / predicted))


def best_f1_threshold(y, s):
  """The threshold that maximizes one class's F1 (`score >= threshold`
  predicts it): halfway between the last score kept and the next one, so
  a score a little off the validation ones is decided the same way.
  DEFAULT_THRESHOLD when the class has no positive image."""
  y, s = np.asarray(y, bool), np.asarray(s, np.float64)
  positives = y.sum()
  if positives == 0:
    return DEFAULT_THRESHOLD
  tp, predicted, at = _ranked(y, s)
  f1 = 2 * tp / (predicted + positives)
  best = int(np.argmax(f1))
  below = at[best + 1] if best + 1 < len(at) else 0.0
  return float((at[best] + below) / 2)


def best_f1_thresholds(targets, scores):
  """One `best_f1_threshold` per class: float [C]."""
  targets, scores = _as_arrays(targets, scores)
  return np.array([best_f1_threshold(targets[:, c], scores[:, c])
                   for c in range(targets.shape[1])])


def _f1(tp, fp, fn):
  denominator = 2 * tp + fp + fn
  return float(2 * tp / denominator) if denominator else 0.0


def _binary_ece(y, s):
  """Expected calibration error of one class's scores as probabilities."""
  bins = np.minimum((s * _ECE_BINS).astype(int), _ECE_BINS - 1)
  total = 0.0
  for b in np.unique(bins):
    inside = bins == b
    total += inside.sum() * abs(y[inside].mean() - s[inside].mean())
  return float(total / max(len(y), 1))


def summary(targets, scores, thresholds, class_names):
  """The `"multilabel"` section of report.json.

  Args:
    targets: [N, C] 0/1.
    scores: [N, C] sigmoid scores.
    thresholds: [C] (a label is predicted when score >= its threshold).
    class_names: C names.

  Returns:
    {"map", "micro_f1", "macro_f1", "subset_accuracy", "hamming_loss",
     "cardinality": {"true", "predicted"}, "per_class": {name: {"ap",
     "threshold", "precision", "recall", "f1", "support", "ece"}}}; `map`
    averages the classes present in `targets`.
  """
  targets, scores = _as_arrays(targets, scores)
  predicted = scores >= np.asarray(thresholds, np.float64)[None, :]
  tp = (predicted & targets).sum(0)
  fp = (predicted & ~targets).sum(0)
  fn = (~predicted & targets).sum(0)
  per_class, aps = {}, []
  for c, name in enumerate(class_names):
    ap = average_precision(targets[:, c], scores[:, c])
    if not np.isnan(ap):
      aps.append(ap)
    per_class[name] = {
        "ap": None if np.isnan(ap) else ap,
        "threshold": float(thresholds[c]),
        "precision": float(tp[c] / (tp[c] + fp[c])) if tp[c] + fp[c] else 0.0,
        "recall": float(tp[c] / (tp[c] + fn[c])) if tp[c] + fn[c] else 0.0,
        "f1": _f1(tp[c], fp[c], fn[c]),
        "support": int(targets[:, c].sum()),
        "ece": _binary_ece(targets[:, c], scores[:, c]),
    }
  present = targets.sum(0) > 0
  return {
      "map": float(np.mean(aps)) if aps else None,
      "micro_f1": _f1(tp.sum(), fp.sum(), fn.sum()),
      "macro_f1": float(np.mean([per_class[n]["f1"] for n, p in
                                 zip(class_names, present) if p]))
                  if present.any() else None,
      "subset_accuracy": float(np.mean(np.all(predicted == targets, 1))),
      "hamming_loss": float(np.mean(predicted != targets)),
      "cardinality": {"true": float(targets.sum(1).mean()),
                      "predicted": float(predicted.sum(1).mean())},
      "per_class": per_class,
  }
