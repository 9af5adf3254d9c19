r"""How fast the TFLite path starts, and whether it answers as TensorFlow does.

    python experiments/tflite_without_tf.py --before_root=/tmp/imgrec_before

Measures, each over `--runs` fresh processes (median), in one run:

* anchor: a bare `python -c` that loads the .tflite file with ai_edge_litert
  and runs it on the same decoded image (Pillow decode and resize, no imgrec);
* `imgrec-predict --model=m.tflite one.jpg`: wall time and peak RSS (this
  checkout, and with --before_root a checkout of an earlier version, e.g.
  `git archive <commit> | tar -x -C DIR`);
* `imgrec-stream --model=m.tflite --format=jsonl` on a 640x480 video: seconds
  from start to the first row on stdout;
* `imgrec-predict` over a folder of `--photos` JPEGs (500x375): images/s;
* the answers: probabilities of `Classifier` on the .tflite file (Pillow
  decode, NumPy resize, LiteRT) against the previous version's path
  (TensorFlow's graph decoder, Pillow for PGM and the other kinds
  TensorFlow cannot read, the SavedModel's resize) on the MNIST test PNGs,
  the ORL faces and the photos: top-1 agreement and the largest
  difference.

The model is a small image run (32 pixels, 1 epoch on `shapes`) trained in
`--work` unless `--model_dir` names one (with export/model.tflite).
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

_WORK = flags.DEFINE_string("work", "/tmp/tflite_without_tf", "Scratch folder.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "An exported image run.")
_BEFORE = flags.DEFINE_string("before_root", None, "Checkout of an earlier "
                              "imgrec to measure in the same run.")
_RUNS = flags.DEFINE_integer("runs", 5, "Process runs per figure.")
_PHOTOS = flags.DEFINE_integer("photos", 1000, "JPEGs in the folder.")
_MNIST = flags.DEFINE_string("mnist", "/work/shared/data/mnist-10k/test",
                             "MNIST test folder (PNG).")
_ORL = flags.DEFINE_string("orl", "/work/shared/data/orl-faces", "ORL faces.")
_OUT = flags.DEFINE_string("out", None, "Results JSON (default: in --work).")

_ANCHOR = """
import sys
import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1])
it.allocate_tensors()
inp, out = it.get_input_details()[0], it.get_output_details()[0]
h, w = (int(d) for d in inp["shape"][1:3])
x = np.asarray(Image.open(sys.argv[2]).convert("RGB").resize((w, h)),
               np.float32)[None]
it.set_tensor(inp["index"], x)
it.invoke()
print(int(it.get_tensor(out["index"])[0].argmax()))
"""


def _env(root):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  if root:
    env["PYTHONPATH"] = root
  return env


def _timed(argv, env, first_line=False):
  """(wall seconds to exit or to the first stdout line, peak RSS in MB)."""
  start = time.perf_counter()
  # Not in the checkout: `python -m` puts the working folder first on the
  # path, before PYTHONPATH's checkout.
  proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True,
                          cwd=os.path.dirname(argv[-1]))
  if first_line:
    proc.stdout.readline()
    seconds = time.perf_counter() - start
    proc.stdout.read()
  _, status, usage = os.wait4(proc.pid, 0)
  if not first_line:
    seconds = time.perf_counter() - start
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode not in (0, 1):
    raise RuntimeError(f"{argv} exited {proc.returncode}")
  return seconds, usage.ru_maxrss / 1024


def _median(argv, env, runs, first_line=False):
  got = [_timed(argv, env, first_line) for _ in range(runs)]
  return (statistics.median(s for s, _ in got),
          statistics.median(m for _, m in got))


def _photo(rng, height=375, width=500):
  y, x = np.mgrid[0:height, 0:width]
  base = np.stack([x * 255 / width, y * 255 / height,
                   ((x * rng.uniform(0.5, 2) + y) % 97) * 2.6], -1)
  image = base + rng.normal(0, 14, (height, width, 3))
  top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
  image[top:top + height // 3, left:left + width // 3] = rng.integers(0, 256, 3)
  return np.clip(image, 0, 255).astype(np.uint8)


def _inputs(work):
  """one.jpg, a 640x480 video and the photo folder, made once."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  one = os.path.join(work, "one.jpg")
  if not os.path.exists(one):
    Image.fromarray(_photo(rng, 480, 640)).save(one, quality=90)
  photos = os.path.join(work, f"photos{_PHOTOS.value}")
  if not os.path.isdir(photos):
    os.makedirs(photos + ".tmp", exist_ok=True)
    for i in range(_PHOTOS.value):
      Image.fromarray(_photo(rng)).save(
          os.path.join(photos + ".tmp", f"{i:05d}.jpg"), quality=88)
    os.rename(photos + ".tmp", photos)
  video = os.path.join(work, "v640x480.mp4")
  if not os.path.exists(video):
    import av  # pylint: disable=g-import-not-at-top
    with av.open(video, "w") as out:
      stream = out.add_stream("libx264", rate=25)
      stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
      for _ in range(250):
        frame = av.VideoFrame.from_ndarray(_photo(rng, 480, 640),
                                           format="rgb24")
        for packet in stream.encode(frame):
          out.mux(packet)
      for packet in stream.encode():
        out.mux(packet)
  return one, video, photos


