"""Face verification and identification figures, and the gallery file.

Pure numpy and small: hand-made score sets whose answers are known, brute
force where a figure has a simple definition, synthetic people (a centre
direction each, images scattered around it) for the rest.
"""

import json
import os
import pickle

import numpy as np
import pytest

from imgrec.errors import ImgrecError
from imgrec.faces import gallery as gallery_lib
from imgrec.metrics import verification as metrics
from imgrec.faces.gallery import Gallery

MODEL = {"fingerprint": "f" * 16, "embedding_dim": 8, "name": "facenet-8"}
OTHER_MODEL = {"fingerprint": "0" * 16, "embedding_dim": 8,
               "name": "arcface-8"}


def unit(x):
  x = np.asarray(x, dtype=np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def people(rng, num_people, per_person, dim=16, spreads=(0.3, 1.5)):
  """Embeddings of `num_people` people scattered around their own centres;
  how far differs per person, as some people photograph worse."""
  centres = unit(rng.normal(size=(num_people, dim)))
  spread = rng.uniform(*spreads, size=num_people)
  noise = rng.normal(size=(num_people * per_person, dim)) / np.sqrt(dim)
  x = unit(np.repeat(centres, per_person, axis=0)
           + np.repeat(spread, per_person)[:, None] * noise)
  return x, np.repeat(np.arange(num_people), per_person)


def width(interval):
  return interval[1] - interval[0]


# --- verification --------------------------------------------------------------


def test_pair_scores_split_all_pairs_by_label():
  x = unit([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 1]])
  labels = ["a", "a", "b", "b", "c"]
  genuine, impostor = metrics.pair_scores(x, labels)
  assert len(genuine) == 2 and len(impostor) == 8
  np.testing.assert_allclose(sorted(genuine),
                             sorted([x[0] @ x[1], x[2] @ x[3]]))
  np.testing.assert_allclose(sorted(impostor), sorted(
      x[i] @ x[j] for i in range(5) for j in range(i + 1, 5)
      if labels[i] != labels[j]))


def test_roc_curve_runs_from_nothing_to_everything_accepted():
  far, tar, thresholds = metrics.roc_curve([0.9, 0.8, 0.4], [0.5, 0.1])
  assert (far[0], tar[0], far[-1], tar[-1]) == (0, 0, 1, 1)
  assert thresholds[0] > 0.9 and thresholds[-1] == 0.1
  assert np.all(np.diff(thresholds) < 0)
  assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
  # At threshold 0.5: genuine 0.9 and 0.8, impostor 0.5 accepted.
  k = list(thresholds).index(0.5)
  assert (far[k], tar[k]) == (0.5, pytest.approx(2 / 3))


@pytest.mark.parametrize("genuine, impostor, expected", [
    # At 0.6: FRR = 1/4 (0.4 rejected), FAR = 1/4 (0.6 accepted).
    ([0.9, 0.8, 0.7, 0.4], [0.1, 0.2, 0.3, 0.6], (0.25, 0.6)),
    # FRR - FAR goes from 1/3 (at 0.8) to -1/6 (at 0.5): two thirds of the
    # way, FAR = FRR = 1/3 at threshold 0.6.
    ([0.9, 0.8, 0.3], [0.5, 0.2], (1 / 3, 0.6)),
    ([0.9, 0.8], [0.1, 0.2], (0.0, 0.8)),
    # Everything tied: half the errors whichever way.
    ([0.5, 0.5], [0.5, 0.5], (0.5, 0.5)),
])
def test_eer_of_hand_made_scores(genuine, impostor, expected):
  rate, threshold = metrics.eer(genuine, impostor)
  assert rate == pytest.approx(expected[0])
  assert threshold == pytest.approx(expected[1])


