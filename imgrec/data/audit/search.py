"""Duplicates of a data set, from files to audit.json's section.

    listed, summary = find_duplicates(items, read_paths, cache_path=...)

`items` name each image (path as the user knows it, class, split);
`read_paths` are the files to read (the scan's converted copies where it
made them). The fingerprints are cached (`store`), the groups found without
comparing all pairs (`duplicates`) and named (`report`).
"""

import hashlib
import json
import time

import numpy as np

from imgrec import fileio
from imgrec.data.audit import duplicates as duplicates_lib
from imgrec.data.audit import report as report_lib
from imgrec.data.audit import store
from imgrec.errors import ImgrecError

# Part of the groups cache's key: bump it when the search changes.
GROUPS_VERSION = 3


def _load_groups(path, key):
  if not path:
    return None
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    if data.get("key") == key:
      return data["groups"], data["checked"]
  except (OSError, ValueError, KeyError, AttributeError):
    pass
  return None


def _is_groups(path):
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  return isinstance(data, dict) and {"key", "groups"} <= set(data)


def find_duplicates(items, read_paths, *, cache_path=None, workers=1,
                    max_image_pixels=None,
                    near_threshold=duplicates_lib.NEAR_THRESHOLD):
  """Groups of exact and near duplicates among `items`.

  Args:
    items: (path, class name, split) per image (`report.entries`).
    read_paths: the file to read for each item.
    cache_path: the fingerprint cache.
    workers: threads.
    max_image_pixels: the scan's pixel limit.
    near_threshold: see `duplicates.find_groups`.

  Returns:
    (listed, summary): `report.duplicates_section`'s, the summary with
    "seconds" {"fingerprints", "search"}, "from_cache" and "pairs_checked".
  """
  start = time.monotonic()
  kwargs = {"max_image_pixels": max_image_pixels} if max_image_pixels else {}
  prints = store.fingerprint_files(read_paths, cache_path=cache_path,
                                   workers=workers, **kwargs)
  printed = time.monotonic()
  # The same images in the same order find the same groups: kept beside
  # the fingerprints, so a rerun (a resumed training) does not search again.
  key = hashlib.sha256("\n".join(
      [str(GROUPS_VERSION), repr(near_threshold), *prints.digests]).encode(
          "utf-8")).hexdigest()
  groups_path = cache_path + ".groups.json" if cache_path else None
  cached = _load_groups(groups_path, key)
  if cached:
    groups, checked = cached
  else:
    groups, checked = duplicates_lib.find_groups(
        prints.digests, prints.window_list(), prints.blurs,
        [tuple(f) for f in np.asarray(prints.frames)],
        threshold=near_threshold, colours=prints.colours, workers=workers)
    if groups_path and fileio.may_replace_cache(groups_path, _is_groups):
      try:
        fileio.write_json(groups_path, {"key": key, "groups": groups,
                                        "checked": int(checked)})
      except (OSError, ImgrecError):
        pass  # Only the next search is slower.
  listed, summary = report_lib.duplicates_section(items, groups)
  summary.update({
      "unreadable": sum(not d for d in prints.digests),
      "flat_images": int(np.sum(~prints.has_window)) - sum(
          not d for d in prints.digests),
      "pairs_checked": int(checked),
      "from_cache": prints.from_cache,
      "seconds": {"fingerprints": round(printed - start, 3),
                  "search": round(time.monotonic() - printed, 3)},
  })
  return listed, summary
