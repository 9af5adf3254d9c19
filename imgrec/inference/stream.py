"""Classifies a video or stream frame by frame, with labels held steady in time.

    clf = Classifier.load("runs/x/export/model.tflite")
    for step in classify_stream(clf, video.frames("cam.mp4", fps=10)):
      print(step)      # {"t", "frame", "label", "score", "smoothed_label", ...}

With `realtime=True` a file plays on its own clock, as a camera would: the
frame at time t exists from start + t on, frames that inference has not taken
by the time newer ones arrive are dropped, and each row says how far behind
the source its result came out. `annotated` draws each steady label on its
frame into a video file (`video.AnnotatedWriter`).
"""

import collections
import random
import threading
import time

import numpy as np

from imgrec.inference import smoothing

# Bytes of decoded frames waiting ahead of inference, and of one batch: at
# most this much (and at least one frame), whatever the frame size: about
# twenty 1080p frames wait and ten make a batch; an 8K frame goes alone.
PREFETCH_BYTES = 128 << 20
BATCH_BYTES = 64 << 20
# Lags kept for the realtime percentiles (a uniform sample beyond that).
_LAG_SAMPLE = 10_000


def _nbytes(frame):
  return getattr(getattr(frame, "rgb", None), "nbytes", 0)


class LiveFeed:
  """Frames on the source's clock, read by a thread; the newest are kept.

  Args:
    frames: an iterable of video.Frame.
    keep: frames kept waiting; older ones are dropped when a newer arrives
      (also beyond `PREFETCH_BYTES` of pixels).
    paced: release each frame at its own time (a file played live); False
      for a source that is live already (camera, stream URL).
    clock: seconds, monotonic.
  """

  def __init__(self, frames, *, keep=1, paced=True, clock=time.monotonic):
    self._frames, self._paced, self._clock = frames, paced, clock
    self._waiting = collections.deque()
    self._bytes = 0
    self._keep = max(1, int(keep))
    self._ready = threading.Condition()
    self._done = False
    self._stop = threading.Event()
    self._error = None
    self.start = None  # Clock time of the source's t = 0.
    self.read = 0
    self._thread = threading.Thread(target=self._run, name="imgrec-feed",
                                    daemon=True)
    self._thread.start()

  def _run(self):
    try:
      for frame in self._frames:
        if self._stop.is_set():
          break
        now = self._clock()
        if self.start is None:
          self.start = now - frame.t
        elif self._paced:
          wait = self.start + frame.t - now
          if wait > 0 and self._stop.wait(wait):
            break
        with self._ready:
          self.read += 1
          self._waiting.append(frame)
          self._bytes += _nbytes(frame)
          while len(self._waiting) > 1 and (
              len(self._waiting) > self._keep or
              self._bytes > PREFETCH_BYTES):
            self._bytes -= _nbytes(self._waiting.popleft())
          self._ready.notify()
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e  # Raised in the reader's thread by `take`.
    finally:
      with self._ready:
        self._done = True
        self._ready.notify()

  def take(self):
    """The frames waiting now (at least one), or [] at the end."""
    with self._ready:
      while not self._waiting and not self._done:
        self._ready.wait()
      out = list(self._waiting)
      self._waiting.clear()
      self._bytes = 0
    if not out and self._error is not None:
      raise self._error
    return out

  def behind(self, frame):
    """Seconds between the frame's time on the source and now."""
    return self._clock() - (self.start + frame.t)

  def close(self):
    self._stop.set()
    with self._ready:
      self._waiting.clear()
      self._bytes = 0
    self._thread.join(timeout=5.0)


def prefetched(frames, depth=32, max_bytes=None):
  """`frames`, decoded ahead in a thread while the caller classifies.

  Decoding (FFmpeg, outside the GIL) and inference then overlap. At most
  `depth` frames and `max_bytes` (default `PREFETCH_BYTES`) of pixels wait
  (always at least one frame). An error of the reader reaches the caller after the frames before
  it; closing the generator stops the reader.
  """
  max_bytes = PREFETCH_BYTES if max_bytes is None else max_bytes
  waiting = collections.deque()  # (item, bytes)
  ready = threading.Condition()
  held = [0]  # Bytes waiting.
  stop = threading.Event()
  end = object()

  def put(item):
    """Waits for room; False once the caller has stopped."""
    size = _nbytes(item)
    with ready:
      while waiting and (len(waiting) >= max(1, depth) or
                         held[0] + size > max_bytes):
        if stop.is_set():
          return False
        ready.wait(0.1)
      if stop.is_set():
        return False
      waiting.append((item, size))
      held[0] += size
      ready.notify_all()
    return True

  def read():
    try:
      for frame in frames:
        if not put(frame):
          return
      put(end)
    except BaseException as e:  # pylint: disable=broad-except
      put(e)

  reader = threading.Thread(target=read, name="imgrec-decode", daemon=True)
  reader.start()
  try:
    while True:
      with ready:
        while not waiting:
          ready.wait()
        item, size = waiting.popleft()
        held[0] -= size
        ready.notify_all()
      if item is end:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    with ready:
      ready.notify_all()
    reader.join(timeout=5.0)


