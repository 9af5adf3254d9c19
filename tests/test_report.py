"""Tests for the evaluation report."""

import json

import numpy as np

from imgrec.evaluation import report as report_lib
from imgrec.run_folder import RunFolder


def test_report_values_against_hand_counts(tmp_path):
  y = [0, 0, 1, 1, 2, 2]
  # Predictions: 0,1 | 1,1 | 0,2  ->  4 of 6 right.
  p = np.array([[.8, .1, .1], [.3, .6, .1], [.1, .8, .1], [.2, .7, .1],
                [.5, .1, .4], [.1, .1, .8]])
  r = report_lib.classification_report(y, p, ["a", "b", "c"], k=2)
  assert r["num_examples"] == 6
  assert abs(r["accuracy"] - 4 / 6) < 1e-9
  assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
  assert r["per_class"]["b"]["precision"] == 2 / 3
  assert r["per_class"]["b"]["recall"] == 1.0
  assert r["per_class"]["c"]["support"] == 2
  # Top-2: sample 4 has 'c' second (0.4), so 6 of 6.
  assert r["top_k_accuracy"] == 1.0 and r["k"] == 2
  f1 = [r["per_class"][c]["f1"] for c in "abc"]
  assert abs(r["macro_f1"] - np.mean(f1)) < 1e-12
  path = RunFolder(tmp_path).write_report(r, report_lib.format_report(r))
  assert json.load(open(path))["class_names"] == ["a", "b", "c"]
  text = (tmp_path / "report.txt").read_text()
  assert "accuracy: 0.6667" in text and "confusion matrix" in text


def test_k_capped_at_num_classes():
  r = report_lib.classification_report([0, 1], np.eye(2), ["x", "y"], k=5)
  assert r["k"] == 2 and r["accuracy"] == 1.0
