"""Temporal smoothing of per-frame probabilities (pure numpy, fast)."""

import numpy as np
import pytest

from imgrec.config import SMOOTHING_MODES
from imgrec.errors import ImgrecError
from imgrec.inference import smoothing


def _noisy_stream(seed=0, fps=25, seconds=20, flip_rate=0.25):
  """True label changes every 4 s; each frame's argmax is wrong with
  probability `flip_rate` (a flickering classifier)."""
  rng = np.random.default_rng(seed)
  times = np.arange(int(fps * seconds)) / fps
  truth = (times // 4).astype(int) % 3
  probabilities = []
  for label in truth:
    p = np.full(3, 0.1)
    p[label] = 0.8
    if rng.random() < flip_rate:
      p = np.roll(p, rng.integers(1, 3))
    probabilities.append(p)
  return times, truth, np.array(probabilities)


def test_smoothing_cuts_flicker_and_keeps_accuracy():
  times, truth, probabilities = _noisy_stream()
  smoother = smoothing.TemporalSmoother(["a", "b", "c"], mode="ema",
                                        window=0.3, min_hold=0.3)
  steps = [smoother.update(t, p) for t, p in zip(times, probabilities)]
  raw = [s.label for s in steps]
  steady = [s.smoothed_label for s in steps]
  names = np.array(["a", "b", "c"])[truth]
  raw_accuracy = np.mean(np.array(raw) == names)
  steady_accuracy = np.mean(np.array(steady) == names)
  assert smoothing.switches(steady) * 10 <= smoothing.switches(raw)
  assert steady_accuracy > raw_accuracy
  segs = smoothing.segments(steps)
  assert [s["label"] for s in segs] == ["a", "b", "c", "a", "b"]
  assert segs[0]["start"] == 0.0 and segs[-1]["end"] == pytest.approx(20.0)
  # Boundaries come after the truth by the average's lag plus the hold
  # (longer when a flicker restarts the hold).
  lags = [seg["start"] - true for seg, true in zip(segs[1:], (4, 8, 12, 16))]
  assert all(0 <= lag <= 1.2 for lag in lags) and np.mean(lags) < 0.8


@pytest.mark.parametrize("mode", SMOOTHING_MODES)
def test_hysteresis_needs_the_new_label_to_hold(mode):
  smoother = smoothing.TemporalSmoother(["x", "y"], mode=mode, window=0.0,
                                        min_hold=0.5)
  x, y = [0.9, 0.1], [0.1, 0.9]
  assert smoother.update(0.0, x).smoothed_label == "x"
  # y leads for 0.4 s only: the steady label stays x.
  for t in (0.1, 0.2, 0.3, 0.4):
    assert smoother.update(t, y).smoothed_label == "x"
  assert smoother.update(0.45, x).smoothed_label == "x"
  for t in (0.5, 0.7, 0.9):
    step = smoother.update(t, y)
  assert step.smoothed_label == "x"  # Held 0.4 s since 0.5.
  assert smoother.update(1.0, y).smoothed_label == "y"  # Held 0.5 s.
  assert step.label == "y" and step.score == pytest.approx(0.9)


def test_ema_weighs_uneven_gaps_by_time():
  smoother = smoothing.TemporalSmoother(["x", "y"], mode="ema", window=1.0,
                                        min_hold=0.0)
  smoother.update(0.0, [1.0, 0.0])
  step = smoother.update(1.0, [0.0, 1.0])  # One time constant later.
  # The average moved 1 - e^-1 of the way to the new frame: y leads.
  assert step.smoothed_label == "y"
  assert step.smoothed_score == pytest.approx(1 - np.exp(-1.0))
  # Two frames half a constant apart move it less than one a constant away.
  halves = smoothing.TemporalSmoother(["x", "y"], window=1.0, min_hold=0.0)
  halves.update(0.0, [1.0, 0.0])
  halves.update(0.5, [1.0, 0.0])
  assert halves.update(1.0, [0.0, 1.0]).smoothed_score == pytest.approx(
      np.exp(-0.5))  # x still leads with e^-0.5 after half a constant.


def test_bad_input_is_refused():
  smoother = smoothing.TemporalSmoother(["x", "y"])
  smoother.update(1.0, [0.5, 0.5])
  with pytest.raises(ImgrecError, match="backwards"):
    smoother.update(0.5, [0.5, 0.5])
  with pytest.raises(ImgrecError, match="Expected 2"):
    smoother.update(2.0, [1.0])
  with pytest.raises(ImgrecError, match="Unknown smoothing"):
    smoothing.TemporalSmoother(["x"], mode="median")
  assert smoothing.segments([]) == []


def _probabilities(label):
  return [0.9, 0.1] if label == "a" else [0.1, 0.9]


def test_backdated_changes_start_when_the_new_label_took_the_lead():
  script = ["a"] * 25 + ["b"] * 25  # 25 fps: b from t = 1.0 s.
  script[10] = "b"  # One flicker, shorter than min_hold.
  causal = smoothing.TemporalSmoother(["a", "b"], mode="none", min_hold=0.4)
  held = smoothing.Backdated(smoothing.TemporalSmoother(
      ["a", "b"], mode="none", min_hold=0.4))
  late, steps = [], []
  for i, label in enumerate(script):
    late.append(causal.update(i / 25, _probabilities(label)))
    out = held.update(i / 25, _probabilities(label))
    # A step comes out once min_hold has passed after it.
    assert all(s.t <= i / 25 - 0.4 + 1e-9 for s in out)
    steps += out
  steps += held.flush()
  assert [s.t for s in steps] == [s.t for s in late]
  first_b = lambda run: next(s.t for s in run if s.smoothed_label == "b")
  assert first_b(late) == pytest.approx(1.4)
  assert first_b(steps) == pytest.approx(1.0)
  assert smoothing.switches([s.smoothed_label for s in steps]) == 1
  assert steps[-1].smoothed_score == pytest.approx(0.9)


def test_backdated_average_starts_where_the_raw_labels_changed():
  script = ["a"] * 50 + ["b"] * 50  # 25 fps: b from t = 2.0 s.
  held = smoothing.Backdated(smoothing.TemporalSmoother(
      ["a", "b"], mode="ema", window=0.5, min_hold=0.4))
  steps = []
  for i, label in enumerate(script):
    out = held.update(i / 25, _probabilities(label))
    assert all(s.t <= i / 25 - 0.9 + 1e-9 for s in out)
    steps += out
  steps += held.flush()
  assert len(steps) == 100
  # The average alone leads from about 2.35 s; the change dates to 2.0 s.
  assert next(s.t for s in steps if s.smoothed_label == "b") == (
      pytest.approx(2.0))
