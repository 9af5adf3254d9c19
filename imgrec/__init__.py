"""imgrec: image recognition and classification with TensorFlow and Keras."""

__version__ = "0.1.0"

from imgrec.errors import ImgrecError  # noqa: E402

# name -> (module, attribute). Heavy imports (TensorFlow) happen on first use,
# so `import imgrec` and `imgrec-train --help` stay quick.
_LAZY = {
    "Classifier": ("imgrec.inference.classifier", "Classifier"),
    "create_model": ("imgrec.models", "create_model"),
    "list_models": ("imgrec.models", "list_models"),
    "get_model_cfg": ("imgrec.models", "get_model_cfg"),
    "train": ("imgrec.training.trainer", "train"),
    "evaluate": ("imgrec.evaluation.evaluate", "evaluate"),
    "export": ("imgrec.export.exporter", "export"),
    "scan": ("imgrec.tasks", "scan_data"),
    "image_dataset": ("imgrec.tasks", "image_dataset"),
    "TrainConfig": ("imgrec.config", "TrainConfig"),
    "EvaluateConfig": ("imgrec.config", "EvaluateConfig"),
    "CompareConfig": ("imgrec.config", "CompareConfig"),
    "ExportConfig": ("imgrec.config", "ExportConfig"),
    "ScanConfig": ("imgrec.config", "ScanConfig"),
    "RunFolder": ("imgrec.run_folder", "RunFolder"),
}


def __getattr__(name):
  if name in _LAZY:
    import importlib  # pylint: disable=g-import-not-at-top
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)
  raise AttributeError(f"module 'imgrec' has no attribute {name!r}")


__all__ = ["ImgrecError", "__version__", *_LAZY]
