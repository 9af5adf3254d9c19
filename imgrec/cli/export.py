"""imgrec-export: SavedModel and TFLite files from a trained model_dir."""

from absl import flags

from imgrec.cli import common

flags.DEFINE_string("model_dir", None, "Output folder of imgrec-train.")
flags.DEFINE_list("tflite", ["float"], "TFLite variants: float, fp16, dynamic, "
                  "int8 (int8 calibrates on training images).")
flags.DEFINE_integer("top_k", 5, "Top classes in the SavedModel outputs.")
flags.DEFINE_integer("calibration_images", 200, "Training images used to "
                     "calibrate int8.")

FLAGS = flags.FLAGS


def _representative_images(model_dir, count):
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.data import pipeline  # pylint: disable=g-import-not-at-top
  config = TrainConfig.load(os.path.join(model_dir, "config.json"))
  with open(os.path.join(model_dir, "splits.json"), encoding="utf-8") as f:
    paths = json.load(f)["splits"]["train"]["paths"][:count]
  size = (config.image_size, config.image_size)
  return [pipeline.decode_and_resize(p, size, config.channels).numpy()
          for p in paths]


def main(argv):
  if len(argv) > 1:
    common.fail(f"Unexpected arguments: {' '.join(argv[1:])}.")
  if not FLAGS.model_dir:
    common.fail("--model_dir is required: the output folder of imgrec-train.")
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  from imgrec.export import tflite  # pylint: disable=g-import-not-at-top
  bad = [q for q in FLAGS.tflite if q not in tflite.QUANTIZATIONS]
  if bad:
    common.fail(f"Unknown --tflite variant(s) {', '.join(bad)}. Expected some "
                f"of {', '.join(tflite.QUANTIZATIONS)}.")
  representative = (_representative_images(FLAGS.model_dir,
                                            FLAGS.calibration_images)
                    if "int8" in FLAGS.tflite else None)
  out = exporter.export_model_dir(FLAGS.model_dir, top_k=FLAGS.top_k,
                                  quantizations=FLAGS.tflite,
                                  representative_images=representative)
  print(f"saved_model: {out['saved_model']}")
  for path in out["tflite"].values():
    print(f"tflite: {path}")


def run():
  common.run_main(main)


if __name__ == "__main__":
  run()
