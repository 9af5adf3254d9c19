"""Tests for the built-in datasets in imgrec.datasets."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from imgrec import datasets
from imgrec.datasets import shapes

SMALL = dict(train_per_class=3, val_per_class=1, test_per_class=1)
SMALL_COUNTS = {"train": 3, "val": 1, "test": 1}


def _files(root):
  """Returns {relative path: bytes} for every non-hidden file under root."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for name in filenames:
      if not name.startswith("."):
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
          out[os.path.relpath(path, root)] = f.read()
  return out


def test_shape_classes_are_sorted_and_cover_the_spec():
  assert list(datasets.SHAPE_CLASSES) == sorted(datasets.SHAPE_CLASSES)
  assert {"circle", "cross", "ring", "square", "star",
          "triangle"} <= set(datasets.SHAPE_CLASSES)


def test_load_shapes_layout_and_counts(tmp_path):
  root = datasets.load_shapes(tmp_path, seed=0, **SMALL)

  assert os.path.dirname(root) == str(tmp_path)
  assert os.path.basename(root) == (
      f"shapes-v{shapes.DATASET_VERSION}-s0-64px-3-1-1")
  assert sorted(os.listdir(root)) == [".complete", "test", "train", "val"]
  for split, per_class in SMALL_COUNTS.items():
    assert sorted(os.listdir(os.path.join(root, split))) == sorted(
        datasets.SHAPE_CLASSES)
    for class_name in datasets.SHAPE_CLASSES:
      names = sorted(os.listdir(os.path.join(root, split, class_name)))
      assert names == [f"{i:05d}.png" for i in range(per_class)]
  with open(os.path.join(root, ".complete")) as f:
    params = json.load(f)
  assert params["seed"] == 0
  assert params["image_size"] == 64
  assert params["counts"] == SMALL_COUNTS
  # No temporary directory is left next to the dataset.
  assert os.listdir(tmp_path) == [os.path.basename(root)]


def test_zero_count_split_is_not_written(tmp_path):
  root = datasets.load_shapes(
      tmp_path, train_per_class=2, val_per_class=0, test_per_class=1)
  assert sorted(os.listdir(root)) == [".complete", "test", "train"]


@pytest.mark.parametrize("image_size", [64, 40])
def test_images_decode_as_rgb_of_requested_size(tmp_path, image_size):
  root = datasets.load_shapes(tmp_path, image_size=image_size, **SMALL)
  files = _files(root)
  assert len(files) == 5 * len(datasets.SHAPE_CLASSES)
  for relpath in files:
    with Image.open(os.path.join(root, relpath)) as image:
      assert image.format == "PNG"
      assert image.mode == "RGB"
      assert image.size == (image_size, image_size)


def test_same_seed_gives_identical_bytes_different_seed_differs(tmp_path):
  first = _files(
      datasets.generate_shapes(
          tmp_path / "a", seed=7, counts=SMALL_COUNTS, num_workers=1))
  again = _files(
      datasets.generate_shapes(
          tmp_path / "b", seed=7, counts=SMALL_COUNTS, num_workers=1))
  other = _files(
      datasets.generate_shapes(
          tmp_path / "c", seed=8, counts=SMALL_COUNTS, num_workers=1))

  assert first == again
  assert first.keys() == other.keys()
  assert all(first[k] != other[k] for k in first)


def test_parallel_generation_matches_serial(tmp_path):
  # Enough images that generate_shapes really uses its worker threads.
  counts = {"train": 12}
  serial = datasets.generate_shapes(
      tmp_path / "serial", seed=3, counts=counts, num_workers=1)
  parallel = datasets.generate_shapes(
      tmp_path / "parallel", seed=3, counts=counts, num_workers=3)
  assert _files(serial) == _files(parallel)


def test_images_differ_within_and_across_splits(tmp_path):
  files = _files(
      datasets.generate_shapes(tmp_path, seed=0, counts=SMALL_COUNTS))
  assert len(set(files.values())) == len(files)