class _Sample:
  """At most `size` values drawn uniformly from all added (all of them
  while there are fewer), and the exact maximum: percentiles of a stream
  of any length in constant memory."""

  def __init__(self, size=_LAG_SAMPLE):
    self.values, self.size, self.seen, self.max = [], size, 0, None
    self._random = random.Random(0)

  def add(self, value):
    self.seen += 1
    self.max = value if self.max is None else max(self.max, value)
    if len(self.values) < self.size:
      self.values.append(value)
    else:
      slot = self._random.randrange(self.seen)
      if slot < self.size:
        self.values[slot] = value


def _summary(feed, classified, lags, seconds):
  values = np.asarray(lags.values, np.float64)
  pick = (lambda q: round(float(np.percentile(values, q)), 4)) if len(
      values) else (lambda q: None)
  return {"frames": feed.read, "classified": classified,
          "dropped": feed.read - classified,
          "fps": round(classified / seconds, 2) if seconds > 0 else None,
          "lag_s": {"median": pick(50), "p90": pick(90),
                    "max": None if lags.max is None else round(lags.max, 4)}}


def _row(step, index, **extra):
  if isinstance(step, smoothing.LabelSetStep):
    return {"t": round(step.t, 4), "frame": index,
            "labels": list(step.labels), "scores": step.scores,
            "smoothed_labels": list(step.smoothed_labels),
            "smoothed_scores": step.smoothed_scores, **extra}
  return {"t": round(step.t, 4), "frame": index, "label": step.label,
          "score": step.score, "smoothed_label": step.smoothed_label,
          "smoothed_score": step.smoothed_score, **extra}


def _smoother(classifier, mode, window, min_hold):
  """A multi-label model's (one with thresholds) LabelSetSmoother, else a
  TemporalSmoother."""
  thresholds = getattr(classifier, "thresholds", None)
  if thresholds is not None:
    return smoothing.LabelSetSmoother(classifier.class_names, thresholds,
                                      mode=mode, window=window,
                                      min_hold=min_hold)
  # With an open set, "unknown" is one more answer to smooth and hold.
  return smoothing.TemporalSmoother(
      getattr(classifier, "answer_names", None) or classifier.class_names,
      mode=mode, window=window, min_hold=min_hold)


def _frame_scores(classifier, images):
  """What the smoother takes of a batch of frames: the class probabilities,
  and with an open set its unknown column (`Classifier.predict_open_proba`;
  any object with `predict_proba` and `class_names` streams too)."""
  scores = getattr(classifier, "predict_open_proba", None)
  return (scores or classifier.predict_proba)(images)


def classify_stream(classifier, frames, *, batch_size=16, mode="ema",
                    window=0.5, min_hold=0.4, progress=None, realtime=False,
                    paced=True, stats=None, backdate=False, keep=None):
  """Yields one dict a frame: raw and steady label; see `smoothing`.

  Args:
    classifier: an imgrec Classifier (any format).
    frames: an iterable of video.Frame.
    batch_size: frames classified together.
    mode, window, min_hold: the TemporalSmoother's.
    progress: a callable(frames done) after every batch.
    realtime: classify the newest frames only, dropping those that inference
      is too slow for; at most `batch_size` waiting frames are taken at once.
    paced: with `realtime`, play `frames` on their own times (a file);
      False when the source is live already (a camera or stream URL).
    stats: a dict, filled at the end of a realtime run: {"frames" read,
      "classified", "dropped", "fps" classified a second, "lag_s":
      {"median", "p90", "max"} seconds behind the source}.
    backdate: date each steady label change back to when the new label took
      the lead (`smoothing.Backdated`; rows come `min_hold` seconds late).
      Not with `realtime`.
    keep: `fn(rgb)`, called on each classified frame; what it returns is
      the row's "kept" (a picture to draw the steady label on, held until
      the label is known, as small as `fn` makes it).

  Yields:
    {"t", "frame", "label", "score", "smoothed_label", "smoothed_score"},
    with `realtime` "lag": seconds behind the source when the result came
    out, and with `keep` "kept". A multi-label model's rows have label sets
    instead: {"t", "frame", "labels", "scores", "smoothed_labels",
    "smoothed_scores"} (`smoothing.LabelSetSmoother`; not backdated).
  """
  if realtime:
    yield from _classify_live(classifier, frames, batch_size=batch_size,
                              mode=mode, window=window, min_hold=min_hold,
                              progress=progress, paced=paced, stats=stats,
                              keep=keep)
    return
  smoother = _smoother(classifier, mode, window, min_hold)
  held = smoothing.Backdated(smoother) if backdate and isinstance(
      smoother, smoothing.TemporalSmoother) else None
  frames = prefetched(frames, depth=2 * batch_size)
  pending = collections.deque()  # (frame index, kept) of the steps to come.
  batch, size, done = [], 0, 0

  def rows(steps):
    for step in steps:
      index, kept = pending.popleft()
      yield _row(step, index, **({"kept": kept} if keep else {}))

  def flush():
    probabilities = _frame_scores(classifier, [f.rgb for f in batch])
    for frame, p in zip(batch, probabilities):
      pending.append((frame.index, keep(frame.rgb) if keep else None))
      yield from rows(held.update(frame.t, p) if held else
                      [smoother.update(frame.t, p)])

  for frame in frames:
    batch.append(frame)
    size += _nbytes(frame)
    if len(batch) == batch_size or size >= BATCH_BYTES:
      yield from flush()
      done += len(batch)
      batch, size = [], 0
      if progress:
        progress(done)
  if batch:
    yield from flush()
    if progress:
      progress(done + len(batch))
  if held:
    yield from rows(held.flush())


