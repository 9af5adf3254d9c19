"""Tests for imgrec.data.faces: finding, levelling and cropping faces."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from imgrec.errors import ImgrecError
from imgrec.data import faces as detect

# The astronaut portrait (512x512) holds one face, about 83x107 pixels,
# whose eyes are nearly level; turning the photo about this point turns the
# face in place.
FACE_CENTRE = (224, 118)


def eye_angle(face):
  """Degrees of the line from the left to the right eye (y down)."""
  (lx, ly), (rx, ry) = face.left_eye, face.right_eye
  return math.degrees(math.atan2(ry - ly, rx - lx))


def save(array, path):
  Image.fromarray(array).save(path)
  return str(path)


@pytest.fixture(scope="module")
def astronaut():
  return skimage.data.astronaut()


@pytest.fixture(scope="module")
def detector():
  return detect.FaceDetector()


@pytest.fixture(scope="module")
def turned(astronaut):
  """The astronaut turned 20 degrees anticlockwise about her face."""
  return np.asarray(Image.fromarray(astronaut).rotate(
      20, resample=Image.Resampling.BICUBIC, center=FACE_CENTRE))


def test_finds_the_astronaut(astronaut, detector):
  faces = detector.detect(astronaut)
  assert len(faces) == 1
  face = faces[0]
  x, y, w, h = face.box
  assert all(isinstance(v, int) for v in face.box)
  assert 0 <= x and 0 <= y and x + w <= 512 and y + h <= 512
  assert 50 <= w <= 160 and 50 <= h <= 160
  assert x <= FACE_CENTRE[0] <= x + w and y <= FACE_CENTRE[1] <= y + h
  assert face.confidence >= 0.9
  for eye in (face.left_eye, face.right_eye):
    assert x <= eye[0] <= x + w and y <= eye[1] <= y + h
  assert face.left_eye[0] < face.right_eye[0]
  assert abs(eye_angle(face)) < 6


def test_align_crop_levels_a_turned_face(turned, detector):
  faces = detector.detect(turned)
  assert len(faces) == 1
  # Anticlockwise on screen: the right eye (larger x) is now higher.
  assert -24 < eye_angle(faces[0]) < -12
  crop = detect.align_crop(turned, faces[0], 160)
  assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
  again = detector.detect(crop)
  assert len(again) == 1
  assert abs(eye_angle(again[0])) < 5
  x, y, w, h = again[0].box
  assert abs(x + w / 2 - 80) < 12 and abs(y + h / 2 - 80) < 12
  np.testing.assert_array_equal(
      crop, detect.align_crop(turned, faces[0], 160))


def dots(shape, points, radius=3):
  image = np.full(shape + (3,), 255, np.uint8)
  for x, y in points:
    image[y - radius:y + radius + 1, x - radius:x + radius + 1] = (200, 0, 0)
  return image


def red_centres(crop):
  """(x, y) centres of the red dots left and right of the middle."""
  red = (crop[..., 0] > 100) & (crop[..., 1] < 100)
  ys, xs = np.nonzero(red)
  left = xs < crop.shape[1] / 2
  return ((xs[left].mean(), ys[left].mean()),
          (xs[~left].mean(), ys[~left].mean()))


def test_align_crop_turns_the_eye_line_level():
  # Dots at pixels (100, 80) and (180, 120), whose centres are the
  # continuous points (100.5, 80.5) and (180.5, 120.5): 26.6 degrees.
  image = dots((400, 400), [(100, 80), (180, 120)])
  face = detect.Face(box=(90, 50, 100, 120), confidence=1.0,
                     left_eye=(100.5, 80.5), right_eye=(180.5, 120.5))
  # Side 120 * 1.2 = 144: one output pixel per image pixel.
  crop = detect.align_crop(image, face, 144, margin=0.2)
  angle = math.atan2(40, 80)
  centre = (140, 110)  # Of the box, which is the centre of the crop.
  for (x, y), (ex, ey) in zip(red_centres(crop),
                              [(100.5, 80.5), (180.5, 120.5)]):
    dx, dy = ex - centre[0], ey - centre[1]
    want = (72 + math.cos(angle) * dx + math.sin(angle) * dy,
            72 - math.sin(angle) * dx + math.cos(angle) * dy)
    assert x == pytest.approx(want[0], abs=1) and y == pytest.approx(
        want[1], abs=1)
  (_, left_y), (_, right_y) = red_centres(crop)
  assert abs(left_y - right_y) < 0.5


def test_align_crop_without_turn_is_crop_and_resize():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
  face = detect.Face(box=(20, 10, 30, 40), confidence=1.0,
                     left_eye=(25.0, 20.0), right_eye=(40.0, 20.0))
  # No margin, box 30x40: the square 40x40 around (35, 30).
  crop = detect.align_crop(image, face, 40, margin=0.0)
  np.testing.assert_array_equal(crop, image[10:50, 15:55])
  small = detect.align_crop(image, face, 20, margin=0.0)
  assert small.shape == (20, 20, 3)
  assert np.abs(small.astype(int) - np.asarray(Image.fromarray(
      image[10:50, 15:55]).resize((20, 20), Image.Resampling.BILINEAR),
                                              int)).max() <= 1


def test_align_crop_pads_with_black():
  image = np.full((50, 50, 3), 255, np.uint8)
  face = detect.Face(box=(0, 0, 20, 20), confidence=1.0,
                     left_eye=(5.0, 8.0), right_eye=(15.0, 8.0))
  crop = detect.align_crop(image, face, 40, margin=1.0)
  # The 40x40 square around (10, 10) starts 10 pixels outside the image.
  assert (crop[:9, :9] == 0).all() and (crop[:9, 11:] == 0).all()
  assert (crop[11:, 11:] == 255).all()


def test_align_crop_checks_its_arguments(astronaut):
  face = detect.Face((0, 0, 10, 10), 1.0, (2.0, 3.0), (8.0, 3.0))
  with pytest.raises(ValueError, match="Received: size=0"):
    detect.align_crop(astronaut, face, 0)
  with pytest.raises(ValueError, match="Received: margin=-1"):
    detect.align_crop(astronaut, face, 10, margin=-1)
  with pytest.raises(ValueError, match="RGB uint8"):
    detect.align_crop(astronaut / 255.0, face, 10)


def astronaut_twice(astronaut):
  """A canvas with the astronaut's head twice: a larger copy on the right."""
  head = astronaut[20:250, 120:330]
  bigger = np.asarray(Image.fromarray(head).resize((252, 276)))
  canvas = np.full((320, 620, 3), 128, np.uint8)
  canvas[20:250, 20:230] = head
  canvas[20:296, 330:582] = bigger
  return canvas


