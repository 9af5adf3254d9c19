r"""Figures of issue 26 (the data audit), anchors in the same run.

    python experiments/audit_benchmark.py --parts=duplicates --seeds=0,1,2
    python experiments/audit_benchmark.py --parts=speed

* duplicates: MNIST-10k (train 8,000, test 2,000, linked) with 5% of the
  test images (100) copied into train as variants, each copy one kind in
  turn, drawn from the issue's ranges: resized 0.5-0.9, JPEG quality
  40-90, cropped 2-10% of each side, brightness x0.8-1.2 (`--variants=one`;
  `--variants=all` applies all four to every copy). `imgrec-audit
  --parts=duplicates` on it: recall of the planted pairs (the copy in one
  group with its original) and the share of reported pairs (every pair
  within a group) that are not planted. Anchor: `imagehash.phash` on the
  same files, every pair at Hamming distance <= 10 (imagededup's default
  threshold for its hashes), compared all-pairs.
* speed: a folder of 60,000 images (MNIST-10k and five copies of it
  re-encoded as JPEG, qualities 95 to 75). `imgrec-scan` (fresh prepared
  folder: every file decoded) against `imgrec-audit --parts=duplicates`
  on the scanned folder (the fingerprints and the search: the audit's own
  scan is the cached one), wall time and peak memory of each.

Prints one JSON line per measurement, then the medians.
"""

import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageEnhance

_PARTS = flags.DEFINE_list("parts", ["duplicates", "speed"], "What to run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the planting.")
_WORK = flags.DEFINE_string("work", "/tmp/audit_benchmark", "Scratch folder.")
_MNIST = flags.DEFINE_string("mnist", "/work/shared/data/mnist-10k",
                             "MNIST-10k: {train,test}/<digit>/*.png.")
_VARIANTS = flags.DEFINE_enum("variants", "one", ["one", "all"],
                              "One variant kind a copy, or all four.")
_PHASH_DISTANCE = flags.DEFINE_integer("phash_distance", 10, "The anchor's "
                                       "Hamming threshold.")
_KINDS = ("resize", "jpeg", "crop", "brightness")


def _files(folder):
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if not n.startswith("."))


def _variant(image, kinds, rng):
  """`image` (PIL L) changed by each of `kinds`; (image, format)."""
  fmt = "PNG"
  for kind in kinds:
    w, h = image.size
    if kind == "resize":
      s = rng.uniform(0.5, 0.9)
      image = image.resize((max(1, round(w * s)), max(1, round(h * s))),
                           Image.Resampling.BILINEAR)
    elif kind == "crop":
      f = rng.uniform(0.02, 0.10)
      cw, ch = round(w * (1 - f)), round(h * (1 - f))
      x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
      image = image.crop((x0, y0, x0 + cw, y0 + ch))
    elif kind == "brightness":
      image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    else:
      fmt = ("JPEG", int(rng.integers(40, 91)))
  return image, fmt


def make_planted(work, seed):
  """The planted folder and its pairs [(original test path, copy path)]."""
  root = os.path.join(work, f"planted_{_VARIANTS.value}_s{seed}")
  shutil.rmtree(root, ignore_errors=True)
  rng = np.random.default_rng(seed)
  for split in ("train", "test"):
    for digit in sorted(os.listdir(os.path.join(_MNIST.value, split))):
      target = os.path.join(root, split, digit)
      os.makedirs(target)
      for f in _files(os.path.join(_MNIST.value, split, digit)):
        os.symlink(f, os.path.join(target, os.path.basename(f)))
  test = [(d, f) for d in sorted(os.listdir(os.path.join(root, "test")))
          for f in _files(os.path.join(root, "test", d))]
  picked = rng.choice(len(test), len(test) // 20, replace=False)
  pairs = []
  for n, index in enumerate(picked):
    digit, original = test[index]
    kinds = (list(_KINDS) if _VARIANTS.value == "all"
             else [_KINDS[n % len(_KINDS)]])
    image, fmt = _variant(Image.open(original).convert("L"), kinds, rng)
    name = f"planted_{n:03d}" + (".jpg" if fmt != "PNG" else ".png")
    copy = os.path.join(root, "train", digit, name)
    if fmt == "PNG":
      image.save(copy)
    else:
      image.save(copy, "JPEG", quality=fmt[1])
    pairs.append((original, copy))
  return root, pairs


def _pairs_of(groups):
  out = set()
  for paths in groups:
    for i, a in enumerate(paths):
      for b in paths[i + 1:]:
        out.add(tuple(sorted((a, b))))
  return out


def _score(reported, planted):
  planted = {tuple(sorted(p)) for p in planted}
  found = len(reported & planted)
  return {"recall": found / len(planted), "reported_pairs": len(reported),
          "false_pairs": len(reported - planted),
          "false_share": len(reported - planted) / max(1, len(reported))}


def _run(args):
  start = time.monotonic()
  proc = subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, check=False)
  seconds = time.monotonic() - start
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  return seconds


