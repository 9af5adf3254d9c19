"""Built-in datasets that imgrec can generate or fetch by name."""

from imgrec.datasets.motion import MOTION_CLASSES
from imgrec.datasets.motion import MOTION_PAIRS
from imgrec.datasets.motion import generate_motion_clips
from imgrec.datasets.motion import load_motion
from imgrec.datasets.shapes import SHAPE_CLASSES
from imgrec.datasets.shapes import generate_shapes
from imgrec.datasets.shapes import load_shapes
from imgrec.datasets.shapes_multilabel import generate_shapes_multilabel
from imgrec.datasets.shapes_multilabel import load_shapes_multilabel

BUILTIN_DATASETS = {
    "shapes": load_shapes,
    # Returns its labels CSV (path,labels,split), for --task=multilabel.
    "shapes_multilabel": load_shapes_multilabel,
}


# Built-in datasets of a task other than image classification: with
# --task=auto, a run on one of them is of that task.
BUILTIN_TASKS = {"shapes_multilabel": "multilabel_classification"}


def list_builtin():
  """Returns the sorted names accepted by `load_builtin`."""
  return sorted(BUILTIN_DATASETS)


def load_builtin(name, **kwargs):
  """Loads a built-in dataset by name.

  Args:
    name: A key of `BUILTIN_DATASETS`, e.g. "shapes".
    **kwargs: Passed on to the dataset's loader, e.g. `load_shapes`.

  Returns:
    Whatever the loader returns; for "shapes", the dataset root directory.

  Raises:
    ValueError: If `name` is not a built-in dataset.
  """
  if name not in BUILTIN_DATASETS:
    raise ValueError(f"Unknown built-in dataset. Known datasets: "
                     f"{list_builtin()}. Received: name={name!r}")
  return BUILTIN_DATASETS[name](**kwargs)


__all__ = [
    "BUILTIN_DATASETS",
    "MOTION_CLASSES",
    "MOTION_PAIRS",
    "SHAPE_CLASSES",
    "generate_motion_clips",
    "generate_shapes",
    "generate_shapes_multilabel",
    "list_builtin",
    "load_builtin",
    "load_motion",
    "load_shapes",
    "load_shapes_multilabel",
]
