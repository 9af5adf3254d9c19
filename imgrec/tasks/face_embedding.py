"""The face embedding task: identity folders in, a unit embedding a face out.

`imgrec-faces train` (`trainer.train(FaceTrainConfig(...))`) lands here: the
same trainer, resume, lock and signals as image runs, with

- data: every photo of root/<person>/* becomes a face crop
  (`imgrec.data.faces`: detected, aligned and cropped with --detect, else
  resized whole), written under the run's faces/ folder; people, not
  photos, are split (seeded) into training identities and validation
  identities the model never sees;
- model: a registry backbone with an L2-normalized embedding
  (`imgrec.models.embedding`), trained through ArcFace (or normalized
  softmax) logits over the training people, or batch-hard triplets; the
  embedder alone is saved (best.keras) and served;
- best epoch: the validation people's all-pairs verification equal error
  rate, `val_eer` (lower is better), measured each epoch by
  `VerificationCheck`; without validation people, the training loss;
- after training: embedder.json (fingerprint, input, the EER threshold on
  the validation people) for the face commands.
"""

import dataclasses
import logging

import keras
import numpy as np

from imgrec import models
from imgrec.config import FaceTrainConfig
from imgrec.data import decode
from imgrec.data import faces as faces_lib
from imgrec.data import folder as folder_lib
from imgrec.data import ops
from imgrec.data import pipeline
from imgrec.data import scan
from imgrec.errors import ImgrecError
from imgrec.metrics import verification
from imgrec.models import embedding
from imgrec.run_folder import FACES_COMMAND
from imgrec.run_folder import RESUME_NEUTRAL
from imgrec.run_folder import RunFolder
from imgrec.tasks import base
from imgrec.tasks import classification
from imgrec.tasks import registry

logger = logging.getLogger(__name__)

# Recipe settings of classifiers that have no meaning for identities, with
# the value that leaves them off.
_NOT_FOR_IDENTITIES = {"label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0,
                       "class_weight": "none"}
# Faces embedded at a time when measuring: as `faces.embedder.Embedder`
# embeds them, so the EER threshold is the served embedder's to the bit.
_EMBED_BATCH = 64


@dataclasses.dataclass(frozen=True)
class FaceSpec:
  """A resolved face embedding run.

  Attributes:
    config: the validated FaceTrainConfig (what face_config.json records).
    image_size: (side, side) of the face crops.
    model_kwargs: the registry options of the backbone (`dict(...)` them).
  """
  config: FaceTrainConfig
  image_size: tuple
  model_kwargs: tuple

  @property
  def input_shape(self):
    return (*self.image_size, self.config.channels)


@dataclasses.dataclass
class FaceFolder:
  """Identity folders as face crops, split by person.

  Attributes:
    root: the data folder.
    class_names: the people, training people first (their labels are the
      training model's classes), then the validation people.
    splits: {"train", "val"}: crop files, labels indexing `class_names`.
    train_people: how many people the model trains on.
    pixels: None (the input reads the crop files).
  """
  root: str
  class_names: list
  splits: dict
  train_people: int
  pixels: object = None

  @property
  def val_people(self):
    return len(self.class_names) - self.train_people


def _check_backbone(config):
  if config.model not in models.list_models():
    raise ImgrecError(
        f"Bad value for --backbone (--model): unknown model; known models: "
        f"{', '.join(models.list_models())}. Received: "
        f"backbone={config.model!r}")


def _check_settings(config):
  """Refuses settings of classifiers, and crops that are not square."""
  if config.export:
    raise ImgrecError("Bad value for --export: a face embedder is exported "
                      "by imgrec-faces export --model_dir=<its model_dir> "
                      "once trained. Received: export=True")
  for name, off in _NOT_FOR_IDENTITIES.items():
    if getattr(config, name) != off:
      raise ImgrecError(
          f"Bad value for --{name}: face embedders train on identities, "
          f"which take no {name}. Received: {name}="
          f"{getattr(config, name)!r}")
  size = classification.image_size_of(config)
  if size[0] != size[1]:
    raise ImgrecError(f"Bad value for --image_size: face crops are square; "
                      f"pass one side. Received: image_size="
                      f"{config.image_size!r}")
  return size


class VerificationCheck(keras.callbacks.Callback):
  """Adds the validation people's verification figures to each epoch's logs.

  `val_eer` (the all-pairs equal error rate) and `val_roc_auc`, before the
  history row is written and before the trainer's BestModelCheckpoint
  reads them: that checkpoint keeps the best embedder.

  Args:
    embed: `fn(paths) -> unit embeddings [N, D]` of crop files.
    split: the validation people's crops (labels name the person).
  """

  def __init__(self, embed, split):
    super().__init__()
    self._embed, self.split = embed, split

  def on_epoch_end(self, epoch, logs=None):
    if logs is None:
      return
    genuine, impostor = verification.pair_scores(
        self._embed(self.split.paths), self.split.labels)
    logs["val_eer"] = float(verification.eer(genuine, impostor)[0])
    logs["val_roc_auc"] = float(verification.roc_auc(genuine, impostor))


