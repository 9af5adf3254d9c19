r"""Clips that only motion tells apart: a clip model against an image model.

    python experiments/clip_benchmark.py          # 3 seeds, ~50 min on 2 cores

Data: imgrec's generated motion clips (`imgrec.datasets.motion`): one
object moving left or right, turning clockwise or counterclockwise,
approaching or receding; the two classes of a pair visit the same
positions, angles and sizes, so a single frame tells the pair at best and
never the direction. Per seed, a dataset with its own seed (train / val /
test clips per class) is written under --work_dir.

Models (each trained by imgrec-train in a child process):
- clip: `imgrec-train --data_dir=<clips>` (simple_cnn on each frame + the
  motion stream + GRU; --flip=none, since a mirror turns left into right);
- image: the same clips cut into single frames (PNG, in --work_dir; every
  frame labelled with its clip's class), `imgrec-train` of simple_cnn;
  tested per frame and per clip (the mean of its frames' probabilities).

Figures on the test clips: accuracy, and direction accuracy (the true class
against its mirror class only: chance is 50%). Prints a table, mean and
std over seeds, and writes every figure to --work_dir/clip_benchmark.json.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
from PIL import Image

_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds 0, 1, ...")
_WORK = flags.DEFINE_string(
    "work_dir", os.path.join(tempfile.gettempdir(), "imgrec-clip-bench"),
    "Where the clips, frames and runs go.")
# 60 training clips a class were too few: on clockwise vs counterclockwise
# alone the clip model learned the training clips (100%) and stayed at
# chance on test clips; with 300 a class it reached 96% (20 epochs).
_TRAIN = flags.DEFINE_integer("train_clips", 250, "Training clips a class.")
_VAL = flags.DEFINE_integer("val_clips", 25, "Validation clips a class.")
_TEST = flags.DEFINE_integer("test_clips", 50, "Test clips a class.")
_FRAMES = flags.DEFINE_integer("frames", 16, "Frames a generated clip.")
_CLIP_FRAMES = flags.DEFINE_integer("clip_frames", 8, "--clip_frames of the "
                                    "clip model (sampled across the clip).")
_EVERY = flags.DEFINE_integer("every", 2, "The image model trains on every "
                              "n-th frame of each clip.")
_SIZE = flags.DEFINE_integer("size", 64, "Frame side in pixels.")
# The clip model learns the shifts and zooms in 2-3 epochs; the sense of a
# turn comes later, after a plateau whose length varies from run to run (of
# three 10-epoch runs, two found it by epoch 5, one was still at chance for
# clockwise vs counterclockwise at epoch 10): 20 leaves room.
_CLIP_EPOCHS = flags.DEFINE_integer("clip_epochs", 20, "Clip model epochs.")
_IMAGE_EPOCHS = flags.DEFINE_integer("image_epochs", 5,
                                     "Image model epochs.")
# 32 px (frames of 64 px, resized) keeps a 3-seed run within ~50 min on 2
# CPU cores; the objects' turns and shifts stay several pixels a step.
_CLIP_SIZE = flags.DEFINE_integer("clip_image_size", 32, "--image_size "
                                  "of both models (0: --size).")
_CLIP_FLAGS = flags.DEFINE_list(
    "clip_flags", ["--learning_rate=0.001", "--lr_schedule=constant",
                   "--warmup_epochs=0"],
    "More imgrec-train flags of the clip model.")
_RETRAIN = flags.DEFINE_bool("retrain", False, "Train runs that finished "
                              "before again.")
_TEMPORAL = flags.DEFINE_string("temporal", "gru", "--temporal of the clip "
                                "model.")
_MOTION = flags.DEFINE_bool("clip_motion", True, "--clip_motion of the clip "
                            "model.")


def _image_size():
  return _CLIP_SIZE.value or _SIZE.value


def _train(args, log):
  run = next(a.split("=", 1)[1] for a in args if a.startswith("--model_dir="))
  if not _RETRAIN.value and os.path.isfile(os.path.join(run, "report.json")):
    print(f"reusing {run} (--retrain to train it again)", flush=True)
    return
  command = [os.path.join(os.path.dirname(sys.executable), "imgrec-train"),
             *args, "--verbose=2"]
  with open(log, "w") as f:
    proc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT,
                          check=False)
  if proc.returncode:
    raise SystemExit(f"{' '.join(command)} failed; see {log}")


def _frames_folder(clips_root, out):
  """Every --every-th frame of each clip, PNG: out/<split>/<class>/<clip>_<i>.png."""
  from imgrec.inference import video  # pylint: disable=g-import-not-at-top
  if os.path.isfile(os.path.join(out, ".complete")):
    return out
  splits = [d for d in sorted(os.listdir(clips_root)) if not
            d.startswith(".") and os.path.isdir(os.path.join(clips_root, d))]
  for split in splits:
    for name in sorted(os.listdir(os.path.join(clips_root, split))):
      folder = os.path.join(out, split, name)
      os.makedirs(folder, exist_ok=True)
      for clip in sorted(os.listdir(os.path.join(clips_root, split, name))):
        stem = os.path.splitext(clip)[0]
        for frame in video.frames(os.path.join(clips_root, split, name,
                                               clip), every=_EVERY.value):
          Image.fromarray(frame.rgb).save(
              os.path.join(folder, f"{stem}_{frame.index:02d}.png"))
  open(os.path.join(out, ".complete"), "w").close()
  return out


def _direction_accuracy(probabilities, labels, class_names):
  from imgrec.datasets import motion  # pylint: disable=g-import-not-at-top
  index = {c: i for i, c in enumerate(class_names)}
  mirror = np.array([index[motion.MOTION_PAIRS[c]] for c in class_names])
  rows = np.arange(len(labels))
  return float(np.mean(probabilities[rows, labels] >
                       probabilities[rows, mirror[labels]]))


def _test_probabilities(run):
  """(probabilities, labels, test paths, class names) of a run's test split."""
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  folder = RunFolder(run)
  task = tasks.for_run(folder)
  model = tasks.load_model(folder.best_model_path)
  split = folder_lib.Split(*folder.read_split("test"))
  names = folder.read_labels()
  p = task.predict_views(model, split, len(names))[0]
  return p, np.asarray(split.labels), split.paths, names


