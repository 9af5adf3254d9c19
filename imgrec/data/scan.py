"""Scans an image folder once before training: every file checked, in parallel, cached.

Real image folders hold broken downloads, HTML pages saved as `.jpg`,
formats TensorFlow cannot read and images it reads differently from how a
user sees them. `scan_files` checks each file (`scan_check`) on a pool of
threads, with a progress line, reusing the results of earlier scans
(`scan_cache`); `scan_folder` applies it to an `ImageFolder`, keeps the
usable files, writes `data_report.json` (`scan_report`) and stops with a
message naming the classes that cannot be used. No Python code runs in the
training loop: files that need converting are converted here, once.
"""

import concurrent.futures
import hashlib
import os
import sys
import time

from imgrec import fileio
from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import scan_cache
from imgrec.data import scan_report
from imgrec.data.scan_check import check_file
from imgrec.data.scan_check import FileResult  # pylint: disable=unused-import
from imgrec.data.scan_check import strict_pillow
from imgrec.errors import ImgrecError

REPORT_NAME = "data_report.json"


class _Progress:
  """One self-overwriting stderr line, only on a terminal."""

  def __init__(self, total, enabled):
    self.total = total
    self.enabled = enabled and total > 0 and sys.stderr.isatty()
    self.start = time.monotonic()
    self.shown = 0.0

  def update(self, done, bad, force=False):
    if not self.enabled:
      return
    now = time.monotonic()
    if not force and now - self.shown < 0.2:
      return
    self.shown = now
    sys.stderr.write(f"\rscanning images: {done}/{self.total} "
                     f"({bad} bad) {now - self.start:.0f}s ")
    sys.stderr.flush()

  def close(self, done, bad):
    if self.enabled:
      self.update(done, bad, force=True)
      sys.stderr.write("\n")
      sys.stderr.flush()


def default_workers():
  """One thread per usable CPU, at most 16.

  Pillow and TensorFlow both release the GIL while they decode, so threads
  run in parallel without the start-up cost of processes (each would import
  TensorFlow).
  """
  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:
    cpus = os.cpu_count() or 1
  return max(1, min(16, cpus))


def default_prepared_dir(root):
  """Returns <cache home>/prepared/<name>-<hash of the absolute root>."""
  root = os.path.abspath(root)
  digest = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()
  name = os.path.basename(root.rstrip(os.sep)) or "root"
  return fileio.cache_home("prepared", f"{name}-{digest[:16]}")


def scan_files(paths, *, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
               prepared_dir, workers=None, progress=True, cache_path=None):
  """Checks image files in parallel and says how the pipeline should read them.

  Args:
    paths: image file paths.
    max_image_pixels: files declaring more pixels are "decompression_bomb".
    prepared_dir: folder for converted copies and, by default, the cache.
    workers: threads; default `default_workers()`.
    progress: show a progress line on stderr (only when it is a terminal).
    cache_path: the scan cache; default `prepared_dir/scan_cache.json`.

  Returns:
    A list of `FileResult`, in the order of `paths`.

  Raises:
    ImgrecError: bad arguments, or `prepared_dir` cannot be written.
  """
  if not isinstance(max_image_pixels, int) or max_image_pixels <= 0:
    raise ImgrecError("max_image_pixels must be a positive integer. "
                      f"Received: max_image_pixels={max_image_pixels!r}")
  if not prepared_dir:
    raise ImgrecError("scan_files needs a prepared_dir for converted images.")
  workers = workers or default_workers()
  prepared_dir = os.path.abspath(prepared_dir)
  try:
    os.makedirs(prepared_dir, exist_ok=True)
  except OSError as e:
    raise ImgrecError(f"Cannot create prepared_dir {prepared_dir}: "
                      f"{e.strerror or e}. Pass a writable --prepared_dir."
                      ) from e
  cache_path = cache_path or os.path.join(prepared_dir, scan_cache.CACHE_NAME)
  cache = scan_cache.load(cache_path)
  settings = {"max_image_pixels": max_image_pixels}

  paths = [os.fspath(p) for p in paths]
  results = [scan_cache.lookup(cache.get(os.path.abspath(p)), p, settings,
                               prepared_dir) for p in paths]
  todo = [i for i, r in enumerate(results) if r is None]
  done = len(paths) - len(todo)
  bad = sum(1 for r in results if r is not None and not r.ok)
  if not todo:
    return results
  bar = _Progress(len(paths), progress)

  changed = False
  pool = concurrent.futures.ThreadPoolExecutor(
      workers, thread_name_prefix="imgrec-scan")
  pending = {}
  queue = iter(todo)
  last_save = time.monotonic()
  try:
    with strict_pillow():
      while True:
        # A bounded window: a million queued futures would hold a lot of
        # memory, and Ctrl-C has less to cancel.
        while len(pending) < 4 * workers:
          i = next(queue, None)
          if i is None:
            break
          pending[pool.submit(check_file, paths[i], max_image_pixels,
                              prepared_dir)] = i
        if not pending:
          break
        finished, _ = concurrent.futures.wait(
            pending, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in finished:
          i = pending.pop(future)
          result, stat = future.result()
          results[i] = result
          done += 1
          bad += not result.ok
          if stat is not None:
            cache[os.path.abspath(paths[i])] = scan_cache.entry(
                result, stat, settings)
            changed = True
        bar.update(done, bad)
        if changed and time.monotonic() - last_save > 60:
          # Long scans keep their progress if interrupted.
          scan_cache.save(cache_path, cache)
          changed, last_save = False, time.monotonic()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    bar.close(done, bad)
    if changed:
      scan_cache.save(cache_path, cache)
  return results


def scan_folder(folder, *, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                max_bad_fraction=0.1, prepared_dir=None, report_path=None,
                workers=None, progress=True, cache_path=None):
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
  results = scan_files(paths, max_image_pixels=max_image_pixels,
                       prepared_dir=prepared_dir, workers=workers,
                       progress=progress, cache_path=cache_path)
  settings = {"max_image_pixels": max_image_pixels,
              "max_bad_fraction": max_bad_fraction,
              "prepared_dir": prepared_dir}
  kept, report, per_class = scan_report.build(
      folder, results, settings=settings, seconds=time.monotonic() - start,
      report_path=report_path)
  scan_report.add_missing(report, getattr(folder, "missing", None))
  if report_path:
    fileio.write_json(report_path, report, ensure_ascii=False, indent=1)
  problems = scan_report.problems(per_class, max_bad_fraction)
  if problems:
    where = (f" Every skipped file and why: {report_path}." if report_path
             else "")
    error = ImgrecError(f"Too many unusable images in {folder.root}: "
                        f"{'; '.join(problems)}. Fix or remove the files, or "
                        f"raise --max_bad_fraction.{where}")
    error.report = report
    raise error
  return kept, report
