"""imgrec: image recognition and classification with TensorFlow and Keras."""

__version__ = "0.1.0"

from imgrec.errors import ImgrecError  # noqa: E402


def __getattr__(name):
  # Heavy imports (TensorFlow) happen on first use, so `import imgrec` and
  # `imgrec-train --help` stay quick.
  if name == "Classifier":
    from imgrec.inference.classifier import Classifier
    return Classifier
  if name in ("create_model", "list_models", "get_model_cfg"):
    from imgrec import models
    return getattr(models, name)
  if name == "train":
    from imgrec.training.trainer import train
    return train
  if name == "TrainConfig":
    from imgrec.config import TrainConfig
    return TrainConfig
  raise AttributeError(f"module 'imgrec' has no attribute {name!r}")


__all__ = [
    "Classifier", "ImgrecError", "TrainConfig", "create_model", "get_model_cfg",
    "list_models", "train", "__version__",
]
