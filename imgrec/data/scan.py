"""Checks every image file once before training, converting what tf.io misreads.

Real image folders hold broken downloads, HTML pages saved as `.jpg`,
formats tf.io cannot read and images tf.io reads differently from how a user
sees them. `scan_files` opens each file with Pillow (header first, so a
decompression bomb is refused before it is decoded), decodes it fully, and
decodes it again with the op the training pipeline uses (`ops.decode`). A file
is used as it is when tf.io gives the pixels Pillow gives; otherwise Pillow's
view (EXIF orientation applied, transparency composited on white, 8-bit RGB)
is written once as a PNG into a `prepared_dir`, and the pipeline reads that.
No Python code runs in the training loop.

Results are cached in `scan_cache.json`, keyed by path and checked against
size, mtime and the scan's settings, so a rerun only re-checks changed files.
`scan_folder` applies the scan to an `ImageFolder`, drops bad files and writes
a `data_report.json`.
"""

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import statistics
import sys
import threading
import time

import numpy as np
from PIL import Image
from PIL import ImageFile
from PIL import ImageOps
from PIL import UnidentifiedImageError

from imgrec import fileio
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError

# Pillow's own default limit (Image.MAX_IMAGE_PIXELS): 1024 * 1024 * 1024 // 4
# // 3 pixels, about 0.25 GiB of 24-bit pixels.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
CACHE_NAME = "scan_cache.json"
REPORT_NAME = "data_report.json"
# Part of every cache entry and prepared file name: bump it when a check or a
# conversion changes, so old results are not reused.
SCAN_VERSION = 2

REASONS = ("empty_file", "unreadable", "not_an_image", "unsupported_format",
           "truncated", "corrupt", "decompression_bomb")
# Why a file is read from `prepared_dir` instead of its own path.
CONVERSIONS = ("exif_orientation", "format_not_in_tf", "tf_decode_failed",
               "transparency", "tf_pixels_differ", "gray_decode_failed")

# Pillow format names that tf.io.decode_image can read (MPO: camera JPEGs).
_TF_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"})
_LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})
# tf.io decodes JPEG with a faster IDCT than Pillow: on test images the mean
# difference stays below 2 levels and the largest near 14, while a misread
# (CMYK inverted, wrong colour space) is tens of levels off everywhere. A few
# far-off values are allowed for sharp edges at high quality.
_LOSSY_MEAN_TOLERANCE = 3.0
_LOSSY_FAR = 64
_LOSSY_FAR_FRACTION = 0.001
# 16-bit images: tf.io drops the low byte, Pillow's view rounds.
_LOSSLESS_TOLERANCE = 1

_ORIENTATION_TAG = 0x0112
_import_lock = threading.Lock()


def _ops():
  """Imports TensorFlow (through `ops`) only when a file must be decoded.

  A rerun that finds every file in the cache (or only files it cannot open)
  then takes a fraction of a second instead of the seconds TensorFlow needs
  to load. The lock keeps scan threads from importing it all at once.
  """
  with _import_lock:
    from imgrec.data import ops  # pylint: disable=g-import-not-at-top
  return ops


@dataclasses.dataclass
class FileResult:
  """What the scan found out about one file.

  Attributes:
    path: the path as given.
    ok: whether the file is usable.
    reason: None when ok, else one of `REASONS`.
    detail: a sentence for people: what is wrong, or why the file was
      converted.
    format: Pillow's format name ("JPEG", "PNG", ...), if it got that far.
    mode: Pillow's mode of the stored image ("RGB", "CMYK", "I;16", ...).
    width: width as a viewer shows it (EXIF orientation applied); for a
      decompression bomb, the declared width.
    height: height, likewise.
    decode_path: the file the training pipeline should read: `path` itself,
      or an 8-bit RGB PNG in `prepared_dir`. None when not ok.
    conversion: None when `decode_path` is `path`, else one of `CONVERSIONS`.
    from_cache: whether this result came from the scan cache.
  """
  path: str
  ok: bool
  reason: str | None = None
  detail: str | None = None
  format: str | None = None
  mode: str | None = None
  width: int | None = None
  height: int | None = None
  decode_path: str | None = None
  conversion: str | None = None
  from_cache: bool = dataclasses.field(default=False, compare=False)

  @property
  def converted(self):
    return self.conversion is not None


