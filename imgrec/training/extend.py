"""New classes without retraining: imprinting them into a finished run's head.

    imgrec-extend --model_dir=runs/a --add_dir=new_classes --out_dir=runs/a+

A new class's weights are its prototype (the unit mean of its training
images' unit embeddings, Qi et al. 2018), appended to the head beside the
old classes' weights, which stay as they were. The run's head is linear
(`logits = embedding @ kernel + bias`), so an imprinted class scores
`scale * (embedding . prototype) + offset`: `scale` is the least-squares
slope of the old classes' own logits on their images against their
prototypes (the new logits are on the old ones' scale), and `offset` the
largest that lets the new classes take at most `--max_old_drop` points of
the old classes' validation images (old-class accuracy is what a deployed
model must not lose). By default (`--new_weights=fitted`) the new columns
then fit the embeddings of every training image: class-balanced softmax
cross-entropy, the old columns fixed (a convex problem in the new columns),
a fixed budget of full-batch steps from the imprint, and the bias held to
`--max_old_drop` again; ten images of a class imprint a direction, the fit
also learns where the old classes lie around it. The model stays a plain
registry classifier
(one softmax `Dense`), so that every consumer of a run takes it: the open
set, `Classifier`, `imgrec-evaluate`, `imgrec-export`, MediaPipe.
`--finetune_head_epochs` then trains the head on the embeddings of every
class's training images (the backbone frozen, its embeddings computed once).

The extended run is a run folder of its own (`--out_dir`, marked as
imgrec-extend's): the old run's config, the labels old then new, the old
splits and the new classes' (NEW's split folders, else split as imgrec-train
splits), its open set, `extend.json` (what was added, the fit and the
seconds it took) and `report.json`, whose `"old_classes"` and
`"new_classes"` sections give the test accuracy on each side (and the old
model's on the old classes, before).
"""

import hashlib
import logging
import os
import time

import numpy as np

from imgrec import fileio
from imgrec import tasks
from imgrec.config import ExtendConfig
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.evaluation import evaluate as evaluate_lib
from imgrec.metrics import open_set as open_set_metrics
from imgrec.run_folder import EXTEND_COMMAND
from imgrec.run_folder import RunFolder
from imgrec.tasks import open_set

logger = logging.getLogger("imgrec")

# Images a new class needs at the least (before the val/test splits are
# carved from them): one prototype from fewer is a guess.
MIN_NEW_IMAGES = 5
# --new_weights=fitted: full-batch Adam steps and rate that fit the new
# columns from their imprint (imprint_benchmark.py: 200 steps of 1e-2 take
# about a second of CPU on 6,000 images).
FIT_STEPS = 200
FIT_LEARNING_RATE = 1e-2


def _same(a, b):
  try:
    return os.path.samefile(a, b)
  except OSError:
    return os.path.realpath(a) == os.path.realpath(b)


def _check_folders(config):
  """One-line refusals before anything is read."""
  if _same(config.model_dir, config.out_dir):
    raise ImgrecError(f"--out_dir={config.out_dir} is --model_dir: the "
                      "extended run is a run of its own; pass a new folder.")
  if fileio.is_inside(config.out_dir, config.add_dir):
    raise ImgrecError(f"--out_dir={config.out_dir} is inside --add_dir="
                      f"{config.add_dir}, and imgrec never writes into data. "
                      "Pass a folder outside it.")
  if os.path.exists(config.out_dir) and not os.path.isdir(config.out_dir):
    raise ImgrecError(f"--out_dir={config.out_dir} is not a folder: pass a "
                      "new folder for the extended run.")
  if not os.path.isdir(config.add_dir):
    raise ImgrecError(f"--add_dir={config.add_dir} is not a folder: pass a "
                      "folder of class folders (NEW/<class>/*).")


def _source(model_dir):
  """(RunFolder, task, class names, model, head) of the run to extend."""
  run = RunFolder(model_dir)
  task = tasks.for_run(run)
  if task.name != "image_classification":
    raise ImgrecError(f"{model_dir} is a {task.name} run; imgrec-extend adds "
                      "classes to single-label image classifiers.")
  class_names = run.read_labels()
  model = tasks.load_model(run.require_best_model())
  from imgrec import models  # pylint: disable=g-import-not-at-top
  try:
    head = models.classifier_head(model)
  except ValueError as e:
    raise ImgrecError(f"{model_dir} has no usable embedding to imprint "
                      f"classes on: {e}") from None
  return run, task, class_names, model, head


def _file_key(path):
  try:
    with open(path, "rb") as f:
      return os.path.getsize(path), hashlib.sha256(f.read()).hexdigest()
  except OSError:
    return None