@registry.register_task("face_embedding", aliases=("faces",))
class FaceEmbeddingTask(base.Task):
  """Builds the data, embedder, losses and metrics of a face embedding run.

  Args:
    spec: a FaceSpec from `resolve`.
  """

  noun = "faces"
  config_cls = FaceTrainConfig
  command = FACES_COMMAND
  resume_neutral = RESUME_NEUTRAL

  @classmethod
  def resolve(cls, config, *, check_files=True):
    """Validates a FaceTrainConfig and derives the spec, reading no photo.

    Every setting is checked here, the backbone and its input limits
    included, so a bad flag fails before any face is detected.

    Raises:
      ImgrecError: naming the bad flag, what is wrong and what to pass.
    """
    config.validate(check_files=check_files)
    _check_backbone(config)
    size = _check_settings(config)
    kwargs = classification.model_kwargs(config)
    kwargs.pop("dropout", None)  # The embedder's own (see build_model).
    try:
      models.check_model(config.model, 2, (*size, config.channels), **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as e:
      raise ImgrecError(
          f"--backbone={config.model} cannot take --image_size={size[0]} "
          f"--channels={config.channels} with these options: {e}") from e
    if check_files:
      if kwargs.get("weights") == "imagenet":
        classification.check_imagenet_weights(config.model,
                                              (*size, config.channels))
      classification.check_model_dir_outside_data(config)
    return FaceSpec(config=config.replace(image_size=size[0]),
                    image_size=size,
                    model_kwargs=tuple(sorted(kwargs.items())))

  @classmethod
  def read_config(cls, run):
    return run.read_face_config()

  # --- Data ------------------------------------------------------------------

  def _photos(self, report_path):
    """(the identity folder, its usable photos, their person labels)."""
    config = self.config
    found = folder_lib.find_images(config.data_dir, min_classes=2,
                                   carve=False,
                                   allow_outside=config.allow_outside)
    found, report = scan.scan_folder(
        found, max_image_pixels=config.max_image_pixels,
        max_bad_fraction=1.0, report_path=report_path, progress=False)
    if report["totals"]["skipped"]:
      logger.warning("skipped %d unusable image files in %s (%s)",
                     report["totals"]["skipped"], config.data_dir, ", ".join(
                         f"{k}: {v}" for k, v in
                         report["skipped_by_reason"].items()))
    paths = [p for s in found.splits.values() for p in s.paths]
    labels = [l for s in found.splits.values() for l in s.labels]
    return found, paths, labels

  def build_folder(self, report_path=None):
    """Lists and checks the photos, crops the faces and splits the people.

    Broken files are skipped (and reported in `report_path`); photos with
    no usable face are left out with one line saying which. The crops go to
    the run's faces/ folder, never into the data.

    Raises:
      ImgrecError: fewer than two people with faces to train on.
    """
    config = self.config
    found, paths, labels = self._photos(report_path)
    paths, labels = faces_lib.crop_to_folder(
        paths, labels, RunFolder(config.model_dir).faces_cache_dir,
        config.image_size, detect=config.detect, margin=config.crop_margin,
        max_pixels=config.max_image_pixels)
    train, val = faces_lib.split_identities(
        len(found.class_names), config.val_identities, config.seed)
    # Training people first: their labels are the training model's classes.
    order = {person: i for i, person in enumerate(train + val)}
    splits = {name: folder_lib.Split(
        [p for p, l in zip(paths, labels) if l in people],
        [order[l] for l in labels if l in people])
              for name, people in (("train", set(train)), ("val", set(val)))}
    if len(train) < 2 or not len(splits["train"]):
      raise ImgrecError(f"{config.data_dir} needs at least two people with "
                        "images to train on.")
    logger.info("faces %s: %d people to train on (%d images), %d to "
                "validate (%d images)", config.data_dir, len(train),
                len(splits["train"]), len(val), len(splits["val"]))
    return FaceFolder(root=found.root,
                      class_names=[found.class_names[i] for i in train + val],
                      splits=splits, train_people=len(train))

  def _images(self, split, *, num_classes, training, cache=True,
              input_context=None, batch_size=None):
    config = self.config
    return pipeline.make_dataset(split, pipeline.PipelineSpec(
        num_classes=num_classes, image_size=self.spec.image_size,
        batch_size=batch_size or config.batch_size, channels=config.channels,
        training=training, augment=config.augment, flip=config.flip,
        seed=config.seed, cache=config.cache if cache else None,
        epochs=config.epochs,
        deterministic=config.deterministic or not training),
                                 input_context=input_context)

  def build_inputs(self, split, *, num_classes, training, cache=True,
                   input_context=None, pixels=None):
    """The training model's pipeline: ({"images", "labels"}, labels) batches
    of face crops, labels the person's index among the training people."""
    del pixels  # Crops are read from their files.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    def to_inputs(images, one_hot):
      labels = tf.argmax(one_hot, axis=-1, output_type=tf.int32)
      return {"images": images, "labels": labels}, labels

    return self._images(split, num_classes=num_classes, training=training,
                        cache=cache, input_context=input_context).map(
                            to_inputs)

  def embed(self, model, paths):
    """Unit embeddings [N, D] of crop files, through the eval pipeline."""
    if not paths:
      return np.zeros((0, model.output_shape[-1]), np.float32)
    ds = self._images(folder_lib.Split(list(paths), [0] * len(paths)),
                      num_classes=1, training=False, cache=False,
                      batch_size=_EMBED_BATCH)
    # predict (not predict_on_batch): a last, smaller batch does not retrace.
    return model.predict(ds.map(lambda x, y: x), verbose=0).astype(
        np.float32)

  def model_pixels(self, path):
    """One crop file as the embedder takes it: float32 [S, S, C]."""
    return pipeline.decode_and_resize(path, self.spec.image_size,
                                      self.config.channels, plain=True).numpy()

  def serving_example(self, path):
    """One crop file as a client sends it: uint8 RGB [S, S, 3]."""
    return decode.read_file(path, 3, self.config.max_image_pixels,
                            self.spec.image_size)

  # --- Model -----------------------------------------------------------------

  def num_outputs(self, folder):
    """The training model's classes: the training people."""
    return folder.train_people

  def build_model(self, num_classes):
    """The embedder: raw pixels in, unit embeddings out (best.keras)."""
    del num_classes  # The embedder has no classes.
    config = self.config
    dropout = {} if config.dropout is None else {"dropout": config.dropout}
    return embedding.build_embedder(
        config.model, self.spec.input_shape, config.embedding_dim,
        **dropout, **dict(self.spec.model_kwargs))

  def training_model(self, model, num_classes):
    """The embedder inside ArcFace/softmax logits over the training people
    (or, for triplets, the embeddings themselves)."""
    config = self.config
    return embedding.build_training_model(
        model, num_classes, loss=config.loss, scale=config.scale,
        margin=config.margin)

  def saved_model(self, training_model):
    return training_model.get_layer("embedder")

  def build_losses(self):
    if self.config.loss == "triplet":
      return embedding.BatchHardTriplet(self.config.margin)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def build_metrics(self, num_classes):
    del num_classes
    if self.config.loss == "triplet":
      return []
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

  def validation_inputs(self, folder, num_classes):
    """None: the validation people are no classes of the training model;
    `VerificationCheck` measures them."""
    del folder, num_classes

  @staticmethod
  def _verifies(folder):
    """Whether there are validation people to measure verification on."""
    return folder.val_people >= 2

  def monitor(self, folder):
    """val_eer (lower is better); without validation people, the training
    loss."""
    return ("val_eer", "min") if self._verifies(folder) else ("loss", "min")

  def build_callbacks(self, model, folder, run):
    del run
    if not self._verifies(folder):
      return []
    return [VerificationCheck(lambda paths: self.embed(model, paths),
                              folder.splits["val"])]

  # --- After training --------------------------------------------------------

  def finish(self, run, model, folder):
    """Writes embedder.json: the fingerprint, input and embedding size, the
    crop margin and the EER threshold on the validation people (what
    `imgrec-faces verify` decides at without a calibrated gallery).

    Returns:
      {"val_eer" (None without validation people), "train_people",
       "val_people"}.
    """
    config = self.config
    eer = threshold = None
    if self._verifies(folder):
      val = folder.splits["val"]
      genuine, impostor = verification.pair_scores(
          self.embed(model, val.paths), val.labels)
      eer, threshold = (float(v) for v in verification.eer(genuine, impostor))
    run.write_embedder_info({
        "fingerprint": embedding.fingerprint(model),
        "embedding_dim": config.embedding_dim,
        "image_size": self.spec.image_size[0], "channels": config.channels,
        "name": f"{config.model}-{config.loss}",
        "crop_margin": config.crop_margin, "eer_threshold": threshold})
    return {"val_eer": eer, "train_people": folder.train_people,
            "val_people": folder.val_people}

  # --- Serving ---------------------------------------------------------------

  def serving_endpoints(self, model, class_names, *, top_k,
                        max_image_pixels):
    """serving_default: `images`, uint8 face crops [N, S, S, 3] -> unit
    `embeddings` float32 [N, D] (gray embedders convert inside)."""
    del class_names, top_k, max_image_pixels
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    side, channels = self.spec.image_size[0], self.config.channels

    def serve(images):
      pixels = ops.to_channels(tf.cast(images, tf.float32), channels)
      return {"embeddings": tf.cast(model(pixels, training=False),
                                    tf.float32)}

    return [("serving_default", serve, [tf.TensorSpec(
        [None, side, side, 3], tf.uint8, name="images")])]

  def tflite_model(self, model):
    """The embedding before its L2 normalization (normalize it before
    matching): Keras' UnitNormalization lowers to SQUARE/SUM/RSQRT, which
    have no int8 kernels."""
    return keras.Model(model.input,
                       model.get_layer("embedding_float32").output)

  def describe(self, variant):
    """One sentence for a TFLite file's metadata."""
    return (f"imgrec {self.config.model} face embedder ({variant}): raw "
            "pixels 0..255 of a face crop in, its embedding out (normalize "
            "it to unit length before matching).")
