"""Clip classification: sampling, decoding and caching clips, the model, a run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from imgrec import tasks
from imgrec.config import TrainConfig
from imgrec.data import clips
from imgrec.data import folder as folder_lib
from imgrec.datasets import motion
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def _write(path, frames, fps=10):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path), "w") as container:
    s = container.add_stream("mpeg4", rate=fps)
    s.height, s.width = frames[0].shape[:2]
    s.pix_fmt = "yuv420p"
    for rgb in frames:
      for packet in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
        container.mux(packet)
    for packet in s.encode():
      container.mux(packet)
  return str(path)


def _counting_clip(path, count, size=32):
  """A clip whose frame i is uniformly gray level 8 * i."""
  return _write(path, [np.full((size, size, 3), 8 * i, np.uint8)
                       for i in range(count)])


def test_sample_indices_cover_the_whole_clip():
  assert clips.sample_indices(100, 4).tolist() == [12, 37, 62, 87]
  assert clips.sample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
  with pytest.raises(ValueError):
    clips.sample_indices(0, 4)


def test_decode_clip_samples_resizes_and_converts(tmp_path):
  path = _counting_clip(tmp_path / "count.mp4", 30)
  clip = clips.decode_clip(path, frames=5, image_size=(8, 12))
  assert clip.shape == (5, 8, 12, 3) and clip.dtype == np.uint8
  # Frames 3, 9, 15, 21 and 27 (gray 24, 72, ... 216), within codec error.
  np.testing.assert_allclose(clip.mean(axis=(1, 2, 3)),
                             [24, 72, 120, 168, 216], atol=6)
  gray = clips.decode_clip(path, frames=2, image_size=(8, 8), channels=1)
  assert gray.shape == (2, 8, 8, 1)


def test_broken_clips_are_one_clear_error(tmp_path):
  (tmp_path / "empty.mp4").write_bytes(b"")
  (tmp_path / "junk.mp4").write_bytes(os.urandom(4000))
  for name in ("empty.mp4", "junk.mp4"):
    with pytest.raises(ImgrecError, match=name):
      clips.decode_clip(str(tmp_path / name), frames=4, image_size=(8, 8))


def test_clip_cache_decodes_each_file_once(tmp_path, monkeypatch):
  path = _counting_clip(tmp_path / "a.mp4", 12)
  cache = clips.ClipCache(str(tmp_path / "cache"), frames=4,
                          image_size=(8, 8), channels=3)
  calls = []
  real = clips.decode_clip
  monkeypatch.setattr(clips, "decode_clip",
                      lambda *a, **k: calls.append(a) or real(*a, **k))
  first = cache.get(path)
  again = clips.ClipCache(str(tmp_path / "cache"), frames=4,
                          image_size=(8, 8), channels=3).get(path)
  assert len(calls) == 1 and np.array_equal(first, again)
  # Another sampling is another entry; a changed file is decoded again.
  clips.ClipCache(str(tmp_path / "cache"), frames=2, image_size=(8, 8),
                  channels=3).get(path)
  _counting_clip(tmp_path / "a.mp4", 20)
  os.utime(path, ns=(1, 1))
  cache.get(path)
  assert len(calls) == 3
  got = cache.get_all([path, str(tmp_path / "missing.mp4")])
  assert isinstance(got[str(tmp_path / "missing.mp4")], ImgrecError)


def test_a_folder_of_videos_is_a_clip_folder(tmp_path):
  motion.generate_motion_clips(tmp_path / "v", clips_per_class=2, frames=4,
                               size=16, classes=("left", "right"))
  assert folder_lib.data_kind(str(tmp_path / "v")) == "video"
  found = folder_lib.find_images(str(tmp_path / "v"), kind="video",
                                 carve=False)
  assert found.class_names == ["left", "right"]
  assert len(found.splits["train"]) == 4
  assert folder_lib.data_kind(str(tmp_path)) == "video"
  (tmp_path / "img").mkdir()
  assert folder_lib.data_kind(str(tmp_path / "img")) == "image"


@pytest.mark.parametrize("temporal", ["gru", "lstm", "attention", "average"])
def test_clip_model_shapes(temporal):
  from imgrec.models import clip  # pylint: disable=g-import-not-at-top
  model = clip.build_clip_model("simple_cnn", 3, (4, 16, 16, 3),
                                temporal=temporal, units=16)
  out = model(np.zeros((2, 4, 16, 16, 3), np.float32))
  assert out.shape == (2, 3)
  np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("side", [16, 32, 48, 64, 224])
def test_motion_stream_sees_whole_objects(side):
  """The sense of a turn is a pattern around the object's centre: the
  motion stream's last map is small and its receptive field wide."""
  from keras import layers  # pylint: disable=g-import-not-at-top
  from imgrec.models import clip  # pylint: disable=g-import-not-at-top
  model = clip.motion_features((side, side, 6), 16)
  field, jump = 1, 1
  for layer in model.layers:
    if isinstance(layer, layers.Conv2D):
      size, stride = layer.kernel_size[0], layer.strides[0]
    elif isinstance(layer, layers.MaxPooling2D):
      size, stride = layer.pool_size[0], layer.strides[0]
    else:
      continue
    field += (size - 1) * jump
    jump *= stride
  last = model.get_layer("motion_grid_and_pool").input[1]
  assert field >= 0.45 * side, field
  assert model.get_layer("motion_max").input.shape[1] <= 8
  assert last.shape[-1] == 128
  assert model.output.shape == (None, 16)


