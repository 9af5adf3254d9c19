"""Decodes video: the one reader of clips for training and of streams for inference.

Video is decoded with PyAV (FFmpeg's libraries in the wheel): frames come
with their presentation times, so variable frame rates keep true times.
TensorFlow has no video decoder (tensorflow-io's repeats first frames,
tensorflow/io#1471). Every video imgrec reads goes through `read_video`,
under one policy:

* rotation: a frame's display rotation (a phone's portrait video) is
  applied, so frames come out as a player shows them;
* size: frames come at full size, or scaled while decoding (FFmpeg's
  bilinear scaler) to a (height, width) as shown, so a long clip's memory
  stays small;
* pixel limit: a video whose header declares frames larger than
  `max_pixels` is refused before anything is decoded; a frame larger than
  that later on (a stream that changes size) is skipped;
* damage: a damaged packet costs its frame only and decoding goes on; what
  a source lost (damaged or oversized frames, a file cut short, a stream
  that stalled) is counted in a `Losses`.

    losses = Losses()
    for frame in read_video("clip.mp4", losses=losses, size=(64, 64)):
      frame.t, frame.index, frame.rgb   # seconds, index in the source, uint8
    if losses: print(losses.describe("clip.mp4"))
"""

import contextlib
import dataclasses

import numpy as np

from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.errors import ImgrecError

# Seconds a network stream may stay silent before it counts as dead.
_STREAM_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Frame:
  t: float  # Seconds from the start.
  index: int  # The frame's index in the source.
  rgb: np.ndarray  # uint8 [H, W, 3]


@dataclasses.dataclass
class Losses:
  """What a source lost while it was read; filled by the readers.

  Attributes:
    read: frames read whole.
    lost: frames known lost (undecodable, too large, missing at the end of
      a file whose header says how long it is).
    stopped: why reading ended early when what came after is unknown (a
      stream that stalled or broke); None when it did not.
    reason: the first cause of a loss, for the message.
  """
  read: int = 0
  lost: int = 0
  stopped: str | None = None
  reason: str | None = None

  def add(self, count, reason):
    self.lost += count
    self.reason = self.reason or reason

  def __bool__(self):
    return bool(self.lost or self.stopped)

  def describe(self, source):
    """One line: how many frames of `source` were lost, and why."""
    parts = []
    if self.lost:
      parts.append(f"lost {self.lost} of its {self.read + self.lost} frames "
                   f"(first: {self.reason})")
    if self.stopped:
      parts.append(f"stopped after {self.read + self.lost} frames "
                   f"({self.stopped}); the rest is lost")
    return f"{source}: " + "; and ".join(parts)


def too_large(source, width, height, max_pixels):
  """The message of frames above the pixel limit."""
  return (f"{source} has {width}x{height} = {width * height:,}-pixel frames, "
          f"above the limit of {max_pixels:,}. Shrink the video, or raise "
          "the limit (--max_image_pixels) if you trust it.")


def _why(error):
  """What an FFmpeg error means for a reader, in a few words."""
  import av  # pylint: disable=g-import-not-at-top
  if isinstance(error, av.error.ExitError):  # The timeout's interrupt.
    return f"no data for {_STREAM_TIMEOUT:g} s"
  return getattr(error, "strerror", None) or str(error)


def open_video(source, container_format=None,
               max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Opens a video's first video stream, its header checked.

  Args:
    source: a file, device or stream URL.
    container_format: FFmpeg's name of the container ("v4l2" for a
      camera), or None to probe.
    max_pixels: refuse frames the header declares larger; None: no limit.

  Returns:
    (container, stream): close the container when done.

  Raises:
    ImgrecError: it cannot be opened, holds no video stream, or its frames
      are too large.
  """
  import av  # pylint: disable=g-import-not-at-top
  try:
    container = av.open(source, format=container_format,
                        timeout=_STREAM_TIMEOUT)
  except (av.error.FFmpegError, OSError) as e:
    raise ImgrecError(f"Cannot open video {source}: {e}. It is damaged, not "
                      "a video (mp4, avi, mkv, webm...) or not reachable; "
                      "convert it (e.g. to H.264 .mp4).") from e
  with contextlib.ExitStack() as on_error:
    on_error.callback(container.close)
    if not container.streams.video:
      kinds = sorted({s.type for s in container.streams}) or ["nothing"]
      raise ImgrecError(f"{source} has no video stream (it holds "
                        f"{', '.join(kinds)}). Pass a video.")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if max_pixels is not None and width * height > max_pixels:
      raise ImgrecError(too_large(source, width, height, max_pixels))
    on_error.pop_all()
  stream.thread_type = "AUTO"
  return container, stream


def count_frames(path, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Frames in a file's first video stream, by its packets (no decoding).

  Returns:
    The count, 0 when the packets cannot be read.

  Raises:
    ImgrecError: as `open_video`.
  """
  import av  # pylint: disable=g-import-not-at-top
  container, stream = open_video(path, max_pixels=max_pixels)
  with container:
    try:
      return sum(1 for p in container.demux(stream) if p.size)
    except av.error.FFmpegError:
      return 0


