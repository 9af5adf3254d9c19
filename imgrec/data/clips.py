"""Video clips as training examples: frames sampled across each clip, decoded once.

    clip = decode_clip("walk.mp4", frames=16, image_size=(64, 64), channels=3)
    clip.shape, clip.dtype     # (16, 64, 64, 3) uint8

A clip's frames are taken at the centres of `frames` equal parts of the
whole clip (the segment sampling of Temporal Segment Networks), so a model
sees how the clip goes on, not only how it starts. Frames are read by
`imgrec.data.video`, the reader streams use too: rotated as shown, scaled
by FFmpeg's bilinear scaler while decoding (a long clip's memory stays
small), refused above the pixel limit, a damaged packet costing its frame.

Decoding is the slow part, so each clip is decoded once: `ClipCache` keeps
the sampled frames as .npy files under imgrec's cache folder (never the data
folder), keyed by the file's real path, size and time and by the sampling,
and later runs and epochs read them from there.
"""

import concurrent.futures
import contextlib
import hashlib
import logging
import os

import numpy as np

from imgrec import fileio
from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import pixels
from imgrec.data import video
from imgrec.errors import ImgrecError

logger = logging.getLogger("imgrec")

# Bump when what decode_clip returns for the same file and sampling changes.
CACHE_VERSION = 1


def sample_indices(count, frames):
  """Indices of `frames` frames at the centres of equal parts of `count`.

  A clip shorter than `frames` repeats frames, in order.
  """
  if count < 1:
    raise ValueError(f"count must be at least 1. Received: count={count}")
  centres = (np.arange(frames) + 0.5) * count / frames
  return np.minimum(centres.astype(np.int64), count - 1)


def _decode_at(path, wanted, image_size, rgb_out, max_pixels):
  """{index: rgb} of the wanted frame indices, and the frames decoded."""
  out, losses, last = {}, video.Losses(), max(wanted)
  with contextlib.closing(video.read_video(
      path, max_pixels=max_pixels, losses=losses, size=image_size,
      wanted=wanted)) as frames:
    for frame in frames:
      out[frame.index] = rgb_out(frame.rgb)
      if frame.index >= last:
        break
  if losses:
    logger.warning("%s", losses.describe(path))
  return out, losses.read


def decode_clip(path, *, frames, image_size, channels=3,
                max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """The clip's sampled frames, resized: uint8 [frames, H, W, channels].

  Args:
    path: a video file PyAV (FFmpeg) can read.
    frames: frames to sample across the whole clip.
    image_size: (height, width) of each frame.
    channels: 1 (gray, tf.image's luma) or 3 (RGB).
    max_pixels: refuse a clip whose frames are larger.

  Raises:
    ImgrecError: the file cannot be opened or decoded, holds no video
      frames, or has frames too large.
  """
  path = os.fspath(path)
  rgb_out = (lambda rgb: pixels.to_channels(rgb, 1)) if channels == 1 else (
      np.ascontiguousarray)
  count = video.count_frames(path, max_pixels)
  if count < 1:
    raise ImgrecError(f"{path} holds no video frames (empty or cut short).")
  wanted = sample_indices(count, frames)
  kept, decoded = _decode_at(path, set(wanted.tolist()), image_size, rgb_out,
                             max_pixels)
  if decoded < count and decoded > 0 and len(kept) < len(set(
      wanted.tolist())):
    # Fewer frames decode than the file's packets promised (a damaged
    # tail): sample again among those that do.
    wanted = sample_indices(decoded, frames)
    kept, decoded = _decode_at(path, set(wanted.tolist()), image_size,
                               rgb_out, max_pixels)
  if not kept:
    raise ImgrecError(f"{path} holds no decodable video frames.")
  return np.stack([kept[i] for i in wanted])


class ClipCache:
  """Decoded clips on disk, decoded once per file and sampling.

  Args:
    directory: the cache folder (created when first written; a folder that
      cannot be written means decoding on every read, with a warning).
    frames, image_size, channels: the sampling, as in `decode_clip`.
    max_pixels: refuse clips whose frames are larger (`decode_clip`).
  """

  def __init__(self, directory, *, frames, image_size, channels,
               max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
    self.frames, self.channels = int(frames), int(channels)
    self.max_pixels = max_pixels
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
                       channels=self.channels, max_pixels=self.max_pixels)
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