def test_larger_split_extends_smaller_one(tmp_path):
  small = _files(
      datasets.generate_shapes(tmp_path / "small", seed=0, counts={"train": 1}))
  large = _files(
      datasets.generate_shapes(tmp_path / "large", seed=0, counts={"train": 2}))
  assert small.items() <= large.items()


def _shape_mask(pixels):
  """Foreground mask: pixels far from the (border-estimated) background.

  Uses a median of the image border as the background colour, which is only
  reliable for flat backgrounds, so callers draw on a plain background.
  """
  border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0],
                           pixels[:, -1]]).astype(float)
  distance = np.linalg.norm(
      pixels.astype(float) - np.median(border, 0), axis=-1)
  return distance > 40


def test_render_shape_covers_a_bounded_area_per_class(monkeypatch):
  # A flat background makes the shape segmentable by colour alone.
  monkeypatch.setattr(shapes, "textured_background", lambda rng, size: np.full(
      (size, size, 3), 128.0))
  size = 64
  mean_fraction = {}
  for class_index, name in enumerate(datasets.SHAPE_CLASSES):
    fractions = []
    for i in range(20):
      rng = np.random.default_rng([class_index, i])
      pixels = shapes.render_shape(rng, name, size)
      assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8
      fractions.append(_shape_mask(pixels).mean())
    # Smallest possible: a 45%-diameter ring/star; largest: an 80% circle.
    assert 0.04 < min(fractions) and max(fractions) < 0.55, (name, fractions)
    mean_fraction[name] = np.mean(fractions)
  # Thin shapes cover less of their bounding circle than solid ones.
  assert mean_fraction["circle"] > mean_fraction["ring"]
  assert mean_fraction["circle"] > mean_fraction["star"]
  assert mean_fraction["square"] > mean_fraction["cross"]


# Area of each shape's fill in units of its radius squared, over the range of
# its random parameters (ring hole, star depth, cross arm width, triangle
# irregularity), plus a margin for rasterisation.
_AREA_OVER_R2 = {
    "circle": (np.pi - 0.1, np.pi + 0.1),
    "cross": (8 * 0.2 - 4 * 0.2**2 - 0.1, 8 * 0.33 - 4 * 0.33**2 + 0.1),
    "ring": (np.pi * (1 - 0.7**2) - 0.1, np.pi * (1 - 0.45**2) + 0.1),
    "square": (2.0 - 0.1, 2.0 + 0.1),
    "star": (5 * np.sin(np.pi / 5) * 0.38 - 0.1,
             5 * np.sin(np.pi / 5) * 0.55 + 0.1),
    "triangle": (3 * np.sqrt(3) / 4 * 0.9**2 - 0.1, 3 * np.sqrt(3) / 4 + 0.1),
}


@pytest.mark.parametrize("name", datasets.SHAPE_CLASSES)
def test_shape_geometry(name):
  size, radius = 64, 20.0
  centre = np.array([32.0, 32.0])
  for i in range(10):
    rng = np.random.default_rng(i)
    fill, _ = shapes.shape_masks(rng, name, size, centre, radius,
                                  rng.uniform(0, 2 * np.pi))
    area = fill.sum() / radius**2
    low, high = _AREA_OVER_R2[name]
    assert low < area < high, (name, i, area)
    # Every shape but the ring covers its centre; the ring shows a hole.
    assert (fill[32, 32, 0] > 0.5) == (name != "ring"), (name, i)


def test_rotation_changes_polygons_but_not_area():
  centre = np.array([32.0, 32.0])
  a, _ = shapes.shape_masks(
      np.random.default_rng(0), "triangle", 64, centre, 20.0, 0.0)
  b, _ = shapes.shape_masks(
      np.random.default_rng(0), "triangle", 64, centre, 20.0, 1.0)
  assert np.abs(a - b).sum() > 50
  assert abs(a.sum() - b.sum()) < 0.02 * a.sum()


def test_render_shape_is_a_pure_function_of_the_generator_state():
  a = shapes.render_shape(np.random.default_rng(5), "star", 48)
  b = shapes.render_shape(np.random.default_rng(5), "star", 48)
  c = shapes.render_shape(np.random.default_rng(6), "star", 48)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.shape == (48, 48, 3)


