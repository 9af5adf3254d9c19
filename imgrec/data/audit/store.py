"""Fingerprints of many image files, in parallel, cached beside the scan's.

    prints = fingerprint_files(paths, cache_path=..., workers=2)

Each file is read under the decode policy (`decode.read_file`: the pixels
training sees) and fingerprinted (`fingerprint.fingerprint`). Results are
kept in one `.npz` file keyed by path, size and modification time, so an
audit of an unchanged folder reads them back instead of decoding again;
writing it can fail (a full disk) without failing the audit.
"""

import concurrent.futures
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import threading

import numpy as np

from imgrec import fileio
from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import decode
from imgrec.data.audit import fingerprint as fingerprint_lib
from imgrec.errors import ImgrecError

CACHE_NAME = "audit_fingerprints.npz"
# Part of the cache: bump it when a fingerprint changes.
VERSION = 4
# Files read at a time (each held as its small `Reduced`).
CHUNK = 256
# From this many files to fingerprint, worker processes (they take about a
# second to start).
PROCESS_MIN = 4096


@dataclasses.dataclass
class Prints:
  """Fingerprints of N files, as arrays.

  Attributes:
    digests: N pixel digests (str); "" for a file that could not be read.
    windows: uint8 [N, PADDED, PADDED] (zeros where `has_window` is False).
    has_window: bool [N]: False for a flat image or an unreadable file.
    blurs: float32 [N].
    frames: float64 [N, 5] (centroid y, x, spread, height, width).
    colours: float32 [N, 4] (mean chromaticities, image and ink).
    from_cache: how many came from the cache.
  """
  digests: list
  windows: np.ndarray
  has_window: np.ndarray
  blurs: np.ndarray
  frames: np.ndarray
  colours: np.ndarray
  from_cache: int = 0

  def window_list(self):
    return [w if ok else None for w, ok in zip(self.windows, self.has_window)]


def _key(path):
  try:
    st = os.stat(path)
  except OSError:
    return None
  return f"{st.st_size}:{st.st_mtime_ns}:{os.path.abspath(path)}"


def _load(cache_path):
  """{key: row} and the cached arrays, or ({}, None) when absent or stale."""
  if not cache_path or not os.path.isfile(cache_path):
    return {}, None
  try:
    with np.load(cache_path, allow_pickle=False) as data:
      if int(data["version"]) != VERSION or int(
          data["padded"]) != fingerprint_lib.PADDED:
        return {}, None
      arrays = {k: data[k] for k in ("digests", "windows", "has_window",
                                     "blurs", "frames", "colours")}
      keys = json.loads(str(data["keys"]))
  except (OSError, ValueError, KeyError):
    return {}, None
  return {k: i for i, k in enumerate(keys)}, arrays


def _is_cache(path):
  with np.load(path, allow_pickle=False) as data:
    return {"version", "keys", "digests"} <= set(data.files)


def _save(cache_path, keys, prints):
  if not fileio.may_replace_cache(cache_path, _is_cache):
    return
  try:
    with fileio.atomic_path(cache_path) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, version=VERSION, padded=fingerprint_lib.PADDED,
                 keys=json.dumps(keys), digests=np.asarray(prints.digests),
                 windows=prints.windows, has_window=prints.has_window,
                 blurs=prints.blurs, frames=prints.frames,
                 colours=prints.colours)
  except (OSError, ImgrecError) as e:
    sys.stderr.write(f"imgrec: warning: cannot write the fingerprint cache "
                     f"{cache_path}: {getattr(e, 'strerror', None) or e}\n")


def _read(path, max_image_pixels):
  """The fingerprint's `Reduced` of the policy's RGB pixels of a file
  (the full pixels are dropped at once), or None when it cannot be read
  now."""
  try:
    # The header's pixel count first (a file may have changed since the
    # scan), then the pixels.
    if decode.open_plan(path, max_image_pixels) is None:
      return None
    return fingerprint_lib.reduce(decode.read_pillow(path, channels=3))
  except (ImgrecError, OSError, ValueError, SyntaxError):
    return None


def _batched(images):
  """Fingerprints (or None) of `Reduced` images (or None): those of one
  key together (numpy over the batch)."""
  found = [None] * len(images)
  by_key = {}
  for i, image in enumerate(images):
    if image is not None:
      by_key.setdefault(image.key, []).append(i)
  for rows in by_key.values():
    for row, result in zip(rows, fingerprint_lib.fingerprints_of_reduced(
        [images[i] for i in rows])):
      found[row] = result
  return found


def chunk_prints(paths, max_image_pixels):
  """Fingerprints (or None) of a few files: one worker process's job."""
  return _batched([_read(p, max_image_pixels) for p in paths])


