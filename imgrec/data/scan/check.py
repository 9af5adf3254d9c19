"""Checks one image file: readable, not a bomb, and how the pipeline must read it.

`check_file` opens the file with Pillow (header first, so a decompression
bomb is refused before it is decoded), decodes it fully, asks the decode
policy (`imgrec.data.decode.plan`) how it is read, and decodes it the way
every entry point will. A file TensorFlow's plain decoder reads as the
policy says is used as it is; for the others the policy's pixels are written
once as an 8-bit RGB PNG into a `prepared_dir`, which the pipeline reads.
"""

import contextlib
import dataclasses
import hashlib
import os
import re
import stat as stat_lib
import threading

from PIL import Image
from PIL import ImageFile
from PIL import ImageOps
from PIL import UnidentifiedImageError

from imgrec import fileio
from imgrec.data import decode
from imgrec.errors import ImgrecError

REASONS = ("empty_file", "unreadable", "not_an_image", "unsupported_format",
           "truncated", "corrupt", "decompression_bomb")
# Part of every prepared file name: bump it when a check or a conversion
# changes, so old results are not reused.
SCAN_VERSION = 3


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
    conversion: None when `decode_path` is `path`, else the decode policy's
      reason (`imgrec.data.decode.READ_REASONS`).
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
  row: int | None = dataclasses.field(default=None, compare=False)

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


# --- Pillow's global settings ----------------------------------------------------

_pillow_lock = threading.Lock()
_pillow_users = 0
_pillow_saved = None


@contextlib.contextmanager
def strict_pillow():
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


# --- What is wrong with a file ------------------------------------------------


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
    return "not_an_image", "a text file, not an image"
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


def _tf_message(error):
  """Returns the useful part of a TensorFlow op error."""
  message = getattr(error, "message", None) or str(error)
  message = re.sub(r"\{\{.*?\}\}\s*", "", message)
  return message.split(" [Op:")[0].strip()


def _opaque(image):
  """Whether an image with an alpha channel is fully opaque anyway."""
  if image.mode not in ("RGBA", "LA"):
    return False
  return image.getchannel("A").getextrema() == (255, 255)


# --- Checking one file --------------------------------------------------------


def _write_prepared(pixels, data, prepared_dir):
  """Writes `pixels` as a PNG named by the content hash; returns its path."""
  digest = hashlib.sha256(f"imgrec-scan-{SCAN_VERSION}:".encode() + data)
  path = os.path.join(prepared_dir, digest.hexdigest()[:32] + ".png")
  if os.path.exists(path):
    return path  # Same bytes, same conversion: written by an earlier scan.
  with fileio.atomic_write(path, "wb") as f:
    # Fast compression: these files are a cache, read back every epoch.
    Image.fromarray(pixels).save(f, "PNG", compress_level=1)
  return path


def _open_header(f, size, max_image_pixels):
  """Opens the image and checks its declared size; returns the Pillow image."""
  try:
    image = Image.open(f)
  except UnidentifiedImageError:
    f.seek(0)
    head = f.read(512)
    f.seek(max(0, size - 1024))
    raise _Bad(*_describe_unidentified(head, f.read(), size)) from None
  except Exception as e:  # pylint: disable=broad-except
    # Pillow's plugins raise anything from SyntaxError to struct.error on
    # damaged headers.
    raise _bad(e, None, "reading the header") from e
  pixels = image.width * image.height
  bad = None
  if pixels > max_image_pixels:
    bad = _Bad("decompression_bomb",
               f"{image.format} declares {image.width}x{image.height} = "
               f"{pixels:,} pixels, above max_image_pixels="
               f"{max_image_pixels:,}")
  elif pixels == 0:
    bad = _Bad("corrupt", f"{image.format} declares a size of "
               f"{image.width}x{image.height}")
  if bad:
    bad.info = dict(format=image.format, mode=image.mode, width=image.width,
                    height=image.height)
    raise bad
  return image


