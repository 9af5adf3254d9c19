r"""Figures of issue 26 (the data audit), anchors in the same run.

    python experiments/audit_benchmark.py --parts=duplicates --seeds=0,1,2
    python experiments/audit_benchmark.py --parts=speed
    python experiments/audit_benchmark.py --parts=multilabel --seeds=0,1,2

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
* labels: MNIST-10k's 8,000 training images with 5% of their labels
  flipped to another digit (seeded). `imgrec-audit --parts=labels` on them
  (`--folds=4`, the audit's short recipe at the MNIST input size): the
  precision and recall of the flagged images against the flipped ones, and
  the precision where the ranking first reaches 80% recall. Anchors in the
  same run, ranked by the same cleanlab call: in-sample probabilities (one
  model trained on all 8,000 judging them: what users often do) and a
  single held-out split (the audit's fold-0 model judging its 25%).
  Acting: `imgrec-train --flagfile=experiments/mnist_memorize.flags` (no
  label smoothing, augmentation or dropout, 30 epochs: a recipe that fits
  the labels it is given; with mnist_best.flags the noise cost 1 to 6 test
  images, too few to measure a share of) on the clean labels, the noisy
  ones, and the noisy ones `--exclude`-ing the audit's exclude.txt, each
  tested on the 2,000 clean test images.
* multilabel: the built-in shapes_multilabel training split with 5% of
  its label sets changed (one label added or dropped); `imgrec-audit
  --task=multilabel --parts=labels`: precision and recall of the flagged
  images, precision at 80% recall.
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

_PARTS = flags.DEFINE_list(
    "parts", ["duplicates", "labels", "multilabel", "speed"], "What to run.")
_NOISE = flags.DEFINE_float("noise", 0.05, "Share of training labels "
                            "flipped.")
_AUDIT_FLAGS = flags.DEFINE_list(
    "audit_flags", ["--image_size=20", "--channels=1", "--flip=none",
                    "--batch_size=128", "--folds=4"],
    "imgrec-audit flags of the labels part (its recipe: 5 epochs).")
_TRAIN_FLAGS = flags.DEFINE_list(
    "train_flags", [f"--flagfile={os.path.join(os.path.dirname(__file__), 'mnist_memorize.flags')}"],
    "imgrec-train flags of the acting runs.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the planting.")
_MULTILABEL_FLAGS = flags.DEFINE_list(
    "multilabel_flags", ["--image_size=32", "--epochs=10", "--folds=4",
                         "--batch_size=64"],
    "imgrec-audit flags of the multilabel part.")
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


def _labels_csv(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    f.write("path,label,split\n")
    for p, label, split in rows:
      f.write(f"{p},{label},{split}\n")


def make_noisy(work, seed):
  """CSVs of MNIST-10k: the audit's (noisy training images), and the
  training runs' clean and noisy (with the clean test images); the set
  of flipped paths."""
  rng = np.random.default_rng(seed)
  root = os.path.join(work, f"noisy_s{seed}")
  os.makedirs(root, exist_ok=True)
  train = [(f, d) for d in sorted(os.listdir(os.path.join(_MNIST.value,
                                                           "train")))
           for f in _files(os.path.join(_MNIST.value, "train", d))]
  test = [(f, d, "test") for d in sorted(os.listdir(os.path.join(
      _MNIST.value, "test"))) for f in _files(os.path.join(_MNIST.value,
                                                           "test", d))]
  digits = sorted({d for _, d in train})
  flipped = set(rng.choice(len(train), round(_NOISE.value * len(train)),
                           replace=False).tolist())
  noisy = []
  for i, (f, d) in enumerate(train):
    if i in flipped:
      d = str(rng.choice([x for x in digits if x != d]))
    noisy.append((f, d, "train"))
  paths = {name: os.path.join(root, name + ".csv")
           for name in ("audit", "clean", "noisy")}
  _labels_csv(paths["audit"], noisy)
  _labels_csv(paths["clean"], [(f, d, "train") for f, d in train] + test)
  _labels_csv(paths["noisy"], noisy + test)
  return paths, {train[i][0] for i in flipped}


def _precision_recall(flagged, flipped):
  hits = len(set(flagged) & flipped)
  return {"flagged": len(flagged), "precision": hits / max(1, len(flagged)),
          "recall": hits / len(flipped)}


def _precision_at_recall(ranked, flipped, recall=0.8):
  """Precision of the shortest head of `ranked` that reaches `recall`."""
  hits = 0
  for n, path in enumerate(ranked, 1):
    hits += path in flipped
    if hits >= recall * len(flipped):
      return hits / n
  return None


def _judge(run_dir, csv_path, audit_csv_rows=None):
  """cleanlab's ranked issues of a trained run's judgement of the images of
  `csv_path`'s training rows."""
  from cleanlab import filter as cleanlab_filter  # pylint: disable=g-import-not-at-top
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  from imgrec.tasks import open_set  # pylint: disable=g-import-not-at-top
  run = RunFolder(run_dir)
  task = tasks.for_run(run)
  model = tasks.load_model(run.best_model_path)
  names = run.read_labels()
  rows = audit_csv_rows
  split = folder_lib.Split([p for p, _ in rows],
                           [names.index(c) for _, c in rows])
  logits = open_set.embed(task, model, split).logits
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  ranked = cleanlab_filter.find_label_issues(
      labels=np.asarray(split.labels), pred_probs=p,
      return_indices_ranked_by="self_confidence", n_jobs=1)
  order = np.argsort(p[np.arange(len(rows)), split.labels])
  return [rows[i][0] for i in ranked], [rows[i][0] for i in order]


