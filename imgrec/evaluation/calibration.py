"""Calibration of predicted probabilities: ECE, reliability bins, temperature."""

import numpy as np

ECE_BINS = 15
# Temperatures searched, as log T: from 0.05 (sharpen 20x) to 20 (flatten).
_LOG_T_RANGE = (np.log(0.05), np.log(20.0))


def reliability(probabilities, labels, bins=ECE_BINS):
  """Expected calibration error and the reliability diagram's bins.

  Predictions are binned by their top-1 probability into `bins` equal-width
  bins over [0, 1]; ECE is the support-weighted mean |accuracy - confidence|
  over the bins.

  Args:
    probabilities: float array [N, C].
    labels: int array [N].
    bins: number of bins.

  Returns:
    (ece, [{"lower", "upper", "count", "confidence", "accuracy"}] per bin;
    confidence and accuracy are None in an empty bin).
  """
  probabilities = np.asarray(probabilities, dtype=np.float64)
  labels = np.asarray(labels, dtype=np.int64)
  edges = np.linspace(0.0, 1.0, bins + 1)
  out, ece = [], 0.0
  if not len(labels):
    return 0.0, [{"lower": float(lo), "upper": float(hi), "count": 0,
                  "confidence": None, "accuracy": None}
                 for lo, hi in zip(edges[:-1], edges[1:])]
  confidence = probabilities.max(axis=1)
  correct = probabilities.argmax(axis=1) == labels
  # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 joins bin 0.
  index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0,
                  bins - 1)
  for i in range(bins):
    chosen = index == i
    count = int(chosen.sum())
    conf = float(confidence[chosen].mean()) if count else None
    acc = float(correct[chosen].mean()) if count else None
    if count:
      ece += count / len(labels) * abs(acc - conf)
    out.append({"lower": float(edges[i]), "upper": float(edges[i + 1]),
                "count": count, "confidence": conf, "accuracy": acc})
  return float(ece), out


def _log_probabilities(probabilities):
  return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12,
                        None))


def scale(probabilities, temperature):
  """Probabilities after temperature scaling: softmax(log p / T).

  log p equals the logits up to a per-row constant, which softmax ignores,
  so this is exact for a softmax model.
  """
  z = _log_probabilities(probabilities) / float(temperature)
  z -= z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def _nll(log_p, labels, temperature):
  z = log_p / temperature
  z = z - z.max(axis=1, keepdims=True)
  log_norm = np.log(np.exp(z).sum(axis=1))
  return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(probabilities, labels, iterations=60):
  """The temperature that minimizes the negative log-likelihood.

  A golden-section search over log T in [log 0.05, log 20] (the NLL is
  unimodal in T for logits scaled by 1/T).

  Args:
    probabilities: float array [N, C] (validation split).
    labels: int array [N].
    iterations: search steps (60 narrow the interval by 0.618^60).

  Returns:
    The temperature (float), or None with no examples.
  """
  labels = np.asarray(labels, dtype=np.int64)
  if not len(labels):
    return None
  log_p = _log_probabilities(probabilities)
  lo, hi = _LOG_T_RANGE
  ratio = (np.sqrt(5.0) - 1.0) / 2.0
  a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
  fa, fb = (_nll(log_p, labels, np.exp(a)), _nll(log_p, labels, np.exp(b)))
  for _ in range(iterations):
    if fa <= fb:
      hi, b, fb = b, a, fa
      a = hi - ratio * (hi - lo)
      fa = _nll(log_p, labels, np.exp(a))
    else:
      lo, a, fa = a, b, fb
      b = lo + ratio * (hi - lo)
      fb = _nll(log_p, labels, np.exp(b))
  return float(np.exp((lo + hi) / 2.0))
