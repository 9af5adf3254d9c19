"""int8 TFLite that stays accurate: stratified calibration, checked loss.

Post-training int8 quantization can lose many points on some models
(depthwise convolutions, ReLU6, wide activation ranges). The export
calibrates on a class-stratified sample of the training split, measures the
int8 model against the Keras model on a check split (validation, so the
test split stays for the report), and when it loses more than the allowed
drop, keeps in float the layers TFLite's quantization debugger finds worst:
as few as reach the bound.
"""

import dataclasses
import logging
import os

import numpy as np

from imgrec.errors import ImgrecError

logger = logging.getLogger("imgrec")

# Check images held in memory at most (float32 pixels).
_CHECK_BYTES = 512 * 2**20


def stratified_sample(labels, count, num_classes, seed=0):
  """Indices of `count` items taking classes in turn (a seeded shuffle each).

  Args:
    labels: integer label of each item.
    count: how many to take (all when fewer).
    num_classes: the model's classes; `count` below it is refused.
    seed: shuffle seed.

  Raises:
    ImgrecError: `count` smaller than the number of classes.
  """
  members = np.eye(num_classes, dtype=bool)[np.asarray(labels, np.int64)]
  return stratified_rows(members, count, seed)


def stratified_rows(members, count, seed=0):
  """`stratified_sample` of items that may hold several classes or none.

  Args:
    members: bool [N, C], the classes each item holds (a task's
      `class_members`).
    count: how many to take (all when fewer).
    seed: shuffle seed.

  Classes take turns, then items holding none; an item is taken once.

  Raises:
    ImgrecError: `count` smaller than the number of classes.
  """
  members = np.asarray(members, bool)
  num_classes = members.shape[1]
  if count < num_classes:
    raise ImgrecError(
        f"--calibration_images={count} is fewer than the model's "
        f"{num_classes} classes: int8 calibration needs at least one image "
        f"per class. Pass --calibration_images={max(num_classes, 200)}.")
  rng = np.random.default_rng(seed)
  queues = [list(rng.permutation(np.flatnonzero(members[:, c])))
            for c in range(num_classes)]
  empty = np.flatnonzero(~members.any(1))
  if len(empty):
    queues.append(list(rng.permutation(empty)))
  picked, taken = [], set()
  while len(picked) < count and any(queues):
    for queue in queues:
      while queue and queue[0] in taken:
        queue.pop(0)
      if queue and len(picked) < count:
        taken.add(queue[0])
        picked.append(int(queue.pop(0)))
  return sorted(picked)


def top1_accuracy(labels, scores):
  """("accuracy", top-1 accuracy): the figure single-label int8 is held to."""
  return "accuracy", float(np.mean(np.argmax(scores, 1) == labels))


