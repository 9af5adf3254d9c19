"""SIGTERM and SIGINT stop an export between two files, never inside one.

The handler only records the signal (`imgrec.signals`), and the export stops
at its next step boundary (`BetweenSteps.check`): every file written so far
is whole, temporaries are removed, and no export report is written. A second
signal gets the handler that was there before (a second Ctrl-C stops at
once), as in training (`imgrec.training.signals`).
"""

import signal

from imgrec import signals as signals_lib


class ExportInterrupted(Exception):
  """The export stopped on SIGTERM or SIGINT; a rerun exports again.

  Attributes:
    signum: the signal number.
    exit_code: 128 + signum, as shells report a death by that signal.
  """

  def __init__(self, signum):
    self.signum = signum
    self.exit_code = signals_lib.exit_code(signum)
    super().__init__(
        f"interrupted by {signal.Signals(signum).name}; the files written "
        "so far are whole and export_report.json is written only by a "
        "complete export: run the same command again")


class BetweenSteps(signals_lib.SignalRecorder):
  """Context manager: records SIGTERM/SIGINT; `check` raises at a boundary.

  Handlers are installed only from the main thread (elsewhere `check`
  never raises).

  Args:
    signals: the signals to handle.
  """

  def check(self):
    """Raises ExportInterrupted if a signal came since the block began."""
    if self.received is not None:
      raise ExportInterrupted(self.received)
