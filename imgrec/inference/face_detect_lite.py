"""Finds faces with MTCNN's three networks on LiteRT and NumPy, without TensorFlow.

`imgrec-faces export` converts the networks of the `mtcnn` package (the
weights that ship inside it) to three TFLite files in the run's export
folder (`detector_paths`). `LiteFaceDetector` runs them the way mtcnn's
`MTCNN.detect_faces` does, step for step, so that it finds the same faces
as `imgrec.data.faces.FaceDetector`:

1. The image, as (pixel - 127.5) / 128, is shrunk to a pyramid of scales
   (0.6 * 0.709**k, down to a 12-pixel shortest side) with
   `tf.image.resize`'s area method (`resize_area`, equal to it).
2. PNet scores every 12x12 window (stride 2) of each level; windows above
   0.6 become boxes, regressed, suppressed per level (IoU 0.5) and across
   levels (IoU 0.7), then made square.
3. RNet scores 24x24 crops of those boxes (`crop_and_resize`, equal to
   `tf.image.crop_and_resize`); boxes above 0.7 are regressed, suppressed
   (IoU 0.7) and made square again.
4. ONet scores 48x48 crops, regresses the boxes and places five landmarks;
   boxes above 0.8 are suppressed by intersection over the smaller box
   (0.7).

mtcnn's suppression is not the usual greedy one: a box goes when any
higher-scoring box overlaps it past the threshold, even one that went
itself (`suppress`). Boxes and landmarks come out as mtcnn gives them
(coordinates clipped to the image, rounded to whole pixels), then
`imgrec.data.faces.faces_of` makes the Faces, as for the Keras detector.

This module sits on the inference floor, beside `litert`, because it runs
exported files with LiteRT's interpreter (made quietly by
`litert.make_interpreter`); `imgrec.data.faces.load_faces` takes it as its
`detector` and never imports it. It imports neither TensorFlow nor Keras.
"""

import os
import threading

import numpy as np

from imgrec.data import faces as faces_lib
from imgrec.errors import ImgrecError
from imgrec.inference import litert

# The networks in pipeline order, and the names of their outputs in the
# exported files' serving signature.
NETWORKS = ("pnet", "rnet", "onet")
OUTPUTS = {"pnet": ("boxes", "scores"), "rnet": ("boxes", "scores"),
           "onet": ("boxes", "landmarks", "scores")}
INPUT_NAME = "images"
# Input shapes: PNet is fully convolutional (any height and width, one image
# at a time); RNet and ONet take batches of fixed-size crops.
INPUT_SHAPES = {"pnet": (1, None, None, 3), "rnet": (None, 24, 24, 3),
                "onet": (None, 48, 48, 3)}

# mtcnn's defaults, which FaceDetector runs with.
MIN_FACE_SIZE = 20
WINDOW = 12
STRIDE = 2
SCALE_FACTOR = 0.709
# PNet's output of an s-pixel side has ceil((s - 2) / 2) - 4 cells.
PNET_SMALLEST = 11
THRESHOLDS = {"pnet": 0.6, "rnet": 0.7, "onet": 0.8}
PNET_NMS = (0.5, 0.7)  # Within one pyramid level, then across levels.
RNET_NMS = 0.7
ONET_NMS = 0.7


def detector_file_name(network):
  return f"face_detector_{network}.tflite"


def detector_paths(export_dir):
  """{network: path} of the detector files in a run's export folder."""
  return {network: os.path.join(export_dir, detector_file_name(network))
          for network in NETWORKS}


def has_detector(export_dir):
  """Whether `imgrec-faces export` wrote all three detector files there."""
  return all(os.path.isfile(path)
             for path in detector_paths(export_dir).values())


def _area_weights(in_size, out_size):
  """Source indices [out, span] and their float32 weights for one axis of
  an area resize, as TensorFlow's ResizeArea kernel sets them: each output
  cell covers `in/out` source cells, partly covered ones count by the
  covered fraction, indices past the covered range get weight 0."""
  scale = np.float32(in_size) / np.float32(out_size)
  low = np.arange(out_size, dtype=np.float32) * scale
  high = np.arange(1, out_size + 1, dtype=np.float32) * scale
  start = np.floor(low).astype(np.int64)
  end = np.ceil(high).astype(np.int64)
  index = start[:, None] + np.arange(int((end - start).max()))
  cell, after = index.astype(np.float32), (index + 1).astype(np.float32)
  low, high = low[:, None], high[:, None]
  weight = np.where(
      cell < low, np.where(after > high, scale, after - low),
      np.where(after > high, high - cell, np.float32(1.0)))
  weight = np.where(index < end[:, None], weight, 0).astype(np.float32)
  return np.clip(index, 0, in_size - 1), weight, scale