def test_second_load_reuses_the_cache(tmp_path, monkeypatch):
  root = datasets.load_shapes(tmp_path, **SMALL)
  probe = os.path.join(root, "train", "circle", "00000.png")
  os.utime(probe, (1_000_000, 1_000_000))
  mtime = os.stat(probe).st_mtime_ns

  def fail(*args, **kwargs):
    raise AssertionError("generate_shapes called for a cached dataset")

  monkeypatch.setattr(shapes, "generate_shapes", fail)
  assert datasets.load_shapes(tmp_path, **SMALL) == root
  assert os.stat(probe).st_mtime_ns == mtime


def test_different_params_get_different_directories(tmp_path):
  roots = {
      datasets.load_shapes(tmp_path, **SMALL),
      datasets.load_shapes(tmp_path, seed=1, **SMALL),
      datasets.load_shapes(tmp_path, image_size=32, **SMALL),
      datasets.load_shapes(
          tmp_path, train_per_class=4, val_per_class=1, test_per_class=1),
  }
  assert len(roots) == 4


def test_data_home_env_is_respected(tmp_path, monkeypatch):
  monkeypatch.setenv("IMGREC_DATA_HOME", str(tmp_path / "home"))
  root = datasets.load_shapes(**SMALL)
  assert os.path.dirname(root) == str(tmp_path / "home")
  assert os.path.isfile(os.path.join(root, ".complete"))


def test_default_location_is_user_cache(tmp_path, monkeypatch):
  monkeypatch.delenv("IMGREC_DATA_HOME", raising=False)
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  root = datasets.load_shapes(**SMALL)
  assert os.path.dirname(root) == str(tmp_path / ".cache" / "imgrec" /
                                      "datasets")


def test_incomplete_directory_is_not_reused(tmp_path):
  name = f"shapes-v{shapes.DATASET_VERSION}-s0-64px-3-1-1"
  os.makedirs(tmp_path / name / "train")
  with pytest.raises(FileExistsError, match="no .complete marker"):
    datasets.load_shapes(tmp_path, **SMALL)


def test_losing_the_rename_race_keeps_the_winners_copy(tmp_path, monkeypatch):
  real_generate = shapes.generate_shapes
  other_roots = []

  def generate_while_another_process_finishes(root, **kwargs):
    # Simulates a concurrent load_shapes that completes while we generate;
    # only the outermost call starts one, so the nesting stops.
    if not other_roots:
      other_roots.append(None)
      other_roots[0] = datasets.load_shapes(tmp_path, **SMALL)
    return real_generate(root, **kwargs)

  monkeypatch.setattr(shapes, "generate_shapes",
                      generate_while_another_process_finishes)
  root = datasets.load_shapes(tmp_path, **SMALL)
  assert other_roots == [root]
  assert os.path.isfile(os.path.join(root, ".complete"))
  # Our temporary copy was removed, and nothing else was left behind.
  assert os.listdir(tmp_path) == [os.path.basename(root)]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seed=-1),
        dict(seed=1.5),
        dict(image_size=8),
        dict(train_per_class=-1),
        dict(val_per_class=2.0),
    ],
)
def test_load_shapes_rejects_bad_arguments(tmp_path, kwargs):
  with pytest.raises(ValueError, match="Received"):
    datasets.load_shapes(tmp_path, **kwargs)
  assert not os.listdir(tmp_path)


def test_render_shape_rejects_unknown_shape():
  with pytest.raises(ValueError, match="hexagon"):
    shapes.render_shape(np.random.default_rng(0), "hexagon", 64)


def test_load_builtin(tmp_path):
  assert datasets.BUILTIN_DATASETS["shapes"] is datasets.load_shapes
  assert "shapes" in datasets.list_builtin()
  root = datasets.load_builtin("shapes", data_dir=tmp_path, **SMALL)
  assert root == datasets.load_shapes(tmp_path, **SMALL)


def test_load_builtin_unknown_name_lists_known_names():
  with pytest.raises(ValueError,
                     match=r"\['shapes', 'shapes_multilabel'\].*mnist"):
    datasets.load_builtin("mnist")
