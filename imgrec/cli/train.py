"""imgrec-train: trains, evaluates and exports an image classifier.

    imgrec-train                                   # built-in `shapes` dataset
    imgrec-train --data_dir=photos --model=mobilenet_v2 --weights=imagenet
    imgrec-train --labels_csv=photos/labels.csv
    imgrec-train --tfds=mnist --tfds_data_dir=~/tensorflow_datasets
"""

import sys

from absl import flags

from imgrec.cli import common

_CHOICES = dict(
    augment=("none", "light", "medium", "heavy", "randaugment"),
    flip=("none", "horizontal", "vertical", "horizontal_and_vertical"),
    optimizer=("adam", "adamw", "sgd"),
    strategy=("auto", "default", "one_device", "mirrored", "multi_worker"),
)

flags.DEFINE_string("data_dir", None, "Image folder: root/<class>/* or "
                    "root/{train,val,test}/<class>/*. Default: the built-in "
                    "--dataset.")
flags.DEFINE_string("dataset", "shapes", "Built-in dataset used when "
                    "--data_dir is not given.")
flags.DEFINE_string("labels_csv", None, "CSV file with path,label columns "
                    "(and optionally split: train/val/test); relative paths "
                    "are relative to the CSV's folder. Instead of --data_dir.")
flags.DEFINE_string("tfds", None, "TensorFlow Datasets name (e.g. mnist, "
                    "imagenette/320px), already prepared in --tfds_data_dir; "
                    "nothing is downloaded. Instead of --data_dir.")
flags.DEFINE_string("tfds_data_dir", None, "Folder where `tfds build` "
                    "prepared --tfds. Default: $TFDS_DATA_DIR or "
                    "~/tensorflow_datasets.")
flags.DEFINE_float("val_split", 0.1, "Fraction of each class held out for "
                   "validation when the folder has no val split.")
flags.DEFINE_float("test_split", 0.1, "Fraction of each class held out for "
                   "testing when the folder has no test split.")
flags.DEFINE_integer("image_size", None, "Square input size in pixels. "
                     "Default: the model's own.")
flags.DEFINE_integer("channels", 3, "1 (grayscale) or 3 (RGB).")
flags.DEFINE_string("cache", "auto", "Cache of decoded, resized images: "
                    "auto (in memory when they take under a quarter of the "
                    "free memory and there is more than one epoch), none "
                    "(decode every epoch; streamed JPEGs decode only the "
                    "part the augmentation keeps), memory, or a file path "
                    "prefix (for datasets larger than memory).")
flags.DEFINE_enum("augment", "light", _CHOICES["augment"], "Augmentation: "
                  "light = random flip and shift; medium adds rotation, zoom "
                  "and contrast; heavy makes them stronger and adds "
                  "brightness and random erasing; randaugment = Keras "
                  "RandAugment + random erasing.")
flags.DEFINE_enum("flip", "horizontal", _CHOICES["flip"], "Random flips "
                  "(none for digits and text).")
flags.DEFINE_boolean("scan", True, "Validate every image first: skip and "
                     "report broken files, convert odd formats once.")
flags.DEFINE_integer("max_image_pixels", 89_478_485, "Skip images declaring "
                     "more pixels (decompression bombs).")
flags.DEFINE_float("max_bad_fraction", 0.1, "Fail if more than this fraction "
                   "of a class's files are unusable.")
flags.DEFINE_string("model", "simple_cnn", "Registered model name.")
flags.DEFINE_string("weights", "imagenet", "Transfer models: imagenet, none, "
                    "or the path of a local weights file.")
flags.DEFINE_boolean("freeze_backbone", False, "Transfer models: train the "
                     "head only.")
flags.DEFINE_string("init_from", None, "Start from the body weights of an "
                    "earlier imgrec-train model_dir (same --model).")
flags.DEFINE_integer("freeze_epochs", 0, "Two-stage fine-tuning: train only "
                     "the head for this many epochs, then unfreeze the body.")
flags.DEFINE_string("unfreeze", "all", "After --freeze_epochs, unfreeze all "
                    "of the body or its top N layers (BatchNorm stays "
                    "frozen).")
