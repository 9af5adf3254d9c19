r"""Export with proof, measured: the export table, MediaPipe, latency ratios.

    python experiments/export_check.py --model_dir=/tmp/exp/mnist
    python experiments/export_check.py --model_dir=/tmp/exp/mnv2 --repeats=5

For a finished imgrec-train run this
  1. runs `imgrec-export --tflite=float,fp16,dynamic,int8` (and the given
     --int8_io) and prints its table (export/export_report.json);
  2. runs MediaPipe Tasks' ImageClassifier (the `mediapipe` package) on the
     float and int8 files over every test image and counts how often it
     names the same top-1 class as imgrec's Classifier (what imgrec-predict
     prints; for a multi-label run the label of highest score): on images at the model's input size (both clients see the same
     pixels) and on the files as they are (each client resizes its own way);
  3. times the SavedModel `serve` call and the TFLite files on one image, one
     thread, in --repeats alternating child processes, and prints the median
     of each and of the ratios;
  4. prints each goal of the export issue with the measured figure.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

flags.DEFINE_string("model_dir", None, "A finished imgrec-train run.")
flags.DEFINE_string("tflite", "float,fp16,dynamic,int8", "Variants.")
flags.DEFINE_string("int8_io", "float", "int8 input/output: float or uint8.")
flags.DEFINE_integer("repeats", 5, "Latency child processes per format.")
flags.DEFINE_bool("export", True, "Run imgrec-export first (else reuse).")
FLAGS = flags.FLAGS


def _export(model_dir):
  cmd = [os.path.join(os.path.dirname(sys.executable), "imgrec-export"),
         f"--model_dir={model_dir}", f"--tflite={FLAGS.tflite}",
         f"--int8_io={FLAGS.int8_io}"]
  print("$", " ".join(cmd), flush=True)
  proc = subprocess.run(cmd, text=True, check=False)
  if proc.returncode:
    sys.exit(proc.returncode)


def _mediapipe_agreement(model_dir, variants):
  """{variant: (same at model size, same on the files, n)}."""
  import mediapipe as mp  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python import BaseOptions  # pylint: disable=g-import-not-at-top
  from mediapipe.tasks.python import vision  # pylint: disable=g-import-not-at-top
  from imgrec.data import decode  # pylint: disable=g-import-not-at-top
  from imgrec.data import ops  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  with open(os.path.join(model_dir, "splits.json"), encoding="utf-8") as f:
    paths = json.load(f)["splits"]["test"]["paths"]
  out = {}
  for variant in variants:
    name = "model.tflite" if variant == "float" else f"model_{variant}.tflite"
    path = os.path.join(model_dir, "export", name)
    ours = Classifier.load(path)
    size = ours.image_size
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=path), max_results=1)
    same_sized = same_files = 0
    with vision.ImageClassifier.create_from_options(options) as client:
      for start in range(0, len(paths), 256):
        chunk = paths[start:start + 256]
        files = [decode.read_file(p, 3) for p in chunk]
        sized = [np.asarray(np.round(ops.resize(im, size)), np.uint8)
                 for im in files]
        for images, counter in ((sized, "sized"), (files, "files")):
          # The top label (a label-set model's highest score; "unknown"
          # for an image the open set turns away) is what MediaPipe's
          # max_results=1 names.
          labels = [p.label if p.unknown else p.top_k[0][0]
                    for p in ours.predict(images)]
          theirs = [client.classify(mp.Image(
              image_format=mp.ImageFormat.SRGB,
              data=np.ascontiguousarray(im))).classifications[0]
                    .categories[0].category_name for im in images]
          same = sum(a == b for a, b in zip(labels, theirs))
          if counter == "sized":
            same_sized += same
          else:
            same_files += same
    out[variant] = (same_sized, same_files, len(paths))
  return out


def _latency_ratios(model_dir, repeats):
  """Median single-image, single-thread latency of each file, and ratios."""
  export = os.path.join(model_dir, "export")
  models = [os.path.join(export, "saved_model")] + sorted(
      os.path.join(export, f) for f in os.listdir(export)
      if f.endswith(".tflite"))
  from imgrec.data import decode  # pylint: disable=g-import-not-at-top
  from imgrec.data import ops  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  with open(os.path.join(model_dir, "splits.json"), encoding="utf-8") as f:
    paths = json.load(f)["splits"]["test"]["paths"][:8]
  size = Classifier.load(models[1]).image_size
  images = np.stack([np.asarray(np.round(ops.resize(
      decode.read_file(p, 3), size)), np.uint8) for p in paths])
  times = {m: [] for m in models}
  with tempfile.TemporaryDirectory() as tmp:
    np.save(os.path.join(tmp, "images.npy"), images)
    for _ in range(repeats):
      for model in models:  # One process per model and repeat, alternating.
        proc = subprocess.run(
            [sys.executable, "-m", "imgrec.inference.benchmark",
             "--num_threads=1", f"--images={tmp}/images.npy", model],
            capture_output=True, text=True, check=True)
        line = [l for l in proc.stdout.splitlines() if l.startswith("{")][0]
        times[model].append(json.loads(line)["latency_ms"]["median"])
  saved = times[models[0]]
  return {os.path.basename(m): (statistics.median(t), statistics.median(
      [a / b for a, b in zip(t, saved)])) for m, t in times.items()}


def _model_flops(model_dir):
  """Multiply-adds x 2 of the model's convolutions and dense layers."""
  import keras  # pylint: disable=g-import-not-at-top
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  model = tasks.load_model(os.path.join(model_dir, "best.keras"))
  total = 0

  def visit(layer):
    nonlocal total
    if hasattr(layer, "layers"):
      for inner in layer.layers:
        visit(inner)
      return
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                          keras.layers.Dense)):
      out = layer.output.shape
      kernel = layer.kernel.shape
      per_output = int(np.prod(kernel[:-1]))
      if isinstance(layer, keras.layers.DepthwiseConv2D):
        per_output = int(np.prod(kernel[:2]))
      total += 2 * per_output * int(np.prod(out[1:]))

  visit(model)
  return total


