r"""Open-set figures of issue 25: how well each unknown score tells images of
the known classes from images of classes held out of training.

    python experiments/open_set_benchmark.py --seeds=0,1,2

For each data set and seed, in one run (so the scores share the model and
any load from other jobs):

* mnist: `--mnist` with digits 0-7 known (train and test PNGs) and the test
  PNGs of 8 and 9 unknown; imgrec-train with `--mnist_flags`.
* orl: ORL faces as 40 classes, people s1-s30 known (images 1-5 train,
  6-10 test, as experiments/orl_faces.py) and every image of s31-s40
  unknown; imgrec-train with experiments/orl_faces.flags.
* shapes: the built-in shapes (seed 0), circle..square known and the test
  images of star and triangle unknown; imgrec-train with its defaults.

The folders are symlinks under `--work`, outside the repository. After
training, the run's best model embeds the known test images and the unknown
ones (`imgrec.tasks.open_set.embed`), and each score of
`imgrec.metrics.open_set` is measured: AUROC (known as positive) and FPR95
(unknown images accepted at the threshold keeping 95% of the known test
images), and for the run's own score, the share of known test images kept
and of unknown ones rejected at the threshold training chose on its
validation split (`open_set.json`).

Prints one JSON line per data set and seed, then the medians per data set
and score.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

HERE = os.path.dirname(os.path.abspath(__file__))

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_WORK = flags.DEFINE_string("work", "/tmp/open_set_benchmark", "Scratch.")
_MNIST = flags.DEFINE_string("mnist", "/work/shared/data/mnist-10k",
                             "MNIST: {train,test}/<digit>/*.png.")
_ORL = flags.DEFINE_string("orl", "/work/shared/data/orl-faces",
                           "ORL: s1..s40/1.pgm..10.pgm.")
_PARTS = flags.DEFINE_list("parts", ["mnist", "orl", "shapes"],
                           "Data sets to measure.")
_MNIST_FLAGS = flags.DEFINE_list(
    "mnist_flags", [f"--flagfile={os.path.join(HERE, 'mnist_best.flags')}"],
    "imgrec-train flags of the MNIST runs.")
_ORL_FLAGS = flags.DEFINE_list(
    "orl_flags", [f"--flagfile={os.path.join(HERE, 'orl_faces.flags')}"],
    "imgrec-train flags of the ORL runs.")
_SHAPES_FLAGS = flags.DEFINE_list("shapes_flags", [],
                                  "imgrec-train flags of the shapes runs.")


def _link_split(pairs, root):
  """Symlinks [(source file, 'split/class/name')] under root."""
  for source, relative in pairs:
    target = os.path.join(root, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.symlink(os.path.abspath(source), target)


def _files(folder):
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if not n.startswith("."))


def _hold_out(source, work, name, splits, classes, held_out):
  """(known folder, unknown files): `source`/<split>/<class>/ linked under
  work/name but for the `held_out` classes, whose test files are the
  unknown ones."""
  root = os.path.join(work, name)
  shutil.rmtree(root, ignore_errors=True)
  pairs, unknown = [], []
  for split in splits:
    for label in classes:
      files = _files(os.path.join(source, split, label))
      if label not in held_out:
        pairs += [(f, f"{split}/{label}/{os.path.basename(f)}")
                  for f in files]
      elif split == "test":
        unknown += files
  _link_split(pairs, root)
  return root, unknown


def make_mnist(work):
  """(known folder, unknown files): digits 0-7 known, test 8 and 9 not."""
  return _hold_out(_MNIST.value, work, "mnist_known", ("train", "test"),
                   [str(d) for d in range(10)], ("8", "9"))


def make_orl(work):
  """(known folder, unknown files): s1-s30 known, s31-s40 not."""
  root = os.path.join(work, "orl_known")
  shutil.rmtree(root, ignore_errors=True)
  pairs, unknown = [], []
  for person in range(1, 41):
    for index in range(1, 11):
      source = os.path.join(_ORL.value, f"s{person}", f"{index}.pgm")
      if person > 30:
        unknown.append(source)
      else:
        split = "train" if index <= 5 else "test"
        pairs.append((source, f"{split}/s{person}/{index}.pgm"))
  _link_split(pairs, root)
  return root, unknown


def make_shapes(work):
  """(known folder, unknown files): star and triangle held out."""
  from imgrec import datasets  # pylint: disable=g-import-not-at-top
  return _hold_out(datasets.load_builtin("shapes", seed=0), work,
                   "shapes_known", ("train", "val", "test"),
                   datasets.SHAPE_CLASSES, ("star", "triangle"))


def train(data_dir, model_dir, seed, extra):
  shutil.rmtree(model_dir, ignore_errors=True)
  start = time.time()
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.train", f"--data_dir={data_dir}",
       f"--model_dir={model_dir}", f"--seed={seed}", "--export=false",
       "--verbose=0", "--allow_outside", *extra],
      capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  return time.time() - start


def measure(unknown_files, model_dir):
  """The open-set figures of a finished run on its known test split and the
  unknown files (linked into one folder, read as imgrec-evaluate
  --unknown_dir reads it: scanned, PGMs converted)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  from imgrec.metrics import open_set as metrics  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  from imgrec.tasks import open_set  # pylint: disable=g-import-not-at-top
  run = RunFolder(model_dir)
  task = tasks.for_run(run)
  names = run.read_labels()
  model = tasks.load_model(run.best_model_path)
  known_split = folder_lib.Split(*run.read_split("test"))
  known = open_set.embed(task, model, known_split)
  folder = os.path.join(model_dir, "unknown_images")
  shutil.rmtree(folder, ignore_errors=True)
  _link_split([(f, f"{i:05d}_{os.path.basename(f)}")
               for i, f in enumerate(unknown_files)], folder)
  unknown_split = task.build_unknown_split(folder)
  unknown = open_set.embed(task, model, unknown_split)
  chosen = open_set.read(run, len(names))
  accuracy = float(np.mean(known.logits.argmax(1) == np.asarray(
      known_split.labels)))
  out = {"accuracy": accuracy, "known": len(known_split),
         "unknown": len(unknown_split), "default": chosen.score}
  for kind in metrics.SCORES:
    k = known.knownness(kind, chosen.prototypes)
    u = unknown.knownness(kind, chosen.prototypes)
    out[kind] = {"auroc": metrics.summary(k, u, 0.0)["auroc"],
                 "fpr95": metrics.fpr_at_recall(k, u, 0.95)}
    if kind == chosen.score:
      at = metrics.summary(k, u, chosen.threshold)
      out[kind] |= {"known_kept": at["known_recall"],
                    "unknown_rejected": at["unknown_rejected"]}
  return out


_MAKERS = {"mnist": (make_mnist, _MNIST_FLAGS), "orl": (make_orl, _ORL_FLAGS),
           "shapes": (make_shapes, _SHAPES_FLAGS)}


def main(argv):
  del argv
  work = os.path.abspath(_WORK.value)
  os.makedirs(work, exist_ok=True)
  results = {}
  for part in _PARTS.value:
    make, extra = _MAKERS[part]
    data_dir, unknown = make(work)
    for seed in [int(s) for s in _SEEDS.value]:
      model_dir = os.path.join(work, f"{part}_s{seed}")
      seconds = train(data_dir, model_dir, seed, extra.value)
      figures = measure(unknown, model_dir) | {
          "train_seconds": round(seconds, 1)}
      results.setdefault(part, []).append(figures)
      print(json.dumps({"part": part, "seed": seed, **figures}), flush=True)
  medians = {}
  for part, runs in results.items():
    medians[part] = {"accuracy": statistics.median(r["accuracy"]
                                                   for r in runs)}
    for kind in ("energy", "max_softmax", "prototype"):
      medians[part][kind] = {
          key: statistics.median(r[kind][key] for r in runs)
          for key in runs[0][kind]}
  print(json.dumps({"medians": medians, "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
  app.run(main)
