"""Losses of imgrec's heads beyond Keras' own, registered for `.keras` saving."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="imgrec")
class AsymmetricLoss(keras.losses.Loss):
  """The asymmetric loss of multi-label classification (Ridnik et al. 2021).

  An image holds a few of many labels, so most of a batch's label terms are
  easy negatives that swamp binary cross-entropy's gradient. This loss
  focuses the negative terms on the hard ones (weight p^gamma_neg) and
  shifts their probability down by `clip` (a negative scored under `clip`
  costs nothing), while positives keep their full term (gamma_pos = 0):

      loss = -y (1 - p)^gamma_pos log(p)
             - (1 - y) p_m^gamma_neg log(1 - p_m),   p_m = max(p - clip, 0)

  summed over the labels of an example (as in the paper; binary
  cross-entropy averages them, so compare learning rates with care).
  With gamma_neg = gamma_pos = clip = 0 it is binary cross-entropy summed
  over labels.

  Args:
    gamma_neg: focusing exponent of the negatives (the paper's 4).
    gamma_pos: focusing exponent of the positives (the paper's 0).
    clip: probability margin taken off the negatives (the paper's 0.05).
    epsilon: keeps the logarithms finite.
    **kwargs: `keras.losses.Loss` arguments (`name`, `reduction`).

  Inputs: `y_true` 0/1 (or mixed, with MixUp) [batch, labels]; `y_pred`
  sigmoid probabilities [batch, labels], float32.
  """

  def __init__(self, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, epsilon=1e-7,
               name="asymmetric_loss", **kwargs):
    super().__init__(name=name, **kwargs)
    for arg, value in (("gamma_neg", gamma_neg), ("gamma_pos", gamma_pos),
                       ("clip", clip)):
      if not 0 <= value < (1 if arg == "clip" else float("inf")):
        raise ValueError(f"`{arg}` must be >= 0 (clip < 1). Received: "
                         f"{arg}={value!r}")
    self.gamma_neg, self.gamma_pos = float(gamma_neg), float(gamma_pos)
    self.clip, self.epsilon = float(clip), float(epsilon)

  def call(self, y_true, y_pred):
    y_true = ops.cast(y_true, "float32")
    p = ops.clip(ops.cast(y_pred, "float32"), self.epsilon,
                 1.0 - self.epsilon)
    p_neg = ops.maximum(p - self.clip, 0.0)
    positive = y_true * ops.power(1.0 - p, self.gamma_pos) * ops.log(p)
    negative = (1.0 - y_true) * ops.power(p_neg, self.gamma_neg) * ops.log(
        ops.maximum(1.0 - p_neg, self.epsilon))
    return -ops.sum(positive + negative, axis=-1)

  def get_config(self):
    return {**super().get_config(), "gamma_neg": self.gamma_neg,
            "gamma_pos": self.gamma_pos, "clip": self.clip,
            "epsilon": self.epsilon}
