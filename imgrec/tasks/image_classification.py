"""The image classification task: an image folder in; one label an image out.

Training, evaluation, export, inference and the command-line tools all go
through this module (as TF Model Garden's tasks do), so each fact about a
run is decided once:

    task = ImageClassificationTask.from_config(config)  # resolve(config)
    folder = task.build_folder()         # files, scan, splits
    ds = task.build_inputs(folder.splits["train"], training=True, ...)
    model = task.build_model(len(folder.class_names))
    model.compile(loss=task.build_losses(), metrics=task.build_metrics(n))

`resolve` runs every check, the model's own input limits included, before
any data is read.
"""

import logging
import os
import zipfile

import numpy as np

from imgrec.config import TrainConfig
from imgrec.data import decode
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.tasks import base
from imgrec.tasks import classification
from imgrec.tasks import registry

models = base.lazy_import("imgrec.models")
ops = base.lazy_import("imgrec.data.ops")
pipeline = base.lazy_import("imgrec.data.pipeline")
scan = base.lazy_import("imgrec.data.scan")
task_data = base.lazy_import("imgrec.tasks.data")

logger = logging.getLogger(__name__)


@registry.register_task("image_classification", aliases=("image",))
class ImageClassificationTask(classification.ClassificationTask):
  """Builds the data, model, losses, metrics and predictions of one image run.

  Args:
    spec: a RunSpec from `resolve`.
  """

  noun = "images"

  @classmethod
  def accepts_input_shape(cls, shape):
    return len(shape) == 4  # [batch, height, width, channels]

  def _scan(self, found, report_path=None, max_bad_fraction=None, fill=None):
    config = self.config
    if not config.scan:
      return found
    found, report = scan.scan_folder(
        found, max_image_pixels=config.max_image_pixels,
        max_bad_fraction=(config.max_bad_fraction if max_bad_fraction is None
                          else max_bad_fraction),
        report_path=report_path, fill=fill)
    if report["totals"]["skipped"]:
      logger.warning("skipped %d unusable image files (%s); see %s",
                     report["totals"]["skipped"],
                     ", ".join(f"{k}: {v}" for k, v in
                                report["skipped_by_reason"].items()),
                     report_path or "imgrec-scan")
    return found

  def build_folder(self, report_path=None):
    """Lists, checks and splits the run's images.

    Every file is validated first (`imgrec.data.scan`): broken files are
    skipped and reported in `report_path`, odd formats converted once, and
    only then are the missing val/test splits carved out, so bad files do
    not unbalance them.

    When the run's cache plan keeps decoded images in memory, the scan keeps
    the images it decodes anyway (resized, uint8) in the folder's `pixels`,
    and the training input reads them from there: a first run decodes each
    image once.

    Returns:
      An ImageFolder with train, val and test splits.
    """
    found = task_data.find_data(self.config)
    found = self._scan(found, report_path, fill=self._fill(found))
    config = self.config
    folder = folder_lib.carve_splits(found, config.val_split,
                                     config.test_split, config.seed)
    return task_data.check_leakage(folder, config, report_path)

  def _fill(self, found):
    """A scan.Fill when the run's training cache will be in memory, else None."""
    if not self.config.scan:
      return None
    count = sum(len(s) for s in found.splits.values())
    plan = pipeline.plan_cache(
        self.spec.cache, num_images=count, image_size=self.spec.image_size,
        bytes_per_pixel=self.spec.channels, epochs=self.config.epochs)
    if plan != "memory":
      return None
    return scan.Fill(self.spec.image_size, self.spec.channels)

  def _eval_folder(self, data_dir):
    """Another folder's usable files (broken ones skipped, any number)."""
    return self._usable(folder_lib.find_images(data_dir, min_classes=1,
                                               carve=False))

  def _usable(self, found):
    return self._scan(found, max_bad_fraction=1.0)

  def build_inputs(self, split, *, num_classes, training, cache=True,
                   input_context=None, pixels=None):
    """The tf.data pipeline of one split (see `imgrec.data.pipeline`).

    Args:
      split: a folder.Split.
      num_classes: width of the one-hot labels.
      training: shuffle and augment.
      cache: False never caches (one pass over the data); True follows the
        run's cache plan.
      input_context: a tf.distribute.InputContext (one shard per worker).
      pixels: the folder's `pixels`: a training split whose images the scan
        kept is read from there instead of its files.
    """
    spec = self.pipeline_spec(num_classes, training, cache)
    return pipeline.make_dataset(split, spec, input_context=input_context,
                                 pixels=pixels if training else None)

  def model_pixels(self, path):
    """One file as the model sees it: float32 [H, W, C] (export checks)."""
    return pipeline.decode_and_resize(path, self.spec.image_size,
                                      self.spec.channels,
                                      plain=self.config.scan).numpy()

  def serving_example(self, path):
    """One file as a server gets it: uint8 RGB [H, W, 3], decoded (DCT-scaled
    towards the model's size) but not resized."""
    return decode.read_file(path, 3, self.config.max_image_pixels,
                            self.spec.image_size)

  # --- Model -----------------------------------------------------------------

  def build_model(self, num_classes):
    return models.create_model(self.config.model, num_classes,
                               self.spec.input_shape,
                               **dict(self.spec.model_kwargs))

  def serving_endpoints(self, model, class_names, *, top_k,
                        max_image_pixels):
    """The SavedModel's signatures, both resizing in the graph.

    serving_default: `images`, uint8 [N, H, W, 3] of any size.
    serving_bytes: `image_bytes`, string [N] of encoded JPEG/PNG/BMP/GIF/WebP
      bytes, decoded under imgrec's decode policy (`decode.decode_bytes`:
      EXIF orientation, transparency on white, 16-bit PNG), so a served
      image gets the pixels it gets everywhere else; images declaring more
      than `max_image_pixels` are refused from their header.
    Both return `classification.classifier_outputs`.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    spec = self.model_input(base.input_shape_of(model))
    size, channels = spec.image_size, spec.channels
    outputs = classification.classifier_outputs(model, class_names, top_k,
                                                self.open_set())

    def serve_images(images):
      return outputs(ops.resize(ops.to_channels(images, channels), size))

    def serve_bytes(image_bytes):
      pixels = tf.map_fn(
          lambda b: ops.resize(decode.decode_bytes(
              b, channels, max_pixels=max_image_pixels, target_size=size),
                               size),
          image_bytes,
          fn_output_signature=tf.TensorSpec([*size, channels], tf.float32))
      return outputs(pixels)

    return [("serving_default", serve_images, [tf.TensorSpec(
        [None, None, None, 3], tf.uint8, name="images")]),
            ("serving_bytes", serve_bytes, [tf.TensorSpec(
                [None], tf.string, name="image_bytes")])]

  def predict(self, model, split, num_classes):
    """Probabilities [N, C] of a model over one split, in file order."""
    ds = self.build_inputs(split, num_classes=num_classes, training=False,
                           cache=False)
    return model.predict(ds.map(lambda x, y: x), verbose=0)

  def predict_views(self, model, split, num_classes, tta=(), progress=None):
    """Probabilities of a model over one split under test-time augmentation.

    Args:
      model: a Keras model.
      split: a folder.Split.
      num_classes: the model's classes.
      tta: a subset of ops.TTA_MODES (see `ops.test_time_views`).
      progress: a callable(batches_done, batches_total) after every batch.

    Returns:
      float32 [V, N, C]: the probabilities of every view, in file order; view
      0 is the plain image.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    ds = self.build_inputs(split, num_classes=num_classes, training=False,
                           cache=False)
    total = -(-len(split) // self.config.batch_size)

    out = []
    for i, (images, _) in enumerate(ds):
      batch = tf.concat(ops.test_time_views(images, tta), axis=0)
      # predict_on_batch: Keras' own compiled predict step, traced once.
      out.append(np.reshape(model.predict_on_batch(batch),
                            (-1, images.shape[0], num_classes)))
      if progress:
        progress(i + 1, total)
    if not out:
      return np.zeros((1, 0, num_classes), np.float32)
    return np.concatenate(out, axis=1)


def load_model(path):
  """Loads a trained imgrec `.keras` model (safe mode, imgrec's layers known).

  Raises:
    ImgrecError: the file is missing, empty, damaged or not a Keras model.
  """
  import keras  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise ImgrecError(f"Model file {path} does not exist.")
  if os.path.getsize(path) == 0:
    raise ImgrecError(f"Model file {path} is empty (0 bytes): copy it again.")
  if not zipfile.is_zipfile(path):
    raise ImgrecError(f"Model file {path} is not a .keras file (not a zip "
                      "archive): it is damaged, cut short, or another format "
                      "named .keras.")
  try:
    return keras.models.load_model(path, compile=False, safe_mode=True)
  except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    raise ImgrecError(f"Cannot load model file {path}: {first}. It is "
                      "damaged or not an imgrec model.") from e


def read_image(path):
  """One image file as RGB uint8 [H, W, 3], under the decode policy.

  A video file gives a strip of four of its frames, side by side.
  """
  if os.path.splitext(path)[1].lower() in decode.VIDEO_EXTENSIONS:
    from imgrec.data import clips  # pylint: disable=g-import-not-at-top
    strip = clips.decode_clip(path, frames=4, image_size=(96, 128))
    return np.concatenate(list(strip), axis=1)
  return decode.read_file(path, 3)


def image_dataset(data_dir, *, image_size, batch_size=32, splits=("train",),
                  val_split=0.1, test_split=0.1, seed=42, channels=3,
                  label_mode="int", augment="none", cache="auto",
                  scan_files=True):
  """Image folder -> tf.data.Dataset(s), for people who write their own `fit`.

  The keras-io idiom, on imgrec's checked files and fast pipeline:

      train_ds, val_ds = imgrec.image_dataset(
          "photos", image_size=(180, 180), splits=("train", "val"))
      model.fit(train_ds, validation_data=val_ds, epochs=25)

  Args:
    data_dir: root/<class>/* or root/{train,val,test}/<class>/*.
    image_size: SIZE or (height, width).
    batch_size: examples per batch.
    splits: which splits to return, in this order.
    val_split: fraction held out for validation when there is no val folder.
    test_split: likewise for test.
    seed: seed of the split, the shuffle and the augmentation.
    channels: 1 or 3.
    label_mode: "int" (sparse labels, as Keras' image_dataset_from_directory
      gives) or "categorical" (one-hot).
    augment: augmentation of the "train" split (imgrec.config.AUGMENT_LEVELS).
    cache: "auto", "memory", "none" or a file path prefix.
    scan_files: check every file first, skipping broken ones.

  Returns:
    One dataset per name in `splits` (a single dataset if `splits` names
    one), each with a `class_names` attribute. Batches are (uint8 images
    [B, H, W, C] for "train" without batch-level augmentation, else float32;
    labels). Pixels are raw 0..255.

  Raises:
    ImgrecError: bad arguments or data.
  """
  if label_mode not in ("int", "categorical"):
    raise ImgrecError("label_mode must be 'int' or 'categorical'. Received: "
                      f"label_mode={label_mode!r}")
  unknown = [s for s in splits if s not in folder_lib.SPLITS]
  if unknown or not splits:
    raise ImgrecError(f"splits must name some of {folder_lib.SPLITS}. "
                      f"Received: splits={tuple(splits)!r}")
  config = TrainConfig(data_dir=data_dir, image_size=image_size,
                       batch_size=batch_size, val_split=val_split,
                       test_split=test_split, seed=seed, channels=channels,
                       augment=augment, cache=cache, scan=scan_files,
                       model="mlp", epochs=2, warmup_epochs=0)
  task = ImageClassificationTask.from_config(config)
  folder = task.build_folder()
  num_classes = len(folder.class_names)
  out = []
  for name in splits:
    ds = task.build_inputs(folder.splits[name], num_classes=num_classes,
                           training=name == "train")
    if label_mode == "int":
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      ds = ds.map(lambda x, y: (x, tf.argmax(y, axis=-1, output_type=tf.int32)))
    ds.class_names = list(folder.class_names)
    out.append(ds)
  return out[0] if len(out) == 1 else tuple(out)
