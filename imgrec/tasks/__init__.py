"""Tasks: turn a config into data, model, metrics and predictions.

Attributes load on first use: `imgrec.tasks.scan_data` needs no TensorFlow,
so a scan whose results are cached answers at once.
"""

import importlib

_LAZY = {
    "Task": "imgrec.tasks.base",
    "ClassificationTask": "imgrec.tasks.classification",
    "ClipClassificationTask": "imgrec.tasks.clip_classification",
    "find_data": "imgrec.tasks.data",
    "for_config": "imgrec.tasks.select",
    "for_input_shape": "imgrec.tasks.select",
    "for_run": "imgrec.tasks.select",
    "task_kind": "imgrec.tasks.select",
    "training_config": "imgrec.tasks.select",
    "FaceEmbeddingTask": "imgrec.tasks.face_embedding",
    "get_task": "imgrec.tasks.registry",
    "list_tasks": "imgrec.tasks.registry",
    "register_task": "imgrec.tasks.registry",
    "scan_data": "imgrec.tasks.data",
    "ImageClassificationTask": "imgrec.tasks.image_classification",
    "RunSpec": "imgrec.tasks.classification",
    "image_dataset": "imgrec.tasks.image_classification",
    "load_model": "imgrec.tasks.image_classification",
    "model_input": "imgrec.tasks.select",
    "model_input_spec": "imgrec.tasks.select",
    "ModelInput": "imgrec.tasks.base",
    "MultiLabelTask": "imgrec.tasks.multilabel",
    "read_image": "imgrec.tasks.image_classification",
    "resolve": "imgrec.tasks.classification",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'imgrec.tasks' has no attribute {name!r}")


__all__ = list(_LAZY)
