"""Transfer learning: weights from an earlier run, freezing and unfreezing.

Every imgrec model ends in a head (`head_*` layers and the `predictions`
Dense); everything before it is the body (for keras.applications models,
the nested `backbone` model). Fine-tuning trains the head on a frozen body
first, then unfreezes the body (all of it, or its top N layers) at a lower
learning rate. BatchNormalization layers stay frozen, so they keep running
in inference mode with the statistics they were trained with: updating them
from small fine-tuning batches wrecks pretrained features.
"""

import logging

import keras

from imgrec import tasks
from imgrec.errors import ImgrecError

logger = logging.getLogger(__name__)


def is_head(layer):
  return layer.name == "predictions" or layer.name.startswith("head")


def _flat_layers(layer):
  """The leaf layers of `layer`, recursing into nested models."""
  if isinstance(layer, keras.Model):
    out = []
    for sub in layer.layers:
      out.extend(_flat_layers(sub))
    return out
  return [layer]


def body_layers(model):
  """The leaf layers of the body, input to output."""
  out = []
  for layer in model.layers:
    if not is_head(layer):
      out.extend(_flat_layers(layer))
  return out


def set_body_trainable(model, trainable, unfreeze="all"):
  """Freezes the body, or unfreezes it (BatchNorm layers stay frozen).

  Args:
    model: an imgrec model.
    trainable: False freezes the whole body; True unfreezes it.
    unfreeze: with trainable=True, "all" or the number of body layers,
      counted from the top, to unfreeze.

  Returns:
    The number of body layers left trainable.
  """
  leaves = body_layers(model)
  for layer in model.layers:  # Nested models gate their layers' flags.
    if not is_head(layer):
      layer.trainable = True
  if not trainable:
    for layer in leaves:
      layer.trainable = False
    return 0
  top = len(leaves) if unfreeze == "all" else int(unfreeze)
  count = 0
  for i, layer in enumerate(leaves):
    keep = i >= len(leaves) - top and not isinstance(
        layer, keras.layers.BatchNormalization)
    layer.trainable = keep
    count += keep
  return count


def load_body_weights(model, run):
  """Copies body weights from an earlier imgrec run into `model`.

  Layers are matched by name; a layer is copied when every weight has the
  same shape. The head is never copied: the classes usually differ.

  Args:
    model: the new model.
    run: the RunFolder of an earlier imgrec-train run (its best model is
      read).

  Returns:
    The number of layers copied.

  Raises:
    ImgrecError: no trained model there, or no layer matched.
  """
  path = run.require_best_model()
  source = tasks.load_model(path)
  by_name = {layer.name: layer for layer in source.layers}
  copied = []
  for layer in model.layers:
    other = by_name.get(layer.name)
    if is_head(layer) or other is None or not layer.weights:
      continue
    ours, theirs = layer.get_weights(), other.get_weights()
    if len(ours) == len(theirs) and all(a.shape == b.shape
                                        for a, b in zip(ours, theirs)):
      layer.set_weights(theirs)
      copied.append(layer.name)
  if not copied:
    raise ImgrecError(f"No layer of the model in {run.path} matches the new "
                      f"model ({model.name}): use the same --model (and "
                      "--image_size for models whose weights depend on it).")
  logger.info("initialized %d layers from %s", len(copied), path)
  return len(copied)
