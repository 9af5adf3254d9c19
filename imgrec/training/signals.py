"""SIGTERM and SIGINT stop training cleanly at the end of the current batch.

The partly done epoch is dropped, so a rerun resumes after the last
completed one (`imgrec.training.resume`).
"""

import logging
import signal

import keras

from imgrec import signals as signals_lib

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
  """Training stopped on SIGTERM or SIGINT; a rerun resumes it.

  Attributes:
    signum: the signal number.
    signal_name: e.g. "SIGTERM".
    exit_code: 128 + signum, as shells report a death by that signal.
    epochs_done: epochs completed and backed up.
  """

  def __init__(self, signum, epochs_done, epochs):
    self.signum = signum
    self.signal_name = signal.Signals(signum).name
    self.exit_code = signals_lib.exit_code(signum)
    self.epochs_done = epochs_done
    super().__init__(
        f"interrupted by {self.signal_name} after {epochs_done} of {epochs} "
        "epochs; rerun the same command to resume")


class GracefulInterrupt(keras.callbacks.Callback):
  """Turns SIGTERM/SIGINT during `fit` into `TrainingInterrupted`.

  The handler only records the signal. At the end of the current batch (or
  before the next epoch starts) the callback raises TrainingInterrupted, so
  no callback sees the partial epoch: nothing of it is logged, saved as best
  or backed up, and a rerun resumes after the last completed epoch. A signal
  that comes after the last epoch raises at the end of training, skipping
  evaluation and export; a rerun does them. A second signal gets the
  handler that was there before (a second Ctrl-C stops at once).

  Place it last in the callback list, so the others finish `on_train_end`.
  Handlers are installed only from the main thread.

  Args:
    signals: the signals to handle.
  """

  def __init__(self, signals=signals_lib.STOP_SIGNALS):
    super().__init__()
    self._recorder = signals_lib.SignalRecorder(signals)
    self._epoch = 0
    self._epochs_done = None

  @property
  def received(self):
    """The signal number that came during fit, or None."""
    return self._recorder.received

  def _check(self, epochs_done):
    if self.received is not None:
      self._recorder.restore()
      raise TrainingInterrupted(self.received, epochs_done,
                                self.params.get("epochs"))

  def on_train_begin(self, logs=None):
    self._epochs_done = None
    if not self._recorder.install():
      logger.warning("not in the main thread: SIGTERM/SIGINT stop training "
                     "without a clean exit")

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._check(epoch)

  def on_epoch_end(self, epoch, logs=None):
    self._epochs_done = epoch + 1

  def on_train_batch_end(self, batch, logs=None):
    self._check(self._epoch)

  def on_test_batch_end(self, batch, logs=None):
    self._check(self._epoch)

  def on_train_end(self, logs=None):
    self._recorder.restore()
    # None: fit had no epoch left to run.
    self._check(self.params.get("epochs") if self._epochs_done is None
                else self._epochs_done)
