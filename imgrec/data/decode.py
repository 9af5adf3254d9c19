"""The one decode policy: how an image file or byte string becomes RGB pixels.

Every entry point that turns a file into pixels (the data scan, training,
evaluation, `Classifier`, the SavedModel `serving_bytes` signature) follows
this module, so a model sees the same pixels wherever it runs. The policy
is what an image viewer shows:

* EXIF orientation is applied (JPEG in the TensorFlow graph; other formats
  through Pillow);
* transparency is composited on white, with one integer formula everywhere:
  `(c * a + 255 * (255 - a) + 127) // 255`;
* 16-bit samples are rounded to 8 bits: `(v * 255 + 32767) // 65535`;
* palette, grayscale and CMYK images become RGB; 1-channel models get
  `to_channels(rgb, 1)` of that, whatever the file held;
* a JPEG stored upright is decoded in the DCT domain at the largest scale
  1/2, 1/4 or 1/8 that still leaves its shorter side at least the longer
  side of the size it is resized to (`jpeg_ratio`), wherever a target size
  is known: training, evaluation, `Classifier`, `serving_bytes`. A
  4032x3024 phone photo for a 224-pixel model decodes as 504x378, several
  times faster, and the resize starts from an image already averaged down.
  (`IMGREC_JPEG_DCT_SCALING=0` turns it off, to measure what it changes.)

`plan(image)` decides from a file's header (a Pillow image opened but not
decoded) how it is read: by `decode_bytes`, a TensorFlow graph function, or,
for what TensorFlow cannot read (TIFF, PGM/PPM, palette BMP, transparent
GIF, EXIF-rotated PNG or WebP), by `read_pillow`. A plan is "plain" when
TensorFlow's ordinary decoder already gives the policy's pixels, as for
most JPEG, PNG, GIF, BMP and WebP files; training reads those files as they
are, and reads a PNG copy made once by the scan for the rest.
`decode_bytes` is also what serving runs, so it refuses in the graph the
formats it cannot read the policy's way instead of giving other pixels.
"""

import dataclasses
import os
import sys
import threading
import time
import warnings

import numpy as np

from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import pixels
from imgrec.errors import ImgrecError

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ".pgm", ".ppm", ".pbm", ".pnm",
})
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe"})
# Files a clip classifier trains on (GIF stays an image).
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts",
})
# Pillow format names that TensorFlow decodes (MPO: camera JPEGs whose first
# frame is an ordinary JPEG).
TF_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"})
# Why a file is not read as it is by the training pipeline's plain decoder.
READ_REASONS = ("exif_orientation", "transparency", "16_bit",
                "format_not_in_tf", "palette_bmp", "gif_transparency",
                "extension_mismatch", "tf_decode_failed")

_ORIENTATION_TAG = 0x0112
DCT_SCALING = os.environ.get("IMGREC_JPEG_DCT_SCALING", "1") != "0"
_RATIOS = (1, 2, 4, 8)
# The exact integer IDCT (libjpeg's JDCT_ISLOW), which Pillow uses: the
# policy's JPEG pixels. TensorFlow's default ("") is the fast one, a few
# levels off; training alone decodes with it (`pipeline.decode_plain`).
EXACT_IDCT = "INTEGER_ACCURATE"
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclasses.dataclass(frozen=True)
class ReadPlan:
  """How one file is read.

  Attributes:
    reader: "tf" (`decode_bytes`) or "pillow" (`read_pillow`).
    why: None when TensorFlow's plain decoder gives the policy's pixels;
      else one of READ_REASONS.
    detail: a sentence for people, when `why` is set.
  """
  reader: str
  why: str | None = None
  detail: str | None = None

  @property
  def plain(self):
    return self.why is None


def orientation(image):
  """The EXIF orientation (1..8) of a Pillow image; 1 when absent or broken."""
  if image.format == "PNG" and "exif" not in image.info:
    # Pillow's PNG getexif() decodes the whole image to look for an eXIf
    # chunk after the pixels; one before them is already in `info`.
    return 1
  try:
    value = int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
  except Exception:  # pylint: disable=broad-except
    # Malformed EXIF blocks raise many kinds of errors; viewers then show the
    # image as stored, and so does imgrec.
    return 1
  return value if 1 <= value <= 8 else 1


