"""Multi-label data: a labels CSV of label sets, and splits that keep every
label's share (iterative stratification).

    path,labels[,split]
    street/001.jpg,car person
    street/002.jpg,
    shop/017.jpg,shoe bag

Labels are joined by a delimiter (a space by default, as Kaggle's Planet
and fastai's `label_delim`); an empty cell is an image with no label (a
background image), which is legal. Without a split column the rows are
split by iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011):
the rarest labels are placed first, each image into the split that most
lacks its labels, so a label with 10 images does not end with all of them
in training.
"""

import dataclasses
import logging
import os

import numpy as np

from imgrec.data import folder as folder_lib
from imgrec.data import sources
from imgrec.errors import ImgrecError

logger = logging.getLogger("imgrec")

# Characters that join labels in files made by other tools: a class name
# holding one of them (other than the file's own delimiter) is a cell
# written with another delimiter.
_OTHER_DELIMITERS = (",", ";", "|", "\t")


@dataclasses.dataclass
class MultiLabelRows:
  """The usable rows of a multi-label CSV.

  Attributes:
    class_names: every label, sorted.
    paths: absolute paths of the listed files that exist.
    targets: uint8 [N, num_classes], 1 where the image holds the label.
    splits: each path's split ("train", "val", "test"), or None for all
      when the CSV has no split column.
    missing: the listed files that do not exist or may not be used, as
      data_report entries.
  """
  class_names: list
  paths: list
  targets: np.ndarray
  splits: list | None
  missing: list


def _labels_of(cell, delim):
  """The label set of one cell; refuses duplicates and foreign delimiters."""
  names = [n.strip() for n in (cell.split(delim) if delim.strip()
                               else cell.split())]
  names = [n for n in names if n]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f"label(s) {', '.join(map(repr, dupes))} appear twice "
                     "in one cell")
  for name in names:
    other = [d for d in _OTHER_DELIMITERS if d in name and d != delim]
    if other:
      raise ValueError(
          f"label {name!r} holds {other[0]!r}: are the labels joined by "
          f"{other[0]!r}? Pass --label_delim={other[0]!r} (now "
          f"{delim!r})")
  return names


def read_multilabel_csv(csv_path, *, label_delim=" ", allow_outside=False):
  """Reads a CSV of images and their label sets.

  Args:
    csv_path: a UTF-8 CSV whose header names `path` and `labels` (and
      optionally `split`); relative paths are relative to its folder.
    label_delim: what joins the labels of a cell.
    allow_outside: use listed files outside the CSV's folder.

  Returns:
    MultiLabelRows.

  Raises:
    ImgrecError: naming the row, for a missing column, an empty CSV, a row
      without a path, a label twice in a cell, a cell that looks joined by
      another delimiter, a file listed twice, or no label at all.
  """
  if not isinstance(label_delim, str) or not label_delim:
    raise ImgrecError("--label_delim must be one or more characters. "
                      f"Received: {label_delim!r}")
  columns, rows = sources.read_csv_rows(csv_path, ("path", "labels"))
  has_split = "split" in columns
  entries = sources.csv_entries(
      csv_path, rows, has_split,
      label_of=lambda row: _labels_of(row["labels"], label_delim),
      usage="every row needs a path")
  class_names = sorted({n for _, _, labels, _ in entries for n in labels})
  if not class_names:
    raise ImgrecError(f"Labels CSV {csv_path}: every labels cell is empty, "
                      "so there is nothing to learn. Fill the labels column "
                      f"(labels joined by {label_delim!r}).")
  folder_lib.check_class_names(class_names, csv_path)
  index = {c: i for i, c in enumerate(class_names)}
  base = os.path.dirname(csv_path)
  paths, targets, splits, missing = [], [], [], []
  for line, full, labels, split in entries:
    reason, why = sources.unusable(full, base, allow_outside)
    if why:
      missing.append({"path": full, "split": split,
                      "class": " ".join(labels), "reason": reason,
                      "detail": f"listed on line {line} of {csv_path} but "
                                f"{why}"})
      continue
    row = np.zeros(len(class_names), np.uint8)
    row[[index[n] for n in labels]] = 1
    paths.append(full)
    targets.append(row)
    splits.append(split)
  if missing:
    logger.warning("%d file(s) listed in %s cannot be used and are skipped: "
                   "%s", len(missing), csv_path,
                   sources.listing([m["path"] for m in missing]))
  return MultiLabelRows(
      class_names, paths,
      np.array(targets, np.uint8).reshape(-1, len(class_names)),
      splits if has_split else None, missing)


def rows_of_folder(found):
  """The MultiLabelRows of an ImageFolder whose labels are class indices or
  lists of them (`sources.load_tfds` of a Sequence of ClassLabel): a
  single class is a label set of one."""
  paths, targets, splits = [], [], []
  for name, split in found.splits.items():
    for path, labels in zip(split.paths, split.labels):
      row = np.zeros(len(found.class_names), np.uint8)
      row[labels if isinstance(labels, (list, tuple)) else [labels]] = 1
      paths.append(path)
      targets.append(row)
      splits.append(name)
  return MultiLabelRows(
      list(found.class_names), paths,
      np.array(targets, np.uint8).reshape(-1, len(found.class_names)),
      splits, [])


def iterative_split(targets, fractions, seed):
  """Assigns each row of a label matrix to a split, keeping label shares.

  Sechidis et al.'s iterative stratification: while rows remain, take the
  label with the fewest rows still to place; place each of its rows (in a
  seeded random order) into the split that most lacks that label (then the
  one that most lacks rows; then at random), and count the row's other
  labels as placed there. Rows without labels go last, to the splits
  furthest below their size.

  Args:
    targets: [N, C] 0/1 label matrix.
    fractions: {split name: share}, summing to 1.
    seed: seed of the orders and ties.

  Returns:
    A list of N split names.
  """
  targets = np.asarray(targets, bool)
  rng = np.random.default_rng(seed)
  names = list(fractions)
  shares = np.array([fractions[n] for n in names], np.float64)
  want_rows = shares * len(targets)
  want_labels = shares[:, None] * targets.sum(0)[None, :]
  out = np.full(len(targets), -1)
  remaining = targets.copy()
  while remaining.any():
    counts = remaining.sum(0).astype(np.float64)
    counts[counts == 0] = np.inf
    label = rng.choice(np.flatnonzero(counts == counts.min()))
    rows = np.flatnonzero(remaining[:, label])
    for row in rng.permutation(rows):
      need = want_labels[:, label]
      best = np.flatnonzero(need == need.max())
      if len(best) > 1:
        best = best[want_rows[best] == want_rows[best].max()]
      split = rng.choice(best)
      out[row] = split
      want_labels[split] -= targets[row]
      want_rows[split] -= 1
      remaining[row] = False
  for row in rng.permutation(np.flatnonzero(out < 0)):
    best = np.flatnonzero(want_rows == want_rows.max())
    split = rng.choice(best)
    out[row] = split
    want_rows[split] -= 1
  return [names[i] for i in out]


def check_label_counts(class_names, targets, val_split, test_split,
                       where):
  """Refuses labels with too few images to appear in every split asked for.

  A label needs one image in training and one in each held-out split that
  is not empty.
  """
  need = 1 + (val_split > 0) + (test_split > 0)
  counts = np.asarray(targets).sum(0)
  short = [f"{name} ({int(n)})" for name, n in zip(class_names, counts)
           if n < need]
  if short:
    raise ImgrecError(
        f"{where}: label(s) {sources.listing(short)} have fewer than {need} "
        "images, too few to appear in training and in each held-out split. "
        "Add images of them, or remove them from the labels.")
