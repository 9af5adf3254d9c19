"""Tests for the evaluation report."""

import json

import numpy as np

from imgrec.evaluation import calibration
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


def _brute_force_auc(scores, positive):
  pos, neg = scores[positive], scores[~positive]
  wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (
      pos[:, None] == neg[None, :]).sum()
  return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_counts_with_ties():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 300)
  # Rounded scores: many ties, which the rank statistic must share.
  p = np.round(rng.dirichlet(np.ones(4), 300) + np.eye(4)[y] * 0.3, 1)
  p /= p.sum(axis=1, keepdims=True)
  aucs = report_lib.roc_auc_one_vs_rest(y, p)
  for c in range(4):
    assert abs(aucs[c] - _brute_force_auc(p[:, c], y == c)) < 1e-12
  r = report_lib.classification_report(y, p, list("abcd"))
  assert abs(r["roc_auc"]["macro"] - np.mean(aucs)) < 1e-12
  # A class with no examples has no AUC, and does not enter the averages.
  r = report_lib.classification_report([0, 1, 0], np.eye(3)[[0, 1, 1]],
                                       list("xyz"))
  assert r["per_class"]["z"]["roc_auc"] is None
  assert r["roc_auc"]["macro"] is not None


def test_averages_confusions_and_mistakes():
  y = [0, 0, 0, 0, 1, 2]
  p = np.eye(3)[[0, 1, 1, 2, 1, 2]] * 0.7 + 0.1
  p[3] = [0.05, 0.05, 0.9]
  r = report_lib.classification_report(y, p, list("abc"),
                                       paths=[f"f{i}" for i in range(6)])
  assert r["confusion_matrix_normalized"][0] == [0.25, 0.5, 0.25]
  assert r["top_confusions"][0] == {"true": "a", "predicted": "b",
                                    "count": 2, "fraction": 0.5}
  assert len(r["top_confusions"]) == 2
  # Most confident mistake first: f3 at 0.9.
  assert [m["path"] for m in r["mistakes"]] == ["f3", "f1", "f2"]
  assert r["mistakes"][0]["predicted"] == "c"
  f1 = [r["per_class"][c]["f1"] for c in "abc"]
  support = [4, 1, 1]
  assert abs(r["weighted_avg"]["f1"] - np.dot(f1, support) / 6) < 1e-12
  assert r["top_k"]["1"] == r["accuracy"] and r["top_k"]["3"] == 1.0
  assert set(r["top_k"]) == {"1", "3"}  # Capped at 3 classes.


def test_ece_by_hand():
  # Two bins used: 0.9 confident (2 of 3 right), 0.6 confident (1 of 1).
  p = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
  y = np.array([0, 0, 0, 0])
  ece, bins = calibration.reliability(p, y)
  assert len(bins) == calibration.ECE_BINS
  assert abs(ece - (3 / 4 * abs(2 / 3 - 0.9) + 1 / 4 * abs(1 - 0.6))) < 1e-12
  assert sum(b["count"] for b in bins) == 4
  assert [b["accuracy"] for b in bins if b["count"]] == [1.0, 2 / 3]


def test_temperature_recovers_the_one_that_made_the_labels():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 3, (8000, 5))
  true_t = 2.0
  sharp = np.exp(logits / true_t)
  labels = np.array([rng.choice(5, p=row / row.sum()) for row in sharp])
  overconfident = np.exp(logits)
  overconfident /= overconfident.sum(axis=1, keepdims=True)
  t = calibration.fit_temperature(overconfident, labels)
  assert abs(t - true_t) < 0.15
  before, _ = calibration.reliability(overconfident, labels)
  after, _ = calibration.reliability(calibration.scale(overconfident, t),
                                     labels)
  assert after < before / 2
  r = report_lib.classification_report(
      labels[4000:], overconfident[4000:], list("abcde"),
      val_labels=labels[:4000], val_probabilities=overconfident[:4000])
  assert abs(r["temperature"] - true_t) < 0.2
  assert r["ece_after_temperature"] < r["ece"]