class _Bad(Exception):
  """Ends the check of one file with a `reason`."""

  def __init__(self, reason, detail):
    super().__init__(detail)
    self.reason = reason
    self.detail = detail
    self.info = {}  # format, mode and size, when the header was read.


# --- Pillow's global settings ------------------------------------------------

_pillow_lock = threading.Lock()
_pillow_users = 0
_pillow_saved = None


@contextlib.contextmanager
def _strict_pillow():
  """Lifts Pillow's pixel limit and forbids truncated loads while scanning.

  Pillow's global MAX_IMAGE_PIXELS raises at its own threshold, so a larger
  `max_image_pixels` could never pass; the scan applies its limit itself, from
  the header. A caller's LOAD_TRUNCATED_IMAGES=True would hide truncated files.
  Both are restored when the last concurrent scan ends.
  """
  global _pillow_users, _pillow_saved
  with _pillow_lock:
    if _pillow_users == 0:
      _pillow_saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
      Image.MAX_IMAGE_PIXELS = None
      ImageFile.LOAD_TRUNCATED_IMAGES = False
    _pillow_users += 1
  try:
    yield
  finally:
    with _pillow_lock:
      _pillow_users -= 1
      if _pillow_users == 0:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _pillow_saved


# --- Checking one file -------------------------------------------------------


def _describe_unidentified(head, tail, size):
  """Returns (reason, detail) for bytes Pillow does not recognise."""
  signatures = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"),
                (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"),
                (b"MM\x00*", "TIFF"))
  kind = next((k for sig, k in signatures if head.startswith(sig)), None)
  if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
    kind = "WebP"
  elif head[:2] == b"BM" and head[6:10] == b"\x00" * 4:
    kind = "BMP"
  if kind:
    ends = {"JPEG": b"\xff\xd9" in tail, "PNG": b"IEND" in tail,
            "GIF": tail.rstrip(b"\x00").endswith(b";")}
    if not ends.get(kind, True):
      return "truncated", (f"starts like a {kind} file but ends early "
                           f"({size} bytes)")
    return "corrupt", f"starts like a {kind} file but its header is damaged"
  if head[4:8] == b"ftyp":
    brand = head[8:12].decode("latin-1")
    if brand in ("heic", "heix", "hevc", "heim", "heis", "mif1", "msf1"):
      return "unsupported_format", ("HEIF/HEIC photo, which neither Pillow nor "
                                    "tf.io reads: convert it to JPEG")
    if brand in ("avif", "avis"):
      return "unsupported_format", ("AVIF image that this Pillow cannot read: "
                                    "convert it to JPEG or PNG")
    return "not_an_image", f"a video or other ISO media file (brand {brand!r})"
  if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
    return "unsupported_format", "JPEG XL image: convert it to JPEG or PNG"
  if head.startswith(b"%PDF"):
    return "not_an_image", "a PDF document"
  try:
    text = head.decode("utf-8")
  except UnicodeDecodeError:
    text = None
  if text is not None:
    lower = text.lower()
    if "<svg" in lower:
      return "unsupported_format", ("SVG vector image: rasterize it to PNG "
                                    "first")
    if "<html" in lower or "<!doctype html" in lower:
      return "not_an_image", ("an HTML page, not an image (a failed "
                              "download or a login page?)")
    snippet = " ".join(text.split())[:40]
    return "not_an_image", f"a text file, not an image: {snippet!r}"
  return "not_an_image", (f"unknown content, not an image (starts with "
                          f"{head[:8].hex(' ')})")


def _classify(error):
  """Maps an exception raised while reading an image to a reason."""
  message = str(error) or type(error).__name__
  low = message.lower()
  if isinstance(error, Image.DecompressionBombError) or (
      "decompressed data too large" in low):
    return "decompression_bomb"
  if isinstance(error, EOFError) or "truncated" in low:
    return "truncated"
  if isinstance(error, MemoryError):
    return "unreadable"
  if ("not available" in low or "unsupported" in low or
      "not supported" in low or "ghostscript" in low):
    return "unsupported_format"
  return "corrupt"


