"""`Classifier`: one predict API over .keras, SavedModel and .tflite models.

    clf = imgrec.Classifier.load("runs/shapes-simple_cnn")
    for p in clf.predict(["cat.jpg", "dog.png"]):
      print(p.label, p.score)

Files are read under imgrec's one decode policy (`imgrec.data.decode`) and
resized as the training pipeline and the SavedModel signatures do, so every
format gives the same answer for the same image. On a `.tflite` file nothing
imports TensorFlow or Keras: Pillow decodes, NumPy resizes
(`imgrec.data.pixels`) and LiteRT runs the model.
"""

import dataclasses
import json
import os

import numpy as np

from imgrec import tasks
from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import decode
from imgrec.data import pixels
from imgrec.errors import ImgrecError
from imgrec.inference import model_files
from imgrec.run_folder import INPUT_SPEC_NAME
from imgrec.run_folder import LABELS_NAME
from imgrec.run_folder import read_labels_file
from imgrec.run_folder import RunFolder
from imgrec.tasks import open_set


@dataclasses.dataclass
class Prediction:
  """The classification of one image (or why it could not be classified).

  A multi-label model (one with per-label thresholds) also fills `labels`
  and `scores`; its `label`, `index` and `score` are then those of the best
  label above its threshold (None when no label is), and `top_k` still the
  highest scores.
  """
  label: str | None
  index: int | None
  score: float | None
  top_k: list  # [(label, probability), ...], best first.
  source: str | None = None  # File path, when the input was a file.
  error: str | None = None  # Set, and the rest empty, when it failed.
  labels: list | None = None  # Labels above their thresholds, best first.
  scores: dict | None = None  # {label: sigmoid score}, in class order.
  # A model with an open set: whether the image is of no known class (then
  # `label` is the unknown label, `index` and `score` None, `top_k` still
  # the known classes), and its unknown score (None where the format gives
  # only the decision: a TFLite file).
  unknown: bool | None = None
  unknown_score: float | None = None

  def to_dict(self):
    if self.labels is not None:
      out = {"source": self.source, "labels": self.labels,
             "scores": self.scores}
    else:
      out = {"source": self.source, "label": self.label, "index": self.index,
             "score": self.score,
             "top_k": [{"label": l, "probability": p} for l, p in self.top_k]}
    if self.unknown is not None:
      out["unknown"] = self.unknown
      out["unknown_score"] = self.unknown_score
    if self.error:
      out["error"] = self.error
    return out


@dataclasses.dataclass
class Explanation:
  """Where a model looked for one of its answers (`Classifier.explain`).

  `heatmap` is at the model's input size, in 0..1 (the evidence for
  `label`, its largest value 1; all zero when the model found none).
  `peak` ([x, y]) and `box` ([x0, y0, x1, y1], the end exclusive: the
  pixels around the peak at least half its height) are in the pixel
  coordinates of the image itself (a file's as stored, after its EXIF
  orientation). A clip's heatmap is [T, H, W] and its `frames` hold each
  frame's peak and box. A multi-label model's explanation is of its best
  label, and `per_label` holds one for each label above its threshold.
  """
  method: str | None
  label: str | None
  score: float | None
  heatmap: np.ndarray | None
  peak: list | None = None
  box: list | None = None
  frames: list | None = None
  source: str | None = None
  error: str | None = None
  per_label: list | None = None
  # The image (or clip) as read, uint8, when `explain(keep_images=True)`.
  image: np.ndarray | None = dataclasses.field(default=None, repr=False)

  def to_dict(self):
    out = {"method": self.method, "label": self.label, "score": self.score}
    if self.frames is not None:
      out["frames"] = self.frames
    else:
      out.update(peak=self.peak, box=self.box)
    if self.per_label is not None:
      out["labels"] = [{k: v for k, v in e.to_dict().items() if k != "method"}
                       for e in self.per_label]
    return out