def test_two_faces_are_skipped_or_the_largest_taken(tmp_path, astronaut,
                                                    detector):
  path = save(astronaut_twice(astronaut), tmp_path / "two.png")
  [skipped] = detect.load_faces([path], 96, detector=detector)
  assert skipped.status == "several_faces" and skipped.count == 2
  assert skipped.face is None and "2 faces" in skipped.message
  [largest] = detect.load_faces([path], 96, detector=detector,
                                several="largest")
  assert largest.status == "ok" and largest.count == 2
  assert largest.face.shape == (96, 96, 3)
  assert largest.box[0] > 330  # The bigger copy, on the right.


def test_files_without_a_face_are_reported(tmp_path, astronaut, detector):
  rng = np.random.default_rng(0)
  noise = save(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
               tmp_path / "noise.png")
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
  tiny = save(np.zeros((1, 1, 3), np.uint8), tmp_path / "tiny.png")
  gray = tmp_path / "gray.png"
  Image.fromarray(astronaut).convert("L").save(gray)
  missing = tmp_path / "missing.png"
  paths = [noise, str(corrupt), tiny, gray, missing]
  results = detect.load_faces(paths, 64, detector=detector)
  assert [r.path for r in results] == [str(p) for p in paths]
  assert [r.status for r in results] == [
      "no_face", "unreadable", "no_face", "ok", "unreadable"]
  assert "Cannot read image" in results[1].message
  assert "does not exist" in results[4].message
  assert results[3].face.shape == (64, 64, 3)
  assert all(r.face is None for r in results if not r.ok)
  line = detect.summary_line(results)
  assert line.startswith("Faces from 1 of 5 images; skipped 2 no_face "
                         "(noise.png, tiny.png), 2 unreadable")
  assert "\n" not in line