def _bad(error, fmt, stage):
  message = str(error) or type(error).__name__
  what = f"{fmt} file: " if fmt else ""
  return _Bad(_classify(error), f"{what}{stage} failed: {message}")


def _orientation(im):
  try:
    return int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
  except Exception:  # pylint: disable=broad-except
    # Malformed EXIF blocks raise many kinds of errors; viewers then show the
    # image as stored, and so does the scan.
    return 1


def _tf_message(error):
  """Returns the useful part of a TensorFlow op error."""
  message = getattr(error, "message", None) or str(error)
  message = re.sub(r"\{\{.*?\}\}\s*", "", message)
  return message.split(" [Op:")[0].strip()


def _pixels_match(decoded, reference, lossy):
  """Whether tf.io's pixels are Pillow's, up to decoder differences."""
  if decoded.shape != reference.shape:
    return False
  height = reference.shape[0]
  # Compare in row blocks: an int16 copy of a 90-megapixel image is 0.5 GB.
  rows = max(1, (1 << 22) // max(1, reference[0].size))
  total = 0
  far = 0
  for start in range(0, height, rows):
    diff = np.abs(decoded[start:start + rows].astype(np.int16) -
                  reference[start:start + rows])
    if not lossy:
      if diff.max(initial=0) > _LOSSLESS_TOLERANCE:
        return False
      continue
    total += int(diff.sum(dtype=np.int64))
    far += int(np.count_nonzero(diff > _LOSSY_FAR))
  if not lossy:
    return True
  count = max(1, reference.size)
  return (total / count <= _LOSSY_MEAN_TOLERANCE and
          far <= count * _LOSSY_FAR_FRACTION)


def _has_transparency(im):
  return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
      "transparency" in im.info)


def _needs_conversion(im, view, data, channels, path=""):
  """Returns (conversion, detail), or (None, None) if tf.io reads `data` right.

  Args:
    im: the loaded Pillow image, as stored.
    view: Pillow's view: oriented, 8-bit RGB, transparency on white.
    data: the file's bytes.
    channels: the channel count the pipeline decodes with.
    path: the file's path; its extension matters (see below).
  """
  orientation = _orientation(im)
  if 2 <= orientation <= 8:
    return "exif_orientation", (f"EXIF orientation {orientation}: tf.io "
                                "ignores it, so the image is stored rotated")
  if im.format not in _TF_FORMATS:
    return "format_not_in_tf", f"tf.io cannot read {im.format} files"
  if (os.path.splitext(path)[1].lower() in (".jpg", ".jpeg", ".jpe") and
      im.format not in ("JPEG", "MPO", "PNG")):
    # The training pipeline reads all-JPEG lists with decode_jpeg alone,
    # which also reads PNG but not, say, a BMP named .jpg.
    return "extension_mismatch", (f"a {im.format} file named like a JPEG")
  ops = _ops()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf_errors = (tf.errors.InvalidArgumentError, tf.errors.UnknownError)
  try:
    decoded = ops.decode(data, 3).numpy()
  except tf_errors as e:
    return "tf_decode_failed", (f"tf.io cannot decode this {im.format} "
                                f"({im.mode}): {_tf_message(e)}")
  reference = np.asarray(view)
  if not _pixels_match(decoded, reference, im.format in _LOSSY_FORMATS):
    if _has_transparency(im):
      return "transparency", ("has transparency: tf.io drops the alpha "
                              "channel and shows what lies under it")
    return "tf_pixels_differ", (f"tf.io decodes this {im.format} "
                                f"({im.mode}) differently from Pillow")
  if channels == 1:
    if im.mode == "CMYK":
      # libjpeg cannot convert CMYK to gray and says so on stderr.
      return "gray_decode_failed", ("tf.io cannot decode a CMYK JPEG as 1 "
                                    "channel")
    try:
      ops.decode(data, 1)
    except tf_errors as e:
      return "gray_decode_failed", (f"tf.io cannot decode this {im.format} "
                                    f"as 1 channel: {_tf_message(e)}")
  return None, None


