"""Tests of the image scan: odd-but-valid files, broken files, cache, report."""

import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import ImageFile

from imgrec.data import folder as folder_lib
from imgrec.data import decode
from imgrec.data import pipeline
from imgrec.data import scan
from imgrec.data.scan import cache as scan_cache
from imgrec.data.scan import check as scan_check
from imgrec.errors import ImgrecError
from conftest import write_toy_folder

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
H, W = 20, 30  # Not square, so a rotation shows in the shape.


def _gradient():
  y, x = np.mgrid[0:H, 0:W]
  return np.stack([(x * 8) % 256, (y * 12) % 256, ((x + y) * 5) % 256],
                  -1).astype(np.uint8)


def _png_chunk(kind, data):
  return (struct.pack(">I", len(data)) + kind + data +
          struct.pack(">I", zlib.crc32(kind + data)))


def _png(width, height, bit_depth, color_type, raw):
  header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0,
                       0)
  return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) +
          _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def _encoded(image, fmt, **kw):
  buf = io.BytesIO()
  image.save(buf, fmt, **kw)
  return buf.getvalue()


def write_valid(d):
  """Writes every odd-but-valid kind; returns {name: (expected, lossy)}.

  `expected` is the [H, W, 3] uint8 image a viewer shows, computed from what
  was written, not by the code under test.
  """
  rgb = _gradient()
  image = Image.fromarray(rgb)
  gray = np.asarray(image.convert("L"))
  gray3 = np.repeat(gray[..., None], 3, -1)
  palette = image.quantize(16)
  palette_rgb = np.asarray(palette.convert("RGB"))
  out = {}

  def put(name, data, expected, lossy=False):
    with open(os.path.join(d, name), "wb") as f:
      f.write(data)
    out[name] = (expected, lossy)

  put("baseline.jpg", _encoded(image, "JPEG", quality=95), rgb, True)
  put("progressive.jpeg", _encoded(image, "JPEG", quality=95,
                                   progressive=True), rgb, True)
  put("gray.jpg", _encoded(image.convert("L"), "JPEG", quality=95), gray3,
      True)
  put("cmyk.jpg", _encoded(image.convert("CMYK"), "JPEG", quality=95), rgb,
      True)
  put("rgb.png", _encoded(image, "PNG"), rgb)
  put("gray.png", _encoded(image.convert("L"), "PNG"), gray3)
  gray16 = gray.astype(np.uint16) * 257  # Full 16-bit range, 8-bit content.
  put("gray16.png", _png(W, H, 16, 0, b"".join(
      b"\0" + row.astype(">u2").tobytes() for row in gray16)), gray3)
  rgb16 = rgb.astype(np.uint16) * 257
  put("rgb16.png", _png(W, H, 16, 2, b"".join(
      b"\0" + row.astype(">u2").tobytes() for row in rgb16)), rgb)
  # Transparent on the left with green hidden under it, half-transparent in
  # the middle: a viewer shows white, then a blend with white.
  rgba = np.dstack([rgb, np.full((H, W), 255, np.uint8)])
  rgba[:, :10] = (0, 255, 0, 0)
  rgba[:, 10:15, 3] = 128
  alpha = rgba[..., 3:].astype(np.float64) / 255
  on_white = np.round(rgba[..., :3] * alpha + 255 * (1 - alpha))
  put("rgba.png", _encoded(Image.fromarray(rgba, "RGBA"), "PNG"),
      on_white.astype(np.uint8))
  put("palette.png", _encoded(palette, "PNG"), palette_rgb)
  index = np.asarray(palette)
  transparent = palette_rgb.copy()
  transparent[index == 0] = 255
  put("palette_transparent.png", _encoded(palette, "PNG", transparency=0),
      transparent)
  put("rgb.bmp", _encoded(image, "BMP"), rgb)
  put("palette.bmp", _encoded(palette, "BMP"), palette_rgb)
  second = Image.fromarray(255 - rgb).quantize(16)
  put("animated.gif", _encoded(palette, "GIF", save_all=True,
                               append_images=[second]), palette_rgb)
  put("lossy.webp", _encoded(image, "WEBP", quality=90), rgb, True)
  put("lossless.webp", _encoded(image, "WEBP", lossless=True), rgb)
  put("rgba.webp", _encoded(Image.fromarray(rgba, "RGBA"), "WEBP",
                            lossless=True), on_white.astype(np.uint8))
  put("image.tiff", _encoded(image, "TIFF"), rgb)
  put("image.pgm", _encoded(image.convert("L"), "PPM"), gray3)
  put("image.ppm", _encoded(image, "PPM"), rgb)
  put("UPPER.JPG", _encoded(image, "JPEG", quality=95), rgb, True)
  put("png_named.jpg", _encoded(image, "PNG"), rgb)
  # Kept readable, but converted: all-JPEG lists are decoded with
  # decode_jpeg, which reads PNG but not BMP.
  put("bmp_named.jpg", _encoded(image, "BMP"), rgb)
  exif = Image.Exif()
  exif[0x0112] = 6  # Shown rotated 90 degrees clockwise.
  put("exif6.jpg", _encoded(image, "JPEG", quality=95, exif=exif.tobytes()),
      np.rot90(rgb, k=-1), True)
  put("été photo ü.png", _encoded(image, "PNG"), rgb)
  return out


