"""Tests for the decode/resize ops and the tf.data pipeline."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from imgrec.data import augment
from imgrec.data import decode
from imgrec.data import folder
from imgrec.data import ops
from imgrec.data import pipeline
from conftest import write_toy_folder


def test_decode_resize_eager_equals_tf_data(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=2, size=30)
  paths = folder.find_images(root, val_split=0, test_split=0).splits[
      "train"].paths
  eager = [pipeline.decode_and_resize(p, (17, 13)).numpy() for p in paths]
  ds = tf.data.Dataset.from_tensor_slices(paths).map(
      lambda p: pipeline.decode_and_resize(p, (17, 13)))
  graph = list(ds.as_numpy_iterator())
  for a, b in zip(eager, graph):
    assert a.shape == (17, 13, 3) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_decode_keeps_pixels(tmp_path):
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(tmp_path / "x.png")
  np.testing.assert_array_equal(decode.read_file(str(tmp_path / "x.png")),
                                pixels)
  # Resizing to the same size is the identity.
  np.testing.assert_allclose(ops.resize(pixels, (9, 11)).numpy(), pixels)


def test_pgm_goes_through_pillow(tmp_path):
  pixels = np.arange(20 * 10, dtype=np.uint8).reshape(20, 10)
  Image.fromarray(pixels, "L").save(tmp_path / "face.pgm")
  image = decode.read_file(str(tmp_path / "face.pgm"))
  assert image.shape == (20, 10, 3)
  np.testing.assert_array_equal(image[..., 0], pixels)


def test_to_channels():
  rgb = tf.constant(np.full((2, 2, 3), 100, np.uint8))
  assert ops.to_channels(rgb, 1).shape == (2, 2, 1)
  assert ops.to_channels(ops.to_channels(rgb, 1), 3).shape == (2, 2, 3)


@pytest.mark.parametrize("training", [False, True])
def test_make_dataset_shapes_and_labels(tmp_path, training):
  root = write_toy_folder(tmp_path / "d", per_class=5)
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]
  ds = pipeline.make_dataset(split, pipeline.PipelineSpec(
      num_classes=3, image_size=(16, 16), batch_size=4, training=training,
      augment="medium"))
  batches = list(ds.as_numpy_iterator())
  images = np.concatenate([x for x, _ in batches])
  labels = np.concatenate([y for _, y in batches])
  assert images.shape[1:] == (16, 16, 3)
  assert labels.shape[1:] == (3,)
  # Training drops the last partial batch; evaluation keeps every image in
  # file order.
  assert len(images) == (12 if training else 15)
  assert images.min() >= 0 and images.max() <= 255
  if not training:
    np.testing.assert_array_equal(labels.argmax(1), split.labels)


def test_small_split_still_gives_a_batch(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=1)
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]
  ds = pipeline.make_dataset(split, pipeline.PipelineSpec(
      num_classes=3, image_size=(8, 8), batch_size=32, training=True))
  assert sum(1 for _ in ds) == 1


def test_training_shuffle_is_seeded(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=8)
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]
  def order(seed):
    ds = pipeline.make_dataset(split, pipeline.PipelineSpec(
        num_classes=3, image_size=(8, 8), batch_size=4, training=True,
        seed=seed))
    return np.concatenate([y.argmax(1) for _, y in ds.as_numpy_iterator()])

  np.testing.assert_array_equal(order(5), order(5))
  assert not np.array_equal(order(5), order(6))


def test_augmenter_changes_images_but_not_shape():
  aug = augment.build_augmenter("medium", seed=0)
  x = tf.random.uniform((4, 16, 16, 3), 0, 255, seed=1)
  y = aug(x, training=True)
  assert y.shape == x.shape
  assert not np.allclose(x.numpy(), y.numpy())
  assert augment.build_augmenter("none") is None
  assert augment.build_augmenter("light") is None  # Per-image ops only.
  with pytest.raises(ValueError, match="Received"):
    augment.build_augmenter("extreme")


def test_augment_image_eager_equals_tf_data_and_varies():
  image = tf.constant(np.random.default_rng(0).integers(
      0, 256, (16, 12, 3), dtype=np.uint8))
  seed = tf.constant(1234567, tf.int64)
  eager = augment.augment_image(image, seed).numpy()
  graph = next(iter(tf.data.Dataset.from_tensors((image, seed)).map(
      lambda x, s: augment.augment_image(x, s)))).numpy()
  np.testing.assert_array_equal(eager, graph)
  assert eager.shape == (16, 12, 3) and eager.dtype == np.uint8
  seeds = np.random.default_rng(1).integers(0, 2**32, 30)
  outs = {augment.augment_image(image, tf.constant(s, tf.int64)).numpy()
          .tobytes() for s in seeds}
  assert len(outs) > 10  # Of 2 flips x 5 x 3 shifts.
  # No flip and no shift: the identity.
  same = augment.augment_image(image, seed, flip="none", shift_fraction=0)
  np.testing.assert_array_equal(same.numpy(), image.numpy())


def _shifted(src, dy, dx):
  """src moved by (dy, dx) pixels, zeros where nothing lands (numpy)."""
  h, w = src.shape
  out = np.zeros_like(src)
  out[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)] = (
      src[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)])
  return out


def test_augment_image_is_a_flip_and_a_zero_padded_shift():
  src = np.arange(1, 8 * 8 + 1, dtype=np.uint8).reshape(8, 8)
  candidates = {(flip, dy, dx): _shifted(src[:, ::-1] if flip else src, dy, dx)
                for flip in (False, True)
                for dy in range(-2, 3) for dx in range(-2, 3)}
  seen = set()
  # The seeds the training pipeline zips in: 32 random bits each.
  # Mapped over them as the pipeline does (traced once, not eager per draw).
  draws = tf.data.Dataset.random(seed=0).take(1000).map(
      lambda seed: augment.augment_image(tf.constant(src[..., None]), seed,
                                         shift_fraction=0.25))
  for out in draws.as_numpy_iterator():
    out = out[..., 0]
    match = [k for k, v in candidates.items() if np.array_equal(v, out)]
    assert len(match) == 1, out
    seen.add(match[0])
  # Every flip and offset in [-2, 2] x [-2, 2] turns up in 1000 draws.
  assert seen == set(candidates)


@pytest.mark.parametrize("cache", ["memory", "file"])
def test_cached_pipeline_gives_same_eval_batches(tmp_path, cache):
  root = write_toy_folder(tmp_path / "d", per_class=3)
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]
  kw = dict(num_classes=3, image_size=(8, 8), batch_size=4)
  plain = np.concatenate([x for x, _ in pipeline.make_dataset(
      split, pipeline.PipelineSpec(**kw)).as_numpy_iterator()])
  cached = pipeline.make_dataset(split, pipeline.PipelineSpec(
      cache="memory" if cache == "memory" else str(tmp_path / "c"), **kw))
  for _ in range(2):
    again = np.concatenate([x for x, _ in cached.as_numpy_iterator()])
    np.testing.assert_array_equal(plain, again)


def test_auto_cache_decision():
  def plan(cache, num_images, size=(8, 8), epochs=None):
    return pipeline.plan_cache(cache, num_images=num_images, image_size=size,
                               bytes_per_pixel=3, epochs=epochs)

  assert plan("auto", 10) == "memory"
  assert plan("auto", 10**9, (512, 512)) is None  # Does not fit.
  assert plan("auto", 10, epochs=1) is None  # One pass: stream.
  assert plan("none", 10) is None
  assert plan("/x/y", 10) == "/x/y"
  assert plan("memory", 10, epochs=1) == "memory"


def test_sharded_input_context(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=5)
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]
  seen = []
  for pipeline_id in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2,
                                     input_pipeline_id=pipeline_id,
                                     num_replicas_in_sync=2)
    ds = pipeline.make_dataset(split, pipeline.PipelineSpec(
        num_classes=3, image_size=(8, 8), batch_size=4), input_context=ctx)
    batches = list(ds.as_numpy_iterator())
    assert all(len(x) <= 2 for x, _ in batches)  # Per-replica batch.
    seen.append(sum(len(x) for x, _ in batches))
  assert seen == [7, 7]  # Equal shards of the 15 files.


def test_all_jpeg_lists_use_the_fast_decoder_and_others_still_work(tmp_path):
  # A .jpg list is decoded by decode_jpeg alone; it reads PNGs too, so a PNG
  # named .jpg (kept by the scan) still trains.
  root = write_toy_folder(tmp_path / "d", per_class=2, ext=".jpg")
  Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(
      tmp_path / "d" / "red" / "png_inside.jpg", format="PNG")
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]
  ds = pipeline.make_dataset(split, pipeline.PipelineSpec(
      num_classes=3, image_size=(8, 8), batch_size=7, training=True,
      augment="none"))
  x, _ = next(iter(ds))
  assert x.shape == (7, 8, 8, 3)


def test_fused_jpeg_decode_matches_decode_then_augment(tmp_path):
  # A smooth photo-like JPEG, larger than the output.
  yy, xx = np.mgrid[0:90, 0:120]
  pixels = (np.stack([xx * 2, yy * 2, xx + yy], -1) + 20).clip(0, 255)
  path = str(tmp_path / "smooth.jpg")
  Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
  size = (32, 40)
  plain = pipeline.decode_train(tf.constant(path), size, 3, True)
  for seed in np.random.default_rng(0).integers(0, 2**32, 12):
    seed = tf.constant(seed, tf.int64)
    want = augment.augment_image(plain, seed).numpy().astype(int)
    got = augment.decode_augment_jpeg(tf.constant(path), seed, size).numpy()
    assert got.shape == (32, 40, 3) and got.dtype == np.uint8
    got = got.astype(int)
    # Same flip and shift: the zero padding is in the same place ...
    np.testing.assert_array_equal(want.sum(-1) == 0, got.sum(-1) == 0)
    # ... and the kept part differs only by the window's rounding.
    assert np.abs(want - got).mean() < 2.0


def test_streamed_jpeg_training_is_seeded_and_reshuffles(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=4, size=20, ext=".jpg")
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]

  def epochs(ds, n):
    return [np.concatenate([x for x, _ in ds.as_numpy_iterator()])
            for _ in range(n)]

  kw = dict(num_classes=3, image_size=(16, 16), batch_size=4, training=True,
            cache="none", seed=3, deterministic=True)
  spec = pipeline.PipelineSpec(**kw)
  first = epochs(pipeline.make_dataset(split, spec), 2)
  again = epochs(pipeline.make_dataset(split, spec), 2)
  assert first[0].dtype == np.uint8 and first[0].shape == (12, 16, 16, 3)
  for a, b in zip(first, again):  # Same seed: the same epochs.
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], first[1])  # New order and draws.


def test_dct_scaling_is_left_out_only_when_no_image_needs_it(tmp_path):
  assert pipeline.dct_matters([375, 300], (224, 224)) is False
  assert pipeline.dct_matters([375, 447], (224, 224)) is True
  assert pipeline.dct_matters([446], (224, 224)) is False
  assert pipeline.dct_matters(None, (224, 224)) is True
  # Both ways give the same batches for images too small to scale.
  root = write_toy_folder(tmp_path / "d", per_class=3, ext=".jpg")
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]
  kw = dict(num_classes=3, image_size=(8, 8), batch_size=9, training=False)
  spec = pipeline.PipelineSpec(**kw)
  a = pipeline.make_dataset(split, spec)
  b = pipeline.make_dataset(dataclasses.replace(
      split, shorter_sides=[24] * len(split)), spec)
  np.testing.assert_array_equal(next(iter(a))[0], next(iter(b))[0])


def test_test_time_views_eager_and_in_a_function():
  images = tf.reshape(tf.range(2 * 8 * 8 * 3, dtype=tf.float32),
                      (2, 8, 8, 3))
  for run in (lambda m: ops.test_time_views(images, m),
              lambda m: tf.function(lambda x: ops.test_time_views(x, m))(
                  images)):
    assert len(run(())) == 1
    flip = run(("flip",))
    assert len(flip) == 2
    np.testing.assert_array_equal(flip[0], images)
    np.testing.assert_array_equal(flip[1], images[:, :, ::-1, :])
    crops = run(("crops",))
    assert len(crops) == 6 and all(v.shape == images.shape for v in crops)
    # The corner crop of the zoomed batch starts at the zoomed top left.
    zoomed = tf.image.resize(images, (9, 9))
    np.testing.assert_allclose(crops[2], zoomed[:, :8, :8, :])
    both = run(("flip", "crops"))
    assert len(both) == 12
    np.testing.assert_allclose(both[8], crops[2][:, :, ::-1, :])
