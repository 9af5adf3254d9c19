"""One reader for each thing: a run's history, video frames, frame folders.

Issue 21, points 6 to 8: history.csv is read by `RunFolder` only, video is
decoded by `imgrec.data.video` only (clips for training and streams alike),
and choice lists live in `imgrec.config`.
"""

import math

import numpy as np
import pytest
from PIL import Image

from imgrec.data import clips
from imgrec.data import video
from imgrec.errors import ImgrecError
from imgrec.inference import benchmark
from imgrec.inference import stream
from imgrec.inference import video as stream_video
from imgrec.run_folder import RunFolder
from test_reliability_streams import _corrupted_in_the_middle
from test_stream import write_video

# As Keras' CSVLogger writes it: \r\n line ends, epochs from 0.
_HISTORY = ("epoch,loss,val_eer\r\n"
            "0,1.5,0.40\r\n"
            "1,1.2,0.30\r\n"
            "2,1.0,nan\r\n")


def _write(run, text):
  with open(run.history_path, "w", encoding="utf-8", newline="") as f:
    f.write(text)


def test_history_is_typed_columns_by_epoch(tmp_path):
  run = RunFolder(str(tmp_path))
  assert run.read_history() is None  # No file yet.
  _write(run, _HISTORY)
  history = run.read_history()
  assert history.epochs == (0, 1, 2) and len(history) == 3
  assert history.column("loss") == (1.5, 1.2, 1.0)
  assert history.column("val_eer")[:2] == (0.40, 0.30)
  assert math.isnan(history.column("val_eer")[2])
  assert history.column("val_accuracy") == ()  # Not logged.
  assert "epoch" not in history.columns


def test_history_skips_what_a_kill_or_a_resume_left(tmp_path):
  run = RunFolder(str(tmp_path))
  _write(run, _HISTORY
         + "1,0.9,0.20\r\n"  # Epoch 1 run again after a resume: it wins.
         + "epoch,loss,val_eer\r\n"  # A second header.
         + "x,1,2\r\n"  # Not an epoch.
         + "3,0.8\r\n"  # Fields missing.
         + "4,0.7,0.1")  # Cut short by a kill: no line end.
  history = run.read_history()
  assert history.epochs == (0, 1, 2)
  assert history.column("loss") == (1.5, 0.9, 1.0)


@pytest.mark.parametrize("text", ["", "epoch,loss", "epoch,loss\r\n",
                                  "epoch,loss\r\nx,1\r\n"])
def test_history_without_rows_is_none(tmp_path, text):
  run = RunFolder(str(tmp_path))
  _write(run, text)
  assert run.read_history() is None


def test_truncated_history_reads_as_the_epochs_the_backup_holds(tmp_path):
  run = RunFolder(str(tmp_path))
  _write(run, _HISTORY + "3,0.5,0.1\r\n4,0.")
  assert run.truncate_history(2) == 2
  assert run.read_history().epochs == (0, 1)
  with open(run.history_path, encoding="utf-8", newline="") as f:
    assert f.read() == "epoch,loss,val_eer\r\n0,1.5,0.40\r\n1,1.2,0.30\r\n"
  _write(run, "epoch,lo")  # A header cut short: the file goes.
  assert run.truncate_history(2) == 0
  assert run.read_history() is None


# --- One video reader ---------------------------------------------------------


def _counting(path, count, size=(16, 24)):
  """A video whose frame i is gray level 6 * i."""
  return write_video(path, [np.full((*size, 3), 6 * i, np.uint8)
                            for i in range(count)])


def test_clips_and_streams_read_the_same_frames(tmp_path):
  path = _counting(tmp_path / "count.mp4", 12)
  streamed = [f.rgb for f in stream_video.frames(path)]
  assert len(streamed) == 12 and streamed[0].shape == (16, 24, 3)
  # Every frame, at its own size: the clip is the stream's frames.
  clip = clips.decode_clip(path, frames=12, image_size=(16, 24))
  np.testing.assert_array_equal(clip, np.stack(streamed))
  # Scaled while decoding, the same frames.
  small = list(video.read_video(path, size=(8, 12)))
  assert [f.rgb.shape for f in small] == [(8, 12, 3)] * 12
  np.testing.assert_allclose([f.rgb.mean() for f in small],
                             [f.mean() for f in streamed], atol=2)