def _png_bit_depth(image):
  fp = getattr(image, "fp", None)
  if image.format != "PNG" or fp is None:
    return 8
  position = fp.tell()
  try:
    fp.seek(24)
    depth = fp.read(1)
  finally:
    fp.seek(position)
  return depth[0] if depth else 8


def has_transparency(image):
  return image.mode in _ALPHA_MODES or "transparency" in image.info


def plan(image, path=""):
  """Decides how a file is read, from its header alone.

  Args:
    image: a Pillow image of the file, opened but not necessarily loaded.
    path: the file's path; a JPEG extension on another format matters,
      because training reads all-JPEG lists with the JPEG decoder.

  Returns:
    A ReadPlan.
  """
  fmt, deep = image.format, _png_bit_depth(image) == 16
  rotated = orientation(image) != 1
  if fmt not in TF_FORMATS:
    return ReadPlan("pillow", "format_not_in_tf",
                    f"TensorFlow cannot read {fmt} files")
  if fmt == "BMP" and image.mode in ("P", "L", "1"):
    return ReadPlan("pillow", "palette_bmp", "TensorFlow misreads BMP files "
                    "with a colour table")
  if fmt == "GIF" and "transparency" in image.info:
    return ReadPlan("pillow", "gif_transparency", "TensorFlow shows the "
                    "transparent pixels of a GIF as black")
  if rotated and fmt not in ("JPEG", "MPO"):
    return ReadPlan("pillow", "exif_orientation", f"EXIF orientation "
                    f"{orientation(image)} in a {fmt} file")
  if rotated:
    return ReadPlan("tf", "exif_orientation", f"EXIF orientation "
                    f"{orientation(image)}: the plain decoder ignores it")
  if has_transparency(image):
    return ReadPlan("tf", "transparency", "has transparency: the plain "
                    "decoder drops the alpha channel")
  if deep or image.mode.startswith("I;16"):
    return ReadPlan("tf", "16_bit", "16-bit samples: the plain decoder "
                    "truncates them to 8 bits")
  if (os.path.splitext(path)[1].lower() in JPEG_EXTENSIONS and
      fmt not in ("JPEG", "MPO", "PNG")):
    return ReadPlan("tf", "extension_mismatch",
                    f"a {fmt} file named like a JPEG")
  return ReadPlan("tf")


# --- The TensorFlow graph decoder ---------------------------------------------


# TensorFlow loads only when a file is decoded: a scan whose results are all
# cached then takes a fraction of a second instead of TensorFlow's start-up.
_import_lock = threading.Lock()
_importer = None
_import_seconds = []
_decoders = {}


def set_tensorflow_importer(importer):
  """Has the first lazy import of TensorFlow run `importer()` instead.

  The command-line tools pass one that hides TensorFlow's start-up lines.
  """
  global _importer
  _importer = importer


def import_tensorflow():
  """TensorFlow, imported through the importer `set_tensorflow_importer` set.

  Every lazy import of TensorFlow (or of a library that imports it, such
  as tensorflow-datasets) in the data layer goes through here, so a
  command-line tool that sets a quiet importer prints none of
  TensorFlow's start-up lines, whichever path imports it first.
  """
  with _import_lock:  # Scan threads must not import it all at once.
    first, start = "tensorflow" not in sys.modules, time.monotonic()
    if first and _importer is not None:
      _importer()
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if first:
      _import_seconds.append(time.monotonic() - start)
  return tf


def tensorflow_import_seconds():
  """Seconds the lazy import of TensorFlow took in this process (0 if none).

  Timings of work that imported TensorFlow on the way (a scan) subtract
  this: a start-up is not the work.
  """
  return sum(_import_seconds)