def test_summary_line_names_files_apart_by_folder(tmp_path):
  results = [detect.FaceResult(str(tmp_path / f"s{i}" / "1.pgm"), "no_face")
             for i in range(1, 6)]
  results.append(detect.FaceResult(str(tmp_path / "s6" / "2.pgm"), "ok"))
  assert detect.summary_line(results, max_names=2) == (
      "Faces from 1 of 6 images; skipped 5 no_face (s1/1.pgm, s2/1.pgm, "
      "and 3 more).")
  assert detect.summary_line(results[5:]) == "Faces from 1 of 1 images."


def test_detect_false_resizes_without_a_detector(tmp_path):
  rng = np.random.default_rng(1)
  portrait = rng.integers(0, 256, (112, 92), dtype=np.uint8)  # ORL's shape.
  path = tmp_path / "1.pgm"
  Image.fromarray(portrait).save(path)
  tiny = save(np.full((1, 1, 3), 7, np.uint8), tmp_path / "tiny.png")
  detector = detect.FaceDetector()
  same, small, one = (
      detect.load_faces([path], 92, detect=False, detector=detector)[0],
      detect.load_faces([path], 46, detect=False, detector=detector)[0],
      detect.load_faces([tiny], 8, detect=False, detector=detector)[0])
  assert not detector.built
  assert same.status == "ok" and same.box == (0, 0, 92, 112)
  expected = np.asarray(Image.fromarray(portrait).convert("RGB").resize(
      (92, 92), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(same.face, expected)
  assert small.face.shape == (46, 46, 3)
  assert one.status == "ok" and (one.face == 7).all()


def test_import_loads_no_tensorflow():
  code = ("import sys, imgrec.data.faces; "
          "print('tensorflow' in sys.modules, 'mtcnn' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True, cwd=os.path.dirname(
                           os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.split() == ["False", "False"]


def test_builds_in_float32_under_mixed_bfloat16(astronaut):
  import keras  # pylint: disable=g-import-not-at-top
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    detector = detect.FaceDetector()
    # MTCNN built under this policy raises DTypePromotionError here.
    faces = detector.detect(astronaut)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
  finally:
    keras.mixed_precision.set_global_policy(previous)
  assert len(faces) == 1


class FakeMTCNN:

  def __init__(self, found=None, error=None):
    self.found, self.error = found, error

  def detect_faces(self, rgb):
    if self.error:
      raise self.error
    return self.found


def fake_detector(**kwargs):
  detector = detect.FaceDetector(min_confidence=0.9)
  detector._mtcnn = FakeMTCNN(**kwargs)  # pylint: disable=protected-access
  return detector


def point(x, y):
  return {"left_eye": [x, y], "right_eye": [x + 10, y],
          "nose": [x + 5, y + 5], "mouth_left": [x, y + 10],
          "mouth_right": [x + 10, y + 10]}


def test_detect_filters_clips_and_sorts():
  found = [
      {"box": [10, 10, 20, 20], "confidence": 0.95, "keypoints": point(15, 15)},
      {"box": [-5, 30, 40, 50], "confidence": np.float64(0.99),
       "keypoints": point(5, 40)},
      {"box": [50, 50, 60, 60], "confidence": 0.5, "keypoints": point(60, 60)},
  ]
  faces = fake_detector(found=found).detect(np.zeros((64, 48, 3), np.uint8))
  assert [f.box for f in faces] == [(0, 30, 35, 34), (10, 10, 20, 20)]
  assert faces[0].confidence == pytest.approx(0.99)
  assert faces[0].left_eye == (5.0, 40.0) and faces[0].right_eye == (15.0, 40.0)
  assert fake_detector(found=[]).detect(np.zeros((0, 5, 3), np.uint8)) == []


def test_detector_failure_is_one_images_error(tmp_path):
  detector = fake_detector(error=RuntimeError("boom"))
  image = np.zeros((30, 40, 3), np.uint8)
  with pytest.raises(ImgrecError, match="40x30 image: RuntimeError: boom"):
    detector.detect(image)
  with pytest.raises(ValueError, match="Received: shape=\\(30, 40\\)"):
    detector.detect(image[..., 0])
  path = save(image, tmp_path / "a.png")
  [result] = detect.load_faces([path], 16, detector=detector)
  assert result.status == "error" and "boom" in result.message
  with pytest.raises(ValueError, match="Received: several='all'"):
    detect.load_faces([path], 16, detector=detector, several="all")
  with pytest.raises(ValueError, match="min_confidence=2"):
    detect.FaceDetector(min_confidence=2)
