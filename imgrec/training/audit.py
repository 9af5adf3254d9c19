"""imgrec-audit: what is wrong with the data itself.

    imgrec-audit --data_dir=photos [--out=audit/] [--parts=duplicates,...]

Three parts, each optional (`--parts`):

* duplicates (no model): exact copies (the same decoded pixels) and near
  ones (resized, re-encoded, cropped by a few percent, brighter or darker),
  grouped, with their classes and splits: a group across splits is
  leakage, across classes a conflicting label (`imgrec.data.audit`).
* labels: images whose given label their out-of-sample probabilities
  doubt (confident learning, ranked by cleanlab), from `--folds` models
  trained with imgrec's own recipe, each judging the images it did not
  train on (or a finished run's held-out images, `--model_dir`).
* outliers: images far from every class's prototype in those models'
  embedding space.

The audit writes into its own folder (`--out`, default `audit/` in the
scan's prepared folder), never into the data: audit.json, audit.html,
exclude.txt (paths `imgrec-train --exclude` takes: the label issues and
the copies that leak into a later split) and relabel.csv (path,label,split
rows of the data with the suggested labels, for `--labels_csv` after
review). The folder is imgrec's like a run's: locked while written,
refused when it holds anything else.
"""

import collections
import csv
import dataclasses
import io
import json
import os
import time

import numpy as np

from imgrec import fileio
from imgrec.config import AuditConfig
from imgrec.data import folder as folder_lib
from imgrec.data import scan
from imgrec.data.audit import report as audit_report
from imgrec.data.audit import search
from imgrec.errors import ImgrecError
from imgrec.evaluation import audit_html
from imgrec.run_folder import AUDIT_COMMAND
from imgrec.run_folder import AuditFolder
from imgrec.tasks import data as data_lib
from imgrec.tasks import multilabel as multilabel_task


def _data_roots(found, config):
  """The folders that are the data's: its root, the labels CSV's folder,
  and each listed image's folder and the folder above it (class folders
  and the folder holding them)."""
  roots = {found.root} if found.root else set()
  if config.labels_csv:
    roots.add(os.path.dirname(os.path.abspath(config.labels_csv)))
  folders = {os.path.dirname(os.path.abspath(p))
             for split in found.splits.values() for p in split.paths}
  return sorted(roots | folders | {os.path.dirname(f) for f in folders})


def _check_places(out, prepared_dir, found, config):
  """Refuses an --out or --prepared_dir inside the data, and a
  --prepared_dir that is not a folder, before anything is written."""
  for root in _data_roots(found, config):
    if not os.path.isdir(root):
      continue
    for flag, path in (("--out", out.path), ("--prepared_dir", prepared_dir)):
      if fileio.is_inside(path, root):
        raise ImgrecError(f"{flag}={path} is inside the data ({root}): the "
                          "audit never writes into the data. Pass a folder "
                          "outside it.")
  if os.path.exists(prepared_dir) and not os.path.isdir(prepared_dir):
    raise ImgrecError(f"--prepared_dir={prepared_dir} is not a folder. Pass "
                      "a folder (new, or the scan's own).")
  if os.path.islink(out.folds_dir):
    raise ImgrecError(f"--out={out.path}: {out.folds_dir} is a link; the "
                      "audit trains its folds only in a folder of its own. "
                      "Pass another --out.")



def _check_outputs(out):
  """Refuses an --out whose audit.json, audit.html, exclude.txt or
  relabel.csv is not as the last audit wrote it (edited after review, or
  put there by the user): a rerun would replace it."""
  try:
    with open(out.outputs_record_path, encoding="utf-8") as f:
      written = json.load(f)
  except (OSError, ValueError):
    written = {}
  if not isinstance(written, dict):
    written = {}
  for path in out.outputs():
    if not os.path.lexists(path):
      continue
    name = os.path.basename(path)
    if os.path.islink(path) or not os.path.isfile(path) or (
        written.get(name) != fileio.digest(path)):
      raise ImgrecError(f"--out={out.path}: {name} is not as imgrec-audit "
                        "wrote it (changed since, or not imgrec's); a new "
                        "audit would replace it. Move it out of the folder "
                        "(or pass another --out).")


def _write_outputs(out, texts):
  """Writes {path: text} and removes the last audit's outputs this one did
  not write (checked unchanged by `_check_outputs`); then records what it
  wrote."""
  for path, text in texts.items():
    fileio.write_text(path, text)
  for path in out.outputs():
    if path not in texts and os.path.isfile(path):
      os.remove(path)
  fileio.write_json(out.outputs_record_path, {
      os.path.basename(path): fileio.digest(path) for path in texts}, indent=1)