def test_tar_at_far_takes_the_lowest_threshold_within_the_far():
  genuine = [0.9, 0.8, 0.7, 0.4]
  impostor = [0.75, 0.6, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0, -0.1, -0.2]
  # One false accept of ten allowed: anything above 0.6; the lowest such
  # threshold among the scores is 0.7, which accepts 3 of 4 genuine pairs.
  assert metrics.tar_at_far(genuine, impostor, 0.1) == (0.75, 0.7, True)
  # No false accept allowed: above 0.75, so 0.8. Ten impostor pairs cannot
  # measure a FAR of 5%: answered, but flagged.
  assert metrics.tar_at_far(genuine, impostor, 0.05) == (0.5, 0.8, False)
  # 3/10 is exactly 0.3 though 0.3 * 10 is not exactly 3 in floating point.
  assert metrics.tar_at_far(genuine, impostor, 0.3)[:2] == (1.0, 0.4)


def test_roc_auc_equals_counting_all_pairs_with_ties_as_half():
  rng = np.random.default_rng(0)
  genuine = np.round(rng.normal(0.6, 0.2, 300), 1)  # Rounded: many ties.
  impostor = np.round(rng.normal(0.2, 0.2, 500), 1)
  wins = (genuine[:, None] > impostor[None]).sum()
  ties = (genuine[:, None] == impostor[None]).sum()
  assert ties > 0
  assert metrics.roc_auc(genuine, impostor) == pytest.approx(
      (wins + 0.5 * ties) / (len(genuine) * len(impostor)))


def test_verification_needs_pairs_of_both_kinds():
  with pytest.raises(ImgrecError, match="two images of each of two people"):
    metrics.eer([0.9], [])
  with pytest.raises(ImgrecError, match="two images of each of two people"):
    # Two people with one image each: no genuine pair.
    metrics.verification_report(unit([[1, 0], [0, 1]]), ["a", "b"])


def test_verification_report_figures_and_flags():
  x, y = people(np.random.default_rng(1), 20, 6)
  report = metrics.verification_report(x, y, fars=(0.01, 1e-5),
                                       bootstrap=200)
  genuine, impostor = metrics.pair_scores(x, y)
  assert report["num_genuine"] == len(genuine) == 20 * 15
  assert report["num_impostor"] == len(impostor)
  assert report["num_identities"] == 20
  assert (report["eer"], report["eer_threshold"]) == pytest.approx(
      metrics.eer(genuine, impostor))
  assert report["roc_auc"] == pytest.approx(
      metrics.roc_auc(genuine, impostor))
  for far, resolved in (("0.01", True), ("1e-05", False)):
    entry = report["tar_at_far"][far]
    assert entry["resolved"] is resolved
    assert (entry["tar"], entry["threshold"]) == pytest.approx(
        metrics.tar_at_far(genuine, impostor, float(far))[:2])
  json.dumps(report, allow_nan=False)  # A report.json can hold it.
  without = metrics.verification_report(x, y, bootstrap=0)
  assert without["eer_ci"] == [None, None]


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_people():
  rng = np.random.default_rng(0)
  few = metrics.verification_report(*people(rng, 10, 6), bootstrap=300)
  many = metrics.verification_report(*people(rng, 80, 6), bootstrap=300)
  for report in (few, many):
    assert report["eer_ci"][0] <= report["eer"] <= report["eer_ci"][1]
    entry = report["tar_at_far"]["0.01"]
    assert entry["ci"][0] <= entry["tar"] <= entry["ci"][1]
  assert width(many["eer_ci"]) < 0.6 * width(few["eer_ci"])
  # Same seed, same interval.
  again = metrics.verification_report(*people(np.random.default_rng(0), 10,
                                              6), bootstrap=300)
  assert again["eer_ci"] == few["eer_ci"]


def test_bootstrap_resamples_people_not_pairs():
  # Twelve images of each of 20 people who differ in how well they are
  # recognized: the EER depends on which people are in the test set, and
  # each person's 66 genuine pairs rise or fall together.
  rng = np.random.default_rng(3)
  x, y = people(rng, 20, 12)
  report = metrics.verification_report(x, y, bootstrap=300)
  genuine, impostor = metrics.pair_scores(x, y)
  by_pairs = [metrics.eer(rng.choice(genuine, len(genuine)),
                          rng.choice(impostor, len(impostor)))[0]
              for _ in range(200)]
  pairs_interval = np.percentile(by_pairs, [2.5, 97.5])
  assert width(report["eer_ci"]) > 2.5 * width(pairs_interval)


