"""Tests for transfer learning: freezing, --init_from, two-stage fine-tuning."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

from imgrec import models
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError
from imgrec import tasks
from imgrec.run_folder import RunFolder
from imgrec.training import finetune
from imgrec.training import trainer


def test_freeze_and_unfreeze_top_layers_keeps_batchnorm_frozen():
  model = models.create_model("mobilenet_v3_small", 3, (32, 32, 3),
                              weights=None)
  finetune.set_body_trainable(model, False)
  assert {w.path.split("/")[0] for w in model.trainable_weights} == {
      "predictions"}
  count = finetune.set_body_trainable(model, True, unfreeze="10")
  leaves = finetune.body_layers(model)
  top = leaves[-10:]
  assert count == sum(not isinstance(l, keras.layers.BatchNormalization)
                      for l in top)
  assert not any(l.trainable for l in leaves[:-10] if l.weights)
  assert not any(l.trainable for l in leaves
                 if isinstance(l, keras.layers.BatchNormalization))
  finetune.set_body_trainable(model, True)
  assert all(l.trainable for l in leaves
             if not isinstance(l, keras.layers.BatchNormalization))


def test_load_body_weights_copies_all_but_the_head(tmp_path):
  source = models.create_model("simple_cnn", 5, (16, 16, 3))
  source.save(tmp_path / "best.keras")
  target = models.create_model("simple_cnn", 2, (16, 16, 3))
  copied = finetune.load_body_weights(target, RunFolder(tmp_path))
  assert copied > 5
  for name in ("stage1_block1_conv", "stage3_block2_bn"):
    for a, b in zip(source.get_layer(name).get_weights(),
                    target.get_layer(name).get_weights()):
      np.testing.assert_array_equal(a, b)
  with pytest.raises(ImgrecError, match="No layer"):
    finetune.load_body_weights(models.create_model("mlp", 2, (16, 16, 3)),
                               RunFolder(tmp_path))
  with pytest.raises(ImgrecError, match="best.keras"):
    finetune.load_body_weights(target, RunFolder(tmp_path / "nothing"))


def _stripes(root, per_class, periods, seed, dim):
  """Horizontal vs vertical stripes in random colours, with noise."""
  rng = np.random.default_rng(seed)
  for name in ("horizontal", "vertical"):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      period = rng.integers(*periods)
      on = (np.arange(16) + rng.integers(0, period)) // max(
          1, period // 2) % 2 == 0
      mask = np.zeros((16, 16), bool)
      if name == "horizontal":
        mask[on] = True
      else:
        mask[:, on] = True
      image = np.where(mask[..., None], rng.integers(0, 256, 3) * dim,
                       rng.integers(0, 256, 3)) + rng.normal(0, 20,
                                                             (16, 16, 3))
      Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
          os.path.join(root, name, f"{i:03d}.png"))


@pytest.mark.slow
def test_pretraining_then_fine_tuning_beats_scratch_on_small_data(tmp_path):
  # Pretrain on wide stripes, then learn thin, darker stripes from only three
  # images per class (best epoch by a small val split): the pretrained body
  # already knows stripe orientation.
  _stripes(tmp_path / "source", 60, (4, 9), 0, 1.0)
  _stripes(tmp_path / "target" / "train", 3, (2, 5), 1, 0.5)
  _stripes(tmp_path / "target" / "val", 10, (2, 5), 2, 0.5)
  _stripes(tmp_path / "target" / "test", 40, (2, 5), 3, 0.5)
  kw = dict(image_size=16, batch_size=8, export=False, verbose=0, seed=3,
            val_split=0.0, augment="none", deterministic=True)
  pre = trainer.train(TrainConfig(
      data_dir=str(tmp_path / "source"), epochs=10, test_split=0.2,
      model_dir=str(tmp_path / "pre"), **kw))
  kw["batch_size"] = 2  # Three steps an epoch on the six target images.
  scratch = trainer.train(TrainConfig(
      data_dir=str(tmp_path / "target"), epochs=6,
      model_dir=str(tmp_path / "scratch"), **kw))["report"]["accuracy"]
  tuned = trainer.train(TrainConfig(
      data_dir=str(tmp_path / "target"), epochs=6, freeze_epochs=3,
      init_from=str(tmp_path / "pre"), model_dir=str(tmp_path / "tuned"),
      **kw))
  assert tuned["report"]["accuracy"] > scratch + 0.05, (
      tuned["report"]["accuracy"], scratch, pre["report"]["accuracy"],
      tuned["history"])
  # Both stages ran, each epoch logged once.
  assert len(tuned["history"]["loss"]) == 6
  with open(tmp_path / "tuned" / "history.csv") as f:
    assert [l.split(",")[0] for l in f.read().split()[1:]] == [
        str(i) for i in range(6)]
  assert os.path.isdir(tmp_path / "tuned" / "checkpoints" / "fine_tune")


def test_two_stage_flags_are_checked(tmp_path):
  with pytest.raises(ImgrecError, match="freeze_epochs"):
    TrainConfig(epochs=3, freeze_epochs=3).validate()
  with pytest.raises(ImgrecError, match="freeze_backbone"):
    TrainConfig(epochs=3, freeze_epochs=1, freeze_backbone=True).validate()
  with pytest.raises(ImgrecError, match="unfreeze"):
    TrainConfig(unfreeze="some").validate()
  with pytest.raises(ImgrecError, match="init_from"):
    TrainConfig(init_from=str(tmp_path / "absent")).validate()
  with pytest.raises(ImgrecError, match="No trained model"):
    tasks.resolve(TrainConfig(init_from=str(tmp_path)))
