"""Chooses the tf.distribute strategy a run trains under."""

import tensorflow as tf

from imgrec.errors import ImgrecError


def get_strategy(name="auto"):
  """Returns a tf.distribute.Strategy.

  Args:
    name: "auto" (all local GPUs mirrored, one GPU, or the CPU), "default"
      (no distribution), "one_device" (first GPU, else CPU), "mirrored" (all
      local GPUs, or the CPU) or "multi_worker" (MultiWorkerMirroredStrategy
      over the cluster in the TF_CONFIG environment variable).

  Call it before any other TensorFlow work in the process: a multi-worker
  strategy must be created first.

  Raises:
    ImgrecError: unknown name.
  """
  if name == "multi_worker":
    # Collective ops must be configured before anything touches the devices,
    # even a device listing.
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    if len(gpus) > 1:
      return tf.distribute.MirroredStrategy()
    name = "one_device" if gpus else "default"
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  raise ImgrecError("Unknown --strategy. Expected auto, default, one_device, "
                    f"mirrored or multi_worker. Received: strategy={name!r}")
