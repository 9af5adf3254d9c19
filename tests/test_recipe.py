"""Tests for the training recipe: schedules, optimizers, mixing, weights."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from imgrec.config import TrainConfig
from imgrec.config import AUGMENT_LEVELS
from imgrec.data import augment
from imgrec.data import folder
from imgrec.data import pipeline
from imgrec.errors import ImgrecError
from imgrec.tasks import classification
from imgrec.training import recipe
from imgrec.training import trainer
from conftest import write_toy_folder


def lr_at(schedule, step):
  return float(schedule(step)) if callable(schedule) else float(schedule)


def test_cosine_with_warmup():
  config = TrainConfig(learning_rate=0.1, epochs=10, warmup_epochs=2)
  schedule = recipe.build_lr_schedule(config, steps_per_epoch=10)
  assert lr_at(schedule, 0) < 0.01
  assert abs(lr_at(schedule, 20) - 0.1) < 1e-6  # Peak right after warmup.
  assert lr_at(schedule, 60) < lr_at(schedule, 30)
  assert lr_at(schedule, 100) < 1e-3  # Decays to ~0 at the end.


def test_constant_with_and_without_warmup():
  config = TrainConfig(learning_rate=0.01, epochs=5, lr_schedule="constant",
                       warmup_epochs=0)
  assert recipe.build_lr_schedule(config, 7) == 0.01
  config = config.replace(warmup_epochs=1)
  schedule = recipe.build_lr_schedule(config, 10)
  assert lr_at(schedule, 0) == pytest.approx(0.001)
  assert lr_at(schedule, 9) == pytest.approx(0.01)
  assert lr_at(schedule, 40) == pytest.approx(0.01)


@pytest.mark.parametrize("name, cls", [("adam", keras.optimizers.Adam),
                                       ("adamw", keras.optimizers.AdamW),
                                       ("sgd", keras.optimizers.SGD)])
def test_optimizers(name, cls):
  config = TrainConfig(optimizer=name, weight_decay=0.01, ema=True,
                       grad_accum_steps=4)
  opt = recipe.build_optimizer(config, steps_per_epoch=8)
  assert isinstance(opt, cls)
  assert opt.use_ema and opt.gradient_accumulation_steps == 4


def test_balanced_class_weights():
  weights = classification.balanced_class_weights([0, 0, 0, 1], 3)
  assert weights[0] == pytest.approx(4 / 9)
  assert weights[1] == pytest.approx(4 / 3)
  assert weights[2] == 0.0
  # Each present class contributes the same total weight.
  assert 3 * weights[0] == pytest.approx(1 * weights[1])


@pytest.mark.parametrize("mixup, cutmix", [(0.2, 0.0), (0.0, 1.0),
                                           (0.4, 1.0)])
def test_mixer_keeps_label_mass_and_shapes(mixup, cutmix):
  mix = augment.build_mixer(mixup, cutmix, seed=1)
  images = tf.random.uniform((8, 16, 16, 3), 0, 255, seed=2)
  labels = tf.one_hot(tf.range(8) % 4, 4)
  ds = tf.data.Dataset.from_tensors((images, labels)).map(mix)
  x, y = next(iter(ds))
  assert x.shape == images.shape and y.shape == labels.shape
  np.testing.assert_allclose(y.numpy().sum(1), 1.0, atol=1e-5)
  assert not np.allclose(y.numpy(), labels.numpy())  # Labels were mixed.
  assert augment.build_mixer(0, 0) is None


@pytest.mark.parametrize("level", AUGMENT_LEVELS)
def test_every_augment_level_runs_in_tf_data(tmp_path, level):
  root = write_toy_folder(tmp_path / "d", per_class=3)
  paths = sorted(str(p) for p in (tmp_path / "d").glob("*/*.png"))
  ds = pipeline.make_dataset(
      folder.Split(paths, [0] * len(paths)), pipeline.PipelineSpec(
          num_classes=2, image_size=(16, 16), batch_size=4, training=True,
          augment=level))
  x, _ = next(iter(ds))
  # Per-image ops only: the batches stay uint8 (the model casts them).
  want = tf.uint8 if level in ("none", "light") else tf.float32
  assert x.shape == (4, 16, 16, 3) and x.dtype == want
  assert np.isfinite(x.numpy()).all()
  del root


@pytest.mark.parametrize("field, value", [
    ("lr_schedule", "linear"), ("warmup_epochs", -1), ("mixup", -1.0),
    ("ema_momentum", 1.5), ("grad_accum_steps", 0), ("class_weight", "x"),
    ("early_stopping", -1), ("jit_compile", "maybe"), ("augment", "wild"),
])
def test_bad_recipe_values_are_rejected(field, value):
  config = dataclasses.replace(TrainConfig(), **{field: value})
  with pytest.raises(ImgrecError, match=field):
    config.validate()


@pytest.mark.slow
def test_deterministic_runs_give_identical_weights(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=8)

  def run(name):
    result = trainer.train(TrainConfig(
        data_dir=data, model_dir=str(tmp_path / name), epochs=2,
        image_size=16, batch_size=4, seed=7, deterministic=True,
        augment="medium", mixup=0.2, export=False, verbose=0))
    model = keras.models.load_model(f"{result['model_dir']}/best.keras")
    return model.get_weights()

  for a, b in zip(run("a"), run("b")):
    np.testing.assert_array_equal(a, b)
