"""Finds the faces in photographs, levels their eyes and crops them square.

`FaceDetector` wraps MTCNN (the `mtcnn` package, whose weights ship inside
it): a box, a confidence and the eye positions for every face. `align_crop`
turns one face into a square uint8 picture with level eyes, and
`load_faces` does both for a list of files, read with the one decode
policy, reporting per file why no face came out of it instead of raising.
`crop_to_folder` writes the crops of a training set as PNG files, and
`split_identities` splits people (not photos) into training and validation.

Importing this module loads neither TensorFlow nor mtcnn: the detector is
built when the first face is looked for, and `load_faces(...,
detect=False)`, for pictures that already are face crops, never builds it.
"""

import collections
import dataclasses
import importlib.util
import logging
import math
import os
import threading

import numpy as np

from imgrec import fileio
from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.config import SEVERAL_FACES
from imgrec.data import decode
from imgrec.errors import ImgrecError

logger = logging.getLogger(__name__)

STATUSES = ("ok", "no_face", "several_faces", "unreadable", "error")
_INSTALL_HINT = "pip install 'mtcnn>=1.0,<2'"


@dataclasses.dataclass(frozen=True)
class Face:
  """One face found in an image.

  Attributes:
    box: (x, y, width, height) in pixels, inside the image.
    confidence: the detector's score, 0..1.
    left_eye: (x, y) of the eye with the smaller x in an upright face (the
      person's right eye).
    right_eye: (x, y) of the other eye.
  """
  box: tuple[int, int, int, int]
  confidence: float
  left_eye: tuple[float, float]
  right_eye: tuple[float, float]

  @property
  def area(self):
    return self.box[2] * self.box[3]


# eq=False: results hold arrays, which `==` cannot compare as dataclass
# fields.
@dataclasses.dataclass(frozen=True, eq=False)
class FaceResult:
  """What `load_faces` made of one file.

  Attributes:
    path: the file.
    status: one of STATUSES: "ok" (`face` holds the crop), "no_face",
      "several_faces" (skipped: which face is meant is unknown),
      "unreadable" (the decode policy refused the file) or "error" (the
      detector failed on it).
    message: why, for people; "" when there is nothing to say.
    face: uint8 array [size, size, 3] when the status is "ok", else None.
    count: how many faces the detector found (1 when detection was off).
    box: (x, y, width, height) of the image region the face came from, or
      None.
  """
  path: str
  status: str
  message: str = ""
  face: np.ndarray | None = None
  count: int = 0
  box: tuple[int, int, int, int] | None = None

  @property
  def ok(self):
    return self.status == "ok"


def check_rgb(rgb):
  """Raises ValueError unless `rgb` is a uint8 array [height, width, 3]."""
  if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and
          rgb.ndim == 3 and rgb.shape[2] == 3):
    shape, dtype = getattr(rgb, "shape", None), getattr(rgb, "dtype", None)
    raise ValueError("Faces are found in RGB uint8 arrays [height, width, 3]"
                     " (decode.read_file gives them). Received: "
                     f"shape={shape}, dtype={dtype}")


def _check_size(size):
  if not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"size must be a positive integer. Received: size="
                     f"{size!r}")


def _require_mtcnn():
  if importlib.util.find_spec("mtcnn") is None:
    raise ImgrecError("Face detection needs the mtcnn package, which is not "
                      f"installed: {_INSTALL_HINT}")


