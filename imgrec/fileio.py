"""Atomic writes and imgrec's cache home: a reader sees the old or the new, never half.

Everything imgrec writes that a later run reads (configs, reports, split
lists, checkpoints, caches, exported models) is written under a temporary
name in the destination's own folder and renamed into place in one step, so
a crash or a kill mid-write leaves the previous version intact. The three
shapes of that one idea:

* `atomic_write(path)`: an open file object (text or binary).
* `atomic_path(path)`: a temporary path, for libraries that write by name
  (`model.save`, h5py); same folder and suffix as `path`.
* `atomic_dir(path)`: a temporary folder that replaces the folder `path`.

Temporary names start with `.tmp-`, so they are hidden and recognisable.
"""

import contextlib
import json
import os
import shutil
import tempfile

from imgrec.errors import ImgrecError

TEMP_PREFIX = ".tmp-"


def fsync_path(path):
  """Flushes a file or folder to disk; a no-op where the OS refuses."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def commit(tmp, path):
  """Renames the complete file `tmp` over `path` durably, in one step."""
  fsync_path(tmp)
  os.replace(tmp, path)
  fsync_path(os.path.dirname(os.path.abspath(path)))


def _parent(path):
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  return directory


def _remove(path):
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path that replaces `path` when the block succeeds.

  The temporary file is in `path`'s folder and keeps its suffix (Keras
  checks `.keras` and `.weights.h5` suffixes). If the block raises, or
  writes nothing, `path` is left as it was.

  Args:
    path: the final path; its folder is created if needed.

  Yields:
    The temporary path to write to.
  """
  directory = _parent(path)
  fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=_suffix(path),
                             dir=directory)
  os.close(fd)
  os.remove(tmp)  # Some writers refuse to overwrite an existing file.
  try:
    yield tmp
    if os.path.exists(tmp):
      os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary outputs.
      commit(tmp, path)
  finally:
    _remove(tmp)


def _suffix(path):
  name = os.path.basename(path)
  # `.weights.h5` and `.tar.gz` keep both parts.
  first_dot = name.find(".", 1)
  return name[first_dot:] if first_dot > 0 else ""


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
  with atomic_path(path) as tmp:
    with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_dir(path):
  """Yields a temporary folder that replaces the folder `path` on success.

  An existing folder at `path` is moved aside and deleted only after the
  new one is in place. A concurrent writer of the same `path` that wins
  the race is not an error: the last complete folder stays.

  Args:
    path: the final folder; its parent is created if needed.

  Yields:
    The temporary folder to fill.
  """
  parent = _parent(path)
  tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX + os.path.basename(path) + "-",
                         dir=parent)
  try:
    yield tmp
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700.
    old = None
    if os.path.isdir(path):
      old = tmp + ".old"
      os.rename(path, old)
    try:
      os.rename(tmp, path)
    except OSError:
      if not os.path.isdir(path):
        raise
      # Another writer put its complete folder there in between: it stays.
    fsync_path(parent)
    if old:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def write_text(path, text):
  """Writes `text` to `path` atomically."""
  with atomic_write(path) as f:
    f.write(text)


def write_json(path, data, **dump_kwargs):
  """Writes `data` as JSON (plus a newline) to `path` atomically."""
  with atomic_write(path) as f:
    json.dump(data, f, **dump_kwargs)
    f.write("\n")


def cache_home(*parts):
  """imgrec's cache folder: $XDG_CACHE_HOME/imgrec, else ~/.cache/imgrec.

  Args:
    *parts: sub-folders to join on.

  Returns:
    An absolute path (not created).
  """
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.abspath(os.path.join(base, "imgrec", *parts))


def check_free_space(directory, needed, what, then="run the same command "
                     "again"):
  """Raises before a write of about `needed` bytes that cannot fit.

  A write that fails half way can leave a library (h5py) in a state that
  crashes the process; refusing first leaves everything as it was.

  Raises:
    ImgrecError: naming the folder, the bytes needed and free.
  """
  try:
    free = shutil.disk_usage(directory).free
  except OSError:
    return  # Let the write itself say what is wrong.
  if free < needed:
    raise ImgrecError(
        f"Not enough free space in {directory} for {what}: about "
        f"{needed / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free. Free some "
        f"space, then {then}.")
