"""Verification and identification figures of embeddings (faces), with error bars.

Embeddings are L2-normalized, so the score of a pair is their cosine
similarity (a dot product) and a pair is accepted as one person when its
score is at least the threshold. A genuine pair shows one person twice, an
impostor pair two people.

* Verification (one-to-one): the ROC (FAR against TAR), its AUC, the equal
  error rate and the TAR at a fixed FAR, with 95% bootstrap intervals.
* Identification (one-to-many): rank-k accuracy against a gallery of
  per-person templates (closed set), and the detection-and-identification
  rate when some probes are of people not enrolled (open set).
* Calibration: the threshold for a target FAR, with the exact
  Clopper-Pearson interval of the FAR it achieves.

Pure numpy; matplotlib is imported only to draw `roc_png`.
"""

import bisect
import io
import math
import warnings

import numpy as np

from imgrec.errors import ImgrecError

CONFIDENCE = 0.95
VERIFICATION_FARS = (1e-2, 1e-3)
OPEN_SET_FARS = (1e-2, 0.1)
RANKS = (1, 5)
BOOTSTRAP_SAMPLES = 1000
# FARs are ratios of counts: 3/300 must count as 0.01.
_FAR_TOLERANCE = 1e-12
# Halving [0, 1] 64 times reaches the float64 resolution of a probability.
_BISECTIONS = 64
_ENOUGH_PAIRS = "at least two images of each of two people"
_PLOT_MIN_FAR = 1e-4


def far_key(far):
  """The report key of a FAR: 0.01 -> "0.01", 1e-05 -> "1e-05"."""
  return format(float(far), "g")


def _matrix(values, what):
  """`values` as a finite float64 matrix [N, D]."""
  x = np.asarray(values, dtype=np.float64)
  if x.ndim != 2 or not np.all(np.isfinite(x)):
    raise ImgrecError(
        f"The {what} must be a finite matrix [number of images, embedding "
        f"size]; pass one embedding per row. Received: shape={x.shape}")
  return x


def _scores(values):
  return np.asarray(values, dtype=np.float64).reshape(-1)


def _identity_index(labels, count, what):
  """(sorted distinct labels, index of each item's label among them)."""
  labels = np.asarray(labels).reshape(-1)
  if len(labels) != count:
    raise ImgrecError(
        f"There are {count} {what} but {len(labels)} labels; pass one label "
        f"per embedding.")
  names, index = np.unique(labels, return_inverse=True)
  return names, index.reshape(-1)


def _unit_rows(x):
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norms, 1e-12)


def _require_pairs(genuine, impostor, what):
  if not len(genuine) or not len(impostor):
    raise ImgrecError(
        f"{what} needs genuine and impostor pairs but got {len(genuine)} "
        f"genuine and {len(impostor)} impostor pairs; use {_ENOUGH_PAIRS}.")


def _check_far(far):
  far = float(far)
  if not 0.0 < far < 1.0:
    raise ImgrecError(f"A target FAR is a fraction between 0 and 1 "
                      f"(exclusive), such as 0.001. Received: far={far}")
  return far


def _all_pairs(embeddings, labels):
  """Scores and identity indices (a, b) of all pairs i < j, and the number of
  identities."""
  x = _matrix(embeddings, "embeddings")
  names, ids = _identity_index(labels, len(x), "embeddings")
  i, j = np.triu_indices(len(x), k=1)
  return (x @ x.T)[i, j], ids[i], ids[j], len(names)


def pair_scores(embeddings, labels):
  """Scores of all unordered pairs of images, split by whether they match.

  Args:
    embeddings: float array [N, D] of L2-normalized embeddings.
    labels: the N identities (any type numpy can sort: str or int).

  Returns:
    (genuine, impostor): float64 arrays of the scores of the pairs i < j with
    the same and with different labels.
  """
  scores, a, b, _ = _all_pairs(embeddings, labels)
  same = a == b
  return scores[same], scores[~same]


