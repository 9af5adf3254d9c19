"""Explanations: heatmaps of every model, `Classifier.explain`, and
`imgrec-predict --explain` with its pictures folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import _model_cases as model_cases
from imgrec import models
from imgrec.errors import ImgrecError
from imgrec.inference import explain

SHAPE = (32, 32, 3)


def _spot_model(size=16, head="softmax"):
  """A model whose class "bright" rises with the brightness of any pixel:
  its spatial map is the image's brightness, so every faithful method
  points at the brightest spot."""
  import keras  # pylint: disable=g-import-not-at-top
  from imgrec.models import registry  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((size, size, 3), name="image")
  x = keras.layers.Rescaling(1 / 255.0)(inputs)
  x = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones",
                          name="brightness")(x)
  x = keras.layers.Identity(name=registry.FEATURES)(x)
  x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  dense = keras.layers.Dense(2, activation=head, name=registry.HEAD)
  outputs = dense(x)
  model = keras.Model(inputs, outputs, name="spot")
  dense.set_weights([np.array([[-20.0, 20.0]], np.float32),
                     np.array([1.0, -1.0], np.float32)])
  return model


def _spot_image(size=16, at=(10, 4), side=4, height=None, width=None):
  """A dark image with one bright square whose top-left corner is `at`
  (x, y), in an image of `height` x `width` (default size x size)."""
  image = np.full((height or size, width or size, 3), 10, np.uint8)
  x, y = at
  image[y:y + side, x:x + side] = 250
  return image


def _saved(model, tmp_path, labels=("dark", "bright")):
  path = str(tmp_path / "model.keras")
  model.save(path)
  with open(tmp_path / "labels.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(labels) + "\n")
  return path


@pytest.mark.slow  # Every model, five methods: the whole suite's.
@pytest.mark.parametrize("name", models.list_models())
def test_every_registry_model_explains_with_every_method_that_applies(name):
  model = model_cases.classifier(name, 3, SHAPE)
  methods = explain.methods_for(model, offered=False)
  spatial = models.get_model_cfg(name)["features"] == "map" or (
      name == "vit_tiny")
  assert set(methods) == set(explain.METHODS if spatial else
                             explain.INPUT_METHODS)
  # Offered: what passed the sanity check on such models.
  assert explain.methods_for(model) == (
      ("gradcam",) if spatial else explain.INPUT_METHODS)
  x = np.random.default_rng(0).uniform(0, 255, (2, *SHAPE)).astype("float32")
  for method in methods:
    maps, probabilities, targets = explain.Explainer(
        model, method, steps=2, offered=False)(x, np.array([2, -1]))
    assert maps.shape == (2, 32, 32), method
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() in (0.0, 1.0) for m in maps)
    assert targets[0] == 2
    assert probabilities[1, targets[1]] == pytest.approx(probabilities[1].max())
    np.testing.assert_allclose(probabilities, model(x), rtol=1e-4, atol=1e-6)
  if not spatial:
    with pytest.raises(ValueError, match="methods that apply: "
                       "integrated_gradients, gradient_x_input"):
      explain.Explainer(model, "gradcam")


def test_gradcam_of_a_pooled_linear_head_is_the_class_activation_map():
  # Through average pooling and a Dense head, Grad-CAM's weights are the
  # head's column for the class (over the map's area): CAM (Zhou et al.).
  from imgrec.models import registry  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = models.create_model("simple_cnn", 3, SHAPE)
  head = model.get_layer(registry.HEAD)
  kernel, bias = head.get_weights()
  kernel[:, 1] = np.abs(kernel[:, 1])  # Some evidence for class 1.
  head.set_weights([kernel, bias])
  x = np.random.default_rng(1).uniform(0, 255, (2, *SHAPE)).astype("float32")
  features = registry.backbone_of(model)(x, training=False).numpy()
  cam = np.maximum(np.einsum("nhwk,k->nhw", features, kernel[:, 1]), 0)
  cam = tf.image.resize(cam[..., None], SHAPE[:2]).numpy()[..., 0]
  cam /= cam.max(axis=(1, 2), keepdims=True)
  maps = explain.Explainer(model, "gradcam")(x, np.array([1, 1]))[0]
  np.testing.assert_allclose(maps, cam, atol=1e-4)


@pytest.mark.parametrize("method", explain.METHODS)
def test_every_method_points_at_what_raises_the_class(method):
  model = _spot_model()
  image = _spot_image(at=(10, 3)).astype("float32")
  maps, probabilities, targets = explain.Explainer(model, method,
                                                   offered=False)(
                                                       image[None],
                                                       np.array([1]))
  peak, box = explain.locate(maps[0])
  assert 10 <= peak[0] < 14 and 3 <= peak[1] < 7, (method, peak)
  assert box[0] >= 6 and box[1] >= 0 and box[2] <= 16 and box[3] <= 11
  assert targets[0] == 1 and probabilities[0, 1] > 0.5


def test_locate_keeps_the_region_around_the_peak_and_says_when_there_is_none():
  heat = np.zeros((10, 12), np.float32)
  heat[2:4, 3:6] = 1.0
  heat[3, 5] = 0.9
  heat[8, 10] = 0.8  # Above half the peak, but not connected to it.
  assert explain.locate(heat) == ((3, 2), (3, 2, 6, 4))
  assert explain.locate(np.zeros((4, 4))) == (None, None)
  # Peaks and boxes in the pixels of the image the map was stretched from.
  assert explain.to_image((3, 2), (3, 2, 6, 4), (10, 12), (100, 24)) == (
      [7, 25], [6, 20, 12, 40])


def test_explainer_refuses_bad_batches_and_targets():
  model = _spot_model()
  explainer = explain.Explainer(model)
  with pytest.raises(ValueError, match="takes"):
    explainer(np.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="class indices"):
    explainer(np.zeros((1, 16, 16, 3)), np.array([2]))
  with pytest.raises(ValueError, match="Unknown explanation method"):
    explain.Explainer(model, "saliency")
  with pytest.raises(ValueError, match="steps"):
    explain.Explainer(model, "integrated_gradients", steps=0, offered=False)


def test_classifier_explains_in_the_images_own_pixels(tmp_path):
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  clf = Classifier.load(_saved(_spot_model(), tmp_path))
  # A 96 x 64 photo (width 96) of a bright square at x 60..71, y 8..19: the
  # model sees it stretched to 16 x 16.
  photo = np.full((64, 96, 3), 10, np.uint8)
  photo[8:20, 60:72] = 250
  Image.fromarray(photo).save(tmp_path / "photo.png")
  found = clf.explain([str(tmp_path / "photo.png"), photo,
                       str(tmp_path / "missing.png")])
  for e in found[:2]:
    assert e.label == "bright" and e.method == "gradcam"
    assert 60 <= e.peak[0] < 72 and 8 <= e.peak[1] < 20, e.peak
    x0, y0, x1, y1 = e.box
    assert 50 <= x0 <= 60 and 72 <= x1 <= 84 and y0 <= 8 and 20 <= y1 <= 32
    assert e.heatmap.shape == (16, 16)
    assert json.loads(json.dumps(e.to_dict()))["peak"] == e.peak
  assert found[2].error and "does not exist" in found[2].error
  dark = clf.explain(photo, target="dark")[0]
  assert dark.label == "dark" and dark.score < 0.5
  with pytest.raises(ImgrecError, match="not offered .* correlate 0.34"):
    clf.explain(photo, method="integrated_gradients")
  with pytest.raises(ImgrecError, match="not a class"):
    clf.explain(photo, target="cat")
  with pytest.raises(ImgrecError, match="Unknown explanation method"):
    clf.explain(photo, method="saliency")
  with pytest.raises(ImgrecError, match="does not exist"):
    clf.explain(str(tmp_path / "missing.png"))


def test_a_multilabel_model_explains_each_label_above_its_threshold(tmp_path):
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  path = _saved(_spot_model(head="sigmoid"), tmp_path)
  with open(tmp_path / "thresholds.json", "w", encoding="utf-8") as f:
    json.dump({"class_names": ["dark", "bright"], "thresholds": [0.5, 0.5]},
              f)
  clf = Classifier.load(path)
  assert list(clf.thresholds) == [0.5, 0.5]
  e = clf.explain(_spot_image(side=8))[0]
  assert [p.label for p in e.per_label] == ["bright"]
  clf.thresholds = np.array([0.0, 0.5])  # Both labels above.
  e = clf.explain(_spot_image(side=8))[0]
  assert [p.label for p in e.per_label] == ["bright", "dark"]
  assert [l["label"] for l in e.to_dict()["labels"]] == ["bright", "dark"]


@pytest.mark.slow
def test_clip_models_explain_each_frame(tmp_path):
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  from imgrec.models import clip  # pylint: disable=g-import-not-at-top
  model = clip.build_clip_model("simple_cnn", 2, (3, 16, 16, 3),
                                temporal="average", units=8, motion=False)
  assert explain.methods_for(model) == explain.INPUT_METHODS
  clf = Classifier.load(_saved(model, tmp_path, ("a", "b")))
  clip_pixels = np.stack([_spot_image(at=(2 + 4 * t, 6)) for t in range(3)])
  e = clf.explain(clip_pixels, method="gradient_x_input")[0]
  assert e.heatmap.shape == (3, 16, 16) and len(e.frames) == 3
  assert all(set(f) == {"peak", "box"} for f in e.frames)


@pytest.mark.slow
def test_similarity_maps_show_what_makes_two_images_match():
  from imgrec.models import embedding  # pylint: disable=g-import-not-at-top
  embedder = embedding.build_embedder("simple_cnn", (16, 16, 3),
                                      embedding_dim=8)
  a = _spot_image()[None].astype("float32")
  b = _spot_image(at=(2, 2))[None].astype("float32")
  maps_a, maps_b, similarity = explain.similarity_maps(embedder, a, b)
  assert maps_a.shape == maps_b.shape == (1, 16, 16)
  assert -1 <= similarity[0] <= 1
  with pytest.raises(ValueError, match="embedding to match"):
    explain.Explainer(embedder)(a)
  with pytest.raises(ValueError, match="classifier"):
    explain.similarity_maps(_spot_model(), a, b)


def test_overlay_and_clip_pictures_are_rgb_of_the_image_size():
  image = _spot_image(height=40, width=30)
  heat = np.zeros((16, 16), np.float32)
  heat[4:8, 10:14] = 1
  out = explain.overlay(image, heat)
  assert out.shape == (40, 30, 3) and out.dtype == np.uint8
  assert not np.array_equal(out, image)  # The hot region is coloured.
  np.testing.assert_array_equal(explain.overlay(image, heat * 0), image)
  assert explain.overlay(np.zeros((3000, 20, 3), np.uint8), heat).shape == (
      1024, 7, 3)
  strip = explain.picture(np.zeros((3, 16, 16, 3), np.uint8),
                          np.zeros((3, 16, 16)))
  assert strip.shape == (16, 48, 3)


def _predict(*args, cwd=None):
  return subprocess.run(
      [sys.executable, "-m", "imgrec.cli.predict", *map(str, args)],
      capture_output=True, text=True, check=False, cwd=cwd)


@pytest.mark.slow
def test_predict_explains_writes_pictures_and_refuses_what_it_may_not_touch(
    tmp_path):
  model = _saved(_spot_model(), tmp_path)
  data = tmp_path / "data"
  data.mkdir()
  for i in range(3):
    Image.fromarray(_spot_image(size=32, at=(4 + 8 * i, 20))).save(
        data / f"im{i}.png")
  out = tmp_path / "pictures"
  proc = _predict(f"--model={model}", "--explain", f"--explain_dir={out}",
                  "--format=json", data)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ""
  items = json.loads(proc.stdout)
  assert [i["explanation"]["label"] for i in items] == ["bright"] * 3
  for i, item in enumerate(items):
    x, y = item["explanation"]["peak"]
    assert 4 + 8 * i <= x < 8 + 8 * i and 20 <= y < 24, item
    assert os.path.isfile(item["picture"])
    assert Image.open(item["picture"]).size == (32, 32)
  pictures = sorted(os.listdir(out))
  assert [p for p in pictures if p.endswith(".png")] == [
      "000000-im0.png", "000001-im1.png", "000002-im2.png"]
  # A rerun replaces its own pictures.
  table = _predict(f"--model={model}", "--explain=gradcam",
                   f"--explain_dir={out}", data)
  assert table.returncode == 0, table.stderr
  assert "gradcam: bright peak" in table.stdout
  # ...but not one changed since, nor a user's file in the folder.
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "000001-im1.png")
  before = sorted(os.listdir(out))
  refused = _predict(f"--model={model}", "--explain", f"--explain_dir={out}",
                     data)
  assert refused.returncode == 2 and refused.stdout == ""
  assert refused.stderr.count("\n") == 1 and "not as imgrec wrote it" in (
      refused.stderr)
  assert sorted(os.listdir(out)) == before
  user = tmp_path / "mine"
  user.mkdir()
  (user / "notes.txt").write_text("keep")
  for bad, why in ((user, "files imgrec did not write"),
                   (data / "sub", "inside the inputs' folder"),
                   (data / "im0.png", "inside the inputs' folder")):
    proc = _predict(f"--model={model}", "--explain", f"--explain_dir={bad}",
                    data)
    assert proc.returncode == 2 and why in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
  assert sorted(os.listdir(data)) == ["im0.png", "im1.png", "im2.png"]
  assert (user / "notes.txt").read_text() == "keep"
  for args, why in (([f"--explain_dir={out}"], "goes with --explain"),
                    (["--explain", "--explain_dir="], "is empty"),
                    (["--explain=layercam"], "not offered"),
                    (["--explain=gradcam", "--target=cat"], "not a class"),
                    (["--explain=saliency"], "should be one of")):
    proc = _predict(f"--model={model}", *args, data)
    assert proc.returncode == 2 and why in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_the_mistakes_picture_shows_where_the_model_looked(tmp_path):
  from imgrec.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from imgrec.evaluation import pictures  # pylint: disable=g-import-not-at-top
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  paths = []
  for i in range(3):
    paths.append(str(tmp_path / f"im{i}.png"))
    Image.fromarray(_spot_image(size=32, at=(4 + 8 * i, 4))).save(paths[-1])
  mistakes = [{"path": p, "true": "dark", "predicted": "bright",
               "probability": 0.9} for p in paths]
  mistakes.append({"path": str(tmp_path / "gone.png"), "true": "dark",
                   "predicted": "bright", "probability": 0.8})
  heatmaps = evaluate.mistake_heatmaps(_spot_model(), mistakes,
                                       ["dark", "bright"])
  assert heatmaps.pop("method") == "gradcam"
  assert sorted(heatmaps) == paths  # The unreadable image has none.
  for i, path in enumerate(paths):
    peak = explain.locate(heatmaps[path])[0]
    assert 2 + 4 * i <= peak[0] < 4 + 4 * i and 2 <= peak[1] < 4, peak
  heatmaps["method"] = "gradcam"
  plain = pictures.mistakes_png(mistakes, tasks.read_image)
  shown = pictures.mistakes_png(mistakes, tasks.read_image, heatmaps=heatmaps)
  import io  # pylint: disable=g-import-not-at-top
  plain_size = Image.open(io.BytesIO(plain)).size
  shown_size = Image.open(io.BytesIO(shown)).size
  assert shown_size[0] > plain_size[0]  # Two panels a mistake.
  # A clip model's mistakes get no heatmaps (their files are videos).
  from imgrec.models import clip  # pylint: disable=g-import-not-at-top
  clip_model = clip.build_clip_model("simple_cnn", 2, (2, 16, 16, 3),
                                     temporal="average", units=8,
                                     motion=False)
  assert evaluate.mistake_heatmaps(clip_model, mistakes, ["a", "b"]) == {}


def test_a_folder_with_a_users_lock_or_temporaries_is_not_imgrecs(tmp_path):
  # Found by a hostile probe of --explain_dir; the rule is every run
  # folder's (model_dir, --out, --explain_dir).
  from imgrec import run_folder  # pylint: disable=g-import-not-at-top
  victim = tmp_path / "victim.txt"
  victim.write_text("precious")
  linked = tmp_path / "linked"
  linked.mkdir()
  os.symlink(victim, linked / ".lock")
  plain = tmp_path / "plain"
  plain.mkdir()
  (plain / ".lock").write_text("my notes")
  temporaries = tmp_path / "temporaries"
  (temporaries / ".imgrec-tmp-thesis").mkdir(parents=True)
  (temporaries / ".imgrec-tmp-thesis" / "chapter1.txt").write_text("keep")
  for folder, name in ((linked, ".lock"), (plain, ".lock"),
                       (temporaries, ".imgrec-tmp-thesis")):
    with pytest.raises(ImgrecError, match=f"did not write \\({name}\\)"):
      with run_folder.ExplainFolder(str(folder)).start(
          run_folder.EXPLAIN_COMMAND):
        pass
  assert victim.read_text() == "precious"
  assert (plain / ".lock").read_text() == "my notes"
  assert (temporaries / ".imgrec-tmp-thesis" / "chapter1.txt").read_text() == (
      "keep")
  # imgrec's own folder, and one a crash left with only its lock, go on.
  own = run_folder.ExplainFolder(str(tmp_path / "own"))
  for _ in range(2):
    with own.start(run_folder.EXPLAIN_COMMAND):
      pass
  crashed = tmp_path / "crashed"
  crashed.mkdir()
  (crashed / ".lock").write_text("imgrec-train, pid 7 on host, since "
                                 "2026-12-08T02:04:50\n")
  with run_folder.ExplainFolder(str(crashed)).start(
      run_folder.EXPLAIN_COMMAND):
    pass
  # A marked folder whose lock became a link is refused too.
  os.remove(tmp_path / "own" / ".lock")
  os.symlink(victim, tmp_path / "own" / ".lock")
  with pytest.raises(ImgrecError, match="is a link or not a file"):
    with own.start(run_folder.EXPLAIN_COMMAND):
      pass
  assert victim.read_text() == "precious"


def test_bytes_and_dicts_are_not_lists_of_inputs(tmp_path):
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  clf = Classifier.load(_saved(_spot_model(), tmp_path))
  for bad in (b"\x89PNG...", {"a": 1}):
    for call in (clf.explain, clf.predict):
      with pytest.raises(ImgrecError, match="Expected an image path"):
        call(bad)
