"""The pictures and the HTML page of an evaluation report.

Reports are made by hand in the shape evaluation writes, with class names a
user could give their folders: `$` (matplotlib's formula marker), scripts
other than Latin, very long names and markup. The last test opens the page
in Chromium, as a person would.
"""

import base64
import collections
import html.parser
import io
import os
import time

import numpy as np
import pytest
from PIL import Image

from imgrec.evaluation import html as html_lib
from imgrec.evaluation import pictures
from imgrec.run_folder import RunFolder

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
HOSTILE = "<script>window.__pwned = 1; alert(1)</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned = 2">'
ODD_NAMES = [HOSTILE, "$x^2$ costs $5", "日本語 ünïcode 🐱", "n" * 90,
             HOSTILE_IMG, "plain"]
PLACEHOLDER_GRAY = (200, 200, 200)


def bins(rng, shift=0.0):
  """15 reliability bins; the lowest ones are empty, as in real reports."""
  out = []
  for i in range(15):
    lower, upper = i / 15, (i + 1) / 15
    count = int(rng.integers(1, 40)) if i >= 4 else 0
    confidence = (lower + upper) / 2 if count else None
    accuracy = min(1.0, confidence * 0.85 + shift) if count else None
    out.append({"lower": lower, "upper": upper, "count": count,
                "confidence": confidence, "accuracy": accuracy})
  return out


def make_report(names, seed=0, data_dir="/data/test"):
  """A report of the shape evaluation writes, with made-up numbers."""
  rng = np.random.default_rng(seed)
  n = len(names)
  confusion = rng.integers(0, 3, (n, n))
  confusion[np.arange(n), np.arange(n)] += 20
  normalized = confusion / confusion.sum(axis=1, keepdims=True)
  per_class = {
      name: {"precision": float(rng.uniform(0.5, 1)),
             "recall": float(rng.uniform(0.5, 1)),
             "f1": float(rng.uniform(0.5, 1)),
             "support": int(confusion[i].sum()),
             "roc_auc": None if i == 1 else float(rng.uniform(0.8, 1))}
      for i, name in enumerate(names)}
  return {
      "num_examples": int(confusion.sum()), "accuracy": 0.8123,
      "top_k": {"1": 0.8123, "3": 0.93, "5": 0.97}, "k": 5,
      "top_k_accuracy": 0.97, "per_class": per_class,
      "macro_avg": {"precision": 0.8, "recall": 0.79, "f1": 0.78},
      "weighted_avg": {"precision": 0.81, "recall": 0.8, "f1": 0.79},
      "macro_f1": 0.78, "roc_auc": {"macro": 0.95, "weighted": None},
      "confusion_matrix": confusion.tolist(),
      "confusion_matrix_normalized": normalized.tolist(),
      "top_confusions": [{"true": names[0], "predicted": names[-1],
                          "count": 3, "fraction": 0.12},
                         {"true": names[-1], "predicted": names[0],
                          "count": 2, "fraction": 0.08}],
      "ece": 0.0712, "reliability": bins(rng),
      "temperature": 1.42, "ece_after_temperature": 0.0215,
      "reliability_after_temperature": bins(rng, shift=0.1),
      "class_names": list(names),
      "mistakes": [{"path": f"/data/{HOSTILE}/{i}.png", "true": names[0],
                    "predicted": names[-1], "probability": 0.97 - i / 100}
                   for i in range(3)],
      "data": {"data_dir": data_dir, "split": "test"},
  }


def decode_png(data):
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  image = Image.open(io.BytesIO(data))
  assert image.format == "PNG"
  image.load()
  return image


def assert_sane_png(data, min_side=200, max_side=4000):
  image = decode_png(data)
  assert min_side <= image.width <= max_side, image.size
  assert min_side <= image.height <= max_side, image.size
  return image


def share_of(image, colour):
  pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
  return float(np.mean((pixels == colour).all(axis=1)))