def _accepted(scores, thresholds):
  """How many of `scores` are >= each threshold."""
  return len(scores) - np.searchsorted(np.sort(scores), thresholds,
                                       side="left")


class _Pairs:
  """Genuine and impostor scores, each sorted once, highest first.

  The operating points are the distinct scores as thresholds, falling from
  just above the highest score (accepts nothing) to the lowest (accepts
  everything). At each one the pairs accepted are a prefix of each sorted
  list, so the ROC of any weighting of the pairs (see `_Curve`) costs one
  cumulative sum per side: what makes a thousand bootstraps cheap.
  """

  def __init__(self, genuine, impostor):
    genuine, impostor = _scores(genuine), _scores(impostor)
    self.genuine_order = np.argsort(-genuine, kind="stable")
    self.impostor_order = np.argsort(-impostor, kind="stable")
    distinct = np.unique(np.concatenate([genuine, impostor]))[::-1]
    top = distinct[0] if len(distinct) else 1.0
    self.thresholds = np.concatenate([[np.nextafter(top, np.inf)], distinct])
    self.genuine_accepted = _accepted(genuine, self.thresholds)
    self.impostor_accepted = _accepted(impostor, self.thresholds)


def _cumulative(weights, count):
  """[0, w0, w0 + w1, ...]: accepted weight of the top-k pairs, k = 0..n."""
  out = np.zeros(count + 1)
  if weights is None:
    out[1:] = np.arange(1, count + 1)
  else:
    np.cumsum(weights, out=out[1:])
  return out


class _Curve:
  """The ROC of one weighting of `_Pairs`, evaluated at threshold indices.

  Args:
    pairs: the `_Pairs`.
    genuine_weights, impostor_weights: weight of each pair in sorted order
      (highest score first); None weighs every pair 1.
  """

  def __init__(self, pairs, genuine_weights=None, impostor_weights=None):
    self.pairs = pairs
    self.true = _cumulative(genuine_weights, len(pairs.genuine_order))
    self.false = _cumulative(impostor_weights, len(pairs.impostor_order))

  def defined(self):
    """Whether both sides have weight (a resampling may leave none)."""
    return self.true[-1] > 0 and self.false[-1] > 0

  def far(self, index):
    return self.false[self.pairs.impostor_accepted[index]] / self.false[-1]

  def tar(self, index):
    return self.true[self.pairs.genuine_accepted[index]] / self.true[-1]

  def eer(self):
    """(eer, threshold), interpolated where FRR - FAR changes sign."""
    def gap(index):
      return 1.0 - self.tar(index) - self.far(index)
    # The gap falls from 1 (nothing accepted) to -1 (everything accepted).
    k = bisect.bisect_left(range(len(self.pairs.thresholds)), True,
                           key=lambda index: gap(index) <= 0)
    before, after = gap(k - 1), gap(k)
    step = before / (before - after)
    far_before = self.far(k - 1)
    thresholds = self.pairs.thresholds
    return (float(far_before + step * (self.far(k) - far_before)),
            float(thresholds[k - 1]
                  + step * (thresholds[k] - thresholds[k - 1])))

  def at_far_index(self, target):
    """Index of the lowest threshold whose FAR is <= target."""
    # The most impostor pairs (highest first) that fit in the allowed
    # weight, then the lowest threshold accepting no more of them.
    allowed = int(np.searchsorted(
        self.false, target * self.false[-1] * (1.0 + _FAR_TOLERANCE),
        side="right")) - 1
    return int(np.searchsorted(self.pairs.impostor_accepted, allowed,
                               side="right")) - 1

  def at_far(self, target):
    """(tar, threshold) of the lowest threshold whose FAR is <= target."""
    index = self.at_far_index(target)
    return float(self.tar(index)), float(self.pairs.thresholds[index])


def _resolved(num_impostor, far):
  """Whether one false accept is within `far` of `num_impostor` pairs."""
  return num_impostor * far >= 1.0 - _FAR_TOLERANCE


