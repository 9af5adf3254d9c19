"""imgrec-audit: duplicates and leakage, label issues, outliers, and acting
on them (--exclude)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from PIL import ImageEnhance

from imgrec.data import folder as folder_lib
from imgrec.data.audit import duplicates
from imgrec.data.audit import fingerprint
from imgrec.data.audit import report
from imgrec.training import audit_labels
from conftest import write_toy_folder


def _scene(seed, size=64):
  """A smooth photo-like RGB image: a few soft blobs on a gradient."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:size, :size] / size
  image = 60 + 80 * (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))
  for _ in range(5):
    cy, cx, r = rng.uniform(0.15, 0.85, 2).tolist() + [rng.uniform(.05, .2)]
    image = image + rng.uniform(-90, 90) * np.exp(
        -((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
  gray = np.clip(image, 0, 255)
  tint = rng.uniform(0.7, 1.0, 3)
  return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)


def _variant(rgb, kind):
  image = Image.fromarray(rgb)
  w, h = image.size
  if kind == "resize":
    return np.asarray(image.resize((round(w * 0.6), round(h * 0.6)),
                                   Image.Resampling.BILINEAR))
  if kind == "jpeg":
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=50)
    return np.asarray(Image.open(buffer).convert("RGB"))
  if kind == "crop":
    return np.asarray(image.crop((4, 2, w, h - 3)))  # About 6% off.
  return np.asarray(ImageEnhance.Brightness(image).enhance(1.15))


def _similarity(a, b):
  fa, fb = fingerprint.fingerprint(a), fingerprint.fingerprint(b)
  windows = np.stack([fa.window, fb.window])
  pair = np.array([[0, 1]])
  blurs = [fa.blur, fb.blur]
  return max(duplicates.window_similarity(windows, blurs, pair)[0],
             duplicates.window_similarity(windows, blurs, pair,
                                          duplicates.ZOOMS)[0])


@pytest.mark.parametrize("kind", ["resize", "jpeg", "crop", "brightness"])
def test_a_copy_matches_its_original_and_not_another_image(kind):
  original = _scene(1)
  assert _similarity(original, _variant(original, kind)) >= 0.97
  assert _similarity(original, _scene(2)) < 0.9


def test_the_digest_is_of_the_pixels_not_the_file():
  rgb = _scene(3)
  assert fingerprint.digest(rgb) == fingerprint.digest(rgb.copy())
  changed = rgb.copy()
  changed[0, 0, 0] ^= 1
  assert fingerprint.digest(rgb) != fingerprint.digest(changed)
  # A flat image has no window (nothing to line up) but a digest.
  flat = fingerprint.fingerprint(np.full((8, 8, 3), 7, np.uint8))
  assert flat.window is None and flat.digest


def _prints(images):
  found = [fingerprint.fingerprint(x) for x in images]
  return ([f.digest for f in found], [f.window for f in found],
          [f.blur for f in found], [f.frame for f in found])


def test_groups_join_exact_and_near_copies_and_nothing_else():
  scenes = [_scene(s) for s in range(10, 40)]
  images = scenes + [scenes[0].copy(), _variant(scenes[1], "jpeg"),
                     _variant(scenes[2], "crop")]
  groups, checked = duplicates.find_groups(*_prints(images))
  found = sorted((g["kind"], g["members"]) for g in groups)
  assert found == [("exact", [0, 30]), ("near", [1, 31]), ("near", [2, 32])]
  assert checked > 0


def test_lookalikes_are_not_copies_but_a_copy_among_them_is():
  """Images 0-3 are lookalikes (a handwritten 1 among a thousand): each
  one's best match is nearly as good as its next, none stands apart. Image
  4's match with 5 stands apart from 4's next best: a copy. 6 and 7 match
  at `certain`: copies whatever else they match."""
  pairs = np.array([[0, 1], [0, 2], [1, 2], [2, 3], [1, 3],
                    [4, 5], [4, 0], [5, 1], [6, 7], [6, 0], [7, 0]])
  sims = np.array([0.990, 0.988, 0.987, 0.989, 0.986,
                   0.985, 0.90, 0.91, 0.996, 0.995, 0.995])
  kept = duplicates.distinct_matches(pairs, sims, 8, threshold=0.97,
                                     certain=0.995, ratio=0.2)
  assert [tuple(p) for p in pairs[kept]] == [(4, 5), (6, 7), (6, 0), (7, 0)]


def test_the_index_finds_copies_among_thousands_without_all_pairs():
  rng = np.random.default_rng(0)
  n = duplicates.BRUTE_FORCE_BELOW + 1000
  x = rng.normal(size=(n, 64)).astype(np.float32)
  planted = [(i, n + k) for k, i in enumerate(range(0, 1000, 50))]
  copies = x[[i for i, _ in planted]] + 0.05 * rng.normal(size=(20, 64))
  x = np.concatenate([x, copies]).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  pairs = {tuple(p) for p in duplicates.candidate_pairs(x).tolist()}
  assert set(planted) <= pairs
  assert len(pairs) < 20 * len(x)  # Not all N^2 / 2 pairs.


def test_groups_across_splits_are_leakage_across_classes_conflicts():
  items = [("a.png", "cat", "train"), ("b.png", "cat", "test"),
           ("c.png", "dog", "train"), ("d.png", "cat", "train"),
           ("e.png", "cat", "val"), ("f.png", "cat", "train")]
  groups = [{"members": [2, 3], "kind": "exact", "similarity": 1.0},
            {"members": [0, 1, 4], "kind": "near", "similarity": 0.98},
            {"members": [3, 5], "kind": "near", "similarity": 0.99}]
  listed, summary = report.duplicates_section(items, groups)
  assert listed[0]["paths"] == ["a.png", "b.png", "e.png"]  # Leakage first.
  assert listed[0]["leakage"] and not listed[0]["conflict"]
  assert listed[1]["conflict"] and not listed[1]["leakage"]
  assert summary["leakage_groups"] == 1 and summary["conflict_groups"] == 1
  assert summary["redundant_images"] == 4
  assert summary["leakage_by_splits"] == {"test-train-val": 1}
  # The copies outside the group's earliest split go.
  assert report.leaked_copies(listed) == ["b.png", "e.png"]


def test_exclusion_lists_leave_the_files_out_by_any_name(tmp_path):
  (tmp_path / "a.png").write_bytes(b"x")
  (tmp_path / "b.png").write_bytes(b"x")
  os.symlink(tmp_path / "b.png", tmp_path / "link.png")
  listing = tmp_path / "exclude.txt"
  listing.write_text(f"# a comment\n\n{tmp_path / 'link.png'}\n")
  found = folder_lib.ImageFolder(
      root=str(tmp_path), class_names=["x"],
      splits={"train": folder_lib.Split([str(tmp_path / "a.png"),
                                         str(tmp_path / "b.png")], [0, 0])},
      layout="classes")
  kept = folder_lib.exclude(found, folder_lib.read_exclude(str(listing)))
  assert kept.splits["train"].paths == [str(tmp_path / "a.png")]
  assert kept.ignored == [(str(tmp_path / "b.png"), "excluded")]


def test_folds_deal_every_class_evenly():
  labels = [0] * 10 + [1] * 7
  fold = audit_labels.fold_of(labels, 3, seed=0)
  for label in (0, 1):
    counts = np.bincount(fold[np.asarray(labels) == label], minlength=3)
    assert counts.max() - counts.min() <= 1


def test_confident_learning_ranks_the_flipped_labels_first():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 40)
  probabilities = np.full((120, 3), 0.05)
  probabilities[np.arange(120), labels] = 0.9
  flipped = [3, 50, 100]
  for i in flipped:  # The model says another class; the label disagrees.
    probabilities[i] = [0.05, 0.05, 0.05]
    probabilities[i, (labels[i] + 1) % 3] = 0.9
  probabilities += rng.uniform(0, 0.01, probabilities.shape)
  probabilities /= probabilities.sum(axis=1, keepdims=True)
  items = [(f"{i}.png", str(labels[i]), "train") for i in range(120)]
  issues = audit_labels.label_issues(labels, probabilities, ["0", "1", "2"],
                                     items)
  assert sorted(int(i["path"][:-4]) for i in issues) == flipped
  assert all(i["suggested"] != i["given"] for i in issues)


