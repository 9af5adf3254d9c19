"""What every imgrec command shares: flags from a config record, one-line errors."""

import logging
import os
import sys

from absl import app
from absl import flags

from imgrec.cli import flags as flags_lib
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


def no_positional(argv):
  """Fails on positional arguments (a flag typed without its dashes, say)."""
  if len(argv) > 1:
    fail(f"Unexpected arguments: {' '.join(argv[1:])}. Flags start with --.")


def run_config_main(config_cls, main, *, exclude=(), argv=None):
  """Defines the flags of `config_cls`, parses them and runs `main(config, argv)`.

  User errors (ImgrecError) become one line on stderr and exit status 2;
  Ctrl-C exits with 130.
  """
  names = flags_lib.define_flags(config_cls, exclude=exclude)

  def guarded(argv):
    # TensorFlow's own INFO lines (SavedModel writer, ...) bury imgrec's.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
      return main(flags_lib.config_from_flags(config_cls, names), argv)
    except ImgrecError as e:
      fail(str(e))
    except KeyboardInterrupt:
      sys.stderr.write("interrupted\n")
      sys.exit(130)

  app.run(guarded, argv=argv, flags_parser=_parse_flags)
