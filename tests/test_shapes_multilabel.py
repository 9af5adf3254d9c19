"""The built-in multi-label dataset `shapes_multilabel`."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from imgrec import datasets
from imgrec import tasks
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError


def _rows(csv_path):
  with open(csv_path, encoding="utf-8") as f:
    return list(csv.DictReader(f))


def test_scenes_hold_zero_to_three_distinct_shapes_and_regenerate(tmp_path):
  counts = {"train": 60, "val": 10, "test": 10}
  first = datasets.generate_shapes_multilabel(tmp_path / "a", seed=3,
                                              counts=counts, image_size=32)
  again = datasets.generate_shapes_multilabel(tmp_path / "b", seed=3,
                                              counts=counts, image_size=32,
                                              num_workers=1)
  rows = _rows(first)
  assert rows == _rows(again)
  for row in rows[:10]:
    a = np.asarray(Image.open(os.path.join(tmp_path / "a", row["path"])))
    b = np.asarray(Image.open(os.path.join(tmp_path / "b", row["path"])))
    np.testing.assert_array_equal(a, b)  # Byte for byte, threads or not.
    assert a.shape == (32, 32, 3)
  sizes = [len(r["labels"].split()) for r in rows]
  assert set(sizes) == {0, 1, 2, 3}  # Background images too.
  for row in rows:
    names = row["labels"].split()
    assert len(set(names)) == len(names)
    assert set(names) <= set(datasets.SHAPE_CLASSES)
  assert [r["split"] for r in rows].count("val") == 10


def test_the_dataset_picks_its_task_and_is_refused_by_others(tmp_path):
  config = TrainConfig(dataset="shapes_multilabel")
  assert tasks.task_kind(config) == "multilabel_classification"
  with pytest.raises(ImgrecError, match="is for --task=multilabel"):
    tasks.for_config(config.replace(task="image"))
  # --task=multilabel without data means the multi-label twin of shapes.
  task = tasks.get_task("multilabel").resolve(
      TrainConfig(task="multilabel", model_dir=str(tmp_path / "run")))
  assert task.config.dataset == "shapes_multilabel"