def _curve(genuine, impostor, what):
  genuine, impostor = _scores(genuine), _scores(impostor)
  _require_pairs(genuine, impostor, what)
  return _Curve(_Pairs(genuine, impostor))


def roc_curve(genuine, impostor):
  """The ROC: FAR and TAR at every distinct score as threshold.

  Args:
    genuine: scores of same-person pairs.
    impostor: scores of different-person pairs.

  Returns:
    (far, tar, thresholds): float64 arrays, thresholds falling from just
    above the highest score (accepts nothing: FAR = TAR = 0) to the lowest
    score (accepts everything: FAR = TAR = 1). A pair is accepted when its
    score is >= the threshold.

  Raises:
    ImgrecError: without genuine or without impostor pairs.
  """
  curve = _curve(genuine, impostor, "A ROC curve")
  every = np.arange(len(curve.pairs.thresholds))
  return curve.far(every), curve.tar(every), curve.pairs.thresholds


def roc_auc(genuine, impostor):
  """Area under the ROC: P(genuine score > impostor score), ties count half.

  Raises:
    ImgrecError: without genuine or without impostor pairs.
  """
  genuine, impostor = _scores(genuine), np.sort(_scores(impostor))
  _require_pairs(genuine, impostor, "A ROC AUC")
  below = np.searchsorted(impostor, genuine, side="left")
  tied = np.searchsorted(impostor, genuine, side="right") - below
  return float((below.sum() + 0.5 * tied.sum())
               / (len(genuine) * len(impostor)))


def eer(genuine, impostor):
  """Equal error rate: where the FAR equals the FRR (1 - TAR).

  Interpolated linearly between the two neighbouring operating points
  between which FRR - FAR changes sign.

  Returns:
    (eer, threshold).

  Raises:
    ImgrecError: without genuine or without impostor pairs.
  """
  return _curve(genuine, impostor, "An equal error rate").eer()


def tar_at_far(genuine, impostor, far):
  """The highest TAR whose FAR is at most `far`.

  Args:
    genuine: scores of same-person pairs.
    impostor: scores of different-person pairs.
    far: the FAR allowed, in (0, 1).

  Returns:
    (tar, threshold, resolved): threshold is the lowest one whose FAR is <=
    `far`; `resolved` is False when there are too few impostor pairs to
    measure that FAR (1 / num_impostor > far): then the threshold accepts
    no impostor pair at all, and the true FAR is unknown below 1/num_impostor.

  Raises:
    ImgrecError: without genuine or without impostor pairs, or a FAR outside
      (0, 1).
  """
  far = _check_far(far)
  tar, threshold = _curve(genuine, impostor, "A TAR at a FAR").at_far(far)
  return tar, threshold, _resolved(len(_scores(impostor)), far)


def _interval(values):
  """95% percentile interval of bootstrap values (NaN: skipped samples)."""
  values = np.asarray(values, dtype=np.float64)
  values = values[np.isfinite(values)]
  if not len(values):
    return [None, None]
  tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
  low, high = np.percentile(values, [tail, 100.0 - tail])
  return [float(low), float(high)]


def _bootstrap(pairs, genuine_ids, impostor_ids, num_identities, fars,
               samples, seed):
  """EER and TAR@FAR over `samples` resamplings of the identities.

  Drawing identity c w_c times weighs its genuine pairs by w_c and its
  impostor pairs with identity d by w_c * w_d, which equals rebuilding the
  pairs of the resampled identities (two copies of one person pair with
  nobody: they are neither genuine nor impostor pairs).

  Args:
    pairs: the `_Pairs`.
    genuine_ids: identity index of each genuine pair, in input order.
    impostor_ids: (a, b) identity indices of each impostor pair.
    num_identities: number of identities.
    fars: FARs of the TARs.
    samples: number of resamplings.
    seed: seed of the resampling.

  Returns:
    (eers [samples], tars [samples, len(fars)]); NaN where a resampling has
    no genuine or no impostor pair.
  """
  rng = np.random.default_rng(seed)
  genuine_ids = genuine_ids[pairs.genuine_order]
  a, b = (ids[pairs.impostor_order] for ids in impostor_ids)
  eers = np.full(samples, np.nan)
  tars = np.full((samples, len(fars)), np.nan)
  for s in range(samples):
    drawn = np.bincount(rng.integers(0, num_identities, num_identities),
                        minlength=num_identities).astype(np.float64)
    curve = _Curve(pairs, drawn[genuine_ids], drawn[a] * drawn[b])
    if not curve.defined():
      continue
    eers[s] = curve.eer()[0]
    tars[s] = [curve.at_far(far)[0] for far in fars]
  return eers, tars