def test_outliers_are_far_from_every_prototype():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1], 100)
  centres = np.array([[5.0, 0, 0], [0, 5.0, 0]])
  embeddings = centres[labels] + rng.normal(size=(200, 3)) * 0.3
  embeddings[7] = np.array([0, 0, 5.0])  # Of no class.
  items = [(f"{i}.png", str(labels[i]), "train") for i in range(200)]
  members = np.eye(2, dtype=bool)[labels]
  judged = np.ones(200, bool)
  found, fence = audit_labels.outliers(embeddings, np.zeros(200, int),
                                       members, ["0", "1"], items, judged)
  assert found[0]["path"] == "7.png" and fence < found[0]["score"]
  assert len(found) <= 2  # At most 1% of the images.
  assert found[0]["score"] > 5 * max(o["score"] for o in found[1:]) if len(
      found) > 1 else True
  # An image no model judged out of sample (--model_dir's training images)
  # is never listed.
  judged[7] = False
  found, _ = audit_labels.outliers(embeddings, np.zeros(200, int), members,
                                   ["0", "1"], items, judged)
  assert "7.png" not in [o["path"] for o in found]
  # A label set: an image of both classes is near both prototypes.
  both = members.copy()
  both[:20] = True
  found, _ = audit_labels.outliers(embeddings, np.zeros(200, int), both,
                                   ["0", "1"], items, np.ones(200, bool))
  assert found[0]["path"] == "7.png"