# --- calibration ---------------------------------------------------------------


@pytest.mark.parametrize("k, n, expected", [
    (0, 100, (0.0, 0.0362)),
    (5, 100, (0.0164, 0.1128)),
    (100, 100, (0.9638, 1.0)),
    (1, 10, (0.0025, 0.4450)),
])
def test_clopper_pearson_known_values(k, n, expected):
  assert metrics.clopper_pearson(k, n) == pytest.approx(expected, abs=1e-4)


def test_clopper_pearson_is_symmetric_and_fast_for_many_pairs():
  low, high = metrics.clopper_pearson(30, 70)
  assert metrics.clopper_pearson(40, 70) == pytest.approx([1 - high, 1 - low])
  low, high = metrics.clopper_pearson(40_000, 4_000_000)
  assert low < 0.01 < high and high - low < 2e-4


def test_calibrated_threshold_keeps_the_far_within_the_target():
  rng = np.random.default_rng(0)
  genuine = rng.normal(0.6, 0.15, 2000)
  impostor = rng.normal(0.1, 0.15, 20000)
  every = np.sort(np.concatenate([genuine, impostor]))
  for target in (0.1, 0.01, 0.001):
    result = metrics.calibrate_threshold(genuine, impostor, target)
    threshold = result["threshold"]
    assert result["far"] == np.mean(impostor >= threshold) <= target
    assert result["tar"] == np.mean(genuine >= threshold)
    assert result["far_ci"][0] <= result["far"] <= result["far_ci"][1]
    assert (result["num_genuine"], result["num_impostor"]) == (2000, 20000)
    # The lowest such threshold: the next score below lets too many in.
    lower = every[np.searchsorted(every, threshold) - 1]
    assert np.mean(impostor >= lower) > target
  few = metrics.calibrate_threshold(genuine, impostor[:50], 0.001)
  assert few["far"] == 0 and not few["resolved"]
  assert few["far_ci"][1] == pytest.approx(0.0711, abs=1e-4)


def test_calibration_without_pairs_says_what_is_needed():
  with pytest.raises(ImgrecError, match="two images of each of two people"):
    metrics.calibrate_threshold([], [0.1, 0.2], 0.01)
  with pytest.raises(ImgrecError, match="two images of each of two people"):
    metrics.calibrate_threshold([0.9], [], 0.01)
  with pytest.raises(ImgrecError, match="between 0 and 1"):
    metrics.calibrate_threshold([0.9], [0.1], 1.5)


def test_roc_png_is_a_picture():
  rng = np.random.default_rng(0)
  png = metrics.roc_png(rng.normal(0.6, 0.2, 200), rng.normal(0.1, 0.2, 2000),
                        title="$not math$ people")
  assert png.startswith(b"\x89PNG") and len(png) > 5000


# --- identification ------------------------------------------------------------


def brute_force_ranks(gallery, gallery_labels, probes, probe_labels):
  names = sorted(set(gallery_labels))
  templates = [unit(np.mean([g for g, l in zip(gallery, gallery_labels)
                             if l == name], axis=0)) for name in names]
  ranks = []
  for probe, label in zip(probes, probe_labels):
    scores = [float(probe @ t) for t in templates]
    right = scores[names.index(label)]
    ranks.append(1 + sum(s > right for s in scores))
  return np.array(ranks)


