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
  assert found.score == "max_softmax" and found.known_recall == 0.95
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


def _noise_folder(root, count=12, size=16):
  """Images of no known class (noise, flat grey), a broken file and a
  text file, in nested folders."""
  from PIL import Image
  rng = np.random.default_rng(1)
  (root / "deep" / "er").mkdir(parents=True)
  for i in range(count):
    where = root if i % 2 else root / "deep" / "er"
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    ).save(where / f"noise{i}.png")
  Image.new("RGB", (size, size), (128, 128, 128)).save(root / "grey.png")
  (root / "broken.png").write_bytes(b"not an image")
  (root / "notes.txt").write_text("not an image either")
  return root


def _run_cli(module, *args):
  import subprocess
  import sys
  return subprocess.run([sys.executable, "-m", f"imgrec.cli.{module}", *args],
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_evaluate_measures_unknown_images_and_calibrates(run_dir, tmp_path):
  import shutil
  run = tmp_path / "run"
  shutil.copytree(run_dir, run)
  unknown = _noise_folder(tmp_path / "unknown")
  before = sorted(p.name for p in unknown.rglob("*"))
  proc = _run_cli("evaluate", f"--model_dir={run}", f"--unknown_dir={unknown}",
                  "--nopictures")
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.load(open(run / "report.json"))
  section = report["open_set"]
  assert section["unknown"] == 13 and section["known"] == report[
      "num_examples"]  # The broken file is skipped.
  assert set(section["scores"]) == set(metrics.SCORES)
  assert section["baseline"]["max_softmax"] == section["scores"][
      "max_softmax"]
  for key in ("auroc", "fpr95", "known_recall", "unknown_rejected"):
    assert 0.0 <= section[key] <= 1.0
  assert "open set:" in open(run / "report.txt").read()
  assert sorted(p.name for p in unknown.rglob("*")) == before  # Untouched.
  recorded = json.load(open(run / "open_set.json"))
  proc = _run_cli("evaluate", f"--model_dir={run}", f"--unknown_dir={unknown}",
                  "--calibrate_unknown", "--nopictures")
  assert proc.returncode == 0, proc.stderr[-2000:]
  calibrated = json.load(open(run / "open_set.json"))
  assert calibrated["source"].startswith("calibrated on 13 unknown images")
  assert calibrated["known_recall"] is None
  assert calibrated["score"] == recorded["score"]
  section = json.load(open(run / "report.json"))["open_set"]
  assert section["threshold"] == calibrated["threshold"]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--calibrate_unknown"], "needs --unknown_dir"),
    (["--unknown_dir=MISSING"], "is not a folder"),
    (["--unknown_dir=EMPTY"], "No image files"),
    (["--unknown_dir=FILE"], "is not a folder"),
])
def test_bad_unknown_dirs_are_one_line(run_dir, tmp_path, args, message):
  (tmp_path / "empty").mkdir()
  (tmp_path / "file.png").write_bytes(b"x")
  args = [a.replace("MISSING", str(tmp_path / "missing")).replace(
      "EMPTY", str(tmp_path / "empty")).replace(
          "FILE", str(tmp_path / "file.png")) for a in args]
  before = open(RunFolder(run_dir).open_set_path).read()
  proc = _run_cli("evaluate", f"--model_dir={run_dir}", "--nopictures",
                  f"--report_dir={tmp_path / 'report'}", *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert message in last and "Traceback" not in proc.stderr
  assert open(RunFolder(run_dir).open_set_path).read() == before


@pytest.mark.slow
def test_predict_answers_unknown_with_the_best_known_class(run_dir, tmp_path):
  from imgrec import Classifier
  found = open_set.read(RunFolder(run_dir), 3)
  clf = Classifier.load(run_dir)
  assert clf.open_set["threshold"] == found.threshold
  noise = _noise_folder(tmp_path / "unknown")
  paths = sorted(str(p) for p in noise.rglob("noise*.png"))
  predictions = clf.predict(paths, top_k=2)
  scores = [p.unknown_score for p in predictions]
  for p, s in zip(predictions, scores):
    assert p.unknown == (s < found.threshold)
    assert len(p.top_k) == 2 and p.top_k[0][0] in ("blue", "green", "red")
    if p.unknown:
      assert p.label == "unknown" and p.index is None and p.score is None
    else:
      assert p.label == p.top_k[0][0]
  proc = _run_cli("predict", f"--model={run_dir}", "--format=json", *paths)
  assert proc.returncode == 0, proc.stderr[-2000:]
  items = json.loads(proc.stdout)
  assert [i["unknown"] for i in items] == [p.unknown for p in predictions]
  assert all(set(i) >= {"source", "label", "top_k", "unknown",
                        "unknown_score"} for i in items)
  # Streams smooth "unknown" as one more answer.
  stream = clf.predict_open_proba(paths)
  assert stream.shape == (len(paths), 4)
  assert list(stream[:, 3] == 1.0) == [p.unknown for p in predictions]
  assert clf.answer_names == ["blue", "green", "red", "unknown"]


@pytest.mark.parametrize("threshold,expected", [(1e9, True), (-1e9, False)])
def test_the_threshold_decides_every_answer(run_dir, tmp_path, threshold,
                                            expected):
  import shutil
  from imgrec import Classifier
  run = tmp_path / "run"
  shutil.copytree(run_dir, run)
  data = json.load(open(run / "open_set.json"))
  (run / "open_set.json").write_text(json.dumps(data | {
      "threshold": threshold}))
  noise = _noise_folder(tmp_path / "unknown")
  paths = sorted(str(p) for p in noise.rglob("noise*.png"))
  predictions = Classifier.load(run).predict(paths, top_k=1)
  assert [p.unknown for p in predictions] == [expected] * len(paths)
  assert {p.label for p in predictions} <= (
      {"unknown"} if expected else {"blue", "green", "red"})
  assert all(p.top_k[0][0] in ("blue", "green", "red") for p in predictions)


def test_a_class_named_unknown_keeps_its_name():
  assert open_set.unknown_label(["cat", "unknown"]) == "<unknown>"
  assert open_set.unknown_label(["cat", "dog"]) == "unknown"


def test_a_stream_holds_unknown_as_one_more_answer(run_dir, tmp_path):
  import shutil
  from imgrec import Classifier
  from imgrec.inference import stream
  from imgrec.inference import video
  run = tmp_path / "run"
  shutil.copytree(run_dir, run)
  data = json.load(open(run / "open_set.json"))
  clf = Classifier.load(run)
  rng = np.random.default_rng(0)
  frames = [video.Frame(index=i, t=i / 10, rgb=rng.integers(
      0, 256, (16, 16, 3), dtype=np.uint8)) for i in range(12)]
  known = list(stream.classify_stream(clf, iter(frames), batch_size=4,
                                      mode="none", min_hold=0.0))
  expected = [p.label for p in clf.predict([f.rgb for f in frames])]
  assert [r["label"] for r in known] == expected
  (run / "open_set.json").write_text(json.dumps(data | {"threshold": 1e9}))
  rows = list(stream.classify_stream(Classifier.load(run), iter(frames),
                                     batch_size=4, min_hold=0.1))
  assert {r["label"] for r in rows} == {"unknown"}
  assert rows[-1]["smoothed_label"] == "unknown"
  assert rows[-1]["smoothed_score"] == 1.0


def test_open_set_flags_are_for_single_label_runs():
  from imgrec import tasks
  for given in ({"unknown_score": "energy"}, {"known_recall": 0.9}):
    with pytest.raises(ImgrecError, match="for single-label runs"):
      tasks.for_config(config_lib.TrainConfig(task="multilabel", **given))
    assert tasks.for_config(config_lib.TrainConfig(**given)).config
  with pytest.raises(ImgrecError, match="known_recall"):
    config_lib.TrainConfig(known_recall=0.0).validate()
