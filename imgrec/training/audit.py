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
import io
import os
import time

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


def _check_out(out, found, config):
  """Refuses an --out inside the data (or the CSV's folder)."""
  roots = [found.root]
  if config.labels_csv:
    roots.append(os.path.dirname(os.path.abspath(config.labels_csv)))
  for root in roots:
    if root and os.path.isdir(root) and fileio.is_inside(out.path, root):
      raise ImgrecError(f"--out={out.path} is inside the data ({root}): the "
                        "audit never writes into the data. Pass a folder "
                        "outside it.")


def _scanned(found, config, prepared_dir, workers):
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
  folder = folder_lib.carve_splits(kept, config.val_split, config.test_split,
                                   config.seed)
  return folder, read, len(results) - len(read)


def _classes(items, class_names):
  counts = collections.Counter(cls for _, cls, _ in items)
  total = max(1, len(items))
  return {name: {"images": counts.get(name, 0),
                 "share": round(counts.get(name, 0) / total, 4)}
          for name in class_names}


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


def _relabel_csv(items, audit):
  suggested = {i["path"]: i["suggested"] for i in
               audit.get("label_issues") or []}
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["path", "label", "split"])
  for path, cls, split in items:
    writer.writerow([os.path.abspath(path), suggested.get(path, cls), split])
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
  found = data_lib.find_data(config)
  prepared_dir = os.path.abspath(config.prepared_dir or
                                 scan.default_prepared_dir(found.root))
  out = AuditFolder(config.out or os.path.join(prepared_dir, "audit"))
  _check_out(out, found, config)
  out.check_ours(AUDIT_COMMAND)
  workers = config.workers or scan.default_workers()
  with out.start(AUDIT_COMMAND):
    for path in out.outputs():
      if os.path.isfile(path) or os.path.islink(path):
        os.remove(path)  # The last audit's: this folder is imgrec's.
    folder, read, skipped = _scanned(found, config, prepared_dir, workers)
    items = audit_report.entries(folder)
    result = {
        "data": {"root": found.root, "source": found.layout,
                 "images": len(items), "skipped_by_scan": skipped,
                 "class_names": list(folder.class_names)},
        "settings": {"parts": list(config.parts),
                     "near_threshold": config.near_threshold,
                     "val_split": config.val_split,
                     "test_split": config.test_split, "seed": config.seed},
        "summary": {"classes": _classes(items, folder.class_names)},
    }
    if "duplicates" in config.parts:
      listed, summary = search.find_duplicates(
          items, [read[p] for p, _, _ in items],
          cache_path=os.path.join(prepared_dir, "audit_fingerprints.npz"),
          workers=workers, max_image_pixels=config.max_image_pixels,
          near_threshold=config.near_threshold)
      result["duplicates"] = listed
      result["summary"]["duplicates"] = summary
    if {"labels", "outliers"} & set(config.parts):
      from imgrec.training import audit_labels  # pylint: disable=g-import-not-at-top
      found, summary = audit_labels.judge(config, folder, read, items, out)
      result.update(found)
      result["summary"]["model"] = summary
    result["summary"]["seconds"] = round(time.monotonic() - start, 3)
    fileio.write_json(out.audit_path, result, indent=1, ensure_ascii=False)
    fileio.write_text(out.exclude_path, _exclude_text(result))
    if "label_issues" in result:
      fileio.write_text(out.relabel_path, _relabel_csv(items, result))
    fileio.write_text(out.html_path, audit_html.render(
        result, read, config.max_image_pixels))
  paths = {"audit": out.audit_path, "html": out.html_path,
           "exclude": out.exclude_path}
  if "label_issues" in result:
    paths["relabel"] = out.relabel_path
  return {"out": out.path, "audit": result, "paths": paths}
