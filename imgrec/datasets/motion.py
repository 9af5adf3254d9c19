"""Generates and caches the built-in ``motion`` video-clip dataset.

Every clip shows one flat-coloured "L" or "F" shaped object on a static,
random textured background, moving in one of six ways (`MOTION_CLASSES`):

* ``left`` / ``right``: the object slides horizontally;
* ``clockwise`` / ``counterclockwise``: it turns about its centroid (as seen
  on screen, y pointing down);
* ``approach`` / ``recede``: it grows / shrinks about its centroid.

Speeds, shape, colours, background and the starting state are random per
clip; frames carry a little noise. Only motion tells the class:

* **A single frame cannot.** Every clip has a virtual range of positions,
  sizes and angles: its moving coordinate sweeps that range over the clip,
  and each other coordinate sits at one point of its range picked like a
  random frame's, so a frame drawn at random from a clip has the same
  distribution (position, size, angle, shape, colours, noise) in all six
  classes. A per-frame classifier is at chance (1/6).
* **An unordered set of frames tells the kind of motion, not its
  direction.** A ``left`` clip played backwards is distributed exactly like a
  ``right`` clip (and so for each pair in `MOTION_PAIRS`), so a model that
  pools frames without their order (mean of per-frame features) can at best
  tell translation, rotation and scaling apart, then guess the direction:
  50% accuracy at best.
* **Frame order tells it all.** Consecutive frames separate the six classes.

A frame *at a known index* is not class-neutral, as with any bounded
motion: a ``right`` clip starts left of where a ``left`` clip starts, an
``approach`` clip starts smaller than a ``recede`` clip. From frame 0 alone
the best possible accuracy between the two classes of either pair is about
81%, whatever the clip length. Frame-level baselines must pool or shuffle
frames, not look at one fixed index.

Clips are a pure function of ``(seed, split, class, index)`` and the
frame count and size. Written as H.264 in ``.mp4`` by default (PyAV's
libx264, yuv420p at a low CRF: what phones and cameras write, and sharp
enough that 32x32 frames survive), or FFV1 in ``.mkv`` (lossless in
yuv420p), or MPEG-4 part 2 in ``.mp4``. Layout::

    root/left/000.mp4                       # splits=None
    root/train/left/000.mp4 ... root/test/recede/019.mp4   # with splits

Typical use::

    root = load_motion(splits={"train": 60, "val": 20, "test": 20})
"""

import fractions
import hashlib
import inspect
import json
import os
import zlib

import numpy as np
from PIL import Image
from PIL import ImageDraw

from imgrec import fileio
from imgrec.datasets import _build
from imgrec.datasets._build import COMPLETE_MARKER  # noqa: F401 (re-exported)
from imgrec.datasets._build import DATA_HOME_ENV  # noqa: F401 (re-exported)

MOTION_CLASSES = ("left", "right", "clockwise", "counterclockwise",
                  "approach", "recede")
# Each class and the class its clips become when played backwards.
MOTION_PAIRS = {
    "left": "right",
    "right": "left",
    "clockwise": "counterclockwise",
    "counterclockwise": "clockwise",
    "approach": "recede",
    "recede": "approach",
}
# The coordinate each class moves, and in which direction (+1: it grows).
_MOTIONS = {
    "left": ("x", -1),
    "right": ("x", 1),
    "clockwise": ("angle", 1),  # Angles grow clockwise on screen (y down).
    "counterclockwise": ("angle", -1),
    "approach": ("log_radius", 1),
    "recede": ("log_radius", -1),
}

