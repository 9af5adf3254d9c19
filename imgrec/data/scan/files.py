"""Checks image files in parallel, at decode speed, reusing earlier results.

`scan_files` decodes the plain files (most JPEG, PNG, GIF, BMP and WebP
files) in one tf.data pass while Pillow reads their headers on a thread;
every other file, and one that fails there, is checked one by one
(`check.check_file`) on a pool of threads, with a progress line. Results of
earlier scans come from the scan cache (`cache`). With a `Fill` the scan
keeps every usable image, decoded and resized, for training.
"""

import concurrent.futures
import dataclasses
import os
import stat
import sys
import time

from PIL import Image

from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import decode
from imgrec.data.scan import cache as cache_lib
from imgrec.data.scan.check import check_file
from imgrec.data.scan.check import FileResult
from imgrec.data.scan.check import strict_pillow
from imgrec.errors import ImgrecError


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


@dataclasses.dataclass
class Fill:
  """Asks the scan to keep each usable image, decoded and resized, for training.

  The scan decodes every file anyway; with a Fill it keeps the result at
  the training input size as uint8, so the first epoch reads memory like
  the later ones instead of decoding everything again.

  Attributes:
    image_size: (height, width).
    channels: 1 or 3.
    store: after the scan, a uint8 tensor [N, height, width, channels]; each
      usable FileResult's `row` names its image.
  """
  image_size: tuple
  channels: int
  store: object = None


def _quick_header(path, max_image_pixels):
  """Header facts of a file the fast path can take, else None.

  Pillow reads the header only (a twentieth of a millisecond a JPEG; the
  same checks as graph ops cost as much as decoding).

  Returns:
    (format, mode, (size, mtime_ns), (width, height)) when the file is a
    regular, non-empty image within the pixel limit that TensorFlow's plain
    decoder reads as the decode policy says; None for everything else (the
    one-by-one check then says why).
  """
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # A FIFO must not block.
  except OSError:
    return None
  with os.fdopen(fd, "rb") as f:
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
      return None
    try:
      image = Image.open(f)
      pixels = image.width * image.height
      if not 0 < pixels <= max_image_pixels:
        return None
      how = decode.plan(image, path)
    except Exception:  # pylint: disable=broad-except
      return None  # Damaged headers of every kind: the slow path names them.
    if how.reader != "tf" or not how.plain:
      return None
    return (image.format, image.mode, (st.st_size, st.st_mtime_ns),
            image.size)


def _regular(path):
  try:
    st = os.stat(path)
  except OSError:
    return False
  return stat.S_ISREG(st.st_mode) and st.st_size > 0


def _headers(paths, max_image_pixels):
  """`_quick_header` of each path, with Pillow's limits lifted."""
  with strict_pillow():
    return [_quick_header(p, max_image_pixels) for p in paths]


def _fast_pass(items, fill, on_result, kept, sides=None):
  """Decodes plain files in one tf.data pass, at decode speed.

  Args:
    items: (index, path) of the files to decode.
    fill: a Fill, or None to only check that each file decodes.
    on_result: `fn(index, (height, width))` per file that decoded.
    kept: with a fill, a list that receives (indices, pixels) per batch.
    sides: the images' shorter sides, if known (see `pipeline.dct_matters`).

  Returns:
    The indices that did not decode (the slow path checks them).

  The (height, width) given to `on_result` is of what was decoded, which
  may be DCT-scaled: sizes for reports come from the headers.
  """
  tf = decode.import_tensorflow()
  from imgrec.data import ops  # pylint: disable=g-import-not-at-top
  from imgrec.data import pipeline  # pylint: disable=g-import-not-at-top

  # All-JPEG lists skip the per-image format test, as training does; a
  # file that is not a JPEG then fails here and is checked one by one.
  all_jpeg = all(os.path.splitext(p)[1].lower() in decode.JPEG_EXTENSIONS
                 for _, p in items)

  target = None
  if fill is not None and pipeline.dct_matters(sides, fill.image_size):
    target = fill.image_size

  def check(i, path):
    contents = tf.io.read_file(path)
    if fill is None:
      # Only whether it decodes: a JPEG's every coefficient is read at 1/8
      # scale too (truncation and damage fail the same), at a fraction of
      # the work for large photos.
      scaled = lambda: tf.io.decode_jpeg(contents, channels=3, ratio=8)
      image = scaled() if all_jpeg else tf.cond(
          tf.io.is_jpeg(contents), scaled,
          lambda: pipeline.decode_plain(contents))
      return i, tf.shape(image)[:2], tf.zeros([0], tf.uint8)
    image = pipeline.decode_plain(contents, all_jpeg, target)
    return i, tf.shape(image)[:2], ops.resize_uint8(
        ops.to_channels(image, fill.channels), fill.image_size)

  indices = [i for i, _ in items]
  ds = tf.data.Dataset.from_tensor_slices(
      (tf.constant(indices, tf.int64),
       tf.constant([p for _, p in items], tf.string)))
  ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.ignore_errors().batch(64).prefetch(2)
  # As in the training pipelines: the autotuner's thread costs more than it
  # finds on few cores, and stalls at the end.
  options = tf.data.Options()
  options.autotune.enabled = False
  ds = ds.with_options(options)
  done = set()
  for batch_i, sizes, pixels in ds:
    batch_i = batch_i.numpy().tolist()
    for i, size in zip(batch_i, sizes.numpy().tolist()):
      on_result(i, size)
    if fill is not None:
      kept.append((batch_i, pixels))
    done.update(batch_i)
  return [i for i in indices if i not in done]


