"""What every classification task shares: the resolved run spec, the checks before any data, losses and metrics.

`resolve` validates a TrainConfig and derives a frozen `RunSpec` (input
size, model options, augmentation) without reading any data; the image and
clip classification tasks are peers built on `ClassificationTask`.
"""

import collections
import dataclasses
import logging
import os
import re

import numpy as np

from imgrec import fileio
from imgrec.config import TrainConfig
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.run_folder import RESUME_NEUTRAL
from imgrec.run_folder import RunFolder
from imgrec.tasks import base
from imgrec.tasks import open_set

datasets = base.lazy_import("imgrec.datasets")
models = base.lazy_import("imgrec.models")

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AugmentPlan:
  """What training augmentation does (see `imgrec.data.augment`)."""
  level: str
  flip: str
  mixup: float
  cutmix: float


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """A resolved, frozen run: the config plus every value derived from it.

  Attributes:
    config: the validated TrainConfig, `image_size` and `model_dir` filled
      in; this is what `config.json` records.
    image_size: (height, width) of the model input.
    channels: 1 or 3.
    model_kwargs: the registry options of the model (`dict(...)` them).
    cache: the cache request ("auto", "none", "memory" or a prefix);
      `pipeline.plan_cache` turns it into a decision per split, once the
      split's size is known.
    augment: the training augmentation.
  """
  config: TrainConfig
  image_size: tuple
  channels: int
  model_kwargs: tuple
  cache: str
  augment: AugmentPlan

  @property
  def input_shape(self):
    return (*self.image_size, self.channels)


def default_model_dir(config):
  """`runs/<data>-<model>`: fixed per data and model, so reruns resume.

  <data> is the data folder's name, the labels CSV's name without extension,
  the TFDS name (`/` and `:` replaced by `-`) or the built-in dataset.
  """
  if config.data_dir:
    data = os.path.basename(os.path.normpath(config.data_dir))
  elif config.labels_csv:
    data = os.path.splitext(os.path.basename(config.labels_csv))[0]
  elif config.tfds:
    data = config.tfds.replace("/", "-").replace(":", "-")
  else:
    data = config.dataset
  return os.path.join("runs", f"{data}-{config.model}")


def image_size_of(config):
  """(height, width) of a config whose image_size may be None, an int or a pair."""
  size = config.image_size
  if size is None:
    return tuple(models.get_model_cfg(config.model)["input_size"])
  if isinstance(size, int):
    return (size, size)
  return tuple(int(s) for s in size)


def model_kwargs(config):
  """The registry options of a record's model section (weights, ...)."""
  kwargs = {}
  if models.get_model_cfg(config.model)["kind"] == "transfer":
    weights = config.weights
    kwargs.update(weights=None if weights.lower() == "none" else weights,
                  freeze_backbone=config.freeze_backbone)
  if config.dropout is not None:
    kwargs["dropout"] = config.dropout
  if config.edges:
    kwargs["edges"] = True
  return kwargs


def check_model_dir_outside_data(config):
  """imgrec never writes into the user's data: refuse a model_dir inside it."""
  csv = getattr(config, "labels_csv", None)
  data = config.data_dir or (os.path.dirname(os.path.abspath(csv)) if csv
                             else None)
  if data and fileio.is_inside(config.model_dir, data):
    raise ImgrecError(
        f"model_dir {config.model_dir} is inside the data folder {data}; "
        "imgrec never writes into your data. Pass --model_dir=<a folder "
        "outside it>.")


def check_imagenet_weights(model, input_shape):
  """Downloads the backbone's ImageNet weights now, or says how to do without."""
  from imgrec.models import transfer  # pylint: disable=g-import-not-at-top
  try:
    transfer.fetch_imagenet_weights(model, input_shape)
  except Exception as e:  # pylint: disable=broad-except
    text = str(e)
    url = re.search(r"https?://\S+?(?=[:\s]|$)", text)
    name = os.path.basename(url.group(0)) if url else "the weights file"
    where = f" ({url.group(0)})" if url else ""
    reason = text.split(" -- ")[-1].strip() if " -- " in text else (
        text.splitlines()[0] if text else type(e).__name__)
    raise ImgrecError(
        f"Cannot get the ImageNet weights of --model={model}{where}: "
        f"{reason}. Without network: download {name} elsewhere and pass "
        f"--weights=<path to it> (or put it in ~/.keras/models/), or train "
        "from scratch with --weights=none.") from e


