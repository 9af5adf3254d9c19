"""The TFLite path runs without TensorFlow and answers as TensorFlow does.

Pillow decodes under the policy, NumPy resizes (`imgrec.data.pixels`),
LiteRT runs the model: the same pixels as the graph decoder and
`tf.image.resize`, so the same answers; and `imgrec-predict`,
`imgrec-stream` and `Classifier` on a .tflite file run where importing
TensorFlow or Keras fails.
"""

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import write_odd_kinds
from conftest import write_toy_folder
from imgrec.config import TrainConfig
from imgrec.data import decode
from imgrec.data import ops
from imgrec.data import pixels
from imgrec.inference.classifier import Classifier
from imgrec.run_folder import RunFolder
from imgrec.training import trainer


def _png16(array, color_type):
  """A 16-bit PNG (Pillow writes none in colour): rows unfiltered."""
  height, width = array.shape[:2]
  raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes()
                 for y in range(height))

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

  header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
          chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _photo(rng, height, width):
  """Photo-like pixels: gradients, noise and a flat block (JPEG's worst and
  best cases)."""
  y, x = np.mgrid[0:height, 0:width]
  image = np.stack([x * 255 / width, y * 255 / height, (x + y) % 97 * 2.6],
                   -1) + rng.normal(0, 12, (height, width, 3))
  image[height // 4:height // 2, width // 3:width // 2] = (250, 20, 30)
  return np.clip(image, 0, 255).astype(np.uint8)


def _more_kinds(directory):
  """What `write_odd_kinds` lacks: 16-bit colour PNGs, lossy WebP, large
  photo-like JPEGs (4:2:0, 4:4:4, gray, CMYK) that decode DCT-scaled."""
  rng = np.random.default_rng(3)
  out = {}
  for color_type, channels in ((2, 3), (6, 4), (4, 2)):
    path = os.path.join(directory, f"deep{color_type}.png")
    with open(path, "wb") as f:
      f.write(_png16(rng.integers(0, 65536, (20, 30, channels),
                                  dtype=np.uint16), color_type))
    out[os.path.basename(path)] = path
  photo = _photo(rng, 757, 1013)
  for name, image, kw in (
      ("photo420.jpg", Image.fromarray(photo), dict(quality=88)),
      ("photo444.jpg", Image.fromarray(photo), dict(quality=92,
                                                    subsampling=0)),
      ("gray.jpg", Image.fromarray(photo[..., 0]), {}),
      ("cmyk_big.jpg", Image.fromarray(photo).convert("CMYK"), {}),
      ("lossy.webp", Image.fromarray(photo), dict(quality=80))):
    out[name] = os.path.join(directory, name)
    image.save(out[name], **kw)
  return out


def test_numpy_resize_and_gray_are_tensorflows():
  rng = np.random.default_rng(0)
  for height, width in ((24, 24), (120, 160), (378, 504), (7, 300), (1, 1),
                        (600, 17)):
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for size in ((16, 16), (224, 224), (32, 48), (5, 3), (300, 300)):
      np.testing.assert_allclose(pixels.resize(image, size),
                                 ops.resize(image, size).numpy(), rtol=0,
                                 atol=1e-4, err_msg=f"{image.shape}->{size}")
    np.testing.assert_array_equal(
        pixels.to_channels(image, 1),
        ops.to_channels(tf.constant(image), 1).numpy())
  clip = rng.integers(0, 256, (4, 30, 40, 3), dtype=np.uint8)
  np.testing.assert_allclose(pixels.resize(clip, (16, 16)),
                             ops.resize(clip, (16, 16)).numpy(), rtol=0,
                             atol=1e-4)
  gray = rng.integers(0, 256, (9, 7, 1), dtype=np.uint8)
  np.testing.assert_array_equal(pixels.to_channels(gray, 3),
                                ops.to_channels(tf.constant(gray), 3).numpy())


@pytest.mark.slow  # Traces the graph decoder three times (seconds each).
def test_pillow_reads_the_pixels_of_the_graph_decoder(tmp_path):
  files = {**write_odd_kinds(str(tmp_path)), **_more_kinds(str(tmp_path))}
  compared = 0
  for name, path in sorted(files.items()):
    if decode.open_plan(path).reader != "tf":
      continue  # Pillow reads it in both paths.
    contents = tf.io.read_file(path)
    # Each size and each channel count (a traced decoder costs seconds;
    # resizing and the channel conversion are independent steps).
    for target, channels in ((None, 3), ((16, 16), 1), ((224, 224), 3)):
      graph = decode.decode_function(channels, target)(contents).numpy()
      np.testing.assert_array_equal(
          decode.read_file(path, channels, target_size=target), graph,
          err_msg=f"{name} for {target}, {channels} channels")
      compared += 1
  assert compared >= 3 * 12  # The kinds TensorFlow reads, each way.


def test_jpegs_decode_dct_scaled_with_the_exact_idct(tmp_path):
  # The policy's JPEG pixels are libjpeg's exact IDCT (Pillow's only one);
  # TensorFlow's default is the fast one, up to several levels off.
  path = str(tmp_path / "photo.jpg")
  Image.fromarray(_photo(np.random.default_rng(1), 757, 1013)).save(
      path, quality=90)
  contents = open(path, "rb").read()
  fast = tf.io.decode_jpeg(contents, channels=3).numpy()
  policy = decode.read_file(path, 3)
  assert np.abs(fast.astype(int) - policy).max() > 1
  for target, scale in (((64, 64), 8), ((100, 100), 4), ((300, 300), 2)):
    assert decode.jpeg_scale(1013, 757, target) == scale
    assert decode.read_file(path, 3, target_size=target).shape == (
        -(-757 // scale), -(-1013 // scale), 3)


@pytest.fixture(scope="module")
def tflite_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("edge")
  data = write_toy_folder(tmp / "data", per_class=6, size=24)
  result = trainer.train(TrainConfig(
      data_dir=data, model_dir=str(tmp / "run"), epochs=1, image_size=16,
      batch_size=6, val_split=0.2, test_split=0.0, verbose=0))
  return RunFolder(result["model_dir"]), data


@pytest.mark.slow  # Trains and exports a run.
def test_tflite_answers_as_the_graph_on_every_kind(tflite_run, tmp_path):
  folder, data = tflite_run
  files = {**write_odd_kinds(str(tmp_path)), **_more_kinds(str(tmp_path))}
  paths = sorted(files.values()) + sorted(
      os.path.join(root, f) for root, _, names in os.walk(data)
      for f in names)
  lite = Classifier.load(folder.tflite_path())
  served = tf.saved_model.load(folder.saved_model_dir).signatures[
      "serving_bytes"](image_bytes=tf.constant(
          [open(p, "rb").read() for p in paths]))["probabilities"].numpy()
  got = lite.predict_proba(paths)
  np.testing.assert_array_equal(got.argmax(1), served.argmax(1))
  np.testing.assert_allclose(got, served, rtol=0, atol=1e-4)
  assert lite.class_names == folder.read_labels()  # From the file itself.


_NO_TF = """
raise ImportError("this machine has no {name} (a test of imgrec's edge path)")
"""


@pytest.mark.slow
def test_predict_and_stream_run_where_tensorflow_is_missing(tflite_run,
                                                            tmp_path):
  folder, data = tflite_run
  blocked = tmp_path / "blocked"
  for name in ("tensorflow", "keras", "tf_keras"):
    (blocked / name).mkdir(parents=True)
    (blocked / name / "__init__.py").write_text(_NO_TF.format(name=name))
  env = dict(os.environ, PYTHONPATH=str(blocked))
  image = next(os.path.join(root, f) for root, _, names in os.walk(data)
               for f in sorted(names))
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.predict",
       f"--model={folder.tflite_path()}", "--format=json", image],
      env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr == "", proc.stderr
  assert '"label"' in proc.stdout
  frames = tmp_path / "frames"
  frames.mkdir()
  for i in range(3):
    Image.open(image).save(frames / f"{i:03d}.png")
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.stream",
       f"--model={folder.tflite_path()}", "--format=jsonl", str(frames)],
      env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert len(proc.stdout.splitlines()) >= 3
  # The library: Classifier, imported and used, loads neither.
  code = ("import sys\n"
          "from imgrec.inference.classifier import Classifier\n"
          f"clf = Classifier.load({folder.tflite_path()!r})\n"
          f"print(clf.predict({image!r})[0].label)\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow'\n"
          "assert 'keras' not in sys.modules, 'keras'\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() in folder.read_labels()


def test_a_model_that_needs_tensorflow_still_says_so_in_one_line(tmp_path):
  # Without TensorFlow a .keras file cannot load; the TFLite path does not
  # hide that behind an import error from deep inside.
  from imgrec.inference import model_files  # pylint: disable=g-import-not-at-top
  assert model_files.needs_tensorflow("m.keras")
  assert model_files.needs_tensorflow(str(tmp_path))
  assert not model_files.needs_tensorflow("export/model.TFLITE")


@pytest.mark.slow
def test_faces_identify_and_verify_on_tflite_without_tensorflow(face_run,
                                                                tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  tmp, result = face_run
  run = str(tmp_path / "run")
  shutil.copytree(result["model_dir"], run)  # The shared run stays as it is.
  export = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.faces", "export", f"--model_dir={run}",
       "--tflite=float"], capture_output=True, text=True, timeout=600)
  assert export.returncode == 0, export.stderr[-2000:]
  blocked = tmp_path / "blocked"
  for name in ("tensorflow", "keras"):
    (blocked / name).mkdir(parents=True)
    (blocked / name / "__init__.py").write_text(_NO_TF.format(name=name))
  env = dict(os.environ, PYTHONPATH=str(blocked))
  people = tmp / "train"
  person = sorted(os.listdir(people))[0]
  photos = sorted(os.listdir(people / person))

  def faces(*args):
    return subprocess.run(
        [sys.executable, "-m", "imgrec.cli.faces", *args, f"--model_dir={run}",
         "--runtime=tflite", "--detect=false", "--format=json"],
        capture_output=True, text=True, env=env, timeout=300)

  gallery = f"--gallery={tmp_path / 'gallery.json'}"
  enroll = faces("enroll", gallery, str(people / person))
  assert enroll.returncode == 0, enroll.stderr[-2000:]
  ident = faces("identify", gallery, str(people / person / photos[0]))
  assert ident.returncode == 0, ident.stderr[-2000:]
  assert json.loads(ident.stdout.splitlines()[-1])["identity"] == person
  verify = faces("verify", str(people / person / photos[0]),
                 str(people / person / photos[1]))
  assert verify.returncode == 0, verify.stderr[-2000:]
  assert "score" in json.loads(verify.stdout.strip())
