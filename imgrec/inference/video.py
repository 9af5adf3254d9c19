"""Frames of a video file, a folder of frames or a stream, with their times.

Video is decoded with PyAV (FFmpeg's libraries in the wheel): frames come
with their presentation times, so variable frame rates keep true times, and
a damaged file yields the frames before the damage and then stops with a
message. TensorFlow has no video decoder (tensorflow-io's repeats first
frames, tensorflow/io#1471).

    for frame in frames("clip.mp4", fps=5):
      frame.t, frame.index, frame.rgb   # seconds, index in the source, uint8
"""

import dataclasses
import logging
import os
import re

import numpy as np

from imgrec.data import decode
from imgrec.errors import ImgrecError

logger = logging.getLogger("imgrec")

VIDEO_SUFFIXES = tuple(sorted(decode.VIDEO_EXTENSIONS)) + (".gif",)
# Seconds a network stream may stay silent before it counts as dead.
_STREAM_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Frame:
  t: float  # Seconds from the start.
  index: int  # The frame's index in the source.
  rgb: np.ndarray  # uint8 [H, W, 3]


def _natural_key(name):
  return [int(t) if t.isdigit() else t.lower()
          for t in re.split(r"(\d+)", name)]


def _folder_frames(folder, frame_rate):
  names = sorted((n for n in os.listdir(folder)
                  if not n.startswith(".")
                  and os.path.isfile(os.path.join(folder, n))),
                 key=_natural_key)
  if not names:
    raise ImgrecError(f"{folder} holds no frames. Pass a video file or a "
                      "folder of images.")
  index = 0
  for name in names:
    path = os.path.join(folder, name)
    try:
      rgb = decode.read_file(path, 3)
    except ImgrecError as e:
      logger.warning("skipped frame %s: %s", path, e)
      continue
    yield Frame(index / frame_rate, index, rgb)
    index += 1


def _rotated(rgb, degrees):
  turns = int(round(degrees / 90.0)) % 4
  return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _video_frames(source, container_format=None):
  import av  # pylint: disable=g-import-not-at-top
  try:
    container = av.open(source, format=container_format,
                        timeout=_STREAM_TIMEOUT)
  except (av.error.FFmpegError, OSError) as e:
    raise ImgrecError(f"Cannot open video {source}: {e}. Check that it is a "
                      "video file (mp4, avi, mkv, webm...) or a reachable "
                      "stream.") from e
  with container:
    if not container.streams.video:
      kinds = sorted({s.type for s in container.streams}) or ["nothing"]
      raise ImgrecError(f"{source} has no video stream (it holds "
                        f"{', '.join(kinds)}). Pass a video.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    start, index = None, 0
    try:
      for frame in container.decode(stream):
        t = frame.time if frame.time is not None else index / float(
            stream.average_rate or 25)
        start = t if start is None else start
        rgb = frame.to_ndarray(format="rgb24")
        rotation = getattr(frame, "rotation", 0) or 0
        yield Frame(float(t - start), index, _rotated(rgb, -rotation))
        index += 1
    except av.error.FFmpegError as e:
      if not index:
        raise ImgrecError(f"Cannot decode video {source}: {e}.") from e
      logger.warning("%s: decoding stopped after %d frames: %s", source,
                     index, e)
  if not index:
    raise ImgrecError(f"{source} holds no video frames (empty or cut "
                      "short).")


def frames(source, *, fps=None, every=None, frame_rate=25.0):
  """Frames of `source`, sampled.

  Args:
    source: a video file, a folder of frames (in natural name order, at
      `frame_rate`), a camera index ("0": /dev/video0) or a stream URL.
    fps: keep at most this many frames a second (by their times).
    every: keep every n-th frame.
    frame_rate: the frame rate of a folder of frames.

  Yields:
    Frame.

  Raises:
    ImgrecError: the source does not exist, cannot be opened or decoded, or
      holds no video.
  """
  if fps is not None and fps <= 0:
    raise ImgrecError(f"--fps must be above 0. Received: {fps}")
  if every is not None and every < 1:
    raise ImgrecError(f"--every must be at least 1. Received: {every}")
  source = os.fspath(source)
  if os.path.isdir(source):
    stream = _folder_frames(source, frame_rate)
  elif source.isdigit():
    stream = _video_frames(f"/dev/video{source}", "v4l2")
  elif "://" in source:
    stream = _video_frames(source)
  elif not os.path.exists(source):
    raise ImgrecError(f"{source} does not exist. Pass a video file, a "
                      "folder of frames, a camera index or a stream URL.")
  else:
    stream = _video_frames(source)
  next_t = None
  for frame in stream:
    if every and frame.index % every:
      continue
    if fps:
      if next_t is not None and frame.t < next_t - 1e-9:
        continue
      next_t = (frame.t if next_t is None else next_t) + 1.0 / fps
    yield frame


class AnnotatedWriter:
  """Writes frames with their steady label drawn on them, as a video file.

  Args:
    path: the output (.mp4, .mkv, .avi...), written under a temporary name
      and moved into place when closed without error.
    fps: the output's frame rate.
  """

  def __init__(self, path, fps):
    from imgrec import fileio  # pylint: disable=g-import-not-at-top
    self.path, self.fps = os.fspath(path), float(fps)
    self._atomic = fileio.atomic_path(self.path)
    self._tmp = self._atomic.__enter__()
    self._container = None
    self._stream = None

  def _open(self, width, height):
    import fractions  # pylint: disable=g-import-not-at-top
    import av  # pylint: disable=g-import-not-at-top
    self._container = av.open(self._tmp, "w",
                              format=None if "." in os.path.basename(
                                  self.path) else "mp4")
    self._stream = self._container.add_stream(
        "mpeg4", rate=fractions.Fraction(self.fps).limit_denominator(1000))
    # Even sizes: yuv420p halves both.
    self._stream.width, self._stream.height = width - width % 2, height - (
        height % 2)
    self._stream.pix_fmt = "yuv420p"

  def write(self, rgb, text):
    """Adds one frame with `text` in a band at its top."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from PIL import ImageDraw  # pylint: disable=g-import-not-at-top
    import av  # pylint: disable=g-import-not-at-top
    if self._container is None:
      self._open(rgb.shape[1], rgb.shape[0])
    image = Image.fromarray(rgb[:self._stream.height, :self._stream.width])
    draw = ImageDraw.Draw(image)
    band = max(12, image.height // 12)
    draw.rectangle([0, 0, image.width, band], fill=(0, 0, 0))
    draw.text((4, max(0, band // 2 - 6)), text, fill=(255, 255, 255))
    frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
    for packet in self._stream.encode(frame):
      self._container.mux(packet)

  def close(self, failed=False):
    if self._container is not None:
      if not failed:
        for packet in self._stream.encode():
          self._container.mux(packet)
      self._container.close()
    if failed:
      self._atomic.__exit__(RuntimeError, RuntimeError("failed"), None)
    else:
      self._atomic.__exit__(None, None, None)
