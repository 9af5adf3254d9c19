r"""Issue 15, benchmark 1: steady labels on a surveillance-like video of digits.

    nice -n 10 python experiments/stream_benchmark.py   # --minutes=3

Steps (outputs cached in --work_dir; --retrain redoes the stills and model):
  1. 640x480 "camera" stills of MNIST *train* digits (cluttered background,
     noise, blur, random brightness/contrast) -> imgrec-train of --model from
     scratch (no ImageNet weights here) at --image_size, then imgrec-export
     of the TFLite --variants.
  2. A 25 fps 640x480 video of MNIST *test* digits: segments of 1.5-8 s, a
     new class after each hard cut, sensor noise, blur episodes, drift and
     jitter of the digit and of the camera; its true segments in a JSON.
  3. One pass of the float TFLite model over it, then classify_stream for
     each --smoothing setting on those probabilities: per-frame accuracy
     (all frames; frames >= 1 s after a cut) and label switches a minute,
     raw vs steady, and the distance of each true cut to the nearest steady
     change.
  4. Frames a wall second, median of --repeats: end to end (video.frames +
     classify_stream), decode only, and on decoded frames predict_proba,
     its resize (Classifier.prepare) and the model (Classifier.run) apart.
  5. classify_stream(realtime=True) (the file on its own clock): fps,
     dropped frames, lag behind the source.
Prints plain tables and writes every figure to --out.

Goals (issue 15): steady switches/min <= raw/10, steady accuracy >= raw,
end to end >= 100 fps for mobilenet_v3_small TFLite at 224 px on 2 cores.
Expected (2026-11-30, 2 shared CPU cores, load ~3; 3 min, 36 segments;
mobilenet_v3_small 224 px, 200 stills a digit, 15 epochs, 11 min): raw
95.8% of frames, 69.7 switches/min (truth 11.7); ema:0.5:0.4 steady 84.8%
(98.9% >= 1 s after a cut), 13.0/min, cuts found 0.72 s late (median);
none:0:0.4:backdate 98.4%, 12.3/min; end to end float 285 fps (decode 526,
resize 1122, model 825), dynamic 182, int8 162; realtime 25 fps, none
dropped, lag median 6 ms, max 0.17 s. Speeds move with the load.
"""

import functools
import hashlib
import inspect
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import av
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

from imgrec.inference import smoothing
from imgrec.inference import stream
from imgrec.inference import video
from imgrec.inference.classifier import Classifier

_DATA = flags.DEFINE_string("data_dir", "/work/shared/data/mnist-10k",
                            "MNIST folder: {train,test}/<digit>/*.png.")
_WORK = flags.DEFINE_string(
    "work_dir", os.path.join(tempfile.gettempdir(), "stream_bench"),
    "Stills, model, video and results.")
_OUT = flags.DEFINE_string("out", None, "Results JSON (default: "
                           "--work_dir/stream_benchmark.json).")
_MINUTES = flags.DEFINE_float("minutes", 3.0, "Length of the test video.",
                              lower_bound=0.15)  # 9 s: one cut at least.
_PER_CLASS = flags.DEFINE_integer("per_class", 200, "Training stills a digit.")
_MODEL = flags.DEFINE_string("model", "mobilenet_v3_small", "Registry model.")
_SIZE = flags.DEFINE_integer("image_size", 224, "Model input side.")
_EPOCHS = flags.DEFINE_integer("epochs", 15, "Training epochs.")
_TRAIN_FLAGS = flags.DEFINE_list(
    "train_flags", ["--batch_size=32", "--learning_rate=0.002",
                    "--augment=light"], "More imgrec-train flags.")
_VARIANTS = flags.DEFINE_list("variants", ["float", "dynamic", "int8"],
                              "TFLite variants to time (float first).")
_RETRAIN = flags.DEFINE_bool("retrain", False, "Remake stills and model.")
_SMOOTHING = flags.DEFINE_list(
    "smoothing", ["ema:0.5:0.4", "ema:0.5:0.4:backdate", "ema:1.0:0.5",
                  "mean:0.5:0.4", "ema:0.2:0.3", "none:0:0.4",
                  "none:0:0.4:backdate", "none:0:0.2"],
    "mode:window:min_hold[:backdate] settings to score (the first: "
    "classify_stream's defaults).")