def pixels(frame, size=None):
  """A decoded frame as shown: uint8 RGB [H, W, 3], rotated, maybe scaled.

  Args:
    frame: a PyAV VideoFrame.
    size: (height, width) of the shown frame, or None for full size.
  """
  turns = int(round(-(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
  if size is None:
    rgb = frame.to_ndarray(format="rgb24")
  else:
    height, width = size
    if turns % 2:  # Scaled before it is turned.
      height, width = width, height
    rgb = frame.reformat(width=width, height=height, format="rgb24",
                         interpolation="BILINEAR").to_ndarray()
  return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _expected_frames(container, stream):
  """How many frames the header says the video holds; None if it does not."""
  if stream.frames:
    return int(stream.frames)
  seconds = None
  if stream.duration is not None and stream.time_base is not None:
    seconds = float(stream.duration * stream.time_base)
  elif container.duration is not None and len(container.streams) == 1:
    seconds = container.duration / 1e6  # av.time_base: microseconds.
  if seconds is None or not stream.average_rate:
    return None
  return int(round(seconds * float(stream.average_rate)))


class _Decoder:
  """Turns one stream's packets into Frames and counts what is lost."""

  def __init__(self, source, stream, max_pixels, losses, size, wanted):
    self.source, self.stream, self.max_pixels = source, stream, max_pixels
    self.losses, self.size, self.wanted = losses, size, wanted
    self.start, self.index, self.failed = None, 0, 0

  @property
  def empty(self):
    return not self.index and not self.failed

  def _lose(self, reason):
    self.failed += 1
    self.losses.add(1, reason)

  def frames_of(self, packet):
    """The frames of one packet; a damaged one costs its frame."""
    import av  # pylint: disable=g-import-not-at-top
    try:
      decoded = packet.decode()
    except av.error.FFmpegError as e:
      if isinstance(e, av.error.ExitError):
        raise
      self._lose(_why(e))
      return
    for frame in decoded:
      # A stream may change size mid-way; pixels are never made for a
      # frame over the limit.
      if self.max_pixels is not None and (frame.width * frame.height >
                                          self.max_pixels):
        self._lose(too_large(self.source, frame.width, frame.height,
                             self.max_pixels))
        continue
      t = frame.time if frame.time is not None else self.index / float(
          self.stream.average_rate or 25)
      self.start = t if self.start is None else self.start
      self.losses.read += 1
      if self.wanted is None or self.index in self.wanted:
        yield Frame(float(t - self.start), self.index,
                    pixels(frame, self.size))
      self.index += 1

  def check_length(self, container):
    """Counts frames the header promised and the file did not hold."""
    expected = _expected_frames(container, self.stream)
    missing = (expected or 0) - self.index - self.failed
    # Headers round (durations, edit lists): a frame or two is no loss.
    if expected and missing > max(2, expected // 50):
      self.losses.add(missing, f"the header says {expected} frames; the file "
                      f"ends after {self.index + self.failed} (cut short?)")


def read_video(source, *, container_format=None,
               max_pixels=DEFAULT_MAX_IMAGE_PIXELS, losses=None, size=None,
               wanted=None):
  """The frames of a video, decoded under the policy of this module.

  Args:
    source: a video file, a device (with `container_format`) or a stream
      URL.
    container_format: FFmpeg's container name, or None to probe.
    max_pixels: refuse a video whose header declares larger frames; skip
      (and count as lost) larger frames later on. None: no limit.
    losses: a `Losses`, filled as the source is read.
    size: (height, width) to scale each frame to while decoding (as
      shown, rotation applied); None for full size.
    wanted: frame indices to make pixels of (a set); the others are
      decoded and counted, not converted. None: every frame.

  Yields:
    Frame, times from the first frame's.

  Raises:
    ImgrecError: the source cannot be opened, holds no video or no frame,
      nothing of it decodes, or its frames are larger than `max_pixels`.
  """
  import av  # pylint: disable=g-import-not-at-top
  losses = Losses() if losses is None else losses
  container, stream = open_video(source, container_format, max_pixels)
  decoder = _Decoder(source, stream, max_pixels, losses, size, wanted)
  with container:
    try:
      # Packet by packet: a damaged one costs its frame, not the rest.
      for packet in container.demux(stream):
        yield from decoder.frames_of(packet)
    except av.error.FFmpegError as e:
      if decoder.empty:
        raise ImgrecError(f"Cannot decode video {source}: {_why(e)}.") from e
      losses.stopped = _why(e)
    else:
      decoder.check_length(container)
  if decoder.empty:
    raise ImgrecError(f"{source} holds no video frames (empty or cut "
                      "short).")
