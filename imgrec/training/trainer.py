"""Trains a classifier from a TrainConfig with `model.fit`, end to end.

`train(config)` resolves the data, builds the model under the chosen
tf.distribute strategy, fits it with checkpoints that make a rerun of the
same command resume, evaluates the best model on the test split and exports
it. Everything lands in `config.model_dir`:

    config.json       the full final configuration
    labels.txt        class names in label order
    data_report.json  what the data scan found, skipped and converted
    splits.json       the exact files of each split
    checkpoints/      BackupAndRestore state (resume after a crash)
    logs/             TensorBoard
    history.csv       per-epoch metrics
    best.keras        the best model by validation accuracy
    report.json/.txt  test-split evaluation
    export/           saved_model/ and model.tflite
"""

import os
import time

from absl import logging
import keras
import tensorflow as tf

from imgrec import datasets
from imgrec import models
from imgrec.config import TrainConfig
from imgrec.data import folder as folder_lib
from imgrec.data import pipeline
from imgrec.data import scan
from imgrec.data import sources
from imgrec.errors import ImgrecError
from imgrec.evaluation import report as report_lib
from imgrec.training import callbacks as callbacks_lib
from imgrec.training import distribute
from imgrec.training import multi_worker
from imgrec.training import recipe
from imgrec.training import transfer


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


def resolve_config(config):
  """Fills the defaults that depend on the data or model, then validates."""
  config.validate()
  if config.image_size is None:
    config.image_size = int(models.get_model_cfg(config.model)["input_size"][0])
  if config.model_dir is None:
    config.model_dir = default_model_dir(config)
  return config


def load_folder(config, report_path=None):
  """Returns the ImageFolder of the run.

  The data comes from `labels_csv`, `tfds`, `data_dir` or else the built-in
  `dataset`. Every file is validated first (`imgrec.data.scan`): broken
  files are skipped and reported in `report_path` (with the files a labels
  CSV lists but that do not exist), odd formats are converted once, and only
  then are the missing val/test splits carved out, so bad files do not
  unbalance them.
  """
  if config.labels_csv:
    found = sources.read_labels_csv(config.labels_csv)
  elif config.tfds:
    found = sources.load_tfds(config.tfds, config.tfds_data_dir)
  else:
    data_dir = config.data_dir
    if data_dir is None:
      data_dir = datasets.load_builtin(config.dataset, seed=0)
    found = folder_lib.find_images(data_dir, carve=False)
  missing = getattr(found, "missing", [])
  if config.scan:
    try:
      found, report = scan.scan_folder(
          found, max_image_pixels=config.max_image_pixels,
          max_bad_fraction=config.max_bad_fraction,
          prepared_dir=scan.default_prepared_dir(found.root),
          report_path=report_path, channels=config.channels)
    except ImgrecError as e:
      if missing and getattr(e, "report", None):
        sources.add_missing_to_report(e.report, missing, report_path)
      raise
    sources.add_missing_to_report(report, missing, report_path)
    if report["totals"]["skipped"]:
      logging.warning("skipped %d unusable image files (%s); see %s",
                      report["totals"]["skipped"],
                      ", ".join(f"{k}: {v}" for k, v in
                                report["skipped_by_reason"].items()),
                      report_path or "imgrec-scan")
  return folder_lib.carve_splits(found, config.val_split, config.test_split,
                                 config.seed)


def build_model(config, num_classes):
  kwargs = {}
  if models.get_model_cfg(config.model)["kind"] == "transfer":
    weights = config.weights
    kwargs.update(weights=None if weights.lower() == "none" else weights,
                  freeze_backbone=config.freeze_backbone)
  if config.dropout is not None:
    kwargs["dropout"] = config.dropout
  if config.edges:
    kwargs["edges"] = True
  shape = (config.image_size, config.image_size, config.channels)
  return models.create_model(config.model, num_classes, shape, **kwargs)