class FaceDetector:
  """Finds faces, with their eyes, in RGB images (MTCNN).

  The networks are built once, on first use, even when several threads
  detect at the same time. About 0.1 to 0.2 seconds a 512x512 image on a
  CPU.

  Args:
    min_confidence: faces the detector scores lower are left out.

  Raises:
    ValueError: `min_confidence` is not within 0..1.
  """

  def __init__(self, min_confidence=0.9):
    if not 0.0 <= min_confidence <= 1.0:
      raise ValueError("min_confidence must be within 0..1. Received: "
                       f"min_confidence={min_confidence}")
    self.min_confidence = float(min_confidence)
    self._lock = threading.Lock()
    self._mtcnn = None

  @property
  def built(self):
    return self._mtcnn is not None

  def build(self):
    """Builds the networks now, instead of at the first `detect`.

    Raises:
      ImgrecError: the mtcnn package is missing or cannot be loaded.
    """
    with self._lock:
      if self._mtcnn is None:
        self._mtcnn = self._new_mtcnn()
    return self

  def mtcnn_stages(self):
    """mtcnn's stages (PNet, RNet, ONet), each holding its Keras `model`:
    what `imgrec-faces export` converts for LiteRT."""
    return list(self.build()._mtcnn.stages)

  @staticmethod
  def _new_mtcnn():
    _require_mtcnn()
    import keras  # pylint: disable=g-import-not-at-top
    from mtcnn import MTCNN  # pylint: disable=g-import-not-at-top
    # Layers take the global dtype policy when built: MTCNN built under
    # mixed_bfloat16 (a training run's policy) fails at every detection
    # with a DTypePromotionError. Once built in float32 it runs under any
    # policy.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
      return MTCNN()
    except Exception as e:  # pylint: disable=broad-except
      raise ImgrecError(f"Cannot load the MTCNN face detector: "
                        f"{type(e).__name__}: {e}. Reinstall it: "
                        f"{_INSTALL_HINT}") from e
    finally:
      keras.mixed_precision.set_global_policy(previous)

  def detect(self, rgb):
    """Finds the faces in one image.

    Args:
      rgb: uint8 array [height, width, 3], as `decode.read_file` gives.

    Returns:
      A list of Face scoring at least `min_confidence`, the largest box
      first; empty for an image without one (or with no pixels).

    Raises:
      ValueError: `rgb` is not an RGB uint8 array.
      ImgrecError: the detector failed on this image, or cannot be loaded.
    """
    return find_faces(lambda image: self.build()._mtcnn.detect_faces(image),
                      rgb, self.min_confidence)


def find_faces(find, rgb, min_confidence):
  """The Faces a detector's `find` gives for one image.

  Both detectors (`FaceDetector`, and the LiteRT one of
  `imgrec.inference.face_detect_lite`) find what mtcnn's `detect_faces`
  returns, and both go through this one check and conversion.

  Args:
    find: fn(rgb) -> [{"box": (x, y, w, h), "confidence", "keypoints":
      {"left_eye", "right_eye", ...}}].
    rgb: uint8 array [height, width, 3].
    min_confidence: findings scoring lower are left out.

  Returns:
    A list of Face, boxes clipped to the image (empty ones left out), the
    largest box first; empty for an image with no pixels (`find` is then
    not called).

  Raises:
    ValueError: `rgb` is not an RGB uint8 array.
    ImgrecError: `find` failed on this image.
  """
  check_rgb(rgb)
  height, width = rgb.shape[:2]
  if height == 0 or width == 0:
    return []
  try:
    found = find(rgb)
  except ImgrecError:
    raise  # The detector cannot load: not this image's fault.
  except Exception as e:  # pylint: disable=broad-except
    # Whatever a detector raises on one image concerns that image only:
    # the caller reports it and goes on with the next.
    raise ImgrecError(f"The face detector failed on a {width}x{height} "
                      f"image: {type(e).__name__}: {e}") from e
  return faces_of(found, width, height, min_confidence)


def faces_of(found, width, height, min_confidence):
  """The Faces of `find_faces`'s findings in a width x height image."""
  faces = []
  for item in found:
    confidence = float(item["confidence"])
    if confidence < min_confidence:
      continue
    x, y, w, h = (int(round(float(v))) for v in item["box"])
    x0, y0 = min(max(x, 0), width), min(max(y, 0), height)
    x1, y1 = min(max(x + w, 0), width), min(max(y + h, 0), height)
    if x1 <= x0 or y1 <= y0:
      continue
    points = item["keypoints"]
    faces.append(Face(
        box=(x0, y0, x1 - x0, y1 - y0), confidence=confidence,
        left_eye=tuple(float(v) for v in points["left_eye"]),
        right_eye=tuple(float(v) for v in points["right_eye"])))
  faces.sort(key=lambda face: (-face.area, -face.confidence))
  return faces


