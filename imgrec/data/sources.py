"""Reads image lists that are not class folders: a labels CSV, a TFDS dataset.

Both give an `ImageFolder`, like `folder.find_images(..., carve=False)`: the
splits the source names (always `train`), to be scanned with
`scan.scan_folder` and completed with `folder.carve_splits`.

* `read_labels_csv`: a CSV with `path,label` columns and an optional `split`
  column. Listed files that do not exist are skipped and kept in the folder's
  `missing` list (`add_missing_to_report` puts them in a scan report).
* `load_tfds`: a TensorFlow Datasets dataset already prepared in a local data
  folder. Its images are exported once as files to a cache folder, since the
  rest of imgrec reads image files.
"""

import csv
import dataclasses
import json
import logging
import os
import re
import time

from imgrec import fileio
from imgrec.data import decode
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError

logger = logging.getLogger(__name__)

CSV_SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val",
                   "test": "test"}
MISSING_REASON = "missing"
OUTSIDE_REASON = "outside_csv_folder"
# Bump when the exported files or the marker change, so old exports are redone.
TFDS_EXPORT_VERSION = 1
TFDS_MARKER = ".imgrec_export.json"
_MAX_LISTED = 10


@dataclasses.dataclass
class ListedImageFolder(folder_lib.ImageFolder):
  """An ImageFolder read from a list of files.

  Attributes:
    missing: the listed files that do not exist, left out of `splits`: dicts
      with the keys of a scan report's "skipped" entries (path, split, class,
      reason="missing", detail).
  """
  missing: list = dataclasses.field(default_factory=list)


def listing(items, count=None):
  """Joins up to _MAX_LISTED items, saying how many more there are."""
  count = len(items) if count is None else count
  text = "; ".join(str(i) for i in items[:_MAX_LISTED])
  if count > _MAX_LISTED:
    text += f"; ... and {count - _MAX_LISTED} more"
  return text


# --- Labels CSV --------------------------------------------------------------


def _csv_columns(header, csv_path, required=("path", "label")):
  """The header's column names, lower case; refuses a header without the
  `required` columns or naming a column twice."""
  expected = ",".join(required)
  if header is None:
    raise ImgrecError(f"Labels CSV {csv_path} is empty. Write a header "
                      f"line `{expected}` and one row per image.")
  columns = [c.strip().lower() for c in header]
  dupes = sorted({c for c in columns if c and columns.count(c) > 1})
  if dupes:
    raise ImgrecError(f"Labels CSV {csv_path} line 1: column(s) "
                      f"{', '.join(dupes)} appear twice in the header "
                      f"{header!r}. Keep one of each.")
  missing = [c for c in required if c not in columns]
  if missing:
    raise ImgrecError(
        f"Labels CSV {csv_path} line 1: no {' or '.join(missing)} "
        f"column. Found the header {header!r}; expected `{expected}` "
        "(and optionally `split`) as the first line.")
  return columns


def _csv_read_error(e, csv_path, line):
  """The ImgrecError that says why reading a labels CSV failed."""
  if isinstance(e, FileNotFoundError):
    return ImgrecError(f"Labels CSV {csv_path} does not exist. Pass "
                       "--labels_csv pointing at a CSV file with `path,label` "
                       "columns.")
  if isinstance(e, IsADirectoryError):
    return ImgrecError(f"--labels_csv {csv_path} is a folder, not a CSV "
                       "file. For class folders pass --data_dir instead.")
  if isinstance(e, OSError):
    return ImgrecError(f"Cannot read labels CSV {csv_path}: "
                       f"{e.strerror or e}.")
  if isinstance(e, UnicodeDecodeError):
    return ImgrecError(f"Labels CSV {csv_path} is not UTF-8 text ({e.reason} "
                       f"at byte {e.start}). Save it as UTF-8.")
  return ImgrecError(f"Labels CSV {csv_path} line {line} is not valid CSV: "
                     f"{e}.")


