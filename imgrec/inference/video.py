"""Frames of a video file, a folder of frames or a stream, sampled; and video out.

Video is decoded by `imgrec.data.video` (the reader clips train from too);
a folder of frames is read image by image under the decode policy, in
natural name order. What a source lost is counted in a `Losses`.

    losses = Losses()
    for frame in frames("clip.mp4", fps=5, losses=losses):
      frame.t, frame.index, frame.rgb   # seconds, index in the source, uint8
    if losses: print(losses.describe("clip.mp4"))

`AnnotatedWriter` writes frames back out with a label drawn on each.
"""

import fractions
import io
import logging
import math
import os

import numpy as np

from imgrec import fileio
from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import decode
from imgrec.data.folder import natural_key
from imgrec.data.video import Frame
from imgrec.data.video import Losses
from imgrec.data.video import read_video
from imgrec.errors import ImgrecError

logger = logging.getLogger("imgrec")

__all__ = ["AnnotatedWriter", "Frame", "Losses", "OUTPUT_FORMATS",
           "folder_frame_names", "frames", "output_format"]


def folder_frame_names(folder):
  """The image files of a frames folder, in natural order (2 before 10).

  Hidden files and files that are not images by their suffix (notes.txt,
  Thumbs.db) are not frames.
  """
  return sorted((n for n in os.listdir(folder)
                 if not n.startswith(".")
                 and os.path.splitext(n)[1].lower() in decode.IMAGE_EXTENSIONS
                 and os.path.isfile(os.path.join(folder, n))),
                key=natural_key)


def _folder_frames(folder, frame_rate, max_pixels, losses):
  names = folder_frame_names(folder)
  if not names:
    raise ImgrecError(f"{folder} holds no frames (no image files). Pass a "
                      "video file or a folder of images.")
  index = 0
  for name in names:
    path = os.path.join(folder, name)
    try:
      rgb = decode.read_file(path, 3, max_pixels)
    except ImgrecError as e:
      logger.warning("skipped frame %s: %s", path, e)
      losses.add(1, str(e))
      continue
    losses.read += 1
    yield Frame(index / frame_rate, index, rgb)
    index += 1


def _check_sampling(fps, every, frame_rate):
  if fps is not None and not (fps > 0 and math.isfinite(fps)):
    raise ImgrecError(f"--fps must be a finite number above 0. Received: "
                      f"{fps}")
  if every is not None and every < 1:
    raise ImgrecError(f"--every must be at least 1. Received: {every}")
  if not (frame_rate > 0 and math.isfinite(frame_rate)):
    raise ImgrecError(f"--frame_rate must be a finite number above 0. "
                      f"Received: {frame_rate}")


def _source_frames(source, frame_rate, max_pixels, losses):
  """Every frame of a folder, camera, stream URL or video file."""
  if os.path.isdir(source):
    return _folder_frames(source, frame_rate, max_pixels, losses)
  if source.isdigit():
    return read_video(f"/dev/video{source}", container_format="v4l2",
                      max_pixels=max_pixels, losses=losses)
  if "://" not in source and not os.path.exists(source):
    raise ImgrecError(f"{source} does not exist. Pass a video file, a "
                      "folder of frames, a camera index or a stream URL.")
  return read_video(source, max_pixels=max_pixels, losses=losses)


def _sampled(stream, fps, every):
  """The frames of `stream` that `fps` and `every` keep."""
  next_t = None
  for frame in stream:
    if every and frame.index % every:
      continue
    if fps:
      if next_t is not None and frame.t < next_t - 1e-9:
        continue
      next_t = (frame.t if next_t is None else next_t) + 1.0 / fps
    yield frame


def frames(source, *, fps=None, every=None, frame_rate=25.0,
           max_pixels=DEFAULT_MAX_IMAGE_PIXELS, losses=None):
  """Frames of `source`, sampled.

  Args:
    source: a video file, a folder of frames (its image files in natural
      name order, at `frame_rate`), a camera index ("0": /dev/video0) or a
      stream URL.
    fps: keep at most this many frames a second (by their times).
    every: keep every n-th frame.
    frame_rate: the frame rate of a folder of frames.
    max_pixels: refuse a video whose header declares larger frames; skip
      (and count as lost) frames or frame files larger than this. None: no
      limit.
    losses: a `Losses`, filled as the source is read; the caller reports
      it. Without one, a loss is logged as a warning at the end.

  Yields:
    Frame.

  Raises:
    ImgrecError: the source does not exist, cannot be opened, holds no video
      or no frame, or its frames are larger than `max_pixels`.
  """
  _check_sampling(fps, every, frame_rate)
  report = losses is None
  losses = Losses() if report else losses
  source = os.fspath(source)
  yield from _sampled(_source_frames(source, frame_rate, max_pixels, losses),
                      fps, every)
  if report and losses:
    logger.warning("%s", losses.describe(source))


