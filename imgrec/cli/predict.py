"""imgrec-predict: classifies image files with any exported imgrec model.

    imgrec-predict --model=runs/shapes-simple_cnn/export/model.tflite img.png
"""

import json
import os
import sys

from absl import flags

from imgrec.cli import common

flags.DEFINE_string("model", None, "A .keras or .tflite file, a SavedModel "
                    "folder, or an imgrec-train model_dir.")
flags.DEFINE_integer("top_k", 1, "Classes to show per image.")
flags.DEFINE_enum("format", "table", ("table", "json"), "Output format.")

FLAGS = flags.FLAGS


def _expand(args):
  from imgrec.data import folder  # pylint: disable=g-import-not-at-top
  paths = []
  for arg in args:
    if os.path.isdir(arg):
      for dirpath, dirnames, filenames in os.walk(arg):
        dirnames[:] = sorted(d for d in dirnames if not folder.is_hidden(d))
        paths += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if folder.is_image_file(f)]
    elif os.path.isfile(arg):
      paths.append(arg)
    else:
      common.fail(f"{arg} does not exist.")
  return paths


def main(argv):
  if not FLAGS.model:
    common.fail("--model is required.")
  if len(argv) < 2:
    common.fail("Give image files or folders to classify after the flags.")
  if FLAGS.top_k < 1:
    common.fail(f"--top_k must be at least 1. Received: top_k={FLAGS.top_k}")
  paths = _expand(argv[1:])
  if not paths:
    common.fail("No image files found in the given arguments.")
  from imgrec.errors import ImgrecError  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  clf = Classifier.load(FLAGS.model)
  results, failures = [], 0
  for path in paths:
    try:
      results.append(clf.predict([path], top_k=FLAGS.top_k)[0])
    except ImgrecError as e:  # Report and go on with the other files.
      failures += 1
      sys.stderr.write(f"skipped: {e}\n")
  if FLAGS.format == "json":
    print(json.dumps([r.to_dict() for r in results], indent=2))
  else:
    width = max(len(r.source) for r in results) if results else 4
    for r in results:
      tops = "  ".join(f"{l} {p:.3f}" for l, p in r.top_k)
      print(f"{r.source:<{width}}  {tops}")
  if failures:
    sys.exit(1)


def run():
  common.run_main(main)


if __name__ == "__main__":
  run()