def test_identification_ranks_match_brute_force():
  rng = np.random.default_rng(0)
  x, y = people(rng, 30, 5, dim=8, spreads=(0.5, 1.2))
  enrolled = np.arange(len(y)) % 5 < 3  # 3 images enrolled, 2 probes each.
  stranger = unit(rng.normal(size=(4, 8)))
  probes = np.concatenate([x[~enrolled], stranger])
  labels = np.concatenate([y[~enrolled], [99] * 4])
  report = metrics.identification_report(
      x[enrolled], y[enrolled], probes, labels, ranks=(1, 5),
      matching="template")
  ranks = brute_force_ranks(x[enrolled], y[enrolled], x[~enrolled],
                            y[~enrolled])
  assert report["rank1"] == pytest.approx(np.mean(ranks == 1))
  assert report["rank5"] == pytest.approx(np.mean(ranks <= 5))
  assert 0.2 < report["rank1"] < report["rank5"] < 1.0  # Neither 0 nor 1.
  assert report["num_probes"] == 60 and report["num_identities"] == 30
  assert report["num_unknown_probes"] == 4
  # Nearest image: a person with two looks keeps both.
  looks = unit(np.array([[1, 0, 0], [0, 1, 0], [0.8, 0.5, 0.0]]))
  probe = unit(np.array([[0.95, 0.05, 0.0]]))
  for matching, expected in (("nearest", 1.0), ("template", 0.0)):
    two_looks = metrics.identification_report(
        looks, ["a", "a", "b"], probe, ["a"], matching=matching)
    assert two_looks["rank1"] == expected, matching
  x, y = people(np.random.default_rng(1), 30, 2, spreads=(0.1, 0.2))
  tight = metrics.identification_report(x[::2], y[::2], x[1::2], y[1::2])
  assert tight["rank1"] == 1.0 and tight["num_unknown_probes"] == 0


def test_open_set_dir_at_far_on_hand_made_scores():
  # Five people on the first axes; a probe cos(t) * e_c + sin(t) * e_7
  # scores exactly cos(t) with person c and 0 with the others.
  gallery = np.eye(8)[:5]
  names = ["a", "b", "c", "d", "e"]

  def probe(person, score):
    v = np.zeros(8)
    v[person], v[7] = score, np.sqrt(1 - score ** 2)
    return v

  known = [probe(i, s) for i, s in enumerate([0.9, 0.8, 0.7, 0.6])]
  known.append(probe(0, 0.95))  # Of "e" but closest to "a": wrong anyway.
  unknown_scores = [0.85, 0.65, 0.5, 0.4, 0.3, 0.3, 0.2, 0.2, 0.1, 0.1]
  unknown = [probe(i % 5, s) for i, s in enumerate(unknown_scores)]
  report = metrics.open_set_report(
      gallery, names, np.array(known + unknown),
      ["a", "b", "c", "d", "e"] + ["stranger"] * 10, fars=(0.01, 0.1))
  # FAR 0.1: one stranger of ten may pass, so above 0.65: 0.7, which the
  # right answers 0.9, 0.8 and 0.7 reach, of 5 known probes.
  assert report["dir_at_far"]["0.1"] == {
      "dir": pytest.approx(0.6), "threshold": pytest.approx(0.7),
      "unknown_probes": 10, "resolved": True}
  # FAR 0.01: no stranger passes, so above 0.85; ten strangers cannot
  # measure 1%.
  assert report["dir_at_far"]["0.01"] == {
      "dir": pytest.approx(0.2), "threshold": pytest.approx(0.9),
      "unknown_probes": 10, "resolved": False}
  assert (report["num_known_probes"], report["num_unknown_probes"]) == (5, 10)
  with pytest.raises(ImgrecError, match="not in the gallery"):
    metrics.open_set_report(gallery, names, np.array(known), names)


# --- the gallery file ----------------------------------------------------------


def enrolled_gallery():
  g = Gallery.new(MODEL)
  eye = np.eye(8)
  g.enroll("ada", unit([eye[0] + 0.1 * eye[1], eye[0] - 0.1 * eye[1]]),
           ["ada/1.jpg", "ada/2.jpg"], MODEL)
  g.enroll("bo", eye[2:3], ["bo/1.jpg"], MODEL)
  g.enroll("cy", unit([eye[3] + eye[2]]), ["cy/1.jpg"], MODEL)
  return g


