"""Classification reports: top-k, P/R/F1, ROC AUC, confusions, calibration."""

import numpy as np

from imgrec.evaluation import calibration


TOP_KS = (1, 3, 5)
TOP_CONFUSIONS = 20
MISTAKES = 16


def _average_ranks(values):
  """Ranks 1..N of `values`, ties sharing their mean rank."""
  order = np.argsort(values, kind="stable")
  ranks = np.empty(len(values), dtype=np.float64)
  ranks[order] = np.arange(1, len(values) + 1)
  _, inverse, counts = np.unique(values, return_inverse=True,
                                 return_counts=True)
  sums = np.bincount(inverse, weights=ranks)
  return sums[inverse] / counts[inverse]


def roc_auc_one_vs_rest(y_true, probabilities):
  """One-vs-rest ROC AUC of each class (None where a class has no positive
  or no negative example), by the rank statistic."""
  out = []
  for c in range(probabilities.shape[1]):
    positive = y_true == c
    n_pos = int(positive.sum())
    n_neg = len(y_true) - n_pos
    if not n_pos or not n_neg:
      out.append(None)
      continue
    ranks = _average_ranks(probabilities[:, c])
    out.append(float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2)
                     / (n_pos * n_neg)))
  return out


def _averages(rows, supports):
  """Macro and support-weighted means of precision/recall/F1 (classes with
  examples only)."""
  present = [(r, s) for r, s in zip(rows, supports) if s]
  macro, weighted = {}, {}
  total = sum(s for _, s in present)
  for key in ("precision", "recall", "f1"):
    values = [r[key] for r, _ in present]
    macro[key] = float(np.mean(values)) if values else 0.0
    weighted[key] = (float(sum(r[key] * s for r, s in present) / total)
                     if total else 0.0)
  return macro, weighted


def _top_confusions(confusion, class_names, limit=TOP_CONFUSIONS):
  off = confusion.copy()
  np.fill_diagonal(off, 0)
  support = confusion.sum(axis=1)
  flat = np.argsort(-off, axis=None, kind="stable")[:limit]
  out = []
  for i, j in zip(*np.unravel_index(flat, off.shape)):
    if not off[i, j]:
      break
    out.append({"true": class_names[i], "predicted": class_names[j],
                "count": int(off[i, j]),
                "fraction": float(off[i, j] / support[i])})
  return out


def _mistakes(y_true, probabilities, class_names, paths, limit=MISTAKES):
  """The most confident wrong predictions, most confident first."""
  if paths is None or not len(y_true):
    return []
  predicted = probabilities.argmax(axis=1)
  confidence = probabilities.max(axis=1)
  wrong = np.flatnonzero(predicted != y_true)
  wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
  return [{"path": str(paths[i]), "true": class_names[y_true[i]],
           "predicted": class_names[predicted[i]],
           "probability": float(confidence[i])} for i in wrong]


def _top_k(order, y_true, ks):
  """{str(k): top-k accuracy} of predictions ranked by `order`."""
  n = len(y_true)
  return {str(x): float(np.mean((order[:, :x] == y_true[:, None]).any(
      axis=1))) if n else 0.0 for x in ks}


def _per_class(confusion, class_names, aucs):
  """({name: precision, recall, f1, support, roc_auc}, [rows], [supports])."""
  per_class, rows, supports = {}, [], []
  for i, name in enumerate(class_names):
    tp = confusion[i, i]
    predicted, support = confusion[:, i].sum(), confusion[i, :].sum()
    precision = tp / predicted if predicted else 0.0
    recall = tp / support if support else 0.0
    f1 = (2 * precision * recall / (precision + recall)
          if precision + recall else 0.0)
    row = {"precision": float(precision), "recall": float(recall),
           "f1": float(f1), "support": int(support), "roc_auc": aucs[i]}
    per_class[name] = row
    rows.append(row)
    supports.append(int(support))
  return per_class, rows, supports


def _roc_auc_averages(aucs, supports):
  """{"macro", "weighted"} of the classes whose ROC AUC is defined."""
  defined = [(a, s) for a, s in zip(aucs, supports) if a is not None]
  support_sum = sum(s for _, s in defined)
  return {"macro": float(np.mean([a for a, _ in defined])) if defined
                   else None,
          "weighted": float(sum(a * s for a, s in defined) / support_sum)
                      if support_sum else None}