def test_confusion_matrix_with_odd_class_names_is_a_png():
  report = make_report(ODD_NAMES)
  assert_sane_png(pictures.confusion_matrix_png(report))
  del report["confusion_matrix_normalized"]  # Older reports: from counts.
  assert_sane_png(pictures.confusion_matrix_png(report))


def test_most_confused_ranks_by_confusions_then_support():
  confusion = np.diag([50, 10, 30, 20, 40])
  confusion[3, 1] = 5  # Classes 1 and 3: 5 confusions each.
  confusion[4, 0] = 2  # Classes 0 and 4: 2 each, 0 has more support.
  assert pictures.most_confused(confusion, 2).tolist() == [1, 3]
  assert pictures.most_confused(confusion, 3).tolist() == [0, 1, 3]
  assert pictures.most_confused(confusion, 9).tolist() == [0, 1, 2, 3, 4]


def test_confusion_matrix_of_1000_classes_shows_the_most_confused(
    monkeypatch):
  from matplotlib.figure import Figure
  titles = []
  original = Figure.suptitle

  def recording_suptitle(self, text, **kwargs):
    titles.append(text)
    return original(self, text, **kwargs)

  monkeypatch.setattr(Figure, "suptitle", recording_suptitle)
  names = [f"class {i:04d} with a long descriptive name" for i in range(1000)]
  names[7] = HOSTILE
  report = make_report(names)
  start = time.perf_counter()
  image = assert_sane_png(pictures.confusion_matrix_png(report))
  elapsed = time.perf_counter() - start
  assert elapsed < 10, f"{elapsed:.1f} s for 1000 classes"
  assert image.width <= 2000 and image.height <= 2000
  assert titles and "30 most confused of 1000 classes" in titles[-1]
  pictures.confusion_matrix_png(report, max_classes=8)
  assert "8 most confused of 1000 classes" in titles[-1]
  with pytest.raises(ValueError, match="max_classes=0"):
    pictures.confusion_matrix_png(report, max_classes=0)


def test_reliability_before_and_after_temperature():
  report = make_report(["a", "b", "c"])
  with_temperature = assert_sane_png(pictures.reliability_png(report))
  report.update(temperature=None, ece_after_temperature=None,
                reliability_after_temperature=None)
  without = assert_sane_png(pictures.reliability_png(report))
  # The second series is drawn in orange; without it there is none.
  orange = (255, 127, 14)
  assert share_of(with_temperature, orange) > share_of(without, orange)


def solid_reader(path):
  if "missing" in path:
    raise FileNotFoundError(path)
  if "wrong" in path:
    return np.zeros((5,), np.uint8)  # Not an image at all.
  return np.full((300, 500, 3), (255, 0, 0), np.uint8)


def mistakes(*paths):
  return [{"path": path, "true": "$cat$", "predicted": HOSTILE + "x" * 40,
           "probability": 0.97} for path in paths]


def test_mistakes_show_thumbnails_and_placeholders():
  readable = decode_png(pictures.mistakes_png(
      mistakes("a.png", "b.png", "c.png"), solid_reader))
  assert share_of(readable, (255, 0, 0)) > 0.1
  assert share_of(readable, PLACEHOLDER_GRAY) < 0.001  # Anti-aliased text.
  mixed = decode_png(pictures.mistakes_png(
      mistakes("a.png", "missing.png", "wrong.png", "d.png", "e.png"),
      solid_reader, columns=2))
  assert share_of(mixed, PLACEHOLDER_GRAY) > 0.02
  assert share_of(mixed, (255, 0, 0)) > 0.02
  assert mixed.height > mixed.width  # 2 columns, 3 rows.
  assert pictures.mistakes_png([], solid_reader) is None
  with pytest.raises(ValueError, match="columns=0"):
    pictures.mistakes_png(mistakes("a.png"), solid_reader, columns=0)


HISTORY = """epoch,accuracy,learning_rate,loss,top_k,val_accuracy,val_loss,val_top_k
0,0.41,0.001,1.52,0.80,0.45,1.41,0.82
1,0.55,0.0009,1.21,0.88,0.52,1.30,0.86
2,0.63,0.0005,1.01,0.91,0.60,1.12,0.90
"""