_THREADS = flags.DEFINE_integer("num_threads", 2, "TFLite threads.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "classify_stream batch.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs (median).")
_HELD = flags.DEFINE_integer("held_frames", 500, "Decoded frames kept in "
                             "memory for the inference-only timings.")
_SPEED = flags.DEFINE_bool("speed", True, "Run the speed stage.")
_REALTIME = flags.DEFINE_bool("realtime", True, "Run the realtime stage.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of stills and video.")

W, H, FPS, MARGIN = 640, 480, 25, 24  # MARGIN: room for camera motion.


def _mnist(split):
  """{digit: [28x28 uint8 arrays]} of one split of --data_dir."""
  root = os.path.join(_DATA.value, split)
  out = {}
  for d in range(10):
    folder = os.path.join(root, str(d))
    out[d] = [np.asarray(Image.open(os.path.join(folder, n)).convert("L"))
              for n in sorted(os.listdir(folder)) if n.endswith(".png")]
  return out


def _scene(rng):
  """A static background, MARGIN wider each side: gradient, clutter, grain."""
  w, h = W + 2 * MARGIN, H + 2 * MARGIN
  low = rng.uniform(30, 225, (3, 4, 3)).astype(np.uint8)
  im = Image.fromarray(low).resize((w, h), Image.BICUBIC)
  draw = ImageDraw.Draw(im)
  for _ in range(int(rng.integers(4, 12))):
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    bw, bh = rng.uniform(20, 200), rng.uniform(20, 160)
    color = tuple(int(c) for c in rng.uniform(20, 235, 3))
    shape = (x, y, x + bw, y + bh)
    (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(shape, color)
  for _ in range(int(rng.integers(2, 6))):
    draw.line(tuple(rng.uniform(0, max(w, h), 4)), width=int(
        rng.integers(1, 4)), fill=tuple(int(c) for c in rng.uniform(0, 255, 3)))
  scene = np.asarray(im.filter(ImageFilter.GaussianBlur(1.5)), np.float32)
  return scene + rng.normal(0, 6, scene.shape).astype(np.float32)


def _look(rng, still):
  """One segment's (or still's) random appearance."""
  return {"height": rng.uniform(180, 300), "gain": rng.uniform(0.7, 1.3),
          "offset": rng.uniform(-30, 30), "noise": rng.uniform(3, 12),
          "blur": rng.uniform(0, 3) if (still and rng.random() < 0.5)
                  else rng.uniform(0, 1),
          "dark_ink": bool(rng.random() < 0.5),
          "contrast": rng.uniform(90, 170)}


def _render(scene, digit, look, cx, cy, cam_x, cam_y, blur, rng):
  """One 640x480 uint8 frame: the digit as ink on the scene, as filmed."""
  side = int(look["height"])
  ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.BICUBIC),
                   np.float32)[..., None] / 255.0
  ox, oy = int(round(cam_x)) + MARGIN, int(round(cam_y)) + MARGIN
  frame = scene[oy:oy + H, ox:ox + W].copy()
  x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
  xa, ya = max(x0, 0), max(y0, 0)
  xb, yb = min(x0 + side, W), min(y0 + side, H)
  patch = frame[ya:yb, xa:xb]
  alpha = ink[ya - y0:yb - y0, xa - x0:xb - x0]
  base = patch.mean()
  sign = -1.0 if look["dark_ink"] else 1.0
  if not 0 <= base + sign * look["contrast"] <= 255:
    sign = -sign
  color = np.clip(base + sign * look["contrast"], 0, 255)
  frame[ya:yb, xa:xb] = patch * (1 - alpha) + color * alpha
  frame = frame * look["gain"] + look["offset"]
  if blur > 0.3:
    frame = np.asarray(Image.fromarray(np.clip(frame, 0, 255).astype(
        np.uint8)).filter(ImageFilter.GaussianBlur(blur)), np.float32)
  frame += rng.normal(0, look["noise"], frame.shape).astype(np.float32)
  return np.clip(frame, 0, 255).astype(np.uint8)