def _write(path, rgb):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(rgb).save(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  """A folder of two classes of scenes with an exact copy across classes,
  a near copy in the same class, and a class name that is HTML."""
  root = tmp_path_factory.mktemp("audit") / "data"
  for c, name in enumerate(["plain", "<b>odd</b>"]):
    for i in range(12):
      _write(str(root / name / f"{i:02d}.png"), _scene(100 * c + i))
  _write(str(root / "<b>odd</b>" / "copy_of_plain_00.png"), _scene(0))
  buffer = io.BytesIO()
  Image.fromarray(_variant(_scene(1), "resize")).save(buffer, "JPEG",
                                                      quality=85)
  (root / "plain" / "small_copy.jpg").write_bytes(buffer.getvalue())
  return root


def _audit(*args):
  return subprocess.run([sys.executable, "-m", "imgrec.cli.audit", *args],
                        capture_output=True, text=True, timeout=600)


def _listing(folder):
  return sorted((d, tuple(sorted(f))) for d, _, f in os.walk(folder))


@pytest.mark.slow
def test_audit_finds_the_copies_and_writes_nothing_in_the_data(planted,
                                                              tmp_path):
  before = _listing(planted)
  out = tmp_path / "out"
  proc = _audit(f"--data_dir={planted}", "--parts=duplicates",
                f"--out={out}", f"--prepared_dir={tmp_path / 'prepared'}")
  assert proc.returncode == 0, proc.stderr
  assert _listing(planted) == before
  found = json.load(open(out / "audit.json"))
  groups = {tuple(sorted(os.path.basename(p) for p in g["paths"])):
            (g["kind"], g["conflict"]) for g in found["duplicates"]}
  assert groups[("00.png", "copy_of_plain_00.png")] == ("exact", True)
  assert groups[("01.png", "small_copy.jpg")] == ("near", False)
  assert len(groups) == 2
  page = open(out / "audit.html", encoding="utf-8").read()
  assert "<b>odd</b>" not in page and "&lt;b&gt;odd&lt;/b&gt;" in page
  assert "<script" not in page and "data:image/png;base64," in page
  # A rerun replaces the audit's own files.
  proc = _audit(f"--data_dir={planted}", "--parts=duplicates",
                f"--out={out}", f"--prepared_dir={tmp_path / 'prepared'}")
  assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", ["inside_data", "user_folder", "a_file",
                                  "a_run"])
