"""Draws the pictures of an evaluation report as PNG bytes.

Confusion matrix, reliability diagram, most confident mistakes and training
curves, each drawn on a `matplotlib.figure.Figure` of its own with the Agg
canvas: no pyplot, no global state, safe to call from any thread and from
processes without a display.

Class names and paths are user data: every text drawn from them is rendered
literally (matplotlib's mathtext would read `$...$` as a formula) and long
names are shortened on the axes.
"""

import collections
import io
import math
import warnings

import numpy as np

from imgrec import run_folder

_DPI = 100
_LABEL_CHARS = 24
_ANNOTATE_MAX_CLASSES = 15
_THUMBNAIL_PIXELS = 256
_PLACEHOLDER = np.full((64, 64, 3), 200, np.uint8)
# Literal text: a class folder named "$x$" is a name, not a formula.
_LITERAL = {"parse_math": False}


def _new_figure(width, height):
  """A figure on its own Agg canvas (no pyplot registry)."""
  # Imported here: matplotlib costs a second at import time and only the
  # report pictures need it.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def _png(figure):
  """The figure as PNG bytes."""
  buffer = io.BytesIO()
  with warnings.catch_warnings():
    # DejaVu Sans has no glyph for many scripts (CJK, emoji): those
    # characters show as boxes, which is no reason to warn at every name.
    warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
    warnings.filterwarnings("ignore", message=r".*constrained_layout not "
                            r"applied")
    figure.savefig(buffer, format="png", dpi=_DPI)
  return buffer.getvalue()


def _short(name, limit=_LABEL_CHARS):
  """A class name on one line, cut to `limit` characters."""
  text = " ".join(str(name).split())
  return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _number(value, spec=".3f"):
  """`value` formatted with `spec`, or "n/a" when there is none."""
  if value is None:
    return "n/a"
  try:
    value = float(value)
  except (TypeError, ValueError):
    return "n/a"
  return format(value, spec) if math.isfinite(value) else "n/a"


def most_confused(confusion, max_classes):
  """Indices of the classes most involved in confusions, in label order.

  Args:
    confusion: int array [C, C] of counts (rows: true, columns: predicted).
    max_classes: how many classes to keep.

  Returns:
    Sorted int array of at most `max_classes` class indices: the classes with
    the most off-diagonal examples, as true and as predicted class together;
    ties go to the class with more examples.
  """
  confusion = np.asarray(confusion, np.int64)
  off_diagonal = confusion.copy()
  np.fill_diagonal(off_diagonal, 0)
  mass = off_diagonal.sum(axis=0) + off_diagonal.sum(axis=1)
  support = confusion.sum(axis=1)
  # lexsort sorts by the last key first; negated for largest first, then
  # by index so the choice is deterministic.
  order = np.lexsort((np.arange(len(mass)), -support, -mass))
  return np.sort(order[:max_classes])


def _normalized_rows(confusion):
  """Each row of a count matrix divided by its sum (zero rows stay zero)."""
  totals = confusion.sum(axis=1, keepdims=True)
  return np.divide(confusion, totals, out=np.zeros(confusion.shape),
                   where=totals > 0)


def confusion_matrix_png(report, max_classes=30):
  """Heatmap of the row-normalized confusion matrix of a report.

  Args:
    report: an evaluation report with `class_names`, `confusion_matrix`
      (counts) and `confusion_matrix_normalized` (rows sum to 1; computed
      from the counts when absent).
    max_classes: above this many classes only the `max_classes` classes most
      involved in confusions are shown, in label order, and the title says
      so.

  Returns:
    PNG bytes, or None when the report has no classes.

  Raises:
    ValueError: if `max_classes` is below 1.
  """
  if max_classes < 1:
    raise ValueError(f"max_classes must be at least 1. "
                     f"Received: max_classes={max_classes}")
  names = list(report.get("class_names") or [])
  num_classes = len(names)
  if not num_classes:
    return None
  counts = np.asarray(report["confusion_matrix"], np.int64)
  normalized = report.get("confusion_matrix_normalized")
  normalized = (_normalized_rows(counts) if normalized is None
                else np.asarray(normalized, np.float64))
  return _heatmap(normalized, counts, names, max_classes,
                  "Confusion matrix (rows: true class, normalized)",
                  "most confused", "class", "fraction of true class")


