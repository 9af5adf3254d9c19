"""The scan cache: one JSON file of results, keyed by path, size, mtime and settings.

A rerun re-checks only the files that changed, and a file whose prepared
copy was cleaned up. Writing the cache can fail (a full disk) without
failing the scan: it only makes the next one slower.
"""

import json
import os
import sys

from imgrec import fileio
from imgrec.data.scan.check import FileResult
from imgrec.data.scan.check import SCAN_VERSION

CACHE_NAME = "scan_cache.json"
_RESULT_FIELDS = ("ok", "reason", "detail", "format", "mode", "width",
                  "height", "conversion")


def load(path):
  """Returns the entries of the cache at `path` ({} if absent or stale)."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError):
    return {}
  if not isinstance(data, dict) or data.get("version") != SCAN_VERSION:
    return {}
  entries = data.get("entries")
  return entries if isinstance(entries, dict) else {}


def _is_cache(path):
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  return isinstance(data, dict) and {"version", "entries"} <= set(data)


def save(path, entries):
  """Writes the cache atomically; a failure only costs a slower next scan.
  A file of that name that is not a scan cache is never replaced."""
  if not fileio.may_replace_cache(path, _is_cache):
    return
  try:
    fileio.write_json(path, {"version": SCAN_VERSION, "entries": entries},
                      ensure_ascii=False, separators=(",", ":"))
  except OSError as e:
    sys.stderr.write(f"imgrec: warning: cannot write scan cache {path}: "
                     f"{e.strerror or e}\n")


def entry(result, stat, settings):
  """The cache entry of a FileResult checked with `settings`."""
  out = {"size": stat[0], "mtime_ns": stat[1], **settings}
  out.update({k: getattr(result, k) for k in _RESULT_FIELDS})
  out["prepared"] = (os.path.basename(result.decode_path)
                     if result.converted else None)
  return out


def lookup(item, path, settings, prepared_dir):
  """Returns the cached FileResult for `path`, or None to check it again."""
  if not isinstance(item, dict):
    return None
  try:
    st = os.stat(path)
  except OSError:
    return None
  if (item.get("size") != st.st_size or item.get("mtime_ns") !=
      st.st_mtime_ns or any(item.get(k) != v for k, v in settings.items())):
    return None
  decode_path = None
  if item.get("ok"):
    decode_path = path
    if item.get("prepared"):
      decode_path = os.path.join(prepared_dir, item["prepared"])
      if not os.path.isfile(decode_path):
        return None  # The prepared copy was cleaned up: make it again.
  return FileResult(path=path, decode_path=decode_path, from_cache=True,
                    **{k: item.get(k) for k in _RESULT_FIELDS})