def test_order_matters_unless_the_model_sees_a_bag_of_frames():
  from imgrec.models import clip  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).uniform(0, 255, (1, 4, 16, 16, 3)).astype(
      np.float32)
  backwards = x[:, ::-1]
  for temporal, motion, order_blind in (("gru", False, False),
                                       ("average", True, False),
                                       ("average", False, True)):
    model = clip.build_clip_model("simple_cnn", 3, (4, 16, 16, 3),
                                  temporal=temporal, units=16, dropout=0.0,
                                  motion=motion)
    same = np.allclose(model(x), model(backwards), atol=1e-6)
    assert same == order_blind, (temporal, motion)


def test_clip_config_refuses_what_clips_cannot_take():
  # The clip task checks its config before any data is read.
  with pytest.raises(ImgrecError, match="mixup"):
    tasks.for_config(TrainConfig(task="clip", data_dir="v", mixup=0.2))
  with pytest.raises(ImgrecError, match="data_dir"):
    tasks.for_config(TrainConfig(task="clip", labels_csv="x.csv"))


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
  """A tiny clip run, trained, evaluated and exported (float TFLite)."""
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("clips")
  data = motion.generate_motion_clips(
      tmp / "motion", clips_per_class=6, frames=6, size=24,
      classes=("left", "right", "approach"))
  config = TrainConfig(data_dir=data, model_dir=str(tmp / "run"),
                       image_size=24, clip_frames=6, temporal_units=16,
                       epochs=2, batch_size=4, flip="none", verbose=0,
                       warmup_epochs=0)
  patch = pytest.MonkeyPatch()
  patch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))  # The clip cache.
  yield data, trainer.train(config)
  patch.undo()


@pytest.mark.slow
def test_clip_run_trains_evaluates_and_exports(clip_run):
  data, result = clip_run
  run = result["model_dir"]
  config = RunFolder(run).read_config()
  assert config.task == "clip_classification" and config.clip_frames == 6
  report = json.load(open(os.path.join(run, "report.json")))
  assert report["num_examples"] == len(result["report"]["mistakes"]) + round(
      report["accuracy"] * report["num_examples"])
  data_report = json.load(open(os.path.join(run, "data_report.json")))
  assert data_report["totals"]["usable"] == 18
  export = json.load(open(os.path.join(run, "export", "export_report.json")))
  by_name = {f["name"]: f for f in export["formats"]}
  assert set(by_name) == {"saved_model", "float"}
  assert by_name["float"]["top1_agreement"] == 1.0
  assert by_name["saved_model"]["max_abs_prob_diff"] < 1e-4
  # Nothing was written into the data folder.
  assert sorted(os.listdir(data)) == ["approach", "left", "right"]