def _classify_live(classifier, frames, *, batch_size, mode, window, min_hold,
                   progress, paced, stats, keep):
  smoother = _smoother(classifier, mode, window, min_hold)
  feed = LiveFeed(frames, keep=batch_size, paced=paced)
  lags, done, first = _Sample(), 0, None
  try:
    while True:
      batch = feed.take()
      if not batch:
        break
      if first is None:
        first = feed.start
      probabilities = _frame_scores(classifier, [f.rgb for f in batch])
      for frame, p in zip(batch, probabilities):
        lag = feed.behind(frame)
        lags.add(lag)
        extra = {"kept": keep(frame.rgb)} if keep else {}
        yield _row(smoother.update(frame.t, p), frame.index,
                   lag=round(lag, 4), **extra)
      done += len(batch)
      if progress:
        progress(done)
  finally:
    feed.close()
    if stats is not None:
      seconds = (time.monotonic() - first) if first is not None else 0.0
      stats.update(_summary(feed, done, lags, seconds))


def caption(row):
  """The text drawn on a classified frame: its time and steady label and
  score (each steady label and its score, for label sets)."""
  if "smoothed_labels" in row:
    held = ", ".join(f"{label} {row['smoothed_scores'][label]:.2f}"
                     for label in row["smoothed_labels"])
    return f"{row['t']:7.2f} s  {held or '-'}"
  return (f"{row['t']:7.2f} s  {row['smoothed_label']} "
          f"{row['smoothed_score']:.2f}")


def annotated(rows, writer):
  """`rows`, each one's kept frame written with its `caption` first.

  Pass `keep=writer.fit` to `classify_stream`, so frames wait for their
  steady label at the output's size and only classified frames are drawn.

  Args:
    rows: `classify_stream`'s rows, with "kept".
    writer: a `video.AnnotatedWriter`.

  Yields:
    The rows, without "kept".
  """
  for row in rows:
    writer.write(row.pop("kept"), caption(row))
    yield row


def segments_of(rows, end=None):
  """The steady segments of `classify_stream`'s rows (all at the end; see
  `with_segments` for a stream)."""
  steps = [smoothing.Step(r["t"], r["label"], r["score"], r["smoothed_label"],
                          r["smoothed_score"]) for r in rows]
  return smoothing.segments(steps, end)


def with_segments(rows, end=None):
  """`rows`, each after the steady segment it closed (if any), and the last
  segment at the end: segments come out as they are decided, in constant
  memory.

  Args:
    rows: `classify_stream`'s rows.
    end: the stream's end time (default: the last frame's time plus the
      typical frame gap).

  Yields:
    The rows, and {"segment": True, "start", "end", "label", "score"} dicts
    (for label sets, one a stretch a label is in the steady set).
  """
  segments = label_sets = None
  for row in rows:
    if "smoothed_labels" in row:
      label_sets = label_sets or smoothing.LabelSegments()
      yield from label_sets.add(row["t"], row["smoothed_labels"],
                                row["smoothed_scores"])
    else:
      segments = segments or smoothing.Segments()
      closed = segments.add(row["t"], row["smoothed_label"],
                            row["smoothed_score"])
      if closed:
        yield closed
    yield row
  if label_sets:
    yield from label_sets.close(end)
  last = segments.close(end) if segments else None
  if last:
    yield last
