"""Streams of a multi-label model: each label smoothed in time, steady label
sets, and one segment a stretch a label is held."""

import numpy as np
import pytest

from imgrec.errors import ImgrecError
from imgrec.inference import smoothing
from imgrec.inference import stream
from imgrec.inference.video import Frame

NAMES = ["car", "person", "night"]


def test_a_label_enters_and_leaves_after_min_hold():
  smoother = smoothing.LabelSetSmoother(NAMES, [0.5, 0.5, 0.3], mode="none",
                                        min_hold=0.2)
  steps = []
  # car always; person from t=0.4 (one flicker at t=0.2); night under 0.3.
  person = {0.2: 0.9, 0.4: 0.8, 0.5: 0.8, 0.6: 0.9, 0.7: 0.9}
  for i in range(10):  # Frames 0.1 s apart.
    t = round(i / 10, 2)
    steps.append(smoother.update(t, [0.9, person.get(t, 0.1), 0.2]))
  assert steps[0].smoothed_labels == ("car",)
  assert steps[2].labels == ("car", "person")  # Raw: the flicker.
  assert steps[2].smoothed_labels == ("car",)  # Steady: not held long enough.
  held = [s.t for s in steps if "person" in s.smoothed_labels]
  # In 0.2 s after it rose (t=0.4); below from t=0.8, not yet 0.2 s long.
  assert held == [0.6, 0.7, 0.8, 0.9]
  assert all("night" not in s.smoothed_labels for s in steps)
  # Best first.
  assert steps[6].smoothed_labels == ("car", "person")
  assert steps[6].smoothed_scores["person"] == pytest.approx(0.9)


def test_per_label_thresholds_decide_and_bad_input_is_refused():
  smoother = smoothing.LabelSetSmoother(NAMES, [0.9, 0.2, 0.5])
  step = smoother.update(0.0, [0.8, 0.3, 0.5])
  assert step.smoothed_labels == ("night", "person")  # car under its 0.9.
  with pytest.raises(ImgrecError, match="backwards"):
    smoother.update(-1.0, [0.1, 0.1, 0.1])
  with pytest.raises(ImgrecError, match="3 probabilities"):
    smoother.update(1.0, [0.1])
  with pytest.raises(ImgrecError, match="threshold for each"):
    smoothing.LabelSetSmoother(NAMES, [0.5])


def test_segments_per_label_close_as_labels_leave():
  segments = smoothing.LabelSegments()
  closed = []
  for t, labels in ((0.0, ("car",)), (1.0, ("car", "person")),
                    (2.0, ("person",)), (3.0, ())):
    closed += segments.add(t, labels, {"car": 0.8, "person": 0.6})
  assert closed == [
      {"segment": True, "start": 0.0, "end": 2.0, "label": "car",
       "score": 0.8},
      {"segment": True, "start": 1.0, "end": 3.0, "label": "person",
       "score": 0.6}]
  assert segments.close() == []


class _MultiLabel:
  """A stand-in multi-label classifier: scores from the frame's first pixel."""
  class_names = NAMES
  thresholds = np.array([0.5, 0.5, 0.5])

  def predict_proba(self, images):
    return np.array([[im[0, 0, 0] / 255, im[0, 0, 1] / 255, 0.0]
                     for im in images])


def test_classify_stream_gives_label_sets_and_segments():
  frames = []
  for i in range(20):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (230, 230 if i >= 10 else 0, 0)
    frames.append(Frame(index=i, t=i / 10, rgb=rgb))
  rows = list(stream.with_segments(stream.classify_stream(
      _MultiLabel(), frames, batch_size=4, mode="none", min_hold=0.2,
      backdate=True)))
  frame_rows = [r for r in rows if "frame" in r]
  assert len(frame_rows) == 20
  assert set(frame_rows[0]) == {"t", "frame", "labels", "scores",
                                "smoothed_labels", "smoothed_scores"}
  assert frame_rows[15]["smoothed_labels"] == ["car", "person"]
  assert stream.caption(frame_rows[15]).endswith("car 0.90, person 0.90")
  segments = [r for r in rows if r.get("segment")]
  assert [(s["label"], s["start"]) for s in segments] == [("car", 0.0),
                                                          ("person", 1.2)]
