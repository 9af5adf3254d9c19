"""Trains a classifier from a TrainConfig with `model.fit`, end to end.

`train(config)` resolves the run (`imgrec.tasks`), reads and checks the
data, builds the model under the chosen tf.distribute strategy, fits it with
backups that make a rerun of the same command resume, evaluates the best
model on the test split and exports it. Everything lands in the run folder
(`imgrec.run_folder.RunFolder`).
"""

import contextlib
import logging
import os
import sys
import time

import keras
import tensorflow as tf

from imgrec import tasks
from imgrec.config import TrainConfig
from imgrec.evaluation import evaluate as evaluate_lib
from imgrec.run_folder import TRAIN_COMMAND
from imgrec.run_folder import RunFolder
from imgrec.training import checkpoint as checkpoint_lib
from imgrec.training import distribute
from imgrec.training import finetune
from imgrec.training import recipe
from imgrec.training import resume
from imgrec.training import signals

logger = logging.getLogger(__name__)


def _stages(config, run):
  """(name, first epoch, last epoch, lr scale, backup dir) of each stage.

  Two-stage fine-tuning trains the head on a frozen body, then the body at
  a lower learning rate; each stage resumes from its own backup. Epoch
  numbers run on across stages.
  """
  if not config.freeze_epochs:
    return [("train", 0, config.epochs, 1.0, run.backup_dir())]
  return [("head", 0, config.freeze_epochs, 1.0, run.backup_dir("head")),
          ("fine_tune", config.freeze_epochs, config.epochs,
           config.fine_tune_lr_scale, run.backup_dir("fine_tune"))]


def _callbacks(config, run, *, chief, monitor, best, append_history):
  """The per-epoch callbacks before the backup, in the order they must run."""
  out = []
  if config.ema:
    # Validation and checkpoints see the averaged weights.
    out.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
  if config.early_stopping:
    out.append(keras.callbacks.EarlyStopping(
        monitor=monitor, mode="max", patience=config.early_stopping))
  if chief:
    out += [keras.callbacks.TensorBoard(run.logs_dir),
            keras.callbacks.CSVLogger(run.history_path,
                                      append=append_history)]
  # A later stage only replaces the best model of an earlier one with a
  # better one.
  out.append(checkpoint_lib.BestModelCheckpoint(
      run.best_model_path, monitor=monitor, mode="max",
      initial_value_threshold=best))
  return out


def train(config):
  """Trains, evaluates and exports a model as `config` says.

  A rerun of the same command resumes the run in `model_dir`; a run with
  other settings or other data there is refused unless `config.overwrite`.
  A folder holding files imgrec did not write is refused even then. One
  process writes a model_dir at a time.

  Args:
    config: a TrainConfig, or a dict of its fields.

  Returns:
    A dict with model_dir, the test report, history and wall time.

  Raises:
    ImgrecError: bad configuration or data, a model_dir that cannot be
      written, holds another run or files that are not imgrec's, or one in
      use by another process.
  """
  start = time.time()
  config = TrainConfig.coerce(config, "train")
  task = tasks.for_config(config)
  run = RunFolder(task.config.model_dir)
  strategy = distribute.get_strategy(task.config.strategy)
  if distribute.is_multi_worker(strategy):
    from imgrec.training import keras_internals  # pylint: disable=g-import-not-at-top
    keras_internals.patch_keras()
  chief = distribute.is_chief(strategy)
  # Other workers write only their own temporary folders; the chief holds
  # the run's lock.
  with (run.start(TRAIN_COMMAND, overwrite=task.config.overwrite) if chief
        else contextlib.nullcontext()):
    return _train(task, run, strategy, chief, start)


