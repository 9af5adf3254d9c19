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


def write_people(root, people, per_person=6, seed=0):
  """Writes root/person<NN>/<i>.png (32 px): each person a fixed pattern of
  coloured blocks, each photo of it noisy and slightly shifted."""
  rng = np.random.default_rng(seed)
  for p in range(people):
    face = np.kron(rng.uniform(0, 255, (4, 4, 3)), np.ones((8, 8, 1)))
    folder = os.path.join(root, f"person{p:02d}")
    os.makedirs(folder)
    for i in range(per_person):
      shifted = np.roll(face, rng.integers(-2, 3, 2), axis=(0, 1))
      photo = np.clip(shifted + rng.normal(0, 20, face.shape), 0, 255)
      Image.fromarray(photo.astype(np.uint8)).save(
          os.path.join(folder, f"{i + 1}.png"))
  return str(root)


# The face_run embedder's settings (tests that train their own reuse them).
TINY_FACES = dict(image_size=16, embedding_dim=16, epochs=4, batch_size=8,
                  val_identities=0.25, learning_rate=3e-3, margin=0.2,
                  verbose=0)


@pytest.fixture(scope="session")
def face_run(tmp_path_factory):
  """(folder, train's result): a tiny embedder of 8 generated people (6
  trained on, 2 held out), trained once for every face test. Tests must
  not change the run; they write galleries and copies elsewhere."""
  from imgrec.config import FaceTrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("faces")
  data = write_people(tmp / "train", 8)
  result = trainer.train(FaceTrainConfig(**TINY_FACES, data_dir=data,
                                         model_dir=str(tmp / "run")))
  return tmp, result


def write_odd_kinds(directory):
  """Files of every odd kind, made from toy images; {name: path}."""
  rng = np.random.default_rng(5)
  red, green = toy_image(rng, "red", 24), toy_image(rng, "green", 24)
  out = {}

  def put(name, image, fmt, **kw):
    path = os.path.join(directory, name)
    image.save(path, fmt, **kw)
    out[name] = path

  exif = Image.Exif()
  exif[0x0112] = 6  # Turned: red's horizontal stripes become vertical.
  put("exif6.jpg", Image.fromarray(red), "JPEG", quality=95,
      exif=exif.tobytes())
  # Green hidden under transparent pixels: a viewer shows white there.
  rgba = np.dstack([green, np.full((24, 24), 255, np.uint8)])
  rgba[:, :12, 3] = 0
  rgba[:, 12:16, 3] = 100
  put("rgba.png", Image.fromarray(rgba, "RGBA"), "PNG")
  put("cmyk.jpg", Image.fromarray(red).convert("CMYK"), "JPEG", quality=95)
  deep = rng.integers(0, 65536, (24, 24), dtype=np.uint16)
  put("gray16.png", Image.fromarray(deep), "PNG")
  palette = Image.fromarray(green).quantize(8)
  put("palette.png", palette, "PNG")
  put("palette_transparent.png", palette, "PNG", transparency=0)
  put("photo.mpo", Image.fromarray(red), "MPO", quality=95, save_all=True,
      append_images=[Image.fromarray(green)])
  put("rgba.webp", Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True)
  # Large enough to decode at 1/4 scale for a 16-pixel model.
  big = np.kron(red, np.ones((5, 7, 1), np.uint8))[:120, :160]
  put("big.jpg", Image.fromarray(big), "JPEG", quality=95)
  return out


def pixel_probe_model(size=16, classes=3, head_name=None):
  """A linear map of every pixel to softmax classes: unlike a trained toy
  model, any pixel an entry point decodes differently moves its answer.
  `head_name="predictions"` makes its Dense a registry classifier's head
  (an embedding to score: the open set)."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  return keras.Sequential([
      keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255.0),
      keras.layers.Flatten(),
      keras.layers.Dense(classes, activation="softmax", kernel_initializer=(
          keras.initializers.RandomNormal(stddev=0.05)), name=head_name)])
