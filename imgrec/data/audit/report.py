"""The duplicates part of `audit.json`: groups named by their files, classes
and splits, leakage and conflicting labels marked, most harmful first."""

import collections

# Groups listed in audit.json at the most (the summary counts them all).
MAX_GROUPS = 10000


def entries(folder):
  """(path, class name, split) of every image of an ImageFolder, in the
  order the audit fingerprints them; a multi-label image's class is its
  label set joined with "+"."""
  out = []
  for split, part in folder.splits.items():
    for path, label in zip(part.paths, part.labels):
      if isinstance(label, (list, tuple)):
        name = "+".join(c for c, v in zip(folder.class_names, label) if v)
      else:
        name = folder.class_names[label]
      out.append((path, name, split))
  return out


def _rank(group):
  # Leakage first (it inflates the test figure), then conflicting labels,
  # then the rest; larger groups first within each.
  return (not group["leakage"], not group["conflict"], -len(group["paths"]),
          group["paths"][0])


def duplicates_section(items, groups):
  """audit.json's "duplicates" list and its summary.

  Args:
    items: (path, class, split) per image, as `entries` gives.
    groups: duplicates.find_groups' groups (member indices into `items`).

  Returns:
    (list of {"kind", "paths", "classes", "splits", "similarity",
    "leakage", "conflict"}, summary dict).
  """
  listed = []
  for group in groups:
    members = group["members"]
    classes = [items[i][1] for i in members]
    splits = [items[i][2] for i in members]
    listed.append({
        "kind": group["kind"],
        "paths": [items[i][0] for i in members],
        "classes": classes,
        "splits": splits,
        "similarity": round(float(group["similarity"]), 4),
        "leakage": len(set(splits)) > 1,
        "conflict": len(set(classes)) > 1,
    })
  listed.sort(key=_rank)
  kinds = collections.Counter(g["kind"] for g in listed)
  crossing = collections.Counter()
  for g in listed:
    if g["leakage"]:
      crossing["-".join(sorted(set(g["splits"])))] += 1
  extra = sum(len(g["paths"]) - 1 for g in listed)
  summary = {
      "images": len(items),
      "groups": len(listed),
      "exact_groups": kinds.get("exact", 0),
      "near_groups": kinds.get("near", 0),
      "redundant_images": extra,
      "leakage_groups": sum(g["leakage"] for g in listed),
      "leakage_by_splits": dict(sorted(crossing.items())),
      "conflict_groups": sum(g["conflict"] for g in listed),
      "listed": min(len(listed), MAX_GROUPS),
  }
  return listed[:MAX_GROUPS], summary


def leaked_copies(listed):
  """The paths a `--leakage=drop` removes: in each group that crosses
  splits, its images outside the group's earliest split (train, then val,
  then test)."""
  order = {"train": 0, "val": 1, "test": 2}
  out = []
  for group in listed:
    if not group["leakage"]:
      continue
    keep = min(group["splits"], key=lambda s: order.get(s, 3))
    out += [p for p, s in zip(group["paths"], group["splits"]) if s != keep]
  return out
