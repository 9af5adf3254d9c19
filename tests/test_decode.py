"""Tests for the one decode policy: the graph decoder, the Pillow reader, the plan."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from imgrec.data import decode

H, W = 20, 30


def _encoded(image, fmt, **kw):
  buf = io.BytesIO()
  image.save(buf, fmt, **kw)
  return buf.getvalue()


def _smooth():
  y, x = np.mgrid[0:H, 0:W]
  return np.stack([(x * 8) % 256, (y * 12) % 256, ((x + y) * 5) % 256],
                  -1).astype(np.uint8)


def _random_rgba(seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (H, W, 4), dtype=np.uint8)


def _graph(data, channels=3):
  return decode.decode_bytes(data, channels).numpy()


def _pillow(data, channels=3):
  return decode.read_pillow(io.BytesIO(data), channels)


def _plan(data, name=""):
  with Image.open(io.BytesIO(data)) as image:
    return decode.plan(image, name)


# Pillow's own transposes, named as EXIF orientations 1..8.
_PILLOW_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_in_the_graph_is_pillows(orientation):
  image = Image.fromarray(_smooth())
  exif = Image.Exif()
  exif[0x0112] = orientation
  # A JFIF segment before the EXIF one: the graph walks the markers.
  data = _encoded(image, "JPEG", quality=95, exif=exif.tobytes(),
                  dpi=(72, 72))
  stored = _graph(_encoded(image, "JPEG", quality=95))
  expected = stored if orientation == 1 else np.asarray(
      Image.fromarray(stored).transpose(_PILLOW_TRANSPOSE[orientation]))
  np.testing.assert_array_equal(_graph(data), expected)
  # And Pillow's reader agrees up to the two JPEG decoders' differences.
  assert np.abs(_pillow(data).astype(int) - expected).mean() < 2
  assert _plan(data).why == (None if orientation == 1 else
                             "exif_orientation")


@pytest.mark.parametrize("kind", ["rgba_png", "la_png", "palette_trns_png",
                                  "rgba_webp", "rgba_webp_lossy"])
def test_transparency_is_composited_on_white_the_same_everywhere(kind):
  rgba = _random_rgba()
  rgba[:, :5, 3] = 0  # Fully transparent strip: white, whatever lies under.
  image = Image.fromarray(rgba, "RGBA")
  data = {
      "rgba_png": lambda: _encoded(image, "PNG"),
      "la_png": lambda: _encoded(image.convert("LA"), "PNG"),
      "palette_trns_png": lambda: _encoded(
          Image.fromarray(rgba[..., :3]).quantize(16), "PNG", transparency=0),
      "rgba_webp": lambda: _encoded(image, "WEBP", lossless=True),
      "rgba_webp_lossy": lambda: _encoded(image, "WEBP", quality=90),
  }[kind]()
  graph = _graph(data)
  np.testing.assert_array_equal(graph, _pillow(data))
  assert _plan(data).why == "transparency"
  # Not what the plain decoder shows (it drops alpha).
  plain = tf.io.decode_image(data, channels=4, expand_animations=False)
  assert not np.array_equal(graph, plain.numpy()[..., :3])
  if kind in ("rgba_png", "rgba_webp"):
    np.testing.assert_array_equal(graph[:, :5], 255)
    alpha = rgba[..., 3:].astype(np.int64)
    want = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    np.testing.assert_array_equal(graph, want)


def test_16_bit_png_is_rounded_not_truncated():
  rng = np.random.default_rng(1)
  samples = rng.integers(0, 65536, (H, W), dtype=np.uint16)
  data = _encoded(Image.fromarray(samples), "PNG")
  want = ((samples.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
  np.testing.assert_array_equal(_graph(data)[..., 0], want)
  np.testing.assert_array_equal(_pillow(data)[..., 0], want)
  assert _plan(data).why == "16_bit"
  truncated = (samples >> 8).astype(np.uint8)
  assert not np.array_equal(want, truncated)


@pytest.mark.parametrize("colors", [2, 16, 256])
def test_palette_png_without_transparency_is_plain(colors):
  # libpng invents a constant alpha (15 for a 4-bit palette) when asked for
  # four channels; the decoder must not composite with it.
  image = Image.fromarray(_smooth()).quantize(colors)
  data = _encoded(image, "PNG")
  np.testing.assert_array_equal(_graph(data), np.asarray(image.convert("RGB")))
  assert _plan(data).plain


def test_cmyk_and_mpo_jpegs_read_by_tensorflow():
  image = Image.fromarray(_smooth())
  cmyk = _encoded(image.convert("CMYK"), "JPEG", quality=95)
  assert _plan(cmyk).plain and _plan(cmyk).reader == "tf"
  assert np.abs(_graph(cmyk).astype(int) - _smooth()).mean() < 3
  mpo = _encoded(image, "MPO", quality=95, save_all=True,
                 append_images=[Image.fromarray(255 - _smooth())])
  assert _plan(mpo).plain
  # The first frame, as a viewer shows it.
  np.testing.assert_array_equal(_graph(mpo),
                                _graph(_encoded(image, "JPEG", quality=95)))


def test_formats_the_graph_would_misread_are_refused_and_read_by_pillow():
  palette = Image.fromarray(_smooth()).quantize(16)
  cases = {
      "palette_bmp": _encoded(palette, "BMP"),
      "gif_transparency": _encoded(palette, "GIF", transparency=0),
  }
  for why, data in cases.items():
    assert _plan(data) == decode.ReadPlan("pillow", why, _plan(data).detail)
    with pytest.raises(tf.errors.InvalidArgumentError, match="send P"):
      _graph(data)
  np.testing.assert_array_equal(_pillow(cases["palette_bmp"]),
                                np.asarray(palette.convert("RGB")))
  transparent = _pillow(cases["gif_transparency"])
  np.testing.assert_array_equal(transparent[np.asarray(palette) == 0], 255)
  # An animated GIF whose later frame is transparent is still read: only the
  # first frame counts.
  animated = _encoded(palette, "GIF", save_all=True, append_images=[
      Image.fromarray(255 - _smooth()).quantize(16)])
  np.testing.assert_array_equal(_graph(animated),
                                np.asarray(palette.convert("RGB")))


def test_formats_tensorflow_lacks_go_to_pillow(tmp_path):
  gray = Image.fromarray(_smooth()).convert("L")
  for name in ("x.tiff", "x.pgm"):
    gray.save(tmp_path / name)
    with Image.open(tmp_path / name) as image:
      assert decode.plan(image, name).reader == "pillow"
    image = decode.read_file(str(tmp_path / name))
    np.testing.assert_array_equal(image[..., 0], np.asarray(gray))
    assert decode.read_file(str(tmp_path / name), 1).shape == (H, W, 1)


def test_bmp_named_like_a_jpeg_is_flagged(tmp_path):
  data = _encoded(Image.fromarray(_smooth()), "BMP")
  assert _plan(data, "photo.jpg").why == "extension_mismatch"
  assert _plan(data, "photo.bmp").plain


@pytest.mark.slow  # Traces the graph decoder several ways.
def test_graph_decoder_eager_equals_tf_data_and_tf_function():
  data = [_encoded(Image.fromarray(_random_rgba(i), "RGBA"), "PNG")
          for i in range(3)]
  eager = [_graph(d) for d in data]
  ds = tf.data.Dataset.from_tensor_slices(data).map(decode.decode_bytes)
  for got, want in zip(ds.as_numpy_iterator(), eager):
    np.testing.assert_array_equal(got, want)
  fn = tf.function(decode.decode_bytes,
                   input_signature=[tf.TensorSpec([], tf.string)])
  np.testing.assert_array_equal(fn(data[0]).numpy(), eager[0])


@pytest.mark.parametrize("size, target, ratio", [
    ((3024, 4032), (224, 224), 8), ((375, 500), (224, 224), 1),
    ((900, 1200), (224, 224), 4), ((448, 500), (224, 224), 2),
    ((448, 500), (224, 112), 2), ((447, 500), (224, 224), 2),
    ((446, 500), (224, 224), 1)])
def test_jpeg_dct_ratio_is_the_largest_that_keeps_the_target(size, target,
                                                             ratio):
  image = Image.fromarray(np.zeros((*size, 3), np.uint8))
  data = _encoded(image, "JPEG", quality=80)
  assert int(decode.jpeg_ratio(data, target)) == ratio
  decoded = decode.decode_bytes(data, target_size=target).numpy()
  want = tf.io.decode_jpeg(data, channels=3, ratio=ratio).numpy()
  np.testing.assert_array_equal(decoded, want)
  assert min(decoded.shape[:2]) >= max(target)


def test_rotated_jpegs_are_not_dct_scaled():
  exif = Image.Exif()
  exif[0x0112] = 6
  image = Image.fromarray(np.zeros((900, 1200, 3), np.uint8))
  data = _encoded(image, "JPEG", quality=80, exif=exif.tobytes())
  # Their scanned copies hold the full image, so serving decodes it whole.
  assert decode.decode_bytes(data, target_size=(224, 224)).shape == (
      1200, 900, 3)


def test_jpeg_shorter_side_from_the_frame_header(tmp_path):
  for i, (h, w, kw) in enumerate([(30, 40, {}), (50, 20, {"progressive": True}),
                                  (33, 44, {"exif": Image.Exif().tobytes()})]):
    path = tmp_path / f"{i}.jpg"
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path, **kw)
    assert decode.jpeg_shorter_side(str(path)) == min(h, w)
  png = tmp_path / "x.png"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
  assert decode.jpeg_shorter_side(str(png)) == 0
