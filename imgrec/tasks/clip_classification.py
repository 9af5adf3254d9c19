"""The clip classification task: video folders in, one label a clip out.

`imgrec-train --data_dir=videos` with videos/<class>/*.mp4 (or
videos/{train,val,test}/<class>/*) lands here: the same run folder, training
loop, evaluation report and export as images, with

- data: every clip decoded once (`imgrec.data.clips`: `--clip_frames`
  frames at the centres of equal parts of the whole clip, resized), cached
  under imgrec's cache folder; broken clips skipped and reported in
  data_report.json;
- model: the registry model `--model` on every frame, then `--temporal`
  (gru, lstm, attention or average) over time (`imgrec.models.clip`);
- augmentation: one random crop, resized back (and `--flip`), for all
  frames of a clip, so motion stays motion.
"""

import dataclasses
import logging
import os

import numpy as np

from imgrec.data import clips as clips_lib
from imgrec.data import folder as folder_lib
from imgrec.data import scan
from imgrec import fileio
from imgrec.errors import ImgrecError
from imgrec.tasks import base
from imgrec.tasks import classification
from imgrec.tasks import data as task_data
from imgrec.tasks import registry

logger = logging.getLogger(__name__)


@registry.register_task("clip_classification", aliases=("clip",))
class ClipClassificationTask(classification.ClassificationTask):
  """Builds the data, model and predictions of a clip classification run."""

  noun = "clips"

  @classmethod
  def resolve(cls, config, *, check_files=True):
    why = None
    if config.labels_csv or config.tfds:
      why = ("clip classifiers read video folders: pass "
             "--data_dir=root/<class>/*.mp4")
    elif config.mixup or config.cutmix:
      why = "clips take no --mixup or --cutmix"
    if why:
      raise ImgrecError(f"Bad value for --task: {why}. Received: "
                        f"task={config.task!r}")
    return super().resolve(config, check_files=check_files)

  @classmethod
  def accepts_input_shape(cls, shape):
    return len(shape) == 5  # [batch, frames, height, width, channels]

  @classmethod
  def model_input(cls, shape):
    return dataclasses.replace(super().model_input(shape),
                               frames=int(shape[1]))

  def __init__(self, spec):
    super().__init__(spec)
    self._cache = None

  @property
  def clip_shape(self):
    return (self.config.clip_frames, *self.spec.input_shape)

  @property
  def cache(self):
    """The ClipCache of this run's sampling, under the data's prepared dir."""
    if self._cache is None:
      root = os.path.abspath(self.config.data_dir)
      self._cache = clips_lib.ClipCache(
          scan.default_prepared_dir(root), frames=self.config.clip_frames,
          image_size=self.spec.image_size, channels=self.spec.channels)
    return self._cache

  # --- Data ------------------------------------------------------------------

  def _decode_all(self, found, report_path=None, max_bad_fraction=None):
    """Decodes (or reads cached) every clip; drops and reports broken ones."""
    paths = [p for s in found.splits.values() for p in s.paths]
    got = self.cache.get_all(paths)
    bad = {p: str(e) for p, e in got.items() if isinstance(e, ImgrecError)}
    if report_path:
      fileio.write_json(report_path, self._data_report(paths, bad),
                        ensure_ascii=False, indent=1)
    for path, why in sorted(bad.items()):
      logger.warning("skipped clip: %s", why)
    _check_bad_fraction(found, bad, report_path, self.config.max_bad_fraction
                        if max_bad_fraction is None else max_bad_fraction)
    splits = {}
    for name, split in found.splits.items():
      keep = [i for i, p in enumerate(split.paths) if p not in bad]
      splits[name] = folder_lib.Split([split.paths[i] for i in keep],
                                      [split.labels[i] for i in keep])
    return dataclasses.replace(found, splits=splits)

  def _data_report(self, paths, bad):
    """data_report.json of a clip folder: totals, sampling, skipped clips."""
    return {"kind": "video",
            "totals": {"files": len(paths), "usable": len(paths) - len(bad),
                       "skipped": len(bad)},
            "clip": {"frames": self.config.clip_frames,
                     "image_size": list(self.spec.image_size),
                     "channels": self.spec.channels,
                     "cache": self.cache.directory},
            "skipped": [{"path": p, "reason": "unreadable_video",
                         "detail": why} for p, why in sorted(bad.items())]}

  def _find(self, data_dir, **kwargs):
    return folder_lib.find_images(data_dir, carve=False, kind="video",
                                  allow_outside=self.config.allow_outside,
                                  **kwargs)

  def build_folder(self, report_path=None):
    """Lists, decodes (once; cached) and splits the run's clips."""
    found = self._decode_all(task_data.apply_exclude(
        self._find(self.config.data_dir), self.config), report_path)
    config = self.config
    return folder_lib.carve_splits(found, config.val_split, config.test_split,
                                   config.seed)

  def _eval_folder(self, data_dir):
    return self._usable(self._find(data_dir, min_classes=1))

  def _usable(self, found):
    return self._decode_all(found, max_bad_fraction=1.0)

  def build_inputs(self, split, *, num_classes, training, cache=True,
                   input_context=None, pixels=None):
    """The tf.data pipeline of one split: (float32 [B, T, H, W, C], one-hot)."""
    del pixels  # Clips are always read from the clip cache.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from imgrec.data import pipeline  # pylint: disable=g-import-not-at-top
    config = self.config
    store = self.cache
    paths = list(split.paths)
    shape = self.clip_shape
    # Clips stay in memory after their first read when they fit (the
    # --cache policy of images); otherwise each read loads its .npy file.
    keep = cache and pipeline.plan_cache(
        self.spec.cache, num_images=len(paths) * shape[0],
        image_size=self.spec.image_size, bytes_per_pixel=shape[-1],
        epochs=config.epochs if training else 1) == "memory"
    loaded = {}

    def load(i):
      i = int(i)
      if i in loaded:
        return loaded[i]
      clip = store.get(paths[i])
      if keep:
        loaded[i] = clip
      return clip

    labels = tf.one_hot(tf.constant(split.labels, tf.int32), num_classes)

    def take(i):
      clip = tf.numpy_function(load, [i], tf.uint8, stateful=False)
      clip.set_shape(shape)
      return clip, tf.gather(labels, i)

    augment = self.spec.augment
    spec = pipeline.PipelineSpec(
        num_classes=num_classes, image_size=self.spec.image_size,
        batch_size=config.batch_size, channels=self.spec.channels,
        training=training, augment=augment.level, flip=augment.flip,
        seed=config.seed, deterministic=config.deterministic or not training)
    ds = pipeline.indexed_dataset(
        len(paths), take, spec, input_context=input_context,
        augment_one=lambda clip, seed: _augment_clip(clip, seed, spec.flip),
        batch_augment=False)
    return ds.map(lambda x, y: (tf.cast(x, tf.float32), y))

  def model_pixels(self, path):
    """One clip as the model sees it: float32 [T, H, W, C]."""
    return self.cache.get(path).astype(np.float32)

  def serving_example(self, path):
    """One clip as a server gets it: uint8 RGB [T, H, W, 3]."""
    clip = self.cache.get(path)
    return np.repeat(clip, 3, axis=-1) if clip.shape[-1] == 1 else clip

  # --- Model -----------------------------------------------------------------

  def build_model(self, num_classes):
    from imgrec.models import clip  # pylint: disable=g-import-not-at-top
    kwargs = dict(self.spec.model_kwargs)
    dropout = kwargs.pop("dropout", 0.2)
    return clip.build_clip_model(
        self.config.model, num_classes, self.clip_shape,
        temporal=self.config.temporal, units=self.config.temporal_units,
        dropout=dropout, motion=self.config.clip_motion, **kwargs)

  # --- Serving -------------------------------------------------------------------

  def serving_endpoints(self, model, class_names, *, top_k,
                        max_image_pixels):
    """serving_default: `clips`, uint8 [N, T, H, W, 3] of any frame size (T
    = the model's frames, sampled as `imgrec.data.clips` samples them;
    frames resized in the graph) -> `classification.classifier_outputs`."""
    del max_image_pixels  # Clips arrive decoded.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from imgrec.data import ops  # pylint: disable=g-import-not-at-top
    spec = self.model_input(base.input_shape_of(model))
    size, channels = spec.image_size, spec.channels
    outputs = classification.classifier_outputs(model, class_names, top_k,
                                                self.open_set())

    def serve_clips(clips):
      shape = tf.shape(clips)
      flat = tf.reshape(clips, tf.concat([[-1], shape[2:]], 0))
      pixels = ops.resize(ops.to_channels(flat, channels), size)
      return outputs(tf.reshape(pixels, [-1, spec.frames, *size, channels]))

    return [("serving_default", serve_clips, [tf.TensorSpec(
        [None, spec.frames, None, None, 3], tf.uint8, name="clips")])]

  def check_quantization(self, variant):
    if variant == "int8":
      raise ImgrecError("int8 TFLite export is for image models: TFLite's "
                        "calibrator crashes on recurrent layers, and full "
                        "integer attention loses accuracy. Export a clip "
                        "model with --tflite=float,fp16,dynamic.")

  def predict_views(self, model, split, num_classes, tta=(), progress=None):
    """[1, N, C] probabilities over the clips of one split, in file order."""
    if tta:
      raise ImgrecError("--tta is for image models: a clip model takes no "
                        "test-time augmentation.")
    ds = self.build_inputs(split, num_classes=num_classes, training=False)
    total = -(-len(split) // self.config.batch_size)
    out = []
    for i, (x, _) in enumerate(ds):
      out.append(np.asarray(model.predict_on_batch(x)))
      if progress:
        progress(i + 1, total)
    if not out:
      return np.zeros((1, 0, num_classes), np.float32)
    return np.concatenate(out)[np.newaxis]


def _augment_clip(clip, seed, flip):
  """One random crop (up to 1/8 off each side), resized back, and flip for all frames.

  No padding: a mirrored border (tf.pad's REFLECT) would hold a copy of
  whatever moves near it, moving the other way.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seeds = tf.random.experimental.stateless_split(
      tf.cast(tf.stack([seed, seed // 7 + 1]), tf.int64), 3)
  frames, height, width, channels = clip.shape
  crop_h = height - 2 * max(1, height // 16)
  crop_w = width - 2 * max(1, width // 16)
  crop = tf.image.stateless_random_crop(
      clip, [frames, crop_h, crop_w, channels], seed=seeds[0])
  clip = tf.cast(tf.image.resize(crop, [height, width]) + 0.5, tf.uint8)
  if flip in ("horizontal", "horizontal_and_vertical"):
    clip = tf.cond(tf.random.stateless_uniform([], seeds[1]) < 0.5,
                   lambda: tf.reverse(clip, [2]), lambda: clip)
  if flip in ("vertical", "horizontal_and_vertical"):
    clip = tf.cond(tf.random.stateless_uniform([], seeds[2]) < 0.5,
                   lambda: tf.reverse(clip, [1]), lambda: clip)
  return clip


def _check_bad_fraction(found, bad, report_path, limit):
  """Refuses a folder where a class lost more than `limit` of its clips."""
  per_class = {}
  for split in found.splits.values():
    for path, label in zip(split.paths, split.labels):
      name = found.class_names[label]
      total, broken = per_class.get(name, (0, 0))
      per_class[name] = (total + 1, broken + (path in bad))
  problems = [f"{name}: {broken} of {total}" for name, (total, broken)
              in sorted(per_class.items()) if total and broken / total > limit]
  if problems:
    where = f" Every skipped clip and why: {report_path}." if (
        report_path) else ""
    raise ImgrecError(f"Too many unreadable clips in {found.root}: "
                      f"{'; '.join(problems)}. Fix or remove them, or raise "
                      f"--max_bad_fraction.{where}")
