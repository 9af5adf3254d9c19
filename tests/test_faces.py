"""Face recognition end to end on generated "people" (pre-cropped, no detector).

Each person is a fixed random pattern of colored blocks; their photos add
noise and a small shift. One tiny embedder is trained in this process.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from imgrec.config import FaceEnrollConfig
from imgrec.config import FaceTrainConfig
from imgrec.data import faces as faces_lib
from imgrec.errors import ImgrecError
from imgrec.faces import embedder as embedder_lib
from imgrec.faces import export as export_lib
from imgrec.faces import gallery as gallery_lib
from imgrec.faces import recognize
from imgrec.run_folder import RunFolder
from imgrec.tasks import face_embedding
from imgrec.training import trainer
from conftest import TINY_FACES
from conftest import write_people

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


@pytest.fixture(scope="module")
def embedder_run(face_run, tmp_path_factory):
  """(shared folder of the trained run, unseen people, train's result)."""
  tmp, result = face_run
  unseen = write_people(tmp_path_factory.mktemp("unseen") / "unseen", 5,
                        seed=1)
  return tmp, unseen, result


def test_training_holds_people_out_and_records_the_embedder(embedder_run):
  _, _, result = embedder_run
  run = RunFolder(result["model_dir"])
  assert result["train_people"] == 6 and result["val_people"] == 2
  splits = json.load(open(run.splits_path))["splits"]
  train_people = {splits["train"]["labels"][i]
                  for i in range(len(splits["train"]["labels"]))}
  val_people = set(splits["val"]["labels"])
  assert not train_people & val_people  # Disjoint identities.
  assert len(result["history"]["val_eer"]) == 4
  info = run.read_embedder_info()
  assert info["embedding_dim"] == 16 and len(info["fingerprint"]) == 64
  assert info["eer_threshold"] is not None
  # Crops go to the run folder, never into the data.
  assert all(p.startswith(run.path) for p in splits["train"]["paths"])


def test_a_rerun_with_other_settings_is_refused(embedder_run):
  tmp, _, result = embedder_run
  run = RunFolder(result["model_dir"])
  before = os.path.getmtime(run.best_model_path)
  again = trainer.train(FaceTrainConfig(
      **TINY_FACES, data_dir=str(tmp / "train"),
      model_dir=result["model_dir"]))
  assert not again["history"] and again["train_people"] == 6  # No epoch.
  assert os.path.getmtime(run.best_model_path) == before  # Not retrained.
  with pytest.raises(ImgrecError, match="other settings.*image_size"):
    trainer.train(FaceTrainConfig(
        data_dir=str(tmp / "train"), model_dir=result["model_dir"],
        image_size=24, embedding_dim=16, epochs=4))


def _config(result, tmp=None, **kw):
  """A face command's fields (with `tmp`, the gallery tmp/g.json)."""
  gallery = {"gallery": str(tmp / "g.json")} if tmp else {}
  return dict(model_dir=result["model_dir"], detect=False, **gallery, **kw)


def test_evaluate_calibrate_enroll_identify_verify(embedder_run):
  tmp, unseen, result = embedder_run
  report = recognize.evaluate(_config(result, data_dir=unseen,
                                      enroll_images=3))
  assert 0 <= report["eer"] <= 0.5 and report["rank1"] is not None
  assert set(report["identification"]) == {"enroll_1", "enroll_3"}
  assert set(report["tar_at_far"]) == {"0.01", "0.001"}
  run = RunFolder(result["model_dir"])
  assert os.path.getsize(run.roc_path) > 1000
  calibration = recognize.calibrate(_config(result, tmp, data_dir=unseen,
                                            target_far=0.1))
  assert calibration["far"] <= 0.1
  assert calibration["far_ci"][0] <= calibration["far"] <= (
      calibration["far_ci"][1])
  people = sorted(os.listdir(unseen))
  _, summary = recognize.enroll(
      _config(result, tmp), [os.path.join(unseen, p) for p in people[:3]])
  assert [s["enrolled"] for s in summary] == [6, 6, 6]
  gallery = gallery_lib.Gallery.load(tmp / "g.json")
  assert gallery.threshold["value"] == calibration["threshold"]
  probes = [os.path.join(unseen, people[0], "1.png"),
            os.path.join(unseen, people[4], "1.png"),
            str(tmp / "g.json")]  # Not an image: reported, the rest go on.
  rows = recognize.identify(_config(result, tmp), probes)
  assert rows[0]["rank"][0][0] == people[0]
  assert rows[0]["identity"] in (people[0], "unknown")
  assert rows[1]["identity"] in (*people[:3], "unknown")
  assert "unreadable" in rows[2]["error"]
  same = recognize.verify(_config(result, tmp), probes[0],
                          os.path.join(unseen, people[0], "2.png"))
  assert set(same) == {"a", "b", "score", "same", "threshold",
                       "threshold_source"}


def test_gallery_refuses_another_model(embedder_run, tmp_path):
  tmp, unseen, result = embedder_run
  other = gallery_lib.Gallery.new({"fingerprint": "0" * 64,
                                   "embedding_dim": 16, "name": "other"})
  other.save(tmp_path / "other.json")
  with pytest.raises(ImgrecError, match="enroll"):
    recognize.enroll(FaceEnrollConfig(model_dir=result["model_dir"],
                                      detect=False,
                                      gallery=str(tmp_path / "other.json")),
                     [os.path.join(unseen, "person00")])


@pytest.mark.slow  # Exports the embedder to TFLite: seconds.
def test_tflite_embedder_makes_the_same_decisions(embedder_run):
  tmp, unseen, result = embedder_run
  out = export_lib.export_embedder(result["model_dir"], ("float", "int8"))
  assert set(out["tflite"]) == {"float", "int8"}
  people = sorted(os.listdir(unseen))
  paths = recognize.image_files([os.path.join(unseen, p) for p in people])
  crops = [r.face for r in faces_lib.load_faces(
      paths, 16, detect=False)]
  keras_e = embedder_lib.Embedder.load(result["model_dir"]).embed(crops)
  float_e = embedder_lib.Embedder.load(result["model_dir"], "tflite").embed(
      crops)
  saved_e = embedder_lib.Embedder.load(result["model_dir"],
                                       "saved_model").embed(crops)
  np.testing.assert_allclose(float_e, keras_e, atol=1e-4)
  np.testing.assert_allclose(saved_e, keras_e, atol=1e-4)
  # Gallery matching: enrolled with Keras, probed with TFLite.
  gallery = gallery_lib.Gallery.new(embedder_lib.Embedder.load(
      result["model_dir"]).model_info)
  labels = [os.path.basename(os.path.dirname(p)) for p in paths]
  for name in people:
    rows = [i for i, l in enumerate(labels) if l == name][:3]
    gallery.enroll(name, keras_e[rows], [paths[i] for i in rows],
                   gallery.model)
  for probe in (keras_e, float_e):
    ranked = [r[0][0] for r in gallery.identify(probe)]
    assert ranked == [r[0][0] for r in gallery.identify(keras_e)]
  int8 = embedder_lib.Embedder.load(result["model_dir"], "tflite",
                                    variant="int8").embed(crops)
  assert np.mean(np.sum(int8 * keras_e, axis=1)) > 0.9


@pytest.mark.slow
def test_cli_prints_one_json_object_a_line(embedder_run):
  tmp, unseen, result = embedder_run
  people = sorted(os.listdir(unseen))

  def cli(*args):
    return subprocess.run([sys.executable, "-m", "imgrec.cli.faces", *args,
                           f"--model_dir={result['model_dir']}",
                           "--detect=false", "--format=json"],
                          capture_output=True, text=True, env=ENV,
                          timeout=300)

  gallery = f"--gallery={tmp / 'cli.json'}"
  enroll = cli("enroll", gallery, os.path.join(unseen, people[0]))
  assert enroll.returncode == 0, enroll.stderr[-2000:]
  ident = cli("identify", gallery, os.path.join(unseen, people[0], "1.png"))
  assert ident.returncode == 0, ident.stderr[-2000:]
  row = json.loads(ident.stdout.strip().splitlines()[-1])
  assert set(row) == {"source", "identity", "score", "rank", "threshold",
                      "threshold_source"}
  verify = cli("verify", os.path.join(unseen, people[0], "1.png"),
               os.path.join(unseen, people[1], "1.png"))
  assert set(json.loads(verify.stdout.strip())) == {
      "a", "b", "score", "same", "threshold", "threshold_source"}
  bad = cli("nonsense")
  assert bad.returncode == 2
  missing = cli("identify", f"--gallery={tmp / 'absent.json'}", "x.png")
  assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()
                                         ) == 1


