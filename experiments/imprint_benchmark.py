r"""Imprinting figures of issue 25: new classes from 10 images each, against a
head retrained on every class with the same backbone and the same images.

    python experiments/imprint_benchmark.py --seeds=0,1,2

For each seed: the MNIST run of experiments/open_set_benchmark.py (digits
0-7 known, `--work`/mnist_s<seed>; trained here when missing), and a folder
of the new classes 8 and 9 (symlinks): 10 training images each (drawn with
the seed), 5 validation images each, and every test image of 8 and 9. Then:

* imgrec: `imgrec-extend --model_dir=RUN --add_dir=NEW --out_dir=...` (the
  command a user runs): test accuracy on the old classes (and the run's
  before), on the new classes, and the seconds of imprinting apart from
  embedding (from its report.json and extend.json): the default
  (`--new_weights=fitted`), `--new_weights=imprinted` (imprinting alone)
  and `--finetune_head_epochs=5`.
* anchors, in the same run: the same backbone's embeddings of the same
  images (the run's training split and the 20 new images), a softmax head
  trained on every class from scratch (Adam 1e-3, 30 epochs, batch 64),
  plain and with balanced class weights; scored on the same test images.

Prints one JSON line a seed, then the medians.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

import open_set_benchmark

# --seeds, --work (where open_set_benchmark.py's MNIST runs are), --mnist
# and --mnist_flags are open_set_benchmark.py's flags.
_PER_CLASS = flags.DEFINE_integer("per_class", 10, "Training images of each "
                                  "new class.")
_NEW = ("8", "9")


def make_new(work, seed):
  """NEW/{train,val,test}/{8,9}: --per_class and 5 drawn training images,
  every test image."""
  mnist = flags.FLAGS.mnist
  root = os.path.join(work, f"new_s{seed}")
  shutil.rmtree(root, ignore_errors=True)
  rng = np.random.default_rng(seed)
  pairs = []
  for digit in _NEW:
    train = open_set_benchmark._files(os.path.join(mnist, "train", digit))  # pylint: disable=protected-access
    picked = rng.choice(len(train), _PER_CLASS.value + 5, replace=False)
    for i, index in enumerate(picked):
      split = "train" if i < _PER_CLASS.value else "val"
      pairs.append((train[index], f"{split}/{digit}/{os.path.basename(train[index])}"))
    pairs += [(f, f"test/{digit}/{os.path.basename(f)}")
              for f in open_set_benchmark._files(os.path.join(  # pylint: disable=protected-access
                  mnist, "test", digit))]
  open_set_benchmark._link_split(pairs, root)  # pylint: disable=protected-access
  return root


def imgrec_extend(model_dir, new_dir, out_dir, extra=()):
  shutil.rmtree(out_dir, ignore_errors=True)
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.extend", f"--model_dir={model_dir}",
       f"--add_dir={new_dir}", f"--out_dir={out_dir}", *extra],
      capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  report = json.load(open(os.path.join(out_dir, "report.json")))
  added = json.load(open(os.path.join(out_dir, "extend.json")))
  return {"old": report["old_classes"]["accuracy"],
          "old_before": report["old_classes"]["accuracy_before"],
          "new": report["new_classes"]["accuracy"],
          "add_s": added["seconds"]["imprint"] + added["seconds"]["fit"],
          "embed_s": added["seconds"]["embed"]}


def anchors(model_dir, new_dir, seed):
  """Heads retrained on every class over the same backbone and images."""
  import keras  # pylint: disable=g-import-not-at-top
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  from imgrec.tasks import open_set  # pylint: disable=g-import-not-at-top
  run = RunFolder(model_dir)
  task = tasks.for_run(run)
  model = tasks.load_model(run.best_model_path)
  old = len(run.read_labels())

  def embed(split):
    return open_set.embed(task, model, split).features

  def new_split(name):
    paths, labels = [], []
    for k, digit in enumerate(_NEW):
      files = open_set_benchmark._files(os.path.join(new_dir, name, digit))  # pylint: disable=protected-access
      paths += files
      labels += [old + k] * len(files)
    return folder_lib.Split(paths, labels)

  train = folder_lib.Split(*run.read_split("train"))
  test = folder_lib.Split(*run.read_split("test"))
  x = np.concatenate([embed(train), embed(new_split("train"))])
  y = np.concatenate([train.labels, new_split("train").labels])
  old_x, new_test = embed(test), new_split("test")
  new_x = embed(new_test)
  out = {}
  for name, balanced in (("retrained", False), ("retrained_balanced", True)):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((x.shape[1],))
    head = keras.Model(inputs, keras.layers.Dense(
        old + len(_NEW), activation="softmax")(inputs))
    head.compile(keras.optimizers.Adam(1e-3),
                 "sparse_categorical_crossentropy")
    counts = np.bincount(y)
    weights = ({c: len(y) / (len(counts) * n) for c, n in enumerate(counts)}
               if balanced else None)
    head.fit(x, y, epochs=30, batch_size=64, verbose=0, class_weight=weights)
    out[name] = {
        "old": float(np.mean(head.predict(old_x, verbose=0).argmax(1)
                             == np.asarray(test.labels))),
        "new": float(np.mean(head.predict(new_x, verbose=0).argmax(1)
                             == np.asarray(new_test.labels)))}
  return out


def main(argv):
  del argv
  work = os.path.abspath(flags.FLAGS.work)
  os.makedirs(work, exist_ok=True)
  rows = []
  for seed in [int(s) for s in flags.FLAGS.seeds]:
    model_dir = os.path.join(work, f"mnist_s{seed}")
    if not os.path.isfile(os.path.join(model_dir, "report.json")):
      data_dir, _ = open_set_benchmark.make_mnist(work)
      open_set_benchmark.train(data_dir, model_dir, seed,
                               flags.FLAGS.mnist_flags)
    new_dir = make_new(work, seed)
    row = {"seed": seed,
           "imgrec": imgrec_extend(model_dir, new_dir, os.path.join(
               work, f"extended_s{seed}")),
           "imgrec_imprinted": imgrec_extend(
               model_dir, new_dir, os.path.join(work, f"imprinted_s{seed}"),
               ["--new_weights=imprinted"]),
           "imgrec_finetune5": imgrec_extend(
               model_dir, new_dir, os.path.join(work, f"extended_ft_s{seed}"),
               ["--finetune_head_epochs=5"]),
           **anchors(model_dir, new_dir, seed)}
    rows.append(row)
    print(json.dumps(row), flush=True)
  medians = {side: {k: statistics.median(r[side][k] for r in rows)
                    for k in rows[0][side]}
             for side in rows[0] if side != "seed"}
  print(json.dumps({"medians": medians}, indent=1))


if __name__ == "__main__":
  app.run(main)
