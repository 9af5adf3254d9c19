"""imgrec-train: trains, evaluates and exports an image classifier.

    imgrec-train                                   # built-in `shapes` dataset
    imgrec-train --data_dir=photos --model=mobilenet_v2 --weights=imagenet
    imgrec-train --labels_csv=photos/labels.csv
    imgrec-train --tfds=mnist --tfds_data_dir=~/tensorflow_datasets
    imgrec-train --task=multilabel --labels_csv=photos/labels.csv  # path,labels

Every flag is a field of `imgrec.TrainConfig`.
"""

from imgrec.cli import common
from imgrec.config import TrainConfig


def main(config, argv):
  common.no_positional(argv)
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  result = trainer.train(config)
  if common.training_went_elsewhere(result, "imgrec-train"):
    return
  print(f"\nmodel_dir: {result['model_dir']}")
  if result.get("summary"):
    print(result["summary"])  # The task's one line about its report.
  if "export" in result:
    print(f"saved_model: {result['export']['saved_model']}")
    for path in result["export"]["tflite"].values():
      print(f"tflite: {path}")
    if result["export"]["report"]:
      from imgrec.export import measure  # pylint: disable=g-import-not-at-top
      print(measure.format_report(result["export"]["report"]))
  print(f"wall time: {result['wall_seconds']:.1f} s")


def run():
  common.run_config_main(TrainConfig, main)


if __name__ == "__main__":
  run()
