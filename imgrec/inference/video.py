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

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg",
                  ".mpeg", ".ts", ".gif")
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