def _check_not_old(new_paths, run, class_names):
  """Refuses images that are the run's own (the same bytes): a new class
  made of an existing class's images."""
  sizes = {}
  for path in new_paths:
    try:
      sizes.setdefault(os.path.getsize(path), []).append(path)
    except OSError:
      continue
  clashes, keys = [], {}  # keys: each new file's, hashed once.
  for split in ("train", "val", "test"):
    paths, labels = run.read_split(split)
    for path, label in zip(paths, labels):
      try:
        candidates = sizes.get(os.path.getsize(path))
      except OSError:
        continue
      if candidates:
        key = _file_key(path)
        for p in candidates:
          if p not in keys:
            keys[p] = _file_key(p)
        clashes += [(p, class_names[label]) for p in candidates
                    if keys[p] == key]
      if len(clashes) >= 3:
        break
  if clashes:
    listed = ", ".join(f"{p} (= an image of {c!r})" for p, c in clashes[:3])
    raise ImgrecError(f"--add_dir holds images of the run's own data: "
                      f"{listed}. A new class needs images of its own; "
                      "remove these.")


def _new_classes(task, config, run, class_names):
  """The new classes' scanned, split folder (labels 0.. in its own order).

  Raises:
    ImgrecError: a name of an old class, too few images, the run's images.
  """
  found = folder_lib.find_images(
      config.add_dir, min_classes=1, carve=False,
      allow_outside=task.config.allow_outside)  # As the run read its data.
  taken = {n.casefold(): n for n in class_names}
  clash = [n for n in found.class_names if n.casefold() in taken]
  if clash:
    raise ImgrecError(
        f"--add_dir has classes the run knows already: "
        f"{', '.join(repr(n) for n in clash)}. imgrec-extend adds new "
        "classes; to improve a known one, train again with its images.")
  counts = found.summary()
  total = {n: sum(counts[s][n] for s in counts) for n in found.class_names}
  few = {n: c for n, c in total.items() if c < MIN_NEW_IMAGES}
  if few:
    raise ImgrecError(
        f"New class(es) with too few images: "
        f"{', '.join(f'{n} ({c})' for n, c in sorted(few.items()))}; a new "
        f"class needs at least {MIN_NEW_IMAGES} images.")
  _check_not_old([p for s in found.splits.values() for p in s.paths], run,
                 class_names)
  found = task._scan(found, max_bad_fraction=task.config.max_bad_fraction)  # pylint: disable=protected-access
  config_ = task.config
  return folder_lib.carve_splits(found, config_.val_split, config_.test_split,
                                 config_.seed)


def _fit_scale(embedded, labels, prototypes):
  """The scale of imprinted logits: the least-squares slope of each old
  image's own-class logit on its embedding's dot product with its class's
  prototype."""
  labels = np.asarray(labels, np.int64)
  x = np.einsum("nd,nd->n", embedded.features.astype(np.float64),
                prototypes[labels].astype(np.float64))
  z = embedded.logits[np.arange(len(labels)), labels]
  design = np.stack([x, np.ones_like(x)], axis=1)
  (scale, _), *_ = np.linalg.lstsq(design, z, rcond=None)
  return float(scale)


def _offset(held, kernel, bias, max_old_drop):
  """How far the new classes' biases (`bias`, with their `kernel` columns)
  may rise: the largest shift that takes at most `max_old_drop` points of
  the old classes' `held` images (an Embedded of the validation split) away
  from them, i.e. where a new class's logit would first beat the best old
  logit on more of them."""
  need = held.logits.max(axis=1) - (
      held.features.astype(np.float64) @ kernel + bias).max(axis=1)
  need = np.sort(need)
  allowed = int(np.floor(max_old_drop / 100.0 * len(need) + 1e-9))
  return float(np.nextafter(need[allowed], -np.inf)) if allowed < len(
      need) else float(need[-1])