def resolve(config, *, check_files=True):
  """Validates a config and derives the run spec, without reading any data.

  Args:
    config: a TrainConfig.
    check_files: also check that the files the config names exist (off
      when reloading the config of a finished run).

  Returns:
    A RunSpec.

  Raises:
    ImgrecError: naming the bad flag, what is wrong and what to pass.
  """
  config.validate(check_files=check_files)
  if config.model not in models.list_models():
    raise ImgrecError(f"Bad value for --model: unknown model; known models: "
                      f"{', '.join(models.list_models())}. Received: "
                      f"model={config.model!r}")
  if not (config.data_dir or config.labels_csv or config.tfds) and (
      config.dataset not in datasets.list_builtin()):
    raise ImgrecError(f"Bad value for --dataset: unknown built-in dataset; "
                      f"known: {', '.join(datasets.list_builtin())}. "
                      f"Received: dataset={config.dataset!r}")
  if check_files and config.init_from:
    RunFolder(config.init_from).require_best_model()
  size = image_size_of(config)
  kwargs = model_kwargs(config)
  try:
    models.check_model(config.model, 2, (*size, config.channels), **kwargs)
  except (ValueError, TypeError, FileNotFoundError) as e:
    raise ImgrecError(
        f"--model={config.model} cannot take --image_size="
        f"{','.join(map(str, size))} --channels={config.channels} with these "
        f"options: {e}") from e
  if check_files and kwargs.get("weights") == "imagenet":
    check_imagenet_weights(config.model, (*size, config.channels))
  image_size = size[0] if size[0] == size[1] else size
  config = config.replace(image_size=image_size,
                          model_dir=config.model_dir or
                          default_model_dir(config))
  if check_files:
    check_model_dir_outside_data(config)
  return RunSpec(
      config=config, image_size=size, channels=config.channels,
      model_kwargs=tuple(sorted(kwargs.items())), cache=config.cache,
      augment=AugmentPlan(config.augment, config.flip, config.mixup,
                          config.cutmix))


def balanced_class_weights(labels, num_classes):
  """Weights n / (k * count[c]): each class adds the same to the loss.

  Classes with no example get weight 0 (they never appear anyway).
  """
  counts = collections.Counter(int(l) for l in labels)
  n = len(labels)
  return {c: (n / (num_classes * counts[c]) if counts[c] else 0.0)
          for c in range(num_classes)}