def _read_rows(csv_path, split=None):
  import csv  # pylint: disable=g-import-not-at-top
  with open(csv_path, encoding="utf-8") as f:
    return [(r["path"], r["label"]) for r in csv.DictReader(f)
            if split is None or r["split"] == split]


def _train(csv_path, model_dir, seed, extra=()):
  _run(["imgrec.cli.train", f"--labels_csv={csv_path}", "--allow_outside",
        f"--model_dir={model_dir}", f"--seed={seed}", "--noexport",
        "--verbose=0", "--overwrite", *_TRAIN_FLAGS.value, *extra])
  return json.load(open(os.path.join(model_dir, "report.json")))["accuracy"]


def _audit_labels(csv_path, out, seed, flipped, flags_, accuracy):
  """`imgrec-audit --parts=labels` on a labels CSV: precision and recall of
  its flagged images against `flipped`, precision at 80% recall, seconds,
  and the summary's held-out `accuracy` field."""
  seconds = _run(["imgrec.cli.audit", f"--labels_csv={csv_path}",
                  "--allow_outside", "--parts=labels", f"--out={out}",
                  f"--seed={seed}", "--noprogress", *flags_])
  audit = json.load(open(os.path.join(out, "audit.json")))
  flagged = [i["path"] for i in audit["label_issues"]]
  return dict(_precision_recall(flagged, flipped),
              precision_at_recall_80=_precision_at_recall(flagged, flipped),
              seconds=round(seconds, 1),
              **{accuracy: audit["summary"]["model"][accuracy]})


