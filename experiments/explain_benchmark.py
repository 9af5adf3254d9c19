"""Are imgrec's heatmaps faithful? Pointing game, deletion and insertion,
sanity check and cost of every explanation method (issue 27).

    python experiments/explain_benchmark.py --seeds=0,1,2 --work=/tmp/eb

For each data set, model and seed, `imgrec-train` trains a model, then on the
test split:

- Pointing game: on the correctly classified test images, the share whose
  heatmap peak (`Classifier.explain`, in the image's pixels) lies inside the
  object's box; baseline in the same run: the image's centre point.
  Data: the built-in shapes (64 px; each image's box from
  `shapes.image_and_box`, the generator's own mask) and "scenes" made here:
  one small shape (13-20% of the side across) at a random place on a
  textured background with 8 to 16 random strokes over it (clutter), box
  known.
- Deletion and insertion (Petsiuk et al. 2018), by the cells of an 8 x 8
  grid over the model's input ranked by their mean heat: cells blurred
  most-important first (deletion), or put back most-important first into
  the blurred image (insertion), in 16 steps; the target class's
  probability integrated over the fraction changed. Whole cells, for the
  map and the random map alike: removing scattered single pixels (a random
  map's order) makes an image no model has seen and drops its
  probability at once, whatever the map. Deletion lower is
  better, insertion higher; each against a random map (uniform noise) on
  the same images. Goal: deletion <= 0.6x random, insertion >= 1.5x.
- Sanity check (Adebayo et al. 2018): Spearman rank correlation between
  the trained model's maps and those of the same architecture with fresh
  random weights (`keras.models.clone_model`), median over the images.
  Goal: <= 0.3.
- Cost: one heatmap's latency (batch of 1, median of 10) over the compiled
  Keras prediction of the same image (`tf.function(model)`), and the same
  per image in batches of 32.

Prints one table per measure and writes `results.json` under --work.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageDraw

_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds.")
_WORK = flags.DEFINE_string("work", "/tmp/explain_benchmark", "Scratch folder.")
_MODELS = flags.DEFINE_list(
    "models", ["simple_cnn:64", "mlp:32"],
    "MODEL:IMAGE_SIZE of each model family.")
_DATA = flags.DEFINE_list("data", ["shapes", "scenes"], "Data sets.")
_EPOCHS = flags.DEFINE_integer("epochs", 15, "Training epochs.")
_IMAGES = flags.DEFINE_integer("faithfulness_images", 100, "Correct test "
                               "images the deletion, insertion and sanity "
                               "measures use.")
_POINTING = flags.DEFINE_integer("pointing_images", 50, "Test images of "
                                 "each class the pointing game uses.")
_STEPS = flags.DEFINE_integer("curve_steps", 16, "Steps of the deletion and "
                              "insertion curves.")

_SCENE_COUNTS = {"train": 300, "val": 50, "test": 100}  # a class


def _run(args):
  proc = subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, check=False)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])


def _scene(rng, shape_name, size=64):
  """One scene: a small shape at a random place over clutter; its box."""
  from imgrec.datasets import shapes  # pylint: disable=g-import-not-at-top
  background = shapes.textured_background(rng, size)
  canvas = Image.fromarray(np.clip(np.rint(background), 0, 255).astype(
      np.uint8))
  draw = ImageDraw.Draw(canvas)
  for _ in range(rng.integers(8, 17)):  # Clutter: random strokes.
    points = [tuple(rng.uniform(0, size, 2)) for _ in range(rng.integers(2, 4))]
    draw.line(points, fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
              width=int(rng.integers(1, 3)))
  image = np.asarray(canvas, np.float64)
  radius = 0.5 * size * rng.uniform(0.26, 0.40)
  centre = rng.uniform(radius, size - radius, size=2)
  fill_mask, outline_mask = shapes.shape_masks(
      rng, shape_name, size, centre, radius, rng.uniform(0, 2 * np.pi))
  fill = shapes.fill_colour(rng, image, centre, radius, (1.0, 1.0))
  image = image * (1 - fill_mask) + fill * fill_mask
  covered = fill_mask[..., 0] >= 0.5
  if outline_mask is not None:
    image = image * (1 - outline_mask) + shapes.outline_colour(
        rng, fill) * outline_mask
    covered |= outline_mask[..., 0] >= 0.5
  rows, cols = np.nonzero(covered.any(1))[0], np.nonzero(covered.any(0))[0]
  box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
  image = image + rng.normal(0, 3.0, image.shape)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), box


def make_scenes(root):
  """Writes the scenes data set (train/val/test/<class>/*.png) once;
  returns {test path: box}."""
  from imgrec.datasets import shapes  # pylint: disable=g-import-not-at-top
  boxes_path = os.path.join(root, "boxes.json")
  if os.path.isfile(boxes_path):
    return json.load(open(boxes_path))
  boxes = {}
  for s, split in enumerate(_SCENE_COUNTS):
    for c, name in enumerate(shapes.SHAPE_CLASSES):
      folder = os.path.join(root, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(_SCENE_COUNTS[split]):
        rng = np.random.default_rng([7, s, c, i])
        image, box = _scene(rng, name)
        path = os.path.join(folder, f"{i:05d}.png")
        Image.fromarray(image).save(path)
        if split == "test":
          boxes[path] = box
  json.dump(boxes, open(boxes_path, "w"))
  return boxes


def shapes_boxes(work):
  """The built-in shapes' root and {test path: box} from the generator."""
  from imgrec.datasets import shapes  # pylint: disable=g-import-not-at-top
  root = shapes.load_shapes(os.path.join(work, "data"))
  boxes = {}
  for name in shapes.SHAPE_CLASSES:
    folder = os.path.join(root, "test", name)
    for file in sorted(os.listdir(folder)):
      index = int(os.path.splitext(file)[0])
      image, box = shapes.image_and_box(0, "test", name, index)
      path = os.path.join(folder, file)
      if not np.array_equal(np.asarray(Image.open(path).convert("RGB")),
                            image):
        raise RuntimeError(f"{path} is not the generator's image {index}.")
      boxes[path] = box
  return root, boxes


def _curve_batch(image, cells, steps, start, end):
  """The `steps` + 1 images along a curve: the cells in order (`cells`:
  [K, H, W] masks) changed from `start` to `end`."""
  batch = []
  for k in range(steps + 1):
    changed = cells[:int(round(k / steps * len(cells)))].any(axis=0)
    batch.append(np.where(changed[..., None], end, start))
  return batch


def _area(p):
  """A curve's area over the fraction changed (trapezoid)."""
  return float(np.sum((p[1:] + p[:-1]) / 2) / (len(p) - 1))


def _cells(heat, rng, grid=8):
  """The masks of a `grid` x `grid` partition of the image, the cell of the
  most heat (on average) first; ties in random order."""
  height, width = heat.shape
  rows = np.minimum(np.arange(height) * grid // height, grid - 1)
  cols = np.minimum(np.arange(width) * grid // width, grid - 1)
  index = rows[:, None] * grid + cols[None, :]
  mean = np.bincount(index.ravel(), heat.ravel(), grid * grid) / np.maximum(
      np.bincount(index.ravel(), minlength=grid * grid), 1)
  order = np.argsort(-(mean + rng.uniform(0, 1e-6, mean.shape)),
                     kind="stable")
  return np.stack([index == c for c in order])


def _blurred(image):
  return np.asarray(Image.fromarray(image.astype(np.uint8)).filter(
      __import__("PIL.ImageFilter").ImageFilter.GaussianBlur(
          max(2, image.shape[0] // 8))), np.float32)


def _spearman(a, b):
  ra = np.argsort(np.argsort(a.ravel())).astype(np.float64)
  rb = np.argsort(np.argsort(b.ravel())).astype(np.float64)
  ra -= ra.mean()
  rb -= rb.mean()
  denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
  return float((ra * rb).sum() / denominator) if denominator else 0.0


def _latency(fn, x, runs=10):
  fn(x)
  fn(x)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn(x)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def measure(model_dir, boxes, seed):
  """Every measure of one trained model."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from imgrec.data import pixels  # pylint: disable=g-import-not-at-top
  from imgrec.inference import explain  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  clf = Classifier.load(os.path.join(model_dir, "best.keras"))
  model = clf.explainer().model
  paths = sorted(boxes)
  per_class = {}
  for path in paths:  # The first --pointing_images of each class.
    per_class.setdefault(os.path.dirname(path), []).append(path)
  paths = sorted(p for found in per_class.values()
                 for p in found[:_POINTING.value])
  truth = [os.path.basename(os.path.dirname(p)) for p in paths]
  rng = np.random.default_rng(seed)
  spec = clf.model_input
  randomized = keras.models.clone_model(model)
  out = {"accuracy": None, "methods": {}}
  predict = tf.function(lambda x: model(x, training=False),
                        reduce_retracing=True)
  one = pixels.preprocess([np.asarray(Image.open(paths[0]).convert("RGB"))],
                          spec.image_size, spec.channels)
  batch32 = np.repeat(one, 32, axis=0)
  predict_one = _latency(predict, one)
  predict_32 = _latency(predict, batch32) / 32
  images_all = pixels.preprocess(
      [np.asarray(Image.open(p).convert("RGB")) for p in paths],
      spec.image_size, spec.channels)
  for method in explain.methods_for(model, offered=False):
    # Every method that applies, offered or not: this measures them.
    explainer = explain.Explainer(model, method, offered=False)
    maps, probabilities, _ = explainer(images_all)
    predicted = [clf.class_names[j] for j in probabilities.argmax(-1)]
    correct = [i for i in range(len(paths)) if predicted[i] == truth[i]]
    out["accuracy"] = len(correct) / len(paths)

    def inside(point, box):
      return point is not None and box[0] <= point[0] < box[2] and (
          box[1] <= point[1] < box[3])

    def peak(i):  # In the 64-pixel image's coordinates.
      return explain.to_image(*explain.locate(maps[i]), maps[i].shape,
                              (64, 64))[0]
    hits = sum(inside(peak(i), boxes[paths[i]]) for i in correct)
    centre = sum(inside((32, 32), boxes[paths[i]]) for i in correct)
    # Faithfulness and sanity on the first correct images.
    chosen = correct[:_IMAGES.value]
    images = pixels.preprocess(
        [np.asarray(Image.open(paths[i]).convert("RGB")) for i in chosen],
        spec.image_size, spec.channels)
    targets = np.asarray([clf.class_names.index(truth[i]) for i in chosen])
    heat = maps[chosen]
    random_explainer = explain.Explainer(randomized, method, offered=False)
    random_heat = random_explainer(images, targets)[0]
    areas = {"deletion": [], "insertion": [], "deletion_random": [],
             "insertion_random": []}
    sanity = []
    for image, h, rh, target in zip(images, heat, random_heat, targets):
      blur = _blurred(image)
      curves, batch = [], []
      for name, cells in (("", _cells(h, rng)),
                          ("_random", _cells(rng.uniform(size=h.shape), rng))):
        for curve, start, end in (("deletion", image, blur),
                                  ("insertion", blur, image)):
          curves.append(curve + name)
          batch += _curve_batch(image, cells, _STEPS.value, start, end)
      p = predict(np.stack(batch).astype(np.float32)).numpy()[:, target]
      for i, curve in enumerate(curves):
        areas[curve].append(_area(p[i * (_STEPS.value + 1):
                                    (i + 1) * (_STEPS.value + 1)]))
      sanity.append(_spearman(h, rh))
    explain_one = _latency(lambda x: explainer(x), one)  # pylint: disable=unnecessary-lambda
    explain_32 = _latency(lambda x: explainer(x), batch32) / 32  # pylint: disable=unnecessary-lambda
    mean = {k: float(np.mean(v)) for k, v in areas.items()}
    out["methods"][method] = {
        "correct": len(correct), "pointing": hits / max(1, len(correct)),
        "centre": centre / max(1, len(correct)),
        "deletion": mean["deletion"],
        "deletion_random": mean["deletion_random"],
        "deletion_ratio": mean["deletion"] / mean["deletion_random"],
        "insertion": mean["insertion"],
        "insertion_random": mean["insertion_random"],
        "insertion_ratio": mean["insertion"] / mean["insertion_random"],
        "sanity_spearman": float(np.median(sanity)),
        "latency_one_ms": explain_one * 1e3,
        "predict_one_ms": predict_one * 1e3,
        "latency_ratio_one": explain_one / predict_one,
        "latency_ratio_batch32": explain_32 / predict_32}
    print(model_dir, method, json.dumps(
        {k: round(v, 3) for k, v in out["methods"][method].items()}),
          flush=True)
  return out


def main(argv):
  del argv
  work = os.path.abspath(_WORK.value)
  os.makedirs(work, exist_ok=True)
  data = {}
  if "shapes" in _DATA.value:
    data["shapes"] = shapes_boxes(work)
  if "scenes" in _DATA.value:
    root = os.path.join(work, "scenes")
    data["scenes"] = (root, make_scenes(root))
  results_path = os.path.join(work, "results.json")
  results = json.load(open(results_path)) if os.path.isfile(
      results_path) else {}
  for seed in _SEEDS.value:
    for name, (root, boxes) in data.items():
      for spec in _MODELS.value:
        model, size = spec.split(":")
        key = f"{name}/{model}/{seed}"
        if key in results:
          continue
        model_dir = os.path.join(work, "runs", name, model, seed)
        start = time.monotonic()
        if not os.path.isfile(os.path.join(model_dir, "best.keras")):
          _run(["imgrec.cli.train", f"--data_dir={root}", f"--model={model}",
                f"--image_size={size}", f"--seed={seed}",
                f"--epochs={_EPOCHS.value}", "--noexport", "--verbose=0",
                "--flip=none", f"--model_dir={model_dir}", "--overwrite"])
        trained = time.monotonic() - start
        results[key] = measure(model_dir, boxes, int(seed))
        results[key]["train_seconds"] = trained
        json.dump(results, open(results_path, "w"), indent=1)
  _print_tables(results)


def _print_tables(results):
  rows = {}
  for key, result in results.items():
    name, model, _ = key.split("/")
    for method, m in result["methods"].items():
      rows.setdefault((name, model, method), []).append(
          dict(m, accuracy=result["accuracy"]))
  fields = ("accuracy", "pointing", "centre", "deletion_ratio",
            "insertion_ratio", "sanity_spearman", "latency_ratio_one",
            "latency_ratio_batch32")
  print("\nmedians over seeds (n = seeds)")
  print("| data | model | method | n | " + " | ".join(fields) + " |")
  print("|" + " --- |" * (len(fields) + 4))
  for (name, model, method), found in sorted(rows.items()):
    values = [np.median([f[k] for f in found]) for k in fields]
    print(f"| {name} | {model} | {method} | {len(found)} | " +
          " | ".join(f"{v:.3f}" for v in values) + " |")


if __name__ == "__main__":
  app.run(main)