def decode_function(channels=3, target_size=None):
  """`decode_bytes` as a traced tf.function, for decoding files one by one.

  Eager execution of the policy's graph (its branches and loops) costs
  tens of milliseconds an image; the traced function, a fraction of one.
  Safe to call from several threads.
  """
  key = (channels, None if target_size is None else tuple(target_size))
  with _import_lock:
    fn = _decoders.get(key)
  if fn is None:
    tf = import_tensorflow()
    fn = tf.function(
        lambda contents: decode_bytes(contents, channels,
                                      target_size=target_size),
        input_signature=[tf.TensorSpec([], tf.string)])
    with _import_lock:
      fn = _decoders.setdefault(key, fn)
  return fn


def _jpeg_ratio_index(contents, target_size):
  """Index into _RATIOS of the DCT scale a JPEG decodes at (see jpeg_ratio).

  0 for bytes that are not a JPEG (a PNG named .jpg reaches decode_jpeg,
  which reads it whole).
  """
  tf = import_tensorflow()
  return tf.cond(
      tf.io.is_jpeg(contents),
      lambda: ratio_index_of_shape(tf.io.extract_jpeg_shape(contents),
                                   target_size),
      lambda: tf.constant(0, tf.int32))


def ratio_index_of_shape(shape, target_size):
  """`_jpeg_ratio_index` from a JPEG's [height, width, ...] shape tensor."""
  tf = import_tensorflow()
  need = max(int(s) for s in target_size)
  shorter = tf.minimum(shape[0], shape[1])
  index = tf.constant(0, tf.int32)
  for k, r in enumerate(_RATIOS[1:], start=1):
    index = tf.where((shorter + r - 1) // r >= need, k, index)
  return index


def jpeg_scale(width, height, target_size):
  """`jpeg_ratio` of a JPEG of `width` x `height`, in Python: 1, 2, 4 or 8."""
  need = max(int(s) for s in target_size)
  shorter = min(width, height)
  return max(r for r in _RATIOS if (shorter + r - 1) // r >= need or r == 1)


def jpeg_ratio(contents, target_size):
  """The DCT scale denominator (1, 2, 4 or 8) of a JPEG for `target_size`.

  The largest r for which the shorter side, decoded at 1/r, is still at
  least the longer side of `target_size` (libjpeg rounds sizes up).
  """
  tf = import_tensorflow()
  return tf.gather(tf.constant(_RATIOS), _jpeg_ratio_index(contents,
                                                          target_size))


def decode_jpeg_for(contents, target_size=None, dct_method=EXACT_IDCT):
  """`tf.io.decode_jpeg` of RGB, DCT-scaled for `target_size` when given."""
  tf = import_tensorflow()
  if target_size is None or not DCT_SCALING:
    return tf.io.decode_jpeg(contents, channels=3, dct_method=dct_method)
  branches = [lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r,
                                            dct_method=dct_method)
              for r in _RATIOS]
  image = tf.switch_case(_jpeg_ratio_index(contents, target_size), branches)
  image.set_shape([None, None, 3])
  return image


def jpeg_shorter_side(path, window=1 << 17):
  """The shorter side of a JPEG from its frame header, read in Python.

  A few microseconds a file, to know before decoding whether any image is
  large enough for a DCT-scaled decode.

  Returns:
    The shorter side in pixels; 0 for a file that is not a JPEG; None when
    the frame header is not within the first `window` bytes.
  """
  try:
    with open(path, "rb") as f:
      data = f.read(window)
  except OSError:
    return None
  if data[:2] != b"\xff\xd8":
    return 0
  pos = 2
  while pos + 9 < len(data):
    if data[pos] != 0xFF:
      return None
    marker = data[pos + 1]
    if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA,
                  0xCB, 0xCD, 0xCE, 0xCF):
      height = int.from_bytes(data[pos + 5:pos + 7], "big")
      width = int.from_bytes(data[pos + 7:pos + 9], "big")
      return min(height, width)
    if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
      pos += 2
      continue
    if marker == 0xFF:
      pos += 1
      continue
    pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
  return None