# What --out can write, by suffix: (FFmpeg muxer, encoders to try in order,
# pixel format). Encoders without a look-ahead buffer come first: their
# memory does not grow with the frame size times a queue of frames.
OUTPUT_FORMATS = {
    ".mp4": ("mp4", ("mpeg4", "libx264"), "yuv420p"),
    ".m4v": ("mp4", ("mpeg4", "libx264"), "yuv420p"),
    ".mov": ("mov", ("mpeg4", "libx264"), "yuv420p"),
    ".mkv": ("matroska", ("mpeg4", "libx264"), "yuv420p"),
    ".avi": ("avi", ("mpeg4", "libx264"), "yuv420p"),
    ".webm": ("webm", ("libvpx", "libvpx-vp9"), "yuv420p"),
    ".gif": ("gif", ("gif",), "rgb8"),
}
# Encoder options: VP8/VP9 hold 25 frames back unless told not to.
_ENCODER_OPTIONS = {"libvpx": {"lag-in-frames": "0", "deadline": "realtime"},
                    "libvpx-vp9": {"lag-in-frames": "0",
                                   "deadline": "realtime"}}
# The annotated copy is at most this many pixels a frame (1920x1080): the
# frames waiting for their steady label are kept at that size, whatever
# the source's.
OUT_MAX_PIXELS = 1920 * 1080


