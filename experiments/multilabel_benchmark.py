r"""Multi-label figures of issue 24: the built-in dataset, multi-MNIST against
the keras-io idiom, and iterative stratification against a random split.

    python experiments/multilabel_benchmark.py --seeds=0,1,2

For each seed, in one run (so load from other jobs hits every side alike):

* builtin: `imgrec-train --dataset=shapes_multilabel` with its defaults
  (`--builtin_flags` adds flags): test mAP, micro/macro F1.
* multi-MNIST: 56x56 scenes of 1 to 3 different digits cut from
  `--mnist` (train digits make the train and validation scenes, test
  digits the test scenes only), written once to `--work` with a
  path,labels,split CSV. imgrec: `imgrec-train --task=multilabel` on it
  (`--mnist_flags`), its thresholds tuned per label on the validation
  split. Anchor, the keras-io idiom for multi-label: the keras-io simple
  MNIST convnet with a sigmoid head and binary cross-entropy, `model.fit`
  on the same train scenes (Adam, batch 128, trained to convergence:
  Keras EarlyStopping on the validation loss, patience 5, best weights
  restored, at most `--anchor_epochs`), one threshold 0.5; both scored by imgrec.metrics.multilabel on the same test
  scenes, and imgrec's own model once more at one threshold 0.5 (what the
  tuned thresholds alone add).
* splits: every label's share of train/val/test under
  `imgrec.data.multilabel.iterative_split` and under a seeded random split
  of the same multi-MNIST train+val scenes: the largest gap from the
  asked share, in points.

Prints a JSON object: per seed and side the figures, then the medians.
"""

import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
from PIL import Image

_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_WORK = flags.DEFINE_string("work", "/tmp/multilabel_benchmark", "Scratch.")
_MNIST = flags.DEFINE_string("mnist", "/work/shared/data/mnist-10k",
                             "MNIST: {train,test}/<digit>/*.png.")
_SCENES = flags.DEFINE_list("scenes", ["6000", "1500", "2000"],
                            "Multi-MNIST train, val, test scenes.")
_BUILTIN_FLAGS = flags.DEFINE_list("builtin_flags", [], "More imgrec-train "
                                   "flags for the built-in runs.")
_MNIST_FLAGS = flags.DEFINE_list(
    "mnist_flags", ["--image_size=56", "--channels=1", "--epochs=15",
                    "--flip=none"],
    "imgrec-train flags of the multi-MNIST runs.")
_ANCHOR_EPOCHS = flags.DEFINE_integer(
    "anchor_epochs", 100, "The anchor's most epochs (it stops early when "
    "its validation loss has not improved for 5).")
_PARTS = flags.DEFINE_list("parts", ["builtin", "mnist", "splits"],
                           "What to measure.")

_SIDE = 56


def _digits(split_dir):
  """{digit: uint8 [N, 28, 28]} of an MNIST split folder."""
  out = {}
  for digit in sorted(os.listdir(split_dir)):
    folder = os.path.join(split_dir, digit)
    if os.path.isdir(folder) and digit.isdigit():
      out[int(digit)] = np.stack([
          np.asarray(Image.open(os.path.join(folder, f)).convert("L"))
          for f in sorted(os.listdir(folder)) if f.endswith(".png")])
  return out


def _scene(rng, digits):
  """A 56x56 scene of 1-3 different digits (brightest pixel wins)."""
  labels = sorted(rng.choice(10, rng.integers(1, 4), replace=False).tolist())
  canvas = np.zeros((_SIDE, _SIDE), np.uint8)
  for label in labels:
    pool = digits[label]
    digit = pool[rng.integers(len(pool))]
    y, x = rng.integers(0, _SIDE - 28, 2)
    canvas[y:y + 28, x:x + 28] = np.maximum(canvas[y:y + 28, x:x + 28], digit)
  return canvas, labels


def make_multi_mnist(root, mnist, counts, seed=0):
  """Writes the scenes and labels.csv (path,labels,split) once."""
  csv_path = os.path.join(root, "labels.csv")
  if os.path.exists(csv_path):
    return csv_path
  os.makedirs(os.path.join(root, "img"), exist_ok=True)
  train, test = _digits(os.path.join(mnist, "train")), _digits(
      os.path.join(mnist, "test"))
  rng = np.random.default_rng(seed)
  rows = ["path,labels,split"]
  for split, count in zip(("train", "val", "test"), counts):
    for i in range(count):
      pixels, labels = _scene(rng, test if split == "test" else train)
      name = f"img/{split}_{i:05d}.png"
      Image.fromarray(pixels).save(os.path.join(root, name))
      rows.append(f"{name},{' '.join(map(str, labels))},{split}")
  with open(csv_path + ".tmp", "w", encoding="utf-8") as f:
    f.write("\n".join(rows) + "\n")
  os.replace(csv_path + ".tmp", csv_path)
  return csv_path


