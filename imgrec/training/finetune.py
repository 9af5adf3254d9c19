"""Transfer learning: weights from an earlier run, freezing and unfreezing.

The body of a model is its registry backbone (`models.backbone_of`): all of
a classifier but its head, the frame model's backbone inside a clip model.
Everything else is new on top of it and always trains. Fine-tuning trains
that on a frozen body first, then unfreezes the body (all of it, or its top
N layers) at a lower learning rate. BatchNormalization layers stay frozen,
so they keep running in inference mode with the statistics they were
trained with: updating them from small fine-tuning batches wrecks
pretrained features.
"""

import logging

import keras

from imgrec import models
from imgrec import tasks
from imgrec.errors import ImgrecError

logger = logging.getLogger(__name__)


def body_layers(model):
  """The leaf layers of the body, input to output."""
  return models.leaf_layers(models.backbone_of(model))


def set_body_trainable(model, trainable, unfreeze="all"):
  """Freezes the body, or unfreezes it (BatchNorm layers stay frozen).

  Args:
    model: an imgrec model built on a registry backbone.
    trainable: False freezes the whole body; True unfreezes it.
    unfreeze: with trainable=True, "all" or the number of body layers,
      counted from the top, to unfreeze.

  Returns:
    The number of body layers left trainable.
  """
  backbone = models.backbone_of(model)
  leaves = models.leaf_layers(backbone)
  backbone.trainable = True  # Nested models gate their layers' flags.
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

  Each layer of the body (a keras.applications backbone as one) is matched
  by name with a layer anywhere in the earlier model, so a clip model's
  frame backbone starts from an image run of the same --model, and copied
  when every weight has the same shape. Nothing outside the body is copied:
  the head's classes usually differ.

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
  by_name = {layer.name: layer for layer in models.layers_within(source)}
  copied = []
  for layer in models.backbone_of(model).layers:
    other = by_name.get(layer.name)
    if other is None or not layer.weights:
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