def _ops():
  from imgrec.data import ops  # pylint: disable=g-import-not-at-top
  return ops




def _leading_bytes(contents, count):
  """The first `count` bytes as int32, zero-padded to exactly `count`."""
  return _bytes_at(contents, 0, count)


def _jpeg_orientation(contents):
  """The EXIF orientation of JPEG bytes, read in the graph; 1 if absent.

  Reads a few bytes at a time (the marker segments up to the EXIF one,
  then its first directory), never the whole file.
  """
  tf = import_tensorflow()
  exif = tf.constant([0x45, 0x78, 0x69, 0x66, 0, 0], tf.int32)  # "Exif\0\0"

  # Walk the marker segments after SOI up to the EXIF APP1 segment.
  def cond(step, pos, tiff, done):
    return (step < 32) & tf.logical_not(done)

  def body(step, pos, tiff, done):
    b = _bytes_at(contents, pos, 10)
    marker = b[1]
    is_exif = tf.equal(marker, 0xE1) & tf.reduce_all(tf.equal(b[4:], exif))
    done = (tf.logical_not(tf.equal(b[0], 0xFF)) | tf.equal(marker, 0xDA) |
            tf.equal(marker, 0xD9) | is_exif)
    tiff = tf.where(is_exif, pos + 10, tiff)
    return step + 1, pos + 2 + b[2] * 256 + b[3], tiff, done

  _, _, tiff, _ = tf.while_loop(cond, body, (
      tf.constant(0), tf.constant(2), tf.constant(-1), tf.constant(False)))
  head = _bytes_at(contents, tf.maximum(tiff, 0), 8)
  little = tf.equal(head[0], 0x49)  # "II": little-endian.

  def u16(b, i):
    return tf.where(little, b[..., i] + 256 * b[..., i + 1],
                    256 * b[..., i] + b[..., i + 1])

  ifd = tiff + tf.where(little, u16(head, 4) + 65536 * u16(head, 6),
                        65536 * u16(head, 4) + u16(head, 6))
  entries = 64
  table = _bytes_at(contents, tf.maximum(ifd, 0), 2 + 12 * entries)
  count = u16(table, 0)
  rows = tf.reshape(table[2:], [entries, 12])
  match = (tf.range(entries) < count) & tf.equal(u16(rows, 0),
                                                 _ORIENTATION_TAG)
  values = tf.boolean_mask(u16(rows, 8), match)
  value = tf.cond(tf.size(values) > 0, lambda: values[0], lambda: 1)
  valid = (tiff >= 0) & (value >= 1) & (value <= 8)
  return tf.where(valid, value, 1)


def _apply_orientation(image, value):
  """Applies an EXIF orientation as Pillow's `ImageOps.exif_transpose` does."""
  tf = import_tensorflow()
  transpose = lambda x: tf.transpose(x, [1, 0, 2])
  branches = [
      lambda: image,                                   # 1: as stored
      lambda: tf.reverse(image, [1]),                  # 2: mirrored
      lambda: tf.reverse(image, [0, 1]),               # 3: upside down
      lambda: tf.reverse(image, [0]),                  # 4: flipped
      lambda: transpose(image),                        # 5: transposed
      lambda: tf.reverse(transpose(image), [1]),       # 6: turned right
      lambda: tf.reverse(transpose(image), [0, 1]),    # 7: transversed
      lambda: tf.reverse(transpose(image), [0]),       # 8: turned left
  ]
  return tf.switch_case(value - 1, branches)


