"""Label sets from a local TFDS dataset (a Sequence of ClassLabel), and the
multi-label task's splits."""

import json
import numpy as np
import pytest

from imgrec.config import TrainConfig
from imgrec.data import sources
from imgrec.run_folder import RunFolder

NAMES = ["cat", "dog", "car"]


def _pixels(index):
  image = np.full((16, 16, 3), 120, np.uint8)
  image[:4, :4] = index  # Names the example, whatever TFDS's order.
  for label in _labels(index):
    image[4 * (label + 1):4 * (label + 2), 4:12] = (230, 40, 40)
  return image


def _labels(index):
  return [l for l in range(3) if (index >> l) & 1]  # Sets of 0-3 labels.


@pytest.fixture(scope="module")
def tfds_sets(tmp_path_factory):
  """A prepared toy TFDS dataset whose labels are sets: 40 train, 8 test."""
  tfds = pytest.importorskip("tensorflow_datasets")
  data_dir = str(tmp_path_factory.mktemp("tfds_sets"))
  with tfds.core.registered.skip_registration():

    class ImgrecTestSets(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(16, 16, 3)),
                "labels": tfds.features.Sequence(
                    tfds.features.ClassLabel(names=NAMES))}))

      def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(0, 40),
                "test": self._generate_examples(40, 8)}

      def _generate_examples(self, start, count):
        for i in range(start, start + count):
          yield i, {"image": _pixels(i), "labels": _labels(i)}

  ImgrecTestSets(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_tfds_label_sets_export_once_with_their_sets(tfds_sets, tmp_path):
  found = sources.load_tfds("imgrec_test_sets", tfds_sets,
                            label_key="labels",
                            cache_dir=str(tmp_path / "cache"))
  assert found.class_names == NAMES
  assert len(found.splits["train"]) == 40 and len(found.splits["test"]) == 8
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for path, labels in zip(found.splits["train"].paths,
                          found.splits["train"].labels):
    index = int(np.asarray(Image.open(path))[0, 0, 0])
    assert labels == _labels(index)  # Empty for a background image.
  assert [] in found.splits["train"].labels


@pytest.mark.slow  # A whole run.
def test_a_multilabel_run_reads_tfds_and_carves_val(tfds_sets, tmp_path,
                                                     monkeypatch):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("IMGREC_CACHE_HOME", str(tmp_path / "cache_home"))
  monkeypatch.setattr(sources, "default_tfds_cache_dir",
                      lambda: str(tmp_path / "tfds_cache"))
  result = trainer.train(TrainConfig(
      task="multilabel", tfds="imgrec_test_sets", tfds_data_dir=tfds_sets,
      model_dir=str(tmp_path / "run"), image_size=16, epochs=1, batch_size=8,
      val_split=0.25, verbose=0))
  run = RunFolder(result["model_dir"])
  splits = json.load(open(run.splits_path))["splits"]
  assert len(splits["test"]["paths"]) == 8  # TFDS's own test split.
  assert len(splits["val"]["paths"]) == 10  # A quarter of its train.
  assert len(splits["train"]["paths"]) == 30
  assert json.load(open(run.report_path()))["multilabel"]["per_class"][
      "car"]["support"] == 4
