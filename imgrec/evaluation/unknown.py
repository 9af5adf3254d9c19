"""`imgrec-evaluate --unknown_dir`: a run's open set on the user's own images
of no known class.

The report's `"open_set"` section measures the run's unknown score on the
evaluated (known) images against the unknown ones: AUROC, FPR95, and at the
run's threshold the share of known images kept and of unknown ones rejected,
beside the max-softmax baseline and every other score. With
`--calibrate_unknown` the run's threshold becomes the one that best
separates the unknown images from its validation split (Youden's J), and is
stored in `open_set.json` for every consumer.
"""

import dataclasses
import logging

from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.metrics import open_set as metrics
from imgrec.tasks import open_set

logger = logging.getLogger("imgrec")


def _own_split(run, name):
  paths, labels = run.read_split(name)
  return folder_lib.Split(paths, labels)


def _open_set_of(member):
  """The run's OpenSet; for a run trained before open sets, the one its
  recorded training and validation splits give."""
  found = open_set.read(member.run, len(member.class_names))
  if found is None:
    logger.warning("%s has no open_set.json (trained before open sets): "
                   "choosing one from its recorded splits", member.run.path)
    found = open_set.choose(member.task, member.model, member.class_names,
                            _own_split(member.run, "train"),
                            _own_split(member.run, "val"))
  return found


def section(member, known_split, unknown_dir, calibrate=False):
  """The report's "open_set" section of one run (a `evaluate.Member`).

  Args:
    member: the run, its task and model.
    known_split: the evaluated images (of known classes).
    unknown_dir: the folder of images of no known class.
    calibrate: choose the threshold on these unknown images and the run's
      validation split, and store it in the run.

  Returns:
    {"score", "auroc", "fpr95", "threshold", "known_recall",
    "unknown_rejected", "known", "unknown", "source", "unknown_dir",
    "baseline": {"max_softmax": {"auroc", "fpr95"}}, "scores": {score:
    {"auroc", "fpr95"}}}.

  Raises:
    ImgrecError: a multi-label run, a model without a classifier head, or
      no usable unknown image.
  """
  if member.task.multilabel:
    raise ImgrecError("--unknown_dir measures a single-label run's open "
                      "set; a multi-label run answers \"none of these\" "
                      "when no label reaches its threshold.")
  task, model = member.task, member.model
  found = _open_set_of(member)
  unknown = task.build_unknown_split(unknown_dir)
  known = open_set.embed(task, model, known_split)
  strange = open_set.embed(task, model, unknown)
  if calibrate:
    val = _own_split(member.run, "val")
    held = open_set.embed(task, model, val) if len(val) else known
    found = dataclasses.replace(
        found, threshold=metrics.calibrated_threshold(
            held.knownness(found.score, found.prototypes),
            strange.knownness(found.score, found.prototypes)),
        known_recall=None, source=(
            f"calibrated on {len(unknown)} unknown images in {unknown_dir} "
            f"and {len(val) if len(val) else len(known_split)} known images"))
    with member.run.lock("imgrec-evaluate"):
      open_set.write(member.run, found)
  figures = {}
  for kind in metrics.SCORES:
    k = known.knownness(kind, found.prototypes)
    u = strange.knownness(kind, found.prototypes)
    figures[kind] = (metrics.summary(k, u, found.threshold)
                     if kind == found.score else
                     {"auroc": metrics.summary(k, u, 0.0)["auroc"],
                      "fpr95": metrics.fpr_at_recall(k, u)})
  chosen = figures[found.score]
  return {"score": found.score, **chosen, "source": found.source,
          "unknown_dir": unknown_dir,
          "baseline": {"max_softmax": {
              k: figures["max_softmax"][k] for k in ("auroc", "fpr95")}},
          "scores": {kind: {k: f[k] for k in ("auroc", "fpr95")}
                     for kind, f in figures.items()}}
