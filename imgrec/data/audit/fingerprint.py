"""What the duplicate search knows of one image: its pixels' digest and a
small window of it in a frame that resizing, cropping and brightness hardly
move.

An exact duplicate has the same decoded pixels (`digest`: BLAKE2b of the
policy's RGB pixels and their shape), whatever its file format or name. A
near duplicate (resized, re-encoded, cropped by a few percent, brighter or
darker) is compared in a window of the image's own: centred on the centroid
of its "ink" (each pixel's distance from the image's median gray), as wide
as `WINDOW_SIDES` of its shorter side, sampled at `WINDOW` x `WINDOW`
points (and `MARGIN` more on each side, for the verification's shifts). A
resized copy has the same window; a copy cropped by up to 10% a window up
to 10% larger and a few samples off (the verification searches both);
brightness and contrast leave the window's normalized values as they were.
"""

import dataclasses
import hashlib

import numpy as np

# Samples across the window, and MARGIN more each side for shifts (a crop
# of a photo moves its frame by a few samples).
WINDOW = 32
MARGIN = 4
PADDED = WINDOW + 2 * MARGIN
# The window's width, as a share of the image's shorter side.
WINDOW_SIDES = 0.9
# Images are reduced to at most this side before the frame is found.
WORK_SIDE = 128
# A window's blur, in samples, for each sample a pixel of the image spans.
BLUR_PER_PIXEL = 0.6
# The index's descriptor: the window averaged down to this side.
DESCRIPTOR_SIDE = 8


@dataclasses.dataclass
class Fingerprint:
  """digest: 32 hex digits; window: uint8 [PADDED, PADDED] gray samples
  (None for an image with no ink: one flat colour); blur: how blurred the
  window is, in samples (the Gaussian sigma of the image's own pixels seen
  at the window's sampling: a small image's window is an enlargement);
  frame: (centroid y, centroid x, spread, height, width) in the image's
  own pixels; colour: the mean chromaticity (r, g shares of r + g + b) of
  the whole image and of its ink (a brightness change keeps them; the
  window's gray does not see colour).
  """
  digest: str
  window: np.ndarray | None
  blur: float = 0.0
  frame: tuple = (0.0, 0.0, 0.0, 0, 0)
  colour: tuple = (1 / 3, 1 / 3, 1 / 3, 1 / 3)


def digest(rgb):
  """BLAKE2b (16 bytes) of uint8 RGB pixels and their shape."""
  h = hashlib.blake2b(digest_size=16)
  h.update(np.asarray(rgb.shape, np.int64).tobytes())
  h.update(np.ascontiguousarray(rgb, np.uint8).tobytes())
  return h.hexdigest()


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclasses.dataclass
class Reduced:
  """What the fingerprint needs of an image, no more: its digest, and its
  gray and RGB pixels reduced by an integer box factor to at most
  WORK_SIDE a side (float32), with the factor and the image's own size. A
  12-megapixel photo is held as about 0.2 MB of these, not 36."""
  digest: str
  gray: np.ndarray
  rgb: np.ndarray
  factor: int
  height: int
  width: int

  @property
  def key(self):
    """Images with one key are fingerprinted together."""
    return (self.gray.shape, self.factor, self.height, self.width)


def _box(x, factor):
  """x [H, W, ...] averaged over factor x factor squares (the rest of the
  last partial square dropped)."""
  if factor == 1:
    return x
  h, w = x.shape[0] // factor, x.shape[1] // factor
  return x[:h * factor, :w * factor].reshape(
      h, factor, w, factor, *x.shape[2:]).mean(axis=(1, 3))


