"""What every imgrec command shares: flags from a config record, quiet start, one-line errors.

What a person sees is imgrec's own progress and results on stderr
(`imgrec: ...` lines) and stdout. TensorFlow's start-up and INFO lines show
only when asked for with `--verbosity` (e.g. `--verbosity=0` for INFO).
"""

import contextlib
import errno
import logging
import os
import signal
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging as absl_logging

from imgrec.cli import flags as flags_lib
from imgrec.errors import ImgrecError

# TensorFlow's C++ chatter hides the one line users need to read. Level 3:
# its ERROR lines too, which on CPUs are notices (serving uint8 images:
# "oneDNN supports DT_UINT8 only on platforms with AVX-512"); real failures
# still surface as Python exceptions. Set the variable to see them all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# OS errors that are the user's to fix (space, permissions, a path): one
# line, no traceback.
_USER_OS_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS,
                             errno.EACCES, errno.EPERM, errno.ENOENT,
                             errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                             errno.ENAMETOOLONG, errno.EMFILE})


def fail(message):
  """Prints `prog: error: message` on stderr and exits with status 2."""
  prog = os.path.basename(sys.argv[0]) if sys.argv else "imgrec"
  if prog.endswith(".py") or prog == "__main__.py":
    prog = "imgrec"
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


@contextlib.contextmanager
def _stderr_to_file():
  """Sends what C++ code writes to stderr (fd 2) to a file for the block.

  Yields the file; the caller shows it when something went wrong.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield sink
    finally:
      os.dup2(saved, 2)
      os.close(saved)


@contextlib.contextmanager
def quietly():
  """Hides what native libraries print on stderr for the block, unless --verbosity.

  What they said is shown if the block fails.
  """
  if flags.FLAGS["verbosity"].present:
    yield
    return
  with _stderr_to_file() as sink:
    try:
      yield
    except BaseException:
      sink.seek(0)
      sys.stderr.write(sink.read().decode("utf-8", "replace"))
      raise


def import_tensorflow_quietly():
  """Imports TensorFlow and finds its devices without the start-up lines.

  If that fails, what TensorFlow said is shown with the error.
  """
  with quietly():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()


_OWN_STDERR = []


def _own_stderr():
  """A text stream on a copy of file descriptor 2, made once."""
  if not _OWN_STDERR:
    try:
      _OWN_STDERR.append(os.fdopen(os.dup(2), "w", buffering=1,
                                   encoding="utf-8", errors="replace"))
    except OSError:
      _OWN_STDERR.append(sys.stderr)
  return _OWN_STDERR[0]


def _configure_logging():
  """imgrec's log lines on stderr; library chatter only with --verbosity."""
  imgrec_logger = logging.getLogger("imgrec")
  if not any(getattr(h, "_imgrec", False) for h in imgrec_logger.handlers):
    # A stream of its own on the terminal's stderr: imgrec's lines still
    # show while `quietly` hides what native libraries print.
    handler = logging.StreamHandler(_own_stderr())
    handler.setFormatter(logging.Formatter("imgrec: %(message)s"))
    handler._imgrec = True  # pylint: disable=protected-access
    imgrec_logger.addHandler(handler)
  imgrec_logger.setLevel(logging.INFO)
  imgrec_logger.propagate = False
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def training_went_elsewhere(result, prog):
  """What a train command does first with `trainer.train`'s result.

  A run that SIGTERM or Ctrl-C interrupted exits here, with its message and
  code; a worker of a multi-worker run says it is done.

  Returns:
    True for a worker (the chief prints the results), else False.
  """
  if result.get("interrupted"):
    sys.stderr.write(f"{prog}: {result['message']}\n")
    sys.exit(result["exit_code"])
  if result.get("chief") is False:
    print(f"worker done in {result['wall_seconds']:.1f} s; the chief writes "
          f"{result['model_dir']}")
    return True
  return False


class Terminated(KeyboardInterrupt):
  """SIGTERM, raised in the main thread: it unwinds as Ctrl-C does, so every
  `finally` runs (temporary files are removed) before the exit."""


def _terminate(signum, frame):
  del signum, frame
  raise Terminated()


def model_needs_tensorflow(config):
  """`run_config_main`'s `tensorflow` for a command given --model: only a
  model TFLite cannot run needs TensorFlow."""
  from imgrec.inference import model_files  # pylint: disable=g-import-not-at-top
  return model_files.needs_tensorflow(config.model)


def run_config_main(config_cls, main, *, exclude=(), argv=None,
                    tensorflow=True):
  """Defines the flags of `config_cls`, parses them and runs `main(config, argv)`.

  Every flag's own check (`Config.validate`: ranges, finite numbers) runs
  first, whatever the command does next. User errors (ImgrecError, and OS
  errors such as a full disk or a read-only folder) become one line on
  stderr and exit status 2; Ctrl-C exits with 130 and SIGTERM with 143,
  both after the cleanups.

  Args:
    config_cls: the config record whose fields are the flags.
    main: `fn(config, argv)`.
    exclude: fields that get no flag.
    argv: the command line (default: sys.argv).
    tensorflow: the command uses TensorFlow (imported quietly up front),
      or `fn(config)` saying whether this run does (a TFLite model runs
      without it).
  """
  names = flags_lib.define_flags(config_cls, exclude=exclude)

  def guarded(argv):
    _configure_logging()
    try:
      previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # Not the main thread: SIGTERM keeps its handler.
      previous = None
    try:
      config = flags_lib.config_from_flags(config_cls, names)
      config.validate(check_files=False)
      if tensorflow(config) if callable(tensorflow) else tensorflow:
        import_tensorflow_quietly()
      elif not flags.FLAGS["verbosity"].present:
        from imgrec.data import decode  # pylint: disable=g-import-not-at-top
        decode.set_tensorflow_importer(import_tensorflow_quietly)
      return main(config, argv)
    except ImgrecError as e:
      fail(str(e))
    except OSError as e:
      if e.errno not in _USER_OS_ERRORS:
        raise
      where = f"{e.filename}: " if e.filename else ""
      fail(f"{where}{e.strerror or e}. Check the path, its permissions and "
           "the free space, then run the same command again.")
    except KeyboardInterrupt as e:
      terminated = isinstance(e, Terminated)
      sys.stderr.write("terminated\n" if terminated else "interrupted\n")
      sys.exit(143 if terminated else 130)
    finally:
      if previous is not None:
        signal.signal(signal.SIGTERM, previous)

  app.run(guarded, argv=argv, flags_parser=_parse_flags)