def imgrec_audit(root, out, prepared):
  seconds = _run(["imgrec.cli.audit", f"--data_dir={root}",
                  "--allow_outside", "--parts=duplicates", f"--out={out}",
                  f"--prepared_dir={prepared}", "--noprogress"])
  audit = json.load(open(os.path.join(out, "audit.json")))
  groups = [[os.path.realpath(p) if os.path.islink(p) and "planted_" not in
             os.path.basename(p) else p for p in g["paths"]]
            for g in audit["duplicates"]]
  return groups, audit["summary"]["duplicates"], seconds


def phash_anchor(paths, distance):
  import imagehash  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  hashes = np.array([int(str(imagehash.phash(Image.open(p))), 16)
                     for p in paths], dtype=np.uint64)
  bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1)
  signed = bits.astype(np.float32) * 2 - 1  # Hamming = (64 - dot) / 2.
  found = set()
  for start_row in range(0, len(paths), 2048):
    dots = signed[start_row:start_row + 2048] @ signed.T
    rows, cols = np.nonzero((64 - dots) / 2 <= distance)
    for r, c in zip(rows + start_row, cols):
      if r < c:
        found.add(tuple(sorted((paths[r], paths[c]))))
  return found, time.monotonic() - start


def duplicates(work):
  rows = []
  for seed in [int(s) for s in _SEEDS.value]:
    root, planted = make_planted(work, seed)
    planted = [(os.path.realpath(a), b) for a, b in planted]
    groups, summary, seconds = imgrec_audit(
        root, os.path.join(work, f"audit_{_VARIANTS.value}_s{seed}"),
        os.path.join(work, f"prepared_{_VARIANTS.value}_s{seed}"))
    ours = _score(_pairs_of(groups), planted)
    paths = [os.path.realpath(os.path.join(dp, f)) if "planted_" not in f
             else os.path.join(dp, f)
             for dp, _, fs in os.walk(root) for f in sorted(fs)]
    anchor_pairs, anchor_seconds = phash_anchor(paths, _PHASH_DISTANCE.value)
    row = {"part": "duplicates", "variants": _VARIANTS.value, "seed": seed,
           "imgrec": dict(ours, seconds=round(seconds, 1),
                          search_seconds=summary["seconds"]),
           f"phash<={_PHASH_DISTANCE.value}": dict(
               _score(anchor_pairs, planted),
               seconds=round(anchor_seconds, 1))}
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def make_sixty(work):
  """MNIST-10k as PNG links and five JPEG copies: 60,000 files."""
  root = os.path.join(work, "sixty")
  if os.path.isdir(root):
    return root
  tmp = root + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  for split in ("train", "test"):
    for digit in sorted(os.listdir(os.path.join(_MNIST.value, split))):
      target = os.path.join(tmp, digit)
      os.makedirs(target, exist_ok=True)
      for f in _files(os.path.join(_MNIST.value, split, digit)):
        stem = f"{split}_{os.path.splitext(os.path.basename(f))[0]}"
        os.symlink(f, os.path.join(target, stem + ".png"))
        image = Image.open(f).convert("L")
        for quality in (95, 90, 85, 80, 75):
          buffer = io.BytesIO()
          image.save(buffer, "JPEG", quality=quality)
          with open(os.path.join(target, f"{stem}_q{quality}.jpg"), "wb") as out:
            out.write(buffer.getvalue())
  os.rename(tmp, root)
  return root


def _peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def speed(work):
  root = make_sixty(work)
  rows = []
  for seed in [int(s) for s in _SEEDS.value]:
    prepared = os.path.join(work, f"sixty_prepared_{seed}")
    shutil.rmtree(prepared, ignore_errors=True)
    scan_seconds = _run(["imgrec.cli.scan", f"--data_dir={root}",
                         "--allow_outside", f"--prepared_dir={prepared}",
                         "--noprogress"])
    scan_rss = _peak_rss_mb()
    out = os.path.join(work, f"sixty_audit_{seed}")
    _, summary, audit_seconds = imgrec_audit(root, out, prepared)
    row = {"part": "speed", "seed": seed, "images": summary["images"],
           "scan_seconds": round(scan_seconds, 1),
           "audit_seconds": round(audit_seconds, 1),
           "duplicates_seconds": summary["seconds"],
           "ratio": round(sum(summary["seconds"].values()) / scan_seconds, 3),
           "ratio_whole_command": round(audit_seconds / scan_seconds, 3),
           "groups": summary["groups"], "pairs_checked":
               summary["pairs_checked"],
           "peak_rss_mb_so_far": {"scan": round(scan_rss),
                                  "audit": round(_peak_rss_mb())}}
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def main(argv):
  del argv
  work = os.path.abspath(_WORK.value)
  os.makedirs(work, exist_ok=True)
  rows = []
  if "duplicates" in _PARTS.value:
    rows += duplicates(work)
  if "speed" in _PARTS.value:
    rows += speed(work)
  medians = {}
  for row in rows:
    if row["part"] == "duplicates":
      for side, values in row.items():
        if isinstance(values, dict):
          medians.setdefault(side, []).append(values)
  summary = {side: {k: statistics.median(v[k] for v in values)
                    for k in values[0] if isinstance(values[0][k], float)}
             for side, values in medians.items()}
  print(json.dumps({"medians": summary}, indent=1))


if __name__ == "__main__":
  app.run(main)