def make_stills(root, digits, per_class, rng):
  """root/<digit>/*.jpg: one train digit on a fresh scene each."""
  for d in range(10):
    os.makedirs(os.path.join(root, str(d)), exist_ok=True)
    for i in range(per_class):
      look = _look(rng, still=True)
      digit = digits[d][int(rng.integers(len(digits[d])))]
      cx, cy = W / 2 + rng.uniform(-90, 90), H / 2 + rng.uniform(-60, 60)
      cam_x, cam_y = rng.uniform(-MARGIN, MARGIN, 2)
      frame = _render(_scene(rng), digit, look, cx, cy, cam_x, cam_y,
                      look["blur"], rng)
      Image.fromarray(frame).save(os.path.join(root, str(d), f"{i:04d}.jpg"),
                                  quality=90)


def make_video(path, digits, minutes, rng):
  """Writes the test video; returns its true segments and codec."""
  total = int(round(minutes * 60 * FPS))
  segments, n, label = [], 0, None
  while n < total:
    length = min(int(round(rng.uniform(1.5, 8) * FPS)), total - n)
    label = int(rng.choice([d for d in range(10) if d != label]))
    segments.append({"start": n / FPS, "end": (n + length) / FPS,
                     "label": str(label), "frames": [n, n + length]})
    n += length
  codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
  with av.open(path, "w") as container:
    encoder = container.add_stream(codec, rate=FPS, options={"crf": "23"} if
                                   codec == "libx264" else {"qscale": "4"})
    encoder.width, encoder.height, encoder.pix_fmt = W, H, "yuv420p"
    for seg in segments:
      label = int(seg["label"])
      look, scene = _look(rng, still=False), _scene(rng)
      digit = digits[label][int(rng.integers(len(digits[label])))]
      cx, cy = W / 2 + rng.uniform(-70, 70), H / 2 + rng.uniform(-40, 40)
      vx, vy = rng.uniform(-20, 20, 2) / FPS  # Pixels a frame.
      cam = rng.uniform(-MARGIN / 2, MARGIN / 2, 2)
      cam_v = rng.uniform(-6, 6, 2) / FPS
      first, last = seg["frames"]
      blurred = set()
      if rng.random() < 0.35:  # A focus/motion blur episode.
        b0 = int(rng.integers(first, last))
        blurred = set(range(b0, b0 + int(rng.uniform(0.4, 1.2) * FPS)))
      for i in range(first, last):
        k = i - first
        cam_now = np.clip(cam + cam_v * k + rng.normal(0, 0.7, 2),
                          -MARGIN, MARGIN)
        blur = rng.uniform(2.5, 4) if i in blurred else look["blur"]
        rgb = _render(scene, digit, look, cx + vx * k + rng.normal(0, 1.5),
                      cy + vy * k + rng.normal(0, 1.5), cam_now[0],
                      cam_now[1], blur, rng)
        container.mux(encoder.encode(av.VideoFrame.from_ndarray(rgb, "rgb24")))
    container.mux(encoder.encode())
  return segments, encoder.codec_context.name


def _train(stills, model_dir):
  """imgrec-train, then imgrec-export of the variants; returns seconds."""
  bin_dir = os.path.dirname(sys.executable)
  start = time.perf_counter()
  cmd = [os.path.join(bin_dir, "imgrec-train"), f"--data_dir={stills}",
         f"--model={_MODEL.value}", "--weights=none",
         f"--image_size={_SIZE.value}", "--channels=3", "--flip=none",
         f"--epochs={_EPOCHS.value}", f"--model_dir={model_dir}",
         "--overwrite", "--verbose=2", *_TRAIN_FLAGS.value]
  print("$", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)
  train_s = time.perf_counter() - start
  cmd = [os.path.join(bin_dir, "imgrec-export"), f"--model_dir={model_dir}",
         f"--tflite={','.join(_VARIANTS.value)}"]
  print("$", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)
  return train_s, time.perf_counter() - start - train_s


