"""MTCNN on LiteRT and NumPy finds the faces the Keras MTCNN finds.

`imgrec.inference.face_detect_lite` rebuilds mtcnn's pipeline around the
TFLite files `imgrec-faces export` writes; its resize and crop equal
TensorFlow's ops, and on real and generated photos it gives the same
boxes, eyes and confidences as `imgrec.data.faces.FaceDetector`, so
`imgrec-faces --runtime=tflite` detects without TensorFlow.
"""

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from conftest import write_people
from imgrec.config import FaceIdentifyConfig
from imgrec.data import faces as faces_lib
from imgrec.errors import ImgrecError
from imgrec.faces import export
from imgrec.faces import recognize
from imgrec.inference import face_detect_lite as lite
from test_tflite_without_tf import _NO_TF



@pytest.mark.parametrize("shape,size", [
    ((112, 92, 3), (67, 55)), ((512, 512, 3), (307, 307)),
    ((37, 53, 3), (12, 17)), ((40, 40, 3), (40, 40)), ((10, 7, 1), (23, 13)),
    ((300, 41, 3), (13, 11))])
def test_resize_area_equals_tensorflow(shape, size):
  rng = np.random.default_rng(sum(shape))
  # mtcnn resizes its normalized image, a float64 array.
  image = (rng.integers(0, 256, shape) - 127.5) / 128
  expected = tf.image.resize(image[None], size, method="area").numpy()[0]
  np.testing.assert_array_equal(lite.resize_area(image, size), expected)


@pytest.mark.parametrize("size", [(24, 24), (48, 48), (1, 5), (7, 1)])
def test_crop_and_resize_equals_tensorflow(size):
  rng = np.random.default_rng(size[0])
  image = rng.uniform(-1, 1, (61, 83, 3)).astype(np.float32)
  # Boxes inside, across and outside the image, flipped ones, points.
  boxes = rng.uniform(-0.4, 1.4, (64, 4))
  boxes[:4] = [[0, 0, 1, 1], [0.2, 0.3, 0.2, 0.3], [0.9, 0.8, 0.1, 0.2],
               [-1, -1, -0.5, -0.5]]
  expected = tf.image.crop_and_resize(image[None], boxes,
                                      np.zeros(len(boxes), np.int32),
                                      size).numpy()
  np.testing.assert_array_equal(lite.crop_and_resize(image, boxes, size),
                                expected)


def test_suppression_drops_what_a_dropped_box_overlaps():
  # B overlaps A, C overlaps B but not A: mtcnn drops B and C (greedy
  # suppression would keep C, since B went).
  boxes = np.array([[0, 0, 10, 10, 0.9], [3, 0, 13, 10, 0.8],
                    [8, 0, 18, 10, 0.7]], np.float64)
  np.testing.assert_array_equal(lite.suppress(boxes, 0.3), boxes[:1])
  np.testing.assert_array_equal(lite.suppress(boxes, 0.6), boxes)
  # "min" measures against the smaller box: a box inside another goes.
  inner = np.array([[0, 0, 20, 20, 0.9], [5, 5, 10, 10, 0.8]], np.float64)
  assert len(lite.suppress(inner, 0.7, method="min")) == 1
  assert len(lite.suppress(inner, 0.7, method="union")) == 2


def test_pyramid_scales_follow_the_shorter_side():
  scales = lite.pyramid_scales(512, 700)
  assert scales[0] == pytest.approx(0.6)
  np.testing.assert_allclose(scales[1:] / scales[:-1], 0.709)
  assert 11 <= 512 * scales[-1] < 18  # Down to PNet's window, about.
  assert len(lite.pyramid_scales(20, 500)) == 0  # Too small for a face.


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
  export_dir = tmp_path_factory.mktemp("detector")
  paths = export.export_face_detector(str(export_dir))
  assert sorted(paths) == sorted(lite.NETWORKS)
  assert lite.has_detector(str(export_dir))
  return faces_lib.FaceDetector(), lite.LiteFaceDetector(str(export_dir))


def _photos(tmp_path):
  """{name: uint8 RGB}: one face, a turned one, a small one, two, none."""
  astronaut = skimage.data.astronaut()
  image = Image.fromarray(astronaut)
  people = write_people(tmp_path / "people", 1, per_person=1)
  block = np.asarray(Image.open(os.path.join(people, "person00", "1.png"))
                     .convert("RGB"))
  photos = {
      "astronaut": astronaut,
      "turned": np.asarray(image.rotate(20, center=(224, 118))),
      "small": np.asarray(image.resize((200, 200))),
      "wide": np.asarray(image.crop((0, 40, 512, 300))),
      "two": np.concatenate([astronaut, astronaut[:, ::-1]], axis=1),
      "blocks": block, "tiny": astronaut[100:118, 200:230],
      "noise": np.random.default_rng(0).integers(0, 256, (97, 131, 3),
                                                 dtype=np.uint8)}
  return photos


