"""The edge install: imgrec on a .tflite file where TensorFlow is not installed.

`tox -e edge` runs these in a venv made from requirements-edge.txt (no
TensorFlow, no Keras); the main suite runs them too. The model and the
answers TensorFlow's path gave are in tests/edge/data (written by
make_edge_data.py, where TensorFlow is installed).
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from imgrec.inference.classifier import Classifier

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
MODEL = os.path.join(DATA, "model.tflite")
with open(os.path.join(DATA, "expected.json"), encoding="utf-8") as _f:
  EXPECTED = json.load(_f)
NAMES = sorted(EXPECTED["probabilities"])
PATHS = [os.path.join(DATA, n) for n in NAMES]


def _cli(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, timeout=120)


@pytest.mark.skipif(os.environ.get("IMGREC_EDGE") != "1",
                    reason="only in the edge venv (tox -e edge)")
def test_the_edge_venv_has_no_tensorflow():
  for name in ("tensorflow", "keras"):
    assert importlib.util.find_spec(name) is None, name


def test_tflite_answers_as_tensorflows_path_did():
  clf = Classifier.load(MODEL)
  got = clf.predict_proba(PATHS)
  want = np.array([EXPECTED["probabilities"][n] for n in NAMES])
  np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
  assert clf.class_names == EXPECTED["labels"]  # From the file's metadata.


def test_the_open_set_answers_as_tensorflows_path_did():
  clf = Classifier.load(os.path.join(DATA, "model_open_set.tflite"))
  assert clf.class_names == EXPECTED["labels"]
  assert clf.open_set["unknown_label"] == "unknown"
  predictions = clf.predict(PATHS)
  want = [EXPECTED["unknown"][n] for n in NAMES]
  assert [p.unknown for p in predictions] == want
  assert 0 < sum(want) < len(want)  # Both answers are tested.
  labels = EXPECTED["labels"]
  assert [p.label for p in predictions] == [
      "unknown" if u else labels[int(np.argmax(EXPECTED["probabilities"][n]))]
      for n, u in zip(NAMES, want)]
  np.testing.assert_allclose(clf.predict_proba(PATHS), [
      EXPECTED["probabilities"][n] for n in NAMES], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_the_library_loads_neither_tensorflow_nor_keras():
  code = ("import sys\n"
          "from imgrec.inference.classifier import Classifier\n"
          f"print(Classifier.load({MODEL!r}).predict({PATHS!r})[0].label)\n"
          "import imgrec.cli.predict, imgrec.cli.stream\n"
          "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
          "assert not heavy, heavy\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() in EXPECTED["labels"]


@pytest.mark.slow
def test_predict_prints_the_same_labels_and_nothing_on_stderr():
  proc = _cli("imgrec.cli.predict", f"--model={MODEL}", "--format=json",
              *PATHS)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr == ""
  got = {os.path.basename(p["source"]): p["label"]
         for p in json.loads(proc.stdout)}
  labels = EXPECTED["labels"]
  assert got == {n: labels[int(np.argmax(EXPECTED["probabilities"][n]))]
                 for n in NAMES}


@pytest.mark.slow
def test_stream_classifies_a_video_and_frames(tmp_path):
  import av  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  video = str(tmp_path / "clip.mp4")
  rng = np.random.default_rng(0)
  with av.open(video, "w") as out:
    stream = out.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
    for _ in range(20):
      frame = av.VideoFrame.from_ndarray(
          rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), format="rgb24")
      for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)
  proc = _cli("imgrec.cli.stream", f"--model={MODEL}", "--format=jsonl",
              video)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [json.loads(line) for line in proc.stdout.splitlines()]
  assert sum("frame" in r for r in rows) == 20
  frames = tmp_path / "frames"
  frames.mkdir()
  for i in range(3):
    Image.open(PATHS[0]).convert("RGB").save(frames / f"{i:03d}.png")
  proc = _cli("imgrec.cli.stream", f"--model={MODEL}", "--format=jsonl",
              str(frames))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sum("frame" in json.loads(l) for l in proc.stdout.splitlines()) == 3
