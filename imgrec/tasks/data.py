"""The data of a task: list a config's images and check them, without loading TensorFlow.

A scan whose results are all cached then answers in a fraction of a second.
"""

import dataclasses
import json
import logging
import os

from imgrec import datasets
from imgrec import fileio
from imgrec.config import ScanConfig
from imgrec.data import folder as folder_lib
from imgrec.data import scan
from imgrec.data import sources
from imgrec.errors import ImgrecError

logger = logging.getLogger("imgrec")


def find_data(config):
  """Lists the images of a DataConfig's source, before any check or split.

  Returns:
    An ImageFolder (a ListedImageFolder for a labels CSV) whose splits are
    those the data names, less the files of `config.exclude`;
    `folder.carve_splits` completes them.
  """
  if config.labels_csv:
    found = sources.read_labels_csv(config.labels_csv,
                                    allow_outside=config.allow_outside)
  elif config.tfds:
    found = sources.load_tfds(config.tfds, config.tfds_data_dir)
  else:
    data_dir = config.data_dir or datasets.load_builtin(config.dataset,
                                                        seed=0)
    found = folder_lib.find_images(data_dir, carve=False,
                                   allow_outside=config.allow_outside)
  return apply_exclude(found, config)


def apply_exclude(found, config):
  """`found` less the files `config.exclude` lists (if any), said in one
  line."""
  if not getattr(config, "exclude", None):
    return found
  listed = folder_lib.read_exclude(config.exclude)
  before = len(found.ignored)
  found = folder_lib.exclude(found, listed)
  say_excluded(config, listed, len(found.ignored) - before)
  return found


def say_excluded(config, listed, left_out):
  """The one line of an --exclude: how many files it left out."""
  logger.warning("--exclude=%s: %d files left out%s", config.exclude,
                 left_out, f" ({len(listed) - left_out} listed files are "
                 "not in the data)" if len(listed) > left_out else "")


def scan_data(config):
  """Checks every image of a ScanConfig's data, as `imgrec-scan` does.

  The report goes to `config.report`, default `data_report.json` in the
  prepared folder: nothing is written into the data folder. A `report`
  that exists is replaced only with `config.overwrite`, and never when it
  is one of the files scanned.

  Args:
    config: a ScanConfig, or a dict of its fields.

  Returns:
    {"folder": the usable files, split as training would split them,
     "report": the report dict, "report_path": where it was written,
     "prepared_dir": the folder of converted copies and the scan cache}.

  Raises:
    ImgrecError: bad config or data; its `result` attribute holds the
      report when the scan itself found too many bad files.
  """
  config = ScanConfig.coerce(config, "scan").validate()
  found = find_data(config)
  if config.report:
    fileio.check_output(config.report, flag="--report", inputs=[
        config.labels_csv or found.root,
        *(p for split in found.splits.values() for p in split.paths)],
                        overwrite=config.overwrite)
  prepared_dir = os.path.abspath(config.prepared_dir or
                                 scan.default_prepared_dir(found.root))
  report_path = config.report or os.path.join(prepared_dir, scan.REPORT_NAME)
  result = {"report_path": report_path, "prepared_dir": prepared_dir}
  try:
    kept, report = scan.scan_folder(
        found, max_image_pixels=config.max_image_pixels,
        max_bad_fraction=config.max_bad_fraction, prepared_dir=prepared_dir,
        report_path=report_path, workers=config.workers,
        progress=config.progress)
  except ImgrecError as e:
    if getattr(e, "report", None):
      e.result = dict(result, report=e.report)
    raise
  folder = folder_lib.carve_splits(kept, config.val_split, config.test_split,
                                   config.seed)
  folder = check_leakage(folder, config, report_path)
  if os.path.isfile(report_path):
    with open(report_path, encoding="utf-8") as f:
      report = json.load(f)
  return dict(result, folder=folder, report=report)


def check_leakage(folder, config, report_path=None):
  """Finds the images duplicated across the splits of `folder` (exact and
  near copies, `imgrec.data.audit`) and does what `config.leakage` says:
  warn (one line), drop (the copies outside each group's earliest split go;
  `folder.dropped` lists them), fail, or off. The data report at
  `report_path` gains a "duplicates" section.

  Returns:
    The folder (without the dropped copies).

  Raises:
    ImgrecError: --leakage=fail and some image is in two splits.
  """
  mode = getattr(config, "leakage", "off")
  if mode == "off" or not getattr(config, "scan", True):
    return folder
  from imgrec.data.audit import report as audit_report  # pylint: disable=g-import-not-at-top
  from imgrec.data.audit import search  # pylint: disable=g-import-not-at-top
  from imgrec.data.audit import store  # pylint: disable=g-import-not-at-top
  items = audit_report.entries(folder)
  prepared = (getattr(config, "prepared_dir", None) or
              scan.default_prepared_dir(folder.root))
  os.makedirs(prepared, exist_ok=True)
  listed, summary = search.find_duplicates(
      items, [p for p, _, _ in items],
      cache_path=os.path.join(prepared, store.CACHE_NAME),
      workers=scan.default_workers(),
      max_image_pixels=config.max_image_pixels)
  leaking = [g for g in listed if g["leakage"]]
  if report_path and os.path.isfile(report_path):
    try:
      with open(report_path, encoding="utf-8") as f:
        data_report = json.load(f)
      data_report["duplicates"] = dict(summary, leakage_mode=mode,
                                       across_splits=leaking[:100])
      fileio.write_json(report_path, data_report, indent=2)
    except (OSError, ValueError) as e:
      logger.warning("cannot add duplicates to %s: %s", report_path, e)
  line = (f"duplicates: {summary['exact_groups']} exact and "
          f"{summary['near_groups']} near groups, {len(leaking)} across "
          "splits" + (" (" + ", ".join(
              f"{k}: {v}" for k, v in summary["leakage_by_splits"].items())
                      + ")" if leaking else ""))
  if not leaking:
    logger.info("%s", line)
    return folder
  example = " and ".join(leaking[0]["paths"][:2])
  if mode == "fail":
    raise ImgrecError(f"{line}, e.g. {example}: the test figure would count "
                      "images the model trained on. Pass --leakage=drop to "
                      "drop the copies from the later split, or see "
                      "imgrec-audit.")
  if mode == "drop":
    dropped = audit_report.leaked_copies(leaking)
    folder = folder_lib.exclude(folder, {os.path.realpath(p) for p in
                                         dropped}, why="leakage")
    folder = dataclasses.replace(folder, dropped=sorted(dropped))
    logger.warning("%s; dropped %d copies from the later split "
                   "(--leakage=drop; splits.json lists them)", line,
                   len(dropped))
  else:
    logger.warning("%s, e.g. %s; pass --leakage=drop to drop the copies "
                   "from the later split (imgrec-audit shows them)", line,
                   example)
  return folder