def test_gallery_round_trip(tmp_path):
  g = enrolled_gallery()
  g.enroll("bo", unit([np.eye(8)[2] + 0.2 * np.eye(8)[4]]), ["bo/2.jpg"],
           MODEL)
  calibration = metrics.calibrate_threshold([0.9, 0.8, 0.7], [0.1, 0.5],
                                            0.4)
  g.set_threshold(calibration, calibrated_on="faces/val")
  path = tmp_path / "people.json"
  g.save(path)
  data = json.loads(path.read_text())
  assert (data["format"], data["version"]) == ("imgrec-face-gallery", 1)
  loaded = Gallery.load(path)
  assert loaded.names == ["ada", "bo", "cy"] and len(loaded) == 3
  assert loaded.model == MODEL
  assert loaded.sources("bo") == ["bo/1.jpg", "bo/2.jpg"]
  for name in loaded.names:
    np.testing.assert_allclose(loaded.embeddings(name), g.embeddings(name),
                               atol=1e-7)
  assert loaded.threshold == {
      "value": calibration["threshold"], "far": calibration["far"],
      "far_ci": calibration["far_ci"], "tar": calibration["tar"],
      "num_genuine": 3, "num_impostor": 2, "calibrated_on": "faces/val"}
  loaded.remove("cy")
  assert loaded.names == ["ada", "bo"] and "cy" not in loaded
  with pytest.raises(ImgrecError, match="no one named 'cy'"):
    loaded.remove("cy")


def test_templates_are_renormalized_means():
  names, templates = enrolled_gallery().templates()
  assert names == ["ada", "bo", "cy"]
  np.testing.assert_allclose(templates[0], np.eye(8)[0], atol=1e-12)
  np.testing.assert_allclose(np.linalg.norm(templates, axis=1), 1.0)


def test_identify_ranks_people_best_first():
  g = enrolled_gallery()
  probe = unit(np.eye(8)[2] + 0.3 * np.eye(8)[3])
  ranked = g.identify(np.stack([probe, np.eye(8)[0]]), top_k=2)
  assert [name for name, _ in ranked[0]] == ["bo", "cy"]
  assert ranked[0][0][1] == pytest.approx(1 / np.sqrt(1.09))
  # Nearest enrolled image of ada (e0 +- 0.1 e1): cos 1/sqrt(1.01); her
  # template (e0 itself) would score 1.
  assert ranked[1][0] == ("ada", pytest.approx(1 / np.sqrt(1.01)))
  assert g.identify(np.eye(8)[0], matching="template")[0][0] == (
      "ada", pytest.approx(1.0))
  assert len(g.identify(probe, top_k=10)[0]) == 3  # All three, no more.
  with pytest.raises(ImgrecError, match="another|not with"):
    g.identify(probe, model_info=OTHER_MODEL)
  with pytest.raises(ImgrecError, match="nobody enrolled"):
    Gallery.new(MODEL).identify(probe)


def test_decide_needs_a_calibrated_threshold():
  g = enrolled_gallery()
  with pytest.raises(ImgrecError, match="run imgrec-faces calibrate first"):
    g.decide(0.9)
  g.set_threshold(metrics.calibrate_threshold([0.9, 0.8, 0.7], [0.1, 0.5],
                                              0.4))
  value = g.threshold["value"]
  assert g.decide(value) and not g.decide(np.nextafter(value, -1))
  g.set_threshold(None)
  with pytest.raises(ImgrecError, match="calibrate"):
    g.decide(0.9)


def test_enroll_refuses_another_model_and_bad_embeddings():
  g = enrolled_gallery()
  with pytest.raises(ImgrecError) as error:
    g.enroll("dee", np.eye(8)[5:6], ["x.jpg"], OTHER_MODEL)
  message = str(error.value)
  assert "facenet-8" in message and "arcface-8" in message
  assert "enroll the people again" in message
  cases = [
      ("", np.eye(8)[5:6], ["x.jpg"], "name"),
      ("dee", np.zeros((0, 8)), [], "no embeddings"),
      ("dee", 2 * np.eye(8)[5:6], ["x.jpg"], "length 2.0000"),
      ("dee", np.eye(8)[5:6, :4], ["x.jpg"], "4 values"),
      ("dee", np.full((1, 8), np.nan), ["x.jpg"], "NaN"),
      ("dee", np.eye(8)[5:7], ["x.jpg"], "one source per embedding"),
  ]
  for name, embeddings, sources, match in cases:
    with pytest.raises(ImgrecError, match=match):
      g.enroll(name, embeddings, sources, MODEL)
  assert g.names == ["ada", "bo", "cy"]  # Nothing half-enrolled.