def _train(task, run, strategy, chief, start):
  """`train` inside the run's lock (a fresh run's folder already cleared)."""
  config = task.config
  resuming = chief and not config.overwrite and run.check_resumable(config)
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  stages = _stages(config, run)
  # Also finishes or drops a backup commit that a kill cut short, before
  # anything else is written.
  restore = [resume.restore_point(d, strategy) for *_, d in stages]
  folder = task.build_folder(run.data_report_path if chief else None)
  class_names = folder.class_names
  num_classes = len(class_names)
  train_split = folder.splits["train"]
  val_split, test_split = folder.splits["val"], folder.splits["test"]
  logger.info("data %s: %d classes, %d train / %d val / %d test %s",
              folder.root, num_classes, len(train_split), len(val_split),
              len(test_split), "clips" if task.kind == "clip" else "images")
  if chief and resuming:
    run.check_same_splits(folder.splits)
  elif chief:
    run.write_config(task.config_to_record(folder))
    run.write_labels(class_names)
    run.write_splits(folder.root, class_names, folder.splits)

  # Each worker reads its own shard of the files, batched per replica.
  train_ds = distribute.distribute_dataset(
      lambda ctx: task.build_inputs(train_split, num_classes=num_classes,
                                    training=True, input_context=ctx,
                                    pixels=folder.pixels),
      strategy)
  val_ds = (task.build_inputs(val_split, num_classes=num_classes,
                              training=False)
            if len(val_split) else None)
  policy = recipe.set_precision(config.mixed_precision)
  steps = recipe.steps_per_epoch(len(train_split), config.batch_size)
  with strategy.scope():
    model = task.build_model(num_classes)
    if config.init_from:
      finetune.load_body_weights(model, RunFolder(config.init_from))
  class_weight = (recipe.balanced_class_weights(train_split.labels,
                                                num_classes)
                  if config.class_weight == "auto" else None)

  monitor = "val_accuracy" if val_ds is not None else "accuracy"
  # A rerun resumes after the last epoch whose backup was committed; history
  # rows of later epochs (cut short by a kill, run again now) are dropped.
  epochs_done = max(int(m["epoch"]) if m else 0 for _, m in restore)
  if chief:
    resume.truncate_history(run.history_path, epochs_done)
  history, best = {}, None
  for (name, first, last, lr_scale, backup_dir), (restore_dir, metadata) in (
      zip(stages, restore)):
    if name == "head":
      finetune.set_body_trainable(model, False)
    elif name == "fine_tune":
      finetune.set_body_trainable(model, True, config.unfreeze)
    initial_epoch = max(first, resume.resume_epoch(metadata, last))
    distribute.check_same_on_workers(
        strategy, initial_epoch, f"the epoch to resume from ({backup_dir})")
    with strategy.scope():
      model.compile(
          optimizer=recipe.build_optimizer(config, steps, epochs=last - first,
                                           lr_scale=lr_scale),
          loss=task.build_losses(), metrics=task.build_metrics(num_classes),
          jit_compile={"auto": "auto", "true": True,
                       "false": False}[config.jit_compile])
    callbacks = _callbacks(config, run, chief=chief, monitor=monitor,
                           best=best,
                           append_history=epochs_done > 0 or first > 0)
    checkpoint = callbacks[-1]
    # After the callbacks that write per-epoch outputs: an epoch counts as
    # done once its backup is committed, and by then its row and best.keras
    # exist.
    callbacks.append(resume.TrainingBackup(
        backup_dir, restore_dir=restore_dir, dataset=train_ds,
        state_callbacks=list(callbacks)))
    callbacks.append(signals.GracefulInterrupt())
    try:
      stage_history = model.fit(
          train_ds, validation_data=val_ds, initial_epoch=initial_epoch,
          epochs=last, callbacks=callbacks,
          verbose=_fit_verbosity(config.verbose), class_weight=class_weight,
          shuffle=False)  # The dataset shuffles.
    except signals.TrainingInterrupted as e:
      logger.warning("%s", e)
      return {"model_dir": run.path, "interrupted": True, "message": str(e),
              "exit_code": e.exit_code, "chief": chief,
              "wall_seconds": time.time() - start}
    for key, values in stage_history.history.items():
      history.setdefault(key, []).extend(float(v) for v in values)
    if abs(checkpoint.best) != float("inf"):
      best = checkpoint.best
  train_seconds = time.time() - start
  if chief:
    # A resumed run adds this session's time to the earlier sessions'.
    before = (run.read_training() or {}) if resuming else {}
    run.write_training({
        "train_seconds": train_seconds + float(before.get("train_seconds", 0)),
        "epochs": epochs_done + len(history.get("loss", [])),
        "num_params": int(model.count_params())})
  if not chief:
    return {"model_dir": run.path, "train_seconds": train_seconds,
            "wall_seconds": time.time() - start, "chief": False}

  if not os.path.isfile(run.best_model_path):
    checkpoint_lib.save_model(model, run.best_model_path)
  # Evaluate and export a fresh copy outside the strategy: running the
  # distributed model on the chief alone would wait for the other workers.
  model = tasks.load_model(run.best_model_path)
  if policy != "float32":
    # Serve in float32: TFLite and most servers lack bfloat16 kernels.
    recipe.set_precision(False)
    float_model = task.build_model(num_classes)
    float_model.set_weights(model.get_weights())
    model = float_model
    checkpoint_lib.save_model(model, run.best_model_path)
  result = {"model_dir": run.path, "train_seconds": train_seconds,
            "history": history}
  eval_split = test_split if len(test_split) else val_split
  if len(eval_split):
    report = evaluate_lib.evaluate_split(
        task, model, eval_split, class_names,
        val_split=val_split if eval_split is test_split else None,
        data_dir=folder.root, split_name="test" if eval_split is test_split
        else "val", run=run)
    evaluate_lib.report_run(run, report)
    result["report"] = report
    logger.info("test accuracy %.4f on %d %s", report["accuracy"],
                report["num_examples"],
                "clips" if task.kind == "clip" else "images")
  if config.export:
    from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
    # Measured without the single-thread timings (imgrec-export adds them).
    result["export"] = exporter.export_run(run, model=model, latency=False)
  result["wall_seconds"] = time.time() - start
  return result


def _fit_verbosity(verbose):
  """Keras' `verbose`: "auto" is the live bar on a terminal, else one line
  an epoch (a bar redrawn at every step fills a log file)."""
  if verbose != "auto":
    return verbose
  return 1 if sys.stdout.isatty() else 2