def test_audit_refuses_an_out_it_may_not_write_in_one_line(planted, tmp_path,
                                                          case):
  before = _listing(planted)
  if case == "inside_data":
    out = planted / "audit_here"
  elif case == "user_folder":
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
  elif case == "a_file":
    out = tmp_path / "file"
    out.write_text("keep me")
  else:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".imgrec-run").write_text('{"command": "imgrec-train"}')
  proc = _audit(f"--data_dir={planted}", "--parts=duplicates",
                f"--out={out}", f"--prepared_dir={tmp_path / 'prepared'}")
  assert proc.returncode == 2
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert "--out" in proc.stderr
  assert _listing(planted) == before
  if case == "user_folder":
    assert sorted(os.listdir(out)) == ["notes.txt"]
  if case == "a_file":
    assert out.read_text() == "keep me"


@pytest.mark.slow
def test_labels_part_and_training_that_excludes_what_it_flags(planted,
                                                             tmp_path):
  out = tmp_path / "out"
  proc = _audit(f"--data_dir={planted}", "--parts=labels,outliers",
                f"--out={out}", f"--prepared_dir={tmp_path / 'prepared'}",
                "--folds=2", "--epochs=1", "--image_size=16")
  assert proc.returncode == 0, proc.stderr
  found = json.load(open(out / "audit.json"))
  assert isinstance(found["label_issues"], list)
  assert isinstance(found["outliers"], list)
  assert found["summary"]["model"]["folds"] == 2
  rows = open(out / "relabel.csv").read().splitlines()
  assert rows[0] == "path,label,split" and len(rows) == 1 + 26
  # imgrec-train --exclude leaves the listed files out of every split.
  listing = tmp_path / "exclude.txt"
  gone = str(planted / "plain" / "03.png")
  listing.write_text(f"# reviewed\n{gone}\n")
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  run = trainer.train(TrainConfig(
      data_dir=str(planted), model_dir=str(tmp_path / "run"), epochs=1,
      image_size=16, export=False, verbose=0, exclude=str(listing)))
  splits = json.load(open(os.path.join(run["model_dir"], "splits.json")))
  listed = [p for s in splits["splits"].values() for p in s["paths"]]
  assert len(listed) == 25 and not any(p.endswith("plain/03.png")
                                       for p in listed)


HOSTILE = "<script>window.__pwned = 1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned = 2">'


@pytest.mark.slow
def test_audit_page_in_chromium(tmp_path):
  """audit.html in a real browser: every thumbnail shows, the hostile
  class and file names stay text, nothing is fetched."""
  sync_api = pytest.importorskip(
      "playwright.sync_api",
      reason="playwright is not installed: no browser check of audit.html")
  chromium = "/usr/bin/chromium"
  if not os.path.exists(chromium):
    pytest.skip(f"no Chromium at {chromium}: no browser check of audit.html")
  from imgrec.evaluation import audit_html  # pylint: disable=g-import-not-at-top
  paths = []
  for i in range(3):
    path = str(tmp_path / f"{i}{HOSTILE_IMG}.png".replace("/", "_"))
    Image.fromarray(_scene(i)).save(path)
    paths.append(path)
  audit = {
      "data": {"root": str(tmp_path)},
      "summary": {"classes": {HOSTILE: {"images": 2, "share": 0.67},
                              "b": {"images": 1, "share": 0.33}},
                  "duplicates": {"images": 3, "groups": 1, "exact_groups": 0,
                                 "near_groups": 1, "leakage_groups": 1,
                                 "conflict_groups": 1,
                                 "redundant_images": 1}},
      "duplicates": [{"kind": "near", "paths": paths[:2],
                      "classes": [HOSTILE, "b"], "splits": ["train", "test"],
                      "similarity": 0.99, "leakage": True,
                      "conflict": True}],
      "label_issues": [{"path": paths[2], "given": HOSTILE,
                        "suggested": "b", "score": 0.9, "split": "train"}],
      "outliers": [{"path": paths[0], "given": "b", "split": "train",
                    "score": 0.5}]}
  page = tmp_path / "audit.html"
  page.write_text(audit_html.render(audit), encoding="utf-8")
  requests = []
  with sync_api.sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=chromium, timeout=60_000,
        args=["--headless", "--no-sandbox", "--disable-gpu"])
    try:
      tab = browser.new_page(viewport={"width": 1280, "height": 900})
      tab.on("request", lambda request: requests.append(request.url))
      tab.goto(page.as_uri(), wait_until="load")
      images = tab.evaluate(
          "() => Array.from(document.images,"
          " i => ({complete: i.complete, width: i.naturalWidth}))")
      pwned = tab.evaluate("() => typeof window.__pwned")
      text = tab.evaluate("() => document.body.innerText")
    finally:
      browser.close()
  assert len(images) == 4  # Two in the group, one issue, one outlier.
  assert all(i["complete"] and i["width"] > 0 for i in images), images
  assert pwned == "undefined"
  assert HOSTILE in text and "leakage, conflicting labels" in text
  assert not [url for url in requests
              if not url.startswith(("data:", page.as_uri()))], requests


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
  """train/ and test/ splits, one training image copied (re-encoded) into
  test."""
  root = tmp_path_factory.mktemp("leaky") / "data"
  for c, name in enumerate(["a", "b"]):
    for i in range(8):
      _write(str(root / "train" / name / f"{i}.png"), _scene(300 + 10 * c + i))
    for i in range(3):
      _write(str(root / "test" / name / f"{i}.png"), _scene(400 + 10 * c + i))
  Image.fromarray(_scene(302)).save(str(root / "test" / "a" / "copy.jpg"),
                                    quality=90)
  return root


