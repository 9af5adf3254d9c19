"""What every imgrec command shares: flag parsing and one-line errors."""

import logging
import os
import sys

from absl import app
from absl import flags

from imgrec.errors import ImgrecError

# TensorFlow's C++ start-up chatter hides the one line users need to read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fail(message):
  """Prints `prog: error: message` on stderr and exits with status 2."""
  prog = os.path.basename(sys.argv[0]) if sys.argv else "imgrec"
  sys.stderr.write(f"{prog}: error: {message}\n")
  sys.stderr.flush()
  sys.exit(2)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e}. Run with --helpfull to list the flags.")


def run_main(main, argv=None):
  """Runs an absl `main(argv)`, turning user errors into exit status 2."""

  def guarded(argv):
    # TensorFlow's own INFO lines (SavedModel writer, ...) bury imgrec's.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
      return main(argv)
    except ImgrecError as e:
      fail(str(e))
    except KeyboardInterrupt:
      sys.stderr.write("interrupted\n")
      sys.exit(130)

  app.run(guarded, argv=argv, flags_parser=_parse_flags)