def test_clips_and_streams_refuse_the_same_frames(tmp_path):
  path = _counting(tmp_path / "count.mp4", 4)
  for read in (lambda: clips.decode_clip(path, frames=2, image_size=(8, 8),
                                         max_pixels=300),
               lambda: next(stream_video.frames(path, max_pixels=300))):
    with pytest.raises(ImgrecError, match="24x16.*above the limit of 300"):
      read()


def test_a_damaged_packet_costs_a_clip_one_frame(tmp_path):
  path = _corrupted_in_the_middle(tmp_path)  # 40 frames of noise.
  losses = video.Losses()
  streamed = {f.index: f.rgb for f in video.read_video(path, losses=losses)}
  assert 0 < losses.lost and losses.read == len(streamed) > 20
  # The clip samples among every frame that decodes, after the damage too.
  clip = clips.decode_clip(path, frames=40, image_size=(32, 32))
  wanted = clips.sample_indices(len(streamed), 40)
  np.testing.assert_array_equal(clip, np.stack([streamed[i]
                                                for i in wanted]))
  assert wanted[-1] == len(streamed) - 1


class _Frame:
  """A decoded frame that a player shows turned (PyAV's `rotation`)."""

  def __init__(self, rgb, rotation):
    self.rgb, self.rotation = rgb, rotation

  def to_ndarray(self, format="rgb24"):  # pylint: disable=redefined-builtin
    assert format == "rgb24"
    return self.rgb

  def reformat(self, width, height, format, interpolation):  # pylint: disable=redefined-builtin
    del format, interpolation
    return _Frame(np.asarray(Image.fromarray(self.rgb).resize(
        (width, height), Image.NEAREST)), 0)


@pytest.mark.parametrize("rotation", [90, -90, 180, 270])
def test_rotation_is_applied_at_full_size_and_scaled_alike(rotation):
  stored = np.zeros((20, 40, 3), np.uint8)
  stored[:, :10] = 255  # A white band on the left of the stored picture.
  frame = _Frame(stored, rotation)
  full = video.pixels(frame)
  assert full.shape == ((40, 20, 3) if rotation % 180 else (20, 40, 3))
  # Scaled to the size as shown: turned the same way, band and all.
  size = (full.shape[0] // 2, full.shape[1] // 2)
  small = video.pixels(frame, size)
  assert small.shape == (*size, 3)
  np.testing.assert_array_equal(small, full[::2, ::2])


# --- Commands stay thin: annotation and benchmark inputs in the library ------


def test_annotated_rows_draw_each_steady_label_on_its_frame():
  written = []

  class Writer:

    def write(self, rgb, text):
      written.append((rgb, text))

  kept = [np.full((4, 4, 3), i, np.uint8) for i in range(2)]
  rows = [{"t": 0.04 * i, "frame": i, "label": "a", "score": 0.9,
           "smoothed_label": "cat", "smoothed_score": 0.875,
           "kept": kept[i]} for i in range(2)]
  out = list(stream.annotated(iter(rows), Writer()))
  assert [r["frame"] for r in out] == [0, 1]
  assert not any("kept" in r for r in out)  # Pixels never reach the rows.
  assert [t for _, t in written] == ["   0.00 s  cat 0.88",
                                     "   0.04 s  cat 0.88"]
  assert all(rgb is k for (rgb, _), k in zip(written, kept))


class _Model:
  image_size, clip_frames = (6, 8), None


def test_benchmark_inputs_are_the_users_images_or_noise(tmp_path):
  good = tmp_path / "good.png"
  Image.new("RGB", (20, 10), (200, 0, 0)).save(good)
  junk = tmp_path / "junk.png"
  junk.write_bytes(b"not an image")
  skipped = []
  images = benchmark.benchmark_inputs(_Model(), [str(junk), str(good)],
                                      on_skip=skipped.append)
  assert len(images) == 1 and images[0][0, 0].tolist() == [200, 0, 0]
  assert len(skipped) == 1 and "junk.png" in skipped[0]
  with pytest.raises(ImgrecError, match="None of the given images"):
    benchmark.benchmark_inputs(_Model(), [str(junk)])
  [noise] = benchmark.benchmark_inputs(_Model())
  assert noise.shape == (6, 8, 3) and noise.dtype == np.uint8
  clip_model = _Model()
  clip_model.clip_frames = 5
  [clip] = benchmark.benchmark_inputs(clip_model, [str(good)])
  assert clip.shape == (5, 6, 8, 3)