def _write_prepared(view, data, prepared_dir):
  """Writes `view` as a PNG named by the content hash; returns its path."""
  digest = hashlib.sha256(f"imgrec-scan-{SCAN_VERSION}:".encode() + data)
  path = os.path.join(prepared_dir, digest.hexdigest()[:32] + ".png")
  if os.path.exists(path):
    return path  # Same bytes, same conversion: written by an earlier scan.
  with fileio.atomic_write(path, "wb") as f:
    # Fast compression: these files are a cache, read back every epoch.
    view.save(f, "PNG", compress_level=1)
  return path


def _check_open_file(f, path, size, max_image_pixels, prepared_dir, channels):
  """Checks an open image file; returns a FileResult or raises _Bad."""
  # Pillow reads from `f` and leaves closing it to the caller.
  try:
    im = Image.open(f)
  except UnidentifiedImageError:
    f.seek(0)
    head = f.read(512)
    f.seek(max(0, size - 1024))
    raise _Bad(*_describe_unidentified(head, f.read(), size)) from None
  except Exception as e:  # pylint: disable=broad-except
    # Pillow's plugins raise anything from SyntaxError to struct.error on
    # damaged headers.
    raise _bad(e, None, "reading the header") from e
  fmt = im.format
  info = dict(format=fmt, mode=im.mode, width=im.width, height=im.height)
  try:
    pixels = im.width * im.height
    if pixels > max_image_pixels:
      raise _Bad("decompression_bomb",
                 f"{fmt} declares {im.width}x{im.height} = {pixels:,} pixels, "
                 f"above max_image_pixels={max_image_pixels:,}")
    if pixels == 0:
      raise _Bad("corrupt", f"{fmt} declares a size of "
                 f"{im.width}x{im.height}")
    if fmt == "PNG":
      # Only verify() checks chunk CRCs; load() reads damaged chunks silently
      # when the compressed data still inflates, and libpng then rejects them.
      # verify() uses up its image, so decoding starts from a fresh one.
      try:
        f.seek(0)
        Image.open(f).verify()
        f.seek(0)
        im = Image.open(f)
      except Exception as e:  # pylint: disable=broad-except
        raise _bad(e, fmt, "checking the chunks") from e
    try:
      im.load()
    except Exception as e:  # pylint: disable=broad-except
      raise _bad(e, fmt, "decoding") from e
    try:
      view = _ops().to_pil_mode(ImageOps.exif_transpose(im), 3)
    except Exception as e:  # pylint: disable=broad-except
      raise _Bad("unsupported_format", f"{fmt} image of mode {im.mode} "
                 f"cannot be converted to RGB: {e}") from e
  except _Bad as bad:
    bad.info = info
    raise
  info.update(width=view.width, height=view.height)
  f.seek(0)
  data = f.read()
  conversion, detail = _needs_conversion(im, view, data, channels, path)
  decode_path = path
  if conversion:
    try:
      decode_path = _write_prepared(view, data, prepared_dir)
    except OSError as e:
      # Not the image's fault: every later conversion would fail the same way.
      raise ImgrecError(f"Cannot write a converted image into prepared_dir "
                        f"{prepared_dir}: {e.strerror or e}. Free space or "
                        "pass another --prepared_dir.") from e
  return FileResult(path=path, ok=True, detail=detail, decode_path=decode_path,
                    conversion=conversion, **info)


def _check_file(path, max_image_pixels, prepared_dir, channels):
  """Checks one file; returns (FileResult, (size, mtime_ns) or None).

  The stat is None when the result must not be cached: a permission problem
  can be fixed without changing the file's size or mtime.
  """
  try:
    f = open(path, "rb")  # pylint: disable=consider-using-with
  except OSError as e:
    why = e.strerror or str(e)
    if isinstance(e, FileNotFoundError):
      why += " (deleted during the scan, or a broken link)"
    return FileResult(path=path, ok=False, reason="unreadable",
                      detail=f"cannot open the file: {why}"), None
  with f:
    st = os.fstat(f.fileno())
    stat = (st.st_size, st.st_mtime_ns)
    if st.st_size == 0:
      return FileResult(path=path, ok=False, reason="empty_file",
                        detail="the file is empty (0 bytes)"), stat
    try:
      return _check_open_file(f, path, st.st_size, max_image_pixels,
                              prepared_dir, channels), stat
    except _Bad as bad:
      return FileResult(path=path, ok=False, reason=bad.reason,
                        detail=bad.detail, **bad.info), stat
    except OSError as e:
      # Reading the bytes themselves failed (I/O error, file went away).
      if e.errno is None:
        raise
      return FileResult(path=path, ok=False, reason="unreadable",
                        detail=f"reading failed: {e.strerror or e}"), None