def _calibrated(probabilities, y_true, val_labels, val_probabilities):
  """(temperature, ece after it, reliability after it); Nones without a
  validation split."""
  temperature = None
  if val_labels is not None and len(val_labels):
    temperature = calibration.fit_temperature(val_probabilities, val_labels)
  if not temperature or not len(y_true):
    return temperature, None, None
  return (temperature, *calibration.reliability(
      calibration.scale(probabilities, temperature), y_true))


def classification_report(y_true, probabilities, class_names, k=5, *,
                          paths=None, val_labels=None,
                          val_probabilities=None):
  """Computes the evaluation report of a classifier.

  Args:
    y_true: int array [N] of true labels.
    probabilities: float array [N, num_classes].
    class_names: names of the classes, in label order.
    k: k of `top_k_accuracy` (capped at the number of classes); `top_k`
      also has 1, 3 and 5.
    paths: the N files, for the list of most confident mistakes.
    val_labels, val_probabilities: the validation split, to fit the
      temperature that calibrates the probabilities.

  Returns:
    A JSON-serializable dict: num_examples, accuracy, top_k {"1", "3", ...},
    top_k_accuracy and k, per_class {name: {precision, recall, f1, support,
    roc_auc}}, macro_avg and weighted_avg {precision, recall, f1}, macro_f1,
    roc_auc {macro, weighted}, confusion_matrix (rows: true class, columns:
    predicted) and confusion_matrix_normalized (rows sum to 1),
    top_confusions [{true, predicted, count, fraction}], ece and reliability
    (15 bins), temperature, ece_after_temperature and
    reliability_after_temperature (None without a validation split),
    mistakes [{path, true, predicted, probability}], class_names.
  """
  y_true = np.asarray(y_true, dtype=np.int64)
  probabilities = np.asarray(probabilities, dtype=np.float64).reshape(
      len(y_true), len(class_names))
  n, num_classes = len(y_true), len(class_names)
  k = int(min(k, num_classes))
  y_pred = probabilities.argmax(axis=1) if n else np.zeros(0, np.int64)
  confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
  np.add.at(confusion, (y_true, y_pred), 1)
  order = np.argsort(-probabilities, axis=1, kind="stable")
  ks = sorted({min(x, num_classes) for x in TOP_KS + (k,)})
  top_k = _top_k(order, y_true, ks)
  aucs = roc_auc_one_vs_rest(y_true, probabilities)
  per_class, rows, supports = _per_class(confusion, class_names, aucs)
  macro, weighted = _averages(rows, supports)
  row_sums = confusion.sum(axis=1, keepdims=True)
  ece, bins = calibration.reliability(probabilities, y_true)
  temperature, ece_after, bins_after = _calibrated(
      probabilities, y_true, val_labels, val_probabilities)
  return {
      "num_examples": int(n),
      "accuracy": float(np.trace(confusion) / n) if n else 0.0,
      "top_k": top_k,
      "top_k_accuracy": top_k[str(k)],
      "k": k,
      "per_class": per_class,
      "macro_avg": macro,
      "weighted_avg": weighted,
      "macro_f1": macro["f1"],
      "roc_auc": _roc_auc_averages(aucs, supports),
      "confusion_matrix": confusion.tolist(),
      # Six decimals keep a 1000-class report.json a few MB.
      "confusion_matrix_normalized": np.round(np.divide(
          confusion, row_sums, out=np.zeros(confusion.shape),
          where=row_sums > 0), 6).tolist(),
      "top_confusions": _top_confusions(confusion, class_names),
      "ece": ece,
      "reliability": bins,
      "temperature": temperature,
      "ece_after_temperature": ece_after,
      "reliability_after_temperature": bins_after,
      "mistakes": _mistakes(y_true, probabilities, class_names, paths),
      "class_names": list(class_names),
  }


# Past this many classes report.txt lists the top confusions, not the matrix.
_MATRIX_MAX_CLASSES = 30


def _fmt(value, spec=".4f"):
  return "-" if value is None else format(value, spec)


