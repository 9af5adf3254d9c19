"""Recording SIGTERM and SIGINT so that work stops at a boundary of its own.

An exception raised from a signal handler lands wherever Python happens to
be, also inside TensorFlow's native code, which turns it into an unrelated
error with a traceback. So training (`imgrec.training.signals`) and export
(`imgrec.export.interrupt`) install a `SignalRecorder`, whose handler only
notes the signal, and stop at their next step boundary. The first signal
also puts the handlers that were there before back, so a second Ctrl-C
stops at once.
"""

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalRecorder:
  """Notes the first of `signals` that arrives; usable as a context manager.

  Handlers are installed only from the main thread (Python allows no
  other); `install` says whether they were.

  Args:
    signals: the signals to record.

  Attributes:
    received: the signal number that came, or None.
  """

  def __init__(self, signals=STOP_SIGNALS):
    self._signals = tuple(signals)
    self._previous = {}
    self.received = None

  def install(self):
    """Records from now on; False (nothing installed) off the main thread."""
    self.received = None
    if threading.current_thread() is not threading.main_thread():
      return False
    for signum in self._signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    return True

  def restore(self):
    """Puts the handlers that were there before back."""
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    self.restore()

  def __enter__(self):
    self.install()
    return self

  def __exit__(self, *exc):
    self.restore()


def exit_code(signum):
  """128 + signum, as shells report a death by that signal."""
  return 128 + signum
