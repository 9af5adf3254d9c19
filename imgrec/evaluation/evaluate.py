"""Evaluates trained models: one run or an ensemble, on its own split or other folders.

    evaluate(EvaluateConfig(model_dir="runs/a"))                 # test split
    evaluate(EvaluateConfig(model_dir="runs/a", data_dir="x,y"))  # 2 folders
    evaluate(EvaluateConfig(model_dir="runs/a,runs/b", tta="flip",
                            report_dir="runs/ab"))

Each dataset gets a section (`report.classification_report`: metrics,
calibration, most confident mistakes) with test-time augmentation and
ensemble figures against their baselines; the report's top level is the
first section. Pictures, report.html and TensorBoard images come with it.
"""

import logging
import os
import sys
import time

import numpy as np

from imgrec import tasks
from imgrec.config import EvaluateConfig
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.evaluation import report as report_lib
from imgrec.metrics import multilabel as multilabel_metrics
from imgrec.run_folder import ReportFolder
from imgrec.run_folder import RunFolder

logger = logging.getLogger(__name__)

# A progress bar shows for splits of more batches than this (on a terminal).
_PROGRESS_MIN_BATCHES = 20
_LATENCY_RUNS = 30
_CAPTIONS = {"confusion_matrix": "Confusion matrix",
             "reliability": "Reliability diagram",
             "mistakes": "Most confident mistakes",
             "pr_curves": "Precision-recall curves (the classes of lowest AP)",
             "label_cooccurrence": "Label co-occurrence (true vs predicted)",
             "curves": "Training curves"}


