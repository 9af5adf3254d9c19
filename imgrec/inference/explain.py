"""Class heatmaps: where a Keras model looked for its answer.

    explainer = Explainer(model, "gradcam")
    maps, probabilities, targets = explainer(pixels)  # maps [N, H, W] in 0..1

Methods, by what the model has (`methods_for`; those offered passed the
sanity check, see `FAILED_SANITY`):

- On the last spatial feature map (`registry.spatial_features`: a
  convolutional backbone's map, a transformer's patch tokens), one forward
  and one backward pass: Grad-CAM (Selvaraju et al. 2017: the map's
  channels weighted by their mean gradient), Grad-CAM++ (Chattopadhyay et
  al. 2018: weights from the positive gradients, scaled by the closed form
  of its higher derivatives) and LayerCAM (Jiang et al. 2021: each
  position's channels weighted by their own positive gradient).
- On the input pixels, for any model (the only methods of a model without a
  spatial map: mlp, row_lstm, clip models, whose frame model runs inside a
  `TimeDistributed`): integrated gradients (Sundararajan et al. 2017: the
  gradient averaged along the straight path from a black image, times the
  image; `steps` passes) and gradient x input (one pass).

Every map is of the evidence for the target: the positive part, scaled so
its largest value is 1 (an image whose map is zero everywhere stays zero).
A classifier's target is a class (the logit before its softmax or sigmoid,
as the papers use); the predicted one by default. An embedder's (a face
model's) target is an embedding: the map shows what makes the image's
embedding match it (a similarity map).

TensorFlow's `GradientTape` on the Keras model itself; nothing here depends
on a library outside Keras and TensorFlow.
"""

import json
import os

import numpy as np

from imgrec import fileio
from imgrec import run_folder
from imgrec.config import EXPLAIN_METHODS
from imgrec.errors import ImgrecError
from imgrec.models import registry

METHODS = EXPLAIN_METHODS
(GRADCAM, GRADCAM_PLUS_PLUS, LAYERCAM, INTEGRATED_GRADIENTS,
 GRADIENT_X_INPUT) = METHODS
MAP_METHODS = (GRADCAM, GRADCAM_PLUS_PLUS, LAYERCAM)
INPUT_METHODS = (INTEGRATED_GRADIENTS, GRADIENT_X_INPUT)
# The share of a heatmap's peak the region around the peak keeps (`locate`).
BOX_LEVEL = 0.5


# The methods offered: those whose maps passed the sanity check (Adebayo et
# al. 2018: their rank correlation with the maps of the same network with
# random weights at most 0.3) in experiments/explain_benchmark.py. On a
# convolutional model (simple_cnn on the built-in shapes, 3 seeds) the
# medians were Grad-CAM 0.20, Grad-CAM++ 0.66, LayerCAM 0.66, integrated
# gradients 0.34 and gradient x input 0.38: all but Grad-CAM follow the
# image more than the model, so a model with a spatial map is offered
# Grad-CAM alone. A model without one has only the input methods.
SANITY_LIMIT = 0.3
FAILED_SANITY = {GRADCAM_PLUS_PLUS: 0.66, LAYERCAM: 0.66,
                 INTEGRATED_GRADIENTS: 0.34, GRADIENT_X_INPUT: 0.38}


def methods_for(model, offered=True):
  """The methods for `model`, the default first: those offered (that passed
  the sanity check on its kind of model), or with `offered=False` all that
  apply (for measuring them)."""
  if registry.spatial_features(model) is None:
    return INPUT_METHODS
  return (GRADCAM,) if offered else METHODS


def check_method(model, method, offered=True):
  """`method`, or the model's default for None.

  Raises:
    ValueError: an unknown method, one the model has no map for, or (with
      `offered`) one that failed the sanity check on such models (naming the
      methods there are).
  """
  applies = methods_for(model, offered)
  if method is None:
    return applies[0]
  if method not in METHODS:
    raise ValueError(f"Unknown explanation method {method!r}; known: "
                     f"{', '.join(METHODS)}.")
  if method in applies:
    return method
  if method in methods_for(model, offered=False):
    raise ValueError(
        f"{method} is not offered for a model with a spatial feature map: "
        f"its maps of {model.name}'s kind of network with random weights "
        f"correlate {FAILED_SANITY[method]:.2f} with the trained network's "
        f"(above {SANITY_LIMIT}: they follow the image, not the model); "
        f"methods offered: {', '.join(applies)}.")
  raise ValueError(
      f"{method} weighs the last spatial feature map, and {model.name} has "
      f"none (its features are a vector); methods that apply: "
      f"{', '.join(applies)}.")