def read_csv_rows(csv_path, required=("path", "label")):
  """Returns (columns, [(line, {column: value})]) of a UTF-8 CSV whose
  header names the `required` columns."""
  reader = None
  try:
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
      reader = csv.reader(f, strict=True)
      columns = _csv_columns(next(reader, None), csv_path, required)
      rows = []
      for values in reader:
        if not any(v.strip() for v in values):
          continue
        if any(v.strip() for v in values[len(columns):]):
          raise ImgrecError(
              f"{csv_path}, line {reader.line_num}: {len(values)} cells "
              f"under a header of {len(columns)}; a cell holding a comma "
              'must be quoted ("red,green").')
        # Short rows leave the last columns empty; they are checked later.
        rows.append((reader.line_num,
                     {c: (values[i].strip() if i < len(values) else "")
                      for i, c in enumerate(columns)}))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise _csv_read_error(e, csv_path,
                          reader.line_num if reader else 0) from e
  return columns, rows


def _outside(path, base):
  real, base = os.path.realpath(path), os.path.realpath(base)
  return not (real == base or real.startswith(base + os.sep))


def csv_split(row, has_split):
  """The imgrec split a CSV row names; raises ValueError saying why not."""
  if not has_split:
    return "train"
  if not row["split"]:
    raise ValueError(f"empty split for {row['path']!r}")
  split = CSV_SPLIT_NAMES.get(row["split"].lower())
  if split is None:
    raise ValueError(f"unknown split {row['split']!r} (expected train, val, "
                     "validation or test)")
  return split


def _single_label(row):
  if not row["label"]:
    raise ValueError(f"empty label for {row['path']!r}")
  return row["label"]


def csv_entries(csv_path, rows, has_split, label_of=_single_label,
                usage="every row needs a path and a label"):
  """[(line, absolute path, label, split)] of the rows; refuses bad rows.

  Args:
    csv_path: the CSV (relative paths are relative to its folder).
    rows: `read_csv_rows`' rows.
    has_split: the CSV has a split column (else every row is "train").
    label_of: `fn(row)` -> the row's label(s), raising ValueError to say why
      a row's labels are bad.
    usage: what a row needs, for the message.
  """
  base = os.path.dirname(csv_path)
  problems, entries, first_line = [], [], {}
  for line, row in rows:
    path = row["path"]
    try:
      if not path:
        raise ValueError("empty path")
      label = label_of(row)
      split = csv_split(row, has_split)
      full = os.path.normpath(os.path.join(base, os.path.expanduser(path)))
      if full in first_line:
        raise ValueError(f"{path!r} is already listed on line "
                         f"{first_line[full]}")
    except ValueError as e:
      problems.append(f"line {line}: {e}")
      continue
    first_line[full] = line
    entries.append((line, full, label, split))
  if problems:
    raise ImgrecError(f"Labels CSV {csv_path} has {len(problems)} bad "
                      f"row(s): {listing(problems)}. Fix or remove them; "
                      f"{usage}, and a file may be listed once.")
  if not entries:
    raise ImgrecError(f"Labels CSV {csv_path} has a header but no rows. Add "
                      "one row per image.")
  return entries


def _csv_class_names(csv_path, entries, min_classes):
  """The distinct labels, sorted as strings; refuses too few or bad names."""
  class_names = sorted({label for _, _, label, _ in entries})
  folder_lib.check_class_names(class_names, csv_path)
  if len(class_names) < min_classes:
    raise ImgrecError(
        f"Labels CSV {csv_path} has only {len(class_names)} class "
        f"({', '.join(repr(c) for c in class_names)}); a classifier needs at "
        f"least {min_classes}. Check the label column.")
  return class_names


def unusable(full, base, allow_outside):
  """(reason, why) a listed file cannot be used, or (reason, None)."""
  if not allow_outside and _outside(full, base):
    return OUTSIDE_REASON, ("is outside the CSV's folder (pass "
                            "--allow_outside to use such files)")
  if os.path.isdir(full):
    return MISSING_REASON, "is a folder, not a file"
  if not os.path.exists(full):
    return MISSING_REASON, "does not exist"
  if not os.path.isfile(full):
    return MISSING_REASON, "is not a regular file (a FIFO, socket or device)"
  return MISSING_REASON, None