def _clip_figures(run):
  p, labels, _, names = _test_probabilities(run)
  return {"accuracy": float(np.mean(p.argmax(1) == labels)),
          "direction": _direction_accuracy(p, labels, names),
          "clips": len(labels)}


def _image_figures(run):
  """Per frame, and per clip by the mean of its frames' probabilities."""
  p, labels, paths, names = _test_probabilities(run)
  clip_of = [os.path.join(os.path.dirname(path),
                          os.path.basename(path).rsplit("_", 1)[0])
             for path in paths]
  groups = {}
  for i, key in enumerate(clip_of):
    groups.setdefault(key, []).append(i)
  clip_p = np.stack([p[idx].mean(0) for idx in groups.values()])
  clip_labels = np.array([labels[idx[0]] for idx in groups.values()])
  return {"frame_accuracy": float(np.mean(p.argmax(1) == labels)),
          "frame_direction": _direction_accuracy(p, labels, names),
          "accuracy": float(np.mean(clip_p.argmax(1) == clip_labels)),
          "direction": _direction_accuracy(clip_p, clip_labels, names),
          "frames": len(labels), "clips": len(clip_labels)}


def _one_seed(seed):
  from imgrec.datasets import motion  # pylint: disable=g-import-not-at-top
  work = os.path.join(_WORK.value, f"seed{seed}")
  clips_root = motion.load_motion(
      os.path.join(work, "data"), seed=seed, frames=_FRAMES.value,
      size=_SIZE.value, splits={"train": _TRAIN.value, "val": _VAL.value,
                                "test": _TEST.value})
  clip_run = os.path.join(work, f"clip-{_TEMPORAL.value}-"
                          f"{'motion' if _MOTION.value else 'frames'}")
  _train([f"--data_dir={clips_root}", f"--model_dir={clip_run}",
          "--model=simple_cnn", f"--image_size={_image_size()}",
          f"--clip_frames={_CLIP_FRAMES.value}", *_CLIP_FLAGS.value,
          f"--temporal={_TEMPORAL.value}",
          f"--clip_motion={str(_MOTION.value).lower()}", "--flip=none",
          "--batch_size=16", f"--epochs={_CLIP_EPOCHS.value}",
          f"--seed={seed}", "--export=false", "--overwrite"],
         clip_run + ".log")
  frames_root = _frames_folder(clips_root, os.path.join(work, "frames"))
  image_run = os.path.join(work, "image")
  _train([f"--data_dir={frames_root}", f"--model_dir={image_run}",
          "--model=simple_cnn", f"--image_size={_image_size()}", "--flip=none",
          "--batch_size=64", f"--epochs={_IMAGE_EPOCHS.value}",
          f"--seed={seed}", "--export=false", "--overwrite"],
         image_run + ".log")
  return {"seed": seed, "clip": _clip_figures(clip_run),
          "image": _image_figures(image_run)}


def _mean_std(values):
  values = [100 * v for v in values]
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{statistics.mean(values):6.2f} +- {std:5.2f}"


def main(argv):
  del argv
  os.makedirs(_WORK.value, exist_ok=True)
  results = []
  for seed in range(_SEEDS.value):
    results.append(_one_seed(seed))
    r = results[-1]
    print(f"seed {seed}: clip {100 * r['clip']['accuracy']:.2f}% "
          f"(direction {100 * r['clip']['direction']:.2f}%), image per "
          f"frame {100 * r['image']['frame_accuracy']:.2f}% (direction "
          f"{100 * r['image']['frame_direction']:.2f}%), image per clip "
          f"{100 * r['image']['accuracy']:.2f}% (direction "
          f"{100 * r['image']['direction']:.2f}%)", flush=True)
  rows = [
      ("clip model (per clip)", [r["clip"]["accuracy"] for r in results],
       [r["clip"]["direction"] for r in results]),
      ("image model (per frame)",
       [r["image"]["frame_accuracy"] for r in results],
       [r["image"]["frame_direction"] for r in results]),
      ("image model (mean over clip)",
       [r["image"]["accuracy"] for r in results],
       [r["image"]["direction"] for r in results]),
  ]
  print(f"\n{len(results)} seeds, {results[0]['clip']['clips']} test clips "
        f"a seed (6 classes; chance 16.67%, direction chance 50%); "
        f"temporal={_TEMPORAL.value}, motion stream="
        f"{'on' if _MOTION.value else 'off'}")
  print(f"{'model':<30}{'accuracy %':>18}{'direction %':>18}")
  for name, accuracy, direction in rows:
    print(f"{name:<30}{_mean_std(accuracy):>18}{_mean_std(direction):>18}")
  out = os.path.join(_WORK.value, "clip_benchmark.json")
  with open(out, "w") as f:
    json.dump({"flags": {k: v.value for k, v in flags.FLAGS.__flags.items()
                         if k in ("seeds", "train_clips", "val_clips",
                                  "test_clips", "frames", "clip_frames",
                                  "every", "size",
                                  "clip_epochs", "image_epochs", "temporal",
                                  "clip_motion", "clip_image_size",
                                  "clip_flags")},
               "results": results}, f, indent=2)
  print(f"written: {out}")


if __name__ == "__main__":
  app.run(main)
