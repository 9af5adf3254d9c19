"""imgrec-predict: classifies image files with any exported imgrec model.

    imgrec-predict --model=runs/shapes-simple_cnn/export/model.tflite img.png
    imgrec-predict --model=runs/x/export/model_int8.tflite --benchmark \
        --num_threads=1 some/images/

Folders stream through `--chunk_size` images at a time; results print as
they come. A multi-label model prints each image's labels above their
thresholds (JSON items: {"source", "labels", "scores"}). A clip model classifies video files (one label a clip); an
image model's videos go to imgrec-stream.

With --explain[=METHOD] each answer comes with a heatmap of where the model
looked (`Classifier.explain`): its peak and box print with the classes (JSON:
an "explanation" item), and --explain_dir=DIR writes each heatmap over its
image as a PNG (JSON: "picture"). Explanations take the gradients of the Keras
model: a SavedModel or TFLite file explains through its run's best.keras.

Exit status: 0 when every input was classified; 1 when some could not be
(each is named on stderr, then one line says how many), the others
classified; 2 when none was, or on an error (one line on stderr).
"""

import json
import os
import sys

from imgrec.cli import common
from imgrec.config import PredictConfig
from imgrec.inference import model_files


def _benchmark(clf, paths, config):
  from imgrec.inference import benchmark  # pylint: disable=g-import-not-at-top
  images = benchmark.benchmark_inputs(
      clf, paths, max_image_pixels=config.max_image_pixels,
      on_skip=lambda why: sys.stderr.write(f"skipped: {why}\n"))
  result = benchmark.benchmark(clf, images)
  result.update({"model": config.model, "format": clf.format,
                 "num_threads": config.num_threads})
  if config.format == "json":
    print(json.dumps(result, indent=2))
  else:
    latency = result["latency_ms"]
    what = f"clip ({clf.clip_frames} frames)" if clf.clip_frames else "image"
    print(f"{config.model} ({clf.format}, threads: "
          f"{config.num_threads or 'default'})\n"
          f"latency, one {what}: median {latency['median']:.3f} ms, p90 "
          f"{latency['p90']:.3f} ms ({latency['runs']} runs)\n"
          f"throughput, batches of {result['batch_size']}: "
          f"{result['images_per_second']:.1f} {what.split()[0]}s/s")


def main(config, argv):
  config.validate()
  if len(argv) < 2 and not config.benchmark:
    common.fail("Give image files or folders to classify after the flags.")
  if config.num_threads and model_files.needs_tensorflow(config.model):
    # Before TensorFlow runs anything.
    from imgrec.inference import benchmark  # pylint: disable=g-import-not-at-top
    benchmark.set_tensorflow_threads(config.num_threads)
  from imgrec.data import folder  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  with common.quietly():  # LiteRT announces its delegate on stderr.
    clf = Classifier.load(config.model, trust_model=config.trust_model,
                          max_image_pixels=config.max_image_pixels,
                          num_threads=config.num_threads)
  # A clip model classifies videos (one label a clip) and finds them in
  # folders.
  kind = "video" if clf.clip_frames else "image"
  paths = folder.expand_image_paths(argv[1:], kind) if len(argv) > 1 else []
  paths, videos = _videos_apart(clf, config, paths)
  if videos and not paths:
    common.fail(videos[0])
  for message in videos:
    sys.stderr.write(f"skipped: {message}\n")
  if config.benchmark:
    _benchmark(clf, paths, config)
    return
  pictures = None
  if config.explain:
    clf.explainer(None if config.explain == "auto" else config.explain)
    if config.target is not None:
      clf._target_index(config.target)  # pylint: disable=protected-access
    if config.explain_dir:
      from imgrec.inference import explain  # pylint: disable=g-import-not-at-top
      pictures = explain.PictureFolder(
          config.explain_dir, paths,
          roots=[a for a in argv[1:] if os.path.isdir(a)])
      pictures.check(_picture_names(clf, paths))
  if pictures is not None:
    with pictures.start():
      failures = len(videos) + _print_predictions(clf, paths, config,
                                                  pictures)
  else:
    failures = len(videos) + _print_predictions(clf, paths, config)
  if failures:
    total = len(paths) + len(videos)
    if failures == total:
      common.fail(f"none of the {total} inputs could be classified (each is "
                  "named above).")
    sys.stderr.write(f"imgrec-predict: {failures} of {total} inputs could not "
                     "be classified (each is named above).\n")
    sys.exit(1)


def _picture_names(clf, paths):
  """Every name --explain_dir may get: one an image (a multi-label model's:
  one an image and label)."""
  from imgrec.inference import explain  # pylint: disable=g-import-not-at-top
  if clf.thresholds is None:
    return [explain.picture_name(i, p) for i, p in enumerate(paths)]
  return [explain.picture_name(i, p, label) for i, p in enumerate(paths)
          for label in clf.class_names]


