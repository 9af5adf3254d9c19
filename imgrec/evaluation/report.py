"""Classification reports: accuracy, top-k, per-class P/R/F1, confusion."""

import numpy as np


def classification_report(y_true, probabilities, class_names, k=5):
  """Computes the evaluation report of a classifier.

  Args:
    y_true: int array [N] of true labels.
    probabilities: float array [N, num_classes].
    class_names: names of the classes, in label order.
    k: k of the top-k accuracy (capped at the number of classes).

  Returns:
    A JSON-serializable dict with num_examples, accuracy, top_k_accuracy, k,
    per_class {name: {precision, recall, f1, support}}, macro_f1,
    confusion_matrix (rows: true class, columns: predicted) and class_names.
  """
  y_true = np.asarray(y_true, dtype=np.int64)
  probabilities = np.asarray(probabilities, dtype=np.float64)
  n, num_classes = len(y_true), len(class_names)
  k = int(min(k, num_classes))
  y_pred = probabilities.argmax(axis=1) if n else np.zeros(0, np.int64)
  confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
  np.add.at(confusion, (y_true, y_pred), 1)
  if n:
    top_k = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    top_k_accuracy = float(np.mean((top_k == y_true[:, None]).any(axis=1)))
  else:
    top_k_accuracy = 0.0
  per_class, f1s = {}, []
  for i, name in enumerate(class_names):
    tp = confusion[i, i]
    predicted, support = confusion[:, i].sum(), confusion[i, :].sum()
    precision = tp / predicted if predicted else 0.0
    recall = tp / support if support else 0.0
    f1 = (2 * precision * recall / (precision + recall)
          if precision + recall else 0.0)
    per_class[name] = {"precision": float(precision), "recall": float(recall),
                       "f1": float(f1), "support": int(support)}
    if support:
      f1s.append(f1)
  return {
      "num_examples": int(n),
      "accuracy": float(np.trace(confusion) / n) if n else 0.0,
      "top_k_accuracy": top_k_accuracy,
      "k": k,
      "per_class": per_class,
      "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
      "confusion_matrix": confusion.tolist(),
      "class_names": list(class_names),
  }


def format_report(report):
  """Renders a report as a plain-text table for terminals and report.txt."""
  names = report["class_names"]
  width = max([len("class")] + [len(c) for c in names])
  lines = [
      f"examples: {report['num_examples']}   accuracy: "
      f"{report['accuracy']:.4f}   top-{report['k']}: "
      f"{report['top_k_accuracy']:.4f}   macro F1: {report['macro_f1']:.4f}",
      "",
      f"{'class':<{width}}  precision  recall     f1  support",
  ]
  for c in names:
    m = report["per_class"][c]
    lines.append(f"{c:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  "
                 f"{m['f1']:5.4f}  {m['support']:7d}")
  lines += ["", "confusion matrix (rows: true, columns: predicted)"]
  cell = max(5, max(len(str(v)) for row in report["confusion_matrix"]
                    for v in row) + 1)
  lines.append(" " * width + "".join(f"{i:>{cell}d}" for i in range(len(names))))
  for i, (c, row) in enumerate(zip(names, report["confusion_matrix"])):
    lines.append(f"{c:<{width}}" + "".join(f"{v:>{cell}d}" for v in row)
                 + f"   [{i}]")
  return "\n".join(lines) + "\n"