class ClassificationTask(base.Task):
  """One label an example (softmax): the part image and clip tasks share.

  Args:
    spec: a RunSpec from `resolve`.
  """

  resume_neutral = RESUME_NEUTRAL
  multilabel = False  # Independent labels (sigmoid) instead of one class.

  @classmethod
  def resolve(cls, config, *, check_files=True):
    others, whose = ((("label_delim", " "), ("loss", "bce"),
                      ("threshold", None)), "--task=multilabel")
    if cls.multilabel:  # A label set's "none of these" is no label above.
      others, whose = ((("unknown_score", "max_softmax"),
                        ("known_recall", 0.95)), "single-label runs")
    given = [f"--{name}" for name, default in others
             if getattr(config, name) != default]
    if given:
      raise ImgrecError(
          f"{', '.join(given)} {'are' if len(given) > 1 else 'is'} for "
          f"{whose} (this run's task is {cls.name}).")
    own = datasets.BUILTIN_TASKS.get(config.dataset, cls.name)
    if own != cls.name and not (config.data_dir or config.labels_csv or
                                config.tfds):
      raise ImgrecError(f"The built-in dataset {config.dataset} is for "
                        f"--task={own}, not {cls.name}.")
    return resolve(config, check_files=check_files)

  @classmethod
  def accepts_config(cls, config):
    """True for a TrainConfig whose (resolved) task is this one."""
    return config.task in (cls.name, *cls.aliases)

  def config_to_record(self, folder):
    """The config written to config.json: the built-in dataset's path filled in."""
    if self.config.data_dir or self.config.labels_csv or self.config.tfds:
      return self.config
    return self.config.replace(data_dir=folder.root)

  def _eval_folder(self, data_dir):
    """Another folder's usable examples, in any number (broken ones out)."""
    raise NotImplementedError

  def _usable(self, found):
    """`found` (a folder.ImageFolder) with its unusable examples left out
    (skipped and counted as the data scan does, in any number)."""
    raise NotImplementedError

  def build_unknown_split(self, unknown_dir):
    """Every usable example anywhere under `unknown_dir`, of no class the
    run knows (labels all 0), for the open-set figures.

    Raises:
      ImgrecError: the folder is missing or holds no usable example.
    """
    kind = "video" if self.noun == "clips" else "image"
    if not os.path.isdir(unknown_dir):
      raise ImgrecError(f"--unknown_dir {unknown_dir} is not a folder: pass "
                        f"a folder of {self.noun} of no class the run knows.")
    paths = folder_lib.expand_image_paths([unknown_dir], kind=kind)
    found = self._usable(folder_lib.ImageFolder(
        os.path.abspath(unknown_dir), ["unknown"],
        {"train": folder_lib.Split(paths, [0] * len(paths))}, "classes"))
    return found.splits["train"]

  def build_eval_split(self, data_dir, split, class_names):
    """A split of another folder, its labels in this run's class order.

    The folder's `split` folder if it has split folders, else all of its
    examples. Classes are matched by name; examples of classes the model
    does not know are left out and counted.

    Returns:
      (folder.Split, {class the model does not know: examples left out}).
    """
    found = self._eval_folder(data_dir)
    if found.layout == "splits" and len(found.splits.get(split, [])):
      chosen = found.splits[split]
    else:
      chosen = folder_lib.Split(
          [p for s in found.splits.values() for p in s.paths],
          [l for s in found.splits.values() for l in s.labels])
    index = {c: i for i, c in enumerate(class_names)}
    paths, labels, unknown = [], [], {}
    for path, label in zip(chosen.paths, chosen.labels):
      name = found.class_names[label]
      if name in index:
        paths.append(path)
        labels.append(index[name])
      else:
        unknown[name] = unknown.get(name, 0) + 1
    return folder_lib.Split(paths, labels), unknown

  def pipeline_spec(self, num_classes, training, cache=True, **extra):
    """The `PipelineSpec` of one split of images under the run's recipe
    (`extra` sets more of its fields)."""
    from imgrec.data import pipeline  # pylint: disable=g-import-not-at-top
    config, augment = self.config, self.spec.augment
    return pipeline.PipelineSpec(
        num_classes=num_classes, image_size=self.spec.image_size,
        batch_size=config.batch_size, channels=self.spec.channels,
        training=training, augment=augment.level, flip=augment.flip,
        mixup=augment.mixup, cutmix=augment.cutmix, seed=config.seed,
        cache=self.spec.cache if cache else None, epochs=config.epochs,
        deterministic=config.deterministic or not training,
        scanned=config.scan, **extra)

  def build_losses(self):
    import keras  # pylint: disable=g-import-not-at-top
    return keras.losses.CategoricalCrossentropy(
        label_smoothing=self.config.label_smoothing)

  def build_metrics(self, num_classes):
    import keras  # pylint: disable=g-import-not-at-top
    return [keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(
                k=min(self.config.top_k, num_classes), name="top_k")]

  def class_weight(self, split, num_classes):
    """`balanced_class_weights` with --class_weight=auto, else None."""
    if self.config.class_weight != "auto":
      return None
    return balanced_class_weights(split.labels, num_classes)

  def finish(self, run, model, folder):
    """Chooses the run's open set: the score and threshold an image of no
    known class is answered "unknown" below (`open_set.fit`)."""
    found = open_set.fit(self, run, model, folder)
    if not len(folder.splits.get("val", ())):
      logger.warning(
          "open set: no validation split, so the \"unknown\" threshold was "
          "chosen on training images, which look more known than new ones: "
          "it will turn away more than %.0f%% of known images. Keep a "
          "validation split, or calibrate it on images of no known class "
          "(imgrec-evaluate --unknown_dir=... --calibrate_unknown).",
          100 * (1 - found.known_recall))
    logger.info("open set: %s >= %.4g is known (keeps %s of the %s)",
                found.score, found.threshold, found.known_recall,
                found.source)
    return {"open_set": found.to_json()}

  def report_split(self, folder):
    """The test split, else the validation split, else None."""
    for name in ("test", "val"):
      if len(folder.splits.get(name, ())):
        return name, folder.splits[name]
    return None

  def summary_line(self, report):
    """One line of a report's headline figures (imgrec-train's last)."""
    return (f"{report['data']['split']} accuracy: {report['accuracy']:.4f} "
            f"({report['num_examples']} examples), top-{report['k']}: "
            f"{report['top_k_accuracy']:.4f}")

  def describe(self, variant):
    """One sentence for a TFLite file's metadata."""
    text = (f"imgrec {self.config.model} {self.noun[:-1]} classifier "
            f"({variant}): raw pixels 0..255 in, class probabilities out")
    found = self.open_set()
    if found is None:
      return text + "."
    return (text + ", then an \"unknown\" column (the last label): 1 when "
            f"the {self.noun[:-1]} is of no known class ({found.score} "
            f"below {found.threshold:.6g}), the probabilities then halved.")

  def scores_metadata(self):
    if self.open_set() is None:
      return super().scores_metadata()
    return ("probabilities", "Probability of each class (softmax), then the "
            "\"unknown\" column: 1 when the image is of no known class (its "
            "class probabilities then halved, so that \"unknown\" ranks "
            "first), else 0.")

  def open_set(self):
    """The open set of the run the task was made from (`from_run`; else of
    its model_dir), read once; None for a multi-label run or a run
    without one."""
    if self.multilabel:
      return None
    if not hasattr(self, "_open_set"):
      run = getattr(self, "run", None) or (
          RunFolder(self.config.model_dir) if self.config.model_dir
          else None)
      self._open_set = None
      if run is not None and os.path.isfile(run.labels_path):
        self._open_set = open_set.read(run, len(run.read_labels()))
    return self._open_set

  def serving_model(self, model):
    """With an open set, `open_set.scoring_model` (probabilities and the
    run's unknown score), else `model`."""
    found = self.open_set()
    return model if found is None else open_set.scoring_model(model, found)

  def tflite_model(self, model):
    """With an open set, the model with its "unknown" column
    (`open_set.unknown_column_model`)."""
    found = self.open_set()
    return model if found is None else open_set.unknown_column_model(
        model, found)

  def class_scores(self, outputs, num_classes):
    """The class probabilities of TFLite outputs (without the "unknown"
    column of an open set, as they were before it halved them)."""
    if np.shape(outputs)[-1] == num_classes + 1 and self.open_set():
      return open_set.split_unknown_column(outputs, num_classes)[0]
    return outputs

  def tflite_labels(self, class_names):
    found = self.open_set()
    return (class_names if found is None else
            [*class_names, open_set.unknown_label(class_names)])