def _prepare_dir(prepared_dir, max_image_pixels):
  """Checks the scan's arguments; returns the created, absolute prepared_dir."""
  if not isinstance(max_image_pixels, int) or max_image_pixels <= 0:
    raise ImgrecError("max_image_pixels must be a positive integer. "
                      f"Received: max_image_pixels={max_image_pixels!r}")
  if not prepared_dir:
    raise ImgrecError("scan_files needs a prepared_dir for converted images.")
  prepared_dir = os.path.abspath(prepared_dir)
  try:
    os.makedirs(prepared_dir, exist_ok=True)
  except OSError as e:
    raise ImgrecError(f"Cannot create prepared_dir {prepared_dir}: "
                      f"{e.strerror or e}. Pass a writable --prepared_dir."
                      ) from e
  return prepared_dir


class _Results:
  """The results of one scan so far: from the cache, then as files are checked.

  Each new result goes into the cache (saved by `close` when any did) and
  moves the progress line on.
  """

  def __init__(self, paths, settings, prepared_dir, cache_path, progress,
               fill):
    self.paths = paths
    self._settings = settings
    self._cache_path = cache_path
    self._cache = cache_lib.load(cache_path)
    self.results = [cache_lib.lookup(self._cache.get(os.path.abspath(p)), p,
                                     settings, prepared_dir) for p in paths]
    self.todo = [i for i, r in enumerate(self.results) if r is None]
    self._done = len(paths) - len(self.todo)
    self._bad = sum(1 for r in self.results if r is not None and not r.ok)
    self._changed = False
    self._bar = _Progress(len(paths), progress and bool(self.todo or fill))

  def keep(self, i, result, stat_key):
    """Records the result of file `i`; `stat_key` None keeps it uncached."""
    self.results[i] = result
    self._done += 1
    self._bad += not result.ok
    if stat_key is not None:
      self._cache[os.path.abspath(self.paths[i])] = cache_lib.entry(
          result, stat_key, self._settings)
      self._changed = True
    self._bar.update(self._done, self._bad)

  def close(self):
    self._bar.close(self._done, self._bad)
    if self._changed:
      cache_lib.save(self._cache_path, self._cache)


def _fast_checks(found, fill, max_image_pixels, kept):
  """Checks the regular files still to check in one tf.data pass.

  With a fill, the files known good from the cache are decoded in the same
  pass. Pillow reads the headers on a thread while TensorFlow decodes: a
  file counts as checked when both agree it is a plain image.

  Returns:
    (to check one by one, cached files whose decode failed): index sets.
  """
  paths, results = found.paths, found.results
  # Regular files only go to TensorFlow (reading a FIFO would block).
  fast = [(i, paths[i]) for i in found.todo if _regular(paths[i])]
  cached = []
  sides = None
  if fill is not None:
    # A file from the cache is known good and plain (or has its prepared
    # copy): with a fill it is decoded, not checked.
    cached = [(i, r.decode_path) for i, r in enumerate(results)
              if r is not None and r.ok]
    # Whether any JPEG is large enough for a DCT-scaled decode, known up
    # front, keeps a per-image branch out of the decode (~10% of it).
    sides = [decode.jpeg_shorter_side(p) for _, p in fast + cached]
    sides = None if None in sides else sides
  decoded = {}
  with concurrent.futures.ThreadPoolExecutor(1) as header_pool:
    headers = header_pool.submit(_headers, [p for _, p in fast],
                                 max_image_pixels)
    failed = (_fast_pass(fast + cached, fill, decoded.__setitem__, kept,
                         sides) if fast or cached else [])
    headers = dict(zip((i for i, _ in fast), headers.result()))
  slow = set(found.todo)
  for i, _ in fast:
    if i in decoded and headers[i] is not None:
      fmt, mode, stat_key, (width, height) = headers[i]
      found.keep(i, FileResult(path=paths[i], ok=True, format=fmt, mode=mode,
                               width=width, height=height,
                               decode_path=paths[i]), stat_key)
      slow.discard(i)
  return slow, {i for i in failed if results[i] is not None}