def _csv_splits(csv_path, entries, class_names, allow_outside):
  """({split: Split} of the usable files, [missing entries])."""
  base = os.path.dirname(csv_path)
  index = {c: i for i, c in enumerate(class_names)}
  splits, missing = {}, []
  for line, full, label, split in entries:
    reason, why = unusable(full, base, allow_outside)
    if why:
      missing.append({"path": full, "split": split, "class": label,
                      "reason": reason,
                      "detail": f"listed on line {line} of {csv_path} but "
                                f"{why}"})
      continue
    part = splits.setdefault(split, folder_lib.Split([], []))
    part.paths.append(full)
    part.labels.append(index[label])
  if missing:
    logger.warning("%d file(s) listed in %s do not exist and are skipped: %s",
                   len(missing), csv_path,
                   listing([m["path"] for m in missing]))
  splits.setdefault("train", folder_lib.Split([], []))
  return splits, missing


def _check_training_files(csv_path, entries, class_names, train, missing):
  """Refuses a CSV that leaves a class without an existing training file."""
  with_train = {class_names[l] for l in train.labels}
  lacking = [c for c in class_names if c not in with_train]
  if not lacking:
    return
  listed = sum(1 for _, _, label, split in entries
               if split == "train" and label in lacking)
  gone = sum(1 for m in missing if m["split"] == "train"
             and m["class"] in lacking)
  raise ImgrecError(
      f"Labels CSV {csv_path}: class(es) {', '.join(map(repr, lacking))} "
      f"have no existing training file ({listed} listed for training, "
      f"{gone} of them missing). Every class needs training images: fix "
      "the paths or add train rows.")


def read_labels_csv(csv_path, *, min_classes=2, allow_outside=False):
  """Reads images and labels listed in a CSV file.

  The first line is a header naming the columns `path` and `label` (any
  order, any case; other columns are ignored). An optional `split` column
  puts each row in `train`, `val` (or `validation`) or `test`. Relative paths
  are relative to the CSV's folder; absolute paths are used as they are. Any
  extension is accepted: `scan.scan_folder` checks the content. The file may
  start with a byte order mark (as Excel writes it).

  Class names are the distinct labels, sorted as strings (so "10" comes
  before "2"), and the label indices follow that order, as for class folders.

  A listed file that does not exist (or is a folder, or not a regular file)
  is not an error: it is left out of the splits, logged, and kept in the
  returned folder's `missing` list with reason "missing"; so is a file
  outside the CSV's folder (reason "outside_csv_folder") unless
  `allow_outside`. It is an error only if a class is left without any
  training file.

  Args:
    csv_path: the CSV file.
    min_classes: fewer classes than this is an error.
    allow_outside: use files outside the CSV's folder (`../x.png`,
      `/elsewhere/y.png`, or links leading there).

  Returns:
    A `ListedImageFolder` whose root is the CSV's folder, layout "csv", with
    the `train` split and the `val`/`test` splits the CSV names (pass it to
    `folder.carve_splits` for the others).

  Raises:
    ImgrecError: the file is missing or not a UTF-8 CSV; it lacks the `path`
      or `label` column; a row has an empty path or label or an unknown
      split; a file is listed twice; a class has no existing training file;
      or there are fewer than `min_classes` classes.
  """
  if not csv_path:
    raise ImgrecError("No labels CSV given. Pass --labels_csv=<file.csv>.")
  csv_path = os.path.abspath(os.path.expanduser(csv_path))
  columns, rows = read_csv_rows(csv_path)
  entries = csv_entries(csv_path, rows, "split" in columns)
  class_names = _csv_class_names(csv_path, entries, min_classes)
  splits, missing = _csv_splits(csv_path, entries, class_names,
                                allow_outside)
  _check_training_files(csv_path, entries, class_names, splits["train"],
                        missing)
  ordered = {s: splits[s] for s in folder_lib.SPLITS if s in splits}
  return ListedImageFolder(root=os.path.dirname(csv_path),
                           class_names=class_names, splits=ordered,
                           layout="csv", missing=missing)


def default_tfds_data_dir():
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets (where `tfds build` writes)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), "tensorflow_datasets")


def default_tfds_cache_dir():
  """<imgrec cache home>/tfds: where TFDS splits are exported as files."""
  return fileio.cache_home("tfds")


def _import_tfds():
  decode.import_tensorflow()  # Quietly, before TFDS imports it loudly.
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImgrecError("--tfds needs the tensorflow-datasets package: pip "
                      "install tensorflow-datasets.") from e
  return tfds