def _image_size_of(path):
  """(height, width) of an image file as shown (EXIF orientation applied)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    width, height = image.size
    if decode.orientation(image) in (5, 6, 7, 8):
      width, height = height, width
  return height, width


def _folders_beside(path):
  """Where a model's files lie: beside a model file or in/above a model
  folder (an export inside its run folder), nearest first."""
  path = os.path.abspath(path)  # "run/best.keras" has the parents of run.
  base = path if os.path.isdir(path) else os.path.dirname(path)
  return (base, os.path.dirname(base), os.path.dirname(os.path.dirname(base)))


def _find_labels(path):
  """Looks for labels.txt beside a model file or in/above a model folder."""
  for candidate in _folders_beside(path):
    f = os.path.join(candidate, LABELS_NAME)
    if os.path.isfile(f):
      return read_labels_file(f)
  return None


def _find_thresholds(path, class_names):
  """The per-label thresholds of a multi-label model, in `class_names`
  order, from its run's thresholds.json (in a SavedModel folder, or found as
  labels.txt is); None when there is none (a single-label model)."""
  for candidate in _folders_beside(path):
    folder = RunFolder(candidate)
    if os.path.isfile(folder.thresholds_path):
      return tasks.MultiLabelTask.read_thresholds(
          folder, class_names)[0] if class_names else None
  return None


def _find_open_set(path, class_names):
  """The open set of a single-label model's run (found as labels.txt is),
  or None."""
  for candidate in _folders_beside(path):
    folder = RunFolder(candidate)
    if os.path.isfile(folder.open_set_path) and class_names:
      return open_set.read(folder, len(class_names))
  return None


class _KerasBackend:
  format = "keras"

  def __init__(self, path):
    self.model = tasks.load_model(path)
    self.input = tasks.model_input(self.model)
    self.path = path
    self._scorer = None

  def use_open_set(self, found):
    """Scores the run's open set from now on (`open_set.scoring_model`)."""
    try:
      self._scorer = open_set.scoring_model(self.model, found)
    except ValueError:  # No classifier head: the open set does not apply.
      self._scorer = None
    return self._scorer is not None

  def __call__(self, pixels):
    return self.scored(pixels)[0]

  def scored(self, pixels):
    """(probabilities [N, C], knownness [N] or None, unknown [N] or None)."""
    if self._scorer is None:
      return np.asarray(self.model(pixels, training=False), np.float32), \
          None, None
    out = self._scorer(pixels, training=False)
    knownness = np.asarray(out["knownness"], np.float32)
    return np.asarray(out["probabilities"], np.float32), knownness, None

  def labels(self):
    return None


class _TFLiteBackend:
  format = "tflite"

  def __init__(self, path, num_threads=None):
    from imgrec.inference.litert import TFLiteRunner  # pylint: disable=g-import-not-at-top
    model_files.check_tflite_file(path)
    try:
      self.runner = TFLiteRunner(path, num_threads=num_threads)
    except (ValueError, RuntimeError, ImgrecError) as e:
      raise ImgrecError(f"Cannot load TFLite model {path}: "
                        f"{str(e).splitlines()[0].rstrip('.')}. It is "
                        "damaged or not an imgrec classifier; export it "
                        "again.") from e
    self.input = self.runner.input
    self.path = path
    from imgrec.inference import tflite_metadata  # pylint: disable=g-import-not-at-top
    try:
      self.packed_open_set = tflite_metadata.read_open_set(path)
    except ValueError as e:
      raise ImgrecError(f"{path} holds a damaged open set ({e}): export it "
                        "again.") from None

  def __call__(self, pixels):
    return self.scored(pixels)[0]

  def scored(self, pixels):
    """(probabilities [N, C], None, unknown [N] or None): a file with an
    open set gives its decision (the last column), not the score."""
    out = self.runner(pixels)
    if self.packed_open_set is None:
      return out, None, None
    probabilities, unknown = open_set.split_unknown_column(
        out, out.shape[-1] - 1)
    return probabilities, None, unknown

  def labels(self):
    """The labels packed in the file's metadata (imgrec and MediaPipe
    files), without the "unknown" column's."""
    from imgrec.inference import tflite_metadata  # pylint: disable=g-import-not-at-top
    labels = tflite_metadata.read_labels(self.path)
    if labels and self.packed_open_set is not None:
      return labels[:-1]
    return labels

  def thresholds(self):
    """{label: threshold} packed in the file (a multi-label model's), or
    None."""
    from imgrec.inference import tflite_metadata  # pylint: disable=g-import-not-at-top
    return tflite_metadata.read_thresholds(self.path)