@pytest.mark.slow
def test_training_with_leakage_fail_stops_in_one_line(leaky, tmp_path):
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.errors import ImgrecError  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  with pytest.raises(ImgrecError, match="1 across splits") as raised:
    trainer.train(TrainConfig(data_dir=str(leaky),
                              model_dir=str(tmp_path / "run"), epochs=1,
                              image_size=16, export=False, verbose=0,
                              leakage="fail"))
  assert "\n" not in str(raised.value) and "copy.jpg" in str(raised.value)


@pytest.mark.slow
def test_training_with_leakage_drop_records_what_it_dropped(leaky, tmp_path):
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  run = trainer.train(TrainConfig(data_dir=str(leaky),
                                  model_dir=str(tmp_path / "run"), epochs=1,
                                  image_size=16, export=False, verbose=0,
                                  leakage="drop"))
  splits = json.load(open(os.path.join(run["model_dir"], "splits.json")))
  copy = str(leaky / "test" / "a" / "copy.jpg")
  assert splits["dropped_for_leakage"] == [copy]
  assert copy not in splits["splits"]["test"]["paths"]
  assert len(splits["splits"]["test"]["paths"]) == 6
  data_report = json.load(open(os.path.join(run["model_dir"],
                                            "data_report.json")))
  assert data_report["duplicates"]["leakage_groups"] == 1
  assert data_report["duplicates"]["leakage_mode"] == "drop"


def test_shapes_alike_in_gray_but_not_in_colour_are_not_copies():
  """The built-in shapes' circles: alike in the gray window, told apart by
  the colour of the image and of its ink (40 false groups before)."""
  def circle(colour, background):
    y, x = np.mgrid[:64, :64]
    image = np.empty((64, 64, 3), np.uint8)
    image[:] = background
    image[(y - 32) ** 2 + (x - 30) ** 2 < 15 ** 2] = colour
    return image
  images = [circle((120, 20, 200), (90, 150, 230)),
            circle((60, 60, 120), (90, 150, 230)),
            circle((200, 40, 40), (60, 200, 120)),
            circle((40, 150, 40), (200, 60, 60))]
  groups, _ = duplicates.find_groups(*_prints(images), colours=[
      fingerprint.fingerprint(x).colour for x in images])
  assert not groups
  # The same circle, brighter and re-encoded, still is a copy.
  copy = _variant(_variant(images[0], "brightness"), "jpeg")
  found = [fingerprint.fingerprint(x) for x in images + [copy]]
  groups, _ = duplicates.find_groups(*_prints(images + [copy]),
                                     colours=[f.colour for f in found])
  assert [g["members"] for g in groups] == [[0, 4]]