def _head(model):
  """The classifier head (a Dense named `registry.HEAD`), or None."""
  import keras  # pylint: disable=g-import-not-at-top
  try:
    head = model.get_layer(registry.HEAD)
  except ValueError:
    return None
  return head if isinstance(head, keras.layers.Dense) and head.use_bias else None


def _smoothing_size(size):
  """An odd box-filter side for maps of input gradients (pixel-level noise
  would put their peak on one pixel): about a sixteenth of the image."""
  return max(1, int(round(min(size) / 16.0))) | 1


class Explainer:
  """Heatmaps of one Keras model by one method.

  Args:
    model: a classifier (softmax or sigmoid head named `registry.HEAD`, a
      clip model included) or an embedder (its output an embedding).
    method: one of `methods_for(model)`; None for the model's default
      (Grad-CAM where it has a spatial map, else integrated gradients).
    steps: integrated gradients' steps along the path.
    offered: refuse a method not offered for the model (`methods_for`);
      False to measure every method that applies.

  Raises:
    ValueError: as `check_method`; `steps` below 1.
  """

  def __init__(self, model, method=None, *, steps=16, offered=True):
    import keras  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self.model = model
    self.method = check_method(model, method, offered)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
      raise ValueError(f"steps must be an integer >= 1. Received: "
                       f"steps={steps!r}")
    self.steps = steps
    self._head = _head(model)
    self.kind = "classes" if self._head is not None else "embedding"
    inputs = registry.model_inputs(model)
    if isinstance(inputs, list):
      raise ValueError(f"{model.name} takes several inputs; explanations "
                       "need a model of one image or clip input.")
    self.input_shape = tuple(inputs.shape[1:])
    readout = self._head.input if self._head is not None else model.output
    self._grid = None
    if self.method in MAP_METHODS:
      spatial, self._grid = registry.spatial_features(model)
      self._graph = keras.Model(inputs, [spatial, readout])
    else:
      self._graph = keras.Model(inputs, readout)
    def maps(x, targets):  # A function of this explainer's own: TensorFlow
      return self._maps(x, targets)  # counts retracing by function.

    self._compiled = tf.function(maps, reduce_retracing=True)

  @property
  def activation(self):
    """The head's activation name ("softmax", "sigmoid"), None for an
    embedder."""
    return None if self._head is None else self._head.activation.__name__

  def _score(self, readout, targets):
    """(score [N] to explain, outputs [N, C or D], targets used)."""
    tf = self._tf
    readout = tf.cast(readout, tf.float32)
    if self._head is None:  # An embedder: match a reference embedding.
      targets = tf.math.l2_normalize(tf.cast(targets, tf.float32), axis=-1)
      return tf.reduce_sum(readout * targets, -1), readout, targets
    logits = tf.matmul(readout, tf.cast(self._head.kernel, tf.float32))
    logits = logits + tf.cast(self._head.bias, tf.float32)
    predicted = tf.argmax(logits, -1, output_type=tf.int32)
    targets = tf.where(targets < 0, predicted, targets)
    score = tf.gather(logits, targets[:, None], batch_dims=1)[:, 0]
    return score, self._head.activation(logits), targets

  def _maps(self, x, targets):
    tf = self._tf
    if self.method in MAP_METHODS:
      return self._feature_maps(x, targets)
    if self.method == GRADIENT_X_INPUT:
      with tf.GradientTape() as tape:
        tape.watch(x)
        score, outputs, targets = self._score(self._graph(x, training=False),
                                              targets)
      attribution = x * tape.gradient(score, x)
    else:
      # The targets and outputs at the image itself, then the path.
      score, outputs, targets = self._score(self._graph(x, training=False),
                                            targets)
      def path_gradient(point):
        with tf.GradientTape() as tape:
          tape.watch(point)
          along = self._score(self._graph(point, training=False), targets)[0]
        return tape.gradient(along, point)

      total = tf.zeros_like(x)
      for i in tf.range(self.steps):
        alpha = (tf.cast(i, tf.float32) + 0.5) / float(self.steps)
        total += path_gradient(x * alpha)
      attribution = x * total / float(self.steps)
    heat = tf.nn.relu(tf.reduce_sum(attribution, -1))
    return self._smoothed(heat), outputs, targets

  def _smoothed(self, heat):
    """Input-gradient maps [N, (T,) H, W], box-filtered."""
    tf = self._tf
    shape = tf.shape(heat)
    size = _smoothing_size(self.input_shape[-3:-1])
    if size == 1:
      return heat
    flat = tf.reshape(heat, tf.concat([[-1], shape[-2:], [1]], 0))
    flat = tf.nn.avg_pool2d(flat, size, 1, "SAME")
    return tf.reshape(flat, shape)

  def _feature_maps(self, x, targets):
    tf = self._tf
    with tf.GradientTape() as tape:
      spatial, readout = self._graph(x, training=False)
      score, outputs, targets = self._score(readout, targets)
    grads = tape.gradient(score, spatial)
    spatial = tf.cast(spatial, tf.float32)
    grads = tf.cast(grads, tf.float32)
    if self._grid is not None:  # Tokens on the patch grid.
      grid = [-1, self._grid[0], self._grid[1], spatial.shape[-1]]
      spatial, grads = tf.reshape(spatial, grid), tf.reshape(grads, grid)
    if self.method == GRADCAM:
      weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
      heat = tf.reduce_sum(weights * spatial, -1)
    elif self.method == GRADCAM_PLUS_PLUS:
      # alpha = g^2 / (2 g^2 + sum(A) g^3): the closed form for an
      # exponential of the score (the paper's eq. 19).
      g2, g3 = grads**2, grads**3
      total = tf.reduce_sum(spatial, axis=(1, 2), keepdims=True)
      denominator = 2.0 * g2 + total * g3
      denominator = tf.where(denominator != 0.0, denominator,
                             tf.ones_like(denominator))
      alpha = g2 / denominator
      weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2),
                              keepdims=True)
      heat = tf.reduce_sum(weights * spatial, -1)
    else:  # LayerCAM.
      heat = tf.reduce_sum(tf.nn.relu(grads) * spatial, -1)
    heat = tf.nn.relu(heat)[..., None]
    heat = tf.image.resize(heat, self.input_shape[-3:-1], method="bilinear")
    return heat[..., 0], outputs, targets

  def __call__(self, x, targets=None):
    """Heatmaps of a batch.

    Args:
      x: float32 raw pixels, [N, H, W, C] (or [N, T, H, W, C] for a clip
        model) at the model's input size.
      targets: a classifier's class index per example ([N] ints; -1, or
        None for all, means the predicted class); an embedder's reference
        embedding per example ([N, D]), required.

    Returns:
      (maps, outputs, targets): float32 numpy maps [N, (T,) H, W] in 0..1
      (each example's largest value 1, or all zero), the model's outputs
      [N, C] (probabilities; an embedder's embeddings) and the targets
      explained ([N] class indices; the unit reference embeddings).

    Raises:
      ValueError: a batch of the wrong shape, or targets out of range.
    """
    tf = self._tf
    x = np.asarray(x, np.float32)
    if x.ndim != len(self.input_shape) + 1 or any(
        want is not None and have != want
        for have, want in zip(x.shape[1:], self.input_shape)):
      raise ValueError(f"{self.model.name} takes [N, "
                       f"{', '.join(map(str, self.input_shape))}] pixels. "
                       f"Received: shape={x.shape}")
    n = len(x)
    if self._head is None:
      if targets is None:
        raise ValueError("An embedder's explanation needs the embedding to "
                         "match (targets [N, D]).")
      targets = np.asarray(targets, np.float32)
      if targets.shape != (n, self.model.output.shape[-1]):
        raise ValueError(f"targets must be [N, {self.model.output.shape[-1]}]"
                         f" embeddings. Received: shape={targets.shape}")
    else:
      classes = int(self._head.units)
      targets = np.full([n], -1, np.int32) if targets is None else np.asarray(
          targets).astype(np.int64)
      if targets.shape != (n,) or targets.min(initial=-1) < -1 or (
          targets.max(initial=-1) >= classes):
        raise ValueError(f"targets must be [N] class indices in 0..{classes - 1}"
                         f" (or -1 for the predicted class). Received: "
                         f"{targets!r}")
      targets = targets.astype(np.int32)
    if n == 0:
      return (np.zeros((0, *self.input_shape[:-1]), np.float32),
              np.zeros((0, self.model.output.shape[-1]), np.float32), targets)
    heat, outputs, used = self._compiled(tf.constant(x), tf.constant(targets))
    heat = heat.numpy()
    axes = tuple(range(1, heat.ndim))
    peak = heat.max(axis=axes, keepdims=True)
    heat = np.where(peak > 0, heat / np.where(peak > 0, peak, 1), 0)
    return heat.astype(np.float32), outputs.numpy(), used.numpy()