@dataclasses.dataclass
class CheckSet:
  """Pixels and labels on which int8 is held to the Keras model.

  `keras_accuracy` and `accuracy` are the `metric` the task holds exports
  to (top-1 accuracy, or a multi-label model's mAP), in 0..1.
  """
  split: str
  pixels: np.ndarray  # float32 [N, H, W, C], the model's input.
  labels: np.ndarray
  keras_accuracy: float
  quality: object = top1_accuracy  # (labels, scores) -> (metric, value).
  metric: str = "accuracy"
  outputs: object = None  # TFLite outputs -> class scores (None: as they are).

  @classmethod
  def build(cls, split_name, split, decode, model, num_classes, seed=0, *,
            members=None, quality=top1_accuracy, outputs=None):
    """A stratified sample of `split` (as many as fit in memory), decoded.

    Args:
      split_name: reported name.
      split: a folder.Split.
      decode: path -> float32 [H, W, C] model-input pixels.
      model: the Keras model (its figure is the reference).
      num_classes: the model's classes.
      seed: sampling seed.
      members: bool [N, C], the classes each example holds (default: one
        each, its integer label).
      quality: (labels, scores) -> (metric name, value), e.g. a task's
        `export_quality`.
      outputs: the TFLite file's outputs -> the class scores the Keras
        model gives (a task's `class_scores`); None: the same.
    """
    first = np.asarray(decode(split.paths[0]), np.float32)
    limit = max(num_classes, _CHECK_BYTES // first.nbytes)
    if members is None:
      members = np.eye(num_classes, dtype=bool)[np.asarray(split.labels)]
    keep = (range(len(split)) if len(split) <= limit else
            stratified_rows(members, limit, seed))
    pixels = np.stack([first if i == 0 else
                       np.asarray(decode(split.paths[i]), np.float32)
                       for i in keep])
    labels = np.asarray([split.labels[i] for i in keep])
    predicted = np.asarray(model.predict(pixels, verbose=0, batch_size=64))
    metric, value = quality(labels, predicted)
    return cls(split_name, pixels, labels, value, quality, metric, outputs)

  def accuracy(self, flatbuffer):
    """The figure of TFLite bytes on the set, through LiteRT."""
    from imgrec.inference import litert  # pylint: disable=g-import-not-at-top
    runner = litert.TFLiteRunner(interpreter=litert.make_interpreter(
        model_content=flatbuffer, num_threads=os.cpu_count()))
    scores = runner(self.pixels)
    if self.outputs is not None:
      scores = self.outputs(scores)
    return self.quality(self.labels, scores)[1]


GRANULARITIES = ("auto", "per_channel", "per_tensor")


def quantize_within(calibration, check, *, max_drop, io="float",
                    granularity="auto"):
  """int8 bytes that lose at most `max_drop` points on `check`.

  With granularity "auto", tries one scale per weight tensor first (the
  smallest file) and keeps it if it is within bounds, else one scale per
  output channel. If the whole model in int8 still loses more, ranks layers
  by quantization error (TFLite's quantization debugger) and keeps the worst
  n in float, n = 1, 2, 4, ... until the loss is within bounds, then the
  fewest between the last two n that still are.

  Args:
    calibration: an `tflite.Int8Calibration`.
    check: a `CheckSet`.
    max_drop: allowed accuracy loss in points (percent).
    io: "float" or "uint8" input and output.
    granularity: "auto", "per_channel" or "per_tensor" weight scales.

  Returns:
    (flatbuffer, kept float layer names, granularity, steps), steps being
    [{"granularity", "kept_float": n, "accuracy": a}] in the order tried.

  Raises:
    ImgrecError: even with every layer in float the loss is too large.
  """
  if granularity not in GRANULARITIES:
    raise ImgrecError(f"int8 granularity must be one of {GRANULARITIES}. "
                      f"Received: {granularity!r}")
  steps = []

  def attempt(keep, per_channel):
    flatbuffer = calibration.quantize(keep_float=keep, io=io,
                                      per_channel=per_channel)
    accuracy = check.accuracy(flatbuffer)
    name = "per_channel" if per_channel else "per_tensor"
    steps.append({"granularity": name, "kept_float": len(keep),
                  "accuracy": accuracy})
    logger.info("int8 (%s) with %d layer(s) in float: %.2f%% on the %s "
                "split (Keras %.2f%%)", name.replace("_", "-"), len(keep),
                100 * accuracy, check.split, 100 * check.keras_accuracy)
    return flatbuffer, 100 * (check.keras_accuracy - accuracy) <= max_drop

  if granularity == "auto":
    flatbuffer, ok = attempt([], per_channel=False)
    if ok:
      return flatbuffer, [], "per_tensor", steps
    granularity = "per_channel"
  per_channel = granularity == "per_channel"
  flatbuffer, ok = attempt([], per_channel)
  if ok:
    return flatbuffer, [], granularity, steps
  ranked = [name for name, _, _ in calibration.layer_errors()]
  sizes, n = [], 1
  while n < len(ranked):
    sizes.append(n)
    n *= 2
  sizes.append(len(ranked))
  best, low = None, 0
  for n in sizes:
    result, ok = attempt(ranked[:n], per_channel)
    if ok:
      best = (result, n)
      break
    low = n
  if best is None:
    tried = ", ".join(f"{s['kept_float']} in float: {100 * s['accuracy']:.2f}%"
                      for s in steps)
    raise ImgrecError(
        f"int8 loses more than --max_int8_drop={max_drop} points on the "
        f"{check.split} split even with every quantized layer kept in float "
        f"(Keras {100 * check.keras_accuracy:.2f}%; {tried}). Give more "
        "--calibration_images, raise --max_int8_drop, or use "
        "--tflite=dynamic.")
  result, high = best
  while high - low > 1:  # The fewest float layers within bounds.
    mid = (low + high) // 2
    candidate, ok = attempt(ranked[:mid], per_channel)
    if ok:
      result, high = candidate, mid
    else:
      low = mid
  return result, ranked[:high], granularity, steps