def verification_report(embeddings, labels, fars=VERIFICATION_FARS,
                        bootstrap=BOOTSTRAP_SAMPLES, seed=0):
  """Verification figures of all pairs of a labelled set of embeddings.

  The 95% intervals are percentile bootstraps that resample IDENTITIES with
  replacement and recompute the figure on the pairs of the resampled
  people. The pairs are not independent: one person's images are in many
  pairs, and a person who photographs badly makes all of them hard.
  Resampling pairs as if they were independent gives intervals that are
  falsely narrow, the more so the more images each person has.

  Args:
    embeddings: float array [N, D] of L2-normalized embeddings.
    labels: the N identities.
    fars: FARs at which to report the TAR.
    bootstrap: number of resamplings; 0 leaves the intervals out (None).
    seed: seed of the resampling.

  Returns:
    A JSON-serializable dict: num_genuine, num_impostor, num_identities,
    bootstrap (the number of resamplings), roc_auc, eer, eer_threshold,
    eer_ci [lo, hi], tar_at_far {far_key: {tar, threshold, ci [lo, hi],
    resolved}}; `resolved` is False when there are fewer than 1/far
    impostor pairs (that FAR is then not measured, only bounded).

  Raises:
    ImgrecError: without genuine or without impostor pairs.
  """
  fars = [_check_far(far) for far in fars]
  scores, id_a, id_b, num_identities = _all_pairs(embeddings, labels)
  same = id_a == id_b
  genuine, impostor = scores[same], scores[~same]
  _require_pairs(genuine, impostor, "A verification report")
  pairs = _Pairs(genuine, impostor)
  curve = _Curve(pairs)
  rate, threshold = curve.eer()
  eers, tars = _bootstrap(pairs, id_a[same], (id_a[~same], id_b[~same]),
                          num_identities, fars, int(bootstrap), seed)
  at_far = {}
  for f, target in enumerate(fars):
    value, value_threshold = curve.at_far(target)
    at_far[far_key(target)] = {
        "tar": value, "threshold": value_threshold,
        "ci": _interval(tars[:, f]),
        "resolved": bool(_resolved(len(impostor), target))}
  return {
      "num_genuine": int(len(genuine)),
      "num_impostor": int(len(impostor)),
      "num_identities": int(num_identities),
      "bootstrap": int(bootstrap),
      "roc_auc": roc_auc(genuine, impostor),
      "eer": rate,
      "eer_threshold": threshold,
      "eer_ci": _interval(eers),
      "tar_at_far": at_far,
  }


def identity_templates(embeddings, labels):
  """One template per identity: the mean of its embeddings, re-normalized.

  Args:
    embeddings: float array [N, D].
    labels: the N identities.

  Returns:
    (names, templates): the sorted distinct labels and a float64 array
    [len(names), D] of unit rows (a zero mean stays zero).
  """
  x = _matrix(embeddings, "gallery embeddings")
  names, index = _identity_index(labels, len(x), "gallery embeddings")
  sums = np.zeros((len(names), x.shape[1]))
  np.add.at(sums, index, x)
  return names, _unit_rows(sums)


MATCHING = ("nearest", "template")