class _Replay:
  """Stands in for a classifier: hands out probabilities computed before."""

  def __init__(self, class_names, probabilities):
    self.class_names, self._p, self._next = class_names, probabilities, 0

  def predict_proba(self, images):
    self._next += len(images)
    return self._p[self._next - len(images):self._next]


def smoothing_scores(path, model_path, truth, segments, minutes):
  """{setting: score()}: one pass of the model, then the settings replayed
  on its probabilities (frames without pixels: no decoding again)."""
  clf = Classifier.load(model_path, num_threads=_THREADS.value)
  stamps, probabilities = [], []

  def frames():
    for frame in video.frames(path):
      stamps.append(video.Frame(frame.t, frame.index, None))
      yield frame

  decoded = frames()
  for batch in iter(lambda: list(itertools.islice(decoded, _BATCH.value)), []):
    probabilities.extend(clf.predict_proba([f.rgb for f in batch]))
  has_backdate = "backdate" in inspect.signature(
      stream.classify_stream).parameters
  out = {}
  for setting in _SMOOTHING.value:
    mode, window, hold, *rest = setting.split(":")
    extra = {"backdate": True} if rest == ["backdate"] else {}
    if extra and not has_backdate:
      print(f"skipped {setting}: classify_stream has no backdate=")
      continue
    rows = list(stream.classify_stream(
        _Replay(clf.class_names, np.stack(probabilities)), stamps,
        batch_size=_BATCH.value, mode=mode, window=float(window),
        min_hold=float(hold), **extra))
    out[setting] = score(rows, truth, segments, minutes)
  return out


def score(rows, truth, segments, minutes):
  """Per-frame accuracy (all frames, and those >= 1 s after a cut), switches
  a minute, and the distance of each cut to the nearest steady change."""
  true = np.array([truth[r["frame"]] for r in rows])
  starts = np.array([s["start"] for s in segments])
  t = np.array([r["frame"] / FPS for r in rows])
  settled = t - starts[np.searchsorted(starts, t, side="right") - 1] >= 1.0
  out = {}
  for key, name in (("label", "raw"), ("smoothed_label", "steady")):
    labels = [r[key] for r in rows]
    right = np.array(labels) == true
    out[f"accuracy_{name}"] = float(right.mean())
    out[f"accuracy_{name}_settled"] = float(right[settled].mean())
    out[f"switches_per_min_{name}"] = smoothing.switches(labels) / minutes
  out["switches_per_min_truth"] = truth_rate = (len(segments) - 1) / minutes
  out["excess_switches_steady_over_raw"] = (  # Switches beyond the true cuts.
      out["switches_per_min_steady"] - truth_rate) / max(
          out["switches_per_min_raw"] - truth_rate, 1e-9)
  changes = np.array([s["start"] for s in stream.segments_of(rows)[1:]])
  cuts = starts[1:]
  err = np.array([np.min(np.abs(changes - c)) if len(changes) else np.inf
                  for c in cuts])
  out["boundary_error_s"] = {
      "median": float(np.median(err)), "p90": float(np.percentile(err, 90)),
      "missed_1s": int(np.sum(err > 1.0)), "cuts": int(len(cuts))}
  return out


def _fps(fn):
  """Frames a second of `fn() -> frames`."""
  start = time.perf_counter()
  n = fn()
  return n / (time.perf_counter() - start)


def speed(path, tflites, held, repeats):
  """{measure: {variant: median fps}}, repeats interleaved over variants
  so that load from other jobs hits them alike."""
  b = _BATCH.value
  batches = [held[i:i + b] for i in range(0, len(held), b)]
  clfs = {v: Classifier.load(p, num_threads=_THREADS.value)
          for v, p in tflites.items()}
  prepared = [clfs[_VARIANTS.value[0]].prepare(x) for x in batches]
  measures = {
      "decode_only": lambda clf: sum(1 for _ in video.frames(path)),
      "end_to_end": lambda clf: sum(1 for _ in stream.classify_stream(
          clf, video.frames(path), batch_size=b)),
      "predict_proba": lambda clf: sum(
          len(clf.predict_proba(x)) for x in batches),
      "prepare_resize": lambda clf: sum(len(clf.prepare(x)) for x in batches),
      "run_model": lambda clf: sum(len(clf.run(x)) for x in prepared)}
  fps = {m: {v: [] for v in clfs} for m in measures}
  first = _VARIANTS.value[0]
  for _ in range(repeats):
    for name, fn in measures.items():
      for v, clf in clfs.items():
        if name in ("decode_only", "prepare_resize") and v != first:
          continue  # The same work for every variant.
        fps[name][v].append(_fps(functools.partial(fn, clf)))
  return {m: {v: statistics.median(r) for v, r in by.items() if r}
          for m, by in fps.items()}


