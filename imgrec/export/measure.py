"""Measures every exported format against the Keras model: the export report.

One measurement for every task: each format is loaded as a `Classifier`
(SavedModel through `tf.saved_model.load`, TFLite through LiteRT) and runs
the same test examples, read a chunk at a time as the run's task reads them
(`task.model_pixels` for Keras and TFLite, `task.serving_example`, what a
client sends, for the SavedModel). Per format: accuracy, top-1 agreement
with the Keras model, the largest probability difference, per-class
accuracy change, latency of one example on one thread (in a process of its
own: TensorFlow fixes its thread count when it starts) and throughput of
batches on every core. A task that decides each class by its threshold
(`task.thresholds`: multi-label runs) is measured by label sets instead:
mAP and micro-F1 at the run's thresholds (`"map"`, `"micro_f1"`, in the
reference and in each format), the share of examples with the Keras
model's label set, the largest score difference and per-class AP change.
"""

import json
import logging
import os
import subprocess
import sys
import tempfile

import numpy as np

from imgrec import fileio
from imgrec import tasks
from imgrec.data import ops
from imgrec.inference import benchmark
from imgrec.metrics import multilabel as metrics_lib
from imgrec.inference.classifier import Classifier

logger = logging.getLogger("imgrec")

# Model input held at once: a Keras batch is 64 RGB images of 224 px (16
# clips of 16 such frames at 112 px); a chunk read from files, four batches.
_BATCH_BYTES = 64 * 224 * 224 * 3 * 4
_CHUNK_BATCHES = 4
_BENCH_EXAMPLES = 8


class _Tally:
  """Running comparison of one format with the Keras reference."""

  def __init__(self, num_classes):
    self.correct = np.zeros(num_classes, np.int64)
    self.agree = 0
    self.max_diff = 0.0

  def add(self, probabilities, reference, labels):
    predicted = probabilities.argmax(1)
    np.add.at(self.correct, labels[predicted == labels], 1)
    self.agree += int(np.sum(predicted == reference.argmax(1)))
    if len(probabilities):
      self.max_diff = max(self.max_diff,
                          float(np.max(np.abs(probabilities - reference))))


def _bench_examples(task, paths, size):
  """A few test examples as uint8 RGB at the model's size (what is timed)."""
  return np.stack([np.asarray(np.round(ops.resize(task.serving_example(p),
                                                  size)), np.uint8)
                   for p in paths[:_BENCH_EXAMPLES]])