# Bump when the rendering or encoding changes what a given seed produces.
DATASET_VERSION = 1
CODECS = {
    # codec: (container format, file suffix)
    "libx264": ("mp4", ".mp4"),
    "mpeg4": ("mp4", ".mp4"),
    "ffv1": ("matroska", ".mkv"),
}
# Luma within ~3 dB of lossless yuv420p at 32x32 for ~4 KB a clip; chroma
# is halved by yuv420p whatever the CRF, hence the luma contrast below.
# With x264's macroblock tree on, the same frames encoded to different bytes
# from one call to the next in the same process (about 1 clip in 25 at
# 32x32 and 8 frames, 1 in 3 at 64x64 and 16 frames; libx264 of PyAV
# 16-18's wheels); off, they never did. Single-threaded for the same reason.
_X264_OPTIONS = {
    "crf": "12",
    "preset": "medium",
    "threads": "1",
    "x264-params": "threads=1:lookahead-threads=1:mbtree=0",
}
_ENCODER_OPTIONS = {
    "libx264": _X264_OPTIONS,
    # A fixed quantiser of 2 (ffmpeg's -q:v 2): the default bit rate blurs
    # small frames to blocks. Frames carry no quality of their own, so the
    # quantiser is the clamp qmin = qmax.
    "mpeg4": {"flags": "+qscale", "qmin": "2", "qmax": "2"},
}

_SUPERSAMPLE = 4
_MIN_SIZE = 16
# Object radius (of its bounding circle about the centroid) as a fraction of
# the frame side. Below ~0.14 the arms are under 2 pixels wide at 32x32.
_MIN_RADIUS = 0.14
_MAX_RADIUS = 0.34
# Over a clip, a slide or a zoom covers this fraction of the range it has
# (positions that keep the object in frame, log radii), whatever the clip's
# length: longer paths would make the first frame alone tell the direction
# more often (see the module docstring). A turn has no bounds: its speed is
# per frame.
_PATH_FRACTION = (0.25, 0.5)
_TURN_PER_FRAME = (np.radians(5.0), np.radians(15.0))
# Fraction of the object radius that may stick out of the frame.
_MAX_OVERHANG = 0.25
# Luma difference of the object from its background (besides
# `_build.MIN_CONTRAST`).
_MIN_LUMA_CONTRAST = 50.0
_MIN_CLIPS_FOR_WORKERS = 16


def default_codec():
  """Returns the codec used when none is given: libx264 if PyAV has it."""
  import av  # pylint: disable=g-import-not-at-top
  return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def render_clip(seed, split, class_name, index, *, frames=16, size=64):
  """Renders one clip as RGB frames, without writing it.

  Args:
    seed: Non-negative integer seed.
    split: Split name the clip belongs to ("" for a dataset without splits).
    class_name: One of `MOTION_CLASSES`.
    index: Non-negative index of the clip within its class and split.
    frames: Frames in the clip, at least 2.
    size: Side of the square frames in pixels: even, at least 16.

  Returns:
    A `uint8` array of shape `(frames, size, size, 3)`.

  Raises:
    ValueError: If an argument is invalid.
  """
  _build.check_seed(seed)
  if not isinstance(split, str):
    raise ValueError(f"split must be a string. Received: split={split!r}")
  _check_class(class_name)
  if not _is_int(index) or index < 0:
    raise ValueError(
        f"index must be a non-negative integer. Received: index={index!r}")
  _check_frames(frames)
  _check_size(size)
  spec = _clip_spec(seed, split, class_name, index, frames, size)
  return _render(spec, size)