@pytest.mark.slow  # Trains a run, then audits with it.
def test_a_finished_run_judges_only_its_held_out_images(planted, tmp_path):
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.errors import ImgrecError  # pylint: disable=g-import-not-at-top
  from imgrec.training import audit  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  run = trainer.train(TrainConfig(
      data_dir=str(planted), model_dir=str(tmp_path / "run"), epochs=1,
      image_size=16, val_split=0.25, test_split=0.25, export=False,
      verbose=0, leakage="off"))["model_dir"]
  splits = json.load(open(os.path.join(run, "splits.json")))["splits"]
  held = {os.path.realpath(p) for s in ("val", "test")
          for p in splits[s]["paths"]}
  config = dict(data_dir=str(planted), parts=("labels", "outliers"),
                model_dir=run, out=str(tmp_path / "out"),
                prepared_dir=str(tmp_path / "prepared"), progress=False)
  found = audit.audit(config)["audit"]
  model = found["summary"]["model"]
  assert model["source"] == "model_dir" and "folds" not in model
  assert model["judged"] == len(held) and model["not_judged"] == 26 - len(
      held)
  judged = {os.path.realpath(i["path"]) for i in
            found["label_issues"] + found["outliers"]}
  assert judged <= held  # Its training images are in-sample: never judged.
  assert not (tmp_path / "out" / "folds").exists()  # Nothing trained.
  # A run of other classes, or of none of these images, is one line.
  other = trainer.train(TrainConfig(
      data_dir=write_toy_folder(tmp_path / "toy", per_class=6),
      model_dir=str(tmp_path / "other"), epochs=1, image_size=16,
      export=False, verbose=0, leakage="off"))["model_dir"]
  with pytest.raises(ImgrecError, match="trained on classes") as raised:
    audit.audit(dict(config, model_dir=other, out=str(tmp_path / "o2")))
  assert "\n" not in str(raised.value)
  inside = trainer.train(TrainConfig(
      data_dir=str(planted), model_dir=str(tmp_path / "all"), epochs=1,
      image_size=16, val_split=0, test_split=0, export=False, verbose=0,
      leakage="off"))["model_dir"]
  with pytest.raises(ImgrecError, match="in-sample"):
    audit.audit(dict(config, model_dir=inside, out=str(tmp_path / "o3")))


@pytest.mark.slow  # Two folds of multi-label training.
def test_label_sets_are_audited_and_relabeled_as_label_sets(tmp_path):
  from test_multilabel_data import write_multilabel_csv  # pylint: disable=g-import-not-at-top
  from imgrec.training import audit  # pylint: disable=g-import-not-at-top
  csv_path = write_multilabel_csv(tmp_path / "data", count=48)
  out = tmp_path / "out"
  result = audit.audit(dict(
      labels_csv=csv_path, task="multilabel", parts=("duplicates", "labels",
                                                     "outliers"),
      folds=2, epochs=2, image_size=16, batch_size=8, out=str(out),
      prepared_dir=str(tmp_path / "prepared"), progress=False))
  found = result["audit"]
  assert found["data"]["task"] == "multilabel"
  assert found["data"]["class_names"] == ["blue", "green", "red"]
  assert found["summary"]["model"]["judged"] == 48
  assert 0 <= found["summary"]["model"]["held_out_label_accuracy"] <= 1
  # Every image has a class share by label (an image counts for each).
  shares = found["summary"]["classes"]
  assert sum(c["images"] for c in shares.values()) == sum(
      len(line.split(",")[1].split()) for line in
      open(csv_path).read().splitlines()[1:])
  for issue in found["label_issues"]:
    assert isinstance(issue["given"], list)
    assert issue["suggested"] and isinstance(issue["suggested"], list)
    assert set(issue["doubted"]) == set(issue["given"]) ^ set(
        issue["suggested"])
  rows = open(out / "relabel.csv").read().splitlines()
  assert rows[0] == "path,labels,split" and len(rows) == 49
  # relabel.csv is a labels CSV the multi-label task reads back.
  from imgrec.data import multilabel as multilabel_data  # pylint: disable=g-import-not-at-top
  back = multilabel_data.read_multilabel_csv(str(out / "relabel.csv"),
                                             allow_outside=True)
  assert len(back.paths) == 48
  page = open(out / "audit.html", encoding="utf-8").read()
  assert "<script" not in page


