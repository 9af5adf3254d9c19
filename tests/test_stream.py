"""Video reading and steady stream classification on generated videos."""

import fractions
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import toy_image
from imgrec.errors import ImgrecError
from imgrec.inference import stream
from imgrec.inference import video
from imgrec.inference.classifier import Classifier

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
CLASSES = ["blue", "green", "red"]
# (class, seconds) of the generated clip; 10% of frames show another class.
SCRIPT = (("red", 1.2), ("green", 1.6), ("blue", 1.2))


def _frames(fps=25, seed=0, size=32):
  rng = np.random.default_rng(seed)
  out = []
  for name, seconds in SCRIPT:
    for _ in range(int(round(seconds * fps))):
      shown = name if rng.random() > 0.1 else CLASSES[rng.integers(3)]
      out.append((name, toy_image(rng, shown, size)))
  return out


def write_video(path, frames, fps=25, times=None):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path), "w") as container:
    s = container.add_stream("mpeg4", rate=fps)
    s.width, s.height = frames[0].shape[1], frames[0].shape[0]
    s.pix_fmt = "yuv420p"
    if times:
      s.time_base = fractions.Fraction(1, 1000)
    for i, rgb in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      if times:  # Uneven gaps (the encoder keeps them on its 1/fps grid).
        frame.pts = int(round(1000 * times[i]))
        frame.time_base = s.time_base
      for packet in s.encode(frame):
        container.mux(packet)
    for packet in s.encode():
      container.mux(packet)
  return str(path)


@pytest.fixture(scope="module")
def color_model(tmp_path_factory):
  """A Keras model that names a frame's dominant toy color."""
  tmp = tmp_path_factory.mktemp("stream")
  inputs = keras.Input((16, 16, 3))
  x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(
      inputs))
  dense = keras.layers.Dense(3, activation="softmax")
  model = keras.Model(inputs, dense(x))
  kernel = np.zeros((3, 3), np.float32)
  kernel[2, 0] = kernel[1, 1] = kernel[0, 2] = 8.0  # B->blue, G, R->red.
  dense.set_weights([kernel, np.zeros(3, np.float32)])
  path = tmp / "color.keras"
  model.save(path)
  (tmp / "labels.txt").write_text("\n".join(CLASSES) + "\n")
  return str(path)


def test_video_frames_times_and_sampling(tmp_path):
  frames = _frames()
  path = write_video(tmp_path / "clip.mp4", [f for _, f in frames])
  read = list(video.frames(path))
  assert len(read) == len(frames) == 100
  assert read[0].t == 0.0 and read[-1].t == pytest.approx(99 / 25, abs=1e-3)
  assert read[0].rgb.shape == (32, 32, 3) and read[0].rgb.dtype == np.uint8
  assert len(list(video.frames(path, fps=5))) == 20
  assert [f.index for f in video.frames(path, every=10)] == list(
      range(0, 100, 10))


def test_variable_frame_rate_keeps_true_times(tmp_path):
  rgb = [toy_image(np.random.default_rng(i), "red", 32) for i in range(5)]
  times = [0.0, 0.04, 0.48, 0.52, 2.0]
  path = write_video(tmp_path / "vfr.mkv", rgb, times=times)
  assert [round(f.t, 3) for f in video.frames(path)] == times
  # --fps picks by time: at 1 frame a second, 0.0 and then 2.0.
  assert [round(f.t, 3) for f in video.frames(path, fps=1)] == [0.0, 2.0]


def test_folder_of_frames(tmp_path):
  for i, (_, rgb) in enumerate(_frames()[:12]):
    Image.fromarray(rgb).save(tmp_path / f"{i}.png")
  (tmp_path / "notes.txt").write_text("not a frame")
  read = list(video.frames(str(tmp_path), frame_rate=10))
  assert [f.index for f in read] == list(range(12))  # Natural order.
  assert read[11].t == pytest.approx(1.1)