def align_crop(rgb, face, size, margin=0.2):
  """Crops one face square, rotated so that its eyes are level.

  The image is turned about the eyes' midpoint by the angle of the line from
  the left to the right eye, and a square of side `max(width, height) *
  (1 + margin)` centred on the turned box is cut out. (A turn moves the
  box centre along with the image, so the square is centred on the face
  whatever the pivot.) Parts of the square outside the image are black.
  Rotation, crop and resize are one Pillow affine transform, with bilinear
  interpolation; a square larger than `size` is first cut at its own
  resolution, then shrunk with Pillow's antialiased bilinear resize, so
  large photos do not alias. Deterministic: no randomness, no TensorFlow.

  Args:
    rgb: uint8 array [height, width, 3].
    face: a Face (its box and eyes are read).
    size: side of the returned square, in pixels.
    margin: fraction of the box's longer side added to the square's side;
      more than -1.

  Returns:
    uint8 array [size, size, 3].

  Raises:
    ValueError: bad `rgb`, `size` or `margin`.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  check_rgb(rgb)
  if rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise ValueError(f"The image has no pixels. Received: shape={rgb.shape}")
  _check_size(size)
  if not margin > -1:
    raise ValueError(f"margin must be more than -1. Received: margin="
                     f"{margin}")
  x, y, w, h = face.box
  side = max(max(w, h) * (1.0 + margin), 1.0)
  (lx, ly), (rx, ry) = face.left_eye, face.right_eye
  angle = math.atan2(ry - ly, rx - lx)
  # Pixels of the square side `side` are drawn at `pixels` samples a side,
  # then resized to `size` when that is fewer.
  pixels = max(size, int(math.ceil(side)))
  scale = side / pixels
  cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
  cx, cy, half = x + w / 2.0, y + h / 2.0, pixels / 2.0
  # Output point (u, v) comes from the image point
  # centre + scale * R(angle) @ (u - half, v - half): the square's
  # horizontal runs along the eye line.
  coefficients = (cos, -sin, cx - half * (cos - sin),
                  sin, cos, cy - half * (sin + cos))
  crop = Image.fromarray(rgb).transform(
      (pixels, pixels), Image.Transform.AFFINE, coefficients,
      resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
  if pixels != size:
    crop = crop.resize((size, size), Image.Resampling.BILINEAR)
  return np.asarray(crop, dtype=np.uint8)


def whole_square(rgb, size):
  """A whole image resized to size x size (its aspect ratio not kept).

  How `load_faces(detect=False)` reads pictures that already are face
  crops: nothing is cut away. On ORL's 92x112 portraits, cutting the
  centered square instead (losing hair and chin) took eigenfaces' rank-1
  with 5 enrolled from 98% to 92% on the unseen people s31-s40.

  Returns:
    (uint8 array [size, size, 3], (0, 0, width, height)).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  check_rgb(rgb)
  _check_size(size)
  height, width = rgb.shape[:2]
  if not height or not width:
    raise ValueError(f"The image has no pixels. Received: shape={rgb.shape}")
  image = Image.fromarray(rgb)
  if (width, height) != (size, size):
    image = image.resize((size, size), Image.Resampling.BILINEAR)
  return np.asarray(image, dtype=np.uint8), (0, 0, width, height)


def _face_of(path, rgb, size, detector, several, margin=0.2):
  """The FaceResult of one decoded image."""
  try:
    faces = detector.detect(rgb)
  except ImgrecError as e:
    return FaceResult(path, "error", f"{path}: {e}")
  if not faces:
    return FaceResult(path, "no_face", f"No face in {path} (confidence at "
                      f"least {detector.min_confidence:g}).")
  count = len(faces)
  if count > 1 and several == "skip":
    return FaceResult(path, "several_faces", f"{count} faces in {path}: "
                      "which one is meant is unknown.", count=count)
  face = faces[0]
  message = (f"Took the largest of {count} faces in {path}." if count > 1
             else "")
  return FaceResult(path, "ok", message, align_crop(rgb, face, size, margin),
                    count, face.box)