def _heatmap(shares, counts, names, max_classes, title, kept, what,
             colour_label):
  """PNG of a [C, C] matrix of shares in [0, 1] (rows: true `what`,
  columns: predicted), annotated when there are few classes; past
  `max_classes` only the classes most off the diagonal of `counts`, in
  label order, and the title says they are the `kept` ones."""
  if len(names) > max_classes:
    keep = most_confused(counts, max_classes)
    shares = shares[np.ix_(keep, keep)]
    plural = what + ("es" if what.endswith("s") else "s")
    title += f"\n{len(keep)} {kept} of {len(names)} {plural}"
    names = [names[i] for i in keep]
  shown = len(names)
  side = min(14.0, max(5.0, 2.5 + 0.3 * shown))
  figure = _new_figure(side + 1.5, side)
  axes = figure.add_subplot()
  image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0,
                      interpolation="nearest", aspect="equal")
  figure.colorbar(image, ax=axes, shrink=0.8, label=colour_label)
  labels = [_short(name) for name in names]
  font = 9 if shown <= 20 else 7
  axes.set_xticks(np.arange(shown), labels, rotation=90, fontsize=font,
                  **_LITERAL)
  axes.set_yticks(np.arange(shown), labels, fontsize=font, **_LITERAL)
  axes.set_xlabel(f"predicted {what}")
  axes.set_ylabel(f"true {what}")
  figure.suptitle(title)
  if shown <= _ANNOTATE_MAX_CLASSES:
    for (row, column), value in np.ndenumerate(shares):
      if value > 0:
        axes.text(column, row, f"{value:.2f}", ha="center", va="center",
                  fontsize=8, color="white" if value > 0.5 else "black")
  return _png(figure)


def pr_curves_png(report):
  """Precision-recall curves of a report of label sets, one line a class.

  Args:
    report: a report with `pr_curves` ({name: {"recall", "precision"}}, the
      classes of lowest AP, worst first) and `multilabel.per_class` (each
      class's `ap`, shown in the legend).

  Returns:
    PNG bytes, or None when there is no curve (no class has a positive
    example).
  """
  curves = report.get("pr_curves") or {}
  if not curves:
    return None
  per_class = (report.get("multilabel") or {}).get("per_class") or {}
  total = len(report.get("class_names") or curves)
  figure = _new_figure(9.0 if len(curves) > 10 else 7.0, 6.0)
  axes = figure.add_subplot()
  colours = _palette(len(curves))
  for colour, (name, curve) in zip(colours, curves.items()):
    ap = _number((per_class.get(name) or {}).get("ap"))
    # Steps, as average precision sums them (each point's precision over
    # the recall it adds; no interpolation), from recall 0.
    axes.step([0.0, *curve["recall"]], [curve["precision"][0],
                                        *curve["precision"]], where="pre",
              color=colour, linewidth=1.2, label=f"{_short(name)} (AP {ap})")
  axes.set_xlim(0, 1.0)
  axes.set_ylim(0, 1.02)
  axes.set_xlabel("recall")
  axes.set_ylabel("precision")
  axes.grid(alpha=0.3)
  title = "Precision-recall per class"
  if total > len(curves):
    title += f"\n{len(curves)} classes of lowest AP of {total}"
  axes.set_title(title)
  legend = axes.legend(fontsize=7 if len(curves) > 10 else 8,
                       loc="center left", bbox_to_anchor=(1.01, 0.5),
                       ncol=2 if len(curves) > 15 else 1)
  for text in legend.get_texts():
    text.set_parse_math(False)  # A class name is a name, not a formula.
  return _png(figure)