def labels(work):
  rows = []
  for seed in [int(s) for s in _SEEDS.value]:
    csvs, flipped = make_noisy(work, seed)
    out = os.path.join(work, f"labels_audit_s{seed}")
    imgrec = _audit_labels(csvs["audit"], out, seed, flipped,
                           _AUDIT_FLAGS.value, "held_out_accuracy")
    audit_rows = _read_rows(csvs["audit"])
    row = {"part": "labels", "seed": seed, "flipped": len(flipped),
           "imgrec": imgrec}
    # The single held-out split: the audit's fold-0 model on its 25%.
    fold_csv = os.path.join(out, "folds", "fold_0", "list", "data.csv")
    held = _read_rows(fold_csv, "test")
    by_read = dict(zip([os.path.abspath(p) for p, _ in audit_rows],
                       audit_rows))
    held = [(by_read.get(p, (p, c))[0], c) for p, c in held]
    ranked, _ = _judge(os.path.join(out, "folds", "fold_0", "run"), None,
                       held)
    row["single_split"] = dict(_precision_recall(ranked, flipped),
                               judged=len(held),
                               precision_at_recall_80=_precision_at_recall(
                                   ranked, flipped))
    # In-sample: one model trained on all the noisy images judges them.
    inside = os.path.join(work, f"labels_in_sample_s{seed}")
    _run(["imgrec.cli.train", f"--labels_csv={csvs['audit']}",
          "--allow_outside", f"--model_dir={inside}", f"--seed={seed}",
          "--val_split=0", "--test_split=0", "--noexport", "--verbose=0",
          "--overwrite", "--epochs=5", *[f for f in _AUDIT_FLAGS.value
                                         if not f.startswith("--folds")]])
    ranked, _ = _judge(inside, None, audit_rows)
    row["in_sample"] = dict(_precision_recall(ranked, flipped),
                            precision_at_recall_80=_precision_at_recall(
                                ranked, flipped))
    # Acting on it.
    acting = {}
    for name, csv_name, extra in (
        ("clean", "clean", ()), ("noisy", "noisy", ()),
        ("noisy_exclude", "noisy",
         (f"--exclude={os.path.join(out, 'exclude.txt')}",))):
      acting[name] = _train(csvs[csv_name], os.path.join(
          work, f"acting_{name}_s{seed}"), seed, extra)
    cost = acting["clean"] - acting["noisy"]
    acting["regained"] = ((acting["noisy_exclude"] - acting["noisy"]) / cost
                          if cost > 0 else None)
    row["acting"] = acting
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def multilabel(work):
  """Label sets: the built-in shapes_multilabel training split (1,500
  scenes of 0-3 shapes) with 5% of its images given a wrong label set (one
  label added or dropped, seeded); `imgrec-audit --task=multilabel
  --parts=labels` on them: precision and recall of the flagged images
  against the changed ones, and precision at 80% recall."""
  import csv  # pylint: disable=g-import-not-at-top
  from imgrec import datasets  # pylint: disable=g-import-not-at-top
  source = datasets.load_builtin("shapes_multilabel", seed=0)
  base = os.path.dirname(source)
  with open(source, encoding="utf-8") as f:
    rows = [(os.path.join(base, r["path"]), r["labels"].split())
            for r in csv.DictReader(f) if r["split"] == "train"]
  names = sorted({n for _, labels in rows for n in labels})
  out_rows = []
  for seed in [int(s) for s in _SEEDS.value]:
    rng = np.random.default_rng(seed)
    changed = set(rng.choice(len(rows), round(_NOISE.value * len(rows)),
                             replace=False).tolist())
    root = os.path.join(work, f"multilabel_s{seed}")
    os.makedirs(root, exist_ok=True)
    csv_path = os.path.join(root, "labels.csv")
    with open(csv_path, "w", encoding="utf-8") as f:
      f.write("path,labels,split\n")
      for i, (path, labels) in enumerate(rows):
        if i in changed:
          toggled = str(rng.choice(names))
          labels = sorted(set(labels) ^ {toggled})
        f.write(f"{path},{' '.join(labels)},train\n")
    flipped = {rows[i][0] for i in changed}
    out = os.path.join(work, f"multilabel_audit_s{seed}")  # Not in the data.
    row = {"part": "multilabel", "seed": seed, "changed": len(flipped),
           "imgrec": _audit_labels(
               csv_path, out, seed, flipped,
               ["--task=multilabel", *_MULTILABEL_FLAGS.value],
               "held_out_label_accuracy")}
    out_rows.append(row)
    print(json.dumps(row), flush=True)
  return out_rows


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
    # The scan alone: imgrec-scan's own duplicates search is what is timed
    # against it.
    scan_seconds = _run(["imgrec.cli.scan", f"--data_dir={root}",
                         "--allow_outside", f"--prepared_dir={prepared}",
                         "--noprogress", "--leakage=off"])
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
  if "labels" in _PARTS.value:
    rows += labels(work)
  if "speed" in _PARTS.value:
    rows += speed(work)
  if "multilabel" in _PARTS.value:
    rows += multilabel(work)
  medians = {}
  for row in rows:
    if row["part"] in ("duplicates", "labels", "multilabel"):
      for side, values in row.items():
        if isinstance(values, dict):
          medians.setdefault(side, []).append(values)
  summary = {side: {k: statistics.median(v[k] for v in values)
                    for k in values[0] if isinstance(values[0][k], float)
                    and all(v.get(k) is not None for v in values)}
             for side, values in medians.items()}
  print(json.dumps({"medians": summary}, indent=1))


if __name__ == "__main__":
  app.run(main)