def generate_motion_clips(root,
                          *,
                          clips_per_class=20,
                          frames=16,
                          size=64,
                          seed=0,
                          classes=MOTION_CLASSES,
                          splits=None,
                          fps=10,
                          codec=None,
                          num_workers=None):
  """Writes motion clips under `root`, one folder per class.

  Each file is written under a temporary name and renamed into place; the
  tree as a whole is not atomic (`load_motion` makes it so). Clip `i` of a
  class and split depends only on `(seed, split, class, i)`, `frames` and
  `size`: asking for more clips or fewer classes keeps the clips already
  there, and `fps` changes only the timestamps.

  Args:
    root: Directory to write into; created if missing.
    clips_per_class: Clips per class when `splits` is None.
    frames: Frames per clip, at least 2.
    size: Side of the square frames in pixels: even (yuv420p halves it),
      at least 16.
    seed: Non-negative integer seed.
    classes: Class names to write, a subset of `MOTION_CLASSES`.
    splits: None to write `root/<class>/NNN<suffix>`, or a mapping from
      split name to clips per class (e.g. `{"train": 60, "val": 20,
      "test": 20}`) to write `root/<split>/<class>/NNN<suffix>`. Splits with
      0 clips are not written.
    fps: Frame rate stored in the files.
    codec: "libx264" (H.264 in .mp4), "mpeg4" (MPEG-4 part 2 in .mp4) or
      "ffv1" (lossless, in .mkv). Defaults to `default_codec()`.
    num_workers: Threads rendering and encoding clips. Defaults to
      `os.cpu_count()`. Does not change the output.

  Returns:
    `root` as a string.

  Raises:
    ValueError: If an argument is invalid.
  """
  counts, classes, codec = _checked(clips_per_class, splits, frames, size,
                                    seed, classes, fps, codec)
  num_workers = _build.check_workers(num_workers)

  suffix = CODECS[codec][1]

  def name(index, per_class):
    # 000, 001...; wider only past 1,000 clips, so names still sort.
    width = max(3, len(str(per_class - 1)))
    return f"{index:0{width}d}{suffix}"

  return _build.write_tree(
      os.fspath(root), counts, classes, name,
      lambda path, split, class_name, index: _write_clip(
          path, seed, split, class_name, index, frames, size, fps, codec),
      num_workers, _MIN_CLIPS_FOR_WORKERS)


def load_motion(data_dir=None, **options):
  """Returns the root of a motion dataset, generating it on first use.

  The dataset lives in `<data_dir>/motion-v<version>-s<seed>-<size>px-
  <frames>f-<digest>`, the digest covering every other parameter, so each
  parameter set and each `DATASET_VERSION` has its own directory. It is
  generated in a temporary sibling directory and renamed into place once
  complete, with a `.complete` marker holding the parameters, as
  `load_shapes` does.

  Args:
    data_dir: Parent directory of the dataset. Defaults to
      `$IMGREC_DATA_HOME` if set, else `~/.cache/imgrec/datasets`.
    **options: the clips, as `generate_motion_clips` takes them
      (clips_per_class, frames, size, seed, classes, splits, fps, codec,
      num_workers), with its defaults.

  Returns:
    Path of the dataset root: one directory per class, or per split and
    then per class.

  Raises:
    ValueError: If an argument is invalid.
    FileExistsError: If the dataset directory exists but was not completed
      by this function.
  """
  # Unknown options are a TypeError, as in a call of generate_motion_clips.
  bound = inspect.signature(generate_motion_clips).bind(None, **options)
  bound.apply_defaults()
  options = {k: v for k, v in bound.arguments.items() if k != "root"}
  seed, size, frames = options["seed"], options["size"], options["frames"]
  splits = options["splits"]
  counts, classes, codec = _checked(
      options["clips_per_class"], splits, frames, size, seed,
      options["classes"], options["fps"], options["codec"])
  data_dir = _build.data_home(data_dir)
  params = {
      "name": "motion",
      "version": DATASET_VERSION,
      "seed": seed,
      "size": size,
      "frames": frames,
      "counts": counts,
      "splits": splits is not None,
      "classes": list(classes),
      "fps": str(fractions.Fraction(options["fps"]).limit_denominator(1000)),
      "codec": codec,
  }
  digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode(
      "utf-8")).hexdigest()[:10]
  root = os.path.join(
      data_dir,
      f"motion-v{DATASET_VERSION}-s{seed}-{size}px-{frames}f-{digest}")

  options.update(classes=classes, codec=codec)
  return _build.build_once(
      root, params, lambda tmp_root: generate_motion_clips(
          tmp_root, **options), "load_motion")


