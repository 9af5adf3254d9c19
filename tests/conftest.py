"""Shared fixtures: tiny image folders written by the tests themselves."""

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Class -> (base colour, stripe direction): a tiny CNN tells them apart in one
# or two epochs, so end-to-end tests can check that predictions make sense.
TOY_CLASSES = {
    "blue": ((20, 40, 220), 0),
    "green": ((30, 200, 40), 1),
    "red": ((220, 30, 30), 0),
}


def toy_image(rng, class_name, size=24):
  colour, direction = TOY_CLASSES[class_name]
  image = np.empty((size, size, 3), np.float32)
  image[:] = colour
  stripes = (np.arange(size) // 3) % 2 == 0
  if direction:
    image[:, stripes] *= 0.6
  else:
    image[stripes] *= 0.6
  image += rng.normal(0, 12, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def write_toy_folder(root, per_class=10, size=24, seed=0, classes=None,
                     ext=".png"):
  """Writes root/<class>/<i><ext> images and returns root."""
  rng = np.random.default_rng(seed)
  for name in classes or TOY_CLASSES:
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      Image.fromarray(toy_image(rng, name, size)).save(
          os.path.join(root, name, f"{i:03d}{ext}"))
  return str(root)


@pytest.fixture
def toy_folder(tmp_path):
  return write_toy_folder(tmp_path / "toy", per_class=10)
