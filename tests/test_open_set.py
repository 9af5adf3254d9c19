"""Open set: the unknown scores, their thresholds and figures, and a run's
open_set.json / prototypes.npy."""

import json

import numpy as np
import pytest

from imgrec import config as config_lib
from imgrec.errors import ImgrecError
from imgrec.metrics import open_set as metrics
from imgrec.run_folder import RunFolder
from imgrec.tasks import open_set
from imgrec.training import trainer
from conftest import write_toy_folder


def test_energy_and_max_softmax_are_stable_and_exact():
  logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0],
                     [-1000.0, -1001.0, -1002.0]])
  expected = np.log(np.exp([1.0, 2.0, 3.0]).sum())
  e = metrics.energy(logits)
  assert e[0] == pytest.approx(expected)
  assert e[1] == pytest.approx(1000.0) and e[2] == pytest.approx(
      -1000 + np.log(1 + np.exp(-1) + np.exp(-2)))
  p = metrics.max_softmax(logits)
  assert p[0] == pytest.approx(np.exp(3) / np.exp([1, 2, 3]).sum())
  assert p[1] == pytest.approx(1.0) and p[2] == pytest.approx(p[0])
  # Same softmax, smaller logits: the energy tells them apart, the
  # softmax cannot (what the energy score is for).
  assert e[2] < e[0] and p[2] == pytest.approx(p[0])


def test_scores_agree_with_config_choices():
  assert metrics.SCORES == config_lib.UNKNOWN_SCORES


def test_threshold_keeps_the_asked_share_of_known_images():
  known = np.arange(1, 101, dtype=float)  # 1..100
  t = metrics.threshold_for_recall(known, 0.95)
  assert t == 6.0 and np.mean(known >= t) == 0.95
  assert metrics.threshold_for_recall(known, 1.0) == 1.0
  assert metrics.threshold_for_recall([3.0], 0.5) == 3.0
  unknown = np.array([0.0, 5.0, 6.0, 50.0])
  assert metrics.fpr_at_recall(known, unknown, 0.95) == 0.5
  with pytest.raises(ImgrecError, match="No known images"):
    metrics.threshold_for_recall([], 0.95)
  with pytest.raises(ImgrecError, match="NaN"):
    metrics.threshold_for_recall([1.0, np.nan], 0.95)


def test_summary_and_calibration():
  known, unknown = np.array([5.0, 6.0, 7.0, 8.0]), np.array([1.0, 2.0, 3.0])
  s = metrics.summary(known, unknown, 4.0)
  assert s["auroc"] == 1.0 and s["fpr95"] == 0.0
  assert s["known_recall"] == 1.0 and s["unknown_rejected"] == 1.0
  assert metrics.summary(unknown, known, 4.0)["auroc"] == 0.0
  t = metrics.calibrated_threshold(known, unknown)
  assert 3.0 < t <= 5.0
  assert np.all(known >= t) and np.all(unknown < t)
  # Overlapping: the threshold maximizing kept known minus accepted
  # unknown (at 0.8: 2/4 - 0/3 beats 0.6: 3/4 - 1/3), midway from 0.7.
  t = metrics.calibrated_threshold([0.4, 0.6, 0.8, 0.9], [0.1, 0.5, 0.7])
  assert t == pytest.approx(0.75)


def test_prototypes_are_unit_class_means_and_the_nearest_one_scores():
  features = np.array([[2.0, 0.0], [1.0, 0.1], [0.0, 3.0], [0.1, 1.0]])
  protos = metrics.prototypes(features, [0, 0, 1, 1], 3)
  assert protos.shape == (3, 2) and protos.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(protos[:2], axis=1), 1.0,
                             rtol=1e-6)
  assert not protos[2].any()  # A class without images.
  sim, nearest = metrics.prototype_similarity([[1.0, 0.0], [0.0, -1.0]],
                                              protos)
  assert nearest[0] == 0 and sim[0] > 0.99
  assert sim[1] < 0.0  # Facing away from every class.


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("open_set")
  data = write_toy_folder(tmp / "data", per_class=12, size=16)
  return trainer.train(config_lib.TrainConfig(
      data_dir=data, model_dir=str(tmp / "run"), epochs=2, image_size=16,
      batch_size=8, val_split=0.2, test_split=0.2, export=False,
      verbose=0))["model_dir"]


def test_training_writes_the_open_set(run_dir):
  run = RunFolder(run_dir)
  found = open_set.read(run, 3)
  assert found.score == "energy" and found.known_recall == 0.95
  assert "validation split" in found.source
  assert found.prototypes.shape[0] == 3 and np.isfinite(found.threshold)
  recorded = json.loads(open(run.open_set_path, encoding="utf-8").read())
  assert recorded["threshold"] == found.threshold


@pytest.mark.parametrize("damage", ["json", "nan", "score", "prototypes",
                                    "missing_prototypes"])
def test_a_damaged_open_set_is_one_line(run_dir, tmp_path, damage):
  import shutil
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  run = RunFolder(copy)
  data = json.loads(open(run.open_set_path, encoding="utf-8").read())
  if damage == "json":
    open(run.open_set_path, "w", encoding="utf-8").write("{")
  elif damage == "nan":
    open(run.open_set_path, "w", encoding="utf-8").write(
        json.dumps(data | {"threshold": "nan"}))
  elif damage == "score":
    open(run.open_set_path, "w", encoding="utf-8").write(
        json.dumps(data | {"score": "vibes"}))
  elif damage == "prototypes":
    np.save(run.prototypes_path, np.zeros((5, 2), np.float32))
  else:
    (copy / "prototypes.npy").unlink()
  with pytest.raises(ImgrecError) as e:
    open_set.read(run, 3)
  assert "\n" not in str(e.value)


def test_a_run_without_an_open_set_reads_none(tmp_path):
  assert open_set.read(RunFolder(tmp_path), 3) is None