@pytest.mark.slow
def test_clip_saved_model_serves_from_saved_model_cli(clip_run):
  _, result = clip_run
  saved = os.path.join(result["model_dir"], "export", "saved_model")
  clip = str(np.full((1, 6, 10, 14, 3), 90, np.uint8).tolist()).replace(
      " ", "")
  proc = subprocess.run(
      [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
       "run", f"--dir={saved}", "--tag_set=serve",
       "--signature_def=serving_default", f"--input_exprs=clips={clip}"],
      capture_output=True, text=True, env=ENV, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "top_k_labels" in proc.stdout and "probabilities" in proc.stdout


@pytest.mark.slow
def test_clip_run_skips_and_reports_broken_clips(tmp_path, monkeypatch):
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  data = motion.generate_motion_clips(tmp_path / "m", clips_per_class=5,
                                      frames=4, size=16,
                                      classes=("left", "right"))
  (tmp_path / "m" / "left" / "broken.mp4").write_bytes(b"\0" * 100)
  config = TrainConfig(data_dir=data, model_dir=str(tmp_path / "run"),
                       image_size=16, clip_frames=4, epochs=1,
                       max_bad_fraction=0.5)
  task = tasks.for_config(config)
  assert task.name == "clip_classification"  # Chosen by the data.
  folder = task.build_folder(str(tmp_path / "report.json"))
  report = json.load(open(tmp_path / "report.json"))
  assert report["totals"] == {"files": 11, "usable": 10, "skipped": 1}
  assert "broken.mp4" in report["skipped"][0]["path"]
  assert sum(len(s) for s in folder.splits.values()) == 10
  with pytest.raises(ImgrecError, match="unreadable clips"):
    tasks.for_config(config.replace(max_bad_fraction=0.1)).build_folder()


@pytest.mark.slow
def test_clip_runs_leave_out_what_exclude_lists(tmp_path, monkeypatch):
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  data = motion.generate_motion_clips(tmp_path / "m", clips_per_class=5,
                                      frames=4, size=16,
                                      classes=("left", "right"))
  gone = sorted(os.listdir(os.path.join(data, "left")))[0]
  listing = tmp_path / "exclude.txt"
  listing.write_text(f"# reviewed\n{os.path.join(data, 'left', gone)}\n")
  folder = tasks.for_config(TrainConfig(
      data_dir=data, model_dir=str(tmp_path / "run"), image_size=16,
      clip_frames=4, epochs=1, exclude=str(listing))).build_folder()
  paths = [p for s in folder.splits.values() for p in s.paths]
  assert len(paths) == 9 and os.path.join(data, "left", gone) not in paths


@pytest.mark.slow
def test_every_clip_model_format_classifies_videos_alike(clip_run):
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  data, result = clip_run
  run = result["model_dir"]
  export = os.path.join(run, "export")
  videos = sorted(os.path.join(data, c, n) for c in ("left", "right")
                  for n in os.listdir(os.path.join(data, c)))[:4]
  answers = []
  for path in (run, os.path.join(run, "best.keras"),
               os.path.join(export, "model.tflite")):
    clf = Classifier.load(path)
    assert clf.clip_frames == 6
    answers.append(clf.predict_proba(videos))
  for other in answers[1:]:
    np.testing.assert_allclose(other, answers[0], atol=2e-3)
  bad = Classifier.load(run).predict(videos + [str(data)], top_k=1)
  assert bad[-1].error and [p.error for p in bad[:-1]] == [None] * 4
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.stream", f"--model={run}",
       videos[0]], capture_output=True, text=True, env=ENV, timeout=300)
  assert proc.returncode == 2 and "imgrec-predict" in proc.stderr
