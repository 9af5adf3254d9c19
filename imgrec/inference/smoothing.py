"""Steady labels over time: smoothed probabilities, hysteresis and segments.

A classifier run frame by frame flickers between labels. `TemporalSmoother`
averages the probabilities (an exponential or a moving average) and changes
its label only when another one has led for `min_hold` seconds; `Segments`
turns the steady labels into [start, end) spans, each given out as soon as
it closes, so a stream of any length is summed up in constant memory.

    smoother = TemporalSmoother(class_names, mode="ema", window=0.5,
                                min_hold=0.4)
    for t, probabilities in frames:
      step = smoother.update(t, probabilities)
      print(step.label, step.score)
"""

import collections
import dataclasses
import math

import numpy as np

from imgrec.config import SMOOTHING_MODES
from imgrec.errors import ImgrecError


class _Average:
  """Per-class scores averaged in time (`TemporalSmoother`'s `mode` and
  `window`), checked frame by frame."""

  def __init__(self, mode, window, min_hold):
    if mode not in SMOOTHING_MODES:
      raise ImgrecError(f"Unknown smoothing {mode!r}: one of "
                        f"{', '.join(SMOOTHING_MODES)}.")
    if not (0 <= window < math.inf and 0 <= min_hold < math.inf):
      raise ImgrecError("Smoothing window and min_hold must be finite and at "
                        f"least 0 seconds. Received: window={window}, "
                        f"min_hold={min_hold}")
    self.mode, self.window = mode, float(window)
    self._average = None
    self._last_t = None
    self._recent = collections.deque()

  def add(self, t, scores, count):
    """(the frame's scores, their average so far) for the frame at `t`.

    Raises:
      ImgrecError: time going backwards or not `count` scores.
    """
    p = np.asarray(scores, np.float64).reshape(-1)
    if len(p) != count:
      raise ImgrecError(f"Expected {count} probabilities a frame. "
                        f"Received: {len(p)}")
    if self._last_t is not None and t < self._last_t:
      raise ImgrecError(f"Frame times must not go backwards. Received: "
                        f"t={t} after t={self._last_t}")
    smoothed = self._smooth(t, p)
    self._last_t = t
    return p, smoothed

  def _smooth(self, t, p):
    if self.mode == "none" or self.window == 0:
      return p
    if self.mode == "mean":
      self._recent.append((t, p))
      while self._recent and self._recent[0][0] <= t - self.window:
        self._recent.popleft()
      return np.mean([q for _, q in self._recent], axis=0)
    if self._average is None:
      self._average = p
    else:
      weight = 1.0 - math.exp(-max(t - self._last_t, 0.0) / self.window)
      self._average = self._average + weight * (p - self._average)
    return self._average


@dataclasses.dataclass(frozen=True)
class Step:
  """One frame's raw and steady answers."""
  t: float
  label: str
  score: float
  smoothed_label: str
  smoothed_score: float


class TemporalSmoother:
  """Smooths per-frame class probabilities and holds labels steady.

  Args:
    class_names: the classifier's classes, in probability order.
    mode: "ema" (exponential average with time constant `window` seconds,
      so uneven frame gaps weigh right), "mean" (average of the frames of the
      last `window` seconds) or "none" (raw probabilities; hysteresis only).
    window: seconds of the average.
    min_hold: seconds a new leading label must keep the lead before the
      steady label switches to it (0: switch at once).
  """

  def __init__(self, class_names, mode="ema", window=0.5, min_hold=0.4):
    self._average = _Average(mode, window, min_hold)
    self.class_names = list(class_names)
    self.mode, self.window, self.min_hold = mode, float(window), float(min_hold)
    self._label = None
    self._candidate = None
    self._candidate_since = None
    # Of the last update: the smoothed probabilities, and when the steady
    # label changed, the time the new label took the lead (else None).
    self.last_smoothed = None
    self.switched_from = None

  def update(self, t, probabilities):
    """Adds the frame at `t` seconds; returns its Step.

    Raises:
      ImgrecError: time going backwards or probabilities of the wrong size.
    """
    p, smoothed = self._average.add(t, probabilities, len(self.class_names))
    self.last_smoothed, self.switched_from = smoothed, None
    leader = int(np.argmax(smoothed))
    if self._label is None:
      self._label = leader
    elif leader == self._label:
      self._candidate = None
    else:
      if leader != self._candidate:
        self._candidate, self._candidate_since = leader, t
      if t - self._candidate_since >= self.min_hold - 1e-9:
        self._label, self._candidate = leader, None
        self.switched_from = self._candidate_since
    raw = int(np.argmax(p))
    return Step(t=float(t), label=self.class_names[raw],
                score=float(p[raw]),
                smoothed_label=self.class_names[self._label],
                smoothed_score=float(smoothed[self._label]))


