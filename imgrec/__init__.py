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
    "extend": ("imgrec.training.extend", "extend"),
    "scan": ("imgrec.tasks", "scan_data"),
    "image_dataset": ("imgrec.tasks", "image_dataset"),
    "TrainConfig": ("imgrec.config", "TrainConfig"),
    "EvaluateConfig": ("imgrec.config", "EvaluateConfig"),
    "CompareConfig": ("imgrec.config", "CompareConfig"),
    "ExportConfig": ("imgrec.config", "ExportConfig"),
    "ExtendConfig": ("imgrec.config", "ExtendConfig"),
    "AuditConfig": ("imgrec.config", "AuditConfig"),
    "audit": ("imgrec.training.audit", "audit"),
    "ScanConfig": ("imgrec.config", "ScanConfig"),
    "RunFolder": ("imgrec.run_folder", "RunFolder"),
}


# `imgrec/export/` is a package too: importing it (as training's own export
# does) would bind `imgrec.export` to the package, and `imgrec.export(...)`
# would stop being callable. It is bound first, so the function below wins.
import imgrec.export  # noqa: E402,F401  pylint: disable=g-import-not-at-top


def export(config):
  """Exports a run as `imgrec-export` does (`imgrec.export.exporter.export`).

  Args:
    config: an ExportConfig, or a dict of its fields.

  Returns:
    The paths written and the export report.
  """
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  return exporter.export(config)


def __getattr__(name):
  if name in _LAZY:
    import importlib  # pylint: disable=g-import-not-at-top
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)
  raise AttributeError(f"module 'imgrec' has no attribute {name!r}")


__all__ = ["ImgrecError", "__version__", "export", *_LAZY]
