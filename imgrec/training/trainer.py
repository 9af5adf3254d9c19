"""Trains the model of any registered task with `model.fit`, end to end.

`train(config)` resolves the run (`imgrec.tasks`: a TrainConfig's image or
clip classifier, a FaceTrainConfig's face embedder), reads and checks the
data, builds the model under the chosen tf.distribute strategy, fits it with
backups that make a rerun of the same command resume, evaluates the best
model on the test split and exports it, as the task asks. Everything lands
in the run folder (`imgrec.run_folder.RunFolder`).
"""

import contextlib
import dataclasses
import logging
import os
import sys
import time

import keras
import tensorflow as tf

from imgrec import tasks
from imgrec.evaluation import evaluate as evaluate_lib
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


def _callbacks(task, run, *, chief, monitor, best, append_history, extra):
  """The per-epoch callbacks before the backup, in the order they must run.

  `extra` (the task's own, e.g. a validation metric added to the logs)
  run before anything reads the epoch's logs.
  """
  config = task.config
  metric, mode = monitor
  out = []
  if getattr(config, "ema", False):
    # Validation and checkpoints see the averaged weights.
    out.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
  out += extra
  if getattr(config, "early_stopping", 0):
    out.append(keras.callbacks.EarlyStopping(
        monitor=metric, mode=mode, patience=config.early_stopping))
  if chief:
    out += [keras.callbacks.TensorBoard(run.logs_dir),
            keras.callbacks.CSVLogger(run.history_path,
                                      append=append_history)]
  # A later stage only replaces the best model of an earlier one with a
  # better one.
  out.append(checkpoint_lib.BestModelCheckpoint(
      run.best_model_path, monitor=metric, mode=mode,
      initial_value_threshold=best, part=task.saved_model))
  return out


def train(config):
  """Trains, evaluates and exports a model as `config` says.

  A rerun of the same command resumes the run in `model_dir`; a run with
  other settings or other data there is refused unless `config.overwrite`.
  A folder holding files imgrec did not write is refused even then. One
  process writes a model_dir at a time.

  Args:
    config: a TrainConfig (or a dict of its fields), or another task's own
      record (a FaceTrainConfig).

  Returns:
    A dict with model_dir, history and wall time, and what the task adds
    (the test report of a classifier; a face embedder's val_eer and
    people).

  Raises:
    ImgrecError: bad configuration or data, a model_dir that cannot be
      written, holds another run or files that are not imgrec's, or one in
      use by another process.
  """
  start = time.time()
  task = tasks.for_config(tasks.training_config(config))
  run = RunFolder(task.config.model_dir)
  strategy = distribute.get_strategy(task.config.strategy)
  if distribute.is_multi_worker(strategy):
    from imgrec.training import keras_internals  # pylint: disable=g-import-not-at-top
    keras_internals.patch_keras()
  chief = distribute.is_chief(strategy)
  # Other workers write only their own temporary folders; the chief holds
  # the run's lock.
  with (run.start(task.command, overwrite=task.config.overwrite) if chief
        else contextlib.nullcontext()):
    return _train(task, run, strategy, chief, start)


@dataclasses.dataclass
class _Prepared:
  """What `_prepare` sets up for fitting: data, models and where to resume."""
  folder: object
  num_classes: int
  train_ds: object
  val_ds: object
  model: object  # What is saved and served.
  fit_model: object  # What `fit` trains (the model, or a wrapper of it).
  stages: list
  restore: list
  monitor: tuple
  epochs_done: int
  resuming: bool
  policy: str


def _train(task, run, strategy, chief, start):
  """`train` inside the run's lock (a fresh run's folder already cleared)."""
  prepared = _prepare(task, run, strategy, chief)
  fitted = _fit(task, run, strategy, chief, prepared)
  if fitted.get("interrupted"):
    fitted["wall_seconds"] = time.time() - start
    return fitted
  return _finalize(task, run, chief, prepared, fitted["history"], start)


def _prepare(task, run, strategy, chief):
  """Checks the folder, reads and splits the data, builds the models."""
  config = task.config
  resuming = chief and not config.overwrite and run.check_resumable(
      config, neutral=task.resume_neutral)
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  stages = _stages(config, run)
  restore = _restore_points(run, config, stages, strategy, resuming)
  folder = task.build_folder(run.data_report_path if chief else None)
  splits = folder.splits
  logger.info("data %s: %d classes, %d train / %d val / %d test %s",
              folder.root, len(folder.class_names), len(splits["train"]),
              len(splits["val"]), len(splits.get("test", ())), task.noun)
  if chief and resuming:
    run.check_same_splits(splits)
  elif chief:
    run.write_config(task.config_to_record(folder))
    run.write_labels(folder.class_names)
    run.write_splits(folder.root, folder.class_names, splits,
                     dropped=getattr(folder, "dropped", ()))

  num_classes = task.num_outputs(folder)
  # Each worker reads its own shard of the files, batched per replica.
  train_ds = distribute.distribute_dataset(
      lambda ctx: task.build_inputs(splits["train"], num_classes=num_classes,
                                    training=True, input_context=ctx,
                                    pixels=folder.pixels),
      strategy)
  val_ds = task.validation_inputs(folder, num_classes)
  policy = recipe.set_precision(config.mixed_precision)
  with strategy.scope():
    model = task.build_model(num_classes)
    if config.init_from:
      finetune.load_body_weights(model, RunFolder(config.init_from))
    fit_model = task.training_model(model, num_classes)
  # A rerun resumes after the last epoch whose backup was committed; history
  # rows of later epochs (cut short by a kill, run again now) are dropped.
  epochs_done = max(int(m["epoch"]) if m else 0 for _, m in restore)
  if chief:
    run.truncate_history(epochs_done)
  return _Prepared(
      folder=folder, num_classes=num_classes, train_ds=train_ds,
      val_ds=val_ds, model=model, fit_model=fit_model, stages=stages,
      restore=restore, monitor=task.monitor(folder), epochs_done=epochs_done,
      resuming=resuming, policy=policy)


