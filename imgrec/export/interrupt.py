"""SIGTERM and SIGINT stop an export between two files, never inside one.

An exception raised from a signal handler lands wherever Python happens to
be, also inside TensorFlow's native code, which turns it into an unrelated
error with a traceback. So the handler only records the signal, and the
export stops at its next step boundary (`BetweenSteps.check`): every file
written so far is whole, temporaries are removed, and no export report is
written. A second signal gets the handler that was there before (a second
Ctrl-C stops at once), as in training (`imgrec.training.signals`).
"""

import signal
import threading


class ExportInterrupted(Exception):
  """The export stopped on SIGTERM or SIGINT; a rerun exports again.

  Attributes:
    signum: the signal number.
    exit_code: 128 + signum, as shells report a death by that signal.
  """

  def __init__(self, signum):
    self.signum = signum
    self.exit_code = 128 + signum
    super().__init__(
        f"interrupted by {signal.Signals(signum).name}; the files written "
        "so far are whole and export_report.json is written only by a "
        "complete export: run the same command again")


class BetweenSteps:
  """Context manager: records SIGTERM/SIGINT; `check` raises at a boundary.

  Handlers are installed only from the main thread (elsewhere `check`
  never raises).

  Args:
    signals: the signals to handle.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._signals = tuple(signals)
    self._previous = {}
    self.received = None

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    self._restore()

  def _restore(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in self._signals:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    self._restore()

  def check(self):
    """Raises ExportInterrupted if a signal came since the block began."""
    if self.received is not None:
      raise ExportInterrupted(self.received)
