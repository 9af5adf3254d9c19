"""imgrec-predict: classifies image files with any exported imgrec model.

    imgrec-predict --model=runs/shapes-simple_cnn/export/model.tflite img.png
"""

import json
import sys

from imgrec.cli import common
from imgrec.config import PredictConfig


def main(config, argv):
  config.validate()
  if len(argv) < 2:
    common.fail("Give image files or folders to classify after the flags.")
  from imgrec.data import folder  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  paths = folder.expand_image_paths(argv[1:])
  with common.quietly():  # LiteRT announces its delegate on stderr.
    clf = Classifier.load(config.model, trust_model=config.trust_model,
                          max_image_pixels=config.max_image_pixels)
  results, failures = [], 0
  for prediction in clf.predict(paths, top_k=config.top_k):
    if prediction.error:  # Report and go on with the other files.
      failures += 1
      sys.stderr.write(f"skipped: {prediction.error}\n")
    else:
      results.append(prediction)
  if config.format == "json":
    print(json.dumps([r.to_dict() for r in results], indent=2))
  else:
    width = max(len(r.source) for r in results) if results else 4
    for r in results:
      tops = "  ".join(f"{l} {p:.3f}" for l, p in r.top_k)
      print(f"{r.source:<{width}}  {tops}")
  if failures:
    sys.exit(1)


def run():
  common.run_config_main(PredictConfig, main)


if __name__ == "__main__":
  run()