def write(path, data):
  path.write_text(json.dumps(data) if not isinstance(data, str) else data)
  return path


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(version=2), "newer than the version 1"),
    (lambda d: d.update(version="1"), "version '1' is not 1"),
    (lambda d: d.update(format="something-else"), "not an imgrec face"),
    (lambda d: d.update(extra=1), "unknown keys extra"),
    (lambda d: d["model"].update(embedding_dim="8"), "embedding_dim"),
    (lambda d: d["identities"]["bo"].update(embeddings=[["0.5"] * 8]),
     "other than numbers"),
    (lambda d: d["identities"]["bo"].update(
        embeddings=[[True] + [False] * 7]), "other than numbers"),
    (lambda d: d["identities"]["bo"].update(embeddings=[[1.0] * 4]),
     "not a list of 8 numbers"),
    (lambda d: d["identities"]["bo"].update(embeddings=[[0.5] * 8]),
     "length 1.4142"),
    (lambda d: d["identities"]["bo"].update(embeddings=[[10 ** 400] * 8]),
     "too large"),
    (lambda d: d["identities"]["bo"].update(sources=["a", "b"]),
     "1 embeddings but 2 sources"),
    (lambda d: d["identities"].update(bo=[]), "is not an object"),
    (lambda d: d.update(threshold={"value": 0.5}), "threshold lacks"),
])
def test_load_refuses_a_crafted_or_damaged_file(tmp_path, change, match):
  path = tmp_path / "people.json"
  enrolled_gallery().save(path)
  data = json.loads(path.read_text())
  change(data)
  write(path, data)
  with pytest.raises(ImgrecError, match=match) as error:
    Gallery.load(path)
  assert str(path) in str(error.value)
  assert "\n" not in str(error.value)


def test_load_refuses_what_is_not_a_gallery(tmp_path, monkeypatch):
  with pytest.raises(ImgrecError, match="no face gallery at"):
    Gallery.load(tmp_path / "missing.json")
  text = tmp_path / "people.json"
  enrolled_gallery().save(text)
  data = json.loads(text.read_text())
  data["identities"]["bo"]["embeddings"][0][1] = float("nan")
  with pytest.raises(ImgrecError, match="NaN, which is not a number"):
    Gallery.load(write(tmp_path / "nan.json", data))
  # 1e999 is valid JSON that Python reads as infinity.
  data["identities"]["bo"]["embeddings"][0][1] = "huge"
  with pytest.raises(ImgrecError, match="infinite"):
    Gallery.load(write(tmp_path / "inf.json",
                       json.dumps(data).replace('"huge"', "1e999")))
  crafted = tmp_path / "crafted.json"
  crafted.write_bytes(pickle.dumps({"format": "imgrec-face-gallery"}))
  with pytest.raises(ImgrecError, match="not valid JSON"):
    Gallery.load(crafted)
  with pytest.raises(ImgrecError, match="not an imgrec face gallery"):
    Gallery.load(write(tmp_path / "list.json", "[1, 2]"))
  with pytest.raises(ImgrecError, match="a folder"):
    Gallery.load(tmp_path)
  monkeypatch.setattr(gallery_lib, "MAX_FILE_BYTES", 100)
  with pytest.raises(ImgrecError, match="more than the"):
    Gallery.load(text)


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
  path = tmp_path / "people.json"
  enrolled_gallery().save(path)
  Gallery.new(MODEL).save(path)
  assert os.listdir(tmp_path) == ["people.json"]
  assert len(Gallery.load(path)) == 0
