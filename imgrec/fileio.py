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

A symlink is written through (its target is replaced, the link stays), and
a FIFO or device is written into, never renamed over. A path the user
names as an output goes through `check_output` first and `open_output`
(which also takes `-` for stdout).

Temporary names start with `.imgrec-tmp-`, so they are hidden and cannot be
a user's own file: imgrec deletes stale temporaries by that prefix alone.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile

from imgrec.errors import ImgrecError

TEMP_PREFIX = ".imgrec-tmp-"


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


def resolve_link(path):
  """The path a write of `path` lands on: a symlink's final target.

  Replacing a symlink by a regular file would cut it from what it shares
  (a gallery kept on a shared volume, say), so writes go through the link.
  """
  return os.path.realpath(path) if os.path.islink(path) else os.fspath(path)


def is_inside(path, folder):
  """Whether `path` is `folder` or lies under it (links followed)."""
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def may_replace_cache(path, looks_ours):
  """Whether a cache of imgrec's may be (re)written at `path`: nothing is
  there, or a regular file (not a link) that `looks_ours(path)` takes for
  imgrec's. Otherwise says in one warning line that it is left alone (a
  cache is only ever a faster next run)."""
  if not os.path.lexists(path):
    return True
  try:
    ours = (os.path.isfile(path) and not os.path.islink(path)
            and bool(looks_ours(path)))
  except Exception:  # pylint: disable=broad-except
    ours = False  # Whatever it holds, imgrec did not write it.
  if not ours:
    sys.stderr.write(f"imgrec: warning: {path} is not imgrec's cache; left "
                     "as it is (no cache written there)\n")
  return ours


def is_special(path):
  """True when `path` (after links) exists and is neither a file nor a folder.

  FIFOs, character and block devices and sockets are written into, never
  replaced: renaming over `/dev/null` would replace the system's.
  """
  try:
    mode = os.stat(path).st_mode
  except (OSError, ValueError):
    return False
  return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _remove(path):
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path that replaces `path` when the block succeeds.

  The temporary file is in `path`'s folder and keeps its suffix (Keras
  checks `.keras` and `.weights.h5` suffixes). If the block raises, or
  writes nothing, `path` is left as it was.

  A symlink is written through. A FIFO or device cannot be written by name
  and replaced, so it is refused.

  Args:
    path: the final path; its folder is created if needed.

  Yields:
    The temporary path to write to.

  Raises:
    ImgrecError: `path` is a FIFO, device or socket.
  """
  path = resolve_link(path)
  if is_special(path):
    raise ImgrecError(f"{path} is not a regular file (a FIFO or device): "
                      "this output is written by name and renamed into "
                      "place. Pass a regular file path.")
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

  A symlink is written through; a FIFO or device is opened and written
  into as it is (there is nothing to replace).

  Args:
    path: the final path; its folder is created if needed.
    mode: "w" (text) or "wb".
    encoding: text encoding for "w".

  Yields:
    The open temporary file (or the FIFO or device itself).
  """
  encoding = None if "b" in mode else encoding
  if is_special(path):
    with open(path, mode, encoding=encoding) as f:
      yield f
    return
  with atomic_path(path) as tmp:
    with open(tmp, mode, encoding=encoding) as f:
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
  path = resolve_link(path)
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


def check_output(path, *, flag, inputs=(), overwrite=False):
  """Refuses a user-named output file that would destroy something.

  Args:
    path: the output path the user gave (`-` is stdout and always fine).
    flag: the flag that named it, for the message ("--out").
    inputs: paths the same command reads; an output that is one of them
      (the same file by any name, links included) is refused.
    overwrite: an existing regular file may be replaced.

  Raises:
    ImgrecError: `path` is an input, a folder, or an existing file without
      `overwrite`.
  """
  if path == "-":
    return
  for source in inputs:
    try:
      same = os.path.samefile(path, source)
    except (OSError, ValueError):
      same = False
    if same:
      raise ImgrecError(f"{flag}={path} is also an input ({source}): "
                        "writing it would destroy what is read. Pass "
                        f"another {flag}.")
  if os.path.isdir(path):
    raise ImgrecError(f"{flag}={path} is a folder; pass a file path.")
  if is_special(path):
    return  # Written into, never replaced.
  if os.path.lexists(path) and not overwrite:
    raise ImgrecError(f"{flag}={path} exists. Pass --overwrite to replace "
                      f"it, or another {flag}.")


@contextlib.contextmanager
def open_output(path, mode="w", *, encoding="utf-8"):
  """Opens a user-named output: `-` is stdout, a FIFO or device is written
  into, a regular file (or a symlink's target) is replaced atomically."""
  if path == "-":
    stream = sys.stdout.buffer if "b" in mode else sys.stdout
    yield stream
    stream.flush()
    return
  with atomic_write(path, mode, encoding=encoding) as f:
    yield f


@contextlib.contextmanager
def locked(path):
  """Holds an exclusive lock for a read-modify-write of the file `path`.

  The lock is an flock on the folder that holds `path` (after links), so
  two processes updating one file take turns and no lock file is left
  beside a user's file; the kernel releases it when the process dies.
  The second process waits.

  Args:
    path: the file about to be read, merged and written.
  """
  directory = _parent(resolve_link(path))
  fd = os.open(directory, os.O_RDONLY)
  try:
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        break
      except InterruptedError:
        continue
      except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
          break  # A file system without locks: go on unlocked.
        raise
    yield
  finally:
    os.close(fd)


def digest(path):
  """The SHA-256 of a file's bytes (hex): what a command records of an
  output it wrote, to replace it later only while it is still so."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


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