def resize_area(image, size):
  """`tf.image.resize(image, size, method="area")` of one [H, W, C] image.

  Each output pixel is the mean of the source area it covers, summed along
  the rows first, in float32 and in the kernel's order, so the result
  equals TensorFlow's.

  Args:
    image: [H, W, C] array (read as float32).
    size: (height, width), each at least 1.

  Returns:
    float32 array [height, width, C].
  """
  image = np.asarray(image, np.float32)
  rows_index, rows_weight, rows_scale = _area_weights(image.shape[0],
                                                      int(size[0]))
  cols_index, cols_weight, cols_scale = _area_weights(image.shape[1],
                                                      int(size[1]))
  along_x = np.zeros((image.shape[0], cols_index.shape[0], image.shape[2]),
                     np.float32)
  for k in range(cols_index.shape[1]):
    along_x += image[:, cols_index[:, k]] * cols_weight[:, k, None]
  out = np.zeros((rows_index.shape[0],) + along_x.shape[1:], np.float32)
  for k in range(rows_index.shape[1]):
    out += along_x[rows_index[:, k]] * rows_weight[:, k, None, None]
  # The kernel divides once, by the area of a cell, in double precision.
  return out * np.float32(1.0 / float(rows_scale * cols_scale))


def _sample_positions(low, high, extent, count):
  """Source positions [N, count] of a crop's samples along one axis (low,
  high: the box's ends as fractions of extent - 1)."""
  if count > 1:
    step = (high - low) * np.float32(extent - 1) / np.float32(count - 1)
    return (low[:, None] * np.float32(extent - 1) +
            np.arange(count, dtype=np.float32) * step[:, None])
  # The kernel adds in float32, then halves and scales in double.
  middle = 0.5 * (low + high).astype(np.float64) * (extent - 1)
  return middle.astype(np.float32)[:, None]


def _floor_and_fraction(position, extent):
  """(lower index, upper index, fraction, inside) of sample positions; the
  indices of positions outside the image are 0 (they are masked)."""
  inside = (position >= 0) & (position <= extent - 1)
  position = np.where(inside, position, np.float32(0))
  lower = np.floor(position).astype(np.int64)
  upper = np.ceil(position).astype(np.int64)
  return lower, upper, (position - lower).astype(np.float32), inside


def crop_and_resize(image, boxes, size):
  """`tf.image.crop_and_resize(image[None], boxes, zeros, size)` in NumPy.

  Bilinear samples on a grid from each box's first to its last corner,
  where a box's [y1, x1, y2, x2] are fractions of (height - 1, width - 1);
  samples outside the image are 0. Float32 arithmetic in the kernel's
  order: equal to TensorFlow's result.

  Args:
    image: [H, W, C] array (read as float32).
    boxes: [N, 4] (y1, x1, y2, x2), read as float32.
    size: (height, width) of the crops.

  Returns:
    float32 array [N, height, width, C].
  """
  image = np.asarray(image, np.float32)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  height, width = image.shape[:2]
  top, bottom, y_frac, y_in = _floor_and_fraction(
      _sample_positions(boxes[:, 0], boxes[:, 2], height, int(size[0])),
      height)
  left, right, x_frac, x_in = _floor_and_fraction(
      _sample_positions(boxes[:, 1], boxes[:, 3], width, int(size[1])),
      width)

  def row(y_index):
    at_left = image[y_index[:, :, None], left[:, None, :]]
    at_right = image[y_index[:, :, None], right[:, None, :]]
    return at_left + (at_right - at_left) * x_frac[:, None, :, None]

  upper, lower = row(top), row(bottom)
  out = upper + (lower - upper) * y_frac[:, :, None, None]
  inside = y_in[:, :, None] & x_in[:, None, :]
  return np.where(inside[..., None], out, np.float32(0))


def pyramid_scales(height, width):
  """The scales of mtcnn's image pyramid for a height x width image: from
  12/20 (a 20-pixel face fills PNet's 12-pixel window) by factors of 0.709,
  as many as mtcnn counts for the shorter side (possibly none)."""
  shorter = min(width, height)
  count = round(-(np.log(shorter / WINDOW) / np.log(SCALE_FACTOR) + 1))
  if count <= 0:
    return np.zeros(0)
  return (WINDOW / MIN_FACE_SIZE) * SCALE_FACTOR ** np.arange(count)


def _by_score(boxes):
  """Rows [x1, y1, x2, y2, score, ...] sorted by score, highest first."""
  return boxes[np.argsort(boxes[:, 4])[::-1]]