def _exported_image_size(path):
  """The input size a SavedModel's imgrec_input.json names, else None (not
  an imgrec export: files are decoded at full size)."""
  try:
    with open(os.path.join(path, INPUT_SPEC_NAME), encoding="utf-8") as f:
      return tuple(int(d) for d in json.load(f)["image_size"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


class _SavedModelBackend:
  """Feeds original uint8 images to `serving_default`, which resizes."""
  format = "saved_model"
  takes_raw = True

  def __init__(self, path, trust_model=False):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    model_files.check_saved_model(path, trust=trust_model)
    try:
      self.loaded = tf.saved_model.load(path)
      self.fn = self.loaded.signatures["serving_default"]
    except (KeyError, ValueError, OSError, tf.errors.OpError) as e:
      raise ImgrecError(f"Cannot load SavedModel {path}: "
                        f"{str(e).splitlines()[0] if str(e) else e!r}. Is it "
                        "an imgrec export (serving_default taking uint8 "
                        "images)?") from e
    inputs = self.fn.structured_input_signature[1]
    if len(inputs) != 1:
      raise ImgrecError(f"Cannot load SavedModel {path}: its "
                        f"serving_default takes {sorted(inputs)}; imgrec's "
                        "take one input (images or clips).")
    (self._input, signature), = inputs.items()
    self.path = path
    outputs = self.fn.structured_outputs
    # A classifier's class probabilities, or a multi-label model's scores.
    self._output = next((k for k in ("probabilities", "scores")
                         if k in outputs), None)
    if self._output is None:
      raise ImgrecError(f"Cannot load SavedModel {path}: its serving_default "
                        f"returns {sorted(outputs)}; imgrec's return "
                        "probabilities or scores.")
    shape = signature.shape.as_list() if signature.shape.rank else []
    # The task that takes this input says what it is; the size is in
    # imgrec_input.json (the signature takes any size).
    self.input = dataclasses.replace(
        tasks.model_input(shape),
        image_size=_exported_image_size(path))

  def raw(self, examples):
    """Probabilities [N, C] of uint8 examples (images [N, H, W, 3], clips
    [N, T, H, W, 3]) of one size."""
    return self.raw_scored(examples)[0]

  def raw_scored(self, examples):
    """(probabilities [N, C], knownness [N] or None, unknown [N] or None)
    of uint8 examples of one size: a SavedModel with an open set returns
    its score and decision."""
    out = self.fn(**{self._input: np.asarray(examples, np.uint8)})
    if "knownness" not in out:
      return out[self._output].numpy(), None, None
    return (out[self._output].numpy(), out["knownness"].numpy(),
            out["unknown"].numpy())

  def open_set(self):
    """The open set the SavedModel folder holds (its decisions are in its
    outputs), or None."""
    if "knownness" not in self.fn.structured_outputs:
      return None
    try:
      with open(os.path.join(self.path, "open_set.json"),
                encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def labels(self):
    return None


def _check_float_pixels(image, where):
  """Raises unless float pixels are finite raw 0..255 values; rounds them."""
  if not np.isfinite(image).all():
    raise ImgrecError(f"{where} holds NaN or infinite values.")
  low, high = float(image.min()), float(image.max())
  if low < 0 or high > 255:
    raise ImgrecError(f"{where} holds values outside 0..255 ({low:g} to "
                      f"{high:g}): give raw pixels.")
  if high <= 1 and np.any((image > 0) & (image < 1)):
    raise ImgrecError(f"{where} looks like floats in 0..1; imgrec takes raw "
                      "0..255 pixels: multiply by 255.")
  return np.round(image)


def _check_integer_pixels(image, where):
  """Raises unless integer pixels are 8-bit values 0..255."""
  if image.dtype == np.uint16 or (image.dtype.kind in "iu" and
                                  image.size and image.max() > 255):
    raise ImgrecError(f"{where} holds values above 255 ({image.dtype}): give "
                      "8-bit pixels, e.g. (image >> 8).astype(np.uint8) for "
                      "16-bit images.")
  if image.dtype.kind == "i" and image.size and image.min() < 0:
    raise ImgrecError(f"{where} holds negative values: give 0..255 pixels.")
  return image


def _as_image(item, where):
  """Checks one array input against the contract; returns uint8 [H, W, 3].

  The contract: uint8, or a float or int array in 0..255 (raw pixels, as
  files give them), shaped [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]
  (alpha is composited on white, as for files).
  """
  if item is None:
    raise ImgrecError(f"{where} is None: give a file path or an image array.")
  image = np.asarray(item)
  if image.dtype == object or image.dtype.kind not in "uif":
    raise ImgrecError(f"{where} has dtype {image.dtype}: give uint8 pixels "
                      "(or floats in 0..255).")
  if image.dtype.kind in "iu":
    image = _check_integer_pixels(image, where)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ImgrecError(f"{where} must be [H, W], [H, W, 1], [H, W, 3] or "
                      f"[H, W, 4]. Received: shape={image.shape}")
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ImgrecError(f"{where} is empty. Received: shape={image.shape}")
  if image.dtype.kind == "f":
    image = _check_float_pixels(image, where)
  image = image.astype(np.uint8)
  if image.shape[-1] == 4:
    image = pixels.composite_on_white(image)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return image


def _as_list(inputs):
  """A list of inputs, or an ImgrecError for what holds none (a number, the
  bytes of a file, a dict)."""
  try:
    if isinstance(inputs, (bytes, bytearray, memoryview, dict, set)):
      raise TypeError
    return list(inputs)
  except TypeError:
    raise ImgrecError(
        "Expected an image path, an image array or a list of them. "
        f"Received: {type(inputs).__name__} {inputs!r:.80}") from None


def _scores_each_label(backend):
  """Whether a Keras or SavedModel model has a sigmoid (multi-label) head."""
  model = getattr(backend, "model", None)
  if model is None:  # A SavedModel names its multi-label output "scores".
    return getattr(backend, "_output", None) == "scores"
  try:
    layer = model.get_layer("predictions")
  except ValueError:
    return False
  return getattr(getattr(layer, "activation", None), "__name__",
                 None) == "sigmoid"


def _open_set_of(backend, path, class_names):
  """{"score", "threshold", "unknown_label"} of a single-label model with
  an open set (packed in a TFLite file, held by a SavedModel folder, or its
  run's for a Keras model), else None."""
  if not class_names:
    return None
  label = open_set.unknown_label(class_names)
  if backend.format == "tflite":
    packed = backend.packed_open_set
  elif backend.format == "saved_model":
    packed = backend.open_set()
  else:
    found = _find_open_set(path, class_names)
    if found is None or not backend.use_open_set(found):
      return None
    packed = {"score": found.score, "threshold": found.threshold}
  if packed is None:
    return None
  try:
    threshold = float(packed.get("threshold", "nan"))
  except (TypeError, ValueError, AttributeError):
    threshold = float("nan")
  if backend.format != "saved_model" and not np.isfinite(threshold):
    raise ImgrecError(f"{path} holds a damaged open set ({packed!r:.120}): "
                      "export it again.")
  return {"score": packed.get("score"), "threshold": threshold,
          "unknown_label": label}


def _thresholds(backend, path, class_names):
  """A model's per-label thresholds in class order: packed in its file (a
  TFLite file's metadata), else its run's; None for a single-label model."""
  packed = getattr(backend, "thresholds", lambda: None)()
  if packed is None:
    found = _find_thresholds(path, class_names)
    if found is None and _scores_each_label(backend):
      raise ImgrecError(
          f"{path} scores each label on its own (a multi-label model), but no "
          "thresholds.json lies beside it or in its run folder to decide the "
          "labels; imgrec-train writes one at the end of a run.")
    return found
  missing = [c for c in class_names or [] if c not in packed]
  if missing or not class_names:
    raise ImgrecError(f"{path} holds thresholds for the labels "
                      f"{sorted(packed)}, not for its labels "
                      f"{class_names}: export it again.")
  try:
    ordered = [float(packed[c]) for c in class_names]
  except (TypeError, ValueError):
    ordered = [float("nan")]
  if not all(0.0 <= t <= 1.0 for t in ordered):
    raise ImgrecError(f"{path} holds thresholds outside [0, 1]: export it "
                      "again.")
  return ordered


class Classifier:
  """Classifies images with a trained imgrec model in any exported format.

  Inputs: file paths (read under imgrec's decode policy, refused from the
  header when larger than `max_image_pixels`), or arrays of raw 0..255
  pixels (uint8, or floats/ints in that range).

  A multi-label model's run gives each label a threshold (`thresholds`, in
  class order): its predictions carry every label above its threshold.

  A single-label model whose run has an open set (`open_set`: {"score",
  "threshold", "unknown_label"}) answers the unknown label for an image of
  no class it knows, in every format: the Keras model scores it from its
  run's open_set.json, an exported SavedModel and TFLite file carry the
  same decision.
  """

  def __init__(self, backend, class_names, path,
               max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, thresholds=None,
               open_set_record=None):
    self._backend = backend
    self.class_names = list(class_names) if class_names else None
    self.path = path
    self.max_image_pixels = max_image_pixels
    self.thresholds = (None if thresholds is None else
                       np.asarray(thresholds, np.float64))
    self.open_set = open_set_record

  @property
  def format(self):
    return self._backend.format

  @property
  def model_input(self):
    """The `tasks.ModelInput` of the model: its task, size and frames."""
    return self._backend.input

  @property
  def image_size(self):
    """The model's input (height, width), when the format says it (JPEGs
    decode DCT-scaled for it: the decode policy)."""
    return self._backend.input.image_size

  @classmethod
  def load(cls, path, *, trust_model=False,
           max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS, num_threads=None):
    """Loads a model.

    Args:
      path: a `.keras` file, a `.tflite` file, a SavedModel folder, or an
        imgrec model_dir (its `export/saved_model`, else `best.keras`).
      trust_model: load a SavedModel even if its graphs can read or write
        files or run Python (see `model_files`). `.keras` files are always
        loaded in Keras' safe mode.
      max_image_pixels: refuse image files declaring more pixels.
      num_threads: CPU threads for TFLite models.

    Raises:
      ImgrecError: nothing loadable at `path`, a damaged file, or an
        untrusted SavedModel with side effects.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
      raise ImgrecError(f"Model {path} does not exist. Pass a .keras or "
                        ".tflite file, a SavedModel folder or a model_dir.")
    if os.path.isdir(path) and not os.path.isfile(
        os.path.join(path, "saved_model.pb")):
      run = RunFolder(path)
      if run.exists():
        tasks.get_task(run.read_task()).check_command("predict")
      for candidate in (run.saved_model_dir, run.best_model_path):
        if os.path.exists(candidate):
          return cls.load(candidate, trust_model=trust_model,
                          max_image_pixels=max_image_pixels,
                          num_threads=num_threads)
      raise ImgrecError(f"{path} is neither a SavedModel nor an imgrec "
                        "model_dir (no export/saved_model or best.keras).")
    if os.path.isdir(path):
      backend = _SavedModelBackend(path, trust_model)
    elif path.endswith(".keras"):
      backend = _KerasBackend(path)
    elif path.endswith(".tflite"):
      backend = _TFLiteBackend(path, num_threads)
    else:
      raise ImgrecError(f"Unknown model format: {path}. Expected a .keras or "
                        ".tflite file or a SavedModel folder.")
    labels = backend.labels() or _find_labels(path)
    thresholds = _thresholds(backend, path, labels)
    return cls(backend, labels, path, max_image_pixels, thresholds,
               None if thresholds is not None else
               _open_set_of(backend, path, labels))

  @property
  def clip_frames(self):
    """Frames of a clip model's input; None for an image model."""
    return self._backend.input.frames

  def _clip(self, item, index):
    """One clip input as uint8 [T, H, W, 3] and its source path (or None)."""
    from imgrec.data import clips  # pylint: disable=g-import-not-at-top
    if isinstance(item, (str, os.PathLike)):
      path = os.fspath(item)
      return clips.decode_clip(path, frames=self.clip_frames,
                               image_size=self.image_size), path
    clip = np.asarray(item)
    if clip.ndim != 4 or clip.shape[0] != self.clip_frames:
      raise ImgrecError(f"Input {index}: a clip model takes clips of "
                        f"{self.clip_frames} frames [T, H, W, 3]. Received: "
                        f"shape={clip.shape}")
    return np.stack([_as_image(f, f"Input {index}") for f in clip]), None

  def _one_image(self, item, index):
    """One image input as uint8 [H, W, 3] and its source path (or None)."""
    if isinstance(item, (str, os.PathLike)):
      path = os.fspath(item)
      return decode.read_file(path, 3, self.max_image_pixels,
                              self.image_size), path
    return _as_image(item, f"Input {index}"), None

  # How an example of each kind of input (a task's `noun`) is read.
  _READERS = {"images": _one_image, "clips": _clip}

  def _read(self, item, index):
    """One input as the model's task reads it (uint8) and its source path
    (or None)."""
    kind = self._backend.input.kind
    if kind not in self._READERS:
      raise ImgrecError(f"Classifier reads {' and '.join(self._READERS)}; "
                        f"{self.path} takes {kind}.")
    return self._READERS[kind](self, item, index)

  def prepare(self, images):
    """uint8 images [H, W, 3] -> what `run` takes (the model's input).

    For .keras and .tflite models: float32 pixels resized to the input size;
    for a SavedModel, the images as they are (its graph resizes).
    """
    if getattr(self._backend, "takes_raw", False):
      return list(images)
    spec = self._backend.input
    return pixels.preprocess(images, spec.image_size, spec.channels)

  def run(self, prepared):
    """Probabilities [N, num_classes] of a `prepare`d batch: the model alone."""
    if getattr(self._backend, "takes_raw", False):
      if len({im.shape for im in prepared}) == 1:
        return self._backend.raw(np.stack(prepared))
      return np.concatenate([self._backend.raw(im[None]) for im in prepared])
    return self._backend(prepared)

  def _probabilities(self, images):
    return self.run(self.prepare(images))

  def run_scored(self, prepared):
    """(probabilities [N, C], knownness [N] or None, unknown bool [N] or
    None) of a `prepare`d batch: with an open set, how known each example
    looks (where the format gives it) and whether it is of no known
    class."""
    if getattr(self._backend, "takes_raw", False):
      if len({im.shape for im in prepared}) == 1:
        parts = [self._backend.raw_scored(np.stack(prepared))]
      else:
        parts = [self._backend.raw_scored(im[None]) for im in prepared]
      probabilities, knownness, unknown = (
          None if parts[0][i] is None else np.concatenate([p[i] for p in parts])
          for i in range(3))
    else:
      probabilities, knownness, unknown = self._backend.scored(prepared)
    if self.open_set is None:
      return probabilities, None, None
    if unknown is None and knownness is not None:
      unknown = knownness < self.open_set["threshold"]
    return probabilities, knownness, unknown

  def predict_proba(self, inputs):
    """Returns class probabilities [N, num_classes] for images or paths.

    Raises:
      ImgrecError: an input breaks the contract or cannot be read (naming
        it).
    """
    single = isinstance(inputs, (str, os.PathLike, np.ndarray))
    items = [inputs] if single else _as_list(inputs)
    images = [self._read(item, i)[0] for i, item in enumerate(items)]
    return self._probabilities(images)

  def predict_open_proba(self, inputs):
    """[N, C + 1] for images or paths: the class probabilities, then the
    open set's unknown column (1 for an image of no known class, whose class
    probabilities are then 0): what a stream smooths in time. Without an
    open set, `predict_proba`.

    Raises:
      ImgrecError: as `predict_proba`.
    """
    if self.open_set is None:
      return self.predict_proba(inputs)
    single = isinstance(inputs, (str, os.PathLike, np.ndarray))
    items = [inputs] if single else _as_list(inputs)
    images = [self._read(item, i)[0] for i, item in enumerate(items)]
    probabilities, _, unknown = self.run_scored(self.prepare(images))
    u = np.asarray(unknown, np.float32)[:, None]
    return np.concatenate([probabilities * (1.0 - u), u], axis=1)

  @property
  def answer_names(self):
    """The names of `predict_open_proba`'s columns."""
    if self.open_set is None:
      return self.class_names
    return [*self.class_names, self.open_set["unknown_label"]]

  def predict(self, inputs, top_k=5):
    """Classifies images.

    Args:
      inputs: a path or an image array, or a list of them.
      top_k: how many classes to list per image (at least 1).

    Returns:
      A list of `Prediction`, one per input. For a list of inputs, one that
      cannot be read or breaks the contract gets a Prediction whose `error`
      says why; the others are classified.

    Raises:
      ImgrecError: a bad `top_k`, or a single input that cannot be used.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
      raise ImgrecError(f"top_k must be an integer >= 1. Received: "
                        f"top_k={top_k!r}")
    single = isinstance(inputs, (str, os.PathLike, np.ndarray)) or (
        inputs is None)
    items = [inputs] if single else _as_list(inputs)
    loaded, failures = [], {}
    for i, item in enumerate(items):
      try:
        loaded.append((i,) + self._read(item, i))
      except ImgrecError as e:
        if single:
          raise
        failures[i] = Prediction(None, None, None, [], source=(
            os.fspath(item) if isinstance(item, (str, os.PathLike)) else None),
                                 error=str(e), **self._no_label_sets())
    out = dict(failures)
    if loaded:
      probabilities, knownness, unknown = self.run_scored(
          self.prepare([im for _, im, _ in loaded]))
      names = self.class_names or [str(i)
                                   for i in range(probabilities.shape[1])]
      for row, ((i, _, source), p) in enumerate(zip(loaded, probabilities)):
        out[i] = self._prediction(
            p, names, top_k, source,
            None if knownness is None else float(knownness[row]),
            None if unknown is None else bool(unknown[row]))
    return [out[i] for i in range(len(items))]

  def _prediction(self, p, names, top_k, source, knownness=None,
                  unknown=None):
    """The Prediction of one example's outputs `p` (and, with an open set,
    its knownness and whether it is of no known class)."""
    order = np.argsort(-p, kind="stable")
    top = [(names[j], float(p[j])) for j in order[:top_k]]
    if unknown:
      return Prediction(label=self.open_set["unknown_label"], index=None,
                        score=None, top_k=top, source=source, unknown=True,
                        unknown_score=knownness)
    if self.thresholds is None:
      return Prediction(label=names[order[0]], index=int(order[0]),
                        score=float(p[order[0]]), top_k=top, source=source,
                        unknown=unknown, unknown_score=knownness)
    above = [int(j) for j in order if p[j] >= self.thresholds[j]]
    best = above[0] if above else None
    return Prediction(
        label=None if best is None else names[best], index=best,
        score=None if best is None else float(p[best]), top_k=top,
        source=source, labels=[names[j] for j in above],
        scores={n: float(v) for n, v in zip(names, p)})

  def _no_label_sets(self):
    """The label-set fields of a failed prediction."""
    if self.open_set is not None:
      return {"unknown": None}
    return {} if self.thresholds is None else {"labels": [], "scores": {}}

  # --- Explanations ----------------------------------------------------------

  def keras_model_path(self):
    """The .keras file explanations run on: the model itself, or its run's
    best.keras (beside a SavedModel or TFLite file exported in the run)."""
    if self.format == "keras":
      return self.path
    for candidate in _folders_beside(self.path):
      found = RunFolder(candidate).best_model_path
      if os.path.isfile(found) and _find_labels(found) == self.class_names:
        return found
    raise ImgrecError(
        f"Explanations take the gradients of the Keras model, and {self.path} "
        f"is a {self.format} model with no best.keras of its run beside it. "
        "Pass the run's model_dir or its best.keras.")

  def explainer(self, method=None):
    """The `explain.Explainer` of this model and `method` (kept for reuse).

    Raises:
      ImgrecError: no Keras model, or a method that does not apply to it.
    """
    from imgrec.inference import explain  # pylint: disable=g-import-not-at-top
    if not hasattr(self, "_explainers"):
      self._explainers = {}
      self._explained_model = tasks.load_model(self.keras_model_path())
    model = self._explained_model
    if method is not None and not isinstance(method, str):
      raise ImgrecError(f"method must be a method name ({', '.join(explain.METHODS)}"
                        f"). Received: {method!r}")
    try:
      method = explain.check_method(model, method)
    except ValueError as e:
      raise ImgrecError(str(e)) from None
    if method not in self._explainers:
      self._explainers[method] = explain.Explainer(model, method)
    return self._explainers[method]

  def _target_index(self, target):
    """A target label (name or index) as a class index."""
    names = self.class_names or []
    if isinstance(target, str):
      if target not in names:
        raise ImgrecError(f"target {target!r} is not a class of {self.path} "
                          f"({', '.join(names[:10])}"
                          f"{', ...' if len(names) > 10 else ''}).")
      return names.index(target)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) \
        and 0 <= int(target) < len(names):
      return int(target)
    raise ImgrecError(f"target must be a class name or index 0..{len(names) - 1}."
                      f" Received: {target!r}")

  def explain(self, inputs, method=None, target=None, keep_images=False):
    """Heatmaps of where the model looked, one `Explanation` an input.

    Args:
      inputs: a path or an image (or clip) array, or a list of them, as
        `predict` takes.
      method: one of `explain.methods_for` the model (None: Grad-CAM where
        the model has a spatial feature map, else integrated gradients).
      target: the class to explain (a name or index) for every input; None
        for the predicted class (a multi-label model: each label above its
        threshold, its best one if none is).
      keep_images: keep each image as read in its explanation (`image`),
        for pictures (`explain.picture`).

    Returns:
      A list of `Explanation` (one for a single input); for a list of
      inputs, one that cannot be read has `error` set.

    Raises:
      ImgrecError: no Keras model to take gradients of, an unknown or
        inapplicable method or target, or a single input that cannot be
        used.
    """
    explainer = self.explainer(method)
    if explainer.kind != "classes":
      raise ImgrecError(f"{self.path} has no classifier head: explain a face "
                        "model's matches with imgrec.faces.")
    index = None if target is None else self._target_index(target)
    single = isinstance(inputs, (str, os.PathLike, np.ndarray)) or (
        inputs is None)
    items = [inputs] if single else _as_list(inputs)
    out, loaded = self._read_to_explain(items, single, explainer.method)
    if loaded:
      out.update(self._explained(explainer, loaded, index, keep_images))
    return [out[i] for i in range(len(items))]

  def _read_to_explain(self, items, single, method):
    """({i: Explanation with `error`} of the inputs that cannot be read,
    [(i, image, source, size as shown)] of the others)."""
    failed, loaded = {}, []
    for i, item in enumerate(items):
      try:
        image, source = self._read(item, i)
        size = (_image_size_of(source) if source is not None and
                self.clip_frames is None else image.shape[-3:-1])
        loaded.append((i, image, source, size))
      except (ImgrecError, OSError) as e:
        if single:
          raise ImgrecError(str(e)) from None
        failed[i] = Explanation(method, None, None, None, source=(
            os.fspath(item) if isinstance(item, (str, os.PathLike)) else None),
                                error=str(e))
    return failed, loaded

  def _explained(self, explainer, loaded, index, keep_images):
    """{i: Explanation} of the read inputs, explaining class `index` (None:
    the answer; a multi-label model's: each label above its threshold)."""
    from imgrec.inference import explain  # pylint: disable=g-import-not-at-top
    spec = tasks.model_input(explainer.model)
    batch = pixels.preprocess([im for _, im, _, _ in loaded],
                              spec.image_size, spec.channels)
    names = self.class_names or [
        str(j) for j in range(explainer.model.output.shape[-1])]
    targets = np.full([len(loaded)], -1 if index is None else index)
    maps, probabilities, used = explainer(batch, targets)
    each_label = self.thresholds is not None and index is None
    if each_label:
      extra = self._label_maps(explainer, batch, probabilities, used, maps)
    out = {}
    for row, (i, image, source, size) in enumerate(loaded):
      def explained(j, heat):
        return self._explanation(explain, explainer.method, heat, names[j],
                                 float(probabilities[row, j]), source, size)
      label = int(used[row])
      out[i] = explained(label, maps[row])
      if each_label:
        out[i].per_label = [explained(j, heat) for j, heat in
                            extra[row] or [(label, maps[row])]]
      if keep_images:
        out[i].image = image
    return out

  def _label_maps(self, explainer, batch, probabilities, used, maps):
    """{row: [(label, heatmap), ...]}: each label above its threshold (the
    best label's map `maps[row]` reused), best first; [] if none is."""
    rows, labels = [], []
    for row, p in enumerate(probabilities):
      for j in np.argsort(-p, kind="stable"):
        if p[j] >= self.thresholds[j] and j != used[row]:
          rows.append(row)
          labels.append(int(j))
    found = {}
    if rows:
      more = explainer(batch[rows], np.asarray(labels))[0]
      for row, j, heat in zip(rows, labels, more):
        found.setdefault(row, []).append((j, heat))
    return {row: ([(int(used[row]), maps[row])] if probabilities[
        row, used[row]] >= self.thresholds[used[row]] else []) +
            found.get(row, []) for row in range(len(batch))}

  def _explanation(self, explain, method, heat, label, score, source, size):
    if heat.ndim == 3:  # A clip: each frame's own peak and box.
      frames = []
      for frame in heat:
        peak, box = explain.to_image(*explain.locate(frame), frame.shape, size)
        frames.append({"peak": peak, "box": box})
      return Explanation(method, label, score, heat, frames=frames,
                         source=source)
    peak, box = explain.to_image(*explain.locate(heat), heat.shape, size)
    return Explanation(method, label, score, heat, peak, box, source=source)

  def predict_iter(self, inputs, top_k=5, chunk_size=64):
    """Classifies an iterable of inputs `chunk_size` at a time, lazily.

    Only one chunk of images is in memory at once, so a folder of any size
    streams through. Yields one `Prediction` per input, in order.
    """
    chunk = []
    for item in inputs:
      chunk.append(item)
      if len(chunk) == chunk_size:
        yield from self.predict(chunk, top_k=top_k)
        chunk = []
    if chunk:
      yield from self.predict(chunk, top_k=top_k)