@dataclasses.dataclass(frozen=True)
class LabelSetStep:
  """One frame's raw and steady label sets (a multi-label model's)."""
  t: float
  labels: tuple  # Above their thresholds in this frame, best first.
  scores: dict  # {label: this frame's score}
  smoothed_labels: tuple  # The steady set, best first.
  smoothed_scores: dict  # {label: smoothed score}


class LabelSetSmoother:
  """Smooths each label's score in time and holds the set of labels steady.

  A multi-label model scores every label on its own, so each label has its
  own steady state: it enters the set once its smoothed score has stayed at
  or above its threshold for `min_hold` seconds, and leaves once it has
  stayed below for as long (the first frame decides at once).

  Args:
    class_names: the labels, in score order.
    thresholds: each label's threshold, in the same order.
    mode, window, min_hold: as `TemporalSmoother`'s.
  """

  def __init__(self, class_names, thresholds, mode="ema", window=0.5,
               min_hold=0.4):
    self._average = _Average(mode, window, min_hold)
    self.class_names = list(class_names)
    self.thresholds = np.asarray(thresholds, np.float64).reshape(-1)
    if len(self.thresholds) != len(self.class_names):
      raise ImgrecError(f"Expected a threshold for each of the "
                        f"{len(self.class_names)} labels. Received: "
                        f"{len(self.thresholds)}")
    self.min_hold = float(min_hold)
    self._steady = None  # bool [C]
    self._since = np.full(len(self.class_names), np.nan)

  def _names(self, present, scores):
    order = np.argsort(-scores, kind="stable")
    return tuple(self.class_names[i] for i in order if present[i])

  def update(self, t, scores):
    """Adds the frame at `t` seconds; returns its LabelSetStep.

    Raises:
      ImgrecError: time going backwards or scores of the wrong size.
    """
    p, smoothed = self._average.add(t, scores, len(self.class_names))
    above = smoothed >= self.thresholds
    if self._steady is None:
      self._steady = above.copy()
    differ = above != self._steady
    self._since[~differ] = np.nan
    self._since[differ & np.isnan(self._since)] = t
    flip = differ & (t - self._since >= self.min_hold - 1e-9)
    self._steady[flip] = above[flip]
    self._since[flip] = np.nan
    return LabelSetStep(
        t=float(t), labels=self._names(p >= self.thresholds, p),
        scores={n: float(s) for n, s in zip(self.class_names, p)},
        smoothed_labels=self._names(self._steady, smoothed),
        smoothed_scores={n: float(s) for n, s in zip(self.class_names,
                                                       smoothed)})


class LabelSegments:
  """Per label, the stretches it is in the steady set, each given out as it
  closes (flat memory over any length of stream).

  Args:
    gaps: frame gaps kept for the open stretches' end (see `Segments`).
  """

  def __init__(self, gaps=1000):
    self._open = {}  # label -> [start, score sum, count]
    self._last_t = None
    self._gaps = collections.deque(maxlen=gaps)
    self.count = 0

  def add(self, t, labels, scores):
    """Adds a frame's steady labels; returns the segments they closed:
    [{"segment": True, "start", "end", "label", "score"}]."""
    if self._last_t is not None:
      self._gaps.append(t - self._last_t)
    self._last_t = t
    closed = [self._close(label, t) for label in list(self._open)
              if label not in labels]
    for label in labels:
      entry = self._open.setdefault(label, [t, 0.0, 0])
      entry[1] += scores[label]
      entry[2] += 1
    return closed

  def _close(self, label, end):
    start, total, count = self._open.pop(label)
    self.count += 1
    return {"segment": True, "start": start, "end": float(end),
            "label": label, "score": float(total / count)}

  def close(self, end=None):
    """The stretches still open, closed at `end` (default: the last frame's
    time plus the typical frame gap)."""
    if end is None and self._last_t is not None:
      gap = float(np.median(self._gaps)) if self._gaps else 0.0
      end = self._last_t + gap
    return [self._close(label, end) for label in sorted(self._open)]