def _worker_command():
  """The command of a worker process and its environment (imgrec found
  where this process found it)."""
  # This file is <home>/imgrec/data/audit/store.py.
  home = os.path.abspath(__file__)
  for _ in range(4):
    home = os.path.dirname(home)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [home] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  return [sys.executable, "-m", "imgrec.data.audit.worker"], env


def _in_processes(chunks, workers, max_image_pixels):
  """`chunk_prints` of each chunk on `workers` worker processes, in order; None
  when they cannot do it here (the caller then uses threads).

  The workers are plain `python -m imgrec.data.audit.worker` processes
  (neither forked from this one, which may hold TensorFlow's threads, nor
  spawned by multiprocessing, which would run the caller's own script
  again in each): jobs and answers are pickled over their pipes.
  """
  command, env = _worker_command()
  procs, results, failed = [], [None] * len(chunks), []

  def feed(proc, mine):
    try:
      for i in mine:
        pickle.dump((chunks[i], max_image_pixels), proc.stdin)
        proc.stdin.flush()
        results[i] = pickle.load(proc.stdout)
      proc.stdin.close()
    except Exception as e:  # pylint: disable=broad-except
      failed.append(e)  # A worker that died; the caller falls back.

  try:
    for _ in range(min(workers, len(chunks))):
      procs.append(subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL))
    threads = [threading.Thread(target=feed, args=(proc, range(
        k, len(chunks), len(procs))), daemon=True)
               for k, proc in enumerate(procs)]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
  except OSError as e:
    failed.append(e)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
      proc.wait()
  if failed:
    sys.stderr.write(f"imgrec: warning: fingerprinting without worker "
                     f"processes ({failed[0] or type(failed[0]).__name__})"
                     "\n")
    return None
  return [found for chunk in results for found in chunk]


def _fingerprints(paths, workers, max_image_pixels):
  """Fingerprints (or None) of `paths`, in order, CHUNK files at a time.

  Opening a small image is mostly Pillow's Python (its header parsers),
  which holds the GIL: threads do not share that work (20,000 MNIST files
  took 10 s of reading on 2 threads, 0.43 ms a file on one), so a large
  folder is read on `workers` processes.
  """
  chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
  if workers > 1 and len(paths) >= PROCESS_MIN:
    out = _in_processes(chunks, workers, max_image_pixels)
    if out is not None:
      return out
  out = []
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    for chunk in chunks:
      out += _batched(list(pool.map(lambda p: _read(p, max_image_pixels),
                                    chunk)))
  return out


def fingerprint_files(paths, *, cache_path=None, workers=1,
                      max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Fingerprints `paths` (files the scan found usable).

  Args:
    paths: image files.
    cache_path: the `.npz` cache to read and update, if any.
    workers: threads that read the files.
    max_image_pixels: files declaring more pixels are not read.

  Returns:
    A Prints, rows in the order of `paths`.
  """
  n = len(paths)
  padded = fingerprint_lib.PADDED
  prints = Prints(digests=[""] * n,
                  windows=np.zeros((n, padded, padded), np.uint8),
                  has_window=np.zeros(n, bool), blurs=np.zeros(n, np.float32),
                  frames=np.zeros((n, 5), np.float64),
                  colours=np.full((n, 4), 1 / 3, np.float32))
  keys = [_key(p) for p in paths]
  index, cached = _load(cache_path)
  todo = []
  for i, key in enumerate(keys):
    row = index.get(key) if key else None
    if row is None:
      todo.append(i)
      continue
    prints.digests[i] = str(cached["digests"][row])
    prints.windows[i] = cached["windows"][row]
    prints.has_window[i] = cached["has_window"][row]
    prints.blurs[i] = cached["blurs"][row]
    prints.frames[i] = cached["frames"][row]
    prints.colours[i] = cached["colours"][row]
  prints.from_cache = n - len(todo)
  for i, found in zip(todo, _fingerprints([paths[i] for i in todo],
                                          workers, max_image_pixels)):
    if found is None:
      keys[i] = None  # Unreadable now: checked again next time.
      continue
    prints.digests[i] = found.digest
    if found.window is not None:
      prints.windows[i] = found.window
      prints.has_window[i] = True
    prints.blurs[i] = found.blur
    prints.frames[i] = found.frame
    prints.colours[i] = found.colour
  if cache_path and todo:
    rows = [i for i, k in enumerate(keys) if k]
    _save(cache_path, [keys[i] for i in rows], Prints(
        [prints.digests[i] for i in rows], prints.windows[rows],
        prints.has_window[rows], prints.blurs[rows], prints.frames[rows],
        prints.colours[rows]))
  return prints