def test_curves_of_a_training_history(tmp_path):
  path = tmp_path / "history.csv"
  path.write_text(HISTORY)
  image = assert_sane_png(pictures.curves_png(str(path)))
  path.write_text("\n".join(
      ",".join(row.split(",")[:2] + row.split(",")[3:])
      for row in HISTORY.splitlines()))  # No learning_rate: two panels.
  assert assert_sane_png(pictures.curves_png(str(path))).width < image.width


def test_curves_skip_malformed_rows(tmp_path):
  path = tmp_path / "history.csv"
  path.write_text(HISTORY
                  + "epoch,accuracy,learning_rate,loss\n"  # A second header.
                  + "3,0.7,not a number,0.9,0.9,0.6,1.0,0.9\n"
                  + "1,0.99,0.0009,0.1,0.99,0.98,0.1,0.99\n"  # Rerun epoch.
                  + "4,0.7,0.0001,0.8\n"  # Fields missing.
                  + "\x00\xff garbage,,\n"
                  + "5,0.8,0.0001")  # Cut short by a kill.
  history = RunFolder(str(tmp_path)).read_history()
  assert history.epochs == (0, 1, 2, 3)
  assert history.column("accuracy") == (0.41, 0.99, 0.63, 0.7)
  assert np.isnan(history.column("learning_rate")[3])
  assert_sane_png(pictures.curves_png(str(path)))


@pytest.mark.parametrize("content", [
    None, "", "epoch,accuracy,loss\n", "epoch,loss\nx,y\n,\n",
    "epoch,loss\n0,nan\n", "\x00\x01\x02 not a csv \"\n\"\n"])
def test_curves_without_usable_rows_are_none(tmp_path, content):
  path = tmp_path / "history.csv"
  if content is not None:
    path.write_text(content)
  assert pictures.curves_png(str(path)) is None


def test_report_pictures_in_order(tmp_path):
  history = tmp_path / "history.csv"
  history.write_text(HISTORY)
  report = make_report(ODD_NAMES)
  drawn = pictures.report_pictures(report, solid_reader, str(history))
  assert list(drawn) == ["Confusion matrix", "Reliability diagram",
                         "Most confident mistakes", "Training curves"]
  assert list(pictures.report_pictures(report)) == [
      "Confusion matrix", "Reliability diagram"]