def make_split_dataset(config, split, num_classes, training, cache=None,
                       input_context=None):
  cache = config.cache if cache else None
  if cache == "auto" and config.epochs == 1:
    # One pass reads every image once: a cache would only cost memory, and
    # streamed JPEGs decode less (only what the augmentation keeps).
    cache = None
  return pipeline.make_dataset(
      split.paths, split.labels, num_classes=num_classes,
      image_size=(config.image_size, config.image_size),
      batch_size=config.batch_size, channels=config.channels,
      training=training, augment=config.augment, flip=config.flip,
      mixup=config.mixup, cutmix=config.cutmix, seed=config.seed, cache=cache,
      deterministic=config.deterministic or not training,
      input_context=input_context)


def predict_split(model, config, split, num_classes):
  """Returns probabilities [N, C] of a model over one split, in file order."""
  ds = make_split_dataset(config, split, num_classes, training=False)
  return model.predict(ds.map(lambda x, y: x), verbose=0)


def train(config):
  """Trains, evaluates and exports a model as `config` says.

  Args:
    config: a TrainConfig.

  Returns:
    A dict with model_dir, the test report, history and wall time.

  Raises:
    ImgrecError: bad configuration or data.
  """
  start = time.time()
  config = resolve_config(config)
  strategy = distribute.get_strategy(config.strategy)
  multi_worker.patch_keras()
  chief = multi_worker.is_chief(strategy)
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  model_dir = config.model_dir
  os.makedirs(model_dir, exist_ok=True)
  folder = load_folder(config, os.path.join(model_dir, "data_report.json")
                       if chief else None)
  class_names = folder.class_names
  num_classes = len(class_names)
  train_split = folder.splits["train"]
  val_split, test_split = folder.splits["val"], folder.splits["test"]
  logging.info("data %s: %d classes, %d train / %d val / %d test images",
               folder.root, num_classes, len(train_split), len(val_split),
               len(test_split))

  if chief:
    config_to_save = TrainConfig.from_dict(config.to_dict())
    if not (config.data_dir or config.labels_csv or config.tfds):
      config_to_save.data_dir = folder.root  # The built-in dataset's folder.
    config_to_save.save(os.path.join(model_dir, "config.json"))
    folder_lib.write_labels(os.path.join(model_dir, "labels.txt"), class_names)
    folder_lib.write_split_manifest(os.path.join(model_dir, "splits.json"),
                                    folder)

  # Each worker reads its own shard of the files, batched per replica.
  train_ds = multi_worker.distribute_dataset(
      lambda ctx: make_split_dataset(config, train_split, num_classes, True,
                                     cache=True, input_context=ctx), strategy)
  val_ds = (make_split_dataset(config, val_split, num_classes, False,
                               cache=True)
            if len(val_split) else None)
  policy = recipe.set_precision(config.mixed_precision)
  steps = recipe.steps_per_epoch(len(train_split), config.batch_size)
  with strategy.scope():
    model = build_model(config, num_classes)
    if config.init_from:
      transfer.load_body_weights(model, config.init_from)
  class_weight = (recipe.balanced_class_weights(train_split.labels,
                                                num_classes)
                  if config.class_weight == "auto" else None)

  monitor = "val_accuracy" if val_ds is not None else "accuracy"
  best_path = os.path.join(model_dir, "best.keras")
  history_path = os.path.join(model_dir, "history.csv")
  # Two-stage fine-tuning trains the head on a frozen body, then the body at
  # a lower learning rate; each stage resumes from its own backup.
  if config.freeze_epochs:
    stages = [("head", 0, config.freeze_epochs, 1.0),
              ("fine_tune", config.freeze_epochs, config.epochs,
               config.fine_tune_lr_scale)]
  else:
    stages = [("train", 0, config.epochs, 1.0)]
  backup_dirs = [os.path.join(model_dir, "checkpoints")
                 if len(stages) == 1 else
                 os.path.join(model_dir, "checkpoints", name)
                 for name, *_ in stages]
  # A rerun resumes after the last epoch whose backup was committed; history
  # rows of later epochs (cut short by a kill, run again now) are dropped.
  # Epoch numbers run on across stages, so the last stage's count is the
  # total.
  epochs_done = (max(callbacks_lib.completed_epochs(d) for d in backup_dirs)
                 if chief else 0)
  if chief:
    callbacks_lib.truncate_history(history_path, epochs_done)
  history, best = {}, None
  for (name, first_epoch, last_epoch, lr_scale), backup_dir in zip(
      stages, backup_dirs):
    if name == "head":
      transfer.set_body_trainable(model, False)
    elif name == "fine_tune":
      transfer.set_body_trainable(model, True, config.unfreeze)
    with strategy.scope():
      model.compile(
          optimizer=recipe.build_optimizer(
              config, steps, epochs=last_epoch - first_epoch,
              lr_scale=lr_scale),
          loss=keras.losses.CategoricalCrossentropy(
              label_smoothing=config.label_smoothing),
          metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.TopKCategoricalAccuracy(
                       k=min(config.top_k, num_classes), name="top_k")],
          jit_compile={"auto": "auto", "true": True,
                       "false": False}[config.jit_compile])
    callbacks = []
    if config.ema:
      # Validation and checkpoints see the averaged weights.
      callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if config.early_stopping:
      callbacks.append(keras.callbacks.EarlyStopping(
          monitor=monitor, mode="max", patience=config.early_stopping))
    if chief:
      callbacks += [
          keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
          keras.callbacks.CSVLogger(history_path,
                                    append=epochs_done > 0 or first_epoch > 0),
      ]
    # Every worker saves (saving may run collectives); multi_worker sends the
    # non-chief copies to temporary folders. A later stage only replaces the
    # best model of an earlier one with a better one.
    checkpoint = callbacks_lib.AtomicModelCheckpoint(
        best_path, monitor=monitor, mode="max", save_best_only=True,
        initial_value_threshold=best)
    callbacks.append(checkpoint)
    # After the callbacks that write per-epoch outputs: an epoch counts as
    # done once its backup is committed, and by then its row and best.keras
    # exist.
    callbacks.append(callbacks_lib.AtomicBackupAndRestore(
        backup_dir, dataset=train_ds, state_callbacks=list(callbacks)))
    callbacks.append(callbacks_lib.GracefulInterrupt())
    try:
      stage_history = model.fit(
          train_ds, validation_data=val_ds, initial_epoch=first_epoch,
          epochs=last_epoch, callbacks=callbacks, verbose=config.verbose,
          class_weight=class_weight, shuffle=False)  # The dataset shuffles.
    except callbacks_lib.TrainingInterrupted as e:
      logging.warning("%s", e)
      return {"model_dir": model_dir, "interrupted": True, "message": str(e),
              "exit_code": e.exit_code, "chief": chief,
              "wall_seconds": time.time() - start}
    for key, values in stage_history.history.items():
      history.setdefault(key, []).extend(float(v) for v in values)
    if checkpoint.best is not None and abs(checkpoint.best) != float("inf"):
      best = checkpoint.best
  train_seconds = time.time() - start
  if not chief:
    return {"model_dir": model_dir, "train_seconds": train_seconds,
            "wall_seconds": time.time() - start, "chief": False}

  if not os.path.isfile(best_path):
    callbacks_lib.save_model_atomic(model, best_path)
  # Evaluate and export a fresh copy outside the strategy: running the
  # distributed model on the chief alone would wait for the other workers.
  model = keras.models.load_model(best_path)
  if policy != "float32":
    # Serve in float32: TFLite and most servers lack bfloat16 kernels.
    recipe.set_precision(False)
    float_model = build_model(config, num_classes)
    float_model.set_weights(model.get_weights())
    model = float_model
    callbacks_lib.save_model_atomic(model, best_path)
  result = {"model_dir": model_dir, "train_seconds": train_seconds,
            "history": history}
  eval_split = test_split if len(test_split) else val_split
  if len(eval_split):
    probabilities = predict_split(model, config, eval_split, num_classes)
    report = report_lib.classification_report(
        eval_split.labels, probabilities, class_names, k=config.top_k)
    report_lib.write_report(report, model_dir)
    result["report"] = report
    logging.info("test accuracy %.4f on %d images", report["accuracy"],
                 report["num_examples"])
  if config.export:
    from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
    result["export"] = exporter.export_model_dir(model_dir, model=model)
  result["wall_seconds"] = time.time() - start
  return result