@pytest.mark.slow  # Two multi-label runs.
def test_multilabel_training_leaves_the_excluded_files_out(tmp_path):
  from test_multilabel_data import write_multilabel_csv  # pylint: disable=g-import-not-at-top
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  csv_path = write_multilabel_csv(tmp_path / "data", count=40)
  gone = str(tmp_path / "data" / "img" / "005.png")
  listing = tmp_path / "exclude.txt"
  listing.write_text(f"{gone}\n/not/in/the/data.png\n")
  run = trainer.train(TrainConfig(
      task="multilabel", labels_csv=csv_path, model_dir=str(tmp_path / "run"),
      epochs=1, image_size=16, val_split=0.25, test_split=0.25,
      export=False, verbose=0, exclude=str(listing)))["model_dir"]
  splits = json.load(open(os.path.join(run, "splits.json")))["splits"]
  listed = [p for s in splits.values() for p in s["paths"]]
  assert len(listed) == 39 and gone not in listed


def test_fingerprints_in_worker_processes_equal_one_process(tmp_path,
                                                            monkeypatch,
                                                            capfd):
  from imgrec.data.audit import store  # pylint: disable=g-import-not-at-top
  paths = []
  for i in range(40):
    paths.append(str(tmp_path / f"{i:02d}.png"))
    Image.fromarray(_scene(500 + i % 30)).save(paths[-1])
  (tmp_path / "bad.png").write_bytes(b"not an image")
  paths.append(str(tmp_path / "bad.png"))
  # The same chunks both ways (numpy's float32 sums follow the batch).
  monkeypatch.setattr(store, "CHUNK", 6)
  alone = store.fingerprint_files(paths, workers=1)
  monkeypatch.setattr(store, "PROCESS_MIN", 8)
  shared = store.fingerprint_files(paths, workers=2)
  assert shared.digests == alone.digests and alone.digests[-1] == ""
  for name in ("windows", "has_window", "blurs", "frames", "colours"):
    np.testing.assert_array_equal(getattr(shared, name),
                                  getattr(alone, name), err_msg=name)
  assert "warning" not in capfd.readouterr().err
  # Workers that cannot start: the same fingerprints, said in one line.
  monkeypatch.setattr(store, "_worker_command", lambda: (
      [str(tmp_path / "no-python-here")], dict(os.environ)))
  again = store.fingerprint_files(paths, workers=2)
  assert again.digests == alone.digests
  err = capfd.readouterr().err
  assert err.count("\n") == 1 and "without worker processes" in err


def test_the_verification_on_threads_equals_one_thread():
  images = [_scene(i) for i in range(30)] + [
      _variant(_scene(i), kind) for i, kind in enumerate(
          ["resize", "jpeg", "crop", "brightness"])]
  _, windows, blurs, _ = _prints(images)
  windows, blurs = np.stack(windows), np.asarray(blurs)
  pairs = np.asarray([(a, b) for a in range(len(images))
                      for b in range(len(images)) if a != b])
  one = duplicates.window_similarity(windows, blurs, pairs, block=64)
  two = duplicates.window_similarity(windows, blurs, pairs, block=64,
                                     workers=2)
  np.testing.assert_array_equal(one, two)
  assert (one[(pairs[:, 0] == 30) & (pairs[:, 1] == 0)] > 0.97).all()


def test_a_large_photo_is_held_reduced_while_its_chunk_is_read(tmp_path):
  from imgrec.data.audit import store  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "photo.png")
  rgb = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3),
                                          dtype=np.uint8)
  Image.fromarray(rgb).save(path)
  reduced = store._read(path, 10**8)  # pylint: disable=protected-access
  assert max(reduced.gray.shape) <= fingerprint.WORK_SIDE
  assert reduced.rgb.shape[:2] == reduced.gray.shape
  assert reduced.rgb.nbytes < rgb.nbytes // 20  # Not the photo's pixels.
  assert reduced.digest == fingerprint.digest(rgb)
  assert store.chunk_prints([path], 10**8)[0].frame[3:] == (1200, 1600)