def _try_encoder(muxer, codec, pix_fmt):
  """Writes one small frame with `codec` into `muxer` in memory; raises if
  this PyAV build cannot."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(io.BytesIO(), "w", format=muxer) as container:
    stream = container.add_stream(codec, rate=25,
                                  options=_ENCODER_OPTIONS.get(codec, {}))
    stream.width, stream.height, stream.pix_fmt = 16, 16, pix_fmt
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8),
                                       format="rgb24")
    for packet in list(stream.encode(frame)) + list(stream.encode()):
      container.mux(packet)


def output_format(path, flag="--out"):
  """(muxer, encoder, pixel format) for a video file named `path`.

  Tried on one small frame in memory first, so a suffix or an encoder this
  build cannot write is refused before any input is read. A path without a
  suffix (a FIFO, /dev/null) is written as mp4.

  Raises:
    ImgrecError: the suffix is not a video type imgrec writes, or no
      encoder for it works here.
  """
  suffix = os.path.splitext(os.path.basename(os.fspath(path)))[1].lower()
  known = ", ".join(sorted(OUTPUT_FORMATS))
  if not suffix:
    suffix = ".mp4"
  if suffix not in OUTPUT_FORMATS:
    raise ImgrecError(f"{flag}={path}: {suffix} is not a video type imgrec "
                      f"writes. Name the file with one of {known}.")
  muxer, codecs, pix_fmt = OUTPUT_FORMATS[suffix]
  errors = []
  for codec in codecs:
    try:
      _try_encoder(muxer, codec, pix_fmt)
      return muxer, codec, pix_fmt
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"{codec}: {e}")  # FFmpeg says why in many ways.
  raise ImgrecError(f"{flag}={path}: this PyAV build cannot write {suffix} "
                    f"({'; '.join(errors)}). Use another of {known}.")


def _even(n):
  return n + n % 2


class AnnotatedWriter:
  """Writes frames with their steady label drawn on them, as a video file.

  The container and encoder come from the suffix (`OUTPUT_FORMATS`) and are
  tried when the writer is made, before any frame is read. The output has
  the first frame's size, scaled down to at most `OUT_MAX_PIXELS` and
  padded to even sides (yuv420p halves both); later frames of another size
  are fitted to it. A regular file is written under a temporary name and
  moved into place when closed without error; a FIFO or device is written
  into (mp4 and mov then as fragments, which need no seeking back).

  Args:
    path: the output (.mp4, .mkv, .mov, .avi, .webm, .gif).
    fps: the output's frame rate.
    overwrite: replace a file that is at `path` when the writer closes.
      Without it a file that appeared there meanwhile (another run writing
      the same path) stays, and `close` raises.

  Raises:
    ImgrecError: `path` is not a video type imgrec can write.
  """

  def __init__(self, path, fps, overwrite=False):
    self.path, self.fps = os.fspath(path), float(fps)
    self._overwrite = overwrite
    self._muxer, self._codec, self._pix_fmt = output_format(self.path)
    self._special = fileio.is_special(self.path)
    self._atomic = None if self._special else fileio.atomic_path(self.path)
    self._entered = False
    self._font = None
    self._container = None
    self._stream = None
    self.size = None  # (width, height) of the output, from the first frame.

  def fit(self, rgb):
    """`rgb` at the output's size: scaled down, padded or cropped.

    The first frame decides the size. Keep what `fit` returns, not the
    source frame, while a frame waits to be written.
    """
    from PIL import Image  # pylint: disable=g-import-not-at-top
    height, width = rgb.shape[:2]
    if self.size is None:
      scale = min(1.0, math.sqrt(OUT_MAX_PIXELS / max(1, width * height)))
      inner = (max(1, int(width * scale)), max(1, int(height * scale)))
      even = self._pix_fmt == "yuv420p"
      self.size = (_even(inner[0]), _even(inner[1])) if even else inner
      self._inner = inner
    if (width, height) != self._inner:
      rgb = np.asarray(Image.fromarray(rgb).resize(self._inner,
                                                   Image.BILINEAR))
    out = np.zeros((self.size[1], self.size[0], 3), np.uint8)
    h, w = min(rgb.shape[0], self.size[1]), min(rgb.shape[1], self.size[0])
    out[:h, :w] = rgb[:h, :w]
    return out

  def _open(self):
    import av  # pylint: disable=g-import-not-at-top
    options = {}
    if self._special:
      target = self.path
      if self._muxer in ("mp4", "mov"):  # A pipe cannot seek back.
        options["movflags"] = "frag_keyframe+empty_moov"
    else:
      target = self._tmp = self._atomic.__enter__()
      self._entered = True
    self._container = av.open(target, "w", format=self._muxer,
                              options=options)
    self._stream = self._container.add_stream(
        self._codec, rate=fractions.Fraction(self.fps).limit_denominator(
            1000), options=_ENCODER_OPTIONS.get(self._codec, {}))
    self._stream.width, self._stream.height = self.size
    self._stream.pix_fmt = self._pix_fmt

  def write(self, rgb, text):
    """Adds one frame (from `fit`, or any frame) with `text` in a band at
    its top."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from PIL import ImageDraw  # pylint: disable=g-import-not-at-top
    import av  # pylint: disable=g-import-not-at-top
    if self.size is None or rgb.shape[:2] != (self.size[1], self.size[0]):
      rgb = self.fit(rgb)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    band = max(12, image.height // 12)
    draw.rectangle([0, 0, image.width, band], fill=(0, 0, 0))
    if self._font is None:  # Loaded once: it costs more than a frame.
      from PIL import ImageFont  # pylint: disable=g-import-not-at-top
      self._font = ImageFont.load_default()
    draw.text((4, max(0, band // 2 - 6)), text, fill=(255, 255, 255),
              font=self._font)
    frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
    try:
      if self._container is None:
        self._open()
      for packet in self._stream.encode(frame):
        self._container.mux(packet)
    except av.error.FFmpegError as e:
      self._raise(e)

  def _raise(self, e):
    if isinstance(e, OSError) and e.errno:
      raise e  # Full disk, permissions: the CLI says it as an OS error.
    raise ImgrecError(f"Cannot write video {self.path}: {e}.") from e

  def close(self, failed=False):
    """Finishes the file; with `failed`, removes what was written (a
    regular file is left as it was)."""
    import av  # pylint: disable=g-import-not-at-top
    try:
      if self._container is not None:
        try:
          if not failed:
            for packet in self._stream.encode():
              self._container.mux(packet)
        finally:
          self._container.close()
    except av.error.FFmpegError as e:
      failed = True
      self._raise(e)
    finally:
      if self._entered:
        self._commit(failed)

  def _commit(self, failed):
    """Moves the finished file into place, or removes it."""
    drop = (RuntimeError, RuntimeError("not kept"), None)
    if failed:
      self._atomic.__exit__(*drop)
      return
    if self._overwrite:
      self._atomic.__exit__(None, None, None)
      return
    # A hard link cannot land on an existing name: nothing is clobbered.
    try:
      fileio.fsync_path(self._tmp)
      os.link(self._tmp, self.path)
      linked = True
    except FileExistsError:
      linked = None
    except OSError:
      linked = False  # A file system without hard links.
    if linked is False and not os.path.lexists(self.path):
      self._atomic.__exit__(None, None, None)
      return
    self._atomic.__exit__(*drop)  # The temporary name only.
    if not linked:
      raise ImgrecError(f"{self.path} appeared while this run wrote it "
                        "(another run with the same output?) and is left as "
                        "it is. Pass --overwrite to replace it.")
    fileio.fsync_path(os.path.dirname(os.path.abspath(self.path)))