def person_scores(probes, gallery, gallery_labels, matching="nearest"):
  """(names, scores [P, people]) of probes against each enrolled person.

  "nearest": the best cosine to any of the person's images (people whose
  photos differ, with and without glasses say, keep both looks);
  "template": the cosine to the mean of their embeddings.
  """
  if matching not in MATCHING:
    raise ImgrecError(f"Unknown matching {matching!r}: one of "
                      f"{', '.join(MATCHING)}.")
  if matching == "template":
    names, templates = identity_templates(gallery, gallery_labels)
    return names, np.asarray(probes, np.float64) @ templates.T
  x = _matrix(gallery, "gallery embeddings")
  names, index = _identity_index(gallery_labels, len(x), "gallery embeddings")
  each = np.asarray(probes, np.float64) @ x.T
  scores = np.full((len(each), len(names)), -np.inf)
  for j in range(len(names)):
    scores[:, j] = each[:, index == j].max(axis=1)
  return names, scores


def _probe_scores(gallery, gallery_labels, probes, probe_labels,
                  matching="nearest"):
  """Person names, probe-to-person scores and which probes are known."""
  names, templates = identity_templates(gallery, gallery_labels)
  probes = _matrix(probes, "probe embeddings")
  if probes.shape[1] != templates.shape[1]:
    raise ImgrecError(
        f"The probe embeddings have {probes.shape[1]} values and the gallery "
        f"ones {templates.shape[1]}; embed both with the same model.")
  probe_labels = np.asarray(probe_labels).reshape(-1)
  if len(probe_labels) != len(probes):
    raise ImgrecError(
        f"There are {len(probes)} probe embeddings but {len(probe_labels)} "
        f"probe labels; pass one label per probe.")
  _, scores = person_scores(probes, gallery, gallery_labels, matching)
  return names, scores, probe_labels, np.isin(probe_labels, names)


def identification_report(gallery, gallery_labels, probes, probe_labels,
                          ranks=RANKS, matching="nearest"):
  """Closed-set identification: is the right person among the top r?

  Each probe is scored against every enrolled person (`person_scores`:
  nearest image, or template); its rank is 1 + the number of people who
  score higher than the right one.

  Args:
    gallery: float array [G, D] of the enrolled embeddings.
    gallery_labels: the G identities.
    probes: float array [P, D] of the probe embeddings.
    probe_labels: the P identities.
    ranks: the r of the rank-r rates.
    matching: "nearest" or "template" (see `person_scores`).

  Returns:
    A dict: "rank{r}" for each r (fraction of probes ranked r or better,
    None without probes), num_probes (of enrolled people), num_identities,
    num_unknown_probes (probes of people not enrolled: a closed-set figure
    leaves them out; see `open_set_report`).
  """
  names, scores, probe_labels, known = _probe_scores(
      gallery, gallery_labels, probes, probe_labels, matching)
  scores = scores[known]
  right = np.searchsorted(names, probe_labels[known])
  right_scores = scores[np.arange(len(scores)), right]
  rank = 1 + (scores > right_scores[:, None]).sum(axis=1)
  out = {f"rank{r}": float(np.mean(rank <= r)) if len(rank) else None
         for r in ranks}
  out.update(num_probes=int(known.sum()), num_identities=int(len(names)),
             num_unknown_probes=int((~known).sum()))
  return out