def locate(heatmap, level=BOX_LEVEL):
  """The peak of a heatmap and the box around it.

  Args:
    heatmap: [H, W] in 0..1.
    level: the box holds the pixels connected to the peak (8-neighbours)
      whose value is at least `level` times the peak's.

  Returns:
    (peak (x, y), box (x0, y0, x1, y1)) in pixel indices, the box's end
    exclusive; (None, None) for a map that is zero everywhere.
  """
  heatmap = np.asarray(heatmap, np.float32)
  top = float(heatmap.max(initial=0.0))
  if not top > 0:
    return None, None
  y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
  inside = heatmap >= level * top
  region = np.zeros_like(inside)
  region[y, x] = True
  while True:
    grown = region.copy()
    grown[1:] |= region[:-1]
    grown[:-1] |= region[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    grown &= inside
    if np.array_equal(grown, region):
      break
    region = grown
  rows, columns = np.nonzero(region.any(axis=1))[0], np.nonzero(
      region.any(axis=0))[0]
  return (int(x), int(y)), (int(columns[0]), int(rows[0]),
                            int(columns[-1]) + 1, int(rows[-1]) + 1)


def to_image(peak, box, map_size, image_size):
  """A `locate` peak and box on a map of `map_size` (H, W) in the pixel
  coordinates of an image of `image_size` (H, W) the map was resized from
  (stretched, as the model's input is): the peak's pixel, the box's edges."""
  if peak is None:
    return None, None
  sy = image_size[0] / map_size[0]
  sx = image_size[1] / map_size[1]
  peak = (min(int((peak[0] + 0.5) * sx), image_size[1] - 1),
          min(int((peak[1] + 0.5) * sy), image_size[0] - 1))
  box = (int(box[0] * sx), int(box[1] * sy),
         min(int(np.ceil(box[2] * sx)), image_size[1]),
         min(int(np.ceil(box[3] * sy)), image_size[0]))
  return list(peak), list(box)


def overlay(image, heatmap, alpha=0.5, max_side=1024):
  """An RGB picture of `heatmap` over `image` (uint8 [H, W, 3]): the map
  resized to the image (bilinear) in matplotlib's "jet" colours, blended in
  by `alpha` times its value. Images longer than `max_side` are shrunk
  first. Returns uint8 [h, w, 3]."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from imgrec.data import pixels  # pylint: disable=g-import-not-at-top
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  height, width = image.shape[:2]
  if max(height, width) > max_side:
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = np.asarray(Image.fromarray(image.astype(np.uint8)).resize(
        size, Image.BILINEAR))
    height, width = image.shape[:2]
  heat = pixels.resize(np.asarray(heatmap, np.float32)[..., None],
                       (height, width))[..., 0]
  heat = np.clip(heat, 0.0, 1.0)
  colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255.0
  weight = (alpha * heat)[..., None]
  out = image.astype(np.float32) * (1.0 - weight) + colours * weight
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def picture_name(index, source, label=None):
  """The file name of an input's overlay: its position among the inputs and
  its file name (and a multi-label model's label), in safe characters."""
  import re  # pylint: disable=g-import-not-at-top
  stem = os.path.splitext(os.path.basename(source or "image"))[0]
  parts = [f"{index:06d}", stem] + ([label] if label is not None else [])
  name = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p)[:80] for p in parts)
  return name + ".png"



