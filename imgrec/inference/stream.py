"""Classifies a video or stream frame by frame, with labels held steady in time.

    clf = Classifier.load("runs/x/export/model.tflite")
    for step in classify_stream(clf, video.frames("cam.mp4", fps=10)):
      print(step)      # {"t", "frame", "label", "score", "smoothed_label", ...}
"""

from imgrec.inference import smoothing


def classify_stream(classifier, frames, *, batch_size=16, mode="ema",
                    window=0.5, min_hold=0.4, progress=None):
  """Yields one dict a frame: raw and steady label; see `smoothing`.

  Args:
    classifier: an imgrec Classifier (any format).
    frames: an iterable of video.Frame.
    batch_size: frames classified together.
    mode, window, min_hold: the TemporalSmoother's.
    progress: a callable(frames done) after every batch.

  Yields:
    {"t", "frame", "label", "score", "smoothed_label", "smoothed_score"}.
  """
  smoother = smoothing.TemporalSmoother(classifier.class_names, mode=mode,
                                        window=window, min_hold=min_hold)
  batch, done = [], 0

  def flush():
    probabilities = classifier.predict_proba([f.rgb for f in batch])
    for frame, p in zip(batch, probabilities):
      step = smoother.update(frame.t, p)
      yield {"t": round(step.t, 4), "frame": frame.index,
             "label": step.label, "score": step.score,
             "smoothed_label": step.smoothed_label,
             "smoothed_score": step.smoothed_score}

  for frame in frames:
    batch.append(frame)
    if len(batch) == batch_size:
      yield from flush()
      done += len(batch)
      batch = []
      if progress:
        progress(done)
  if batch:
    yield from flush()
    if progress:
      progress(done + len(batch))


def segments_of(rows, end=None):
  """The steady segments of `classify_stream`'s rows."""
  steps = [smoothing.Step(r["t"], r["label"], r["score"], r["smoothed_label"],
                          r["smoothed_score"]) for r in rows]
  return smoothing.segments(steps, end)
