"""One Keras model that runs several trained classifiers and averages them."""

import keras

from imgrec.models.layers import ToChannels
from imgrec.models.layers import WeightedAverage


def _input_spec(model):
  shape = model.input_shape
  if isinstance(shape, list):
    shape = shape[0]
  return (int(shape[1]), int(shape[2])), int(shape[3])


def ensemble_input_spec(members):
  """((height, width), channels) an ensemble takes: the largest member size,
  and RGB when any member is RGB."""
  specs = [_input_spec(m) for m in members]
  height = max(size[0] for size, _ in specs)
  width = max(size[1] for size, _ in specs)
  channels = max(c for _, c in specs)
  return (height, width), channels


def build_ensemble(members, weights=None, name="ensemble"):
  """A functional model: raw pixels in, the members' weighted mean out.

  The input is raw pixels at `ensemble_input_spec(members)`; each member
  gets them resized (bilinear, as the input pipeline) and converted to its
  own channels, and its probabilities are averaged with `weights`.

  Args:
    members: trained Keras classifiers with the same classes in the same
      order (raw pixels in, probabilities out).
    weights: one weight per member (default: equal).
    name: the model's name.

  Returns:
    A `keras.Model`.

  Raises:
    ValueError: no members, different numbers of classes, or weights that
      do not fit.
  """
  if not members:
    raise ValueError("An ensemble needs at least one member. Received: "
                     "members=[]")
  classes = {int(m.output_shape[-1]) for m in members}
  if len(classes) != 1:
    raise ValueError("Ensemble members must have the same classes. "
                     f"Received: output sizes {sorted(classes)}")
  weights = [1.0] * len(members) if weights is None else list(weights)
  if len(weights) != len(members):
    raise ValueError(f"Expected {len(members)} weights. Received: "
                     f"weights={weights}")
  (height, width), channels = ensemble_input_spec(members)
  images = keras.Input((height, width, channels), name="images")
  outputs = []
  for i, member in enumerate(members):
    (h, w), c = _input_spec(member)
    x = images
    if (h, w) != (height, width):
      x = keras.layers.Resizing(h, w, interpolation="bilinear",
                                name=f"member_{i}_resize")(x)
    if c != channels:
      x = ToChannels(c, name=f"member_{i}_channels")(x)
    # A member keeps its layers; a wrapper gives it a name unique here.
    wrapped = keras.Model(member.input, member.output, name=f"member_{i}")
    outputs.append(wrapped(x))
  probabilities = (outputs[0] if len(outputs) == 1 else
                   WeightedAverage(weights, name="average")(outputs))
  return keras.Model(images, probabilities, name=name)
