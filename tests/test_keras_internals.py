"""The Keras internals imgrec relies on: each one present, each assumption true."""

import keras
import numpy as np
import tensorflow as tf

from imgrec.training import keras_internals
from imgrec.training import resume


def test_every_internal_imgrec_touches_exists():
  # On failure the assertion names each internal this Keras lacks.
  assert keras_internals.missing_internals() == []


def _recording_dataset(seen):
  """Batches of random numbers that append what they yield to `seen`."""

  def record(x):
    seen.append(int(x))
    return x

  def recorded(x):
    y = tf.py_function(record, [x], tf.int64)
    y.set_shape([])
    return y

  ds = tf.data.Dataset.random(seed=3, rerandomize_each_iteration=True)
  ds = ds.take(4).map(recorded)
  return ds.map(lambda x: (tf.ones([1]) * tf.cast(x % 7, tf.float32),
                           tf.zeros([1]))).batch(2)


def test_fit_makes_the_iterators_resume_skips(tmp_path):
  """What `skip_epochs` assumes of Keras' EpochIterator still holds.

  Epoch 2 of a `fit` must see the random numbers that a fresh dataset
  gives after `skip_epochs(dataset, 1)`; if Keras makes more or fewer
  iterators per epoch, a resumed run would replay other data.
  """
  del tmp_path
  seen = []
  model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
  model.compile("sgd", "mse")
  model.fit(_recording_dataset(seen), epochs=2, verbose=0, shuffle=False)
  epoch_2 = seen[-4:]
  seen.clear()
  fresh = _recording_dataset(seen)
  resume.skip_epochs(fresh, 1)
  for _ in fresh:
    pass
  assert seen == epoch_2


def test_seed_state_of_random_layers_is_found():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5),
                            keras.layers.Dense(2)])
  states = keras_internals.seed_state_variables(model)
  assert len(states) == 1
  before = np.array(states[0])
  model(np.ones((2, 4), np.float32), training=True)
  assert not np.array_equal(before, np.array(states[0]))