def reduce(rgb):
  """The Reduced of uint8 RGB pixels [H, W, 3]."""
  height, width = rgb.shape[:2]
  factor = max(1, -(-max(height, width) // WORK_SIDE))
  pixels = rgb.astype(np.float32)
  return Reduced(digest(rgb), _box(pixels @ _LUMA, factor),
                 _box(pixels, factor), factor, height, width)


def _sampling(centre, half, size):
  """[B, PADDED, size]: how each of PADDED samples across [centre - half,
  centre + half] weighs the `size` pixels of its image along one axis. A
  triangle as wide as the larger of a pixel and a sample (Pillow's
  antialiased bilinear), normalized as if the image went on: pixels beyond
  it are the background."""
  step = 2 * half / PADDED
  width = max(1.0, step)
  at = centre[:, None] - half + (np.arange(PADDED) + 0.5) * step
  pixels = np.arange(size, dtype=np.float32)
  weights = np.maximum(0.0, 1.0 - np.abs(
      pixels[None, None, :] - at[:, :, None]) / width)
  return (weights / width).astype(np.float32)


def fingerprints(images):
  """Fingerprints of uint8 RGB images [H, W, 3] of one shape, computed
  together (numpy over the batch)."""
  return fingerprints_of_reduced([reduce(x) for x in images])


def fingerprints_of_reduced(reduced):
  """Fingerprints of Reduced images of one `key`, computed together."""
  count = len(reduced)
  factor, height, width = (reduced[0].factor, reduced[0].height,
                           reduced[0].width)
  digests = [r.digest for r in reduced]
  gray = np.stack([r.gray for r in reduced])
  background = np.median(gray.reshape(count, -1), axis=1)
  ink = np.abs(gray - background[:, None, None])
  total = ink.sum(axis=(1, 2))
  rows, cols = ink.sum(axis=2), ink.sum(axis=1)
  ys = np.arange(gray.shape[1], dtype=np.float32)
  xs = np.arange(gray.shape[2], dtype=np.float32)
  safe = np.maximum(total, 1e-12)
  cy, cx = rows @ ys / safe, cols @ xs / safe
  spread = np.sqrt((np.sum(rows * (ys[None] - cy[:, None]) ** 2, axis=1) +
                    np.sum(cols * (xs[None] - cx[:, None]) ** 2, axis=1))
                   / safe)
  spread = np.maximum(spread, 0.5)
  half = 0.5 * WINDOW_SIDES * min(gray.shape[1:]) * PADDED / WINDOW
  down = _sampling(cy, half, gray.shape[1])
  across = _sampling(cx, half, gray.shape[2])
  windows = background[:, None, None] + down @ (
      gray - background[:, None, None]) @ across.transpose(0, 2, 1)
  windows = np.clip(np.rint(windows), 0, 255).astype(np.uint8)
  # One pixel of the (reduced) image spans PADDED / (2 * half) samples; the
  # interpolation blurs about 0.6 of that (measured on resized MNIST
  # digits: 0.29, a box's sigma, left resized copies below 0.99).
  blur = float(max(1.0, PADDED / (2 * half)) * BLUR_PER_PIXEL)
  # The colour of the whole image and of its ink (the object, not the
  # background): the shares of r and g in r + g + b of each mean.
  rgb = np.stack([r.rgb for r in reduced])
  means = np.stack([rgb.mean(axis=(1, 2)), np.einsum(
      "bhw,bhwc->bc", ink, rgb) / safe[:, None]], axis=1)  # [B, 2, 3]
  sums = means.sum(axis=2, keepdims=True)
  chroma = np.where(sums > 0, means[:, :, :2] / np.maximum(sums, 1e-6),
                    1 / 3).reshape(count, 4)
  out = []
  for i in range(count):
    colour = tuple(float(v) for v in chroma[i])
    if total[i] <= 0:
      out.append(Fingerprint(digests[i], None, 0.0,
                             (0.0, 0.0, 0.0, height, width), colour))
      continue
    frame = (float((cy[i] + 0.5) * factor - 0.5),
             float((cx[i] + 0.5) * factor - 0.5),
             float(spread[i] * factor), height, width)
    out.append(Fingerprint(digests[i], windows[i], blur, frame, colour))
  return out


def fingerprint(rgb):
  """The Fingerprint of uint8 RGB pixels [H, W, 3]."""
  return fingerprints([rgb])[0]


def normalized(windows):
  """Windows [N, S, S] as zero-mean unit-norm float32 rows [N, S*S] (a flat
  window stays zero)."""
  x = windows.reshape(len(windows), -1).astype(np.float32)
  x -= x.mean(axis=1, keepdims=True)
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norm, 1e-6)


def descriptors(windows):
  """The index's descriptors of padded windows [N, PADDED, PADDED]: the
  central WINDOW square averaged to DESCRIPTOR_SIDE, normalized."""
  inner = windows[:, MARGIN:-MARGIN, MARGIN:-MARGIN].astype(np.float32)
  f = WINDOW // DESCRIPTOR_SIDE
  pooled = inner.reshape(len(inner), DESCRIPTOR_SIDE, f, DESCRIPTOR_SIDE,
                         f).mean(axis=(2, 4))
  return normalized(pooled)