def _check_folds(found, config):
  """Refuses --folds larger than the smallest class (a fold with no image
  of a class judges nothing and trains in vain)."""
  counts, _ = _class_counts(found)
  names = list(found.class_names)
  smallest = min(range(len(names)), key=lambda i: counts.get(i, 0))
  have = counts.get(smallest, 0)
  if have < config.folds:
    raise ImgrecError(
        f"--folds={config.folds} needs {config.folds} images of every class "
        f"(each fold holds some of each); {names[smallest]!r} has {have}. "
        f"Pass --folds={max(2, have)} or fewer" + (
            "" if have >= 2 else ", after adding images of that class") + ".")


def is_multilabel(config):
  """Whether the audit reads label sets (`--task`; auto: the built-in
  multi-label set)."""
  if config.task != "auto":
    return config.task == "multilabel"
  if config.data_dir or config.labels_csv or config.tfds:
    return False
  from imgrec import datasets  # pylint: disable=g-import-not-at-top
  return datasets.BUILTIN_TASKS.get(config.dataset) == (
      "multilabel_classification")


def _find_label_sets(config):
  """The ImageFolder of a multi-label source (labels: 0/1 rows), less
  --exclude's files, and how many listed files are missing."""
  from imgrec.data import multilabel as multilabel_data  # pylint: disable=g-import-not-at-top
  from imgrec.data import sources  # pylint: disable=g-import-not-at-top
  if config.data_dir:
    raise ImgrecError("--task=multilabel reads --labels_csv=FILE (columns "
                      "path,labels[,split]), a TFDS dataset of label sets "
                      "(--tfds) or the built-in shapes_multilabel; not "
                      "--data_dir.")
  if config.tfds:
    found = sources.load_tfds(config.tfds, config.tfds_data_dir)
    rows = multilabel_data.rows_of_folder(found)
    root, layout = found.root, "tfds"
  else:
    from imgrec import datasets  # pylint: disable=g-import-not-at-top
    csv_path = os.path.abspath(config.labels_csv or datasets.load_builtin(
        config.dataset, seed=0))
    rows = multilabel_data.read_multilabel_csv(
        csv_path, label_delim=config.label_delim,
        allow_outside=config.allow_outside)
    root, layout = os.path.dirname(csv_path), "csv"
  rows = multilabel_task.exclude_rows(rows, config)
  splits = {}
  for i, path in enumerate(rows.paths):
    name = "train" if rows.splits is None else rows.splits[i]
    split = splits.setdefault(name, folder_lib.Split([], []))
    split.paths.append(path)
    split.labels.append([int(v) for v in rows.targets[i]])
  return folder_lib.ImageFolder(root=root, class_names=list(rows.class_names),
                                splits=splits, layout=layout), len(rows.missing)


def _carve(kept, config, multilabel):
  """The folder with its missing val/test splits carved as training would."""
  if not multilabel:
    return folder_lib.carve_splits(kept, config.val_split, config.test_split,
                                   config.seed)
  paths, labels, names = [], [], []
  for name, split in kept.splits.items():
    paths += split.paths
    labels += split.labels
    names += [name] * len(split.paths)
  names = multilabel_task.carve(names, np.asarray(labels, np.uint8),
                                kept.class_names, kept.root, config)
  splits = {name: folder_lib.Split([], []) for name in ("train", "val",
                                                         "test")}
  for path, label, name in zip(paths, labels, names):
    splits[name].paths.append(path)
    splits[name].labels.append(label)
  return dataclasses.replace(kept, splits=splits)


def _scanned(found, config, prepared_dir, workers, multilabel):
  """(folder of the usable files by their own paths, split as training
  splits; {path: file to read}; skipped count)."""
  paths = [p for split in found.splits.values() for p in split.paths]
  results = scan.scan_files(paths, max_image_pixels=config.max_image_pixels,
                            prepared_dir=prepared_dir, workers=workers,
                            progress=config.progress)
  read = {r.path: r.decode_path for r in results if r.ok}
  splits = {}
  for name, split in found.splits.items():
    keep = [i for i, p in enumerate(split.paths) if p in read]
    splits[name] = folder_lib.Split([split.paths[i] for i in keep],
                                    [split.labels[i] for i in keep])
  kept = folder_lib.ImageFolder(root=found.root,
                                class_names=list(found.class_names),
                                splits=splits, layout=found.layout)
  return _carve(kept, config, multilabel), read, len(results) - len(read)


def _class_counts(folder):
  """({class index: images}, images): a label set counts for each of its
  labels."""
  counts, total = collections.Counter(), 0
  for split in folder.splits.values():
    for label in split.labels:
      total += 1
      if isinstance(label, (list, tuple)):
        counts.update(i for i, v in enumerate(label) if v)
      else:
        counts[label] += 1
  return counts, total