def _sgemm_peak():
  """GFLOP/s of a float32 2048x2048 matrix product on one thread (numpy)."""
  code = ("import time, numpy as np\n"
          "a = np.random.rand(2048, 2048).astype(np.float32); a @ a\n"
          "t = []\n"
          "for _ in range(5):\n"
          "  s = time.perf_counter(); a @ a; t.append(time.perf_counter() - s)\n"
          "print(2 * 2048 ** 3 / min(t) / 1e9)\n")
  env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
             MKL_NUM_THREADS="1")
  return float(subprocess.run([sys.executable, "-c", code], env=env,
                              capture_output=True, text=True,
                              check=True).stdout)


def main(argv):
  del argv
  model_dir = FLAGS.model_dir
  variants = FLAGS.tflite.split(",")
  if FLAGS.export:
    _export(model_dir)
  with open(os.path.join(model_dir, "export", "export_report.json"),
            encoding="utf-8") as f:
    report = json.load(f)
  by_name = {f["name"]: f for f in report["formats"]}
  print("\nMediaPipe ImageClassifier vs imgrec Classifier, same top-1:")
  agreement = _mediapipe_agreement(
      model_dir, [v for v in ("float", "int8") if v in variants])
  for variant, (sized, files, n) in agreement.items():
    print(f"  {variant:<6} at the model's size {sized}/{n}; on the files "
          f"(each resizing its own way) {files}/{n}")
  print(f"\nOne image, one thread, median of {FLAGS.repeats} processes "
        "(ratio: to the SavedModel serve call of the same repeat):")
  ratios = _latency_ratios(model_dir, FLAGS.repeats)
  for name, (ms, ratio) in ratios.items():
    print(f"  {name:<22} {ms:8.3f} ms   x{ratio:.3f}")

  flops = _model_flops(model_dir)
  peak = _sgemm_peak()
  float_ms = ratios["model.tflite"][0]
  saved_ms = ratios["saved_model"][0]
  print(f"\nCompute: {flops / 1e6:.1f} MFLOP an image; float TFLite runs it "
        f"at {flops / float_ms / 1e6:.1f} GFLOP/s; a float32 matrix product "
        f"on one thread (numpy) reaches {peak:.1f} GFLOP/s; the 0.1x goal "
        f"needs {flops / (0.1 * saved_ms) / 1e6:.1f} GFLOP/s.")

  # A label-set run is held to mAP, a single-label one to accuracy.
  metric = "map" if "map" in report["reference"] else "accuracy"
  ref = report["reference"][metric]
  print("\nGoals:")
  if "float" in by_name:
    f = by_name["float"]
    # Label sets agree when every label's decision does; scores, not
    # probabilities, differ.
    agree, diff = (("label_set_agreement", "max_abs_score_diff")
                   if metric == "map" else
                   ("top1_agreement", "max_abs_prob_diff"))
    print(f"  float agreement {100 * f[agree]:.2f}% (goal 100%), "
          f"max diff {f[diff]:.1e} (goal <= 1e-4)")
    print(f"  float latency x{ratios['model.tflite'][1]:.3f} of SavedModel "
          "(goal <= 0.1)")
  if "int8" in by_name and "float" in by_name:
    i = by_name["int8"]
    print(f"  int8 size x{i['bytes'] / by_name['float']['bytes']:.3f} of float "
          f"(goal <= 0.30); {metric} {100 * i[metric]:.2f}% vs Keras "
          f"{100 * ref:.2f}%: {100 * (i[metric] - ref):+.2f} pt (goal "
          f">= -0.5); kept in float: {i.get('kept_float')}")
  for variant, (sized, _, n) in agreement.items():
    print(f"  MediaPipe {variant}: same top-1 {sized}/{n} (goal all)")


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  app.run(main)