def suppress(boxes, threshold, method="union"):
  """mtcnn's non-maximum suppression of rows sorted by score.

  A row is kept when no row above it overlaps it by more than `threshold`,
  whether or not that row is kept itself.

  Args:
    boxes: [N, >=4] rows [x1, y1, x2, y2, ...], best first.
    threshold: the overlap past which the lower row goes.
    method: "union" (intersection over union) or "min" (intersection over
      the smaller box).

  Returns:
    The kept rows, in order.
  """
  if len(boxes) < 2:
    return boxes
  x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
  area = (x2 - x1) * (y2 - y1)
  overlap_w = np.maximum(0, np.minimum(x2[:, None], x2[None]) -
                         np.maximum(x1[:, None], x1[None]))
  overlap_h = np.maximum(0, np.minimum(y2[:, None], y2[None]) -
                         np.maximum(y1[:, None], y1[None]))
  inter = overlap_w * overlap_h
  if method == "union":
    base = area[:, None] + area[None] - inter
  elif method == "min":
    base = np.minimum(area[:, None], area[None])
  else:
    raise ValueError(f"method must be 'union' or 'min'. Received: "
                     f"method={method!r}")
  with np.errstate(divide="ignore", invalid="ignore"):
    over = inter / base > threshold
  # over[i, j] with i above j (i < j) suppresses j.
  return boxes[~np.triu(over, k=1).any(axis=0)]


def square(boxes):
  """Boxes grown along their shorter side to squares, centres kept."""
  boxes = boxes.copy()
  width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  side = np.maximum(width, height)
  boxes[:, 0] = boxes[:, 0] + width * 0.5 - side * 0.5
  boxes[:, 1] = boxes[:, 1] + height * 0.5 - side * 0.5
  boxes[:, 2] = boxes[:, 0] + side
  boxes[:, 3] = boxes[:, 1] + side
  return boxes


def _box_sizes(boxes):
  """(width, height) of boxes as mtcnn's refinement counts them (+1)."""
  return boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1


def regress(boxes, offsets):
  """Boxes moved by a network's offsets (fractions of their size)."""
  boxes = boxes.copy()
  width, height = _box_sizes(boxes)
  boxes[:, :4] += offsets * np.stack([width, height, width, height], -1)
  return boxes


def window_boxes(regression, scores, scale):
  """PNet's windows scoring above its threshold, as image boxes.

  Args:
    regression: [h, w, 4] PNet offsets (fractions of the window).
    scores: [h, w] face probabilities.
    scale: the pyramid level's scale.

  Returns:
    [n, 5] rows [x1, y1, x2, y2, score] in image pixels, best first.
  """
  ys, xs = np.where(scores > THRESHOLDS["pnet"])
  # mtcnn places a window's corners at stride * cell + 1 and stride * cell
  # + 12, so a window is 11 pixels across and offsets are counted in 11s.
  first, last = 1, WINDOW
  offsets = regression[ys, xs].astype(np.float64) * (last - first)
  left, top = xs * STRIDE + first, ys * STRIDE + first
  right, bottom = xs * STRIDE + last, ys * STRIDE + last
  boxes = np.stack([left + offsets[:, 0], top + offsets[:, 1],
                    right + offsets[:, 2], bottom + offsets[:, 3],
                    scores[ys, xs].astype(np.float64)], -1)
  boxes = _by_score(boxes)
  boxes[:, :4] /= scale
  return boxes


def _crops(image, boxes, side):
  """side x side crops of `boxes` (pixels) from the normalized image."""
  height, width = image.shape[:2]
  fractions = boxes[:, [1, 0, 3, 2]] / np.array([height, width, height,
                                                 width], np.float64)
  return crop_and_resize(image, fractions, (side, side))


class _Network:
  """One exported MTCNN network on a LiteRT interpreter."""

  def __init__(self, path, network, num_threads=None):
    self.network = network
    try:
      if network == "pnet":
        # PNet's stored input is 1x1, too small to allocate: its tensors are
        # allocated at each call, for that call's size.
        from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
        interpreter = Interpreter(model_path=path, num_threads=num_threads)
      else:
        interpreter = litert.make_interpreter(model_path=path,
                                              num_threads=num_threads)
      self._run = interpreter.get_signature_runner()
    except (ValueError, RuntimeError) as e:
      raise ImgrecError(f"Cannot load the face detector file {path}: "
                        f"{type(e).__name__}: {e}. Run imgrec-faces export "
                        f"again.") from e

  def __call__(self, images):
    """The network's outputs for a float32 batch, in `OUTPUTS` order (the
    input is resized to the batch's shape first)."""
    out = self._run(**{INPUT_NAME: np.ascontiguousarray(images, np.float32)})
    return [out[name] for name in OUTPUTS[self.network]]


