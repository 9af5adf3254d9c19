"""Registered classifiers built once per test process, for the tests that
run over every model (test_models, test_backbones)."""

import functools

import keras

from imgrec import models

TRANSFER = models.list_models("transfer")


def model_kwargs(name):
  # Tests never download: ImageNet weights cannot be fetched here.
  return {"weights": None} if name in TRANSFER else {}


@functools.cache
def classifier(name, num_classes, input_shape):
  """One classifier per arguments; the big backbones take seconds to build."""
  keras.utils.set_random_seed(0)
  return models.create_model(name, num_classes, input_shape,
                             **model_kwargs(name))