@pytest.mark.slow  # Exports the detector to TFLite (export-heavy).
def test_finds_the_faces_keras_mtcnn_finds(detectors, tmp_path):
  keras_detector, lite_detector = detectors
  found_any = 0
  for name, rgb in _photos(tmp_path).items():
    # Every finding, below FaceDetector's 0.9 too.
    want = keras_detector.build()._mtcnn.detect_faces(rgb)  # pylint: disable=protected-access
    got = lite_detector.find(rgb)
    assert len(got) == len(want), name
    for a, b in zip(want, got):
      np.testing.assert_allclose(b["box"], a["box"], atol=1, err_msg=name)
      for eye in ("left_eye", "right_eye"):
        np.testing.assert_allclose(b["keypoints"][eye], a["keypoints"][eye],
                                   atol=1, err_msg=name)
      assert b["confidence"] == pytest.approx(a["confidence"], abs=1e-3)
    faces = lite_detector.detect(rgb)
    assert [f.box for f in faces] == [
        f.box for f in keras_detector.detect(rgb)], name
    found_any += bool(faces)
  assert found_any >= 5  # The face photos gave faces.


@pytest.mark.slow  # The exported detector.
def test_detect_checks_its_image_and_handles_empty_ones(detectors):
  _, lite_detector = detectors
  assert lite_detector.detect(np.zeros((0, 9, 3), np.uint8)) == []
  with pytest.raises(ValueError, match="RGB uint8"):
    lite_detector.detect(np.zeros((30, 30), np.uint8))


def test_missing_detector_files_are_one_line(tmp_path):
  with pytest.raises(ImgrecError, match="run imgrec-faces export") as e:
    lite.LiteFaceDetector(str(tmp_path))
  assert "\n" not in str(e.value)


@pytest.mark.slow  # Trains and exports a face run.
def test_an_old_export_detects_with_keras_and_says_so(face_run, tmp_path,
                                                      caplog):
  _, result = face_run
  config = FaceIdentifyConfig(model_dir=result["model_dir"],
                              runtime="tflite", gallery=str(tmp_path / "g"))
  if lite.has_detector(os.path.join(result["model_dir"], "export")):
    pytest.skip("the shared run was exported with the detector")
  with caplog.at_level(logging.WARNING, logger="imgrec"):
    detector = recognize.face_detector(config)
  assert isinstance(detector, faces_lib.FaceDetector)
  assert "imgrec-faces export" in caplog.text
  keras = recognize.face_detector(config.replace(runtime="keras"))
  assert isinstance(keras, faces_lib.FaceDetector)


@pytest.mark.slow
def test_enroll_and_identify_detect_on_tflite_without_tensorflow(face_run,
                                                                 tmp_path):
  _, result = face_run
  run = str(tmp_path / "run")
  shutil.copytree(result["model_dir"], run)  # The shared run stays as it is.
  out = export.export_embedder(run, ("float",))
  assert lite.has_detector(os.path.dirname(out["tflite"]["float"]))
  # Two "people" with real faces: the astronaut, and her colours swapped.
  astronaut = skimage.data.astronaut()
  folders = {}
  for name, rgb in (("alice", astronaut), ("bob", astronaut[..., ::-1])):
    folder = tmp_path / "people" / name
    folder.mkdir(parents=True)
    for i, (left, top) in enumerate(((0, 0), (40, 20), (20, 40), (30, 30))):
      Image.fromarray(rgb[top:top + 440, left:left + 440]).save(
          tmp_path / f"{name}_probe.png" if i == 3 else folder / f"{i}.png")
    folders[name] = folder
  blocked = tmp_path / "blocked"
  for name in ("tensorflow", "keras"):
    (blocked / name).mkdir(parents=True)
    (blocked / name / "__init__.py").write_text(_NO_TF.format(name=name))
  env = dict(os.environ, PYTHONPATH=str(blocked))
  gallery = f"--gallery={tmp_path / 'gallery.json'}"

  def faces(*args):
    return subprocess.run(
        [sys.executable, "-m", "imgrec.cli.faces", *args, f"--model_dir={run}",
         "--runtime=tflite", "--format=json", gallery],
        capture_output=True, text=True, env=env, timeout=300)

  enroll = faces("enroll", str(folders["alice"]), str(folders["bob"]))
  assert enroll.returncode == 0, enroll.stderr[-2000:]
  rows = [json.loads(line) for line in enroll.stdout.splitlines()]
  assert [(r["person"], r["enrolled"]) for r in rows] == [("alice", 3),
                                                          ("bob", 3)]
  probes = [str(tmp_path / "alice_probe.png"), str(tmp_path / "bob_probe.png")]
  ident = faces("identify", *probes)
  assert ident.returncode == 0, ident.stderr[-2000:]
  answers = [json.loads(line) for line in ident.stdout.splitlines()]
  assert [a["identity"] for a in answers] == ["alice", "bob"]
  # The Keras runtime and detector decide the same, with the same scores.
  keras = recognize.identify(
      FaceIdentifyConfig(model_dir=run, gallery=gallery.split("=", 1)[1]),
      probes)
  assert [a["identity"] for a in keras] == ["alice", "bob"]
  for a, b in zip(answers, keras):
    assert a["score"] == pytest.approx(b["score"], abs=1e-3)