class PictureFolder:
  """Writes overlay pictures into a folder of imgrec's (`--explain_dir`).

  The folder is new, empty, or one an earlier explanation wrote; it is never
  inside the inputs' folders (each input file's folder, and the folders the
  user gave as inputs). A picture replaces only one this
  command wrote and nobody changed since (each picture's digest is
  recorded as it is written).

  Args:
    path: the folder.
    sources: the input files (their folders are refused as the folder).
    roots: folders given as inputs (refused too, with all inside them).

  Raises:
    ImgrecError: the folder is inside the inputs' folders, a file, or holds
      files imgrec did not write.
  """

  def __init__(self, path, sources=(), roots=()):
    self.folder = run_folder.ExplainFolder(os.path.abspath(path))
    folders = {os.path.dirname(os.path.abspath(s)) for s in sources}
    folders |= {os.path.abspath(r) for r in roots}
    for root in sorted(folders):
      if os.path.isdir(root) and root != os.path.dirname(root) and \
          fileio.is_inside(self.folder.path, root):
        raise ImgrecError(
            f"--explain_dir={path} is inside the inputs' folder {root}: "
            "imgrec never writes among the images it reads. Pass a folder "
            "outside it.")
    if os.path.lexists(self.folder.path) and not os.path.isdir(
        self.folder.path):
      raise ImgrecError(f"--explain_dir={path} is not a folder. Pass a new "
                        "or empty folder.")
    self.folder.check_ours(run_folder.EXPLAIN_COMMAND)
    self._written = self._read_record()

  def _read_record(self):
    try:
      with open(self.folder.outputs_record_path, encoding="utf-8") as f:
        record = json.load(f)
    except (OSError, ValueError):
      return {}
    return record if isinstance(record, dict) else {}

  def check(self, names):
    """Refuses, before anything is written, a name taken by a file this
    command did not write (or one changed since)."""
    for name in names:
      path = self.folder.picture_path(name)
      if not os.path.lexists(path):
        continue
      if os.path.islink(path) or not os.path.isfile(path) or (
          self._written.get(name) != fileio.digest(path)):
        raise ImgrecError(
            f"--explain_dir={self.folder.path}: {name} is not as imgrec "
            "wrote it (changed since, or not imgrec's); it would be "
            "replaced. Move it out of the folder (or pass another "
            "--explain_dir).")

  def start(self):
    """Holds the folder (lock and mark) for writing."""
    return self.folder.start(run_folder.EXPLAIN_COMMAND)

  def write(self, names_and_pictures):
    """Writes {name: uint8 [H, W, 3]} as PNGs, then the record."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    paths = {}
    for name, picture in names_and_pictures.items():
      path = self.folder.picture_path(name)
      with fileio.atomic_write(path, "wb") as f:
        Image.fromarray(np.asarray(picture, np.uint8)).save(f, format="PNG")
      self._written[name] = fileio.digest(path)
      paths[name] = path
    fileio.write_json(self.folder.outputs_record_path, self._written,
                      indent=1)
    return paths


def picture(image, heatmap, max_side=1024):
  """The overlay of an explanation: an image's, or a clip's frames side by
  side (a clip's `image` is [T, H, W, 3] and its heatmap [T, h, w])."""
  image = np.asarray(image)
  if image.ndim == 4:
    side = max(8, max_side // max(1, len(image)))
    return np.concatenate([overlay(frame, heat, max_side=side)
                           for frame, heat in zip(image, heatmap)], axis=1)
  return overlay(image, heatmap, max_side=max_side)


def similarity_maps(embedder, first, second, method=None):
  """Which regions made two images' embeddings match (a face model's).

  Args:
    embedder: a Keras model whose output is an embedding (no classifier
      head), e.g. a face embedder.
    first, second: float32 raw pixels [N, H, W, C] at its input size, pairs
      row by row.
    method: as `Explainer`.

  Returns:
    (maps of `first` [N, H, W], maps of `second`, cosine similarity [N]):
    each image's map of what raises its embedding's similarity to the
    other's.
  """
  explainer = Explainer(embedder, method)
  if explainer.kind != "embedding":
    raise ValueError(f"{embedder.name} is a classifier; similarity maps are "
                     "of embedders (explain a class with `Explainer`).")
  first = np.asarray(first, np.float32)
  second = np.asarray(second, np.float32)
  if first.shape != second.shape:
    raise ValueError(f"Pairs must have one shape. Received: {first.shape} "
                     f"and {second.shape}")
  first_embedding = np.asarray(embedder(first, training=False), np.float32)
  second_embedding = np.asarray(embedder(second, training=False), np.float32)
  maps_first, out, _ = explainer(first, second_embedding)
  maps_second = explainer(second, first_embedding)[0]
  unit = second_embedding / np.maximum(
      np.linalg.norm(second_embedding, axis=-1, keepdims=True), 1e-12)
  similarity = np.sum(out / np.maximum(np.linalg.norm(
      out, axis=-1, keepdims=True), 1e-12) * unit, -1)
  return maps_first, maps_second, similarity