def _audit_here(planted, tmp_path, **kw):
  from imgrec.training import audit  # pylint: disable=g-import-not-at-top
  config = dict(data_dir=str(planted), parts=("duplicates",),
                out=str(tmp_path / "out"),
                prepared_dir=str(tmp_path / "prepared"), progress=False)
  return audit.audit(dict(config, **kw))


@pytest.mark.parametrize("case", ["csv_elsewhere", "prepared_inside",
                                  "prepared_a_file", "empty_model_dir",
                                  "too_many_folds", "folds_a_link"])
def test_what_the_audit_refuses_it_refuses_before_writing(planted, tmp_path,
                                                          case):
  from imgrec.errors import ImgrecError  # pylint: disable=g-import-not-at-top
  before = _listing(planted)
  kw = {}
  if case == "csv_elsewhere":
    # A CSV in another folder listing the data's images: --out beside
    # them is still inside the data.
    (tmp_path / "csv").mkdir()
    rows = [f"{planted / 'plain' / f'{i:02d}.png'},plain" for i in range(3)]
    rows += [f"{planted / '<b>odd</b>' / f'{i:02d}.png'},odd"
             for i in range(3)]
    (tmp_path / "csv" / "l.csv").write_text("path,label\n" +
                                            "\n".join(rows) + "\n")
    kw = dict(data_dir=None, labels_csv=str(tmp_path / "csv" / "l.csv"),
              allow_outside=True, out=str(planted / "x"))
  elif case == "prepared_inside":
    kw = dict(prepared_dir=str(planted / "cache"))
  elif case == "prepared_a_file":
    (tmp_path / "f").write_text("mine")
    kw = dict(prepared_dir=str(tmp_path / "f"))
  elif case == "empty_model_dir":
    (tmp_path / "empty").mkdir()
    kw = dict(parts=("labels",), model_dir=str(tmp_path / "empty"))
  elif case == "too_many_folds":
    kw = dict(parts=("labels",), folds=50)
  else:
    (tmp_path / "out").mkdir()
    (tmp_path / "mine").mkdir()
    os.symlink(tmp_path / "mine", tmp_path / "out" / "folds")
    (tmp_path / "out" / ".imgrec-run").write_text(
        '{"command": "imgrec-audit"}')
  with pytest.raises(ImgrecError) as raised:
    _audit_here(planted, tmp_path, **kw)
  assert "\n" not in str(raised.value)
  assert _listing(planted) == before
  if case == "folds_a_link":
    assert not os.listdir(tmp_path / "mine")
  elif case != "csv_elsewhere":
    assert not (tmp_path / "out").exists()  # Not even its lock.


def test_a_rerun_never_replaces_an_edited_output_or_a_users_cache(
    planted, tmp_path, capfd):
  from imgrec.errors import ImgrecError  # pylint: disable=g-import-not-at-top
  (tmp_path / "prepared").mkdir()
  mine = tmp_path / "prepared" / "audit_fingerprints.npz"
  mine.write_text("the user's own file")
  first = _audit_here(planted, tmp_path)
  assert mine.read_text() == "the user's own file"
  assert "not imgrec's cache" in capfd.readouterr().err
  assert first["audit"]["summary"]["duplicates"]["groups"] == 2
  _audit_here(planted, tmp_path)  # Its own outputs: replaced.
  exclude = tmp_path / "out" / "exclude.txt"
  exclude.write_text(exclude.read_text() + "# reviewed: keep 00.png\n")
  with pytest.raises(ImgrecError, match="exclude.txt is not as"):
    _audit_here(planted, tmp_path)
  assert exclude.read_text().endswith("# reviewed: keep 00.png\n")
  assert os.path.isfile(tmp_path / "out" / "audit.json")  # Left as it was.