def _classes(folder):
  """Each class's images and share of the images."""
  counts, total = _class_counts(folder)
  return {name: {"images": counts.get(i, 0),
                 "share": round(counts.get(i, 0) / max(1, total), 4)}
          for i, name in enumerate(folder.class_names)}


def _exclude_text(audit):
  lines = ["# imgrec-audit: files imgrec-train --exclude leaves out.",
           "# Review them first; delete a line to keep its file."]
  leaked = audit_report.leaked_copies(audit.get("duplicates", []))
  if leaked:
    lines.append("# Copies of an image in an earlier split (leakage):")
    lines += leaked
  issues = audit.get("label_issues") or []
  if issues:
    lines.append("# Label issues (given label doubted):")
    listed = set(leaked)
    lines += [i["path"] for i in issues if i["path"] not in listed]
  return "\n".join(lines) + "\n"


def _relabel_csv(items, audit, label_delim=None):
  """path,label,split rows (path,labels,split joined by `label_delim` for
  label sets) with the suggested labels in place of the doubted ones."""
  suggested = {i["path"]: i["suggested"] for i in
               audit.get("label_issues") or []}
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["path", "label" if label_delim is None else "labels",
                   "split"])
  for path, cls, split in items:
    label = suggested.get(path, cls)
    if label_delim is not None:
      label = label_delim.join(label if isinstance(label, list) else
                               [n for n in cls.split("+") if n])
    writer.writerow([os.path.abspath(path), label, split])
  return buffer.getvalue()


def audit(config):
  """Audits a data set as `imgrec-audit` does (see the module docstring).

  Args:
    config: an AuditConfig, or a dict of its fields.

  Returns:
    {"out": the folder, "audit": the audit.json dict, "paths": {name:
    path} of what was written}.

  Raises:
    ImgrecError: bad flags, data or --out, before anything is written.
  """
  config = AuditConfig.coerce(config, "audit").validate()
  start = time.monotonic()
  multilabel = is_multilabel(config)
  missing = 0
  if multilabel:
    found, missing = _find_label_sets(config)
  else:
    found = data_lib.find_data(config)
  prepared_dir = os.path.abspath(config.prepared_dir or
                                 scan.default_prepared_dir(found.root))
  out = AuditFolder(config.out or os.path.join(prepared_dir, "audit"))
  _check_places(out, prepared_dir, found, config)
  out.check_ours(AUDIT_COMMAND)
  _check_outputs(out)
  judging = bool({"labels", "outliers"} & set(config.parts))
  if judging:
    from imgrec.training import audit_labels  # pylint: disable=g-import-not-at-top
    if config.model_dir:
      audit_labels.check_run(config, found.class_names, multilabel)
    else:
      _check_folds(found, config)
  workers = config.workers or scan.default_workers()
  with out.start(AUDIT_COMMAND):
    _check_outputs(out)  # Again, under the lock.
    folder, read, skipped = _scanned(found, config, prepared_dir, workers,
                                     multilabel)
    items = audit_report.entries(folder)
    result = {
        "data": {"root": found.root, "source": found.layout,
                 "task": "multilabel" if multilabel else "image",
                 "images": len(items), "skipped_by_scan": skipped,
                 "missing_files": missing,
                 "class_names": list(folder.class_names)},
        "settings": {"parts": list(config.parts),
                     "near_threshold": config.near_threshold,
                     "val_split": config.val_split,
                     "test_split": config.test_split, "seed": config.seed},
        "summary": {"classes": _classes(folder)},
    }
    if "duplicates" in config.parts:
      listed, summary = search.find_duplicates(
          items, [read[p] for p, _, _ in items],
          cache_path=os.path.join(prepared_dir, "audit_fingerprints.npz"),
          workers=workers, max_image_pixels=config.max_image_pixels,
          near_threshold=config.near_threshold)
      result["duplicates"] = listed
      result["summary"]["duplicates"] = summary
    if judging:
      found, summary = audit_labels.judge(config, folder, read, items, out,
                                          multilabel)
      result.update(found)
      result["summary"]["model"] = summary
    result["summary"]["seconds"] = round(time.monotonic() - start, 3)
    texts = {out.audit_path: json.dumps(result, indent=1,
                                        ensure_ascii=False) + "\n",
             out.exclude_path: _exclude_text(result)}
    if "label_issues" in result:
      texts[out.relabel_path] = _relabel_csv(
          items, result, config.label_delim if multilabel else None)
    texts[out.html_path] = audit_html.render(result, read,
                                             config.max_image_pixels)
    _write_outputs(out, texts)
  paths = {"audit": out.audit_path, "html": out.html_path,
           "exclude": out.exclude_path}
  if "label_issues" in result:
    paths["relabel"] = out.relabel_path
  return {"out": out.path, "audit": result, "paths": paths}