def _rng(seed, split, class_name, index):
  # Keyed on the split and class as well as the index, so splits are
  # disjoint and a clip does not depend on the counts or the class subset.
  return np.random.default_rng([
      seed,
      zlib.crc32(split.encode("utf-8")),
      MOTION_CLASSES.index(class_name),
      index,
  ])


def _clip_spec(seed, split, class_name, index, frames, size):
  """Draws everything that defines one clip.

  Returns:
    A dict: per-frame arrays "x", "y", "radius" (pixels) and "angle"
    (radians), each of shape `(frames,)`; "polygon", "background", "fill",
    "noise_std"; and "rng", the generator, for the per-frame noise.
  """
  rng = _rng(seed, split, class_name, index)
  # The path first: `_path` alone is cheap, for statistics over many clips.
  path = _path(rng, class_name, frames)
  background = _background(rng, size)
  spec = {name: path[name] * size for name in ("x", "y", "radius")}
  spec.update(
      angle=path["angle"],
      polygon=_polygon(rng),
      background=background,
      fill=_contrasting_colour(rng, background),
      noise_std=rng.uniform(1.0, 3.0),
      rng=rng,
  )
  return spec


def _path(rng, class_name, frames):
  """Draws the object's state in each frame of a clip of `class_name`.

  Every coordinate q (x, log radius, angle) gets a virtual path
  `q(s) = centre + speed * s` over the offsets `s = t - (frames - 1) / 2`.
  The class's coordinate follows the path in its direction; each other
  coordinate stays at one offset drawn uniformly from the same set. So a
  frame at a random index has the same distribution in every class, and
  reversing a clip's frames maps each class onto its `MOTION_PAIRS` mirror.
  Every bound below depends on the virtual paths only, never on the class,
  and every class makes the same draws from `rng`.

  Returns:
    A dict of `(frames,)` arrays: "x", "y" and "radius" as fractions of the
    frame side, "angle" in radians in [0, 2 pi), growing clockwise on
    screen.
  """
  half = 0.5 * (frames - 1)
  offsets = np.arange(frames) - half
  log_lo, log_hi = np.log(_MIN_RADIUS), np.log(_MAX_RADIUS)
  log_span = rng.uniform(*_PATH_FRACTION) * (log_hi - log_lo)
  log_centre = rng.uniform(log_lo + log_span / 2, log_hi - log_span / 2)
  margin = np.exp(log_centre + log_span / 2) * (1.0 - _MAX_OVERHANG)
  x_span = rng.uniform(*_PATH_FRACTION) * (1.0 - 2.0 * margin)
  x_centre = rng.uniform(margin + x_span / 2, 1.0 - margin - x_span / 2)
  y = rng.uniform(margin, 1.0 - margin)
  zoom, shift = log_span / (2 * half), x_span / (2 * half)
  turn = rng.uniform(*_TURN_PER_FRAME)
  angle_centre = rng.uniform(0.0, 2.0 * np.pi)
  centres = {"x": x_centre, "log_radius": log_centre, "angle": angle_centre}
  speeds = {"x": shift, "log_radius": zoom, "angle": turn}

  moving, direction = _MOTIONS[class_name]
  path = {}
  for name in ("x", "log_radius", "angle"):
    if name == moving:
      s = direction * offsets
    else:
      s = np.full(frames, offsets[rng.integers(frames)])
    path[name] = centres[name] + speeds[name] * s
  return {
      "x": path["x"],
      "y": np.full(frames, y),
      "radius": np.exp(path["log_radius"]),
      "angle": np.mod(path["angle"], 2.0 * np.pi),
  }


def _render(spec, size):
  rng = spec["rng"]
  background, fill = spec["background"], spec["fill"]
  out = np.empty((len(spec["x"]), size, size, 3), np.uint8)
  for t in range(len(out)):
    mask = _coverage(spec["polygon"], spec["x"][t], spec["y"][t],
                     spec["radius"][t], spec["angle"][t], size)
    image = background * (1.0 - mask) + fill * mask
    image += rng.normal(0.0, spec["noise_std"], size=image.shape)
    out[t] = np.clip(np.rint(image), 0, 255)
  return out