def _restore_points(run, config, stages, strategy, resuming):
  """Where each stage resumes from: (backup folder, metadata), or (None,
  None) to start it afresh.

  Also finishes or drops a backup commit that a kill cut short, before
  anything else is written. A resumed run with every epoch's history row
  and its best model but no backup (face embedders of earlier versions
  deleted theirs at the end) resumes after its last epoch: nothing to
  train again.
  """
  restore = [resume.restore_point(d, strategy) for *_, d in stages]
  if not resuming or any(metadata for _, metadata in restore):
    return restore
  history = run.read_history()
  if (history is not None and len(history.epochs) >= config.epochs
      and os.path.isfile(run.best_model_path)):
    return [(None, {"epoch": last}) for _, _, last, _, _ in stages]
  return restore


def _fit(task, run, strategy, chief, prepared):
  """Fits every stage; {"history"} or, on SIGTERM/SIGINT, {"interrupted"}."""
  config, p = task.config, prepared
  steps = recipe.steps_per_epoch(len(p.folder.splits["train"]),
                                 config.batch_size)
  class_weight = task.class_weight(p.folder.splits["train"], p.num_classes)
  history, best = {}, None
  for (name, first, last, lr_scale, backup_dir), (restore_dir, metadata) in (
      zip(p.stages, p.restore)):
    if name == "head":
      finetune.set_body_trainable(p.model, False)
    elif name == "fine_tune":
      finetune.set_body_trainable(p.model, True, config.unfreeze)
    initial_epoch = max(first, resume.resume_epoch(metadata, last))
    distribute.check_same_on_workers(
        strategy, initial_epoch, f"the epoch to resume from ({backup_dir})")
    with strategy.scope():
      p.fit_model.compile(
          optimizer=recipe.build_optimizer(config, steps, epochs=last - first,
                                           lr_scale=lr_scale),
          loss=task.build_losses(),
          metrics=task.build_metrics(p.num_classes),
          jit_compile={"auto": "auto", "true": True,
                       "false": False}[config.jit_compile])
    callbacks = _callbacks(
        task, run, chief=chief, monitor=p.monitor, best=best,
        append_history=p.epochs_done > 0 or first > 0,
        extra=task.build_callbacks(p.model, p.folder, run))
    checkpoint = callbacks[-1]
    # After the callbacks that write per-epoch outputs: an epoch counts as
    # done once its backup is committed, and by then its row and best.keras
    # exist.
    callbacks.append(resume.TrainingBackup(
        backup_dir, restore_dir=restore_dir, dataset=p.train_ds,
        state_callbacks=list(callbacks)))
    callbacks.append(signals.GracefulInterrupt())
    try:
      stage_history = p.fit_model.fit(
          p.train_ds, validation_data=p.val_ds, initial_epoch=initial_epoch,
          epochs=last, callbacks=callbacks,
          verbose=_fit_verbosity(config.verbose), class_weight=class_weight,
          shuffle=False)  # The dataset shuffles.
    except signals.TrainingInterrupted as e:
      logger.warning("%s", e)
      return {"model_dir": run.path, "interrupted": True, "message": str(e),
              "exit_code": e.exit_code, "chief": chief}
    for key, values in stage_history.history.items():
      history.setdefault(key, []).extend(float(v) for v in values)
    if abs(checkpoint.best) != float("inf"):
      best = checkpoint.best
  return {"history": history}


def _finalize(task, run, chief, prepared, history, start):
  """Records the run, reloads the best model, reports and exports it."""
  p = prepared
  train_seconds = time.time() - start
  if chief:
    # A resumed run adds this session's time to the earlier sessions'.
    before = (run.read_training() or {}) if p.resuming else {}
    run.write_training({
        "train_seconds": train_seconds + float(before.get("train_seconds", 0)),
        "epochs": p.epochs_done + len(history.get("loss", [])),
        "num_params": int(p.model.count_params())})
  if not chief:
    return {"model_dir": run.path, "train_seconds": train_seconds,
            "wall_seconds": time.time() - start, "chief": False}

  if not os.path.isfile(run.best_model_path):
    checkpoint_lib.save_model(p.model, run.best_model_path)
  # Evaluate and export a fresh copy outside the strategy: running the
  # distributed model on the chief alone would wait for the other workers.
  model = tasks.load_model(run.best_model_path)
  if p.policy != "float32":
    # Serve in float32: TFLite and most servers lack bfloat16 kernels.
    recipe.set_precision(False)
    float_model = task.build_model(p.num_classes)
    float_model.set_weights(model.get_weights())
    model = float_model
    checkpoint_lib.save_model(model, run.best_model_path)
  result = {"model_dir": run.path, "train_seconds": train_seconds,
            "history": history}
  result.update(task.finish(run, model, p.folder) or {})
  chosen = task.report_split(p.folder)
  if chosen is not None:
    split_name, eval_split = chosen
    val_split = p.folder.splits["val"]
    report = evaluate_lib.evaluate_split(
        task, model, eval_split, p.folder.class_names,
        val_split=val_split if split_name == "test" else None,
        data_dir=p.folder.root, split_name=split_name, run=run)
    evaluate_lib.report_run(run, report, model=model)
    result["report"] = report
    result["summary"] = task.summary_line(report)
    logger.info("%s", result["summary"])
  if task.exports_after_training:
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