def test_batch_hard_triplet_by_hand():
  from imgrec.models import embedding as model_lib  # pylint: disable=g-import-not-at-top
  e = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], np.float32)
  labels = np.array([0, 0, 1, 1])
  d = 2 - 2 * e @ e.T
  expected = []
  for a in range(4):
    pos = max(d[a, p] for p in range(4) if p != a and labels[p] == labels[a])
    neg = min(d[a, n] for n in range(4) if labels[n] != labels[a])
    expected.append(max(0.0, pos - neg + 0.5))
  loss = model_lib.BatchHardTriplet(0.5)(labels, e)
  np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-5)
  # An anchor alone in the batch with its person adds nothing.
  alone = model_lib.BatchHardTriplet(0.5)(np.array([0, 1, 1]), e[1:])
  d3 = d[1:, 1:]
  both = [max(0.0, d3[1, 2] - d3[1, 0] + 0.5), max(0.0, d3[2, 1] - d3[2, 0]
                                                   + 0.5)]
  np.testing.assert_allclose(float(alone), np.mean(both), rtol=1e-5)


@pytest.mark.slow  # Trains and exports again: seconds.
def test_a_killed_training_resumes_where_it_stopped(embedder_run, tmp_path,
                                                    monkeypatch):
  tmp, _, _ = embedder_run
  config = FaceTrainConfig(
      data_dir=str(tmp / "train"), model_dir=str(tmp_path / "run"),
      image_size=16, embedding_dim=8, epochs=3, batch_size=8,
      val_identities=0.25)
  original = face_embedding.VerificationCheck.on_epoch_end

  def dies_in_epoch_two(self, epoch, logs=None):
    original(self, epoch, logs)
    if epoch == 1:
      raise KeyboardInterrupt  # Before epoch 2's backup is written.

  monkeypatch.setattr(face_embedding.VerificationCheck, "on_epoch_end",
                      dies_in_epoch_two)
  with pytest.raises(KeyboardInterrupt):
    trainer.train(config)
  monkeypatch.undo()
  result = trainer.train(config)
  with open(RunFolder(result["model_dir"]).history_path) as f:
    epochs = [line.split(",")[0] for line in f.read().splitlines()[1:]]
  # Epoch 0 from the first run, 1 and 2 from the rerun: nothing redone.
  assert epochs == ["0", "1", "2"]
