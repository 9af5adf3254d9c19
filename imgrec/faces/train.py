"""Trains a face embedder on identity folders with `model.fit`, resumable.

    train(FaceTrainConfig(data_dir="people", model_dir="runs/faces"))

People are split, seeded, into training identities and validation
identities the model never sees; every epoch the validation people's
all-pairs verification EER is measured (`val_eer`), and the embedder with
the lowest one is kept (best.keras). A rerun of the same command resumes
from the last epoch (keras.callbacks.BackupAndRestore).
"""

import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from imgrec import fileio
from imgrec.config import FaceTrainConfig
from imgrec.data import folder as folder_lib
from imgrec.data import pipeline
from imgrec.data import scan
from imgrec.errors import ImgrecError
from imgrec.faces import metrics
from imgrec.faces import model as model_lib
from imgrec.run_folder import FACES_COMMAND
from imgrec.run_folder import RunFolder

logger = logging.getLogger("imgrec")

# Settings a rerun may change and still resume.
_RESUME_NEUTRAL = {"verbose", "overwrite", "epochs"}


def read_identities(data_dir, *, size, cache_dir, detect=False,
                    several="skip", margin=0.2):
  """(person names, paths, labels) of identity folders as face crops.

  Every usable photo becomes a `size` x `size` face crop written under
  `cache_dir` (never into the data): with `detect`, the detector's aligned
  crop; without, the whole photo resized (`detect.load_faces`), the same
  preparation enrollment and identification use. Broken files, and with
  `detect` photos with no face or several faces, are left out and reported.
  """
  found = folder_lib.find_images(data_dir, min_classes=2, carve=False)
  found, report = scan.scan_folder(found, max_bad_fraction=1.0,
                                   progress=False)
  if report["totals"]["skipped"]:
    logger.warning("skipped %d unusable image files in %s (%s)",
                   report["totals"]["skipped"], data_dir, ", ".join(
                       f"{k}: {v}" for k, v in
                       report["skipped_by_reason"].items()))
  paths = [p for s in found.splits.values() for p in s.paths]
  labels = [l for s in found.splits.values() for l in s.labels]
  paths, labels = crops_to_cache(paths, labels, cache_dir, size, detect,
                                 several, margin)
  return list(found.class_names), paths, labels