def scan_files(paths, *, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
               prepared_dir, workers=None, progress=True, cache_path=None,
               fill=None):
  """Checks image files and says how the pipeline should read them.

  Files whose header shows a regular image that TensorFlow's plain decoder
  reads as the decode policy says (most JPEG, PNG, GIF, BMP and WebP files)
  are decoded once, in one tf.data pass at decode speed; a file that fails
  there, and every other file, is checked one by one (`check`), which
  names what is wrong or converts it once into `prepared_dir`.

  Args:
    paths: image file paths.
    max_image_pixels: files declaring more pixels are "decompression_bomb".
    prepared_dir: folder for converted copies and, by default, the cache.
    workers: threads of the one-by-one checks; default `default_workers()`.
    progress: show a progress line on stderr (only when it is a terminal).
    cache_path: the scan cache; default `prepared_dir/scan_cache.json`.
    fill: a Fill to keep every usable image resized for training (files
      whose check comes from the cache are decoded for it too).

  Returns:
    A list of `FileResult`, in the order of `paths`.

  Raises:
    ImgrecError: bad arguments, or `prepared_dir` cannot be written.
  """
  prepared_dir = _prepare_dir(prepared_dir, max_image_pixels)
  found = _Results(
      [os.fspath(p) for p in paths], {"max_image_pixels": max_image_pixels},
      prepared_dir,
      cache_path or os.path.join(prepared_dir, cache_lib.CACHE_NAME),
      progress, fill)
  kept = []  # (indices, pixels) batches, with a fill.
  try:
    slow, undecoded = _fast_checks(found, fill, max_image_pixels, kept)
    _slow_pass(sorted(slow), found.paths, max_image_pixels, prepared_dir,
               workers or default_workers(), found.keep)
    if fill is not None:
      _fill_rest(fill, found.results, slow | undecoded, kept)
  finally:
    found.close()
  return found.results


def _fill_rest(fill, results, indices, kept):
  """Decodes the usable files among `indices` for the fill; stores it all."""
  again = [(i, results[i].decode_path) for i in sorted(indices)
           if results[i].ok]
  if again and _fast_pass(again, fill, lambda *_: None, kept):
    raise ImgrecError("Decoding the checked images for the training "
                      "cache failed; rerun with --cache=none.")
  _store(fill, kept, results)


def _slow_pass(indices, paths, max_image_pixels, prepared_dir, workers, keep):
  """Checks files one by one on a pool of threads (`scan_check.check_file`)."""
  if not indices:
    return
  pool = concurrent.futures.ThreadPoolExecutor(
      workers, thread_name_prefix="imgrec-scan")
  pending = {}
  queue = iter(indices)
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
          keep(i, *future.result())
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def _store(fill, kept, results):
  """Stacks the kept images of usable files into `fill.store`; sets `row`.

  A file decoded twice (its header asked for the one-by-one check after
  the fast pass had decoded it) keeps its last image.
  """
  tf = decode.import_tensorflow()
  where = {}  # index -> row in the concatenated batches
  row = 0
  for indices, _ in kept:
    for i in indices:
      where[i] = row
      row += 1
  usable = sorted(i for i in where if results[i].ok)
  for new_row, i in enumerate(usable):
    results[i].row = new_row
  h, w = fill.image_size
  if not usable:
    fill.store = tf.zeros([0, h, w, fill.channels], tf.uint8)
  else:
    store = tf.concat([pixels for _, pixels in kept], axis=0)
    rows = [where[i] for i in usable]
    if rows != list(range(row)):
      store = tf.gather(store, rows)
    fill.store = store
  kept.clear()


