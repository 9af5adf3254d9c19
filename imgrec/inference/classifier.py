"""`Classifier`: one predict API over .keras, SavedModel and .tflite models.

    clf = imgrec.Classifier.load("runs/shapes-simple_cnn")
    for p in clf.predict(["cat.jpg", "dog.png"]):
      print(p.label, p.score)

Files are read under imgrec's one decode policy (`imgrec.data.decode`) and
resized as the training pipeline and the SavedModel signatures do, so every
format gives the same answer for the same image.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from imgrec import tasks
from imgrec.errors import ImgrecError
from imgrec.run_folder import LABELS_NAME
from imgrec.run_folder import read_labels_file
from imgrec.run_folder import RunFolder


@dataclasses.dataclass
class Prediction:
  """The classification of one image."""
  label: str
  index: int
  score: float
  top_k: list  # [(label, probability), ...], best first.
  source: str | None = None  # File path, when the input was a file.

  def to_dict(self):
    return {"source": self.source, "label": self.label, "index": self.index,
            "score": self.score,
            "top_k": [{"label": l, "probability": p} for l, p in self.top_k]}


def _find_labels(path):
  """Looks for labels.txt beside a model file or in/above a model folder."""
  base = path if os.path.isdir(path) else os.path.dirname(path)
  for candidate in (base, os.path.dirname(base),
                    os.path.dirname(os.path.dirname(base))):
    f = os.path.join(candidate, LABELS_NAME)
    if os.path.isfile(f):
      return read_labels_file(f)
  return None


class _KerasBackend:
  format = "keras"

  def __init__(self, path):
    self.model = tasks.load_model(path)
    self.image_size, self.channels = tasks.model_input_spec(self.model)

  def __call__(self, pixels):
    return np.asarray(self.model(pixels, training=False), np.float32)


class _TFLiteBackend:
  format = "tflite"

  def __init__(self, path):
    from imgrec.inference.litert import TFLiteRunner  # pylint: disable=g-import-not-at-top
    self.runner = TFLiteRunner(path)
    self.image_size, self.channels = self.runner.image_size, self.runner.channels

  def __call__(self, pixels):
    return self.runner(pixels)


class _SavedModelBackend:
  """Feeds original uint8 images to `serving_default`, which resizes."""
  format = "saved_model"
  takes_raw = True

  def __init__(self, path):
    self.loaded = tf.saved_model.load(path)
    self.fn = self.loaded.signatures["serving_default"]
    self.channels = 3

  def raw(self, image):
    out = self.fn(images=tf.constant(image[None]))
    labels = [l.decode() for l in out["top_k_labels"].numpy()[0]]
    indices = out["top_k_indices"].numpy()[0]
    return out["probabilities"].numpy()[0], dict(zip(indices.tolist(), labels))


class Classifier:
  """Classifies images with a trained imgrec model in any exported format."""

  def __init__(self, backend, class_names, path):
    self._backend = backend
    self.class_names = list(class_names) if class_names else None
    self.path = path

  @property
  def format(self):
    return self._backend.format

  @classmethod
  def load(cls, path):
    """Loads a model.

    Args:
      path: a `.keras` file, a `.tflite` file, a SavedModel folder, or an
        imgrec model_dir (its `export/saved_model`, else `best.keras`).

    Raises:
      ImgrecError: nothing loadable at `path`.
    """
    if not os.path.exists(path):
      raise ImgrecError(f"Model {path} does not exist. Pass a .keras or "
                        ".tflite file, a SavedModel folder or a model_dir.")
    if os.path.isdir(path) and not os.path.isfile(
        os.path.join(path, "saved_model.pb")):
      run = RunFolder(path)
      for candidate in (run.saved_model_dir, run.best_model_path):
        if os.path.exists(candidate):
          return cls.load(candidate)
      raise ImgrecError(f"{path} is neither a SavedModel nor an imgrec "
                        "model_dir (no export/saved_model or best.keras).")
    labels = _find_labels(path)
    if os.path.isdir(path):
      backend = _SavedModelBackend(path)
    elif path.endswith(".keras"):
      backend = _KerasBackend(path)
    elif path.endswith(".tflite"):
      backend = _TFLiteBackend(path)
    else:
      raise ImgrecError(f"Unknown model format: {path}. Expected a .keras or "
                        ".tflite file or a SavedModel folder.")
    return cls(backend, labels, path)

  def _load_inputs(self, inputs):
    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
      inputs = [inputs]
    images, sources = [], []
    for item in inputs:
      if isinstance(item, (str, os.PathLike)):
        images.append(tasks.read_image(os.fspath(item)))
        sources.append(os.fspath(item))
      else:
        image = np.asarray(item)
        if image.ndim == 2:
          image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3):
          raise ImgrecError("Images must be [H, W], [H, W, 1] or [H, W, 3] "
                            f"arrays. Received: shape={image.shape}")
        if image.shape[-1] == 1:
          image = np.repeat(image, 3, axis=-1)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        sources.append(None)
    return images, sources

  def predict_proba(self, inputs):
    """Returns class probabilities [N, num_classes] for images or paths."""
    images, _ = self._load_inputs(inputs)
    return self._probabilities(images)

  def _probabilities(self, images):
    if getattr(self._backend, "takes_raw", False):
      return np.stack([self._backend.raw(im)[0] for im in images])
    pixels = tasks.preprocess(images, self._backend.image_size,
                              self._backend.channels)
    return self._backend(pixels.numpy())

  def predict(self, inputs, top_k=5):
    """Classifies images.

    Args:
      inputs: a path, a uint8 array [H, W, 3], or a list of either.
      top_k: how many classes to list per image.

    Returns:
      A list of `Prediction`, one per input.
    """
    images, sources = self._load_inputs(inputs)
    if not images:
      return []
    probabilities = self._probabilities(images)
    names = self.class_names or [str(i) for i in range(probabilities.shape[1])]
    k = min(top_k, probabilities.shape[1])
    predictions = []
    for p, source in zip(probabilities, sources):
      order = np.argsort(-p, kind="stable")[:k]
      predictions.append(Prediction(
          label=names[order[0]], index=int(order[0]), score=float(p[order[0]]),
          top_k=[(names[i], float(p[i])) for i in order], source=source))
    return predictions
