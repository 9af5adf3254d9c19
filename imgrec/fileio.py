"""Atomic file writes: a reader sees the old file or the new one, never half.

Everything imgrec writes that a later run reads (configs, reports, split
lists, caches, exported models) goes through a temporary file in the same
folder and one `os.replace`, so a crash or a kill mid-write leaves the
previous version intact.
"""

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="w", *, encoding="utf-8"):
  """Opens a temporary file that replaces `path` when the block succeeds.

  Args:
    path: the final path; its folder is created if needed.
    mode: "w" (text) or "wb".
    encoding: text encoding for "w".

  Yields:
    The open temporary file.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  suffix = os.path.splitext(path)[1]
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
  try:
    with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary outputs.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path, text):
  """Writes `text` to `path` atomically."""
  with atomic_write(path) as f:
    f.write(text)


def write_json(path, data, **dump_kwargs):
  """Writes `data` as JSON (plus a newline) to `path` atomically."""
  with atomic_write(path) as f:
    json.dump(data, f, **dump_kwargs)
    f.write("\n")