def _latencies(paths, examples, work_dir):
  """{path: benchmark dict} of single-thread runs in a child process."""
  with tempfile.TemporaryDirectory(prefix=fileio.TEMP_PREFIX,
                                   dir=work_dir) as tmp:
    examples_path = os.path.join(tmp, "examples.npy")
    np.save(examples_path, examples)
    proc = subprocess.run(
        [sys.executable, "-m", "imgrec.inference.benchmark",
         "--num_threads=1", f"--images={examples_path}", *paths],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  results = {}
  for line in proc.stdout.splitlines():
    if line.startswith("{"):
      entry = json.loads(line)
      results[entry["model"]] = entry
  if proc.returncode != 0:
    tail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
    logger.warning("single-thread latency was not measured for every "
                   "format: %s", tail[0])
  return results


def _outputs(task, model, classifiers, split):
  """The outputs of the Keras model and of every format over `split`, a
  chunk at a time.

  Yields:
    (labels of the chunk, Keras outputs, {format name: outputs}).
  """
  example_bytes = task.model_pixels(split.paths[0]).nbytes
  batch = int(max(1, min(64, _BATCH_BYTES // example_bytes)))
  chunk = batch * _CHUNK_BATCHES
  for start in range(0, len(split), chunk):
    paths = split.paths[start:start + chunk]
    labels = np.asarray(split.labels[start:start + chunk])
    pixels = np.stack([task.model_pixels(p) for p in paths])
    keras_outputs = np.asarray(model.predict(
        pixels, verbose=0, batch_size=batch), np.float32)
    sent, outputs = None, {}
    for name, clf in classifiers.items():
      if clf.format == "saved_model":
        if sent is None:  # What a server gets: the decoded file.
          sent = [task.serving_example(p) for p in paths]
        outputs[name] = clf.run(sent)
      else:
        outputs[name] = clf.run(pixels)
    yield labels, keras_outputs, outputs


def _compare(task, model, classifiers, split, num_classes):
  """Tallies of the Keras model and of every format over `split`.

  Returns:
    (Keras tally, {format name: tally}, examples of each class).
  """
  tallies = {name: _Tally(num_classes) for name in classifiers}
  reference = _Tally(num_classes)
  support = np.zeros(num_classes, np.int64)
  for labels, keras_probabilities, outputs in _outputs(task, model,
                                                       classifiers, split):
    np.add.at(support, labels, 1)
    reference.add(keras_probabilities, keras_probabilities, labels)
    for name, probabilities in outputs.items():
      tallies[name].add(probabilities, keras_probabilities, labels)
  return reference, tallies, support


def _label_set_figures(targets, scores, thresholds, class_names,
                       reference=None):
  """A multi-label model's figures on a split: mAP and micro-F1, and with
  the Keras model's scores (`reference`), how far from them."""
  summary = metrics_lib.summary(targets, scores, thresholds, class_names)
  out = {"map": summary["map"], "micro_f1": summary["micro_f1"]}
  if reference is not None:
    limits = np.asarray(thresholds, np.float64)
    keras = metrics_lib.summary(targets, reference, thresholds, class_names)
    out.update({
        "label_set_agreement": float(np.mean(np.all(
            (scores >= limits) == (reference >= limits), 1))),
        "max_abs_score_diff": float(np.max(np.abs(scores - reference)))
                              if len(scores) else 0.0,
        "per_class_ap_change": {
            c: summary["per_class"][c]["ap"] - keras["per_class"][c]["ap"]
            for c in class_names if keras["per_class"][c]["ap"] is not None},
    })
  return out


def _label_sets(task, model, classifiers, split, class_names, thresholds):
  """(Keras figures, {format name: figures}) of a multi-label model."""
  targets, reference, outputs = [], [], {name: [] for name in classifiers}
  for labels, keras_scores, chunk in _outputs(task, model, classifiers,
                                              split):
    targets.append(labels)
    reference.append(keras_scores)
    for name, scores in chunk.items():
      outputs[name].append(scores)
  targets = np.concatenate(targets)
  reference = np.concatenate(reference)
  return (_label_set_figures(targets, reference, thresholds, class_names),
          {name: _label_set_figures(targets, np.concatenate(scores),
                                    thresholds, class_names, reference)
           for name, scores in outputs.items()})


def measure(task, model, class_names, split, formats, *, work_dir,
            latency=True, extras=None):
  """The export report of `formats` on `split`.

  Args:
    task: the run's task (how an example is read; its decode limit).
    model: the Keras model (the reference).
    class_names: class names in label order.
    split: a folder.Split, usually the test split.
    formats: [(name, path)]: "saved_model" and TFLite variant names.
    work_dir: folder for temporary files.
    latency: also time single examples on one thread (a child process).
    extras: {format name: dict} added to that format's entry (int8's
      calibration and check).

  Returns:
    The report dict (see `format_report` for the printed table).
  """
  classifiers = {name: Classifier.load(
      path, num_threads=os.cpu_count(), trust_model=True,
      max_image_pixels=task.config.max_image_pixels)
                 for name, path in formats}
  examples = _bench_examples(task, split.paths,
                             tasks.model_input(model).image_size)
  single = (_latencies([path for _, path in formats], examples, work_dir)
            if latency else {})

  def speed(name, path):
    timing = benchmark.benchmark(classifiers[name], examples, runs=20,
                                 max_seconds=3.0)
    one = single.get(path, {}).get("latency_ms")
    return {"latency_ms": ({"median": one["median"], "p90": one["p90"]}
                           if one else None),
            "images_per_second": timing["images_per_second"]}

  thresholds = task.thresholds(class_names)
  if thresholds is not None:  # Label sets: each label decided on its own.
    keras, figures = _label_sets(task, model, classifiers, split,
                                 class_names, thresholds)
    return {"reference": {"format": "keras", "input": task.noun, **keras,
                          "num_examples": len(split)},
            "formats": [{"name": name, "path": path, "bytes": size_of(path),
                         **figures[name], **speed(name, path),
                         **(extras or {}).get(name, {})}
                        for name, path in formats]}
  reference, tallies, support = _compare(task, model, classifiers, split,
                                         len(class_names))
  n = int(support.sum())
  seen = support > 0

  def per_class(correct):
    return np.where(seen, correct / np.maximum(support, 1), 0.0)

  keras_per_class = per_class(reference.correct)
  entries = []
  for name, path in formats:
    tally = tallies[name]
    change = per_class(tally.correct) - keras_per_class
    entries.append({
        "name": name, "path": path, "bytes": size_of(path),
        "accuracy": float(tally.correct.sum() / max(n, 1)),
        "top1_agreement": tally.agree / max(n, 1),
        "max_abs_prob_diff": tally.max_diff,
        **speed(name, path),
        "per_class_accuracy_change": {
            c: float(change[i]) for i, c in enumerate(class_names)
            if seen[i]},
        **(extras or {}).get(name, {}),
    })
  return {"reference": {"format": "keras", "input": task.noun,
                        "accuracy": float(reference.correct.sum() / max(n, 1)),
                        "num_examples": n},
          "formats": entries}


def size_of(path):
  """Bytes of a file, or of every file in a folder."""
  if os.path.isdir(path):
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(path) for f in files)
  return os.path.getsize(path)


def _accuracy_columns(ref):
  """(reference figures, column headers, format -> its columns) of a
  classifier's report."""
  def columns(f):
    return (f"{100 * f['accuracy']:>9.2f}%"
            f"{100 * (f['accuracy'] - ref['accuracy']):>+9.2f}pt"
            f"{100 * f['top1_agreement']:>8.2f}%"
            f"{f['max_abs_prob_diff']:>10.1e}")
  return (f"accuracy {100 * ref['accuracy']:.2f}%",
          f"{'accuracy':>10}{'vs keras':>10}{'agree':>9}{'max|dp|':>10}",
          columns)


def _label_set_columns(ref):
  """`_accuracy_columns` of a multi-label report (mAP, micro-F1, the share
  of examples with Keras' label set)."""
  keras_map = ref["map"] or 0.0

  def columns(f):
    return (f"{100 * (f['map'] or 0.0):>8.2f}"
            f"{100 * ((f['map'] or 0.0) - keras_map):>+8.2f}pt"
            f"{100 * f['micro_f1']:>10.2f}"
            f"{100 * f['label_set_agreement']:>9.2f}%"
            f"{f['max_abs_score_diff']:>10.1e}")
  return (f"mAP {100 * keras_map:.2f}, micro-F1 {100 * ref['micro_f1']:.2f}",
          f"{'mAP':>8}{'vs keras':>10}{'micro-F1':>10}{'same set':>10}"
          f"{'max|ds|':>10}", columns)


def format_report(report):
  """The export report as a text table."""
  ref = report["reference"]
  figures, header, columns = (
      _label_set_columns if "map" in ref else _accuracy_columns)(ref)
  lines = [f"Keras reference: {figures} on {ref['num_examples']} "
           f"{ref.get('input', 'images')}",
           f"{'format':<12}{'size':>10}{header}{'ms (1 img)':>12}{'p90':>8}"
           f"{'img/s':>9}"]
  for f in report["formats"]:
    latency = f["latency_ms"] or {}
    lines.append(
        f"{f['name']:<12}{_human(f['bytes']):>10}{columns(f)}"
        f"{_ms(latency.get('median')):>12}{_ms(latency.get('p90')):>8}"
        f"{f['images_per_second']:>9.0f}")
    if f.get("kept_float"):
      lines.append(f"{'':<12}kept in float: {', '.join(f['kept_float'])}")
  if not all(f["latency_ms"] for f in report["formats"]):
    lines.append("(-: single-image latency not measured here; imgrec-export "
                 "measures it)")
  return "\n".join(lines)


def _ms(value):
  return "-" if value is None else f"{value:.3f}"


def _human(size):
  for unit in ("B", "KB", "MB", "GB"):
    if size < 1024 or unit == "GB":
      return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
    size /= 1024
  return str(size)
