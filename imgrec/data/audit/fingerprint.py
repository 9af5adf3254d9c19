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
from PIL import Image

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
  own pixels."""
  digest: str
  window: np.ndarray | None
  blur: float = 0.0
  frame: tuple = (0.0, 0.0, 0.0, 0, 0)


def digest(rgb):
  """BLAKE2b (16 bytes) of uint8 RGB pixels and their shape."""
  h = hashlib.blake2b(digest_size=16)
  h.update(np.asarray(rgb.shape, np.int64).tobytes())
  h.update(np.ascontiguousarray(rgb, np.uint8).tobytes())
  return h.hexdigest()


def _gray(rgb):
  image = Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).convert("L")
  side = max(image.size)
  if side > WORK_SIDE:
    scale = WORK_SIDE / side
    image = image.resize((max(1, round(image.size[0] * scale)),
                          max(1, round(image.size[1] * scale))),
                         Image.Resampling.BOX)
  return np.asarray(image, np.float32)


def window(rgb):
  """(window, blur, frame) of uint8 RGB pixels (see Fingerprint)."""
  gray = _gray(rgb)
  height, width = rgb.shape[:2]
  reduced = height / gray.shape[0]
  background = float(np.median(gray))
  ink = np.abs(gray - background)
  total = float(ink.sum())
  if total <= 0:
    return None, 0.0, (0.0, 0.0, 0.0, height, width)
  rows, cols = ink.sum(axis=1), ink.sum(axis=0)
  ys = np.arange(gray.shape[0], dtype=np.float32)
  xs = np.arange(gray.shape[1], dtype=np.float32)
  cy = float(rows @ ys / total)
  cx = float(cols @ xs / total)
  spread = float(np.sqrt((rows @ (ys - cy) ** 2 + cols @ (xs - cx) ** 2)
                         / total))
  spread = max(spread, 0.5)
  half = 0.5 * WINDOW_SIDES * min(gray.shape) * PADDED / WINDOW
  # Pillow samples the box with the right antialiasing; outside the image
  # the background continues (the image sits on a padded canvas).
  pad = int(np.ceil(half)) + 2
  canvas = Image.new("F", (gray.shape[1] + 2 * pad, gray.shape[0] + 2 * pad),
                     background)
  canvas.paste(Image.fromarray(gray, "F"), (pad, pad))
  box = (cx + 0.5 + pad - half, cy + 0.5 + pad - half,
         cx + 0.5 + pad + half, cy + 0.5 + pad + half)
  sampled = canvas.resize((PADDED, PADDED), Image.Resampling.BILINEAR,
                          box=box)
  # One pixel of the (reduced) image spans PADDED / (2 * half) samples: a
  # box that wide, as a Gaussian sigma (box width / sqrt(12)).
  # One pixel of the (reduced) image spans PADDED / (2 * half) samples;
  # what Pillow's antialiasing and interpolation make of it blurs about
  # 0.6 of that (measured on resized MNIST digits: 0.29, a box's sigma,
  # leaves resized copies below 0.99).
  blur = max(1.0, PADDED / (2 * half)) * BLUR_PER_PIXEL
  frame = ((cy + 0.5) * reduced - 0.5, (cx + 0.5) * reduced - 0.5,
           spread * reduced, height, width)
  return (np.clip(np.rint(np.asarray(sampled)), 0, 255).astype(np.uint8),
          float(blur), frame)


def fingerprint(rgb):
  """The Fingerprint of uint8 RGB pixels [H, W, 3]."""
  return Fingerprint(digest(rgb), *window(rgb))


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
