"""Scans an image folder once before training: every file checked, cached, reported.

Real image folders hold broken downloads, HTML pages saved as `.jpg`,
formats TensorFlow cannot read and images it reads differently from how a
user sees them. `scan_folder` checks every file of an `ImageFolder`
(`files.scan_files`), keeps the usable ones, writes `data_report.json`
(`report`) and stops with a message naming the classes that cannot be
used. No Python code runs in the training loop: files that need converting
are converted here, once.
"""

import dataclasses
import hashlib
import os
import time

from imgrec import fileio
from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import decode
from imgrec.data.scan import report as report_lib
from imgrec.data.scan.files import scan_files
from imgrec.errors import ImgrecError

REPORT_NAME = "data_report.json"


def default_prepared_dir(root):
  """Returns <cache home>/prepared/<name>-<hash of the absolute root>."""
  root = os.path.abspath(root)
  digest = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()
  name = os.path.basename(root.rstrip(os.sep)) or "root"
  return fileio.cache_home("prepared", f"{name}-{digest[:16]}")


def scan_folder(folder, *, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                max_bad_fraction=0.1, prepared_dir=None, report_path=None,
                workers=None, progress=True, cache_path=None, fill=None):
  """Scans every file of an image folder and keeps the usable ones.

  Files a labels CSV lists but that do not exist (the folder's `missing`)
  are reported as skipped with reason "missing".

  Args:
    folder: an `ImageFolder` from `folder.find_images` or `sources`.
    max_image_pixels: files declaring more pixels are skipped.
    max_bad_fraction: the largest fraction of a class's files (all splits
      together) that may be skipped.
    prepared_dir: folder for converted copies and the scan cache; default
      `default_prepared_dir(folder.root)`.
    report_path: where to write the JSON report, if given. It is written
      before any error is raised, so it can be read to see what went wrong.
    workers: threads; default `default_workers()`.
    progress: show a progress line on stderr (only when it is a terminal).
    cache_path: the scan cache; default `prepared_dir/scan_cache.json`.
    fill: a Fill: the returned folder then carries the decoded images
      (`pixels`, rows named by each split's `pixel_rows`).

  Returns:
    (folder, report): a new `ImageFolder` whose splits hold only usable files,
    each replaced by its `decode_path`, labels kept aligned; and the report
    as a dict.

  Raises:
    ImgrecError: a class has no usable training image, or more than
      `max_bad_fraction` of a class's files are bad. Its `report` attribute
      holds the report.
  """
  if not 0.0 <= max_bad_fraction <= 1.0:
    raise ImgrecError("max_bad_fraction must be in [0, 1]. Received: "
                      f"max_bad_fraction={max_bad_fraction}")
  prepared_dir = os.path.abspath(prepared_dir or
                                 default_prepared_dir(folder.root))
  paths = [p for s in folder.splits.values() for p in s.paths]
  start = time.monotonic()
  start_up = decode.tensorflow_import_seconds()
  results = scan_files(paths, max_image_pixels=max_image_pixels,
                       prepared_dir=prepared_dir, workers=workers,
                       progress=progress, cache_path=cache_path, fill=fill)
  start_up = decode.tensorflow_import_seconds() - start_up
  settings = {"max_image_pixels": max_image_pixels,
              "max_bad_fraction": max_bad_fraction,
              "prepared_dir": prepared_dir}
  kept, report, per_class = report_lib.build(
      folder, results, settings=settings,
      seconds=time.monotonic() - start - start_up,
      tensorflow_start_seconds=start_up, report_path=report_path)
  report_lib.add_missing(report, getattr(folder, "missing", None))
  if report_path:
    report_lib.write(report_path, report)
  problems = report_lib.problems(per_class, max_bad_fraction)
  if problems:
    where = (f" Every skipped file and why: {report_path}." if report_path
             else "")
    error = ImgrecError(f"Too many unusable images in {folder.root}: "
                        f"{'; '.join(problems)}. Fix or remove the files, or "
                        f"raise --max_bad_fraction.{where}")
    error.report = report
    raise error
  if fill is not None:
    kept = dataclasses.replace(kept, pixels=fill.store)
    fill.store = None
  return kept, report