def _prepare(work):
  """Makes (or finds) stills, model and video; returns their paths, seconds."""
  tag = f"{_PER_CLASS.value}-s{_SEED.value}"
  stills = os.path.join(work, f"stills-{tag}")
  model_dir = os.path.join(work, f"{_MODEL.value}-{_SIZE.value}px-"
                           f"{_EPOCHS.value}e-{tag}")
  tflites = {v: os.path.join(model_dir, "export", "model.tflite" if v ==
                             "float" else f"model_{v}.tflite")
             for v in _VARIANTS.value}
  stages = {}
  t0 = time.perf_counter()
  if _RETRAIN.value or not os.path.isfile(stills + ".done"):
    make_stills(stills, _mnist("train"), _PER_CLASS.value,
                np.random.default_rng(_SEED.value))
    open(stills + ".done", "w").close()
    stages["stills_s"] = time.perf_counter() - t0
  if _RETRAIN.value or not all(map(os.path.isfile, tflites.values())):
    stages["train_s"], stages["export_s"] = _train(stills, model_dir)
  name = f"video-{_MINUTES.value:g}min-s{_SEED.value}"
  video_path = os.path.join(work, name + ".mp4")
  truth_path = os.path.join(work, name + ".json")
  if not os.path.isfile(truth_path):
    t0 = time.perf_counter()
    segments, codec = make_video(video_path, _mnist("test"), _MINUTES.value,
                                 np.random.default_rng(_SEED.value + 1))
    with open(truth_path, "w", encoding="utf-8") as f:
      json.dump({"video": video_path, "fps": FPS, "codec": codec,
                 "segments": segments}, f, indent=1)
    stages["video_s"] = time.perf_counter() - t0
  return model_dir, tflites, video_path, truth_path, stages


def main(argv):
  del argv
  os.makedirs(_WORK.value, exist_ok=True)
  result = {"argv": sys.argv, "cpus": len(os.sched_getaffinity(0)),
            "load_before": os.getloadavg()}
  model_dir, tflites, path, truth_path, stages = _prepare(_WORK.value)
  with open(os.path.join(model_dir, "training.json"), encoding="utf-8") as f:
    result["train_seconds"] = json.load(f)["train_seconds"]
  with open(os.path.join(model_dir, "export", "export_report.json"),
            encoding="utf-8") as f:
    result["stills_test_accuracy"] = {
        x["name"]: x["accuracy"] for x in json.load(f)["formats"]}
  with open(truth_path, encoding="utf-8") as f:
    meta = json.load(f)
  segments = meta["segments"]
  truth = [s["label"] for s in segments
           for _ in range(s["frames"][0], s["frames"][1])]
  minutes = len(truth) / FPS / 60
  result.update(model_dir=model_dir, video=path, codec=meta["codec"],
                frames=len(truth), segments=len(segments), imgrec_sha1={
                    m.__name__: hashlib.sha1(open(m.__file__, "rb").read())
                    .hexdigest()[:12] for m in (stream, video, smoothing)})

  t0 = time.perf_counter()
  result["smoothing"] = smoothing_scores(path, tflites[_VARIANTS.value[0]],
                                         truth, segments, minutes)
  stages["accuracy_s"] = time.perf_counter() - t0

  if _SPEED.value:
    t0 = time.perf_counter()
    held = [f.rgb for f, _ in zip(video.frames(path), range(_HELD.value))]
    result["fps"] = speed(path, tflites, held, _REPEATS.value)
    del held
    stages["speed_s"] = time.perf_counter() - t0
  if _REALTIME.value:
    t0 = time.perf_counter()
    stats = result["realtime"] = {}
    rows = list(stream.classify_stream(
        Classifier.load(tflites[_VARIANTS.value[0]],
                        num_threads=_THREADS.value),
        video.frames(path), realtime=True, stats=stats,
        batch_size=_BATCH.value))
    stats["accuracy_steady_of_classified"] = float(np.mean(
        [r["smoothed_label"] == truth[r["frame"]] for r in rows]))
    stages["realtime_s"] = time.perf_counter() - t0
  result.update(stages_s=stages, load_after=os.getloadavg())
  out = _OUT.value or os.path.join(_WORK.value, "stream_benchmark.json")
  with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  _print(result, minutes)
  print(f"\nwritten: {out}")


