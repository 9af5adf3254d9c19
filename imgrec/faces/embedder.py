"""Runs a trained face embedder in any of its formats: Keras, SavedModel, TFLite.

    embedder = Embedder.load("runs/faces", runtime="tflite")
    vectors = embedder.embed(faces)     # uint8 [N, S, S, 3] face crops

All runtimes of one model share its fingerprint, so a gallery enrolled with
one is matched with another.
"""

import os

import numpy as np

from imgrec.data import pixels

from imgrec.config import FACE_RUNTIMES
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder

SAVED_MODEL_NAME = "embedder_saved_model"


def tflite_name(variant="float"):
  return "embedder.tflite" if variant == "float" else f"embedder_{variant}.tflite"


def model_pixels(faces, channels):
  """uint8 RGB crops [N, S, S, 3] -> float32 model input (gray: the
  pipeline's rounded luma)."""
  return pixels.to_channels(np.asarray(faces), channels).astype(np.float32)


def _unit(x):
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Embedder:
  """A face embedder of a model_dir, in one runtime.

  Attributes:
    info: {fingerprint, embedding_dim, image_size, channels, name}.
    runtime: "keras", "saved_model" or "tflite".
  """

  def __init__(self, info, runtime, call):
    self.info, self.runtime, self._call = info, runtime, call

  @property
  def image_size(self):
    return int(self.info["image_size"])

  @property
  def model_info(self):
    """What a gallery records of the model that made its vectors."""
    return {"fingerprint": self.info["fingerprint"],
            "embedding_dim": int(self.info["embedding_dim"]),
            "name": self.info.get("name", "")}

  @classmethod
  def load(cls, model_dir, runtime="keras", variant="float"):
    """The embedder of `model_dir` in `runtime` (SavedModel and TFLite come
    from `imgrec-faces export`).

    Raises:
      ImgrecError: not an embedder's folder, or the format not exported.
    """
    if runtime not in FACE_RUNTIMES:
      raise ImgrecError(f"Unknown runtime {runtime!r}: one of "
                        f"{', '.join(FACE_RUNTIMES)}.")
    run = RunFolder(model_dir)
    info = run.read_embedder_info()
    channels = int(info["channels"])
    if runtime == "keras":
      from imgrec import tasks  # pylint: disable=g-import-not-at-top
      model = tasks.load_model(run.best_model_path)
      return cls(info, runtime, lambda faces: model.predict(
          model_pixels(faces, channels), batch_size=64, verbose=0))
    if runtime == "saved_model":
      path = os.path.join(run.export_dir, SAVED_MODEL_NAME)
      if not os.path.isdir(path):
        raise ImgrecError(f"No SavedModel embedder at {path}: run "
                          f"imgrec-faces export --model_dir={model_dir}.")
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      serve = tf.saved_model.load(path).signatures["serving_default"]
      return cls(info, runtime, lambda faces: serve(
          images=tf.constant(np.asarray(faces, np.uint8)))["embeddings"]
                 .numpy())
    path = os.path.join(run.export_dir, tflite_name(variant))
    if not os.path.isfile(path):
      raise ImgrecError(f"No TFLite embedder at {path}: run imgrec-faces "
                        f"export --model_dir={model_dir} --tflite={variant}.")
    from imgrec.inference import litert  # pylint: disable=g-import-not-at-top
    runner = litert.TFLiteRunner(path)
    # TFLite files take RGB raw pixels; gray embedders convert inside.
    return cls(info, runtime,
               lambda faces: runner(np.asarray(faces, np.float32)))

  def embed(self, faces, batch_size=64, flip=False):
    """Unit embeddings [N, D] of uint8 RGB face crops [N, S, S, 3].

    With `flip`, each face's embedding is the normalized sum of its own and
    its mirror image's (test-time augmentation; twice the work).
    """
    if flip:
      faces = np.asarray(faces)
      both = self.embed(faces, batch_size) + self.embed(
          faces[:, :, ::-1], batch_size)
      return _unit(both)
    faces = np.asarray(faces)
    if not len(faces):
      return np.zeros((0, int(self.info["embedding_dim"])), np.float32)
    size = self.image_size
    if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
      raise ImgrecError(f"The embedder takes {size}x{size} RGB face crops. "
                        f"Received: shape={faces.shape}")
    out = [self._call(faces[i:i + batch_size])
           for i in range(0, len(faces), batch_size)]
    return _unit(np.concatenate(out))
