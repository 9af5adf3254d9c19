"""Video clips as training examples: frames sampled across each clip, decoded once.

    clip = decode_clip("walk.mp4", frames=16, image_size=(64, 64), channels=3)
    clip.shape, clip.dtype     # (16, 64, 64, 3) uint8

A clip's frames are taken at the centres of `frames` equal parts of the
whole clip (the segment sampling of Temporal Segment Networks), so a model
sees how the clip goes on, not only how it starts. Frames are scaled by
FFmpeg's bilinear scaler while decoding (PyAV), which keeps a long clip's
memory small.

Decoding is the slow part, so each clip is decoded once: `ClipCache` keeps
the sampled frames as .npy files under imgrec's cache folder (never the data
folder), keyed by the file's real path, size and time and by the sampling,
and later runs and epochs read them from there.
"""

import concurrent.futures
import hashlib
import logging
import os

import numpy as np

from imgrec import fileio
from imgrec.errors import ImgrecError

logger = logging.getLogger("imgrec")

# Bump when what decode_clip returns for the same file and sampling changes.
CACHE_VERSION = 1
# A clip with more pixels a frame than this is refused before decoding.
MAX_FRAME_PIXELS = 40_000_000
_LUMA = np.array([0.2989, 0.587, 0.114], np.float32)  # tf.image's luma.


def sample_indices(count, frames):
  """Indices of `frames` frames at the centres of equal parts of `count`.

  A clip shorter than `frames` repeats frames, in order.
  """
  if count < 1:
    raise ValueError(f"count must be at least 1. Received: count={count}")
  centres = (np.arange(frames) + 0.5) * count / frames
  return np.minimum(centres.astype(np.int64), count - 1)


def _open(path):
  import av  # pylint: disable=g-import-not-at-top
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError) as e:
    raise ImgrecError(f"Cannot open video {path}: {e}. It is damaged or "
                      "not a video; remove it or convert it (e.g. to "
                      "H.264 .mp4).") from e
  if not container.streams.video:
    kinds = sorted({s.type for s in container.streams}) or ["nothing"]
    container.close()
    raise ImgrecError(f"{path} has no video stream (it holds "
                      f"{', '.join(kinds)}). Remove it from the data "
                      "folder.")
  return container


def _count_packets(path):
  """Frames in the file's first video stream, by its packets (no decoding)."""
  import av  # pylint: disable=g-import-not-at-top
  with _open(path) as container:
    stream = container.streams.video[0]
    try:
      return sum(1 for p in container.demux(stream) if p.size)
    except av.error.FFmpegError:
      return 0


def _decode_at(path, wanted, image_size, rgb_out):
  """{index: rgb} of the wanted frame indices, and the frames decoded."""
  import av  # pylint: disable=g-import-not-at-top
  height, width = image_size
  out, index = {}, 0
  with _open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if stream.width * stream.height > MAX_FRAME_PIXELS:
      raise ImgrecError(
          f"{path} has {stream.width}x{stream.height} frames, more than "
          f"{MAX_FRAME_PIXELS} pixels: refused. Scale the video down first.")
    last = max(wanted) if wanted else -1
    try:
      for frame in container.decode(stream):
        if index in wanted:
          rotation = int(round((getattr(frame, "rotation", 0) or 0) / 90.0))
          turned = rotation % 2 == 1
          rgb = frame.reformat(
              width=height if turned else width,
              height=width if turned else height, format="rgb24",
              interpolation="BILINEAR").to_ndarray()
          if rotation % 4:
            rgb = np.rot90(rgb, -rotation % 4)
          out[index] = rgb_out(rgb)
        index += 1
        if index > last:
          break
    except av.error.FFmpegError as e:
      if not index:
        raise ImgrecError(f"Cannot decode video {path}: {e}. It is damaged; "
                          "remove it or convert it.") from e
      logger.warning("%s: decoding stopped after %d frames: %s", path,
                     index, e)
  return out, index


def decode_clip(path, *, frames, image_size, channels=3):
  """The clip's sampled frames, resized: uint8 [frames, H, W, channels].

  Args:
    path: a video file PyAV (FFmpeg) can read.
    frames: frames to sample across the whole clip.
    image_size: (height, width) of each frame.
    channels: 1 (gray, tf.image's luma) or 3 (RGB).

  Raises:
    ImgrecError: the file cannot be opened or decoded, holds no video
      frames, or has frames too large.
  """
  path = os.fspath(path)
  if channels == 1:
    def rgb_out(rgb):
      gray = np.round(rgb.astype(np.float32) @ _LUMA)
      return np.clip(gray, 0, 255).astype(np.uint8)[..., np.newaxis]
  else:
    rgb_out = np.ascontiguousarray
  count = _count_packets(path)
  if count < 1:
    raise ImgrecError(f"{path} holds no video frames (empty or cut short).")
  wanted = sample_indices(count, frames)
  kept, decoded = _decode_at(path, set(wanted.tolist()), image_size, rgb_out)
  if decoded < count and decoded > 0 and len(kept) < len(set(
      wanted.tolist())):
    # Fewer frames decode than the file's packets promised (a damaged
    # tail): sample again among those that do.
    wanted = sample_indices(decoded, frames)
    kept, decoded = _decode_at(path, set(wanted.tolist()), image_size,
                               rgb_out)
  if not kept:
    raise ImgrecError(f"{path} holds no decodable video frames.")
  return np.stack([kept[i] for i in wanted])


class ClipCache:
  """Decoded clips on disk, decoded once per file and sampling.

  Args:
    directory: the cache folder (created when first written; a folder that
      cannot be written means decoding on every read, with a warning).
    frames, image_size, channels: the sampling, as in `decode_clip`.
  """

  def __init__(self, directory, *, frames, image_size, channels):
    self.frames, self.channels = int(frames), int(channels)
    self.image_size = tuple(int(s) for s in image_size)
    height, width = self.image_size
    self.directory = os.path.join(
        directory, f"clips-v{CACHE_VERSION}-{frames}x{height}x{width}x"
        f"{channels}")
    self._writable = True

  @property
  def shape(self):
    return (self.frames, *self.image_size, self.channels)

  def _file(self, path):
    st = os.stat(path)
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape"))
    return os.path.join(self.directory, digest.hexdigest()[:32] + ".npy")

  def get(self, path):
    """The clip of `path`: from the cache, else decoded and cached."""
    path = os.fspath(path)
    try:
      cached = self._file(path)
    except OSError as e:
      raise ImgrecError(f"Cannot read video {path}: {e.strerror}.") from e
    try:
      clip = np.load(cached, allow_pickle=False)
      if clip.shape == self.shape and clip.dtype == np.uint8:
        return clip
    except (OSError, ValueError, EOFError):
      pass  # Not cached yet, or a damaged entry: decode again.
    clip = decode_clip(path, frames=self.frames, image_size=self.image_size,
                       channels=self.channels)
    if self._writable:
      try:
        os.makedirs(self.directory, exist_ok=True)
        with fileio.atomic_write(cached, "wb", encoding=None) as f:
          np.save(f, clip, allow_pickle=False)
      except OSError as e:
        self._writable = False
        logger.warning("cannot write the clip cache %s (%s): clips are "
                       "decoded again on every run", self.directory, e)
    return clip

  def get_all(self, paths, workers=None):
    """{path: clip or the ImgrecError that says why not}, decoded in threads."""
    workers = workers or min(4, os.cpu_count() or 1)

    def one(path):
      try:
        return self.get(path)
      except ImgrecError as e:
        return e

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      return dict(zip(paths, pool.map(one, paths)))
