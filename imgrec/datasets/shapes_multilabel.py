"""Generates and caches the built-in multi-label dataset ``shapes_multilabel``.

Every image shows 0 to 3 different shapes of `shapes.SHAPE_CLASSES`, each
smaller than in ``shapes`` and placed apart from the others, on the same
kind of textured background with extra clutter (soft blobs and thin
lines, which never read as shapes). The labels are the shapes an image
holds; an image with none is a background image. The tree::

    root/images/00000.png
    ...
    root/labels.csv        path,labels,split (labels joined by spaces)

An image is a pure function of ``(seed, index)`` and its split of the
index, so the dataset regenerates byte for byte where the same numpy and
Pillow versions run.

    csv_path = load_shapes_multilabel()  # Generated on first call.
"""

import os

import numpy as np
from PIL import Image
from PIL import ImageDraw

from imgrec.datasets import _build
from imgrec.datasets import shapes

DATASET_VERSION = 2
LABELS_CSV = "labels.csv"
# How many shapes an image holds: 0 (background), 1, 2 or 3.
_COUNT_PROBABILITIES = (0.1, 0.35, 0.35, 0.2)
# Shape radius as a fraction of the image side: smaller than `shapes`'
# (0.45-0.8 of the side as a diameter), so three fit apart. With 0.13-0.2
# (version 1) simple_cnn reached a test mAP of 0.963 in 20 epochs, squares,
# stars and triangles 17 pixels across being the hard ones.
_MIN_RADIUS, _MAX_RADIUS = 0.16, 0.24
_MIN_IMAGES_FOR_WORKERS = 64


def render_scene(rng, image_size=64):
  """Draws one scene; returns (uint8 [size, size, 3] pixels, shape names)."""
  count = rng.choice(len(_COUNT_PROBABILITIES), p=_COUNT_PROBABILITIES)
  names = sorted(rng.choice(shapes.SHAPE_CLASSES, count, replace=False))
  background = _clutter(rng, shapes.textured_background(rng, image_size))
  image = background
  placed = []
  for name in names:
    radius = image_size * rng.uniform(_MIN_RADIUS, _MAX_RADIUS)
    centre = _free_spot(rng, image_size, radius, placed)
    placed.append((centre, radius))
    fill_mask, outline_mask = shapes.shape_masks(
        rng, name, image_size, centre, radius, rng.uniform(0, 2 * np.pi))
    fill = shapes.fill_colour(rng, background, centre, radius,
                                      (1.0, 1.0))
    image = image * (1.0 - fill_mask) + fill * fill_mask
    if outline_mask is not None:
      outline = shapes.outline_colour(rng, fill)
      image = image * (1.0 - outline_mask) + outline * outline_mask
  image = image + rng.normal(0.0, rng.uniform(1.0, 5.0), size=image.shape)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), names


def _free_spot(rng, size, radius, placed):
  """A centre whose shape overlaps no placed one (the best of a few tries)."""
  best, best_gap = None, -np.inf
  for _ in range(32):
    centre = rng.uniform(radius * 0.9, size - radius * 0.9, size=2)
    gap = min((np.linalg.norm(centre - c) - r - radius for c, r in placed),
              default=np.inf)
    if gap > best_gap:
      best, best_gap = centre, gap
    if gap > 0.1 * size:
      break
  return best


def _clutter(rng, background):
  """Thin lines across the background: edges that are no shape."""
  size = background.shape[0]
  scale = 4
  layer = Image.new("L", (size * scale, size * scale), 0)
  draw = ImageDraw.Draw(layer)
  for _ in range(rng.integers(0, 4)):
    points = rng.uniform(0, size * scale, size=4)
    draw.line(tuple(points), fill=255, width=int(rng.integers(1, 3)))
  mask = np.asarray(layer.resize((size, size), Image.LANCZOS),
                    np.float64)[..., None] / 255.0 * rng.uniform(0.2, 0.5)
  colour = rng.uniform(0.0, 255.0, size=3)
  return background * (1.0 - mask) + colour * mask


def generate_shapes_multilabel(root, *, seed, image_size=64, counts,
                               num_workers=None):
  """Writes the dataset under `root` (in place; `load_shapes_multilabel`
  makes it atomic). Returns the labels CSV's path.

  Args:
    root: Directory to write into; created if missing.
    seed: Non-negative integer seed.
    image_size: Side of the square images, at least 16.
    counts: {split: images}, e.g. {"train": 1500, "val": 300, "test": 600}.
    num_workers: Threads that render and encode; do not change the output.
  """
  _build.check_seed(seed)
  shapes.check_image_size(image_size)
  _build.check_split_counts(counts, "counts", "Images")
  num_workers = _build.check_workers(num_workers)
  root = os.fspath(root)
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  jobs = [(split, i) for split, n in counts.items() for i in range(n)]
  rows = [None] * len(jobs)

  def write(k):
    split, index = jobs[k]
    # Keyed on the split and index: the splits stay disjoint and an image
    # does not depend on the counts.
    rng = np.random.default_rng([seed, shapes.SPLITS.index(split), index])
    pixels, names = render_scene(rng, image_size)
    name = f"images/{split}_{index:05d}.png"
    Image.fromarray(pixels).save(os.path.join(root, name), optimize=False)
    rows[k] = f"{name},{' '.join(names)},{split}"

  _build.run_jobs(write, range(len(jobs)), num_workers,
                  _MIN_IMAGES_FOR_WORKERS)
  path = os.path.join(root, LABELS_CSV)
  with open(path, "w", encoding="utf-8") as f:
    f.write("path,labels,split\n" + "".join(f"{r}\n" for r in rows))
  return path


def load_shapes_multilabel(data_dir=None, *, seed=0, image_size=64,
                           train=1500, val=300, test=600):
  """The labels CSV of the dataset, generated on first use (see
  `shapes.load_shapes` for where it lives and how it is made safely)."""
  counts = {"train": train, "val": val, "test": test}
  _build.check_seed(seed)
  shapes.check_image_size(image_size)
  _build.check_split_counts(counts, "counts", "Images")
  name = (f"shapes_multilabel-v{DATASET_VERSION}-s{seed}-{image_size}px-"
          f"{train}-{val}-{test}")
  root = os.path.join(_build.data_home(data_dir), name)
  params = {"name": "shapes_multilabel", "version": DATASET_VERSION,
            "seed": seed, "image_size": image_size, "counts": counts,
            "classes": list(shapes.SHAPE_CLASSES)}
  root = _build.build_once(
      root, params, lambda tmp: generate_shapes_multilabel(
          tmp, seed=seed, image_size=image_size, counts=counts),
      "load_shapes_multilabel")
  return os.path.join(root, LABELS_CSV)