def _print(r, minutes):
  """The plain tables of `main`'s figures."""
  print(f"\nVideo {r['video']} ({r['codec']}, {r['frames']} frames, "
        f"{minutes:.2f} min, {r['segments']} segments); model {r['model_dir']}"
        f" (trained {r['train_seconds']:.0f} s; accuracy on test stills "
        f"{json.dumps(r['stills_test_accuracy'])}); {r['cpus']} CPUs, load "
        f"{r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}")
  print("\n| smoothing | acc raw | acc steady | raw >=1s after a cut | steady "
        ">=1s | sw/min raw | steady | truth | steady/raw | excess over truth"
        ", steady/raw | cut to steady change: median s | p90 s | none within "
        "1 s |")
  for setting, s in r["smoothing"].items():
    b = s["boundary_error_s"]
    cells = [f"{100 * s['accuracy_' + k]:.2f}%" for k in (
        "raw", "steady", "raw_settled", "steady_settled")]
    cells += [f"{s['switches_per_min_' + k]:.1f}" for k in (
        "raw", "steady", "truth")]
    cells += [f"{s['switches_per_min_steady'] / s['switches_per_min_raw']:.3f}",
              f"{s['excess_switches_steady_over_raw']:.3f}",
              f"{b['median']:.2f}", f"{b['p90']:.2f}",
              f"{b['missed_1s']}/{b['cuts']}"]
    print(f"| {setting} | " + " | ".join(cells) + " |")
  measures = ("end_to_end", "decode_only", "predict_proba", "prepare_resize",
              "run_model")
  print(f"\nFrames a second, median of {_REPEATS.value}; {_THREADS.value} "
        f"TFLite threads, batches of {_BATCH.value}; the last three on "
        f"{_HELD.value} frames decoded before:\n| tflite | " +
        " | ".join(measures) + " |")
  for v in r.get("fps", {}).get("end_to_end", {}):
    print(f"| {v} | " + " | ".join(f"{r['fps'][m][v]:.1f}" if v in r["fps"][m]
                                   else "-" for m in measures) + " |")
  if "realtime" in r:
    print("\nRealtime (float):", json.dumps(r["realtime"]))
  first, meet = _SMOOTHING.value[0], [k for k, s in r["smoothing"].items() if (
      s["switches_per_min_steady"] <= s["switches_per_min_raw"] / 10 and
      s["accuracy_steady"] >= s["accuracy_raw"])]
  s, v = r["smoothing"][first], _VARIANTS.value[0]
  print(f"\nGoals ({first}): steady/raw switches "
        f"{s['switches_per_min_steady'] / s['switches_per_min_raw']:.3f} (goal "
        f"<= 0.1; the true cuts alone give "
        f"{s['switches_per_min_truth'] / s['switches_per_min_raw']:.3f}); "
        f"steady accuracy {100 * s['accuracy_steady']:.2f}% vs raw "
        f"{100 * s['accuracy_raw']:.2f}% (goal >=); settings meeting both: "
        f"{', '.join(meet) or 'none'}" + (
            f"; end to end ({v}) {r['fps']['end_to_end'][v]:.1f} fps (goal "
            ">= 100)." if "fps" in r else "."))
  print("\nStages (s):", json.dumps(
      {k: round(v, 1) for k, v in r["stages_s"].items()}))


if __name__ == "__main__":
  app.run(main)
