"""The scan report: per split and class counts, skipped files and why, formats.

`build` turns an `ImageFolder` and its scan results into the kept folder
and the report dict written as `data_report.json` (`write`); `problems`
names the classes a run cannot use; `format_summary` renders the report
for a terminal.
"""

import json
import os
import statistics

from imgrec import fileio
from imgrec.data import folder as folder_lib


def _stats(values):
  if not values:
    return {"min": None, "median": None, "max": None}
  return {"min": min(values), "median": statistics.median(values),
          "max": max(values)}


def count(items):
  """{item: count}, most frequent first."""
  out = {}
  for item in items:
    out[item] = out.get(item, 0) + 1
  return dict(sorted(out.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _keep_split(folder, name, split, results, per_class, skipped):
  """One split's usable files and its {class: counts} table.

  Counts each class's files in `per_class` and lists the unusable ones in
  `skipped`, both in place.

  Args:
    folder: the scanned `ImageFolder`.
    name: the split's name.
    split: its `Split`.
    results: an iterator over the FileResults, positioned at this split's.
    per_class: {class: {"found", "skipped", "train_usable"}}.
    skipped: the report's list of skipped files.

  Returns:
    (Split of the usable files, each by its `decode_path`; the table).
  """
  kept = {"paths": [], "labels": [], "rows": [], "sides": []}
  table = {c: {"found": 0, "usable": 0, "skipped": 0}
           for c in folder.class_names}
  for label in split.labels:
    result = next(results)
    class_name = folder.class_names[label]
    row, totals = table[class_name], per_class[class_name]
    row["found"] += 1
    totals["found"] += 1
    if not result.ok:
      row["skipped"] += 1
      totals["skipped"] += 1
      skipped.append({"path": result.path, "split": name,
                      "class": class_name, "reason": result.reason,
                      "detail": result.detail})
      continue
    row["usable"] += 1
    totals["train_usable"] += name == "train"
    kept["paths"].append(result.decode_path)
    kept["labels"].append(label)
    kept["rows"].append(result.row)
    kept["sides"].append(min(result.width or 0, result.height or 0))
  rows = kept["rows"] if kept["rows"] and None not in kept["rows"] else None
  return folder_lib.Split(kept["paths"], kept["labels"], rows,
                          kept["sides"]), table


def _ignored(folder, results, report_path):
  """(path, why) of what the scan did not use below the folder's root."""
  ignored = list(folder.ignored)
  # A CSV or TFDS listing names its files: walking its folder would only
  # report everything else there.
  if folder.layout not in ("classes", "splits"):
    return ignored
  own = os.path.abspath(report_path) if report_path else None
  return ignored + [
      (p, why) for p, why in folder_lib.list_ignored(
          folder.root, used_paths=[r.path for r in results],
          skip=[p for p, _ in folder.ignored])
      if os.path.abspath(p) != own]


def build(folder, results, *, settings, seconds, tensorflow_start_seconds=0.0,
          report_path=None):
  """Keeps the usable files of `folder` and reports on all of them.

  Args:
    folder: the scanned `ImageFolder`.
    results: the FileResults of its files, split by split in folder order.
    settings: the scan's settings, recorded in the report.
    seconds: how long the scan took, TensorFlow's start-up left out.
    tensorflow_start_seconds: how long TensorFlow took to start, when the
      scan was what imported it (reported beside the scan time).
    report_path: where the report will be written (left out of the list
      of ignored files).

  Returns:
    (kept, report, per_class): the folder with only usable files, each
    replaced by its `decode_path`; the report dict; and
    {class: {"found", "skipped", "train_usable"}}.
  """
  results_iter = iter(results)
  splits, counts, skipped = {}, {}, []
  per_class = {c: {"found": 0, "skipped": 0, "train_usable": 0}
               for c in folder.class_names}
  for name, split in folder.splits.items():
    splits[name], counts[name] = _keep_split(folder, name, split,
                                             results_iter, per_class, skipped)
  usable = [r for r in results if r.ok]
  ignored = _ignored(folder, results, report_path)
  report = {
      "root": folder.root,
      "class_names": list(folder.class_names),
      "settings": dict(settings),
      "totals": {"found": len(results), "usable": len(usable),
                 "skipped": len(skipped),
                 "converted": sum(r.converted for r in usable),
                 "ignored": len(ignored)},
      "scan": {"seconds": round(seconds, 3),
               "tensorflow_start_seconds": round(tensorflow_start_seconds, 3),
               "from_cache": sum(r.from_cache for r in results)},
      "splits": counts,
      "skipped_by_reason": count(s["reason"] for s in skipped),
      "converted_by_why": count(r.conversion for r in usable if r.converted),
      "formats": count(r.format for r in usable),
      "modes": count(r.mode for r in usable),
      "width": _stats([r.width for r in usable]),
      "height": _stats([r.height for r in usable]),
      "skipped": skipped,
      "ignored": [{"path": p, "why": why} for p, why in ignored],
  }
  kept = folder_lib.ImageFolder(root=folder.root,
                                class_names=list(folder.class_names),
                                splits=splits, layout=folder.layout,
                                ignored=list(folder.ignored))
  return kept, report, per_class


def write(path, report):
  """Writes the report as JSON: `-` is stdout, a FIFO or device is written
  into, a regular file is replaced atomically."""
  with fileio.open_output(path) as f:
    json.dump(report, f, ensure_ascii=False, indent=1)
    f.write("\n")


def problems(per_class, max_bad_fraction):
  """Sentences naming each class with no usable training image or too many bad."""
  out = []
  for class_name, c in per_class.items():
    if c["train_usable"] == 0:
      out.append(f"class {class_name!r} has no usable training image "
                 f"({c['skipped']} of {c['found']} files bad)")
    elif c["found"] and c["skipped"] > max_bad_fraction * c["found"]:
      out.append(f"class {class_name!r} has {c['skipped']} bad files of "
                 f"{c['found']} ({c['skipped'] / c['found']:.0%}, above "
                 f"max_bad_fraction={max_bad_fraction:g})")
  return out


def add_missing(report, missing):
  """Adds files a listing names but that do not exist to a report, in place.

  Each becomes a "skipped" entry (reason "missing") counted as found and
  skipped in its split and in the totals. They do not count towards
  `max_bad_fraction`: the scan never saw them.

  Args:
    report: the report dict.
    missing: dicts with the keys of "skipped" entries.

  Returns:
    The report.
  """
  if not missing:
    return report
  for item in missing:
    table = report["splits"].setdefault(item["split"], {})
    row = table.setdefault(item["class"],
                           {"found": 0, "usable": 0, "skipped": 0})
    row["found"] += 1
    row["skipped"] += 1
  report["skipped"] = list(missing) + list(report["skipped"])
  report["totals"]["found"] += len(missing)
  report["totals"]["skipped"] += len(missing)
  report["skipped_by_reason"] = count(
      [s["reason"] for s in report["skipped"]])
  return report


def format_summary(report, max_listed=10):
  """Renders a scan report as a few lines for a terminal.

  Args:
    report: the report dict.
    max_listed: how many skipped files to name.

  Returns:
    A string of lines.
  """
  totals = report["totals"]
  width = max([len("class")] + [len(c) for c in report["class_names"]])
  lines = [f"{'split':<6} {'class':<{width}} {'found':>6} {'usable':>6} "
           f"{'skipped':>7}"]
  for split, table in report["splits"].items():
    for class_name, row in table.items():
      lines.append(f"{split:<6} {class_name:<{width}} {row['found']:>6} "
                   f"{row['usable']:>6} {row['skipped']:>7}")
  lines.append(f"{'total':<6} {'':<{width}} {totals['found']:>6} "
               f"{totals['usable']:>6} {totals['skipped']:>7}")

  def joined(counts):
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"

  lines.append(f"skipped by reason: {joined(report['skipped_by_reason'])}")
  duplicates = report.get("duplicates")
  if duplicates:
    crossing = joined(duplicates["leakage_by_splits"])
    lines.append(f"duplicates: {duplicates['exact_groups']} exact and "
                 f"{duplicates['near_groups']} near groups; across splits: "
                 f"{duplicates['leakage_groups']} ({crossing})")
  lines.append(f"converted to PNG: {totals['converted']} "
               f"({joined(report['converted_by_why'])})")
  ignored = count(i["why"] for i in report["ignored"])
  lines.append(f"ignored (not images): {totals['ignored']} "
               f"({joined(ignored)})")
  for item in report["skipped"][:max_listed]:
    lines.append(f"  skipped {item['path']}: {item['reason']}: "
                 f"{item['detail']}")
  if len(report["skipped"]) > max_listed:
    lines.append(f"  ... and {len(report['skipped']) - max_listed} more")
  scan = report["scan"]
  start_up = scan.get("tensorflow_start_seconds")
  lines.append(f"scanned {totals['found']} files in {scan['seconds']:.2f} s "
               f"({scan['from_cache']} from cache)" + (
                   f", after TensorFlow's start-up ({start_up:.2f} s)"
                   if start_up else ""))
  return "\n".join(lines)