class Member:
  """One trained run, predicting in the class order of the evaluation.

  Args:
    run: its RunFolder.
    task: its ImageClassificationTask.
    model: its Keras model.
    class_names: the run's class names, in its own label order.
  """

  def __init__(self, run, task, model, class_names):
    self.run, self.task, self.model = run, task, model
    self.class_names = list(class_names)
    self.order = None  # Column permutation into the evaluation's order.

  @classmethod
  def load(cls, model_dir, batch_size=None):
    run = RunFolder(model_dir)
    overrides = {"batch_size": batch_size} if batch_size else {}
    task = tasks.for_run(run, **overrides)
    task.check_command("evaluate")
    class_names = run.read_labels()
    return cls(run, task, tasks.load_model(run.require_best_model()),
               class_names)

  @property
  def name(self):
    return self.run.path

  def align(self, class_names):
    """Sets the evaluation's class order; refuses other class sets."""
    if sorted(self.class_names) != sorted(class_names):
      raise ImgrecError(
          f"{self.run.path} was trained on other classes than "
          f"{', '.join(class_names[:10])}{' ...' if len(class_names) > 10 else ''}"
          ": an ensemble's members must share their class names.")
    index = {c: i for i, c in enumerate(self.class_names)}
    self.order = [index[c] for c in class_names]

  def predict(self, split, tta, what):
    """[V, N, C] probabilities of every TTA view, in the evaluation's order."""
    batches = -(-len(split) // self.task.config.batch_size)
    with _progress(f"{what}: {os.path.basename(self.run.path.rstrip('/'))}",
                   batches) as step:
      views = self.task.predict_views(self.model, split,
                                      len(self.class_names), tta,
                                      progress=step)
    return views[:, :, self.order] if self.order else views

  def split_of(self, name):
    """This run's own split `name` as training used it, or None if empty."""
    paths, labels = self.run.read_split(name)
    if not paths:
      return None
    if self.task.multilabel:  # A 0/1 row: the names of the labels held.
      return paths, [tuple(c for c, v in zip(self.class_names, row) if v)
                     for row in labels]
    return paths, [self.class_names[l] for l in labels]


class _progress:  # pylint: disable=invalid-name
  """A tqdm bar on a terminal's stderr for long splits; a no-op otherwise."""

  def __init__(self, what, total):
    self.bar = None
    if total > _PROGRESS_MIN_BATCHES and sys.stderr.isatty():
      try:
        import tqdm  # pylint: disable=g-import-not-at-top
      except ImportError:
        return
      self.bar = tqdm.tqdm(total=total, desc=what, unit="batch", leave=False,
                           file=sys.stderr)

  def __enter__(self):
    if self.bar is None:
      return None
    return lambda done, total: self.bar.update(done - self.bar.n)

  def __exit__(self, *exc):
    if self.bar is not None:
      self.bar.close()


def shared_split(members, name):
  """(paths, class names) of the split `name` that every member held out the
  same way, or None when it is empty.

  Raises:
    ImgrecError: the members' own splits differ (an image one member holds
      out may be another's training image).
  """
  splits = [m.split_of(name) for m in members]
  first = splits[0]
  for m, s in zip(members[1:], splits[1:]):
    if s != first:
      raise ImgrecError(
          f"{members[0].run.path} and {m.run.path} have different {name} "
          "splits (other data, seed or split fractions), so one member may "
          f"have trained on another's {name} images. Evaluate them on "
          "images none of them saw: --data_dir=<folder>.")
  return first


def to_split(paths_and_names, class_names, multilabel=False):
  """(paths, class names) -> folder.Split in `class_names` order (with
  `multilabel`, each name a tuple of names and each label a 0/1 row)."""
  index = {c: i for i, c in enumerate(class_names)}
  paths, names = paths_and_names
  if multilabel:
    return folder_lib.Split(list(paths), [
        [int(c in held) for c in class_names] for held in names])
  return folder_lib.Split(list(paths), [index[c] for c in names])


def _combine(probabilities, weights):
  return sum(w * p for w, p in zip(weights, probabilities))


def _accuracy(labels, probabilities):
  if not len(labels):
    return 0.0
  return float(np.mean(np.asarray(probabilities).argmax(axis=1)
                       == np.asarray(labels)))


def _macro_f1(labels, probabilities, class_names):
  return report_lib.classification_report(labels, probabilities,
                                          class_names)["macro_f1"]


def measure_latency(members, runs=_LATENCY_RUNS):
  """Median and p90 ms of one input (image or clip) through every member."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  calls = []
  for m in members:
    shape = m.model.input_shape
    shape = shape[0] if isinstance(shape, list) else shape
    image = tf.random.uniform((1, *shape[1:]), 0, 255)
    calls.append((tf.function(m.model), image))
  times = []
  for i in range(runs + 5):
    start = time.perf_counter()
    for call, image in calls:
      call(image, training=False).numpy()
    if i >= 5:  # Warm-up: tracing and first allocations.
      times.append((time.perf_counter() - start) * 1e3)
  return {"median": float(np.median(times)),
          "p90": float(np.percentile(times, 90)), "runtime": "keras",
          "batch": 1}


def validation_accuracies(members, tta=()):
  """Each member's accuracy on its own validation split."""
  accuracies = []
  for m in members:
    own = m.split_of("val")
    if own is None:
      raise ImgrecError(f"{m.run.path} has no validation split: use "
                        "--ensemble_weights=equal.")
    split = to_split(own, members[0].class_names)
    views = m.predict(split, tta, "validation")
    accuracies.append(_accuracy(split.labels, views.mean(axis=0)))
  return accuracies


def ensemble_weights(members, how, accuracies=None):
  """Member weights summing to 1: "equal", or "val_accuracy" (each member's
  accuracy on its own validation split, measured unless given)."""
  if how == "equal":
    return [1.0 / len(members)] * len(members)
  if how != "val_accuracy":
    raise ImgrecError(f"Unknown ensemble weighting {how!r}: equal or "
                      "val_accuracy.")
  if accuracies is None:
    accuracies = validation_accuracies(members)
  total = sum(accuracies)
  return [a / total if total else 1.0 / len(members) for a in accuracies]


class _Evaluation:
  """One model or ensemble, evaluated the same way on every dataset.

  Args:
    members: the Members (one: a single model).
    tta: TTA modes.
    weights: "equal" or "val_accuracy" (each member's own validation split).
    top_k: the report's k.
    val_split: a validation split none of the members trained on, in the
      first member's class order, for the calibration temperature; or None.
  """

  def __init__(self, members, *, tta=(), weights="equal", top_k=5,
               val_split=None):
    self.members = members
    self.class_names = members[0].class_names
    for m in members:
      m.align(self.class_names)
    self.tta, self.top_k, self.weighting = tuple(tta), top_k, weights
    self.multilabel = members[0].task.multilabel
    if self.multilabel and weights != "equal":
      raise ImgrecError("--ensemble_weights=val_accuracy weighs single-label "
                        "runs by accuracy: a multilabel ensemble takes "
                        "--ensemble_weights=equal (the mean of the sigmoid "
                        "scores).")
    self.member_val_accuracy = [None] * len(members)
    self.weights = [1.0 / len(members)] * len(members)
    if weights == "val_accuracy":
      self.member_val_accuracy = validation_accuracies(members, self.tta)
      self.weights = ensemble_weights(members, weights,
                                      self.member_val_accuracy)
    self.val = None
    # A single multilabel run keeps its own thresholds: no validation pass.
    if (val_split is not None and len(val_split)
        and not (self.multilabel and len(members) == 1)):
      probabilities = _combine(
          [m.predict(val_split, self.tta, "validation").mean(axis=0)
           for m in self.members], self.weights)
      self.val = (val_split.labels, probabilities)
    if self.multilabel:
      self.thresholds, self.threshold_source = self._thresholds()

  def _thresholds(self):
    """(thresholds, source): the run's thresholds.json; an ensemble's tuned
    on the validation split its members share (F1-best per label, as
    training does), else the mean of its members' thresholds."""
    own = [m.task.read_thresholds(m.run, self.class_names)
           for m in self.members]
    if len(self.members) == 1:
      return own[0]
    if self.val is not None:
      labels, scores = self.val
      return (multilabel_metrics.best_f1_thresholds(labels, scores).tolist(),
              "validation F1 of the ensemble")
    return (np.mean([t for t, _ in own], axis=0).tolist(),
            "mean of the members' thresholds")

  def _label_set_figures(self, labels, scores):
    """{"map", "micro_f1"} of label sets at the evaluation's thresholds."""
    summary = multilabel_metrics.summary(labels, scores, self.thresholds,
                                         self.class_names)
    return {"map": summary["map"], "micro_f1": summary["micro_f1"]}

  def _label_set_section(self, split, split_name, views):
    """The report section of label sets: `label_set_report` of the run's
    task, with TTA and ensemble figures (mAP, micro F1) against their
    baselines."""
    member_scores = [v.mean(axis=0) for v in views]
    scores = _combine(member_scores, self.weights)
    section = self.members[0].task.label_set_report(
        split_name, split.labels, scores, self.thresholds, self.class_names,
        self.threshold_source)
    figures = {"map": section["multilabel"]["map"],
               "micro_f1": section["multilabel"]["micro_f1"]}
    if self.tta:
      without = self._label_set_figures(
          split.labels, _combine([v[0] for v in views], self.weights))
      section["tta"] = {"mode": ",".join(self.tta),
                        "views": int(views[0].shape[0]), **figures,
                        "map_without": without["map"],
                        "micro_f1_without": without["micro_f1"]}
    if len(self.members) > 1:
      section["ensemble"] = {
          "weights": self.weighting, **figures,
          "members": [{"model_dir": m.run.path, "model": m.task.config.model,
                       "weight": w,
                       **self._label_set_figures(split.labels, p)}
                      for m, w, p in zip(self.members, self.weights,
                                         member_scores)]}
    return section


  def section(self, split, data_dir, split_name, unknown=None):
    """The report section of one dataset."""
    views = [m.predict(split, self.tta, f"{split_name} of {data_dir}")
             for m in self.members]
    if self.multilabel:
      section = self._label_set_section(split, split_name, views)
      held = np.asarray(split.labels).reshape(-1, len(self.class_names))
      section["data"] = {
          "data_dir": data_dir, "split": split_name,
          "missing_classes": [c for c, n in zip(self.class_names,
                                                held.sum(axis=0)) if not n],
          "unknown_classes": dict(unknown or {})}
      return section
    labels = split.labels
    member_probs = [v.mean(axis=0) for v in views]
    probabilities = _combine(member_probs, self.weights)
    val_labels, val_probs = self.val or (None, None)
    section = report_lib.classification_report(
        labels, probabilities, self.class_names, k=self.top_k,
        paths=split.paths, val_labels=val_labels, val_probabilities=val_probs)
    present = set(labels)
    section["data"] = {
        "data_dir": data_dir, "split": split_name,
        "missing_classes": [c for i, c in enumerate(self.class_names)
                            if i not in present],
        "unknown_classes": dict(unknown or {})}
    if self.tta:
      plain = _combine([v[0] for v in views], self.weights)
      section["tta"] = {
          "mode": ",".join(self.tta), "views": int(views[0].shape[0]),
          "accuracy": section["accuracy"],
          "accuracy_without": _accuracy(labels, plain),
          "macro_f1": section["macro_f1"],
          "macro_f1_without": _macro_f1(labels, plain, self.class_names)}
    if len(self.members) > 1:
      section["ensemble"] = {
          "weights": self.weighting,
          "accuracy": section["accuracy"], "macro_f1": section["macro_f1"],
          "members": [{
              "model_dir": m.run.path, "model": m.task.config.model,
              "weight": w, "val_accuracy": va,
              "accuracy": _accuracy(labels, p),
              "macro_f1": _macro_f1(labels, p, self.class_names)}
                      for m, w, va, p in zip(self.members, self.weights,
                                             self.member_val_accuracy,
                                             member_probs)]}
    return section


def _comparison(sections):
  """One row a dataset: accuracy, macro F1 and ECE, or for label sets mAP,
  micro and macro F1."""
  rows = []
  for s in sections:
    if "multilabel" in s:
      figures = {k: s["multilabel"][k] for k in ("map", "micro_f1",
                                                 "macro_f1")}
    else:
      figures = {k: s[k] for k in ("accuracy", "macro_f1", "ece")}
    rows.append({"data_dir": s["data"]["data_dir"],
                 "split": s["data"]["split"],
                 "num_examples": s["num_examples"], **figures,
                 "missing_classes": s["data"]["missing_classes"],
                 "unknown_classes": s["data"]["unknown_classes"]})
  return rows


def _assemble(sections, latency=None):
  """The report: the first section at the top, every section under
  "datasets" and a comparison table when there are several."""
  report = dict(sections[0])
  if latency:
    report["latency_ms"] = latency
  if len(sections) > 1:
    report["datasets"] = sections
    report["comparison"] = _comparison(sections)
  return report


def format_text(report):
  """report.txt: each section, then the TTA, ensemble and comparison tables."""
  sections = report.get("datasets") or [report]
  parts = []
  for s in sections:
    data = s.get("data") or {}
    head = f"== {data.get('data_dir', '')} ({data.get('split', '')}) =="
    if "multilabel" in s:
      parts.append("\n".join([head, report_lib.format_label_sets(s).rstrip(
          "\n")]))
      continue
    text = [head, report_lib.format_report(s).rstrip("\n")]
    if data.get("missing_classes"):
      text.append(f"classes with no images here: "
                  f"{', '.join(data['missing_classes'])}")
    if data.get("unknown_classes"):
      text.append("left out, classes the model does not know: " + ", ".join(
          f"{c} ({n})" for c, n in data["unknown_classes"].items()))
    if "tta" in s:
      t = s["tta"]
      text.append(f"test-time augmentation {t['mode']} ({t['views']} views):"
                  f" accuracy {t['accuracy']:.4f} vs {t['accuracy_without']:.4f}"
                  f" without; macro F1 {t['macro_f1']:.4f} vs "
                  f"{t['macro_f1_without']:.4f}")
    if "ensemble" in s:
      e = s["ensemble"]
      text += ["", f"ensemble ({e['weights']} weights)   accuracy  macro F1  "
               "weight"]
      for m in e["members"]:
        text.append(f"  {m['model_dir']}  {m['accuracy']:.4f}  "
                    f"{m['macro_f1']:.4f}  {m['weight']:.3f}")
      text.append(f"  ensemble  {e['accuracy']:.4f}  {e['macro_f1']:.4f}")
    parts.append("\n".join(text))
  if "comparison" in report:
    parts.append("comparison\n" + "\n".join(_comparison_lines(
        report["comparison"])))
  if "open_set" in report:
    parts.append(_open_set_lines(report["open_set"]))
  if report.get("latency_ms"):
    lat = report["latency_ms"]
    parts.append(f"latency, one image (Keras): median {lat['median']:.2f} ms,"
                 f" p90 {lat['p90']:.2f} ms")
  return "\n\n".join(parts) + "\n"


def _open_set_lines(o):
  """report.txt's open-set table: every score, the run's marked."""
  lines = [f"open set: {o['known']} known vs {o['unknown']} unknown images "
           f"({o['unknown_dir']})", "  score        AUROC   FPR95"]
  for kind, f in o["scores"].items():
    mark = "  (the run's)" if kind == o["score"] else ""
    lines.append(f"  {kind:<12} {f['auroc']:.4f}  {f['fpr95']:.4f}{mark}")
  lines.append(f"  at the run's threshold {o['threshold']:.4g} "
               f"({o['source']}): known kept {o['known_recall']:.4f}, "
               f"unknown rejected {o['unknown_rejected']:.4f}")
  return "\n".join(lines)


def _comparison_lines(rows):
  """report.txt's comparison table (mAP columns for label sets)."""
  if rows and "map" in rows[0]:
    head, keys = "mAP | micro F1 | macro F1", ("map", "micro_f1", "macro_f1")
  else:
    head, keys = "accuracy | macro F1 | ECE", ("accuracy", "macro_f1", "ece")
  return [f"data_dir | split | images | {head}"] + [
      f"{r['data_dir']} | {r['split']} | {r['num_examples']} | " + " | ".join(
          f"{r[k] if r[k] is not None else float('nan'):.4f}" for k in keys)
      for r in rows]


def _slug(data_dir, taken):
  base = "".join(ch if ch.isalnum() or ch in "-." else "_"
                 for ch in os.path.basename(os.path.normpath(data_dir))) or "data"
  slug, i = base[:40], 2
  while slug in taken:
    slug, i = f"{base[:37]}_{i}", i + 1
  taken.add(slug)
  return slug


def mistake_heatmaps(model, mistakes, class_names):
  """{path: heatmap of the predicted class} of the mistakes' images, by the
  model's default explanation method (`explain.Explainer`); {} for a model
  of clips, one without one classifier head (an ensemble), and without
  images."""
  from imgrec.inference import explain  # pylint: disable=g-import-not-at-top
  from imgrec.data import pixels  # pylint: disable=g-import-not-at-top
  spec = tasks.model_input(model)
  if not mistakes or spec.frames or not class_names:
    return {}
  try:
    explainer = explain.Explainer(model)
  except ValueError:
    return {}
  if explainer.kind != "classes":  # An ensemble: no one head to explain.
    return {}
  found, images, targets = [], [], []
  for mistake in mistakes:
    try:
      images.append(tasks.read_image(mistake["path"]))
    except (ImgrecError, OSError, KeyError, TypeError):
      continue
    found.append(mistake["path"])
    targets.append(class_names.index(mistake["predicted"]))
  if not found:
    return {}
  maps = explainer(pixels.preprocess(images, spec.image_size, spec.channels),
                   np.asarray(targets))[0]
  return {"method": explainer.method, **dict(zip(found, maps))}


def draw_pictures(report, history_path=None, model=None):
  """[(file suffix or None, {picture name: PNG bytes})], one per section.

  With the Keras `model`, the mistakes picture shows where it looked for
  each wrong answer (`mistake_heatmaps`)."""
  from imgrec.evaluation import pictures  # pylint: disable=g-import-not-at-top
  sections = report.get("datasets") or [report]
  taken, out = set(), []
  for i, s in enumerate(sections):
    slug = None if i == 0 else _slug(s["data"]["data_dir"], taken)
    if "multilabel" in s:
      drawn = {"pr_curves": pictures.pr_curves_png(s),
               "label_cooccurrence": pictures.label_cooccurrence_png(s)}
    else:
      heatmaps = (mistake_heatmaps(model, s["mistakes"], s.get("class_names"))
                  if model is not None else {})
      drawn = {
          "confusion_matrix": pictures.confusion_matrix_png(s),
          "reliability": pictures.reliability_png(s),
          "mistakes": pictures.mistakes_png(s["mistakes"], tasks.read_image,
                                            heatmaps=heatmaps),
      }
    if i == 0 and history_path:
      drawn["curves"] = pictures.curves_png(history_path)
    out.append((slug, {k: v for k, v in drawn.items() if v is not None}))
  return out


def _to_tensorboard(logs_dir, report, drawn):
  """The pictures and headline figures, under `<logs>/evaluation`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  writer = tf.summary.create_file_writer(os.path.join(logs_dir, "evaluation"))
  with writer.as_default():
    for slug, pics in drawn:
      for name, png in pics.items():
        image = tf.io.decode_png(png, channels=3)[tf.newaxis]
        tf.summary.image(f"{name}/{slug}" if slug else name, image, step=0)
    for key, value in headline(report).items():
      if value is not None:
        tf.summary.scalar(f"evaluation/{key}", value, step=0)
  writer.close()


def headline(report):
  """The headline figures of a report: {name: value or None}."""
  if "multilabel" in report:
    return {k: report["multilabel"][k]
            for k in ("map", "micro_f1", "macro_f1", "subset_accuracy")}
  return {k: report[k] for k in ("accuracy", "macro_f1", "ece")}


def write_outputs(folder, report, *, pictures=True, history_path=None,
                  logs_dir=None, title="imgrec evaluation", model=None):
  """Writes report.json/.txt and, with `pictures`, the PNGs and report.html.

  Args:
    folder: a ReportFolder.
    report: the assembled report.
    pictures: draw the pictures and report.html.
    history_path: the run's history.csv, for curves.png.
    logs_dir: a run's TensorBoard folder, to add the pictures to.
    title: report.html's title.
    model: the Keras model of a single run, for the mistakes' heatmaps.

  Returns:
    {"report": path, "html": path or None, "pictures": [paths]}.
  """
  folder.makedirs()
  paths = []
  html_path = None
  if pictures:
    drawn = draw_pictures(report, history_path, model)
    sections = [dict(s) for s in report.get("datasets") or [report]]
    for section, (slug, pics) in zip(sections, drawn):
      section["pictures"] = {}
      for name, png in pics.items():
        paths.append(folder.write_picture(name, png, slug))
        section["pictures"][name] = os.path.basename(paths[-1])
    from imgrec.evaluation import html  # pylint: disable=g-import-not-at-top
    captioned = [{_CAPTIONS[name]: png for name, png in pics.items()}
                 for _, pics in drawn]
    if "datasets" in report:
      report = dict(report, datasets=sections,
                    pictures=sections[0]["pictures"])
      # One section per dataset (the top level repeats the first).
      page = html.render_report(
          {k: report[k] for k in ("datasets", "comparison")}, None, title,
          pictures_by_section=captioned)
    else:
      report = sections[0]
      page = html.render_report(report, captioned[0], title)
    html_path = folder.write_html(page)
    if logs_dir:
      _to_tensorboard(logs_dir, report, drawn)
  path = folder.write_report(report, format_text(report))
  return {"report": path, "html": html_path, "pictures": paths}


def evaluate_split(task, model, split, class_names, *, val_split=None,
                   data_dir=None, split_name="test", run=None):
  """The report of one model on one split (imgrec-train's final report).

  Args:
    task: the run's ImageClassificationTask.
    model: a Keras model.
    split: a folder.Split with labels in `class_names` order.
    class_names: the model's classes.
    val_split: the validation split, for the calibration temperature.
    data_dir: the data folder named in the report.
    split_name: the split's name in the report.
    run: the RunFolder (for its history in the pictures).

  Returns:
    The report dict.
  """
  member = Member(run or RunFolder(task.config.model_dir or "."), task, model,
                  class_names)
  evaluation = _Evaluation([member], top_k=task.config.top_k,
                           val_split=val_split)
  section = evaluation.section(split, data_dir or task.config.data_dir or "",
                               split_name)
  return _assemble([section], measure_latency([member]))


def report_run(run, report, pictures=True, model=None):
  """Writes a run's report with its pictures into its model_dir (with its
  Keras `model`, the mistakes' heatmaps)."""
  return write_outputs(run.reports, report, pictures=pictures,
                       history_path=run.history_path, logs_dir=run.logs_dir,
                       title=f"imgrec evaluation: {run.path}", model=model)


def _same_folder(path_a, path_b):
  try:
    return os.path.samefile(path_a, path_b)
  except OSError:
    return False


def _check_outside_data(report_dir, data_dirs):
  """Refuses a report_dir inside a data folder: imgrec never writes there."""
  target = os.path.realpath(report_dir)
  for data_dir in data_dirs:
    if not data_dir:
      continue
    root = os.path.realpath(data_dir)
    if os.path.isfile(root):  # A labels CSV: its folder holds the data.
      root = os.path.dirname(root)
    if os.path.commonpath([target, root]) == root:
      raise ImgrecError(f"--report_dir={report_dir} is inside the data folder "
                        f"{data_dir}, and imgrec never writes into data. "
                        "Pass a folder outside it.")


def _report_folder(config, write):
  """(report_dir or None, whether it is not the single run's own folder).

  Raises:
    ImgrecError: the run's own folder cannot be written.
  """
  model_dirs = config.model_dirs
  single = len(model_dirs) == 1
  other_dir = config.report_dir
  if single and other_dir and _same_folder(other_dir, model_dirs[0]):
    other_dir = None  # The run's own folder, as by default.
  report_dir = other_dir or (model_dirs[0] if single else None)
  if write and report_dir and not other_dir:
    RunFolder(report_dir).makedirs()  # A read-only folder fails now.
  return report_dir, bool(other_dir)


def _calibration_split(members, class_names):
  """The validation split every member held out, for the temperature."""
  try:  # Calibration needs validation images no member trained on.
    val = shared_split(members, "val")
  except ImgrecError:
    logger.warning("no calibration temperature: the members held out "
                   "different validation images")
    return None
  return val and to_split(val, class_names, members[0].task.multilabel)


def _data_split(members, data_dir, split_name, class_names):
  """The images of one --data_dir (None: the run's own data) to evaluate.

  Returns:
    (split, {unknown class: images left out}, the data folder's name).

  Raises:
    ImgrecError: no images of the model's classes there.
  """
  own = members[0].task.config.data_dir
  multilabel = members[0].task.multilabel
  same_data = data_dir is None or (
      own and os.path.abspath(data_dir) == os.path.abspath(own))
  unknown = {}
  if same_data and os.path.isfile(members[0].run.splits_path):
    own_split = shared_split(members, split_name)
    split = (to_split(own_split, class_names, multilabel) if own_split
             else folder_lib.Split([], []))
  else:
    split, unknown = members[0].task.build_eval_split(
        data_dir or own, split_name, class_names)
  where = data_dir or own or members[0].task.config.labels_csv
  if unknown:
    logger.warning("%s: left out images of classes the model does not "
                   "know: %s", where, ", ".join(
                       f"{name} ({count})" for name, count in sorted(
                           unknown.items())))
  if not len(split):
    raise ImgrecError(f"No images to evaluate in the {split_name} split "
                      f"of {where}" + (
                          f": its classes ({', '.join(sorted(unknown))}) "
                          "are not the model's" if unknown else "") + ".")
  return split, unknown, where


def evaluate(config, write=True):
  """Evaluates the best model of a run, or an ensemble, as `imgrec-evaluate`.

  Args:
    config: an EvaluateConfig (or a dict of its fields): the run(s);
      optionally other data folders (each one's `split` folder if it has
      split folders, else all of its images), a split of the run's own
      data, a batch size, TTA, ensemble weights, where the report goes.
    write: write the report files (report_dir, by default the model_dir of
      a single run).

  Returns:
    The report dict; with `write`, also its "files" (report, html,
    pictures).

  Raises:
    ImgrecError: bad config, not a finished run, members that do not fit
      together, or no images to evaluate.
  """
  config = EvaluateConfig.coerce(config, "evaluate").validate()
  model_dirs = config.model_dirs
  single = len(model_dirs) == 1
  report_dir, elsewhere = _report_folder(config, write)
  members = [Member.load(d, config.batch_size) for d in model_dirs]
  if write and elsewhere:
    _check_outside_data(report_dir, list(config.data_dirs) + [
        m.task.config.data_dir for m in members] + [
            getattr(m.task.config, "labels_csv", None) for m in members])
    # Another run's folder, or another report's, is never written over.
    ReportFolder(report_dir).claim(model_dirs)
  class_names = members[0].class_names
  evaluation = _Evaluation(
      members, tta=config.tta_modes, weights=config.ensemble_weights,
      top_k=members[0].task.config.top_k,
      val_split=_calibration_split(members, class_names))
  sections, splits = [], []
  for data_dir in config.data_dirs or (None,):
    split, unknown, where = _data_split(members, data_dir, config.split,
                                        class_names)
    splits.append(split)
    sections.append(evaluation.section(split, where, config.split, unknown))
  report = _assemble(sections, measure_latency(members))
  if config.unknown_dir:
    from imgrec.evaluation import unknown as unknown_lib  # pylint: disable=g-import-not-at-top
    report["open_set"] = unknown_lib.section(
        members[0], splits[0], config.unknown_dir, config.calibrate_unknown)
  if write and report_dir:
    if single and not elsewhere:
      run = members[0].run
      with run.lock("imgrec-evaluate"):
        files = report_run(run, report, config.pictures,
                           model=members[0].model if not config.tta_modes
                           else None)
    else:
      files = write_outputs(ReportFolder(report_dir), report,
                            pictures=config.pictures,
                            history_path=(members[0].run.history_path
                                          if single else None),
                            title="imgrec evaluation: " + ", ".join(
                                model_dirs),
                            model=members[0].model if single else None)
    report["files"] = files
  return report