def _polygon(rng):
  """Returns an "L" or "F" about its centroid, bounding radius 1.

  Neither has a symmetry that maps a turned copy onto itself, so the
  direction of a turn is visible; the shapes are mirrored at random so
  handedness says nothing either.
  """
  w = rng.uniform(0.28, 0.38)  # Stroke width; the long bar has length 1.
  if rng.random() < 0.5:
    arm = rng.uniform(0.5, 0.7)
    points = [(0, 0), (1, 0), (1, arm), (1 - w, arm), (1 - w, w), (0, w)]
  else:
    # The middle arm is shorter than the top one, sticks out of the bar and
    # stays clear of the top arm.
    top = rng.uniform(0.6, 0.75)
    mid = rng.uniform(w + 0.12, top - 0.08)
    at = rng.uniform(0.3, 1.0 - 1.5 * w - 0.08)
    points = [(0, 0), (1, 0), (1, top), (1 - w, top), (1 - w, w),
              (at + w / 2, w), (at + w / 2, mid), (at - w / 2, mid),
              (at - w / 2, w), (0, w)]
  points = np.array(points, dtype=np.float64)
  if rng.random() < 0.5:
    points[:, 1] = -points[:, 1]
  points -= _area_centroid(points)
  return points / np.linalg.norm(points, axis=1).max()


def _area_centroid(points):
  x, y = points[:, 0], points[:, 1]
  xn, yn = np.roll(x, -1), np.roll(y, -1)
  cross = x * yn - xn * y
  area = cross.sum() / 2.0
  return np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()
                  ]) / (6.0 * area)


def _coverage(polygon, x, y, radius, angle, size):
  """Returns the anti-aliased (size, size, 1) coverage of the object."""
  c, s = np.cos(angle), np.sin(angle)
  points = polygon @ np.array([[c, -s], [s, c]]).T * radius + (x, y)
  big = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
  ImageDraw.Draw(big).polygon([tuple(p) for p in points * _SUPERSAMPLE],
                              fill=255)
  small = big.reduce(_SUPERSAMPLE)
  return np.asarray(small, dtype=np.float64)[..., None] / 255.0


def _background(rng, size):
  """Returns a float (size, size, 3) static gradient with soft texture."""
  coords = (np.arange(size) + 0.5) / size - 0.5
  angle = rng.uniform(0.0, 2.0 * np.pi)
  ramp = coords[None, :] * np.cos(angle) + coords[:, None] * np.sin(angle)
  image = (rng.uniform(0.0, 255.0, size=3) +
           ramp[..., None] * rng.uniform(-70.0, 70.0, size=3))
  if rng.random() < 0.5:
    # Stripes wider than ~4 pixels, so they do not alias.
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(max(4.0, 0.08 * size), 0.3 * size) / size
    wave = np.sin(2.0 * np.pi *
                  (coords[None, :] * np.cos(angle) +
                   coords[:, None] * np.sin(angle)) / period +
                  rng.uniform(0.0, 2.0 * np.pi))
    image = image + wave[..., None] * rng.uniform(-20.0, 20.0, size=3)
  for _ in range(rng.integers(0, 4)):
    cx, cy = rng.uniform(-0.5, 0.5, size=2)
    sigma = rng.uniform(0.1, 0.25)
    weight = np.exp(-((coords[None, :] - cx)**2 + (coords[:, None] - cy)**2) /
                    (2.0 * sigma**2))[..., None] * rng.uniform(0.15, 0.35)
    image = image * (1.0 - weight) + rng.uniform(0.0, 255.0, size=3) * weight
  return np.clip(image, 0.0, 255.0)