def _prepared_names(data_dir):
  """Sub-folders of a TFDS data folder that look like datasets."""
  try:
    return sorted(e.name for e in os.scandir(data_dir)
                  if e.is_dir() and not e.name.startswith(".")
                  and e.name not in ("downloads", "manual"))
  except OSError:
    return []


def _versions(data_dir, name):
  """Version folders of dataset `name` (and its configs) in `data_dir`."""
  base = os.path.join(data_dir, name.split(":")[0])
  found = []
  for dirpath, dirnames, _ in os.walk(base):
    dirnames[:] = [d for d in dirnames if not d.startswith(("incomplete", "."))]
    if re.fullmatch(r"\d+\.\d+\.\d+", os.path.basename(dirpath)):
      found.append(os.path.relpath(dirpath, data_dir))
      dirnames[:] = []
  return sorted(found)


def _tfds_builder(tfds, name, data_dir):
  """Returns the builder of a prepared dataset, or raises ImgrecError."""
  build = (f"On a machine with internet run `tfds build {name} "
           f"--data_dir={data_dir}`, then copy that folder here (or pass "
           "--tfds_data_dir pointing at a folder holding "
           f"{name.split(':')[0]}/<version>/). imgrec never downloads.")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except ValueError as e:
    # DatasetNotFoundError lists every registered dataset: keep the first line.
    first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    present = _prepared_names(data_dir)
    here = (f"Datasets in {data_dir}: {', '.join(present)}." if present
            else f"{data_dir} holds no prepared dataset.")
    raise ImgrecError(f"Cannot open TFDS dataset {name!r}: {first} {here} "
                      f"{build}") from e
  if not builder.is_prepared():
    versions = _versions(data_dir, name)
    found = (f" Found {', '.join(versions)}: pass --tfds=NAME:VERSION to use "
             "one of them." if versions else "")
    raise ImgrecError(f"TFDS dataset {name!r} (version {builder.version}) is "
                      f"not prepared in {data_dir}.{found} {build}")
  return builder


def _resolve_splits(available, split_names, name):
  """Returns {imgrec split: TFDS split expression}."""
  if split_names is None:
    mapping = {"train": "train"}
    for split, candidates in (("val", ("validation", "val", "valid", "dev")),
                              ("test", ("test",))):
      chosen = next((c for c in candidates if c in available), None)
      if chosen:
        mapping[split] = chosen
  else:
    mapping = dict(split_names)
    unknown = sorted(set(mapping) - set(folder_lib.SPLITS))
    if unknown:
      raise ImgrecError(f"split_names keys must be among {folder_lib.SPLITS}. "
                        f"Received: split_names={split_names!r}")
  if "train" not in mapping:
    raise ImgrecError(f"split_names needs a 'train' entry. Received: "
                      f"split_names={split_names!r}")
  for expression in mapping.values():
    for part in str(expression).split("+"):
      base = part.split("[")[0].strip()
      if base not in available:
        raise ImgrecError(
            f"TFDS dataset {name!r} has no split {base!r}; it has "
            f"{', '.join(sorted(available))}. Map imgrec's train/val/test to "
            "them with split_names, e.g. {'train': 'train[:90%]', "
            "'val': 'train[90%:]'}.")
  return mapping


def _safe_dir_names(class_names):
  """Folder names for the classes: the name when it is a plain file name."""
  out = []
  for i, name in enumerate(class_names):
    plain = (name and len(name) <= 100 and name not in (".", "..")
             and not folder_lib.is_hidden(name)
             and not re.search(r"[/\\\x00-\x1f:*?\"<>|]", name))
    out.append(name if plain else f"class_{i}")
  if len(set(out)) < len(out):
    out = [f"{i}_{n}" for i, n in enumerate(out)]
  return out