class Backdated:
  """Steady labels whose changes are dated back to where the new label began.

  A causal smoother switches `min_hold` seconds, plus the average's own lag,
  after the scene changed. Over a file nothing forces that lag: steps are
  held back for `min_hold + window` seconds, and when the steady label
  changes, it is dated back to the start of the run of raw labels that
  carried the new label into the lead (at most `window` seconds before the
  average's lead began), and the held steps from there on get it. Not for
  live streams (results come `min_hold + window` seconds late).

      backdated = Backdated(TemporalSmoother(names, min_hold=0.4))
      for t, p in frames:
        for step in backdated.update(t, p):
          ...
      for step in backdated.flush():
        ...

  Args:
    smoother: a TemporalSmoother.
  """

  def __init__(self, smoother):
    self.smoother = smoother
    self.lookback = 0.0 if smoother.mode == "none" else smoother.window
    self._held = collections.deque()  # [Step, smoothed probabilities]

  def update(self, t, probabilities):
    """Adds a frame; returns the Steps that are final now."""
    smoother = self.smoother
    step = smoother.update(t, probabilities)
    self._held.append([step, smoother.last_smoothed])
    if smoother.switched_from is not None:
      label = step.smoothed_label
      index = smoother.class_names.index(label)
      held = list(self._held)
      start = next(i for i, (s, _) in enumerate(held)
                   if s.t >= smoother.switched_from)
      # The raw run of the new label that led into the average's lead.
      while (start > 0 and held[start - 1][0].label == label and
             held[start - 1][0].t >= smoother.switched_from - self.lookback):
        start -= 1
      for entry in held[start:]:
        entry[0] = dataclasses.replace(
            entry[0], smoothed_label=label,
            smoothed_score=float(entry[1][index]))
    out = []
    final = t - smoother.min_hold - self.lookback + 1e-9
    while self._held and self._held[0][0].t <= final:
      out.append(self._held.popleft()[0])
    return out

  def flush(self):
    """The Steps still held, at the end of the stream."""
    out = [held[0] for held in self._held]
    self._held.clear()
    return out


class Segments:
  """The steady segments of a stream of steps, each given out as it closes.

  Holds the open segment (start, label, score sum and count) and the last
  `gaps` frame gaps only, so memory stays flat however long the stream.

      segments = Segments()
      for step in steps:
        closed = segments.add(step.t, step.smoothed_label,
                              step.smoothed_score)
        if closed:
          print(closed)
      last = segments.close()

  Args:
    gaps: frame gaps kept for the last segment's end (their median is the
      typical gap).
  """

  def __init__(self, gaps=1000):
    self._open = None  # [start, label, score sum, count]
    self._last_t = None
    self._gaps = collections.deque(maxlen=gaps)
    self.count = 0  # Segments given out.

  def add(self, t, label, score):
    """Adds a frame's steady label; returns the segment it closed, or None.

    Returns:
      {"segment": True, "start", "end", "label", "score"} (score: the mean
      smoothed score over the segment) when `label` starts a new segment.
    """
    if self._last_t is not None:
      self._gaps.append(t - self._last_t)
    self._last_t = t
    if self._open is not None and self._open[1] == label:
      self._open[2] += score
      self._open[3] += 1
      return None
    closed = self._close(t)
    self._open = [t, label, score, 1]
    return closed

  def _close(self, end):
    if self._open is None:
      return None
    start, label, total, count = self._open
    self._open = None
    self.count += 1
    return {"segment": True, "start": start, "end": float(end),
            "label": label, "score": float(total / count)}

  def close(self, end=None):
    """The last segment (None if there was no frame).

    Args:
      end: the stream's end time (default: the last frame's time plus the
        typical frame gap).
    """
    if self._open is None:
      return None
    if end is None:
      gap = float(np.median(self._gaps)) if self._gaps else 0.0
      end = self._last_t + gap
    return self._close(end)


def segments(steps, end=None):
  """[{"segment": True, "start", "end", "label", "score"}] of steady labels.

  Args:
    steps: Steps in time order.
    end: the stream's end time (default: the last frame's time plus the
      typical frame gap).

  Returns:
    One dict a run of equal `smoothed_label`s; `score` is the mean smoothed
    score over the run.
  """
  tracker, out = Segments(), []
  for step in steps:
    closed = tracker.add(step.t, step.smoothed_label, step.smoothed_score)
    if closed:
      out.append(closed)
  last = tracker.close(end)
  return out + [last] if last else out


def switches(labels):
  """How many times a sequence of labels changes."""
  return int(sum(a != b for a, b in zip(labels, labels[1:])))