def load_faces(paths, size, detect=True, detector=None, several="skip",
               margin=0.2, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Reads image files and cuts one face out of each.

  Files are read under the one decode policy (EXIF orientation applied,
  transparency on white, any mode made RGB). A file that gives no face is
  reported in its result, never raised: a gallery of a thousand photos
  with one damaged file still loads.

  Args:
    paths: image files.
    size: side of the returned face squares, in pixels.
    detect: find the face with `detector` and `align_crop` it. False for
      pictures that already are face crops (ORL, LFW crops): each is then
      resized whole to the square (`whole_square`), and no
      detector is built.
    detector: a FaceDetector, or any object with its `detect` and
      `min_confidence` (`face_detect_lite.LiteFaceDetector`); a new
      FaceDetector (minimum confidence 0.9) if None.
    several: what to do with an image holding more than one face: "skip"
      it (status "several_faces") or take the "largest" (status "ok",
      `count` says how many there were).
    margin: `align_crop`'s margin around the detected face.
    max_pixels: a file whose header declares more pixels is reported
      "unreadable" before it is decoded (a decompression bomb).

  Returns:
    A list of FaceResult, one for each path, in order.

  Raises:
    ValueError: bad `size` or `several`.
    ImgrecError: `detect` is on and the mtcnn package is missing.
  """
  _check_size(size)
  if several not in SEVERAL_FACES:
    raise ValueError(f"several must be one of {SEVERAL_FACES}. Received: "
                     f"several={several!r}")
  if detect:
    if detector is None or isinstance(detector, FaceDetector):
      _require_mtcnn()
    detector = detector if detector is not None else FaceDetector()
  results = []
  for path in paths:
    path = os.fspath(path)
    try:
      rgb = decode.read_file(path, 3, max_pixels,
                             target_size=None if detect else (size, size))
    except ImgrecError as e:
      results.append(FaceResult(path, "unreadable", str(e)))
      continue
    except Exception as e:  # pylint: disable=broad-except
      # The decoders raise many kinds of errors on damaged files; one such
      # file must not stop the others.
      results.append(FaceResult(path, "unreadable", f"Cannot read image "
                                f"{path}: {type(e).__name__}: {e}"))
      continue
    if detect:
      results.append(_face_of(path, rgb, size, detector, several, margin))
    elif min(rgb.shape[:2]) == 0:
      results.append(FaceResult(path, "unreadable", f"Image {path} has no "
                                "pixels."))
    else:
      square, box = whole_square(rgb, size)
      results.append(FaceResult(path, "ok", "", square, 1, box))
  return results


def summary_line(results, max_names=3):
  """One line for a command-line tool: which files gave no face, and why.

  Files are named relative to the folder all of them share (ORL's
  `s1/1.pgm` and `s2/1.pgm` stay apart), at most `max_names` a status.

  Example: "Faces from 38 of 40 images; skipped 1 no_face (s3/7.pgm),
  1 unreadable (s9/2.pgm)."
  """
  if not results:
    return "No images."
  paths = [os.path.abspath(result.path) for result in results]
  root = os.path.commonpath(paths)
  if len(paths) == 1:
    root = os.path.dirname(root)
  skipped = collections.defaultdict(list)
  for result, path in zip(results, paths):
    if not result.ok:
      skipped[result.status].append(os.path.relpath(path, root))
  ok = len(results) - sum(len(names) for names in skipped.values())
  line = f"Faces from {ok} of {len(results)} images"
  if not skipped:
    return line + "."
  parts = []
  for status in STATUSES:
    names = skipped.get(status)
    if not names:
      continue
    shown = ", ".join(names[:max_names])
    if len(names) > max_names:
      shown += f", and {len(names) - max_names} more"
    parts.append(f"{len(names)} {status} ({shown})")
  return f"{line}; skipped {', '.join(parts)}."


def crop_to_folder(paths, labels, folder, size, *, detect, several="skip",
                   margin=0.2, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Writes the face crop of each photo as `folder/<index>.png`.

  The crops of a training set: `load_faces` makes them (with `detect`, the
  detector's aligned crop; without, the whole photo resized), the same
  preparation enrollment and identification use. The index is the photo's
  place in `paths`, so the same photos give the same file names. Photos
  with no usable face are left out, and one line says which and why.

  Returns:
    (crop paths, their labels), in the order of `paths`.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  results = load_faces(paths, size, detect=detect, several=several,
                       margin=margin, max_pixels=max_pixels)
  kept_paths, kept_labels = [], []
  for i, (result, label) in enumerate(zip(results, labels)):
    if not result.ok:
      continue
    out = os.path.join(folder, f"{i:06d}.png")
    with fileio.atomic_write(out, "wb") as f:
      Image.fromarray(result.face).save(f, format="PNG")
    kept_paths.append(out)
    kept_labels.append(label)
  if len(kept_paths) < len(paths):
    logger.warning("left out %d of %d photos: %s",
                   len(paths) - len(kept_paths), len(paths),
                   summary_line(results))
  return kept_paths, kept_labels


def split_identities(num_people, fraction, seed):
  """(training people, validation people): sorted index lists, seeded.

  About `fraction` of the people are held out, at least 2 and leaving at
  least 2 to train on; with fewer than 4 people or `fraction` 0, nobody.
  """
  order = np.random.default_rng(seed).permutation(num_people)
  if num_people < 4 or fraction <= 0:
    return sorted(order.tolist()), []
  n_val = min(num_people - 2, max(2, int(round(fraction * num_people))))
  return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