class _PageParser(html.parser.HTMLParser):
  """Collects the tags, attributes and text of a page."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.tags = collections.Counter()
    self.attributes = []
    self.text = []

  def handle_starttag(self, tag, attrs):
    self.tags[tag] += 1
    self.attributes += [(tag, name, value or "") for name, value in attrs]

  def handle_data(self, data):
    self.text.append(data)


def parse(page):
  parser = _PageParser()
  parser.feed(page)
  parser.close()
  return parser


def full_report():
  """A report of two data sets with every optional section."""
  first = make_report(ODD_NAMES, seed=1, data_dir=f"/data/{HOSTILE}")
  second = make_report(ODD_NAMES, seed=2, data_dir="/data/other")
  report = dict(first)
  report.update(
      tta={"mode": "flip", "accuracy": 0.83, "accuracy_without": 0.81},
      ensemble={"members": [
          {"model_dir": f"runs/{HOSTILE}", "accuracy": 0.8, "macro_f1": 0.7,
           "weight": 0.5},
          {"model_dir": "runs/b", "accuracy": 0.79, "macro_f1": 0.69,
           "weight": 0.5}], "accuracy": 0.83, "macro_f1": 0.72},
      datasets=[first, second],
      comparison=[
          {"data_dir": first["data"]["data_dir"], "num_examples": 120,
           "accuracy": 0.81, "macro_f1": 0.78, "ece": 0.07,
           "missing_classes": [], "unknown_classes": {}},
          {"data_dir": "/data/other", "num_examples": 80, "accuracy": 0.7,
           "macro_f1": 0.66, "ece": 0.09,
           "missing_classes": [f"m{i}" for i in range(12)],
           "unknown_classes": {HOSTILE_IMG: 4}}])
  return report


@pytest.fixture(scope="module")
def page():
  report = full_report()
  drawn = collections.OrderedDict(
      [(f"Confusion matrix of {HOSTILE}",
        pictures.confusion_matrix_png(report)),
       ("Reliability diagram", pictures.reliability_png(report))])
  return html_lib.render_report(
      report, drawn, title=f"evaluation of {HOSTILE}",
      pictures_by_section=[None, {"Reliability of the second data set":
                                  pictures.reliability_png(report)}])


def test_page_is_self_contained_and_escaped(page):
  parsed = parse(page)
  images = [v for tag, name, v in parsed.attributes
            if tag == "img" and name == "src"]
  assert len(images) == 3
  for src in images:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:80]
    assert_sane_png(base64.b64decode(src[len(prefix):], validate=True))
  for tag, name, value in parsed.attributes:
    assert not name.startswith("on"), (tag, name, value)
    if name in ("src", "href", "action", "srcset", "poster", "data"):
      assert value.startswith(("data:image/png;base64,", "#")), (tag, name)
  assert parsed.tags["script"] == 0 and parsed.tags["link"] == 0
  assert parsed.tags["img"] == 3
  text = "".join(parsed.text)
  assert text.count(HOSTILE) >= 10  # Title, classes, paths, data dirs.
  assert HOSTILE_IMG in text and "$x^2$ costs $5" in text
  assert "日本語 ünïcode 🐱" in text
  for heading in ("Summary", "Per class", "Top confusions",
                  "Test-time augmentation", "Ensemble",
                  "Comparison of the data sets", "/data/other (test)",
                  "Most confident mistakes"):
    assert heading in text, heading
  assert "m9 and 2 more" in text
  assert "Top-3 accuracy" in text and "0.9300" in text and "+0.0200" in text


def test_many_classes_show_the_worst_hundred():
  names = [f"c{i}" for i in range(150)]
  report = make_report(names)
  for i, name in enumerate(names):
    report["per_class"][name]["f1"] = 1.0 - i / 1000  # c149 is the worst.
  text = "".join(parse(html_lib.render_report(report, {})).text)
  assert "The 100 classes with the lowest F1 of 150" in text
  assert "c149" in text and "c50" in text and "c49" not in text
  assert text.index("c149") < text.index("c148")
  small = "".join(parse(html_lib.render_report(make_report(names[:5]))).text)
  assert "lowest F1" not in small
  assert small.index("c0") < small.index("c4")


def test_page_in_chromium(page, tmp_path):
  sync_api = pytest.importorskip(
      "playwright.sync_api",
      reason="playwright is not installed: no browser check of report.html")
  if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: no browser check of report.html")
  path = tmp_path / "report.html"
  path.write_text(page, encoding="utf-8")
  requests = []
  with sync_api.sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                         args=CHROMIUM_ARGS, timeout=60_000)
    try:
      tab = browser.new_page(viewport={"width": 1280, "height": 900})
      tab.on("request", lambda request: requests.append(request.url))
      tab.goto(path.as_uri(), wait_until="load")
      images = tab.evaluate(
          "() => Array.from(document.images,"
          " i => ({complete: i.complete, width: i.naturalWidth}))")
      pwned = tab.evaluate("() => typeof window.__pwned")
      text = tab.evaluate("() => document.body.innerText")
      screenshot = tab.screenshot(full_page=True)
    finally:
      browser.close()
  assert len(images) == 3
  assert all(i["complete"] and i["width"] > 0 for i in images), images
  assert pwned == "undefined"
  assert HOSTILE in text and HOSTILE_IMG in text
  assert not [url for url in requests
              if not url.startswith(("data:", path.as_uri()))], requests
  shot = decode_png(screenshot)
  assert shot.width >= 1000 and shot.height > 2000
  gray = np.asarray(shot.convert("L"))
  assert np.mean(gray < 240) > 0.05  # Text, tables and pictures, not blank.