def test_bad_sources_are_one_clear_error(tmp_path):
  (tmp_path / "empty.mp4").write_bytes(b"")
  (tmp_path / "junk.mp4").write_bytes(os.urandom(5000))
  good = write_video(tmp_path / "good.mp4", [f for _, f in _frames()])
  data = open(good, "rb").read()
  (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])
  for name in ("empty.mp4", "junk.mp4", "missing.mp4"):
    with pytest.raises(ImgrecError, match=name):
      list(video.frames(str(tmp_path / name)))
  # A file cut in half gives the frames before the cut, or says why not.
  try:
    assert 0 < len(list(video.frames(str(tmp_path / "cut.mp4")))) < 100
  except ImgrecError as e:
    assert "cut.mp4" in str(e)
  with pytest.raises(ImgrecError, match="no frames"):
    os.makedirs(tmp_path / "nothing")
    list(video.frames(str(tmp_path / "nothing")))
  with pytest.raises(ImgrecError, match="fps"):
    list(video.frames(good, fps=0))


def test_audio_only_file_says_it_has_no_video(tmp_path):
  import av  # pylint: disable=g-import-not-at-top
  path = tmp_path / "sound.mkv"
  with av.open(str(path), "w") as container:
    s = container.add_stream("mp2", rate=44100)
    samples = np.zeros((1, 1152), np.int16)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 44100
    for packet in s.encode(frame):
      container.mux(packet)
    for packet in s.encode():
      container.mux(packet)
  with pytest.raises(ImgrecError, match="no video stream.*audio"):
    list(video.frames(str(path)))


def test_stream_labels_hold_steady(tmp_path, color_model):
  frames = _frames()
  path = write_video(tmp_path / "clip.mp4", [f for _, f in frames])
  clf = Classifier.load(color_model)
  # A short average and hold: isolated wrong frames never win, and a true
  # change costs about three frames of lag.
  rows = list(stream.classify_stream(clf, video.frames(path),
                                     window=0.04, min_hold=0.08))
  assert len(rows) == 100
  assert set(rows[0]) == {"t", "frame", "label", "score", "smoothed_label",
                          "smoothed_score"}
  truth = [name for name, _ in frames]
  raw = sum(a["label"] != b["label"] for a, b in zip(rows, rows[1:]))
  steady = sum(a["smoothed_label"] != b["smoothed_label"]
               for a, b in zip(rows, rows[1:]))
  assert steady == 2 and raw >= 10
  raw_acc = np.mean([r["label"] == t for r, t in zip(rows, truth)])
  steady_acc = np.mean([r["smoothed_label"] == t
                        for r, t in zip(rows, truth)])
  assert steady_acc >= raw_acc
  segments = stream.segments_of(rows)
  assert [s["label"] for s in segments] == ["red", "green", "blue"]
  assert segments[-1]["end"] == pytest.approx(4.0, abs=0.05)


@pytest.mark.slow
def test_cli_prints_json_lines_and_segments(tmp_path, color_model):
  path = write_video(tmp_path / "clip.mp4", [f for _, f in _frames()])
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.stream", f"--model={color_model}",
       "--format=jsonl", "--fps=10", path], capture_output=True, text=True,
      env=ENV, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines()]
  frames = [l for l in lines if "segment" not in l]
  segments = [l for l in lines if l.get("segment")]
  assert len(frames) == 40
  assert [s["label"] for s in segments] == ["red", "green", "blue"]
  out = tmp_path / "annotated.mp4"
  annotated = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.stream", f"--model={color_model}",
       f"--out={out}", "--every=2", path], capture_output=True, text=True,
      env=ENV, timeout=300)
  assert annotated.returncode == 0, annotated.stderr[-2000:]
  assert "red" in annotated.stdout
  written = list(video.frames(str(out)))
  assert len(written) == 50 and written[0].rgb.shape == (32, 32, 3)
  # The label band is drawn on top; the picture below it stays.
  assert written[0].rgb[:3].mean() < 60 and written[0].rgb[20:, :, 0].mean(
  ) > 120
  live = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.stream", f"--model={color_model}",
       "--realtime", "--format=jsonl", "--batch_size=1", path],
      capture_output=True, text=True, env=ENV, timeout=300)
  assert live.returncode == 0, live.stderr[-2000:]
  summary = json.loads(live.stdout.splitlines()[-1])["realtime"]
  rows = [json.loads(l) for l in live.stdout.splitlines()
          if '"lag"' in l]
  assert summary["frames"] == 100
  assert summary["classified"] == len(rows) == 100 - summary["dropped"]
  assert "behind the source" in live.stderr
  bad = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.stream", f"--model={color_model}",
       str(tmp_path / "missing.mp4")], capture_output=True, text=True,
      env=ENV, timeout=300)
  assert bad.returncode == 2
  assert len(bad.stderr.strip().splitlines()) == 1