# --- The cache ---------------------------------------------------------------

_RESULT_FIELDS = ("ok", "reason", "detail", "format", "mode", "width",
                  "height", "conversion")


def _load_cache(path):
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError):
    return {}
  if not isinstance(data, dict) or data.get("version") != SCAN_VERSION:
    return {}
  entries = data.get("entries")
  return entries if isinstance(entries, dict) else {}


def _save_cache(path, entries):
  """Writes the cache atomically; a failure only costs a slower next scan."""
  try:
    fileio.write_json(path, {"version": SCAN_VERSION, "entries": entries},
                      ensure_ascii=False, separators=(",", ":"))
  except OSError as e:
    sys.stderr.write(f"imgrec: warning: cannot write scan cache {path}: "
                     f"{e.strerror or e}\n")


def _settings(max_image_pixels, channels):
  return {"max_image_pixels": max_image_pixels, "channels": channels}


def _cache_entry(result, stat, settings):
  entry = {"size": stat[0], "mtime_ns": stat[1], **settings}
  entry.update({k: getattr(result, k) for k in _RESULT_FIELDS})
  entry["prepared"] = (os.path.basename(result.decode_path)
                       if result.converted else None)
  return entry


def _from_cache(entry, path, settings, prepared_dir):
  """Returns the cached result for `path`, or None to check it again."""
  if not isinstance(entry, dict):
    return None
  try:
    st = os.stat(path)
  except OSError:
    return None
  if (entry.get("size") != st.st_size or entry.get("mtime_ns") !=
      st.st_mtime_ns or any(entry.get(k) != v for k, v in settings.items())):
    return None
  decode_path = None
  if entry.get("ok"):
    decode_path = path
    if entry.get("prepared"):
      decode_path = os.path.join(prepared_dir, entry["prepared"])
      if not os.path.isfile(decode_path):
        return None  # The prepared copy was cleaned up: make it again.
  return FileResult(path=path, decode_path=decode_path, from_cache=True,
                    **{k: entry.get(k) for k in _RESULT_FIELDS})


# --- Progress ----------------------------------------------------------------


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


# --- Public API --------------------------------------------------------------


def default_workers():
  """One thread per usable CPU, at most 16.

  Pillow and tf.io both release the GIL while they decode, so threads run in
  parallel without the start-up cost of processes (each would import
  TensorFlow).
  """
  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:
    cpus = os.cpu_count() or 1
  return max(1, min(16, cpus))


def default_prepared_dir(root):
  """Returns ~/.cache/imgrec/prepared/<name>-<hash of the absolute root>.

  $XDG_CACHE_HOME replaces ~/.cache when set.
  """
  root = os.path.abspath(root)
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  digest = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()
  name = os.path.basename(root.rstrip(os.sep)) or "root"
  return os.path.join(base, "imgrec", "prepared", f"{name}-{digest[:16]}")