class LiteFaceDetector:
  """Finds faces, with their eyes, in RGB images: MTCNN on LiteRT.

  The same faces as `imgrec.data.faces.FaceDetector` (which it stands in
  for), from the files `imgrec-faces export` writes.

  Args:
    export_dir: a run's export folder holding the three detector files.
    min_confidence: faces scored lower are left out.
    num_threads: CPU threads of each interpreter (None: LiteRT's choice).

  Raises:
    ImgrecError: a detector file is missing or cannot be loaded.
    ValueError: `min_confidence` is not within 0..1.
  """

  def __init__(self, export_dir, min_confidence=0.9, num_threads=None):
    if not 0.0 <= min_confidence <= 1.0:
      raise ValueError("min_confidence must be within 0..1. Received: "
                       f"min_confidence={min_confidence}")
    self.min_confidence = float(min_confidence)
    paths = detector_paths(export_dir)
    missing = [path for path in paths.values() if not os.path.isfile(path)]
    if missing:
      raise ImgrecError(f"No face detector file {missing[0]}: run "
                        f"imgrec-faces export again to write it.")
    # LiteRT announces its CPU delegate on stderr once a process, at the
    # first allocation: RNet's, made quietly by make_interpreter.
    self._networks = {network: _Network(paths[network], network, num_threads)
                      for network in ("rnet", "onet", "pnet")}
    # Interpreters keep state between calls: one image at a time.
    self._lock = threading.Lock()

  def detect(self, rgb):
    """The Faces in a uint8 RGB image [height, width, 3], scoring at least
    `min_confidence`, the largest first: `FaceDetector.detect`'s answer,
    its ValueError for a bad image and its ImgrecError for a failure."""
    return faces_lib.find_faces(self.find, rgb, self.min_confidence)

  def find(self, rgb):
    """What mtcnn's `detect_faces` returns for one uint8 RGB image: a list
    of {"box": [x, y, w, h], "confidence", "keypoints"} (whole pixels), in
    the order the last suppression leaves them."""
    with self._lock:
      return self._find(rgb)

  def _find(self, rgb):
    image = (rgb.astype(np.float32) - np.float32(127.5)) / np.float32(128)
    boxes = self._proposals(image)
    if len(boxes):
      boxes = self._refine(image, boxes)
    if len(boxes):
      boxes = self._output(image, boxes)
    return _as_found(boxes, *rgb.shape[:2])

  def _proposals(self, image):
    height, width = image.shape[:2]
    levels = []
    for scale in pyramid_scales(height, width):
      # tf.image.resize takes the scaled size truncated to whole pixels.
      size = (int(height * scale), int(width * scale))
      if min(size) < PNET_SMALLEST:
        continue
      regression, scores = self._networks["pnet"](
          resize_area(image, size)[None])
      boxes = window_boxes(regression[0], scores[0, :, :, 1], scale)
      levels.append(suppress(boxes, PNET_NMS[0]))
    if not levels:
      return np.zeros((0, 5))
    return square(suppress(_by_score(np.concatenate(levels)), PNET_NMS[1]))

  def _refine(self, image, boxes):
    offsets, scores = self._networks["rnet"](_crops(image, boxes, 24))
    boxes = boxes.copy()
    boxes[:, 4] = scores[:, 1]
    boxes = regress(boxes, offsets)
    boxes = boxes[boxes[:, 4] > THRESHOLDS["rnet"]]
    return square(suppress(_by_score(boxes), RNET_NMS))

  def _output(self, image, boxes):
    offsets, landmarks, scores = self._networks["onet"](
        _crops(image, boxes, 48))
    # Landmarks are fractions of the box ONet saw, x's then y's.
    width, height = _box_sizes(boxes)
    # mtcnn keeps the landmarks in float32, as the network gave them.
    xs = (width[:, None] * landmarks[:, :5] + boxes[:, 0:1] - 1).astype(
        np.float32)
    ys = (height[:, None] * landmarks[:, 5:] + boxes[:, 1:2] - 1).astype(
        np.float32)
    boxes = boxes.copy()
    boxes[:, 4] = scores[:, 1]
    boxes = np.concatenate([regress(boxes, offsets), xs, ys], axis=1)
    boxes = boxes[boxes[:, 4] > THRESHOLDS["onet"]]
    return suppress(_by_score(boxes), ONET_NMS, method="min")


def _as_found(boxes, height, width):
  """mtcnn's output of final rows [x1, y1, x2, y2, score, 5 x's, 5 y's]:
  corners clipped into the image, box and landmarks rounded."""
  found = []
  for row in boxes:
    x1, x2 = (min(max(v, 0), width - 1) for v in row[[0, 2]])
    y1, y2 = (min(max(v, 0), height - 1) for v in row[[1, 3]])
    box = np.round(np.array([x1, y1, x2 - x1, y2 - y1])).astype(int)
    points = np.round(row[5:15]).astype(int)
    names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    found.append({
        "box": box.tolist(), "confidence": float(row[4]),
        "keypoints": {name: [int(points[i]), int(points[i + 5])]
                      for i, name in enumerate(names)}})
  return found