def open_set_report(gallery, gallery_labels, probes, probe_labels,
                    fars=OPEN_SET_FARS, matching="nearest"):
  """Open-set identification: the detection and identification rate.

  A probe is answered with its best-scoring enrolled person when that score
  reaches the threshold. Probes of people not in the gallery are unknown;
  at each FAR the threshold is the lowest that accepts at most that
  fraction of them (by their best score), and the DIR is the fraction of
  enrolled people's probes whose best match is right AND reaches it.

  Args:
    gallery: float array [G, D] of the enrolled embeddings.
    gallery_labels: the G identities.
    probes: float array [P, D] of the probe embeddings.
    probe_labels: the P identities; those not in `gallery_labels` are
      unknown.
    fars: fractions of unknown probes allowed through.

  Returns:
    A dict: dir_at_far {far_key: {dir (None without known probes),
    threshold, unknown_probes, resolved (False when there are fewer than
    1/far unknown probes)}}, num_known_probes, num_unknown_probes,
    num_identities.

  Raises:
    ImgrecError: when no probe is of a person outside the gallery.
  """
  fars = [_check_far(far) for far in fars]
  names, scores, probe_labels, known = _probe_scores(
      gallery, gallery_labels, probes, probe_labels, matching)
  best = scores.argmax(axis=1)
  best_scores = scores[np.arange(len(scores)), best]
  right = known & (names[best] == probe_labels)
  unknown = best_scores[~known]
  if not len(unknown):
    raise ImgrecError(
        "An open-set report needs probes of people who are not in the "
        "gallery; leave some people out of the enrollment and use their "
        "images as probes.")
  # Right answers are the genuine side, unknown probes the impostor side.
  curve = _Curve(_Pairs(best_scores[right], unknown))
  num_known = int(known.sum())
  out = {}
  for target in fars:
    index = curve.at_far_index(target)
    hits = curve.pairs.genuine_accepted[index]
    out[far_key(target)] = {
        "dir": float(hits / num_known) if num_known else None,
        "threshold": float(curve.pairs.thresholds[index]),
        "unknown_probes": int(len(unknown)),
        "resolved": bool(_resolved(len(unknown), target))}
  return {"dir_at_far": out, "num_known_probes": num_known,
          "num_unknown_probes": int(len(unknown)),
          "num_identities": int(len(names))}


def _log_binomial_cdf(k, n):
  """The function p -> log P(X <= k) for X ~ Binomial(n, p), 0 <= k < n."""
  i = np.arange(k + 1, dtype=np.float64)
  # log C(n, i) = sum over j <= i of log((n - j + 1) / j).
  log_choose = np.concatenate(
      [[0.0], np.cumsum(np.log(n - i[1:] + 1.0) - np.log(i[1:]))])

  def log_cdf(p):
    terms = log_choose + i * math.log(p) + (n - i) * math.log1p(-p)
    top = terms.max()
    return float(top + np.log(np.exp(terms - top).sum()))
  return log_cdf


def _solve_falling(function, target):
  """The p in (0, 1) where a decreasing `function` crosses `target`."""
  low, high = 0.0, 1.0
  for _ in range(_BISECTIONS):
    middle = (low + high) / 2.0
    if function(middle) > target:
      low = middle
    else:
      high = middle
  return (low + high) / 2.0


def clopper_pearson(k, n, confidence=CONFIDENCE):
  """Exact (Clopper-Pearson) interval of a rate seen as k events in n trials.

  The lower bound is the p at which P(X >= k) = (1 - confidence) / 2, the
  upper the p at which P(X <= k) is that, for X ~ Binomial(n, p): the beta
  quantiles, found by bisection on the binomial CDF summed in log space.

  Args:
    k: events (false accepts).
    n: trials (impostor pairs), at least 1.
    confidence: coverage of the interval.

  Returns:
    [lower, upper].
  """
  k, n = int(k), int(n)
  if n < 1 or not 0 <= k <= n:
    raise ValueError(f"Need 0 <= k <= n and n >= 1. Received: k={k}, n={n}")
  tail = (1.0 - confidence) / 2.0
  lower = (0.0 if k == 0 else
           _solve_falling(_log_binomial_cdf(k - 1, n), math.log1p(-tail)))
  upper = (1.0 if k == n else
           _solve_falling(_log_binomial_cdf(k, n), math.log(tail)))
  return [lower, upper]


