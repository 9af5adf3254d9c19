"""The optimization recipe: optimizer, LR schedule, EMA, dtype."""


import keras
import tensorflow as tf

from imgrec.errors import ImgrecError


def build_lr_schedule(config, steps_per_epoch, epochs=None, scale=1.0):
  """Returns the learning rate (a float or a Keras schedule).

  "cosine" decays from `learning_rate * scale` to 0 over the run, after
  `warmup_epochs` of linear warmup from 0; "constant" keeps it (after the
  same warmup).

  Args:
    config: a TrainConfig.
    steps_per_epoch: optimizer steps per epoch (after accumulation).
    epochs: epochs the schedule spans; default config.epochs.
    scale: factor on config.learning_rate (fine-tuning stages).
  """
  lr = config.learning_rate * scale
  epochs = config.epochs if epochs is None else epochs
  total = max(1, int(round(epochs * steps_per_epoch)))
  warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
  if config.lr_schedule == "constant":
    return _WarmupConstant(lr, warmup) if warmup else lr
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0 if warmup else lr,
      decay_steps=total - warmup, alpha=0.0,
      warmup_target=lr if warmup else None, warmup_steps=warmup)


@keras.saving.register_keras_serializable(package="imgrec")
class _WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `learning_rate`, then constant."""

  def __init__(self, learning_rate, warmup_steps):
    self.learning_rate = float(learning_rate)
    self.warmup_steps = int(warmup_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    return self.learning_rate * tf.minimum(
        1.0, (step + 1.0) / float(self.warmup_steps))

  def get_config(self):
    return {"learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps}


def build_optimizer(config, steps_per_epoch, epochs=None, lr_scale=1.0):
  """Builds the optimizer of a run: Adam, AdamW or SGD with Nesterov momentum.

  Weight decay is decoupled (AdamW, SGD's `weight_decay`); `ema` keeps an
  exponential moving average of the weights, used for evaluation and the
  saved model; `grad_accum_steps` > 1 accumulates gradients over that many
  batches per update.
  """
  accum = config.grad_accum_steps
  lr = build_lr_schedule(config, steps_per_epoch / accum, epochs, lr_scale)
  kw = dict(use_ema=config.ema, ema_momentum=config.ema_momentum,
            gradient_accumulation_steps=accum if accum > 1 else None)
  if config.optimizer == "adam":
    return keras.optimizers.Adam(lr, **kw)
  if config.optimizer == "adamw":
    return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay, **kw)
  if config.optimizer == "sgd":
    return keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=True,
                                weight_decay=config.weight_decay or None, **kw)
  raise ImgrecError(f"Unknown optimizer. Received: optimizer="
                    f"{config.optimizer!r}")


def set_precision(mixed_precision):
  """Sets the global Keras dtype policy; returns its name.

  Mixed precision computes in bfloat16 on CPUs (float16 has no fast CPU
  kernels) and float16 on GPUs; variables, logits and the loss stay float32
  (the models' heads are float32).
  """
  if not mixed_precision:
    policy = "float32"
  elif tf.config.list_logical_devices("GPU"):
    policy = "mixed_float16"
  else:
    policy = "mixed_bfloat16"
  keras.mixed_precision.set_global_policy(policy)
  return policy


def steps_per_epoch(num_examples, batch_size):
  """Batches per training epoch (the last partial batch is dropped)."""
  return max(1, num_examples // batch_size)