def _fit_new_columns(parts, labels, kernel, bias, steps=FIT_STEPS,
                     learning_rate=FIT_LEARNING_RATE):
  """The new classes' columns (`kernel` [D, N], `bias` [N], from their
  imprint) fitted on the embedded training `parts` (old then new, with the
  old head's logits) and their `labels` over old + new classes: softmax
  cross-entropy, each class weighed inversely to its images (ten images of
  a new class weigh as much as thousands of an old one), the old columns
  fixed. The loss is convex in the new columns; full-batch Adam, `steps`
  steps from the imprint."""
  features = np.concatenate([p.features for p in parts]).astype(np.float64)
  old_logits = np.concatenate([p.logits for p in parts]).astype(np.float64)
  labels = np.asarray(labels, np.int64)
  num_old = old_logits.shape[1]
  classes = num_old + kernel.shape[1]
  counts = np.bincount(labels, minlength=classes).astype(np.float64)
  weights = (1.0 / (classes * np.maximum(counts, 1)))[labels]
  target = np.zeros((len(labels), classes))
  target[np.arange(len(labels)), labels] = 1.0
  params = [kernel.astype(np.float64), bias.astype(np.float64)]
  moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
  for step in range(1, steps + 1):
    logits = np.concatenate(
        [old_logits, features @ params[0] + params[1]], axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    error = ((probabilities - target) * weights[:, None])[:, num_old:]
    for param, grad, moment in zip(
        params, (features.T @ error, error.sum(axis=0)), moments):
      moment[0] = 0.9 * moment[0] + 0.1 * grad
      moment[1] = 0.999 * moment[1] + 0.001 * grad * grad
      param -= learning_rate * (moment[0] / (1 - 0.9 ** step)) / (
          np.sqrt(moment[1] / (1 - 0.999 ** step)) + 1e-8)
  return params


def _extended_model(model, head, kernel, bias):
  """The run's model with a head of `kernel` [D, C'] and `bias` [C']: the
  same layers up to the embedding (shared), a new softmax Dense."""
  import keras  # pylint: disable=g-import-not-at-top
  from imgrec.models import registry  # pylint: disable=g-import-not-at-top
  embedder = head[0]
  dense = keras.layers.Dense(kernel.shape[1], activation="softmax",
                             dtype="float32", name=registry.HEAD)
  out = dense(embedder.output)
  dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
  return keras.Model(embedder.input, out, name=model.name)


def _finetune_head(kernel, bias, features, labels, epochs, seed):
  """The head trained `epochs` on fixed embeddings (softmax cross-entropy,
  Adam, classes weighed inversely to their images), from the imprinted
  weights."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((kernel.shape[0],))
  dense = keras.layers.Dense(kernel.shape[1], activation="softmax")
  probe = keras.Model(inputs, dense(inputs))
  dense.set_weights([kernel, bias])
  probe.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss="sparse_categorical_crossentropy")
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=kernel.shape[1])
  # Balanced: a few images of a new class weigh as much as thousands old.
  weights = {c: len(labels) / (len(counts) * n)
             for c, n in enumerate(counts) if n}
  probe.fit(features, labels, epochs=epochs, batch_size=64, verbose=0,
            shuffle=True, class_weight=weights)
  kernel, bias = dense.get_weights()
  return kernel, bias


def _under_head(parts, kernel, bias):
  """Embedded splits, joined, with the logits of the head `kernel`, `bias`."""
  features = np.concatenate([p.features for p in parts])
  return open_set.Embedded(features,
                           features.astype(np.float64) @ kernel + bias)


def _merged(old, new, offset):
  return folder_lib.Split(list(old.paths) + list(new.paths),
                          list(old.labels) + [l + offset for l in new.labels])


def _accuracy(probabilities, labels, rows):
  if not len(rows):
    return None
  labels = np.asarray(labels)[rows]
  return float(np.mean(np.argmax(probabilities[rows], axis=1) == labels))


def extend(config):
  """Adds the classes of `config.add_dir` to the run `config.model_dir` as
  the new run `config.out_dir` (see the module docstring).

  Returns:
    {"model_dir", "new_classes", "report", "seconds": {"embed", "imprint",
    "finetune"}, "export" (with --export)}.

  Raises:
    ImgrecError: bad folders, a run that cannot be extended, new classes
      that clash with old ones, have too few images or are the run's own
      images, an out_dir that is not new or imgrec-extend's.
  """
  config = ExtendConfig.coerce(config, "extend").validate()
  _check_folders(config)
  out = RunFolder(config.out_dir)
  out.check_ours(EXTEND_COMMAND, config.overwrite)
  run, task, old_names, model, head = _source(config.model_dir)
  new = _new_classes(task, config, run, old_names)
  names = list(old_names) + list(new.class_names)
  old = {s: folder_lib.Split(*run.read_split(s)) for s in
         ("train", "val", "test")}
  start = time.perf_counter()
  old_train = open_set.embed(task, model, old["train"])
  new_train = open_set.embed(task, model, new.splits["train"])
  old_val = open_set.embed(task, model, old["val"])
  held = old_val if len(old["val"]) else old_train
  embedded = time.perf_counter()
  _, kernel, bias = head
  old_prototypes = open_set_metrics.prototypes(
      old_train.features, old["train"].labels, len(old_names))
  scale = _fit_scale(old_train, old["train"].labels, old_prototypes)
  new_prototypes = open_set_metrics.prototypes(
      new_train.features, new.splits["train"].labels, len(new.class_names))
  new_kernel = scale * new_prototypes.T.astype(np.float64)
  new_bias = np.zeros(len(new.class_names))
  new_bias += _offset(held, new_kernel, new_bias, config.max_old_drop)
  offset = float(new_bias[0])
  imprinted = time.perf_counter()
  if config.new_weights == "fitted":
    new_kernel, new_bias = _fit_new_columns(
        [old_train, new_train], list(old["train"].labels) +
        [l + len(old_names) for l in new.splits["train"].labels],
        new_kernel, new_bias)
    # The fit may not take more of the old classes than the imprint may.
    new_bias += min(0.0, _offset(held, new_kernel, new_bias,
                                 config.max_old_drop))
  fitted = time.perf_counter()
  kernel = np.concatenate([kernel, new_kernel.astype(np.float32)], axis=1)
  bias = np.concatenate([bias, new_bias.astype(np.float32)])
  if config.finetune_head_epochs:
    kernel, bias = _finetune_head(
        kernel, bias, np.concatenate([old_train.features, new_train.features]),
        list(old["train"].labels) + [l + len(old_names)
                                     for l in new.splits["train"].labels],
        config.finetune_head_epochs, task.config.seed)
  extended = _extended_model(model, head, kernel, bias)
  finetuned = time.perf_counter()
  splits = {s: _merged(old[s], new.splits.get(s, folder_lib.Split([], [])),
                       len(old_names)) for s in ("train", "val", "test")}
  seconds = {"embed": embedded - start, "imprint": imprinted - embedded,
             "fit": fitted - imprinted, "finetune": finetuned - fitted}
  with out.start(EXTEND_COMMAND, overwrite=config.overwrite):
    out.remove_export_report()
    run_config = task.config.replace(model_dir=out.path, export=False)
    out.write_config(run_config)
    out.write_labels(names)
    out.write_splits(run.read_splits_root(), names, splits)
    out.write_training({"train_seconds": sum(seconds.values()),
                        "epochs": config.finetune_head_epochs,
                        "num_params": int(extended.count_params())})
    with fileio.atomic_path(out.best_model_path) as tmp:
      extended.save(tmp)
    fileio.write_json(out.extend_path, {
        "from": os.path.abspath(config.model_dir),
        "add_dir": os.path.abspath(config.add_dir),
        "old_classes": list(old_names), "new_classes": list(new.class_names),
        "new_images": {s: len(new.splits.get(s, ())) for s in
                       ("train", "val", "test")},
        "scale": scale, "offset": offset,
        "new_weights": config.new_weights,
        "max_old_drop": config.max_old_drop,
        "offset_chosen_on": "validation split" if len(old["val"]) else
                            "training split (the run has no validation split)",
        "finetune_head_epochs": config.finetune_head_epochs,
        "seconds": seconds}, indent=2)
    new_task = tasks.for_run(out)
    # The extended model embeds as the run's did (the same layers): its
    # open set from the embeddings above, under the new head.
    new_val = open_set.embed(task, model, new.splits.get(
        "val", folder_lib.Split([], [])))
    open_set.write(out, open_set.from_embeddings(
        new_task.config, len(names),
        _under_head([old_train, new_train], kernel, bias),
        splits["train"].labels,
        _under_head([old_val, new_val], kernel, bias)
        if len(splits["val"]) else None))
    report = _report(new_task, out, model, extended, splits, old, names,
                     len(old_names))
  result = {"model_dir": out.path, "new_classes": list(new.class_names),
            "report": report, "seconds": seconds}
  if config.export:
    from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
    result["export"] = exporter.export_run(out, model=extended,
                                           latency=False)
  return result


def _report(task, out, before, model, splits, old, names, num_old):
  """report.json of the extended run: the usual report of its test split
  (else validation), with "old_classes" and "new_classes"."""
  split_name = "test" if len(splits["test"]) else "val"
  split = splits[split_name]
  report = evaluate_lib.evaluate_split(
      task, model, split, names,
      val_split=splits["val"] if split_name == "test" else None,
      data_dir=out.read_splits_root(), split_name=split_name, run=out)
  # From the report's own counts (rows: true class; columns: predicted).
  counts = np.asarray(report["confusion_matrix"], np.int64)
  old_total, new_total = counts[:num_old].sum(), counts[num_old:].sum()
  earlier = old[split_name]
  before_accuracy = None
  if len(earlier):
    before_p = task.predict_views(before, earlier, num_old)[0]
    before_accuracy = _accuracy(before_p, earlier.labels,
                                np.arange(len(earlier)))
  report["old_classes"] = {
      "classes": names[:num_old], "num_examples": int(old_total),
      "accuracy": (float(np.trace(counts[:num_old, :num_old]) / old_total)
                   if old_total else None),
      "accuracy_before": before_accuracy,
      "called_new": (float(counts[:num_old, num_old:].sum() / old_total)
                     if old_total else None)}
  report["new_classes"] = {
      "classes": names[num_old:], "num_examples": int(new_total),
      "accuracy": (float(np.trace(counts[num_old:, num_old:]) / new_total)
                   if new_total else None)}
  evaluate_lib.report_run(out, report)
  return report