def _contrasting_colour(rng, background):
  """Picks a fill colour far from the background, in colour and in luma.

  The object may go anywhere, so contrast is measured against the whole
  background (its 5th-percentile pixel, so a few close pixels do not
  count); the best of a few random tries wins.
  """
  pixels = background.reshape(-1, 3)
  luma = pixels @ _build.LUMA
  return _build.contrasting_colour(rng, lambda colour: np.concatenate([
      np.linalg.norm(pixels - colour, axis=-1) / _build.MIN_CONTRAST,
      np.abs(luma - colour @ _build.LUMA) / _MIN_LUMA_CONTRAST
  ]).reshape(2, -1), len(pixels) // 20)


def _write_clip(path, seed, split, class_name, index, frames, size, fps,
                codec):
  import av  # pylint: disable=g-import-not-at-top
  clip = render_clip(seed, split, class_name, index, frames=frames, size=size)
  rate = fractions.Fraction(fps).limit_denominator(1000)
  with fileio.atomic_path(path) as tmp:
    # Bit-exact muxing: Matroska would otherwise write random UIDs.
    with av.open(tmp, "w", format=CODECS[codec][0],
                 options={"fflags": "+bitexact"}) as container:
      stream = container.add_stream(codec, rate=rate,
                                    options=dict(_ENCODER_OPTIONS.get(
                                        codec, {})))
      stream.width = stream.height = size
      stream.pix_fmt = "yuv420p"
      for t, rgb in enumerate(clip):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = t, 1 / rate
        for packet in stream.encode(frame):
          container.mux(packet)
      for packet in stream.encode():
        container.mux(packet)


def _counts(clips_per_class, splits):
  if splits is None:
    if not _is_int(clips_per_class) or clips_per_class < 1:
      raise ValueError(f"clips_per_class must be a positive integer. "
                       f"Received: clips_per_class={clips_per_class!r}")
    return {"": clips_per_class}
  if not isinstance(splits, dict) or not splits:
    raise ValueError(f"splits must be None or a non-empty mapping from split "
                     f"name to clips per class. Received: splits={splits!r}")
  _build.check_split_counts(splits, "splits", "Clips")
  counts = {split: n for split, n in splits.items() if n}
  if not counts:
    raise ValueError(f"splits must ask for at least one clip. "
                     f"Received: splits={splits!r}")
  return counts


_is_int = _build.is_int


def _checked(clips_per_class, splits, frames, size, seed, classes, fps, codec):
  """Checks the arguments; returns (counts, classes, codec) resolved."""
  counts = _counts(clips_per_class, splits)
  _check_frames(frames)
  _check_size(size)
  _build.check_seed(seed)
  classes = _check_classes(classes)
  _check_fps(fps)
  return counts, classes, _check_codec(codec)


def _check_frames(frames):
  if not _is_int(frames) or frames < 2:
    raise ValueError(
        f"frames must be an integer >= 2. Received: frames={frames!r}")


def _check_size(size):
  if not _is_int(size) or size < _MIN_SIZE or size % 2:
    raise ValueError(f"size must be an even integer >= {_MIN_SIZE} (yuv420p "
                     f"halves it). Received: size={size!r}")


def _check_class(class_name):
  if class_name not in MOTION_CLASSES:
    raise ValueError(f"Unknown motion class. Expected one of "
                     f"{MOTION_CLASSES}. Received: class_name={class_name!r}")


def _check_classes(classes):
  if isinstance(classes, str) or not classes:
    raise ValueError(f"classes must be a non-empty sequence of names from "
                     f"{MOTION_CLASSES}. Received: classes={classes!r}")
  classes = tuple(classes)
  for class_name in classes:
    _check_class(class_name)
  if len(set(classes)) != len(classes):
    raise ValueError(f"classes has duplicates. Received: classes={classes!r}")
  return classes


def _check_fps(fps):
  if (isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or
      not fps > 0):
    raise ValueError(f"fps must be a positive number. Received: fps={fps!r}")


def _check_codec(codec):
  if codec is None:
    return default_codec()
  if codec not in CODECS:
    raise ValueError(f"Unknown codec. Expected one of {sorted(CODECS)}. "
                     f"Received: codec={codec!r}")
  return codec