# The files tf.io reads as a viewer shows them, used without conversion.
NATIVE = {"baseline.jpg", "progressive.jpeg", "gray.jpg", "cmyk.jpg",
          "rgb.png", "gray.png", "palette.png",
          "rgb.bmp", "animated.gif", "lossy.webp", "lossless.webp",
          "UPPER.JPG", "png_named.jpg", "été photo ü.png"}


def write_broken(d):
  """Writes every broken kind; returns {name: expected reason}."""
  rng = np.random.default_rng(0)
  image = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
  jpeg = _encoded(image, "JPEG", quality=90)
  png = _encoded(image, "PNG")
  # Intact pixel data under a wrong IDAT checksum: Pillow decodes it, libpng
  # (tf.io) refuses it.
  bad_crc = bytearray(png)
  idat = png.index(b"IDAT")
  bad_crc[idat + 4 + struct.unpack(">I", png[idat - 4:idat])[0]] ^= 0xFF
  # 20000 x 20000 1-bit pixels of zeros: a valid 50 kB PNG that would take
  # 400 megapixels (1.2 GB as RGB) to decode.
  side = 20000
  bomb = _png(side, side, 1, 0, bytes(side * (side // 8 + 1)))
  files = {
      "truncated.jpg": (jpeg[:len(jpeg) // 2], "truncated"),
      "truncated.png": (png[:len(png) // 2], "truncated"),
      "empty.jpg": (b"", "empty_file"),
      "page.jpg": (b"<!DOCTYPE html><html><body>Not found</body></html>",
                   "not_an_image"),
      "bad_crc.png": (bytes(bad_crc), "corrupt"),
      "bomb.png": (bomb, "decompression_bomb"),
  }
  for name, (data, _) in files.items():
    with open(os.path.join(d, name), "wb") as f:
      f.write(data)
  return {name: reason for name, (_, reason) in files.items()}


def _decode(path):
  return decode.decode_bytes(tf.io.read_file(path)).numpy()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("zoo"))
  valid = write_valid(d)
  broken = write_broken(d)
  return d, valid, broken


def test_every_valid_kind_is_kept_and_decodes_as_shown(zoo, tmp_path):
  d, valid, _ = zoo
  prepared = str(tmp_path / "prepared")
  names = sorted(valid)
  results = scan.scan_files([os.path.join(d, n) for n in names],
                            prepared_dir=prepared, progress=False)
  for name, result in zip(names, results):
    expected, lossy = valid[name]
    assert result.ok, (name, result.reason, result.detail)
    assert result.path == os.path.join(d, name)
    if name in NATIVE:
      assert result.decode_path == result.path, (name, result.detail)
    else:
      assert os.path.dirname(result.decode_path) == os.path.abspath(prepared)
      assert result.decode_path.endswith(".png") and result.conversion
    decoded = _decode(result.decode_path)
    assert decoded.shape == expected.shape, name
    diff = np.abs(decoded.astype(int) - expected)
    if lossy:
      assert diff.mean() < 3, (name, diff.mean())
    else:
      assert diff.max() <= 1, (name, diff.max())
    assert (result.width, result.height) == (expected.shape[1],
                                             expected.shape[0]), name
  by_name = dict(zip(names, results))
  assert by_name["exif6.jpg"].conversion == "exif_orientation"
  assert by_name["image.tiff"].conversion == "format_not_in_tf"
  assert by_name["bmp_named.jpg"].conversion == "extension_mismatch"
  assert by_name["rgba.png"].conversion == "transparency"
  assert by_name["palette.bmp"].conversion == "palette_bmp"
  assert by_name["rgba.webp"].conversion == "transparency"
  assert by_name["gray16.png"].conversion == "16_bit"
  assert by_name["cmyk.jpg"].mode == "CMYK"
  assert by_name["gray16.png"].mode.startswith("I")


def test_exif_rotation_matches_pillow(zoo, tmp_path):
  from PIL import ImageOps
  d, _, _ = zoo
  path = os.path.join(d, "exif6.jpg")
  [result] = scan.scan_files([path], prepared_dir=str(tmp_path),
                             progress=False)
  with Image.open(path) as im:
    shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
  decoded = _decode(result.decode_path)
  assert decoded.shape == (W, H, 3)
  # The same rotation; the pixels differ only as two JPEG decoders do.
  assert np.abs(decoded.astype(int) - shown).mean() < 2
  # Training's copy holds exactly what serving decodes from the original.
  np.testing.assert_array_equal(decoded, _decode(path))


def test_one_channel_pipeline_reads_every_usable_file(zoo, tmp_path):
  d, valid, _ = zoo
  names = sorted(valid)
  results = scan.scan_files([os.path.join(d, n) for n in names],
                            prepared_dir=str(tmp_path), progress=False)
  for name, result in zip(names, results):
    assert result.ok, name
    # Training's plain decoder reads RGB, then converts: tf.io alone refuses
    # channels=1 for BMP, GIF, WebP and CMYK JPEG.
    image = pipeline.decode_train(tf.constant(result.decode_path), (8, 8),
                                  1).numpy()
    assert image.shape == (8, 8, 1), name
    gray = decode.decode_bytes(tf.io.read_file(result.decode_path), 1)
    assert gray.shape[-1] == 1 and gray.shape[0] in (H, W), name


def test_every_broken_kind_is_skipped_with_its_reason(zoo, tmp_path):
  d, _, broken = zoo
  names = sorted(broken)
  results = scan.scan_files([os.path.join(d, n) for n in names],
                            prepared_dir=str(tmp_path), progress=False)
  for name, result in zip(names, results):
    assert not result.ok and result.decode_path is None, name
    assert result.reason == broken[name], (name, result.reason,
                                           result.detail)
    assert result.detail
  bomb = dict(zip(names, results))["bomb.png"]
  assert (bomb.width, bomb.height) == (20000, 20000)
  assert "400,000,000" in bomb.detail


def test_pixel_limit_is_checked_before_decoding(zoo, tmp_path, monkeypatch):
  d, _, _ = zoo
  pillow_limit = Image.MAX_IMAGE_PIXELS
  decoded = []
  real_load = ImageFile.ImageFile.load
  monkeypatch.setattr(ImageFile.ImageFile, "load",
                      lambda im: decoded.append(im) or real_load(im))
  [result] = scan.scan_files([os.path.join(d, "rgb.png")],
                             prepared_dir=str(tmp_path), progress=False,
                             max_image_pixels=H * W - 1)
  assert result.reason == "decompression_bomb"
  assert not decoded
  # The scan lifts Pillow's own limit only while it runs.
  assert Image.MAX_IMAGE_PIXELS == pillow_limit


def test_unreadable_files_are_skipped_and_not_cached(tmp_path):
  link = tmp_path / "gone.jpg"
  link.symlink_to(tmp_path / "deleted.jpg")
  paths = [str(link)]
  locked = tmp_path / "locked.png"
  Image.fromarray(_gradient()).save(locked)
  locked.chmod(0)
  # Root reads any file whatever its mode.
  can_lock = os.geteuid() != 0
  if can_lock:
    paths.append(str(locked))
  prepared = str(tmp_path / "p")
  try:
    results = scan.scan_files(paths, prepared_dir=prepared, progress=False)
  finally:
    locked.chmod(0o644)
  assert [r.reason for r in results] == ["unreadable"] * len(paths)
  assert "broken link" in results[0].detail
  # Fixing permissions changes neither size nor mtime: the next scan must
  # look again rather than trust the cache.
  again = scan.scan_files(paths, prepared_dir=prepared, progress=False)
  assert not any(r.from_cache for r in again)
  if can_lock:
    assert again[1].ok


def test_cache_skips_unchanged_files(zoo, tmp_path, monkeypatch):
  d, valid, broken = zoo
  paths = [os.path.join(d, n) for n in sorted(valid) + sorted(broken)]
  prepared = str(tmp_path / "prepared")
  first = scan.scan_files(paths, prepared_dir=prepared, progress=False)
  assert os.path.isfile(os.path.join(prepared, scan_cache.CACHE_NAME))

  opened = []
  real_open = Image.open
  monkeypatch.setattr(scan_check.Image, "open",
                      lambda f, *a, **k: opened.append(f) or
                      real_open(f, *a, **k))
  second = scan.scan_files(paths, prepared_dir=prepared, progress=False)
  assert opened == []  # Not one file looked at again.
  assert second == first and all(r.from_cache for r in second)

  def checked_again(results):
    return sorted(r.path for r in results if not r.from_cache)

  # A changed file, a removed converted copy and other settings are
  # checked again; the rest still comes from the cache.
  changed = tmp_path / "changed.png"
  Image.fromarray(_gradient()).save(changed)
  scan.scan_files([str(changed)], prepared_dir=prepared, progress=False)
  changed.write_bytes(b"now broken")
  tiff = os.path.join(d, "image.tiff")
  os.remove(dict(zip(paths, first))[tiff].decode_path)
  results = scan.scan_files(paths + [str(changed)], prepared_dir=prepared,
                            progress=False)
  assert checked_again(results) == sorted([tiff, str(changed)])
  assert results[-1].reason == "not_an_image"
  assert os.path.isfile(dict(zip(paths, results))[tiff].decode_path)
  results = scan.scan_files(paths[:3], prepared_dir=prepared,
                            progress=False, max_image_pixels=10**6)
  assert checked_again(results) == sorted(paths[:3])


def _folder_with_junk(root, bad_in_red=1):
  """Toy folder: 10 images per class, junk files, `bad_in_red` broken."""
  write_toy_folder(root, per_class=10)
  Image.fromarray(_gradient()).save(os.path.join(root, "green", "scan.tiff"))
  for i in range(bad_in_red):
    with open(os.path.join(root, "red", f"broken{i}.jpg"), "wb") as f:
      f.write(b"<html>404</html>")
  with open(os.path.join(root, ".DS_Store"), "wb") as f:
    f.write(b"\0\0\0\1Bud1")
  with open(os.path.join(root, "blue", "Thumbs.db"), "wb") as f:
    f.write(b"\xd0\xcf\x11\xe0")
  with open(os.path.join(root, "blue", "notes.txt"), "w") as f:
    f.write("not an image")
  os.makedirs(os.path.join(root, ".ipynb_checkpoints"))
  Image.fromarray(_gradient()).save(
      os.path.join(root, ".ipynb_checkpoints", "x-checkpoint.png"))
  Image.fromarray(_gradient()).save(os.path.join(root, "loose.png"))
  return root


def test_scan_folder_drops_bad_files_and_reports(tmp_path):
  root = _folder_with_junk(str(tmp_path / "data"))
  found = folder_lib.find_images(root, val_split=0.2, test_split=0.2, seed=0)
  report_path = str(tmp_path / "report.json")
  prepared = str(tmp_path / "prepared")
  scanned, report = scan.scan_folder(
      found, prepared_dir=prepared, report_path=report_path,
      progress=False, max_bad_fraction=0.1)
  assert scanned.class_names == found.class_names
  total = sum(len(s) for s in scanned.splits.values())
  assert total == 31  # 30 toy images and the TIFF; the HTML page is out.
  for name, split in scanned.splits.items():
    assert len(split.paths) == len(split.labels)
    for path, label in zip(split.paths, split.labels):
      class_name = scanned.class_names[label]
      if path.startswith(prepared):
        assert class_name == "green"  # The converted TIFF kept its label.
      else:
        assert os.path.basename(os.path.dirname(path)) == class_name
      assert os.path.isfile(path)
  assert json.load(open(report_path, encoding="utf-8")) == report
  assert report["totals"] == {"found": 32, "usable": 31, "skipped": 1,
                              "converted": 1, "ignored": 5}
  assert report["skipped_by_reason"] == {"not_an_image": 1}
  [skipped] = report["skipped"]
  assert skipped["path"].endswith("broken0.jpg") and skipped["class"] == "red"
  red = {s: report["splits"][s]["red"] for s in report["splits"]}
  assert sum(r["found"] for r in red.values()) == 11
  assert sum(r["skipped"] for r in red.values()) == 1
  assert report["formats"] == {"PNG": 30, "TIFF": 1}
  assert report["converted_by_why"] == {"format_not_in_tf": 1}
  assert report["width"] == {"min": 24, "median": 24, "max": 30}
  ignored = {os.path.basename(i["path"]): i["why"] for i in report["ignored"]}
  assert ignored == {".DS_Store": "hidden", ".ipynb_checkpoints": "hidden",
                     "Thumbs.db": "hidden", "notes.txt": "not_image_extension",
                     "loose.png": "outside_class_folders"}


def test_too_many_bad_files_in_a_class(tmp_path):
  root = _folder_with_junk(str(tmp_path / "data"), bad_in_red=3)
  found = folder_lib.find_images(root, val_split=0.0, test_split=0.0)
  report_path = str(tmp_path / "report.json")
  with pytest.raises(ImgrecError, match=r"'red' has 3 bad files of 13") as e:
    scan.scan_folder(found, prepared_dir=str(tmp_path / "p"),
                     report_path=report_path, progress=False)
  assert report_path in str(e.value) and "'blue'" not in str(e.value)
  assert len(json.load(open(report_path))["skipped"]) == 3  # Still written.
  scanned, _ = scan.scan_folder(found, prepared_dir=str(tmp_path / "p"),
                                progress=False, max_bad_fraction=0.3)
  assert len(scanned.splits["train"]) == 31


def test_class_left_without_images(tmp_path):
  root = write_toy_folder(str(tmp_path / "data"), per_class=3,
                          classes=["blue", "red"])
  for name in os.listdir(os.path.join(root, "red")):
    with open(os.path.join(root, "red", name), "r+b") as f:
      f.truncate(40)
  found = folder_lib.find_images(root, val_split=0.0, test_split=0.0)
  with pytest.raises(ImgrecError, match="'red' has no usable training image"):
    scan.scan_folder(found, prepared_dir=str(tmp_path / "p"), progress=False,
                     max_bad_fraction=1.0)


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "imgrec.cli.scan", *args],
                        capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.slow  # Two runs of imgrec-scan in subprocesses.
def test_cli_prints_counts_and_writes_report(tmp_path):
  root = _folder_with_junk(str(tmp_path / "data"))
  prepared = str(tmp_path / "prepared")
  proc = _run_cli(f"--data_dir={root}", f"--prepared_dir={prepared}",
                  "--max_bad_fraction=0.2")
  assert proc.returncode == 0, proc.stderr
  # The report goes beside the scan cache, never into the data folder.
  assert not os.path.exists(os.path.join(root, "data_report.json"))
  report = json.load(open(os.path.join(prepared, "data_report.json")))
  assert report["totals"]["skipped"] == 1
  assert "not_an_image 1" in proc.stdout
  assert "broken0.jpg" in proc.stdout
  assert "converted to PNG: 1" in proc.stdout
  lines = [l.split() for l in proc.stdout.splitlines()]
  assert ["total", "32", "31", "1"] in lines

  missing = _run_cli(f"--data_dir={tmp_path / 'nope'}")
  assert missing.returncode == 2
  assert len(missing.stderr.strip().splitlines()) == 1
  assert "does not exist" in missing.stderr


def test_fill_keeps_each_image_as_training_decodes_it(zoo, tmp_path):
  d, valid, broken = zoo
  names = sorted(valid) + sorted(broken)
  paths = [os.path.join(d, n) for n in names]
  fill = scan.Fill((12, 10), 3)
  results = scan.scan_files(paths, prepared_dir=str(tmp_path / "p"),
                            progress=False, fill=fill)
  store = fill.store.numpy()
  assert store.shape == (len(valid), 12, 10, 3)
  assert sorted(r.row for r in results if r.ok) == list(range(len(valid)))
  assert all(r.row is None for r in results if not r.ok)
  for name, result in zip(names, results):
    if result.ok:
      want = pipeline.decode_train(tf.constant(result.decode_path), (12, 10),
                                   3).numpy()
      np.testing.assert_array_equal(store[result.row], want, err_msg=name)
  # A rerun takes its checks from the cache and still fills.
  fill = scan.Fill((12, 10), 3)
  again = scan.scan_files(paths, prepared_dir=str(tmp_path / "p"),
                          progress=False, fill=fill)
  assert all(r.from_cache for r in again)
  np.testing.assert_array_equal(
      np.stack([fill.store.numpy()[r.row] for r in again if r.ok]),
      np.stack([store[r.row] for r in results if r.ok]))


@pytest.mark.slow  # Both scan paths over every file kind.
def test_fast_and_one_by_one_checks_agree(zoo, tmp_path, monkeypatch):
  d, valid, broken = zoo
  paths = [os.path.join(d, n) for n in sorted(valid) + sorted(broken)]
  fast = scan.scan_files(paths, prepared_dir=str(tmp_path / "a"),
                         progress=False)
  monkeypatch.setattr(scan.files, "_quick_header", lambda *a: None)
  slow = scan.scan_files(paths, prepared_dir=str(tmp_path / "b"),
                         progress=False)
  for a, b in zip(fast, slow):
    assert (a.ok, a.reason, a.format, a.mode, a.width, a.height,
            a.conversion) == (b.ok, b.reason, b.format, b.mode, b.width,
                              b.height, b.conversion), a.path
    if a.ok and not a.converted:
      assert a.decode_path == b.decode_path