flags.DEFINE_float("fine_tune_lr_scale", 0.1, "Learning-rate factor after "
                   "unfreezing.")
flags.DEFINE_float("dropout", None, "Dropout before the classifier. Default: "
                   "the model's own.")
flags.DEFINE_boolean("edges", False, "Add Sobel edge channels to the input.")
flags.DEFINE_integer("epochs", 20, "Training epochs.")
flags.DEFINE_integer("batch_size", 32, "Global batch size.")
flags.DEFINE_enum("optimizer", "adam", _CHOICES["optimizer"], "Optimizer.")
flags.DEFINE_float("learning_rate", 3e-3, "Peak learning rate (after the "
                   "warmup).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (adamw, sgd).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_enum("lr_schedule", "cosine", ("constant", "cosine"),
                  "Learning-rate schedule, after the warmup.")
flags.DEFINE_float("warmup_epochs", 1.0, "Linear learning-rate warmup.")
flags.DEFINE_float("mixup", 0.0, "MixUp alpha (0: off).")
flags.DEFINE_float("cutmix", 0.0, "CutMix alpha (0: off).")
flags.DEFINE_boolean("ema", False, "Evaluate and save an exponential moving "
                     "average of the weights.")
flags.DEFINE_float("ema_momentum", 0.99, "EMA momentum.")
flags.DEFINE_integer("grad_accum_steps", 1, "Accumulate gradients over this "
                     "many batches per update.")
flags.DEFINE_enum("class_weight", "none", ("none", "auto"), "auto: weigh "
                  "classes by inverse frequency (imbalanced data).")
flags.DEFINE_integer("early_stopping", 0, "Stop after this many epochs "
                     "without a better validation accuracy (0: off).")
flags.DEFINE_boolean("mixed_precision", False, "bfloat16 on CPU, float16 on "
                     "GPU; the loss stays float32.")
flags.DEFINE_enum("jit_compile", "auto", ("auto", "true", "false"),
                  "XLA-compile the train step.")
flags.DEFINE_integer("seed", 42, "Seed of the split, the weights and the "
                     "augmentation.")
flags.DEFINE_boolean("deterministic", False, "Deterministic ops and input "
                     "order (slower): two runs give identical weights.")
flags.DEFINE_enum("strategy", "auto", _CHOICES["strategy"],
                  "tf.distribute strategy.")
flags.DEFINE_string("model_dir", None, "Output folder. Rerunning with the "
                    "same folder resumes. Default: runs/<data>-<model>.")
flags.DEFINE_integer("top_k", 5, "k of the top-k accuracy and outputs.")
flags.DEFINE_boolean("export", True, "Export SavedModel and TFLite at the end.")

FLAGS = flags.FLAGS


def config_from_flags():
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  import dataclasses  # pylint: disable=g-import-not-at-top
  values = {f.name: FLAGS[f.name].value
            for f in dataclasses.fields(TrainConfig) if f.name in FLAGS}
  return TrainConfig.from_dict(values)


def main(argv):
  if len(argv) > 1:
    common.fail(f"Unexpected arguments: {' '.join(argv[1:])}. Flags start "
                "with --.")
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  result = trainer.train(config_from_flags())
  if result.get("interrupted"):
    sys.stderr.write(f"imgrec-train: {result['message']}\n")
    sys.exit(result["exit_code"])
  if result.get("chief") is False:
    print(f"worker done in {result['wall_seconds']:.1f} s; the chief writes "
          f"{result['model_dir']}")
    return
  report = result.get("report")
  print(f"\nmodel_dir: {result['model_dir']}")
  if report:
    print(f"test accuracy: {report['accuracy']:.4f} "
          f"({report['num_examples']} images), top-{report['k']}: "
          f"{report['top_k_accuracy']:.4f}")
  if "export" in result:
    print(f"saved_model: {result['export']['saved_model']}")
    for path in result["export"]["tflite"].values():
      print(f"tflite: {path}")
  print(f"wall time: {result['wall_seconds']:.1f} s")


def run():
  common.run_main(main)


if __name__ == "__main__":
  run()