def classifier_outputs(model, class_names, top_k, found=None):
  """The serving outputs of a classifier: pixels -> {"probabilities" float32
  [N, C], "top_k_indices" int32 [N, k], "top_k_labels" string [N, k]}; with
  an open set `found` (and `model` its `serving_model`, returning
  {"probabilities", "knownness"}) also "knownness" float32 [N] (the run's
  unknown score), "unknown" bool [N] (below its threshold) and "label"
  string [N] (the top class, or the unknown label)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  k = int(min(top_k, len(class_names)))
  labels = tf.constant(list(class_names), dtype=tf.string)

  def outputs(pixels):
    if found is None:
      probabilities = tf.cast(model(pixels, training=False), tf.float32)
    else:
      scored = model(pixels, training=False)
      probabilities = tf.cast(scored["probabilities"], tf.float32)
    top = tf.math.top_k(probabilities, k=k)
    out = {"probabilities": probabilities,
           "top_k_indices": top.indices,
           "top_k_labels": tf.gather(labels, top.indices)}
    if found is not None:
      knownness = tf.cast(scored["knownness"], tf.float32)
      unknown = knownness < found.threshold
      out.update(knownness=knownness, unknown=unknown, label=tf.where(
          unknown, open_set.unknown_label(class_names),
          out["top_k_labels"][:, 0]))
    return out

  return outputs