def scan_files(paths, *, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
               prepared_dir, workers=None, progress=True, channels=3,
               cache_path=None):
  """Checks image files in parallel and says how the pipeline should read them.

  Each file is opened with Pillow; a declared size above `max_image_pixels`
  is refused before decoding. The file is then decoded fully by Pillow and
  by tf.io (`ops.decode`); when tf.io cannot read it or gives other pixels
  than Pillow's view (EXIF orientation, transparency, formats such as TIFF
  and PGM), Pillow's view is written once to `prepared_dir` as an 8-bit RGB
  PNG named by the content hash.

  Args:
    paths: image file paths.
    max_image_pixels: files declaring more pixels are "decompression_bomb".
    prepared_dir: folder for converted copies and, by default, the cache.
    workers: threads; default `default_workers()`.
    progress: show a progress line on stderr (only when it is a terminal).
    channels: 1 or 3, the channels the pipeline decodes with; tf.io reads
      some files (BMP, GIF, WebP, CMYK JPEG) only as 3 channels, so with 1
      these are converted too.
    cache_path: the scan cache; default `prepared_dir/scan_cache.json`.

  Returns:
    A list of `FileResult`, in the order of `paths`.

  Raises:
    ImgrecError: bad arguments, or `prepared_dir` cannot be written.
  """
  if not isinstance(max_image_pixels, int) or max_image_pixels <= 0:
    raise ImgrecError("max_image_pixels must be a positive integer. "
                      f"Received: max_image_pixels={max_image_pixels!r}")
  if channels not in (1, 3):
    raise ImgrecError(f"channels must be 1 or 3. Received: channels={channels}")
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
  cache_path = cache_path or os.path.join(prepared_dir, CACHE_NAME)
  cache = _load_cache(cache_path)
  settings = _settings(max_image_pixels, channels)

  paths = [os.fspath(p) for p in paths]
  results = [None] * len(paths)
  todo = []
  for i, path in enumerate(paths):
    results[i] = _from_cache(cache.get(os.path.abspath(path)), path, settings,
                             prepared_dir)
    if results[i] is None:
      todo.append(i)
  done = len(paths) - len(todo)
  bad = sum(1 for r in results if r is not None and not r.ok)
  bar = _Progress(len(paths), progress and bool(todo))
  if not todo:
    return results

  changed = False
  pool = concurrent.futures.ThreadPoolExecutor(
      workers, thread_name_prefix="imgrec-scan")
  pending = {}
  queue = iter(todo)
  last_save = time.monotonic()
  try:
    with _strict_pillow():
      while True:
        # A bounded window: a million queued futures would hold a lot of
        # memory, and Ctrl-C has less to cancel.
        while len(pending) < 4 * workers:
          i = next(queue, None)
          if i is None:
            break
          pending[pool.submit(_check_file, paths[i], max_image_pixels,
                              prepared_dir, channels)] = i
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
            cache[os.path.abspath(paths[i])] = _cache_entry(result, stat,
                                                            settings)
            changed = True
        bar.update(done, bad)
        if changed and time.monotonic() - last_save > 60:
          # Long scans keep their progress if interrupted.
          _save_cache(cache_path, cache)
          changed, last_save = False, time.monotonic()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    bar.close(done, bad)
    if changed:
      _save_cache(cache_path, cache)
  return results


def _stats(values):
  if not values:
    return {"min": None, "median": None, "max": None}
  return {"min": min(values), "median": statistics.median(values),
          "max": max(values)}