def crops_to_cache(paths, labels, cache_dir, size, detect, several="skip",
                   margin=0.2):
  """Face crops of `paths` as PNGs under `cache_dir`; files with no usable
  face are left out (logged with their reason)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from imgrec.faces import detect as detect_lib  # pylint: disable=g-import-not-at-top
  os.makedirs(cache_dir, exist_ok=True)
  results = detect_lib.load_faces(paths, size, detect=detect, several=several,
                                  margin=margin)
  kept_paths, kept_labels = [], []
  for i, (result, label) in enumerate(zip(results, labels)):
    if result.status != "ok":
      continue
    out = os.path.join(cache_dir, f"{i:06d}.png")
    with fileio.atomic_write(out, "wb") as f:
      Image.fromarray(result.face).save(f, format="PNG")
    kept_paths.append(out)
    kept_labels.append(label)
  if len(kept_paths) < len(paths):
    logger.warning("left out %d of %d photos: %s",
                   len(paths) - len(kept_paths), len(paths),
                   detect_lib.summary_line(results))
  return kept_paths, kept_labels


def split_identities(num_people, fraction, seed):
  """(train people, validation people) index lists, seeded; no validation
  people with fewer than 4 people or fraction 0."""
  order = np.random.default_rng(seed).permutation(num_people)
  if num_people < 4 or fraction <= 0:
    return sorted(order.tolist()), []
  n_val = min(num_people - 2, max(2, int(round(fraction * num_people))))
  return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def _pick(paths, labels, people):
  index = {p: i for i, p in enumerate(people)}
  chosen = [(path, index[l]) for path, l in zip(paths, labels) if l in index]
  return folder_lib.Split([p for p, _ in chosen], [l for _, l in chosen])


def embed_files(embedder, paths, image_size, channels, batch_size=64):
  """Unit embeddings [N, D] of image files, through the eval pipeline."""
  ds = pipeline.make_dataset(
      paths, [0] * len(paths), num_classes=1,
      image_size=(image_size, image_size), batch_size=batch_size,
      channels=channels, training=False)
  if not paths:
    return np.zeros((0, embedder.output_shape[-1]), np.float32)
  # predict (not predict_on_batch): a last, smaller batch does not retrace.
  return embedder.predict(ds.map(lambda x, y: x), verbose=0).astype(
      np.float32)


class _VerificationCheck(keras.callbacks.Callback):
  """Adds val_eer and val_roc_auc (validation people) to the epoch's logs
  and keeps the embedder with the lowest EER."""

  def __init__(self, embedder, split, config, best_path, best=float("inf")):
    super().__init__()
    self.embedder, self.split, self.config = embedder, split, config
    self.best_path, self.best = best_path, best

  def on_epoch_end(self, epoch, logs=None):
    if logs is None:
      return
    embeddings = embed_files(self.embedder, self.split.paths,
                             self.config.image_size, self.config.channels)
    genuine, impostor = metrics.pair_scores(embeddings, self.split.labels)
    eer, _ = metrics.eer(genuine, impostor)
    logs["val_eer"] = float(eer)
    logs["val_roc_auc"] = float(metrics.roc_auc(genuine, impostor))
    if eer < self.best:
      self.best = eer
      save_embedder(self.embedder, self.best_path)


def _best_so_far(run):
  """The lowest val_eer of the epochs a resumed run already did."""
  best = float("inf")
  for row in _history_rows(run):
    try:
      best = min(best, float(row.get("val_eer", "inf")))
    except ValueError:
      continue
  return best


def save_embedder(embedder, path):
  with fileio.atomic_path(path) as tmp:
    embedder.save(tmp)


def _training_dataset(split, num_people, config):
  ds = pipeline.make_dataset(
      split.paths, split.labels, num_classes=num_people,
      image_size=(config.image_size, config.image_size),
      batch_size=config.batch_size, channels=config.channels, training=True,
      augment=config.augment, flip=config.flip, seed=config.seed,
      epochs=config.epochs)

  def to_inputs(images, one_hot):
    labels = tf.argmax(one_hot, axis=-1, output_type=tf.int32)
    return {"images": images, "labels": labels}, labels

  return ds.map(to_inputs)


def _check_rerun(run, config):
  """True when `run` holds this run to resume; refuses other settings.

  Another kind of run, or a folder that is not imgrec's, was refused by
  `RunFolder.start`.
  """
  if not os.path.isfile(run.face_config_path):
    return False
  old = run.read_face_config()
  differ = sorted(k for k in config.to_dict()
                  if k not in _RESUME_NEUTRAL and k != "model_dir"
                  and old.to_dict().get(k) != config.to_dict()[k])
  if differ:
    raise ImgrecError(
        f"{run.path} holds a face embedder trained with other settings "
        f"({', '.join(differ)}). Pass --overwrite to start afresh, or "
        "another --model_dir.")
  return True


def _history_rows(run):
  import csv  # pylint: disable=g-import-not-at-top
  try:
    with open(run.history_path, encoding="utf-8", newline="") as f:
      return list(csv.DictReader(f))
  except OSError:
    return []


def _finished(run, config):
  """The embedder of this config is complete (a rerun has nothing to do)."""
  epochs = {int(r["epoch"]) for r in _history_rows(run)
            if r.get("epoch", "").isdigit()}
  return (os.path.isfile(run.embedder_info_path)
          and os.path.isfile(run.best_model_path)
          and len(epochs) >= config.epochs)


def _summary_of_finished(run, start):
  rows = _history_rows(run)
  history = {}
  for row in rows:
    for key, value in row.items():
      if key != "epoch":
        try:
          history.setdefault(key, []).append(float(value))
        except (TypeError, ValueError):
          continue
  splits = {}
  for name in ("train", "val"):
    try:
      splits[name] = len(set(run.read_split(name)[1]))
    except ImgrecError:
      splits[name] = 0
  val = history.get("val_eer")
  return {"model_dir": run.path, "val_eer": min(val) if val else None,
          "train_people": splits["train"], "val_people": splits["val"],
          "train_seconds": time.time() - start, "history": history,
          "already_trained": True}


def train(config):
  """Trains, validates and saves a face embedder as `config` says.

  Returns:
    {"model_dir", "val_eer" (best, or None without validation people),
     "train_people", "val_people", "train_seconds", "history"}.

  Raises:
    ImgrecError: bad config or data, or a model_dir holding another run.
  """
  if not isinstance(config, FaceTrainConfig):
    raise ImgrecError("train() takes a FaceTrainConfig. Received: "
                      f"{type(config).__name__}")
  config.validate()
  start = time.time()
  run = RunFolder(config.model_dir)
  with run.start(FACES_COMMAND, overwrite=config.overwrite):
    if _check_rerun(run, config) and _finished(run, config):
      logger.info("%s already holds this embedder, trained for %d epochs; "
                  "pass --overwrite to train it again", run.path,
                  config.epochs)
      return _summary_of_finished(run, start)
    people, paths, labels = read_identities(
        config.data_dir, size=config.image_size,
        cache_dir=run.faces_cache_dir, detect=config.detect,
        margin=config.crop_margin)
    train_people, val_people = split_identities(
        len(people), config.val_identities, config.seed)
    train_split = _pick(paths, labels, train_people)
    val_split = _pick(paths, labels, val_people)
    if len(train_people) < 2 or not len(train_split):
      raise ImgrecError(f"{config.data_dir} needs at least two people with "
                        "images to train on.")
    run.write_face_config(config)
    run.write_splits(config.data_dir, people, {
        "train": folder_lib.Split(
            train_split.paths, [train_people[l] for l in train_split.labels]),
        "val": folder_lib.Split(
            val_split.paths, [val_people[l] for l in val_split.labels])})
    logger.info("faces %s: %d people to train on (%d images), %d to validate "
                "(%d images)", config.data_dir, len(train_people),
                len(train_split), len(val_people), len(val_split))
    keras.utils.set_random_seed(config.seed)
    embedder = model_lib.build_embedder(
        config.backbone, (config.image_size, config.image_size,
                          config.channels), config.embedding_dim)
    trainer = model_lib.build_training_model(
        embedder, len(train_people), loss=config.loss, scale=config.scale,
        margin=config.margin)
    steps = max(1, len(train_split) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps * config.epochs)
    triplet = config.loss == "triplet"
    trainer.compile(
        optimizer=keras.optimizers.AdamW(schedule,
                                         weight_decay=config.weight_decay),
        loss=(model_lib.BatchHardTriplet(config.margin) if triplet else
              keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
        metrics=[] if triplet else [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    callbacks = []
    if len(val_people) >= 2:
      callbacks.append(_VerificationCheck(embedder, val_split, config,
                                          run.best_model_path,
                                          _best_so_far(run)))
    callbacks += [
        keras.callbacks.CSVLogger(run.history_path, append=True),
        keras.callbacks.TensorBoard(run.logs_dir),
        keras.callbacks.BackupAndRestore(run.backup_dir()),
    ]
    history = trainer.fit(_training_dataset(train_split, len(train_people),
                                            config),
                          epochs=config.epochs, callbacks=callbacks,
                          verbose=config.verbose)
    if len(val_people) < 2:
      save_embedder(embedder, run.best_model_path)
    best = model_lib.load_embedder(run.best_model_path)
    eer_threshold = None
    if len(val_people) >= 2:
      genuine, impostor = metrics.pair_scores(
          embed_files(best, val_split.paths, config.image_size,
                      config.channels), val_split.labels)
      _, eer_threshold = metrics.eer(genuine, impostor)
    run.write_embedder_info({
        "fingerprint": model_lib.fingerprint(best),
        "embedding_dim": config.embedding_dim,
        "image_size": config.image_size, "channels": config.channels,
        "name": f"{config.backbone}-{config.loss}",
        "crop_margin": config.crop_margin,
        # imgrec-faces verify without a calibrated gallery decides here.
        "eer_threshold": (None if eer_threshold is None
                          else float(eer_threshold))})
    train_seconds = time.time() - start
    run.write_training({"train_seconds": train_seconds,
                        "epochs": config.epochs,
                        "num_params": int(embedder.count_params())})
    val_eer = history.history.get("val_eer")
    return {"model_dir": run.path,
            "val_eer": min(val_eer) if val_eer else None,
            "train_people": len(train_people),
            "val_people": len(val_people), "train_seconds": train_seconds,
            "history": {k: [float(v) for v in vals]
                        for k, vals in history.history.items()}}
