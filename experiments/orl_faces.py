r"""ORL faces, 40 people: imgrec's recipe against an eigenfaces + linear SVM anchor.

    python experiments/orl_faces.py --data_dir=/work/shared/data/orl-faces

The split is by file index: images 1-5 of each person train, 6-10 test
(200 / 200). The script builds it as a folder of symlinks,
<tmp>/imgrec-orl-split/{train,test}/sN/K.pgm, outside the repository, and
then trains, for each of --seeds (0,1,2):

  anchor: eigenfaces + linear SVM in numpy: PCA by SVD of the mean-centred
          flattened 92x112 training images (--pca_components, whitened),
          then a one-vs-rest L2-regularized squared-hinge linear SVM (the
          loss of LinearSVC, C=--svm_c) fitted by accelerated full-batch
          gradient descent. Deterministic: identical for every seed.
  imgrec: experiments/orl_faces.flags, via imgrec-train.

Expected on 2 CPU cores (issue 4 goal: imgrec >= 97%, mean of 3 seeds):
anchor 90.5% (the issue quotes 82.5%; without whitening, 80.0% after 1000
steps, 88.5% after 10000); imgrec 98.33 +- 0.29% (98.0-98.5), about 4 minutes
a run.
"""

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
from PIL import Image

import recipe_runs

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_INDICES = range(1, 6)
TEST_INDICES = range(6, 11)

flags.DEFINE_string("data_dir", "/work/shared/data/orl-faces",
                    "ORL folder: s1..s40/1.pgm..10.pgm.")
flags.DEFINE_list("recipes", ["anchor", "imgrec"], "anchor, imgrec "
                  "(experiments/orl_faces.flags), or a flagfile path.")
flags.DEFINE_integer("pca_components", 60, "Eigenfaces kept by the anchor.")
flags.DEFINE_boolean("whiten", True, "Anchor: scale each PCA component to "
                     "unit variance. Unwhitened scores are badly conditioned "
                     "for the gradient-descent SVM: raise --svm_steps.")
flags.DEFINE_float("svm_c", 1.0, "Anchor: the SVM's C (inverse of the L2 "
                   "regularization).")
flags.DEFINE_integer("svm_steps", 1000, "Anchor: gradient steps.")
flags.DEFINE_string("split_dir", None, "Where the symlinked split goes. "
                    "Default: <tmp>/imgrec-orl-split.")
recipe_runs.define_run_flags()

FLAGS = flags.FLAGS


def person_dirs(data_dir):
  """Returns the sN folder names, ignoring README, .DS_Store and the like."""
  return sorted(name for name in os.listdir(data_dir)
                if name.startswith("s") and name[1:].isdigit()
                and os.path.isdir(os.path.join(data_dir, name)))


def make_split(data_dir, split_dir):
  """Builds split_dir/{train,test}/sN/K.pgm as symlinks; returns split_dir."""
  for split, indices in (("train", TRAIN_INDICES), ("test", TEST_INDICES)):
    for person in person_dirs(data_dir):
      folder = os.path.join(split_dir, split, person)
      os.makedirs(folder, exist_ok=True)
      for k in indices:
        link = os.path.join(folder, f"{k}.pgm")
        target = os.path.join(os.path.abspath(data_dir), person, f"{k}.pgm")
        if os.path.islink(link) and os.readlink(link) == target:
          continue
        if os.path.lexists(link):
          os.remove(link)
        os.symlink(target, link)
  return split_dir


def load_faces(data_dir, indices):
  """Flattened float64 images [N, 112 * 92] and person labels [N]."""
  images, labels = [], []
  for label, person in enumerate(person_dirs(data_dir)):
    for k in indices:
      with Image.open(os.path.join(data_dir, person, f"{k}.pgm")) as image:
        images.append(np.asarray(image.convert("L"), np.float64).ravel())
      labels.append(label)
  return np.stack(images), np.asarray(labels)


def fit_pca(x, components, whiten):
  """PCA of the rows of x; returns a function projecting rows onto it.

  With far fewer images N than pixels, the principal axes come from the SVD
  of the N x N Gram matrix of the mean-centred images (Turk and Pentland's
  eigenfaces trick): the same axes as the SVD of x itself, at a fraction of
  the cost.
  """
  mean = x.mean(axis=0)
  centred = x - mean
  u, s2, _ = np.linalg.svd(centred @ centred.T, hermitian=True)
  s = np.sqrt(s2[:components])
  basis = centred.T @ (u[:, :components] / s)  # Unit-norm eigenfaces.
  scale = s / np.sqrt(len(x) - 1) if whiten else 1.0
  return lambda z: ((z - mean) @ basis) / scale