def composite_on_white(rgba):
  """uint8 [..., 4] -> [..., 3]: the policy's alpha compositing (tensors)."""
  tf = import_tensorflow()
  x = tf.cast(rgba, tf.int32)
  rgb, alpha = x[..., :3], x[..., 3:]
  return tf.cast((rgb * alpha + 255 * (255 - alpha) + 127) // 255, tf.uint8)


def _png_has_alpha(contents):
  """Whether PNG bytes carry transparency: an alpha channel or a tRNS chunk."""
  tf = import_tensorflow()
  color_type = _leading_bytes(contents, 26)[25]

  def chunk_at(pos):
    head = _bytes_at(contents, pos, 8)
    length = ((head[0] * 256 + head[1]) * 256 + head[2]) * 256 + head[3]
    return length, tf.strings.substr(contents, pos + 4, 4)

  # Chunks before the image data: IHDR, PLTE, tRNS, text, colour profile...
  def cond(step, pos, found):
    return (step < 64) & tf.logical_not(found) & (pos > 0)

  def body(step, pos, found):
    length, kind = chunk_at(pos)
    found = tf.equal(kind, b"tRNS")
    done = tf.equal(kind, b"IDAT") | tf.equal(kind, b"") | (length < 0)
    return step + 1, tf.where(done, 0, pos + 12 + length), found

  _, _, trns = tf.while_loop(cond, body, (tf.constant(0), tf.constant(8),
                                          tf.constant(False)))
  return tf.equal(color_type, 4) | tf.equal(color_type, 6) | trns


def _png_to_rgb(contents):
  tf = import_tensorflow()
  sixteen = tf.equal(_leading_bytes(contents, 25)[24], 16)
  # libpng invents an alpha channel for images without one (for a 4-bit
  # palette, a constant 15): decode four channels only when there is alpha.
  alpha = _png_has_alpha(contents)

  def decode(channels):
    if channels == 3:
      return lambda: tf.io.decode_png(contents, channels=3)
    return lambda: tf.io.decode_png(contents, channels=4)

  def deep(channels):
    def fn():
      x = tf.cast(tf.io.decode_png(contents, channels=channels,
                                   dtype=tf.uint16), tf.int32)
      return tf.cast((x * 255 + 32767) // 65535, tf.uint8)
    return fn

  def with_alpha():
    rgba = tf.cond(sixteen, deep(4), decode(4))
    return composite_on_white(rgba)

  def without_alpha():
    return tf.cond(sixteen, deep(3), decode(3))

  return tf.cond(alpha, with_alpha, without_alpha)


def _bytes_at(contents, pos, count):
  """`count` bytes of `contents` from `pos` as int32, zero-padded.

  A position past the end (a damaged or hostile header) gives zeros, not
  an error.
  """
  tf = import_tensorflow()
  pos = tf.clip_by_value(pos, 0, tf.strings.length(contents))
  raw = tf.cast(tf.io.decode_raw(tf.strings.substr(contents, pos, count),
                                 tf.uint8), tf.int32)
  return tf.pad(raw, [[0, count - tf.shape(raw)[0]]])


def _gif_first_frame_transparent(contents):
  """Whether the first frame of GIF bytes has a transparent colour.

  Walks the blocks before the first image: extensions and their
  sub-blocks, until a Graphic Control Extension (its flags say) or the
  image descriptor (no transparency).
  """
  tf = import_tensorflow()
  head = _bytes_at(contents, 0, 13)
  flags = head[10]
  table = tf.where(flags >= 128, 3 * tf.bitwise.left_shift(
      2, tf.bitwise.bitwise_and(flags, 7)), 0)

  def cond(step, pos, in_blocks, found, done):
    return (step < 512) & tf.logical_not(done)

  def body(step, pos, in_blocks, found, done):
    b = _bytes_at(contents, pos, 4)
    gce = tf.logical_not(in_blocks) & tf.equal(b[0], 0x21) & tf.equal(
        b[1], 0xF9)
    extension = tf.logical_not(in_blocks) & tf.equal(b[0], 0x21)
    other = tf.logical_not(in_blocks) & tf.logical_not(extension)
    found = found | (gce & tf.equal(b[3] % 2, 1))
    done = done | gce | other
    end_of_blocks = in_blocks & tf.equal(b[0], 0)
    pos = tf.where(extension, pos + 2,
                   tf.where(end_of_blocks, pos + 1, pos + b[0] + 1))
    in_blocks = (in_blocks & tf.logical_not(end_of_blocks)) | extension
    return step + 1, pos, in_blocks, found, done

  _, _, _, found, _ = tf.while_loop(
      cond, body, (tf.constant(0), 13 + table, tf.constant(False),
                   tf.constant(False), tf.constant(False)))
  return found


def _webp_has_alpha(contents):
  """Whether WebP bytes carry alpha (VP8X flags, or the VP8L header bit)."""
  tf = import_tensorflow()
  b = _bytes_at(contents, 0, 25)
  kind = tf.strings.substr(contents, 12, 4)
  vp8x_alpha = tf.equal(tf.bitwise.bitwise_and(b[20], 0x10), 0x10)
  vp8l_alpha = tf.equal(tf.bitwise.bitwise_and(b[24], 0x10), 0x10)
  return ((tf.equal(kind, b"VP8X") & vp8x_alpha) |
          (tf.equal(kind, b"VP8L") & vp8l_alpha))


def _check_bmp_gif(contents):
  """Refuses, in the graph, the BMP and GIF files TensorFlow would misread."""
  tf = import_tensorflow()
  b = _bytes_at(contents, 0, 30)
  is_bmp = tf.equal(b[0], 0x42) & tf.equal(b[1], 0x4D)
  palette_bmp = is_bmp & (b[28] + 256 * b[29] <= 8)
  is_gif = tf.equal(b[0], 0x47) & tf.equal(b[1], 0x49) & tf.equal(b[2], 0x46)
  transparent_gif = tf.cond(is_gif,
                            lambda: _gif_first_frame_transparent(contents),
                            lambda: tf.constant(False))
  return [
      tf.debugging.Assert(tf.logical_not(palette_bmp), [
          "BMP files with a colour table (8 bits per pixel or less) are not "
          "read here: send PNG or JPEG"]),
      tf.debugging.Assert(tf.logical_not(transparent_gif), [
          "GIF files with transparency are not read here: send PNG"]),
  ]


def _declared_pixels(contents):
  """Width x height that the header of JPEG/PNG/GIF/BMP/WebP bytes declares."""
  tf = import_tensorflow()
  b = tf.cast(_bytes_at(contents, 0, 32), tf.int64)

  def le(i, n):
    return sum(b[i + k] * (256 ** k) for k in range(n))

  def be(i, n):
    return sum(b[i + k] * (256 ** (n - 1 - k)) for k in range(n))

  def jpeg():
    shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.int64)
    return shape[0] * shape[1]

  def bmp():
    height = le(22, 4)  # Negative (top-down rows) as a 32-bit integer.
    return le(18, 4) * tf.where(height >= 2**31, 2**32 - height, height)

  def webp():
    kind = tf.strings.substr(contents, 12, 4)
    vp8 = (le(26, 2) % 16384) * (le(28, 2) % 16384)
    bits = le(21, 4)
    vp8l = (bits % 16384 + 1) * ((bits // 16384) % 16384 + 1)
    vp8x = (le(24, 3) + 1) * (le(27, 3) + 1)
    return tf.where(tf.equal(kind, b"VP8X"), vp8x,
                    tf.where(tf.equal(kind, b"VP8L"), vp8l, vp8))

  magic = tf.strings.substr(contents, 0, 4)
  return tf.case([
      (tf.io.is_jpeg(contents), jpeg),
      (tf.equal(magic, b"\x89PNG"), lambda: be(16, 4) * be(20, 4)),
      (tf.equal(tf.strings.substr(contents, 0, 3), b"GIF"),
       lambda: le(6, 2) * le(8, 2)),
      (tf.equal(tf.strings.substr(contents, 0, 2), b"BM"), bmp),
      (tf.equal(magic, b"RIFF"), webp),
  ], default=lambda: tf.constant(0, tf.int64))


def decode_bytes(contents, channels=3, max_pixels=None, target_size=None):
  """Decodes encoded image bytes under the policy (a TensorFlow function).

  JPEG (EXIF orientation applied), PNG (8 or 16 bits, alpha composited on
  white), WebP (alpha likewise), GIF (first frame) and BMP. Palette BMP and
  transparent GIF raise InvalidArgumentError: TensorFlow would misread them.

  Args:
    contents: scalar string tensor.
    channels: 1 or 3 output channels.
    max_pixels: if set, an image whose header declares more pixels raises
      InvalidArgumentError before any decoding (a 20000 x 20000 PNG of a
      few kilobytes would take gigabytes to decode).
    target_size: the (height, width) the image will be resized to, if
      known: an upright JPEG is then decoded DCT-scaled (`jpeg_ratio`).

  Returns:
    uint8 tensor [H, W, channels].
  """
  tf = import_tensorflow()
  contents = tf.convert_to_tensor(contents, tf.string)
  if max_pixels is not None:
    pixels = _declared_pixels(contents)
    check = tf.debugging.Assert(pixels <= max_pixels, [
        "the image declares", pixels, "pixels, above the limit of",
        max_pixels])
    with tf.control_dependencies([check]):
      contents = tf.identity(contents)
  magic = tf.strings.substr(contents, 0, 4)
  is_png = tf.equal(magic, b"\x89PNG")
  is_webp = tf.equal(magic, b"RIFF") & tf.equal(
      tf.strings.substr(contents, 8, 4), b"WEBP")

  def jpeg():
    value = _jpeg_orientation(contents)
    return tf.cond(
        tf.equal(value, 1), lambda: decode_jpeg_for(contents, target_size),
        lambda: _apply_orientation(tf.io.decode_jpeg(
            contents, channels=3, dct_method=EXACT_IDCT), value))

  def webp():
    # TensorFlow decodes a WebP only with the channels it has.
    return tf.cond(
        _webp_has_alpha(contents),
        lambda: composite_on_white(tf.io.decode_image(
            contents, channels=4, expand_animations=False)),
        lambda: tf.io.decode_image(contents, channels=3,
                                   expand_animations=False))

  def other():
    with tf.control_dependencies(_check_bmp_gif(contents)):
      return tf.io.decode_image(contents, channels=3, expand_animations=False)

  image = tf.case([(tf.io.is_jpeg(contents), jpeg),
                   (is_png, lambda: _png_to_rgb(contents)),
                   (is_webp, webp)], default=other)
  image.set_shape([None, None, 3])
  return _ops().to_channels(image, channels)


# --- Pillow -------------------------------------------------------------------


def pillow_rgb(image):
  """A Pillow image (any mode, orientation applied) as uint8 RGB [H, W, 3]."""
  if image.mode.startswith("I;16") or image.mode == "I":
    samples = np.asarray(image, dtype=np.int64)
    if image.mode.startswith("I;16") or samples.max(initial=0) > 255:
      samples = (np.clip(samples, 0, 65535) * 255 + 32767) // 65535
    gray = np.clip(samples, 0, 255).astype(np.uint8)
    return np.repeat(gray.reshape(image.size[1], image.size[0], 1), 3, -1)
  if has_transparency(image):
    return pixels.composite_on_white(np.asarray(image.convert("RGBA")))
  return np.asarray(image.convert("RGB"), dtype=np.uint8).reshape(
      image.size[1], image.size[0], 3)


def read_pillow(file, channels=3, target_size=None):
  """Reads an image file with Pillow under the policy: the pixels
  `decode_bytes` gives, without TensorFlow.

  JPEGs decode with the exact IDCT and, for a `target_size`, DCT-scaled as
  `jpeg_ratio` says (Pillow's `draft`, libjpeg's same scaled IDCT); 16-bit
  colour PNGs are read at 16 bits (Pillow keeps only the high byte) and
  rounded as the policy says.

  Args:
    file: a path or a binary file object.
    channels: 1 or 3.
    target_size: the (height, width) the image will be resized to, if known.

  Returns:
    uint8 numpy array [H, W, channels].

  Raises:
    The errors of Pillow (`UnidentifiedImageError`, `OSError`, ...).
  """
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    # The caller checked the header's pixel count against its own limit.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    image = Image.open(file)
  with image:
    rgb = None
    if image.format in ("JPEG", "MPO"):
      _draft_for(image, target_size)
    elif (image.format == "PNG" and _png_bit_depth(image) == 16 and
          image.mode in ("RGB", "RGBA", "LA")):
      rgb = _deep_png_rgb(image)
    if rgb is None:
      rgb = pillow_rgb(ImageOps.exif_transpose(image))
  return pixels.to_channels(rgb, channels)


def _draft_for(image, target_size):
  """Asks Pillow to decode an upright JPEG DCT-scaled for `target_size`."""
  if target_size is None or not DCT_SCALING or orientation(image) != 1:
    return
  width, height = image.size
  r = jpeg_scale(width, height, target_size)
  if r > 1:
    # Pillow picks the largest scale whose size is at least the one asked:
    # exactly 1/r for (width // r, height // r).
    image.draft(image.mode if image.mode == "CMYK" else "RGB",
                (width // r, height // r))


def _deep_png_rgb(image):
  """A 16-bit colour PNG (any EXIF orientation left as stored: TensorFlow
  reads these) as the policy's uint8 RGB, or None without PyAV (Pillow's
  8 bits are used then)."""
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  if orientation(image) != 1:
    return None
  alpha = image.mode in ("RGBA", "LA")
  fp = image.fp
  fp.seek(0)
  with av.open(fp, format="png_pipe") as container:
    frame = next(container.decode(video=0))
    deep = frame.to_ndarray(format="rgba64le" if alpha else "rgb48le")
  rounded = (deep.astype(np.int64) * 255 + 32767) // 65535
  if not alpha:
    return rounded.astype(np.uint8)
  return pixels.composite_on_white(rounded)


def open_plan(path, max_pixels=None):
  """Returns the ReadPlan of a file, or None if Pillow cannot open it.

  Raises:
    ImgrecError: the header declares more than `max_pixels` pixels.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(path) as image:
        width, height = image.size
        how = plan(image, path)
  except Image.DecompressionBombError:
    width = height = None
  except Exception:  # pylint: disable=broad-except
    return None
  if width is None and max_pixels is not None:
    raise ImgrecError(
        f"Image {path} declares more than {2 * Image.MAX_IMAGE_PIXELS:,} "
        "pixels (a decompression bomb, or a photo far larger than any model "
        "input). Shrink it.")
  if max_pixels is not None and width * height > max_pixels:
    raise ImgrecError(
        f"Image {path} declares {width}x{height} = {width * height:,} pixels, "
        f"above the limit of {max_pixels:,} (a decompression bomb, or a "
        "photo far larger than any model input). Shrink it, or raise the "
        "limit (--max_image_pixels) if you trust it.")
  return how


def read_file(path, channels=3, max_pixels=DEFAULT_MAX_IMAGE_PIXELS,
              target_size=None):
  """Reads one image file under the policy, as every entry point does.

  Pillow reads every kind (`read_pillow`): the pixels TensorFlow's policy
  decoder gives (`tests/test_decode.py` holds them equal), without
  importing TensorFlow.

  Args:
    path: the image file.
    channels: 1 or 3.
    max_pixels: refuse, from the header, images declaring more pixels.
    target_size: the size the image will be resized to, if known (see
      `decode_bytes`).

  Returns:
    uint8 numpy array [H, W, channels].

  Raises:
    ImgrecError: the file is missing, not a regular file, too large or not
      a readable image.
  """
  if not os.path.exists(path):
    raise ImgrecError(f"Image file {path} does not exist.")
  if not os.path.isfile(path):
    raise ImgrecError(f"{path} is not a regular file (a folder, FIFO or "
                      "device): give image files.")
  open_plan(path, max_pixels)  # The header's pixel count, before decoding.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    return read_pillow(path, channels, target_size)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ImgrecError(f"Cannot read image {path}: {e}. Remove or replace "
                      "the file.") from e