def format_report(report):
  """Renders a report as a plain-text table for terminals and report.txt."""
  names = report["class_names"]
  width = max([len("class")] + [len(c) for c in names])
  top_k = report.get("top_k") or {str(report["k"]): report["top_k_accuracy"]}
  lines = [
      f"examples: {report['num_examples']}   accuracy: "
      f"{report['accuracy']:.4f}   "
      + "   ".join(f"top-{k}: {v:.4f}" for k, v in top_k.items() if k != "1")
      + f"   macro F1: {report['macro_f1']:.4f}",
  ]
  if "weighted_avg" in report:
    auc = report["roc_auc"]
    lines.append(
        f"weighted F1: {report['weighted_avg']['f1']:.4f}   ROC AUC (one vs "
        f"rest) macro: {_fmt(auc['macro'])}   ECE ({len(report['reliability'])}"
        f" bins): {report['ece']:.4f}")
    if report.get("temperature"):
      lines.append(f"temperature (fitted on the validation split): "
                   f"{report['temperature']:.3f}   ECE after it: "
                   f"{report['ece_after_temperature']:.4f}")
  lines += ["", f"{'class':<{width}}  precision  recall     f1  support"
            "  ROC AUC"]
  for c in names:
    m = report["per_class"][c]
    lines.append(f"{c:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  "
                 f"{m['f1']:5.4f}  {m['support']:7d}  "
                 f"{_fmt(m.get('roc_auc')):>7}")
  if report.get("top_confusions"):
    lines += ["", "most confused (true -> predicted: images, share of the "
              "true class)"]
    for row in report["top_confusions"][:10]:
      lines.append(f"  {row['true']} -> {row['predicted']}: {row['count']} "
                   f"({row['fraction']:.1%})")
  if len(names) > _MATRIX_MAX_CLASSES:
    lines += ["", f"confusion matrix: {len(names)} classes, see report.json "
              "and confusion_matrix.png"]
    return "\n".join(lines) + "\n"
  lines += ["", "confusion matrix (rows: true, columns: predicted)"]
  cell = max(5, max(len(str(v)) for row in report["confusion_matrix"]
                    for v in row) + 1)
  lines.append(" " * width + "".join(f"{i:>{cell}d}" for i in range(len(names))))
  for i, (c, row) in enumerate(zip(names, report["confusion_matrix"])):
    lines.append(f"{c:<{width}}" + "".join(f"{v:>{cell}d}" for v in row)
                 + f"   [{i}]")
  return "\n".join(lines) + "\n"


def format_label_sets(report):
  """Renders a report of label sets (`"multilabel"` section, with its
  optional `tta` and `ensemble`) as plain text."""
  ml = report["multilabel"]
  names = report["class_names"]
  width = max([len("class")] + [len(c) for c in names])
  cardinality = ml["cardinality"]
  lines = [
      f"examples: {report['num_examples']}   mAP: {_fmt(ml['map'])}   "
      f"micro F1: {ml['micro_f1']:.4f}   macro F1: {_fmt(ml['macro_f1'])}",
      f"subset accuracy: {ml['subset_accuracy']:.4f}   Hamming loss: "
      f"{ml['hamming_loss']:.4f}   labels an image: "
      f"{cardinality['true']:.3f} true, {cardinality['predicted']:.3f} "
      "predicted",
      f"thresholds: {report.get('threshold_source', 'n/a')}", "",
      f"{'class':<{width}}  {'AP':>6}  threshold  precision  recall      f1"
      "  support     ECE"]
  for c in names:
    m = ml["per_class"][c]
    lines.append(f"{c:<{width}}  {_fmt(m['ap']):>6}  {m['threshold']:9.4f}  "
                 f"{m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}"
                 f"  {m['support']:7d}  {m['ece']:6.4f}")
  if "tta" in report:
    t = report["tta"]
    lines += ["", f"test-time augmentation {t['mode']} ({t['views']} views):"
              f" mAP {_fmt(t['map'])} vs {_fmt(t['map_without'])} without;"
              f" micro F1 {t['micro_f1']:.4f} vs {t['micro_f1_without']:.4f}"]
  if "ensemble" in report:
    e = report["ensemble"]
    lines += ["", "ensemble (mean of sigmoid scores)   mAP  micro F1  weight"]
    for m in e["members"]:
      lines.append(f"  {m['model_dir']}  {_fmt(m['map'])}  "
                   f"{m['micro_f1']:.4f}  {m['weight']:.3f}")
    lines.append(f"  ensemble  {_fmt(e['map'])}  {e['micro_f1']:.4f}")
  return "\n".join(lines) + "\n"