def _load(f, image):
  """Decodes the whole image with Pillow (finds truncation and corruption)."""
  fmt = image.format
  if fmt == "PNG":
    # Only verify() checks chunk CRCs; load() reads damaged chunks silently
    # when the compressed data still inflates, and libpng then rejects them.
    # verify() uses up its image, so decoding starts from a fresh one.
    try:
      f.seek(0)
      Image.open(f).verify()
      f.seek(0)
      image = Image.open(f)
    except Exception as e:  # pylint: disable=broad-except
      raise _bad(e, fmt, "checking the chunks") from e
  try:
    image.load()
  except Exception as e:  # pylint: disable=broad-except
    raise _bad(e, fmt, "decoding") from e
  return image


def _policy_pixels(image, data, how):
  """The policy's pixels of a loaded image; returns (pixels, plan)."""
  if how.reader == "tf":
    tf = decode.import_tensorflow()
    try:
      return decode.decode_function(3)(data).numpy(), how
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
      how = decode.ReadPlan(
          "pillow", "tf_decode_failed", f"TensorFlow cannot decode this "
          f"{image.format} ({image.mode}): {_tf_message(e)}")
  try:
    return decode.pillow_rgb(ImageOps.exif_transpose(image)), how
  except Exception as e:  # pylint: disable=broad-except
    raise _Bad("unsupported_format", f"{image.format} image of mode "
               f"{image.mode} cannot be converted to RGB: {e}") from e


def _check_open_file(f, path, size, max_image_pixels, prepared_dir):
  """Checks an open image file; returns a FileResult or raises _Bad."""
  # Pillow reads from `f` and leaves closing it to the caller.
  image = _open_header(f, size, max_image_pixels)
  info = dict(format=image.format, mode=image.mode, width=image.width,
              height=image.height)
  try:
    how = decode.plan(image, path)  # From the header, before decoding.
    image = _load(f, image)
    if how.why == "transparency" and _opaque(image):
      how = decode.ReadPlan("tf")  # Compositing would change nothing.
    f.seek(0)
    data = f.read()
    pixels, how = _policy_pixels(image, data, how)
  except _Bad as bad:
    bad.info = info
    raise
  info.update(height=pixels.shape[0], width=pixels.shape[1])
  decode_path = path
  if not how.plain:
    try:
      decode_path = _write_prepared(pixels, data, prepared_dir)
    except OSError as e:
      # Not the image's fault: every later conversion would fail the same way.
      raise ImgrecError(f"Cannot write a converted image into prepared_dir "
                        f"{prepared_dir}: {e.strerror or e}. Free space or "
                        "pass another --prepared_dir.") from e
  return FileResult(path=path, ok=True, detail=how.detail,
                    decode_path=decode_path, conversion=how.why, **info)


def check_file(path, max_image_pixels, prepared_dir):
  """Checks one file; returns (FileResult, (size, mtime_ns) or None).

  Call it inside `strict_pillow()`. The stat is None when the result must
  not be cached: a permission problem can be fixed without changing the
  file's size or mtime.
  """
  try:
    # Non-blocking: opening a FIFO waits for a writer otherwise.
    f = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
  except OSError as e:
    why = e.strerror or str(e)
    if isinstance(e, FileNotFoundError):
      why += " (deleted during the scan, or a broken link)"
    return FileResult(path=path, ok=False, reason="unreadable",
                      detail=f"cannot open the file: {why}"), None
  with f:
    st = os.fstat(f.fileno())
    if not stat_lib.S_ISREG(st.st_mode):
      return FileResult(path=path, ok=False, reason="unreadable",
                        detail="not a regular file (a FIFO, socket or "
                        "device)"), None
    stat = (st.st_size, st.st_mtime_ns)
    if st.st_size == 0:
      return FileResult(path=path, ok=False, reason="empty_file",
                        detail="the file is empty (0 bytes)"), stat
    try:
      return _check_open_file(f, path, st.st_size, max_image_pixels,
                              prepared_dir), stat
    except _Bad as bad:
      return FileResult(path=path, ok=False, reason=bad.reason,
                        detail=bad.detail, **bad.info), stat
    except OSError as e:
      # Reading the bytes themselves failed (I/O error, file went away).
      if e.errno is None:
        raise
      return FileResult(path=path, ok=False, reason="unreadable",
                        detail=f"reading failed: {e.strerror or e}"), None