def fit_linear_svm(x, labels, num_classes, c=1.0, steps=1000):
  """One-vs-rest linear SVM: min_w 0.5 |w|^2 + C sum max(0, 1 - y f(x))^2.

  The squared hinge (LinearSVC's default loss) has a Lipschitz gradient, so
  plain accelerated gradient descent with step 1/L converges; all classes
  are fitted at once as the columns of W. The bias is not regularized.

  Returns:
    (W [d, k], b [k]).
  """
  n, d = x.shape
  y = np.where(labels[:, None] == np.arange(num_classes)[None, :], 1.0, -1.0)
  xb = np.hstack([x, np.ones((n, 1))])
  # Gradient of 0.5|w|^2 + C |max(0, 1 - y * xb wb)|^2 is L-Lipschitz with:
  lipschitz = 1.0 + 2.0 * c * np.linalg.norm(xb, 2)**2
  reg = np.ones((d + 1, 1))
  reg[-1] = 0.0
  wb = np.zeros((d + 1, num_classes))
  momentum_point, t = wb.copy(), 1.0
  for _ in range(steps):
    slack = np.maximum(0.0, 1.0 - y * (xb @ momentum_point))
    grad = reg * momentum_point - 2.0 * c * xb.T @ (y * slack)
    new_wb = momentum_point - grad / lipschitz
    t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
    momentum_point = new_wb + ((t - 1.0) / t_next) * (new_wb - wb)
    wb, t = new_wb, t_next
  return wb[:-1], wb[-1]


def run_anchor(data_dir, seed):
  """Eigenfaces + linear SVM on the 5/5 split; returns a Run."""
  start = time.time()
  x_train, y_train = load_faces(data_dir, TRAIN_INDICES)
  x_test, y_test = load_faces(data_dir, TEST_INDICES)
  num_classes = int(y_train.max()) + 1
  project = fit_pca(x_train, FLAGS.pca_components, FLAGS.whiten)
  w, b = fit_linear_svm(project(x_train), y_train, num_classes,
                        c=FLAGS.svm_c, steps=FLAGS.svm_steps)
  predicted = np.argmax(project(x_test) @ w + b, axis=1)
  accuracy = float(np.mean(predicted == y_test))
  return recipe_runs.Run("anchor", seed, accuracy, time.time() - start)


def flagfile_of(recipe):
  if recipe == "imgrec":
    return os.path.join(HERE, "orl_faces.flags")
  return recipe


def main(argv):
  del argv
  work_dir = recipe_runs.make_work_dir(FLAGS.work_dir, "imgrec-orl-")
  split_dir = make_split(FLAGS.data_dir, FLAGS.split_dir or os.path.join(
      tempfile.gettempdir(), "imgrec-orl-split"))
  log_dir = os.path.join(work_dir, "logs")
  print(f"work_dir: {work_dir}\nsplit: {split_dir}", flush=True)
  for recipe in FLAGS.recipes:
    if recipe != "anchor":
      path = flagfile_of(recipe)
      print(f"{recipe}: {path}\n  " +
            " ".join(recipe_runs.read_flagfile(path) + FLAGS.override),
            flush=True)
  recipe_runs.warm_scan_cache(split_dir, os.path.join(work_dir, "scan.json"))
  runs = []
  for seed in [int(s) for s in FLAGS.seeds]:
    for recipe in FLAGS.recipes:
      if recipe == "anchor":
        run = run_anchor(FLAGS.data_dir, seed)
      else:
        name = ("imgrec" if recipe == "imgrec" else
                os.path.splitext(os.path.basename(recipe))[0])
        run = recipe_runs.run_imgrec(
            name, flagfile_of(recipe), data_dir=split_dir, seed=seed,
            model_dir=os.path.join(work_dir, f"{name}-{seed}"),
            extra=FLAGS.override, log_dir=log_dir)
      runs.append(run)
      print(recipe_runs.format_runs([run]), flush=True)
  print()
  anchor_desc = (f"anchor = {FLAGS.pca_components} "
                 f"{'whitened ' if FLAGS.whiten else ''}eigenfaces + linear "
                 f"SVM (C={FLAGS.svm_c}, {FLAGS.svm_steps} steps)")
  print(recipe_runs.format_table(
      runs, title=f"ORL faces, images 1-5 train / 6-10 test; {anchor_desc}; "
      f"seeds {', '.join(FLAGS.seeds)}"))
  if FLAGS.json:
    recipe_runs.write_json(runs, FLAGS.json)


if __name__ == "__main__":
  app.run(main)