def _count(items):
  out = {}
  for item in items:
    out[item] = out.get(item, 0) + 1
  return dict(sorted(out.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _write_json(path, data):
  fileio.write_json(path, data, ensure_ascii=False, indent=1)


def scan_folder(folder, *, max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                max_bad_fraction=0.1, prepared_dir, report_path=None,
                workers=None, progress=True, channels=3, cache_path=None):
  """Scans every file of an image folder and keeps the usable ones.

  Args:
    folder: an `ImageFolder` from `find_images`.
    max_image_pixels: files declaring more pixels are skipped.
    max_bad_fraction: the largest fraction of a class's files (all splits
      together) that may be skipped.
    prepared_dir: folder for converted copies and the scan cache.
    report_path: where to write the JSON report, if given. It is written
      before any error is raised, so it can be read to see what went wrong.
    workers: threads; default `default_workers()`.
    progress: show a progress line on stderr (only when it is a terminal).
    channels: 1 or 3, the channels the pipeline decodes with.
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
  names = list(folder.splits)
  paths = [p for s in names for p in folder.splits[s].paths]
  start = time.monotonic()
  results = scan_files(paths, max_image_pixels=max_image_pixels,
                       prepared_dir=prepared_dir, workers=workers,
                       progress=progress, channels=channels,
                       cache_path=cache_path)
  seconds = time.monotonic() - start

  results_iter = iter(results)
  splits = {}
  counts = {}
  skipped = []
  per_class = {c: {"found": 0, "skipped": 0, "train_usable": 0}
               for c in folder.class_names}
  for name in names:
    split = folder.splits[name]
    keep_paths, keep_labels = [], []
    table = {c: {"found": 0, "usable": 0, "skipped": 0}
             for c in folder.class_names}
    for label in split.labels:
      result = next(results_iter)
      class_name = folder.class_names[label]
      row = table[class_name]
      row["found"] += 1
      per_class[class_name]["found"] += 1
      if result.ok:
        row["usable"] += 1
        keep_paths.append(result.decode_path)
        keep_labels.append(label)
        if name == "train":
          per_class[class_name]["train_usable"] += 1
      else:
        row["skipped"] += 1
        per_class[class_name]["skipped"] += 1
        skipped.append({"path": result.path, "split": name,
                        "class": class_name, "reason": result.reason,
                        "detail": result.detail})
    splits[name] = folder_lib.Split(keep_paths, keep_labels)
    counts[name] = table

  usable = [r for r in results if r.ok]
  own = os.path.abspath(report_path) if report_path else None
  # A CSV or TFDS listing names its files: walking its folder would only
  # report everything else there.
  listed = folder.layout not in ("classes", "splits")
  ignored = [] if listed else [
      (p, why) for p, why in
      folder_lib.list_ignored(folder.root, used_paths=paths)
      if os.path.abspath(p) != own]
  report = {
      "root": folder.root,
      "class_names": list(folder.class_names),
      "settings": {"max_image_pixels": max_image_pixels,
                   "max_bad_fraction": max_bad_fraction,
                   "channels": channels,
                   "prepared_dir": os.path.abspath(prepared_dir)},
      "totals": {"found": len(results), "usable": len(usable),
                 "skipped": len(skipped),
                 "converted": sum(r.converted for r in usable),
                 "ignored": len(ignored)},
      "scan": {"seconds": round(seconds, 3),
               "from_cache": sum(r.from_cache for r in results)},
      "splits": counts,
      "skipped_by_reason": _count(s["reason"] for s in skipped),
      "converted_by_why": _count(r.conversion for r in usable if r.converted),
      "formats": _count(r.format for r in usable),
      "modes": _count(r.mode for r in usable),
      "width": _stats([r.width for r in usable]),
      "height": _stats([r.height for r in usable]),
      "skipped": skipped,
      "ignored": [{"path": p, "why": why} for p, why in ignored],
  }
  if report_path:
    _write_json(report_path, report)

  problems = []
  for class_name, c in per_class.items():
    if c["train_usable"] == 0:
      problems.append(f"class {class_name!r} has no usable training image "
                      f"({c['skipped']} of {c['found']} files bad)")
    elif c["found"] and c["skipped"] > max_bad_fraction * c["found"]:
      problems.append(f"class {class_name!r} has {c['skipped']} bad files of "
                      f"{c['found']} ({c['skipped'] / c['found']:.0%}, above "
                      f"max_bad_fraction={max_bad_fraction:g})")
  if problems:
    where = (f" Every skipped file and why: {report_path}." if report_path
             else "")
    error = ImgrecError(f"Too many unusable images in {folder.root}: "
                        f"{'; '.join(problems)}. Fix or remove the files, or "
                        f"raise --max_bad_fraction.{where}")
    error.report = report
    raise error
  return folder_lib.ImageFolder(root=folder.root,
                                class_names=list(folder.class_names),
                                splits=splits, layout=folder.layout), report


def format_summary(report, max_listed=10):
  """Renders a scan report as a few lines for a terminal.

  Args:
    report: the dict returned by `scan_folder`.
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
  lines.append(f"converted to PNG: {totals['converted']} "
               f"({joined(report['converted_by_why'])})")
  ignored = _count(i["why"] for i in report["ignored"])
  lines.append(f"ignored (not images): {totals['ignored']} "
               f"({joined(ignored)})")
  for item in report["skipped"][:max_listed]:
    lines.append(f"  skipped {item['path']}: {item['reason']}: "
                 f"{item['detail']}")
  if len(report["skipped"]) > max_listed:
    lines.append(f"  ... and {len(report['skipped']) - max_listed} more")
  scan = report["scan"]
  lines.append(f"scanned {totals['found']} files in {scan['seconds']:.2f} s "
               f"({scan['from_cache']} from cache)")
  return "\n".join(lines)