class _SlowClassifier:
  """Names every frame 'red' after `seconds` of work a call."""
  class_names = CLASSES

  def __init__(self, seconds):
    self.seconds, self.calls = seconds, []

  def predict_proba(self, images):
    import time  # pylint: disable=g-import-not-at-top
    self.calls.append(len(images))
    time.sleep(self.seconds)
    return np.tile(np.array([[0.1, 0.1, 0.8]], np.float32), (len(images), 1))


def _timed_frames(count, step):
  rgb = np.zeros((8, 8, 3), np.uint8)
  return [video.Frame(i * step, i, rgb) for i in range(count)]


def test_realtime_drops_frames_inference_cannot_keep_up_with():
  # 40 frames at 100 fps (0.4 s of source); inference takes 0.05 s a call.
  clf = _SlowClassifier(0.05)
  stats = {}
  rows = list(stream.classify_stream(clf, _timed_frames(40, 0.01),
                                     batch_size=1, realtime=True,
                                     stats=stats))
  assert stats["frames"] == 40
  assert stats["classified"] == len(rows) == len(clf.calls)
  assert stats["dropped"] == 40 - len(rows) > 20
  # The newest frame is taken each time, so the labels stay near the source.
  indices = [r["frame"] for r in rows]
  assert indices == sorted(indices) and indices[0] == 0
  assert all(0 <= r["lag"] < 0.5 for r in rows)
  assert stats["lag_s"]["max"] == pytest.approx(max(r["lag"] for r in rows),
                                                abs=1e-3)
  assert 5 < stats["fps"] < 40


def test_realtime_batches_the_frames_waiting():
  clf = _SlowClassifier(0.05)
  stats = {}
  rows = list(stream.classify_stream(clf, _timed_frames(40, 0.01),
                                     batch_size=4, realtime=True,
                                     stats=stats))
  # Up to 4 waiting frames go in one call: fewer drops than one at a time.
  assert max(clf.calls) > 1 and max(clf.calls) <= 4
  assert stats["dropped"] == 40 - len(rows)
  assert len(rows) > len(clf.calls)


def test_realtime_keeps_every_frame_when_inference_is_fast():
  clf = _SlowClassifier(0.0)
  stats = {}
  rows = list(stream.classify_stream(clf, _timed_frames(10, 0.05),
                                     batch_size=1, realtime=True,
                                     stats=stats))
  assert [r["frame"] for r in rows] == list(range(10))
  assert stats["dropped"] == 0
  # Paced on the source's clock: 10 frames 0.05 s apart take 0.45 s.
  assert stats["fps"] < 30


def test_realtime_reader_errors_reach_the_caller():
  def broken():
    yield from _timed_frames(3, 0.0)
    raise ImgrecError("clip.mp4: decoding stopped")

  with pytest.raises(ImgrecError, match="clip.mp4"):
    list(stream.classify_stream(_SlowClassifier(0.0), broken(), batch_size=8,
                                realtime=True))


def test_realtime_stops_reading_when_the_caller_stops():
  read = []

  def endless():
    i = 0
    while True:
      read.append(i)
      yield video.Frame(i * 0.01, i, np.zeros((4, 4, 3), np.uint8))
      i += 1

  rows = stream.classify_stream(_SlowClassifier(0.0), endless(),
                                realtime=True)
  first = next(rows)
  rows.close()
  seen = len(read)
  import time  # pylint: disable=g-import-not-at-top
  time.sleep(0.1)
  assert first["frame"] == 0 and len(read) <= seen + 1


def test_prefetched_frames_keep_order_errors_and_stop():
  assert [f.index for f in stream.prefetched(_timed_frames(50, 0.0),
                                             depth=4)] == list(range(50))

  def broken():
    yield from _timed_frames(3, 0.0)
    raise ImgrecError("clip.mp4: decoding stopped")

  got = []
  with pytest.raises(ImgrecError, match="clip.mp4"):
    for frame in stream.prefetched(broken()):
      got.append(frame.index)
  assert got == [0, 1, 2]
  read = []

  def endless():
    i = 0
    while True:
      read.append(i)
      yield video.Frame(0.0, i, np.zeros((2, 2, 3), np.uint8))
      i += 1

  frames = stream.prefetched(endless(), depth=2)
  next(frames)
  frames.close()
  seen = len(read)
  import time  # pylint: disable=g-import-not-at-top
  time.sleep(0.3)
  assert len(read) <= seen + 1
