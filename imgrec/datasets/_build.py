"""What the generated datasets share: parallel writing and a build-once cache."""

import concurrent.futures
import json
import os

import numpy as np

from imgrec import fileio

DATA_HOME_ENV = "IMGREC_DATA_HOME"
COMPLETE_MARKER = ".complete"
# What both generators ask of a colour against its background: this RGB
# distance at least (the luma difference is each dataset's own), found in
# this many draws.
MIN_CONTRAST = 110.0
COLOUR_TRIES = 64
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601.


def is_int(value):
  # bool is an int subclass, but seed=True is a bug rather than seed 1.
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def contrasting_colour(rng, contrast_of, k):
  """The first random colour that contrasts enough, else the best of a few.

  Args:
    rng: the generator the candidate colours come from (one uniform RGB
      draw each).
    contrast_of: `fn(colour) -> [rows, pixels]`: each row a contrast of the
      colour with the background pixels (in colour, in luma, ...), 1 meaning
      just enough.
    k: the pixel rank that counts: a colour scores the k-th smallest
      contrast of its worst row, so a few close pixels do not matter.

  Returns:
    A float RGB colour.
  """
  best, best_score = None, -1.0
  for _ in range(COLOUR_TRIES):
    colour = rng.uniform(0.0, 255.0, size=3)
    score = np.partition(contrast_of(colour), k, axis=-1)[:, k].min()
    if score > best_score:
      best, best_score = colour, score
    if score >= 1.0:
      break
  return best


def check_seed(seed):
  """Raises ValueError unless `seed` is a non-negative integer."""
  if not is_int(seed) or seed < 0:
    raise ValueError(
        f"seed must be a non-negative integer. Received: seed={seed!r}")


def check_split_counts(counts, argument, noun):
  """Refuses split names that are not plain folder names, and counts that
  are not non-negative integers.

  Args:
    counts: {split name: files per class}.
    argument: the argument's name, for the message.
    noun: what is counted ("Images", "Clips").
  """
  for split, per_class in counts.items():
    if (not isinstance(split, str) or not split or os.sep in split or
        split.startswith(".")):
      raise ValueError(f"Split names must be plain directory names. "
                       f"Received: {argument}={counts!r}")
    if not is_int(per_class) or per_class < 0:
      raise ValueError(f"{noun} per class must be non-negative integers. "
                       f"Received: {argument}={counts!r}")


def check_workers(num_workers):
  """`num_workers`, or the CPU count for None; raises ValueError if bad."""
  if num_workers is None:
    return os.cpu_count() or 1
  if not is_int(num_workers) or num_workers < 1:
    raise ValueError(f"num_workers must be a positive integer. "
                     f"Received: num_workers={num_workers!r}")
  return num_workers


def write_tree(root, counts, classes, name, write, num_workers,
               min_jobs_for_workers):
  """Writes every file of a dataset, in threads when there are enough.

  Calls `write(path, split, class_name, index)` for each file of
  `class_files`. Threads rather than processes: Pillow, numpy and FFmpeg
  release the GIL for most of the work, and threads need no __main__ guard
  in user scripts nor a fork of a process that may already run
  TensorFlow's threads.

  Returns:
    `root`.
  """
  run_jobs(lambda job: write(*job), list(class_files(root, counts, classes,
                                                     name)),
           num_workers, min_jobs_for_workers)
  return root


def run_jobs(fn, jobs, num_workers, min_jobs_for_workers):
  """Calls `fn(job)` for every job, in `num_workers` threads when there are
  at least `min_jobs_for_workers` jobs (see `write_tree` for why threads)."""
  jobs = list(jobs)
  if num_workers == 1 or len(jobs) < min_jobs_for_workers:
    for job in jobs:
      fn(job)
    return
  with concurrent.futures.ThreadPoolExecutor(num_workers) as executor:
    for _ in executor.map(fn, jobs):
      pass


def class_files(root, counts, classes, name):
  """Yields (path, split, class_name, index) for every file of a dataset.

  Files go to `root/<split>/<class>/<name(index, per_class)>` (split ""
  for a dataset without splits); class folders are created, splits with no
  files skipped.
  """
  for split, per_class in counts.items():
    if not per_class:
      continue
    for class_name in classes:
      class_dir = os.path.join(root, split, class_name)
      os.makedirs(class_dir, exist_ok=True)
      for index in range(per_class):
        yield (os.path.join(class_dir, name(index, per_class)), split,
               class_name, index)


def data_home(data_dir):
  """`data_dir`, else $IMGREC_DATA_HOME, else ~/.cache/imgrec/datasets."""
  if data_dir is None:
    data_dir = os.environ.get(DATA_HOME_ENV) or fileio.cache_home("datasets")
  return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def build_once(root, params, generate, loader):
  """`root`, generated by `generate(tmp_root)` unless already complete.

  Generated aside and renamed into place with a marker holding `params`: a
  half-written tree is never mistaken for the dataset, and two processes
  may generate it at once (the first rename wins).

  Raises:
    FileExistsError: `root` exists without the marker (not written by
      `loader`).
  """
  if os.path.isfile(os.path.join(root, COMPLETE_MARKER)):
    return root
  if os.path.exists(root):
    raise FileExistsError(
        f"{root} exists but has no {COMPLETE_MARKER} marker, so it was not "
        f"written by {loader}. Delete it to regenerate the dataset.")
  with fileio.atomic_dir(root) as tmp_root:
    generate(tmp_root)
    with open(os.path.join(tmp_root, COMPLETE_MARKER), "w") as f:
      json.dump(params, f, indent=2, sort_keys=True)
  return root