def _model_dir(work):
  if _MODEL_DIR.value:
    return _MODEL_DIR.value
  run = os.path.join(work, "run")
  if not os.path.exists(os.path.join(run, "export", "model.tflite")):
    subprocess.run([sys.executable, "-m", "imgrec.cli.train",
                    "--dataset=shapes", "--image_size=32", "--epochs=1",
                    f"--model_dir={run}"], env=_env(None), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return run


def _agreement(run, folders):
  """Classifier(tflite) against the path of the previous version: the
  graph decoder (Pillow for kinds TensorFlow cannot read), then the
  SavedModel's serving_default (TensorFlow's resize), on every image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from imgrec.data import decode  # pylint: disable=g-import-not-at-top
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  serve = tf.saved_model.load(os.path.join(run, "export", "saved_model"))
  serve = serve.signatures["serving_default"]
  clf = Classifier.load(os.path.join(run, "export", "model.tflite"))
  graph_decode = decode.decode_function(3, clf.image_size)

  def reference(path):
    if decode.open_plan(path).reader == "tf":
      image = graph_decode(tf.io.read_file(path)).numpy()
    else:
      image = decode.read_pillow(path, 3)
    return serve(images=tf.constant(image[None]))["probabilities"].numpy()[0]

  out = {}
  for name, root in folders.items():
    if not os.path.isdir(root):
      continue
    paths = folder_lib.expand_image_paths([root], "image")
    lite = np.concatenate([clf.predict_proba(paths[i:i + 64])
                           for i in range(0, len(paths), 64)])
    graph = np.stack([reference(p) for p in paths])
    out[name] = {"images": len(paths),
                 "top1_same": int((lite.argmax(1) == graph.argmax(1)).sum()),
                 "max_abs_diff": float(np.abs(lite - graph).max())}
  return out


def main(argv):
  del argv
  work = os.path.abspath(_WORK.value)
  os.makedirs(work, exist_ok=True)
  one, video, photos = _inputs(work)
  run = _model_dir(work)
  tflite = os.path.join(run, "export", "model.tflite")
  runs, py = _RUNS.value, sys.executable
  results = {"runs": runs, "cpus": os.cpu_count(),
             "load_before": os.getloadavg()}
  for name, root in (("now", None), ("before", _BEFORE.value)):
    if name == "now" or root:
      where = subprocess.run(
          [py, "-c", "import imgrec; print(imgrec.__file__)"], env=_env(root),
          cwd=work, capture_output=True, text=True, check=True).stdout
      results[f"imgrec_{name}"] = where.strip()
      # Bytecode compiled beforehand, as `pip install` compiles it: with
      # PYTHONDONTWRITEBYTECODE set (or a read-only tree) every start would
      # compile the changed modules again, which no installed copy does.
      subprocess.run([py, "-m", "compileall", "-q",
                      os.path.dirname(where.strip())], check=True,
                     capture_output=True)
  results["anchor_litert"] = _median([py, "-c", _ANCHOR, tflite, one],
                                     _env(None), runs)
  roots = {"now": None}
  if _BEFORE.value:
    roots["before"] = os.path.abspath(_BEFORE.value)
  for name, root in roots.items():
    env = _env(root)
    results[f"predict_one_{name}"] = _median(
        [py, "-m", "imgrec.cli.predict", f"--model={tflite}", one], env, runs)
    results[f"stream_first_row_{name}"] = _median(
        [py, "-m", "imgrec.cli.stream", f"--model={tflite}",
         "--format=jsonl", video], env, runs, first_line=True)
    seconds, rss = _median([py, "-m", "imgrec.cli.predict",
                            f"--model={tflite}", photos], env,
                           max(1, runs // 2))
    results[f"folder_{name}"] = {"seconds": seconds, "peak_rss_mb": rss,
                                 "images_per_second": _PHOTOS.value / seconds}
  anchor = results["anchor_litert"][0]
  results["predict_over_anchor"] = results["predict_one_now"][0] / anchor
  results["agreement"] = _agreement(run, {
      "mnist_test": _MNIST.value, "orl_faces": _ORL.value, "photos": photos})
  results["load_after"] = os.getloadavg()
  path = _OUT.value or os.path.join(work, "results.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
