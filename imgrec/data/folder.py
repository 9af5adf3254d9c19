"""Finds the images and labels of an image folder and splits them.

Two layouts are understood:

* `root/<class>/<image>`: one pool of images, split here into train, val and
  test with a seeded, stratified split.
* `root/{train,val,test}/<class>/<image>` (`validation` is accepted for `val`):
  the splits are given. `train` is required; missing `val`/`test` splits are
  carved out of `train` the same seeded, stratified way.

Hidden files and folders (`.DS_Store`, `.ipynb_checkpoints`), `Thumbs.db` and
files whose extension is not an image format are ignored. The walk is safe
on hostile trees: each folder is entered once (a symlink loop is reported,
not followed), each file counts once by its real path (a second link to it
is reported as a duplicate, so one image never lands in two splits or two
classes), links that leave the data folder are followed only when asked,
and anything that is not a regular file (a FIFO, a socket, a device) is
reported and never opened.
"""

import dataclasses
import os
import random
import re
import stat

from imgrec.config import SPLITS
from imgrec.data.decode import IMAGE_EXTENSIONS
from imgrec.data.decode import VIDEO_EXTENSIONS
from imgrec.errors import ImgrecError

SPLIT_DIR_NAMES = {"train": "train", "val": "val", "validation": "val",
                   "test": "test"}
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})


def is_hidden(name):
  return name.startswith(".") or name.lower() in _IGNORED_NAMES


