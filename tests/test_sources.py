"""Tests for the labels-CSV and TFDS data sources and their use in training."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from imgrec.config import TrainConfig
from imgrec.data import folder
from imgrec.data import scan
from imgrec.data import sources
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder
from conftest import write_toy_folder


def write_csv(path, lines, encoding="utf-8"):
  with open(path, "w", encoding=encoding, newline="") as f:
    f.write("\n".join(lines) + "\n")
  return str(path)


def rows_for(classes=("blue", "green", "red"), per_class=3):
  return [f"{c}/{i:03d}.png,{c}" for c in classes for i in range(per_class)]


# --- Labels CSV --------------------------------------------------------------


def test_csv_relative_and_absolute_paths(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=3, size=8)
  elsewhere = write_toy_folder(tmp_path / "other", per_class=1, size=8,
                               classes=["green"])
  absolute = os.path.join(elsewhere, "green", "000.png")
  # Header in another order and case, with an extra column ignored.
  lines = ["Label, PATH ,notes"] + [f"{c},{p},x" for p, c in
                                    (r.split(",") for r in rows_for())]
  lines.append(f"green,{absolute},from elsewhere")
  csv_path = write_csv(tmp_path / "d" / "labels.csv", lines)
  # Outside the CSV's folder: skipped and reported unless allowed.
  refused = sources.read_labels_csv(csv_path)
  assert len(refused.splits["train"]) == 9
  assert [(m["path"], m["reason"]) for m in refused.missing] == [
      (absolute, "outside_csv_folder")]
  assert "--allow_outside" in refused.missing[0]["detail"]
  found = sources.read_labels_csv(csv_path, allow_outside=True)
  assert found.layout == "csv"
  assert found.root == os.path.abspath(root)
  assert found.class_names == ["blue", "green", "red"]
  assert list(found.splits) == ["train"]
  train = found.splits["train"]
  assert len(train) == 10
  assert absolute in train.paths
  for path, label in zip(train.paths, train.labels):
    assert os.path.isabs(path) and os.path.isfile(path)
    assert found.class_names[label] in path
  assert found.missing == []
  carved = folder.carve_splits(found, 0.34, 0.0, seed=0)
  assert [len(carved.splits[s]) for s in folder.SPLITS] == [7, 3, 0]


def test_csv_split_column_bom_and_any_extension(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=4, size=8,
                          classes=["blue", "red"])
  # Content decides, not the extension: scan validates it later.
  os.rename(os.path.join(root, "red", "003.png"),
            os.path.join(root, "red", "003.dat"))
  lines = ["path,label,split",
           "blue/000.png,blue,train", "blue/001.png,blue,TRAIN",
           "blue/002.png,blue,Validation", "blue/003.png,blue,test",
           "red/000.png,red,train", "red/001.png,red,val",
           "red/002.png,red,test", "red/003.dat,red,train", ""]
  path = write_csv(tmp_path / "d" / "labels.csv", lines,
                   encoding="utf-8-sig")
  with open(path, "rb") as f:
    assert f.read(3) == b"\xef\xbb\xbf"
  found = sources.read_labels_csv(path)
  assert found.summary() == {"train": {"blue": 2, "red": 2},
                             "val": {"blue": 1, "red": 1},
                             "test": {"blue": 1, "red": 1}}
  assert any(p.endswith("003.dat") for p in found.splits["train"].paths)
  assert [os.path.relpath(p, root) for p in found.splits["val"].paths] == [
      os.path.join("blue", "002.png"), os.path.join("red", "001.png")]


def test_csv_missing_files_are_skipped_and_reported(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=3, size=8)
  lines = ["path,label"] + rows_for() + ["red/gone.png,red",
                                             "blue,blue"]
  path = write_csv(tmp_path / "d" / "labels.csv", lines)
  found = sources.read_labels_csv(path)
  assert len(found.splits["train"]) == 9
  assert [(os.path.basename(m["path"]), m["class"], m["reason"])
          for m in found.missing] == [("gone.png", "red", "missing"),
                                      ("blue", "blue", "missing")]
  assert "line 11" in found.missing[0]["detail"]
  assert "folder" in found.missing[1]["detail"]

  report_path = str(tmp_path / "report.json")
  scanned, report = scan.scan_folder(
      found, prepared_dir=str(tmp_path / "prep"), progress=False,
      report_path=report_path)
  with open(report_path, encoding="utf-8") as f:
    written = json.load(f)
  assert written["totals"]["found"] == 11
  assert written["totals"]["skipped"] == 2
  assert written["skipped_by_reason"] == {"missing": 2}
  assert written["splits"]["train"]["red"] == {"found": 4, "usable": 3,
                                               "skipped": 1}
  assert len(scanned.splits["train"]) == 9


@pytest.mark.parametrize("lines, message", [
    (["file,class", "a.png,x"], r"no path or label column. Found the header "
     r"\['file', 'class'\]"),
    (["path,label", "blue/000.png,blue", "red/000.png,blue"],
     "only 1 class"),
    (["path,label", "blue/000.png,blue", "red/000.png,  "],
     "line 3: empty label"),
    (["path,label", "blue/000.png,blue", "red/000.png,red",
      "./blue/000.png,red"], "line 4: './blue/000.png' is already listed on "
     "line 2"),
    (["path,label,split", "blue/000.png,blue,train", "red/000.png,red,dev"],
     "line 3: unknown split 'dev'"),
    (["path,label", "blue/000.png,blue", "red/nope.png,red"],
     r"class\(es\) 'red' have no existing training file \(1 listed"),
    (["path,label,split", "blue/000.png,blue,train", "red/000.png,red,test"],
     "'red' have no existing training file"),
    (["path,label"], "header but no rows"),
    ([], "is empty"),
])
def test_csv_errors_are_clear(tmp_path, lines, message):
  write_toy_folder(tmp_path / "d", per_class=1, size=8)
  path = write_csv(tmp_path / "d" / "labels.csv", lines) if lines else None
  if path is None:
    path = str(tmp_path / "d" / "labels.csv")
    open(path, "w").close()
  with pytest.raises(ImgrecError, match=message) as info:
    sources.read_labels_csv(path)
  assert "labels.csv" in str(info.value)


def test_csv_missing_file_error(tmp_path):
  with pytest.raises(ImgrecError, match="does not exist. Pass --labels_csv"):
    sources.read_labels_csv(str(tmp_path / "nope.csv"))


def test_config_accepts_one_source(tmp_path):
  csv_path = write_csv(tmp_path / "l.csv", ["path,label"])
  with pytest.raises(ImgrecError, match="at most one of"):
    TrainConfig(data_dir="x", labels_csv=csv_path).validate()
  with pytest.raises(ImgrecError, match="tfds_data_dir"):
    TrainConfig(tfds_data_dir="x").validate()
  with pytest.raises(ImgrecError, match="labels_csv"):
    TrainConfig(labels_csv=str(tmp_path / "nope.csv")).validate()
  TrainConfig(labels_csv=csv_path).validate()
  TrainConfig(tfds="mnist").validate()

  from imgrec.tasks import classification  # pylint: disable=g-import-not-at-top
  default_model_dir = classification.default_model_dir
  assert default_model_dir(TrainConfig(labels_csv="a/pets.csv")) == (
      os.path.join("runs", "pets-simple_cnn"))
  assert default_model_dir(
      TrainConfig(tfds="imagenette/320px:1.0.0")) == os.path.join(
          "runs", "imagenette-320px-1.0.0-simple_cnn")


@pytest.mark.slow
def test_cli_trains_from_csv_with_broken_and_missing_files(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=6, size=16)
  with open(os.path.join(root, "red", "broken.png"), "w") as f:
    f.write("<html>not an image</html>")
  lines = (["path,label"] + rows_for(per_class=6)
           + ["red/broken.png,red", "green/missing.png,green"])
  csv_path = write_csv(tmp_path / "d" / "labels.csv", lines)
  model_dir = str(tmp_path / "run")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
             XDG_CACHE_HOME=str(tmp_path / "cache"))
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.train", f"--labels_csv={csv_path}",
       "--epochs=1", "--image_size=16", "--batch_size=4",
       f"--model_dir={model_dir}", "--max_bad_fraction=0.5", "--noexport"],
      capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "test accuracy" in proc.stdout

  with open(os.path.join(model_dir, "data_report.json"),
            encoding="utf-8") as f:
    report = json.load(f)
  skipped = {os.path.basename(s["path"]): s["reason"]
             for s in report["skipped"]}
  assert skipped == {"broken.png": "not_an_image", "missing.png": "missing"}
  assert report["totals"]["found"] == 20
  assert report["totals"]["usable"] == 18
  with open(os.path.join(model_dir, "splits.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  used = [p for s in manifest["splits"].values() for p in s["paths"]]
  assert len(used) == 18
  assert not any("broken" in p or "missing" in p for p in used)
  assert RunFolder(model_dir).read_config().labels_csv == csv_path


# --- TFDS --------------------------------------------------------------------

TOY_NAMES = ["circle", "square", "triangle"]


def toy_pixels(split, index):
  """A distinct 8x8 image per example, so exported files can be checked."""
  base = 100 if split == "test" else 0
  image = np.zeros((8, 8, 3), np.uint8)
  image[..., 0] = base + index
  image[..., 1] = np.arange(8)[:, None] * 10
  image[..., 2] = index % 3 * 50
  return image


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """A toy TFDS dataset prepared locally: 9 train and 3 test images."""
  tfds = pytest.importorskip("tensorflow_datasets")
  data_dir = str(tmp_path_factory.mktemp("tfds"))

  # Not registered: load_tfds must find it from the prepared files alone, as
  # for a dataset copied from another machine.
  with tfds.core.registered.skip_registration():

    class ImgrecTestToy(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(names=TOY_NAMES)}))

      def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples("train", 9),
                "test": self._generate_examples("test", 3)}

      def _generate_examples(self, split, count):
        for i in range(count):
          yield i, {"image": toy_pixels(split, i), "label": i % 3}

  ImgrecTestToy(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_tfds_exports_files_with_classes_and_pixels(tfds_dir, tmp_path):
  cache = str(tmp_path / "cache")
  found = sources.load_tfds("imgrec_test_toy", tfds_dir, cache_dir=cache)
  assert found.layout == "tfds"
  assert found.class_names == TOY_NAMES
  assert found.root == os.path.join(cache, "imgrec_test_toy", "1.0.0")
  assert found.summary() == {"train": {c: 3 for c in TOY_NAMES},
                             "test": {c: 1 for c in TOY_NAMES}}
  seen = set()
  for split, part in found.splits.items():
    for path, label in zip(part.paths, part.labels):
      assert path.startswith(os.path.join(found.root, split,
                                          TOY_NAMES[label]) + os.sep)
      pixels = np.asarray(Image.open(path))
      # The file holds the example it is named after, whatever TFDS's order.
      index = int(pixels[0, 0, 0]) - (100 if split == "test" else 0)
      np.testing.assert_array_equal(pixels, toy_pixels(split, index))
      assert label == index % 3
      seen.add((split, index))
  assert len(seen) == 12


def test_tfds_export_is_reused_and_redone_for_other_splits(
    tfds_dir, tmp_path, monkeypatch):
  cache = str(tmp_path / "cache")
  first = sources.load_tfds("imgrec_test_toy", tfds_dir, cache_dir=cache)

  def fail(*args, **kwargs):
    raise AssertionError("exported again")
  with monkeypatch.context() as m:
    m.setattr(sources, "_export_split", fail)
    again = sources.load_tfds("imgrec_test_toy:1.0.0", tfds_dir,
                              cache_dir=cache)
  assert again == first

  other = sources.load_tfds(
      "imgrec_test_toy", tfds_dir, cache_dir=cache,
      split_names={"train": "train[:6]", "val": "train[6:]"})
  assert [len(other.splits[s]) for s in other.splits] == [6, 3]
  assert list(other.splits) == ["train", "val"]
  # The train split was redone for the new expression.
  train_dir = os.path.join(other.root, "train")
  assert sum(len(os.listdir(os.path.join(train_dir, c)))
             for c in TOY_NAMES) == 6


def test_tfds_errors_are_clear(tfds_dir, tmp_path):
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  with pytest.raises(ImgrecError, match=r"not prepared in .*tfds build "
                     r"mnist --data_dir="):
    sources.load_tfds("mnist", empty, cache_dir=str(tmp_path / "c"))
  with pytest.raises(ImgrecError, match="Cannot open TFDS dataset "
                     "'imgrec_no_such_set'.*imgrec_test_toy"):
    sources.load_tfds("imgrec_no_such_set", tfds_dir,
                      cache_dir=str(tmp_path / "c"))
  with pytest.raises(ImgrecError, match="does not exist"):
    sources.load_tfds("mnist", str(tmp_path / "nope"))
  with pytest.raises(ImgrecError, match="no class label feature 'y'"):
    sources.load_tfds("imgrec_test_toy", tfds_dir, label_key="y",
                      cache_dir=str(tmp_path / "c"))
  with pytest.raises(ImgrecError, match="no split 'validation'; it has test, "
                     "train"):
    sources.load_tfds("imgrec_test_toy", tfds_dir,
                      split_names={"train": "train", "val": "validation"},
                      cache_dir=str(tmp_path / "c"))


def test_task_loads_tfds_and_carves_val(tfds_dir, tmp_path, monkeypatch):
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  task = tasks.ImageClassificationTask.from_config(TrainConfig(
      tfds="imgrec_test_toy", tfds_data_dir=tfds_dir, val_split=0.34))
  report_path = str(tmp_path / "data_report.json")
  found = task.build_folder(report_path)
  assert found.class_names == TOY_NAMES
  assert [len(found.splits[s]) for s in folder.SPLITS] == [6, 3, 3]
  with open(report_path, encoding="utf-8") as f:
    assert json.load(f)["totals"]["usable"] == 12
