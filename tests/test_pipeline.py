"""Tests for the decode/resize ops and the tf.data pipeline."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

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
  np.testing.assert_array_equal(ops.load_image(str(tmp_path / "x.png")),
                                pixels)
  # Resizing to the same size is the identity.
  np.testing.assert_allclose(ops.resize(pixels, (9, 11)).numpy(), pixels)


def test_pgm_goes_through_pillow(tmp_path):
  pixels = np.arange(20 * 10, dtype=np.uint8).reshape(20, 10)
  Image.fromarray(pixels, "L").save(tmp_path / "face.pgm")
  image = ops.load_image(str(tmp_path / "face.pgm"))
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
  ds = pipeline.make_dataset(
      split.paths, split.labels, num_classes=3, image_size=(16, 16),
      batch_size=4, training=training,
      augmenter=pipeline.build_augmenter("light", seed=1) if training else None)
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
  ds = pipeline.make_dataset(split.paths, split.labels, num_classes=3,
                             image_size=(8, 8), batch_size=32, training=True)
  assert sum(1 for _ in ds) == 1


def test_training_shuffle_is_seeded(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=8)
  split = folder.find_images(root, val_split=0, test_split=0).splits["train"]
  def order(seed):
    ds = pipeline.make_dataset(split.paths, split.labels, num_classes=3,
                               image_size=(8, 8), batch_size=4, training=True,
                               seed=seed)
    return np.concatenate([y.argmax(1) for _, y in ds.as_numpy_iterator()])

  np.testing.assert_array_equal(order(5), order(5))
  assert not np.array_equal(order(5), order(6))


def test_augmenter_changes_images_but_not_shape():
  aug = pipeline.build_augmenter("light", seed=0)
  x = tf.random.uniform((4, 16, 16, 3), 0, 255, seed=1)
  y = aug(x, training=True)
  assert y.shape == x.shape
  assert not np.allclose(x.numpy(), y.numpy())
  assert pipeline.build_augmenter("none") is None
  with pytest.raises(ValueError, match="Received"):
    pipeline.build_augmenter("extreme")