def _imgrec(args, model_dir):
  """Runs imgrec-train; returns (report.json's multilabel section, seconds)."""
  start = time.time()
  proc = subprocess.run([sys.executable, "-m", "imgrec.cli.train", *args,
                         f"--model_dir={model_dir}", "--verbose=0",
                         "--export=false"], capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  with open(os.path.join(model_dir, "report.json"), encoding="utf-8") as f:
    section = json.load(f)["multilabel"]
  return section, time.time() - start


def _figures(section, seconds):
  return {k: section[k] for k in ("map", "micro_f1", "macro_f1",
                                  "subset_accuracy")} | {"seconds": seconds}


def _read_scenes(csv_path):
  import csv  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(csv_path)
  out = {"train": ([], []), "val": ([], []), "test": ([], [])}
  with open(csv_path, encoding="utf-8") as f:
    for row in csv.DictReader(f):
      target = np.zeros(10, np.float32)
      target[[int(d) for d in row["labels"].split()]] = 1
      out[row["split"]][0].append(
          np.asarray(Image.open(os.path.join(root, row["path"]))))
      out[row["split"]][1].append(target)
  return {k: (np.stack(x)[..., None] / 255.0, np.stack(y))
          for k, (x, y) in out.items()}


def anchor(csv_path, seed):
  """The keras-io idiom: simple MNIST convnet, sigmoid + BCE, threshold 0.5."""
  import keras  # pylint: disable=g-import-not-at-top
  from keras import layers  # pylint: disable=g-import-not-at-top
  from imgrec.metrics import multilabel as metrics  # pylint: disable=g-import-not-at-top
  start = time.time()
  keras.utils.set_random_seed(seed)
  data = _read_scenes(csv_path)
  model = keras.Sequential([
      keras.Input((_SIDE, _SIDE, 1)),
      layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
      layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
      layers.Flatten(), layers.Dropout(0.5),
      layers.Dense(10, activation="sigmoid")])
  model.compile(loss="binary_crossentropy", optimizer="adam")
  history = model.fit(
      *data["train"], batch_size=128, epochs=_ANCHOR_EPOCHS.value,
      validation_data=data["val"], verbose=0,
      callbacks=[keras.callbacks.EarlyStopping(
          monitor="val_loss", patience=5, restore_best_weights=True)])
  x, y = data["test"]
  scores = model.predict(x, verbose=0)
  section = metrics.summary(y, scores, [0.5] * 10, [str(d) for d in range(10)])
  return _figures(section, time.time() - start) | {
      "epochs": len(history.history["loss"])}


def at_half(csv_path, model_dir):
  """imgrec's own model with one threshold 0.5: what tuning alone adds."""
  import csv  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  from imgrec.metrics import multilabel as metrics  # pylint: disable=g-import-not-at-top
  model = Classifier.load(os.path.join(model_dir, "best.keras"))
  names = model.class_names
  root = os.path.dirname(csv_path)
  paths, targets = [], []
  with open(csv_path, encoding="utf-8") as f:
    for row in csv.DictReader(f):
      if row["split"] == "test":
        paths.append(os.path.join(root, row["path"]))
        targets.append([n in row["labels"].split() for n in names])
  scores = np.concatenate([model.predict_proba(paths[i:i + 256])
                           for i in range(0, len(paths), 256)])
  section = metrics.summary(np.asarray(targets, np.float32), scores,
                            [0.5] * len(names), names)
  return _figures(section, 0.0)


def split_shares(csv_path, seed):
  """Largest gap of a label's split share from the asked one, in points."""
  from imgrec.data import multilabel  # pylint: disable=g-import-not-at-top
  data = _read_scenes(csv_path)
  targets = np.concatenate([data["train"][1], data["val"][1]])
  fractions = {"train": 0.7, "val": 0.15, "test": 0.15}

  def worst(assigned):
    assigned = np.asarray(assigned)
    return max(100 * abs(targets[assigned == name].sum(0)[c]
                         / targets[:, c].sum() - share)
               for name, share in fractions.items()
               for c in range(targets.shape[1]))

  rng = np.random.default_rng(seed)
  random = rng.choice(list(fractions), len(targets),
                      p=list(fractions.values()))
  return {"iterative": float(worst(multilabel.iterative_split(
      targets, fractions, seed))), "random": float(worst(random)),
          "images": len(targets)}


def main(argv):
  del argv
  work = os.path.abspath(_WORK.value)
  os.makedirs(work, exist_ok=True)
  parts = set(_PARTS.value)
  csv_path = None
  if parts & {"mnist", "splits"}:
    csv_path = make_multi_mnist(os.path.join(work, "multi_mnist"),
                                _MNIST.value,
                                [int(c) for c in _SCENES.value])
  results = {"seeds": {}, "load": [os.getloadavg()]}
  for seed in [int(s) for s in _SEEDS.value]:
    out = results["seeds"][seed] = {}
    if "builtin" in parts:
      out["builtin"] = _figures(*_imgrec(
          ["--dataset=shapes_multilabel", f"--seed={seed}",
           *_BUILTIN_FLAGS.value], os.path.join(work, f"builtin_s{seed}")))
    if "mnist" in parts:
      out["mnist_anchor"] = anchor(csv_path, seed)
      out["mnist_imgrec"] = _figures(*_imgrec(
          ["--task=multilabel", f"--labels_csv={csv_path}", f"--seed={seed}",
           *_MNIST_FLAGS.value], os.path.join(work, f"mnist_s{seed}")))
      out["mnist_imgrec_at_half"] = at_half(
          csv_path, os.path.join(work, f"mnist_s{seed}"))
    if "splits" in parts:
      out["splits"] = split_shares(csv_path, seed)
    print(json.dumps({seed: out}), flush=True)
  results["load"].append(os.getloadavg())
  medians = {}
  for side in ("builtin", "mnist_anchor", "mnist_imgrec",
               "mnist_imgrec_at_half"):
    runs = [r[side] for r in results["seeds"].values() if side in r]
    if runs:
      medians[side] = {k: statistics.median(r[k] for r in runs)
                       for k in runs[0]}
  results["medians"] = medians
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