def _read_marker(split_dir, key):
  """Returns the manifest of a complete export made with `key`, else None."""
  try:
    with open(os.path.join(split_dir, TFDS_MARKER), encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(data, dict) or data.get("key") != key:
    return None
  return data


def _export_split(tfds, builder, expression, split_dir, key, dir_names,
                  image_key, label_key):
  """Writes the images of one TFDS split as files; returns the manifest."""
  # Written aside and renamed into place when complete, so an interrupted or
  # concurrent export never leaves a half-written split that looks complete.
  with fileio.atomic_dir(split_dir) as tmp:
    for d in dir_names:
      os.makedirs(os.path.join(tmp, d))
    try:
      count = builder.info.splits[expression].num_examples
    except (KeyError, ValueError):
      count = 0
    width = max(5, len(str(max(count - 1, 0))))
    ds = builder.as_dataset(split=expression, shuffle_files=False,
                            decoders={image_key: tfds.decode.SkipDecoding()})
    files, labels = [], []
    unlabeled = 0
    for index, example in enumerate(ds.as_numpy_iterator()):
      if key.get("label_sets"):  # A list of class indices; empty is legal.
        label, folder = sorted({int(l) for l in example[label_key]}), 0
      else:
        label = folder = int(example[label_key])
        if label < 0:  # ClassLabel's "no label".
          unlabeled += 1
          continue
      data = example[image_key]
      # TFDS stores images as PNG or JPEG: keep the bytes, so JPEGs are not
      # re-encoded.
      ext = ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png"
      rel = os.path.join(dir_names[folder], f"{index:0{width}d}{ext}")
      with open(os.path.join(tmp, rel), "wb") as f:
        f.write(data)
      files.append(rel)
      labels.append(label)
    manifest = {"key": key, "files": files, "labels": labels,
                "unlabeled": unlabeled}
    with open(os.path.join(tmp, TFDS_MARKER), "w", encoding="utf-8") as f:
      json.dump(manifest, f)
  return manifest


def _check_tfds_training_classes(name, expression, class_names, labels,
                                 label_sets):
  """Refuses a train split without an example of every class."""
  present = {i for label in labels for i in (label if label_sets else
                                             [label])}
  lacking = [c for i, c in enumerate(class_names) if i not in present]
  if lacking:
    raise ImgrecError(
        f"TFDS dataset {name!r}, split {expression!r}: class(es) "
        f"{listing([repr(c) for c in lacking])} have no training example. "
        "Pick a train split holding every class with split_names.")


def _tfds_labels(tfds, features, name, image_key, label_key):
  """(the label feature's key, class names, whether labels are sets) of a
  TFDS dataset's features; refuses missing or other features.

  `label_key` None: "label" when the dataset has it, else its only feature
  of class labels (a ClassLabel, or a Sequence of one).
  """
  if label_key is None:
    labelled = [k for k in features.keys() if isinstance(
        features[k], tfds.features.ClassLabel) or (isinstance(
            features[k], tfds.features.Sequence) and isinstance(
                features[k].feature, tfds.features.ClassLabel))]
    label_key = ("label" if "label" in features.keys() or len(labelled) != 1
                 else labelled[0])

  def feature(key, kind, what):
    found = features[key] if key in features.keys() else None
    if not isinstance(found, kind):
      kinds = kind if isinstance(kind, tuple) else (kind,)
      raise ImgrecError(
          f"TFDS dataset {name!r} has no {what} feature {key!r} (its "
          f"features: {', '.join(sorted(features.keys()))}). Pass the "
          "feature's name, a "
          f"{' or '.join(f'tfds.features.{k.__name__}' for k in kinds)}.")
    return found

  feature(image_key, tfds.features.Image, "image")
  label_feature = feature(label_key, (tfds.features.ClassLabel,
                                      tfds.features.Sequence), "class label")
  label_sets = isinstance(label_feature, tfds.features.Sequence)
  if label_sets:
    label_feature = label_feature.feature
    if not isinstance(label_feature, tfds.features.ClassLabel):
      raise ImgrecError(f"TFDS dataset {name!r}: {label_key!r} is a sequence "
                        "of something other than class labels; imgrec reads "
                        "a ClassLabel or a Sequence of ClassLabel.")
  class_names = list(label_feature.names)
  folder_lib.check_class_names(class_names, f"TFDS dataset {name!r}")
  if len(class_names) < 2:
    raise ImgrecError(f"TFDS dataset {name!r} has {len(class_names)} class "
                      f"in {label_key!r}; a classifier needs at least 2.")
  return label_key, class_names, label_sets


def load_tfds(name, data_dir=None, *, split_names=None, image_key="image",
              label_key=None, cache_dir=None):
  """Exports a locally prepared TFDS dataset to image files and lists them.

  The dataset must already be prepared in `data_dir` (`tfds build NAME
  --data_dir=DIR` on a machine with internet, then copy DIR): nothing is
  downloaded. Each split is exported once, in TFDS order, to
  `<cache_dir>/<name>[/<config>]/<version>/<split>/<class>/<index>.png`
  (`.jpg` for datasets stored as JPEG: the stored bytes are written as they
  are) and reused while its marker file matches the dataset and options.

  Args:
    name: a TFDS name, e.g. "mnist", "imagenette/320px" or "mnist:3.0.1".
    data_dir: the TFDS data folder. Default: `default_tfds_data_dir()`.
    split_names: {imgrec split: TFDS split expression}, e.g. {"train":
      "train[:90%]", "val": "train[90%:]", "test": "test"}. Default: train,
      validation (or val) and test, those the dataset has.
    image_key: the image feature (a `tfds.features.Image`).
    label_key: the label feature (default: "label", else the dataset's
      only feature of class labels): a `tfds.features.ClassLabel` (one class
      an image; examples labelled -1, no label, are left out), or a
      `tfds.features.Sequence` of one (label sets, for multi-label runs: the
      splits' labels are then lists of class indices, an empty list a
      background image). Its names are the class names.
    cache_dir: where exported files go. Default: `default_tfds_cache_dir()`.

  Returns:
    An `ImageFolder` with layout "tfds" over the exported files, with the
    `train` split and the `val`/`test` splits the dataset has (pass it to
    `folder.carve_splits` for the others).

  Raises:
    ImgrecError: tensorflow-datasets is not installed; the dataset is unknown
      or not prepared in `data_dir`; the features or splits are not there; a
      class has no training example.
  """
  tfds = _import_tfds()
  if not name:
    raise ImgrecError("No TFDS dataset name given. Pass --tfds=NAME, e.g. "
                      "--tfds=mnist.")
  data_dir = os.path.abspath(os.path.expanduser(
      data_dir or default_tfds_data_dir()))
  if not os.path.isdir(data_dir):
    raise ImgrecError(
        f"TFDS data folder {data_dir} does not exist. Pass --tfds_data_dir "
        f"pointing at the folder where `tfds build {name}` wrote the "
        "dataset (default ~/tensorflow_datasets).")
  builder = _tfds_builder(tfds, name, data_dir)
  label_key, class_names, label_sets = _tfds_labels(
      tfds, builder.info.features, name, image_key, label_key)
  mapping = _resolve_splits(set(builder.info.splits.keys()), split_names,
                            name)

  root = os.path.join(os.path.abspath(cache_dir or default_tfds_cache_dir()),
                      *builder.info.full_name.split("/"))
  # Label sets have no class folders: their files go to one folder.
  dir_names = ["images"] if label_sets else _safe_dir_names(class_names)
  splits = {}
  for split in folder_lib.SPLITS:
    if split not in mapping:
      continue
    key = {"export_version": TFDS_EXPORT_VERSION,
           "dataset": builder.info.full_name,
           "data_dir": builder.data_dir, "tfds_split": mapping[split],
           "image_key": image_key, "label_key": label_key,
           "class_names": class_names, "dir_names": dir_names}
    if label_sets:  # (Single-label markers of earlier exports still match.)
      key["label_sets"] = True
    split_dir = os.path.join(root, split)
    manifest = _read_marker(split_dir, key)
    if manifest is None:
      start = time.monotonic()
      logger.info("exporting TFDS %s split %r to %s (once)",
                  builder.info.full_name, mapping[split], split_dir)
      manifest = _export_split(tfds, builder, mapping[split], split_dir, key,
                               dir_names, image_key, label_key)
      logger.info("exported %d images in %.1f s", len(manifest["files"]),
                  time.monotonic() - start)
    if manifest["unlabeled"]:
      logger.warning("TFDS %s split %r: left out %d examples without a "
                     "label", name, mapping[split], manifest["unlabeled"])
    if manifest["files"] or split == "train":
      splits[split] = folder_lib.Split(
          [os.path.join(split_dir, f) for f in manifest["files"]],
          list(manifest["labels"]))

  _check_tfds_training_classes(name, mapping["train"], class_names,
                               splits["train"].labels, label_sets)
  return folder_lib.ImageFolder(root=root, class_names=class_names,
                                splits=splits, layout="tfds")