def calibrate_threshold(genuine, impostor, target_far):
  """The decision threshold for a target FAR, with what it achieves.

  Args:
    genuine, impostor: scores of same-person and of different-person pairs,
      best not those the figures to report are measured on.
    target_far: the FAR allowed, in (0, 1).

  Returns:
    A dict: threshold (the lowest whose FAR on these pairs is <= target),
    far (achieved on these impostor pairs), far_ci [lo, hi] (exact 95%
    Clopper-Pearson interval of that FAR), tar (at the threshold),
    num_genuine, num_impostor, target_far, resolved (False with fewer than
    1/target_far impostor pairs: the threshold then accepts none of them
    and far_ci says how little that proves), pairs_needed (the impostor
    pairs that could show the target at all: with none falsely accepted,
    far_ci's top is 1 - 0.025**(1/num_impostor), about 3.7/num_impostor,
    the rule of three of a two-sided interval) and
    enough_pairs (False with fewer: far_ci then reaches past the target
    whatever the threshold, and the FAR met may well be worse than asked).

  Raises:
    ImgrecError: without genuine or without impostor pairs.
  """
  genuine, impostor = _scores(genuine), _scores(impostor)
  _require_pairs(genuine, impostor, "Calibrating a threshold")
  tar, threshold, resolved = tar_at_far(genuine, impostor, target_far)
  false_accepts = int(np.sum(impostor >= threshold))
  far_ci = clopper_pearson(false_accepts, len(impostor))
  # With k = 0 the interval's top is 1 - tail**(1/n).
  pairs_needed = math.ceil(math.log((1.0 - CONFIDENCE) / 2.0)
                           / math.log1p(-target_far))
  return {
      "threshold": threshold,
      "far": false_accepts / len(impostor),
      "far_ci": far_ci,
      "tar": tar,
      "num_genuine": int(len(genuine)),
      "num_impostor": int(len(impostor)),
      "target_far": float(target_far),
      "resolved": bool(resolved),
      "pairs_needed": pairs_needed,
      "enough_pairs": bool(len(impostor) >= pairs_needed),
  }


def roc_png(genuine, impostor, title="Verification ROC",
            fars=VERIFICATION_FARS):
  """The ROC curve as a PNG: TAR against FAR on a log axis.

  The FAR axis runs from 1e-4, or from 1/num_impostor when there are fewer
  impostor pairs than that measures, to 1; operating points with FAR 0 sit
  on its left edge. The EER and the TAR at each of `fars` are marked.

  Args:
    genuine: scores of same-person pairs.
    impostor: scores of different-person pairs.
    title: title of the picture (drawn literally).
    fars: FARs whose TAR is marked.

  Returns:
    PNG bytes.

  Raises:
    ImgrecError: without genuine or without impostor pairs.
  """
  # Imported here: matplotlib costs a second and only this picture needs it.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  curve = _curve(genuine, impostor, "A ROC picture")
  far, tar, _ = roc_curve(genuine, impostor)
  num_impostor = len(_scores(impostor))
  low = max(_PLOT_MIN_FAR, 1.0 / num_impostor)
  figure = Figure(figsize=(6.0, 5.0), dpi=100, layout="constrained")
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  axes.step(np.clip(far, low, 1.0), tar, where="post", color="tab:blue",
            label=f"ROC (AUC {roc_auc(genuine, impostor):.4f})")
  rate = curve.eer()[0]
  axes.plot([max(rate, low)], [1.0 - rate], "o", color="tab:red",
            label=f"EER {rate:.2%}")
  for target in fars:
    if target < low:
      continue
    value, threshold = curve.at_far(_check_far(target))
    axes.plot([target], [value], "s", label=f"TAR@FAR={far_key(target)}: "
              f"{value:.2%} (threshold {threshold:.3f})")
  axes.set_xscale("log")
  axes.set_xlim(low, 1.0)
  axes.set_ylim(0.0, 1.01)
  axes.set_xlabel("false accept rate (impostor pairs accepted)")
  axes.set_ylabel("true accept rate (genuine pairs accepted)")
  axes.grid(True, which="both", alpha=0.3)
  axes.legend(loc="lower right", fontsize=8)
  axes.set_title(str(title), parse_math=False)
  buffer = io.BytesIO()
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
    figure.savefig(buffer, format="png", dpi=100)
  return buffer.getvalue()