def is_image_file(name):
  return (not is_hidden(name)
          and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def is_video_file(name):
  return (not is_hidden(name)
          and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS)


_KIND_FILES = {"image": is_image_file, "video": is_video_file}


def natural_key(path):
  """Sorts by file name as people do: "2.png" before "10.png"."""
  return [int(t) if t.isdecimal() else t.lower()
          for t in re.split(r"(\d+)", os.path.basename(path))]


def data_kind(root, limit=2000):
  """"video" when the files below `root` are videos and not images, else "image".

  Looks at up to `limit` files: a folder of clips trains a clip classifier.
  """
  images = videos = seen = 0
  for _, _, filenames in _Walker(root).walk(root):
    for name in filenames:
      images += is_image_file(name)
      videos += is_video_file(name)
      seen += 1
      if seen >= limit:
        return "video" if videos > images else "image"
  return "video" if videos > images else "image"


@dataclasses.dataclass
class Split:
  """The files of one split: parallel lists of paths and integer labels.

  `pixel_rows`, when the data scan kept the decoded images (`scan.Fill`),
  gives each file's row in the folder's `pixels` store; `shorter_sides`,
  when the scan read the headers, each image's shorter side in pixels (the
  pipeline leaves out the DCT-scaled decode when no image is large enough
  for it).
  """
  paths: list
  labels: list
  pixel_rows: list | None = None
  shorter_sides: list | None = None

  def __len__(self):
    return len(self.paths)


@dataclasses.dataclass
class ImageFolder:
  """An image folder resolved into class names and train/val/test splits.

  Attributes:
    root: the data folder.
    class_names: class names in label order.
    splits: {split name: Split}.
    layout: "classes", "splits", or the source ("csv", "tfds").
    ignored: (path, why) of what the walk refused: "symlink_loop",
      "link_outside_tree", "duplicate_file", "not_a_regular_file".
    pixels: the decoded, resized images the scan kept (a uint8 tensor
      [N, H, W, C], rows named by the splits' `pixel_rows`), or None.
    dropped: copies of images of an earlier split, left out of their own
      (`--leakage=drop`).
  """
  root: str
  class_names: list
  splits: dict  # split name -> Split
  layout: str  # "classes" or "splits"
  ignored: list = dataclasses.field(default_factory=list)
  pixels: object = None
  dropped: list = dataclasses.field(default_factory=list)

  def summary(self):
    """Returns {split: {class_name: count}}."""
    out = {}
    for name, split in self.splits.items():
      counts = {c: 0 for c in self.class_names}
      for label in split.labels:
        counts[self.class_names[label]] += 1
      out[name] = counts
    return out


def check_class_names(names, where):
  """Refuses class names that cannot round-trip through labels.txt.

  Raises:
    ImgrecError: a name is empty or blank, or holds a line break or another
      control character.
  """
  bad = [n for n in names
         if not n.strip() or any(ord(c) < 32 or ord(c) == 127 for c in n)]
  if bad:
    raise ImgrecError(
        f"Class name(s) {', '.join(map(repr, bad))} in {where} are blank or "
        "hold line breaks or other control characters, which a label file "
        "cannot keep. Rename them.")


class _Walker:
  """Walks a data root safely: no loops, each real file once, no special files.

  Args:
    root: the data folder.
    follow_links: follow symlinks that lead outside `root` (off: report
      them).
  """

  def __init__(self, root, follow_links=False, kind="image"):
    self.root = os.path.realpath(root)
    self.follow_links = follow_links
    self.is_data_file = _KIND_FILES[kind]
    self.files = set()  # Real paths of the image files listed.
    self.ignored = []

  def _ignore(self, path, why):
    if (path, why) not in self.ignored:
      self.ignored.append((path, why))

  def _inside(self, real):
    return real == self.root or real.startswith(self.root + os.sep)

  def walk(self, top):
    """`os.walk(top, followlinks=True)` that enters each folder once.

    Yields:
      (dirpath, hidden_dirnames, filenames), in sorted order. Hidden
      folders, loops and (unless followed) links out of the root are not
      entered.
    """
    # The folders above `top`, up to the root: a link back to one of them
    # is a loop.
    seen = set()
    here = os.path.abspath(top)
    while True:
      try:
        st = os.stat(here)
      except OSError:
        return
      seen.add((st.st_dev, st.st_ino))
      if os.path.realpath(here) == self.root or here == os.path.dirname(here):
        break
      here = os.path.dirname(here)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
      keep, hidden = [], []
      for d in sorted(dirnames):
        full = os.path.join(dirpath, d)
        if is_hidden(d):
          hidden.append(d)
          continue
        try:
          dst = os.stat(full)
        except OSError:
          continue
        if (dst.st_dev, dst.st_ino) in seen:
          self._ignore(full, "symlink_loop")
          continue
        if (os.path.islink(full) and not self.follow_links and
            not self._inside(os.path.realpath(full))):
          self._ignore(full, "link_outside_tree")
          continue
        seen.add((dst.st_dev, dst.st_ino))
        keep.append(d)
      dirnames[:] = keep
      yield dirpath, hidden, sorted(filenames)

  def images(self, directory):
    """Sorted image paths below `directory`, each real file once."""
    if not self.follow_links and not self._inside(
        os.path.realpath(directory)):
      self._ignore(directory, "link_outside_tree")
      return []
    paths = []
    for dirpath, _, filenames in self.walk(directory):
      for name in filenames:
        if not self.is_data_file(name):
          continue
        path = os.path.join(dirpath, name)
        real = os.path.realpath(path)
        if not os.path.exists(real):
          paths.append(path)  # A broken link: the scan reports it.
          continue
        if not self.follow_links and not self._inside(real):
          self._ignore(path, "link_outside_tree")
        elif not stat.S_ISREG(os.stat(real).st_mode):
          self._ignore(path, "not_a_regular_file")
        elif real in self.files:
          self._ignore(path, "duplicate_file")
        else:
          self.files.add(real)
          paths.append(path)
    return paths


def _list_classes(directory):
  """Returns sorted visible sub-folder names of `directory`."""
  try:
    entries = sorted(os.scandir(directory), key=lambda e: e.name)
  except OSError as e:
    raise ImgrecError(f"Cannot read data folder {directory}: {e.strerror}. "
                      "Check the path and its permissions.") from e
  names = [e.name for e in entries if e.is_dir() and not is_hidden(e.name)]
  check_class_names(names, directory)
  return names


def list_ignored(root, used_paths=None, skip=()):
  """Lists what below `root` is not used as an image, and why.

  Hidden folders are listed once and not entered; loops are not followed.

  Args:
    root: the data folder.
    used_paths: if given, the image paths the splits use; other image files
      (loose in `root` or in a split folder) are listed as
      "outside_class_folders".
    skip: paths already reported otherwise.

  Returns:
    Sorted (path, why) pairs, why in "hidden", "not_image_extension",
    "outside_class_folders".
  """
  used = None if used_paths is None else set(used_paths)
  skip = set(skip)
  out = []
  for dirpath, hidden, filenames in _Walker(root, follow_links=True).walk(
      root):
    out.extend((os.path.join(dirpath, d), "hidden") for d in hidden)
    for name in filenames:
      path = os.path.join(dirpath, name)
      if path in skip:
        continue
      if is_hidden(name):
        out.append((path, "hidden"))
      elif not is_image_file(name):
        out.append((path, "not_image_extension"))
      elif used is not None and path not in used:
        out.append((path, "outside_class_folders"))
  return sorted(out)


def _read_class_tree(walker, directory):
  """Returns ({class: [paths]}) for a `directory/<class>/...` tree.

  Real class folders are read before linked ones, so a file reached twice
  counts for the folder that holds it, not for a link that sorts first.

  Raises:
    ImgrecError: a class folder is a link to (or into) another class's.
  """
  classes = _list_classes(directory)
  folders = {c: os.path.join(directory, c) for c in classes}
  reals = {c: os.path.realpath(f) for c, f in folders.items()}
  for c in classes:
    if not os.path.islink(folders[c]):
      continue
    for other in classes:
      if other != c and (reals[c] == reals[other] or reals[c].startswith(
          reals[other] + os.sep)):
        raise ImgrecError(
            f"Class folder {folders[c]} links to class {other!r} "
            f"({reals[c]}): its images are that class's already. Remove the "
            "link, or make it a folder of its own images.")
  order = sorted(classes, key=lambda c: os.path.islink(folders[c]))
  found = {c: walker.images(folders[c]) for c in order}
  return {c: found[c] for c in classes}


def stratified_split(labels, fractions, seed):
  """Splits indices per class, seeded, so each part keeps the class mix.

  Args:
    labels: sequence of integer labels.
    fractions: fractions of each class for parts 1..n; part 0 takes the rest.
    seed: integer seed; the same seed gives the same split.

  Returns:
    A list of len(fractions) + 1 sorted index lists.
  """
  by_class = {}
  for i, label in enumerate(labels):
    by_class.setdefault(label, []).append(i)
  parts = [[] for _ in range(len(fractions) + 1)]
  for label in sorted(by_class):
    idx = by_class[label]
    random.Random(f"{seed}-{label}").shuffle(idx)
    n = len(idx)
    start = 0
    for p, frac in enumerate(fractions, start=1):
      # Round, but keep at least one image for the training part.
      take = min(int(round(n * frac)), max(0, n - start - 1))
      parts[p].extend(idx[start:start + take])
      start += take
    parts[0].extend(idx[start:])
  return [sorted(p) for p in parts]


def _check_fraction(name, value):
  if not 0.0 <= value < 1.0:
    raise ImgrecError(f"--{name} must be in [0, 1). Received: {name}={value}")


def _check_root(root, val_split, test_split):
  """Refuses bad fractions and a root that is not a folder."""
  _check_fraction("val_split", val_split)
  _check_fraction("test_split", test_split)
  if val_split + test_split >= 1.0:
    raise ImgrecError("--val_split + --test_split must be below 1. Received: "
                      f"val_split={val_split}, test_split={test_split}")
  if not root or not os.path.exists(root):
    raise ImgrecError(f"Data folder {root!r} does not exist. Pass --data_dir "
                      "pointing at root/<class>/<images> or "
                      "root/{train,val,test}/<class>/<images>.")
  if not os.path.isdir(root):
    raise ImgrecError(f"--data_dir {root!r} is a file, not a folder.")


def _read_trees(walker, root):
  """(layout, {split: {class: [paths]}}, the folder of the training classes)."""
  split_dirs = {SPLIT_DIR_NAMES[d.lower()]: d for d in _list_classes(root)
                if d.lower() in SPLIT_DIR_NAMES}
  if not split_dirs:
    return "classes", {"train": _read_class_tree(walker, root)}, root
  if "train" not in split_dirs:
    raise ImgrecError(f"{root} has split folders {sorted(split_dirs.values())} "
                      "but no 'train' folder. Add root/train/<class>/.")
  trees = {s: _read_class_tree(walker, os.path.join(root, d))
           for s, d in split_dirs.items()}
  return "splits", trees, os.path.join(root, split_dirs["train"])


def _train_classes(walker, train_tree, root, where, kind, min_classes):
  """The sorted class names of the training tree; refuses empty classes."""
  what = "images" if kind == "image" else "videos"
  if not train_tree:
    loose = _Walker(root, kind=kind).images(root)
    hint = (f" It holds {len(loose)} {what} but no class folders: put them "
            "in root/<class>/." if loose else "")
    raise ImgrecError(f"No class folders found in {where}.{hint} Expected "
                      "root/<class>/<images> or root/train/<class>/<images>.")
  empty = sorted(c for c, p in train_tree.items() if not p)
  if empty:
    outside = {os.path.basename(p) for p, why in walker.ignored
               if why == "link_outside_tree"}
    hint = (" Some are links out of the data folder: pass --allow_outside "
            "to use them." if outside & set(empty) else "")
    raise ImgrecError(f"Class folder(s) with no {what} in {where}: "
                      f"{', '.join(empty)}. Add images or remove the "
                      f"folder(s).{hint}")
  class_names = sorted(train_tree)
  if len(class_names) < min_classes:
    raise ImgrecError(f"Found only {len(class_names)} class in {where} "
                      f"({class_names[0]!r}); a classifier needs at least "
                      f"{min_classes}. Add a folder per class.")
  return class_names


def _split_of(tree, class_names, split, root):
  """The Split of one {class: [paths]} tree, labels by `class_names`."""
  unknown = sorted(set(tree) - set(class_names))
  if unknown:
    raise ImgrecError(f"Split '{split}' of {root} has classes the train split "
                      f"lacks: {', '.join(unknown)}. Every class needs "
                      "training images.")
  paths, labels = [], []
  for label, c in enumerate(class_names):
    found = tree.get(c, [])
    paths += found
    labels += [label] * len(found)
  return Split(paths, labels)


def find_images(root, *, val_split=0.1, test_split=0.1, seed=0,
                min_classes=2, carve=True, allow_outside=False, kind="image"):
  """Resolves an image folder into class names and train/val/test splits.

  Args:
    root: the data folder, in one of the two layouts of this module.
    val_split: fraction of each class held out for validation when the folder
      has no `val` split.
    test_split: fraction of each class held out for testing when the folder
      has no `test` split.
    seed: seed of the split; the same seed gives the same split.
    min_classes: fewer classes than this is an error.
    carve: carve missing val/test splits out of train now. With False, they
      are left out, to be carved by `carve_splits` (after validating files).
    allow_outside: follow symlinks that lead out of `root`.
    kind: "image", or "video" to list video clips instead.

  Returns:
    An `ImageFolder`.

  Raises:
    ImgrecError: the folder is missing or empty, has too few classes, a class
      has no images, or a split holds a class the train split lacks.
  """
  _check_root(root, val_split, test_split)
  root = os.path.abspath(root)
  walker = _Walker(root, allow_outside, kind)
  layout, trees, where = _read_trees(walker, root)
  class_names = _train_classes(walker, trees["train"], root, where, kind,
                               min_classes)
  splits = {split: _split_of(tree, class_names, split, root)
            for split, tree in trees.items()}
  found = ImageFolder(root=root, class_names=class_names, splits=splits,
                      layout=layout, ignored=sorted(walker.ignored))
  return carve_splits(found, val_split, test_split, seed) if carve else found


def carve_splits(found, val_split, test_split, seed):
  """Carves the missing val/test splits out of train, seeded and stratified.

  Args:
    found: an ImageFolder whose `splits` may lack "val" and/or "test".
    val_split: fraction of each class for "val", if missing.
    test_split: fraction of each class for "test", if missing.
    seed: split seed.

  Returns:
    A new ImageFolder with all of SPLITS.
  """
  splits = {s: sp for s, sp in found.splits.items() if len(sp) or s == "train"}
  carve = [(s, f) for s, f in (("val", val_split), ("test", test_split))
           if s not in splits]
  if carve:
    train = splits["train"]
    parts = stratified_split(train.labels, [f for _, f in carve], seed)
    def take(idx):
      pick = lambda values: (None if values is None else
                             [values[i] for i in idx])
      return Split(pick(train.paths), pick(train.labels),
                   pick(train.pixel_rows), pick(train.shorter_sides))
    splits["train"] = take(parts[0])
    for (s, _), idx in zip(carve, parts[1:]):
      splits[s] = take(idx)
  return dataclasses.replace(found, splits={s: splits[s] for s in SPLITS})


def expand_image_paths(args, kind="image"):
  """Files and folders (searched recursively for images) -> image file paths.

  Args:
    args: files and folders.
    kind: "image", or "video" to search folders for videos.

  Raises:
    ImgrecError: an argument does not exist, or no image file was found.
  """
  paths = []
  for arg in args:
    if os.path.isdir(arg):
      paths += _Walker(arg, follow_links=True, kind=kind).images(arg)
    elif os.path.isfile(arg):
      paths.append(arg)
    else:
      raise ImgrecError(f"{arg} does not exist.")
  if not paths:
    raise ImgrecError(f"No {'image' if kind == 'image' else 'video'} files "
                      "found in the given arguments.")
  return paths


def read_exclude(path):
  """The paths of an exclusion list (`imgrec-audit`'s exclude.txt): one a
  line, blank lines and lines starting with # left out; each resolved
  (links followed) so that any name of a file excludes it.

  Raises:
    ImgrecError: the list cannot be read.
  """
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise ImgrecError(f"Cannot read --exclude={path}: "
                      f"{getattr(e, 'strerror', None) or e}. Pass a text "
                      "file of image paths, one a line.") from None
  return {os.path.realpath(line.strip()) for line in lines
          if line.strip() and not line.lstrip().startswith("#")}


def exclude(found, excluded, why="excluded", splits=None):
  """`found` without the files whose resolved path is in `excluded` (in
  `splits` only, if given); each one left out is listed in `ignored` as
  (path, `why`)."""
  if not excluded:
    return found
  only = splits
  splits, ignored = {}, list(found.ignored)
  for name, split in found.splits.items():
    keep = []
    for i, path in enumerate(split.paths):
      if (only is None or name in only) and os.path.realpath(
          path) in excluded:
        ignored.append((path, why))
      else:
        keep.append(i)
    pick = lambda values: (None if values is None else  # pylint: disable=cell-var-from-loop
                           [values[i] for i in keep])  # pylint: disable=cell-var-from-loop
    splits[name] = Split(pick(split.paths), pick(split.labels),
                         pick(split.pixel_rows), pick(split.shorter_sides))
  return dataclasses.replace(found, splits=splits, ignored=ignored)