def _explained(clf, paths, config, pictures):
  """(prediction, explanation or None, {label: picture path}) a file, in
  order, `chunk_size` files at a time."""
  from imgrec.inference import explain  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Prediction  # pylint: disable=g-import-not-at-top
  method = None if config.explain == "auto" else config.explain
  for start in range(0, len(paths), config.chunk_size):
    chunk = paths[start:start + config.chunk_size]
    # Each file read once: the images explained are the ones classified.
    explanations = clf.explain(chunk, method=method, target=config.target,
                               keep_images=True)
    read = [e for e in explanations if not e.error]
    classified = iter(clf.predict([e.image for e in read], top_k=config.top_k)
                      if read else ())
    for i, explanation in enumerate(explanations):
      if explanation.error:
        prediction = Prediction(None, None, None, [],
                                source=explanation.source,
                                error=explanation.error)
      else:
        prediction = next(classified)
        prediction.source = explanation.source
      written = {}
      if pictures is not None and not explanation.error:
        parts = explanation.per_label or [explanation]
        multi = explanation.per_label is not None
        written = pictures.write({
            explain.picture_name(start + i, explanation.source,
                                 part.label if multi else None):
                explain.picture(explanation.image, part.heatmap)
            for part in parts})
      explanation.image = None
      yield prediction, explanation, written


def _print_predictions(clf, paths, config, pictures=None):
  """Prints each file's classes (and explanation) as it comes; returns how
  many failed."""
  failures, first = 0, True
  if config.format == "json":
    print("[")
  if config.explain:
    results = _explained(clf, paths, config, pictures)
  else:
    results = ((p, None, {}) for p in clf.predict_iter(
        paths, top_k=config.top_k, chunk_size=config.chunk_size))
  for prediction, explanation, written in results:
    error = prediction.error or (explanation and explanation.error)
    if error:  # Report and go on with the other files.
      failures += 1
      sys.stderr.write(f"skipped: {error}\n")
    elif config.format == "json":
      item = prediction.to_dict()
      if explanation is not None:
        item["explanation"] = explanation.to_dict()
      if written:
        item["picture"] = (next(iter(written.values())) if len(written) == 1
                           else written)
      text = json.dumps(item, indent=2)
      print(("" if first else ",\n") + "  " + text.replace("\n", "\n  "),
            end="")
      first = False
    else:
      row = f"{prediction.source}  {_table_row(prediction)}"
      if explanation is not None:
        row += f"  [{_explanation_row(explanation)}]"
      print(row, flush=True)
  if config.format == "json":
    print("\n]" if not first else "]")
  return failures


def _explanation_row(explanation):
  """An explanation in a table row: the label explained, its peak and box."""
  def where(e):
    if e.frames is not None:
      return " ".join(f"frame {t}: peak {_xy(f['peak'])}"
                      for t, f in enumerate(e.frames))
    if e.peak is None:
      return "no evidence"
    return f"peak {_xy(e.peak)} box {','.join(map(str, e.box))}"
  parts = explanation.per_label or [explanation]
  return f"{explanation.method}: " + "; ".join(
      f"{e.label} {where(e)}" for e in parts)


def _xy(point):
  return "-" if point is None else f"{point[0]},{point[1]}"


def _table_row(prediction):
  """A prediction's classes with their scores: a multi-label model's labels
  above their thresholds ("(none)" when no label is), else the top k, after
  the unknown label for an image of no known class."""
  if prediction.labels is not None:
    return "  ".join(f"{l} {prediction.scores[l]:.3f}"
                     for l in prediction.labels) or "(none)"
  top = "  ".join(f"{l} {p:.3f}" for l, p in prediction.top_k)
  return f"{prediction.label}  ({top})" if prediction.unknown else top


def _videos_apart(clf, config, paths):
  """(paths, a message for each video file an image model cannot take)."""
  if clf.clip_frames:
    return paths, []
  from imgrec.data import decode  # pylint: disable=g-import-not-at-top
  keep, videos = [], []
  for path in paths:
    if os.path.splitext(path)[1].lower() in decode.VIDEO_EXTENSIONS:
      videos.append(f"{path} is a video and {config.model} an image model: "
                    f"classify its frames with imgrec-stream "
                    f"--model={config.model} {path}")
    else:
      keep.append(path)
  return keep, videos


def _needs_tensorflow(config):
  """Whether this run needs TensorFlow: a model TFLite cannot run, or
  explanations (the Keras model's gradients)."""
  return bool(config.explain) or common.model_needs_tensorflow(config)


def run(argv=None):
  # `--explain` alone asks for the model's default method.
  argv = [("--explain=auto" if a == "--explain" else a)
          for a in (sys.argv if argv is None else argv)]
  common.run_config_main(PredictConfig, main, argv=argv,
                         tensorflow=_needs_tensorflow)


if __name__ == "__main__":
  run()