def _palette(count):
  """`count` distinct colours (tab10, then tab20's and the rest)."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  cmap = colormaps["tab20" if count > 10 else "tab10"]
  return [cmap(i % cmap.N) for i in range(count)]


def label_cooccurrence_png(report, max_classes=30):
  """Heatmap of true vs predicted labels of a report of label sets.

  Cell (i, j): the share of the images holding label i on which label j is
  predicted; the diagonal is each label's recall, the rest shows which
  labels the model adds to which.

  Args:
    report: a report with `class_names`, `label_cooccurrence` ([C, C]
      counts, rows: true label, columns: predicted; of the labels
      `label_cooccurrence_labels` names when there are many) and
      `multilabel.per_class` (each class's `support`).
    max_classes: above this many classes only those most involved off the
      diagonal are shown, in label order, and the title says so.

  Returns:
    PNG bytes, or None when the report has no classes.
  """
  # Past COOCCURRENCE_MAX_LABELS labels the counts are of those it names.
  names = list(report.get("label_cooccurrence_labels")
               or report.get("class_names") or [])
  if not names or report.get("label_cooccurrence") is None:
    return None
  counts = np.asarray(report["label_cooccurrence"], np.int64)
  per_class = (report.get("multilabel") or {}).get("per_class") or {}
  support = np.array([(per_class.get(n) or {}).get("support", 0) or 0
                      for n in names], np.float64)[:, None]
  shares = np.divide(counts, support, out=np.zeros(counts.shape),
                     where=support > 0)
  return _heatmap(shares, counts, names, max_classes,
                  "Labels predicted on the images of each true label",
                  "most involved", "label", "share of the true label's images")


def _bins(bins):
  """Arrays (lower, upper, count, confidence, accuracy) of reliability bins."""
  def column(key):
    return np.array([float(b.get(key) or 0.0) for b in bins])
  return (column("lower"), column("upper"), column("count"),
          column("confidence"), column("accuracy"))


def reliability_png(report):
  """Reliability diagram of a report, before and after temperature scaling.

  Accuracy per confidence bin as bars against the diagonal of a perfectly
  calibrated model, the gap to each bin's mean confidence shaded, and the
  number of examples per bin below.

  Args:
    report: an evaluation report with `reliability` (bins of `lower`,
      `upper`, `count`, `confidence`, `accuracy`) and `ece`; when
      `reliability_after_temperature` is a list it is drawn too, with
      `temperature` and `ece_after_temperature` in the legend.

  Returns:
    PNG bytes.
  """
  lower, upper, count, confidence, accuracy = _bins(report["reliability"])
  centers, widths = (lower + upper) / 2, upper - lower
  filled = count > 0
  after = report.get("reliability_after_temperature")
  figure = _new_figure(6.5, 7.0)
  top, bottom = figure.subplots(2, 1, sharex=True,
                                gridspec_kw={"height_ratios": [3, 1]})
  top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1,
           label="perfectly calibrated")
  top.bar(centers[filled], accuracy[filled], width=widths[filled],
          color="tab:blue", edgecolor="black", linewidth=0.5,
          label=f"accuracy (ECE {_number(report.get('ece'))})")
  top.bar(centers[filled], confidence[filled] - accuracy[filled],
          bottom=accuracy[filled], width=widths[filled], color="tab:red",
          alpha=0.3, edgecolor="tab:red", hatch="//", linewidth=0.5,
          label="gap to mean confidence")
  bottom.bar(centers, count, width=widths, color="tab:blue",
             edgecolor="black", linewidth=0.5, label="before")
  if isinstance(after, list) and after:
    a_lower, a_upper, a_count, a_confidence, a_accuracy = _bins(after)
    # An empty bin is a gap in the curve, not a point at zero accuracy,
    # and no segment is drawn across it.
    a_empty = a_count == 0
    temperature = _number(report.get("temperature"), ".2f")
    top.plot(np.where(a_empty, np.nan, a_confidence),
             np.where(a_empty, np.nan, a_accuracy), color="tab:orange",
             marker="o", markersize=4, linewidth=1.5,
             label=f"after temperature {temperature} "
                   f"(ECE {_number(report.get('ece_after_temperature'))})")
    bottom.stairs(a_count, np.append(a_lower, a_upper[-1]),
                  color="tab:orange", linewidth=1.5, label="after")
    bottom.legend(fontsize=8)
  top.set_xlim(0, 1)
  top.set_ylim(0, 1)
  top.set_ylabel("accuracy")
  top.set_title(f"Reliability (ECE {_number(report.get('ece'))})")
  top.legend(loc="upper left", fontsize=8)
  bottom.set_xlabel("confidence")
  bottom.set_ylabel("examples")
  return _png(figure)


def _thumbnail(read_image, path):
  """A small RGB array of the image at `path`, or None if it is unreadable."""
  try:
    image = np.asarray(read_image(path))
  # Any failure of a user image (missing, truncated, a decoder error) must
  # leave a placeholder, not end the report.
  except Exception:  # pylint: disable=broad-except
    return None
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if (image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in
                                   (3, 4)) or not image.size):
    return None
  step = max(1, math.ceil(max(image.shape[:2]) / _THUMBNAIL_PIXELS))
  return image[::step, ::step]


def mistakes_png(mistakes, read_image, columns=4, heatmaps=None):
  """Grid of the images a model got wrong, titled with true and predicted.

  Args:
    mistakes: dicts with `path`, `true`, `predicted` and `probability`
      (the predicted class's), in the order to show them.
    read_image: function of a path returning an RGB uint8 array [H, W, 3];
      an image it cannot read (it raises, or returns something else) is
      shown as a gray "unreadable" placeholder.
    columns: thumbnails per row.
    heatmaps: optional {path: heatmap in 0..1, "method": its name}: each
      image with one is followed by the heatmap over it (where the model
      looked for its wrong answer).

  Returns:
    PNG bytes, or None when `mistakes` is empty.

  Raises:
    ValueError: if `columns` is below 1.
  """
  if columns < 1:
    raise ValueError(f"columns must be at least 1. Received: columns={columns}")
  mistakes = list(mistakes)
  if not mistakes:
    return None
  heatmaps = heatmaps or {}
  panels = []  # (mistake, heatmap or None): an image, then its heatmap.
  for mistake in mistakes:
    panels.append((mistake, None))
    if heatmaps.get(mistake.get("path")) is not None:
      panels.append((mistake, heatmaps[mistake["path"]]))
  columns = min(columns * (2 if heatmaps else 1), len(panels))
  rows = math.ceil(len(panels) / columns)
  figure = _new_figure(2.8 * columns, 3.0 * rows)
  grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
  for axes in grid:
    axes.set_axis_off()
  for axes, (mistake, heat) in zip(grid, panels):
    image = _thumbnail(read_image, mistake.get("path"))
    if heat is not None and image is not None:
      from imgrec.inference import explain  # pylint: disable=g-import-not-at-top
      axes.imshow(explain.overlay(image, heat))
      axes.set_title(f"where it saw\n{_short(mistake.get('predicted'), 18)} "
                     f"({heatmaps.get('method', '')})", fontsize=9,
                     **_LITERAL)
      continue
    if heat is not None:
      continue  # Its image is the placeholder beside.
    if image is None:
      axes.imshow(_PLACEHOLDER, vmin=0, vmax=255)
      axes.text(0.5, 0.5, "unreadable", transform=axes.transAxes,
                ha="center", va="center", color="black")
    else:
      axes.imshow(image, cmap="gray" if image.ndim == 2 else None)
    axes.set_title(f"true: {_short(mistake.get('true'), 18)}\n"
                   f"pred: {_short(mistake.get('predicted'), 18)} "
                   f"({_number(mistake.get('probability'), '.2f')})",
                   fontsize=9, **_LITERAL)
  return _png(figure)


def curves_png(history_path):
  """Training curves of a run from its Keras CSVLogger file.

  One panel for loss, one for accuracy (with top-k when logged) or the
  precision-recall AUC of label sets, training and validation in each,
  and one for the learning rate when it was logged.

  Args:
    history_path: the CSVLogger file (`epoch,accuracy,loss,...`).

  Returns:
    PNG bytes, or None when the file is missing, empty or has no usable
    rows (see `imgrec.run_folder.history_rows`).
  """
  history = run_folder.read_history(history_path)
  if history is None:
    return None
  columns = {name: np.array(values)
             for name, values in history.columns.items()}
  # CSVLogger counts epochs from 0; Keras's progress bar says "Epoch 1".
  epochs = np.array(history.epochs) + 1
  panels = collections.OrderedDict()
  panels["loss"] = ["loss", "val_loss"]
  panels["accuracy"] = ["accuracy", "val_accuracy", "top_k", "val_top_k"]
  panels["precision-recall AUC"] = ["pr_auc", "val_pr_auc"]  # Label sets.
  panels["learning rate"] = ["learning_rate", "lr"]
  drawable = collections.OrderedDict()
  for title, names in panels.items():
    present = [n for n in names
               if n in columns and np.isfinite(columns[n]).any()]
    if present:
      drawable[title] = present
  if not drawable:
    return None
  from matplotlib.ticker import MaxNLocator
  figure = _new_figure(4.5 * len(drawable), 3.8)
  for axes, (title, names) in zip(
      np.atleast_1d(figure.subplots(1, len(drawable))), drawable.items()):
    for name in names:
      values = columns[name]
      axes.plot(epochs, values, marker="o", markersize=3,
                linestyle="--" if "top_k" in name else "-",
                color="tab:orange" if name.startswith("val_") else "tab:blue",
                label=name)
    if title == "learning rate":
      positive = values[np.isfinite(values)]
      if (positive > 0).all() and positive.max() > 10 * positive.min():
        axes.set_yscale("log")
    else:
      axes.legend(fontsize=8)
    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
  return _png(figure)


def report_pictures(report, read_image=None, history_path=None,
                    max_classes=30):
  """All pictures of a report, ready for `html.render_report`.

  Args:
    report: an evaluation report.
    read_image: as in `mistakes_png`; without it no mistakes picture.
    history_path: the run's CSVLogger file; without it no training curves.
    max_classes: as in `confusion_matrix_png`.

  Returns:
    An ordered dict {caption: PNG bytes} of the pictures that could be
    drawn.
  """
  pictures = collections.OrderedDict()
  pictures["Confusion matrix"] = confusion_matrix_png(report, max_classes)
  if report.get("reliability"):
    pictures["Reliability diagram"] = reliability_png(report)
  if read_image is not None:
    pictures["Most confident mistakes"] = mistakes_png(
        report.get("mistakes") or [], read_image)
  if history_path:
    pictures["Training curves"] = curves_png(history_path)
  return collections.OrderedDict(
      (caption, png) for caption, png in pictures.items() if png is not None)
